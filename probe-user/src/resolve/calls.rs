//! Naming a task type without DWARF or v0 names: `raw::poll::<T, S>` jumps to
//! `Harness::<T, S>::poll`, which calls (directly, a few levels down) the future's own poll
//! function, whose legacy symbol keeps its path: `myapp::handler::{{closure}}`. Following direct
//! calls from `raw::poll` until such a symbol names the type.
//!
//! Where the future's poll function was inlined, the drop glue of the task's stage still names
//! it: `core::ptr::drop_in_place<tokio::runtime::task::core::Stage<myapp::handler::{{closure}}>>`
//! (legacy names keep the generic arguments of drop glue).

use std::collections::{HashSet, VecDeque};

use iced_x86::{Decoder, DecoderOptions, OpKind};

use super::{
    bytes_at,
    names::{first_generic_arg, task_name_from_type},
    symbols::SymbolTable,
};

/// How many calls deep to look: raw::poll -> Harness::poll -> poll_inner -> Core::poll -> future.
const MAX_DEPTH: usize = 5;
/// Bound on decoded function size, so a bad symbol size cannot make this slow.
const MAX_FUNCTION_BYTES: u64 = 64 * 1024;

pub(super) fn name_by_calls(
    file: &object::File<'_>,
    table: &SymbolTable,
    poll_address: u64,
) -> Option<String> {
    let bitness = if object::Object::is_64(file) { 64 } else { 32 };
    if object::Object::architecture(file) != object::Architecture::X86_64 {
        return None;
    }
    let mut queue = VecDeque::from([(poll_address, 0usize)]);
    let mut visited = HashSet::new();
    let mut tokio_closure = None;
    let mut stage_type = None;
    while let Some((address, depth)) = queue.pop_front() {
        if !visited.insert(address) || depth > MAX_DEPTH {
            continue;
        }
        let Some(symbol) = table.at(address) else {
            continue;
        };
        if stage_type.is_none() {
            stage_type = stage_drop_type(table, address);
        }
        if depth > 0 && symbol.demangled == WORKER_LOOP {
            // The worker-launch closure is inlined away; its body's call remains.
            return Some(WORKER_TASK_NAME.to_owned());
        }
        if depth > 0 && is_closure(&symbol.demangled) {
            if is_runtime_internal(&symbol.demangled) {
                tokio_closure.get_or_insert_with(|| task_name_from_type(&symbol.demangled));
                continue;
            }
            return Some(task_name_from_type(&symbol.demangled));
        }
        if depth > 0 && !is_runtime_internal(&symbol.demangled) {
            // Some other library's code: the future is not reached through here.
            continue;
        }
        let size = symbol.size.clamp(1, MAX_FUNCTION_BYTES);
        let Some(code) = bytes_at(file, address, size) else {
            continue;
        };
        let mut decoder = Decoder::with_ip(bitness, code, address, DecoderOptions::NONE);
        for instruction in &mut decoder {
            let direct = (instruction.is_call_near() || instruction.is_jmp_near())
                && instruction.op0_kind() == OpKind::NearBranch64;
            if direct {
                queue.push_back((instruction.near_branch_target(), depth + 1));
            }
        }
    }
    stage_type.or(tokio_closure)
}

/// `T` of the drop glue of a task's `Stage<T>`, `CoreStage<T>` or `Cell<T, S>` at `address`,
/// unless identical-code folding gave it several types' names.
fn stage_drop_type(table: &SymbolTable, address: u64) -> Option<String> {
    let mut found: Option<String> = None;
    for symbol in table.all_at(address) {
        let name = &symbol.demangled;
        if !(name.starts_with("core::ptr::drop_in_place<")
            || name.starts_with("core::ptr::drop_glue::<"))
        {
            continue;
        }
        let Some(inner) = ["Stage<", "CoreStage<", "Cell<"].iter().find_map(|holder| {
            let at = name.find(&format!("tokio::runtime::task::core::{holder}"))?;
            let args = &name[at + "tokio::runtime::task::core::".len() + holder.len()..];
            first_generic_arg(args.trim_end_matches('>'))
        }) else {
            continue;
        };
        match &found {
            Some(other) if *other != inner => return None,
            _ => found = Some(inner),
        }
    }
    found.map(|name| task_name_from_type(&name))
}

/// A multi-thread worker's loop, run as a blocking task by `Launch::launch`.
const WORKER_LOOP: &str = "tokio::runtime::scheduler::multi_thread::worker::run";
const WORKER_TASK_NAME: &str =
    "blocking: tokio::runtime::scheduler::multi_thread::worker::Launch::launch";

fn is_closure(name: &str) -> bool {
    name.ends_with("{{closure}}") || name.contains("::{closure#")
}

fn is_runtime_internal(name: &str) -> bool {
    let name = name.trim_start_matches('<');
    ["tokio::", "core::", "std::", "alloc::"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}
