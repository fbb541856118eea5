//! What a run shows as it goes: the live view (`--tui`) and a one-line status on stderr.

use probe_user::{
    collect,
    model::TaskModel,
    present::tui::{Action, Tui},
    record,
    report::RunFacts,
    resolve::Catalogue,
    session::Session,
};

use crate::make_report;

/// The live view during a run: input every tick, new data at most every [`LIVE_REFRESH`].
pub struct LiveView<'a> {
    tui: &'a mut Tui,
    refreshed: Option<std::time::Instant>,
}

impl<'a> LiveView<'a> {
    pub fn new(tui: &'a mut Tui) -> Self {
        Self {
            tui,
            refreshed: None,
        }
    }
}

/// How often the live view rebuilds its report (with lints and deadlocks) from the model.
const LIVE_REFRESH: std::time::Duration = std::time::Duration::from_millis(500);

impl LiveView<'_> {
    /// Whether the next tick rebuilds the report.
    pub fn due(&self) -> bool {
        self.refreshed.is_none_or(|at| at.elapsed() >= LIVE_REFRESH)
    }

    pub fn tick<O>(
        &mut self,
        session: &Session<O>,
        catalogue: &Catalogue,
        facts: &RunFacts,
        settings: record::Settings,
    ) -> std::io::Result<Action> {
        let action = self.tui.handle_input()?;
        if self.due() {
            self.refreshed = Some(std::time::Instant::now());
            let now = RunFacts {
                ended_ns: collect::monotonic_ns(),
                ..facts.clone()
            };
            self.tui
                .update(make_report(catalogue, session, now, settings));
        }
        self.tui.draw()?;
        Ok(action)
    }
}

/// A one-line live status on stderr when it is a terminal (attach mode only: a launched
/// program's own output shares the terminal).
pub struct StatusLine {
    enabled: bool,
    last: std::cell::Cell<Option<std::time::Instant>>,
}

impl StatusLine {
    pub fn new(wanted: bool) -> Self {
        use std::io::IsTerminal as _;
        Self {
            enabled: wanted && std::io::stderr().is_terminal(),
            last: std::cell::Cell::new(None),
        }
    }

    pub fn show(&self, model: &TaskModel) {
        if !self.enabled {
            return;
        }
        let now = std::time::Instant::now();
        if self
            .last
            .get()
            .is_some_and(|last| now - last < std::time::Duration::from_millis(500))
        {
            return;
        }
        self.last.set(Some(now));
        eprint!(
            "\r\x1b[K  {} tasks seen, {} live, {} events",
            model.tasks().len(),
            model.active(),
            model.events
        );
    }

    pub fn clear(&self) {
        if self.enabled && self.last.get().is_some() {
            eprint!("\r\x1b[K");
        }
    }
}
