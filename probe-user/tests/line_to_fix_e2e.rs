//! End to end: hang reports point at the line to fix. A task parked in a `select!` or `join!`
//! is shown at the user's line of the macro with its pending branches, a method's task is named
//! after its type and says where it is spawned, each stuck task says whether anything bounds its wait, and a missing
//! backtrace says why, and a task parked on a socket, an mpsc channel or a semaphore says which
//! and what is left of it: in the text, JSON and Markdown reports of `probe` and in `dump`.
//!
//! Every expected line is computed from the fixture's source (`demo/src/bin/hangs.rs`).
//! These need root and a kernel with uprobe_multi; elsewhere they skip (see `common`).

mod common;

use std::{process::Command, time::Duration};

use common::{
    RunningDemo, fixture, hangs_line, number, privileged, probe_binary, probe_launch, read_report,
    replayed_markdown, task, temp_json,
};
use serde_json::Value;

/// `demo/src/bin/hangs.rs:N`, as the reports print the fixture's lines.
fn at(needle: &str) -> String {
    format!("demo/src/bin/hangs.rs:{}", hangs_line(needle))
}

const SELECT_FOREVER: &str = "tokio::select! { // select_forever";
const SELECT_WITH_DEADLINE: &str = "tokio::select! { // select_with_deadline";
const JOIN: &str = "tokio::join!(tokio::time::sleep(Duration::from_millis(10)), never)";
const TIMEOUT: &str = "match tokio::time::timeout(Duration::from_secs(60), value).await";

/// What a user reads of one probed run: the text report, the JSON, and the Markdown made again
/// from the run's recording.
struct Reports {
    text: String,
    json: Value,
    markdown: String,
}

/// `probe` over one `inspect-hangs` scenario of `build`, which exits by itself after 1.5 s;
/// tasks idle for 1 s are stuck.
fn probe(build: &str, scenario: &str) -> Reports {
    let recording = temp_json(&format!("{scenario}-recording"));
    let (output, json) = probe_launch(
        scenario,
        &[
            "--stuck-after",
            "1s",
            "--record",
            recording.to_str().expect("utf-8"),
        ],
        &fixture(&format!("{build}/inspect-hangs")),
        &[scenario, "--exit-after-ms", "1500"],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Reports {
        text: String::from_utf8_lossy(&output.stdout).into_owned(),
        json,
        markdown: replayed_markdown(&recording),
    }
}

/// `dump` (text and JSON) of a running `inspect-hangs` scenario of `build`, its tasks parked.
fn dump(build: &str, scenario: &str) -> (String, Value) {
    let (text, report, _) = dump_after_first_line(build, scenario);
    (text, report)
}

/// [`dump`], with the first line the scenario printed (`ready`, or what it says before).
fn dump_after_first_line(build: &str, scenario: &str) -> (String, Value, String) {
    let (target, line) = RunningDemo::started(
        &format!("{build}/inspect-hangs"),
        &[scenario, "--exit-after-ms", "20000"],
    );
    std::thread::sleep(Duration::from_millis(500));
    let json = temp_json(&format!("dump-{scenario}"));
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
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        report,
        line,
    )
}

/// The row of `stuck` for the task named `name`.
fn stuck<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["stuck"]
        .as_array()
        .expect("stuck")
        .iter()
        .find(|row| row["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not stuck: {:#}", report["stuck"]))
}

/// Every line of `expected` is in `text`, each the whole of a line (after its indent).
fn assert_lines(text: &str, expected: &[String]) {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for line in expected {
        assert!(
            lines.contains(&line.as_str()),
            "missing line:\n{line}\nin:\n{text}"
        );
    }
}

/// The task header line of a stuck or dumped task, up to its state.
fn header(report: &Value, name: &str) -> String {
    format!("task {} {name} — ", number(task(report, name), "id"))
}

/// The line of `text` that starts with `start` (trimmed).
fn line_starting<'a>(text: &'a str, start: &str) -> &'a str {
    text.lines()
        .map(str::trim)
        .find(|line| line.starts_with(start))
        .unwrap_or_else(|| panic!("no line starts with {start:?} in:\n{text}"))
}

const FOREVER_BRANCHES: &str = "in tokio::select!, 2 of 2 branches pending: \
    tokio::sync::oneshot::Receiver<u32> (waiting for a oneshot value); \
    tokio::sync::mpsc::bounded::Receiver::recv (waiting for an mpsc message: 1 sender alive, 0 queued)";

fn forever(needle: &str) -> String {
    format!(
        "no timeout on this path: it can wait forever (wrap the await at {} in tokio::time::timeout)",
        at(needle)
    )
}

/// A select! reads at the user's line, with what each pending branch waits for, in every report.
fn check_select_text(text: &str, report: &Value) {
    let forever_header = line_starting(text, &header(report, "inspect_hangs::select_forever"));
    assert!(
        forever_header.ends_with(FOREVER_BRANCHES),
        "{forever_header}"
    );
    assert_lines(
        text,
        &[
            format!("at tokio::select! ({})", at(SELECT_FOREVER)),
            format!("<- inspect_hangs::select_forever ({})", at(SELECT_FOREVER))
                + " [many = tokio::sync::mpsc::bounded::Receiver<u32> (8 bytes), once = tokio::sync::oneshot::Receiver<u32> (8 bytes)]",
            forever(SELECT_FOREVER),
        ],
    );
    let deadline_header =
        line_starting(text, &header(report, "inspect_hangs::select_with_deadline"));
    assert!(
        deadline_header.ends_with(
            "in tokio::select!, 2 of 2 branches pending: tokio::sync::oneshot::Receiver<u32> \
             (waiting for a oneshot value); tokio::time::sleep::Sleep (sleeping)"
        ),
        "{deadline_header}"
    );
    let bounded = line_starting(text, "bounded: the wait ends in ");
    assert!(
        bounded.ends_with(&format!(
            "s (tokio::time::Sleep in a tokio::select! branch at {})",
            at(SELECT_WITH_DEADLINE)
        )),
        "{bounded}"
    );
}

#[test]
fn a_select_is_shown_at_the_users_line_with_its_pending_branches() {
    let Some(_serial) = privileged() else { return };
    let reports = probe("debug", "select");
    check_select_text(&reports.text, &reports.json);
    check_select_text(&reports.markdown, &reports.json);
    assert!(
        reports.markdown.contains("## Stuck tasks"),
        "{}",
        reports.markdown
    );

    let forever = stuck(&reports.json, "inspect_hangs::select_forever");
    assert_eq!(forever["leaf"], FOREVER_BRANCHES);
    assert_eq!(forever["can_wait_forever"], true, "{forever:#}");
    assert_eq!(forever["wrap_at"]["line"], hangs_line(SELECT_FOREVER));
    assert_eq!(
        forever["wrap_at"]["function"],
        "inspect_hangs::select_forever"
    );
    assert!(forever.get("bounded_by").is_none(), "{forever:#}");
    let parked = task(&reports.json, "inspect_hangs::select_forever");
    assert_eq!(parked["await_point"]["line"], hangs_line(SELECT_FOREVER));
    assert_eq!(
        parked["await_point"]["function"],
        "inspect_hangs::select_forever"
    );
    assert!(
        parked["await_point"]["file"]
            .as_str()
            .is_some_and(|file| file.starts_with('/') && file.ends_with("demo/src/bin/hangs.rs")),
        "an absolute path: {parked:#}"
    );

    let deadline = stuck(&reports.json, "inspect_hangs::select_with_deadline");
    let bound = &deadline["bounded_by"];
    assert_eq!(bound["by"], "tokio::time::Sleep in a tokio::select! branch");
    assert_eq!(bound["line"], hangs_line(SELECT_WITH_DEADLINE));
    let remaining = number(bound, "remaining_ns");
    assert!(
        (55_000_000_000..60_000_000_000).contains(&remaining),
        "a 60 s sleep, 1.5 s in: {bound:#}"
    );
    assert!(deadline.get("can_wait_forever").is_none(), "{deadline:#}");
}

#[test]
fn a_join_says_which_branches_are_still_pending_in_an_optimised_build() {
    let Some(_serial) = privileged() else { return };
    let reports = probe("release-debuginfo", "join");
    let branches = "in tokio::join!, 1 of 2 branches pending: \
                    tokio::sync::oneshot::Receiver<u32> (waiting for a oneshot value)";
    for text in [&reports.text, &reports.markdown] {
        let header = line_starting(text, &header(&reports.json, "inspect_hangs::join_both"));
        assert!(header.ends_with(branches), "{header}");
        assert_lines(
            text,
            &[
                format!("at tokio::join! ({})", at(JOIN)),
                format!(
                    "<- inspect_hangs::join_both ({}) [never = tokio::sync::oneshot::Receiver<u32> (8 bytes)]",
                    at(JOIN)
                ),
                forever(JOIN),
            ],
        );
    }
    let row = stuck(&reports.json, "inspect_hangs::join_both");
    assert_eq!(row["leaf"], branches);
    assert_eq!(row["can_wait_forever"], true);
    assert_eq!(row["wrap_at"]["line"], hangs_line(JOIN));
}

#[test]
fn a_timeout_bounds_the_wait() {
    let Some(_serial) = privileged() else { return };
    let reports = probe("debug", "timeout");
    for text in [&reports.text, &reports.markdown] {
        let header = line_starting(
            text,
            &header(&reports.json, "inspect_hangs::wait_with_timeout"),
        );
        assert!(
            header.ends_with(" — waiting for a oneshot value"),
            "{header}"
        );
        assert_lines(
            text,
            &[
                "at tokio::sync::oneshot::Receiver<u32>".to_owned(),
                "<- tokio::time::Timeout".to_owned(),
                format!(
                    "<- inspect_hangs::wait_with_timeout ({}) [value = tokio::sync::oneshot::Receiver<u32> (8 bytes)]",
                    at(TIMEOUT)
                ),
            ],
        );
        let bounded = line_starting(text, "bounded: times out in ");
        assert!(
            bounded.ends_with(&format!("s (tokio::time::Timeout at {})", at(TIMEOUT))),
            "{bounded}"
        );
    }
    let row = stuck(&reports.json, "inspect_hangs::wait_with_timeout");
    assert_eq!(row["bounded_by"]["by"], "tokio::time::Timeout");
    assert_eq!(row["bounded_by"]["line"], hangs_line(TIMEOUT));
    let remaining = number(&row["bounded_by"], "remaining_ns");
    assert!(
        (55_000_000_000..60_000_000_000).contains(&remaining),
        "{row:#}"
    );
    assert!(row.get("can_wait_forever").is_none(), "{row:#}");
}

#[test]
fn a_method_and_its_blocks_are_named_after_their_type() {
    let Some(_serial) = privileged() else { return };
    let reports = probe("debug", "impl-method");
    let run_line = "self.connections.recv().await.unwrap_or(0)";
    let block_line = "tokio::spawn(async move { rx.await.unwrap_or(0) });";
    let spawn_line = "tokio::spawn(Listener { connections }.run());";
    for text in [&reports.text, &reports.markdown] {
        let run = line_starting(text, &header(&reports.json, "inspect_hangs::Listener::run"));
        assert!(
            run.ends_with(" — waiting for an mpsc message: 1 sender alive, 0 queued"),
            "{run}"
        );
        let block = line_starting(
            text,
            &header(&reports.json, "inspect_hangs::Listener::run::{async block}"),
        );
        assert!(block.ends_with(" — waiting for a oneshot value"), "{block}");
        // tokio's own frame, with the address of the receiver it reads.
        line_starting(
            text,
            &format!(
                "<- tokio::sync::mpsc::bounded::Receiver::recv (tokio-1.54.1/src/sync/mpsc/bounded.rs:{}) \
                 [self = &mut tokio::sync::mpsc::bounded::Receiver<u32> @ 0x",
                tokio_recv_line(&reports.json)
            ),
        );
        assert_lines(
            text,
            &[
                format!(
                    "<- inspect_hangs::Listener::run ({}) [self = inspect_hangs::Listener (8 bytes)]",
                    at(run_line)
                ),
                format!(
                    "<- inspect_hangs::Listener::run::{{async block}} ({}) [rx = tokio::sync::oneshot::Receiver<u32> (8 bytes)]",
                    at(block_line)
                ),
                forever(run_line),
                forever(block_line),
                // Where each is spawned, found from the binary's calls and DWARF lines.
                format!("spawned at {}", at(spawn_line)),
                format!("spawned at {}", at(block_line)),
            ],
        );
    }
    assert_eq!(
        task(&reports.json, "inspect_hangs::Listener::run")["spawned_at"],
        serde_json::json!([at(spawn_line)])
    );
    assert_eq!(
        task(&reports.json, "inspect_hangs::Listener::run")["await_point"]["line"],
        hangs_line(run_line)
    );
    // Nothing the reports show keeps the compiler's `{impl#N}` or `{async_fn#N}`.
    for text in [&reports.text, &reports.markdown, &reports.json.to_string()] {
        for compilers in [
            "{impl#",
            "{async_fn#",
            "{async_block_env#",
            "{async_fn_env#",
        ] {
            let shown: Vec<&str> = text
                .lines()
                .filter(|line| line.contains(compilers))
                .filter(|line| !line.contains("\"type\""))
                .collect();
            assert!(shown.is_empty(), "{compilers} in {shown:#?}");
        }
    }
}

/// The line tokio's `Receiver::recv` awaits at, as the backtrace read it.
fn tokio_recv_line(report: &Value) -> u64 {
    task(report, "inspect_hangs::Listener::run")["backtrace"]
        .as_array()
        .expect("backtrace")
        .iter()
        .find(|frame| frame["function"] == "tokio::sync::mpsc::bounded::Receiver::recv")
        .and_then(|frame| frame["line"].as_u64())
        .expect("a recv frame")
}

#[test]
fn tokios_own_tasks_are_marked_and_not_counted() {
    let Some(_serial) = privileged() else { return };
    let reports = probe("debug", "impl-method");
    let internal: Vec<&Value> = reports.json["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter(|task| task["internal"] == true)
        .collect();
    assert!(
        internal.iter().any(|task| task["name"]
            .as_str()
            .is_some_and(|name| name.starts_with("blocking: tokio::fs::"))),
        "the fs::metadata blocking task: {:#}",
        reports.json["tasks"]
    );
    let summary = &reports.json["summary"];
    assert_eq!(number(summary, "internal_tasks"), internal.len() as u64);
    let own = reports.json["tasks"].as_array().expect("tasks").len() - internal.len();
    assert_eq!(number(summary, "tasks"), own as u64, "{summary:#}");
    let table = table_rows(&reports.text);
    assert!(
        table.iter().all(|row| !row.contains("blocking: tokio::")),
        "{table:#?}"
    );
    assert!(
        table
            .iter()
            .any(|row| row.contains("inspect_hangs::Listener::run")),
        "{table:#?}"
    );
    assert!(
        reports.text.contains(&format!(
            "and {} of tokio's own tasks (blocking file, stdio or DNS work), left out of the \
             counts, the table and the stuck tasks (--json marks them `internal: true`)",
            internal.len()
        )),
        "{}",
        reports.text
    );
    assert!(
        !reports.markdown.contains("| `blocking: tokio::"),
        "{}",
        reports.markdown
    );
}

/// The rows of the text report's task table.
fn table_rows(text: &str) -> Vec<&str> {
    text.lines()
        .skip_while(|line| !line.trim_start().starts_with("ID  TASK"))
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .collect()
}

#[test]
fn dump_shows_the_users_lines_and_whether_waits_are_bounded() {
    let Some(_serial) = privileged() else { return };
    let (text, report) = dump("release-debuginfo", "select");
    let forever_header = line_starting(&text, &header(&report, "inspect_hangs::select_forever"));
    assert!(
        forever_header.ends_with(&format!(" — idle — {FOREVER_BRANCHES}")),
        "{forever_header}"
    );
    assert_lines(
        &text,
        &[
            format!("at tokio::select! ({})", at(SELECT_FOREVER)),
            forever(SELECT_FOREVER),
            // An optimised build's spawn path is inlined: its lines say where.
            format!(
                "spawned at {}",
                at("tokio::spawn(select_forever(once_rx, many_rx));")
            ),
        ],
    );
    assert!(
        line_starting(&text, "bounded: the wait ends in ").ends_with(&format!(
            "s (tokio::time::Sleep in a tokio::select! branch at {})",
            at(SELECT_WITH_DEADLINE)
        )),
        "{text}"
    );
    let forever = task(&report, "inspect_hangs::select_forever");
    assert_eq!(forever["can_wait_forever"], true, "{forever:#}");
    assert_eq!(forever["await_point"]["line"], hangs_line(SELECT_FOREVER));
    let deadline = task(&report, "inspect_hangs::select_with_deadline");
    assert_eq!(
        deadline["bounded_by"]["line"],
        hangs_line(SELECT_WITH_DEADLINE),
        "{deadline:#}"
    );
}

#[test]
fn no_backtrace_says_why() {
    let Some(_serial) = privileged() else { return };
    let (text, report) = dump("release", "join");
    let why = "no DWARF in the binary: build with debug = 1 or more, or pass the unstripped \
               build with --binary";
    assert_lines(&text, &[format!("(no backtrace: {why})")]);
    let joiner = task(&report, "inspect_hangs::join_both");
    assert_eq!(joiner["no_backtrace"], why, "{joiner:#}");
    assert!(
        joiner.get("can_wait_forever").is_none(),
        "nothing is said of a wait not read: {joiner:#}"
    );
}

/// What `inspect-hangs socket-read` says of its reading socket (`inspect-hangs: socket fd 11,
/// 127.0.0.1:49642 <- 127.0.0.1:43921`), as the reports must say it.
fn socket_read_leaf(output: &str) -> String {
    let said = line_starting(output, "inspect-hangs: socket fd ");
    let (fd, ends) = said["inspect-hangs: socket fd ".len()..]
        .split_once(", ")
        .expect("fd, addresses");
    let (local, peer) = ends.split_once(" <- ").expect("local <- peer");
    format!("reading from {local} ← {peer} (TCP, fd {fd})")
}

const READ_FOREVER: &str = "// read_forever";

/// The lines every report shows of the task parked reading its socket, led by `header`.
fn check_socket_read(text: &str, report: &Value, leaf: &str, idle: &str) {
    let header = line_starting(text, &header(report, "inspect_hangs::read_forever"));
    assert!(header.ends_with(&format!("{idle} — {leaf}")), "{header}");
    assert_lines(
        text,
        &[
            "at tokio::io::util::read::Read<tokio::net::tcp::stream::TcpStream>".to_owned(),
            forever(READ_FOREVER),
        ],
    );
}

#[test]
fn a_socket_read_names_the_socket() {
    let Some(_serial) = privileged() else { return };
    let reports = probe("debug", "socket-read");
    let leaf = socket_read_leaf(&reports.text);
    for text in [&reports.text, &reports.markdown] {
        check_socket_read(text, &reports.json, &leaf, "s");
    }
    let said = line_starting(&reports.text, "inspect-hangs: listener fd ");
    let (fd, address) = said["inspect-hangs: listener fd ".len()..]
        .split_once(", ")
        .expect("fd, address");
    let accepting = format!("accepting on {address} (TCP, fd {fd})");
    for text in [&reports.text, &reports.markdown] {
        let header = line_starting(
            text,
            &header(&reports.json, "inspect_hangs::accept_forever"),
        );
        assert!(header.ends_with(&format!("s — {accepting}")), "{header}");
        assert_lines(text, &[forever("// accept_forever")]);
    }
    let row = stuck(&reports.json, "inspect_hangs::read_forever");
    assert_eq!(row["leaf"], leaf.as_str(), "{row:#}");
    assert_eq!(row["can_wait_forever"], true, "{row:#}");
    assert_eq!(
        innermost_leaf(task(&reports.json, "inspect_hangs::read_forever")),
        leaf
    );

    let (text, report, said) = dump_after_first_line("debug", "socket-read");
    let leaf = socket_read_leaf(&said);
    check_socket_read(&text, &report, &leaf, " — idle");
    assert_eq!(
        innermost_leaf(task(&report, "inspect_hangs::read_forever")),
        leaf
    );
}

const MPSC_LEAF: &str = "waiting for an mpsc message: 2 senders alive, 0 queued";
/// A sender waiting for room in a full channel of one slot (the fixture keeps a second sender).
const SEND_LEAF: (&str, &str) = (
    "waiting for room in an mpsc channel (semaphore 0x",
    "): 2 senders alive, 1 queued",
);
const SEMAPHORE_LEAF: (&str, &str) = (
    "waiting for a tokio::sync::Semaphore permit (semaphore 0x",
    "): 0 permits available",
);

/// The headers of the task awaiting an mpsc message and of the one awaiting a permit say how
/// many senders and permits are left.
fn check_counts(text: &str, report: &Value) {
    let receiver = line_starting(text, &header(report, "inspect_hangs::receive_forever"));
    assert!(receiver.ends_with(&format!(" — {MPSC_LEAF}")), "{receiver}");
    let unbounded = line_starting(
        text,
        &header(report, "inspect_hangs::receive_unbounded_forever"),
    );
    assert!(
        unbounded.ends_with(" — waiting for an mpsc message: 1 sender alive, 0 queued"),
        "{unbounded}"
    );
    let sender = line_starting(text, &header(report, "inspect_hangs::send_forever"));
    let (start, end) = SEND_LEAF;
    assert!(
        sender.contains(&format!(" — {start}")) && sender.ends_with(end),
        "{sender}"
    );
    let acquirer = line_starting(text, &header(report, "inspect_hangs::acquire_forever"));
    let (start, end) = SEMAPHORE_LEAF;
    assert!(
        acquirer.contains(&format!(" — {start}")) && acquirer.ends_with(end),
        "{acquirer}"
    );
    assert_lines(
        text,
        &[
            forever("// receive_forever"),
            forever("// receive_unbounded_forever"),
            forever("// acquire_forever"),
            forever("// send_forever"),
        ],
    );
}

/// The `leaf` a JSON row of `stuck` gives.
fn leaf_of(row: &Value) -> &str {
    row["leaf"]
        .as_str()
        .unwrap_or_else(|| panic!("no leaf: {row:#}"))
}

/// The `leaf` of the innermost frame of a JSON task's backtrace.
fn innermost_leaf(task: &Value) -> &str {
    task["backtrace"]
        .as_array()
        .and_then(|frames| frames.last())
        .map_or_else(|| panic!("no backtrace: {task:#}"), leaf_of)
}

#[test]
fn a_channel_and_a_semaphore_say_what_is_left() {
    let Some(_serial) = privileged() else { return };
    let reports = probe("debug", "mpsc-senders");
    check_counts(&reports.text, &reports.json);
    check_counts(&reports.markdown, &reports.json);
    assert_eq!(
        leaf_of(stuck(&reports.json, "inspect_hangs::receive_forever")),
        MPSC_LEAF
    );
    let send = leaf_of(stuck(&reports.json, "inspect_hangs::send_forever"));
    assert!(
        send.starts_with(SEND_LEAF.0) && send.ends_with(SEND_LEAF.1),
        "{send}"
    );
    let permit = leaf_of(stuck(&reports.json, "inspect_hangs::acquire_forever"));
    assert!(
        permit.starts_with(SEMAPHORE_LEAF.0) && permit.ends_with(SEMAPHORE_LEAF.1),
        "{permit}"
    );

    let (text, report) = dump("debug", "mpsc-senders");
    check_counts(&text, &report);
    assert_eq!(
        innermost_leaf(task(&report, "inspect_hangs::receive_forever")),
        MPSC_LEAF
    );
    let send = innermost_leaf(task(&report, "inspect_hangs::send_forever"));
    assert!(
        send.starts_with(SEND_LEAF.0) && send.ends_with(SEND_LEAF.1),
        "{send}"
    );
}

/// Two async fns with the same body, in an optimised build: the compiler folds their code and
/// LTO refers to one's future type from another unit. Each task still gets its own await line,
/// the deadlock between them is reported in `probe` and `dump`, naming both.
#[test]
fn futures_with_folded_code_keep_their_own_lines_and_their_deadlock() {
    let Some(_serial) = privileged() else { return };
    let to_checking = hangs_line("async fn to_checking(") + 3;
    let to_savings = hangs_line("async fn to_savings(") + 3;
    let reports = probe("release-debuginfo", "folded");
    let (dump_text, dump_json) = dump("release-debuginfo", "folded");
    for (report, text) in [(&reports.json, &reports.text), (&dump_json, &dump_text)] {
        for (name, line) in [
            ("inspect_hangs::to_checking", to_checking),
            ("inspect_hangs::to_savings", to_savings),
        ] {
            let parked = task(report, name);
            assert_eq!(parked["no_backtrace"], Value::Null, "{parked:#}");
            assert_eq!(
                parked["await_point"]["line"].as_u64(),
                Some(line),
                "{parked:#}"
            );
        }
        let deadlocks = report["deadlocks"].as_array().expect("deadlocks");
        assert_eq!(deadlocks.len(), 1, "{text}");
        assert_eq!(deadlocks[0]["tasks"].as_array().map(Vec::len), Some(2));
        assert!(
            text.contains("DEADLOCK: 2 tasks wait for each other"),
            "{text}"
        );
        assert!(
            text.contains("to_checking waits for tokio::sync::Mutex")
                && text.contains(&format!("at demo/src/bin/hangs.rs:{to_savings}")),
            "{text}"
        );
    }
}
