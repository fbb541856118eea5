//! `--flamegraph FILE.svg`, `--idle-flamegraph FILE.svg` and `--folded FILE`: where busy time
//! goes by task type and await point, and where tasks wait.

use std::io::{self, Write};

use crate::{
    analyze::stacks::TaskStack,
    model::{TaskEvent, TaskModel},
    report::Report,
    resolve::Catalogue,
    session::Observer,
};

/// Which time a flamegraph shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// Time spent in polls.
    Busy,
    /// Time spent parked at await points.
    Idle,
}

#[derive(Default)]
pub struct Flame {}

impl Flame {
    pub fn new() -> Self {
        Self::default()
    }

    /// Both views as folded stacks, one `view;frame;frame… nanoseconds` line each.
    pub fn write_folded(
        &self,
        report: &Report,
        model: &TaskModel,
        catalogue: &Catalogue,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        let _ = (report, model, catalogue, out);
        Ok(())
    }

    pub fn write_svg(
        &self,
        view: View,
        report: &Report,
        model: &TaskModel,
        catalogue: &Catalogue,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        let _ = (view, report, model, catalogue, out);
        Ok(())
    }
}

impl Observer for Flame {}
