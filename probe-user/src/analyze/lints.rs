//! Lints: small self-contained checks over each task's facts, in the shape tokio-console uses
//! for its warnings (`check` says whether it fires, `format` says why for one task, `summary`
//! names it), so adding one is adding one small type.

use std::collections::BTreeMap;

use super::stacks::TaskStack;
use crate::{
    model::{Task, TaskModel, TaskState},
    readable::{duration, location},
};

/// What the lints measure against.
#[derive(Clone, Copy, Debug)]
pub struct Thresholds {
    /// A poll longer than this blocks its worker (default 10 ms).
    pub long_poll_ns: u64,
    /// Idle this long with no live waker: lost (the stuck threshold).
    pub lost_waker_after_ns: u64,
    /// Woken but not polled for this long.
    pub scheduling_latency_ns: u64,
    /// Self-wakes are judged from this many wakes on.
    pub self_wake_min_wakes: u64,
    /// A task type with this many live tasks and none finished is leaking.
    pub leak_min_live: usize,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            long_poll_ns: 10_000_000,
            // No waker means it can never be woken; the wait only rules out a waker in flight.
            lost_waker_after_ns: 100_000_000,
            scheduling_latency_ns: 100_000_000,
            self_wake_min_wakes: 100,
            leak_min_live: 100,
        }
    }
}

/// One task as the lints see it.
pub struct TaskView<'a> {
    pub index: usize,
    pub task: &'a Task,
    pub name: &'a str,
    pub stack: Option<&'a TaskStack>,
    /// The end of the observation.
    pub now_ns: u64,
    /// How long it has been idle, if it is.
    pub idle_ns: Option<u64>,
}

impl TaskView<'_> {
    fn at(&self) -> String {
        match self.stack.and_then(TaskStack::await_point) {
            Some(frame) => format!(" at {}", location(frame.file.as_deref(), frame.line)),
            None => String::new(),
        }
    }
}

pub trait Lint {
    /// Machine name, as in the JSON report's `kind`.
    fn kind(&self) -> &'static str;
    /// One line naming the problem.
    fn summary(&self) -> &'static str;
    fn check(&self, task: &TaskView<'_>, limits: &Thresholds) -> bool;
    /// Why it fires for this task, with the evidence.
    fn format(&self, task: &TaskView<'_>, limits: &Thresholds) -> String;
}

/// A warning in the report.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Warning {
    pub kind: &'static str,
    /// Index into the model's tasks (the report shows the tokio id).
    #[serde(skip)]
    pub task_index: Option<usize>,
    /// The tokio task id.
    pub task: Option<u64>,
    pub summary: String,
    pub detail: String,
}

/// Idle, and no waker for it exists: nothing can ever wake it.
pub struct LostWaker;

impl Lint for LostWaker {
    fn kind(&self) -> &'static str {
        "lost_waker"
    }
    fn summary(&self) -> &'static str {
        "task is idle and no waker for it exists: nothing can ever wake it"
    }
    fn check(&self, task: &TaskView<'_>, limits: &Thresholds) -> bool {
        task.task.state == TaskState::Idle
            && task.task.live_wakers() == Some(0)
            && task
                .idle_ns
                .is_some_and(|idle| idle >= limits.lost_waker_after_ns)
    }
    fn format(&self, task: &TaskView<'_>, _: &Thresholds) -> String {
        format!(
            "idle for {}{}, and its reference count holds no waker: a future returned Pending \
             without keeping cx.waker(), or whatever kept it dropped it without waking",
            duration(task.idle_ns.unwrap_or(0)),
            task.at(),
        )
    }
}

/// Most wakes come from the task itself while it runs: a busy loop through the scheduler.
pub struct SelfWakes;

impl Lint for SelfWakes {
    fn kind(&self) -> &'static str {
        "self_wakes"
    }
    fn summary(&self) -> &'static str {
        "task wakes itself for most of its polls"
    }
    fn check(&self, task: &TaskView<'_>, limits: &Thresholds) -> bool {
        task.task.wakes >= limits.self_wake_min_wakes && task.task.self_wakes * 2 > task.task.wakes
    }
    fn format(&self, task: &TaskView<'_>, _: &Thresholds) -> String {
        format!(
            "{} of its {} wakes ({}%) came from inside its own polls",
            task.task.self_wakes,
            task.task.wakes,
            task.task.self_wakes * 100 / task.task.wakes.max(1)
        )
    }
}

/// A poll that ran for long: blocking in async code stalls every task queued on that worker.
pub struct LongPoll;

impl Lint for LongPoll {
    fn kind(&self) -> &'static str {
        "long_poll"
    }
    fn summary(&self) -> &'static str {
        "a poll blocked its worker thread (blocking code in async?)"
    }
    /// Preemption and steal time do not count: on a busy machine the kernel, or on a busy host
    /// the hypervisor, not the program, stalled the worker, and the program can do nothing
    /// about it.
    fn check(&self, task: &TaskView<'_>, limits: &Thresholds) -> bool {
        task.task.stats().max_on_cpu_ns > limits.long_poll_ns
            || task.task.stats().max_blocked_ns > limits.long_poll_ns
    }
    fn format(&self, task: &TaskView<'_>, limits: &Thresholds) -> String {
        format!(
            "its longest poll took {} (> {}) on thread {}: {}{}; every task queued on that worker waited",
            duration(task.task.max_poll_ns),
            duration(limits.long_poll_ns),
            task.task.stats().max_poll_tid,
            poll_split(task.task, limits),
            task.at()
        )
    }
}

/// How the longest poll's time splits, e.g. "0.1 ms on CPU, 299.9 ms blocked in the kernel
/// (…)": the blocked part says the fix is to move a blocking call out of async code, the
/// on-CPU part that the computation needs `spawn_blocking` or yields.
fn poll_split(task: &crate::model::Task, limits: &Thresholds) -> String {
    let stats = task.stats();
    let (blocked, preempted, stolen) = (
        stats.max_poll_blocked_ns,
        stats.max_poll_preempted_ns,
        stats.max_poll_stolen_ns,
    );
    let on_cpu = task
        .max_poll_ns
        .saturating_sub(blocked + preempted + stolen);
    // Where a sample found the longest poll computing.
    let computing_at = stats
        .computing_at
        .as_ref()
        .filter(|_| on_cpu > 0)
        .map(|at| format!(", in {}", at.describe(&location)))
        .unwrap_or_default();
    let mut parts = vec![format!("{} on CPU{computing_at}", duration(on_cpu))];
    if blocked > 0 {
        // Where the probe saw the longest poll blocked, when it looked while it was.
        let at = match stats.blocked_at.as_ref() {
            Some(at) => format!(", in {}", at.describe(&location)),
            None => " (a blocking call: std::thread::sleep, a std Mutex, blocking I/O)".to_owned(),
        };
        parts.push(format!("{} blocked in the kernel{at}", duration(blocked)));
    }
    if preempted > 0 {
        parts.push(format!("{} preempted", duration(preempted)));
    }
    if stolen > 0 {
        parts.push(format!(
            "{} taken by the hypervisor (steal time, or a stalled virtual CPU)",
            duration(stolen)
        ));
    }
    let mut text = parts.join(", ");
    if computing(on_cpu, blocked, preempted + stolen, limits.long_poll_ns) {
        text.push_str(" (computing without yielding: move it to spawn_blocking)");
    }
    text
}

/// Whether a poll's own time was mostly computation. Preemption and steal time are the
/// machine's doing: a long computation stretched by them is still the program's defect.
fn computing(on_cpu: u64, blocked: u64, machine: u64, long_poll_ns: u64) -> bool {
    on_cpu > blocked && on_cpu > machine.min(long_poll_ns)
}

/// Still inside one poll at the end, for longer than a long poll.
pub struct NeverYields;

impl Lint for NeverYields {
    fn kind(&self) -> &'static str {
        "never_yields"
    }
    fn summary(&self) -> &'static str {
        "task has been running without yielding"
    }
    fn check(&self, task: &TaskView<'_>, limits: &Thresholds) -> bool {
        task.task.state == TaskState::Running
            && task.task.polls > 0
            && task.now_ns.saturating_sub(task.task.state_entered_ns()) > limits.long_poll_ns
    }
    fn format(&self, task: &TaskView<'_>, _: &Thresholds) -> String {
        format!(
            "in the same poll for {} when observation ended",
            duration(task.now_ns.saturating_sub(task.task.state_entered_ns()))
        )
    }
}

/// Woken, then left waiting for a worker: the runtime is saturated or a worker is blocked.
pub struct SchedulingLatency;

impl Lint for SchedulingLatency {
    fn kind(&self) -> &'static str {
        "scheduling_latency"
    }
    fn summary(&self) -> &'static str {
        "task waited long for a worker after being woken"
    }
    fn check(&self, task: &TaskView<'_>, limits: &Thresholds) -> bool {
        task.task.stats().max_scheduled_ns > limits.scheduling_latency_ns
    }
    fn format(&self, task: &TaskView<'_>, _: &Thresholds) -> String {
        format!(
            "woken but not polled for {} (longest wait; {} scheduled in all)",
            duration(task.task.stats().max_scheduled_ns),
            duration(task.task.scheduled_ns)
        )
    }
}

/// Aborted at an await: its work stopped halfway. A runtime shutting down cancels every task it
/// holds, which is how programs end, not something to warn about.
pub struct CancelledAtAwait;

impl Lint for CancelledAtAwait {
    fn kind(&self) -> &'static str {
        "cancelled_while_parked"
    }
    fn summary(&self) -> &'static str {
        "task was dropped while parked at an await"
    }
    fn check(&self, task: &TaskView<'_>, _: &Thresholds) -> bool {
        task.task.state == TaskState::Cancelled
            && task.task.cancelled_at_await
            && !task.task.shut_down
    }
    fn format(&self, task: &TaskView<'_>, _: &Thresholds) -> String {
        format!(
            "cancelled after {} poll(s){}; code after that await never ran",
            task.task.polls,
            task.at()
        )
    }
}

/// Every per-task lint.
pub fn task_lints() -> Vec<Box<dyn Lint>> {
    vec![
        Box::new(LostWaker),
        Box::new(LongPoll),
        Box::new(NeverYields),
        Box::new(SelfWakes),
        Box::new(SchedulingLatency),
        Box::new(CancelledAtAwait),
    ]
}

/// Runs every lint over `views`, and the task-leak check over the model.
pub fn check_all(
    views: &[TaskView<'_>],
    model: &TaskModel,
    type_names: &dyn Fn(&Task) -> Option<String>,
    limits: &Thresholds,
) -> Vec<Warning> {
    let mut warnings = Vec::new();
    for lint in task_lints() {
        for view in views.iter().filter(|view| lint.check(view, limits)) {
            warnings.push(Warning {
                kind: lint.kind(),
                task_index: Some(view.index),
                task: view.task.id,
                summary: format!("{} ({})", lint.summary(), view.name),
                detail: lint.format(view, limits),
            });
        }
    }
    // A type whose tasks pile up and never finish.
    let mut by_type: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for task in model.tasks() {
        let Some(name) = type_names(task) else {
            continue;
        };
        let entry = by_type.entry(name).or_default();
        if task.state.is_terminal() {
            entry.1 += 1;
        } else {
            entry.0 += 1;
        }
    }
    for (name, (live, finished)) in by_type {
        if live >= limits.leak_min_live && finished == 0 {
            warnings.push(Warning {
                kind: "task_leak",
                task_index: None,
                task: None,
                summary: format!("tasks of one type pile up without finishing ({name})"),
                detail: format!("{live} live {name} tasks and none finished while observed"),
            });
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::computing;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_long_computation_is_computing_however_long_it_was_preempted() {
        assert!(computing(50 * MS, 0, 200 * MS, 10 * MS));
        assert!(computing(50 * MS, MS, 0, 10 * MS));
    }

    #[test]
    fn a_short_poll_stretched_by_preemption_or_a_blocking_call_is_not() {
        assert!(!computing(MS / 4, 0, 16 * MS, 10 * MS));
        assert!(!computing(MS, 300 * MS, 0, 10 * MS));
    }
}
