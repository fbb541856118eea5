//! The run over time, as the timeline and the flamegraphs both need it: which polls ran on each
//! thread and how they nest, when each task changed state, and where each poll left its task
//! parked. Both exports follow one definition, so a poll's duration and await point mean the
//! same in the trace and in the flamegraph.
//!
//! Await points come late: a backtrace is read after the poll that parked the task has ended
//! (the session reads idle tasks after each batch of events). So the history holds the poll that
//! parked each idle task until a backtrace or a wake settles where it parked, and tells its
//! [`Follower`] then.

use std::collections::{BTreeMap, HashMap};

use probe_common::EventKind;

use crate::{
    analyze::stacks::TaskStack,
    model::{TaskEvent, TaskModel, TaskState},
    readable::location,
};

/// Polls numbered in the order they started, from 0 without gaps, so an export can keep them
/// in a `Vec`. A task's polls are numbered in the order the model counts them.
pub(crate) type PollId = usize;

/// A distinct place where tasks parked (see [`History::parked_at`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct StackId(pub(crate) u32);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Poll {
    pub id: PollId,
    /// Index into the model's tasks.
    pub task: usize,
    pub tid: u32,
    pub start: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Closed {
    pub poll: Poll,
    pub end: u64,
    /// Other polls ran inside it (a runtime driven from inside a task, a worker loop): its
    /// time is theirs, and counting it too would count that time twice.
    pub container: bool,
}

impl Closed {
    pub fn duration(&self) -> u64 {
        self.end - self.poll.start
    }
}

/// Where a task parked, as the exports name it. Locals are left out: their values differ from
/// one read to the next and would make every parking distinct.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ParkedAt {
    /// Outermost first: `function (crate/src/file.rs:line)`, or the bare function when the
    /// frame has no source.
    pub frames: Vec<String>,
    /// Where it waits, as `crate/src/file.rs:line`: the innermost frame in the program's own
    /// code (see [`TaskStack::await_point`]).
    pub await_point: Option<String>,
    /// What the innermost future waits for, in words.
    pub leaf: Option<String>,
}

impl ParkedAt {
    fn new(stack: &TaskStack) -> Self {
        let place = |function: &str, file: Option<&str>, line| match file {
            Some(file) => format!("{function} ({})", location(Some(file), line)),
            None => function.to_owned(),
        };
        Self {
            frames: stack
                .frames
                .iter()
                .map(|frame| place(&frame.function, frame.file.as_deref(), frame.line))
                .collect(),
            await_point: stack.await_point().map(|frame| match &frame.file {
                Some(file) => location(Some(file), frame.line),
                None => frame.function.to_string(),
            }),
            leaf: stack.leaf().map(str::to_owned),
        }
    }
}

/// What an export does with the history. Every poll is started, ended and settled exactly once
/// (polls still open when the run ends, by [`History::finish`]).
pub(crate) trait Follower {
    fn poll_started(&mut self, _poll: &Poll) {}
    /// The poll is over: by its own end, or because an event showed its end was lost.
    fn poll_ended(&mut self, _poll: &Closed) {}
    /// Where the poll left its task is known: `parked` is the backtrace read after it, `None`
    /// when none will come (the task did not park, was woken before a read, or has no DWARF).
    fn poll_settled(&mut self, _poll: &Closed, _parked: Option<StackId>) {}
    /// The task spent `since..until` in `state` (never a terminal state); for idle time,
    /// `parked` is where it waited.
    fn state_ended(
        &mut self,
        _task: usize,
        _state: TaskState,
        _since: u64,
        _until: u64,
        _parked: Option<StackId>,
    ) {
    }
    /// `task` was woken at `ts` from inside `by`, the poll running on the waking thread.
    fn woken(&mut self, _task: usize, _by: &Poll, _ts: u64) {}
}

struct Open {
    poll: Poll,
    container: bool,
}

impl Open {
    /// Closed at `end`, or at its start if that is later: a poll never ends before it began,
    /// and an outer one no earlier than what it contains (callers carry the returned end out).
    fn close(&self, end: u64) -> Closed {
        Closed {
            poll: self.poll,
            end: end.max(self.poll.start),
            container: self.container,
        }
    }
}

#[derive(Default)]
struct Thread {
    /// Outermost first.
    open: Vec<Open>,
    /// When the last poll closed here. Polls closed by another thread's event take that
    /// event's clock, which may run ahead of this thread's next event; starting later polls
    /// no earlier keeps the thread's polls nested.
    floor: u64,
}

/// An idle task: the poll that parked it while nothing settled it yet, and where it waits
/// once a backtrace said so.
struct Parking {
    poll: Option<Closed>,
    stack: Option<StackId>,
}

#[derive(Default)]
pub(crate) struct History {
    next_poll: PollId,
    threads: BTreeMap<u32, Thread>,
    /// The thread each task's open poll runs on.
    running_on: HashMap<usize, u32>,
    /// Each task's state and since when, as of the last event about it.
    states: Vec<Option<(TaskState, u64)>>,
    parked: BTreeMap<usize, Parking>,
    places: Vec<ParkedAt>,
    place_ids: HashMap<ParkedAt, StackId>,
}

impl History {
    /// Follows one event the model has applied (`task` is what [`TaskModel::apply`] returned).
    pub fn event(
        &mut self,
        event: &TaskEvent,
        task: Option<usize>,
        model: &TaskModel,
        to: &mut impl Follower,
    ) {
        // Poll ends the model rejected (late, from another thread) and frees of unknown tasks
        // change nothing.
        let Some(task) = task else { return };
        let now = event.ts_ns;
        let mut ended = None;
        match event.kind {
            EventKind::PollStart => {
                // Its previous poll is over wherever it ran: that poll's end was lost.
                if let Some(tid) = self.running_on.get(&task).copied()
                    && let Some(at) = self.position(tid, |open| open.poll.task == task)
                    && let Some(lost) = self.close_down_to(tid, at, now, to)
                {
                    to.poll_settled(&lost, None);
                }
                self.unwind(event.tid, event.other_header, now, model, to);
                let thread = self.threads.entry(event.tid).or_default();
                let poll = Poll {
                    id: self.next_poll,
                    task,
                    tid: event.tid,
                    start: now.max(thread.floor),
                };
                self.next_poll += 1;
                if let Some(outer) = thread.open.last_mut() {
                    outer.container = true;
                }
                thread.open.push(Open {
                    poll,
                    container: false,
                });
                self.running_on.insert(task, event.tid);
                to.poll_started(&poll);
            }
            EventKind::PollEnd => {
                // Polls still open above it on this thread lost their ends.
                if let Some(at) = self.position(event.tid, |open| open.poll.task == task) {
                    ended = self.close_down_to(event.tid, at, now, to);
                }
            }
            EventKind::WakeByVal | EventKind::WakeByRef if event.other_header != 0 => {
                // Only a wake from the innermost poll: that is the slice a trace binds it to.
                if let Some(open) = self.threads.get(&event.tid).and_then(|t| t.open.last())
                    && model.tasks()[open.poll.task].header == event.other_header
                {
                    to.woken(task, &open.poll, now);
                }
            }
            _ => {}
        }
        self.follow_state(task, model, ended, to);
    }

    /// `task` was found in memory: its state is known from then on (an idle one is parked, so
    /// the backtrace read next says where).
    pub fn observed(&mut self, task: usize, model: &TaskModel, to: &mut impl Follower) {
        self.follow_state(task, model, None, to);
    }

    /// A backtrace was read for `task`: where it parked, if it is still parked since the poll
    /// this history holds for it. A second read of the same parking changes nothing.
    pub fn stack(&mut self, task: usize, stack: &TaskStack, to: &mut impl Follower) {
        if stack.frames.is_empty()
            || !self
                .parked
                .get(&task)
                .is_some_and(|parking| parking.stack.is_none())
        {
            return;
        }
        let id = self.intern(stack);
        let Some(parking) = self.parked.get_mut(&task) else {
            return;
        };
        parking.stack = Some(id);
        if let Some(poll) = parking.poll.take() {
            to.poll_settled(&poll, Some(id));
        }
    }

    /// Tells `to` what ending the run at `end` would: open polls close, held polls settle
    /// without a place, and live tasks' current states end. Leaves the history as it is, so
    /// an export can be written while the run goes on.
    pub fn finish(&self, end: u64, to: &mut impl Follower) {
        for thread in self.threads.values() {
            let mut end = end;
            for open in thread.open.iter().rev() {
                let closed = open.close(end);
                end = closed.end;
                to.poll_ended(&closed);
                to.poll_settled(&closed, None);
            }
        }
        for parking in self.parked.values() {
            if let Some(poll) = &parking.poll {
                to.poll_settled(poll, None);
            }
        }
        for (task, seen) in self.states.iter().enumerate() {
            if let Some((state, since)) = *seen
                && !state.is_terminal()
            {
                let parked = self.parked.get(&task).and_then(|parking| parking.stack);
                to.state_ended(task, state, since, end.max(since), parked);
            }
        }
    }

    pub fn parked_at(&self, id: StackId) -> &ParkedAt {
        &self.places[id.0 as usize]
    }

    fn intern(&mut self, stack: &TaskStack) -> StackId {
        let place = ParkedAt::new(stack);
        if let Some(&id) = self.place_ids.get(&place) {
            return id;
        }
        let id = StackId(self.places.len() as u32);
        self.places.push(place.clone());
        self.place_ids.insert(place, id);
        id
    }

    /// Where on `tid`'s stack of open polls the innermost one `matches` is.
    fn position(&self, tid: u32, matches: impl Fn(&Open) -> bool) -> Option<usize> {
        self.threads.get(&tid)?.open.iter().rposition(matches)
    }

    /// A poll starts on `tid` inside `outer_header` (the probe's own record of the poll running
    /// there, 0 for none, kept even when events are lost): polls open above it are over. When
    /// the enclosing poll's start was never seen, nothing is known, and nothing is closed.
    ///
    /// The probe remembers one enclosing level: once a poll nested two deep (a runtime inside a
    /// task on a worker) has returned, the next poll there reports none, and the outermost poll
    /// is closed early. In practice that outermost poll is a worker loop, which no export draws.
    fn unwind(
        &mut self,
        tid: u32,
        outer_header: u64,
        now: u64,
        model: &TaskModel,
        to: &mut impl Follower,
    ) {
        let keep = match outer_header {
            0 => 0,
            header => {
                match self.position(tid, |open| model.tasks()[open.poll.task].header == header) {
                    Some(at) => at + 1,
                    None => return,
                }
            }
        };
        if let Some(lost) = self.close_down_to(tid, keep, now, to) {
            to.poll_settled(&lost, None);
        }
    }

    /// Closes `tid`'s open polls from the innermost down to the one at `at`, all at `end` (or
    /// later, never before one started: an outer poll ends no earlier than what it contains).
    /// Returns the one at `at` unsettled; the ones above it lost their ends and are settled.
    fn close_down_to(
        &mut self,
        tid: u32,
        at: usize,
        end: u64,
        to: &mut impl Follower,
    ) -> Option<Closed> {
        let thread = self.threads.get_mut(&tid)?;
        let mut end = end;
        let mut last: Option<Closed> = None;
        while thread.open.len() > at {
            let Some(open) = thread.open.pop() else { break };
            self.running_on.remove(&open.poll.task);
            let closed = open.close(end);
            end = closed.end;
            to.poll_ended(&closed);
            if let Some(inner) = last.replace(closed) {
                to.poll_settled(&inner, None);
            }
        }
        thread.floor = thread.floor.max(end);
        last
    }

    /// Compares the task's state with what it was before the event. `ended` is the task's own
    /// poll if this event ended it: if the task is idle now, that poll parked it.
    fn follow_state(
        &mut self,
        task: usize,
        model: &TaskModel,
        ended: Option<Closed>,
        to: &mut impl Follower,
    ) {
        let now = &model.tasks()[task];
        let (state, since) = (now.state, now.state_entered_ns());
        if self.states.len() <= task {
            self.states.resize(task + 1, None);
        }
        let mut unparked = ended;
        let before = self.states[task];
        if before.is_none_or(|(before, _)| before != state) {
            if let Some((before, entered)) = before {
                let parking = match before {
                    TaskState::Idle => self.parked.remove(&task),
                    _ => None,
                };
                if let Some(poll) = parking.as_ref().and_then(|parking| parking.poll.as_ref()) {
                    to.poll_settled(poll, None);
                }
                if !before.is_terminal() {
                    let parked = parking.and_then(|parking| parking.stack);
                    to.state_ended(task, before, entered, since.max(entered), parked);
                }
            }
            self.states[task] = Some((state, since));
            if state == TaskState::Idle {
                self.parked.insert(
                    task,
                    Parking {
                        poll: unparked.take(),
                        stack: None,
                    },
                );
            }
        }
        if let Some(poll) = unparked {
            to.poll_settled(&poll, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{Closed, Follower, History, StackId};
    use crate::{
        analyze::stacks::TaskStack,
        model::{TaskEvent, TaskModel},
        present::trace::script::{HANDLER, NESTED, SERVER, Script},
        session::Observer,
    };

    /// Every settled poll by id: (task, thread, start, end, container, parked).
    type Settled = BTreeMap<usize, (usize, u32, u64, u64, bool, Option<StackId>)>;

    #[derive(Default)]
    struct Settles(Settled);

    impl Follower for Settles {
        fn poll_settled(&mut self, poll: &Closed, parked: Option<StackId>) {
            let p = poll.poll;
            let seen = (p.task, p.tid, p.start, poll.end, poll.container, parked);
            assert!(
                self.0.insert(p.id, seen).is_none(),
                "settled twice: {poll:?}"
            );
        }
    }

    #[derive(Default)]
    struct Follow {
        history: History,
        settled: Settles,
    }

    impl Observer for Follow {
        fn event(&mut self, event: &TaskEvent, task: Option<usize>, model: &TaskModel) {
            self.history.event(event, task, model, &mut self.settled);
        }
        fn stack(&mut self, task: usize, stack: &TaskStack, _model: &TaskModel) {
            self.history.stack(task, stack, &mut self.settled);
        }
    }

    #[test]
    fn lost_ends_close_where_the_probe_saw_the_thread_move_on() {
        let (server, handler, nested) = (0, 1, 2);
        let mut run = Script::new(Follow::default());
        run.poll(100, SERVER, 8, None);
        // Its end is lost: the probe says nothing is polled on thread 8 when HANDLER starts.
        run.poll(200, HANDLER, 8, None);
        run.pending(300, HANDLER, 8);
        run.poll(400, NESTED, 8, None);
        run.poll(500, HANDLER, 8, Some(NESTED));
        // HANDLER's end is lost too: NESTED's end closes it.
        run.pending(700, NESTED, 8);
        run.poll(1_000, SERVER, 7, None);
        run.poll(1_200, SERVER, 9, None);
        // Reordered across CPUs: thread 7's next poll has an earlier time than the event on
        // thread 9 that closed its last one.
        run.poll(1_100, HANDLER, 7, None);
        let (session, _) = run.end(Vec::new());
        let Follow {
            history,
            mut settled,
        } = session.observer;
        history.finish(session.model.last_ns, &mut settled);
        assert_eq!(
            settled.0.into_values().collect::<Vec<_>>(),
            [
                (server, 8, 100, 200, false, None),
                (handler, 8, 200, 300, false, None),
                (nested, 8, 400, 700, true, None),
                (handler, 8, 500, 700, false, None),
                (server, 7, 1_000, 1_200, false, None),
                (server, 9, 1_200, 100_000, false, None),
                (handler, 7, 1_200, 100_000, false, None),
            ]
        );
    }

    #[test]
    fn a_poll_is_charged_to_where_the_next_read_found_its_task() {
        let mut run = Script::new(Follow::default());
        run.poll(100, SERVER, 8, None);
        run.pending(200, SERVER, 8);
        run.parked(250, SERVER, crate::present::trace::script::server_parked());
        run.parked(260, SERVER, crate::present::trace::script::handler_parked());
        run.wake(300, SERVER, 9, None);
        run.poll(400, SERVER, 8, None);
        run.pending(500, SERVER, 8);
        // Woken before any read: this poll's await point is unknown.
        run.wake(600, SERVER, 9, None);
        run.poll(700, SERVER, 8, None);
        run.pending(800, SERVER, 8);
        run.parked(850, SERVER, crate::present::trace::script::server_parked());
        let (session, _) = run.end(Vec::new());
        let Follow { history, settled } = session.observer;
        let parked: Vec<Option<&str>> = settled
            .0
            .values()
            .map(|seen| {
                seen.5
                    .and_then(|id| history.parked_at(id).await_point.as_deref())
            })
            .collect();
        assert_eq!(
            parked,
            [
                Some("app/src/server.rs:10"),
                None,
                Some("app/src/server.rs:10")
            ],
            "the first read of a parking counts; the same place is one id"
        );
        assert_eq!(settled.0[&0].5, settled.0[&2].5);
    }
}
