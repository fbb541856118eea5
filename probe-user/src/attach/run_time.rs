//! What the eBPF programs cost to run, from the kernel's statistics. While they are on, every
//! program run reads the clock twice, which cost about a twentieth of a followed poll (measured
//! on the yield workload, 2-vCPU KVM guest): they are on in windows only, [`ON_NS`] of every
//! [`PERIOD_NS`] after a first [`FIRST_ON_NS`]. The windows price a run of each program (its
//! run time over its runs, both counted only while on); a program's run time is that price
//! times its runs: its hits, which are always counted, for a uprobe program, or the windows'
//! runs scaled to the whole time for the others (the tracepoints and the timer sample).

use std::{collections::HashMap, os::fd::OwnedFd};

/// The first window: long enough to price every program a short run uses.
const FIRST_ON_NS: u64 = 1_000_000_000;
/// Each later window, and how often one opens.
const ON_NS: u64 = 200_000_000;
const PERIOD_NS: u64 = 2_000_000_000;

/// The statistics, on in windows.
pub(super) struct Windows {
    /// Keeps the statistics on while it is held.
    stats: Option<OwnedFd>,
    schedule: Schedule,
}

impl Windows {
    /// Switched on now.
    pub(super) fn start(now_ns: u64) -> Self {
        Self {
            stats: enable(),
            schedule: Schedule::starting(now_ns),
        }
    }

    /// Opens a window now, if none is open: when the per-poll probes attach, so that the
    /// programs they run are priced in it (a budget's windows and these may not meet otherwise).
    pub(super) fn open(&mut self, now_ns: u64) {
        if self.schedule.open(now_ns) {
            self.stats = enable();
        }
    }

    /// Closes the window or opens the next when it is time.
    pub(super) fn tick(&mut self, now_ns: u64) {
        if let Some(on) = self.schedule.switch(now_ns) {
            self.stats = if on { enable() } else { None };
        }
    }
}

/// When the statistics are on, and how long they have been.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Schedule {
    on: bool,
    started_ns: u64,
    /// When they were last switched, and how long they were on before that.
    switched_ns: u64,
    on_before_ns: u64,
    first: bool,
}

impl Schedule {
    fn starting(now_ns: u64) -> Self {
        Self {
            on: true,
            started_ns: now_ns,
            switched_ns: now_ns,
            on_before_ns: 0,
            first: true,
        }
    }

    /// Switches when it is time: `Some(on)` when it did.
    fn switch(&mut self, now_ns: u64) -> Option<bool> {
        let since = now_ns.saturating_sub(self.switched_ns);
        let lasts = match (self.on, self.first) {
            (true, true) => FIRST_ON_NS,
            (true, false) => ON_NS,
            (false, _) => PERIOD_NS - ON_NS,
        };
        if since < lasts {
            return None;
        }
        if self.on {
            self.on_before_ns += since;
            self.first = false;
        }
        self.on = !self.on;
        self.switched_ns = now_ns;
        Some(self.on)
    }

    /// Switches on now unless on: whether it did.
    fn open(&mut self, now_ns: u64) -> bool {
        if self.on {
            return false;
        }
        self.on = true;
        self.switched_ns = now_ns;
        true
    }

    /// How long the statistics have been on, and the whole time, up to `now_ns`.
    fn on_and_all_ns(&self, now_ns: u64) -> (u64, u64) {
        let open = if self.on {
            now_ns.saturating_sub(self.switched_ns)
        } else {
            0
        };
        (
            self.on_before_ns + open,
            now_ns.saturating_sub(self.started_ns),
        )
    }
}

fn enable() -> Option<OwnedFd> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime).ok()
}

/// What the kernel counted for one program while the statistics were on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counted {
    pub run_ns: u64,
    pub runs: u64,
}

/// The programs' estimated run time: each program's price per run (from `counted`) times its
/// runs: its hits where it has hit counters (`hits`, by program name), else its counted runs
/// scaled by the whole time over the time counted.
pub fn estimate_ns(
    counted: &HashMap<&str, Counted>,
    hits: &HashMap<&str, u64>,
    (on_ns, all_ns): (u64, u64),
) -> u64 {
    counted
        .iter()
        .filter(|(_, counted)| counted.runs > 0)
        .map(|(name, counted)| {
            let runs = match hits.get(name) {
                Some(&hits) => hits as f64,
                None if on_ns > 0 => counted.runs as f64 * all_ns as f64 / on_ns as f64,
                None => counted.runs as f64,
            };
            (counted.run_ns as f64 / counted.runs as f64 * runs) as u64
        })
        .sum()
}

impl super::Attachment {
    /// Opens or closes a window of the kernel's run-time statistics when it is time: call it
    /// a few times a second.
    pub fn tick_run_time(&mut self, now_ns: u64) {
        self.windows.tick(now_ns);
    }

    /// The programs' estimated run time since they were loaded; `None` when the kernel keeps
    /// no statistics (or they cannot be read).
    pub fn programs_run_ns(&self, hits: &[u64], now_ns: u64) -> Option<u64> {
        let mut counted = HashMap::new();
        for (name, program) in self.ebpf.programs() {
            match program.info() {
                Ok(info) => {
                    let run = Counted {
                        run_ns: info.run_time().as_nanos() as u64,
                        runs: info.run_count(),
                    };
                    counted.insert(name, run);
                }
                // Each program has a twin for the other kernel mechanism, never loaded.
                Err(aya::programs::ProgramError::NotLoaded) => {}
                Err(_) => return None,
            }
        }
        if counted.values().all(|counted| counted.runs == 0) {
            return None;
        }
        let mut program_hits: HashMap<&str, u64> = HashMap::new();
        for (probe, hits) in super::PROBES.iter().zip(hits) {
            *program_hits
                .entry(self.mechanism.program(probe.program))
                .or_default() += hits;
        }
        let times = self.windows.schedule.on_and_all_ns(now_ns);
        Some(estimate_ns(&counted, &program_hits, times))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_is_priced_in_the_windows_and_charged_for_all_its_runs() {
        let counted = HashMap::from([
            // 100 runs at 300 ns in the windows; 1,000 hits in all.
            (
                "poll_start",
                Counted {
                    run_ns: 30_000,
                    runs: 100,
                },
            ),
            // No hit counter: 50 runs in the windows, which were a tenth of the time.
            (
                "sched_switch",
                Counted {
                    run_ns: 5_000,
                    runs: 50,
                },
            ),
            // Never ran while counted: no price.
            ("panic_start", Counted { run_ns: 0, runs: 0 }),
        ]);
        let hits = HashMap::from([("poll_start", 1_000), ("panic_start", 3)]);
        assert_eq!(
            estimate_ns(&counted, &hits, (1_000, 10_000)),
            300 * 1_000 + 100 * 500
        );
    }

    #[test]
    fn the_statistics_are_on_for_a_first_second_then_a_tenth_of_the_time() {
        const MS: u64 = 1_000_000;
        let mut schedule = Schedule::starting(0);
        assert_eq!(schedule.switch(999 * MS), None);
        assert_eq!(schedule.switch(1_000 * MS), Some(false));
        assert_eq!(schedule.switch(2_799 * MS), None);
        assert_eq!(schedule.on_and_all_ns(2_799 * MS), (1_000 * MS, 2_799 * MS));
        assert_eq!(schedule.switch(2_800 * MS), Some(true));
        assert_eq!(schedule.switch(2_999 * MS), None);
        assert_eq!(schedule.on_and_all_ns(2_900 * MS), (1_100 * MS, 2_900 * MS));
        assert_eq!(schedule.switch(3_000 * MS), Some(false));
        assert_eq!(schedule.switch(4_800 * MS), Some(true));
    }

    #[test]
    fn the_probes_attaching_open_a_window_unless_one_is_open() {
        const MS: u64 = 1_000_000;
        let mut schedule = Schedule::starting(0);
        assert!(!schedule.open(500 * MS));
        assert_eq!(schedule.switch(1_000 * MS), Some(false));
        assert!(schedule.open(1_500 * MS));
        assert_eq!(schedule.switch(1_699 * MS), None);
        assert_eq!(schedule.switch(1_700 * MS), Some(false));
        assert_eq!(schedule.on_and_all_ns(1_700 * MS), (1_200 * MS, 1_700 * MS));
    }
}
