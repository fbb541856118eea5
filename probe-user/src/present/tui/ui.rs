//! The frame around every view (summary header, key hints, help overlay) and the formatting the
//! views share.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style, Stylize},
    text::{Line, Span},
    widgets::{Block, Clear, Paragraph},
};

use super::{
    app::{App, Mark, View},
    detail, tasks, warnings, workers,
};
use crate::readable::duration;
use crate::{model::TaskState, report::Report};

/// Header (summary, status), body, key hints.
pub(super) fn layout(area: Rect) -> [Rect; 3] {
    Layout::vertical([
        Constraint::Length(2),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(area)
}

/// Where the current view draws; the state sizes its pages from this too.
pub(super) fn body(area: Rect) -> Rect {
    layout(area)[1]
}

pub(super) fn draw(frame: &mut Frame, app: &App) {
    let [header, body, footer] = layout(frame.area());
    match &app.report {
        Some(report) => {
            draw_header(frame, header, app, report);
            match app.view {
                View::Tasks => tasks::draw(frame, body, app, report),
                View::Detail => detail::draw(frame, body, app, report),
                View::Warnings => warnings::draw(frame, body, app, report),
                View::Workers => workers::draw(frame, body, app, report),
            }
        }
        None => {
            let lines = vec![
                Line::from("async-inspect".bold()),
                Line::from(app.status.as_str().dim()),
            ];
            frame.render_widget(Paragraph::new(lines), header);
            frame.render_widget(
                Paragraph::new("waiting for the first events…").block(Block::bordered()),
                body,
            );
        }
    }
    draw_footer(frame, footer, app);
    if app.help {
        draw_help(frame, frame.area());
    }
}

fn draw_header(frame: &mut Frame, area: Rect, app: &App, report: &Report) {
    let summary = &report.summary;
    let seconds = (summary.duration_ns as f64 / 1e9).max(1e-9);
    let separator = || Span::raw(" · ");
    let mut spans = vec![
        "async-inspect ".bold(),
        Span::raw(format!("{} (pid {})", summary.target, summary.pid)),
    ];
    // Trouble first: on a narrow terminal the end of the line is what gets cut.
    let alarms = [
        (report.deadlocks.len(), Some(Mark::Deadlock), "deadlock"),
        (report.chains.len(), None, "blocked wait"),
        (report.warnings.len(), Some(Mark::Warning), "warning"),
    ];
    for (count, mark, what) in alarms.into_iter().filter(|(count, ..)| *count > 0) {
        let prefix = mark.map_or_else(String::new, |mark| format!("{} ", marker(mark)));
        spans.push(separator());
        spans.push(Span::styled(
            format!("{prefix}{}", plural(count, what)),
            mark_style(mark.unwrap_or(Mark::Warning)),
        ));
    }
    let dropped = format!("dropped {}", summary.dropped);
    spans.extend([
        separator(),
        Span::raw(duration(summary.duration_ns)),
        separator(),
        Span::raw(format!(
            "tasks {} live / {} seen",
            summary.live_at_end, summary.tasks
        )),
        separator(),
        Span::raw(format!(
            "{} events/s",
            rate(summary.events as f64 / seconds)
        )),
        separator(),
        if summary.dropped > 0 {
            dropped.red().bold()
        } else {
            dropped.into()
        },
    ]);
    if let Some(overhead) = &summary.overhead {
        spans.push(separator());
        spans.push(if !overhead.is_judged() {
            // An idle target makes any cost a large share: say what the probe spent.
            format!(
                "probe cost {} (target idle)",
                duration(overhead.in_target_ns() + overhead.collector_cpu_ns)
            )
            .into()
        } else {
            let cost = format!("probe cost ~{:.1}%", overhead.share_percent);
            match overhead.budget_percent {
                Some(budget) if overhead.share_percent > budget => cost.yellow(),
                _ => cost.into(),
            }
        });
        if overhead.coverage < 1.0 {
            spans.push(Span::raw(format!(
                " (sees {:.0}% of polls)",
                overhead.coverage * 100.0
            )));
        }
    }
    let lines = vec![Line::from(spans), Line::from(app.status.as_str().dim())];
    frame.render_widget(Paragraph::new(lines), area);
}

fn draw_footer(frame: &mut Frame, area: Rect, app: &App) {
    let line = if app.editing_filter {
        Line::from(vec![
            " filter: ".bold(),
            Span::raw(app.filter.as_str()),
            "█".slow_blink(),
            "   Enter keep · Esc clear · Backspace delete".dim(),
        ])
    } else {
        let hints: &[(&str, &str)] = match app.view {
            View::Tasks => &[
                ("↑↓", "select"),
                ("←→", "sort"),
                ("i", "invert"),
                ("/", "filter"),
                ("Enter", "details"),
                ("w", "warnings"),
                ("t", "threads"),
                ("?", "help"),
                ("q", "quit"),
            ],
            View::Detail => &[
                ("↑↓", "scroll"),
                ("Esc", "back"),
                ("w", "warnings"),
                ("t", "threads"),
                ("?", "help"),
                ("q", "quit"),
            ],
            View::Warnings | View::Workers => &[
                ("↑↓", "select"),
                ("Enter", "task details"),
                ("Esc", "tasks"),
                ("?", "help"),
                ("q", "quit"),
            ],
        };
        let mut spans = Vec::new();
        for (key, what) in hints {
            spans.push(Span::raw(" "));
            spans.push(Span::styled(*key, Style::new().bold().reversed()));
            spans.push(Span::raw(format!(" {what}")));
        }
        Line::from(spans)
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// Every key, grouped by where it works. Kept next to nothing else on purpose: when a key is
/// added to [`App::on_key`], this is the list to update.
const HELP: &[(&str, &[(&str, &str)])] = &[
    (
        "Everywhere",
        &[
            ("q", "quit (stops the probe while it runs)"),
            ("Ctrl-C", "quit, even while typing a filter"),
            ("?", "this help; any key closes it"),
            ("w", "warnings, deadlocks and blocked waits (again: back)"),
            ("t", "worker threads (again: back)"),
            ("↑ ↓  k j", "move / scroll"),
            ("PgUp PgDn", "a page up / down"),
            ("Home End  g G", "first / last"),
        ],
    ),
    (
        "Tasks",
        &[
            ("← →  h l", "sort by the previous / next column"),
            ("1 … 9", "sort by that column; again: invert"),
            ("i", "invert the sort"),
            ("/", "filter: name, await point or state"),
            ("  Enter / Esc", "keep the filter / clear it"),
            ("Enter", "the selected task's details"),
            ("Esc", "clear the filter, else quit"),
        ],
    ),
    (
        "Task details",
        &[("Esc Backspace ← h", "back to where you came from")],
    ),
    (
        "Warnings, threads",
        &[
            ("Enter", "details of the task involved"),
            ("Esc Backspace ← h", "back to the tasks"),
        ],
    ),
    (
        "Marks",
        &[
            ("✖", "the task is in a deadlock"),
            ("⚠", "the task has a warning"),
        ],
    ),
];

fn draw_help(frame: &mut Frame, area: Rect) {
    let key_width = HELP
        .iter()
        .flat_map(|(_, keys)| keys.iter())
        .map(|(key, _)| key.chars().count())
        .max()
        .unwrap_or(0);
    let mut lines = Vec::new();
    for (section, keys) in HELP {
        if !lines.is_empty() {
            lines.push(Line::default());
        }
        lines.push(Line::from(section.bold().underlined()));
        for (key, what) in *keys {
            lines.push(Line::from(vec![
                Span::styled(format!("  {key:<key_width$}  "), Style::new().bold()),
                Span::raw(*what),
            ]));
        }
    }
    let width = lines.iter().map(Line::width).max().unwrap_or(0) as u16 + 4;
    let height = lines.len() as u16 + 2;
    let popup = area.centered(Constraint::Length(width), Constraint::Length(height));
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::bordered()
                .title(" Keys ".bold())
                .title_bottom(" any key closes ".dim())
                .padding(ratatui::widgets::Padding::horizontal(1)),
        ),
        popup,
    );
}

/// A block for a view's pane, titled.
pub(super) fn pane<'a>(title: impl Into<Line<'a>>) -> Block<'a> {
    Block::bordered().title(title)
}

/// The style for the selected row of a list.
pub(super) fn selected() -> Style {
    Style::new().add_modifier(Modifier::REVERSED)
}

pub(super) fn marker(mark: Mark) -> &'static str {
    match mark {
        Mark::Deadlock => "✖",
        Mark::Warning => "⚠",
    }
}

pub(super) fn mark_style(mark: Mark) -> Style {
    match mark {
        Mark::Deadlock => Style::new().fg(Color::Red).bold(),
        Mark::Warning => Style::new().fg(Color::Yellow),
    }
}

pub(super) fn state_style(state: TaskState) -> Style {
    match state {
        TaskState::Running => Style::new().fg(Color::Green),
        TaskState::Scheduled => Style::new().fg(Color::Cyan),
        TaskState::Idle => Style::new(),
        TaskState::Completed | TaskState::Cancelled => Style::new().fg(Color::DarkGray),
        TaskState::Panicked => Style::new().fg(Color::Red),
    }
}

/// A horizontal bar `width` cells wide, filled to `fraction` in eighths of a cell.
pub(super) fn bar(fraction: f64, width: usize) -> String {
    const EIGHTHS: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    let eighths = (fraction.clamp(0.0, 1.0) * width as f64 * 8.0).round() as usize;
    let mut bar = "█".repeat(eighths / 8);
    if let Some(&partial) = EIGHTHS.get(eighths % 8).filter(|&&c| c != ' ') {
        bar.push(partial);
    }
    let filled = bar.chars().count();
    bar.extend(std::iter::repeat_n(' ', width.saturating_sub(filled)));
    bar
}

/// Greedy word wrap to `width` columns (at least 10). Done here rather than by the paragraph so
/// that a scrolling view knows how many lines it has.
pub(super) fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(10);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let needed = line.chars().count() + usize::from(!line.is_empty()) + word.chars().count();
        if !line.is_empty() && needed > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// `1 deadlock`, `3 warnings`.
pub(super) fn plural(count: usize, what: &str) -> String {
    format!("{count} {what}{}", if count == 1 { "" } else { "s" })
}

/// `812`, `12.3k`, `4.1M`: event rates are wide-ranging and only their size matters.
fn rate(per_second: f64) -> String {
    match per_second {
        r if r < 1e3 => format!("{r:.0}"),
        r if r < 1e6 => format!("{:.1}k", r / 1e3),
        r => format!("{:.1}M", r / 1e6),
    }
}
