//! The state of one run as it is collected: the task model, the backtraces read, and whoever
//! follows along (exporters that need the history, not just the end state). A live probe and a
//! replayed recording feed a session the same way, event by event and backtrace by backtrace,
//! so they end in the same state and give the same reports.

use crate::{
    analyze::stacks::{Stacks, TaskStack},
    model::{BlockedAt, Coverage, Observed, TaskEvent, TaskModel},
    record::Recorder,
    resolve::Catalogue,
};

/// Follows a run as it happens. Both methods run after the session's own state took the change
/// in, so `model` already reflects it.
pub trait Observer {
    /// `task` is the index of the task the event concerned, when the model placed it.
    fn event(&mut self, _event: &TaskEvent, _task: Option<usize>, _model: &TaskModel) {}
    /// A backtrace was read for `task`: where it waits as of `stack.read_ns`.
    fn stack(&mut self, _task: usize, _stack: &TaskStack, _model: &TaskModel) {}
    /// `task` was found in the target's memory, in the state the model now gives it, with no
    /// history before.
    fn observed(&mut self, _task: usize, _model: &TaskModel) {}
    /// Whether it needs every task kept one by one (a timeline needs every task's history):
    /// the model then folds no ended task into its type's totals.
    fn needs_every_task(&self) -> bool {
        false
    }
}

/// Nobody follows.
impl Observer for () {}

impl<O: Observer> Observer for Option<O> {
    fn event(&mut self, event: &TaskEvent, task: Option<usize>, model: &TaskModel) {
        if let Some(observer) = self {
            observer.event(event, task, model);
        }
    }
    fn stack(&mut self, task: usize, stack: &TaskStack, model: &TaskModel) {
        if let Some(observer) = self {
            observer.stack(task, stack, model);
        }
    }
    fn observed(&mut self, task: usize, model: &TaskModel) {
        if let Some(observer) = self {
            observer.observed(task, model);
        }
    }
    fn needs_every_task(&self) -> bool {
        self.as_ref().is_some_and(Observer::needs_every_task)
    }
}

pub struct Session<O = ()> {
    pub model: TaskModel,
    pub stacks: Stacks,
    pub observer: O,
    recorder: Option<Recorder>,
    /// How task indices moved in the model's last fold, for whoever else keeps indices.
    remap: Option<Vec<Option<usize>>>,
    /// When the per-poll probes were detached, until the events stamped before then are in:
    /// see [`Session::pause_at`].
    pending_pause: Option<u64>,
}

impl<O: Observer> Session<O> {
    /// `keep_every_task`: fold no ended task into its type's totals (a replay must do as the
    /// recorded run did).
    pub fn new(catalogue: &Catalogue, observer: O, keep_every_task: bool) -> Self {
        let mut model = TaskModel::new(catalogue.site_types.clone());
        if keep_every_task {
            model.keep_every_task();
        }
        Self {
            model,
            stacks: Stacks::default(),
            observer,
            recorder: None,
            remap: None,
            pending_pause: None,
        }
    }

    /// How task indices moved in the last fold of ended tasks, once (see [`TaskModel::folded`]).
    pub fn take_remap(&mut self) -> Option<Vec<Option<usize>>> {
        self.remap.take()
    }

    /// After the model folded ended tasks: the backtraces follow their tasks' new indices.
    fn follow_fold(&mut self) {
        if let Some(remap) = self.model.take_remap() {
            self.stacks.remap(&remap);
            self.remap = Some(remap);
        }
    }

    /// Writes everything the session takes in to `recorder` from now on.
    pub fn record_to(&mut self, recorder: Recorder) {
        self.recorder = Some(recorder);
    }

    pub fn recorder(&mut self) -> Option<&mut Recorder> {
        self.recorder.as_mut()
    }

    pub fn take_recorder(&mut self) -> Option<Recorder> {
        self.recorder.take()
    }

    pub fn event(&mut self, event: &TaskEvent) {
        self.pause_before(event.ts_ns);
        let task = self.model.apply(event);
        self.follow_fold();
        if let Some(recorder) = &mut self.recorder {
            recorder.event(event);
        }
        self.observer.event(event, task, &self.model);
    }

    /// A task found in the target's memory: one that existed before the probe attached, even if
    /// it is never polled while the probe watches. Returns its index.
    pub fn observe(&mut self, found: Observed) -> usize {
        if let Some(recorder) = &mut self.recorder {
            recorder.observed(&found);
        }
        let task = self.model.observe(found);
        self.observer.observed(task, &self.model);
        task
    }

    /// The per-poll probes were detached at `now_ns`. Events stamped before then may still
    /// be in the rings or waiting to settle: the pause applies once they are in, or a poll
    /// that started just before it would stay running in the model through the gap.
    pub fn pause_at(&mut self, now_ns: u64) {
        self.pause_before(u64::MAX);
        self.pending_pause = Some(now_ns);
    }

    /// Every event stamped before `settled_ns` is in: a pending pause before it applies.
    pub fn settle(&mut self, settled_ns: u64) {
        self.pause_before(settled_ns);
    }

    fn pause_before(&mut self, ts_ns: u64) {
        if let Some(now_ns) = self.pending_pause.filter(|&at| at <= ts_ns) {
            self.pending_pause = None;
            self.apply_coverage(Coverage::Paused { now_ns });
        }
    }

    /// What the probe sees changed (an overhead budget paused or resumed the per-poll probes,
    /// or a task's memory was checked after a gap).
    pub fn coverage(&mut self, change: Coverage) {
        self.pause_before(u64::MAX);
        self.apply_coverage(change);
    }

    fn apply_coverage(&mut self, change: Coverage) {
        if let Some(recorder) = &mut self.recorder {
            recorder.coverage(&change);
        }
        self.model.coverage(change);
        self.follow_fold();
    }

    /// The poll `task` is in was seen blocked at `at` (its thread's native stack).
    pub fn blocked(&mut self, task: usize, at: BlockedAt) {
        if let Some(recorder) = &mut self.recorder {
            recorder.blocked(task, &at);
        }
        self.model.blocked(task, at);
    }

    pub fn stack(&mut self, task: usize, stack: TaskStack) {
        if let Some(recorder) = &mut self.recorder {
            recorder.stack(task, &stack);
        }
        if let Some(word) = stack.state_word {
            self.model.refresh_word(task, word, stack.read_ns);
        }
        self.observer.stack(task, &stack, &self.model);
        self.stacks.insert(task, stack);
    }
}
