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
//! against the plain phases either side.

use std::{
    ffi::OsString,
    fs,
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crate::bench::{Summary, median, or_na};
use crate::server_bench::{Binaries, Probe, Server, build, proc};
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
#[derive(Clone, Copy, Debug, PartialEq)]
struct Slice {
    phase: usize,
    requests: u64,
    /// The server's CPU.
    cpu_ns: u64,
    /// The probe links the collector held at the slice's end (None: no probe, or unreadable).
    links: Option<usize>,
    /// The probe had been told to stop.
    stopping: bool,
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
    let mut command = Command::new(&binaries.load);
    command
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .args(["--clients", &CLIENTS.to_string()])
        .args(["--duration", &format!("{}s", total.as_secs())])
        .args([
            "--max-requests",
            &(total.as_secs() * 10_000_000).to_string(),
        ])
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
    let mut last = (0, proc::threads_cpu_ns(server).ok());
    for line in load.lines() {
        let Ok(line) = line else { break };
        let Some(answered) = parse_progress(&line) else {
            continue;
        };
        let Ok(cpu_ns) = proc::threads_cpu_ns(server) else {
            break;
        };
        let (requests, before) = std::mem::replace(&mut last, (answered, Some(cpu_ns)));
        let collector = now.collector.load(Ordering::Relaxed);
        let phase = now.phase.load(Ordering::Relaxed);
        if phase == WARMING {
            continue;
        }
        slices.push(Slice {
            phase,
            requests: answered.saturating_sub(requests),
            cpu_ns: cpu_ns.saturating_sub(before.unwrap_or(cpu_ns)),
            links: (collector != 0)
                .then(|| proc::probe_links(collector).ok())
                .flatten(),
            stopping: now.stopping.load(Ordering::Relaxed),
        });
    }
    slices
}

/// inspect-load's `progress: ms=T requests=N`: N.
fn parse_progress(line: &str) -> Option<u64> {
    let rest = line.trim().strip_prefix("progress: ")?;
    rest.split_whitespace()
        .find_map(|field| field.strip_prefix("requests="))?
        .parse()
        .ok()
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
            let files = self.reports.join(format!("steady-{}", phase / 2 + 1));
            let flags: &[&str] = &[];
            let mut probe = Probe::start(
                self.sudo,
                &self.binaries.probe,
                &files,
                flags,
                self.server.pid(),
            )?;
            probe.wait_attached()?;
            let collector = probe.collector_pid().unwrap_or(0);
            self.now.collector.store(collector, Ordering::Relaxed);
            thread::sleep(self.phase.saturating_sub(started.elapsed()));
            self.now.stopping.store(true, Ordering::Relaxed);
            summaries.push(probe.stop()?);
            self.now.collector.store(0, Ordering::Relaxed);
            self.now.stopping.store(false, Ordering::Relaxed);
        }
        Ok(summaries)
    }
}

/// Each slice's part: a probed phase's slices are its start until the end of its first window
/// (the first run of slices at the most links it held), then windows (the most links) and gaps.
fn parts(slices: &[Slice]) -> Vec<Part> {
    let mut parts = Vec::with_capacity(slices.len());
    let mut at = 0;
    while at < slices.len() {
        let phase = slices[at].phase;
        let end = at + slices[at..].iter().take_while(|s| s.phase == phase).count();
        parts.extend(phase_parts(&slices[at..end], phase % 2 == 1));
        at = end;
    }
    parts
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
/// slices of CPU per request: a host stall here doubles or triples the CPU per request of a few
/// seconds, which would move a total by more than the probe costs.
#[derive(Debug, PartialEq)]
struct Pair {
    plain_us: Option<f64>,
    windows: Option<f64>,
    gaps: Option<f64>,
    /// The share of the slices after the first window that were in windows.
    window_share: Option<f64>,
    /// Windows and gaps mixed in those shares: what the probe costs while it stays attached.
    steady: Option<f64>,
    /// Extra server CPU from the launch to the end of the first window, and at the stop, in ms,
    /// over the plain median: paid once per attach.
    start_ms: Option<f64>,
    stop_ms: Option<f64>,
}

/// Slices answering fewer requests say little of the CPU per request.
const MIN_SLICE_REQUESTS: u64 = 100;

fn pairs(slices: &[Slice], parts: &[Part]) -> Vec<Pair> {
    let last = slices.iter().map(|s| s.phase).max().unwrap_or(0);
    (1..last)
        .step_by(2)
        .map(|phase| {
            let slices_where = |wanted: &dyn Fn(usize, Part) -> bool| -> Vec<&Slice> {
                let both = slices.iter().zip(parts);
                both.filter(|(s, part)| wanted(s.phase, **part))
                    .map(|(s, _)| s)
                    .collect()
            };
            let base = median_ns(&slices_where(&|p, _| p + 1 == phase || p == phase + 1));
            let part = |which: Part| slices_where(&|p, part| p == phase && part == which);
            let (window, gap) = (part(Part::Window), part(Part::Gap));
            let over = |slices: &[&Slice]| Some(median_ns(slices)? / base?);
            let (windows, gaps) = (over(&window), over(&gap));
            let window_share = (!window.is_empty() || !gap.is_empty())
                .then(|| window.len() as f64 / (window.len() + gap.len()) as f64);
            let steady = match (windows, gaps, window_share) {
                (windows, Some(gaps), Some(share)) => {
                    Some(gaps + share * (windows.unwrap_or(gaps) - gaps))
                }
                _ => over(&part(Part::Probed)),
            };
            Pair {
                plain_us: base.map(|ns| ns / 1e3),
                windows,
                gaps,
                window_share,
                steady,
                start_ms: base.map(|base| extra_ms(&part(Part::Start), base)),
                stop_ms: base.map(|base| extra_ms(&part(Part::Stop), base)),
            }
        })
        .collect()
}

/// The median CPU per request of `slices`, in ns.
fn median_ns(slices: &[&Slice]) -> Option<f64> {
    let mut values: Vec<f64> = slices
        .iter()
        .filter(|slice| slice.requests >= MIN_SLICE_REQUESTS)
        .map(|slice| slice.cpu_ns as f64 / slice.requests as f64)
        .collect();
    median(&mut values)
}

/// CPU beyond what `base` ns per request would have spent on the slices' requests, in ms.
fn extra_ms(slices: &[&Slice], base: f64) -> f64 {
    let (cpu, requests) = slices.iter().fold((0, 0), |(cpu, requests), slice| {
        (cpu + slice.cpu_ns, requests + slice.requests)
    });
    (cpu as f64 - base * requests as f64) / 1e6
}

/// Every slice, for a closer look: phase, part, requests, server CPU (ns), probe links.
fn write_slices(path: &Path, slices: &[Slice], parts: &[Part]) -> Result<()> {
    let mut text = String::from("phase\tpart\trequests\tcpu_ns\tlinks\n");
    for (slice, part) in slices.iter().zip(parts) {
        let links = slice
            .links
            .map(|links| links.to_string())
            .unwrap_or_default();
        text += &format!(
            "{}\t{part:?}\t{}\t{}\t{links}\n",
            slice.phase, slice.requests, slice.cpu_ns
        );
    }
    fs::write(path, text).map_err(|error| format!("writing {}: {error}", path.display()))
}

fn print_pairs(slices: &[Slice], parts: &[Part], summaries: &[Summary]) {
    let pairs = pairs(slices, parts);
    let ratio = |value: Option<f64>| or_na(value.map(|x| format!("{x:.3}x")));
    let percent = |value: Option<f64>| or_na(value.map(|x| format!("{:.1} %", x * 100.0)));
    let ms = |value: Option<f64>| or_na(value.map(|x| format!("{x:.0}")));
    println!(
        "\nEach probed phase against the plain phases either side, as medians over 100-ms slices of \
         the server's CPU per request (a host stall would move totals more than the probe does): \
         in the probe's windows (its per-poll probes attached), in its gaps, and both mixed in \
         their shares of the time after its first window (steady: what it costs while left \
         attached). Start and stop: the server CPU beyond plain from the probe's launch to the end \
         of its first window, and after SIGINT, paid once per attach. Coverage and estimate: the \
         probe's own report. Each slice is in target/bench/steady-slices.tsv."
    );
    println!(
        "\n| pair | plain µs/req | steady | windows | time in windows | gaps | start, ms | stop, ms | coverage | estimate |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (number, pair) in pairs.iter().enumerate() {
        // None under --control, where no probe runs.
        let summary = summaries.get(number);
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            number + 1,
            or_na(pair.plain_us.map(|us| format!("{us:.2}"))),
            ratio(pair.steady),
            ratio(pair.windows),
            percent(pair.window_share),
            ratio(pair.gaps),
            ms(pair.start_ms),
            ms(pair.stop_ms),
            or_na(summary.and_then(|s| s.coverage).map(|c| format!("{c:.3}"))),
            or_na(
                summary
                    .and_then(|s| s.estimate_percent)
                    .map(|e| format!("{e:.1} %"))
            ),
        );
    }
    let mid = |field: fn(&Pair) -> Option<f64>| {
        let mut values: Vec<f64> = pairs.iter().filter_map(field).collect();
        median(&mut values)
    };
    println!(
        "| median | {} | {} | {} | {} | {} | {} | {} | | |",
        or_na(mid(|p| p.plain_us).map(|us| format!("{us:.2}"))),
        ratio(mid(|p| p.steady)),
        ratio(mid(|p| p.windows)),
        percent(mid(|p| p.window_share)),
        ratio(mid(|p| p.gaps)),
        ms(mid(|p| p.start_ms)),
        ms(mid(|p| p.stop_ms)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slice of `phase` answering 1,000 requests at `us` µs each, the collector holding `links`.
    fn slice(phase: usize, us: u64, links: Option<usize>) -> Slice {
        Slice {
            phase,
            requests: 1_000,
            cpu_ns: us * 1_000_000,
            links,
            stopping: false,
        }
    }

    #[test]
    fn reads_progress_lines() {
        assert_eq!(
            parse_progress("progress: ms=100 requests=12345"),
            Some(12345)
        );
        assert_eq!(parse_progress("load: requests=5 seconds=1.0"), None);
        assert_eq!(parse_progress("progress: ms=100"), None);
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
        assert_eq!(pair.windows, Some(2.0));
        assert_eq!(pair.gaps, Some(1.0));
        assert_eq!(pair.window_share, Some(0.25));
        assert_eq!(pair.steady, Some(40.0 / 32.0));
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
        assert_eq!(pair.gaps, Some(1.0));
        assert_eq!(pair.steady, Some(1.0));
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
