//! End to end: the probe never harms its target and says honestly what happened. A `--binary`
//! or `--debuginfo` of another build is refused before anything is launched, attached or read;
//! a launched program's death by a signal is reported; exit statuses follow `env` and `timeout`
//! (125: async-inspect failed, 126: cannot run, 127: not found); errors name the real cause.
//!
//! The refusals need no privileges (they come before anything is attached); the tests that probe
//! need root and skip without it, except in CI.

mod common;

use common::{
    RunningDemo, assert_nothing_left_attached, fixture, privileged, probe_as_nobody, probe_binary,
    probe_launch, temp_json,
};

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use object::Object as _;

const RELEASE: &str = "release/inspect-demo";
const RELEASE_DEBUGINFO: &str = "release-debuginfo/inspect-demo";
const DEBUG: &str = "debug/inspect-demo";

fn run(args: &[&str], files: &[&Path]) -> Output {
    Command::new(probe_binary())
        .args(args)
        .args(files)
        .output()
        .expect("running async-inspect")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The build id as `readelf -n` shows it.
fn build_id(path: &Path) -> String {
    let data = std::fs::read(path).expect("reading the fixture");
    let file = object::File::parse(&*data).expect("an ELF file");
    let id = file
        .build_id()
        .expect("notes")
        .expect("the fixtures have build ids");
    id.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A refusal: exit 125, both files and both build ids named, and what to pass instead.
fn assert_refused(output: &Output, binary: &Path, running: &Path) {
    let message = stderr(output);
    assert_eq!(output.status.code(), Some(125), "{message}");
    assert!(
        message.contains("is not the program that runs"),
        "{message}"
    );
    for (file, id) in [(binary, build_id(binary)), (running, build_id(running))] {
        assert!(
            message.contains(&*file.to_string_lossy()),
            "{} is not named: {message}",
            file.display()
        );
        assert!(
            message.contains(&id),
            "build id {id} is not named: {message}"
        );
    }
    assert!(message.contains("Instead, leave --binary out"), "{message}");
}

#[test]
fn a_binary_of_another_profile_is_refused_and_nothing_is_launched() {
    for (binary, launched) in [(RELEASE, RELEASE_DEBUGINFO), (RELEASE_DEBUGINFO, DEBUG)] {
        let (binary, launched) = (fixture(binary), fixture(launched));
        let output = run(
            &["probe", "--no-tui", "--binary"],
            &[&binary, Path::new("--"), &launched],
        );
        assert_refused(&output, &binary, &launched);
        assert!(
            !String::from_utf8_lossy(&output.stdout).contains("inspect-demo: ready"),
            "the program must not start"
        );
    }
}

#[test]
fn a_binary_of_another_profile_is_refused_when_attaching_and_dumping() {
    let Some(_serial) = privileged() else { return };
    let mut target = RunningDemo::parked(RELEASE);
    let running = fixture(RELEASE);
    let binary = fixture(RELEASE_DEBUGINFO);
    for command in ["probe", "dump"] {
        let output = run(
            &[command, "--pid", &target.pid(), "--binary"],
            &[binary.as_path()],
        );
        assert_nothing_left_attached();
        assert_refused(&output, &binary, &running);
        assert!(target.is_alive(), "{command} must leave the target running");
    }
}

#[test]
fn a_debuginfo_of_another_build_is_refused() {
    let Some(_serial) = privileged() else { return };
    let mut target = RunningDemo::parked(RELEASE);
    let debuginfo = fixture(DEBUG);
    let output = run(
        &["dump", "--pid", &target.pid(), "--debuginfo"],
        &[debuginfo.as_path()],
    );
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(125), "{message}");
    assert!(
        message.contains("refusing to use --debuginfo")
            && message.contains(&build_id(&debuginfo))
            && message.contains(&build_id(&fixture(RELEASE))),
        "{message}"
    );
    assert!(target.is_alive());
}

/// A copy of a fixture without its build id note, in the temporary directory.
fn without_build_id(build: &str, tag: &str) -> Option<PathBuf> {
    let copy =
        std::env::temp_dir().join(format!("async-inspect-noid-{tag}-{}", std::process::id()));
    let status = Command::new("objcopy")
        .args(["--remove-section", ".note.gnu.build-id"])
        .arg(fixture(build))
        .arg(&copy)
        .status();
    if !status.is_ok_and(|status| status.success()) {
        eprintln!("skipped: objcopy is not installed");
        return None;
    }
    Some(copy)
}

#[test]
fn without_build_ids_the_code_at_the_probe_sites_decides() {
    let (Some(release), Some(reldbg)) = (
        without_build_id(RELEASE, "release"),
        without_build_id(RELEASE_DEBUGINFO, "reldbg"),
    ) else {
        return;
    };
    let refused = run(
        &["probe", "--no-tui", "--binary"],
        &[&reldbg, Path::new("--"), &release],
    );
    let message = stderr(&refused);
    assert_eq!(refused.status.code(), Some(125), "{message}");
    assert!(
        message.contains("neither file has a build id, and the instructions differ at"),
        "{message}"
    );
    assert!(!String::from_utf8_lossy(&refused.stdout).contains("ready"));
    // The same code: probed, build ids or not.
    if let Some(_serial) = privileged() {
        let (output, report) = probe_launch(
            "noid",
            &["--quiet", "--binary", reldbg.to_str().expect("utf-8")],
            &reldbg,
            &["--ticks", "1"],
        );
        assert!(output.status.success(), "{}", stderr(&output));
        assert!(report["summary"]["tasks"].as_u64() > Some(0), "{report:#}");
    }
    let _ = std::fs::remove_file(release);
    let _ = std::fs::remove_file(reldbg);
}

#[test]
fn a_stripped_deployment_is_probed_with_its_own_unstripped_build() {
    let Some(_serial) = privileged() else { return };
    let stripped =
        std::env::temp_dir().join(format!("async-inspect-stripped-{}", std::process::id()));
    let unstripped = fixture(RELEASE_DEBUGINFO);
    let status = Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(&unstripped)
        .status();
    if !status.is_ok_and(|status| status.success()) {
        eprintln!("skipped: strip is not installed");
        return;
    }
    let (output, report) = probe_launch(
        "stripped",
        &["--quiet", "--binary", unstripped.to_str().expect("utf-8")],
        &stripped,
        &["--ticks", "1"],
    );
    let _ = std::fs::remove_file(&stripped);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(report["summary"]["naming"], "dwarf");
    common::task(&report, "inspect_demo::tick_loop");
}

#[test]
fn a_launched_program_killed_by_a_signal_is_reported() {
    let Some(_serial) = privileged() else { return };
    for (how, signal, status) in [("segv", "SIGSEGV", 139), ("abort", "SIGABRT", 134)] {
        let (output, report) = probe_launch(
            how,
            &["--no-tui"],
            &fixture("release-debuginfo/inspect-crash"),
            &[how],
        );
        assert_eq!(output.status.code(), Some(status), "{}", stderr(&output));
        let exit = &report["summary"]["target_exit"];
        assert_eq!(exit["signal"], signal, "{exit:#}");
        assert!(exit["core_dumped"].is_boolean(), "{exit:#}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains(&format!("the program was killed by {signal}")),
            "{stdout}"
        );
        common::task(&report, "inspect_crash::crash_soon");
    }
    let (output, report) =
        probe_launch("exit0", &["--no-tui"], &fixture(RELEASE), &["--ticks", "1"]);
    assert!(output.status.success());
    assert_eq!(
        report["summary"]["target_exit"],
        serde_json::json!({"code": 0})
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("the program exited with status 0"));
}

#[test]
fn exit_statuses_follow_env_and_timeout() {
    // None of these gets as far as attaching: no privileges needed.
    let cases: [(&[&str], i32); 5] = [
        (&["probe", "--", "/no/such/program"], 127),
        (&["probe", "--", "/etc/passwd"], 126),
        (&["probe", "--pid", "999999999"], 125),
        (&["probe", "--no-such-flag"], 125),
        (&["dump"], 125),
    ];
    for (args, status) in cases {
        let output = run(args, &[]);
        assert_eq!(
            output.status.code(),
            Some(status),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn a_stripped_program_without_tokio_is_not_told_to_rebuild() {
    let plain = std::env::temp_dir().join(format!("async-inspect-plain-{}", std::process::id()));
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(&plain)
        .arg(fixture("debug/inspect-demo-plain"))
        .status()
        .is_ok_and(|status| status.success());
    let mut cases = vec![(PathBuf::from("/bin/true"), "nor of Rust")];
    if stripped {
        cases.push((plain.clone(), "(it is a Rust program)"));
    }
    for (program, what) in cases {
        if !program.is_file() {
            continue;
        }
        let output = run(&["probe", "--no-tui", "--"], &[&program]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(125), "{message}");
        assert!(!message.contains("Rebuild"), "{message}");
        // A system whose /bin/true kept its symbols gets the unstripped binary's message.
        if message.contains("no symbol table") {
            assert!(
                message.contains("does not look like a tokio program"),
                "{message}"
            );
            assert!(message.contains(what), "{message}");
        } else {
            assert!(message.contains("is it a tokio program?"), "{message}");
        }
    }
    let _ = std::fs::remove_file(plain);
}

#[test]
fn a_refused_look_at_a_process_names_the_real_cause() {
    let Some(_serial) = privileged() else { return };
    // As root, pid 1 is either readable (then it is no tokio program) or refused for a reason
    // other than privileges: never "needs root".
    let output = run(&["dump", "--pid", "1"], &[]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(125), "{message}");
    assert!(!message.contains("needs root"), "{message}");
    if message.contains("cannot inspect process 1") {
        assert!(
            message.contains("more privileges will not help"),
            "{message}"
        );
    }
    // Another user looking at root's process is told to become root.
    let target = RunningDemo::parked(RELEASE);
    let pid = target.pid();
    let output = probe_as_nobody(&["dump".as_ref(), "--pid".as_ref(), pid.as_ref()]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(125), "{message}");
    assert!(
        message.contains("it belongs to user 0: run async-inspect as root"),
        "{message}"
    );
}

#[test]
fn the_tasks_found_in_memory_are_counted_as_the_table_counts_them() {
    let Some(_serial) = privileged() else { return };
    let target = RunningDemo::parked(RELEASE_DEBUGINFO);
    let json = temp_json("found");
    let output = Command::new(probe_binary())
        .args(["probe", "--no-tui", "--duration", "300ms", "--json"])
        .arg(&json)
        .args(["--pid", &target.pid()])
        .output()
        .expect("running async-inspect");
    assert_nothing_left_attached();
    let report = common::read_report(&json, &output);
    let summary = &report["summary"];
    let message = stderr(&output);
    let line = format!("{} tasks found in the program's memory", summary["tasks"]);
    assert!(message.contains(&line), "{line} missing: {message}");
    let workers = summary["runtime_workers"]
        .as_u64()
        .expect("runtime_workers");
    if workers > 1 {
        assert!(
            message.contains(&format!("besides {workers} runtime workers")),
            "{message}"
        );
    }
}

#[test]
fn a_probe_offset_inside_an_instruction_is_refused() {
    use probe_user::resolve::verify::{Files, VerifyError, verify};
    let demo = fixture(RELEASE_DEBUGINFO);
    let mut plan = probe_user::resolve::resolve(&demo).expect("the demo resolves");
    let files = Files {
        running: &demo,
        running_name: demo.display().to_string(),
        binary: None,
        debuginfo: None,
    };
    assert!(verify(&plan, &files).is_ok(), "the plan fits its own file");
    // One byte further is inside the planned instruction, or at another one.
    plan.sites[0].cheapest.offset += 1;
    match verify(&plan, &files) {
        Err(VerifyError::Misplaced { problem, .. }) => assert!(
            problem.contains("does not start an instruction") || problem.contains("was planned"),
            "{problem}"
        ),
        other => panic!("a misplaced probe was not refused: {other:?}"),
    }
}

/// A target that exec's another program mid-probe is said to have: the probes stayed in the first
/// program's code, and the report must not pretend to have followed the new one.
#[test]
fn a_target_that_execs_another_program_is_said_to() {
    let Some(_serial) = privileged() else { return };
    let target = RunningDemo::start("release-debuginfo/inspect-crash", &["exec"]);
    let json = temp_json("exec");
    let output = Command::new(probe_binary())
        .args(["probe", "--no-tui", "--duration", "4500ms", "--json"])
        .arg(&json)
        .args(["--pid", &target.pid()])
        .output()
        .expect("running async-inspect");
    drop(target);
    assert_nothing_left_attached();
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON report")).expect("JSON");
    let exec_into = report["summary"]["exec_into"].as_str().unwrap_or_default();
    assert!(exec_into.ends_with("/sleep"), "{:#}", report["summary"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("the program exec'd {exec_into} during the probe")),
        "{stdout}"
    );
}
