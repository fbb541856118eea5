//! Where tasks are spawned: the program's own lines that call tokio's spawn for each scheduler
//! spawn function (`bind_new_task::<T>` and its kin, one per future type), shown as
//! `spawned at src/server.rs:227` as tokio-console shows its `#[track_caller]` location, but
//! read from the binary alone.
//!
//! The direct calls to each spawn function are found by decoding `.text`; the line of each
//! call and the calls inlined around it come from DWARF (addr2line). Where every frame there is
//! tokio's or std's own (tokio's spawn path is not inlined in a debug build), the function that
//! holds the call is followed up to its own callers, a few levels at most.

use std::collections::HashSet;

use iced_x86::{Decoder, DecoderOptions, OpKind};
use object::{Object as _, ObjectSection as _};

use super::names::is_library_function;

/// How many levels of tokio's own functions to climb from a spawn function: in a debug build
/// `spawn` -> `spawn_inner` -> `with_current` -> `LocalKey::try_with` -> ... -> `Handle::spawn`
/// -> the scheduler's `spawn` -> `bind_new_task`, each a function of its own.
const MAX_LEVELS: usize = 12;
/// Lines kept per spawn function: a future type is rarely spawned from more places.
const MAX_LINES: usize = 3;

/// A line of the program's own code.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceLine {
    pub file: String,
    pub line: u32,
}

/// For each of `functions` (addresses of spawn functions), the program's lines that spawn
/// through it; empty where DWARF has no line for the calls.
pub fn spawn_lines(
    file: &object::File<'_>,
    lines: &addr2line::Loader,
    functions: &[u64],
) -> Vec<Vec<SourceLine>> {
    let Some(calls) = DirectCalls::read(file) else {
        return vec![Vec::new(); functions.len()];
    };
    functions
        .iter()
        .map(|&function| lines_spawning(&calls, lines, function))
        .collect()
}

fn lines_spawning(
    calls: &DirectCalls,
    lines: &addr2line::Loader,
    function: u64,
) -> Vec<SourceLine> {
    let mut found = Vec::new();
    let mut seen = HashSet::from([function]);
    let mut level = vec![function];
    for _ in 0..MAX_LEVELS {
        let mut next = Vec::new();
        for call in level.iter().flat_map(|&target| calls.to(target)) {
            match own_line(lines, call) {
                Some(line) if !found.contains(&line) => found.push(line),
                Some(_) => {}
                None => {
                    // All tokio's (or std's): who calls the function this call is in?
                    let caller = lines.find_symbol_info(call).map(|symbol| symbol.address());
                    if let Some(caller) = caller.filter(|caller| seen.insert(*caller)) {
                        next.push(caller);
                    }
                }
            }
            if found.len() == MAX_LINES {
                return found;
            }
        }
        if next.is_empty() {
            break;
        }
        level = next;
    }
    found
}

/// The line of the program's own code that a call at `address` comes from: the innermost
/// frame of its inline chain that is not a library's. `None` when all of them are.
fn own_line(lines: &addr2line::Loader, address: u64) -> Option<SourceLine> {
    let mut frames = lines.find_frames(address).ok()?;
    while let Ok(Some(frame)) = frames.next() {
        let name = frame.function.as_ref()?.demangle().ok()?;
        if is_library_function(&name) {
            continue;
        }
        let location = frame.location?;
        return Some(SourceLine {
            file: location.file?.to_owned(),
            line: location.line?,
        });
    }
    None
}

/// Every direct call in `.text`, by target: `(target, call address)`, sorted.
struct DirectCalls(Vec<(u64, u64)>);

impl DirectCalls {
    fn read(file: &object::File<'_>) -> Option<Self> {
        if file.architecture() != object::Architecture::X86_64 {
            return None;
        }
        let text = file.section_by_name(".text")?;
        let code = text.data().ok()?;
        let mut calls = Vec::new();
        let decoder = Decoder::with_ip(64, code, text.address(), DecoderOptions::NONE);
        for instruction in decoder {
            if instruction.is_call_near() && instruction.op0_kind() == OpKind::NearBranch64 {
                calls.push((instruction.near_branch_target(), instruction.ip()));
            }
        }
        calls.sort_unstable();
        Some(Self(calls))
    }

    fn to(&self, target: u64) -> impl Iterator<Item = u64> + '_ {
        let start = self.0.partition_point(|&(to, _)| to < target);
        self.0[start..]
            .iter()
            .take_while(move |&&(to, _)| to == target)
            .map(|&(_, from)| from)
    }
}
