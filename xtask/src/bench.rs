//! `cargo xtask bench`: what probing costs, on two workloads. `server` (server_bench.rs) is a
//! request/response tokio server under loopback load, measured in CPU per request, plain, probed
//! and with console-subscriber. `yield` is the demo's poll-heavy workload (tasks that only yield),
//! timed unprobed, probed and probed with `--record`. With neither named, both run, server first;
//! either's options may then be given. `memory` (memory_bench.rs), run only when named, is the
//! collector's memory with a crowd of parked tasks. `steady` (steady_bench.rs), also run only
//! when named, is the default probe left attached to one server under one unbroken load. It only
//! prints figures: it never passes or fails on them.

use std::{
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use crate::memory_bench::{self, MemoryOptions};
use crate::server_bench::{self, ServerOptions};
use crate::steady_bench::{self, SteadyOptions};
use crate::{Result, USAGE, cargo, describe, root, root_prefix, run};

/// What `bench` runs: each workload that was chosen, with its options.
#[derive(Debug, Default, PartialEq)]
struct BenchPlan {
    server: Option<ServerOptions>,
    yields: Option<YieldOptions>,
    memory: Option<MemoryOptions>,
    steady: Option<SteadyOptions>,
}

#[derive(Debug, PartialEq)]
struct YieldOptions {
    runs: u32,
    /// Passed to `inspect-demo bench` as they were given: it has its own defaults.
    demo_args: Vec<String>,
}

impl Default for YieldOptions {
    fn default() -> Self {
        YieldOptions {
            runs: 3,
            demo_args: Vec::new(),
        }
    }
}

impl YieldOptions {
    fn set(&mut self, name: &str, value: u32) -> Result<()> {
        if name != "--runs" {
            self.demo_args.extend([name.to_string(), value.to_string()]);
        } else if value == 0 {
            return Err("bench: --runs must be at least 1".into());
        } else {
            self.runs = value;
        }
        Ok(())
    }
}

/// `[server|yield] [--option N | --option=N]...`: an option of a workload that is not chosen is an
/// error.
fn parse_bench_args(args: Vec<String>) -> Result<BenchPlan> {
    let mut args = args.into_iter().peekable();
    let chosen =
        args.next_if(|arg| ["server", "yield", "memory", "steady"].contains(&arg.as_str()));
    let both = chosen.is_none();
    let is = |name: &str| both || chosen.as_deref() == Some(name);
    let mut plan = BenchPlan {
        server: is("server").then(ServerOptions::default),
        yields: is("yield").then(YieldOptions::default),
        memory: (chosen.as_deref() == Some("memory")).then(MemoryOptions::default),
        steady: (chosen.as_deref() == Some("steady")).then(SteadyOptions::default),
    };
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name.to_string(), Some(value.to_string())),
            None => (arg.clone(), None),
        };
        let workload = match name.as_str() {
            "--runs" | "--tasks" | "--yields" => "yield",
            "--rounds" | "--seconds" | "--clients" | "--fanout" | "--variants" => "server",
            "--crowd" => "memory",
            "--pairs" | "--phase-seconds" | "--control" => "steady",
            _ => return Err(format!("bench: unknown argument '{arg}'\n{USAGE}")),
        };
        let not_chosen = || format!("bench: {name} is an option of the {workload} workload");
        if name == "--control" && inline.is_none() {
            plan.steady.as_mut().ok_or_else(not_chosen)?.control = true;
            continue;
        }
        let value = inline
            .or_else(|| args.next())
            .ok_or_else(|| format!("bench: {name} needs a value"))?;
        if name == "--variants" {
            plan.server
                .as_mut()
                .ok_or_else(not_chosen)?
                .set_variants(&value)?;
            continue;
        }
        let number: u32 = value
            .parse()
            .map_err(|_| format!("bench: {name}: '{value}' is not a whole number"))?;
        match workload {
            "memory" => plan.memory.as_mut().ok_or_else(not_chosen)?.set(number)?,
            "steady" => plan
                .steady
                .as_mut()
                .ok_or_else(not_chosen)?
                .set(&name, number)?,
            "yield" => plan
                .yields
                .as_mut()
                .ok_or_else(not_chosen)?
                .set(&name, number)?,
            _ => plan
                .server
                .as_mut()
                .ok_or_else(not_chosen)?
                .set(&name, number)?,
        }
    }
    Ok(plan)
}

pub(crate) fn bench(args: Vec<String>) -> Result<()> {
    let plan = parse_bench_args(args)?;
    run(cargo().args(["build", "--release", "-p", "probe-user"]))?;
    let sudo = root_prefix("the probe runs")?;
    let reports = root().join("target/bench");
    fs::create_dir_all(&reports)
        .map_err(|error| format!("creating {}: {error}", reports.display()))?;
    if let Some(options) = &plan.server {
        server_bench::server_bench(options, &sudo, &reports)?;
    }
    if let Some(options) = &plan.yields {
        if plan.server.is_some() {
            println!();
        }
        yield_bench(options, &sudo, &reports)?;
    }
    if let Some(options) = &plan.memory {
        memory_bench::memory_bench(options, &sudo, &reports)?;
    }
    if let Some(options) = &plan.steady {
        steady_bench::steady_bench(options, &sudo, &reports)?;
    }
    Ok(())
}

/// The probe binary, through `sudo` when `sudo` is not empty.
pub(crate) fn probe_command(sudo: &[OsString], probe: &Path) -> Command {
    match sudo.split_first() {
        Some((program, prefix)) => {
            let mut command = Command::new(program);
            command.args(prefix).arg(probe);
            command
        }
        None => Command::new(probe),
    }
}

// ---------------------------------------------------------------------------------------------
// The yield-only workload

/// The demo's last word: `bench: {tasks} tasks, {polls} polls in {secs} s`.
#[derive(Debug, PartialEq)]
struct BenchLine {
    tasks: u64,
    polls: u64,
    secs: f64,
    /// CPU the command and everything it started used (0 until measured).
    cpu_ns: u64,
}

fn parse_bench_line(stdout: &str) -> Option<BenchLine> {
    stdout.lines().rev().find_map(|line| {
        let rest = line.trim().strip_prefix("bench: ")?;
        let (tasks, rest) = rest.split_once(" tasks, ")?;
        let (polls, rest) = rest.split_once(" polls in ")?;
        let secs = rest.strip_suffix(" s")?;
        Some(BenchLine {
            tasks: tasks.trim().parse().ok()?,
            polls: polls.trim().parse().ok()?,
            secs: secs.trim().parse().ok()?,
            cpu_ns: 0,
        })
    })
}

/// The figures the probe's JSON report gives in its `summary` object; `None` where it has none.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Summary {
    pub events: Option<u64>,
    pub dropped: Option<u64>,
    pub duration_ns: Option<u64>,
    /// What one hit of an emulated uprobe costs here, as the probe calibrated it.
    pub bare_hit_ns: Option<u64>,
    /// The share of the run the per-poll probes were attached (1 without a budget).
    pub coverage: Option<f64>,
    /// The probe's own estimate of its cost, in percent of the target's CPU.
    pub estimate_percent: Option<f64>,
}

impl Summary {
    pub(crate) fn from_report(text: &str) -> Summary {
        let Ok(report) = serde_json::from_str::<serde_json::Value>(text) else {
            return Summary::default();
        };
        let field = |name: &str| report["summary"][name].as_u64();
        Summary {
            events: field("events"),
            dropped: field("dropped"),
            duration_ns: field("duration_ns"),
            bare_hit_ns: report["summary"]["overhead"]["prices"]["emulated_ns"].as_u64(),
            coverage: report["summary"]["overhead"]["coverage"].as_f64(),
            estimate_percent: report["summary"]["overhead"]["share_percent"].as_f64(),
        }
    }

    fn events_per_second(&self) -> Option<f64> {
        match (self.events, self.duration_ns) {
            (Some(events), Some(ns)) if ns > 0 => Some(events as f64 / (ns as f64 / 1e9)),
            _ => None,
        }
    }
}

/// What a yield-workload run needs.
struct YieldBench<'a> {
    options: &'a YieldOptions,
    demo: PathBuf,
    probe: PathBuf,
    reports: &'a Path,
    sudo: &'a [OsString],
}

/// The medians and totals over the runs.
#[derive(Default)]
struct YieldTotals {
    ratios: Vec<f64>,
    recorded_ratios: Vec<f64>,
    rates: Vec<f64>,
    sizes: Vec<f64>,
    dropped: Option<u64>,
    workload: Option<(u64, u64)>,
    /// The probe's CPU per poll (probed run less unprobed, over the polls), in ns.
    per_poll_ns: Vec<f64>,
    /// The same for `--floor`: the probe's sites with programs that only count.
    floor_per_poll_ns: Vec<f64>,
    bare_hit_ns: Vec<f64>,
}

fn yield_bench(options: &YieldOptions, sudo: &[OsString], reports: &Path) -> Result<()> {
    run(cargo().args(["build", "--release", "-p", "inspect-demo"]))?;
    let root = root();
    let bench = YieldBench {
        options,
        demo: root.join("target/release/inspect-demo"),
        probe: root.join("target/release/async-inspect"),
        reports,
        sudo,
    };
    let demo_command = format!("inspect-demo bench {}", options.demo_args.join(" "));
    println!("## yield-only workload\n");
    println!(
        "{}, {} run(s): unprobed, probed, probed with --record, then with --floor",
        demo_command.trim_end(),
        options.runs
    );
    println!(
        "{:>3}  {:>10}  {:>10}  {:>8}  {:>12}  {:>12}  {:>10}  {:>10}  {:>8}  {:>8}",
        "run",
        "unprobed s",
        "probed s",
        "slowdown",
        "events",
        "events/s",
        "dropped",
        "recorded s",
        "slowdown",
        "B/event"
    );
    let mut totals = YieldTotals {
        dropped: Some(0),
        ..YieldTotals::default()
    };
    for run_number in 1..=options.runs {
        bench.one_run(run_number, &mut totals)?;
    }
    totals.print();
    Ok(())
}

/// How a yield-workload run is probed.
#[derive(Clone, Copy)]
enum Probed {
    /// The probe's events, as a user runs it.
    Events,
    /// The same, written to a recording (`--record`).
    Recorded,
    /// `--floor`: the same probe sites with programs that only count, what the bare uprobe
    /// mechanism costs on this workload.
    Floor,
}

impl YieldBench<'_> {
    fn one_run(&self, run_number: u32, totals: &mut YieldTotals) -> Result<()> {
        let unprobed = measure(
            Command::new(&self.demo)
                .arg("bench")
                .args(&self.options.demo_args),
        )?;
        let (probed, summary, _) = self.probed_run(&format!("run-{run_number}"), Probed::Events)?;
        let (recorded, recorded_summary, size) =
            self.probed_run(&format!("run-{run_number}-recorded"), Probed::Recorded)?;
        let (floor, _, _) = self.probed_run(&format!("run-{run_number}-floor"), Probed::Floor)?;

        for (what, line) in [
            ("probed", &probed),
            ("recorded", &recorded),
            ("floor", &floor),
        ] {
            if line.polls != unprobed.polls {
                eprintln!(
                    "xtask: run {run_number}: {} polls unprobed but {} {what}",
                    unprobed.polls, line.polls
                );
            }
        }
        // The demo prints milliseconds: a workload that short has no ratio.
        let ratio_of = |line: &BenchLine| (unprobed.secs > 0.0).then(|| line.secs / unprobed.secs);
        let (ratio, recorded_ratio) = (ratio_of(&probed), ratio_of(&recorded));
        totals.ratios.extend(ratio);
        totals.recorded_ratios.extend(recorded_ratio);
        let per_event = size
            .zip(recorded_summary.events)
            .filter(|&(_, events)| events > 0)
            .map(|(size, events)| size as f64 / events as f64);
        totals.sizes.extend(per_event);
        let rate = summary.events_per_second();
        totals.rates.extend(rate);
        totals.dropped = totals
            .dropped
            .zip(summary.dropped)
            .map(|(total, dropped)| total + dropped);
        println!(
            "{run_number:>3}  {:>10.3}  {:>10.3}  {:>8}  {:>12}  {:>12}  {:>10}  {:>10.3}  {:>8}  {:>8}",
            unprobed.secs,
            probed.secs,
            or_na(ratio.map(|ratio| format!("{ratio:.2}x"))),
            or_na(summary.events),
            or_na(rate.map(|rate| rate.round() as u64)),
            or_na(summary.dropped),
            recorded.secs,
            or_na(recorded_ratio.map(|ratio| format!("{ratio:.2}x"))),
            or_na(per_event.map(|bytes| format!("{bytes:.1}"))),
        );
        totals.workload = Some((unprobed.tasks, unprobed.polls));
        let per_poll = |line: &BenchLine| {
            (unprobed.polls > 0 && line.cpu_ns > 0)
                .then(|| line.cpu_ns.saturating_sub(unprobed.cpu_ns) as f64 / unprobed.polls as f64)
        };
        totals.per_poll_ns.extend(per_poll(&probed));
        totals.floor_per_poll_ns.extend(per_poll(&floor));
        totals
            .bare_hit_ns
            .extend(summary.bare_hit_ns.map(|ns| ns as f64));
        Ok(())
    }

    /// The workload launched under the probe: its line, the probe's summary, the recording's size.
    fn probed_run(&self, tag: &str, how: Probed) -> Result<(BenchLine, Summary, Option<u64>)> {
        let report = self.reports.join(format!("{tag}.json"));
        let recording = self.reports.join(format!("{tag}.airec"));
        let _ = fs::remove_file(&report);
        let _ = fs::remove_file(&recording);
        let mut command = probe_command(self.sudo, &self.probe);
        command.arg("probe").arg("--json").arg(&report);
        match how {
            Probed::Events => {}
            Probed::Recorded => {
                command.arg("--record").arg(&recording);
            }
            Probed::Floor => {
                command.arg("--floor");
            }
        }
        command
            .arg("--")
            .arg(&self.demo)
            .arg("bench")
            .args(&self.options.demo_args);
        let line = measure(&mut command)?;
        let summary = match fs::read_to_string(&report) {
            Ok(text) => Summary::from_report(&text),
            Err(error) => {
                eprintln!("xtask: no report at {}: {error}", report.display());
                Summary::default()
            }
        };
        let size = fs::metadata(&recording).ok().map(|meta| meta.len());
        let _ = fs::remove_file(&report);
        let _ = fs::remove_file(&recording);
        Ok((line, summary, size))
    }
}

impl YieldTotals {
    fn print(mut self) {
        if let Some((tasks, polls)) = self.workload {
            println!("workload per run: {tasks} tasks, {polls} polls");
        }
        println!(
            "median slowdown: {}; with --record: {}",
            or_na(median(&mut self.ratios).map(|ratio| format!("{ratio:.2}x"))),
            or_na(median(&mut self.recorded_ratios).map(|ratio| format!("{ratio:.2}x")))
        );
        println!(
            "median events/s absorbed: {}",
            or_na(median(&mut self.rates).map(|rate| rate.round() as u64))
        );
        println!(
            "median recording size: {} bytes per event",
            or_na(median(&mut self.sizes).map(|bytes| format!("{bytes:.1}")))
        );
        println!("events dropped, all runs: {}", or_na(self.dropped));
        let bare = median(&mut self.bare_hit_ns);
        println!(
            "one bare emulated uprobe hit here: {} ns",
            or_na(bare.map(|ns| ns.round() as u64))
        );
        for (what, values) in [
            (
                "probe CPU per poll (target + collector, probed less unprobed)",
                &mut self.per_poll_ns,
            ),
            (
                "floor CPU per poll (--floor: the same sites, programs that only count)",
                &mut self.floor_per_poll_ns,
            ),
        ] {
            let per_poll = median(values);
            println!(
                "{what}: {} ns, {} bare hits",
                or_na(per_poll.map(|ns| ns.round() as u64)),
                or_na(
                    per_poll
                        .zip(bare)
                        .map(|(poll, hit)| format!("{:.1}", poll / hit))
                )
            );
        }
    }
}

/// Runs a bench command and reads the demo's `bench:` line from its standard output.
fn measure(command: &mut Command) -> Result<BenchLine> {
    // The CPU of reaped children, grandchildren included: the demo, and the probe with it.
    let children = || crate::server_bench::proc::children_ticks().unwrap_or(0);
    let before = children();
    let Output {
        status,
        stdout,
        stderr,
    } = command
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("cannot run {}: {error}", describe(command)))?;
    let stdout = String::from_utf8_lossy(&stdout);
    let tick_ns = 1_000_000_000 / crate::server_bench::sys::clock_ticks_per_second();
    match parse_bench_line(&stdout) {
        Some(line) if status.success() => Ok(BenchLine {
            cpu_ns: children().saturating_sub(before) * tick_ns,
            ..line
        }),
        _ => Err(format!(
            "{} ({status}) printed no `bench: N tasks, N polls in S s` line\n--- stdout\n{stdout}--- stderr\n{}",
            describe(command),
            String::from_utf8_lossy(&stderr)
        )),
    }
}

pub(crate) fn or_na(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "n/a".to_string(), |value| value.to_string())
}

pub(crate) fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn reads_the_bench_line() {
        let stdout = "something else\nbench: 64 tasks, 1280064 polls in 0.412 s\n";
        assert_eq!(
            parse_bench_line(stdout),
            Some(BenchLine {
                tasks: 64,
                polls: 1_280_064,
                secs: 0.412,
                cpu_ns: 0,
            })
        );
        assert_eq!(parse_bench_line("bench: many tasks"), None);
    }

    #[test]
    fn reads_the_summary() {
        let report = r#"{"summary": {"events": 2000, "dropped": 3, "duration_ns": 500000000, "x": [1, {"y": null}],
                                     "overhead": {"prices": {"emulated_ns": 814}, "coverage": 0.25, "share_percent": 1.5}},
                         "tasks": [{"id": 1, "name": "a \"b\" \u00e9", "state": "idle", "ended_ns": null}]}"#;
        let summary = Summary::from_report(report);
        assert_eq!(
            summary,
            Summary {
                events: Some(2000),
                dropped: Some(3),
                duration_ns: Some(500_000_000),
                bare_hit_ns: Some(814),
                coverage: Some(0.25),
                estimate_percent: Some(1.5),
            }
        );
        assert_eq!(summary.events_per_second(), Some(4000.0));
        let partial = Summary::from_report(r#"{"summary": {"events": 5}}"#);
        assert_eq!(partial.dropped, None);
        assert_eq!(partial.events_per_second(), None);
        assert_eq!(Summary::from_report("not json"), Summary::default());
    }

    #[test]
    fn yield_arguments() {
        let plan = parse_bench_args(strings("yield --runs 5 --tasks=8")).unwrap();
        assert_eq!(plan.server, None);
        let options = plan.yields.unwrap();
        assert_eq!(options.runs, 5);
        assert_eq!(options.demo_args, ["--tasks", "8"]);
        assert!(parse_bench_args(strings("yield --runs 0")).is_err());
        assert!(parse_bench_args(strings("yield --what")).is_err());
        assert!(parse_bench_args(strings("yield --rounds 2")).is_err());
    }

    #[test]
    fn server_arguments() {
        let plan = parse_bench_args(strings("server --rounds 2 --seconds=3 --fanout 4")).unwrap();
        assert_eq!(plan.yields, None);
        let options = plan.server.unwrap();
        assert_eq!((options.rounds, options.seconds), (2, 3));
        assert_eq!((options.clients, options.fanout), (20, 4));
        assert!(parse_bench_args(strings("server --runs 2")).is_err());
        assert!(parse_bench_args(strings("server --clients 0")).is_err());
        assert!(parse_bench_args(strings("server --seconds")).is_err());
        assert!(parse_bench_args(strings("server --seconds x")).is_err());
        assert!(parse_bench_args(strings("server --variants plain,probe")).is_ok());
        assert!(parse_bench_args(strings("yield --variants plain")).is_err());
    }

    #[test]
    fn steady_arguments() {
        let plan =
            parse_bench_args(strings("steady --pairs 2 --control --phase-seconds 8")).unwrap();
        assert_eq!((plan.server, plan.yields), (None, None));
        let options = plan.steady.unwrap();
        assert_eq!((options.pairs, options.phase_seconds), (2, 8));
        assert!(options.control);
        assert!(
            !parse_bench_args(strings("steady"))
                .unwrap()
                .steady
                .unwrap()
                .control
        );
        assert!(parse_bench_args(strings("server --control")).is_err());
        assert!(parse_bench_args(strings("steady --pairs 0")).is_err());
        assert!(parse_bench_args(strings("--pairs 2")).is_err());
    }

    #[test]
    fn both_workloads() {
        let plan = parse_bench_args(Vec::new()).unwrap();
        assert_eq!(plan.server, Some(ServerOptions::default()));
        assert_eq!(plan.yields, Some(YieldOptions::default()));
        let plan = parse_bench_args(strings("--runs 2 --rounds 4")).unwrap();
        assert_eq!(plan.yields.unwrap().runs, 2);
        assert_eq!(plan.server.unwrap().rounds, 4);
        assert!(parse_bench_args(strings("both")).is_err());
        assert_eq!(plan_memory(""), None);
    }

    fn plan_memory(args: &str) -> Option<MemoryOptions> {
        parse_bench_args(strings(args)).unwrap().memory
    }

    #[test]
    fn memory_arguments() {
        assert_eq!(plan_memory("memory"), Some(MemoryOptions::default()));
        assert_eq!(
            plan_memory("memory --crowd 5"),
            Some(MemoryOptions { crowd: 5 })
        );
        assert!(parse_bench_args(strings("memory --crowd 0")).is_err());
        assert!(parse_bench_args(strings("memory --runs 2")).is_err());
        assert!(parse_bench_args(strings("yield --crowd 2")).is_err());
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }
}
