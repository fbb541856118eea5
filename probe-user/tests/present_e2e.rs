//! End to end: what a person reads or opens after probing the demo — the Markdown and JSON
//! reports on stdout, the Perfetto timeline, the flamegraphs, the Gantt chart — and the promise
//! of recordings: `async-inspect report FILE` gives back every one of them, byte for byte.
//! And the live view, driven in a real terminal (tmux).
//!
//! These need root and a kernel with uprobe_multi, like probe_e2e.rs; in CI a skip is a failure.

mod common;

use common::{assert_nothing_left_attached, fixture, number, privileged, probe_binary, task};

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use serde_json::Value;

/// A scratch directory for one test's files, removed when the test passes.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("async-inspect-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating a scratch directory");
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name))
            .unwrap_or_else(|error| panic!("{name} was not written: {error}"))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn demo() -> PathBuf {
    fixture("release-debuginfo/inspect-demo")
}

const DEMO_ARGS: [&str; 6] = ["--ticks", "5", "--tick-ms", "100", "--block-ms", "300"];

/// Every export's flag and the file it writes, under `dir`.
fn export_flags(dir: &Scratch) -> Vec<String> {
    [
        ("--json", "report.json"),
        ("--trace", "trace.json"),
        ("--flamegraph", "busy.svg"),
        ("--idle-flamegraph", "idle.svg"),
        ("--folded", "stacks.folded"),
        ("--mermaid", "gantt.mmd"),
    ]
    .iter()
    .flat_map(|(flag, name)| [flag.to_string(), dir.path(name).display().to_string()])
    .collect()
}

const EXPORTS: [&str; 6] = [
    "report.json",
    "trace.json",
    "busy.svg",
    "idle.svg",
    "stacks.folded",
    "gantt.mmd",
];

fn run(command: &mut Command) -> Output {
    let output = command.output().expect("running async-inspect");
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Probes the demo with every export and a recording, into `live`.
fn probe_demo_with_exports(live: &Scratch, extra: &[&str]) -> Output {
    let output = run(Command::new(probe_binary())
        .arg("probe")
        .arg("--record")
        .arg(live.path("run.airec"))
        .args(export_flags(live))
        .args(extra)
        .arg("--")
        .arg(demo())
        .args(DEMO_ARGS));
    assert_nothing_left_attached();
    output
}

fn replay(recording: &Path, args: &[&str]) -> Output {
    run(Command::new(probe_binary())
        .arg("report")
        .arg(recording)
        .args(args))
}

#[test]
fn a_recording_gives_back_every_report_and_export() {
    let Some(_guard) = privileged() else { return };
    let live = Scratch::new("live");
    probe_demo_with_exports(&live, &[]);
    let replayed = Scratch::new("replayed");
    let output = run(Command::new(probe_binary())
        .arg("report")
        .arg(live.path("run.airec"))
        .args(export_flags(&replayed)));
    for name in EXPORTS {
        let (live, replayed) = (live.read(name), replayed.read(name));
        if let Some((line, (a, b))) = live
            .lines()
            .zip(replayed.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
        {
            panic!(
                "{name} from the recording differs from the live run's, line {line}:\nlive:     {a}\nreplayed: {b}"
            );
        }
        assert_eq!(
            live, replayed,
            "{name} from the recording differs in length"
        );
    }
    // The text report too: the same tables, from the same facts.
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("inspect_demo::blocking_hog"), "{text}");
    assert!(text.contains("long_poll"), "{text}");

    // A recording is smaller than the ring buffer's 72 bytes per event, besides the few KiB of
    // task names, settings and backtraces it also holds (events alone take about 10 bytes each:
    // record.rs's events_are_compact).
    let report: Value = serde_json::from_str(&live.read("report.json")).unwrap();
    let events = number(&report["summary"], "events");
    let size = std::fs::metadata(live.path("run.airec")).unwrap().len();
    assert!(
        size < events * 72 + 4096,
        "{size} bytes for {events} events: not compact"
    );
}

#[test]
fn reports_print_as_json_and_markdown() {
    let Some(_guard) = privileged() else { return };
    let live = Scratch::new("formats");
    probe_demo_with_exports(&live, &[]);
    let recording = live.path("run.airec");

    let json = replay(&recording, &["--format", "json"]);
    let printed: Value = serde_json::from_slice(&json.stdout).expect("--format json prints JSON");
    let written: Value = serde_json::from_str(&live.read("report.json")).unwrap();
    assert_eq!(printed, written, "--format json prints the --json report");

    let md = String::from_utf8(replay(&recording, &["--format", "md"]).stdout).unwrap();
    assert!(md.starts_with("# "), "{md}");
    for needle in [
        "## Slowest tasks",
        "| `inspect_demo::lock_waiter` | idle |",
        "**`long_poll`**",
    ] {
        assert!(
            md.contains(needle),
            "{needle} missing from the Markdown:\n{md}"
        );
    }
    // Tables are tables: every row of the tasks table has the header's number of cells.
    let cells = |line: &str| line.replace("\\|", "").matches('|').count();
    let table: Vec<&str> = md
        .lines()
        .skip_while(|line| !line.starts_with("| ID |"))
        .take_while(|line| line.starts_with('|'))
        .collect();
    assert_eq!(
        table.len(),
        2 + written["tasks"].as_array().unwrap().len(),
        "{md}"
    );
    assert!(
        table.iter().all(|row| cells(row) == cells(table[0])),
        "{md}"
    );

    // Replaying with other settings changes the analysis, not the facts.
    let strict = replay(&recording, &["--format", "json", "--long-poll", "1s"]);
    let strict: Value = serde_json::from_slice(&strict.stdout).unwrap();
    assert!(
        strict["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|warning| warning["kind"] != "long_poll"),
        "a 300 ms poll is no long poll at --long-poll 1s"
    );
    assert_eq!(strict["tasks"], written["tasks"]);

    // What the text report adds: who spawned whom, and when tasks were alive.
    let text = String::from_utf8(replay(&recording, &[]).stdout).unwrap();
    assert!(text.contains("inspect_demo::supervisor"), "{text}");
}

/// The trace's events by phase, for the checks below.
struct Trace {
    events: Vec<Value>,
}

impl Trace {
    fn parse(text: &str) -> Self {
        let value: Value = serde_json::from_str(text).expect("the trace is JSON");
        let events = value["traceEvents"]
            .as_array()
            .expect("traceEvents is an array")
            .clone();
        Self { events }
    }

    fn phase(&self, ph: &str) -> impl Iterator<Item = &Value> {
        self.events.iter().filter(move |event| event["ph"] == ph)
    }
}

#[test]
fn the_timeline_opens_cleanly_and_agrees_with_the_report() {
    let Some(_guard) = privileged() else { return };
    let live = Scratch::new("trace");
    probe_demo_with_exports(&live, &[]);
    let report: Value = serde_json::from_str(&live.read("report.json")).unwrap();
    let trace = Trace::parse(&live.read("trace.json"));

    // Every event has what the format requires of its phase.
    for event in &trace.events {
        assert!(event["ph"].is_string(), "{event}");
        assert!(event["pid"].is_u64(), "{event}");
        if event["name"] != "process_name" && event["name"] != "process_sort_index" {
            assert!(event["tid"].is_u64(), "{event}");
        }
        if event["ph"] != "M" {
            assert!(event["ts"].as_f64().is_some_and(|ts| ts >= 0.0), "{event}");
        }
        if event["ph"] == "X" {
            assert!(
                event["dur"].as_f64().is_some_and(|dur| dur >= 0.0),
                "{event}"
            );
        }
    }

    // On every track, slices nest: each is inside the one open before it, or after it.
    let mut tracks: BTreeMap<(u64, u64), Vec<(f64, f64)>> = BTreeMap::new();
    for slice in trace.phase("X") {
        let ts = slice["ts"].as_f64().unwrap();
        let end = ts + slice["dur"].as_f64().unwrap();
        tracks
            .entry((
                slice["pid"].as_u64().unwrap(),
                slice["tid"].as_u64().unwrap(),
            ))
            .or_default()
            .push((ts, end));
    }
    assert!(!tracks.is_empty());
    for (track, slices) in &mut tracks {
        slices.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
        let mut open: Vec<f64> = Vec::new();
        for &(start, end) in slices.iter() {
            // Microsecond floats: ends and starts within a nanosecond touch, not overlap.
            while open
                .last()
                .is_some_and(|&outer_end| outer_end <= start + 1e-3)
            {
                open.pop();
            }
            if let Some(&outer_end) = open.last() {
                assert!(
                    end <= outer_end + 1e-3,
                    "track {track:?}: a slice {start}..{end} overlaps one ending at {outer_end}"
                );
            }
            open.push(end);
        }
    }

    // Poll slices per task agree with the report's poll counts.
    let mut polls: BTreeMap<u64, u64> = BTreeMap::new();
    for slice in trace.phase("X") {
        if let Some(id) = slice["args"]["task"].as_u64()
            && slice["args"]["poll"].is_u64()
        {
            *polls.entry(id).or_default() += 1;
        }
    }
    for row in report["tasks"].as_array().unwrap() {
        if let Some(id) = row["id"].as_u64() {
            assert_eq!(
                polls.get(&id).copied().unwrap_or(0),
                number(row, "polls"),
                "poll slices of task {id} {}",
                row["name"]
            );
        }
    }
    let hog = number(task(&report, "inspect_demo::blocking_hog"), "id");
    assert!(polls[&hog] >= 1);

    // One track per task, named after it.
    let task_tracks = trace
        .phase("M")
        .filter(|event| event["name"] == "thread_name")
        .filter(|event| {
            event["args"]["name"]
                .as_str()
                .is_some_and(|name| name.starts_with("task "))
        })
        .count();
    assert_eq!(task_tracks as u64, number(&report["summary"], "tasks"));

    // Warnings are markers.
    assert!(
        trace.phase("i").any(|marker| marker["name"] == "long_poll"),
        "no long_poll marker"
    );
}

#[test]
fn wakes_from_task_to_task_are_arrows_between_their_polls() {
    let Some(_guard) = privileged() else { return };
    let live = Scratch::new("arrows");
    // Two tasks take the same two Mutexes in turn: each unlock inside a poll wakes the other.
    run(Command::new(probe_binary())
        .args(["probe", "--quiet", "--trace"])
        .arg(live.path("trace.json"))
        .arg("--")
        .arg(fixture("debug/inspect-hangs"))
        .args(["ordered", "--exit-after-ms", "1000"]));
    assert_nothing_left_attached();
    let trace = Trace::parse(&live.read("trace.json"));
    let polls: Vec<&Value> = trace.phase("X").filter(|slice| slice["pid"] == 1).collect();
    // A flow event binds to the slice around it on its own thread's track.
    let inside_a_poll = |event: &Value| {
        let ts = event["ts"].as_f64().unwrap();
        polls.iter().any(|slice| {
            let start = slice["ts"].as_f64().unwrap();
            slice["tid"] == event["tid"]
                && start <= ts + 1e-3
                && ts <= start + slice["dur"].as_f64().unwrap() + 1e-3
        })
    };
    let starts: Vec<&Value> = trace.phase("s").collect();
    assert!(!starts.is_empty(), "no wake arrows in the lock hand-over");
    for start in &starts {
        assert!(
            inside_a_poll(start),
            "an arrow starts outside any poll: {start}"
        );
        let finish = trace
            .phase("f")
            .find(|finish| finish["id"] == start["id"])
            .unwrap_or_else(|| panic!("a wake arrow has no end: {start}"));
        assert_eq!(finish["bp"], "e");
        assert!(
            inside_a_poll(finish),
            "an arrow ends outside any poll: {finish}"
        );
        assert!(finish["ts"].as_f64() >= start["ts"].as_f64());
    }
}

#[test]
fn flamegraphs_and_the_gantt_chart_show_the_demo() {
    let Some(_guard) = privileged() else { return };
    let live = Scratch::new("flame");
    probe_demo_with_exports(&live, &[]);
    let busy = live.read("busy.svg");
    let idle = live.read("idle.svg");
    for svg in [&busy, &idle] {
        assert!(svg.contains("<svg"), "not an SVG");
    }
    assert!(busy.contains("inspect_demo::blocking_hog"));
    assert!(idle.contains("inspect_demo::lock_waiter"));

    // Folded stacks: busy time per task type sums to the report's busy time (whole polls: the
    // report stops counting at completion, inside the last poll, so allow tokio's clean-up).
    let report: Value = serde_json::from_str(&live.read("report.json")).unwrap();
    let folded = live.read("stacks.folded");
    let total = |view: &str, name: &str| -> u64 {
        folded
            .lines()
            .filter(|line| line.starts_with(&format!("{view};{name}")))
            .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    let hog = number(task(&report, "inspect_demo::blocking_hog"), "busy_ns");
    let flamed = total("busy", "inspect_demo::blocking_hog");
    assert!(
        flamed >= hog && flamed - hog <= hog / 100,
        "busy flamegraph {flamed} ns, report {hog} ns"
    );
    assert!(total("idle", "inspect_demo::lock_waiter") > 0);

    let gantt = live.read("gantt.mmd");
    assert!(gantt.trim_start().starts_with("gantt"), "{gantt}");
    assert!(gantt.contains("dateFormat"), "{gantt}");
    assert!(gantt.contains("inspect_demo::tick_loop") || gantt.contains("tick_loop"));
}

/// tmux, for driving the live view in a real terminal: installed by scripts/setup.sh.
fn tmux(args: &[&str]) -> Output {
    Command::new("tmux")
        .args(args)
        .output()
        .expect("tmux is installed (scripts/setup.sh installs it)")
}

fn screen(session: &str) -> String {
    String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", session]).stdout).into_owned()
}

/// Waits until the screen shows `needle`; returns the screen.
fn wait_for(session: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let shown = screen(session);
        if shown.contains(needle) {
            return shown;
        }
        assert!(
            Instant::now() < deadline,
            "the terminal never showed {needle:?}; it shows:\n{shown}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_live_view_runs_in_a_real_terminal() {
    let Some(_guard) = privileged() else { return };
    let session = format!("async-inspect-tui-{}", std::process::id());
    let scratch = Scratch::new("tui");
    let json = scratch.path("report.json");
    // The probe's own exit status and stdout, for after the view is gone.
    let command = format!(
        "{} probe --json {} -- {} --ticks 100 --tick-ms 100; echo probe-exited-$?; sleep 60",
        probe_binary(),
        json.display(),
        demo().display()
    );
    let started = tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "180",
        "-y",
        "45",
        &command,
    ]);
    assert!(started.status.success(), "{started:?}");
    let _cleanup = KillSession(session.clone());

    let table = wait_for(&session, "inspect_demo::tick_loop");
    assert!(table.contains("inspect_demo::lock_waiter"), "{table}");
    tmux(&["send-keys", "-t", &session, "?"]);
    wait_for(&session, "quit");
    tmux(&["send-keys", "-t", &session, "Escape"]);
    // An Esc followed at once by a key reads as Alt+key in a terminal.
    std::thread::sleep(Duration::from_millis(500));
    tmux(&["send-keys", "-t", &session, "w"]);
    wait_for(&session, "long_poll");
    tmux(&["send-keys", "-t", &session, "t"]);
    wait_for(&session, "TID");
    // Leave the live phase, then the final view: the report is printed and the probe exits.
    tmux(&["send-keys", "-t", &session, "q"]);
    wait_for(&session, "q to leave");
    tmux(&["send-keys", "-t", &session, "q"]);
    let after = wait_for(&session, "probe-exited-");
    assert!(
        after.contains("async-inspect:") && after.contains("inspect_demo::tick_loop"),
        "the report is printed after the view: {after}"
    );
    assert_nothing_left_attached();
    let report: Value = serde_json::from_str(&scratch.read("report.json")).unwrap();
    assert!(number(&report["summary"], "tasks") >= 5);
}

struct KillSession(String);

impl Drop for KillSession {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .output();
    }
}
