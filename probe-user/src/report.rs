//! Present: the end-of-probe summary and task table, and the JSON report. Computes nothing about
//! tasks itself: every figure comes from the model.

use std::io::{self, Write};

use serde::Serialize;

use crate::readable::{duration, location};
use crate::{
    analyze::{
        backtrace::{Frame, Frames, Resource},
        deadlocks::{Chain, Deadlock, WaitGraph},
        hangs,
        lints::{self, TaskView, Thresholds, Warning},
        stacks::{NoBacktrace, Stacks, TaskStack, await_point_of},
    },
    model::{Histogram, Task, TaskModel, TaskState},
    overhead::Overhead,
    resolve::{Catalogue, NamingSource, TypeName},
};

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub summary: Summary,
    /// Sorted by busy time, busiest first.
    pub tasks: Vec<TaskRow>,
    /// Tasks idle longer than the stuck threshold at the end, longest first.
    pub stuck: Vec<StuckRow>,
    pub warnings: Vec<Warning>,
    pub deadlocks: Vec<DeadlockRow>,
    /// Waits on locks held by tasks that are themselves waiting, outside deadlocks.
    pub chains: Vec<ChainRow>,
    /// Per thread that polled tasks (probe only).
    pub workers: Vec<WorkerRow>,
    /// Ended tasks folded into their type's totals (not in `tasks`), busiest type first.
    pub folded_types: Vec<FoldedRow>,
}

/// The ended tasks of one type that were folded into totals to keep memory bounded.
#[derive(Clone, Debug, Serialize)]
pub struct FoldedRow {
    pub name: String,
    /// tokio's own tasks (see `Summary::internal_tasks`): left out of the counts.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
    pub tasks: u64,
    pub completed: u64,
    pub cancelled: u64,
    pub panicked: u64,
    pub polls: u64,
    pub busy_ns: u64,
    pub scheduled_ns: u64,
    pub idle_ns: u64,
    pub wakes: u64,
    pub max_poll_ns: u64,
    pub poll_histogram: Vec<Bucket>,
    pub scheduled_histogram: Vec<Bucket>,
}

impl FoldedRow {
    /// The folded tasks of every type, busiest type first.
    fn all(plan: &Catalogue, model: &TaskModel) -> Vec<Self> {
        let mut rows: Vec<Self> = model
            .folded()
            .iter()
            .map(|(task_type, folded)| Self {
                name: task_type
                    .and_then(|index| plan.task_types.get(index))
                    .map_or_else(|| "(unknown type)".to_owned(), |t| t.name.clone()),
                internal: task_type
                    .and_then(|index| plan.task_types.get(index))
                    .is_some_and(TypeName::is_internal),
                tasks: folded.tasks,
                completed: folded.completed,
                cancelled: folded.cancelled,
                panicked: folded.panicked,
                polls: folded.polls,
                busy_ns: folded.busy_ns,
                scheduled_ns: folded.scheduled_ns,
                idle_ns: folded.idle_ns,
                wakes: folded.wakes,
                max_poll_ns: folded.max_poll_ns,
                poll_histogram: Bucket::rows(&folded.poll_times),
                scheduled_histogram: Bucket::rows(&folded.scheduled_times),
            })
            .collect();
        rows.sort_by(|a, b| b.busy_ns.cmp(&a.busy_ns).then(a.name.cmp(&b.name)));
        rows
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct StuckRow {
    pub id: Option<u64>,
    pub name: String,
    /// The program's lines that spawn tasks of its type (`demo/src/main.rs:40`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub spawned_at: Vec<String>,
    pub idle_ns: u64,
    pub leaf: Option<String>,
    /// Innermost last.
    pub backtrace: Frames,
    /// Why `backtrace` is empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_backtrace: Option<String>,
    /// Whether anything on its await chain ends the wait.
    #[serde(flatten)]
    pub wait: Wait,
}

/// Whether anything on a waiting task's await chain ends its wait whatever it waits for: a
/// `tokio::time::timeout`, a sleep, a sleep branch of a `select!`, an interval. Nothing is said
/// without a backtrace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Wait {
    /// The timer that ends the wait soonest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bounded_by: Option<BoundRow>,
    /// Nothing on the chain bounds it: only what it waits for can end it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub can_wait_forever: bool,
    /// Where a timeout would go: the innermost await in the program's own code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wrap_at: Option<AwaitPoint>,
}

/// A timer that bounds a wait, and the await it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BoundRow {
    /// `tokio::time::Timeout`, `tokio::time::Sleep in a tokio::select! branch`, ...
    pub by: String,
    /// How long it had left at the end of the observation, where its deadline could be read.
    pub remaining_ns: Option<u64>,
    pub file: Option<std::sync::Arc<str>>,
    pub line: Option<u64>,
}

impl Wait {
    /// The wait of a task parked with `frames` (outermost first), as of `now_ns`.
    pub fn of(frames: &[Frame], now_ns: u64) -> Self {
        if frames.is_empty() {
            return Self::default();
        }
        if let Some((bound, at)) = crate::analyze::backtrace::wait_bound(frames) {
            return Self {
                bounded_by: Some(BoundRow {
                    by: bound.by.to_string(),
                    remaining_ns: bound.deadline_ns.map(|at| at.saturating_sub(now_ns)),
                    file: at.and_then(|frame| frame.file.clone()),
                    line: at.and_then(|frame| frame.line),
                }),
                ..Self::default()
            };
        }
        Self {
            bounded_by: None,
            can_wait_forever: true,
            wrap_at: await_point_of(frames).map(AwaitPoint::of),
        }
    }

    /// The sentence the reports print under a waiting task, if there is anything to say.
    pub fn sentence(&self) -> Option<String> {
        if let Some(bound) = &self.bounded_by {
            let at = location(bound.file.as_deref(), bound.line);
            // A timeout times out; a sleep or a tick ends the wait.
            let ends = match bound.by.starts_with("tokio::time::Timeout") {
                true => "times out",
                false => "the wait ends",
            };
            let when = match bound.remaining_ns {
                Some(0) => "now".to_owned(),
                Some(ns) => format!("in {}", duration(ns)),
                None => return Some(format!("bounded: {} at {at} ends the wait", bound.by)),
            };
            return Some(format!("bounded: {ends} {when} ({} at {at})", bound.by));
        }
        if !self.can_wait_forever {
            return None;
        }
        Some(match &self.wrap_at {
            Some(point) => format!(
                "no timeout on this path: it can wait forever (wrap the await at {} in \
                 tokio::time::timeout)",
                location(point.file.as_deref(), point.line)
            ),
            None => "no timeout on this path: it can wait forever".to_owned(),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AwaitPoint {
    pub file: Option<std::sync::Arc<str>>,
    pub line: Option<u64>,
    pub function: std::sync::Arc<str>,
}

impl AwaitPoint {
    pub fn of(frame: &Frame) -> Self {
        Self {
            file: frame.file.clone(),
            line: frame.line,
            function: frame.function.clone(),
        }
    }
}

/// How the report's facts were gathered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Traced over time: counts and times are real.
    #[default]
    Probe,
    /// A snapshot of memory: states and await points only; counts are zero.
    Dump,
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub mode: Mode,
    pub target: String,
    pub pid: u32,
    /// How long the probe was attached.
    pub duration_ns: u64,
    /// Tasks seen (spawned under the probe, or first seen running).
    pub tasks: usize,
    pub peak_concurrency: usize,
    pub completed: usize,
    pub cancelled: usize,
    pub panicked: usize,
    pub live_at_end: usize,
    /// Ended tasks folded into per-type totals (`folded_types`), counted in `tasks` and the
    /// counts above but not listed one by one.
    pub folded: u64,
    /// Worker-loop tasks of multi-thread runtimes: left out of `tasks` and the counts above.
    pub runtime_workers: usize,
    /// tokio's own other tasks (its blocking tasks for files, stdio, DNS): listed in `tasks`
    /// with `internal: true`, left out of the counts above, the table and the stuck tasks.
    pub internal_tasks: usize,
    pub events: u64,
    /// Events lost because the ring buffer was full.
    pub dropped: u64,
    pub dropped_per_cpu: Vec<u64>,
    pub undecodable: u64,
    pub unmatched_poll_ends: u64,
    pub lost_frees: u64,
    pub naming: NamingSource,
    pub debuginfo: bool,
    pub probe_points: usize,
    pub links: usize,
    /// One perf-event uprobe per point, on a kernel without uprobe_multi (Linux < 6.6).
    pub perf_event_uprobes: bool,
    /// What the probe cost the target, and how much of the run it saw every poll of.
    pub overhead: Option<Overhead>,
    /// How a launched program ended (null when attached by pid, or it was killed for a hang).
    pub target_exit: Option<TargetExit>,
    /// The program the target exec'd during the probe, if it did: the probes stayed in the
    /// first program's code.
    pub exec_into: Option<String>,
    pub notes: Vec<String>,
}

/// How a launched program ended: `{"code": N}` or `{"signal": "SIGSEGV", "core_dumped": true}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum TargetExit {
    Code { code: i32 },
    Signal { signal: String, core_dumped: bool },
}

impl TargetExit {
    /// In words: "the program exited with status 0", "the program was killed by SIGSEGV".
    pub fn describe(&self) -> String {
        match self {
            Self::Code { code } => format!("the program exited with status {code}"),
            Self::Signal {
                signal,
                core_dumped,
            } => format!(
                "the program was killed by {signal}{}",
                if *core_dumped { " (core dumped)" } else { "" }
            ),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct TaskRow {
    /// The tokio task id (`tokio::task::Id`), if it could be read.
    pub id: Option<u64>,
    pub name: String,
    /// The program's lines that spawn tasks of its type (`demo/src/main.rs:40`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub spawned_at: Vec<String>,
    /// One of tokio's own tasks, not the program's (see `Summary::internal_tasks`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
    pub state: TaskState,
    pub polls: u64,
    pub busy_ns: u64,
    pub scheduled_ns: u64,
    pub idle_ns: u64,
    pub wakes: u64,
    pub self_wakes: u64,
    /// Nanoseconds after the probe attached; null when the task existed before.
    pub spawned_ns: Option<u64>,
    /// Nanoseconds after the probe attached; null while the task lives.
    pub ended_ns: Option<u64>,
    pub max_poll_ns: u64,
    /// Wakers alive at the end; null when the task predates the probe.
    pub live_wakers: Option<u64>,
    /// The tokio id of the task that spawned this one.
    pub parent: Option<u64>,
    /// The task's header address (hex).
    pub header: String,
    /// Where the task was last seen parked: its innermost await in the program's own code.
    pub await_point: Option<AwaitPoint>,
    /// The async backtrace read when the task last went idle, innermost last.
    pub backtrace: Frames,
    /// Why a task that is alive has no `backtrace`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_backtrace: Option<String>,
    /// For a waiting task: whether anything on its await chain ends the wait.
    #[serde(flatten)]
    pub wait: Wait,
    /// How long its polls took (non-empty buckets only).
    pub poll_histogram: Vec<Bucket>,
    /// How long it waited for a worker after each wake (non-empty buckets only).
    pub scheduled_histogram: Vec<Bucket>,
    /// Who woke it, most wakes first.
    pub woken_by: Vec<WakerRow>,
}

/// One bucket of a duration histogram: `count` durations below `below_ns` (and at least the
/// previous bucket's bound); `below_ns` is null for the last, open-ended bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Bucket {
    pub below_ns: Option<u64>,
    pub count: u32,
}

impl Bucket {
    fn rows(histogram: &Histogram) -> Vec<Self> {
        histogram
            .counts()
            .iter()
            .enumerate()
            .filter(|(_, count)| **count > 0)
            .map(|(index, &count)| Self {
                below_ns: Some(Histogram::upper_ns(index)).filter(|&bound| bound != u64::MAX),
                count,
            })
            .collect()
    }
}

/// A task that woke another one, or code outside any task (`task` null).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WakerRow {
    /// The waking task's tokio id; null when the wake came from outside any task (a timer, the
    /// I/O driver, another thread) or the task's id is unknown.
    pub task: Option<u64>,
    /// The waking task's name, or `(outside any task)`.
    pub name: String,
    pub wakes: u64,
}

impl TaskRow {
    /// Where the task is parked, as `src/db.rs:88`: none for a task that ended, whose last await
    /// point is history.
    pub fn parked_at(&self) -> Option<String> {
        self.await_point
            .as_ref()
            .filter(|_| !self.state.is_terminal())
            .map(|point| location(point.file.as_deref(), point.line))
    }
}

impl WorkerRow {
    /// How much of a run of `probed_ns` this thread spent polling, in percent.
    pub fn busy_percent(&self, probed_ns: u64) -> f64 {
        self.busy_ns as f64 * 100.0 / probed_ns.max(1) as f64
    }
}

/// What the run ended with, besides the model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct RunFacts {
    pub mode: Mode,
    pub target: String,
    pub pid: u32,
    pub started_ns: u64,
    pub ended_ns: u64,
    pub dropped_per_cpu: Vec<u64>,
    pub undecodable: u64,
    pub probe_points: usize,
    pub links: usize,
    /// The probes are one perf-event uprobe per point (a kernel without uprobe_multi).
    #[serde(default)]
    pub perf_event_uprobes: bool,
    /// What the probe cost the target (None for a dump).
    #[serde(default)]
    pub overhead: Option<Overhead>,
    /// How a launched program ended.
    #[serde(default)]
    pub target_exit: Option<TargetExit>,
    /// The program the target exec'd during the probe.
    #[serde(default)]
    pub exec_into: Option<String>,
}

impl TaskRow {
    /// One task's row: its figures, where it waits and who woke it.
    fn new(
        plan: &Catalogue,
        model: &TaskModel,
        analysis: &Analysis<'_>,
        facts: &RunFacts,
        index: usize,
        task: &Task,
    ) -> Self {
        let since = |ts: u64| ts.saturating_sub(facts.started_ns);
        // A report made during the run (the live view) counts the current state's time so far;
        // a snapshot has no history to count.
        let now_ns = match facts.mode {
            Mode::Probe => facts.ended_ns,
            Mode::Dump => 0,
        };
        let name = |task: &Task| task_name(plan, model, task).to_owned();
        let stack = analysis.stacks.get(index);
        let waiting = task.state == TaskState::Idle;
        TaskRow {
            id: task.id,
            name: name(task),
            spawned_at: spawned_at(plan, model, task),
            internal: is_internal(plan, model, task),
            state: task.state,
            polls: task.polls,
            busy_ns: task.time_at(TaskState::Running, now_ns),
            scheduled_ns: task.time_at(TaskState::Scheduled, now_ns),
            idle_ns: task.time_at(TaskState::Idle, now_ns),
            wakes: task.wakes,
            self_wakes: task.self_wakes,
            spawned_ns: task.spawned_ns.map(since),
            ended_ns: task.ended_ns.map(since),
            max_poll_ns: task.max_poll_ns,
            live_wakers: task.live_wakers(),
            parent: task.parent.and_then(|index| model.tasks()[index].id),
            header: format!("{:#x}", task.header),
            await_point: stack.and_then(TaskStack::await_point).map(AwaitPoint::of),
            backtrace: stack.map(|stack| stack.frames.clone()).unwrap_or_default(),
            no_backtrace: missing_backtrace(plan, stack, task),
            wait: match (waiting, stack) {
                (true, Some(stack)) => Wait::of(&stack.frames, facts.ended_ns),
                _ => Wait::default(),
            },
            poll_histogram: Bucket::rows(&task.stats().poll_times),
            scheduled_histogram: Bucket::rows(&task.stats().scheduled_times),
            woken_by: {
                let mut rows: Vec<WakerRow> = task
                    .stats()
                    .woken_by
                    .iter()
                    .map(|&(waker, wakes)| WakerRow {
                        task: waker.and_then(|waker| model.tasks()[waker].id),
                        name: waker.map_or_else(
                            || "(outside any task)".to_owned(),
                            |waker| name(&model.tasks()[waker]),
                        ),
                        wakes,
                    })
                    .collect();
                rows.sort_by(|a, b| b.wakes.cmp(&a.wakes).then(a.task.cmp(&b.task)));
                rows
            },
        }
    }
}

/// The probe's cost in one line: its share of the target's CPU, and how much it saw.
pub fn describe_overhead(overhead: &Overhead) -> String {
    let budget = match overhead.budget_percent {
        Some(percent) => format!(" (budget {percent}%)"),
        None => " (--exact: every poll followed)".to_owned(),
    };
    let spent = format!(
        "{} of probe traps, {} collecting",
        duration(overhead.in_target_ns()),
        duration(overhead.collector_cpu_ns)
    );
    let target = duration(overhead.target_cpu_ns);
    let mut line = if overhead.is_judged() {
        format!(
            "probe cost: ~{:.1}% of the target's CPU ({target} while probed){budget}: {spent}",
            overhead.share_percent,
        )
    } else {
        format!(
            "probe cost: {spent}, while the target used only {target} of CPU, too little for a \
             share of it to mean anything{budget}"
        )
    };
    if overhead.coverage < 1.0 {
        line += &format!(
            "; per-poll probes attached {:.0}% of the time in {} windows: polls, wakes and times \
             are counted in those windows (estimates of the whole), the rest read from memory",
            overhead.coverage * 100.0,
            overhead.windows
        );
    }
    line
}

/// What analysis adds to the report.
pub struct Analysis<'a> {
    pub stacks: &'a Stacks,
    /// Idle longer than this at the end: stuck.
    pub stuck_after_ns: u64,
    pub limits: Thresholds,
}

/// Tasks that wait for each other in a cycle.
#[derive(Clone, Debug, Serialize)]
pub struct DeadlockRow {
    /// Tokio task ids, each waiting for the next (the last for the first).
    pub tasks: Vec<Option<u64>>,
    /// The locks (and tasks) they wait on, in the same order.
    pub locks: Vec<Resource>,
    pub details: Vec<WaiterRow>,
}

/// One task of a deadlock or a wait chain: what it waits on, where, and what it holds.
#[derive(Clone, Debug, Serialize)]
pub struct WaiterRow {
    pub task: Option<u64>,
    pub name: String,
    pub waits_on: Resource,
    pub at: Option<AwaitPoint>,
    /// Locks it keeps across its await, with the frame that holds each.
    pub holds: Vec<HeldRow>,
}

#[derive(Clone, Debug, Serialize)]
pub struct HeldRow {
    pub resource: Resource,
    pub function: std::sync::Arc<str>,
    pub file: Option<std::sync::Arc<str>>,
    pub line: Option<u64>,
}

/// A wait on a lock held by a task that is itself waiting (no cycle).
#[derive(Clone, Debug, Serialize)]
pub struct ChainRow {
    pub waiter: WaiterRow,
    pub holder: Option<u64>,
    pub holder_name: String,
    pub holder_leaf: Option<String>,
}

/// One thread's polling.
#[derive(Clone, Debug, Serialize)]
pub struct WorkerRow {
    pub tid: u32,
    pub polls: u64,
    pub busy_ns: u64,
    pub longest_poll_ns: u64,
    /// The task that blocked this thread longest (tokio id).
    pub longest_poll_task: Option<u64>,
    pub longest_poll_name: Option<String>,
}

impl Report {
    pub fn new(
        plan: &Catalogue,
        model: &TaskModel,
        facts: RunFacts,
        analysis: Analysis<'_>,
    ) -> Self {
        let tasks = task_rows(plan, model, &analysis, &facts);
        let waits = Waits {
            plan,
            model,
            stacks: analysis.stacks,
        };
        let graph = WaitGraph::build(model, analysis.stacks);
        let found = graph.deadlocks();
        let folded_types = FoldedRow::all(plan, model);
        Self {
            stuck: stuck_rows(plan, model, &analysis, facts.ended_ns),
            warnings: warnings(plan, model, &analysis, facts.ended_ns),
            chains: graph
                .chains(model, &found)
                .into_iter()
                .map(|chain| waits.chain(chain))
                .collect(),
            deadlocks: found
                .iter()
                .map(|deadlock| waits.deadlock(deadlock))
                .collect(),
            workers: worker_rows(plan, model),
            summary: Summary::new(plan, model, facts, &tasks, &folded_types),
            tasks,
            folded_types,
        }
    }

    pub fn write_json(&self, out: impl Write) -> io::Result<()> {
        // An I/O error keeps its kind (a closed pipe is no failure to the caller).
        serde_json::to_writer_pretty(out, self).map_err(|error| match error.io_error_kind() {
            Some(kind) => io::Error::new(kind, error),
            None => io::Error::other(error),
        })
    }

    /// The summary and the `top` busiest tasks (all when `top` is 0).
    pub fn write_text(&self, mut out: impl Write, top: usize) -> io::Result<()> {
        let s = &self.summary;
        writeln!(
            out,
            "\nasync-inspect: {} (pid {}) probed for {}",
            s.target,
            s.pid,
            duration(s.duration_ns)
        )?;
        if let Some(exit) = &s.target_exit {
            writeln!(out, "  {}", exit.describe())?;
        }
        if let Some(program) = &s.exec_into {
            writeln!(
                out,
                "  the program exec'd {program} during the probe: the probes stayed in {}'s code, \
                 so what it did after the exec is not seen",
                s.target
            )?;
        }
        writeln!(
            out,
            "  tasks: {} seen, peak {} at once; {} completed, {} cancelled, {} panicked, {} live at the end",
            s.tasks, s.peak_concurrency, s.completed, s.cancelled, s.panicked, s.live_at_end
        )?;
        if s.internal_tasks > 0 {
            writeln!(
                out,
                "  and {} of tokio's own tasks (blocking file, stdio or DNS work), left out of the \
                 counts, the table and the stuck tasks (--json marks them `internal: true`)",
                s.internal_tasks
            )?;
        }
        write_probe_facts(s, &mut out)?;
        self.write_table(&mut out, top)?;
        self.write_folded(out)
    }

    /// The ended tasks folded into per-type totals, if any were.
    pub fn write_folded(&self, mut out: impl Write) -> io::Result<()> {
        if self.folded_types.is_empty() {
            return Ok(());
        }
        writeln!(
            out,
            "\n  {} ended tasks folded into their types (the slowest, latest, panicked and cancelled \
             are listed above; --keep-all-tasks lists every one):",
            self.summary.folded
        )?;
        for row in self.folded_types.iter().filter(|row| !row.internal) {
            writeln!(
                out,
                "    {:<50} {:>9} tasks {:>10} polls  busy {:>9}  longest poll {}",
                row.name,
                row.tasks,
                row.polls,
                duration(row.busy_ns),
                duration(row.max_poll_ns)
            )?;
        }
        Ok(())
    }

    /// What each kind of probe cost (`probe --explain`).
    pub fn write_explain(&self, mut out: impl Write) -> io::Result<()> {
        let Some(overhead) = &self.summary.overhead else {
            return Ok(());
        };
        let seconds = (self.summary.duration_ns as f64 / 1e9).max(1e-9);
        writeln!(out, "\n  what each kind of probe cost:")?;
        writeln!(
            out,
            "  {:<44} {:>6} {:>10} {:<15} {:>8}  INSTRUCTION",
            "PROBE", "POINTS", "HITS/S", "KERNEL", "NS/HIT"
        )?;
        for probe in &overhead.probes {
            let kernel = match probe.single_stepped {
                0 if probe.moved > 0 => "emulated, moved".to_owned(),
                0 => "emulated".to_owned(),
                n if n == probe.points => "single-stepped".to_owned(),
                n => format!("{n} single-stepped"),
            };
            writeln!(
                out,
                "  {:<44} {:>6} {:>10.0} {:<15} {:>8}  {}",
                probe.probe,
                probe.points,
                probe.hits as f64 / seconds,
                kernel,
                probe.ns_per_hit,
                probe.instruction
            )?;
        }
        if let Some(prices) = overhead.prices {
            writeln!(
                out,
                "  prices per hit{}: {} ns emulated, {} ns single-stepped, +{} ns for a return probe",
                if prices.calibrated {
                    ", calibrated on this machine at start"
                } else {
                    " (typical figures: calibration failed)"
                },
                prices.emulated_ns,
                prices.single_stepped_ns,
                prices.return_ns
            )?;
        }
        Ok(())
    }

    /// The program's own tasks, busiest first: every task but tokio's internal ones.
    pub fn own_tasks(&self) -> Vec<&TaskRow> {
        self.tasks.iter().filter(|task| !task.internal).collect()
    }

    /// The task table, busiest first, `top` rows (all when 0).
    pub fn write_table(&self, mut out: impl Write, top: usize) -> io::Result<()> {
        let tasks = self.own_tasks();
        if tasks.is_empty() {
            writeln!(
                out,
                "\n  no tasks were polled, spawned or woken while the probe was attached"
            )?;
            return Ok(());
        }
        let shown = if top == 0 {
            tasks.len()
        } else {
            top.min(tasks.len())
        };
        let width = tasks[..shown]
            .iter()
            .map(|task| task.name.chars().count())
            .max()
            .unwrap_or(4)
            .clamp(4, 60);
        let await_point = |task: &TaskRow| task.parked_at().unwrap_or_default();
        if self.summary.mode == Mode::Dump {
            return write_snapshot_table(&mut out, &tasks[..shown], width);
        }
        writeln!(
            out,
            "\n  {:>6}  {:<width$}  {:<9}  {:>7}  {:>9}  {:>9}  {:>9}  {:>6}  {:>5}  AWAIT",
            "ID", "TASK", "STATE", "POLLS", "BUSY", "SCHED", "IDLE", "WAKES", "SELF"
        )?;
        for &task in &tasks[..shown] {
            let name: String = task.name.chars().take(width).collect();
            writeln!(
                out,
                "  {:>6}  {:<width$}  {:<9}  {:>7}  {:>9}  {:>9}  {:>9}  {:>6}  {:>5}  {}",
                task.id.map_or_else(|| "?".to_owned(), |id| id.to_string()),
                name,
                task.state.as_str(),
                task.polls,
                duration(task.busy_ns),
                duration(task.scheduled_ns),
                duration(task.idle_ns),
                task.wakes,
                task.self_wakes,
                await_point(task),
            )?;
        }
        if shown < tasks.len() {
            writeln!(
                out,
                "  … {} more (--top 0 shows all, --json FILE writes every task)",
                tasks.len() - shown
            )?;
        }
        Ok(())
    }
}

impl Report {
    /// The hang report: stuck tasks, longest idle first, each with its async backtrace
    /// innermost first (Go-dump style).
    pub fn write_stuck(&self, mut out: impl Write, stuck_after_ns: u64) -> io::Result<()> {
        if self.stuck.is_empty() {
            return Ok(());
        }
        writeln!(
            out,
            "\n  stuck: {} task(s) idle for more than {}, longest first",
            self.stuck.len(),
            duration(stuck_after_ns)
        )?;
        for stuck in &self.stuck {
            let what = format!("idle {}", duration(stuck.idle_ns));
            Parked {
                id: stuck.id,
                name: &stuck.name,
                spawned_at: &stuck.spawned_at,
                what: &what,
                leaf: stuck.leaf.as_deref(),
                backtrace: &stuck.backtrace,
                no_backtrace: stuck.no_backtrace.as_deref(),
                wait: &stuck.wait,
            }
            .write(&mut out)?;
        }
        Ok(())
    }

    /// Deadlocks, wait chains, warnings and worker health.
    pub fn write_diagnosis(&self, mut out: impl Write) -> io::Result<()> {
        let waiter_line = WaiterRow::describe;
        for deadlock in &self.deadlocks {
            writeln!(
                out,
                "\n  DEADLOCK: {} tasks wait for each other",
                deadlock.tasks.len()
            )?;
            for waiter in &deadlock.details {
                writeln!(out, "    {}", waiter_line(waiter))?;
            }
        }
        for chain in &self.chains {
            writeln!(
                out,
                "\n  blocked: {}, held by {}{}",
                waiter_line(&chain.waiter),
                task_text(chain.holder, &chain.holder_name),
                chain
                    .holder_leaf
                    .as_ref()
                    .map_or_else(String::new, |leaf| format!(", which is itself {leaf}"))
            )?;
        }
        if !self.warnings.is_empty() {
            writeln!(out, "\n  warnings:")?;
            for warning in &self.warnings {
                writeln!(out, "    {}: {}", warning.kind, warning.summary)?;
                writeln!(out, "        {}", warning.detail)?;
            }
        }
        let probed_ns = self.summary.duration_ns;
        if !self.workers.is_empty() && self.summary.mode == Mode::Probe {
            writeln!(out, "\n  threads that polled tasks:")?;
            for worker in &self.workers {
                writeln!(
                    out,
                    "    tid {:>7}: {:>7} polls, polling {:>5.1}% of the time; longest poll {}{}",
                    worker.tid,
                    worker.polls,
                    worker.busy_percent(probed_ns),
                    duration(worker.longest_poll_ns),
                    worker
                        .longest_poll_name
                        .as_ref()
                        .map_or_else(String::new, |name| format!(
                            " ({})",
                            task_text(worker.longest_poll_task, name)
                        ))
                )?;
            }
        }
        Ok(())
    }

    /// Every live task with its async backtrace (the `dump` view).
    pub fn write_backtraces(&self, mut out: impl Write) -> io::Result<()> {
        let live = self.own_tasks().into_iter();
        for task in live.filter(|task| !task.state.is_terminal()) {
            Parked {
                id: task.id,
                name: &task.name,
                spawned_at: &task.spawned_at,
                what: task.state.as_str(),
                leaf: task
                    .backtrace
                    .last()
                    .and_then(|frame| frame.leaf.as_deref()),
                backtrace: &task.backtrace,
                no_backtrace: task.no_backtrace.as_deref(),
                wait: &task.wait,
            }
            .write(&mut out)?;
        }
        Ok(())
    }
}

/// One waiting task as the hang reports show it.
struct Parked<'a> {
    id: Option<u64>,
    name: &'a str,
    spawned_at: &'a [String],
    /// `idle 12.3s`, or its state.
    what: &'a str,
    leaf: Option<&'a str>,
    backtrace: &'a [Frame],
    no_backtrace: Option<&'a str>,
    wait: &'a Wait,
}

impl Parked<'_> {
    /// Go-dump style: `task 12 app::audit — idle 12.3s — waiting for ...`, then its frames
    /// innermost first, then whether anything bounds the wait.
    fn write(&self, out: &mut impl Write) -> io::Result<()> {
        let (task, what) = (task_text(self.id, self.name), self.what);
        match self.leaf {
            Some(leaf) => writeln!(out, "\n  {task} — {what} — {leaf}")?,
            None => writeln!(out, "\n  {task} — {what}")?,
        }
        if self.backtrace.is_empty() {
            let why = self.no_backtrace.unwrap_or("none was read");
            writeln!(out, "      (no backtrace: {why})")?;
        }
        for (depth, frame) in self.backtrace.iter().rev().enumerate() {
            writeln!(out, "      {}", frame_line(frame, depth))?;
        }
        if !self.spawned_at.is_empty() {
            writeln!(out, "      spawned at {}", self.spawned_at.join(", "))?;
        }
        if let Some(sentence) = self.wait.sentence() {
            writeln!(out, "      {sentence}")?;
        }
        Ok(())
    }
}

/// One row per task of the program's own (runtime workers left out), busiest first.
fn task_rows(
    plan: &Catalogue,
    model: &TaskModel,
    analysis: &Analysis<'_>,
    facts: &RunFacts,
) -> Vec<TaskRow> {
    let is_worker = |task: &Task| is_runtime_worker(plan, model, task);
    let runtime_workers = model.tasks().iter().filter(|task| is_worker(task)).count();
    // Sized exactly (a filtered iterator would grow by doubling): one row per task, and a
    // program can have 100 000 of them.
    let mut tasks = Vec::with_capacity(model.tasks().len() - runtime_workers);
    tasks.extend(
        model
            .tasks()
            .iter()
            .enumerate()
            .filter(|(_, task)| !is_worker(task))
            .map(|(index, task)| TaskRow::new(plan, model, analysis, facts, index, task)),
    );
    tasks.sort_by(|a, b| b.busy_ns.cmp(&a.busy_ns).then(a.id.cmp(&b.id)));
    tasks
}

/// The program's own tasks idle longer than the threshold at `ended_ns`, with where each waits.
fn stuck_rows(
    plan: &Catalogue,
    model: &TaskModel,
    analysis: &Analysis<'_>,
    ended_ns: u64,
) -> Vec<StuckRow> {
    let own = |task: &Task| !is_internal(plan, model, task);
    hangs::stuck_tasks(model, ended_ns, analysis.stuck_after_ns, own)
        .into_iter()
        .map(|stuck| {
            let task = &model.tasks()[stuck.task];
            let stack = analysis.stacks.get(stuck.task);
            StuckRow {
                id: task.id,
                name: task_name(plan, model, task).to_owned(),
                spawned_at: spawned_at(plan, model, task),
                idle_ns: stuck.idle_ns,
                leaf: stack.and_then(|stack| stack.leaf().map(str::to_owned)),
                backtrace: stack.map(|stack| stack.frames.clone()).unwrap_or_default(),
                no_backtrace: missing_backtrace(plan, stack, task),
                wait: stack.map_or_else(Wait::default, |stack| Wait::of(&stack.frames, ended_ns)),
            }
        })
        .collect()
}

/// The lints over the program's own tasks, as of `ended_ns`.
fn warnings(
    plan: &Catalogue,
    model: &TaskModel,
    analysis: &Analysis<'_>,
    ended_ns: u64,
) -> Vec<Warning> {
    let task_type = |task: &Task| task_type(plan, model, task);
    let views: Vec<TaskView<'_>> = model
        .tasks()
        .iter()
        .enumerate()
        .filter(|(_, task)| !is_internal(plan, model, task))
        .map(|(index, task)| TaskView {
            index,
            task,
            name: task_type(task).map_or("(unknown type)", |t| t.name.as_str()),
            stack: analysis.stacks.get(index),
            now_ns: ended_ns,
            idle_ns: model
                .idle_since(index)
                .map(|since| ended_ns.saturating_sub(since)),
        })
        .collect();
    let type_name = |task: &Task| {
        task_type(task)
            .filter(|t| !t.is_internal())
            .map(|t| t.name.clone())
    };
    lints::check_all(&views, model, &type_name, &analysis.limits)
}

/// Rows of tasks that wait on each other: a deadlock's members, a chain's waiter.
struct Waits<'a> {
    plan: &'a Catalogue,
    model: &'a TaskModel,
    stacks: &'a Stacks,
}

impl Waits<'_> {
    fn name(&self, task: &Task) -> String {
        task_name(self.plan, self.model, task).to_owned()
    }

    /// The task at `index`, waiting on `waits_on`: where, and the locks it holds meanwhile.
    fn waiter(&self, index: usize, waits_on: Resource) -> WaiterRow {
        let task = &self.model.tasks()[index];
        let stack = self.stacks.get(index);
        let holds = stack.map(|stack| {
            stack
                .frames
                .iter()
                .flat_map(|frame| {
                    frame.holds.iter().map(|resource| HeldRow {
                        resource: *resource,
                        function: frame.function.clone(),
                        file: frame.file.clone(),
                        line: frame.line,
                    })
                })
                .collect()
        });
        WaiterRow {
            task: task.id,
            name: self.name(task),
            waits_on,
            at: stack.and_then(TaskStack::await_point).map(AwaitPoint::of),
            holds: holds.unwrap_or_default(),
        }
    }

    fn chain(&self, chain: Chain) -> ChainRow {
        let holder = &self.model.tasks()[chain.holder];
        ChainRow {
            waiter: self.waiter(chain.waiter, chain.resource),
            holder: holder.id,
            holder_name: self.name(holder),
            holder_leaf: self
                .stacks
                .get(chain.holder)
                .and_then(|stack| stack.leaf().map(str::to_owned)),
        }
    }

    fn deadlock(&self, deadlock: &Deadlock) -> DeadlockRow {
        DeadlockRow {
            tasks: deadlock
                .tasks
                .iter()
                .map(|&t| self.model.tasks()[t].id)
                .collect(),
            locks: deadlock.waits_on.clone(),
            details: deadlock
                .tasks
                .iter()
                .zip(&deadlock.waits_on)
                .map(|(&task, &resource)| self.waiter(task, resource))
                .collect(),
        }
    }
}

/// One row per thread that polled tasks.
fn worker_rows(plan: &Catalogue, model: &TaskModel) -> Vec<WorkerRow> {
    model
        .workers
        .iter()
        .map(|(&tid, stats)| {
            let longest = stats.longest_poll_task.map(|index| &model.tasks()[index]);
            WorkerRow {
                tid,
                polls: stats.polls,
                busy_ns: stats.busy_ns,
                longest_poll_ns: stats.longest_poll_ns,
                longest_poll_task: longest.and_then(|task| task.id),
                longest_poll_name: longest.map(|task| task_name(plan, model, task).to_owned()),
            }
        })
        .collect()
}

impl Summary {
    /// The run's figures: the program's own tasks counted, those folded into their types' totals
    /// included; runtime workers and tokio's internal tasks counted apart.
    fn new(
        plan: &Catalogue,
        model: &TaskModel,
        facts: RunFacts,
        tasks: &[TaskRow],
        folded_types: &[FoldedRow],
    ) -> Self {
        // `tasks` has a row for every task but the runtime workers.
        let runtime_workers = model.tasks().len() - tasks.len();
        let folded = |field: fn(&FoldedRow) -> u64| -> usize {
            let rows = folded_types.iter().filter(|row| !row.internal);
            rows.map(field).sum::<u64>() as usize
        };
        // The program's own tasks: what the counts count.
        let own: Vec<&TaskRow> = tasks.iter().filter(|task| !task.internal).collect();
        let internal_tasks = tasks.len() - own.len();
        let count = |state| own.iter().filter(|task| task.state == state).count();
        Summary {
            mode: facts.mode,
            target: facts.target,
            pid: facts.pid,
            duration_ns: facts.ended_ns.saturating_sub(facts.started_ns),
            tasks: own.len() + folded(|row| row.tasks),
            // Folded tasks no longer say when they lived: the model's running peak does.
            peak_concurrency: model
                .peak_concurrency(|task| !is_internal(plan, model, task))
                .max(
                    model
                        .peak_active()
                        .saturating_sub(runtime_workers + internal_tasks),
                ),
            completed: count(TaskState::Completed) + folded(|row| row.completed),
            cancelled: count(TaskState::Cancelled) + folded(|row| row.cancelled),
            panicked: count(TaskState::Panicked) + folded(|row| row.panicked),
            folded: folded(|row| row.tasks) as u64,
            live_at_end: own.iter().filter(|task| !task.state.is_terminal()).count(),
            runtime_workers,
            internal_tasks,
            events: model.events,
            dropped: facts.dropped_per_cpu.iter().sum(),
            dropped_per_cpu: facts.dropped_per_cpu,
            undecodable: facts.undecodable,
            unmatched_poll_ends: model.anomalies.unmatched_poll_ends,
            lost_frees: model.anomalies.lost_frees,
            naming: plan.naming,
            debuginfo: plan.has_dwarf,
            probe_points: facts.probe_points,
            links: facts.links,
            perf_event_uprobes: facts.perf_event_uprobes,
            overhead: facts.overhead,
            target_exit: facts.target_exit,
            exec_into: facts.exec_into,
            notes: plan.notes.clone(),
        }
    }
}

/// Where tasks of `task`'s type are spawned: the program's lines, as `demo/src/main.rs:40`.
fn spawned_at(plan: &Catalogue, model: &TaskModel, task: &Task) -> Vec<String> {
    let task_type = model
        .task_type(task)
        .and_then(|index| plan.task_types.get(index));
    task_type.map_or_else(Vec::new, |task_type| {
        task_type
            .spawned_at
            .iter()
            .map(|at| location(Some(&at.file), Some(u64::from(at.line))))
            .collect()
    })
}

/// A tokio task id, or `?` when it could not be read.
pub fn id_text(id: Option<u64>) -> String {
    id.map_or_else(|| "?".to_owned(), |id| id.to_string())
}

/// `task 12 app::worker`, the way every report names a task; a future given to `block_on`,
/// which is no task and has no id, by its name alone: `block_on: app::main::{async block#0}`.
pub fn task_text(id: Option<u64>, name: &str) -> String {
    if id.is_none() && name.starts_with(crate::resolve::block_on::PREFIX) {
        return name.to_owned();
    }
    format!("task {} {name}", id_text(id))
}

/// One frame of an async backtrace: `at app::handler (demo/src/main.rs:12) [n = 3]` for the
/// innermost (`depth` 0), `<- …` for its callers.
pub fn frame_line(frame: &Frame, depth: usize) -> String {
    let mut line = format!(
        "{} {}",
        if depth == 0 { "at" } else { "<-" },
        frame.function
    );
    if frame.file.is_some() {
        line.push_str(&format!(
            " ({})",
            location(frame.file.as_deref(), frame.line)
        ));
    }
    if !frame.locals.is_empty() {
        let locals: Vec<String> = frame
            .locals
            .iter()
            .map(|local| format!("{} = {}", local.name, local.value))
            .collect();
        line.push_str(&format!(" [{}]", locals.join(", ")));
    }
    line
}

impl WaiterRow {
    /// `task 4 app::a waits for tokio::sync::Mutex 0x… at src/main.rs:12, holding …`.
    pub fn describe(&self) -> String {
        let mut line = format!(
            "{} waits for {}",
            task_text(self.task, &self.name),
            self.waits_on
        );
        if let Some(at) = &self.at {
            line.push_str(&format!(" at {}", location(at.file.as_deref(), at.line)));
        }
        for held in &self.holds {
            line.push_str(&format!(
                ", holding {} (across the await at {})",
                held.resource,
                location(held.file.as_deref(), held.line)
            ));
        }
        line
    }
}

/// A task's type in the catalogue, once the model knows it.
pub fn task_type<'a>(
    catalogue: &'a Catalogue,
    model: &TaskModel,
    task: &Task,
) -> Option<&'a TypeName> {
    model
        .task_type(task)
        .and_then(|index| catalogue.task_types.get(index))
}

/// What a task is called in every report: its future's name.
pub fn task_name<'a>(catalogue: &'a Catalogue, model: &TaskModel, task: &Task) -> &'a str {
    task_type(catalogue, model, task).map_or("(unknown type: never polled)", |t| t.name.as_str())
}

/// One of tokio's own tasks: left out of the counts, the table and the stuck tasks.
pub fn is_internal(catalogue: &Catalogue, model: &TaskModel, task: &Task) -> bool {
    task_type(catalogue, model, task).is_some_and(TypeName::is_internal)
}

/// Why a task that is alive shows no backtrace, in words; None when it has one, or has ended
/// (where it last waited is history).
fn missing_backtrace(
    catalogue: &Catalogue,
    stack: Option<&TaskStack>,
    task: &Task,
) -> Option<String> {
    if task.state.is_terminal() || stack.is_some_and(|stack| !stack.frames.is_empty()) {
        return None;
    }
    if let Some(why) = stack.and_then(|stack| stack.missing.as_deref()) {
        return Some(why.to_string());
    }
    Some(if !catalogue.has_dwarf {
        NoBacktrace::NoDwarf.to_string()
    } else if task.state == TaskState::Idle {
        "not read yet: a backtrace is read once a task has waited 100 ms".to_owned()
    } else {
        format!(
            "{} when last looked at: a backtrace is read while a task waits",
            task.state.as_str()
        )
    })
}

/// A multi-thread worker's loop: runtime plumbing that reports leave out of the task counts.
pub fn is_runtime_worker(catalogue: &Catalogue, model: &TaskModel, task: &Task) -> bool {
    task_type(catalogue, model, task).is_some_and(|t| t.runtime_worker)
}

/// The text report's lines on the probe itself: events, probes, its cost, and the notes.
fn write_probe_facts(s: &Summary, out: &mut impl Write) -> io::Result<()> {
    let seconds = (s.duration_ns as f64 / 1e9).max(1e-9);
    writeln!(
        out,
        "  events: {} ({:.0}/s), dropped: {}{}",
        s.events,
        s.events as f64 / seconds,
        s.dropped,
        if s.dropped > 0 {
            " (a CPU's ring buffer was full: counts are low; try --ring-buffer-mb)"
        } else {
            ""
        }
    )?;
    writeln!(
        out,
        "  probes: {}; task names from {}",
        if s.perf_event_uprobes {
            format!(
                "{} points as perf-event uprobes, one per point (this kernel has no uprobe_multi, \
                 Linux >= 6.6)",
                s.probe_points
            )
        } else {
            format!(
                "{} points in {} uprobe_multi links",
                s.probe_points, s.links
            )
        },
        s.naming.describe()
    )?;
    if let Some(overhead) = &s.overhead {
        writeln!(out, "  {}", describe_overhead(overhead))?;
    }
    for note in &s.notes {
        writeln!(out, "  note: {note}")?;
    }
    Ok(())
}

/// A snapshot's task table (`dump`): it has no history, only what each task is and where it
/// waits.
fn write_snapshot_table(out: &mut impl Write, tasks: &[&TaskRow], width: usize) -> io::Result<()> {
    writeln!(
        out,
        "\n  {:>6}  {:<width$}  {:<9}  AWAIT",
        "ID", "TASK", "STATE"
    )?;
    for &task in tasks {
        let name: String = task.name.chars().take(width).collect();
        writeln!(
            out,
            "  {:>6}  {:<width$}  {:<9}  {}",
            task.id.map_or_else(|| "?".to_owned(), |id| id.to_string()),
            name,
            task.state.as_str(),
            task.parked_at().unwrap_or_default(),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_probes_cost_is_a_share_only_of_a_target_that_worked() {
        use super::describe_overhead;
        let busy = crate::overhead::Overhead {
            budget_percent: Some(5.0),
            share_percent: 2.5,
            target_cpu_ns: 2_000_000_000,
            traps_ns: 40_000_000,
            collector_cpu_ns: 10_000_000,
            coverage: 1.0,
            ..Default::default()
        };
        assert_eq!(
            describe_overhead(&busy),
            "probe cost: ~2.5% of the target's CPU (2.00s while probed) (budget 5%): 40.0ms of \
             probe traps, 10.0ms collecting"
        );
        let idle = crate::overhead::Overhead {
            share_percent: 0.0,
            target_cpu_ns: 3_100_000,
            budget_percent: None,
            ..busy
        };
        assert_eq!(
            describe_overhead(&idle),
            "probe cost: 40.0ms of probe traps, 10.0ms collecting, while the target used only \
             3.1ms of CPU, too little for a share of it to mean anything (--exact: every poll \
             followed)"
        );
    }

    #[test]
    fn a_wait_says_what_bounds_it_or_that_nothing_does() {
        use super::{BoundRow, Wait};
        use crate::analyze::backtrace::{Bound, Frame};
        let bounded = |by: &str, remaining_ns| Wait {
            bounded_by: Some(BoundRow {
                by: by.into(),
                remaining_ns,
                file: Some("/app/src/main.rs".into()),
                line: Some(40),
            }),
            ..Wait::default()
        };
        assert_eq!(
            bounded("tokio::time::Timeout", Some(4_200_000_000)).sentence(),
            Some("bounded: times out in 4.20s (tokio::time::Timeout at app/src/main.rs:40)".into())
        );
        assert_eq!(
            bounded("tokio::time::Sleep", Some(0)).sentence(),
            Some("bounded: the wait ends now (tokio::time::Sleep at app/src/main.rs:40)".into())
        );
        assert_eq!(
            bounded("tokio::time::Interval", None).sentence(),
            Some("bounded: tokio::time::Interval at app/src/main.rs:40 ends the wait".into())
        );
        let user = |line| Frame {
            function: "app::serve".into(),
            file: Some("/app/src/main.rs".into()),
            line: Some(line),
            ..Frame::default()
        };
        let leaf = Frame {
            function: "tokio::sync::oneshot::Receiver<u8>".into(),
            ..Frame::default()
        };
        let forever = Wait::of(&[user(42), leaf.clone()], 0);
        assert_eq!(
            forever.sentence(),
            Some(
                "no timeout on this path: it can wait forever (wrap the await at \
                 app/src/main.rs:42 in tokio::time::timeout)"
                    .into()
            )
        );
        let sleeping = Frame {
            bound: Some(Box::new(Bound {
                by: "tokio::time::Sleep".into(),
                deadline_ns: Some(5_000),
            })),
            ..leaf
        };
        let wait = Wait::of(&[user(42), sleeping], 2_000);
        assert_eq!(
            wait.bounded_by.as_ref().map(|b| b.remaining_ns),
            Some(Some(3_000))
        );
        assert_eq!(wait.bounded_by.as_ref().and_then(|b| b.line), Some(42));
        assert!(!wait.can_wait_forever);
        // Nothing is said of a wait whose backtrace was not read.
        assert_eq!(Wait::of(&[], 0).sentence(), None);
    }
}
