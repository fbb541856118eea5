//! The live view's state: everything a key press or a new report changes, kept apart from the
//! terminal so that all of it can be tested without one.

use std::collections::HashMap;

use ratatui::{
    crossterm::event::{KeyCode, KeyEvent, KeyModifiers},
    layout::Rect,
};

use super::{Action, detail, tasks, ui, warnings, workers};
use crate::readable::location;
use crate::{
    model::TaskState,
    report::{Report, TaskRow},
};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum View {
    #[default]
    Tasks,
    Detail,
    Warnings,
    Workers,
}

/// What the marker column shows, ordered by urgency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Mark {
    Warning,
    Deadlock,
}

/// The task table's columns, in display order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Column {
    Mark,
    Id,
    Name,
    State,
    Polls,
    Busy,
    Sched,
    Idle,
    Await,
}

impl Column {
    pub const ALL: [Self; 9] = [
        Self::Mark,
        Self::Id,
        Self::Name,
        Self::State,
        Self::Polls,
        Self::Busy,
        Self::Sched,
        Self::Idle,
        Self::Await,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Self::Mark => "!",
            Self::Id => "ID",
            Self::Name => "NAME",
            Self::State => "STATE",
            Self::Polls => "POLLS",
            Self::Busy => "BUSY",
            Self::Sched => "SCHED",
            Self::Idle => "IDLE",
            Self::Await => "AWAIT",
        }
    }

    /// Counts, times and trouble read best biggest first; names and places alphabetically.
    fn descending_first(self) -> bool {
        matches!(
            self,
            Self::Mark | Self::Polls | Self::Busy | Self::Sched | Self::Idle
        )
    }

    fn position(self) -> usize {
        Self::ALL
            .iter()
            .position(|&column| column == self)
            .unwrap_or(0)
    }

    fn shifted(self, by: isize) -> Self {
        let count = Self::ALL.len() as isize;
        Self::ALL[(self.position() as isize + by).rem_euclid(count) as usize]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Sort {
    pub column: Column,
    pub descending: bool,
}

impl Sort {
    /// The order the report already comes in, so the first frame needs no surprise re-sort.
    const BUSIEST_FIRST: Self = Self {
        column: Column::Busy,
        descending: true,
    };
}

/// A task's identity across reports: the tokio id can be unknown and header addresses are
/// reused once a task is freed, so neither alone will do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct TaskKey {
    id: Option<u64>,
    header: String,
}

impl TaskKey {
    fn of(task: &TaskRow) -> Self {
        Self {
            id: task.id,
            header: task.header.clone(),
        }
    }

    fn matches(&self, task: &TaskRow) -> bool {
        self.id == task.id && self.header == task.header
    }
}

/// A selection in a scrolling list: `offset` is the first item on screen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Cursor {
    pub selected: usize,
    pub offset: usize,
}

/// A move requested by a navigation key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Motion {
    By(isize),
    First,
    Last,
}

impl Motion {
    /// The keys every list and scrolling view shares; `page` is how many rows fit.
    fn of(key: KeyEvent, page: usize) -> Option<Self> {
        let page = page.max(1) as isize;
        Some(match key.code {
            KeyCode::Up | KeyCode::Char('k') => Self::By(-1),
            KeyCode::Down | KeyCode::Char('j') => Self::By(1),
            KeyCode::PageUp => Self::By(-page),
            KeyCode::PageDown => Self::By(page),
            KeyCode::Home | KeyCode::Char('g') => Self::First,
            KeyCode::End | KeyCode::Char('G') => Self::Last,
            _ => return None,
        })
    }

    /// Where `at` ends up in `0..=last`.
    fn apply(self, at: usize, last: usize) -> usize {
        match self {
            Self::By(by) => at.saturating_add_signed(by).min(last),
            Self::First => 0,
            Self::Last => last,
        }
    }
}

impl Cursor {
    fn step(&mut self, motion: Motion, len: usize) {
        self.selected = motion.apply(self.selected, len.saturating_sub(1));
    }

    /// Scrolls as little as possible to keep the selection on screen, and pulls the list back
    /// down when it shrank and left blank rows at the bottom. `height` is how many screen rows
    /// item `i` takes; the walks are bounded by the page, never by the list's length.
    pub fn follow(&mut self, len: usize, page: usize, height: impl Fn(usize) -> usize) {
        if len == 0 {
            *self = Self::default();
            return;
        }
        let page = page.max(1);
        self.selected = self.selected.min(len - 1);
        let mut lowest = self.selected;
        let mut used = height(lowest);
        while lowest > 0 && used + height(lowest - 1) <= page {
            lowest -= 1;
            used += height(lowest);
        }
        let mut tail = len - 1;
        let mut used = height(tail);
        while tail > 0 && used + height(tail - 1) <= page {
            tail -= 1;
            used += height(tail);
        }
        self.offset = self.offset.min(tail).clamp(lowest, self.selected);
    }

    /// The first row to draw in a window of `page` rows of height 1. The same as `offset` once
    /// [`Cursor::follow`] ran for that page; recomputed so that a frame drawn at another size
    /// still shows the selection.
    pub fn visible_offset(&self, page: usize) -> usize {
        let page = page.max(1);
        self.offset
            .min(self.selected)
            .max((self.selected + 1).saturating_sub(page))
    }
}

#[derive(Default)]
pub(super) struct App {
    pub report: Option<Report>,
    /// What the probe is doing, under the title.
    pub status: String,
    pub view: View,
    /// Where leaving the detail view goes back to.
    back: View,
    pub help: bool,
    pub sort: Sort,
    pub filter: String,
    /// Keys go to the filter text rather than acting.
    pub editing_filter: bool,
    /// The table's rows: indices into `report.tasks`, filtered and sorted. Computed on update,
    /// sort and filter changes, so that a frame only formats the rows on screen.
    pub order: Vec<usize>,
    pub tasks: Cursor,
    /// Per task of the report: its await point as the table shows it, for sorting and
    /// filtering without formatting it again and again.
    await_labels: Vec<String>,
    marks: HashMap<u64, Mark>,
    pub detail: Option<TaskKey>,
    pub detail_scroll: usize,
    pub warnings: Cursor,
    pub workers: Cursor,
    /// The terminal's size at the last draw: how many rows a page holds.
    pub area: Rect,
}

impl Default for Sort {
    fn default() -> Self {
        Self::BUSIEST_FIRST
    }
}

impl App {
    pub fn update(&mut self, report: Report) {
        let kept = self.remember_selection();
        self.await_labels = report.tasks.iter().map(await_label).collect();
        self.marks = marks(&report);
        self.report = Some(report);
        self.reorder_keeping(kept);
        self.follow_lists();
    }

    /// Called before every frame; only a real change of size costs anything.
    pub fn resize(&mut self, area: Rect) {
        if area != self.area {
            self.area = area;
            self.follow_lists();
        }
    }

    pub fn await_label(&self, task: usize) -> &str {
        self.await_labels.get(task).map_or("", String::as_str)
    }

    pub fn mark(&self, task: &TaskRow) -> Option<Mark> {
        task.id.and_then(|id| self.marks.get(&id).copied())
    }

    /// The selected row's index into `report.tasks`.
    pub fn selected_task(&self) -> Option<usize> {
        self.order.get(self.tasks.selected).copied()
    }

    /// The task the detail view shows, if it is still in the report.
    pub fn detail_task(&self) -> Option<usize> {
        let key = self.detail.as_ref()?;
        self.report
            .as_ref()?
            .tasks
            .iter()
            .position(|task| key.matches(task))
    }

    pub fn on_key(&mut self, key: KeyEvent) -> Action {
        // Raw mode turns Ctrl-C into a key: it must still stop the probe, from anywhere.
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        // No other chord is bound: Ctrl-W must not open the warnings, nor Alt-x type an x.
        if key
            .modifiers
            .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT)
        {
            return Action::Continue;
        }
        if self.editing_filter {
            self.edit_filter(key);
            return Action::Continue;
        }
        if self.help {
            // Any key dismisses the overlay, so nobody is stuck in it; q still quits.
            self.help = false;
            return if key.code == KeyCode::Char('q') {
                Action::Quit
            } else {
                Action::Continue
            };
        }
        match key.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Char('?') => self.help = true,
            KeyCode::Char('w') => self.toggle(View::Warnings),
            KeyCode::Char('t') => self.toggle(View::Workers),
            _ => {
                return match self.view {
                    View::Tasks => self.on_tasks_key(key),
                    View::Detail => {
                        self.on_detail_key(key);
                        Action::Continue
                    }
                    View::Warnings | View::Workers => {
                        self.on_list_key(key);
                        Action::Continue
                    }
                };
            }
        }
        Action::Continue
    }

    fn on_tasks_key(&mut self, key: KeyEvent) -> Action {
        match key.code {
            KeyCode::Left | KeyCode::Char('h') => self.sort_by(self.sort.column.shifted(-1)),
            KeyCode::Right | KeyCode::Char('l') => self.sort_by(self.sort.column.shifted(1)),
            KeyCode::Char(digit @ '1'..='9') => {
                let column = Column::ALL[digit as usize - '1' as usize];
                if column == self.sort.column {
                    self.invert_sort();
                } else {
                    self.sort_by(column);
                }
            }
            KeyCode::Char('i') => self.invert_sort(),
            KeyCode::Char('/') => self.editing_filter = true,
            KeyCode::Enter => {
                if let Some(task) = self.selected_task() {
                    self.open_detail(task);
                }
            }
            KeyCode::Esc if !self.filter.is_empty() => self.set_filter(String::new()),
            KeyCode::Esc => return Action::Quit,
            _ => {
                if let Some(motion) = Motion::of(key, self.tasks_page()) {
                    self.move_in_table(motion);
                }
            }
        }
        Action::Continue
    }

    fn move_in_table(&mut self, motion: Motion) {
        self.tasks.step(motion, self.order.len());
        self.follow_lists();
    }

    fn on_detail_key(&mut self, key: KeyEvent) {
        match key.code {
            KeyCode::Esc | KeyCode::Backspace | KeyCode::Left | KeyCode::Char('h') => {
                self.view = self.back;
            }
            _ => {
                let page = detail::visible_rows(ui::body(self.area));
                if let Some(motion) = Motion::of(key, page) {
                    self.detail_scroll = motion.apply(self.detail_scroll, self.detail_max_scroll());
                }
            }
        }
    }

    /// The warnings and threads views: lists whose entries lead to a task.
    fn on_list_key(&mut self, key: KeyEvent) {
        let Some(report) = &self.report else { return };
        match key.code {
            KeyCode::Esc | KeyCode::Backspace | KeyCode::Left | KeyCode::Char('h') => {
                self.view = View::Tasks;
            }
            KeyCode::Enter => {
                let id = match self.view {
                    View::Warnings => warnings::entry(report, self.warnings.selected)
                        .and_then(|entry| entry.task()),
                    _ => report
                        .workers
                        .get(self.workers.selected)
                        .and_then(|worker| worker.longest_poll_task),
                };
                if let Some(task) =
                    id.and_then(|id| report.tasks.iter().position(|t| t.id == Some(id)))
                {
                    self.open_detail(task);
                }
            }
            _ => {
                let (cursor, len, page) = match self.view {
                    View::Warnings => (
                        &mut self.warnings,
                        warnings::count(report),
                        warnings::visible_rows(ui::body(self.area)),
                    ),
                    _ => (
                        &mut self.workers,
                        report.workers.len(),
                        workers::visible_rows(ui::body(self.area)),
                    ),
                };
                if let Some(motion) = Motion::of(key, page) {
                    cursor.step(motion, len);
                    self.follow_lists();
                }
            }
        }
    }

    fn edit_filter(&mut self, key: KeyEvent) {
        match key.code {
            KeyCode::Enter => self.editing_filter = false,
            KeyCode::Esc => {
                self.editing_filter = false;
                self.set_filter(String::new());
            }
            KeyCode::Backspace => {
                let mut filter = self.filter.clone();
                filter.pop();
                self.set_filter(filter);
            }
            KeyCode::Char(c) => {
                let mut filter = self.filter.clone();
                filter.push(c);
                self.set_filter(filter);
            }
            // Arrows are not text: they pick among the rows the filter leaves, while typing.
            _ => {
                if let Some(motion) = Motion::of(key, self.tasks_page()) {
                    self.move_in_table(motion);
                }
            }
        }
    }

    fn set_filter(&mut self, filter: String) {
        self.filter = filter;
        self.reorder();
    }

    fn toggle(&mut self, view: View) {
        self.view = if self.view == view { View::Tasks } else { view };
    }

    fn open_detail(&mut self, task: usize) {
        let Some(report) = &self.report else { return };
        self.detail = Some(TaskKey::of(&report.tasks[task]));
        self.detail_scroll = 0;
        if self.view != View::Detail {
            self.back = self.view;
        }
        self.view = View::Detail;
    }

    /// A new column starts in its natural direction; use `i` to turn it round.
    fn sort_by(&mut self, column: Column) {
        self.sort = Sort {
            column,
            descending: column.descending_first(),
        };
        self.reorder();
    }

    fn invert_sort(&mut self) {
        self.sort.descending = !self.sort.descending;
        self.reorder();
    }

    fn tasks_page(&self) -> usize {
        tasks::visible_rows(ui::body(self.area))
    }

    fn detail_max_scroll(&self) -> usize {
        let body = ui::body(self.area);
        match (&self.report, self.detail_task()) {
            (Some(report), Some(task)) => detail::document(report, task, body.width)
                .len()
                .saturating_sub(detail::visible_rows(body)),
            _ => 0,
        }
    }

    /// The selected task and the screen row it is on, to find it again after the rows change
    /// (new figures, another sort, a filter). None on the first row: that is the table nobody
    /// has moved in, whose user watches the top of the list, not whichever task happened to be
    /// there before.
    fn remember_selection(&self) -> Option<(TaskKey, usize)> {
        if self.tasks.selected == 0 {
            return None;
        }
        let report = self.report.as_ref()?;
        let task = self.selected_task()?;
        Some((
            TaskKey::of(&report.tasks[task]),
            self.tasks.selected.saturating_sub(self.tasks.offset),
        ))
    }

    fn reorder(&mut self) {
        let kept = self.remember_selection();
        self.reorder_keeping(kept);
        self.follow_lists();
    }

    /// Recomputes the rows. The selected task stays selected, on the same screen row where
    /// possible, so that rows reshuffling under a refresh do not move what the user looks at;
    /// when it is gone (filtered out), the selection goes back to the top.
    fn reorder_keeping(&mut self, kept: Option<(TaskKey, usize)>) {
        let Some(report) = &self.report else { return };
        self.order = sorted_rows(
            report,
            &self.await_labels,
            &self.marks,
            self.sort,
            &self.filter,
        );
        let found = kept.and_then(|(key, row)| {
            let at = self
                .order
                .iter()
                .position(|&task| key.matches(&report.tasks[task]))?;
            Some((at, row))
        });
        self.tasks = match found {
            Some((at, row)) => Cursor {
                selected: at,
                offset: at.saturating_sub(row),
            },
            None => Cursor::default(),
        };
    }

    fn follow_lists(&mut self) {
        let body = ui::body(self.area);
        self.tasks
            .follow(self.order.len(), tasks::visible_rows(body), |_| 1);
        let Some(report) = &self.report else { return };
        self.workers
            .follow(report.workers.len(), workers::visible_rows(body), |_| 1);
        self.warnings.follow(
            warnings::count(report),
            warnings::visible_rows(body),
            |index| warnings::entry(report, index).map_or(1, |entry| entry.height()),
        );
        if self.view == View::Detail {
            self.detail_scroll = self.detail_scroll.min(self.detail_max_scroll());
        }
    }
}

/// Where a live task waits, as the table shows it; nothing for a task that ended, whose last
/// await point is history.
fn await_label(task: &TaskRow) -> String {
    match &task.await_point {
        Some(point) if !task.state.is_terminal() => location(point.file.as_deref(), point.line),
        _ => String::new(),
    }
}

fn marks(report: &Report) -> HashMap<u64, Mark> {
    let mut marks = HashMap::new();
    let warned = report.warnings.iter().filter_map(|warning| warning.task);
    for id in warned {
        marks.insert(id, Mark::Warning);
    }
    let deadlocked = report
        .deadlocks
        .iter()
        .flat_map(|deadlock| deadlock.tasks.iter().flatten());
    for &id in deadlocked {
        marks.insert(id, Mark::Deadlock);
    }
    marks
}

/// The table's rows. Every whitespace-separated word of the filter must occur (ignoring ASCII
/// case) in the task's name, await point (place or function) or state.
fn sorted_rows(
    report: &Report,
    await_labels: &[String],
    marks: &HashMap<u64, Mark>,
    sort: Sort,
    filter: &str,
) -> Vec<usize> {
    let words: Vec<String> = filter.split_whitespace().map(str::to_lowercase).collect();
    let label = |task: usize| await_labels.get(task).map_or("", String::as_str);
    let matches = |task: usize| {
        let row = &report.tasks[task];
        words.iter().all(|word| {
            contains_ignoring_case(&row.name, word)
                || contains_ignoring_case(label(task), word)
                || contains_ignoring_case(row.state.as_str(), word)
                || row
                    .await_point
                    .as_ref()
                    .is_some_and(|point| contains_ignoring_case(&point.function, word))
        })
    };
    let mut rows: Vec<usize> = (0..report.tasks.len())
        .filter(|&task| matches(task))
        .collect();
    let mark = |row: &TaskRow| row.id.and_then(|id| marks.get(&id).copied());
    rows.sort_by(|&a, &b| {
        let (x, y) = (&report.tasks[a], &report.tasks[b]);
        let by_column = match sort.column {
            Column::Mark => mark(x).cmp(&mark(y)),
            // Tasks without an id go last either way round.
            Column::Id => (x.id.is_none(), x.id).cmp(&(y.id.is_none(), y.id)),
            Column::Name => x.name.cmp(&y.name),
            Column::State => state_rank(x.state).cmp(&state_rank(y.state)),
            Column::Polls => x.polls.cmp(&y.polls),
            Column::Busy => x.busy_ns.cmp(&y.busy_ns),
            Column::Sched => x.scheduled_ns.cmp(&y.scheduled_ns),
            Column::Idle => x.idle_ns.cmp(&y.idle_ns),
            // Tasks with no await point after those with one.
            Column::Await => (label(a).is_empty(), label(a)).cmp(&(label(b).is_empty(), label(b))),
        };
        let by_column = if sort.descending {
            by_column.reverse()
        } else {
            by_column
        };
        // Ties keep a fixed order, so equal rows do not swap places at every refresh.
        by_column
            .then_with(|| x.id.cmp(&y.id))
            .then_with(|| x.header.cmp(&y.header))
            .then_with(|| a.cmp(&b))
    });
    rows
}

/// Live tasks first, the most active first; a panic before quieter endings.
fn state_rank(state: TaskState) -> u8 {
    match state {
        TaskState::Running => 0,
        TaskState::Scheduled => 1,
        TaskState::Idle => 2,
        TaskState::Panicked => 3,
        TaskState::Cancelled => 4,
        TaskState::Completed => 5,
    }
}

/// `needle` is lowercase. Byte-wise, without allocating: the filter runs over every task at
/// each key typed.
fn contains_ignoring_case(haystack: &str, needle: &str) -> bool {
    let needle = needle.as_bytes();
    needle.is_empty()
        || haystack
            .as_bytes()
            .windows(needle.len())
            .any(|window| window.eq_ignore_ascii_case(needle))
}
