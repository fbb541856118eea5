//! `cargo xtask bench server`: what a request/response tokio server pays per request to be
//! watched. `inspect-server` (demo/src/bin/server.rs) answers 64-byte requests from
//! `inspect-load`'s closed-loop loopback clients; each round runs every variant once, in an order
//! that rotates each round:
//!
//! - `plain`: no probe;
//! - `probe`: `async-inspect probe --pid PID` with its defaults (an overhead budget);
//! - `exact`: the same with `--exact` (every poll, no budget);
//! - `floor`: the same with `--floor` (the same probe sites, with programs that only count: the
//!   cost of the bare uprobe mechanism);
//! - `console`: the same server built with console-subscriber (demo-console/), no probe.
//!
//! A variant's run: start the server, read its port, attach the probe if the variant has one and
//! wait until it is attached, warm up for a second under load, then run the load for the measured
//! window, reading the CPU time (utime + stime of /proc/PID/stat) of the server and of the probe
//! (the collector) before and after it. The load generator's CPU comes from this process's
//! `cutime + cstime`, which grows by a child's CPU when it is reaped: nothing else is reaped
//! inside the window. Then the probe gets SIGINT and writes its JSON report, and the server is
//! killed. The medians over rounds go into a Markdown table.

use std::{
    collections::HashMap,
    ffi::OsString,
    fs::{self, File},
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use crate::bench::{Summary, median, or_na, probe_command};
use crate::{Result, cargo, describe, root, run};

/// The options of the server workload.
#[derive(Debug, PartialEq)]
pub(crate) struct ServerOptions {
    pub rounds: u32,
    /// The measured window of each run.
    pub seconds: u32,
    pub clients: u32,
    /// Tasks the server spawns and joins per request.
    pub fanout: u32,
    /// The variants to run, in this order (all by default).
    variants: Vec<Variant>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            rounds: 5,
            seconds: 5,
            clients: 20,
            fanout: 0,
            variants: VARIANTS.to_vec(),
        }
    }
}

impl ServerOptions {
    pub(crate) fn set(&mut self, name: &str, value: u32) -> Result<()> {
        let at_least_one = |value: u32| {
            if value == 0 {
                Err(format!("bench: {name} must be at least 1"))
            } else {
                Ok(value)
            }
        };
        match name {
            "--rounds" => self.rounds = at_least_one(value)?,
            "--seconds" => self.seconds = at_least_one(value)?,
            "--clients" => self.clients = at_least_one(value)?,
            "--fanout" => self.fanout = value,
            _ => {
                return Err(format!(
                    "bench: {name} is not an option of the server workload"
                ));
            }
        }
        Ok(())
    }

    /// `--variants plain,probe`: only these, in this order.
    pub(crate) fn set_variants(&mut self, list: &str) -> Result<()> {
        let named = |name: &str| {
            VARIANTS
                .into_iter()
                .find(|variant| variant.name() == name)
                .ok_or_else(|| {
                    let known: Vec<&str> = VARIANTS.iter().map(|variant| variant.name()).collect();
                    format!(
                        "bench: --variants: no variant is called '{name}' (known: {})",
                        known.join(", ")
                    )
                })
        };
        // Never empty: splitting "" gives one empty name, which no variant has.
        self.variants = list.split(',').map(named).collect::<Result<_>>()?;
        Ok(())
    }

    /// The command that runs this workload with these options.
    fn command_line(&self) -> String {
        let mut line = format!(
            "scripts/bench.sh server --rounds {} --seconds {} --clients {} --fanout {}",
            self.rounds, self.seconds, self.clients, self.fanout
        );
        if self.variants != VARIANTS {
            let names: Vec<&str> = self.variants.iter().map(|variant| variant.name()).collect();
            line += &format!(" --variants {}", names.join(","));
        }
        line
    }
}

const WARM_UP: Duration = Duration::from_secs(1);
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// What the probe's process is called (its comm), to find it under sudo.
const PROBE_COMM: &str = "async-inspect";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Variant {
    Plain,
    Probe,
    Exact,
    Floor,
    Console,
}

const VARIANTS: [Variant; 5] = [
    Variant::Plain,
    Variant::Probe,
    Variant::Exact,
    Variant::Floor,
    Variant::Console,
];

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Plain => "plain",
            Variant::Probe => "probe",
            Variant::Exact => "exact",
            Variant::Floor => "floor",
            Variant::Console => "console",
        }
    }

    /// What the variant is, for the reader of the figures.
    fn description(self) -> &'static str {
        match self {
            Variant::Plain => "plain (no probe)",
            Variant::Probe => "probe (async-inspect probe --pid, its defaults: an overhead budget)",
            Variant::Exact => "exact (--exact: every poll, no budget)",
            Variant::Floor => "floor (--floor: the same probe sites, programs that only count)",
            Variant::Console => "console (the server built with console-subscriber, no probe)",
        }
    }

    /// The probe's options beyond the common ones; `None`: the variant runs no probe.
    fn probe_flags(self) -> Option<&'static [&'static str]> {
        match self {
            Variant::Plain | Variant::Console => None,
            Variant::Probe => Some(&[]),
            Variant::Exact => Some(&["--exact"]),
            Variant::Floor => Some(&["--floor"]),
        }
    }
}

/// `variants` in the order round `round` (from 0) runs them: rotated left by `round`.
fn round_order(variants: &[Variant], round: usize) -> Vec<Variant> {
    let mut order = variants.to_vec();
    if !order.is_empty() {
        order.rotate_left(round % variants.len());
    }
    order
}

pub(crate) struct Binaries {
    pub server: PathBuf,
    pub load: PathBuf,
    pub probe: PathBuf,
    /// `None` when it did not build (said why) or was not asked for.
    console: Option<PathBuf>,
}

/// Builds what the workload runs, the console-subscriber server when `console`. The probe is
/// built by `bench` before.
pub(crate) fn build(console: bool) -> Result<Binaries> {
    run(cargo()
        .args([
            "build",
            "--profile",
            "release-debuginfo",
            "-p",
            "inspect-demo",
        ])
        .args(["--bin", "inspect-server", "--bin", "inspect-load"]))?;
    let root = root();
    Ok(Binaries {
        server: root.join("target/release-debuginfo/inspect-server"),
        load: root.join("target/release-debuginfo/inspect-load"),
        probe: root.join("target/release/async-inspect"),
        console: console
            .then(|| {
                build_console()
                    .map_err(|message| {
                        eprintln!("xtask: note: the console variant is left out: {message}")
                    })
                    .ok()
            })
            .flatten(),
    })
}

/// demo-console/, a workspace of its own, built into target/console with `--cfg tokio_unstable`
/// (which tokio's instrumentation needs), so that the main workspace's build is unaffected.
fn build_console() -> Result<PathBuf> {
    let root = root();
    let target_dir = root.join("target/console");
    run(cargo()
        .current_dir(root.join("demo-console"))
        .env("RUSTFLAGS", "--cfg tokio_unstable")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .args(["build", "--release", "--target-dir"])
        .arg(&target_dir))?;
    Ok(target_dir.join("release/inspect-server-console"))
}

/// Those of `wanted` this build can run: each probe flag must be known to the probe.
fn available_variants(wanted: &[Variant], binaries: &Binaries) -> Vec<Variant> {
    wanted
        .iter()
        .copied()
        .filter(|variant| match (variant, variant.probe_flags()) {
            (Variant::Console, _) => binaries.console.is_some(),
            (_, Some([flag])) => {
                let known = probe_knows(&binaries.probe, flag);
                if !known {
                    eprintln!(
                        "xtask: note: the {} variant is left out: this async-inspect has no {flag}",
                        variant.name()
                    );
                }
                known
            }
            _ => true,
        })
        .collect()
}

/// Whether `async-inspect probe` accepts `flag` (hidden flags too): clap rejects an unknown
/// argument before it prints the help.
fn probe_knows(probe: &Path, flag: &str) -> bool {
    Command::new(probe)
        .args(["probe", flag, "--help"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// What every run needs.
struct Bench<'a> {
    options: &'a ServerOptions,
    binaries: Binaries,
    sudo: &'a [OsString],
    reports: &'a Path,
    ticks_per_second: u64,
}

/// One variant's run: the load's line and the CPU ticks spent over its window.
struct Round {
    load: LoadLine,
    server_ticks: u64,
    collector_ticks: Option<u64>,
    load_ticks: u64,
    summary: Option<Summary>,
}

pub(crate) fn server_bench(
    options: &ServerOptions,
    sudo: &[OsString],
    reports: &Path,
) -> Result<()> {
    let binaries = build(options.variants.contains(&Variant::Console))?;
    let variants = available_variants(&options.variants, &binaries);
    let bench = Bench {
        options,
        binaries,
        sudo,
        reports,
        ticks_per_second: sys::clock_ticks_per_second(),
    };
    bench.print_intro(&variants);
    let mut rounds: Vec<Vec<Round>> = variants.iter().map(|_| Vec::new()).collect();
    for round in 0..options.rounds as usize {
        for variant in round_order(&variants, round) {
            let result = bench.run_variant(variant)?;
            println!("{}", bench.round_line(round + 1, variant, &result));
            let slot = variants.iter().position(|&known| known == variant);
            rounds[slot.expect("the variant is in the list")].push(result);
        }
    }
    bench.print_table(&variants, &rounds);
    Ok(())
}

impl Bench<'_> {
    fn print_intro(&self, variants: &[Variant]) {
        let options = self.options;
        println!("## server workload\n");
        println!(
            "inspect-server (release-debuginfo, --fanout {}) under closed-loop load from inspect-load: \
             {} clients over 127.0.0.1, 64-byte requests and replies.",
            options.fanout, options.clients
        );
        println!(
            "{} round(s); each runs every variant once, in an order that rotates each round: start the \
             server, attach, warm up for {} s under load, measure {} s.",
            options.rounds,
            WARM_UP.as_secs(),
            options.seconds
        );
        let names: Vec<&str> = variants
            .iter()
            .map(|variant| variant.description())
            .collect();
        println!("variants: {}.", names.join("; "));
        println!(
            "the probe counts as attached once it holds a bpf_link file descriptor, plus 0.5 s; \
             it stops on SIGINT after the window."
        );
        println!("machine: {}\n", machine());
    }

    fn round_line(&self, round: usize, variant: Variant, result: &Round) -> String {
        let us = |ticks: u64| self.us_per_request(ticks, result.load.requests);
        format!(
            "round {round}/{}  {:<7}  {:>8.0} req/s  p99 {:>7.1} us  CPU per request: server {}, collector {}, load {} us",
            self.options.rounds,
            variant.name(),
            result.load.throughput(),
            result.load.p99_us,
            or_na(us(result.server_ticks).map(|us| format!("{us:.2}"))),
            result
                .collector_ticks
                .and_then(us)
                .map_or_else(|| "-".into(), |us| format!("{us:.2}")),
            or_na(us(result.load_ticks).map(|us| format!("{us:.2}"))),
        ) + &result
            .summary
            .as_ref()
            .and_then(|summary| Some((summary.coverage?, summary.estimate_percent?)))
            .map_or_else(String::new, |(coverage, estimate)| {
                format!("  coverage {coverage:.2}, estimate {estimate:.1} %")
            })
    }

    fn us_per_request(&self, ticks: u64, requests: u64) -> Option<f64> {
        us_per_request(ticks, self.ticks_per_second, requests)
    }

    /// One variant, start to end.
    fn run_variant(&self, variant: Variant) -> Result<Round> {
        let binary = match variant {
            Variant::Console => self.binaries.console.as_ref().expect("available"),
            _ => &self.binaries.server,
        };
        let server = Server::start(binary, self.options.fanout)?;
        let mut probe = match variant.probe_flags() {
            Some(flags) => Some(Probe::start(
                self.sudo,
                &self.binaries.probe,
                &self.reports.join(format!("server-{}", variant.name())),
                flags,
                server.pid(),
            )?),
            None => None,
        };
        if let Some(probe) = &mut probe {
            probe.wait_attached()?;
        }
        self.load(server.port, WARM_UP)?;
        let before = Sample::take(&server, probe.as_mut())?;
        let load = self.load(
            server.port,
            Duration::from_secs(self.options.seconds.into()),
        )?;
        let after = Sample::take(&server, probe.as_mut())?;
        let summary = match &mut probe {
            Some(probe) => Some(probe.stop()?),
            None => None,
        };
        drop(server);
        Ok(Round {
            load,
            server_ticks: after.server.saturating_sub(before.server),
            collector_ticks: after
                .collector
                .zip(before.collector)
                .map(|(a, b)| a.saturating_sub(b)),
            load_ticks: after.children.saturating_sub(before.children),
            summary,
        })
    }

    /// Runs inspect-load against the server for `duration` and reads its line.
    fn load(&self, port: u16, duration: Duration) -> Result<LoadLine> {
        let mut command = load_command(&self.binaries, port, self.options.clients, duration);
        let output = command
            .stdin(Stdio::null())
            .output()
            .map_err(|error| format!("cannot run {}: {error}", describe(&command)))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        match parse_load_line(&stdout) {
            Some(line) if output.status.success() => Ok(line),
            _ => Err(format!(
                "{} ({}) printed no `load: requests=N ...` line\n--- stdout\n{stdout}--- stderr\n{}",
                describe(&command),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )),
        }
    }
}

impl Bench<'_> {
    /// The medians of each variant in a Markdown table, then the command that made it.
    fn print_table(&self, variants: &[Variant], rounds: &[Vec<Round>]) {
        let plain = variants
            .iter()
            .position(|&variant| variant == Variant::Plain);
        let rows: Vec<Vec<String>> = variants
            .iter()
            .zip(rounds)
            .map(|(variant, results)| self.row(*variant, results, plain.map(|at| &rounds[at][..])))
            .collect();
        println!(
            "\nMedians over {} round(s). CPU: utime + stime from /proc/PID/stat over the measured {} s, \
             per request answered (clock tick {} ms); total = server + collector; \"vs plain\": the median \
             over rounds of total CPU per request over plain's in the same round; load: the load \
             generator's own CPU. events, dropped, coverage (the share of the run the per-poll probes \
             were attached) and estimate (the probe's own estimate of its cost, in percent of the \
             target's CPU): from the probe's JSON report (attach to stop, warm-up included).\n",
            self.options.rounds,
            self.options.seconds,
            1000 / self.ticks_per_second.max(1),
        );
        let header = [
            "variant",
            "requests/s",
            "p50 µs",
            "p99 µs",
            "server µs/req",
            "collector µs/req",
            "total µs/req",
            "vs plain",
            "load µs/req",
            "events",
            "dropped",
            "coverage",
            "estimate",
        ];
        print!("{}", markdown_table(&header, &rows));
        let of = |wanted: Variant| {
            let at = variants.iter().position(|&variant| variant == wanted)?;
            Some(&rounds[at][..])
        };
        if let Some(ratio) = of(Variant::Exact)
            .zip(of(Variant::Floor))
            .and_then(|(exact, floor)| self.median_ratio(exact, floor))
        {
            println!(
                "\nexact vs floor: {ratio:.2}x (the median over rounds of exact's total CPU per \
                 request over floor's in the same round: what following every poll adds to the \
                 bare uprobes)"
            );
        }
        println!("\ncommand: {}", self.options.command_line());
    }

    /// The median over rounds of `results`' total CPU per request over `base`'s in the same
    /// round: steadier than a ratio of medians on a noisy host.
    fn median_ratio(&self, results: &[Round], base: &[Round]) -> Option<f64> {
        let mut ratios: Vec<f64> = results
            .iter()
            .zip(base)
            .filter_map(|(round, base)| Some(self.total_us(round)? / self.total_us(base)?))
            .filter(|ratio| ratio.is_finite())
            .collect();
        median(&mut ratios)
    }

    /// A variant's medians, formatted for the table.
    fn row(&self, variant: Variant, results: &[Round], plain: Option<&[Round]>) -> Vec<String> {
        let med = |value: &dyn Fn(&Round) -> Option<f64>| {
            let mut values: Vec<f64> = results.iter().filter_map(value).collect();
            median(&mut values)
        };
        let fixed = |value: Option<f64>, decimals: usize| match value {
            Some(value) => format!("{value:.decimals$}"),
            None => "n/a".into(),
        };
        let has_probe = variant.probe_flags().is_some();
        let dash_unless = |present: bool, text: String| if present { text } else { "-".into() };
        let total = |round: &Round| self.total_us(round);
        let vs_plain = plain.and_then(|plain| self.median_ratio(results, plain));
        let summary = |field: fn(&Summary) -> Option<u64>| {
            med(&|round| round.summary.as_ref().and_then(field).map(|n| n as f64))
        };
        vec![
            variant.name().to_string(),
            fixed(med(&|round| Some(round.load.throughput())), 0),
            fixed(med(&|round| Some(round.load.p50_us)), 1),
            fixed(med(&|round| Some(round.load.p99_us)), 1),
            fixed(
                med(&|round| self.us_per_request(round.server_ticks, round.load.requests)),
                2,
            ),
            dash_unless(
                has_probe,
                fixed(
                    med(&|round| self.us_per_request(round.collector_ticks?, round.load.requests)),
                    2,
                ),
            ),
            fixed(med(&total), 2),
            fixed(vs_plain, 2) + if vs_plain.is_some() { "x" } else { "" },
            fixed(
                med(&|round| self.us_per_request(round.load_ticks, round.load.requests)),
                2,
            ),
            dash_unless(has_probe, fixed(summary(|summary| summary.events), 0)),
            dash_unless(has_probe, fixed(summary(|summary| summary.dropped), 0)),
            dash_unless(
                has_probe,
                fixed(med(&|round| round.summary.as_ref()?.coverage), 2),
            ),
            dash_unless(
                has_probe,
                fixed(med(&|round| round.summary.as_ref()?.estimate_percent), 1) + " %",
            ),
        ]
    }

    /// Server plus collector CPU per request.
    fn total_us(&self, round: &Round) -> Option<f64> {
        let ticks = round.server_ticks + round.collector_ticks.unwrap_or(0);
        self.us_per_request(ticks, round.load.requests)
    }
}

/// CPU microseconds per request, from clock ticks.
fn us_per_request(ticks: u64, ticks_per_second: u64, requests: u64) -> Option<f64> {
    (requests > 0 && ticks_per_second > 0)
        .then(|| ticks as f64 * 1e6 / ticks_per_second as f64 / requests as f64)
}

/// inspect-load against the server on `port` for `duration`, from `clients` connections.
pub(crate) fn load_command(
    binaries: &Binaries,
    port: u16,
    clients: u32,
    duration: Duration,
) -> Command {
    let mut command = Command::new(&binaries.load);
    command
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .args(["--clients", &clients.to_string()])
        .args(["--duration", &format!("{}ms", duration.as_millis())])
        // A cap far above what loopback can do: the duration is what ends the run.
        .args([
            "--max-requests",
            &(duration.as_secs().max(1) * 10_000_000).to_string(),
        ]);
    command
}

/// A Markdown table: the first column left-aligned, the others right-aligned.
pub(crate) fn markdown_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
    let header: Vec<String> = header.iter().map(|cell| cell.to_string()).collect();
    let rule: Vec<String> = (0..header.len())
        .map(|column| if column == 0 { "---" } else { "---:" }.to_string())
        .collect();
    let mut table = line(&header) + &line(&rule);
    for row in rows {
        table += &line(row);
    }
    table
}

/// CPU count, kernel and CPU model, for the reader of the figures.
fn machine() -> String {
    let cpus = thread::available_parallelism().map_or(0, |cpus| cpus.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name")?.split_once(':'))
        .map_or("", |(_, model)| model.trim());
    format!("{cpus} CPUs, Linux {}, {model}", kernel.trim())
}

// ---------------------------------------------------------------------------------------------
// The processes

/// The server; killed when dropped.
pub(crate) struct Server {
    child: Child,
    pub port: u16,
}

impl Server {
    /// Starts `binary` on a free port and waits for its `listening on 127.0.0.1:PORT` line.
    pub(crate) fn start(binary: &Path, fanout: u32) -> Result<Server> {
        let mut command = Command::new(binary);
        command
            .args(["--port", "0", "--fanout", &fanout.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|error| format!("cannot run {}: {error}", describe(&command)))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut server = Server { child, port: 0 };
        let (ports, port) = mpsc::channel();
        // Reads on until the server ends, so that it never blocks on a full pipe.
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = parse_listening(&line) {
                    let _ = ports.send(port);
                }
            }
        });
        server.port = port.recv_timeout(LISTEN_TIMEOUT).map_err(|_| {
            format!(
                "{} printed no `listening on 127.0.0.1:PORT` line within {} s",
                describe(&command),
                LISTEN_TIMEOUT.as_secs()
            )
        })?;
        Ok(server)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The probe attached to the server; interrupted, then killed, when dropped before `stop`.
pub(crate) struct Probe<'a> {
    sudo: &'a [OsString],
    /// The process started: the probe itself, or sudo.
    child: Child,
    /// The probe's own process, once found.
    pid: Option<u32>,
    json: PathBuf,
    log: PathBuf,
    description: String,
    stopped: bool,
}

impl<'a> Probe<'a> {
    /// Runs `probe` on `target` with `flags`, its report and output in `files` with the
    /// extensions json, txt and log.
    pub(crate) fn start(
        sudo: &'a [OsString],
        probe: &Path,
        files: &Path,
        flags: &[&str],
        target: u32,
    ) -> Result<Probe<'a>> {
        let path = |extension: &str| files.with_extension(extension);
        let (json, log) = (path("json"), path("log"));
        let _ = fs::remove_file(&json);
        let create = |path: &Path| {
            File::create(path).map_err(|error| format!("creating {}: {error}", path.display()))
        };
        let mut command = probe_command(sudo, probe);
        command
            .args([
                "probe",
                "--pid",
                &target.to_string(),
                "--no-tui",
                "--quiet",
                "--json",
            ])
            .arg(&json)
            .args(flags)
            .stdin(Stdio::null())
            .stdout(create(&path("txt"))?)
            .stderr(create(&log)?);
        let description = describe(&command);
        let child = command
            .spawn()
            .map_err(|error| format!("cannot run {description}: {error}"))?;
        Ok(Probe {
            sudo,
            child,
            pid: None,
            json,
            log,
            description,
            stopped: false,
        })
    }

    /// The probe's own process: the child, or under sudo the child's descendant named like it.
    pub(crate) fn collector_pid(&mut self) -> Option<u32> {
        if self.pid.is_none() {
            let child = self.child.id();
            self.pid = if proc::comm(child).as_deref() == Some(PROBE_COMM) {
                Some(child)
            } else {
                proc::descendant_named(child, PROBE_COMM)
            };
        }
        self.pid
    }

    /// Waits until the probe has attached: its stderr says so (not with --quiet), or it holds a
    /// bpf link (or perf event) file descriptor, then half a second more for the rest (the count
    /// itself may come and go: the default attaches some probes in windows). When its file
    /// descriptors cannot be read (not root): 2 s.
    pub(crate) fn wait_attached(&mut self) -> Result<()> {
        let started = Instant::now();
        while started.elapsed() < ATTACH_TIMEOUT {
            if let Some(status) = self.child.try_wait().map_err(|error| error.to_string())? {
                return Err(self.failed(&format!("exited ({status}) before it attached")));
            }
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains("probe points attached") {
                return Ok(());
            }
            let rest = match self.collector_pid().map(proc::probe_links) {
                Some(Err(error)) if error.kind() == std::io::ErrorKind::PermissionDenied => {
                    Some(Duration::from_secs(2))
                }
                Some(Ok(count)) if count > 0 => Some(Duration::from_millis(500)),
                _ => None,
            };
            if let Some(rest) = rest {
                thread::sleep(rest);
                return Ok(());
            }
            thread::sleep(Duration::from_millis(50));
        }
        Err(self.failed(&format!(
            "had not attached after {} s",
            ATTACH_TIMEOUT.as_secs()
        )))
    }

    fn failed(&self, what: &str) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        format!("{} {what}\n--- stderr\n{log}", self.description)
    }

    fn ticks(&mut self) -> Option<u64> {
        proc::cpu_ticks(self.collector_pid()?).ok()
    }

    /// SIGINT, then waits for the probe to write its report and exit; reads the report.
    pub(crate) fn stop(&mut self) -> Result<Summary> {
        self.stopped = true;
        self.interrupt()?;
        match wait_timeout(&mut self.child, STOP_TIMEOUT) {
            Some(status) if status.success() => {}
            Some(status) => eprintln!("xtask: note: {} exited with {status}", self.description),
            None => {
                eprintln!(
                    "xtask: note: {} did not stop within {} s of SIGINT: killed",
                    self.description,
                    STOP_TIMEOUT.as_secs()
                );
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        match fs::read_to_string(&self.json) {
            Ok(text) => Ok(Summary::from_report(&text)),
            Err(error) => {
                eprintln!("xtask: note: no report at {}: {error}", self.json.display());
                Ok(Summary::default())
            }
        }
    }

    /// SIGINT to the started process (sudo passes it on); when that is not allowed, through sudo.
    fn interrupt(&mut self) -> Result<()> {
        match sys::interrupt(self.child.id()) {
            Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => {
                let pid = self.collector_pid().unwrap_or(self.child.id());
                let mut command = probe_command(self.sudo, Path::new("kill"));
                run(command.args(["-INT", &pid.to_string()]))
            }
            Err(error) => Err(format!("SIGINT to {}: {error}", self.description)),
            Ok(()) => Ok(()),
        }
    }
}

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        if !self.stopped && self.interrupt().is_ok() {
            self.stopped = wait_timeout(&mut self.child, Duration::from_secs(5)).is_some();
        }
        if !self.stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `Some(status)` once the child exits, `None` after `timeout`.
fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(_) => return None,
        }
    }
    None
}

/// CPU ticks spent so far by the server, the collector and this process's reaped children.
struct Sample {
    server: u64,
    collector: Option<u64>,
    children: u64,
}

impl Sample {
    fn take(server: &Server, probe: Option<&mut Probe>) -> Result<Sample> {
        let server_ticks = proc::cpu_ticks(server.pid())
            .map_err(|error| format!("reading the server's CPU time: {error}"))?;
        let collector = match probe {
            Some(probe) => Some(probe.ticks().ok_or("cannot read the probe's CPU time")?),
            None => None,
        };
        let children = proc::children_ticks()
            .map_err(|error| format!("reading this process's children's CPU time: {error}"))?;
        Ok(Sample {
            server: server_ticks,
            collector,
            children,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// The server's `listening on 127.0.0.1:PORT` line: its port.
fn parse_listening(line: &str) -> Option<u16> {
    let address = line.trim().strip_prefix("listening on ")?;
    address.strip_prefix("127.0.0.1:")?.parse().ok()
}

/// inspect-load's `load: requests=N seconds=S p50_us=X p99_us=Y`.
#[derive(Debug, PartialEq)]
struct LoadLine {
    requests: u64,
    seconds: f64,
    p50_us: f64,
    p99_us: f64,
}

impl LoadLine {
    fn throughput(&self) -> f64 {
        if self.seconds > 0.0 {
            self.requests as f64 / self.seconds
        } else {
            0.0
        }
    }
}

fn parse_load_line(stdout: &str) -> Option<LoadLine> {
    let line = stdout
        .lines()
        .rev()
        .find_map(|line| line.trim().strip_prefix("load: "))?;
    let fields: HashMap<&str, &str> = line
        .split_whitespace()
        .filter_map(|field| field.split_once('='))
        .collect();
    Some(LoadLine {
        requests: fields.get("requests")?.parse().ok()?,
        seconds: fields.get("seconds")?.parse().ok()?,
        p50_us: fields.get("p50_us")?.parse().ok()?,
        p99_us: fields.get("p99_us")?.parse().ok()?,
    })
}

/// What /proc says about processes.
pub(crate) mod proc {
    use std::{fs, io};

    /// The fields of /proc/PID/stat after the command name (which may hold spaces and
    /// parentheses): the first is field 3, `state`, in proc(5)'s numbering.
    fn fields_after_comm(stat: &str) -> Option<Vec<&str>> {
        let (_, rest) = stat.rsplit_once(')')?;
        Some(rest.split_whitespace().collect())
    }

    /// The sum of fields `first` and `first + 1` (proc(5)'s numbering, from 1).
    pub(super) fn field_pair_sum(stat: &str, first: usize) -> Option<u64> {
        let fields = fields_after_comm(stat)?;
        let field = |number: usize| fields.get(number.checked_sub(3)?)?.parse::<u64>().ok();
        Some(field(first)? + field(first + 1)?)
    }

    pub(super) fn parent(stat: &str) -> Option<u32> {
        fields_after_comm(stat)?.get(1)?.parse().ok()
    }

    fn invalid(pid: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot parse /proc/{pid}/stat"),
        )
    }

    /// utime + stime (fields 14 and 15) of a process, all its threads, in clock ticks.
    pub(super) fn cpu_ticks(pid: u32) -> io::Result<u64> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
        field_pair_sum(&stat, 14).ok_or_else(|| invalid(&pid.to_string()))
    }

    /// cutime + cstime (fields 16 and 17) of this process: the CPU of the children it reaped.
    pub(crate) fn children_ticks() -> io::Result<u64> {
        let stat = fs::read_to_string("/proc/self/stat")?;
        field_pair_sum(&stat, 16).ok_or_else(|| invalid("self"))
    }

    pub(super) fn comm(pid: u32) -> Option<String> {
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        Some(comm.trim_end().to_string())
    }

    /// The first process below `ancestor` whose command name is `name`.
    pub(super) fn descendant_named(ancestor: u32, name: &str) -> Option<u32> {
        let processes: Vec<(u32, u32)> = fs::read_dir("/proc")
            .ok()?
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|pid| {
                let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                Some((pid, parent(&stat)?))
            })
            .collect();
        let mut below = vec![ancestor];
        while let Some(pid) = below.pop() {
            for &(child, _) in processes.iter().filter(|&&(_, parent)| parent == pid) {
                if comm(child).as_deref() == Some(name) {
                    return Some(child);
                }
                below.push(child);
            }
        }
        None
    }

    /// Whether a file descriptor's link (`/proc/PID/fd/N`) is an attached probe.
    pub(super) fn is_probe_link(target: &str) -> bool {
        matches!(target, "anon_inode:bpf_link" | "anon_inode:[perf_event]")
    }

    /// The CPU time of a process's threads, in ns (the first field of each thread's schedstat):
    /// finer than /proc/PID/stat's clock ticks, for slices of a tenth of a second.
    pub(crate) fn threads_cpu_ns(pid: u32) -> io::Result<u64> {
        let mut total = 0;
        for thread in fs::read_dir(format!("/proc/{pid}/task"))? {
            let schedstat = fs::read_to_string(thread?.path().join("schedstat"));
            // A thread that has just exited has no schedstat left: its time is lost.
            let on_cpu = schedstat
                .ok()
                .and_then(|text| text.split_whitespace().next()?.parse::<u64>().ok());
            total += on_cpu.unwrap_or(0);
        }
        Ok(total)
    }

    /// How many attached probes (bpf links, perf events) a process holds open.
    pub(crate) fn probe_links(pid: u32) -> io::Result<usize> {
        let mut count = 0;
        for entry in fs::read_dir(format!("/proc/{pid}/fd"))? {
            let target = fs::read_link(entry?.path()).unwrap_or_default();
            count += usize::from(is_probe_link(&target.to_string_lossy()));
        }
        Ok(count)
    }
}

/// The two libc calls std does not wrap.
pub(crate) mod sys {
    use std::ffi::{c_int, c_long};

    unsafe extern "C" {
        fn sysconf(name: c_int) -> c_long;
        fn kill(pid: c_int, signal: c_int) -> c_int;
    }

    /// Linux's values.
    const SC_CLK_TCK: c_int = 2;
    const SIGINT: c_int = 2;

    /// The unit of /proc/PID/stat's times.
    pub(crate) fn clock_ticks_per_second() -> u64 {
        // SAFETY: sysconf only reads its argument.
        let ticks = unsafe { sysconf(SC_CLK_TCK) };
        u64::try_from(ticks)
            .ok()
            .filter(|&ticks| ticks > 0)
            .unwrap_or(100)
    }

    pub(super) fn interrupt(pid: u32) -> std::io::Result<()> {
        let pid = c_int::try_from(pid).map_err(std::io::Error::other)?;
        // SAFETY: kill only reads its arguments; pid is a child of this process, not yet reaped.
        if unsafe { kill(pid, SIGINT) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_only_the_variants_named() {
        let mut options = ServerOptions::default();
        options.set_variants("probe,plain").unwrap();
        assert_eq!(options.variants, [Variant::Probe, Variant::Plain]);
        assert!(options.command_line().ends_with(" --variants probe,plain"));
        assert!(options.set_variants("").is_err(), "at least one");
        let error = options.set_variants("plain,nope").unwrap_err();
        assert!(
            error.contains("'nope'") && error.contains("console"),
            "{error}"
        );
        assert!(
            !ServerOptions::default()
                .command_line()
                .contains("--variants"),
            "all of them, by default"
        );
    }

    #[test]
    fn reads_the_listening_line() {
        assert_eq!(
            parse_listening("listening on 127.0.0.1:40123\n"),
            Some(40123)
        );
        assert_eq!(parse_listening("listening on 0.0.0.0:40123"), None);
        assert_eq!(parse_listening("listening on 127.0.0.1:"), None);
        assert_eq!(parse_listening("something else"), None);
    }

    #[test]
    fn reads_the_load_line() {
        let stdout = "noise\nload: requests=512034 seconds=5.001 p50_us=180.2 p99_us=911.0\n";
        assert_eq!(
            parse_load_line(stdout),
            Some(LoadLine {
                requests: 512_034,
                seconds: 5.001,
                p50_us: 180.2,
                p99_us: 911.0
            })
        );
        let line =
            parse_load_line("load: p99_us=2 p50_us=1 seconds=2 requests=10 extra=x").unwrap();
        assert_eq!((line.requests, line.throughput()), (10, 5.0));
        assert_eq!(parse_load_line("load: requests=10 seconds=2"), None);
        assert_eq!(parse_load_line(""), None);
    }

    #[test]
    fn reads_proc_stat() {
        // A command name with a space and a parenthesis; utime 1200, stime 300, cutime 7, cstime 8.
        let stat = "4242 (odd) name) S 1 4242 4242 0 -1 4194560 2000 0 0 0 1200 300 7 8 20 0 3 0";
        assert_eq!(proc::field_pair_sum(stat, 14), Some(1500));
        assert_eq!(proc::field_pair_sum(stat, 16), Some(15));
        assert_eq!(proc::parent(stat), Some(1));
        assert_eq!(proc::field_pair_sum("4242 (x) S 1", 14), None);
        assert_eq!(proc::field_pair_sum("garbage", 14), None);
        let own = fs::read_to_string("/proc/self/stat").unwrap();
        assert!(proc::field_pair_sum(&own, 14).is_some());
        assert_eq!(
            proc::parent(&own),
            Some(std::os::unix::process::parent_id())
        );
    }

    #[test]
    fn probe_links() {
        assert!(proc::is_probe_link("anon_inode:bpf_link"));
        assert!(proc::is_probe_link("anon_inode:[perf_event]"));
        assert!(!proc::is_probe_link("anon_inode:bpf-map"));
        assert!(!proc::is_probe_link("/dev/null"));
    }

    #[test]
    fn cpu_per_request() {
        assert_eq!(us_per_request(250, 100, 500_000), Some(5.0));
        assert_eq!(us_per_request(250, 100, 0), None);
        assert_eq!(us_per_request(0, 100, 10), Some(0.0));
    }

    #[test]
    fn rounds_rotate() {
        let all = VARIANTS.to_vec();
        assert_eq!(round_order(&all, 0), all);
        assert_eq!(round_order(&all, 1)[0], Variant::Probe);
        assert_eq!(round_order(&all, 6)[4], Variant::Plain);
        assert_eq!(round_order(&[], 3), Vec::<Variant>::new());
    }

    #[test]
    fn markdown() {
        let rows = vec![vec!["plain".to_string(), "1.00x".to_string()]];
        assert_eq!(
            markdown_table(&["variant", "vs plain"], &rows),
            "| variant | vs plain |\n| --- | ---: |\n| plain | 1.00x |\n"
        );
    }

    #[test]
    fn command_line() {
        let options = ServerOptions {
            rounds: 3,
            ..ServerOptions::default()
        };
        assert_eq!(
            options.command_line(),
            "scripts/bench.sh server --rounds 3 --seconds 5 --clients 20 --fanout 0"
        );
    }
}
