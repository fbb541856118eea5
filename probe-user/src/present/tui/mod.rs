//! The live terminal UI (`probe` on a terminal), laid out like tokio-console: a task table, a
//! task's details, the warnings and deadlocks, and the worker threads.
//!
//! [`app::App`] holds everything a key press or a new report changes and is tested without a
//! terminal; the view modules only draw it. [`Tui`] glues the two to the real terminal and
//! owns the terminal's restoration, whichever way the program leaves.

mod app;
mod detail;
mod tasks;
mod ui;
mod warnings;
mod workers;

#[cfg(test)]
mod tests;

use std::{
    io::{self, Stdout},
    sync::{
        Once,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use ratatui::{
    Terminal,
    backend::CrosstermBackend,
    crossterm::{
        cursor, event, execute,
        terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
    },
    layout::Rect,
};

use self::app::App;
use crate::report::Report;

/// What the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Continue,
    /// `q`, Esc on the main view, or Ctrl-C.
    Quit,
}

pub struct Tui {
    app: App,
    terminal: Terminal<CrosstermBackend<Stdout>>,
    /// Last, so that it is dropped after the terminal: it puts the terminal back.
    _restore: Restore,
}

impl Tui {
    /// Takes over the terminal (raw mode, alternate screen) until dropped, panics included.
    pub fn start() -> io::Result<Self> {
        install_panic_hook();
        // Each step records itself as it succeeds, so that a failure part-way (no tty, a
        // terminal that refuses the alternate screen) undoes exactly what was done.
        let restore = Restore;
        terminal::enable_raw_mode()?;
        RAW_MODE.store(true, Ordering::SeqCst);
        execute!(io::stdout(), EnterAlternateScreen, cursor::Hide)?;
        ALTERNATE_SCREEN.store(true, Ordering::SeqCst);
        let terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
        Ok(Self {
            app: App::default(),
            terminal,
            _restore: restore,
        })
    }

    /// New data to show.
    pub fn update(&mut self, report: Report) {
        self.app.update(report);
    }

    /// The line under the title: what the probe is doing.
    pub fn set_status(&mut self, status: String) {
        self.app.status = status;
    }

    /// Handles the keys pressed since the last call, without waiting.
    pub fn handle_input(&mut self) -> io::Result<Action> {
        while event::poll(Duration::ZERO)? {
            if self.on_event(event::read()?) == Action::Quit {
                return Ok(Action::Quit);
            }
        }
        Ok(Action::Continue)
    }

    /// Draws the current state; formats only the rows that fit on the screen.
    pub fn draw(&mut self) -> io::Result<()> {
        let size = self.terminal.size()?;
        self.app.resize(Rect::new(0, 0, size.width, size.height));
        let app = &self.app;
        self.terminal.draw(|frame| ui::draw(frame, app))?;
        Ok(())
    }

    /// After the run: keeps showing the final report until the user quits.
    pub fn wait_for_quit(&mut self) -> io::Result<()> {
        loop {
            self.draw()?;
            if self.on_event(event::read()?) == Action::Quit {
                return Ok(());
            }
        }
    }

    fn on_event(&mut self, event: event::Event) -> Action {
        match event {
            // Release events only come with the kitty protocol, which is not enabled; ignoring
            // them keeps a key from acting twice if a terminal sends them anyway.
            event::Event::Key(key) if key.kind != event::KeyEventKind::Release => {
                self.app.on_key(key)
            }
            event::Event::Resize(width, height) => {
                self.app.resize(Rect::new(0, 0, width, height));
                Action::Continue
            }
            _ => Action::Continue,
        }
    }
}

/// What has been done to the terminal and must be undone. Global because the panic hook, which
/// cannot reach the [`Tui`], has to undo it before the panic message is printed: on the
/// alternate screen the message would vanish, and in raw mode it would print as a staircase.
static RAW_MODE: AtomicBool = AtomicBool::new(false);
static ALTERNATE_SCREEN: AtomicBool = AtomicBool::new(false);

/// Puts the terminal back when dropped: on return, on `?` in [`Tui::start`], on unwinding.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Idempotent: the panic hook and then the unwinding [`Tui`] both call it.
fn restore_terminal() {
    if ALTERNATE_SCREEN.swap(false, Ordering::SeqCst) {
        let _ = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
    }
    if RAW_MODE.swap(false, Ordering::SeqCst) {
        let _ = terminal::disable_raw_mode();
    }
}

/// Once per process, chained to whatever hook was there before (the default one prints the
/// message and backtrace, which the user must be able to read).
fn install_panic_hook() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
    });
}
