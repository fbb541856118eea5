//! The workspace's tasks, run as `cargo xtask <task>` (an alias in .cargo/config.toml). Use them
//! through scripts/test.sh and scripts/bench.sh, which first install the toolchains.
//!
//! - `test [CARGO TEST ARG...]`: builds the demo binaries the integration tests probe, then runs
//!   `cargo test` over the workspace with the given arguments, and exits with its status.
//! - `bench [--runs N] [--tasks N] [--yields N]`: runs the demo's poll-heavy workload with and
//!   without the probe, and prints what probing costs it.
//!
//! Loading eBPF programs needs root: when this does not run as root, the test binaries and the probe
//! run through `sudo` (and only they: the build stays the user's).

use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Output, Stdio},
};

type Result<T, E = String> = std::result::Result<T, E>;

/// Builds the legacy-mangled fixture. Keep in step with scripts/setup.sh, which installs it.
const LEGACY_TOOLCHAIN: &str = "1.95.0";

/// The host triple the non-PIE fixture is built for (the fixtures are x86-64 only, like the probe).
const NOPIE_TARGET: &str = "x86_64-unknown-linux-gnu";

const USAGE: &str = "usage: cargo xtask test [CARGO TEST ARG...]
       cargo xtask bench [--runs N] [--tasks N] [--yields N]";

fn main() -> ExitCode {
    let mut args = env::args().skip(1);
    let result = match args.next().as_deref() {
        Some("test") => test(args.collect()),
        Some("bench") => bench(args.collect()).map(|()| ExitCode::SUCCESS),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        Some(other) => Err(format!("unknown task '{other}'\n{USAGE}")),
        None => Err(USAGE.to_string()),
    };
    result.unwrap_or_else(|message| {
        eprintln!("xtask: {message}");
        ExitCode::FAILURE
    })
}

/// The workspace root: the parent of this crate's directory.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

/// `cargo` of the toolchain that runs this task, in the workspace root. Fixtures and tests are found
/// at fixed paths under `target/`, so a `CARGO_TARGET_DIR` from the environment is not honoured.
fn cargo() -> Command {
    let mut command = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(root()).env_remove("CARGO_TARGET_DIR");
    command
}

fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .map_err(|error| format!("cannot run {}: {error}", describe(command)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{} failed ({status})", describe(command)))
    }
}

fn describe(command: &Command) -> String {
    let mut words = vec![command.get_program().to_string_lossy().into_owned()];
    words.extend(
        command
            .get_args()
            .map(|arg| arg.to_string_lossy().into_owned()),
    );
    words.join(" ")
}

fn is_root() -> bool {
    // The effective uid is the second field of the `Uid:` line.
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("Uid:"))?;
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// What to put before a command that needs root: nothing as root, else `sudo -E env PATH=…`.
fn root_prefix(what: &str) -> Result<Vec<OsString>> {
    if is_root() {
        return Ok(Vec::new());
    }
    let has_sudo = Command::new("sudo")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !has_sudo {
        return Err("loading eBPF programs and attaching uprobes needs root (or CAP_BPF, CAP_PERFMON, \
             CAP_SYS_PTRACE and, on some kernels, CAP_SYS_ADMIN), and sudo is not installed: run this as root"
            .into());
    }
    eprintln!("xtask: loading eBPF programs needs root: {what} through sudo");
    let mut path = OsString::from("PATH=");
    path.push(env::var_os("PATH").unwrap_or_default());
    Ok(vec!["sudo".into(), "-E".into(), "env".into(), path])
}

// ---------------------------------------------------------------------------------------------
// test

fn test(args: Vec<String>) -> Result<ExitCode> {
    build_fixtures()?;

    let mut command = cargo();
    if !is_root() {
        // Only the test binaries run as root: cargo runs each through this runner.
        command
            .arg("--config")
            .arg(runner_config(&root_prefix("the test binaries run")?));
    }
    command.arg("test");
    // probe-ebpf only builds for the BPF target (probe-user's build script builds it), so "the
    // workspace" leaves it out, unless the arguments choose packages themselves.
    let before_separator = args.iter().take_while(|arg| *arg != "--");
    let chooses_packages = before_separator.clone().any(|arg| {
        arg == "-p" || arg.starts_with("--package") || (arg.starts_with("-p") && arg.len() > 2)
    });
    let chooses_workspace = before_separator
        .clone()
        .any(|arg| arg == "--workspace" || arg == "--all");
    if !chooses_packages && !chooses_workspace {
        command.args(["--workspace", "--exclude", "probe-ebpf"]);
    }
    command.args(&args);
    eprintln!("xtask: {}", describe(&command));
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot run cargo test: {error}"))?;
    // Pass the output through, and add up the per-binary results into one closing line, so a
    // log reader sees the whole run's count rather than the last (often empty) doc-test binary's.
    let mut totals = TestTotals::default();
    let stdout = child.stdout.take().expect("piped stdout");
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
        let line = line.map_err(|error| format!("reading cargo test's output: {error}"))?;
        println!("{line}");
        totals.add(&line);
    }
    let status = child
        .wait()
        .map_err(|error| format!("cannot wait for cargo test: {error}"))?;
    println!(
        "\ntests: {} passed, {} failed",
        totals.passed, totals.failed
    );
    Ok(match status.code() {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

/// Sums of the `test result: ok. N passed; M failed; ...` lines libtest prints per binary.
#[derive(Debug, Default, PartialEq)]
struct TestTotals {
    passed: u64,
    failed: u64,
}

impl TestTotals {
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(['.', ';']) {
            let mut words = part.split_whitespace();
            match (
                words.next().and_then(|n| n.parse::<u64>().ok()),
                words.next(),
            ) {
                (Some(n), Some("passed")) => self.passed += n,
                (Some(n), Some("failed")) => self.failed += n,
                _ => {}
            }
        }
    }
}

/// A `--config` value that has cargo run the test binaries through `prefix`.
fn runner_config(prefix: &[OsString]) -> String {
    let words: Vec<String> = prefix
        .iter()
        .map(|word| toml_string(&word.to_string_lossy()))
        .collect();
    format!(
        "target.'cfg(target_os = \"linux\")'.runner = [{}]",
        words.join(", ")
    )
}

fn toml_string(text: &str) -> String {
    let mut quoted = String::from('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// The demo binaries the integration tests probe, at fixed paths under the workspace root: one per
/// shape a user ships.
fn build_fixtures() -> Result<()> {
    let fixtures: [(&[&str], &str, &str); 3] = [
        (&[], "target/debug/inspect-demo", "debug: DWARF, v0 symbols"),
        (
            &["--profile", "release-debuginfo"],
            "target/release-debuginfo/inspect-demo",
            "optimised, DWARF, v0 symbols",
        ),
        (
            &["--release"],
            "target/release/inspect-demo",
            "optimised, no DWARF, v0 symbols",
        ),
    ];
    for (profile, path, what) in fixtures {
        run(cargo().args(["build", "-p", "inspect-demo"]).args(profile))?;
        fixture_built(path, what)?;
    }
    // A non-PIE executable (ET_EXEC): symbol addresses are absolute, not load-relative. The
    // explicit --target keeps RUSTFLAGS off the proc-macro crates built for the host.
    run(cargo()
        .env("RUSTFLAGS", "-C relocation-model=static")
        .args([
            "build",
            "-p",
            "inspect-demo",
            "--profile",
            "release-debuginfo",
        ])
        .args(["--target", NOPIE_TARGET, "--target-dir", "target/nopie"]))?;
    fixture_built(
        &format!("target/nopie/{NOPIE_TARGET}/release-debuginfo/inspect-demo"),
        "non-PIE, optimised, DWARF",
    )?;
    build_legacy_fixture()?;
    fixture_built(
        "target/legacy/release/inspect-demo",
        &format!("optimised, no DWARF, legacy symbols (rustc {LEGACY_TOOLCHAIN})"),
    )
}

fn fixture_built(path: &str, what: &str) -> Result<()> {
    if root().join(path).is_file() {
        eprintln!("xtask: fixture {path} ({what})");
        Ok(())
    } else {
        Err(format!("the build did not produce {path}"))
    }
}

/// `cargo` of the legacy toolchain. `rustup run` overrides rust-toolchain.toml; the variables that
/// would carry the workspace toolchain into it go.
fn legacy_cargo() -> Command {
    let mut command = Command::new("rustup");
    command
        .args(["run", LEGACY_TOOLCHAIN, "cargo"])
        .current_dir(root())
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC");
    command
}

/// A plain release build of the demo by rustc 1.95, whose symbols are legacy-mangled (rustc >= 1.98
/// mangles v0 by default). Built in the workspace against its Cargo.lock (left unchanged:
/// `--locked`) when that cargo can; otherwise a standalone copy of the demo is built in
/// target/legacy-src. `XTASK_LEGACY_STANDALONE=1` forces the copy.
fn build_legacy_fixture() -> Result<()> {
    let target_dir = root().join("target/legacy");
    if env::var_os("XTASK_LEGACY_STANDALONE").is_none() {
        let built = run(legacy_cargo()
            .args([
                "build",
                "-p",
                "inspect-demo",
                "--release",
                "--locked",
                "--target-dir",
            ])
            .arg(&target_dir));
        match built {
            Ok(()) => return Ok(()),
            Err(message) => eprintln!(
                "xtask: {message}\nxtask: cargo {LEGACY_TOOLCHAIN} cannot build inspect-demo in the workspace: \
                 building a standalone copy in target/legacy-src"
            ),
        }
    }
    let source = root().join("target/legacy-src");
    let copied_src = source.join("src");
    if copied_src.exists() {
        fs::remove_dir_all(&copied_src)
            .map_err(|error| format!("removing {}: {error}", copied_src.display()))?;
    }
    copy_dir(&root().join("demo/src"), &copied_src)?;
    // Keep these dependencies in step with demo/Cargo.toml.
    let manifest = "# Written by `cargo xtask test`: demo/ built alone, by an older toolchain.\n\
        [package]\n\
        name = \"inspect-demo\"\n\
        version = \"0.1.0\"\n\
        edition = \"2024\"\n\
        publish = false\n\n\
        [dependencies]\n\
        tokio = { version = \"1.54\", features = [\"full\"] }\n\n\
        [workspace]\n";
    fs::write(source.join("Cargo.toml"), manifest)
        .map_err(|error| format!("writing target/legacy-src/Cargo.toml: {error}"))?;
    run(legacy_cargo()
        .current_dir(&source)
        .args(["build", "--release", "--target-dir"])
        .arg(&target_dir))
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    let error =
        |error: std::io::Error| format!("copying {} to {}: {error}", from.display(), to.display());
    fs::create_dir_all(to).map_err(error)?;
    for entry in fs::read_dir(from).map_err(error)? {
        let entry = entry.map_err(error)?;
        let target = to.join(entry.file_name());
        if entry.file_type().map_err(error)?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target).map_err(error)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// bench

struct BenchOptions {
    runs: u32,
    /// Passed to `inspect-demo bench` as they were given: it has its own defaults.
    demo_args: Vec<String>,
}

fn parse_bench_args(args: Vec<String>) -> Result<BenchOptions> {
    let mut options = BenchOptions {
        runs: 3,
        demo_args: Vec::new(),
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name.to_string(), Some(value.to_string())),
            None => (arg.clone(), None),
        };
        if !matches!(name.as_str(), "--runs" | "--tasks" | "--yields") {
            return Err(format!("bench: unknown argument '{arg}'\n{USAGE}"));
        }
        let value = inline
            .or_else(|| args.next())
            .ok_or_else(|| format!("bench: {name} needs a value"))?;
        let number: u32 = value
            .parse()
            .map_err(|_| format!("bench: {name}: '{value}' is not a whole number"))?;
        if name == "--runs" {
            if number == 0 {
                return Err("bench: --runs must be at least 1".into());
            }
            options.runs = number;
        } else {
            options.demo_args.extend([name, number.to_string()]);
        }
    }
    Ok(options)
}

/// The demo's last word: `bench: {tasks} tasks, {polls} polls in {secs} s`.
#[derive(Debug, PartialEq)]
struct BenchLine {
    tasks: u64,
    polls: u64,
    secs: f64,
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
        })
    })
}

/// The figures the probe's JSON report gives in its `summary` object; `None` where it has none.
#[derive(Debug, Default, PartialEq)]
struct Summary {
    events: Option<u64>,
    dropped: Option<u64>,
    duration_ns: Option<u64>,
}

impl Summary {
    fn from_report(text: &str) -> Summary {
        let Ok(report) = serde_json::from_str::<serde_json::Value>(text) else {
            return Summary::default();
        };
        let field = |name: &str| report["summary"][name].as_u64();
        Summary {
            events: field("events"),
            dropped: field("dropped"),
            duration_ns: field("duration_ns"),
        }
    }

    fn events_per_second(&self) -> Option<f64> {
        match (self.events, self.duration_ns) {
            (Some(events), Some(ns)) if ns > 0 => Some(events as f64 / (ns as f64 / 1e9)),
            _ => None,
        }
    }
}

fn bench(args: Vec<String>) -> Result<()> {
    let options = parse_bench_args(args)?;
    run(cargo().args(["build", "--release", "-p", "probe-user"]))?;
    run(cargo().args(["build", "--release", "-p", "inspect-demo"]))?;

    let root = root();
    let demo = root.join("target/release/inspect-demo");
    let probe = root.join("target/release/async-inspect");
    let reports = root.join("target/bench");
    fs::create_dir_all(&reports)
        .map_err(|error| format!("creating {}: {error}", reports.display()))?;
    let sudo = root_prefix("the probe runs")?;

    let demo_command = format!("inspect-demo bench {}", options.demo_args.join(" "));
    println!(
        "{}, {} run(s): unprobed, probed, then probed with --record",
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
    let mut ratios = Vec::new();
    let mut recorded_ratios = Vec::new();
    let mut rates = Vec::new();
    let mut sizes = Vec::new();
    let mut dropped_total = Some(0u64);
    let mut workload = None;
    let probed_run = |tag: &str, record: bool| -> Result<(BenchLine, Summary, Option<u64>)> {
        let report = reports.join(format!("{tag}.json"));
        let recording = reports.join(format!("{tag}.airec"));
        let _ = fs::remove_file(&report);
        let _ = fs::remove_file(&recording);
        let mut command = match sudo.split_first() {
            Some((program, prefix)) => {
                let mut command = Command::new(program);
                command.args(prefix).arg(&probe);
                command
            }
            None => Command::new(&probe),
        };
        command.arg("probe").arg("--json").arg(&report);
        if record {
            command.arg("--record").arg(&recording);
        }
        command
            .arg("--")
            .arg(&demo)
            .arg("bench")
            .args(&options.demo_args);
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
    };
    for run_number in 1..=options.runs {
        let unprobed = measure(Command::new(&demo).arg("bench").args(&options.demo_args))?;
        let (probed, summary, _) = probed_run(&format!("run-{run_number}"), false)?;
        let (recorded, recorded_summary, size) =
            probed_run(&format!("run-{run_number}-recorded"), true)?;

        for (what, line) in [("probed", &probed), ("recorded", &recorded)] {
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
        ratios.extend(ratio);
        recorded_ratios.extend(recorded_ratio);
        let per_event = size
            .zip(recorded_summary.events)
            .filter(|&(_, events)| events > 0)
            .map(|(size, events)| size as f64 / events as f64);
        sizes.extend(per_event);
        let rate = summary.events_per_second();
        rates.extend(rate);
        dropped_total = dropped_total
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
        workload = Some((unprobed.tasks, unprobed.polls));
    }
    if let Some((tasks, polls)) = workload {
        println!("workload per run: {tasks} tasks, {polls} polls");
    }
    println!(
        "median slowdown: {}; with --record: {}",
        or_na(median(&mut ratios).map(|ratio| format!("{ratio:.2}x"))),
        or_na(median(&mut recorded_ratios).map(|ratio| format!("{ratio:.2}x")))
    );
    println!(
        "median events/s absorbed: {}",
        or_na(median(&mut rates).map(|rate| rate.round() as u64))
    );
    println!(
        "median recording size: {} bytes per event",
        or_na(median(&mut sizes).map(|bytes| format!("{bytes:.1}")))
    );
    println!("events dropped, all runs: {}", or_na(dropped_total));
    Ok(())
}

/// Runs a bench command and reads the demo's `bench:` line from its standard output.
fn measure(command: &mut Command) -> Result<BenchLine> {
    let Output {
        status,
        stdout,
        stderr,
    } = command
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("cannot run {}: {error}", describe(command)))?;
    let stdout = String::from_utf8_lossy(&stdout);
    match parse_bench_line(&stdout) {
        Some(line) if status.success() => Ok(line),
        _ => Err(format!(
            "{} ({status}) printed no `bench: N tasks, N polls in S s` line\n--- stdout\n{stdout}--- stderr\n{}",
            describe(command),
            String::from_utf8_lossy(&stderr)
        )),
    }
}

fn or_na(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "n/a".to_string(), |value| value.to_string())
}

fn median(values: &mut [f64]) -> Option<f64> {
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

    #[test]
    fn reads_the_bench_line() {
        let stdout = "something else\nbench: 64 tasks, 1280064 polls in 0.412 s\n";
        assert_eq!(
            parse_bench_line(stdout),
            Some(BenchLine {
                tasks: 64,
                polls: 1_280_064,
                secs: 0.412
            })
        );
        assert_eq!(parse_bench_line("bench: many tasks"), None);
    }

    #[test]
    fn reads_the_summary() {
        let report = r#"{"summary": {"events": 2000, "dropped": 3, "duration_ns": 500000000, "x": [1, {"y": null}]},
                         "tasks": [{"id": 1, "name": "a \"b\" \u00e9", "state": "idle", "ended_ns": null}]}"#;
        let summary = Summary::from_report(report);
        assert_eq!(
            summary,
            Summary {
                events: Some(2000),
                dropped: Some(3),
                duration_ns: Some(500_000_000)
            }
        );
        assert_eq!(summary.events_per_second(), Some(4000.0));
        let partial = Summary::from_report(r#"{"summary": {"events": 5}}"#);
        assert_eq!(partial.dropped, None);
        assert_eq!(partial.events_per_second(), None);
        assert_eq!(Summary::from_report("not json"), Summary::default());
    }

    #[test]
    fn bench_arguments() {
        let options =
            parse_bench_args(vec!["--runs".into(), "5".into(), "--tasks=8".into()]).unwrap();
        assert_eq!(options.runs, 5);
        assert_eq!(options.demo_args, ["--tasks", "8"]);
        assert!(parse_bench_args(vec!["--runs".into(), "0".into()]).is_err());
        assert!(parse_bench_args(vec!["--what".into()]).is_err());
    }

    #[test]
    fn test_results_add_up() {
        let mut totals = TestTotals::default();
        totals.add("test result: ok. 22 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s");
        totals
            .add("test result: FAILED. 9 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out");
        totals.add("running 3 tests");
        assert_eq!(
            totals,
            TestTotals {
                passed: 31,
                failed: 2
            }
        );
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }

    #[test]
    fn runner() {
        let prefix = ["sudo", "-E", "env", "PATH=/bin"].map(OsString::from);
        assert_eq!(
            runner_config(&prefix),
            r#"target.'cfg(target_os = "linux")'.runner = ["sudo", "-E", "env", "PATH=/bin"]"#
        );
    }

    #[test]
    fn toml_strings() {
        assert_eq!(toml_string(r#"PATH=/a"b\c"#), r#""PATH=/a\"b\\c""#);
    }
}
