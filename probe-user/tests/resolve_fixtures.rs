//! Resolve on the demo built in every shape `cargo xtask test` makes: the probe plan must find
//! every kind of site and name every task type, whatever the build kept.

mod common;

use common::{demo_line, fixture};

use probe_user::resolve::{NamingSource, ProbePlan, SiteKind, resolve};

const DEMO_TASKS: [&str; 7] = [
    "inspect_demo::doomed_sleeper",
    "inspect_demo::panicker",
    "inspect_demo::tick_loop",
    "inspect_demo::lock_waiter",
    "inspect_demo::blocking_hog",
    "inspect_demo::chain_a",
    "inspect_demo::yield_many",
];

fn check_plan(plan: &ProbePlan, naming: NamingSource) {
    assert_eq!(plan.naming, naming, "{:?}", plan.notes);
    let names: Vec<&str> = plan.task_types.iter().map(|t| t.name.as_str()).collect();
    for task in DEMO_TASKS {
        assert!(names.contains(&task), "{task} not named; types: {names:?}");
    }
    assert!(
        plan.task_types.iter().any(|t| t.runtime_worker),
        "the multi-thread workers' blocking task is recognised: {names:?}"
    );
    assert!(
        !names.iter().any(|name| name.starts_with("task-type-")),
        "every type is named: {names:?}"
    );
    for kind in [
        SiteKind::Poll,
        SiteKind::Dealloc,
        SiteKind::Shutdown,
        SiteKind::WakeByVal,
        SiteKind::WakeByRef,
        SiteKind::Complete,
        SiteKind::Panic,
    ] {
        assert!(plan.sites_of(kind).next().is_some(), "no {kind:?} site");
    }
    let spawns = plan.sites.iter().filter(|site| {
        matches!(
            site.kind,
            SiteKind::SpawnMultiThread | SiteKind::SpawnCurrentThread | SiteKind::CellNew
        )
    });
    assert!(spawns.count() >= 5, "a spawn site per task type");
    let size = std::fs::metadata(&plan.binary).expect("fixture").len();
    for site in &plan.sites {
        assert!(
            site.file_offset < size,
            "{site:?} is past the end of the file"
        );
    }
    assert_eq!(
        plan.layout.header_vtable, 0x10,
        "tokio 1.54's Header::vtable"
    );
    assert_eq!(
        plan.layout.vtable_id_offset, 0x48,
        "tokio 1.54's Vtable::id_offset"
    );
}

#[test]
fn debug_build_is_named_from_dwarf() {
    let plan = resolve(&fixture("debug/inspect-demo")).expect("resolve");
    check_plan(&plan, NamingSource::Dwarf);
    assert!(plan.layout.from_dwarf);
}

#[test]
fn release_with_debuginfo_is_named_from_dwarf() {
    let plan = resolve(&fixture("release-debuginfo/inspect-demo")).expect("resolve");
    check_plan(&plan, NamingSource::Dwarf);
}

#[test]
fn plain_release_is_named_from_v0_symbols() {
    let plan = resolve(&fixture("release/inspect-demo")).expect("resolve");
    check_plan(&plan, NamingSource::V0Symbols);
    assert!(!plan.has_dwarf && !plan.layout.from_dwarf);
}

#[test]
fn legacy_plain_release_is_named_from_the_call_graph() {
    let plan = resolve(&fixture("legacy/release/inspect-demo")).expect("resolve");
    check_plan(&plan, NamingSource::CallGraph);
}

#[test]
fn non_pie_offsets_are_file_offsets() {
    let plan = resolve(&fixture(
        "nopie/x86_64-unknown-linux-gnu/release-debuginfo/inspect-demo",
    ))
    .expect("resolve");
    check_plan(&plan, NamingSource::Dwarf);
    // An ET_EXEC is linked at its load address (0x200000 with lld, 0x400000 with ld): uprobes
    // need the file offset, not that address.
    for (_, site) in plan.sites_of(SiteKind::Poll) {
        assert!(site.address - site.file_offset >= 0x20_0000, "{site:?}");
    }
}

fn state_machine_awaits(build: &str) {
    use probe_user::resolve::futures::TypeKind;
    let plan = resolve(&fixture(build)).expect("resolve");
    let types = plan.types.as_ref().expect("DWARF types");
    let ticker = plan
        .task_types
        .iter()
        .find(|t| t.name == "inspect_demo::tick_loop")
        .expect("tick_loop");
    let future = ticker.future.expect("the future's place in the task cell");
    assert!((0x20..0x400).contains(&future.offset), "{future:?}");
    let info = types.get(future.ty).expect("decode");
    assert_eq!(info.name, "inspect_demo::tick_loop::{async_fn_env#0}");
    let TypeKind::StateMachine { states, .. } = &info.kind else {
        panic!("not a state machine: {info:?}");
    };
    let suspend = states
        .iter()
        .find(|state| state.is_suspended())
        .expect("a suspend state");
    assert_eq!(
        suspend.line,
        demo_line("tokio::time::sleep(Duration::from_millis(tick_ms)).await"),
        "{suspend:?}"
    );
    assert!(
        suspend
            .file
            .as_deref()
            .is_some_and(|f| f.ends_with("demo/src/main.rs"))
    );
    let awaitee = suspend.awaitee.as_ref().expect("__awaitee");
    let sleep = types
        .get(awaitee.ty.expect("awaitee type"))
        .expect("decode");
    assert_eq!(sleep.name, "tokio::time::sleep::Sleep");
    assert!(
        suspend.locals.iter().any(|local| local.name == "done"),
        "{suspend:?}"
    );
}

#[test]
fn await_points_of_a_debug_build() {
    state_machine_awaits("debug/inspect-demo");
}

#[test]
fn await_points_of_a_release_build_with_debuginfo() {
    state_machine_awaits("release-debuginfo/inspect-demo");
}

/// The demo with its DWARF split into a separate file, as distributions ship it.
fn split_debug(tag: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir =
        std::env::temp_dir().join(format!("async-inspect-split-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let full = fixture("release-debuginfo/inspect-demo");
    let debug = dir.join("inspect-demo.debug");
    let stripped = dir.join("inspect-demo");
    let run = |args: &[&std::ffi::OsStr]| {
        let status = std::process::Command::new("objcopy")
            .args(args)
            .status()
            .expect("objcopy (binutils)");
        assert!(status.success());
    };
    run(&[
        "--only-keep-debug".as_ref(),
        full.as_os_str(),
        debug.as_os_str(),
    ]);
    let link = format!("--add-gnu-debuglink={}", debug.display());
    run(&[
        "--strip-debug".as_ref(),
        link.as_ref(),
        full.as_os_str(),
        stripped.as_os_str(),
    ]);
    (stripped, debug)
}

#[test]
fn separate_debug_info_is_found_by_debuglink() {
    let (stripped, debug) = split_debug("link");
    let plan = resolve(&stripped).expect("resolve");
    check_plan(&plan, NamingSource::Dwarf);
    assert!(
        plan.task_types.iter().any(|t| t.future.is_some()),
        "await points available"
    );
    assert!(
        plan.notes
            .iter()
            .any(|note| note.contains("inspect-demo.debug")),
        "{:?}",
        plan.notes
    );
    let _ = std::fs::remove_dir_all(debug.parent().expect("dir"));
}

#[test]
fn separate_debug_info_can_be_named() {
    let (stripped, debug) = split_debug("named");
    let moved = debug.with_extension("elsewhere");
    std::fs::rename(&debug, &moved).expect("rename");
    let without = resolve(&stripped).expect("resolve");
    assert!(!without.has_dwarf, "the debuglink target is gone");
    let with = probe_user::resolve::resolve_with(&stripped, Some(&moved)).expect("resolve");
    check_plan(&with, NamingSource::Dwarf);
    let _ = std::fs::remove_dir_all(moved.parent().expect("dir"));
}
