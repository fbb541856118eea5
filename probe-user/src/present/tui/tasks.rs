//! The main view: one row per task, sorted and filtered as the state says.

use ratatui::{
    Frame,
    layout::{Constraint, Rect},
    style::{Color, Style, Stylize},
    text::{Line, Span},
    widgets::{Cell, Paragraph, Row, Table, TableState},
};

use super::{
    app::{App, Column, Mark},
    ui,
};
use crate::readable::duration;
use crate::report::{Report, TaskRow};

/// Rows of tasks that fit in `body`: the pane's borders and the column titles take three.
pub(super) fn visible_rows(body: Rect) -> usize {
    usize::from(body.height.saturating_sub(3))
}

pub(super) fn draw(frame: &mut Frame, area: Rect, app: &App, report: &Report) {
    let block = ui::pane(title(app, report));
    if app.order.is_empty() {
        let why = if report.tasks.is_empty() {
            "no task polled, spawned or woken yet"
        } else {
            "no task matches the filter (Esc clears it)"
        };
        frame.render_widget(Paragraph::new(why).block(block), area);
        return;
    }
    let page = visible_rows(area);
    let offset = app.tasks.visible_offset(page);
    let end = (offset + page).min(app.order.len());
    // Only the rows on screen are formatted: the table may hold tens of thousands.
    let rows = app.order[offset..end]
        .iter()
        .map(|&task| row(app, &report.tasks[task], task));
    let header = Row::new(Column::ALL.map(|column| header_cell(app, column))).bold();
    let table = Table::new(rows, Column::ALL.map(width))
        .header(header)
        .block(block)
        .column_spacing(1)
        .row_highlight_style(ui::selected());
    let mut state = TableState::new().with_selected(Some(app.tasks.selected - offset));
    frame.render_stateful_widget(table, area, &mut state);
}

/// `Tasks 120 of 5000 · sorted by BUSY ▼ · filter "db"`.
fn title(app: &App, report: &Report) -> Line<'static> {
    let mut spans = vec![
        " Tasks ".bold(),
        Span::raw(format!("{} of {}", app.order.len(), report.tasks.len())),
        Span::raw(format!(
            " · sorted by {} {} ",
            app.sort.column.title(),
            arrow(app.sort.descending)
        )),
    ];
    if !app.filter.is_empty() {
        spans.push(Span::styled(
            format!("· filter \"{}\" ", app.filter),
            Style::new().fg(Color::Cyan),
        ));
    }
    Line::from(spans)
}

fn arrow(descending: bool) -> &'static str {
    if descending { "▼" } else { "▲" }
}

fn header_cell(app: &App, column: Column) -> Cell<'static> {
    if column == app.sort.column {
        let title = format!("{}{}", column.title(), arrow(app.sort.descending));
        aligned(column, title).style(Style::new().underlined().fg(Color::Cyan))
    } else {
        aligned(column, column.title().to_owned())
    }
}

fn width(column: Column) -> Constraint {
    match column {
        Column::Mark => Constraint::Length(1),
        Column::Id => Constraint::Length(6),
        Column::Name => Constraint::Fill(3),
        Column::State => Constraint::Length(9),
        Column::Polls => Constraint::Length(7),
        Column::Busy | Column::Sched | Column::Idle => Constraint::Length(8),
        Column::Await => Constraint::Fill(2),
    }
}

/// Numbers line up on the right, words on the left.
fn aligned(column: Column, text: String) -> Cell<'static> {
    match column {
        Column::Id | Column::Polls | Column::Busy | Column::Sched | Column::Idle => {
            Cell::from(Line::from(text).right_aligned())
        }
        _ => Cell::from(text),
    }
}

fn row(app: &App, task: &TaskRow, index: usize) -> Row<'static> {
    let cells = Column::ALL.map(|column| match column {
        Column::Mark => match app.mark(task) {
            Some(mark) => Cell::from(Span::styled(ui::marker(mark), ui::mark_style(mark))),
            // Not `Cell::default()`: that one spans no column and shifts the row left.
            None => Cell::from(""),
        },
        Column::State => Cell::from(Span::styled(
            task.state.as_str(),
            ui::state_style(task.state),
        )),
        _ => aligned(column, text(app, task, index, column)),
    });
    let row = Row::new(cells);
    // Ended tasks fade, unless something is wrong with them.
    if task.state.is_terminal() && app.mark(task) != Some(Mark::Deadlock) {
        row.fg(Color::DarkGray)
    } else {
        row
    }
}

fn text(app: &App, task: &TaskRow, index: usize, column: Column) -> String {
    match column {
        Column::Id => crate::report::id_text(task.id),
        Column::Name => task.name.clone(),
        Column::State => task.state.as_str().to_owned(),
        Column::Polls => task.polls.to_string(),
        Column::Busy => duration(task.busy_ns),
        Column::Sched => duration(task.scheduled_ns),
        Column::Idle => duration(task.idle_ns),
        Column::Await => app.await_label(index).to_owned(),
        Column::Mark => String::new(),
    }
}
