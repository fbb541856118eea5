//! Keeping the probe within its overhead budget while it runs: measure what it costs (the
//! target's and the collector's CPU, the probes' hits priced by [`Prices`]), let the
//! [`Governor`] decide when the per-poll probes are attached, and fill each gap from the
//! target's memory: every task the model follows is checked, so tasks that ended, ran or stayed
//! parked meanwhile are known (see [`Coverage`]).

use std::collections::HashMap;

use crate::{
    attach::{AttachError, Attachment, PROBES},
    collect,
    memory::ProcessMemory,
    model::Coverage,
    overhead::{Governor, Overhead, Prices, ProbeCost, Sample, Switch},
    resolve::Layout,
    session::{Observer, Session},
};

/// The probe's cost meter, and the governor when there is a budget.
pub struct Budget {
    pid: u32,
    prices: Prices,
    budget_percent: Option<f64>,
    governor: Option<Governor>,
    started_ns: u64,
    start: Sample,
    /// A fingerprint of each live task's memory when the per-poll probes were detached.
    fingerprints: HashMap<usize, u64>,
    /// When the target's CPU time was last read.
    looked_ns: u64,
    /// The per-poll probes are back and the tasks' memory is still to be checked: on the next
    /// tick, once the collector has drained what the probes sent meanwhile.
    check_due: bool,
    /// The target's CPU time when last read: once it has exited, /proc no longer has it.
    target_cpu_ns: std::cell::Cell<u64>,
}

/// How often the target's CPU time is read between the governor's decisions, which read all
/// the cost figures (dozens of system calls) at the end of each window and gap only.
const LOOK_EVERY_NS: u64 = 100_000_000;

impl Budget {
    pub fn new(
        pid: u32,
        prices: Prices,
        budget_percent: Option<f64>,
        attachment: &Attachment,
    ) -> Self {
        let now_ns = collect::monotonic_ns();
        let mut budget = Self {
            pid,
            prices,
            budget_percent,
            governor: None,
            started_ns: now_ns,
            start: Sample::default(),
            fingerprints: HashMap::new(),
            looked_ns: now_ns,
            check_due: false,
            target_cpu_ns: std::cell::Cell::new(0),
        };
        budget.start = budget.sample(attachment);
        budget.governor =
            budget_percent.map(|percent| Governor::new(percent, now_ns, budget.start));
        budget
    }

    /// Attaches or detaches the per-poll probes when the budget says so. Call it a few times a
    /// second.
    pub fn tick<O: Observer>(
        &mut self,
        attachment: &mut Attachment,
        session: &mut Session<O>,
        memory: Option<&ProcessMemory>,
        layout: &Layout,
    ) -> Result<(), AttachError> {
        let now_ns = collect::monotonic_ns();
        attachment.tick_run_time(now_ns);
        // Checking thousands of tasks takes a while, and a busy program fills the ring buffer
        // fast: the check waits for the drain that follows the attach.
        self.check_if_due(session, memory, layout, now_ns);
        if !self
            .governor
            .as_ref()
            .is_some_and(|governor| governor.due(now_ns))
        {
            if now_ns >= self.looked_ns + LOOK_EVERY_NS {
                self.looked_ns = now_ns;
                // Only to have the target's CPU time should it exit before the report.
                self.target_cpu_ns();
            }
            return Ok(());
        }
        let sample = self.sample(attachment);
        let Some(switch) = self
            .governor
            .as_mut()
            .and_then(|governor| governor.tick(now_ns, sample))
        else {
            return Ok(());
        };
        match switch {
            Switch::Detach => {
                attachment.detach_hot()?;
                let now_ns = collect::monotonic_ns();
                session.pause_at(now_ns);
                self.fingerprints = live_tasks(session)
                    .filter_map(|(task, header, vtable)| {
                        Some((task, fingerprint(memory?, layout, header, vtable)?.1))
                    })
                    .collect();
            }
            Switch::Attach => {
                // Attach first: nothing that happens from here on is missed by the checks.
                attachment.attach_hot()?;
                let now_ns = collect::monotonic_ns();
                session.coverage(Coverage::Resumed { now_ns });
                self.check_due = true;
            }
        }
        Ok(())
    }

    /// Whether the per-poll probes are detached now, in a gap between windows.
    pub fn in_gap(&self) -> bool {
        self.governor
            .as_ref()
            .is_some_and(|governor| !governor.attached())
    }

    /// At the end of a run that stops in a gap (or before the check after one): what became of
    /// every task meanwhile, as after a window's return. Without it a task that ran during the
    /// gap would look idle since the last window, and its missing waker a lost one.
    pub fn finish<O: Observer>(
        &mut self,
        session: &mut Session<O>,
        memory: Option<&ProcessMemory>,
        layout: &Layout,
    ) {
        if self.in_gap() {
            self.check_due = true;
        }
        self.check_if_due(session, memory, layout, collect::monotonic_ns());
    }

    /// Checks every task's memory if a gap ended (or the run did, in one) since the last check.
    fn check_if_due<O: Observer>(
        &mut self,
        session: &mut Session<O>,
        memory: Option<&ProcessMemory>,
        layout: &Layout,
        now_ns: u64,
    ) {
        if std::mem::take(&mut self.check_due)
            && let Some(memory) = memory
        {
            self.check_tasks(session, memory, layout, now_ns);
        }
    }

    /// Follows tasks to their new indices after the model folded ended ones.
    pub fn remap(&mut self, remap: &[Option<usize>]) {
        self.fingerprints = std::mem::take(&mut self.fingerprints)
            .into_iter()
            .filter_map(|(task, print)| Some((remap.get(task).copied().flatten()?, print)))
            .collect();
    }

    /// What became of every live task while the probes were detached.
    fn check_tasks<O: Observer>(
        &mut self,
        session: &mut Session<O>,
        memory: &ProcessMemory,
        layout: &Layout,
        now_ns: u64,
    ) {
        let live: Vec<_> = live_tasks(session).collect();
        for (task, header, vtable) in live {
            let found = fingerprint(memory, layout, header, vtable);
            let changed = match (found, self.fingerprints.get(&task)) {
                (Some((_, now)), Some(before)) => now != *before,
                _ => true,
            };
            session.coverage(Coverage::Checked {
                task,
                word: found.map(|(word, _)| word),
                changed,
                now_ns,
            });
        }
        self.fingerprints.clear();
    }

    /// The cost figures now, as cumulative counters.
    fn sample(&self, attachment: &Attachment) -> Sample {
        let hits = attachment.hits().unwrap_or_default();
        let programs_ns = attachment.programs_run_ns(&hits, collect::monotonic_ns());
        self.sample_of(attachment, &hits, programs_ns)
    }

    /// The cost figures now, from hit counts and program run time already read.
    fn sample_of(&self, attachment: &Attachment, hits: &[u64], programs_ns: Option<u64>) -> Sample {
        Sample {
            target_cpu_ns: self.target_cpu_ns(),
            collector_cpu_ns: own_cpu_ns(),
            traps_ns: hits
                .iter()
                .zip(self.per_hit(attachment))
                .map(|(hits, price)| hits * price)
                .sum(),
            programs_ns: programs_ns.unwrap_or(0),
        }
    }

    /// The target's CPU time now, or the last seen once its threads have exited.
    fn target_cpu_ns(&self) -> u64 {
        // The most ever read: once the threads have exited, only the main thread is left to read.
        let now = process_cpu_ns(self.pid).unwrap_or(0);
        self.target_cpu_ns.set(self.target_cpu_ns.get().max(now));
        self.target_cpu_ns.get()
    }

    fn per_hit<'a>(&'a self, attachment: &'a Attachment) -> impl Iterator<Item = u64> + 'a {
        PROBES
            .iter()
            .zip(&attachment.placed)
            .map(|(probe, placed)| {
                self.prices
                    .per_hit(placed.points, placed.single_stepped, probe.returns)
            })
    }

    /// The probe's cost from the start to now.
    pub fn overhead(&self, attachment: &Attachment) -> Overhead {
        // Each of these reads is a system call per CPU or per program: once each.
        let hits = attachment.hits().unwrap_or_default();
        let now_ns = collect::monotonic_ns();
        let programs_ns = attachment.programs_run_ns(&hits, now_ns);
        let now = self.sample_of(attachment, &hits, programs_ns);
        let probes = PROBES
            .iter()
            .zip(&attachment.placed)
            .zip(self.per_hit(attachment))
            .enumerate()
            .filter(|(_, ((_, placed), _))| placed.points > 0)
            .map(|(slot, ((probe, placed), ns_per_hit))| ProbeCost {
                probe: probe.name.to_owned(),
                points: placed.points,
                single_stepped: placed.single_stepped,
                moved: placed.moved,
                instruction: placed.instruction.clone(),
                hits: hits.get(slot).copied().unwrap_or(0),
                ns_per_hit,
            })
            .collect();
        Overhead {
            budget_percent: self.budget_percent,
            share_percent: now.share_since(&self.start).unwrap_or(0.0) * 100.0,
            target_cpu_ns: now.target_cpu_ns.saturating_sub(self.start.target_cpu_ns),
            traps_ns: now.traps_ns.saturating_sub(self.start.traps_ns),
            programs_ns: programs_ns.map(|ns| ns.saturating_sub(self.start.programs_ns)),
            collector_cpu_ns: now
                .collector_cpu_ns
                .saturating_sub(self.start.collector_cpu_ns),
            coverage: self
                .governor
                .as_ref()
                .map_or(1.0, |governor| governor.coverage(self.started_ns, now_ns)),
            windows: self
                .governor
                .as_ref()
                .map_or(1, |governor| governor.windows),
            prices: Some(self.prices),
            probes,
        }
    }
}

/// Every task the model follows that has not ended: (index, header, vtable).
fn live_tasks<O>(session: &Session<O>) -> impl Iterator<Item = (usize, u64, u64)> + '_ {
    session
        .model
        .tasks()
        .iter()
        .enumerate()
        // A block_on future has no header to check; its probes stay attached anyway.
        .filter(|(_, task)| !task.state.is_terminal() && !task.block_on)
        .map(|(index, task)| (index, task.header, task.vtable))
}

/// How many bytes of a task past its header are fingerprinted: the scheduler, the id and the
/// start of the future, whose state changes when it is polled and makes progress.
const FINGERPRINT_BYTES: usize = 256;

/// The state word of the task at `header` and a hash of its memory, if it is still the task
/// with `vtable` (a freed task's memory is reused by others, or unmapped).
fn fingerprint(
    memory: &ProcessMemory,
    layout: &Layout,
    header: u64,
    vtable: u64,
) -> Option<(u64, u64)> {
    let mut bytes = [0u8; FINGERPRINT_BYTES];
    memory.read(header, &mut bytes).ok()?;
    let word_at = |offset: u64| {
        let offset = offset as usize;
        Some(u64::from_le_bytes(
            bytes.get(offset..offset + 8)?.try_into().ok()?,
        ))
    };
    if vtable != 0 && word_at(layout.header_vtable)? != vtable {
        return None;
    }
    let word = word_at(layout.header_state)?;
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    // The state word's reference count moves as wakers come and go: leave it out.
    bytes[8..].hash(&mut hasher);
    Some((word, hasher.finish()))
}

/// CPU time of every thread of `pid` so far, in ns (from each thread's schedstat, which counts
/// nanoseconds; /proc/PID/stat counts clock ticks).
pub fn process_cpu_ns(pid: u32) -> Option<u64> {
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    for thread in threads.flatten() {
        let stat = std::fs::read_to_string(thread.path().join("schedstat")).unwrap_or_default();
        total += stat
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(total)
}

/// This process's CPU time so far, in ns.
fn own_cpu_ns() -> u64 {
    // SAFETY: getrusage writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let micros = |time: libc::timeval| time.tv_sec as u64 * 1_000_000 + time.tv_usec as u64;
    (micros(usage.ru_utime) + micros(usage.ru_stime)) * 1_000
}
