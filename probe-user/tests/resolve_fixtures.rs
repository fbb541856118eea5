//! Resolve on the demo built in every shape `cargo xtask test` makes: the probe plan must find
//! every kind of site and name every task type, whatever the build kept.

use std::path::{Path, PathBuf};

use probe_user::resolve::{NamingSource, ProbePlan, SiteKind, resolve};

fn fixture(relative: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target")
        .join(relative);
    assert!(
        path.is_file(),
        "{} is missing: run the tests with scripts/test.sh (cargo xtask test builds the fixtures)",
        path.display()
    );
    path
}

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
        SiteKind::CloneWaker,
        SiteKind::DropWaker,
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
