//! The threads that polled tasks: how busy each was, and which task held it longest (a task
//! that blocks a worker stalls every task queued behind it).

use ratatui::{
    Frame,
    layout::{Constraint, Rect},
    style::{Color, Style, Stylize},
    text::{Line, Span},
    widgets::{Cell, Paragraph, Row, Table, TableState},
};

use super::{app::App, ui};
use crate::readable::duration;
use crate::report::{Mode, Report, WorkerRow};

/// Cells of the busy gauge.
const GAUGE_WIDTH: usize = 20;

/// Rows of threads that fit in `body`: borders and column titles take three.
pub(super) fn visible_rows(body: Rect) -> usize {
    usize::from(body.height.saturating_sub(3))
}

pub(super) fn draw(frame: &mut Frame, area: Rect, app: &App, report: &Report) {
    let block = ui::pane(Line::from(vec![
        " Threads ".bold(),
        Span::raw(format!(
            "{} polled tasks · busy is the share of the {} probed ",
            report.workers.len(),
            duration(report.summary.duration_ns)
        )),
    ]));
    if report.workers.is_empty() {
        let why = match report.summary.mode {
            Mode::Dump => "a memory snapshot has no per-thread figures",
            Mode::Probe => "no thread has polled a task yet",
        };
        frame.render_widget(Paragraph::new(why).block(block), area);
        return;
    }
    let page = visible_rows(area);
    let offset = app.workers.visible_offset(page);
    let end = (offset + page).min(report.workers.len());
    let probed_ns = report.summary.duration_ns.max(1);
    let rows = report.workers[offset..end]
        .iter()
        .map(|worker| row(worker, probed_ns));
    let right = |text: &'static str| Cell::from(Line::from(text).right_aligned());
    let header = Row::new([
        right("TID"),
        right("POLLS"),
        right("BUSY"),
        Cell::from("BUSY %"),
        right("LONGEST"),
        Cell::from("LONGEST POLL BY"),
    ])
    .bold();
    let widths = [
        Constraint::Length(8),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(GAUGE_WIDTH as u16 + 7),
        Constraint::Length(9),
        Constraint::Fill(1),
    ];
    let table = Table::new(rows, widths)
        .header(header)
        .block(block)
        .column_spacing(2)
        .row_highlight_style(ui::selected());
    let mut state = TableState::new().with_selected(Some(app.workers.selected - offset));
    frame.render_stateful_widget(table, area, &mut state);
}

fn row(worker: &WorkerRow, probed_ns: u64) -> Row<'static> {
    let share = worker.busy_ns as f64 / probed_ns as f64;
    // A worker busy most of the time has no slack left for new work.
    let color = match share {
        s if s >= 0.9 => Color::Red,
        s if s >= 0.6 => Color::Yellow,
        _ => Color::Green,
    };
    let right = |text: String| Cell::from(Line::from(text).right_aligned());
    Row::new([
        right(worker.tid.to_string()),
        right(worker.polls.to_string()),
        right(duration(worker.busy_ns)),
        Cell::from(Line::from(vec![
            Span::styled(
                ui::bar(share, GAUGE_WIDTH),
                Style::new().fg(color).bg(Color::DarkGray),
            ),
            Span::raw(format!(" {:>5.1}%", share * 100.0)),
        ])),
        right(duration(worker.longest_poll_ns)),
        Cell::from(match &worker.longest_poll_name {
            Some(name) => crate::report::task_text(worker.longest_poll_task, name),
            None => String::new(),
        }),
    ])
}
