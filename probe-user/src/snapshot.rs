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

/// Each task type by the address in the running process of the vtable `vtable_of` gives it
/// (a link-time address, moved by the executable's load bias).
fn types_by_vtable(
    plan: &ProbePlan,
    memory: &ProcessMemory,
    vtable_of: impl Fn(&crate::resolve::TaskType) -> Option<u64>,
) -> Result<HashMap<u64, usize>, SnapshotError> {
    let bias = memory.executable_load_bias(&plan.segments)?;
    Ok(plan
        .task_types
        .iter()
        .enumerate()
        .filter_map(|(index, task_type)| Some((vtable_of(task_type)?.wrapping_add(bias), index)))
        .collect())
}

/// Finds every task of `plan`'s binary in the memory of the running process.
pub fn find(plan: &ProbePlan, memory: &ProcessMemory, now_ns: u64) -> Result<Found, SnapshotError> {
    let by_vtable = types_by_vtable(plan, memory, |task_type| Some(task_type.vtable?.address))?;
    if by_vtable.is_empty() {
        return Err(SnapshotError::NoVtables);
    }
    let wanted: HashSet<u64> = by_vtable.keys().copied().collect();
    let mut candidates = Vec::new();
    let mappings = memory.mappings()?;
    // A task cell is always allocated on the heap: a copy of one on a thread's stack is a
    // temporary of the spawn that made it (debug builds build the cell there, then move it).
    let stacks: Vec<_> = thread_stacks(memory, &mappings)
        .into_iter()
        .map(|(_, stack)| stack)
        .collect();
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
        if stacks.iter().any(|stack| stack.contains(header)) {
            rejected += 1;
            continue;
        }
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

/// The futures given to `block_on` that are parked on a thread's stack, found by the pointer to
/// their `dyn Future` vtable that `block_on` keeps next to their address (a `#[tokio::test]`'s
/// body goes to `block_on` as `Pin<&mut dyn Future>`). Only the live part of each stack (from
/// the thread's stack pointer up) is read. A future passed by value (`#[tokio::main]`,
/// `Runtime::block_on(run())`) has no such marker and is not found.
pub fn find_block_on(
    plan: &ProbePlan,
    memory: &ProcessMemory,
    now_ns: u64,
) -> Result<Vec<Observed>, SnapshotError> {
    let by_vtable = types_by_vtable(plan, memory, |task_type| {
        task_type.block_on.as_ref()?.vtable
    })?;
    if by_vtable.is_empty() {
        return Ok(Vec::new());
    }
    let wanted: HashSet<u64> = by_vtable.keys().copied().collect();
    let mut pointers = Vec::new();
    // The live part of each stack, from the thread's stack pointer up; the main thread's is
    // labelled `[stack]`, scanned as the anonymous memory it is.
    let live: Vec<_> = thread_stacks(memory, &memory.mappings()?)
        .into_iter()
        .map(|(sp, stack)| crate::memory::Mapping {
            start: sp & !7,
            path: None,
            pseudo: None,
            ..stack
        })
        .collect();
    // A fat pointer: the future's address, then its vtable.
    memory.scan_words(&live, &wanted, 8, 8, |at, vtable| {
        pointers.push((at, vtable))
    })?;
    let mut found = std::collections::BTreeMap::new();
    for (at, vtable) in pointers {
        let task_type = by_vtable[&vtable];
        if let Ok(address) = memory.read_u64(at)
            && parked_at_an_await(plan, memory, task_type, address)
        {
            found.insert(address, task_type);
        }
    }
    Ok(found
        .into_iter()
        .map(|(address, task_type)| Observed::block_on(address, task_type, now_ns))
        .collect())
}

/// Whether the state machine of `task_type` at `address` reads as suspended at an await: a
/// stale pointer to a future that returned, or to memory reused since, does not.
fn parked_at_an_await(
    plan: &ProbePlan,
    memory: &ProcessMemory,
    task_type: usize,
    address: u64,
) -> bool {
    use crate::resolve::futures::TypeKind;
    let (Some(types), Some(future)) = (&plan.types, plan.task_types[task_type].future) else {
        return false;
    };
    let Ok(info) = types.get(future.ty) else {
        return false;
    };
    let TypeKind::StateMachine {
        discriminant,
        states,
    } = &info.kind
    else {
        return false;
    };
    let mut bytes = [0u8; 8];
    let size = (discriminant.size as usize).clamp(1, 8);
    if memory
        .read(address + discriminant.offset, &mut bytes[..size])
        .is_err()
    {
        return false;
    }
    let value = u64::from_le_bytes(bytes);
    states
        .iter()
        .any(|state| state.discriminant == value && state.is_suspended())
}

/// Each thread's stack pointer (as `/proc/PID/task/TID/syscall` gives it for a thread blocked in
/// a system call, as a parked one is; not for one running on a CPU) and the mapping it is in.
fn thread_stacks(
    memory: &ProcessMemory,
    mappings: &[crate::memory::Mapping],
) -> Vec<(u64, crate::memory::Mapping)> {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{}/task", memory.pid())) else {
        return Vec::new();
    };
    threads
        .filter_map(Result::ok)
        .filter_map(|thread| std::fs::read_to_string(thread.path().join("syscall")).ok())
        .filter_map(|syscall| {
            // `NR args... SP PC`, or `running`.
            let fields: Vec<&str> = syscall.split_whitespace().collect();
            let sp = fields.len().checked_sub(2).map(|at| fields[at])?;
            u64::from_str_radix(sp.strip_prefix("0x")?, 16).ok()
        })
        .filter_map(|sp| {
            let stack = mappings.iter().find(|mapping| mapping.contains(sp))?;
            Some((sp, stack.clone()))
        })
        .collect()
}
