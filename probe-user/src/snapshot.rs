//! Snapshot: every live task of a process, found in its memory rather than by watching it, so
//! tasks idle since long before we looked are found too. A task's memory is a `Cell<T, S>`
//! (128-byte aligned) whose header holds a pointer to its type's vtable; the vtables are known
//! from the ELF, so a scan of the heap for those pointers at the header's vtable offset finds
//! every task. Each candidate is checked (state word, id) before it is believed.

use std::collections::{HashMap, HashSet};

use crate::{
    memory::{MemoryError, ProcessMemory, ScanStats},
    model::{Observed, TaskModel},
    resolve::ProbePlan,
};
use probe_common::state;

/// Task cells are `#[repr(align(128))]`.
const CELL_ALIGN: u64 = 128;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(
        "no task vtables were found in the binary (unusual linker output?): tasks cannot be found in memory"
    )]
    NoVtables,
}

pub struct Snapshot {
    pub model: TaskModel,
    pub scan: ScanStats,
    /// Candidates that pointed at a task vtable but failed the checks.
    pub rejected: usize,
}

/// The tasks found in memory, in address order.
pub struct Found {
    pub tasks: Vec<Observed>,
    pub scan: ScanStats,
    /// Candidates that pointed at a task vtable but failed the checks.
    pub rejected: usize,
}

/// Finds every task of `plan`'s binary in the memory of the running process, as a model of its
/// own (`dump`).
pub fn take(
    plan: &ProbePlan,
    memory: &ProcessMemory,
    now_ns: u64,
) -> Result<Snapshot, SnapshotError> {
    let found = find(plan, memory, now_ns)?;
    let mut model = TaskModel::new(Vec::new());
    for task in found.tasks {
        model.observe(task);
    }
    Ok(Snapshot {
        model,
        scan: found.scan,
        rejected: found.rejected,
    })
}

/// Finds every task of `plan`'s binary in the memory of the running process.
pub fn find(plan: &ProbePlan, memory: &ProcessMemory, now_ns: u64) -> Result<Found, SnapshotError> {
    let bias = memory.executable_load_bias(&plan.segments)?;
    let by_vtable: HashMap<u64, usize> = plan
        .task_types
        .iter()
        .enumerate()
        .filter_map(|(index, task_type)| {
            Some((task_type.vtable?.address.wrapping_add(bias), index))
        })
        .collect();
    if by_vtable.is_empty() {
        return Err(SnapshotError::NoVtables);
    }
    let wanted: HashSet<u64> = by_vtable.keys().copied().collect();
    let mut candidates = Vec::new();
    let mappings = memory.mappings()?;
    let scan = memory.scan_words(
        &mappings,
        &wanted,
        CELL_ALIGN,
        plan.layout.header_vtable,
        |header, vtable| candidates.push((header, vtable)),
    )?;
    let mut tasks = Vec::new();
    let mut rejected = 0;
    for (header, vtable) in candidates {
        let task_type = by_vtable[&vtable];
        let Some(id_offset) = plan.task_types[task_type].vtable.map(|v| v.id_offset) else {
            continue;
        };
        let state_word = memory.read_u64(header + plan.layout.header_state).ok();
        let task_id = memory.read_u64(header + id_offset).ok();
        let plausible = state_word.is_some_and(|word| {
            let references = word >> state::REF_COUNT_SHIFT;
            (1..1 << 24).contains(&references)
        }) && task_id.is_some_and(|id| id != 0 && id < 1 << 48);
        if !plausible {
            rejected += 1;
            continue;
        }
        tasks.push(Observed {
            header,
            task_id,
            vtable,
            task_type,
            state_word: state_word.unwrap_or(0),
            now_ns,
        });
    }
    Ok(Found {
        tasks,
        scan,
        rejected,
    })
}
