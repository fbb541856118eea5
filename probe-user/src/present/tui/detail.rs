//! One task in full: its figures, async backtrace, wakers, histograms and everything the
//! diagnosis says about it, as one scrolling document.

use ratatui::{
    Frame,
    layout::Rect,
    style::{Color, Style, Stylize},
    text::{Line, Span},
    widgets::Paragraph,
};

use super::{
    app::{App, Mark},
    ui, warnings,
};
use crate::readable::duration;
use crate::{
    model::Histogram,
    report::{Bucket, Report, TaskRow},
};

/// Lines of the document that fit in `body`, inside the pane's borders.
pub(super) fn visible_rows(body: Rect) -> usize {
    usize::from(body.height.saturating_sub(2))
}

pub(super) fn draw(frame: &mut Frame, area: Rect, app: &App, report: &Report) {
    let Some(index) = app.detail_task() else {
        frame.render_widget(
            Paragraph::new("this task is no longer in the report (Esc goes back)")
                .block(ui::pane(" Task ")),
            area,
        );
        return;
    };
    let task = &report.tasks[index];
    let document = document(report, index, area.width);
    let page = visible_rows(area);
    let scroll = app.detail_scroll.min(document.len().saturating_sub(page));
    let title = Line::from(vec![
        " ".into(),
        crate::report::task_text(task.id, &task.name).bold(),
        " ".into(),
    ]);
    let mut block = ui::pane(title);
    if document.len() > page {
        block = block.title_bottom(
            Line::from(format!(
                " lines {}-{} of {} ",
                scroll + 1,
                (scroll + page).min(document.len()),
                document.len()
            ))
            .right_aligned(),
        );
    }
    let shown: Vec<Line> = document.into_iter().skip(scroll).take(page).collect();
    frame.render_widget(Paragraph::new(shown).block(block), area);
}

/// The whole document for task `index`, wrapped to fit a pane `width` columns wide. The state
/// measures it to bound scrolling, so what is drawn and what is scrolled over agree.
pub(super) fn document(report: &Report, index: usize, width: u16) -> Vec<Line<'static>> {
    let task = &report.tasks[index];
    // Inside the borders, less the indent of section bodies.
    let text_width = usize::from(width.saturating_sub(2)).saturating_sub(2);
    let mut lines = figures(report, task);

    section(
        &mut lines,
        "Async backtrace, innermost first (read when the task last went idle)",
    );
    if task.backtrace.is_empty() {
        let why = task.no_backtrace.as_deref().unwrap_or("none was read");
        lines.push(indented(Span::raw(format!("(none: {why})")).dim()));
    } else {
        if let Some(leaf) = task
            .backtrace
            .last()
            .and_then(|frame| frame.leaf.as_deref())
        {
            // Worded to stand alone: "sleeping (1.2s left)", "waiting for a Notify".
            lines.push(indented(Span::styled(
                leaf.to_owned(),
                Style::new().fg(Color::Cyan).bold(),
            )));
        }
        for (depth, frame) in task.backtrace.iter().rev().enumerate() {
            // Locals can make a frame long: wrapped, continued under the function name.
            let wrapped = ui::wrap(
                &crate::report::frame_line(frame, depth),
                text_width.saturating_sub(3),
            );
            for (index, line) in wrapped.into_iter().enumerate() {
                let indent = if index == 0 { "" } else { "   " };
                lines.push(indented(Span::raw(format!("{indent}{line}"))));
            }
            for held in &frame.holds {
                lines.push(indented(Span::styled(
                    format!("   holding {held} across this await"),
                    ui::mark_style(Mark::Warning),
                )));
            }
        }
    }

    if !task.spawned_at.is_empty() {
        lines.push(indented(
            // "spawned at" is when, among the figures above: this is where.
            format!("spawned from {}", task.spawned_at.join(", ")).dim(),
        ));
    }

    section(&mut lines, "Woken by");
    if task.woken_by.is_empty() {
        lines.push(indented("(not woken while the probe watched)".dim()));
    }
    let count_width = task
        .woken_by
        .iter()
        .map(|waker| waker.wakes.to_string().len())
        .max()
        .unwrap_or(0);
    for waker in &task.woken_by {
        let who = match waker.task {
            Some(_) => crate::report::task_text(waker.task, &waker.name),
            None => waker.name.clone(),
        };
        lines.push(indented(Span::raw(format!(
            "{:>count_width$} wakes  {who}",
            waker.wakes
        ))));
    }

    section(&mut lines, "Poll times");
    histogram(&mut lines, &task.poll_histogram, text_width);
    section(&mut lines, "Scheduling latency (woken until polled)");
    histogram(&mut lines, &task.scheduled_histogram, text_width);

    diagnosis(&mut lines, report, task, text_width);
    lines
}

/// The task's own figures, a few to a line.
fn figures(report: &Report, task: &TaskRow) -> Vec<Line<'static>> {
    let at = |ns: Option<u64>, otherwise: &str| {
        ns.map_or_else(|| otherwise.to_owned(), |ns| format!("at {}", duration(ns)))
    };
    let parent = task.parent.map_or_else(
        || "—".to_owned(),
        |id| match report.tasks.iter().find(|t| t.id == Some(id)) {
            Some(parent) => crate::report::task_text(parent.id, &parent.name),
            None => crate::report::task_text(Some(id), ""),
        },
    );
    let live_wakers = task
        .live_wakers
        .map_or_else(|| "unknown".to_owned(), |count| count.to_string());
    vec![
        fields(vec![
            (
                "state",
                Span::styled(task.state.as_str(), ui::state_style(task.state)),
            ),
            ("id", crate::report::id_text(task.id).into()),
            ("parent", parent.into()),
            ("header", task.header.clone().into()),
        ]),
        fields(vec![
            ("spawned", at(task.spawned_ns, "before the probe").into()),
            ("ended", at(task.ended_ns, "no, still live").into()),
        ]),
        fields(vec![
            ("polls", task.polls.to_string().into()),
            ("busy", duration(task.busy_ns).into()),
            ("scheduled", duration(task.scheduled_ns).into()),
            ("idle", duration(task.idle_ns).into()),
        ]),
        fields(vec![
            ("longest poll", duration(task.max_poll_ns).into()),
            ("live wakers", live_wakers.into()),
            ("wakes", task.wakes.to_string().into()),
            ("self-wakes", task.self_wakes.to_string().into()),
        ]),
    ]
}

/// Warnings, deadlocks and blocked waits that involve the task, in full.
fn diagnosis(lines: &mut Vec<Line<'static>>, report: &Report, task: &TaskRow, width: usize) {
    section(lines, "Diagnosis");
    let Some(id) = task.id else {
        lines.push(indented(
            "(unknown task id: nothing to match warnings with)".dim(),
        ));
        return;
    };
    let before = lines.len();
    for deadlock in report
        .deadlocks
        .iter()
        .filter(|d| d.tasks.contains(&Some(id)))
    {
        let heading = warnings::deadlock_heading(deadlock);
        let waiters = deadlock
            .details
            .iter()
            .map(crate::report::WaiterRow::describe)
            .collect();
        finding(lines, Mark::Deadlock, heading, waiters, width);
    }
    for chain in report
        .chains
        .iter()
        .filter(|chain| chain.waiter.task == Some(id) || chain.holder == Some(id))
    {
        let text = vec![warnings::chain_text(chain)];
        finding(lines, Mark::Warning, "blocked wait".to_owned(), text, width);
    }
    for warning in report.warnings.iter().filter(|w| w.task == Some(id)) {
        let heading = format!("{}: {}", warning.kind, warning.summary);
        finding(
            lines,
            Mark::Warning,
            heading,
            vec![warning.detail.clone()],
            width,
        );
    }
    if lines.len() == before {
        lines.push(indented("nothing wrong found with this task".dim()));
    }
}

/// A marked heading, then its paragraphs wrapped under it.
fn finding(
    lines: &mut Vec<Line<'static>>,
    mark: Mark,
    heading: String,
    paragraphs: Vec<String>,
    width: usize,
) {
    for (index, line) in ui::wrap(&heading, width.saturating_sub(2))
        .into_iter()
        .enumerate()
    {
        let prefix = if index == 0 { ui::marker(mark) } else { " " };
        lines.push(indented(Span::styled(
            format!("{prefix} {line}"),
            ui::mark_style(mark),
        )));
    }
    for paragraph in paragraphs {
        for line in ui::wrap(&paragraph, width.saturating_sub(2)) {
            lines.push(indented(Span::raw(format!("  {line}"))));
        }
    }
}

/// One line per non-empty bucket, `< 16.4us ████▌      12`, bars scaled to the fullest.
fn histogram(lines: &mut Vec<Line<'static>>, buckets: &[Bucket], width: usize) {
    if buckets.is_empty() {
        lines.push(indented("(nothing recorded)".dim()));
        return;
    }
    let labels: Vec<String> = buckets.iter().map(bucket_label).collect();
    let label_width = labels
        .iter()
        .map(|label| label.chars().count())
        .max()
        .unwrap_or(0);
    let most = buckets
        .iter()
        .map(|bucket| bucket.count)
        .max()
        .unwrap_or(1)
        .max(1);
    let count_width = most.to_string().len();
    let bar_width = width
        .saturating_sub(label_width + count_width + 4)
        .clamp(8, 60);
    for (bucket, label) in buckets.iter().zip(labels) {
        lines.push(Line::from(vec![
            Span::raw(format!("  {label:>label_width$} ")),
            Span::styled(
                ui::bar(f64::from(bucket.count) / f64::from(most), bar_width),
                Style::new().fg(Color::Blue),
            ),
            Span::raw(format!(" {:>count_width$}", bucket.count)),
        ]));
    }
}

/// `< 4.1us`; the open-ended last bucket starts where the one before it stops.
fn bucket_label(bucket: &Bucket) -> String {
    match bucket.below_ns {
        Some(below) => format!("< {}", duration(below)),
        None => format!(
            "≥ {}",
            duration(Histogram::upper_ns(Histogram::BUCKETS - 2))
        ),
    }
}

fn section(lines: &mut Vec<Line<'static>>, title: &str) {
    lines.push(Line::default());
    lines.push(Line::from(Span::styled(
        title.to_owned(),
        Style::new().bold().underlined(),
    )));
}

fn indented(span: Span<'static>) -> Line<'static> {
    Line::from(vec![Span::raw("  "), span])
}

/// `state idle   id 12   parent task 3 app::main`: names dim, values plain.
fn fields(pairs: Vec<(&str, Span<'static>)>) -> Line<'static> {
    let mut spans = Vec::new();
    for (index, (name, value)) in pairs.into_iter().enumerate() {
        let gap = if index == 0 { "" } else { "   " };
        spans.push(Span::styled(format!("{gap}{name} "), Style::new().dim()));
        spans.push(value);
    }
    Line::from(spans)
}
