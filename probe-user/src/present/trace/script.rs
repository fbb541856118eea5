//! A scripted run for the exports' tests: the events and backtraces a probe would deliver,
//! fed through a real session, and the report made from it, as `probe` makes it.

use probe_common::{EventKind, state};

use crate::{
    analyze::{backtrace::Frame, lints::Thresholds, stacks::TaskStack},
    model::{Observed, TaskEvent},
    report::{Analysis, Report, RunFacts},
    resolve::{Catalogue, NamingSource, TypeName},
    session::{Observer, Session},
};

/// When the probe attached and stopped.
pub(crate) const STARTED: u64 = 1_000;
pub(crate) const ENDED: u64 = 100_000;

/// A task of the script: where it lives, its tokio id, and the poll site of its type.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Task {
    pub header: u64,
    pub id: u64,
    pub site: u32,
}

/// A multi-thread runtime's worker loop: one poll that contains every poll on its thread.
pub(crate) const WORKER: Task = Task {
    header: 0x1000,
    id: 1,
    site: 0,
};
pub(crate) const SERVER: Task = Task {
    header: 0x2000,
    id: 2,
    site: 1,
};
pub(crate) const HANDLER: Task = Task {
    header: 0x3000,
    id: 3,
    site: 2,
};
/// Drives a runtime of its own: polls run inside its poll.
pub(crate) const NESTED: Task = Task {
    header: 0x4000,
    id: 4,
    site: 3,
};
/// Spawns, wakes and completions come from sites that name no task type.
const ANY_SITE: u32 = 4;

pub(crate) const SERVER_NAME: &str = "app::server::{async_block#0}";
pub(crate) const HANDLER_NAME: &str = "app::handler::{async_fn_env#0}";
pub(crate) const NESTED_NAME: &str = "app::nested::{async_block#0}";

pub(crate) fn catalogue() -> Catalogue {
    let named = |name: &str, runtime_worker| TypeName {
        name: name.to_owned(),
        runtime_worker,
        spawned_at: Vec::new(),
    };
    Catalogue {
        task_types: vec![
            named("tokio::runtime::blocking::task::BlockingTask<worker>", true),
            named(SERVER_NAME, false),
            named(HANDLER_NAME, false),
            named(NESTED_NAME, false),
        ],
        site_types: vec![Some(0), Some(1), Some(2), Some(3), None],
        naming: NamingSource::Dwarf,
        has_dwarf: true,
        notes: Vec::new(),
    }
}

pub(crate) fn frame(
    function: &str,
    file: Option<&str>,
    line: Option<u64>,
    leaf: Option<&str>,
) -> Frame {
    Frame {
        function: function.into(),
        file: file.map(Into::into),
        line,
        leaf: leaf.map(Into::into),
        locals: Box::default(),
        holds: Box::default(),
        waits_on: None,
        bound: None,
    }
}

/// Where SERVER parks after its first poll.
pub(crate) fn server_parked() -> Vec<Frame> {
    vec![
        frame(
            "app::server::run::{async_fn#0}",
            Some("/work/app/src/server.rs"),
            Some(10),
            None,
        ),
        frame(
            "tokio::sync::notify::Notified",
            None,
            None,
            Some("waiting for a Notify"),
        ),
    ]
}

/// Where HANDLER parks after its second poll (its leaf's type has a `;`).
pub(crate) fn handler_parked() -> Vec<Frame> {
    vec![
        frame(
            "app::handler::{async_fn#0}",
            Some("/work/app/src/handler.rs"),
            Some(20),
            None,
        ),
        frame(
            "tokio::sync::oneshot::Receiver<[u8; 4]>",
            Some(
                "/root/.cargo/registry/src/index.crates.io-1949cf/tokio-1.54.1/src/sync/oneshot.rs",
            ),
            Some(1100),
            Some("waiting for a oneshot value"),
        ),
    ]
}

pub(crate) struct Script<O> {
    pub session: Session<O>,
    catalogue: Catalogue,
}

impl<O: Observer> Script<O> {
    pub fn new(observer: O) -> Self {
        let catalogue = catalogue();
        Self {
            session: Session::new(&catalogue, observer, true),
            catalogue,
        }
    }

    fn send(&mut self, ts_ns: u64, kind: EventKind, task: Task, tid: u32, other: Option<Task>) {
        self.send_with(ts_ns, kind, task, tid, other, 0, 0);
    }

    #[allow(clippy::too_many_arguments)]
    fn send_with(
        &mut self,
        ts_ns: u64,
        kind: EventKind,
        task: Task,
        tid: u32,
        other: Option<Task>,
        value: u64,
        event_flags: u8,
    ) {
        let poll = matches!(kind, EventKind::PollStart | EventKind::PollEnd);
        self.session.event(&TaskEvent {
            ts_ns,
            kind,
            header: task.header,
            task_id: Some(task.id),
            vtable: 0x5000 + task.header,
            other_header: other.map_or(0, |other| other.header),
            value,
            site: if poll { task.site } else { ANY_SITE },
            tid,
            flags: event_flags,
            cpu: None,
        });
    }

    pub fn spawn(&mut self, ts: u64, task: Task, tid: u32, parent: Option<Task>) {
        self.send(ts, EventKind::Spawn, task, tid, parent);
    }

    /// A poll starts on `tid`, inside the poll of `inside` (what the probe records there).
    pub fn poll(&mut self, ts: u64, task: Task, tid: u32, inside: Option<Task>) {
        self.send(ts, EventKind::PollStart, task, tid, inside);
    }

    /// A poll returns `Pending` with nothing pending: the task goes idle.
    pub fn pending(&mut self, ts: u64, task: Task, tid: u32) {
        self.send_with(ts, EventKind::PollEnd, task, tid, None, 0, 0);
    }

    /// The task returns `Ready` inside its poll.
    pub fn ready(&mut self, ts: u64, task: Task, tid: u32) {
        self.send_with(
            ts,
            EventKind::Complete,
            task,
            tid,
            Some(task),
            state::RUNNING,
            0,
        );
        self.send_with(
            ts + 50,
            EventKind::PollEnd,
            task,
            tid,
            None,
            state::COMPLETE,
            0,
        );
    }

    /// `by`: the task polled on `tid` that wakes it (none: a timer, the I/O driver).
    pub fn wake(&mut self, ts: u64, task: Task, tid: u32, by: Option<Task>) {
        self.send(ts, EventKind::WakeByRef, task, tid, by);
    }

    /// The task found in memory by the scan `probe --pid` makes as it attaches: idle.
    pub fn found(&mut self, ts: u64, task: Task) {
        self.session.observe(Observed {
            header: task.header,
            task_id: Some(task.id),
            vtable: 0x5000 + task.header,
            task_type: task.site as usize,
            state_word: 2 << state::REF_COUNT_SHIFT,
            now_ns: ts,
        });
    }

    /// A backtrace read of an idle task, as the session delivers it after a batch.
    pub fn parked(&mut self, read_ns: u64, task: Task, frames: Vec<Frame>) {
        let index = self
            .session
            .model
            .tasks()
            .iter()
            .rposition(|seen| seen.header == task.header)
            .expect("the task was seen");
        self.session.stack(
            index,
            TaskStack {
                frames: frames.into(),
                read_ns,
                state_word: None,
                missing: None,
            },
        );
    }

    /// Ends the probe: closes the model, reads what idle tasks wait for, and reports.
    pub fn end(mut self, rereads: Vec<(Task, Vec<Frame>)>) -> (Session<O>, Report) {
        self.session.model.close(ENDED);
        for (task, frames) in rereads {
            self.parked(ENDED, task, frames);
        }
        let report = Report::new(
            &self.catalogue,
            &self.session.model,
            RunFacts {
                started_ns: STARTED,
                ended_ns: ENDED,
                ..RunFacts::default()
            },
            Analysis {
                stacks: &self.session.stacks,
                stuck_after_ns: u64::MAX,
                limits: Thresholds {
                    long_poll_ns: 1_000,
                    lost_waker_after_ns: 50_000,
                    ..Thresholds::default()
                },
            },
        );
        (self.session, report)
    }
}

/// The run both exports' tests replay. Thread 7 is a multi-thread runtime's worker (its loop is
/// one poll around all the others); thread 8 polls tasks on its own.
///
/// | task | polls (ns) | idle (ns) |
/// | --- | --- | --- |
/// | SERVER | 1300-1500 parks at server.rs:10; 2100-2300 on thread 8, its end lost (shown over by the next poll); 2300-2400 completes | 1500-2000 at server.rs:10 |
/// | HANDLER | 1600-1700 (no backtrace read); 3100-3200 inside NESTED's poll, parks at handler.rs:20 | 1700-3050; 3200-end at handler.rs:20 |
/// | NESTED | 3000-3300 (contains HANDLER's poll); 4100-end, never returns | 3300-4000 |
///
/// SERVER wakes HANDLER at 1400 from inside its poll, NESTED wakes HANDLER at 3050 from inside
/// its own. Warnings: NESTED never yields, HANDLER's waker is lost.
pub(crate) fn scenario<O: Observer>(observer: O) -> (Session<O>, Report) {
    let mut run = Script::new(observer);
    run.poll(1_000, WORKER, 7, None);
    run.spawn(1_100, SERVER, 7, Some(WORKER));
    run.spawn(1_200, HANDLER, 7, Some(WORKER));
    run.poll(1_300, SERVER, 7, Some(WORKER));
    run.wake(1_400, HANDLER, 7, Some(SERVER));
    run.pending(1_500, SERVER, 7);
    run.parked(1_550, SERVER, server_parked());
    run.poll(1_600, HANDLER, 7, Some(WORKER));
    run.pending(1_700, HANDLER, 7);
    run.wake(2_000, SERVER, 9, None);
    run.poll(2_100, SERVER, 8, None);
    // Its end is lost; another worker polls it next.
    run.poll(2_300, SERVER, 7, Some(WORKER));
    run.ready(2_350, SERVER, 7);
    run.poll(3_000, NESTED, 8, None);
    run.wake(3_050, HANDLER, 8, Some(NESTED));
    run.poll(3_100, HANDLER, 8, Some(NESTED));
    run.pending(3_200, HANDLER, 8);
    run.parked(3_250, HANDLER, handler_parked());
    run.pending(3_300, NESTED, 8);
    run.wake(4_000, NESTED, 9, None);
    run.poll(4_100, NESTED, 8, None);
    // HANDLER is read again at the end: the same parking.
    run.end(vec![(HANDLER, handler_parked())])
}

/// A run in which nothing happened.
pub(crate) fn nothing<O: Observer>(observer: O) -> (Session<O>, Report) {
    Script::new(observer).end(Vec::new())
}
