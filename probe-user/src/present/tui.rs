//! The live terminal UI (`probe` on a terminal).

use std::io;

use crate::report::Report;

/// What the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Continue,
    /// `q`, Esc on the main view, or Ctrl-C.
    Quit,
}

pub struct Tui {}

impl Tui {
    /// Takes over the terminal (raw mode, alternate screen) until dropped, panics included.
    pub fn start() -> io::Result<Self> {
        Ok(Self {})
    }

    /// New data to show.
    pub fn update(&mut self, report: Report) {
        let _ = report;
    }

    /// The line under the title: what the probe is doing.
    pub fn set_status(&mut self, status: String) {
        let _ = status;
    }

    /// Handles the keys pressed since the last call, without waiting.
    pub fn handle_input(&mut self) -> io::Result<Action> {
        Ok(Action::Continue)
    }

    pub fn draw(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// After the run: keeps showing the final report until the user quits.
    pub fn wait_for_quit(&mut self) -> io::Result<()> {
        Ok(())
    }
}
