//! The views drawn into a test terminal, and the state driven by keys, on a small report built
//! by hand.

use ratatui::{
    Terminal,
    backend::TestBackend,
    crossterm::event::{KeyCode, KeyEvent, KeyModifiers},
    layout::Rect,
};

use super::{
    Action,
    app::{App, Column, View},
    ui,
};
use crate::present::markdown::fixtures;
use crate::{
    analyze::{
        backtrace::{Frame, Local, Resource},
        lints::Warning,
    },
    model::TaskState,
    report::{
        AwaitPoint, Bucket, ChainRow, DeadlockRow, HeldRow, Report, Summary, TaskRow, WaiterRow,
        WakerRow, WorkerRow,
    },
};

const MUTEX_A: Resource = Resource::Mutex { address: 0xa000 };
const MUTEX_B: Resource = Resource::Mutex { address: 0xb000 };

fn task(id: u64, name: &str, state: TaskState, busy_ns: u64) -> TaskRow {
    TaskRow {
        polls: busy_ns / 1000,
        busy_ns,
        header: format!("{:#x}", 0x7f00_0000 + id * 0x100),
        ..fixtures::task(id, name, state, None, None, None)
    }
}

fn waiting_at(mut task: TaskRow, file: &str, line: u64) -> TaskRow {
    task.await_point = Some(AwaitPoint {
        file: Some(format!("/home/dev/demo/src/{file}").into()),
        line: Some(line),
        function: format!("demo::{}", task.name.trim_start_matches("app::")).into(),
    });
    task
}

fn frame(function: &str, file: &str, line: u64) -> Frame {
    Frame {
        function: function.into(),
        file: Some(file.into()),
        line: Some(line),
        leaf: None,
        locals: Box::default(),
        holds: Box::default(),
        waits_on: None,
        bound: None,
    }
}

fn summary(tasks: &[TaskRow]) -> Summary {
    Summary {
        target: "demo".to_owned(),
        tasks: tasks.len(),
        peak_concurrency: tasks.len(),
        live_at_end: tasks.iter().filter(|t| !t.state.is_terminal()).count(),
        folded: 0,
        events: 10_000,
        probe_points: 312,
        ..fixtures::empty(2_000_000_000).summary
    }
}

/// Just tasks: nothing diagnosed.
fn plain(tasks: Vec<TaskRow>) -> Report {
    Report {
        summary: summary(&tasks),
        tasks,
        stuck: Vec::new(),
        warnings: Vec::new(),
        deadlocks: Vec::new(),
        chains: Vec::new(),
        workers: Vec::new(),
        folded_types: Vec::new(),
    }
}

fn waiter(task: &TaskRow, waits_on: Resource, file: &str, line: u64, holds: Resource) -> WaiterRow {
    WaiterRow {
        task: task.id,
        name: task.name.clone(),
        waits_on,
        at: Some(AwaitPoint {
            file: Some(format!("/home/dev/demo/src/{file}").into()),
            line: Some(line),
            function: task.name.as_str().into(),
        }),
        holds: vec![HeldRow {
            resource: holds,
            function: task.name.as_str().into(),
            file: Some(format!("/home/dev/demo/src/{file}").into()),
            line: Some(line - 2),
        }],
    }
}

/// Five tasks busiest first (as the report sorts them): a handler with a warning and a full
/// history, two tasks deadlocked on each other's mutex, an accept loop blocked behind one of
/// them, and a finished task.
fn fixture() -> Report {
    let mut handler = waiting_at(
        task(2, "app::handler", TaskState::Running, 50_000_000),
        "handler.rs",
        33,
    );
    handler.parent = Some(1);
    handler.spawned_ns = Some(1_200_000_000);
    handler.max_poll_ns = 12_300_000;
    handler.live_wakers = Some(1);
    handler.wakes = 40;
    handler.self_wakes = 2;
    handler.backtrace = vec![
        Frame {
            locals: vec![Local {
                name: "request".into(),
                value: "42".to_owned(),
            }]
            .into(),
            ..frame(
                "demo::handler::{async_fn_env#0}",
                "/home/dev/demo/src/handler.rs",
                33,
            )
        },
        Frame {
            leaf: Some("waiting for a tokio::sync::Mutex".into()),
            waits_on: Some(MUTEX_A),
            ..frame(
                "tokio::sync::mutex::Mutex::lock",
                "/root/.cargo/registry/src/index/tokio-1.54.1/src/sync/mutex.rs",
                3,
            )
        },
    ]
    .into();
    handler.poll_histogram = vec![
        Bucket {
            below_ns: Some(4_096),
            count: 120,
        },
        Bucket {
            below_ns: Some(16_384),
            count: 30,
        },
        Bucket {
            below_ns: None,
            count: 1,
        },
    ];
    handler.scheduled_histogram = vec![Bucket {
        below_ns: Some(2_048),
        count: 77,
    }];
    handler.spawned_at = vec!["demo/src/main.rs:20".to_owned()];
    handler.woken_by = vec![
        WakerRow {
            task: Some(1),
            name: "app::accept_loop".to_owned(),
            wakes: 38,
        },
        WakerRow {
            task: None,
            name: "(outside any task)".to_owned(),
            wakes: 2,
        },
    ];
    let mut flush = waiting_at(
        task(5, "app::flush", TaskState::Completed, 20_000_000),
        "flush.rs",
        9,
    );
    flush.ended_ns = Some(1_500_000_000);
    let accept = waiting_at(
        task(1, "app::accept_loop", TaskState::Idle, 5_000_000),
        "main.rs",
        20,
    );
    let audit = waiting_at(
        task(3, "app::audit", TaskState::Idle, 1_000_000),
        "audit.rs",
        14,
    );
    let ledger = waiting_at(
        task(4, "app::ledger", TaskState::Idle, 500_000),
        "ledger.rs",
        71,
    );
    let deadlock = DeadlockRow {
        tasks: vec![audit.id, ledger.id],
        locks: vec![MUTEX_B, MUTEX_A],
        details: vec![
            waiter(&audit, MUTEX_B, "audit.rs", 14, MUTEX_A),
            waiter(&ledger, MUTEX_A, "ledger.rs", 71, MUTEX_B),
        ],
    };
    let chain = ChainRow {
        waiter: waiter(&accept, MUTEX_A, "main.rs", 20, MUTEX_A),
        holder: audit.id,
        holder_name: audit.name.clone(),
        holder_leaf: Some("waiting for tokio::sync::Mutex 0xb000".to_owned()),
    };
    let warnings = vec![
        Warning {
            kind: "long_poll",
            task_index: Some(0),
            task: Some(2),
            summary: "a poll blocked its worker thread (app::handler)".to_owned(),
            detail: "its longest poll took 12.3ms: every task queued on that worker waited as long"
                .to_owned(),
        },
        Warning {
            kind: "task_leak",
            task_index: None,
            task: None,
            summary: "tasks of one type pile up without finishing (app::session)".to_owned(),
            detail: "800 live app::session tasks and none finished while observed".to_owned(),
        },
    ];
    let workers = vec![
        WorkerRow {
            tid: 4243,
            polls: 900,
            busy_ns: 1_000_000_000,
            longest_poll_ns: 12_300_000,
            longest_poll_task: Some(2),
            longest_poll_name: Some("app::handler".to_owned()),
        },
        WorkerRow {
            tid: 4244,
            polls: 300,
            busy_ns: 100_000_000,
            longest_poll_ns: 900_000,
            longest_poll_task: Some(1),
            longest_poll_name: Some("app::accept_loop".to_owned()),
        },
    ];
    let mut report = plain(vec![handler, flush, accept, audit, ledger]);
    report.summary.dropped = 3;
    report.warnings = warnings;
    report.deadlocks = vec![deadlock];
    report.chains = vec![chain];
    report.workers = workers;
    report
}

fn app_with(report: Report) -> App {
    let mut app = App::default();
    app.status = "312 probe points attached to pid 4242 (9 task types); q to stop".to_owned();
    app.resize(Rect::new(0, 0, 150, 40));
    app.update(report);
    app
}

/// The screen as text, one string per row.
fn render(app: &mut App, width: u16, height: u16) -> Vec<String> {
    app.resize(Rect::new(0, 0, width, height));
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("a test terminal");
    terminal
        .draw(|frame| ui::draw(frame, app))
        .expect("drawing to a test terminal");
    let buffer = terminal.backend().buffer();
    (0..height)
        .map(|y| (0..width).map(|x| buffer[(x, y)].symbol()).collect())
        .collect()
}

fn text(screen: &[String]) -> String {
    screen.join("\n")
}

/// The screen row that mentions `needle`, which must be there.
fn row_of(screen: &[String], needle: &str) -> usize {
    screen
        .iter()
        .position(|line| line.contains(needle))
        .unwrap_or_else(|| panic!("`{needle}` is not on the screen:\n{}", text(screen)))
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn press(app: &mut App, keys: &str) -> Action {
    let mut action = Action::Continue;
    for c in keys.chars() {
        action = app.on_key(key(KeyCode::Char(c)));
    }
    action
}

fn names(app: &App) -> Vec<&str> {
    let report = app.report.as_ref().expect("a report");
    app.order
        .iter()
        .map(|&task| report.tasks[task].name.as_str())
        .collect()
}

fn selected_name(app: &App) -> &str {
    let report = app.report.as_ref().expect("a report");
    &report.tasks[app.selected_task().expect("a selection")].name
}

// Rendering.

#[test]
fn the_table_shows_every_task_busiest_first() {
    let mut app = app_with(fixture());
    let screen = render(&mut app, 150, 20);
    let handler = row_of(&screen, "app::handler");
    let flush = row_of(&screen, "app::flush");
    let accept = row_of(&screen, "app::accept_loop");
    assert!(handler < flush && flush < accept, "{}", text(&screen));
    for column in Column::ALL {
        assert!(screen.iter().any(|line| line.contains(column.title())));
    }
    assert!(screen[handler].contains("running"));
    assert!(screen[handler].contains("50.0ms"));
    assert!(screen[handler].contains("demo/src/handler.rs:33"));
    assert!(screen[accept].contains("idle"));
    assert!(screen[accept].contains("demo/src/main.rs:20"));
    assert!(text(&screen).contains("BUSY▼"));
    assert!(text(&screen).contains("sorted by BUSY ▼"));
}

#[test]
fn an_ended_task_shows_no_await_point() {
    let mut app = app_with(fixture());
    let screen = render(&mut app, 150, 20);
    let flush = row_of(&screen, "app::flush");
    assert!(screen[flush].contains("completed"));
    assert!(!screen[flush].contains("flush.rs"), "{}", screen[flush]);
}

#[test]
fn deadlocked_and_warned_tasks_are_marked() {
    let mut app = app_with(fixture());
    let screen = render(&mut app, 150, 20);
    let marker = |name: &str| {
        let line = &screen[row_of(&screen, name)];
        line.chars().nth(1).expect("a marker column")
    };
    assert_eq!(marker("app::audit"), '✖');
    assert_eq!(marker("app::ledger"), '✖');
    assert_eq!(marker("app::handler"), '⚠');
    assert_eq!(marker("app::flush"), ' ');
}

#[test]
fn the_header_sums_up_the_run() {
    let mut app = app_with(fixture());
    let screen = render(&mut app, 150, 20);
    let header = &screen[0];
    for expected in [
        "demo (pid 4242)",
        "2.00s",
        "tasks 4 live / 5 seen",
        "5.0k events/s",
        "dropped 3",
        "✖ 1 deadlock",
        "1 blocked wait",
        "⚠ 2 warnings",
    ] {
        assert!(header.contains(expected), "`{expected}` not in {header}");
    }
    // Trouble comes first, so that a narrow terminal does not cut it off.
    assert!(header.find("⚠ 2 warnings") < header.find("2.00s"));
    assert!(screen[1].contains("312 probe points attached to pid 4242"));
    assert!(text(&screen).contains("q quit"));
}

#[test]
fn sorting_by_name_reorders_the_rows() {
    let mut app = app_with(fixture());
    press(&mut app, "3");
    let screen = render(&mut app, 150, 20);
    let rows: Vec<usize> = [
        "app::accept_loop",
        "app::audit",
        "app::flush",
        "app::handler",
        "app::ledger",
    ]
    .iter()
    .map(|name| row_of(&screen, name))
    .collect();
    assert!(rows.is_sorted(), "{}", text(&screen));
    assert!(text(&screen).contains("NAME▲"));
}

#[test]
fn the_filter_hides_rows_that_do_not_match() {
    let mut app = app_with(fixture());
    press(&mut app, "/idle");
    let typing = render(&mut app, 150, 20);
    assert!(typing.last().expect("a footer").contains("filter: idle"));
    app.on_key(key(KeyCode::Enter));
    let screen = render(&mut app, 150, 20);
    let all = text(&screen);
    for shown in ["app::accept_loop", "app::audit", "app::ledger"] {
        assert!(all.contains(shown), "{all}");
    }
    for hidden in ["app::handler", "app::flush"] {
        assert!(!all.contains(hidden), "{all}");
    }
    assert!(all.contains("Tasks 3 of 5"));
    assert!(all.contains("filter \"idle\""));
}

#[test]
fn a_filter_that_matches_nothing_says_so() {
    let mut app = app_with(fixture());
    press(&mut app, "/nothing-like-this");
    let all = text(&render(&mut app, 150, 20));
    assert!(all.contains("no task matches the filter"), "{all}");
}

#[test]
fn the_detail_view_shows_everything_about_a_task() {
    let mut app = app_with(fixture());
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.view, View::Detail);
    let screen = render(&mut app, 120, 60);
    let all = text(&screen);
    for expected in [
        "task 2 app::handler",
        "state running",
        "parent task 1 app::accept_loop",
        "spawned at 1.20s",
        "ended no, still live",
        "polls 50000",
        "busy 50.0ms",
        "longest poll 12.3ms",
        "live wakers 1",
        "wakes 40",
        "self-wakes 2",
        // The backtrace, innermost first, then the frame that awaits it.
        "  waiting for a tokio::sync::Mutex",
        "at tokio::sync::mutex::Mutex::lock (tokio-1.54.1/src/sync/mutex.rs:3)",
        "<- demo::handler::{async_fn_env#0} (demo/src/handler.rs:33) [request = 42]",
        // Where its type is spawned.
        "spawned from demo/src/main.rs:20",
        // Who woke it.
        "38 wakes  task 1 app::accept_loop",
        " 2 wakes  (outside any task)",
        // Both histograms, labelled by their bounds.
        "< 4.1us",
        "< 16.4us",
        "≥ 4.29s",
        "< 2.0us",
        // Its warning, in full.
        "⚠ long_poll: a poll blocked its worker thread (app::handler)",
        "its longest poll took 12.3ms",
    ] {
        assert!(all.contains(expected), "`{expected}` not in\n{all}");
    }
    let leaf = row_of(&screen, "  waiting for a tokio::sync::Mutex");
    let innermost = row_of(&screen, "at tokio::sync::mutex::Mutex::lock");
    let caller = row_of(&screen, "<- demo::handler");
    assert!(leaf < innermost && innermost < caller);
    let poll = row_of(&screen, "Poll times");
    let latency = row_of(&screen, "Scheduling latency");
    assert!(poll < row_of(&screen, "< 16.4us") && row_of(&screen, "< 16.4us") < latency);
    assert!(screen[row_of(&screen, "< 4.1us")].contains("120"));
}

#[test]
fn the_detail_view_of_a_deadlocked_task_shows_the_cycle() {
    let mut app = app_with(fixture());
    press(&mut app, "3"); // by name: accept_loop, audit, …
    app.on_key(key(KeyCode::Down));
    app.on_key(key(KeyCode::Enter));
    let all = text(&render(&mut app, 160, 60));
    assert!(all.contains("task 3 app::audit"));
    assert!(
        all.contains("✖ DEADLOCK: 2 tasks wait for each other"),
        "{all}"
    );
    assert!(all.contains("task 4 app::ledger waits for tokio::sync::Mutex 0xa000"));
    assert!(all.contains("blocked wait"), "{all}");
}

#[test]
fn long_frames_wrap_and_held_locks_show_under_their_frame() {
    let mut report = fixture();
    let audit = report
        .tasks
        .iter_mut()
        .find(|t| t.name == "app::audit")
        .expect("audit");
    audit.backtrace = vec![Frame {
        holds: vec![MUTEX_A].into(),
        locals: (0..6)
            .map(|n| Local {
                name: format!("local_{n}").into(),
                value: format!("value_{n}"),
            })
            .collect(),
        ..frame(
            "demo::audit::{async_fn_env#0}",
            "/home/dev/demo/src/audit.rs",
            14,
        )
    }]
    .into();
    let mut app = app_with(report);
    press(&mut app, "3j");
    app.on_key(key(KeyCode::Enter));
    let screen = render(&mut app, 60, 40);
    let first = row_of(&screen, "at demo::audit::{async_fn_env#0}");
    assert!(
        screen[first + 1].contains("│     (demo/src/audit.rs:14) [local_0 = value_0"),
        "{}",
        text(&screen)
    );
    assert!(
        text(&screen).contains("local_5 = value_5]"),
        "{}",
        text(&screen)
    );
    let held = row_of(
        &screen,
        "holding tokio::sync::Mutex 0xa000 across this await",
    );
    assert!(held > first + 1);
}

#[test]
fn the_warnings_view_lists_deadlocks_chains_then_warnings() {
    let mut app = app_with(fixture());
    press(&mut app, "w");
    assert_eq!(app.view, View::Warnings);
    let screen = render(&mut app, 160, 40);
    let all = text(&screen);
    let deadlock = row_of(&screen, "✖ DEADLOCK: 2 tasks wait for each other");
    let audit = row_of(
        &screen,
        "    task 3 app::audit waits for tokio::sync::Mutex 0xb000 at demo/src/audit.rs:14, holding tokio::sync::Mutex 0xa000",
    );
    let ledger = row_of(
        &screen,
        "    task 4 app::ledger waits for tokio::sync::Mutex 0xa000",
    );
    let chain = row_of(&screen, "⚠ blocked: task 1 app::accept_loop waits for");
    let long_poll = row_of(&screen, "⚠ long_poll");
    let leak = row_of(&screen, "⚠ task_leak");
    assert!(
        deadlock < audit && audit < ledger && ledger < chain,
        "{all}"
    );
    assert!(chain < long_poll && long_poll < leak);
    assert!(screen[long_poll].contains("task 2"));
    assert!(screen[long_poll].contains("a poll blocked its worker thread"));
    // The selected entry (the deadlock) in full underneath, wrapped.
    assert!(all.contains("Each task waits for what the next one holds"));
    assert!(all.contains("demo/src/ledger.rs:69)"), "{all}");
    assert!(all.contains("Enter: details of task 3"));

    press(&mut app, "j");
    let all = text(&render(&mut app, 160, 40));
    assert!(
        all.contains("held by task 3 app::audit, which is itself waiting"),
        "{all}"
    );
    // Down past the chain: the warning's detail shows.
    press(&mut app, "j");
    let all = text(&render(&mut app, 160, 40));
    assert!(all.contains("its longest poll took 12.3ms"), "{all}");
}

#[test]
fn the_warnings_list_scrolls_to_its_end() {
    let mut report = fixture();
    let template = report.warnings[0].clone();
    report.warnings = (0..200)
        .map(|n| Warning {
            summary: format!("warning number {n}"),
            ..template.clone()
        })
        .collect();
    let mut app = app_with(report);
    press(&mut app, "wG");
    // The deadlock (3 lines) and the chain come first: 202 entries, 204 lines.
    assert_eq!(app.warnings.selected, 201);
    let screen = render(&mut app, 120, 30);
    let last = row_of(&screen, "warning number 199");
    assert!(!text(&screen).contains("DEADLOCK"));
    // The list pane ends on the last warning.
    assert!(screen[last + 1].starts_with('└'), "{}", text(&screen));
    press(&mut app, "g");
    let screen = render(&mut app, 120, 30);
    assert!(text(&screen).contains("✖ DEADLOCK"));
    // A page down from the top passes the tall deadlock entry and still shows the selection.
    app.on_key(key(KeyCode::PageDown));
    let selected = app.warnings.selected;
    let screen = render(&mut app, 120, 30);
    let number = selected - 2;
    row_of(&screen, &format!("warning number {number} "));
}

#[test]
fn the_warnings_view_says_when_all_is_well() {
    let mut app = app_with(plain(vec![task(1, "app::main", TaskState::Idle, 10)]));
    press(&mut app, "w");
    let all = text(&render(&mut app, 120, 20));
    assert!(all.contains("nothing found"), "{all}");
}

#[test]
fn the_threads_view_shows_each_worker() {
    let mut app = app_with(fixture());
    press(&mut app, "t");
    assert_eq!(app.view, View::Workers);
    let screen = render(&mut app, 150, 20);
    let first = row_of(&screen, "4243");
    let second = row_of(&screen, "4244");
    assert!(first < second);
    assert!(screen[first].contains("900"));
    assert!(screen[first].contains(" 50.0%"), "{}", screen[first]);
    assert!(screen[first].contains("12.3ms"));
    assert!(screen[first].contains("task 2 app::handler"));
    assert!(screen[first].contains("██████████"));
    assert!(screen[second].contains("  5.0%"));
}

#[test]
fn help_lists_the_keys() {
    let mut app = app_with(fixture());
    press(&mut app, "?");
    let all = text(&render(&mut app, 150, 45));
    for expected in [
        "Keys",
        "quit",
        "Ctrl-C",
        "filter",
        "invert the sort",
        "warnings, deadlocks",
        "worker threads",
        "PgUp PgDn",
        "the task is in a deadlock",
    ] {
        assert!(all.contains(expected), "`{expected}` not in\n{all}");
    }
    // Any key closes it, without acting.
    assert_eq!(press(&mut app, "w"), Action::Continue);
    assert!(!app.help);
    assert_eq!(app.view, View::Tasks);
}

#[test]
fn before_the_first_report_the_status_shows() {
    let mut app = App::default();
    app.status = "attaching".to_owned();
    let all = text(&render(&mut app, 80, 10));
    assert!(all.contains("attaching"));
    assert!(all.contains("waiting for the first events"));
}

#[test]
fn a_tiny_terminal_does_not_panic() {
    let mut app = app_with(fixture());
    for keys in ["", "\n", "w", "t", "?"] {
        let mut app_view = app_with(fixture());
        if keys == "\n" {
            app_view.on_key(key(KeyCode::Enter));
        } else {
            press(&mut app_view, keys);
        }
        for (width, height) in [(1, 1), (10, 3), (20, 6), (40, 8)] {
            render(&mut app_view, width, height);
        }
    }
    press(&mut app, "G");
    render(&mut app, 30, 4);
}

/// Ten thousand tasks: the table formats one screenful, wherever the selection is. Prints
/// how long a frame takes (`--nocapture`), for information only.
#[test]
fn ten_thousand_tasks_draw_one_screenful() {
    let tasks: Vec<TaskRow> = (0..10_000u64)
        .map(|id| {
            waiting_at(
                task(
                    id,
                    &format!("app::worker_{id}"),
                    TaskState::Idle,
                    id * 1_000,
                ),
                "worker.rs",
                id,
            )
        })
        .collect();
    let started = std::time::Instant::now();
    let mut app = app_with(plain(tasks));
    let updated = started.elapsed();
    let screen_rows = 40;
    let first = render(&mut app, 150, screen_rows);
    assert!(text(&first).contains("app::worker_9999"));
    press(&mut app, "G");
    let last = render(&mut app, 150, screen_rows);
    assert!(text(&last).contains("app::worker_0 "), "{}", text(&last));
    assert!(!text(&last).contains("app::worker_9999"));

    let mut terminal = Terminal::new(TestBackend::new(150, screen_rows)).expect("a terminal");
    let frames = 50;
    let started = std::time::Instant::now();
    for _ in 0..frames {
        terminal
            .draw(|frame| ui::draw(frame, &app))
            .expect("drawing");
    }
    println!(
        "10,000 tasks: update (sort) {:?}, one frame {:?}",
        updated,
        started.elapsed() / frames
    );
}

// Keys and state.

#[test]
fn sort_keys_pick_the_column_and_direction() {
    let mut app = app_with(fixture());
    assert_eq!(app.sort.column, Column::Busy);
    assert!(app.sort.descending);

    app.on_key(key(KeyCode::Right));
    assert_eq!(app.sort.column, Column::Sched);
    app.on_key(key(KeyCode::Left));
    press(&mut app, "h");
    assert_eq!(app.sort.column, Column::Polls);
    assert_eq!(names(&app)[0], "app::handler");
    press(&mut app, "i");
    assert!(!app.sort.descending);
    assert_eq!(names(&app)[0], "app::ledger");

    // The first column left of the first wraps round to the last.
    press(&mut app, "1h");
    assert_eq!(app.sort.column, Column::Await);
    assert_eq!(
        names(&app),
        [
            "app::audit",
            "app::handler",
            "app::ledger",
            "app::accept_loop",
            // Ended: no await point, last.
            "app::flush"
        ]
    );

    press(&mut app, "1");
    assert_eq!(app.sort.column, Column::Mark);
    assert_eq!(
        &names(&app)[..3],
        ["app::audit", "app::ledger", "app::handler"]
    );
    press(&mut app, "4");
    assert_eq!(app.sort.column, Column::State);
    assert_eq!(names(&app)[0], "app::handler");
    assert_eq!(names(&app)[4], "app::flush");
    press(&mut app, "4");
    assert_eq!(names(&app)[0], "app::flush");
}

#[test]
fn filter_typing_keeping_and_clearing() {
    let mut app = app_with(fixture());
    press(&mut app, "/AUD");
    assert!(app.editing_filter);
    assert_eq!(names(&app), ["app::audit"]);
    app.on_key(key(KeyCode::Backspace));
    app.on_key(key(KeyCode::Backspace));
    assert_eq!(app.filter, "A");
    app.on_key(key(KeyCode::Esc));
    assert!(!app.editing_filter);
    assert_eq!(app.filter, "");
    assert_eq!(names(&app).len(), 5);

    // Words must all match, each in the name, the await point or the state.
    press(&mut app, "/idle ledger.rs");
    assert_eq!(names(&app), ["app::ledger"]);
    // While typing, keys are text: q does not quit, w does not switch.
    assert_eq!(press(&mut app, "qw"), Action::Continue);
    assert_eq!(app.view, View::Tasks);
    assert!(names(&app).is_empty());
    app.on_key(key(KeyCode::Backspace));
    app.on_key(key(KeyCode::Backspace));
    app.on_key(key(KeyCode::Enter));
    assert!(!app.editing_filter);
    assert_eq!(app.filter, "idle ledger.rs");
    // Matching the await point's function too.
    press(&mut app, "/");
    for _ in 0.."idle ledger.rs".len() {
        app.on_key(key(KeyCode::Backspace));
    }
    press(&mut app, "demo::accept");
    assert_eq!(names(&app), ["app::accept_loop"]);
    app.on_key(key(KeyCode::Enter));

    // Arrows pick among the rows left while typing; chords are not text.
    press(&mut app, "/");
    for _ in 0.."demo::accept".len() {
        app.on_key(key(KeyCode::Backspace));
    }
    press(&mut app, "idle");
    app.on_key(key(KeyCode::Down));
    assert_eq!(selected_name(&app), "app::audit");
    app.on_key(KeyEvent::new(KeyCode::Char('w'), KeyModifiers::CONTROL));
    assert_eq!(app.filter, "idle");
    app.on_key(key(KeyCode::Enter));

    // Esc on the table clears a kept filter first, and only then quits.
    assert_eq!(app.on_key(key(KeyCode::Esc)), Action::Continue);
    assert_eq!(app.filter, "");
    assert_eq!(app.on_key(key(KeyCode::Esc)), Action::Quit);
}

#[test]
fn the_selection_follows_its_task_across_updates() {
    let mut app = app_with(fixture());
    app.on_key(key(KeyCode::Down));
    assert_eq!(selected_name(&app), "app::flush");

    // The next report: accept_loop got busy, and moves to the top; flush slips to third.
    let mut next = fixture();
    let accept = next
        .tasks
        .iter_mut()
        .find(|t| t.name == "app::accept_loop")
        .expect("accept_loop");
    accept.busy_ns = 900_000_000;
    app.update(next);
    assert_eq!(names(&app)[0], "app::accept_loop");
    assert_eq!(selected_name(&app), "app::flush");
    assert_eq!(app.tasks.selected, 2);

    // On the first row, the selection watches the top: the busiest task, whichever it is now.
    app.on_key(key(KeyCode::Home));
    assert_eq!(selected_name(&app), "app::accept_loop");
    app.update(fixture());
    assert_eq!(selected_name(&app), "app::handler");
    assert_eq!(app.tasks.selected, 0);

    // A task seen only by its header (no tokio id) is still told apart from its neighbours.
    let mut anonymous = fixture();
    for task in &mut anonymous.tasks {
        task.id = None;
    }
    app.update(anonymous.clone());
    app.on_key(key(KeyCode::Down));
    assert_eq!(selected_name(&app), "app::flush");
    let flush = anonymous
        .tasks
        .iter_mut()
        .find(|t| t.name == "app::flush")
        .expect("flush");
    flush.busy_ns = 0;
    app.update(anonymous);
    assert_eq!(selected_name(&app), "app::flush");
    assert_eq!(app.tasks.selected, 4);
}

#[test]
fn the_selection_survives_a_sort_and_a_filter() {
    let mut app = app_with(fixture());
    press(&mut app, "jjj");
    assert_eq!(selected_name(&app), "app::audit");
    press(&mut app, "3");
    assert_eq!(selected_name(&app), "app::audit");
    assert_eq!(app.tasks.selected, 1);
    press(&mut app, "/a");
    assert_eq!(selected_name(&app), "app::audit");
    // Filtered out: back to the top of what is left.
    press(&mut app, "ccept");
    assert_eq!(selected_name(&app), "app::accept_loop");
    assert_eq!(app.tasks.selected, 0);
}

#[test]
fn an_untouched_table_shows_the_top_after_a_sort() {
    let mut app = app_with(fixture());
    assert_eq!(selected_name(&app), "app::handler");
    press(&mut app, "3");
    assert_eq!(selected_name(&app), "app::accept_loop");
    assert_eq!((app.tasks.selected, app.tasks.offset), (0, 0));
}

#[test]
fn enter_opens_details_and_esc_goes_back() {
    let mut app = app_with(fixture());
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.view, View::Detail);
    assert_eq!(
        app.report.as_ref().expect("a report").tasks[app.detail_task().expect("a task")].name,
        "app::handler"
    );
    app.on_key(key(KeyCode::Esc));
    assert_eq!(app.view, View::Tasks);
    app.on_key(key(KeyCode::Enter));
    app.on_key(key(KeyCode::Backspace));
    assert_eq!(app.view, View::Tasks);

    // From the warnings, Enter opens the task involved and Esc comes back to the warnings.
    press(&mut app, "w");
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.view, View::Detail);
    let report = app.report.as_ref().expect("a report");
    assert_eq!(
        report.tasks[app.detail_task().expect("a task")].name,
        "app::audit"
    );
    app.on_key(key(KeyCode::Esc));
    assert_eq!(app.view, View::Warnings);
    app.on_key(key(KeyCode::Esc));
    assert_eq!(app.view, View::Tasks);

    // From the threads, Enter opens the task that held the thread longest.
    press(&mut app, "tj");
    app.on_key(key(KeyCode::Enter));
    let report = app.report.as_ref().expect("a report");
    assert_eq!(
        report.tasks[app.detail_task().expect("a task")].name,
        "app::accept_loop"
    );
    // w and t switch from anywhere, and again to come back.
    press(&mut app, "t");
    assert_eq!(app.view, View::Workers);
    press(&mut app, "t");
    assert_eq!(app.view, View::Tasks);
}

#[test]
fn quitting() {
    let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
    let mut app = app_with(fixture());
    assert_eq!(press(&mut app, "q"), Action::Quit);
    app.on_key(key(KeyCode::Enter));
    assert_eq!(press(&mut app, "q"), Action::Quit);
    assert_eq!(app.on_key(ctrl_c), Action::Quit);
    press(&mut app, "?");
    assert_eq!(press(&mut app, "q"), Action::Quit);
    press(&mut app, "w");
    assert_eq!(app.on_key(key(KeyCode::Esc)), Action::Continue);
    press(&mut app, "/");
    assert_eq!(app.on_key(ctrl_c), Action::Quit);
    // Esc in a view other than the table goes back rather than quitting.
    let mut app = app_with(fixture());
    press(&mut app, "t");
    assert_eq!(app.on_key(key(KeyCode::Esc)), Action::Continue);
    // And before any report arrived.
    assert_eq!(press(&mut App::default(), "q"), Action::Quit);
}

#[test]
fn paging_keeps_the_selection_on_screen() {
    let tasks: Vec<TaskRow> = (0..100u64)
        .map(|id| {
            task(
                id,
                &format!("app::t{id}"),
                TaskState::Idle,
                (100 - id) * 1000,
            )
        })
        .collect();
    let mut app = app_with(plain(tasks));
    // 20 rows: 2 header lines, 1 footer, 3 for the table's borders and titles.
    app.resize(Rect::new(0, 0, 120, 20));
    let page = 14;
    app.on_key(key(KeyCode::PageDown));
    assert_eq!(app.tasks.selected, page);
    assert_eq!(app.tasks.offset, 1);
    app.on_key(key(KeyCode::End));
    assert_eq!(app.tasks.selected, 99);
    assert_eq!(app.tasks.offset, 100 - page);
    app.on_key(key(KeyCode::PageUp));
    assert_eq!(app.tasks.selected, 99 - page);
    assert_eq!(app.tasks.offset, 99 - page);
    press(&mut app, "g");
    assert_eq!((app.tasks.selected, app.tasks.offset), (0, 0));
    app.on_key(key(KeyCode::Up));
    assert_eq!(app.tasks.selected, 0);

    // A filter that shrinks the list pulls the rows back onto the screen.
    press(&mut app, "G/t9");
    assert_eq!(names(&app).len(), 11);
    assert_eq!(app.tasks.offset, 0);
    let all = text(&render(&mut app, 120, 20));
    assert!(all.contains("app::t9 "), "{all}");
}

#[test]
fn detail_scrolling_stops_at_the_end() {
    let mut app = app_with(fixture());
    app.on_key(key(KeyCode::Enter));
    app.resize(Rect::new(0, 0, 120, 15));
    for _ in 0..200 {
        app.on_key(key(KeyCode::Down));
    }
    let bottom = app.detail_scroll;
    assert!(bottom > 0);
    app.on_key(key(KeyCode::Up));
    assert_eq!(app.detail_scroll, bottom - 1);
    let all = text(&render(&mut app, 120, 15));
    assert!(all.contains("lines"), "{all}");
    app.on_key(key(KeyCode::End));
    assert!(text(&render(&mut app, 120, 15)).contains("its longest poll took"));
    app.on_key(key(KeyCode::Home));
    assert_eq!(app.detail_scroll, 0);
}

#[test]
fn words_wrap_and_bars_fill_by_eighths() {
    assert_eq!(
        ui::wrap("one two three four five six", 10),
        ["one two", "three four", "five six"]
    );
    assert_eq!(ui::wrap("", 10), [""]);
    assert_eq!(ui::bar(1.0, 4), "████");
    assert_eq!(ui::bar(0.5, 4), "██  ");
    assert_eq!(ui::bar(0.0625, 2), "▏ ");
    assert_eq!(ui::bar(2.0, 2), "██");
}
