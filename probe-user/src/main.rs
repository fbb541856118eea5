use std::{cell::Cell, ffi::OsString, io::Write as _, process::ExitCode};

use clap::Parser as _;
use probe_user::{
    analyze::{
        deadlocks::WaitGraph,
        lints::Thresholds,
        stacks::{StackReader, Stacks},
    },
    attach::{self, Attachment},
    cli::{Cli, Command, DumpArgs, ProbeConfig, Target},
    collect::{self, Collector},
    memory::ProcessMemory,
    model::TaskModel,
    report::{Analysis, Mode, Report, RunFacts},
    resolve, snapshot, target,
};

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|arg| arg == target::GATE_ARG) {
        return ExitCode::from(target::run_gate(&args[2..]) as u8);
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&anyhow::anyhow!("cannot start the runtime: {error}")),
    };
    let result = match cli.command {
        Command::Probe(args) => runtime.block_on(probe(ProbeConfig::from(args))),
        Command::Test(args) => runtime.block_on(probe(ProbeConfig::from(args))),
        Command::Dump(args) => dump(&args),
    };
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(error) => fail(&error),
    }
}

fn fail(error: &anyhow::Error) -> ExitCode {
    eprintln!("async-inspect: error: {error:#}");
    ExitCode::from(2)
}

/// How the run ended.
#[derive(Clone, Copy)]
enum Ended {
    TargetExited(Option<std::process::ExitStatus>),
    Interrupted,
    Duration,
    /// `test` mode: live tasks and no poll for the hang timeout.
    Hang,
    /// `test --fail-on-deadlock`: tasks wait for each other.
    Deadlock,
}

/// The exit status of `test` when the command hangs or deadlocks.
const HANG_EXIT: i32 = 3;

/// What the collector's batches tell the `test` watchdog, which runs when no batch comes.
#[derive(Default)]
struct Progress {
    last_poll_ns: Cell<Option<u64>>,
    /// Tasks of the program's own (not runtime workers) that have not ended.
    live_tasks: Cell<usize>,
    live_workers: Cell<usize>,
    counted_at: Cell<Option<std::time::Instant>>,
    deadlocked: Cell<bool>,
}

async fn probe(config: ProbeConfig) -> anyhow::Result<i32> {
    // Resolve first: a bad binary is reported before anything is started or attached.
    let (pid, runtime_binary, launched) = match &config.target {
        Target::Launch(command) => {
            let binary = target::find_program(&command[0])?;
            (None, binary, Some(command))
        }
        Target::Pid(pid) => {
            let (pid, exe) = target::existing(*pid)?;
            (Some(pid), exe, None)
        }
    };
    let symbols_from = config
        .binary
        .clone()
        .unwrap_or_else(|| runtime_binary.clone());
    let plan = resolve::resolve_with(&symbols_from, config.debuginfo.as_deref())?;
    attach::preflight()?;

    let (pid, binary, gate) = match (pid, launched) {
        (Some(pid), _) => (pid, runtime_binary, None),
        (None, Some(command)) => {
            let gate = target::launch(command)?;
            (gate.pid, gate.binary.clone(), Some(gate))
        }
        (None, None) => unreachable!("a target is either launched or given by pid"),
    };
    let mut attachment = match Attachment::attach(&plan, &binary, pid, config.ring_bytes) {
        Ok(attachment) => attachment,
        Err(error) => {
            if let Some(gate) = gate {
                gate.abandon().await;
            }
            return Err(error.into());
        }
    };
    let mut collector = Collector::new(attachment.take_events()?)?;
    // Await points are read from the target's memory when tasks go idle (needs DWARF).
    let memory = plan
        .types
        .as_ref()
        .and_then(|_| ProcessMemory::open(pid.get()).ok());
    let mut stacks = Stacks::default();
    let mut model = TaskModel::new(plan.sites.iter().map(|site| site.task_type).collect());
    let started_ns = collect::monotonic_ns();
    if !config.quiet {
        eprintln!(
            "async-inspect: {} probe points attached to pid {pid} ({} task types); {}",
            attachment.points,
            plan.task_types.len(),
            match &gate {
                Some(_) => "starting the program",
                None => "Ctrl-C to stop",
            }
        );
    }

    let mut child = match gate {
        Some(gate) => Some(gate.release()?),
        None => None,
    };
    let show_progress = !config.quiet && child.is_none();
    let progress = Progress::default();
    let ended = {
        let target_exit = async {
            match child.as_mut() {
                Some(child) => Ended::TargetExited(child.wait().await.ok()),
                None => {
                    let _ = target::exited(pid).await;
                    Ended::TargetExited(None)
                }
            }
        };
        let deadline = async {
            match config.duration {
                Some(duration) => tokio::time::sleep(duration).await,
                None => std::future::pending().await,
            }
        };
        let watchdog = async {
            let Some(watch) = config.watch else {
                return std::future::pending().await;
            };
            let timeout = watch.timeout.as_nanos() as u64;
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
            loop {
                tick.tick().await;
                if progress.deadlocked.get() {
                    return Ended::Deadlock;
                }
                // A hang needs tasks that should make progress: before the first poll, or
                // once every task has ended, the program is elsewhere.
                if let Some(last) = progress.last_poll_ns.get()
                    && progress.live_tasks.get() > 0
                    && collect::monotonic_ns().saturating_sub(last) > timeout
                {
                    return Ended::Hang;
                }
            }
        };
        let stop = async {
            tokio::select! {
                ended = target_exit => ended,
                _ = interrupted() => Ended::Interrupted,
                () = deadline => Ended::Duration,
                ended = watchdog => ended,
            }
        };
        let mut ended = None;
        let stop = async { ended = Some(stop.await) };
        let status_line = StatusLine::new(show_progress);
        collector
            .run(&mut model, stop, |model| {
                let idle = model.take_newly_idle();
                if let Some(memory) = &memory {
                    let reader = StackReader {
                        plan: &plan,
                        memory,
                        values: config.values,
                    };
                    reader.refresh(&mut stacks, model, &idle, collect::monotonic_ns());
                }
                if let Some(watch) = config.watch {
                    progress.last_poll_ns.set(model.last_poll_ns);
                    // Runtime workers live as long as their runtime: counting them walks every
                    // task, so a few times a second is enough.
                    if progress
                        .counted_at
                        .get()
                        .is_none_or(|at| at.elapsed() > std::time::Duration::from_millis(100))
                    {
                        progress.counted_at.set(Some(std::time::Instant::now()));
                        let workers = model
                            .tasks()
                            .iter()
                            .filter(|task| !task.state.is_terminal())
                            .filter(|task| {
                                model
                                    .task_type(task)
                                    .is_some_and(|index| plan.task_types[index].runtime_worker)
                            })
                            .count();
                        progress.live_workers.set(workers);
                    }
                    progress
                        .live_tasks
                        .set(model.active().saturating_sub(progress.live_workers.get()));
                    if watch.fail_on_deadlock
                        && !idle.is_empty()
                        && !WaitGraph::build(model, &stacks).deadlocks().is_empty()
                    {
                        progress.deadlocked.set(true);
                    }
                }
                status_line.show(model);
            })
            .await?;
        status_line.clear();
        ended.expect("the stop future ran")
    };
    let ended_ns = collect::monotonic_ns();
    let dropped_per_cpu = attachment.drops_per_cpu().unwrap_or_default();
    let facts = RunFacts {
        mode: Mode::Probe,
        target: binary.display().to_string(),
        pid: pid.get(),
        started_ns,
        ended_ns,
        dropped_per_cpu,
        undecodable: collector.undecodable,
        probe_points: attachment.points,
        links: attachment.links,
    };
    // Detach before reporting: the target runs unprobed from here on.
    drop(collector);
    drop(attachment);
    model.close(ended_ns);
    // Still alive (attached by pid, or stopped early): read where every idle task waits now,
    // including tasks idle since before the probe attached.
    if let Some(memory) = &memory
        && target::is_alive(pid)
    {
        let reader = StackReader {
            plan: &plan,
            memory,
            values: config.values,
        };
        let idle: Vec<usize> = (0..model.tasks().len()).collect();
        reader.refresh(&mut stacks, &model, &idle, collect::monotonic_ns());
    }

    let failed = matches!(ended, Ended::Hang | Ended::Deadlock);
    if failed && let Some(child) = child.as_mut() {
        // The report is read; a hung test must not hold up the CI run.
        let _ = child.kill().await;
    }
    // A launched target that got our Ctrl-C too: give it a moment to finish so its status is real.
    let status = match (ended, child.as_mut()) {
        (Ended::TargetExited(status), _) => status,
        (Ended::Hang | Ended::Deadlock, _) => None,
        (_, Some(child)) => tokio::time::timeout(std::time::Duration::from_secs(2), child.wait())
            .await
            .ok()
            .and_then(Result::ok),
        (_, None) => None,
    };

    let stuck_after_ns = config.stuck_after.as_nanos() as u64;
    let report = Report::new(
        &plan,
        &model,
        facts,
        Analysis {
            stacks: &stacks,
            stuck_after_ns,
            limits: Thresholds {
                long_poll_ns: config.long_poll.as_nanos() as u64,
                ..Thresholds::default()
            },
        },
    );
    if let Some(path) = &config.json {
        let file = std::fs::File::create(path)
            .map_err(|error| anyhow::anyhow!("cannot write {}: {error}", path.display()))?;
        report.write_json(std::io::BufWriter::new(file))?;
    }
    if config.watch.is_some() && !failed {
        // A passing test: one line, so CI logs stay short.
        eprintln!(
            "async-inspect test: no hang ({} tasks seen); exit status {}",
            report.summary.tasks,
            status.map_or(0, target::exit_code)
        );
        return Ok(status.map_or(0, target::exit_code));
    }
    let mut stdout = std::io::stdout().lock();
    let verdict = match ended {
        Ended::Hang => format!(
            "\nasync-inspect test: HANG: no task was polled for {}; the command was killed",
            probe_user::report::duration(config.watch.map_or(0, |w| w.timeout.as_nanos() as u64))
        ),
        Ended::Deadlock => {
            "\nasync-inspect test: DEADLOCK: tasks wait for each other; the command was killed"
                .into()
        }
        _ => String::new(),
    };
    let written = report
        .write_text(&mut stdout, config.top)
        .and_then(|()| report.write_stuck(&mut stdout, stuck_after_ns))
        .and_then(|()| report.write_diagnosis(&mut stdout))
        .and_then(|()| match verdict.is_empty() {
            true => Ok(()),
            false => writeln!(stdout, "{verdict}"),
        });
    match written {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other?,
    }
    if let Some(path) = &config.json {
        eprintln!("async-inspect: wrote {}", path.display());
    }
    let _ = std::io::stderr().flush();
    if failed {
        return Ok(HANG_EXIT);
    }
    Ok(status.map_or(0, target::exit_code))
}

/// `async-inspect dump`: find every task in memory, read where each waits, report.
fn dump(args: &DumpArgs) -> anyhow::Result<i32> {
    let (pid, exe) = target::existing(args.pid)?;
    let plan = resolve::resolve_with(
        args.binary.as_deref().unwrap_or(&exe),
        args.debuginfo.as_deref(),
    )?;
    if plan.types.is_none() {
        eprintln!(
            "async-inspect: note: no DWARF in {}: tasks are listed without await points or backtraces \
             (pass the unstripped build with --binary)",
            plan.binary.display()
        );
    }
    let memory = ProcessMemory::open(pid.get())?;
    let started_ns = collect::monotonic_ns();
    let freeze = if args.freeze {
        Some(probe_user::memory::freeze(pid.get())?)
    } else {
        None
    };
    let now_ns = collect::monotonic_ns();
    let snapshot = snapshot::take(&plan, &memory, now_ns)?;
    let mut stacks = Stacks::default();
    let reader = StackReader {
        plan: &plan,
        memory: &memory,
        values: !args.no_values,
    };
    reader.refresh_unread(&mut stacks, &snapshot.model, now_ns);
    drop(freeze);
    let ended_ns = collect::monotonic_ns();
    let report = Report::new(
        &plan,
        &snapshot.model,
        RunFacts {
            mode: Mode::Dump,
            target: std::fs::read_link(&exe)
                .unwrap_or(exe)
                .display()
                .to_string(),
            pid: pid.get(),
            started_ns,
            ended_ns,
            dropped_per_cpu: Vec::new(),
            undecodable: 0,
            probe_points: 0,
            links: 0,
        },
        Analysis {
            stacks: &stacks,
            stuck_after_ns: u64::MAX,
            limits: Thresholds::default(),
        },
    );
    if let Some(path) = &args.json {
        let file = std::fs::File::create(path)
            .map_err(|error| anyhow::anyhow!("cannot write {}: {error}", path.display()))?;
        report.write_json(std::io::BufWriter::new(file))?;
    }
    let mut stdout = std::io::stdout().lock();
    let written = writeln!(
        stdout,
        "async-inspect: dump of {} (pid {}): {} tasks in {} MiB of memory, read in {}{}",
        report.summary.target,
        report.summary.pid,
        report.summary.tasks,
        snapshot.scan.bytes_scanned / (1024 * 1024),
        probe_user::report::duration(ended_ns - started_ns),
        if args.freeze {
            " (frozen meanwhile)"
        } else {
            ""
        },
    )
    .and_then(|()| report.write_table(&mut stdout, args.top))
    .and_then(|()| report.write_backtraces(&mut stdout))
    .and_then(|()| report.write_diagnosis(&mut stdout));
    match written {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other?,
    }
    Ok(0)
}

/// Ctrl-C or SIGTERM.
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(terminate) => terminate,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// A one-line live status on stderr when it is a terminal (attach mode only: a launched
/// program's own output shares the terminal).
struct StatusLine {
    enabled: bool,
    last: std::cell::Cell<Option<std::time::Instant>>,
}

impl StatusLine {
    fn new(wanted: bool) -> Self {
        use std::io::IsTerminal as _;
        Self {
            enabled: wanted && std::io::stderr().is_terminal(),
            last: std::cell::Cell::new(None),
        }
    }

    fn show(&self, model: &TaskModel) {
        if !self.enabled {
            return;
        }
        let now = std::time::Instant::now();
        if self
            .last
            .get()
            .is_some_and(|last| now - last < std::time::Duration::from_millis(500))
        {
            return;
        }
        self.last.set(Some(now));
        eprint!(
            "\r\x1b[K  {} tasks seen, {} live, {} events",
            model.tasks().len(),
            model.active(),
            model.events
        );
    }

    fn clear(&self) {
        if self.enabled && self.last.get().is_some() {
            eprint!("\r\x1b[K");
        }
    }
}
