//! The last async backtrace read for each task: read when a task goes idle (its memory then
//! holds a stable await point), and for every idle task still alive when the probe ends.

use std::collections::HashMap;

use super::backtrace::{Frame, Memory, TaskLayout, Walker};
use crate::{
    model::{TaskModel, TaskState},
    resolve::ProbePlan,
};

/// A task's backtrace and when it was read.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskStack {
    pub frames: Vec<Frame>,
    pub read_ns: u64,
    /// The task's state word, read with the frames: its reference count counts the wakers
    /// left (wakers dropped while the task waits send no event).
    #[serde(default)]
    pub state_word: Option<u64>,
}

impl TaskStack {
    /// Where the task waits: the innermost frame in the program's own code, else the innermost
    /// frame that has a source line.
    pub fn await_point(&self) -> Option<&Frame> {
        self.frames
            .iter()
            .rev()
            .find(|frame| frame.is_user_code())
            .or_else(|| self.frames.iter().rev().find(|frame| frame.line.is_some()))
    }

    /// What the innermost future waits for, in words.
    pub fn leaf(&self) -> Option<&str> {
        self.frames.last()?.leaf.as_deref()
    }
}

/// Backtraces by task (index into the model's tasks).
#[derive(Default)]
pub struct Stacks {
    by_task: HashMap<usize, TaskStack>,
}

pub struct StackReader<'a> {
    pub plan: &'a ProbePlan,
    pub memory: &'a dyn Memory,
    pub values: bool,
}

impl StackReader<'_> {
    /// The backtrace of the task at `header` whose type is `task_type`, if DWARF describes it.
    pub fn read(&self, header: u64, task_type: usize, now_ns: u64) -> Option<Vec<Frame>> {
        let types = self.plan.types.as_deref()?;
        let future = self.plan.task_types.get(task_type)?.future?;
        let walker = Walker {
            types,
            memory: self.memory,
            layout: TaskLayout {
                header_vtable: self.plan.layout.header_vtable,
                vtable_id_offset: self.plan.layout.vtable_id_offset,
            },
            values: self.values,
            now_ns,
        };
        let frames = walker.walk(header + future.offset, future.ty);
        (!frames.is_empty()).then_some(frames)
    }

    /// Reads the backtraces of the tasks in `indices` that are idle now (a task that ran or was
    /// freed meanwhile, or whose memory is unreadable, is left out).
    pub fn read_idle(
        &self,
        model: &TaskModel,
        indices: &[usize],
        now_ns: u64,
    ) -> Vec<(usize, TaskStack)> {
        indices
            .iter()
            .filter_map(|&index| {
                let task = model.tasks().get(index)?;
                if task.state != TaskState::Idle {
                    return None;
                }
                let frames = self.read(task.header, model.task_type(task)?, now_ns)?;
                let state_word = self
                    .memory
                    .read_u64(task.header + self.plan.layout.header_state);
                Some((
                    index,
                    TaskStack {
                        frames,
                        read_ns: now_ns,
                        state_word,
                    },
                ))
            })
            .collect()
    }

    /// Reads every idle task that has no backtrace yet (e.g. idle since before the probe).
    pub fn refresh_unread(&self, stacks: &mut Stacks, model: &TaskModel, now_ns: u64) {
        let unread: Vec<usize> = (0..model.tasks().len())
            .filter(|index| !stacks.by_task.contains_key(index))
            .collect();
        for (index, stack) in self.read_idle(model, &unread, now_ns) {
            stacks.insert(index, stack);
        }
    }
}

/// Tasks that went idle, waiting to have their backtrace read once they have stayed idle a
/// while: most idle stretches of a busy program end within microseconds.
#[derive(Default)]
pub struct PendingStacks {
    /// (task, idle since), oldest first.
    waiting: std::collections::VecDeque<(usize, u64)>,
}

impl PendingStacks {
    /// Takes in tasks that just went idle.
    pub fn add(&mut self, model: &TaskModel, tasks: &[usize]) {
        for &task in tasks {
            if let Some(since) = model.idle_since(task) {
                self.waiting.push_back((task, since));
            }
        }
    }

    /// Follows tasks to their new indices after the model folded ended ones.
    pub fn remap(&mut self, remap: &[Option<usize>]) {
        self.waiting
            .retain_mut(|(task, _)| match remap.get(*task).copied().flatten() {
                Some(new) => {
                    *task = new;
                    true
                }
                None => false,
            });
    }

    /// The tasks idle for `after_ns` by `now_ns` without a break, each once.
    pub fn due(&mut self, model: &TaskModel, now_ns: u64, after_ns: u64) -> Vec<usize> {
        let mut due = Vec::new();
        while let Some(&(task, since)) = self.waiting.front() {
            if since.saturating_add(after_ns) > now_ns {
                break;
            }
            self.waiting.pop_front();
            // Woken meanwhile (and perhaps idle again since: then it is queued again).
            if model.idle_since(task) == Some(since) {
                due.push(task);
            }
        }
        due
    }
}

impl Stacks {
    pub fn get(&self, index: usize) -> Option<&TaskStack> {
        self.by_task.get(&index)
    }

    pub fn insert(&mut self, index: usize, stack: TaskStack) {
        self.by_task.insert(index, stack);
    }

    /// Follows tasks to their new indices after the model folded ended ones.
    pub fn remap(&mut self, remap: &[Option<usize>]) {
        self.by_task = std::mem::take(&mut self.by_task)
            .into_iter()
            .filter_map(|(index, stack)| Some((remap.get(index).copied().flatten()?, stack)))
            .collect();
    }
}
