//! What the integration tests share: where the workspace and the demo fixtures are, and how
//! the end-to-end tests run the probe (one at a time, root only, nothing left attached).
// Each test binary uses its own part of this.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use serde_json::Value;

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// A demo build under `target/`; `cargo xtask test` makes them all, so a missing one is a
/// setup error, not a skip.
pub fn fixture(relative: &str) -> PathBuf {
    let path = workspace().join("target").join(relative);
    assert!(
        path.is_file(),
        "{} is missing: run the tests with scripts/test.sh (cargo xtask test builds the fixtures)",
        path.display()
    );
    path
}

/// Probes run one at a time: each test checks that none of our programs stay loaded afterwards.
static SERIAL: Mutex<()> = Mutex::new(());

/// The names of async-inspect's programs, as prefixes: the kernel keeps 15 bytes of a name, and
/// each uprobe program has a `_single` twin for kernels without uprobe_multi.
const PROGRAM_NAMES: [&str; 7] = [
    "poll_start",
    "poll_end",
    "spawn_return",
    "task_op",
    "panic_start",
    "sched_switch",
    "sched_wakeup",
];

pub fn probe_binary() -> &'static str {
    env!("CARGO_BIN_EXE_async-inspect")
}

/// The Markdown report `async-inspect report` makes from `recording`, which is then removed.
pub fn replayed_markdown(recording: &Path) -> String {
    let replayed = Command::new(probe_binary())
        .arg("report")
        .arg(recording)
        .args(["--format", "md"])
        .output()
        .expect("async-inspect report");
    let _ = std::fs::remove_file(recording);
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    String::from_utf8_lossy(&replayed.stdout).into_owned()
}

/// The serial lock, when this machine can run eBPF probes; `None` (skip) otherwise, outside CI.
pub fn privileged() -> Option<MutexGuard<'static, ()>> {
    let guard = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let supported = root
        && aya::sys::is_uprobe_multi_supported(
            aya::sys::UProbeMultiFeature::ProcessScopedPidFilter,
        )
        .unwrap_or(false);
    if supported {
        return Some(guard);
    }
    let why = if root {
        "the kernel lacks uprobe_multi"
    } else {
        "not root"
    };
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("privileged end-to-end test cannot run in CI: {why}");
    }
    eprintln!("skipped: {why} (run scripts/test.sh as root)");
    None
}

pub fn temp_json(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("async-inspect-{tag}-{}.json", std::process::id()))
}

pub fn our_programs_loaded() -> Vec<String> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|program| program.name_as_str().map(str::to_owned))
        .filter(|name| PROGRAM_NAMES.iter().any(|ours| name.starts_with(ours)))
        .collect()
}

/// The kernel frees a detached link's program after an RCU grace period, so allow it a moment.
pub fn assert_nothing_left_attached() {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left = our_programs_loaded();
        if left.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "programs still loaded 5 s after the probe exited: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `async-inspect probe [options] --json FILE -- target args`, with its report.
pub fn probe_launch(tag: &str, options: &[&str], target: &Path, args: &[&str]) -> (Output, Value) {
    let json = temp_json(tag);
    let output = Command::new(probe_binary())
        .arg("probe")
        .args(options)
        .arg("--json")
        .arg(&json)
        .arg("--")
        .arg(target)
        .args(args)
        .output()
        .expect("running async-inspect");
    assert_nothing_left_attached();
    let report = read_report(&json, &output);
    (output, report)
}

pub fn read_report(json: &Path, output: &Output) -> Value {
    let text = std::fs::read_to_string(json).unwrap_or_else(|error| {
        panic!(
            "no JSON report at {} ({error}); stderr:\n{}",
            json.display(),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let _ = std::fs::remove_file(json);
    serde_json::from_str(&text).expect("the report is JSON")
}

pub fn task<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["tasks"]
        .as_array()
        .expect("tasks array")
        .iter()
        .find(|task| task["name"] == name)
        .unwrap_or_else(|| panic!("no task named {name} in {report:#}"))
}

pub fn number(task: &Value, field: &str) -> u64 {
    task[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not a number in {task:#}"))
}

/// A demo program the tests attach to by pid, started and past its `ready` line; killed on
/// drop, so a failing test leaves no process behind.
pub struct RunningDemo(std::process::Child);

impl RunningDemo {
    /// `build` is a fixture path (e.g. `release-debuginfo/inspect-demo`), `args` its arguments.
    pub fn start(build: &str, args: &[&str]) -> Self {
        let (demo, line) = Self::started(build, args);
        assert!(line.contains("ready"), "{line}");
        demo
    }

    /// The fixture `build` with `args`, once it has printed its first line, and that line.
    pub fn started(build: &str, args: &[&str]) -> (Self, String) {
        use std::io::BufRead as _;
        let mut child = Command::new(fixture(build))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("starting {build}: {error}"));
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .unwrap_or_else(|error| panic!("{build}'s first line: {error}"));
        (Self(child), line)
    }

    /// The demo with every task parked for seconds (ticks of 4 s), settled.
    pub fn parked(build: &str) -> Self {
        let demo = Self::start(
            build,
            &["--ticks", "3", "--tick-ms", "4000", "--block-ms", "10"],
        );
        std::thread::sleep(Duration::from_millis(500));
        demo
    }

    pub fn pid(&self) -> String {
        self.0.id().to_string()
    }

    pub fn is_alive(&mut self) -> bool {
        self.0.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for RunningDemo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The 1-based line of the first line of `source` containing `needle`: expected await lines are
/// computed from the fixtures' sources, never written down.
pub fn line_of(source: &str, needle: &str) -> u64 {
    source
        .lines()
        .position(|line| line.contains(needle))
        .map(|index| index as u64 + 1)
        .unwrap_or_else(|| panic!("{needle} is not in the source"))
}

/// The line of `needle` in the demo's `main.rs`.
pub fn demo_line(needle: &str) -> u64 {
    line_of(include_str!("../../../demo/src/main.rs"), needle)
}

/// The line of `needle` in the hang fixtures' `hangs.rs`.
pub fn hangs_line(needle: &str) -> u64 {
    line_of(include_str!("../../../demo/src/bin/hangs.rs"), needle)
}

/// Runs async-inspect with `args` as user nobody, without capabilities: what an unprivileged
/// user gets. setpriv comes with util-linux, on every Debian.
pub fn probe_as_nobody(args: &[&std::ffi::OsStr]) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--",
        ])
        .arg(probe_binary())
        .args(args)
        .output()
        .expect("running async-inspect through setpriv (util-linux)")
}
