//! The probe's own cost, and the budget that keeps it low: pure arithmetic over the figures
//! attach and the kernel report (hits per kind of probe, CPU times), so it is tested without
//! root.
//!
//! Almost all of what a uprobe costs is the trap into the kernel, charged to the target's own
//! threads, so it is priced as hits × a per-hit cost calibrated on this machine when the probe
//! starts (an emulated instruction traps once, a single-stepped one twice, and a return probe's
//! trampoline once more). The eBPF programs' run time is estimated from the kernel's statistics,
//! on in windows (`attach::run_time`): each program's cost per run, times its runs. The
//! collector's CPU comes from its own process.

/// What one hit costs, in nanoseconds of the target's CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Prices {
    /// A probe on an instruction the kernel emulates.
    pub emulated_ns: u64,
    /// A probe on an instruction the kernel single-steps out of line.
    pub single_stepped_ns: u64,
    /// What a return probe adds when the function returns through its trampoline.
    pub return_ns: u64,
    /// Whether these were measured on this machine (else: [`Prices::TYPICAL`]).
    pub calibrated: bool,
}

impl Prices {
    /// Measured on a 2-vCPU KVM guest (kernel 6.18); used when calibration cannot run.
    pub const TYPICAL: Self = Self {
        emulated_ns: 1_400,
        single_stepped_ns: 6_500,
        return_ns: 1_100,
        calibrated: false,
    };

    /// The average cost of one hit of a kind of probe with `points` points, `single_stepped`
    /// of them on single-stepped instructions.
    pub fn per_hit(&self, points: usize, single_stepped: usize, returns: bool) -> u64 {
        if points == 0 {
            return 0;
        }
        let stepped = single_stepped as u64;
        let emulated = (points - single_stepped) as u64;
        let entry =
            (stepped * self.single_stepped_ns + emulated * self.emulated_ns) / points as u64;
        entry + if returns { self.return_ns } else { 0 }
    }
}

/// One kind of probe, as `--explain` and the report show it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProbeCost {
    pub probe: String,
    pub points: usize,
    /// Points on an instruction the kernel single-steps (two traps a hit).
    pub single_stepped: usize,
    /// Points moved past their function's first instruction to one the kernel emulates.
    pub moved: usize,
    /// The probed instruction (of the first point).
    pub instruction: String,
    pub hits: u64,
    /// The estimated cost of one hit, from the calibrated prices.
    pub ns_per_hit: u64,
}

/// The probe's cost over a run, for the summary, `--json` and the live view.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Overhead {
    /// The budget, in percent of the target's own CPU (None: every poll was followed).
    pub budget_percent: Option<f64>,
    /// The probe's estimated cost, in percent of the target's own CPU.
    pub share_percent: f64,
    /// CPU the target used while probed, its probes' traps included.
    pub target_cpu_ns: u64,
    /// Estimated: hits × calibrated cost per hit.
    pub traps_ns: u64,
    /// The eBPF programs' run time, estimated from the kernel's statistics (None: it keeps
    /// none): each program's cost per run in the windows they were on, times its runs.
    pub programs_ns: Option<u64>,
    /// CPU the collector (this process) used.
    pub collector_cpu_ns: u64,
    /// The share of the run the per-poll probes were attached (1: all of it). Below 1, poll,
    /// wake and time figures are counted in those windows only.
    pub coverage: f64,
    /// How many windows the per-poll probes were attached in.
    pub windows: u64,
    pub prices: Option<Prices>,
    pub probes: Vec<ProbeCost>,
}

impl Overhead {
    /// Whether the target did enough work while probed for the probe's share of it to mean
    /// anything (an idle program makes any cost a large share).
    pub fn is_judged(&self) -> bool {
        self.target_cpu_ns >= MIN_JUDGED_CPU_NS
    }

    /// What the probes cost inside the target: the traps, and the programs' run time where the
    /// kernel keeps it.
    pub fn in_target_ns(&self) -> u64 {
        self.traps_ns + self.programs_ns.unwrap_or(0)
    }
}

/// CPU figures at one moment, as cumulative counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    pub target_cpu_ns: u64,
    pub collector_cpu_ns: u64,
    /// Hits × price, summed over the kinds of probe.
    pub traps_ns: u64,
    pub programs_ns: u64,
}

impl Sample {
    /// The probe's cost between `earlier` and this sample, as a fraction of what the target
    /// spent on its own work (its CPU less the traps and programs charged to its threads).
    pub fn share_since(&self, earlier: &Sample) -> Option<f64> {
        let (cost, own) = self.cost_and_own_since(earlier)?;
        Some(cost as f64 / own as f64)
    }

    /// The probe's cost (traps, programs, collector) and the target's own work between
    /// `earlier` and this sample, in ns of CPU; None when the target did too little to judge by.
    fn cost_and_own_since(&self, earlier: &Sample) -> Option<(u64, u64)> {
        let traps = self.traps_ns.saturating_sub(earlier.traps_ns);
        let programs = self.programs_ns.saturating_sub(earlier.programs_ns);
        let collector = self
            .collector_cpu_ns
            .saturating_sub(earlier.collector_cpu_ns);
        let target = self.target_cpu_ns.saturating_sub(earlier.target_cpu_ns);
        // Too little work to judge by (an idle target): no verdict.
        if target < MIN_JUDGED_CPU_NS {
            return None;
        }
        // The prices are estimates: when they claim (nearly) all the target's CPU, its own work
        // is taken as a twentieth of it, which still reads as far over any budget.
        let own = target.saturating_sub(traps + programs).max(target / 20);
        Some((traps + programs + collector, own))
    }
}

/// Below this much target CPU in a window, its cost share says nothing.
const MIN_JUDGED_CPU_NS: u64 = 5_000_000;

/// Attach or detach the per-poll probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Switch {
    Attach,
    Detach,
}

/// Keeps the probe within its budget by attaching the per-poll probes in windows: each window
/// measures what following every poll costs, and the gap after it lasts until the window's cost
/// and the gap's own (the collector's, mostly) are that share of the target's work over both.
/// A cheap target keeps them attached throughout.
#[derive(Debug)]
pub struct Governor {
    budget: f64,
    attached: bool,
    /// When the current window or gap began.
    since_ns: u64,
    /// The figures when the current window or gap began.
    since: Sample,
    /// How long the current gap lasts.
    gap_ns: u64,
    /// Over the last gap, per ns: what the probe cost (the collector, detached probes being
    /// free) and what the target did, unslowed by the probes.
    gap_rates: Option<GapRates>,
    pub windows: u64,
    attached_ns: u64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct GapRates {
    cost: f64,
    own: f64,
}

impl GapRates {
    /// `cost` and `own` ns of CPU over `elapsed` ns, per ns.
    fn over(cost: u64, own: u64, elapsed: u64) -> Self {
        let per_ns = |ns: u64| ns as f64 / elapsed.max(1) as f64;
        Self {
            cost: per_ns(cost),
            own: per_ns(own),
        }
    }
}

/// The share of the budget the governor aims at. Its cost estimate prices hits as calibrated in
/// a tight loop and programs by the kernel's statistics; on the server benchmark following every
/// poll really cost 1.2-1.6x the estimate (`--exact`: 46-57 % estimated, about 70 % measured as
/// CPU per request in quiet rounds): cold caches, a busy kernel, and the sched tracepoints, whose
/// detach takes up to 200 ms after a window. Aiming at the whole budget overshot it.
const AIM: f64 = 0.4;

/// A window long enough to see polls and wakes of a busy service, and to measure their cost.
const WINDOW_NS: u64 = 200_000_000;
/// The gap after a window never exceeds this: a probe that sees nothing for long is no probe.
const MAX_GAP_NS: u64 = 10_000_000_000;
/// A shorter gap is not worth the detach and attach around it: the probes stay attached.
const MIN_GAP_NS: u64 = 10_000_000;

impl Governor {
    /// `budget_percent` of the target's own CPU; starts attached, at `now_ns`.
    pub fn new(budget_percent: f64, now_ns: u64, sample: Sample) -> Self {
        Self {
            budget: budget_percent / 100.0 * AIM,
            attached: true,
            since_ns: now_ns,
            since: sample,
            gap_ns: 0,
            gap_rates: None,
            windows: 1,
            attached_ns: 0,
        }
    }

    /// Whether [`Governor::tick`] has anything to decide at `now_ns`: at the end of a window
    /// or a gap. The figures it needs cost dozens of system calls to read.
    pub fn due(&self, now_ns: u64) -> bool {
        let lasts = if self.attached {
            WINDOW_NS
        } else {
            self.gap_ns
        };
        now_ns.saturating_sub(self.since_ns) >= lasts
    }

    /// What to do at `now_ns`, given the figures now. Call it when [`Governor::due`].
    pub fn tick(&mut self, now_ns: u64, sample: Sample) -> Option<Switch> {
        if !self.due(now_ns) {
            return None;
        }
        let elapsed = now_ns.saturating_sub(self.since_ns);
        let since = std::mem::replace(&mut self.since, sample);
        self.since_ns = now_ns;
        if !self.attached {
            if let Some((cost, own)) = sample.cost_and_own_since(&since) {
                self.gap_rates = Some(GapRates::over(cost, own, elapsed));
            }
            self.attached = true;
            self.windows += 1;
            return Some(Switch::Attach);
        }
        self.attached_ns += elapsed;
        // An idle window says nothing of what following a busy one costs: the last gap holds.
        if let Some((cost, own)) = sample.cost_and_own_since(&since) {
            self.gap_ns = self.gap_after(cost, own, elapsed);
        }
        if self.gap_ns < MIN_GAP_NS {
            return None;
        }
        self.attached = false;
        Some(Switch::Detach)
    }

    /// How long the gap after a window of `elapsed` ns must last for the window's `cost` and
    /// the gap's to be the budget's share of the target's work (`own` in the window, the last
    /// gap's rate after it; the window's rate before any gap was seen).
    fn gap_after(&self, cost: u64, own: u64, elapsed: u64) -> u64 {
        let rates = self.gap_rates.unwrap_or(GapRates::over(0, own, elapsed));
        let excess = cost as f64 - self.budget * own as f64;
        if excess <= 0.0 {
            return 0;
        }
        let room_per_ns = self.budget * rates.own - rates.cost;
        if room_per_ns <= 0.0 {
            return MAX_GAP_NS;
        }
        (excess / room_per_ns).min(MAX_GAP_NS as f64) as u64
    }

    /// The share of the time since `started_ns` the per-poll probes were attached.
    pub fn coverage(&self, started_ns: u64, now_ns: u64) -> f64 {
        let total = now_ns.saturating_sub(started_ns).max(1);
        let current = if self.attached {
            now_ns.saturating_sub(self.since_ns)
        } else {
            0
        };
        ((self.attached_ns + current) as f64 / total as f64).min(1.0)
    }

    /// Whether the per-poll probes are attached now.
    pub fn attached(&self) -> bool {
        self.attached
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn sample(target_ms: u64, traps_ms: u64) -> Sample {
        Sample {
            target_cpu_ns: target_ms * MS,
            collector_cpu_ns: 0,
            traps_ns: traps_ms * MS,
            programs_ns: 0,
        }
    }

    #[test]
    fn single_stepped_points_cost_more_and_returns_add_their_trap() {
        let prices = Prices::TYPICAL;
        assert_eq!(prices.per_hit(2, 0, false), 1_400);
        assert_eq!(prices.per_hit(2, 1, false), (1_400 + 6_500) / 2);
        assert_eq!(prices.per_hit(1, 0, true), 2_500);
        assert_eq!(prices.per_hit(0, 0, true), 0);
    }

    #[test]
    fn the_share_is_of_the_targets_own_work() {
        // 150 ms of target CPU, of which 50 ms were traps: 50 / 100.
        assert_eq!(sample(150, 50).share_since(&Sample::default()), Some(0.5));
        assert_eq!(
            sample(1, 0).share_since(&Sample::default()),
            None,
            "too idle to judge"
        );
        assert_eq!(
            sample(100, 120).share_since(&Sample::default()),
            Some(24.0),
            "overpriced"
        );
    }

    #[test]
    fn a_costly_probe_is_attached_in_windows_that_keep_the_budget() {
        let mut governor = Governor::new(5.0, 0, Sample::default());
        assert!(!governor.due(100 * MS), "the window runs");
        assert_eq!(governor.tick(100 * MS, sample(60, 20)), None);
        // Following every poll costs 50 ms for 100 ms of the target's own work. The governor
        // aims at 40 % of a 5 % budget: 2 ms over the window, so 48 ms more of the target's work
        // must pass, which at its 0.5 ms per ms takes 4.8 s.
        assert_eq!(
            governor.tick(200 * MS, sample(150, 50)),
            Some(Switch::Detach)
        );
        assert!(!governor.due(4_900 * MS));
        assert_eq!(governor.tick(4_900 * MS, sample(300, 50)), None);
        assert_eq!(
            governor.tick(5_000 * MS, sample(2_550, 50)),
            Some(Switch::Attach)
        );
        assert_eq!(governor.windows, 2);
        let coverage = governor.coverage(0, 5_000 * MS);
        assert!((coverage - 200.0 / 5_000.0).abs() < 1e-9, "{coverage}");
    }

    /// A governor back from its first gap (200 ms to 5 s: 2.4 s of the target's work, and
    /// `collector_ms` of the collector's), then at the end of a second window at `end_ms` with
    /// the target's CPU and the traps at `target_ms` and `traps_ms`; what it did then.
    fn second_window(collector_ms: u64, end_ms: u64, target_ms: u64, traps_ms: u64) -> Governor {
        let mut governor = Governor::new(5.0, 0, Sample::default());
        governor.tick(200 * MS, sample(150, 50));
        let with_collector = |mut sample: Sample| {
            sample.collector_cpu_ns = collector_ms * MS;
            sample
        };
        let attached = governor.tick(5_000 * MS, with_collector(sample(2_550, 50)));
        assert_eq!(attached, Some(Switch::Attach));
        let detached = governor.tick(end_ms * MS, with_collector(sample(target_ms, traps_ms)));
        assert_eq!(detached, Some(Switch::Detach));
        governor
    }

    #[test]
    fn the_gaps_own_cost_and_the_windows_real_length_lengthen_the_next_gap() {
        // The gap cost 12 ms of the collector's. A window that ran 300 ms: 150 ms of the
        // target's own work, 75 ms of cost. 72 ms over the budget's share; the gap leaves
        // 0.02 x 0.5 - 0.0025 = 0.0075 ms of room per ms.
        let governor = second_window(12, 5_300, 2_550 + 225, 50 + 75);
        assert!(!governor.due(5_300 * MS + 9_599 * MS));
        assert!(governor.due(5_300 * MS + 9_600 * MS));
    }

    #[test]
    fn a_gap_that_alone_costs_more_than_the_budget_lasts_the_longest() {
        let governor = second_window(100, 5_200, 2_700, 100);
        assert!(!governor.due(5_200 * MS + MAX_GAP_NS - 1));
        assert!(governor.due(5_200 * MS + MAX_GAP_NS));
    }

    #[test]
    fn a_cheap_probe_stays_attached() {
        let mut governor = Governor::new(5.0, 0, Sample::default());
        assert_eq!(governor.tick(200 * MS, sample(1_000, 10)), None);
        assert_eq!(governor.tick(400 * MS, sample(2_000, 20)), None);
        assert!(governor.attached());
        assert_eq!(governor.coverage(0, 400 * MS), 1.0);
    }

    #[test]
    fn an_idle_target_keeps_the_probes_attached() {
        let mut governor = Governor::new(5.0, 0, Sample::default());
        assert_eq!(governor.tick(200 * MS, sample(1, 1)), None);
        assert!(governor.attached());
    }
}
