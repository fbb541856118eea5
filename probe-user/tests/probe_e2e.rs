//! End to end: the real `async-inspect` binary loads the real eBPF programs into the kernel and
//! probes the bundled demo (built by `cargo xtask test` in four shapes: debug, release with
//! debuginfo, plain release, and a legacy-mangled plain release).
//!
//! These need root and a kernel with uprobe_multi. Elsewhere they skip with a message, except in
//! CI (`CI=true`), where a skip is a failure.

mod common;

use common::{
    RunningDemo, assert_nothing_left_attached, demo_line, fixture, hangs_line, number, privileged,
    probe_as_nobody, probe_binary, probe_launch, read_report, task, temp_json, workspace,
};

use std::{
    path::Path,
    process::{Command, Output, Stdio},
    time::Duration,
};

use serde_json::Value;

const TICKS: u64 = 5;
const TICK_MS: u64 = 100;
const BLOCK_MS: u64 = 300;

/// What the demo's known behaviour must look like in any build.
fn check_demo_run(output: &Output, report: &Value) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "probe failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("inspect-demo: ready"),
        "the target's stdout passes through: {stdout}"
    );
    assert!(
        stdout.contains("inspect_demo::tick_loop"),
        "the table names the tasks: {stdout}"
    );

    let ticker = task(report, "inspect_demo::tick_loop");
    assert_eq!(ticker["state"], "completed", "{ticker:#}");
    assert!(
        number(ticker, "polls") > TICKS,
        "a loop sleeping {TICKS} times is polled at least {} times: {ticker:#}",
        TICKS + 1
    );
    assert!(number(ticker, "wakes") >= TICKS, "{ticker:#}");
    assert!(
        number(ticker, "idle_ns") >= TICKS * TICK_MS * 1_000_000 * 9 / 10,
        "{ticker:#}"
    );
    assert!(
        ticker["spawned_ns"].is_u64() && ticker["ended_ns"].is_u64(),
        "{ticker:#}"
    );

    let hog = task(report, "inspect_demo::blocking_hog");
    assert_eq!(hog["state"], "completed", "{hog:#}");
    assert!(
        number(hog, "busy_ns") >= BLOCK_MS * 1_000_000,
        "the blocked time is busy time: {hog:#}"
    );
    assert!(
        number(hog, "max_poll_ns") >= BLOCK_MS * 1_000_000,
        "{hog:#}"
    );

    let waiter = task(report, "inspect_demo::lock_waiter");
    if report["summary"]["debuginfo"] == true {
        let point = &waiter["await_point"];
        assert_eq!(
            point["line"],
            demo_line("let mut value = lock.lock().await;"),
            "{waiter:#}"
        );
        assert!(
            point["file"]
                .as_str()
                .is_some_and(|f| f.ends_with("demo/src/main.rs")),
            "{point:#}"
        );
        assert_eq!(point["function"], "inspect_demo::lock_waiter");
    }
    assert_eq!(
        waiter["state"], "idle",
        "parked on a lock that is never released: {waiter:#}"
    );
    assert_eq!(number(waiter, "wakes"), 0, "{waiter:#}");
    assert!(waiter["ended_ns"].is_null(), "{waiter:#}");

    let chain = task(report, "inspect_demo::chain_a");
    assert_eq!(chain["state"], "completed", "{chain:#}");
    assert!(number(chain, "polls") >= 2, "{chain:#}");

    let doomed = task(report, "inspect_demo::doomed_sleeper");
    assert_eq!(doomed["state"], "cancelled", "aborted by main: {doomed:#}");
    assert!(doomed["ended_ns"].is_u64(), "{doomed:#}");

    let ids: Vec<u64> = [
        "inspect_demo::tick_loop",
        "inspect_demo::blocking_hog",
        "inspect_demo::lock_waiter",
        "inspect_demo::chain_a",
    ]
    .iter()
    .map(|name| number(task(report, name), "id"))
    .collect();
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 4, "each task has its own tokio id: {ids:?}");

    let summary = &report["summary"];
    assert_eq!(summary["dropped"], 0, "{summary:#}");
    // main's block_on(run_demo()) is listed too where its poll is not inlined (debug builds):
    // it calls process::exit inside its last poll.
    let bodies: Vec<&Value> = report["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter(|task| task["name"] == "block_on: inspect_demo::run_demo")
        .collect();
    assert!(
        bodies.iter().all(|body| body["state"] == "running"),
        "{bodies:#?}"
    );
    assert_eq!(
        number(summary, "tasks"),
        8 + bodies.len() as u64,
        "the demo spawns eight tasks: {report:#}"
    );
    assert!(number(summary, "peak_concurrency") >= 3, "{summary:#}");
    assert!(number(summary, "events") > 20, "{summary:#}");
}

fn demo_args() -> Vec<String> {
    vec![
        "--ticks".into(),
        TICKS.to_string(),
        "--tick-ms".into(),
        TICK_MS.to_string(),
        "--block-ms".into(),
        BLOCK_MS.to_string(),
    ]
}

fn launch_demo(tag: &str, build: &str, extra: &[&str]) -> Value {
    let args = demo_args();
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    let (output, report) = probe_launch(tag, &[], &fixture(build), &args);
    check_demo_run(&output, &report);
    report
}

/// The demo in one build shape: its known behaviour, and where the task names came from.
fn check_build(tag: &str, build: &str, naming: &str, debuginfo: bool) {
    let Some(_serial) = privileged() else { return };
    let report = launch_demo(tag, build, &[]);
    assert_eq!(report["summary"]["naming"], naming);
    assert_eq!(report["summary"]["debuginfo"], debuginfo);
}

#[test]
fn debug_build() {
    check_build("debug", "debug/inspect-demo", "dwarf", true);
}

#[test]
fn release_build_with_debuginfo() {
    check_build("reldbg", "release-debuginfo/inspect-demo", "dwarf", true);
}

#[test]
fn release_build_without_debuginfo() {
    check_build("release", "release/inspect-demo", "v0_symbols", false);
}

#[test]
fn legacy_mangled_release_without_debuginfo() {
    check_build("legacy", "legacy/release/inspect-demo", "call_graph", false);
}

#[test]
fn non_pie_executable() {
    check_build(
        "nopie",
        "nopie/x86_64-unknown-linux-gnu/release-debuginfo/inspect-demo",
        "dwarf",
        true,
    );
}

#[test]
fn a_panicking_task_is_reported_as_panicked() {
    let Some(_serial) = privileged() else { return };
    let (output, report) = probe_launch(
        "panic",
        &["--quiet"],
        &fixture("release/inspect-demo"),
        &["--panic", "--ticks", "1"],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let panicker = task(&report, "inspect_demo::panicker");
    assert_eq!(panicker["state"], "panicked", "{panicker:#}");
    assert_eq!(report["summary"]["panicked"], 1);
    assert_eq!(
        task(&report, "inspect_demo::tick_loop")["state"],
        "completed"
    );
}

#[test]
fn current_thread_runtime() {
    let Some(_serial) = privileged() else { return };
    launch_demo(
        "current",
        "release-debuginfo/inspect-demo",
        &["--current-thread"],
    );
}

/// A running demo that ticks every 20 ms `ticks` times.
fn ticking_demo(build: &str, ticks: u64) -> RunningDemo {
    let ticks = ticks.to_string();
    RunningDemo::start(
        build,
        &["--ticks", &ticks, "--tick-ms", "20", "--block-ms", "10"],
    )
}

#[test]
fn attach_by_pid_leaves_the_target_running() {
    let Some(_serial) = privileged() else { return };
    let mut target = ticking_demo("release-debuginfo/inspect-demo", 1000);
    std::thread::sleep(Duration::from_millis(300));
    let json = temp_json("pid");
    let output = Command::new(probe_binary())
        .args(["probe", "--duration", "1s", "--json"])
        .arg(&json)
        .args(["--pid", &target.pid()])
        .output()
        .expect("running async-inspect");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_nothing_left_attached();
    let report = read_report(&json, &output);
    let ticker = task(&report, "inspect_demo::tick_loop");
    assert!(
        number(ticker, "polls") >= 10,
        "1 s of 20 ms ticks: {ticker:#}"
    );
    assert!(
        ticker["spawned_ns"].is_null(),
        "spawned before the probe attached: {ticker:#}"
    );
    assert!(ticker["ended_ns"].is_null(), "{ticker:#}");
    assert_ne!(ticker["state"], "completed");
    let duration = number(&report["summary"], "duration_ns");
    assert!(
        (900_000_000..3_000_000_000).contains(&duration),
        "--duration 1s: {duration}"
    );
    assert!(
        target.is_alive(),
        "the target keeps running after the probe detached"
    );
}

#[test]
fn attaching_finds_the_tasks_idle_since_before_it() {
    let Some(_serial) = privileged() else { return };
    let target = start_parked_demo("release-debuginfo/inspect-demo");
    let json = temp_json("seeded");
    let output = Command::new(probe_binary())
        .args([
            "probe",
            "--duration",
            "500ms",
            "--stuck-after",
            "200ms",
            "--json",
        ])
        .arg(&json)
        .args(["--pid", &target.pid()])
        .output()
        .expect("running async-inspect");
    drop(target);
    assert_nothing_left_attached();
    let report = read_report(&json, &output);
    let waiter = task(&report, "inspect_demo::lock_waiter");
    assert_eq!(waiter["state"], "idle", "{waiter:#}");
    assert_eq!(
        number(waiter, "polls"),
        0,
        "never polled while watched: {waiter:#}"
    );
    assert_eq!(
        waiter["await_point"]["line"],
        demo_line("let mut value = lock.lock().await;")
    );
    let stuck = report["stuck"].as_array().expect("stuck");
    assert!(
        stuck
            .iter()
            .any(|row| row["name"] == "inspect_demo::lock_waiter"
                && row["leaf"]
                    .as_str()
                    .is_some_and(|leaf| leaf.contains("tokio::sync::Mutex"))),
        "{stuck:#?}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("tasks found in the program's memory"),
        "{stderr}"
    );
}

#[test]
fn ctrl_c_detaches_and_reports() {
    let Some(_serial) = privileged() else { return };
    let mut target = ticking_demo("release/inspect-demo", 1000);
    let json = temp_json("sigint");
    let probe = Command::new(probe_binary())
        .args(["probe", "--quiet", "--json"])
        .arg(&json)
        .args(["--pid", &target.pid()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running async-inspect");
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: sending SIGINT to our own child.
    unsafe { libc::kill(probe.id() as i32, libc::SIGINT) };
    let output = probe.wait_with_output().expect("probe output");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_nothing_left_attached();
    let report = read_report(&json, &output);
    assert!(number(task(&report, "inspect_demo::tick_loop"), "polls") >= 10);
    assert!(String::from_utf8_lossy(&output.stdout).contains("inspect_demo::tick_loop"));
    assert!(
        target.is_alive(),
        "Ctrl-C on the probe must not touch the target"
    );
}

#[test]
fn the_target_exit_status_passes_through() {
    let Some(_serial) = privileged() else { return };
    let output = Command::new(probe_binary())
        .args(["probe", "--quiet", "--"])
        .arg(fixture("debug/inspect-demo"))
        .arg("--no-such-flag")
        .output()
        .expect("running async-inspect");
    assert_nothing_left_attached();
    assert_eq!(
        output.status.code(),
        Some(2),
        "the demo exits 2 on a bad flag"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown argument"));
}

fn probe_error(args: &[&str]) -> String {
    let output = Command::new(probe_binary())
        .arg("probe")
        .args(args)
        .output()
        .expect("running async-inspect");
    assert_eq!(output.status.code(), Some(125), "{output:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn bad_targets_get_clear_errors() {
    // No privileges needed: these fail before anything is attached.
    assert!(probe_error(&["--pid", "999999999"]).contains("no process with pid 999999999"));
    let script = workspace().join("scripts/setup.sh");
    assert!(probe_error(&["--", script.to_str().unwrap()]).contains("is not an ELF executable"));
    let plain = fixture("debug/inspect-demo-plain");
    assert!(probe_error(&["--", plain.to_str().unwrap()]).contains("is it a tokio program?"));
    let missing = Command::new(probe_binary())
        .args(["probe", "--", "/no/such/program"])
        .output()
        .expect("running async-inspect");
    assert_eq!(
        missing.status.code(),
        Some(127),
        "not found, as the shell says"
    );
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no such file"));
    let stripped =
        std::env::temp_dir().join(format!("inspect-demo-stripped-{}", std::process::id()));
    let status = Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(fixture("release/inspect-demo"))
        .status();
    if status.is_ok_and(|status| status.success()) {
        let error = probe_error(&["--", stripped.to_str().unwrap()]);
        let _ = std::fs::remove_file(&stripped);
        assert!(error.contains("stripped binary"), "{error}");
    }
}

#[test]
fn unprivileged_users_are_told_what_is_needed() {
    let Some(_serial) = privileged() else { return };
    // Drop to nobody, without capabilities, and try to launch the demo under the probe.
    let demo = fixture("release/inspect-demo");
    let output = probe_as_nobody(&["probe".as_ref(), "--".as_ref(), demo.as_os_str()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("needs root"), "{stderr}");
    assert!(
        !stderr.contains("inspect-demo: ready"),
        "the target must not start unprobed"
    );
}

#[test]
fn a_poll_heavy_workload_is_counted_exactly() {
    let Some(_serial) = privileged() else { return };
    const TASKS: u64 = 16;
    const YIELDS: u64 = 500;
    let (output, report) = probe_launch(
        "yields",
        &["--quiet"],
        &fixture("release/inspect-demo"),
        &[
            "bench",
            "--tasks",
            &TASKS.to_string(),
            "--yields",
            &YIELDS.to_string(),
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(report["summary"]["dropped"], 0, "{:#}", report["summary"]);
    let yielders: Vec<&Value> = report["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter(|task| task["name"] == "inspect_demo::yield_many")
        .collect();
    assert_eq!(yielders.len() as u64, TASKS);
    for task in yielders {
        assert_eq!(task["state"], "completed", "{task:#}");
        assert_eq!(number(task, "polls"), YIELDS + 1, "{task:#}");
        assert_eq!(number(task, "wakes"), YIELDS, "{task:#}");
    }
}

/// `async-inspect dump --pid` on a demo whose tasks have all been parked for a while.
/// The demo with every task polled once and parked, none to be woken for seconds.
fn start_parked_demo(build: &str) -> RunningDemo {
    RunningDemo::parked(build)
}

fn dump_parked_demo(build: &str, extra: &[&str]) -> (Output, Value) {
    let mut target = start_parked_demo(build);
    let json = temp_json("dump");
    let output = Command::new(probe_binary())
        .args(["dump", "--json"])
        .arg(&json)
        .args(["--pid", &target.pid()])
        .args(extra)
        .output()
        .expect("running async-inspect dump");
    let alive = target.is_alive();
    drop(target);
    assert!(alive, "dump must leave the target running");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = read_report(&json, &output);
    (output, report)
}

fn frames(task: &Value) -> Vec<(String, Option<u64>)> {
    task["backtrace"]
        .as_array()
        .expect("backtrace")
        .iter()
        .map(|frame| {
            (
                frame["function"].as_str().unwrap_or("").to_owned(),
                frame["line"].as_u64(),
            )
        })
        .collect()
}

fn check_dump(report: &Value) {
    assert_eq!(report["summary"]["mode"], "dump");
    let leaf = |task: &Value| {
        task["backtrace"]
            .as_array()
            .and_then(|frames| frames.last())
            .and_then(|frame| frame["leaf"].as_str())
            .unwrap_or("")
            .to_owned()
    };

    let chain = task(report, "inspect_demo::chain_a");
    let async_frames: Vec<(String, Option<u64>)> = frames(chain)
        .into_iter()
        .filter(|(function, _)| function.starts_with("inspect_demo::"))
        .collect();
    assert_eq!(
        async_frames,
        vec![
            (
                "inspect_demo::chain_a".to_owned(),
                Some(demo_line("chain_b(tick_ms).await + 1"))
            ),
            (
                "inspect_demo::chain_b".to_owned(),
                Some(demo_line("chain_c(tick_ms).await + 1"))
            ),
            (
                "inspect_demo::chain_c".to_owned(),
                Some(demo_line(
                    "tokio::time::sleep(Duration::from_millis(tick_ms * 3)).await"
                ))
            ),
        ],
        "{chain:#}"
    );
    assert!(leaf(chain).starts_with("sleeping"), "{chain:#}");

    let ticker = task(report, "inspect_demo::tick_loop");
    assert_eq!(
        ticker["await_point"]["line"],
        demo_line("tokio::time::sleep(Duration::from_millis(tick_ms)).await"),
        "{ticker:#}"
    );

    let waiter = task(report, "inspect_demo::lock_waiter");
    assert_eq!(waiter["state"], "idle");
    assert!(leaf(waiter).contains("tokio::sync::Mutex"), "{waiter:#}");
    assert_eq!(
        waiter["await_point"]["line"],
        demo_line("let mut value = lock.lock().await;")
    );

    let oneshot = task(report, "inspect_demo::oneshot_waiter");
    assert!(leaf(oneshot).contains("oneshot"), "{oneshot:#}");
    assert_eq!(
        oneshot["await_point"]["line"],
        demo_line("receiver.await.ok()")
    );

    let sleeper_id = number(task(report, "inspect_demo::long_sleeper"), "id");
    let supervisor = task(report, "inspect_demo::supervisor");
    assert_eq!(
        leaf(supervisor),
        format!("waiting for task {sleeper_id} (JoinHandle): inspect_demo::long_sleeper, idle"),
        "{supervisor:#}"
    );
}

#[test]
fn dump_finds_tasks_idle_since_before_it_looked_debug() {
    let Some(_serial) = privileged() else { return };
    let (output, report) = dump_parked_demo("debug/inspect-demo", &[]);
    check_dump(&report);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("<- inspect_demo::chain_a"), "{stdout}");
}

#[test]
fn dump_finds_tasks_idle_since_before_it_looked_release_with_debuginfo() {
    let Some(_serial) = privileged() else { return };
    let (_, report) = dump_parked_demo("release-debuginfo/inspect-demo", &["--freeze"]);
    check_dump(&report);
}

#[test]
fn dump_prints_as_markdown() {
    let Some(_guard) = privileged() else { return };
    let (output, report) = dump_parked_demo("release-debuginfo/inspect-demo", &["--format", "md"]);
    let md = String::from_utf8_lossy(&output.stdout);
    assert!(md.starts_with("# async-inspect report: "), "{md}");
    assert!(md.contains("## Where each task waits"), "{md}");
    let waiter = task(&report, "inspect_demo::lock_waiter");
    let at = format!(
        "| `inspect_demo::lock_waiter` | idle | `demo/src/main.rs:{}` |",
        waiter["await_point"]["line"]
    );
    assert!(md.contains(&at), "{at} missing:\n{md}");
    assert!(md.contains("waiting for a tokio::sync::Mutex"), "{md}");
}

#[test]
fn dump_without_dwarf_still_lists_the_tasks() {
    let Some(_serial) = privileged() else { return };
    let (output, report) = dump_parked_demo("release/inspect-demo", &[]);
    for name in [
        "inspect_demo::tick_loop",
        "inspect_demo::lock_waiter",
        "inspect_demo::chain_a",
    ] {
        let found = task(&report, name);
        assert_eq!(found["state"], "idle", "{found:#}");
        assert!(found["backtrace"].as_array().is_some_and(Vec::is_empty));
    }
    assert!(String::from_utf8_lossy(&output.stderr).contains("no DWARF"));
}

#[test]
fn values_can_be_left_out() {
    let Some(_serial) = privileged() else { return };
    let (_, with_values) = dump_parked_demo("debug/inspect-demo", &[]);
    let (_, without) = dump_parked_demo("debug/inspect-demo", &["--no-values"]);
    let locals = |report: &Value| {
        task(report, "inspect_demo::chain_a")["backtrace"]
            .as_array()
            .expect("backtrace")
            .iter()
            .filter(|frame| frame.get("locals").is_some())
            .count()
    };
    assert!(
        locals(&with_values) > 0,
        "chain_a..c keep tick_ms across their awaits"
    );
    assert_eq!(locals(&without), 0);
}

/// The demo's stdout without its pid line.
fn demo_output(stdout: &[u8]) -> String {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|line| line.starts_with("inspect-demo:") && !line.contains("ready, pid"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn probing_does_not_change_the_targets_output_or_status() {
    let Some(_serial) = privileged() else { return };
    let demo = fixture("release-debuginfo/inspect-demo");
    let alone = Command::new(&demo)
        .args(["--ticks", "2"])
        .output()
        .expect("demo");
    let probed = Command::new(probe_binary())
        .args(["probe", "--quiet", "--"])
        .arg(&demo)
        .args(["--ticks", "2"])
        .output()
        .expect("probe");
    assert_nothing_left_attached();
    assert_eq!(alone.status.code(), probed.status.code());
    assert_eq!(demo_output(&alone.stdout), demo_output(&probed.stdout));
    assert!(!demo_output(&alone.stdout).is_empty());
}

/// `probe --json` over one `inspect-hangs` scenario, which exits by itself.
fn probe_hangs(scenario: &str) -> Value {
    let (output, report) = probe_launch(
        scenario,
        &["--quiet"],
        &fixture("debug/inspect-hangs"),
        &[scenario, "--exit-after-ms", "1500"],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    report
}

fn warnings_of<'a>(report: &'a Value, kind: &str) -> Vec<&'a Value> {
    report["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .filter(|warning| warning["kind"] == kind)
        .collect()
}

#[test]
fn a_lock_order_deadlock_is_reported_with_its_tasks_locks_and_lines() {
    let Some(_serial) = privileged() else { return };
    let report = probe_hangs("deadlock");
    let deadlocks = report["deadlocks"].as_array().expect("deadlocks");
    assert_eq!(deadlocks.len(), 1, "{:#}", report["deadlocks"]);
    let deadlock = &deadlocks[0];
    let mut tasks: Vec<u64> = deadlock["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    tasks.sort_unstable();
    let mut lockers: Vec<u64> = report["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter(|task| task["name"] == "inspect_hangs::lock_both")
        .map(|task| number(task, "id"))
        .collect();
    lockers.sort_unstable();
    assert_eq!(tasks, lockers, "both lock_both tasks are in the cycle");
    let locks = deadlock["locks"].as_array().expect("locks");
    assert_eq!(locks.len(), 2);
    assert_ne!(locks[0]["address"], locks[1]["address"]);
    assert!(
        locks.iter().all(|lock| lock["kind"] == "mutex"),
        "{locks:?}"
    );
    for waiter in deadlock["details"].as_array().expect("details") {
        assert_eq!(
            waiter["at"]["line"],
            hangs_line("let mut other = inner.lock().await;")
        );
        assert_eq!(
            waiter["holds"].as_array().map(Vec::len),
            Some(1),
            "{waiter:#}"
        );
    }
}

#[test]
fn locks_taken_in_one_order_report_nothing() {
    let Some(_serial) = privileged() else { return };
    let report = probe_hangs("ordered");
    assert_eq!(report["deadlocks"].as_array().map(Vec::len), Some(0));
    assert_eq!(
        report["warnings"].as_array().map(Vec::len),
        Some(0),
        "{:#}",
        report["warnings"]
    );
}

#[test]
fn a_lost_waker_is_reported_and_a_kept_one_is_not() {
    let Some(_serial) = privileged() else { return };
    let lost = probe_hangs("lost-waker");
    let warnings = warnings_of(&lost, "lost_waker");
    assert_eq!(warnings.len(), 1, "{:#}", lost["warnings"]);
    assert_eq!(
        warnings[0]["task"],
        task(&lost, "inspect_hangs::wait_once")["id"]
    );
    let kept = probe_hangs("kept-waker");
    assert_eq!(
        kept["warnings"].as_array().map(Vec::len),
        Some(0),
        "{:#}",
        kept["warnings"]
    );
    assert_eq!(
        task(&kept, "inspect_hangs::wait_once")["state"],
        "completed"
    );
}

#[test]
fn a_blocked_worker_is_reported() {
    let Some(_serial) = privileged() else { return };
    let report = probe_hangs("blocking");
    let warnings = warnings_of(&report, "long_poll");
    assert_eq!(warnings.len(), 1, "{:#}", report["warnings"]);
    assert_eq!(
        warnings[0]["task"],
        task(&report, "inspect_hangs::block_worker")["id"]
    );
    let blocker = report["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .max_by_key(|worker| number(worker, "longest_poll_ns"))
        .expect("a worker");
    assert!(
        number(blocker, "longest_poll_ns") >= 300_000_000,
        "{blocker:#}"
    );
    assert_eq!(blocker["longest_poll_name"], "inspect_hangs::block_worker");
}

#[test]
fn a_task_that_wakes_itself_is_reported() {
    let Some(_serial) = privileged() else { return };
    let report = probe_hangs("self-wake");
    let warnings = warnings_of(&report, "self_wakes");
    assert_eq!(warnings.len(), 1, "{:#}", report["warnings"]);
    let spin = task(&report, "inspect_hangs::spin");
    assert_eq!(warnings[0]["task"], spin["id"]);
    assert_eq!(number(spin, "self_wakes"), 500);
}

/// The probe sites of the report (`summary.overhead.probes`, what `--explain` prints).
fn probe_sites(report: &Value) -> &Vec<Value> {
    report["summary"]["overhead"]["probes"]
        .as_array()
        .expect("summary.overhead.probes")
}

/// In an optimised build `wake_by_ref` begins with `sub rsp` (single-stepped, two traps a hit),
/// then loops on a compare-and-swap: it is probed at the branch after the loop, emulated, and
/// each of the 500 self-wakes is still seen. No site of that build is single-stepped.
#[test]
fn an_optimised_build_is_probed_without_single_stepping() {
    let Some(_serial) = privileged() else { return };
    let (output, report) = probe_launch(
        "self-wake-release",
        &["--quiet"],
        &fixture("release-debuginfo/inspect-hangs"),
        &["self-wake", "--exit-after-ms", "1500"],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        number(task(&report, "inspect_hangs::spin"), "self_wakes"),
        500
    );
    let sites = probe_sites(&report);
    let wake_by_ref = sites
        .iter()
        .find(|site| site["probe"] == "wake (waker::wake_by_ref)")
        .expect("a wake_by_ref site");
    assert_eq!(wake_by_ref["moved"], 1, "{wake_by_ref:#}");
    assert!(number(wake_by_ref, "hits") >= 500, "{wake_by_ref:#}");
    for site in sites {
        assert_eq!(site["single_stepped"], 0, "{site:#}");
    }
}

fn run_test_mode(args: &[&str]) -> Output {
    let output = Command::new(probe_binary())
        .arg("test")
        .args(args)
        .output()
        .expect("running async-inspect test");
    assert_nothing_left_attached();
    output
}

#[test]
fn test_mode_fails_a_hanging_command_and_passes_a_healthy_one() {
    let Some(_serial) = privileged() else { return };
    let hangs = fixture("debug/inspect-hangs");
    let hangs = hangs.to_str().expect("utf-8 path");

    let hung = run_test_mode(&[
        "--hang-timeout",
        "1s",
        "--",
        hangs,
        "lost-waker",
        "--exit-after-ms",
        "30000",
    ]);
    let stdout = String::from_utf8_lossy(&hung.stdout);
    assert_eq!(hung.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("HANG"), "{stdout}");
    assert!(
        stdout.contains("inspect_hangs::wait_once"),
        "the stuck task is named: {stdout}"
    );

    let deadlocked = run_test_mode(&[
        "--fail-on-deadlock",
        "--hang-timeout",
        "30s",
        "--",
        hangs,
        "deadlock",
        "--exit-after-ms",
        "30000",
    ]);
    let stdout = String::from_utf8_lossy(&deadlocked.stdout);
    assert_eq!(deadlocked.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("DEADLOCK"), "{stdout}");

    // main's block_on body sleeps for --exit-after-ms at the end: that is no hang.
    let healthy = run_test_mode(&[
        "--hang-timeout",
        "3s",
        "--",
        hangs,
        "ordered",
        "--exit-after-ms",
        "1500",
    ]);
    assert_eq!(
        healthy.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&healthy.stderr)
    );

    let demo = fixture("debug/inspect-demo");
    let failing = run_test_mode(&["--", demo.to_str().expect("utf-8"), "--no-such-flag"]);
    assert_eq!(
        failing.status.code(),
        Some(2),
        "the command's own status passes through"
    );
}

/// `async-inspect test -- cargo test …` on the demo's test `stuck`, which hangs when asked to.
fn cargo_test_under_probe(json_dir: &Path, hang: bool) -> Output {
    let mut command = Command::new(probe_binary());
    command
        .args(["test", "--hang-timeout", "2s", "--json"])
        .arg(json_dir)
        .arg("--")
        .arg(env!("CARGO"))
        .args(["test", "--offline", "-p", "inspect-demo", "--test", "stuck"])
        .current_dir(workspace())
        .env_remove("INSPECT_DEMO_STUCK_TEST");
    if hang {
        command.env("INSPECT_DEMO_STUCK_TEST", "1");
    }
    let output = command.output().expect("running async-inspect test");
    assert_nothing_left_attached();
    output
}

#[test]
fn test_mode_follows_cargo_test_into_each_test_binary() {
    let Some(_guard) = privileged() else { return };
    let json_dir = std::env::temp_dir().join(format!("async-inspect-cargo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&json_dir);

    let healthy = cargo_test_under_probe(&json_dir, false);
    let stderr = String::from_utf8_lossy(&healthy.stderr);
    assert!(healthy.status.success(), "{stderr}");
    assert!(stderr.contains("async-inspect test: no hang"), "{stderr}");

    let hung = cargo_test_under_probe(&json_dir, true);
    let stdout = String::from_utf8_lossy(&hung.stdout);
    assert!(!hung.status.success(), "a hanging test passed:\n{stdout}");
    assert!(stdout.contains("HANG"), "{stdout}");
    assert!(
        stdout.contains("waiting for a tokio::sync::Mutex"),
        "{stdout}"
    );
    let report = std::fs::read_dir(&json_dir)
        .expect("the JSON directory")
        .filter_map(Result::ok)
        .find(|entry| entry.file_name().to_string_lossy().starts_with("stuck-"))
        .map(|entry| std::fs::read_to_string(entry.path()).expect("reading the report"))
        .expect("a report named after the test binary");
    let _ = std::fs::remove_dir_all(&json_dir);
    let report: Value = serde_json::from_str(&report).expect("JSON");
    let line = include_str!("../../demo/tests/stuck.rs")
        .lines()
        .position(|line| line.contains("contended.lock()"))
        .expect("the contended lock in the test's source") as u64
        + 1;
    let tasks = report["tasks"].as_array().expect("tasks");
    let (bodies, spawned): (Vec<&Value>, Vec<&Value>) = tasks.iter().partition(|task| {
        task["name"]
            .as_str()
            .is_some_and(|name| name.starts_with("block_on: "))
    });
    let waiter = spawned.first().expect("the task the test spawned");
    assert_eq!(waiter["state"], "idle", "{report:#}");
    assert_eq!(waiter["await_point"]["line"], line, "{report:#}");
    // The test's own body, parked at its await (block_on_e2e.rs checks it in detail).
    let body = bodies.first().expect("the test's body");
    assert_eq!(body["state"], "idle", "{body:#}");
    assert!(
        stdout.contains(body["name"].as_str().expect("a name")),
        "{stdout}"
    );
}

#[test]
fn dump_reports_a_deadlock_from_a_snapshot() {
    let Some(_serial) = privileged() else { return };
    let target = RunningDemo::start(
        "debug/inspect-hangs",
        &["deadlock", "--exit-after-ms", "20000"],
    );
    std::thread::sleep(Duration::from_millis(500));
    let json = temp_json("dump-deadlock");
    let output = Command::new(probe_binary())
        .args(["dump", "--json"])
        .arg(&json)
        .args(["--pid", &target.pid()])
        .output()
        .expect("dump");
    drop(target);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = read_report(&json, &output);
    assert_eq!(
        report["deadlocks"].as_array().map(Vec::len),
        Some(1),
        "{:#}",
        report["deadlocks"]
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("DEADLOCK"));
}

/// Attached to a poll-heavy program, the default budget attaches the per-poll probes in windows:
/// the report says what share of the run they covered, tasks are still listed, and nothing stays
/// attached. `--exact` follows every poll.
#[test]
fn the_overhead_budget_attaches_the_per_poll_probes_in_windows() {
    let Some(_serial) = privileged() else { return };
    let mut target = Command::new(fixture("release-debuginfo/inspect-demo"))
        .args(["bench", "--tasks", "8", "--yields", "1000000000"])
        .stdout(Stdio::null())
        .spawn()
        .expect("starting the demo's bench");
    std::thread::sleep(Duration::from_millis(300));
    // Long enough for a window, a gap (at most 10 s) and the next window.
    let probe = |duration: &str, extra: &[&str]| {
        let json = temp_json("budget");
        let output = Command::new(probe_binary())
            .args([
                "probe",
                "--no-tui",
                "--duration",
                duration,
                "--explain",
                "--json",
            ])
            .arg(&json)
            .args(extra)
            .args(["--pid", &target.id().to_string()])
            .output()
            .expect("running async-inspect");
        assert_nothing_left_attached();
        (read_report(&json, &output), output)
    };
    let (budgeted, output) = probe("12s", &[]);
    let (exact, _) = probe("1s", &["--exact"]);
    let _ = target.kill();
    let _ = target.wait();
    let overhead = &budgeted["summary"]["overhead"];
    assert_eq!(overhead["budget_percent"], 5.0, "{overhead:#}");
    let coverage = overhead["coverage"].as_f64().expect("coverage");
    assert!(
        coverage < 0.9,
        "a yield loop costs far more than 5 % to follow: {overhead:#}"
    );
    assert!(number(overhead, "windows") >= 2, "{overhead:#}");
    assert!(
        task(&budgeted, "inspect_demo::yield_many")["polls"].as_u64() > Some(0),
        "polls are still counted in the windows"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("per-poll probes attached"), "{stdout}");
    assert!(stdout.contains("what each kind of probe cost"), "{stdout}");
    assert_eq!(exact["summary"]["overhead"]["coverage"], 1.0);
    assert_eq!(exact["summary"]["overhead"]["budget_percent"], Value::Null);
}

/// Attached by pid to a server under load whose every request spawns 8 tasks (about a million
/// probe hits a second when followed), the default probe loses no event: not while it scans the
/// program's memory at start, nor while it detaches the per-poll probes for a budget gap. And a
/// run that ends in a gap does not take the tasks that ran meanwhile for stuck ones.
#[test]
fn a_busy_server_loses_no_event_under_the_budget() {
    let Some(_serial) = privileged() else { return };
    let (server, line) =
        RunningDemo::started("release-debuginfo/inspect-server", &["--fanout", "8"]);
    let address = line.trim().rsplit(' ').next().expect("address").to_owned();
    let mut load = Command::new(fixture("release-debuginfo/inspect-load"))
        .args(["--addr", &address, "--clients", "20", "--duration", "8s"])
        .stdout(Stdio::null())
        .spawn()
        .expect("starting inspect-load");
    std::thread::sleep(Duration::from_millis(500));
    let json = temp_json("busy-server");
    let output = Command::new(probe_binary())
        .args(["probe", "--no-tui", "--quiet", "--duration", "4s", "--json"])
        .arg(&json)
        .args(["--pid", &server.pid()])
        .output()
        .expect("running async-inspect");
    let _ = load.wait();
    drop(server);
    assert_nothing_left_attached();
    let report = read_report(&json, &output);
    let summary = &report["summary"];
    assert!(number(summary, "events") > 10_000, "{summary:#}");
    assert_eq!(number(summary, "dropped"), 0, "{summary:#}");
    assert!(
        warnings_of(&report, "lost_waker").is_empty(),
        "{:#}",
        report["warnings"]
    );
    // What `--explain` shows: no site of the bundled server is single-stepped.
    for site in probe_sites(&report) {
        assert_eq!(site["single_stepped"], 0, "{site:#}");
    }
}

/// A launched program that exits before the probe's report still has its cost told: its CPU
/// time is the last one read, not nothing (/proc forgets an exited process).
#[test]
fn the_cost_of_probing_a_program_that_exited_is_told() {
    let Some(_serial) = privileged() else { return };
    let (output, report) = probe_launch(
        "exited-cost",
        &["--quiet", "--exact"],
        &fixture("release-debuginfo/inspect-demo"),
        &["bench", "--tasks", "4", "--yields", "100000"],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let overhead = &report["summary"]["overhead"];
    // Following every poll of a loop that only yields costs more than the loop itself.
    let share = overhead["share_percent"].as_f64().expect("share_percent");
    assert!(share > 20.0, "{overhead:#}");
    assert!(number(overhead, "target_cpu_ns") > 0, "{overhead:#}");
}

/// A runtime shutting down at the end of main cancels its parked tasks: that is how programs end,
/// not a warning. The task aborted at its await is one.
#[test]
fn a_normal_shutdown_is_no_cancellation_to_warn_about() {
    let Some(_serial) = privileged() else { return };
    let report = probe_hangs("shutdown");
    let warned: Vec<u64> = warnings_of(&report, "cancelled_while_parked")
        .iter()
        .map(|warning| warning["task"].as_u64().expect("task id"))
        .collect();
    let parked: Vec<&Value> = report["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter(|task| task["name"] == "inspect_hangs::parked_forever")
        .collect();
    assert_eq!(parked.len(), 3, "{:#}", report["tasks"]);
    assert!(
        parked.iter().all(|task| task["state"] == "cancelled"),
        "{parked:#?}"
    );
    assert_eq!(
        warned.len(),
        1,
        "only the aborted task: {:#}",
        report["warnings"]
    );
}
