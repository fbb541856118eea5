//! `--format md`: the report as Markdown.

use std::io::{self, Write};

use crate::readable;
use crate::{
    present::{heatmap, tree},
    report::{self, Mode, Report, WaiterRow},
};

/// The task tree in a document gets more room than on a terminal; grouping keeps it short.
const TREE_LINES: usize = 200;

/// The whole report: summary, slowest tasks (`top` rows, 0 for all), deadlocks and wait chains,
/// warnings, stuck tasks, threads, task tree, heatmap. Sections with nothing to say are left
/// out, so that an empty heading never suggests there was something to look at.
pub fn write(
    report: &Report,
    top: usize,
    stuck_after_ns: u64,
    out: &mut dyn Write,
) -> io::Result<()> {
    writeln!(
        out,
        "# async-inspect report: {}",
        text(&report.summary.target)
    )?;
    summary(report, out)?;
    tasks(report, top, out)?;
    deadlocks(report, out)?;
    chains(report, out)?;
    warnings(report, out)?;
    if !report.stuck.is_empty() {
        let mut stuck = Vec::new();
        report.write_stuck(&mut stuck, stuck_after_ns)?;
        writeln!(out, "\n## Stuck tasks")?;
        fenced(out, &stuck)?;
    }
    // A snapshot is read for where every live task waits.
    if report.summary.mode == Mode::Dump {
        let mut parked = Vec::new();
        report.write_backtraces(&mut parked)?;
        if !parked.is_empty() {
            writeln!(out, "\n## Where each task waits")?;
            fenced(out, &parked)?;
        }
    }
    threads(report, out)?;
    let mut tree = Vec::new();
    tree::draw(report, TREE_LINES, "", &mut tree)?;
    if !tree.is_empty() {
        writeln!(out, "\n## Task tree\n\nWho spawned whom, in spawn order.")?;
        fenced(out, &tree)?;
    }
    let mut map = Vec::new();
    heatmap::draw(report, heatmap::WIDTH, "", &mut map)?;
    if !map.is_empty() {
        writeln!(
            out,
            "\n## Concurrency over time\n\nTasks alive, by type; each row is shaded against its own peak."
        )?;
        fenced(out, &map)?;
    }
    Ok(())
}

fn summary(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    let s = &report.summary;
    let mut rows = vec![
        (
            "mode",
            match s.mode {
                Mode::Probe => "probe: traced over time".to_owned(),
                Mode::Dump => {
                    "dump: a snapshot of memory (states and await points only)".to_owned()
                }
            },
        ),
        ("target", code(&s.target)),
        ("pid", s.pid.to_string()),
        ("duration", readable::duration(s.duration_ns)),
    ];
    if let Some(exit) = &s.target_exit {
        rows.push(("how it ended", exit.describe()));
    }
    rows.extend([
        ("tasks seen", s.tasks.to_string()),
        ("peak at once", s.peak_concurrency.to_string()),
        ("completed", s.completed.to_string()),
        ("cancelled", s.cancelled.to_string()),
        ("panicked", s.panicked.to_string()),
        ("live at the end", s.live_at_end.to_string()),
    ]);
    if s.runtime_workers > 0 {
        rows.push((
            "runtime worker loops",
            format!("{} (left out of the counts above)", s.runtime_workers),
        ));
    }
    if s.internal_tasks > 0 {
        rows.push((
            "tokio's own tasks",
            format!(
                "{} (blocking file, stdio or DNS work: left out of the counts and tables)",
                s.internal_tasks
            ),
        ));
    }
    rows.push(("events", s.events.to_string()));
    rows.push((
        "dropped",
        match s.dropped {
            0 => "0".to_owned(),
            dropped => format!(
                "{dropped} (a CPU's ring buffer was full: counts are low; try `--ring-buffer-mb`)"
            ),
        },
    ));
    rows.push(("task names from", s.naming.describe().to_owned()));
    rows.extend(s.notes.iter().map(|note| ("note", text(note))));
    writeln!(out, "\n## Summary\n")?;
    table(
        out,
        &["", ""],
        rows.into_iter()
            .map(|(key, value)| vec![key.to_owned(), value]),
    )
}

/// Busiest first; a snapshot has no times, only states and await points.
fn tasks(report: &Report, top: usize, out: &mut dyn Write) -> io::Result<()> {
    let all = report.own_tasks();
    if all.is_empty() {
        return Ok(());
    }
    let shown = match top {
        0 => all.len(),
        top => top.min(all.len()),
    };
    let timed = report.summary.mode == Mode::Probe;
    writeln!(
        out,
        "\n## {}\n",
        if timed { "Slowest tasks" } else { "Tasks" }
    )?;
    if shown < all.len() {
        writeln!(
            out,
            "The {shown} busiest of {} tasks (`--top 0` shows all).\n",
            all.len()
        )?;
    }
    let tasks = &all[..shown];
    let await_point =
        |task: &report::TaskRow| task.parked_at().map_or_else(String::new, |at| code(&at));
    if !timed {
        let rows = tasks.iter().map(|&task| {
            vec![
                report::id_text(task.id),
                code(&task.name),
                task.state.as_str().to_owned(),
                await_point(task),
            ]
        });
        return table(out, &["ID", "Task", "State", "Await point"], rows);
    }
    let rows = tasks.iter().map(|&task| {
        vec![
            report::id_text(task.id),
            code(&task.name),
            task.state.as_str().to_owned(),
            task.polls.to_string(),
            readable::duration(task.busy_ns),
            readable::duration(task.scheduled_ns),
            readable::duration(task.idle_ns),
            task.wakes.to_string(),
            await_point(task),
        ]
    });
    table(
        out,
        &[
            "ID",
            "Task",
            "State",
            "Polls",
            "Busy",
            "Scheduled",
            "Idle",
            "Wakes",
            "Await point",
        ],
        rows,
    )
}

fn deadlocks(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    if report.deadlocks.is_empty() {
        return Ok(());
    }
    writeln!(out, "\n## Deadlocks")?;
    for (number, deadlock) in report.deadlocks.iter().enumerate() {
        writeln!(
            out,
            "\n**Deadlock {}**: {} tasks wait for each other, each for the next.\n",
            number + 1,
            deadlock.tasks.len()
        )?;
        table(
            out,
            &["Task", "Waits for", "At", "Holding"],
            deadlock.details.iter().map(waiter),
        )?;
    }
    Ok(())
}

fn chains(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    if report.chains.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "\n## Wait chains\n\nWaits on locks held by tasks that are themselves waiting.\n"
    )?;
    let rows = report.chains.iter().map(|chain| {
        let mut row = waiter(&chain.waiter);
        row.push(format!(
            "{} {}",
            report::id_text(chain.holder),
            code(&chain.holder_name)
        ));
        row.push(chain.holder_leaf.as_deref().map(text).unwrap_or_default());
        row
    });
    table(
        out,
        &["Task", "Waits for", "At", "Holding", "Held by", "Which is"],
        rows,
    )
}

/// A waiting task's cells: who, for what, where, and what it keeps locked meanwhile.
fn waiter(waiter: &WaiterRow) -> Vec<String> {
    let holds: Vec<String> = waiter
        .holds
        .iter()
        .map(|held| {
            format!(
                "{} across the await at {}",
                code(&held.resource.to_string()),
                code(&readable::location(held.file.as_deref(), held.line))
            )
        })
        .collect();
    vec![
        format!("{} {}", report::id_text(waiter.task), code(&waiter.name)),
        code(&waiter.waits_on.to_string()),
        waiter.at.as_ref().map_or_else(String::new, |at| {
            code(&readable::location(at.file.as_deref(), at.line))
        }),
        holds.join("; "),
    ]
}

fn warnings(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    if report.warnings.is_empty() {
        return Ok(());
    }
    writeln!(out, "\n## Warnings\n")?;
    for warning in &report.warnings {
        let task = warning.task.map_or_else(String::new, |id| {
            match report.tasks.iter().find(|task| task.id == Some(id)) {
                Some(task) => format!(", task {id} {}", code(&task.name)),
                None => format!(", task {id}"),
            }
        });
        // A backslash at the end of a line breaks it inside the list item.
        writeln!(
            out,
            "- **{}**{task}: {}\\\n  {}",
            code(warning.kind),
            text(&warning.summary),
            text(&warning.detail)
        )?;
    }
    Ok(())
}

fn threads(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    if report.workers.is_empty() || report.summary.mode != Mode::Probe {
        return Ok(());
    }
    writeln!(out, "\n## Threads\n\nEvery thread that polled tasks.\n")?;
    let rows = report.workers.iter().map(|worker| {
        vec![
            worker.tid.to_string(),
            worker.polls.to_string(),
            format!("{:.1}%", worker.busy_percent(report.summary.duration_ns)),
            readable::duration(worker.longest_poll_ns),
            worker
                .longest_poll_name
                .as_ref()
                .map_or_else(String::new, |name| {
                    format!(
                        "{} {}",
                        report::id_text(worker.longest_poll_task),
                        code(name)
                    )
                }),
        ]
    });
    table(
        out,
        &["Thread", "Polls", "Polling", "Longest poll", "By task"],
        rows,
    )
}

/// A table; `|` in a cell is escaped, also inside code spans (GitHub reads `\|` there too).
fn table(
    out: &mut dyn Write,
    header: &[&str],
    rows: impl Iterator<Item = Vec<String>>,
) -> io::Result<()> {
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let cells: Vec<String> = cells
            .map(|cell| cell.replace('|', "\\|").replace(['\n', '\r'], " "))
            .collect();
        format!("| {} |", cells.join(" | "))
    };
    writeln!(out, "{}", line(&mut header.iter().copied()))?;
    writeln!(out, "|{}", "---|".repeat(header.len()))?;
    for row in rows {
        writeln!(out, "{}", line(&mut row.iter().map(String::as_str)))?;
    }
    Ok(())
}

/// Text drawn for a terminal, verbatim but for the margin it had there: a fence longer than any
/// run of backticks inside.
fn fenced(out: &mut dyn Write, body: &[u8]) -> io::Result<()> {
    let body = String::from_utf8_lossy(body);
    let body = body.trim_matches('\n');
    let margin = body
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.len() - line.trim_start_matches(' ').len())
        .min()
        .unwrap_or(0);
    let body: Vec<&str> = body
        .lines()
        .map(|line| line.get(margin..).unwrap_or(""))
        .collect();
    let body = body.join("\n");
    let longest = body.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    writeln!(out, "\n{fence}text\n{body}\n{fence}")
}

/// Prose that may hold Markdown's punctuation (Rust paths have `<`, `>`, `*`, `[`).
fn text(prose: &str) -> String {
    let mut escaped = String::with_capacity(prose.len());
    for c in prose.chars() {
        if matches!(c, '\\' | '`' | '*' | '_' | '<' | '>' | '[' | ']') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// A name or a location, verbatim: a code span, delimited by more backticks than it holds.
fn code(verbatim: &str) -> String {
    if !verbatim.contains('`') {
        return format!("`{verbatim}`");
    }
    let longest = verbatim
        .split(|c| c != '`')
        .map(str::len)
        .max()
        .unwrap_or(0);
    let ticks = "`".repeat(longest + 1);
    format!("{ticks} {verbatim} {ticks}")
}

/// A small run for every renderer's tests: a server that spawned three handlers and 500
/// identical workers, a handler stuck with a backtrace and a warning that spawned a flush, and
/// two top-level transfers in a deadlock, over two seconds.
#[cfg(test)]
pub(crate) mod fixtures {
    use crate::{
        analyze::{backtrace::Frame, backtrace::Resource, lints::Warning},
        model::TaskState,
        report::{
            AwaitPoint, DeadlockRow, HeldRow, Mode, Report, StuckRow, Summary, TaskRow, Wait,
            WaiterRow, WorkerRow,
        },
        resolve::NamingSource,
    };

    const MS: u64 = 1_000_000;

    /// A task with no activity; tests set what they look at.
    pub(crate) fn task(
        id: u64,
        name: &str,
        state: TaskState,
        parent: Option<u64>,
        spawned_ns: Option<u64>,
        ended_ns: Option<u64>,
    ) -> TaskRow {
        TaskRow {
            id: Some(id),
            name: name.to_owned(),
            spawned_at: Vec::new(),
            internal: false,
            state,
            polls: 0,
            busy_ns: 0,
            scheduled_ns: 0,
            idle_ns: 0,
            wakes: 0,
            self_wakes: 0,
            spawned_ns,
            ended_ns,
            max_poll_ns: 0,
            live_wakers: None,
            parent,
            header: format!("{:#x}", 0x1000 + id * 0x100),
            await_point: None,
            backtrace: Vec::new().into(),
            no_backtrace: None,
            wait: Wait::default(),
            poll_histogram: Vec::new(),
            scheduled_histogram: Vec::new(),
            woken_by: Vec::new(),
        }
    }

    /// A probe run of `duration_ns` that saw nothing.
    pub(crate) fn empty(duration_ns: u64) -> Report {
        Report {
            summary: Summary {
                mode: Mode::Probe,
                target: "inspect_demo".to_owned(),
                pid: 4242,
                duration_ns,
                tasks: 0,
                peak_concurrency: 0,
                completed: 0,
                cancelled: 0,
                panicked: 0,
                live_at_end: 0,
                folded: 0,
                runtime_workers: 0,
                internal_tasks: 0,
                events: 0,
                dropped: 0,
                dropped_per_cpu: Vec::new(),
                undecodable: 0,
                unmatched_poll_ends: 0,
                lost_frees: 0,
                naming: NamingSource::Dwarf,
                debuginfo: true,
                probe_points: 12,
                links: 3,
                perf_event_uprobes: false,
                overhead: None,
                target_exit: None,
                exec_into: None,
                notes: Vec::new(),
            },
            tasks: Vec::new(),
            stuck: Vec::new(),
            warnings: Vec::new(),
            deadlocks: Vec::new(),
            chains: Vec::new(),
            workers: Vec::new(),
            folded_types: Vec::new(),
        }
    }

    fn at(function: &str, line: u64) -> AwaitPoint {
        AwaitPoint {
            file: Some("/work/inspect_demo/src/main.rs".into()),
            line: Some(line),
            function: function.into(),
        }
    }

    fn frame(function: &str, line: Option<u64>) -> Frame {
        Frame {
            function: function.into(),
            file: line.map(|_| "/work/inspect_demo/src/main.rs".into()),
            line,
            leaf: None,
            locals: Box::default(),
            holds: Box::default(),
            waits_on: None,
            bound: None,
        }
    }

    fn waiter(task: u64, waits_on: u64, holds: u64, line: u64) -> WaiterRow {
        WaiterRow {
            task: Some(task),
            name: "inspect_demo::transfer".to_owned(),
            waits_on: Resource::Mutex { address: waits_on },
            at: Some(at("inspect_demo::transfer", line)),
            holds: vec![HeldRow {
                resource: Resource::Mutex { address: holds },
                function: "inspect_demo::transfer".into(),
                file: Some("/work/inspect_demo/src/main.rs".into()),
                line: Some(line - 1),
            }],
        }
    }

    pub(crate) fn report() -> Report {
        let mut report = empty(2_000 * MS);
        let mut server = task(1, "inspect_demo::server", TaskState::Idle, None, None, None);
        server.polls = 120;
        server.busy_ns = 40 * MS;
        server.await_point = Some(at("inspect_demo::server", 20));
        let mut handlers = [
            task(
                2,
                "inspect_demo::handler",
                TaskState::Completed,
                Some(1),
                Some(0),
                Some(1_000 * MS),
            ),
            task(
                3,
                "inspect_demo::handler",
                TaskState::Completed,
                Some(1),
                Some(500 * MS),
                Some(1_500 * MS),
            ),
            task(
                4,
                "inspect_demo::handler",
                TaskState::Idle,
                Some(1),
                Some(200 * MS),
                None,
            ),
        ];
        for (handler, busy) in handlers.iter_mut().zip([30, 20, 10]) {
            handler.polls = busy;
            handler.busy_ns = busy * MS;
            handler.await_point = Some(at("inspect_demo::handler", 40));
        }
        let stuck_backtrace = vec![
            frame("inspect_demo::handler", Some(40)),
            frame("inspect_demo::lookup", Some(55)),
            Frame {
                leaf: Some("waiting for a message on a tokio::sync::mpsc channel".into()),
                ..frame("tokio::sync::mpsc::Receiver<T>::recv", None)
            },
        ];
        handlers[2].backtrace = stuck_backtrace.clone().into();
        let flush = task(
            10,
            "inspect_demo::flush::{closure#0}",
            TaskState::Idle,
            Some(4),
            Some(300 * MS),
            None,
        );
        let workers = (0..500).map(|n| {
            let spawned = n * 2 * MS;
            let mut worker = task(
                100 + n,
                "inspect_demo::worker",
                TaskState::Completed,
                Some(1),
                Some(spawned),
                Some(spawned + MS / 2),
            );
            worker.polls = 1;
            worker.busy_ns = 10_000;
            worker
        });
        let transfers = [7, 8].map(|id| {
            let mut transfer = task(
                id,
                "inspect_demo::transfer",
                TaskState::Idle,
                None,
                None,
                None,
            );
            transfer.busy_ns = MS;
            transfer
        });
        report.tasks = [server]
            .into_iter()
            .chain(handlers)
            .chain([flush])
            .chain(workers)
            .chain(transfers)
            .collect();
        report
            .tasks
            .sort_by(|a, b| b.busy_ns.cmp(&a.busy_ns).then(a.id.cmp(&b.id)));

        report.stuck = vec![StuckRow {
            id: Some(4),
            name: "inspect_demo::handler".to_owned(),
            spawned_at: vec!["demo/src/main.rs:40".to_owned()],
            idle_ns: 1_500 * MS,
            leaf: Some("waiting for a message on a tokio::sync::mpsc channel".into()),
            backtrace: stuck_backtrace.into(),
            no_backtrace: None,
            wait: Wait {
                can_wait_forever: true,
                wrap_at: Some(at("inspect_demo::lookup", 55)),
                ..Wait::default()
            },
        }];
        report.warnings = vec![Warning {
            kind: "lost_waker",
            task_index: None,
            task: Some(4),
            summary: "task is idle and no waker for it exists: nothing can ever wake it".to_owned(),
            detail: "idle 1.50s at inspect_demo/src/main.rs:40 | no live waker".to_owned(),
        }];
        report.deadlocks = vec![DeadlockRow {
            tasks: vec![Some(7), Some(8)],
            locks: vec![
                Resource::Mutex { address: 0xa0 },
                Resource::Mutex { address: 0xb0 },
            ],
            details: vec![waiter(7, 0xa0, 0xb0, 71), waiter(8, 0xb0, 0xa0, 81)],
        }];
        report.workers = vec![
            WorkerRow {
                tid: 4243,
                polls: 400,
                busy_ns: 60 * MS,
                longest_poll_ns: 5 * MS,
                longest_poll_task: Some(2),
                longest_poll_name: Some("inspect_demo::handler".to_owned()),
            },
            WorkerRow {
                tid: 4244,
                polls: 232,
                busy_ns: 47 * MS,
                longest_poll_ns: 3 * MS,
                longest_poll_task: Some(1),
                longest_poll_name: Some("inspect_demo::server".to_owned()),
            },
        ];
        let s = &mut report.summary;
        s.tasks = report.tasks.len();
        s.peak_concurrency = 8;
        s.completed = report
            .tasks
            .iter()
            .filter(|t| t.state == TaskState::Completed)
            .count();
        s.live_at_end = report
            .tasks
            .iter()
            .filter(|t| !t.state.is_terminal())
            .count();
        s.events = 12_345;
        s.notes = vec!["target built without frame pointers | backtraces from DWARF".to_owned()];
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn markdown(report: &Report, top: usize) -> String {
        let mut out = Vec::new();
        write(report, top, 10_000_000_000, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn headings(markdown: &str) -> Vec<&str> {
        markdown
            .lines()
            .filter(|line| line.starts_with('#'))
            .collect()
    }

    /// The rows of the table right after `heading` (header and delimiter left out).
    fn table_rows<'a>(markdown: &'a str, heading: &str) -> Vec<&'a str> {
        let after = &markdown[markdown.find(heading).unwrap()..];
        after
            .lines()
            .skip_while(|line| !line.starts_with('|'))
            .take_while(|line| line.starts_with('|'))
            .skip(2)
            .collect()
    }

    #[test]
    fn every_section_of_a_full_report() {
        let md = markdown(&fixtures::report(), 5);
        println!("{md}");
        assert_eq!(
            headings(&md),
            [
                "# async-inspect report: inspect\\_demo",
                "## Summary",
                "## Slowest tasks",
                "## Deadlocks",
                "## Warnings",
                "## Stuck tasks",
                "## Threads",
                "## Task tree",
                "## Concurrency over time",
            ]
        );
        let summary = table_rows(&md, "## Summary");
        assert!(
            summary.contains(&"| target | `inspect_demo` |"),
            "{summary:?}"
        );
        assert!(summary.contains(&"| pid | 4242 |"));
        assert!(summary.contains(&"| duration | 2.00s |"));
        assert!(summary.contains(&"| tasks seen | 507 |"));
        assert!(summary.contains(&"| task names from | DWARF |"));
        // The note's pipe would otherwise split the row.
        assert!(
            summary.contains(
                &"| note | target built without frame pointers \\| backtraces from DWARF |"
            )
        );

        // A stuck task says where tasks of its type are spawned, under its backtrace.
        assert!(
            md.contains("\n    spawned at demo/src/main.rs:40\n"),
            "{md}"
        );

        let slowest = table_rows(&md, "## Slowest tasks");
        assert_eq!(slowest.len(), 5, "--top rows: {slowest:?}");
        assert!(md.contains("The 5 busiest of 507 tasks"));
        assert_eq!(
            slowest[0],
            "| 1 | `inspect_demo::server` | idle | 120 | 40.0ms | 0ns | 0ns | 0 | `inspect_demo/src/main.rs:20` |"
        );
        // A finished task's last await point is not shown as where it is.
        assert!(
            slowest[1].starts_with("| 2 |") && slowest[1].ends_with("| 0 |  |"),
            "{}",
            slowest[1]
        );

        let deadlock = table_rows(&md, "## Deadlocks");
        assert_eq!(deadlock.len(), 2);
        assert!(deadlock[0].starts_with(
            "| 7 `inspect_demo::transfer` | `tokio::sync::Mutex 0xa0` | `inspect_demo/src/main.rs:71` | `tokio::sync::Mutex 0xb0` across"
        ), "{}", deadlock[0]);
        assert!(md.contains(
            "- **`lost_waker`**, task 4 `inspect_demo::handler`: task is idle and no waker for it exists: nothing can ever wake it\\\n  idle 1.50s"
        ));
        assert!(
            md.contains("\n```text\nstuck: 1 task(s) idle for more than 10.00s"),
            "{md}"
        );
        assert!(md.contains("\n    at tokio::sync::mpsc::Receiver<T>::recv\n"));
        assert!(md.contains(
            "\n    no timeout on this path: it can wait forever (wrap the await at \
             inspect_demo/src/main.rs:55 in tokio::time::timeout)\n"
        ));
        assert_eq!(table_rows(&md, "## Threads").len(), 2);
        assert!(md.contains("\n```text\ntask 1 inspect_demo::server [idle] busy 40.0ms\n├─ "));
        assert!(md.contains("500 × inspect_demo::worker [completed]"));
        assert!(
            md.contains("\n```text\ninspect_demo::worker "),
            "heatmap fence: {md}"
        );
        // Every fence is closed.
        assert_eq!(md.matches("```").count() % 2, 0);
    }

    #[test]
    fn empty_sections_are_left_out() {
        let mut report = fixtures::report();
        report.deadlocks.clear();
        report.warnings.clear();
        report.stuck.clear();
        report.workers.clear();
        for task in &mut report.tasks {
            task.parent = None;
        }
        let md = markdown(&report, 0);
        assert_eq!(
            headings(&md),
            [
                "# async-inspect report: inspect\\_demo",
                "## Summary",
                "## Slowest tasks",
                "## Concurrency over time",
            ]
        );
        assert_eq!(
            table_rows(&md, "## Slowest tasks").len(),
            507,
            "--top 0 shows all"
        );
        assert!(!md.contains("busiest of"));

        let md = markdown(&fixtures::empty(0), 20);
        assert_eq!(
            headings(&md),
            ["# async-inspect report: inspect\\_demo", "## Summary"]
        );
        assert!(!md.contains("```"));
    }

    #[test]
    fn a_snapshot_lists_states_and_await_points_only() {
        let mut report = fixtures::report();
        report.summary.mode = Mode::Dump;
        let md = markdown(&report, 3);
        assert!(headings(&md).contains(&"## Tasks"));
        assert!(!md.contains("## Threads") && !md.contains("## Concurrency over time"));
        let rows = table_rows(&md, "## Tasks");
        assert_eq!(
            rows[0],
            "| 1 | `inspect_demo::server` | idle | `inspect_demo/src/main.rs:20` |"
        );
    }

    #[test]
    fn markdown_punctuation_is_escaped() {
        assert_eq!(
            text("Pin<Box<dyn Future>> *x_y* [a]"),
            "Pin\\<Box\\<dyn Future\\>\\> \\*x\\_y\\* \\[a\\]"
        );
        assert_eq!(code("a`b"), "`` a`b ``");
        let mut out = Vec::new();
        table(&mut out, &["A"], [vec![code("a|b")]].into_iter()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "| A |\n|---|\n| `a\\|b` |\n"
        );
    }
}
