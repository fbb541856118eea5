//! A probe run's first steps: the target found or launched, the probe plan checked against it,
//! the programs attached, the session (and its recording) opened.

use std::{ffi::OsString, fs::File, num::NonZeroU32, path::PathBuf};

use probe_user::{
    attach::{self, Attachment},
    cli::{ProbeConfig, Target},
    present::Exports,
    record::{self, Recorder},
    report::{Mode, RunFacts},
    resolve::{self, Catalogue},
    session::{Observer as _, Session},
    target,
};

use crate::verify_plan;

/// The target before anything is attached: the executable whose task types are probed, and the
/// process when it runs already.
pub struct Found {
    pub binary: PathBuf,
    pub running: Option<Running>,
}

/// A process given by pid, and its executable held open (see [`target::pin`]) from before
/// resolving to the run's end: the probes, and the budget's re-attaches, name the file through
/// this descriptor, so they go into the file that was resolved, whatever the process runs by then.
pub struct Running {
    pub pid: NonZeroU32,
    file: std::fs::File,
    path: PathBuf,
}

/// Finds the program to probe: the command's executable, or the running process's.
pub fn find_target(config: &ProbeConfig) -> anyhow::Result<Found> {
    Ok(match &config.target {
        Target::Launch(command) => Found {
            binary: target::find_program(&command[0])?,
            running: None,
        },
        Target::Pid(pid) => {
            let (pid, exe) = target::existing(*pid)?;
            let (file, path) = target::pin(&exe)?;
            Found {
                binary: exe,
                running: Some(Running { pid, file, path }),
            }
        }
    })
}

/// The process to attach to, started at its gate (held before `main` until released) when the
/// command is launched; its pid, the file it runs, and the gate.
pub fn start_target(
    found: &Found,
    config: &ProbeConfig,
    output: Option<std::fs::File>,
) -> anyhow::Result<(NonZeroU32, PathBuf, Option<target::Launched>)> {
    match (&found.running, &config.target) {
        (Some(running), _) => {
            target::still_runs(running.pid, &running.file)?;
            Ok((running.pid, running.path.clone(), None))
        }
        (None, Target::Launch(command)) => {
            let gate = target::launch(command, output)?;
            Ok((gate.pid, gate.binary.clone(), Some(gate)))
        }
        (None, Target::Pid(_)) => unreachable!("a target given by pid is found running"),
    }
}

/// The probe plan for `runtime_binary` (symbols from `--binary` if given), checked against the
/// running executable; None when `test` meets a launched binary without tokio, which then runs
/// unprobed.
pub fn plan_probes(
    config: &ProbeConfig,
    runtime_binary: &std::path::Path,
    launched: bool,
) -> anyhow::Result<Option<resolve::ProbePlan>> {
    let symbols_from = config.binary.as_deref().unwrap_or(runtime_binary);
    let mut plan = match resolve::resolve_with(symbols_from, config.debuginfo.as_deref()) {
        // `test` as cargo's runner meets test binaries without tokio: they run as they are.
        Err(ref error)
            if config.watch.is_some()
                && launched
                && let Some(path) = error.not_tokio() =>
        {
            eprintln!(
                "async-inspect test: {} has no tokio tasks: running it unprobed",
                path.display()
            );
            return Ok(None);
        }
        plan => plan?,
    };
    verify_plan(
        &mut plan,
        runtime_binary,
        config.binary.as_deref(),
        config.debuginfo.as_deref(),
    )?;
    if matches!(config.target, Target::Pid(_)) {
        plan.notes
            .extend(resolve::block_on::unfindable_note(&plan.task_types, true));
    }
    Ok(Some(plan))
}

/// Loads and attaches the programs; a launched target that will not be probed is let go (its
/// gate sees EOF and exits) rather than run unprobed.
pub async fn attach_or_abandon(
    plan: &resolve::ProbePlan,
    binary: &std::path::Path,
    pid: std::num::NonZeroU32,
    gate: Option<target::Launched>,
    config: &ProbeConfig,
    mechanism: attach::Mechanism,
) -> anyhow::Result<(Attachment, Option<target::Launched>)> {
    match Attachment::attach(
        plan,
        binary,
        pid,
        config.ring_bytes,
        config.count_only,
        mechanism,
    ) {
        Ok(attachment) => Ok((attachment, gate)),
        Err(error) => {
            if let Some(gate) = gate {
                gate.abandon().await;
            }
            Err(error.into())
        }
    }
}

/// The overhead budget under this kernel's mechanism: none with perf-event uprobes, which take
/// ~100 ms each to detach, so windows of 200 ms cannot be kept.
pub fn budget_under(mechanism: attach::Mechanism, config: &ProbeConfig) -> Option<f64> {
    if mechanism == attach::Mechanism::UprobeMulti {
        return config.max_overhead;
    }
    if config.max_overhead.is_some() && !config.quiet {
        eprintln!(
            "async-inspect: note: this kernel has no uprobe_multi (Linux >= 6.6): probes are \
             perf-event uprobes, which cannot be attached in windows, so every poll is followed \
             (no overhead budget)"
        );
    }
    None
}

/// What is known of a probe run once it is attached; the rest comes as it ends.
pub fn facts_at_start(
    binary: &std::path::Path,
    pid: std::num::NonZeroU32,
    started_ns: u64,
    attachment: &Attachment,
) -> RunFacts {
    RunFacts {
        mode: Mode::Probe,
        target: target::display_name(binary),
        pid: pid.get(),
        started_ns,
        ended_ns: started_ns,
        probe_points: attachment.points(),
        links: attachment.links(),
        perf_event_uprobes: attachment.mechanism == attach::Mechanism::PerfEvent,
        ..RunFacts::default()
    }
}

/// A new session for the run, its exports following it, recording to `--record` if given; the
/// settings its report is made with.
pub fn open_session(
    config: &ProbeConfig,
    catalogue: &Catalogue,
    facts: &RunFacts,
) -> anyhow::Result<(Session<Exports>, record::Settings)> {
    let exports = Exports::new(&config.output, facts.started_ns);
    let settings = record::Settings {
        stuck_after_ns: config.stuck_after.as_nanos() as u64,
        long_poll_ns: config.long_poll.as_nanos() as u64,
        keep_every_task: config.keep_every_task || exports.needs_every_task(),
    };
    let mut session = Session::new(catalogue, exports, settings.keep_every_task);
    if let Some(path) = &config.record {
        session.record_to(Recorder::create(
            path,
            &record::Header {
                tool: format!("async-inspect {}", env!("CARGO_PKG_VERSION")),
                catalogue: catalogue.clone(),
                settings,
                facts: facts.clone(),
            },
        )?);
    }
    Ok((session, settings))
}

/// A launched program's output file while the live view owns the terminal, and its path.
pub type TargetLog = (PathBuf, File);

/// The file a launched program's output goes to while the live view owns the terminal (none
/// otherwise), and a handle of it for the program.
pub fn target_log(
    config: &ProbeConfig,
    found: &Found,
) -> anyhow::Result<(Option<TargetLog>, Option<File>)> {
    if !config.tui || found.running.is_some() {
        return Ok((None, None));
    }
    let path =
        std::env::temp_dir().join(format!("async-inspect-output-{}.log", std::process::id()));
    let file = File::create(&path)
        .map_err(|error| anyhow::anyhow!("cannot create {}: {error}", path.display()))?;
    let output = file.try_clone()?;
    Ok((Some((path, file)), Some(output)))
}

/// Runs `command` as it is (a test binary without tokio, under `test`), with its status.
pub async fn run_unprobed(command: &[OsString]) -> anyhow::Result<i32> {
    let status = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .status()
        .await
        .map_err(|source| target::TargetError::Spawn {
            program: command[0].to_string_lossy().into_owned(),
            source,
        })?;
    Ok(target::exit_code(status))
}
