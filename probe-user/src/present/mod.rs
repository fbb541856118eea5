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

use crate::{
    analyze::stacks::TaskStack,
    cli::OutputArgs,
    model::{TaskEvent, TaskModel},
    session::Observer,
};

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
}
