//! The last async backtrace read for each task: read when a task goes idle (its memory then
//! holds a stable await point), and for every idle task still alive when the probe ends.

use std::collections::HashMap;

use super::backtrace::{Frame, Frames, Memory, TaskLayout, Unreadable, Walker};
use crate::{
    model::{TaskModel, TaskState},
    resolve::ProbePlan,
};

/// A task's backtrace and when it was read.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskStack {
    pub frames: Frames,
    pub read_ns: u64,
    /// The task's state word, read with the frames: its reference count counts the wakers
    /// left (wakers dropped while the task waits send no event).
    #[serde(default)]
    pub state_word: Option<u64>,
    /// Why `frames` is empty: what kept the backtrace from being read. Boxed: most tasks have
    /// a backtrace, and a program can have 100 000 of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<Box<NoBacktrace>>,
}

/// Why a task has no backtrace, as the report says it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NoBacktrace {
    /// The binary (and any --binary/--debuginfo) has no DWARF.
    NoDwarf,
    /// It has DWARF, but its types could not be read.
    DwarfUnreadable,
    /// DWARF describes no future for this task's type (or the type itself is unknown).
    NoFutureType,
    /// Reading the task's memory failed.
    Unreadable { address: u64, error: String },
    /// The target was gone when its memory was to be read.
    TargetGone,
    /// The future's memory read, but did not decode as its DWARF type says.
    Undecodable { address: u64 },
}

impl std::fmt::Display for NoBacktrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoDwarf => f.write_str(
                "no DWARF in the binary: build with debug = 1 or more, or pass the unstripped \
                 build with --binary",
            ),
            Self::DwarfUnreadable => f.write_str("the binary's DWARF types could not be read"),
            Self::NoFutureType => f.write_str("DWARF describes no future for this task's type"),
            Self::Unreadable { address, error } => {
                write!(f, "its memory at {address:#x} could not be read: {error}")
            }
            Self::TargetGone => f.write_str("the target exited before it was read"),
            Self::Undecodable { address } => write!(
                f,
                "its future at {address:#x} did not decode as its DWARF type (it changed while \
                 read, or is not the type its vtable says)"
            ),
        }
    }
}

impl TaskStack {
    /// Where the task waits (see [`await_point_of`]).
    pub fn await_point(&self) -> Option<&Frame> {
        await_point_of(&self.frames)
    }

    /// What the innermost future waits for, in words.
    pub fn leaf(&self) -> Option<&str> {
        self.frames.last()?.leaf.as_deref()
    }
}

/// Where a task with the backtrace `frames` waits: the innermost frame of a function in the
/// program's own code (a `select!` frame stands for no function: its caller does, at the same
/// line), else the innermost frame that has a source line.
pub fn await_point_of(frames: &[Frame]) -> Option<&Frame> {
    frames
        .iter()
        .rev()
        .find(|frame| frame.is_user_code() && !frame.function.ends_with('!'))
        .or_else(|| frames.iter().rev().find(|frame| frame.line.is_some()))
}

/// Backtraces by task (index into the model's tasks). A slot per task rather than a map: with a
/// hundred thousand parked tasks, the map's buckets would cost more than the slots.
#[derive(Default)]
pub struct Stacks {
    by_task: Vec<Option<TaskStack>>,
}

pub struct StackReader<'a> {
    pub plan: &'a ProbePlan,
    pub memory: &'a dyn Memory,
    pub values: bool,
}

impl StackReader<'_> {
    /// The backtrace of the task at `header` whose type is `task_type`, or why it has none.
    pub fn read(
        &self,
        header: u64,
        task_type: Option<usize>,
        now_ns: u64,
    ) -> Result<Vec<Frame>, NoBacktrace> {
        let Some(types) = self.plan.types.as_deref() else {
            return Err(match self.plan.has_dwarf {
                true => NoBacktrace::DwarfUnreadable,
                false => NoBacktrace::NoDwarf,
            });
        };
        let future = task_type
            .and_then(|index| self.plan.task_types.get(index)?.future)
            .ok_or(NoBacktrace::NoFutureType)?;
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
        let address = header + future.offset;
        let frames = walker.walk(address, future.ty);
        if !frames.is_empty() {
            return Ok(frames);
        }
        // Nothing decoded: the memory, or what was in it.
        Err(match self.memory.unreadable(address, 1) {
            Some(Unreadable { gone: true, .. }) => NoBacktrace::TargetGone,
            Some(Unreadable { error, .. }) => NoBacktrace::Unreadable { address, error },
            None => NoBacktrace::Undecodable { address },
        })
    }

    /// Reads the backtraces of the tasks in `indices` that are idle now (a task that ran or was
    /// freed meanwhile is left out); a task whose backtrace cannot be read gets why instead,
    /// except in a binary without DWARF, which the report says once for all. `joined` may serve
    /// several calls (batches of one read) while `model` gains and folds no task.
    pub fn read_idle(
        &self,
        model: &TaskModel,
        indices: &[usize],
        now_ns: u64,
        joined: &mut JoinedTasks,
    ) -> Vec<(usize, TaskStack)> {
        indices
            .iter()
            .filter_map(|&index| {
                let task = model.tasks().get(index)?;
                if task.state != TaskState::Idle {
                    return None;
                }
                let (frames, missing) = match self.read(task.header, model.task_type(task), now_ns)
                {
                    Ok(mut frames) => {
                        joined.name_in(&mut frames, model, self.plan);
                        (frames, None)
                    }
                    Err(NoBacktrace::NoDwarf) => return None,
                    Err(why) => (Vec::new(), Some(Box::new(why))),
                };
                // A block_on future's address is the future's, not a task header's.
                let state_word = (!task.block_on)
                    .then(|| {
                        self.memory
                            .read_u64(task.header + self.plan.layout.header_state)
                    })
                    .flatten();
                Some((
                    index,
                    TaskStack {
                        frames: frames.into(),
                        read_ns: now_ns,
                        state_word,
                        missing,
                    },
                ))
            })
            .collect()
    }

    /// Reads every idle task that has no backtrace yet (e.g. idle since before the probe).
    pub fn refresh_unread(&self, stacks: &mut Stacks, model: &TaskModel, now_ns: u64) {
        let unread: Vec<usize> = (0..model.tasks().len())
            .filter(|&index| stacks.get(index).is_none())
            .collect();
        let mut joined = JoinedTasks::default();
        for (index, stack) in self.read_idle(model, &unread, now_ns, &mut joined) {
            stacks.insert(index, stack);
        }
    }
}

/// Names the task a `JoinHandle` waits for (its leaf says only the task's id, all the future's
/// memory tells), from the model: `waiting for task 7 (JoinHandle): app::worker, idle`.
#[derive(Default)]
pub struct JoinedTasks {
    /// Tasks by tokio id, made at the first JoinHandle met.
    by_id: Option<HashMap<u64, usize>>,
}

impl JoinedTasks {
    fn name_in(&mut self, frames: &mut [Frame], model: &TaskModel, plan: &ProbePlan) {
        let Some(leaf) = frames.last_mut() else {
            return;
        };
        let Some(super::backtrace::Resource::Task { id }) = leaf.waits_on else {
            return;
        };
        let by_id = self.by_id.get_or_insert_with(|| {
            let tasks = model.tasks().iter().enumerate();
            tasks
                .filter_map(|(index, task)| Some((task.id?, index)))
                .collect()
        });
        let Some(task) = by_id.get(&id).and_then(|&index| model.tasks().get(index)) else {
            return;
        };
        let Some(name) = model
            .task_type(task)
            .and_then(|index| plan.task_types.get(index))
        else {
            return;
        };
        if let Some(text) = &mut leaf.leaf {
            *text = format!("{text}: {}, {}", name.name, task.state.as_str()).into();
        }
    }
}

/// For the idle tasks among `indices`: the target exited before their backtraces were read
/// (a target gone by the end of a probe, whose memory must not be read: its pid may be reused).
pub fn gone(model: &TaskModel, indices: &[usize], now_ns: u64) -> Vec<(usize, TaskStack)> {
    indices
        .iter()
        .filter(|&&index| {
            model
                .tasks()
                .get(index)
                .is_some_and(|task| task.state == TaskState::Idle)
        })
        .map(|&index| {
            let stack = TaskStack {
                frames: Frames::default(),
                read_ns: now_ns,
                state_word: None,
                missing: Some(Box::new(NoBacktrace::TargetGone)),
            };
            (index, stack)
        })
        .collect()
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
        self.by_task.get(index)?.as_ref()
    }

    /// Room for `more` tasks' backtraces (a memory scan finds them all at once).
    pub fn reserve(&mut self, more: usize) {
        self.by_task.reserve_exact(more);
    }

    /// Keeps `stack` as `index`'s latest, unless it is a failed read and a backtrace was read
    /// before (a task whose memory went away at the end is best shown where it last waited), or
    /// it only says the target is gone and a read before said more.
    pub fn insert(&mut self, index: usize, stack: TaskStack) {
        let keep = self.get(index).is_some_and(|known| {
            !known.frames.is_empty()
                || (stack.frames.is_empty()
                    && stack.missing.as_deref() == Some(&NoBacktrace::TargetGone))
        });
        if stack.frames.is_empty() && keep {
            return;
        }
        put(&mut self.by_task, index, stack);
    }

    /// Follows tasks to their new indices after the model folded ended ones.
    pub fn remap(&mut self, remap: &[Option<usize>]) {
        let mut by_task = Vec::with_capacity(self.by_task.len());
        for (index, stack) in std::mem::take(&mut self.by_task).into_iter().enumerate() {
            if let (Some(stack), Some(new)) = (stack, remap.get(index).copied().flatten()) {
                put(&mut by_task, new, stack);
            }
        }
        self.by_task = by_task;
    }
}

/// Fills `index`'s slot, adding empty slots up to it.
fn put(slots: &mut Vec<Option<TaskStack>>, index: usize, stack: TaskStack) {
    if index >= slots.len() {
        slots.resize_with(index + 1, || None);
    }
    slots[index] = Some(stack);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(frames: usize, missing: Option<NoBacktrace>) -> TaskStack {
        TaskStack {
            frames: vec![Frame::default(); frames].into(),
            read_ns: 0,
            state_word: None,
            missing: missing.map(Box::new),
        }
    }

    #[test]
    fn a_failed_read_keeps_what_was_known() {
        let mut stacks = Stacks::default();
        stacks.insert(0, stack(0, Some(NoBacktrace::NoFutureType)));
        stacks.insert(0, stack(0, Some(NoBacktrace::TargetGone)));
        assert_eq!(
            stacks.get(0).and_then(|known| known.missing.clone()),
            Some(Box::new(NoBacktrace::NoFutureType)),
            "the target being gone explains nothing a read before did not"
        );
        stacks.insert(0, stack(2, None));
        let unreadable = NoBacktrace::Unreadable {
            address: 0x10,
            error: "Bad address (os error 14)".into(),
        };
        stacks.insert(0, stack(0, Some(unreadable.clone())));
        assert_eq!(stacks.get(0).map(|known| known.frames.len()), Some(2));
        stacks.insert(1, stack(0, Some(unreadable.clone())));
        assert_eq!(
            stacks.get(1).and_then(|known| known.missing.clone()),
            Some(Box::new(unreadable))
        );
    }

    #[test]
    fn reasons_read_as_sentences() {
        assert_eq!(
            NoBacktrace::Unreadable {
                address: 0x7f00,
                error: "No such process (os error 3)".into()
            }
            .to_string(),
            "its memory at 0x7f00 could not be read: No such process (os error 3)"
        );
        assert_eq!(
            NoBacktrace::TargetGone.to_string(),
            "the target exited before it was read"
        );
    }
}
