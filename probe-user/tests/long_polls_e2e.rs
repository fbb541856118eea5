//! End to end: a long poll is split into time on CPU, blocked in the kernel and preempted
//! (from the `sched_switch` tracepoint), and `long_poll` warns only for the first two: a
//! blocking call (`inspect-hangs blocking`: std::thread::sleep 300 ms, named with the line that
//! made it) and a computation
//! (`inspect-polls spin`: 50 ms of CPU, however long a loaded machine stretches it, named with
//! the line that computes) warn,
//! saying which; short polls preempted on an overloaded machine (`inspect-polls busy`) do not.
//! Root and uprobe_multi, like the other end-to-end tests.

mod common;

use std::path::Path;

use common::{
    assert_nothing_left_attached, fixture, privileged, probe_launch, replayed_markdown, task,
    temp_json,
};
use serde_json::Value;

/// Probes the fixture `binary` running `scenario` for 1.5 s, recording it to `recording` if
/// given: what it printed, and its JSON report.
fn probe(
    tag: &str,
    binary: &str,
    scenario: &str,
    recording: Option<&Path>,
) -> (std::process::Output, Value) {
    let mut options = vec!["--quiet"];
    if let Some(recording) = recording {
        options.extend(["--record", recording.to_str().expect("utf-8")]);
    }
    let (output, report) = probe_launch(
        tag,
        &options,
        &fixture(&format!("debug/{binary}")),
        &[scenario, "--exit-after-ms", "1500"],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_nothing_left_attached();
    (output, report)
}

/// The `long_poll` warnings' texts, by task id.
fn long_polls(report: &Value) -> Vec<(u64, String)> {
    report["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .filter(|warning| warning["kind"] == "long_poll")
        .map(|warning| {
            let detail = warning["detail"].as_str().unwrap_or_default();
            (warning["task"].as_u64().unwrap_or(0), detail.to_owned())
        })
        .collect()
}

#[test]
fn a_blocking_call_is_told_blocked() {
    let Some(_serial) = privileged() else { return };
    let recording = temp_json("long-poll-blocking-recording");
    let (output, report) = probe(
        "long-poll-blocking",
        "inspect-hangs",
        "blocking",
        Some(&recording),
    );
    let warnings = long_polls(&report);
    assert_eq!(warnings.len(), 1, "{:#}", report["warnings"]);
    let blocker = task(&report, "inspect_hangs::block_worker");
    assert_eq!(Some(warnings[0].0), blocker["id"].as_u64());
    // The blocker's own line: the worker's native stack as it went off CPU, unwound through
    // libc and std to the program's frame that called sleep.
    let blocked = "blocked in the kernel, in std::thread::functions::sleep ← \
                   inspect_hangs::block_worker (demo/src/bin/hangs.rs:213)";
    assert!(warnings[0].1.contains(blocked), "{}", warnings[0].1);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains(blocked), "{text}");
    // A replay of the recording knows it too (Markdown escapes the underscores).
    let markdown = replayed_markdown(&recording);
    assert!(
        markdown.contains(&blocked.replace('_', "\\_")),
        "{markdown}"
    );
}

#[test]
fn a_computation_is_told_on_cpu() {
    let Some(_serial) = privileged() else { return };
    let recording = temp_json("long-poll-spin-recording");
    let (output, report) = probe("long-poll-spin", "inspect-polls", "spin", Some(&recording));
    let warnings = long_polls(&report);
    let spinner = task(&report, "inspect_polls::spin_worker");
    assert_eq!(warnings.len(), 1, "{:#}\n{spinner:#}", report["warnings"]);
    assert_eq!(Some(warnings[0].0), spinner["id"].as_u64());
    assert!(
        warnings[0].1.contains("computing without yielding"),
        "{}",
        warnings[0].1
    );
    assert!(!warnings[0].1.contains("blocked"), "{}", warnings[0].1);
    // Its line, from a timer sample of the worker as it computed: the async fn's own, with
    // the call it made there, wherever in that call the sample fell.
    let computing = "on CPU, in inspect_polls::compute ← inspect_polls::spin_worker \
                     (demo/src/bin/polls.rs:80)";
    assert!(warnings[0].1.contains(computing), "{}", warnings[0].1);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains(computing), "{text}");
    // A replay of the recording knows it too (Markdown escapes the underscores).
    let markdown = replayed_markdown(&recording);
    assert!(
        markdown.contains(&computing.replace('_', "\\_")),
        "{markdown}"
    );
}

#[test]
fn preempted_short_polls_raise_no_warning() {
    let Some(_serial) = privileged() else { return };
    let (_, report) = probe("long-poll-busy", "inspect-polls", "busy", None);
    let longest = report["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter(|task| task["name"] == "inspect_polls::short_polls")
        .map(|task| task["max_poll_ns"].as_u64().unwrap_or(0))
        .max()
        .expect("the short polls' tasks");
    // Six spinning threads on the test machine's two CPUs stretch some 1 ms polls past the
    // 10 ms threshold; on a machine with many CPUs they may not, and the test proves less.
    eprintln!("longest short poll: {} ms", longest / 1_000_000);
    assert!(long_polls(&report).is_empty(), "{:#}", report["warnings"]);
}
