//! What the diagnosis found: deadlocks first, then blocked waits, then warnings, as one list;
//! the selected entry in full underneath.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Style, Stylize},
    text::{Line, Span},
    widgets::{Paragraph, Wrap},
};

use super::{
    app::{App, Mark},
    ui,
};
use crate::{
    analyze::lints::Warning,
    report::{ChainRow, DeadlockRow, Report},
};

/// One entry of the list. Deadlocks span a line per task in the cycle, so that the whole cycle
/// is on screen without selecting it.
#[derive(Clone, Copy)]
pub(super) enum Entry<'r> {
    Deadlock(&'r DeadlockRow),
    Chain(&'r ChainRow),
    Warning(&'r Warning),
}

pub(super) fn count(report: &Report) -> usize {
    report.deadlocks.len() + report.chains.len() + report.warnings.len()
}

/// Entry `index` of the list, in constant time: the state walks entries to scroll.
pub(super) fn entry(report: &Report, index: usize) -> Option<Entry<'_>> {
    let chains = index.checked_sub(report.deadlocks.len());
    let warnings = chains.and_then(|at| at.checked_sub(report.chains.len()));
    match (chains, warnings) {
        (None, _) => report.deadlocks.get(index).map(Entry::Deadlock),
        (Some(at), None) => report.chains.get(at).map(Entry::Chain),
        (_, Some(at)) => report.warnings.get(at).map(Entry::Warning),
    }
}

impl Entry<'_> {
    /// Screen lines the entry takes in the list.
    pub fn height(self) -> usize {
        match self {
            Self::Deadlock(deadlock) => 1 + deadlock.details.len(),
            Self::Chain(_) | Self::Warning(_) => 1,
        }
    }

    /// The task Enter opens: the first of a cycle, the blocked one of a chain.
    pub fn task(self) -> Option<u64> {
        match self {
            Self::Deadlock(deadlock) => deadlock.tasks.iter().flatten().next().copied(),
            Self::Chain(chain) => chain.waiter.task,
            Self::Warning(warning) => warning.task,
        }
    }

    fn mark(self) -> Mark {
        match self {
            Self::Deadlock(_) => Mark::Deadlock,
            Self::Chain(_) | Self::Warning(_) => Mark::Warning,
        }
    }

    /// Its lines in the list: exactly [`Entry::height`] of them.
    fn lines(self) -> Vec<Line<'static>> {
        let first = |text: String| {
            Line::from(vec![
                Span::styled(ui::marker(self.mark()), ui::mark_style(self.mark())),
                Span::raw(format!(" {text}")),
            ])
        };
        match self {
            Self::Deadlock(deadlock) => {
                let mut lines = vec![first(deadlock_heading(deadlock)).bold()];
                lines.extend(
                    deadlock
                        .details
                        .iter()
                        .map(|waiter| Line::from(format!("    {}", waiter.describe()))),
                );
                lines
            }
            Self::Chain(chain) => vec![first(format!("blocked: {}", chain_text(chain)))],
            Self::Warning(warning) => vec![first(format!(
                "{:<22} {:>6}  {}",
                warning.kind,
                warning
                    .task
                    .map_or_else(String::new, |id| format!("task {id}")),
                warning.summary
            ))],
        }
    }

    /// Everything about it, for the pane under the list.
    fn detail(self) -> Vec<Line<'static>> {
        let mut lines = match self {
            Self::Deadlock(deadlock) => {
                let mut lines = vec![
                    Line::from(deadlock_heading(deadlock)).style(ui::mark_style(Mark::Deadlock)),
                    Line::from(
                        "Each task waits for what the next one holds; none of them can go on.",
                    ),
                ];
                lines.extend(
                    deadlock
                        .details
                        .iter()
                        .map(|waiter| Line::from(format!("• {}", waiter.describe()))),
                );
                lines
            }
            Self::Chain(chain) => vec![
                Line::from("blocked wait").style(ui::mark_style(Mark::Warning)),
                Line::from(chain_text(chain)),
            ],
            Self::Warning(warning) => vec![
                Line::from(format!(
                    "{}{}",
                    warning.kind,
                    warning
                        .task
                        .map_or_else(String::new, |id| format!(", task {id}"))
                ))
                .style(ui::mark_style(Mark::Warning)),
                Line::from(warning.summary.clone()).bold(),
                Line::from(warning.detail.clone()),
            ],
        };
        if let Some(id) = self.task() {
            lines.push(Line::from(format!("Enter: details of task {id}").dim()));
        }
        lines
    }
}

pub(super) fn deadlock_heading(deadlock: &DeadlockRow) -> String {
    format!(
        "DEADLOCK: {} tasks wait for each other",
        deadlock.tasks.len()
    )
}

/// `task 5 app::b waits for … at …, held by task 4 app::a, which is itself waiting for …`.
pub(super) fn chain_text(chain: &ChainRow) -> String {
    let mut text = format!(
        "{}, held by {}",
        chain.waiter.describe(),
        crate::report::task_text(chain.holder, &chain.holder_name)
    );
    if let Some(leaf) = &chain.holder_leaf {
        text.push_str(&format!(", which is itself {leaf}"));
    }
    text
}

/// The list above, the selected entry's detail below.
fn split(body: Rect) -> [Rect; 2] {
    Layout::vertical([Constraint::Min(4), Constraint::Length(10)]).areas(body)
}

/// Lines of the list that fit in `body`.
pub(super) fn visible_rows(body: Rect) -> usize {
    usize::from(split(body)[0].height.saturating_sub(2))
}

pub(super) fn draw(frame: &mut Frame, area: Rect, app: &App, report: &Report) {
    let title = Line::from(vec![
        " Warnings ".bold(),
        Span::raw(format!(
            "{} · {} · {} ",
            ui::plural(report.deadlocks.len(), "deadlock"),
            ui::plural(report.chains.len(), "blocked wait"),
            ui::plural(report.warnings.len(), "warning"),
        )),
    ]);
    if count(report) == 0 {
        let clean = Line::from("nothing found: no deadlock, no blocked wait, no warning")
            .style(Style::new().fg(Color::Green));
        frame.render_widget(Paragraph::new(clean).block(ui::pane(title)), area);
        return;
    }
    let [list, detail] = split(area);
    let page = visible_rows(area);
    // The state scrolled for the last known size; a frame of another size at least starts no
    // lower than the selection.
    let offset = app.warnings.offset.min(app.warnings.selected);
    let mut lines = Vec::new();
    let mut index = offset;
    while lines.len() < page
        && let Some(entry) = entry(report, index)
    {
        let mut entry_lines = entry.lines();
        if index == app.warnings.selected {
            entry_lines = entry_lines
                .into_iter()
                .map(|line| line.patch_style(ui::selected()))
                .collect();
        }
        lines.extend(entry_lines);
        index += 1;
    }
    frame.render_widget(Paragraph::new(lines).block(ui::pane(title)), list);
    let selected = entry(report, app.warnings.selected)
        .map(Entry::detail)
        .unwrap_or_default();
    frame.render_widget(
        Paragraph::new(selected)
            .wrap(Wrap { trim: false })
            .block(ui::pane(" Selected ")),
        detail,
    );
}
