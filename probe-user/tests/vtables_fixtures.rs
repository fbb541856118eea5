//! `find_task_vtables` on the demo built in every shape `cargo xtask test` makes (PIE with
//! `.rela.dyn` relative relocations, PIE without DWARF, legacy mangling, non-PIE with absolute
//! words): every `raw::poll` instance must get its own plausible vtable.

mod common;

use common::fixture;

use std::collections::{BTreeMap, HashMap, HashSet};

use object::{Object as _, ObjectSymbol as _, SymbolKind};
use probe_user::resolve::vtables::{PointerCounts, PointerIndex, TaskVtable, find_task_vtables};

/// Text symbols by address, demangled without hashes (and without `.llvm.` suffixes).
fn symbols(file: &object::File<'_>) -> BTreeMap<u64, Vec<String>> {
    let mut by_address: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for symbol in file.symbols() {
        if symbol.kind() != SymbolKind::Text || symbol.address() == 0 {
            continue;
        }
        let Ok(name) = symbol.name() else { continue };
        let raw = name.find(".llvm.").map_or(name, |at| &name[..at]);
        let demangled = match rustc_demangle::try_demangle(raw) {
            Ok(demangled) => format!("{demangled:#}"),
            Err(_) => raw.to_owned(),
        };
        by_address
            .entry(symbol.address())
            .or_default()
            .push(demangled);
    }
    by_address
}

/// `tokio::runtime::task::raw::poll` (legacy) or `tokio::runtime::task::raw::poll::<T, S>` (v0).
fn is_raw_poll(name: &str) -> bool {
    name == "tokio::runtime::task::raw::poll"
        || name.starts_with("tokio::runtime::task::raw::poll::<")
}

fn named(symbols: &BTreeMap<u64, Vec<String>>, address: u64, what: &str) -> bool {
    symbols
        .get(&address)
        .is_some_and(|names| names.iter().any(|name| name.contains(what)))
}

fn check(relative: &str, expect_counts: fn(PointerCounts) -> bool) {
    let path = fixture(relative);
    let data = std::fs::read(&path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let symbols = symbols(&file);
    let polls: Vec<u64> = symbols
        .iter()
        .filter(|(_, names)| names.iter().any(|name| is_raw_poll(name)))
        .map(|(&address, _)| address)
        .collect();
    assert!(
        polls.len() >= 7,
        "{relative}: {} raw::poll instances",
        polls.len()
    );

    let index = PointerIndex::build(&file);
    let counts = index.counts();
    eprintln!(
        "{relative}: {} polls, code pointers {counts:?}",
        polls.len()
    );
    assert!(expect_counts(counts), "{relative}: {counts:?}");

    let vtables = find_task_vtables(&file, &polls);
    assert_eq!(vtables.len(), polls.len());
    let vtables: Vec<TaskVtable> = polls
        .iter()
        .zip(vtables)
        .map(|(poll, vtable)| {
            vtable.unwrap_or_else(|| panic!("{relative}: no vtable for {:?}", symbols[poll]))
        })
        .collect();

    let addresses: HashSet<u64> = vtables.iter().map(|v| v.address).collect();
    assert_eq!(
        addresses.len(),
        vtables.len(),
        "{relative}: vtables are distinct"
    );

    // Tasks of one scheduler share `schedule::<S>` (the vtable's second word), and so the layout
    // of the task cell up to the task id.
    let mut by_scheduler: HashMap<u64, Vec<&TaskVtable>> = HashMap::new();
    for vtable in &vtables {
        let schedule = index
            .pointer_at(vtable.address + 8)
            .expect("a vtable's second word is a code pointer");
        assert!(
            named(&symbols, schedule, "tokio::runtime::task::raw::schedule"),
            "{relative}: {vtable:#x?}'s schedule is {:?}",
            symbols.get(&schedule)
        );
        by_scheduler.entry(schedule).or_default().push(vtable);
    }
    // The demo spawns its tasks on a multi-thread and a current-thread runtime, and the
    // multi-thread workers run as a blocking task.
    assert_eq!(by_scheduler.len(), 3, "{relative}: {by_scheduler:#x?}");
    for group in by_scheduler.values() {
        let first = group[0];
        for vtable in group {
            assert_eq!(
                (vtable.scheduler_offset, vtable.id_offset),
                (first.scheduler_offset, first.id_offset),
                "{relative}: one scheduler, one cell layout: {group:#x?}"
            );
        }
        // `Core { scheduler, task_id, stage }` right after the 0x20-byte header, then the trailer.
        assert_eq!(first.scheduler_offset, 0x20, "{relative}: {first:#x?}");
        assert!(
            (0x28..=0x40).contains(&first.id_offset),
            "{relative}: {first:#x?}"
        );
        for vtable in group {
            assert!(
                vtable.trailer_offset > vtable.id_offset,
                "{relative}: {vtable:#x?}"
            );
        }
    }
    // Both runtimes' scheduler handles are one `Arc`: the id follows it.
    let arc_scheduled = by_scheduler
        .values()
        .filter(|group| group[0].id_offset == 0x28);
    assert_eq!(arc_scheduled.count(), 2, "{relative}: {by_scheduler:#x?}");

    for (poll, vtable) in polls.iter().zip(&vtables) {
        for (what, address) in [("dealloc", vtable.dealloc), ("shutdown", vtable.shutdown)] {
            // Identical-code folding may give the function other names too: any will do.
            assert!(
                named(
                    &symbols,
                    address,
                    &format!("tokio::runtime::task::raw::{what}")
                ),
                "{relative}: {what} of {:?} is {:?}",
                symbols[poll],
                symbols.get(&address)
            );
            // v0 names carry `<T, S>`: the vtable's functions are this task type's.
            let same_type: Vec<String> = symbols[poll]
                .iter()
                .filter(|name| is_raw_poll(name) && name.contains("::<"))
                .map(|name| name.replacen("raw::poll::<", &format!("raw::{what}::<"), 1))
                .collect();
            if !same_type.is_empty() {
                assert!(
                    symbols[&address]
                        .iter()
                        .any(|name| same_type.contains(name)),
                    "{relative}: {what} of {:?} is {:?}",
                    symbols[poll],
                    symbols[&address]
                );
            }
        }
    }
}

#[test]
fn debug_pie() {
    check("debug/inspect-demo", |c| {
        c.rela > 0 && c.relr == 0 && c.absolute == 0
    });
}

#[test]
fn release_pie() {
    check("release/inspect-demo", |c| {
        c.rela > 0 && c.relr == 0 && c.absolute == 0
    });
}

#[test]
fn legacy_release_pie() {
    check("legacy/release/inspect-demo", |c| {
        c.rela > 0 && c.relr == 0 && c.absolute == 0
    });
}

#[test]
fn non_pie() {
    check(
        "nopie/x86_64-unknown-linux-gnu/release-debuginfo/inspect-demo",
        |c| c.absolute > 0 && c.relr == 0,
    );
}
