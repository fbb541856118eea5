//! Naming a task type without DWARF or v0 names: `raw::poll::<T, S>` jumps to
//! `Harness::<T, S>::poll`, which calls (directly, a few levels down) the future's own poll
//! function, whose legacy symbol keeps its path: `myapp::handler::{{closure}}`. Following direct
//! calls from `raw::poll` until such a symbol names the type.

use std::collections::{HashSet, VecDeque};

use iced_x86::{Decoder, DecoderOptions, OpKind};

use super::{bytes_at, names::task_name_from_type, symbols::SymbolTable};

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
    while let Some((address, depth)) = queue.pop_front() {
        if !visited.insert(address) || depth > MAX_DEPTH {
            continue;
        }
        let Some(symbol) = table.at(address) else {
            continue;
        };
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
    tokio_closure
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
