//! `cargo xtask bench memory [--crowd N]`: the collector's memory with a crowd of live parked
//! tasks. `inspect-crowd` (built with debuginfo, so every task gets a backtrace) parks N tasks;
//! `async-inspect probe --pid` attaches for 15 s, finds them in memory and keeps them; its
//! VmRSS and anonymous RSS are sampled from /proc every 250 ms. Steady is the median of the
//! samples from 5 s after the probe started (past resolving and the memory scan, about 3 s
//! here) to the end of its 15 s (before the report); peak is the most seen, the report
//! included.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use crate::bench::{median, probe_command};
use crate::{Result, cargo, root, run};

#[derive(Debug, PartialEq)]
pub(crate) struct MemoryOptions {
    pub(crate) crowd: u32,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        MemoryOptions { crowd: 100_000 }
    }
}

impl MemoryOptions {
    /// `--crowd` (the only option).
    pub(crate) fn set(&mut self, value: u32) -> Result<()> {
        if value == 0 {
            return Err("bench: --crowd must be at least 1".into());
        }
        self.crowd = value;
        Ok(())
    }
}

const PROBE_SECONDS: u64 = 15;
/// When the steady state is taken to start, from the probe's start.
const SETTLED_SECONDS: f64 = 5.0;

pub(crate) fn memory_bench(
    options: &MemoryOptions,
    sudo: &[std::ffi::OsString],
    reports: &Path,
) -> Result<()> {
    let crowd_args = ["--profile", "release-debuginfo", "-p", "inspect-demo"];
    run(cargo()
        .args(["build"])
        .args(crowd_args)
        .args(["--bin", "inspect-crowd"]))?;
    let mut crowd = Command::new(root().join("target/release-debuginfo/inspect-crowd"))
        .args(["--tasks", &options.crowd.to_string(), "--secs", "120"])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|error| format!("starting inspect-crowd: {error}"))?;
    let result = measure(options, sudo, reports, &mut crowd);
    let _ = crowd.kill();
    let _ = crowd.wait();
    result
}

fn measure(
    options: &MemoryOptions,
    sudo: &[std::ffi::OsString],
    reports: &Path,
    crowd: &mut Child,
) -> Result<()> {
    let mut ready = String::new();
    BufReader::new(crowd.stdout.take().expect("piped"))
        .read_line(&mut ready)
        .map_err(|error| format!("reading inspect-crowd: {error}"))?;
    // The spawner runs after the ready line: give it time to park every task.
    sleep(Duration::from_secs(3));
    let crowd_pid = crowd.id().to_string();
    let json = reports.join("memory.json");
    let mut probe = probe_command(sudo, &root().join("target/release/async-inspect"))
        .args(["probe", "--pid", &crowd_pid, "--no-tui", "--json"])
        .arg(&json)
        .args(["--duration", &format!("{PROBE_SECONDS}s")])
        .stdout(Stdio::null())
        .spawn()
        .map_err(|error| format!("starting the probe: {error}"))?;
    let started = Instant::now();
    // (seconds since the probe started, VmRSS, anonymous RSS)
    let mut samples: Vec<(f64, f64, f64)> = Vec::new();
    let mut collector = None;
    while probe
        .try_wait()
        .map_err(|error| error.to_string())?
        .is_none()
    {
        collector = collector.or_else(|| find_collector(&crowd_pid));
        if let Some((vm, anon)) = collector.and_then(rss_of) {
            samples.push((started.elapsed().as_secs_f64(), vm, anon));
        }
        sleep(Duration::from_millis(250));
    }
    if samples.is_empty() {
        return Err("memory: the probe's process was never seen in /proc".into());
    }
    let steady = samples
        .iter()
        .filter(|(at, ..)| (SETTLED_SECONDS..PROBE_SECONDS as f64).contains(at));
    let (mut vm, mut anon): (Vec<f64>, Vec<f64>) = steady.map(|&(_, vm, anon)| (vm, anon)).unzip();
    let peak = samples.iter().map(|&(_, vm, _)| vm).fold(0.0, f64::max);
    let mb = |value: Option<f64>| value.map_or_else(|| "n/a".into(), |v| format!("{v:.1}"));
    println!(
        "\nmemory: the collector with {} parked tasks (inspect-crowd), `probe --pid` for {PROBE_SECONDS} s; MiB",
        options.crowd
    );
    println!("| steady VmRSS | steady anonymous | peak VmRSS (the report included) | samples |");
    println!("| ---: | ---: | ---: | ---: |");
    println!(
        "| {} | {} | {peak:.1} | {} |",
        mb(median(&mut vm)),
        mb(median(&mut anon)),
        samples.len()
    );
    println!("(report: {})", json.display());
    Ok(())
}

/// The `async-inspect` process probing `crowd_pid` (under sudo, a grandchild of this one).
fn find_collector(crowd_pid: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|&byte| byte == 0).collect();
            let is_probe = args.first()?.ends_with(b"async-inspect");
            let watches = args
                .windows(2)
                .any(|pair| pair[0] == b"--pid" && pair[1] == crowd_pid.as_bytes());
            (is_probe && watches).then_some(pid)
        })
}

/// VmRSS and RssAnon of `pid`, in MB, from /proc/PID/status.
fn rss_of(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|line| line.starts_with(name))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    };
    Some((field("VmRSS:")?, field("RssAnon:")?))
}
