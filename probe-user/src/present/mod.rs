//! Present: everything a person reads or opens, drawn from the [`Report`] and, for the views
//! that need the run's history (the timeline, flamegraphs), from observers that followed the
//! session. Nothing here computes facts about tasks: the model and the analysis did.

pub mod flamegraph;
pub mod heatmap;
pub mod markdown;
pub mod mermaid;
pub mod trace;
pub mod tree;
pub mod tui;

use std::{
    io::{self, Write},
    path::PathBuf,
};

use crate::{
    analyze::stacks::TaskStack,
    cli::{Format, OutputArgs},
    model::{TaskEvent, TaskModel},
    report::Report,
    resolve::Catalogue,
    session::{Observer, Session},
};
use flamegraph::View;

/// The observers the requested exports need (none are kept when no export asks for history).
#[derive(Default)]
pub struct Exports {
    pub timeline: Option<trace::Timeline>,
    pub flame: Option<flamegraph::Flame>,
}

impl Exports {
    /// The observers `output` needs; `started_ns` is time zero of the timeline.
    pub fn new(output: &OutputArgs, started_ns: u64) -> Self {
        Self {
            timeline: output
                .trace
                .is_some()
                .then(|| trace::Timeline::new(started_ns)),
            flame: (output.flamegraph.is_some()
                || output.idle_flamegraph.is_some()
                || output.folded.is_some())
            .then(flamegraph::Flame::new),
        }
    }
}

impl Observer for Exports {
    fn event(&mut self, event: &TaskEvent, task: Option<usize>, model: &TaskModel) {
        self.timeline.event(event, task, model);
        self.flame.event(event, task, model);
    }
    fn stack(&mut self, task: usize, stack: &TaskStack, model: &TaskModel) {
        self.timeline.stack(task, stack, model);
        self.flame.stack(task, stack, model);
    }
    fn observed(&mut self, task: usize, model: &TaskModel) {
        self.timeline.observed(task, model);
        self.flame.observed(task, model);
    }
    fn needs_every_task(&self) -> bool {
        self.timeline.is_some() || self.flame.is_some()
    }
}

/// Writes the requested files, then prints the report on stdout in the requested format.
pub fn emit(
    report: &Report,
    session: &Session<Exports>,
    catalogue: &Catalogue,
    output: &OutputArgs,
    stuck_after_ns: u64,
    verdict: &str,
) -> Result<(), ExportError> {
    let written = write_files(report, session, catalogue, output)?;
    let mut stdout = io::stdout().lock();
    let printed = match output.format {
        Format::Text => report
            .write_text(&mut stdout, output.top)
            .and_then(|()| report.write_stuck(&mut stdout, stuck_after_ns))
            .and_then(|()| report.write_diagnosis(&mut stdout))
            .and_then(|()| tree::write(report, TREE_LINES, &mut stdout))
            .and_then(|()| heatmap::write(report, heatmap::WIDTH, &mut stdout)),
        Format::Json => report
            .write_json(&mut stdout)
            .and_then(|()| writeln!(stdout)),
        Format::Md => markdown::write(report, output.top, stuck_after_ns, &mut stdout),
    }
    .and_then(|()| match verdict.is_empty() {
        true => Ok(()),
        false => writeln!(stdout, "{verdict}"),
    })
    .and_then(|()| stdout.flush());
    match printed {
        // `| head` is no error.
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => {}
        other => other.map_err(ExportError::Print)?,
    }
    for path in written {
        eprintln!("async-inspect: wrote {}", path.display());
    }
    let _ = io::stderr().flush();
    Ok(())
}

/// How many lines of the task tree the text report shows.
const TREE_LINES: usize = 40;

/// Writes every file `output` asks for; returns their paths.
pub fn write_files(
    report: &Report,
    session: &Session<Exports>,
    catalogue: &Catalogue,
    output: &OutputArgs,
) -> Result<Vec<PathBuf>, ExportError> {
    let mut written = Vec::new();
    let mut write = |path: &Option<PathBuf>,
                     what: &dyn Fn(&mut dyn Write) -> io::Result<()>|
     -> Result<(), ExportError> {
        let Some(path) = path else { return Ok(()) };
        let error = |source| ExportError::Write {
            path: path.clone(),
            source,
        };
        let mut out = io::BufWriter::new(std::fs::File::create(path).map_err(error)?);
        what(&mut out).and_then(|()| out.flush()).map_err(error)?;
        written.push(path.clone());
        Ok(())
    };
    let model = &session.model;
    let exports = &session.observer;
    write(&output.json, &|out| report.write_json(out))?;
    if let Some(timeline) = &exports.timeline {
        write(&output.trace, &|out| {
            timeline.write(report, model, catalogue, out)
        })?;
    }
    if let Some(flame) = &exports.flame {
        write(&output.flamegraph, &|out| {
            flame.write_svg(View::Busy, report, model, catalogue, out)
        })?;
        write(&output.idle_flamegraph, &|out| {
            flame.write_svg(View::Idle, report, model, catalogue, out)
        })?;
        write(&output.folded, &|out| {
            flame.write_folded(report, model, catalogue, out)
        })?;
    }
    write(&output.mermaid, &|out| {
        mermaid::write(report, output.top, out)
    })?;
    Ok(written)
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot print the report: {0}")]
    Print(#[source] io::Error),
}
