//! End to end: the future given to `block_on` (the body of `#[tokio::test]` and
//! `#[tokio::main]`) is reported like a task: named, with its state, its await line read from
//! memory, the locks it holds, and its part in deadlocks and wait chains; in `test` mode, when
//! attached by pid, and in `dump`.
//!
//! The fixtures: the demo's test `demo/tests/stuck.rs` (whose body holds a tokio Mutex while it
//! awaits the JoinHandle of a task waiting for that Mutex) and `inspect-blocked-main` (whose
//! `main` holds a Mutex while it awaits a report from a task waiting for it). These need root
//! and a kernel with uprobe_multi, like the other end-to-end tests.

mod common;

use common::{
    assert_nothing_left_attached, fixture, line_of, privileged, probe_binary, read_report,
    temp_json, workspace,
};

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use serde_json::Value;

const STUCK_TEST: &str = include_str!("../../demo/tests/stuck.rs");
const BLOCKED_MAIN: &str = include_str!("../../demo/src/bin/blocked_main.rs");

/// The test binary cargo builds from `demo/tests/stuck.rs`.
fn stuck_test_binary() -> PathBuf {
    let output = Command::new(env!("CARGO"))
        .args(["test", "--offline", "--no-run", "--message-format=json"])
        .args(["-p", "inspect-demo", "--test", "stuck"])
        .current_dir(workspace())
        .stderr(Stdio::inherit())
        .output()
        .expect("running cargo test --no-run");
    assert!(output.status.success(), "building the demo's test failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|message| message["target"]["name"] == "stuck")
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .expect("cargo names the test binary")
}

/// The first row of `rows` whose `name` starts with `prefix`.
fn named<'a>(rows: &'a Value, prefix: &str) -> &'a Value {
    rows.as_array()
        .expect("an array")
        .iter()
        .find(|row| {
            row["name"]
                .as_str()
                .is_some_and(|name| name.starts_with(prefix))
        })
        .unwrap_or_else(|| panic!("no row named {prefix}… in {rows:#}"))
}

fn run_test_mode(json: &Path, command: &[&str], stuck_test: bool) -> Output {
    let mut test = Command::new(probe_binary());
    test.args(["test", "--hang-timeout", "3s", "--json"])
        .arg(json)
        .arg("--")
        .args(command);
    if stuck_test {
        test.env("INSPECT_DEMO_STUCK_TEST", "1");
    }
    let output = test.output().expect("running async-inspect test");
    assert_nothing_left_attached();
    output
}

const TEST_BODY: &str = "block_on: stuck::a_task_waits_for_a_lock_the_test_holds";

/// The stuck test's body as every report must show it: parked at `waiter.await`, holding the
/// Mutex, in a deadlock with the task it waits for. `report` is the JSON report.
fn check_stuck_test_body(report: &Value) {
    let line = line_of(STUCK_TEST, "waiter.await");
    let body = named(&report["tasks"], TEST_BODY);
    assert_eq!(body["state"], "idle", "{body:#}");
    assert!(
        body["id"].is_null(),
        "a block_on future has no task id: {body:#}"
    );
    assert_eq!(body["await_point"]["line"], line, "{body:#}");
    assert!(
        body["await_point"]["file"]
            .as_str()
            .is_some_and(|file| file.ends_with("demo/tests/stuck.rs")),
        "{body:#}"
    );
    let deadlocks = report["deadlocks"].as_array().expect("deadlocks");
    assert_eq!(deadlocks.len(), 1, "{deadlocks:#?}");
    let details = &deadlocks[0]["details"];
    let in_body = named(details, TEST_BODY);
    assert_eq!(in_body["waits_on"]["kind"], "task", "{in_body:#}");
    assert_eq!(in_body["at"]["line"], line, "{in_body:#}");
    let held = &in_body["holds"][0]["resource"];
    assert_eq!(
        held["kind"], "mutex",
        "the body holds the lock: {in_body:#}"
    );
    let waiter = details
        .as_array()
        .expect("details")
        .iter()
        .find(|row| row["task"] == in_body["waits_on"]["id"])
        .unwrap_or_else(|| panic!("the task the body joins is in the cycle: {details:#}"));
    assert_eq!(waiter["waits_on"], *held, "{details:#}");
    assert_eq!(
        waiter["at"]["line"],
        line_of(STUCK_TEST, "contended.lock()"),
        "{waiter:#}"
    );
}

/// `async-inspect test -- <test binary>`: the test hangs in its own body; the report says where.
#[test]
fn a_test_that_hangs_in_its_own_body_is_reported_at_its_await() {
    let Some(_serial) = privileged() else { return };
    let binary = stuck_test_binary();
    let json = temp_json("block-on-test");
    let output = run_test_mode(&json, &[binary.to_str().expect("utf-8 path")], true);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("HANG"), "{stdout}");
    let report = read_report(&json, &output);
    check_stuck_test_body(&report);

    let line = line_of(STUCK_TEST, "waiter.await");
    let stuck = named(&report["stuck"], TEST_BODY);
    assert!(
        stuck["leaf"]
            .as_str()
            .is_some_and(|leaf| leaf.contains("JoinHandle")),
        "{stuck:#}"
    );
    // The text: the body in the stuck list with its await line, and in the deadlock.
    assert!(stdout.contains(&format!("stuck.rs:{line}")), "{stdout}");
    let in_stuck = stdout
        .lines()
        .skip_while(|text| !text.contains("stuck:"))
        .any(|text| text.trim_start().starts_with(TEST_BODY));
    assert!(in_stuck, "{stdout}");
    let in_deadlock = stdout
        .lines()
        .skip_while(|text| !text.contains("DEADLOCK"))
        .any(|text| text.trim_start().starts_with(TEST_BODY) && text.contains("holding"));
    assert!(in_deadlock, "{stdout}");
}

/// The same test passes under `test` when it does not hang: its body completes.
#[test]
fn a_test_whose_body_completes_passes() {
    let Some(_serial) = privileged() else { return };
    let binary = stuck_test_binary();
    let json = temp_json("block-on-pass");
    let output = run_test_mode(&json, &[binary.to_str().expect("utf-8 path")], false);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = read_report(&json, &output);
    assert_eq!(named(&report["tasks"], TEST_BODY)["state"], "completed");
}

/// Starts the stuck test on its own and waits until its body has parked.
fn start_stuck_test() -> Child {
    let mut child = Command::new(stuck_test_binary())
        .env("INSPECT_DEMO_STUCK_TEST", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the stuck test");
    // libtest prints "running 1 test" before the test starts.
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("libtest's first line");
    std::thread::sleep(Duration::from_millis(500));
    child
}

/// A test body parked before the probe attached is found on its thread's stack (tests pass
/// their body to block_on through a `dyn Future`, whose vtable marks it): by `probe --pid`,
/// in Markdown and JSON, and by `dump`.
#[test]
fn a_parked_test_body_is_found_on_its_stack_by_attach_and_dump() {
    let Some(_serial) = privileged() else { return };
    let mut target = start_stuck_test();
    let pid = target.id().to_string();
    let json = temp_json("block-on-attach");
    let attached = Command::new(probe_binary())
        .args([
            "probe",
            "--no-tui",
            "--duration",
            "1s",
            "--stuck-after",
            "300ms",
        ])
        .args(["--format", "md", "--json"])
        .arg(&json)
        .args(["--pid", &pid])
        .output()
        .expect("running async-inspect probe");
    assert_nothing_left_attached();
    let dump_json = temp_json("block-on-dump");
    let dumped = Command::new(probe_binary())
        .args(["dump", "--json"])
        .arg(&dump_json)
        .args(["--pid", &pid])
        .output()
        .expect("running async-inspect dump");
    let dumped_md = Command::new(probe_binary())
        .args(["dump", "--format", "md", "--pid", &pid])
        .output()
        .expect("running async-inspect dump");
    let _ = target.kill();
    let _ = target.wait();

    let report = read_report(&json, &attached);
    check_stuck_test_body(&report);
    let markdown = String::from_utf8_lossy(&attached.stdout);
    let line = line_of(STUCK_TEST, "waiter.await");
    assert!(markdown.contains(TEST_BODY), "{markdown}");
    assert!(markdown.contains(&format!("stuck.rs:{line}")), "{markdown}");

    check_stuck_test_body(&read_report(&dump_json, &dumped));
    let markdown = String::from_utf8_lossy(&dumped_md.stdout);
    assert!(markdown.contains(TEST_BODY), "{markdown}");
}

const MAIN_BODY: &str = "block_on: inspect_blocked_main::main";

/// A `#[tokio::main]` whose body hangs holding a Mutex that a task it waits for needs.
#[test]
fn a_main_that_hangs_in_its_own_body_is_reported_with_the_lock_it_holds() {
    let Some(_serial) = privileged() else { return };
    let main = fixture("debug/inspect-blocked-main");
    let json = temp_json("block-on-main");
    let output = run_test_mode(&json, &[main.to_str().expect("utf-8 path")], false);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("HANG"), "{stdout}");
    let report = read_report(&json, &output);

    let body = named(&report["tasks"], MAIN_BODY);
    assert_eq!(body["state"], "idle", "{body:#}");
    // Its innermost await in the program's own code is in the async fn main awaits.
    assert_eq!(
        body["await_point"]["line"],
        line_of(BLOCKED_MAIN, "reported.await.unwrap_or(0)"),
        "{body:#}"
    );
    let frames: Vec<u64> = body["backtrace"]
        .as_array()
        .expect("backtrace")
        .iter()
        .filter_map(|frame| frame["line"].as_u64())
        .collect();
    assert!(
        frames.contains(&line_of(BLOCKED_MAIN, "wait_for_audit(reported).await")),
        "the backtrace starts at main's own await: {body:#}"
    );
    let leaf = named(&report["stuck"], MAIN_BODY)["leaf"].clone();
    assert!(
        leaf.as_str().is_some_and(|leaf| leaf.contains("oneshot")),
        "{leaf}"
    );
    // The task main spawned waits for the lock main holds: a chain, with main as the holder.
    let chain = report["chains"]
        .as_array()
        .expect("chains")
        .iter()
        .find(|chain| {
            chain["holder_name"]
                .as_str()
                .is_some_and(|n| n.starts_with(MAIN_BODY))
        })
        .unwrap_or_else(|| panic!("no chain held by main: {:#}", report["chains"]));
    assert_eq!(
        chain["waiter"]["name"], "inspect_blocked_main::audit",
        "{chain:#}"
    );
    assert_eq!(
        chain["waiter"]["at"]["line"],
        line_of(BLOCKED_MAIN, "let listed = ledger.lock().await;"),
        "{chain:#}"
    );
    assert!(
        stdout.contains(&format!("held by {MAIN_BODY}")),
        "the text names main as the holder: {stdout}"
    );
}

/// Its healthy twin exits at once: main's body completes, no hang.
#[test]
fn a_main_whose_body_completes_passes() {
    let Some(_serial) = privileged() else { return };
    let main = fixture("debug/inspect-blocked-main");
    let json = temp_json("block-on-main-ok");
    let output = run_test_mode(
        &json,
        &[main.to_str().expect("utf-8 path"), "--healthy"],
        false,
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = read_report(&json, &output);
    assert_eq!(named(&report["tasks"], MAIN_BODY)["state"], "completed");
    assert_eq!(
        report["warnings"].as_array().map(Vec::len),
        Some(0),
        "{:#}",
        report["warnings"]
    );
}

/// The bodies are found in DWARF: `main`'s in a debug build, each test's in a test binary; an
/// optimised build that inlined `main`'s poll into block_on says so.
#[test]
fn the_bodies_of_tokio_main_and_tokio_test_are_found_in_dwarf() {
    let bodies = |binary: &Path| {
        let plan = probe_user::resolve::resolve(binary).expect("resolve");
        let names: Vec<String> = plan
            .task_types
            .iter()
            .filter(|task_type| task_type.block_on.is_some())
            .map(|task_type| task_type.name.clone())
            .collect();
        (names, plan.notes)
    };
    let (debug, _) = bodies(&fixture("debug/inspect-blocked-main"));
    assert!(
        matches!(debug.as_slice(), [name] if name.starts_with(MAIN_BODY)),
        "{debug:?}"
    );
    let (test, _) = bodies(&stuck_test_binary());
    assert!(
        matches!(test.as_slice(), [name] if name.starts_with(TEST_BODY)),
        "{test:?}"
    );
    // Optimised, main's body is inlined into block_on: nothing to probe, and the notes say so.
    let (release, notes) = bodies(&fixture("release-debuginfo/inspect-blocked-main"));
    assert!(release.is_empty(), "{release:?}");
    assert!(
        notes
            .iter()
            .any(|note| note.starts_with(MAIN_BODY) && note.contains("inlined")),
        "{notes:#?}"
    );
}
