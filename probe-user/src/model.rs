//! The task model: pure state, updated by events, knowing nothing about BPF. A task is identified
//! by its header address *and* a generation, because tokio reuses task memory after a task is
//! freed; the tokio task id, when the event carries it, tells two tasks at one address apart even
//! when the free was lost.

mod blocked;
mod fold;

pub use blocked::{BlockedAt, Doing, NativeFrame, Place};

use foldhash::{HashMap, HashMapExt as _};

use probe_common::{EventKind, flags, state};

/// A decoded ring-buffer record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskEvent {
    pub ts_ns: u64,
    pub kind: EventKind,
    pub header: u64,
    pub task_id: Option<u64>,
    pub vtable: u64,
    /// The task being polled on the thread where this happened (the waker, the parent).
    pub other_header: u64,
    pub value: u64,
    pub site: u32,
    pub tid: u32,
    pub flags: u8,
    /// A poll end's CPU time ([`flags::CPU_TIME`]): `None` where the kernel could not tell
    /// (and in older recordings).
    pub cpu: Option<PollCpu>,
}

/// A poll's CPU time as the kernel saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollCpu {
    /// By its thread's task clock.
    pub ns: u64,
    /// Timer samples that fell in it, [`probe_common::SAMPLE_PERIOD_NS`] apart on each CPU;
    /// `None` where none were running.
    pub samples: Option<u64>,
}

impl PollCpu {
    /// From a poll end's flags and packed figures ([`probe_common::poll_cpu`]).
    pub fn unpack(event_flags: u8, packed: u64) -> Option<Self> {
        let (ns, samples) = probe_common::poll_cpu::unpack(packed);
        (event_flags & flags::CPU_TIME != 0).then_some(Self {
            ns,
            samples: (event_flags & flags::SAMPLED != 0).then_some(samples),
        })
    }

    pub fn pack(&self) -> u64 {
        probe_common::poll_cpu::pack(self.ns, self.samples.unwrap_or(0))
    }
}

impl TaskEvent {
    /// A poll end's off-CPU time, `(blocked_ns, preempted_ns)`: zero without the
    /// `sched_switch` tracepoint (and in older recordings).
    pub fn off_cpu(&self) -> (u64, u64) {
        match self.kind {
            EventKind::PollEnd => probe_common::off_cpu::unpack(self.other_header),
            _ => (0, 0),
        }
    }

    pub fn from_raw(raw: &probe_common::Event) -> Option<Self> {
        Some(Self {
            ts_ns: raw.ts_ns,
            kind: EventKind::from_u8(raw.kind)?,
            header: raw.header,
            task_id: (raw.flags & flags::NO_TASK_ID == 0).then_some(raw.task_id),
            vtable: raw.vtable,
            other_header: raw.other_header,
            value: raw.value,
            site: raw.site,
            tid: raw.tid,
            flags: raw.flags,
            cpu: PollCpu::unpack(raw.flags, raw.other_task_id)
                .filter(|_| raw.kind == EventKind::PollEnd as u8),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Being polled.
    Running,
    /// Woken (or just spawned) and waiting for a worker to poll it.
    Scheduled,
    /// Returned `Pending` and not woken since.
    Idle,
    Completed,
    Cancelled,
    Panicked,
}

impl TaskState {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Cancelled | Self::Panicked)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Scheduled => "scheduled",
            Self::Idle => "idle",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Panicked => "panicked",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Task {
    /// The task's header address; for a `block_on` future, the future's own address.
    pub header: u64,
    /// How many earlier tasks this model saw at the same header address.
    pub generation: u32,
    pub id: Option<u64>,
    pub vtable: u64,
    /// Index into the plan's task types, once a per-type site named it.
    pub task_type: Option<usize>,
    pub state: TaskState,
    pub polls: u64,
    pub busy_ns: u64,
    pub scheduled_ns: u64,
    pub idle_ns: u64,
    pub max_poll_ns: u64,
    pub wakes: u64,
    pub self_wakes: u64,
    /// The task's state word as last read (at a poll's end, or from memory while it waits), and
    /// when: its reference count says how many wakers exist.
    pub state_word: Option<(u64, u64)>,
    /// `None` when the task existed before the probe attached.
    pub spawned_ns: Option<u64>,
    pub first_seen_ns: u64,
    pub ended_ns: Option<u64>,
    /// The task that spawned this one, if it was spawned from inside a task.
    pub parent: Option<usize>,
    /// Up to when time has been accounted to the current state.
    since_ns: u64,
    /// When the task entered its current state.
    entered_ns: u64,
    poll: Option<(u32, u64)>,
    cancel_requested: bool,
    freed_in_poll: bool,
    /// Cancelled after it had started: dropped at an await, without running to completion.
    pub cancelled_at_await: bool,
    /// Cancelled by its runtime shutting down (tokio calls `raw::shutdown` only then: an
    /// abort cancels the task in a poll of its own).
    pub shut_down: bool,
    /// Its polls' extremes and histograms and who woke it: boxed, and allocated at its first
    /// poll or wake, since most of a crowd of parked tasks never gets either.
    stats: Option<Box<PollStats>>,
    /// A future given to `block_on` (`#[tokio::main]`, `#[tokio::test]`), followed like a task
    /// but none: no id, no state word (its memory holds the future itself), and no wakes (its
    /// waker is the runtime's park-thread or driver waker, not a task's). It is running while
    /// its poll runs and idle between polls: "scheduled" is never seen, woken time counts idle.
    pub block_on: bool,
}

/// What a task's polls and wakes recorded beyond their counts (see [`Task::stats`]).
#[derive(Clone, Debug, Default)]
pub struct PollStats {
    /// The thread that ran the longest poll.
    pub max_poll_tid: u32,
    /// Of the longest poll: the time its thread was blocked in the kernel, and preempted
    /// (runnable, waiting for a CPU). The rest it ran on CPU.
    pub max_poll_blocked_ns: u64,
    pub max_poll_preempted_ns: u64,
    /// Of the longest poll: the time its thread seemed on CPU while its virtual CPU's host
    /// ran something else on it (steal time) or stalled it (see `stolen`).
    pub max_poll_stolen_ns: u64,
    /// The most CPU time, and the most blocked time, of any one poll: what stalls a worker,
    /// unlike preemption on a busy machine, which the program did not cause.
    pub max_on_cpu_ns: u64,
    pub max_blocked_ns: u64,
    /// The longest single wait between a wake (or spawn) and the poll that followed.
    pub max_scheduled_ns: u64,
    /// How long each poll took.
    pub poll_times: Histogram,
    /// How long each wait between a wake (or spawn) and the next poll took.
    pub scheduled_times: Histogram,
    /// Who woke it, with how many wakes each: a task (index), or `None` for code outside any
    /// task (the timer, the I/O driver, another thread). At most [`MAX_WAKERS`] entries; wakes
    /// from further tasks are not itemised.
    pub woken_by: Vec<(Option<usize>, u64)>,
    /// Where the longest poll was seen blocked (its thread's native stack), when the probe
    /// looked while it was: the poll the long-poll warning tells, as for `computing_at`.
    pub blocked_at: Option<Box<BlockedAt>>,
    /// Where the poll running now was seen blocked, until it ends.
    blocked_now: Option<Box<BlockedAt>>,
    /// Where the longest poll (the one the long-poll warning tells) was seen computing (a timer
    /// sample), when one fell in it, and where the poll running now was, until it ends. Not the
    /// poll longest on CPU: on a busy machine a preempted poll outlasts one that computed a
    /// little longer, and the place must be the told poll's.
    pub computing_at: Option<Box<BlockedAt>>,
    computing_now: Option<Box<BlockedAt>>,
}

/// A task's stats before its first poll or wake.
static NO_STATS: PollStats = PollStats {
    max_poll_tid: 0,
    max_poll_blocked_ns: 0,
    max_poll_preempted_ns: 0,
    max_poll_stolen_ns: 0,
    max_on_cpu_ns: 0,
    max_blocked_ns: 0,
    max_scheduled_ns: 0,
    poll_times: Histogram { counts: None },
    scheduled_times: Histogram { counts: None },
    woken_by: Vec::new(),
    blocked_at: None,
    blocked_now: None,
    computing_at: None,
    computing_now: None,
};

/// How many distinct wakers a task keeps count of.
pub const MAX_WAKERS: usize = 8;

/// Counts of durations by power-of-two bucket: bucket 0 holds durations below 1024 ns, bucket
/// `i` those from `2^(i+9)` up to `2^(i+10)` ns; the last bucket also holds everything longer.
/// The buckets are allocated at the first count: most of a crowd of parked tasks never gets one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    counts: Option<Box<[u32; Histogram::BUCKETS]>>,
}

impl Histogram {
    pub const BUCKETS: usize = 24;

    pub fn record(&mut self, ns: u64) {
        let bucket = (u64::BITS - (ns >> 10).leading_zeros()) as usize;
        let counts = self.counts.get_or_insert_with(Default::default);
        let count = &mut counts[bucket.min(Self::BUCKETS - 1)];
        *count = count.saturating_add(1);
    }

    /// The exclusive upper bound of bucket `index`, in ns (`u64::MAX` for the last bucket).
    pub fn upper_ns(index: usize) -> u64 {
        if index + 1 >= Self::BUCKETS {
            u64::MAX
        } else {
            1 << (index + 10)
        }
    }

    /// Every bucket's count, shortest durations first.
    pub fn counts(&self) -> &[u32; Self::BUCKETS] {
        const NONE: [u32; Histogram::BUCKETS] = [0; Histogram::BUCKETS];
        self.counts.as_deref().unwrap_or(&NONE)
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &Histogram) {
        let Some(more) = &other.counts else { return };
        let counts = self.counts.get_or_insert_with(Default::default);
        for (count, more) in counts.iter_mut().zip(more.iter()) {
            *count = count.saturating_add(*more);
        }
    }

    pub fn total(&self) -> u64 {
        self.counts().iter().map(|&count| u64::from(count)).sum()
    }
}

/// How stale a thread's task clock may be when a poll starts or ends between two updates: a
/// scheduler tick (4 ms at the usual HZ=250). The clock is exact at context switches.
const TASK_CLOCK_SLACK_NS: u64 = 4_000_000;

/// Of a poll's time on CPU by the wall clock, `on_cpu_wall`, what its virtual CPU's host took:
/// - time it ran another guest on the virtual CPU (steal time): its thread's task clock did
///   not count it, where that is more than the clock's slack. On a busy host a 1 ms poll can
///   take 10 ms this way, which is neither the program's computation nor the guest's
///   preemption;
/// - time the host stalled the virtual CPU (faulting in the guest's memory, say): the task
///   clock counts it, but the guest's timers stop, so the timer samples bound the poll's time
///   on CPU from above, a period more than they counted.
fn stolen(on_cpu_wall: u64, cpu: Option<PollCpu>) -> u64 {
    let Some(cpu) = cpu else { return 0 };
    let clock = match on_cpu_wall.saturating_sub(cpu.ns) {
        stolen if stolen > TASK_CLOCK_SLACK_NS => cpu.ns,
        _ => on_cpu_wall,
    };
    on_cpu_wall - clock.min(sampled_bound(cpu))
}

/// The most a poll can have run, by the timer samples that fell in it: a period more than they
/// counted (no bound when they were not running).
fn sampled_bound(cpu: PollCpu) -> u64 {
    cpu.samples.map_or(u64::MAX, |samples| {
        (samples + 1).saturating_mul(probe_common::SAMPLE_PERIOD_NS)
    })
}

impl Task {
    /// Accounts one poll of `took` ns, ended by `end`, in its extremes and histogram: its
    /// off-CPU time, and its CPU time where the kernel measured it. When a context switch was
    /// missed, its on-CPU time is its thread's task clock (bounded by the timer samples), or
    /// unknown without one.
    fn poll_split(&mut self, took: u64, end: &TaskEvent) {
        let (blocked, preempted) = end.off_cpu();
        // Microsecond rounding may leave the parts a little over the whole.
        let blocked = blocked.min(took);
        let preempted = preempted.min(took - blocked);
        let stolen = stolen(took - blocked - preempted, end.cpu);
        let longest = took >= self.max_poll_ns;
        if longest {
            self.max_poll_ns = took;
        }
        let stats = self.stats_mut();
        // The places are the longest poll's, the one the long-poll warning tells: on a busy host
        // a preempted poll outlasts one that computed or blocked a little longer. A place not
        // seen in it is dropped: it must be where the time the report gives went.
        let (computing_now, blocked_now) = (stats.computing_now.take(), stats.blocked_now.take());
        if longest {
            stats.max_poll_tid = end.tid;
            stats.max_poll_blocked_ns = blocked;
            stats.max_poll_preempted_ns = preempted;
            stats.max_poll_stolen_ns = stolen;
            stats.computing_at = computing_now;
            stats.blocked_at = blocked_now.filter(|_| blocked > 0);
        }
        let on_cpu = if end.flags & flags::OFF_CPU_UNKNOWN == 0 {
            Some(took - blocked - preempted - stolen)
        } else {
            // The task clock counts only the thread's time on CPU, whatever switches were
            // missed (seen in CI: a 50 ms computation whose switch-in went unseen, its long
            // poll then not told).
            end.cpu.map(|cpu| cpu.ns.min(sampled_bound(cpu)).min(took))
        };
        if let Some(on_cpu) = on_cpu {
            stats.max_on_cpu_ns = stats.max_on_cpu_ns.max(on_cpu);
        }
        stats.max_blocked_ns = stats.max_blocked_ns.max(blocked);
        stats.poll_times.record(took);
    }

    /// Its polls' extremes and histograms and who woke it (all empty before its first poll or
    /// wake).
    pub fn stats(&self) -> &PollStats {
        self.stats.as_deref().unwrap_or(&NO_STATS)
    }

    fn stats_mut(&mut self) -> &mut PollStats {
        self.stats.get_or_insert_with(Box::default)
    }

    /// Forgets wakers its closure turns down: those that are not kept one by one any more.
    pub(crate) fn retain_wakers(&mut self, keep: impl FnMut(&mut (Option<usize>, u64)) -> bool) {
        if let Some(stats) = &mut self.stats {
            stats.woken_by.retain_mut(keep);
        }
    }

    /// When the task entered its current state.
    pub fn state_entered_ns(&self) -> u64 {
        self.entered_ns
    }

    /// Time spent in `state` (running, scheduled or idle) up to `now`, including the current
    /// stretch when the task is in it. Once the model is closed at `now`, the plain counters.
    pub fn time_at(&self, state: TaskState, now: u64) -> u64 {
        let counted = match state {
            TaskState::Running => self.busy_ns,
            TaskState::Scheduled => self.scheduled_ns,
            TaskState::Idle => self.idle_ns,
            _ => return 0,
        };
        match self.state == state {
            true => counted + now.saturating_sub(self.since_ns),
            false => counted,
        }
    }

    /// Wakers (and abort handles, which tokio counts alike) alive when the state word was last
    /// read, for a task that has not ended.
    pub fn live_wakers(&self) -> Option<u64> {
        if self.state.is_terminal() {
            return None;
        }
        self.state_word.map(|(word, _)| wakers_in(word))
    }

    fn count_waker(&mut self, waker: Option<usize>) {
        let woken_by = &mut self.stats_mut().woken_by;
        if let Some(entry) = woken_by.iter_mut().find(|(who, _)| *who == waker) {
            entry.1 += 1;
        } else if woken_by.len() < MAX_WAKERS {
            woken_by.push((waker, 1));
        }
    }

    fn account(&mut self, now: u64) {
        let spent = now.saturating_sub(self.since_ns);
        match self.state {
            TaskState::Running => self.busy_ns += spent,
            TaskState::Scheduled => self.scheduled_ns += spent,
            TaskState::Idle => self.idle_ns += spent,
            _ => return,
        }
        self.since_ns = self.since_ns.max(now);
    }

    fn enter(&mut self, state: TaskState, now: u64) {
        if self.state.is_terminal() {
            return;
        }
        self.account(now);
        if self.state != state {
            if self.state == TaskState::Scheduled {
                let waited = now.saturating_sub(self.entered_ns);
                let stats = self.stats_mut();
                stats.max_scheduled_ns = stats.max_scheduled_ns.max(waited);
                stats.scheduled_times.record(waited);
            }
            if state == TaskState::Cancelled {
                // The poll that runs a cancellation does not poll the future: only earlier
                // polls got it to an await.
                let cancelling_poll = u64::from(self.state == TaskState::Running);
                self.cancelled_at_await = self.polls > cancelling_poll;
            }
            self.entered_ns = now;
        }
        self.state = state;
        if state.is_terminal() {
            self.ended_ns.get_or_insert(now);
        }
    }
}

/// The state a task's word gives, read from memory rather than from the probe's events.
fn state_of_word(word: u64) -> TaskState {
    if word & state::COMPLETE != 0 {
        if word & state::CANCELLED != 0 {
            TaskState::Cancelled
        } else {
            TaskState::Completed
        }
    } else if word & state::RUNNING != 0 {
        TaskState::Running
    } else if word & state::NOTIFIED != 0 {
        TaskState::Scheduled
    } else {
        TaskState::Idle
    }
}

/// How many wakers (and abort handles) hold a reference to an idle task, from its state word.
/// tokio counts one reference for the scheduler's list of owned tasks, one for the `JoinHandle`
/// while `JOIN_INTEREST` is set, one per `Waker` or `AbortHandle`, and one while a notification
/// is queued (`NOTIFIED`).
pub fn wakers_in(word: u64) -> u64 {
    let references = word >> state::REF_COUNT_SHIFT;
    let join_handle = u64::from(word & state::JOIN_INTEREST != 0);
    let queued = u64::from(word & state::NOTIFIED != 0);
    references.saturating_sub(1 + join_handle + queued)
}

/// A change in what the probe sees, when an overhead budget attaches the per-poll probes in
/// windows. Recorded and replayed like events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Coverage {
    /// The per-poll probes were detached: what tasks do is not seen until they are back.
    Paused { now_ns: u64 },
    /// They are attached again.
    Resumed { now_ns: u64 },
    /// A live task's memory read after a gap: `word` is None when the task is gone (freed, or
    /// another task lives there), and `changed` says its memory changed during the gap (it was
    /// polled, so it has not been idle all along).
    Checked {
        task: usize,
        word: Option<u64>,
        changed: bool,
        now_ns: u64,
    },
}

/// A task found in the target's memory, for [`TaskModel::observe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Observed {
    pub header: u64,
    pub task_id: Option<u64>,
    /// The task's vtable, by which it was found; 0 for a future given to `block_on`.
    pub vtable: u64,
    pub task_type: usize,
    pub state_word: u64,
    pub now_ns: u64,
}

impl Observed {
    /// A future given to `block_on`, found parked at `address` (recordings carry it as a task
    /// without a vtable, which no task found in memory is: the format stays as it was).
    pub fn block_on(address: u64, task_type: usize, now_ns: u64) -> Self {
        Self {
            header: address,
            task_id: None,
            vtable: 0,
            task_type,
            state_word: 0,
            now_ns,
        }
    }

    pub fn is_block_on(&self) -> bool {
        self.vtable == 0
    }
}

/// Counts of things the model could not place, for an honest summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Anomalies {
    /// Poll ends whose start was never seen or belonged to another thread.
    pub unmatched_poll_ends: u64,
    /// A new task id appeared at the header of a task that had not ended: events were lost.
    pub lost_frees: u64,
}

pub use fold::{Folded, KEEP_ENDED};

pub struct TaskModel {
    tasks: Vec<Task>,
    live: HashMap<u64, usize>,
    generations: HashMap<u64, u32>,
    site_types: Vec<Option<usize>>,
    vtable_types: HashMap<u64, usize>,
    pub events: u64,
    pub first_ns: Option<u64>,
    pub last_ns: u64,
    active: usize,
    pub anomalies: Anomalies,
    /// Tasks that went idle since [`TaskModel::take_newly_idle`] was last called: their
    /// memory now holds a stable await point worth reading.
    newly_idle: Vec<usize>,
    /// The polls in progress on each thread, outermost first: (task, contains other polls).
    thread_polls: HashMap<u32, Vec<(usize, bool)>>,
    /// What each thread that polled tasks spent on them.
    pub workers: std::collections::BTreeMap<u32, WorkerStats>,
    /// When a task last started a poll: progress, for hang detection.
    pub last_poll_ns: Option<u64>,
    /// Ended tasks folded into their type's totals (key: task type), to bound memory.
    folded: std::collections::BTreeMap<Option<usize>, Folded>,
    /// Keep every task one by one (no folding).
    keep_all: bool,
    /// Tasks not followed any more (freed, or replaced after a lost free) since the last fold.
    retired: usize,
    /// How indices moved in the last fold, until taken.
    remap: Option<Vec<Option<usize>>>,
    /// The most tasks alive at once, runtime workers included.
    peak_active: usize,
}

/// One thread's polling, from the polls that ran on it (containers of other polls excluded).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    pub polls: u64,
    pub busy_ns: u64,
    pub longest_poll_ns: u64,
    /// The task of the longest poll: the one that blocked this thread longest.
    pub longest_poll_task: Option<usize>,
}

impl TaskModel {
    /// `site_types[site]` is the task type a per-type site (a `raw::poll` instance) belongs to.
    pub fn new(site_types: Vec<Option<usize>>) -> Self {
        Self {
            tasks: Vec::new(),
            live: HashMap::new(),
            generations: HashMap::new(),
            site_types,
            vtable_types: HashMap::new(),
            events: 0,
            first_ns: None,
            last_ns: 0,
            active: 0,
            anomalies: Anomalies::default(),
            newly_idle: Vec::new(),
            thread_polls: HashMap::new(),
            workers: std::collections::BTreeMap::new(),
            last_poll_ns: None,
            folded: std::collections::BTreeMap::new(),
            keep_all: false,
            retired: 0,
            remap: None,
            peak_active: 0,
        }
    }

    pub fn tasks(&self) -> &[Task] {
        &self.tasks
    }

    /// The task type of a task, learned from its own sites or from another task with its vtable.
    pub fn task_type(&self, task: &Task) -> Option<usize> {
        task.task_type
            .or_else(|| self.vtable_types.get(&task.vtable).copied())
    }

    /// Applies one event; returns the index of the task it concerned, if any.
    pub fn apply(&mut self, event: &TaskEvent) -> Option<usize> {
        let task = self.apply_event(event);
        self.fold_if_due();
        // A fold moves indices: the event's task is live, and kept.
        match &self.remap {
            Some(remap) => task.and_then(|task| remap.get(task).copied().flatten()),
            None => task,
        }
    }

    fn apply_event(&mut self, event: &TaskEvent) -> Option<usize> {
        self.events += 1;
        self.first_ns.get_or_insert(event.ts_ns);
        self.last_ns = self.last_ns.max(event.ts_ns);
        if let Some(task_type) = self.site_types.get(event.site as usize).copied().flatten()
            && matches!(event.kind, EventKind::PollStart | EventKind::PollEnd)
            && event.vtable != 0
            && event.flags & flags::FREED_DURING_POLL == 0
        {
            self.vtable_types.insert(event.vtable, task_type);
        }
        let now = event.ts_ns;
        match event.kind {
            EventKind::Spawn => {
                if let Some(&index) = self.live.get(&event.header)
                    && self.same_task(index, event)
                {
                    // Two spawn sites saw one spawn (Cell::new inside bind_new_task).
                    return Some(index);
                }
                self.retire(event.header);
                let index = self.create(event, TaskState::Scheduled);
                self.tasks[index].spawned_ns = Some(now);
                self.tasks[index].parent = self.live.get(&event.other_header).copied();
                Some(index)
            }
            EventKind::PollStart => {
                let index = self.task_for(event, TaskState::Scheduled);
                let task = &mut self.tasks[index];
                if task.state == TaskState::Running {
                    // The previous poll's end is late or lost (another worker picked it up).
                    task.poll = None;
                }
                task.enter(TaskState::Running, now);
                task.polls += 1;
                task.poll = Some((event.tid, now));
                self.last_poll_ns = Some(now);
                let stack = self.thread_polls.entry(event.tid).or_default();
                if let Some(outer) = stack.last_mut() {
                    // Polls run inside this one (a runtime driven from inside a task, or the
                    // worker loop's blocking task): its time is theirs, not its own.
                    outer.1 = true;
                }
                stack.push((index, false));
                Some(index)
            }
            EventKind::PollEnd => self.poll_end(event),
            EventKind::Complete => {
                let index = self.task_for(event, TaskState::Running);
                let end = if event.flags & flags::PANICKED != 0 {
                    TaskState::Panicked
                } else if event.value & state::CANCELLED != 0 {
                    TaskState::Cancelled
                } else {
                    TaskState::Completed
                };
                self.finish(index, end, now);
                Some(index)
            }
            EventKind::WakeByVal | EventKind::WakeByRef => {
                let index = self.task_for(event, TaskState::Idle);
                let waker = match event.other_header {
                    0 => None,
                    header => self.live.get(&header).copied(),
                };
                let task = &mut self.tasks[index];
                task.count_waker(waker);
                task.wakes += 1;
                if event.other_header == event.header {
                    task.self_wakes += 1;
                }
                if task.state == TaskState::Idle {
                    task.enter(TaskState::Scheduled, now);
                }
                Some(index)
            }
            EventKind::Shutdown => {
                let index = self.task_for(event, TaskState::Idle);
                let task = &mut self.tasks[index];
                task.cancel_requested = true;
                task.shut_down = true;
                // A running task is cancelled by its own poll, which reports CANCELLED.
                if task.state != TaskState::Running {
                    self.finish(index, TaskState::Cancelled, now);
                }
                Some(index)
            }
            EventKind::Dealloc => {
                let index = *self.live.get(&event.header)?;
                let task = &mut self.tasks[index];
                if task.state == TaskState::Running {
                    task.freed_in_poll = true;
                    return Some(index);
                }
                let end = if task.cancel_requested {
                    TaskState::Cancelled
                } else {
                    TaskState::Completed
                };
                self.finish(index, end, now);
                self.retire(event.header);
                Some(index)
            }
        }
    }

    fn poll_end(&mut self, event: &TaskEvent) -> Option<usize> {
        let now = event.ts_ns;
        let Some(&index) = self.live.get(&event.header) else {
            self.anomalies.unmatched_poll_ends += 1;
            return None;
        };
        let task = &mut self.tasks[index];
        let took = match task.poll {
            Some((tid, started)) if tid == event.tid => {
                let took = now.saturating_sub(started);
                task.poll_split(took, event);
                task.poll = None;
                took
            }
            _ => {
                self.anomalies.unmatched_poll_ends += 1;
                return None;
            }
        };
        self.worker_poll_ended(index, event.tid, took);
        let task = &mut self.tasks[index];
        if task.state.is_terminal() {
            // Completion was reported while the task was alive; the word read after the
            // poll may come from freed memory.
            if event.flags & flags::FREED_DURING_POLL != 0 || task.freed_in_poll {
                self.retire(event.header);
            }
            return Some(index);
        }
        let freed = event.flags & flags::FREED_DURING_POLL != 0 || task.freed_in_poll;
        // A block_on future's "word" only says whether it returned (see flags::BLOCK_ON).
        let word = event.value;
        if !freed && !task.block_on {
            task.state_word = Some((word, now));
        }
        let next = if event.flags & flags::PANICKED != 0 && (freed || word & state::COMPLETE != 0) {
            TaskState::Panicked
        } else if freed {
            // The memory is gone: the word read at poll end means nothing.
            if task.cancel_requested {
                TaskState::Cancelled
            } else {
                TaskState::Completed
            }
        } else if word & state::COMPLETE != 0 {
            if word & state::CANCELLED != 0 {
                TaskState::Cancelled
            } else {
                TaskState::Completed
            }
        } else if word & (state::NOTIFIED | state::RUNNING) != 0 {
            // Woken during the poll (or already picked up again by another worker).
            TaskState::Scheduled
        } else {
            TaskState::Idle
        };
        if next.is_terminal() {
            self.finish(index, next, now);
        } else {
            self.tasks[index].enter(next, now);
            if next == TaskState::Idle {
                self.newly_idle.push(index);
            }
        }
        if freed {
            self.retire(event.header);
        }
        Some(index)
    }

    fn same_task(&self, index: usize, event: &TaskEvent) -> bool {
        if self.tasks[index].block_on != (event.flags & flags::BLOCK_ON != 0) {
            return false;
        }
        match (self.tasks[index].id, event.task_id) {
            (Some(a), Some(b)) => a == b,
            _ => !self.tasks[index].state.is_terminal(),
        }
    }

    /// The live task at the event's header, or a new one first seen in `state`.
    fn task_for(&mut self, event: &TaskEvent, state: TaskState) -> usize {
        if let Some(&index) = self.live.get(&event.header) {
            if self.same_task(index, event) {
                let task = &mut self.tasks[index];
                if task.id.is_none() {
                    task.id = event.task_id;
                }
                if task.task_type.is_none() {
                    task.task_type = self
                        .site_types
                        .get(event.site as usize)
                        .copied()
                        .flatten()
                        .filter(|_| {
                            matches!(event.kind, EventKind::PollStart | EventKind::PollEnd)
                        });
                }
                return index;
            }
            if !self.tasks[index].state.is_terminal() {
                self.anomalies.lost_frees += 1;
            }
            self.retire(event.header);
        }
        self.create(event, state)
    }

    fn create(&mut self, event: &TaskEvent, state: TaskState) -> usize {
        let generation = self.generations.entry(event.header).or_insert(0);
        let index = self.tasks.len();
        let task_type = self
            .site_types
            .get(event.site as usize)
            .copied()
            .flatten()
            .filter(|_| matches!(event.kind, EventKind::PollStart | EventKind::PollEnd));
        self.tasks.push(Task {
            header: event.header,
            generation: *generation,
            id: event.task_id,
            vtable: event.vtable,
            task_type,
            state,
            polls: 0,
            busy_ns: 0,
            scheduled_ns: 0,
            idle_ns: 0,
            max_poll_ns: 0,
            wakes: 0,
            self_wakes: 0,
            state_word: None,
            spawned_ns: None,
            first_seen_ns: event.ts_ns,
            ended_ns: None,
            parent: None,
            since_ns: event.ts_ns,
            entered_ns: event.ts_ns,
            poll: None,
            cancel_requested: false,
            freed_in_poll: false,
            cancelled_at_await: false,
            shut_down: false,
            stats: None,
            block_on: event.flags & flags::BLOCK_ON != 0,
        });
        *generation += 1;
        self.live.insert(event.header, index);
        self.active += 1;
        self.peak_active = self.peak_active.max(self.active);
        index
    }

    fn finish(&mut self, index: usize, end: TaskState, now: u64) {
        let task = &mut self.tasks[index];
        if task.state.is_terminal() {
            return;
        }
        task.enter(end, now);
        self.active -= 1;
    }

    /// Per-thread accounting of a finished poll, unless it only contained other polls.
    fn worker_poll_ended(&mut self, index: usize, tid: u32, took: u64) {
        let stack = self.thread_polls.entry(tid).or_default();
        let Some(position) = stack.iter().rposition(|(task, _)| *task == index) else {
            return;
        };
        let (_, container) = stack[position];
        // Entries above it lost their poll ends.
        stack.truncate(position);
        if container {
            return;
        }
        let worker = self.workers.entry(tid).or_default();
        worker.polls += 1;
        worker.busy_ns += took;
        if took >= worker.longest_poll_ns {
            worker.longest_poll_ns = took;
            worker.longest_poll_task = Some(index);
        }
    }

    /// The header's memory was freed (or reused): later events there belong to a new task.
    fn retire(&mut self, header: u64) {
        if self.live.remove(&header).is_some() {
            self.retired += 1;
        }
    }

    /// Brings every live task's time accounting up to `now` (the end of the probe).
    pub fn close(&mut self, now: u64) {
        for task in &mut self.tasks {
            if !task.state.is_terminal() {
                task.account(now);
            }
        }
        self.last_ns = self.last_ns.max(now);
    }

    /// Makes room for `more` tasks.
    pub fn reserve(&mut self, more: usize) {
        self.tasks.reserve_exact(more);
        self.live.reserve(more);
    }

    /// Records a task found in memory by a snapshot (no history: counts stay zero). A task the
    /// model already follows at that address (the probe saw it first) is left as it is.
    pub fn observe(&mut self, found: Observed) -> usize {
        let block_on = found.is_block_on();
        if let Some(&index) = self.live.get(&found.header) {
            if self.tasks[index].block_on == block_on
                && self.tasks[index]
                    .id
                    .is_none_or(|id| Some(id) == found.task_id)
            {
                return index;
            }
            // Another task lives there now: the first one's free was not seen.
            if !self.tasks[index].state.is_terminal() {
                self.anomalies.lost_frees += 1;
            }
        }
        let event = TaskEvent {
            ts_ns: found.now_ns,
            kind: EventKind::PollEnd,
            header: found.header,
            task_id: found.task_id,
            vtable: found.vtable,
            other_header: 0,
            value: found.state_word,
            site: u32::MAX,
            tid: 0,
            flags: if block_on { flags::BLOCK_ON } else { 0 },
            cpu: None,
        };
        self.first_ns.get_or_insert(found.now_ns);
        self.last_ns = self.last_ns.max(found.now_ns);
        let word = found.state_word;
        // A block_on future is found parked at an await (see `Observed::block_on`).
        let state = if block_on {
            TaskState::Idle
        } else {
            state_of_word(word)
        };
        let index = self.create(&event, state);
        let task = &mut self.tasks[index];
        task.task_type = Some(found.task_type);
        if !block_on {
            task.state_word = Some((word, found.now_ns));
        }
        if state.is_terminal() {
            // Finished, but its JoinHandle still holds it: when it ended is unknown.
            self.active -= 1;
        }
        index
    }

    /// Takes in a change of coverage (see [`Coverage`]).
    pub fn coverage(&mut self, change: Coverage) {
        self.apply_coverage(change);
        self.fold_if_due();
    }

    fn apply_coverage(&mut self, change: Coverage) {
        match change {
            Coverage::Paused { now_ns } => self.pause(now_ns),
            Coverage::Resumed { now_ns } => {
                self.last_ns = self.last_ns.max(now_ns);
            }
            Coverage::Checked {
                task,
                word,
                changed,
                now_ns,
            } => self.check(task, word, changed, now_ns),
        }
    }

    /// Polls in flight end unseen: their tasks wait for a worker, as far as anyone knows, until
    /// their memory is checked.
    fn pause(&mut self, now: u64) {
        // block_on futures' probes stay attached: their poll ends are still seen.
        for task in self.tasks.iter_mut().filter(|task| !task.block_on) {
            if task.state == TaskState::Running {
                task.poll = None;
                task.enter(TaskState::Scheduled, now);
            }
        }
        for polls in self.thread_polls.values_mut() {
            polls.retain(|&(task, _)| self.tasks[task].block_on);
        }
        self.last_ns = self.last_ns.max(now);
    }

    /// What a task's memory says after a gap: gone, finished, or in the state its word gives.
    fn check(&mut self, index: usize, word: Option<u64>, changed: bool, now: u64) {
        let Some(task) = self.tasks.get(index) else {
            return;
        };
        // A block_on future has no state word: its memory says nothing of the kind.
        if task.state.is_terminal() || task.block_on {
            return;
        }
        let Some(word) = word else {
            // Freed while unobserved: it ended, when is not known.
            let header = task.header;
            let end = if task.cancel_requested {
                TaskState::Cancelled
            } else {
                TaskState::Completed
            };
            self.finish(index, end, now);
            self.retire(header);
            return;
        };
        let next = state_of_word(word);
        if next.is_terminal() {
            self.finish(index, next, now);
            return;
        }
        let task = &mut self.tasks[index];
        task.state_word = Some((word, now));
        if changed && task.state == next {
            // It ran during the gap and is back where it was: its stretch starts over.
            task.account(now);
            task.entered_ns = now;
        }
        task.enter(next, now);
        if next == TaskState::Idle && changed {
            self.newly_idle.push(index);
        }
    }

    /// The state word of a waiting task as read from its memory at `now`: wakers dropped while
    /// it waits show there, and in no event.
    pub fn refresh_word(&mut self, index: usize, word: u64, now: u64) {
        if let Some(task) = self.tasks.get_mut(index)
            && !task.state.is_terminal()
            && !task.block_on
            && task.state_word.is_none_or(|(_, read)| read <= now)
        {
            task.state_word = Some((word, now));
        }
    }

    /// The threads in a poll now, as `(thread, task, task header, when the poll started)`: the
    /// innermost poll of each.
    pub fn polls_running(&self) -> impl Iterator<Item = (u32, usize, u64, u64)> + '_ {
        self.thread_polls.iter().filter_map(|(&tid, polls)| {
            let &(index, _) = polls.last()?;
            let task = &self.tasks[index];
            match task.poll {
                Some((poll_tid, started)) if poll_tid == tid => {
                    Some((tid, index, task.header, started))
                }
                _ => None,
            }
        })
    }

    /// `task`'s poll running now was seen blocked or computing at `at`: kept if that poll
    /// turns out its most blocked one, or the longest on CPU.
    pub fn blocked(&mut self, task: usize, at: BlockedAt) {
        if let Some(task) = self.tasks.get_mut(task)
            && task.poll.is_some()
        {
            let stats = task.stats_mut();
            let now = match at.doing {
                Doing::Blocked => &mut stats.blocked_now,
                Doing::Computing => &mut stats.computing_now,
            };
            *now = Some(Box::new(at));
        }
    }

    /// Tasks that went idle since the last call (each once, oldest first).
    pub fn take_newly_idle(&mut self) -> Vec<usize> {
        let mut indices = std::mem::take(&mut self.newly_idle);
        indices.sort_unstable();
        indices.dedup();
        indices
    }

    /// Since when the task has been idle, if it is.
    pub fn idle_since(&self, index: usize) -> Option<u64> {
        let task = self.tasks.get(index)?;
        (task.state == TaskState::Idle).then_some(task.entered_ns)
    }

    /// The most tasks alive at once (runtime workers included), folded ones too.
    pub fn peak_active(&self) -> usize {
        self.peak_active
    }

    /// Tasks not yet ended.
    pub fn active(&self) -> usize {
        self.active
    }

    /// The most tasks alive at once among those `include` accepts (from first sight to end).
    pub fn peak_concurrency(&self, include: impl Fn(&Task) -> bool) -> usize {
        let mut edges: Vec<(u64, i64)> = Vec::new();
        for task in self.tasks.iter().filter(|task| include(task)) {
            edges.push((task.spawned_ns.unwrap_or(task.first_seen_ns), 1));
            if let Some(ended) = task.ended_ns {
                edges.push((ended, -1));
            }
        }
        // Ends before starts at the same instant: a task that ends as another starts overlaps none.
        edges.sort_unstable();
        let (mut alive, mut peak) = (0i64, 0i64);
        for (_, delta) in edges {
            alive += delta;
            peak = peak.max(alive);
        }
        peak as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HDR: u64 = 0x7f00_0000_1000;
    const POLL_SITE: u32 = 0;

    fn model() -> TaskModel {
        TaskModel::new(vec![Some(0), None])
    }

    fn event(ts_ns: u64, kind: EventKind, header: u64, task_id: u64) -> TaskEvent {
        TaskEvent {
            ts_ns,
            kind,
            header,
            task_id: Some(task_id),
            vtable: 0x5000,
            other_header: 0,
            value: 0,
            site: if matches!(kind, EventKind::PollStart | EventKind::PollEnd) {
                POLL_SITE
            } else {
                1
            },
            tid: 7,
            flags: 0,
            cpu: None,
        }
    }

    fn poll_end(ts_ns: u64, header: u64, task_id: u64, word: u64) -> TaskEvent {
        TaskEvent {
            value: word,
            ..event(ts_ns, EventKind::PollEnd, header, task_id)
        }
    }

    /// A poll end of task 1 at `HDR` that the kernel timed: `ns` by its thread's task clock,
    /// `samples` timer samples in it.
    fn timed_poll_end(ts_ns: u64, ns: u64, samples: Option<u64>) -> TaskEvent {
        TaskEvent {
            cpu: Some(PollCpu { ns, samples }),
            ..poll_end(ts_ns, HDR, 1, 0)
        }
    }

    #[test]
    fn a_sleeping_loop_accounts_busy_idle_and_scheduled_time() {
        let mut m = model();
        m.apply(&event(100, EventKind::Spawn, HDR, 1));
        m.apply(&event(150, EventKind::PollStart, HDR, 1));
        m.apply(&poll_end(160, HDR, 1, 0));
        m.apply(&event(1160, EventKind::WakeByVal, HDR, 1));
        m.apply(&event(1200, EventKind::PollStart, HDR, 1));
        m.apply(&poll_end(1230, HDR, 1, state::COMPLETE));
        let task = &m.tasks()[0];
        assert_eq!(task.state, TaskState::Completed);
        assert_eq!(task.polls, 2);
        assert_eq!(task.busy_ns, 10 + 30);
        assert_eq!(task.scheduled_ns, 50 + 40);
        assert_eq!(task.idle_ns, 1000);
        assert_eq!(task.wakes, 1);
        assert_eq!(task.spawned_ns, Some(100));
        assert_eq!(task.ended_ns, Some(1230));
        assert_eq!(m.task_type(task), Some(0));
        assert_eq!(m.active(), 0);
    }

    #[test]
    fn a_reused_header_is_a_new_task() {
        let mut m = model();
        m.apply(&event(1, EventKind::Spawn, HDR, 1));
        m.apply(&event(2, EventKind::PollStart, HDR, 1));
        m.apply(&poll_end(3, HDR, 1, state::COMPLETE));
        m.apply(&event(4, EventKind::Dealloc, HDR, 1));
        m.apply(&event(5, EventKind::Spawn, HDR, 2));
        m.apply(&event(6, EventKind::PollStart, HDR, 2));
        assert_eq!(m.tasks().len(), 2);
        assert_eq!(m.tasks()[0].polls, 1);
        assert_eq!(m.tasks()[1].generation, 1);
        assert_eq!(m.tasks()[1].state, TaskState::Running);
        assert_eq!(m.tasks()[1].id, Some(2));
    }

    #[test]
    fn a_lost_dealloc_is_detected_by_the_task_id() {
        let mut m = model();
        m.apply(&event(1, EventKind::PollStart, HDR, 1));
        m.apply(&poll_end(2, HDR, 1, 0));
        // Task 1's completion and free were lost; task 2 now lives at the same address.
        m.apply(&event(3, EventKind::PollStart, HDR, 2));
        assert_eq!(m.tasks().len(), 2);
        assert_eq!(m.tasks()[0].polls, 1);
        assert_eq!(m.tasks()[1].polls, 1);
        assert_eq!(m.anomalies.lost_frees, 1);
    }

    #[test]
    fn self_wakes_and_yields_leave_the_task_scheduled() {
        let mut m = model();
        m.apply(&event(1, EventKind::PollStart, HDR, 1));
        m.apply(&TaskEvent {
            other_header: HDR,
            ..event(2, EventKind::WakeByRef, HDR, 1)
        });
        m.apply(&poll_end(3, HDR, 1, state::NOTIFIED));
        let task = &m.tasks()[0];
        assert_eq!(task.state, TaskState::Scheduled);
        assert_eq!((task.wakes, task.self_wakes), (1, 1));
        assert_eq!(
            task.spawned_ns, None,
            "seen mid-flight, not spawned under the probe"
        );
    }

    #[test]
    fn a_task_freed_inside_its_last_poll_completes() {
        let mut m = model();
        m.apply(&event(1, EventKind::Spawn, HDR, 1));
        m.apply(&event(2, EventKind::PollStart, HDR, 1));
        m.apply(&event(3, EventKind::Dealloc, HDR, 1));
        m.apply(&TaskEvent {
            flags: flags::FREED_DURING_POLL,
            ..poll_end(4, HDR, 1, 0)
        });
        assert_eq!(m.tasks()[0].state, TaskState::Completed);
        assert_eq!(m.tasks()[0].ended_ns, Some(4));
        m.apply(&event(5, EventKind::Spawn, HDR, 9));
        assert_eq!(m.tasks().len(), 2);
    }

    #[test]
    fn panics_and_cancellations_are_told_apart() {
        let mut m = model();
        m.apply(&event(1, EventKind::PollStart, HDR, 1));
        m.apply(&TaskEvent {
            flags: flags::PANICKED,
            ..poll_end(2, HDR, 1, state::COMPLETE)
        });
        assert_eq!(m.tasks()[0].state, TaskState::Panicked);

        let other = HDR + 0x100;
        m.apply(&event(3, EventKind::PollStart, other, 2));
        m.apply(&poll_end(4, other, 2, 0));
        m.apply(&event(5, EventKind::Shutdown, other, 2));
        assert_eq!(m.tasks()[1].state, TaskState::Cancelled);
        assert_eq!(m.tasks()[1].ended_ns, Some(5));
    }

    #[test]
    fn duplicate_spawn_sites_count_once_and_parents_are_kept() {
        let mut m = model();
        let parent = HDR + 0x200;
        m.apply(&event(1, EventKind::PollStart, parent, 5));
        let spawn = TaskEvent {
            other_header: parent,
            ..event(2, EventKind::Spawn, HDR, 6)
        };
        m.apply(&spawn);
        m.apply(&TaskEvent { ts_ns: 3, ..spawn });
        assert_eq!(m.tasks().len(), 2);
        assert_eq!(m.tasks()[1].parent, Some(0));
        assert_eq!(m.peak_concurrency(|_| true), 2);
        assert_eq!(m.peak_concurrency(|task| task.header == HDR), 1);
    }

    #[test]
    fn a_late_poll_end_from_another_thread_is_not_applied() {
        let mut m = model();
        m.apply(&event(1, EventKind::PollStart, HDR, 1));
        // Another worker starts polling before the first poll's end arrived.
        m.apply(&TaskEvent {
            tid: 8,
            ..event(3, EventKind::PollStart, HDR, 1)
        });
        m.apply(&poll_end(2, HDR, 1, state::RUNNING));
        m.apply(&TaskEvent {
            tid: 8,
            ..poll_end(5, HDR, 1, 0)
        });
        let task = &m.tasks()[0];
        assert_eq!(task.polls, 2);
        assert_eq!(task.state, TaskState::Idle);
        assert_eq!(task.busy_ns, 4);
        assert_eq!(m.anomalies.unmatched_poll_ends, 1);
    }

    #[test]
    fn a_poll_splits_into_on_cpu_blocked_and_preempted_time() {
        let mut m = model();
        let ms = 1_000_000;
        let end = |ts_ns, blocked, preempted, flags| TaskEvent {
            other_header: probe_common::off_cpu::pack(blocked, preempted),
            flags,
            ..poll_end(ts_ns, HDR, 1, 0)
        };
        m.apply(&event(0, EventKind::Spawn, HDR, 1));
        // 22 ms, 21.6 preempted: not what the program did.
        m.apply(&event(0, EventKind::PollStart, HDR, 1));
        m.apply(&end(22 * ms, 0, 21_600_000, 0));
        // 30 ms, 29 blocked in the kernel: the longest.
        m.apply(&event(23 * ms, EventKind::PollStart, HDR, 1));
        m.apply(&end(53 * ms, 29 * ms, 0, 0));
        // 20 ms with a missed context switch, and no task clock: its on-CPU time is unknown.
        m.apply(&event(60 * ms, EventKind::PollStart, HDR, 1));
        m.apply(&end(80 * ms, 0, 0, flags::OFF_CPU_UNKNOWN));
        let task = &m.tasks()[0];
        assert_eq!(task.max_poll_ns, 30 * ms);
        assert_eq!(
            (
                task.stats().max_poll_blocked_ns,
                task.stats().max_poll_preempted_ns
            ),
            (29 * ms, 0)
        );
        assert_eq!(task.stats().max_on_cpu_ns, ms);
        assert_eq!(task.stats().max_blocked_ns, 29 * ms);
    }

    /// What the CI machine saw: a 1 ms poll took 30 ms, 20 of it preempted and 9 on a virtual
    /// CPU the hypervisor gave to another guest, which the thread's task clock leaves out.
    #[test]
    fn time_the_hypervisor_took_is_not_time_on_cpu() {
        let mut m = model();
        let ms = 1_000_000;
        let end = |ts_ns, preempted, ns, samples| TaskEvent {
            other_header: probe_common::off_cpu::pack(0, preempted),
            ..timed_poll_end(ts_ns, ns, samples)
        };
        m.apply(&event(0, EventKind::Spawn, HDR, 1));
        m.apply(&event(0, EventKind::PollStart, HDR, 1));
        m.apply(&end(30 * ms, 20 * ms, ms, None));
        let task = &m.tasks()[0];
        assert_eq!(task.stats().max_poll_stolen_ns, 9 * ms);
        assert_eq!(task.stats().max_on_cpu_ns, ms);
        // Within a scheduler tick, the task clock may just be stale: nothing is taken away.
        m.apply(&event(40 * ms, EventKind::PollStart, HDR, 1));
        m.apply(&end(90 * ms, 0, 47 * ms, None));
        let task = &m.tasks()[0];
        assert_eq!(task.stats().max_poll_stolen_ns, 0);
        assert_eq!(task.stats().max_on_cpu_ns, 50 * ms);
        // Without the task clock (an older kernel, a recording of format 1), wall time counts.
        m.apply(&event(100 * ms, EventKind::PollStart, HDR, 1));
        m.apply(&TaskEvent {
            cpu: None,
            ..end(160 * ms, 0, 0, None)
        });
        assert_eq!(m.tasks()[0].stats().max_on_cpu_ns, 60 * ms);
    }

    #[test]
    fn a_poll_with_a_missed_context_switch_is_on_cpu_for_its_task_clock() {
        let mut m = model();
        let ms = 1_000_000;
        let period = probe_common::SAMPLE_PERIOD_NS;
        let end = |ts_ns, ns, samples| TaskEvent {
            flags: flags::OFF_CPU_UNKNOWN,
            ..timed_poll_end(ts_ns, ns, samples)
        };
        m.apply(&event(0, EventKind::Spawn, HDR, 1));
        // 300 ms, 1 of them on CPU: it slept the rest, whatever the switches said.
        m.apply(&event(0, EventKind::PollStart, HDR, 1));
        m.apply(&end(300 * ms, ms, Some(0)));
        assert_eq!(m.tasks()[0].stats().max_on_cpu_ns, ms);
        // 51 ms, 50 of them computing and sampled all along.
        m.apply(&event(400 * ms, EventKind::PollStart, HDR, 1));
        m.apply(&end(451 * ms, 50 * ms, Some(50 * ms / period)));
        assert_eq!(m.tasks()[0].stats().max_on_cpu_ns, 50 * ms);
    }

    /// Also seen on the CI machine: a 1 ms poll whose task clock says 12 ms, the rest the host
    /// stalling the virtual CPU. One timer sample fell in it: it ran 2 periods at most.
    #[test]
    fn time_the_timer_samples_did_not_see_is_not_time_on_cpu() {
        let mut m = model();
        let ms = 1_000_000;
        let period = probe_common::SAMPLE_PERIOD_NS;
        let end = timed_poll_end;
        m.apply(&event(0, EventKind::Spawn, HDR, 1));
        m.apply(&event(0, EventKind::PollStart, HDR, 1));
        m.apply(&end(12 * ms, 12 * ms, Some(1)));
        assert_eq!(m.tasks()[0].stats().max_on_cpu_ns, 2 * period);
        assert_eq!(
            m.tasks()[0].stats().max_poll_stolen_ns,
            12 * ms - 2 * period
        );
        // A computation that ran is sampled all along: its task clock stands.
        m.apply(&event(20 * ms, EventKind::PollStart, HDR, 1));
        m.apply(&end(70 * ms, 50 * ms, Some(50 * ms / period)));
        assert_eq!(m.tasks()[0].stats().max_on_cpu_ns, 50 * ms);
    }

    #[test]
    fn where_a_poll_was_seen_blocked_is_kept_for_its_most_blocked_poll() {
        let mut m = model();
        let ms = 1_000_000;
        let end = |ts_ns, blocked| TaskEvent {
            other_header: probe_common::off_cpu::pack(blocked, 0),
            ..poll_end(ts_ns, HDR, 1, 0)
        };
        let at = |function: &str| BlockedAt {
            doing: Doing::Blocked,
            frames: vec![NativeFrame {
                function: Some(function.to_owned()),
                ..NativeFrame::default()
            }],
        };
        m.apply(&event(0, EventKind::Spawn, HDR, 1));
        m.apply(&event(0, EventKind::PollStart, HDR, 1));
        assert_eq!(m.polls_running().count(), 1);
        m.blocked(0, at("app::sleeps_long"));
        m.apply(&end(30 * ms, 29 * ms));
        assert_eq!(m.polls_running().count(), 0);
        // A shorter poll, blocked elsewhere: the longest poll's place stays.
        m.apply(&event(40 * ms, EventKind::PollStart, HDR, 1));
        m.blocked(0, at("app::sleeps_short"));
        m.apply(&end(50 * ms, 9 * ms));
        // Between polls there is no poll to be blocked in.
        m.blocked(0, at("app::not_polled"));
        m.apply(&event(60 * ms, EventKind::PollStart, HDR, 1));
        m.apply(&end(80 * ms, 19 * ms));
        let kept = m.tasks()[0].stats().blocked_at.as_deref();
        assert_eq!(kept, Some(&at("app::sleeps_long")));
        // The longest poll now, not seen where it blocked: no place is better than another's.
        m.apply(&event(90 * ms, EventKind::PollStart, HDR, 1));
        m.apply(&end(130 * ms, 39 * ms));
        assert_eq!(m.tasks()[0].stats().blocked_at, None);
    }

    #[test]
    fn the_places_told_are_the_longest_polls_though_another_computed_or_blocked_longer() {
        let ms = 1_000_000;
        for doing in [Doing::Computing, Doing::Blocked] {
            let mut m = model();
            let at = |function: &str| BlockedAt {
                doing,
                frames: vec![NativeFrame {
                    function: Some(function.to_owned()),
                    ..NativeFrame::default()
                }],
            };
            // Blocked for that long, or computing.
            let off = |blocked: u64| if doing == Doing::Blocked { blocked } else { 0 };
            m.apply(&event(0, EventKind::Spawn, HDR, 1));
            m.apply(&event(0, EventKind::PollStart, HDR, 1));
            m.blocked(0, at("app::first"));
            m.apply(&TaskEvent {
                other_header: probe_common::off_cpu::pack(off(30 * ms), 0),
                ..poll_end(31 * ms, HDR, 1, 0)
            });
            // Longer, as it waited 6 ms for a CPU, but 1 ms less at it: the long poll told.
            m.apply(&event(40 * ms, EventKind::PollStart, HDR, 1));
            m.blocked(0, at("app::second"));
            m.apply(&TaskEvent {
                other_header: probe_common::off_cpu::pack(off(29 * ms), 6 * ms),
                ..poll_end(76 * ms, HDR, 1, 0)
            });
            let stats = m.tasks()[0].stats();
            let (place, most) = match doing {
                Doing::Blocked => (&stats.blocked_at, stats.max_blocked_ns),
                _ => (&stats.computing_at, stats.max_on_cpu_ns),
            };
            assert_eq!(place.as_deref(), Some(&at("app::second")), "{doing:?}");
            assert_eq!(most, if doing == Doing::Blocked { 30 } else { 31 } * ms);
        }
    }

    #[test]
    fn completion_is_taken_from_the_complete_event_not_the_word_after_the_poll() {
        let mut m = model();
        m.apply(&event(1, EventKind::Spawn, HDR, 1));
        m.apply(&event(2, EventKind::PollStart, HDR, 1));
        m.apply(&TaskEvent {
            value: state::RUNNING,
            ..event(3, EventKind::Complete, HDR, 1)
        });
        // Another thread freed the task before this poll returned: the word is garbage.
        m.apply(&poll_end(5, HDR, 1, 0xdead_beef_u64 & !state::COMPLETE));
        assert_eq!(m.tasks()[0].state, TaskState::Completed);
        assert_eq!(m.tasks()[0].ended_ns, Some(3));
        assert_eq!(m.tasks()[0].max_poll_ns, 3);
        // The memory is reused by a new task without a dealloc event seen.
        m.apply(&event(6, EventKind::Spawn, HDR, 2));
        assert_eq!(m.tasks().len(), 2);
        assert_eq!(m.anomalies.lost_frees, 0);

        m.apply(&event(7, EventKind::PollStart, HDR, 2));
        m.apply(&TaskEvent {
            value: state::RUNNING | state::CANCELLED,
            ..event(8, EventKind::Complete, HDR, 2)
        });
        assert_eq!(m.tasks()[1].state, TaskState::Cancelled);
    }

    #[test]
    fn live_wakers_come_from_the_reference_count() {
        const REF: u64 = 1 << state::REF_COUNT_SHIFT;
        let mut m = model();
        m.apply(&event(1, EventKind::Spawn, HDR, 1));
        m.apply(&event(2, EventKind::PollStart, HDR, 1));
        // Owned list + JoinHandle + one waker kept by what it waits for.
        m.apply(&poll_end(3, HDR, 1, (3 * REF) | state::JOIN_INTEREST));
        assert_eq!(m.tasks()[0].live_wakers(), Some(1));
        // Read again while it waits: the waker was dropped, nothing can wake it.
        m.refresh_word(0, (2 * REF) | state::JOIN_INTEREST, 10);
        assert_eq!(m.tasks()[0].live_wakers(), Some(0));
        // A read older than the last one changes nothing.
        m.refresh_word(0, 9 * REF, 5);
        assert_eq!(m.tasks()[0].live_wakers(), Some(0));
        assert_eq!(
            wakers_in(REF),
            0,
            "only the owned list: no JoinHandle, no waker"
        );
        assert_eq!(wakers_in((4 * REF) | state::NOTIFIED), 2);
    }

    #[test]
    fn tasks_that_go_idle_are_offered_for_reading_once() {
        let mut m = model();
        m.apply(&event(1, EventKind::PollStart, HDR, 1));
        m.apply(&poll_end(2, HDR, 1, 0));
        m.apply(&event(3, EventKind::WakeByRef, HDR, 1));
        m.apply(&event(4, EventKind::PollStart, HDR, 1));
        m.apply(&poll_end(5, HDR, 1, 0));
        assert_eq!(m.take_newly_idle(), vec![0]);
        assert!(m.take_newly_idle().is_empty());
        assert_eq!(m.idle_since(0), Some(5));
        m.close(50);
        assert_eq!(m.idle_since(0), Some(5), "accounting does not move it");
    }

    #[test]
    fn worker_time_counts_innermost_polls_only() {
        let mut m = model();
        let worker = HDR + 0x1000;
        m.apply(&event(0, EventKind::PollStart, worker, 9));
        m.apply(&event(10, EventKind::PollStart, HDR, 1));
        m.apply(&poll_end(40, HDR, 1, 0));
        m.apply(&event(50, EventKind::PollStart, HDR, 1));
        m.apply(&poll_end(55, HDR, 1, 0));
        m.apply(&poll_end(100, worker, 9, 0));
        let stats = m.workers[&7];
        assert_eq!(
            (stats.polls, stats.busy_ns, stats.longest_poll_ns),
            (2, 35, 30)
        );
        assert_eq!(stats.longest_poll_task, Some(1));
        assert_eq!(m.tasks()[1].stats().max_poll_tid, 7);
    }

    #[test]
    fn scheduling_latency_and_cancellation_at_an_await_are_kept() {
        let mut m = model();
        m.apply(&event(0, EventKind::Spawn, HDR, 1));
        m.apply(&event(30, EventKind::PollStart, HDR, 1));
        m.apply(&poll_end(31, HDR, 1, 0));
        m.apply(&event(40, EventKind::WakeByRef, HDR, 1));
        m.apply(&event(45, EventKind::PollStart, HDR, 1));
        m.apply(&poll_end(46, HDR, 1, 0));
        assert_eq!(m.tasks()[0].stats().max_scheduled_ns, 30);
        m.apply(&event(60, EventKind::Shutdown, HDR, 1));
        assert!(m.tasks()[0].cancelled_at_await);
    }

    #[test]
    fn a_task_found_in_memory_that_the_probe_already_follows_is_kept_once() {
        let mut m = model();
        m.apply(&event(1, EventKind::PollStart, HDR, 1));
        let found = Observed {
            header: HDR,
            task_id: Some(1),
            vtable: 0x5000,
            task_type: 0,
            state_word: state::RUNNING,
            now_ns: 2,
        };
        assert_eq!(m.observe(found), 0);
        assert_eq!(m.tasks().len(), 1);
        assert_eq!(m.tasks()[0].polls, 1);
        // Another task at an address the model has: the memory was reused.
        let other = m.observe(Observed {
            task_id: Some(7),
            ..found
        });
        assert_eq!((other, m.tasks().len()), (1, 2));
        assert_eq!(m.anomalies.lost_frees, 1);
    }

    #[test]
    fn a_gap_in_coverage_is_filled_from_memory() {
        const REF: u64 = 1 << state::REF_COUNT_SHIFT;
        let mut m = model();
        let (busy, parked, gone) = (HDR, HDR + 0x100, HDR + 0x200);
        for (ts, header, id) in [(1, busy, 1), (2, parked, 2), (3, gone, 3)] {
            m.apply(&event(ts, EventKind::PollStart, header, id));
            m.apply(&poll_end(ts + 1, header, id, 2 * REF));
        }
        m.apply(&event(10, EventKind::PollStart, busy, 1));
        m.coverage(Coverage::Paused { now_ns: 20 });
        assert_eq!(
            m.tasks()[0].state,
            TaskState::Scheduled,
            "its poll's end is not seen"
        );
        m.coverage(Coverage::Resumed { now_ns: 100 });
        for (task, word, changed) in [
            (0, Some(2 * REF), true),
            (1, Some(2 * REF), false),
            (2, None, false),
        ] {
            m.coverage(Coverage::Checked {
                task,
                word,
                changed,
                now_ns: 100,
            });
        }
        assert_eq!(m.idle_since(0), Some(100), "it ran during the gap");
        assert_eq!(m.idle_since(1), Some(3), "untouched: idle all along");
        assert_eq!(m.tasks()[2].state, TaskState::Completed);
        assert_eq!(m.active(), 2);
        // The freed task's address may hold a new task now.
        m.apply(&event(101, EventKind::Spawn, gone, 9));
        assert_eq!(m.tasks().len(), 4);
    }

    #[test]
    fn a_block_on_future_is_followed_without_a_state_word() {
        let mut m = TaskModel::new(vec![Some(0), None, Some(1)]);
        let body = 0x7ffd_0000_1000;
        let poll = |ts_ns, kind, value, extra| TaskEvent {
            ts_ns,
            kind,
            header: body,
            task_id: None,
            vtable: 0,
            other_header: 0,
            value,
            site: 2,
            tid: 7,
            flags: flags::BLOCK_ON | extra,
            cpu: None,
        };
        m.apply(&poll(10, EventKind::PollStart, 0, 0));
        m.apply(&TaskEvent {
            other_header: body,
            ..event(11, EventKind::Spawn, HDR, 1)
        });
        m.apply(&poll(20, EventKind::PollEnd, 0, 0));
        let entry = &m.tasks()[0];
        assert!(entry.block_on);
        assert_eq!(m.task_type(entry), Some(1));
        assert_eq!(
            (entry.state, entry.polls, entry.busy_ns),
            (TaskState::Idle, 1, 10)
        );
        assert_eq!(entry.live_wakers(), None, "no state word, no waker count");
        assert_eq!(m.tasks()[1].parent, Some(0), "spawned from its poll");
        // Its memory holds the future: neither a read nor a budget's gap makes a word of it.
        m.refresh_word(0, 5 << state::REF_COUNT_SHIFT, 30);
        m.coverage(Coverage::Paused { now_ns: 35 });
        m.coverage(Coverage::Checked {
            task: 0,
            word: None,
            changed: true,
            now_ns: 40,
        });
        assert_eq!(m.tasks()[0].state_word, None);
        assert_eq!(m.tasks()[0].state, TaskState::Idle);
        m.apply(&poll(50, EventKind::PollStart, 0, 0));
        m.apply(&poll(60, EventKind::PollEnd, state::COMPLETE, 0));
        assert_eq!(m.tasks()[0].state, TaskState::Completed);
        assert_eq!(m.tasks()[0].idle_ns, 30);
        // The next test's body at the same stack address is another entry; it panics.
        m.apply(&poll(70, EventKind::PollStart, 0, 0));
        m.apply(&poll(
            80,
            EventKind::PollEnd,
            state::COMPLETE,
            flags::PANICKED,
        ));
        assert_eq!(m.tasks().len(), 3);
        assert_eq!(m.tasks()[2].state, TaskState::Panicked);
        // A tokio task at an address a block_on future had is not mistaken for it.
        m.apply(&event(90, EventKind::PollStart, body, 9));
        assert_eq!(m.tasks().len(), 4);
    }

    #[test]
    fn closing_accounts_time_up_to_the_end_of_the_probe() {
        let mut m = model();
        m.apply(&event(10, EventKind::PollStart, HDR, 1));
        m.apply(&poll_end(20, HDR, 1, 0));
        // Before closing, a live view counts the stretch so far.
        assert_eq!(m.tasks()[0].time_at(TaskState::Idle, 520), 500);
        assert_eq!(m.tasks()[0].time_at(TaskState::Running, 520), 10);
        m.close(1020);
        assert_eq!(m.tasks()[0].idle_ns, 1000);
        assert_eq!(m.tasks()[0].time_at(TaskState::Idle, 1020), 1000);
        assert_eq!(m.tasks()[0].state, TaskState::Idle);
    }
}
