//! `cargo xtask bench steady`: what the default probe costs a server it is left attached to, as an
//! operator leaves it on a service. The server workload's rounds each start a fresh server and
//! compare variants run one after the other, so a host stall in one round moves its ratio by 20 %
//! or more; a probe that spends most of its time detached cannot be told from +0 % that way.
//!
//! Here one `inspect-server` answers one unbroken load (`inspect-load --progress`, which reports
//! the requests answered every 100 ms) for the whole run, in phases that alternate without and with
//! `async-inspect probe --pid` (its defaults): plain, probed, plain, ... plain. At each progress
//! report the bench reads the server's CPU time (its threads' schedstat, in ns) and how many probe
//! links the collector holds, which is most while its per-poll probes are attached. So each 100-ms
//! slice of a probed phase is known as the probe's start (up to the end of its first window, a
//! cost paid once per attach), a window, a gap, or its stop, and is priced in CPU per request
//! against the plain phases either side. The load also reports each slice's reply latencies (as
//! histogram buckets): each slice's p99 is priced the same way, and the p99 of all the probed
//! phase's replies against all the plain phases'.

use std::{
    ffi::OsString,
    fs,
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crate::bench::{Summary, median, or_na};
use crate::server_bench::{Binaries, Probe, Server, build, load_command, markdown_table, proc};
use crate::{Result, describe};

/// The options of the steady workload.
#[derive(Debug, PartialEq)]
pub(crate) struct SteadyOptions {
    /// Probed phases, each between two plain ones.
    pub pairs: u32,
    pub phase_seconds: u32,
    /// The probed phases attach nothing: what this measure reads when there is nothing to
    /// find, i.e. its noise on this host.
    pub control: bool,
}

impl Default for SteadyOptions {
    fn default() -> Self {
        SteadyOptions {
            pairs: 4,
            phase_seconds: 20,
            control: false,
        }
    }
}

impl SteadyOptions {
    pub(crate) fn set(&mut self, name: &str, value: u32) -> Result<()> {
        match name {
            "--pairs" if value >= 1 => self.pairs = value,
            "--phase-seconds" if value >= 5 => self.phase_seconds = value,
            "--pairs" => return Err("bench: --pairs must be at least 1".into()),
            _ => return Err(format!("bench: {name} must be at least 5")),
        }
        Ok(())
    }
}

const CLIENTS: u32 = 20;
const PROGRESS: Duration = Duration::from_millis(100);
/// Dropped from the first plain phase: connections, caches and the scheduler settle.
const WARM_UP: Duration = Duration::from_secs(2);
/// What the load's duration allows beyond the phases for each probe's stop.
const STOP_ALLOWANCE: Duration = Duration::from_secs(10);
const WARMING: usize = usize::MAX;

/// One progress report's slice of the load: what the server answered and spent since the last.
#[derive(Clone, Debug, PartialEq)]
struct Slice {
    phase: usize,
    /// How long it lasted, by the load generator's clock.
    ms: u64,
    requests: u64,
    /// The server's CPU.
    cpu_ns: u64,
    /// The probe links the collector held at the slice's end (None: no probe, or unreadable).
    links: Option<usize>,
    /// The probe had been told to stop.
    stopping: bool,
    /// The replies' latencies: (about this many ns, this many replies).
    latencies: Vec<(u64, u64)>,
}

/// What a slice of a probed phase was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Plain,
    /// From the probe's launch to the end of its first window.
    Start,
    Window,
    Gap,
    /// Probed, but its links could not be read: not split.
    Probed,
    Stop,
}

/// What the sampler and the phase clock share.
#[derive(Default)]
struct Now {
    phase: AtomicUsize,
    collector: AtomicU32,
    stopping: AtomicBool,
}

pub(crate) fn steady_bench(
    options: &SteadyOptions,
    sudo: &[OsString],
    reports: &Path,
) -> Result<()> {
    let binaries = build(false)?;
    let server = Server::start(&binaries.server, 0)?;
    let with = if options.control {
        "nothing (--control: this measure's noise here)"
    } else {
        "`async-inspect probe --pid PID` (its defaults)"
    };
    println!(
        "## steady workload: the default probe, left attached\n\n\
         inspect-server answers {CLIENTS} closed-loop clients for the whole run, in {} pairs of \
         {}-s phases without and with {with}, then a last plain phase.\n",
        options.pairs, options.phase_seconds
    );
    let phases = 2 * options.pairs as usize + 1;
    let phase = Duration::from_secs(options.phase_seconds.into());
    let total = WARM_UP + phase * phases as u32 + STOP_ALLOWANCE * options.pairs;
    let mut load = start_load(&binaries, server.port, total)?;
    let now = Arc::new(Now::default());
    now.phase.store(WARMING, Ordering::Relaxed);
    let stdout = load.stdout.take().expect("piped stdout");
    let sampler = {
        let (now, pid) = (now.clone(), server.pid());
        thread::spawn(move || sample(BufReader::new(stdout), pid, &now))
    };
    let clock = PhaseClock {
        now: &now,
        sudo,
        binaries: &binaries,
        reports,
        server: &server,
        phase,
        control: options.control,
    };
    let ran = clock.run(phases, &mut load);
    let _ = load.kill();
    let _ = load.wait();
    let slices = sampler.join().map_err(|_| "the sampler panicked")?;
    let summaries = ran?;
    let parts = parts(&slices);
    write_slices(&reports.join("steady-slices.tsv"), &slices, &parts)?;
    print_pairs(&slices, &parts, &summaries);
    println!(
        "\n`scripts/bench.sh steady --pairs {} --phase-seconds {}{}`",
        options.pairs,
        options.phase_seconds,
        if options.control { " --control" } else { "" }
    );
    Ok(())
}

fn start_load(binaries: &Binaries, port: u16, total: Duration) -> Result<Child> {
    let mut command = load_command(binaries, port, CLIENTS, total);
    command
        .args(["--progress", &format!("{}ms", PROGRESS.as_millis())])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    command
        .spawn()
        .map_err(|error| format!("cannot run {}: {error}", describe(&command)))
}

/// Turns the load's progress reports into slices, until it ends.
fn sample(load: impl BufRead, server: u32, now: &Now) -> Vec<Slice> {
    let mut slices = Vec::new();
    let mut last = ((0, 0), proc::threads_cpu_ns(server).ok());
    for line in load.lines() {
        let Ok(line) = line else { break };
        let Some(Progress {
            ms,
            answered,
            latencies,
        }) = parse_progress(&line)
        else {
            continue;
        };
        let Ok(cpu_ns) = proc::threads_cpu_ns(server) else {
            break;
        };
        let now_at = ((ms, answered), Some(cpu_ns));
        let ((ms_before, requests), before) = std::mem::replace(&mut last, now_at);
        let collector = now.collector.load(Ordering::Relaxed);
        let phase = now.phase.load(Ordering::Relaxed);
        if phase == WARMING {
            continue;
        }
        slices.push(Slice {
            phase,
            ms: ms.saturating_sub(ms_before),
            requests: answered.saturating_sub(requests),
            cpu_ns: cpu_ns.saturating_sub(before.unwrap_or(cpu_ns)),
            links: (collector != 0)
                .then(|| proc::probe_links(collector).ok())
                .flatten(),
            stopping: now.stopping.load(Ordering::Relaxed),
            latencies,
        });
    }
    slices
}

/// One of inspect-load's `progress: ms=T requests=N latencies=V:C,...` reports.
#[derive(Debug, PartialEq)]
struct Progress {
    ms: u64,
    /// Requests answered since the load began.
    answered: u64,
    /// Since the last report: (about V ns, C replies).
    latencies: Vec<(u64, u64)>,
}

fn parse_progress(line: &str) -> Option<Progress> {
    let rest = line.trim().strip_prefix("progress: ")?;
    let field = |name: &str| {
        let mut fields = rest.split_whitespace();
        fields.find_map(|field| field.strip_prefix(name))
    };
    let number = |name: &str| field(name)?.parse().ok();
    let latencies = field("latencies=").unwrap_or_default();
    let bucket = |pair: &str| {
        let (value, count) = pair.split_once(':')?;
        Some((value.parse().ok()?, count.parse().ok()?))
    };
    Some(Progress {
        ms: number("ms=")?,
        answered: number("requests=")?,
        latencies: latencies
            .split(',')
            .filter(|pair| !pair.is_empty())
            .map(bucket)
            .collect::<Option<_>>()?,
    })
}

/// Runs the phases: attaches the probe for the odd ones.
struct PhaseClock<'a> {
    now: &'a Now,
    sudo: &'a [OsString],
    binaries: &'a Binaries,
    reports: &'a Path,
    server: &'a Server,
    phase: Duration,
    control: bool,
}

impl PhaseClock<'_> {
    /// The probe's report of each probed phase.
    fn run(&self, phases: usize, load: &mut Child) -> Result<Vec<Summary>> {
        thread::sleep(WARM_UP);
        let mut summaries = Vec::new();
        for phase in 0..phases {
            let started = Instant::now();
            let probed = phase % 2 == 1;
            println!(
                "phase {}/{phases}: {}",
                phase + 1,
                if probed { "probed" } else { "plain" }
            );
            self.now.phase.store(phase, Ordering::Relaxed);
            if let Some(status) = load.try_wait().map_err(|error| error.to_string())? {
                return Err(format!("inspect-load ended early ({status})"));
            }
            if !probed || self.control {
                thread::sleep(self.phase);
                continue;
            }
            summaries.push(self.probed_phase(phase, started)?);
        }
        Ok(summaries)
    }

    /// Attaches the probe, leaves it attached until the phase begun at `started` ends, and
    /// stops it: its report.
    fn probed_phase(&self, phase: usize, started: Instant) -> Result<Summary> {
        let files = self.reports.join(format!("steady-{}", phase / 2 + 1));
        let target = self.server.pid();
        let mut probe = Probe::start(self.sudo, &self.binaries.probe, &files, &[], target)?;
        probe.wait_attached()?;
        let collector = probe.collector_pid().unwrap_or(0);
        self.now.collector.store(collector, Ordering::Relaxed);
        thread::sleep(self.phase.saturating_sub(started.elapsed()));
        self.now.stopping.store(true, Ordering::Relaxed);
        let summary = probe.stop();
        self.now.collector.store(0, Ordering::Relaxed);
        self.now.stopping.store(false, Ordering::Relaxed);
        summary
    }
}

/// Each slice's part: a probed phase's slices are its start until the end of its first window
/// (the first run of slices at the most links it held), then windows (the most links) and gaps.
fn parts(slices: &[Slice]) -> Vec<Part> {
    slices
        .chunk_by(|a, b| a.phase == b.phase)
        .flat_map(|phase| phase_parts(phase, phase[0].phase % 2 == 1))
        .collect()
}

fn phase_parts(slices: &[Slice], probed: bool) -> Vec<Part> {
    if !probed {
        return vec![Part::Plain; slices.len()];
    }
    let most = slices
        .iter()
        .filter(|s| !s.stopping)
        .filter_map(|s| s.links)
        .max();
    let (mut in_first_window, mut after_it) = (false, false);
    slices
        .iter()
        .map(|slice| {
            let attached = most.is_some() && slice.links == most;
            if slice.stopping {
                return Part::Stop;
            }
            // The launch (links not read yet, or fewer) and the first window.
            if !after_it && most.is_some() {
                in_first_window |= attached;
                after_it = in_first_window && !attached;
                if !after_it {
                    return Part::Start;
                }
            }
            match (most, attached) {
                (None, _) => Part::Probed,
                (_, true) => Part::Window,
                (_, false) => Part::Gap,
            }
        })
        .collect()
}

/// One probed phase against the plain phases either side. Ratios are of medians over 100-ms
/// slices: a host stall here doubles or triples the CPU per request of a few seconds, which
/// would move a total by more than the probe costs.
#[derive(Debug, PartialEq)]
struct Pair {
    plain_us: Option<f64>,
    /// CPU per request.
    cpu: Ratios,
    /// Requests per second.
    throughput: Ratios,
    /// The share of the slices after the first window that were in windows.
    window_share: Option<f64>,
    /// Extra server CPU from the launch to the end of the first window, and at the stop, in ms,
    /// over the plain median: paid once per attach.
    start_ms: Option<f64>,
    stop_ms: Option<f64>,
    /// The plain phases' median slice p99 latency, in µs.
    p99_plain_us: Option<f64>,
    /// Slices' p99 latency.
    p99: Ratios,
    /// The p99 of every reply of the probed phase (start and stop too) over the plain phases'.
    p99_all: Option<f64>,
}

/// A figure of the probed phase's slices over the plain phases' median.
#[derive(Debug, Default, PartialEq)]
struct Ratios {
    windows: Option<f64>,
    gaps: Option<f64>,
    /// Windows and gaps mixed in their shares of the time: what the probe costs while it stays
    /// attached (or, its links unread, the probed slices' own median).
    steady: Option<f64>,
}

/// Slices answering fewer requests say little of the CPU per request.
const MIN_SLICE_REQUESTS: u64 = 100;

/// The slices of one probed phase (`phase`) and of the plain phases either side, by part.
struct PairSlices<'a> {
    plain: Vec<&'a Slice>,
    window: Vec<&'a Slice>,
    gap: Vec<&'a Slice>,
    probed: Vec<&'a Slice>,
    start: Vec<&'a Slice>,
    stop: Vec<&'a Slice>,
}

impl<'a> PairSlices<'a> {
    fn of(slices: &'a [Slice], parts: &[Part], phase: usize) -> Self {
        let mut pair = PairSlices {
            plain: Vec::new(),
            window: Vec::new(),
            gap: Vec::new(),
            probed: Vec::new(),
            start: Vec::new(),
            stop: Vec::new(),
        };
        for (slice, part) in slices.iter().zip(parts) {
            let into = match part {
                _ if slice.phase + 1 == phase || slice.phase == phase + 1 => &mut pair.plain,
                _ if slice.phase != phase => continue,
                Part::Plain => continue,
                Part::Window => &mut pair.window,
                Part::Gap => &mut pair.gap,
                Part::Probed => &mut pair.probed,
                Part::Start => &mut pair.start,
                Part::Stop => &mut pair.stop,
            };
            into.push(slice);
        }
        pair
    }

    /// The p99 of every reply of the probed phase over the plain phases': a stall here is in
    /// the tail of whichever phase it meets, but so is a pause the probe causes.
    fn p99_all(&self) -> Option<f64> {
        let phase: Vec<&Slice> = [
            &self.start,
            &self.window,
            &self.gap,
            &self.probed,
            &self.stop,
        ]
        .into_iter()
        .flatten()
        .copied()
        .collect();
        Some(latency_us(&phase, 0.99)? / latency_us(&self.plain, 0.99)?)
    }

    fn window_share(&self) -> Option<f64> {
        let (window, gap) = (self.window.len(), self.gap.len());
        (window + gap > 0).then(|| window as f64 / (window + gap) as f64)
    }

    fn ratios(&self, figure: fn(&Slice) -> Option<f64>) -> Ratios {
        let base = median_of(&self.plain, figure);
        let over = |slices: &[&Slice]| Some(median_of(slices, figure)? / base?);
        let (windows, gaps) = (over(&self.window), over(&self.gap));
        let steady = match (gaps, self.window_share()) {
            (Some(gaps), Some(share)) => Some(gaps + share * (windows.unwrap_or(gaps) - gaps)),
            _ => over(&self.probed),
        };
        Ratios {
            windows,
            gaps,
            steady,
        }
    }
}

fn ns_per_request(slice: &Slice) -> Option<f64> {
    Some(slice.cpu_ns as f64 / slice.requests as f64)
}

fn requests_per_second(slice: &Slice) -> Option<f64> {
    Some(slice.requests as f64 * 1e3 / slice.ms.max(1) as f64)
}

fn p99_us(slice: &Slice) -> Option<f64> {
    latency_us(&[slice], 0.99)
}

fn pairs(slices: &[Slice], parts: &[Part]) -> Vec<Pair> {
    let last = slices.iter().map(|s| s.phase).max().unwrap_or(0);
    (1..last)
        .step_by(2)
        .map(|phase| {
            let pair = PairSlices::of(slices, parts, phase);
            let base = median_of(&pair.plain, ns_per_request);

            Pair {
                plain_us: base.map(|ns| ns / 1e3),
                cpu: pair.ratios(ns_per_request),
                throughput: pair.ratios(requests_per_second),
                window_share: pair.window_share(),
                start_ms: base.map(|base| extra_ms(&pair.start, base)),
                stop_ms: base.map(|base| extra_ms(&pair.stop, base)),
                p99_plain_us: median_of(&pair.plain, p99_us),
                p99: pair.ratios(p99_us),
                p99_all: pair.p99_all(),
            }
        })
        .collect()
}

fn median_of(slices: &[&Slice], figure: fn(&Slice) -> Option<f64>) -> Option<f64> {
    let counted = slices.iter().filter(|s| s.requests >= MIN_SLICE_REQUESTS);
    let mut values: Vec<f64> = counted.filter_map(|slice| figure(slice)).collect();
    median(&mut values)
}

/// The `q` quantile of the latencies of every reply in `slices`, in µs (None: no replies).
fn latency_us(slices: &[&Slice], q: f64) -> Option<f64> {
    let mut buckets: Vec<(u64, u64)> = slices
        .iter()
        .flat_map(|slice| slice.latencies.iter().copied())
        .collect();
    buckets.sort_unstable();
    let total: u64 = buckets.iter().map(|(_, count)| count).sum();
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total.max(1));
    let mut seen = 0;
    let (ns, _) = buckets.iter().find(|(_, count)| {
        seen += count;
        seen >= rank
    })?;
    Some(*ns as f64 / 1e3)
}

/// CPU beyond what `base` ns per request would have spent on the slices' requests, in ms.
fn extra_ms(slices: &[&Slice], base: f64) -> f64 {
    let (cpu, requests) = slices.iter().fold((0, 0), |(cpu, requests), slice| {
        (cpu + slice.cpu_ns, requests + slice.requests)
    });
    (cpu as f64 - base * requests as f64) / 1e6
}

/// Every slice, for a closer look: phase, part, requests, server CPU (ns), probe links, p50 and
/// p99 latency (µs).
fn write_slices(path: &Path, slices: &[Slice], parts: &[Part]) -> Result<()> {
    let mut text = String::from("phase\tpart\trequests\tcpu_ns\tlinks\tp50_us\tp99_us\n");
    for (slice, part) in slices.iter().zip(parts) {
        let or_empty = |value: Option<String>| value.unwrap_or_default();
        let links = or_empty(slice.links.map(|links| links.to_string()));
        let latency = |q| or_empty(latency_us(&[slice], q).map(|us| format!("{us:.1}")));
        text += &format!(
            "{}\t{part:?}\t{}\t{}\t{links}\t{}\t{}\n",
            slice.phase,
            slice.requests,
            slice.cpu_ns,
            latency(0.5),
            latency(0.99)
        );
    }
    fs::write(path, text).map_err(|error| format!("writing {}: {error}", path.display()))
}

fn print_pairs(slices: &[Slice], parts: &[Part], summaries: &[Summary]) {
    println!(
        "\nEach probed phase against the plain phases either side, as medians over 100-ms slices \
         (a host stall would move totals more than the probe does) of the server's CPU per \
         request and of the requests answered per second: in the probe's windows (its per-poll \
         probes attached), in its gaps, and both mixed in their shares of the time after its \
         first window (steady: what it costs while left attached). Start and stop: the server CPU \
         beyond plain from the probe's launch to the end of its first window, and after SIGINT, \
         paid once per attach. p99, steady: each slice's p99 latency, priced as the CPU is. p99 \
         of all replies: over the whole probed phase (start and stop too), over the plain \
         phases'; a stall moves it as much as a pause the probe causes. Coverage and estimate: the probe's own report. Each slice is in \
         target/bench/steady-slices.tsv.\n"
    );
    let pairs = pairs(slices, parts);
    let mut rows: Vec<Vec<String>> = pairs
        .iter()
        .enumerate()
        // No summary under --control, where no probe runs.
        .map(|(number, pair)| pair_row(&(number + 1).to_string(), pair, summaries.get(number)))
        .collect();
    let mid = |field: &dyn Fn(&Pair) -> Option<f64>| {
        let mut values: Vec<f64> = pairs.iter().filter_map(field).collect();
        median(&mut values)
    };
    let medians = Pair {
        plain_us: mid(&|p| p.plain_us),
        cpu: Ratios {
            windows: mid(&|p| p.cpu.windows),
            gaps: mid(&|p| p.cpu.gaps),
            steady: mid(&|p| p.cpu.steady),
        },
        throughput: Ratios {
            steady: mid(&|p| p.throughput.steady),
            ..Ratios::default()
        },
        window_share: mid(&|p| p.window_share),
        start_ms: mid(&|p| p.start_ms),
        stop_ms: mid(&|p| p.stop_ms),
        p99_plain_us: mid(&|p| p.p99_plain_us),
        p99: Ratios {
            steady: mid(&|p| p.p99.steady),
            ..Ratios::default()
        },
        p99_all: mid(&|p| p.p99_all),
    };
    rows.push(pair_row("median", &medians, None));
    let header = [
        "pair",
        "plain µs/req",
        "CPU/req, steady",
        "in windows",
        "in gaps",
        "time in windows",
        "req/s, steady",
        "start, ms",
        "stop, ms",
        "p99 plain µs",
        "p99, steady",
        "p99 of all replies",
        "coverage",
        "estimate",
    ];
    print!("{}", markdown_table(&header, &rows));
}

fn pair_row(name: &str, pair: &Pair, summary: Option<&Summary>) -> Vec<String> {
    let ratio = |value: Option<f64>| or_na(value.map(|x| format!("{x:.3}x")));
    let ms = |value: Option<f64>| or_na(value.map(|x| format!("{x:.0}")));
    let summary_figure = |figure: fn(&Summary) -> Option<f64>, precision: usize, unit: &str| {
        let value = summary.and_then(figure);
        or_na(value.map(|value| format!("{value:.precision$}{unit}")))
    };
    vec![
        name.to_string(),
        or_na(pair.plain_us.map(|us| format!("{us:.2}"))),
        ratio(pair.cpu.steady),
        ratio(pair.cpu.windows),
        ratio(pair.cpu.gaps),
        or_na(pair.window_share.map(|x| format!("{:.1} %", x * 100.0))),
        ratio(pair.throughput.steady),
        ms(pair.start_ms),
        ms(pair.stop_ms),
        or_na(pair.p99_plain_us.map(|us| format!("{us:.0}"))),
        ratio(pair.p99.steady),
        ratio(pair.p99_all),
        summary_figure(|s| s.coverage, 3, ""),
        summary_figure(|s| s.estimate_percent, 1, " %"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slice of `phase` answering 1,000 requests at `us` µs of CPU each, in 100 µs each, the
    /// collector holding `links`.
    fn slice(phase: usize, us: u64, links: Option<usize>) -> Slice {
        Slice {
            phase,
            ms: 100,
            requests: 1_000,
            cpu_ns: us * 1_000_000,
            links,
            stopping: false,
            latencies: vec![(100_000, 1_000)],
        }
    }

    #[test]
    fn reads_progress_lines() {
        let progress = |ms, answered, latencies| {
            Some(Progress {
                ms,
                answered,
                latencies,
            })
        };
        assert_eq!(
            parse_progress("progress: ms=100 requests=12345"),
            progress(100, 12345, vec![])
        );
        assert_eq!(
            parse_progress("progress: ms=200 requests=12400 latencies="),
            progress(200, 12400, vec![])
        );
        assert_eq!(
            parse_progress("progress: ms=300 requests=12500 latencies=98304:40,132095:60"),
            progress(300, 12500, vec![(98304, 40), (132095, 60)])
        );
        assert_eq!(parse_progress("load: requests=5 seconds=1.0"), None);
        assert_eq!(parse_progress("progress: ms=100"), None);
        assert_eq!(
            parse_progress("progress: ms=1 requests=2 latencies=98304"),
            None
        );
    }

    #[test]
    fn a_probed_phase_is_its_start_then_windows_and_gaps_then_its_stop() {
        let links = [
            None,
            Some(4),
            Some(15),
            Some(15),
            Some(4),
            Some(4),
            Some(15),
            Some(4),
        ];
        let mut slices: Vec<Slice> = links.iter().map(|&l| slice(1, 8, l)).collect();
        slices.push(Slice {
            stopping: true,
            ..slice(1, 8, Some(4))
        });
        use Part::*;
        assert_eq!(
            phase_parts(&slices, true),
            [Start, Start, Start, Start, Gap, Gap, Window, Gap, Stop]
        );
        assert_eq!(phase_parts(&slices[..2], false), [Plain, Plain]);
        // Links never read (the bench is not root): the phase is not split.
        let unread = [slice(1, 8, None), slice(1, 8, None)];
        assert_eq!(phase_parts(&unread, true), [Probed, Probed]);
    }

    #[test]
    fn a_pair_prices_its_probed_phase_against_the_plain_ones_either_side() {
        let mut slices = vec![slice(0, 7, None), slice(0, 9, None)];
        // The start (the launch at 20 µs a request, the first window at 20 and 16), then a window
        // at 16 µs and three gaps at 8 µs.
        slices.extend([
            slice(1, 20, None),
            slice(1, 20, Some(9)),
            slice(1, 16, Some(9)),
        ]);
        slices.extend([slice(1, 8, Some(3)), slice(1, 16, Some(9))]);
        slices.extend([slice(1, 8, Some(3)), slice(1, 8, Some(3))]);
        slices.extend([slice(2, 8, None), slice(2, 8, None)]);
        let pairs = pairs(&slices, &parts(&slices));
        assert_eq!(pairs.len(), 1);
        let pair = &pairs[0];
        assert_eq!(pair.plain_us, Some(8.0));
        assert_eq!(pair.cpu.windows, Some(2.0));
        assert_eq!(pair.cpu.gaps, Some(1.0));
        assert_eq!(pair.window_share, Some(0.25));
        assert_eq!(pair.cpu.steady, Some(40.0 / 32.0));
        assert_eq!(pair.throughput.steady, Some(1.0));
        // Three start slices of 1,000 requests, each 12 or 8 µs a request above plain.
        assert_eq!(pair.start_ms, Some(12.0 + 12.0 + 8.0));
        assert_eq!(pair.stop_ms, Some(0.0));
    }

    #[test]
    fn a_host_stall_in_a_few_slices_moves_no_ratio() {
        let mut slices = vec![slice(0, 8, None), slice(0, 8, None), slice(0, 24, None)];
        slices.extend([
            slice(1, 8, Some(9)),
            slice(1, 8, Some(3)),
            slice(1, 8, Some(3)),
        ]);
        slices.extend([slice(1, 8, Some(3)), slice(1, 30, Some(3))]);
        slices.extend([slice(2, 8, None), slice(2, 8, None), slice(2, 8, None)]);
        let pair = &pairs(&slices, &parts(&slices))[0];
        assert_eq!(pair.plain_us, Some(8.0));
        assert_eq!(pair.cpu.gaps, Some(1.0));
        assert_eq!(pair.cpu.steady, Some(1.0));
    }

    #[test]
    fn p99_per_slice_and_over_every_reply() {
        let with = |slice: Slice, latencies: Vec<(u64, u64)>| Slice { latencies, ..slice };
        let mut slices = vec![slice(0, 8, None), slice(0, 8, None)];
        // Attached (its gaps): 1.5 % of replies at 300 µs. The start: 2.5 % at 1 ms.
        slices.extend([
            with(slice(1, 8, None), vec![(100_000, 950), (1_000_000, 50)]),
            slice(1, 8, Some(9)),
            with(slice(1, 8, Some(3)), vec![(100_000, 970), (300_000, 30)]),
            slice(1, 8, Some(3)),
        ]);
        slices.extend([slice(2, 8, None), slice(2, 8, None)]);
        let pair = &pairs(&slices, &parts(&slices))[0];
        assert_eq!(pair.p99_plain_us, Some(100.0));
        // One gap of two at 3x: the median of two slices is their mean.
        assert_eq!(pair.p99.gaps, Some(2.0));
        assert_eq!(pair.p99.windows, None);
        assert_eq!(pair.p99_all, Some(10.0));
        assert_eq!(latency_us(&[], 0.99), None);
    }

    #[test]
    fn options() {
        let mut options = SteadyOptions::default();
        options.set("--pairs", 2).unwrap();
        options.set("--phase-seconds", 30).unwrap();
        assert_eq!(options.pairs, 2);
        assert_eq!(options.phase_seconds, 30);
        assert!(options.set("--pairs", 0).is_err());
        assert!(options.set("--phase-seconds", 2).is_err());
        assert!(!options.control);
    }
}
