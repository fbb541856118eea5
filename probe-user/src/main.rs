use std::{cell::Cell, ffi::OsString, io::Write as _, process::ExitCode};

use clap::Parser as _;
use probe_user::{
    analyze::{
        deadlocks::WaitGraph,
        lints::Thresholds,
        stacks::{JoinedTasks, PendingStacks, StackReader, Stacks},
    },
    attach::{self, Attachment},
    blockers::Blockers,
    budget::Budget,
    cli::{Cli, Command, DumpArgs, Format, HangWatch, ProbeConfig, ReportArgs, Target, TestArgs},
    collect::{self, Collector},
    memory::ProcessMemory,
    model::TaskModel,
    overhead::Prices,
    present::{
        self, Exports,
        tui::{Action, Tui},
    },
    record::{self, Recorder},
    report::{Analysis, Mode, Report, RunFacts, TargetExit},
    resolve::{self, Catalogue},
    session::{Observer, Session},
    snapshot, target,
};

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|arg| arg == target::GATE_ARG) {
        return ExitCode::from(target::run_gate(&args[2..]) as u8);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(&error),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&anyhow::anyhow!("cannot start the runtime: {error}")),
    };
    let result = match cli.command {
        Command::Probe(args) => runtime.block_on(probe(ProbeConfig::from(args))),
        Command::Test(args) if args.runs_cargo() => runtime.block_on(test_through_cargo(&args)),
        Command::Test(args) => runtime.block_on(probe(ProbeConfig::from(args))),
        Command::Dump(args) => dump(&args),
        Command::Report(args) => replay(&args),
    };
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(error) => fail(&error),
    }
}

fn fail(error: &anyhow::Error) -> ExitCode {
    // Errors that name their cause in their own words keep it as their source too: say it once.
    let mut message = error.to_string();
    for cause in error.chain().skip(1).map(ToString::to_string) {
        if !message.contains(&cause) {
            message = format!("{message}: {cause}");
        }
    }
    eprintln!("async-inspect: error: {message}");
    // A command that cannot be run gets the shell's 126 or 127; anything else is our failure.
    let code = error
        .chain()
        .find_map(|cause| cause.downcast_ref::<target::TargetError>())
        .map_or(target::EXIT_FAILED, target::TargetError::exit_code);
    ExitCode::from(code)
}

/// A command line clap refused: our failure (125), not the 2 a launched program may exit with.
fn usage_error(error: &clap::Error) -> ExitCode {
    let _ = error.print();
    if error.use_stderr() {
        ExitCode::from(target::EXIT_FAILED)
    } else {
        // --help and --version.
        ExitCode::SUCCESS
    }
}

/// How the run ended.
#[derive(Clone, Copy)]
enum Ended {
    TargetExited(Option<std::process::ExitStatus>),
    Interrupted,
    /// The user left the live view.
    Quit,
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

impl Progress {
    /// Takes in what the `test` watchdog needs after a batch.
    fn watch<O>(
        &self,
        session: &Session<O>,
        catalogue: &Catalogue,
        watch: HangWatch,
        went_idle: bool,
    ) {
        let model = &session.model;
        self.last_poll_ns.set(model.last_poll_ns);
        // Runtime workers live as long as their runtime: counting them walks every task, so a
        // few times a second is enough.
        if self
            .counted_at
            .get()
            .is_none_or(|at| at.elapsed() > std::time::Duration::from_millis(100))
        {
            self.counted_at.set(Some(std::time::Instant::now()));
            let workers = model
                .tasks()
                .iter()
                .filter(|task| !task.state.is_terminal())
                .filter(|task| probe_user::report::is_runtime_worker(catalogue, model, task))
                .count();
            self.live_workers.set(workers);
        }
        self.live_tasks
            .set(model.active().saturating_sub(self.live_workers.get()));
        if watch.fail_on_deadlock
            && went_idle
            && !WaitGraph::build(model, &session.stacks)
                .deadlocks()
                .is_empty()
        {
            self.deadlocked.set(true);
        }
    }
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
    // Held open from before resolving to after attaching: the probes go into the file that was
    // resolved, whatever the process runs by then.
    let pinned = match &config.target {
        Target::Pid(_) => Some(target::pin(&runtime_binary)?),
        Target::Launch(_) => None,
    };
    let Some(plan) = plan_probes(&config, &runtime_binary, launched.is_some())? else {
        let command = launched.expect("only a launched test binary runs unprobed");
        return run_unprobed(command).await;
    };
    let mut catalogue = plan.catalogue();
    let mechanism = attach::preflight()?;
    let max_overhead = budget_under(mechanism, &config);
    let target_log = match (config.tui, launched) {
        (true, Some(_)) => Some(target_log()?),
        _ => None,
    };
    let (pid, binary, gate) = match (pid, launched) {
        (Some(pid), _) => {
            let (file, path) = pinned.as_ref().expect("pinned with the pid");
            target::still_runs(pid, file)?;
            (pid, path.clone(), None)
        }
        (None, Some(command)) => {
            let output = target_log
                .as_ref()
                .map(|(_, file)| file.try_clone())
                .transpose()?;
            let gate = target::launch(command, output)?;
            (gate.pid, gate.binary.clone(), Some(gate))
        }
        (None, None) => unreachable!("a target is either launched or given by pid"),
    };
    let (mut attachment, gate) =
        attach_or_abandon(&plan, &binary, pid, gate, &config, mechanism).await?;
    if let Err(why) = &attachment.off_cpu {
        catalogue.notes.push(format!(
            "polls are not split into time on CPU, blocked and preempted ({why}): long_poll \
             counts whole polls, preemption included"
        ));
    }
    let mut collector = Collector::new(attachment.take_events()?)?;
    let prices = attachment.calibrate().unwrap_or(Prices::TYPICAL);
    // Await points are read from the target's memory when tasks go idle (needs DWARF).
    let memory = plan
        .types
        .as_ref()
        .and_then(|_| ProcessMemory::open(pid.get()).ok());
    let started_ns = collect::monotonic_ns();
    let mut facts = facts_at_start(&binary, pid, started_ns, &attachment);
    let exports = Exports::new(&config.output, started_ns);
    let settings = record::Settings {
        stuck_after_ns: config.stuck_after.as_nanos() as u64,
        long_poll_ns: config.long_poll.as_nanos() as u64,
        keep_every_task: config.keep_every_task || exports.needs_every_task(),
    };
    let mut session = Session::new(&catalogue, exports, settings.keep_every_task);
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
    let reader = memory.as_ref().map(|memory| StackReader {
        plan: &plan,
        memory,
        values: config.values,
    });
    let mut attached_line = format!(
        "{} probe points attached to pid {pid} ({} task types)",
        attachment.points(),
        plan.task_types.len(),
    );
    if !config.quiet && !config.tui {
        eprintln!(
            "async-inspect: {attached_line}; {}",
            match &gate {
                Some(_) => "starting the program",
                None => "Ctrl-C to stop",
            }
        );
    }
    let found_line = if gate.is_none() {
        find_idle_since_before(
            &plan,
            &catalogue,
            &config,
            pid,
            memory.as_ref(),
            reader.as_ref(),
            &mut session,
        )
    } else {
        String::new()
    };
    let mut tui = if config.tui {
        Some(Tui::start()?)
    } else {
        None
    };
    if let Some(tui) = &mut tui {
        if !found_line.is_empty() {
            attached_line = format!("{attached_line}; {found_line}");
        }
        tui.set_status(format!(
            "{attached_line}{}; q to stop",
            target_log
                .as_ref()
                .map_or_else(String::new, |(path, _)| format!(
                    "; the program's output goes to {}",
                    path.display()
                ))
        ));
    }

    // A running program's polls flood the ring buffer at once: attached only now that the
    // collector is about to drain it, past the memory scan. A launched one is still held at its
    // gate, so it is followed from its first poll all the same.
    attachment.attach_hot()?;
    let mut budget = Budget::new(pid.get(), prices, max_overhead, &attachment);
    // Where long polls block needs the sched tracepoints' registers.
    let mut blockers = attachment
        .off_cpu
        .is_ok()
        .then(|| Blockers::new(pid.get(), plan.dwarf_file.clone()))
        .flatten();
    let mut child = match gate {
        Some(gate) => Some(gate.release()?),
        None => None,
    };
    let show_progress = !config.quiet && child.is_none() && tui.is_none();
    let progress = Progress::default();
    let user_quit = tokio::sync::Notify::new();
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
                () = user_quit.notified() => Ended::Quit,
                () = deadline => Ended::Duration,
                ended = watchdog => ended,
            }
        };
        let mut ended = None;
        let stop = async { ended = Some(stop.await) };
        let status_line = StatusLine::new(show_progress);
        let mut live_view = tui.as_mut().map(|tui| LiveView {
            tui,
            refreshed: None,
        });
        let mut view_error = None;
        let mut budget_error = None;
        let mut pending = PendingStacks::default();
        let flushed = Cell::new(std::time::Instant::now());
        collector
            .run(&mut session, stop, |session| {
                if budget_error.is_none()
                    && let Err(error) =
                        budget.tick(&mut attachment, session, memory.as_ref(), &plan.layout)
                {
                    budget_error = Some(error);
                    user_quit.notify_one();
                }
                if let Some(blockers) = &mut blockers {
                    note_blocked(blockers, &attachment, &catalogue, session);
                }
                // Backtraces are read only for tasks that stay idle a while: most idle
                // stretches of a busy program are too short to matter.
                if let Some(remap) = session.take_remap() {
                    pending.remap(&remap);
                    budget.remap(&remap);
                }
                let idle = session.model.take_newly_idle();
                pending.add(&session.model, &idle);
                let due = pending.due(&session.model, collect::monotonic_ns(), READ_STACK_AFTER_NS);
                if let Some(reader) = &reader
                    && !due.is_empty()
                {
                    read_stacks(reader, session, &due);
                }
                if let Some(watch) = config.watch {
                    progress.watch(session, &catalogue, watch, !due.is_empty());
                }
                if let Some(recorder) = session.recorder()
                    && flushed.get().elapsed() >= RECORD_FLUSH
                {
                    flushed.set(std::time::Instant::now());
                    recorder.flush();
                }
                status_line.show(&session.model);
                if let Some(view) = &mut live_view
                    && view_error.is_none()
                {
                    if view.due() {
                        facts.overhead = Some(budget.overhead(&attachment));
                    }
                    match view.tick(session, &catalogue, &facts, settings) {
                        Ok(Action::Quit) => user_quit.notify_one(),
                        Ok(Action::Continue) => {}
                        Err(error) => {
                            view_error = Some(error);
                            user_quit.notify_one();
                        }
                    }
                }
            })
            .await?;
        status_line.clear();
        if let Some(error) = view_error {
            return Err(anyhow::anyhow!("the live view failed: {error}"));
        }
        if let Some(error) = budget_error {
            return Err(anyhow::Error::new(error)
                .context("keeping the probe within its overhead budget failed"));
        }
        ended.expect("the stop future ran")
    };
    let ended_ns = collect::monotonic_ns();
    facts.ended_ns = ended_ns;
    facts.dropped_per_cpu = attachment.drops_per_cpu().unwrap_or_default();
    if target::is_alive(pid) {
        budget.finish(&mut session, memory.as_ref(), &plan.layout);
    }
    facts.overhead = Some(budget.overhead(&attachment));
    facts.undecodable = collector.undecodable;
    // Detach before reporting: the target runs unprobed from here on.
    drop(collector);
    drop(attachment);
    session.model.close(ended_ns);
    facts.exec_into = target::exec_since(pid, &facts.target);
    read_final_stacks(
        reader.as_ref(),
        &mut session,
        pid,
        facts.exec_into.is_none(),
    );
    let failed = matches!(ended, Ended::Hang | Ended::Deadlock);
    let status = settle_child(ended, child.as_mut()).await;
    // A program killed by a signal must not look like one that ended well: every report says.
    facts.target_exit = status.map(target::ended);
    // Finished once the target's end is known, so a replay reports it too. A recording that
    // failed (a full disk) must not cost the report.
    let recorded = match session
        .take_recorder()
        .map(|recorder| recorder.finish(&facts))
    {
        Some(Err(error)) => {
            eprintln!("async-inspect: {error}");
            None
        }
        other => other.and_then(Result::ok),
    };

    let report = make_report(&catalogue, &session, facts, settings);
    if let Some(mut tui) = tui {
        tui.update(report.clone());
        tui.set_status(format!(
            "{}; q to leave and print the report",
            final_status(ended, report.summary.target_exit.as_ref())
        ));
        // A terminal that went away (SIGHUP) must not cost the report and the files.
        if let Err(error) = tui.wait_for_quit() {
            drop(tui);
            eprintln!("async-inspect: the live view ended: {error}");
        }
    }
    if let Some((path, _)) = &target_log {
        eprintln!(
            "async-inspect: the program's output is in {}",
            path.display()
        );
    }
    if let Some(path) = recorded {
        eprintln!(
            "async-inspect: recorded to {} (replay it with `async-inspect report {}`)",
            path.display(),
            path.display()
        );
    }
    if config.watch.is_some() && !failed {
        present::write_files(&report, &session, &catalogue, &config.output)?;
        // A passing test: one line, so CI logs stay short.
        eprintln!(
            "async-inspect test: no hang ({} tasks seen); {}",
            report.summary.tasks,
            report
                .summary
                .target_exit
                .as_ref()
                .map_or_else(|| "the program exited".to_owned(), TargetExit::describe)
        );
        return Ok(status.map_or(0, target::exit_code));
    }
    let verdict = verdict(ended, &config);
    present::emit(
        &report,
        &session,
        &catalogue,
        &config.output,
        settings.stuck_after_ns,
        &verdict,
    )?;
    if config.explain {
        report.write_explain(std::io::stdout().lock())?;
    }
    if failed {
        return Ok(HANG_EXIT);
    }
    Ok(status.map_or(0, target::exit_code))
}

/// What is known of a probe run once it is attached; the rest comes as it ends.
fn facts_at_start(
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

/// Where the polls running a while are blocked, into the session.
fn note_blocked<O: Observer>(
    blockers: &mut Blockers,
    attachment: &Attachment,
    catalogue: &Catalogue,
    session: &mut Session<O>,
) {
    let now = collect::monotonic_ns();
    let thread = |tid| attachment.thread(tid);
    for (task, at) in blockers.look(&session.model, catalogue, now, thread) {
        session.blocked(task, at);
    }
}

/// The tasks in the program's memory, and the futures given to `block_on` parked on its stacks.
fn find_in_memory(
    plan: &resolve::ProbePlan,
    memory: &ProcessMemory,
) -> anyhow::Result<snapshot::Found> {
    let now_ns = collect::monotonic_ns();
    let mut found = snapshot::find(plan, memory, now_ns)?;
    found
        .tasks
        .extend(snapshot::find_block_on(plan, memory, now_ns)?);
    Ok(found)
}

/// "7 tasks found in the program's memory, besides 2 runtime workers": tasks counted as the
/// table counts them (once each, without the runtime workers, which the table leaves out).
fn count_found(catalogue: &Catalogue, model: &TaskModel, found: &[usize]) -> String {
    let distinct: std::collections::BTreeSet<usize> = found.iter().copied().collect();
    let workers = distinct
        .iter()
        .filter(|&&index| {
            probe_user::report::is_runtime_worker(catalogue, model, &model.tasks()[index])
        })
        .count();
    let tasks = distinct.len() - workers;
    let found = format!("{tasks} tasks found in the program's memory");
    match workers {
        0 => found,
        1 => format!("{found}, besides 1 runtime worker"),
        _ => format!("{found}, besides {workers} runtime workers"),
    }
}

/// Checks that the plan fits the file the target runs (another build's `--binary` would put the
/// probes inside its instructions), before anything is launched, attached or read. Returns notes
/// on what could not be checked.
fn verify_plan(
    plan: &resolve::ProbePlan,
    running: &std::path::Path,
    binary: Option<&std::path::Path>,
    debuginfo: Option<&std::path::Path>,
) -> anyhow::Result<Vec<String>> {
    let files = resolve::verify::Files {
        running,
        running_name: target::display_name(running),
        binary,
        debuginfo,
    };
    Ok(resolve::verify::verify(plan, &files)?)
}

/// Runs `command` as it is (a test binary without tokio, under `test`), with its status.
async fn run_unprobed(command: &[OsString]) -> anyhow::Result<i32> {
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

/// The live view's last status line: how the run ended, and how the program did.
fn final_status(ended: Ended, exit: Option<&TargetExit>) -> String {
    match (ended, exit) {
        (Ended::TargetExited(_), Some(exit)) => exit.describe(),
        (Ended::TargetExited(_), None) => "the program exited".to_owned(),
        (Ended::Duration, _) => "probed for the --duration given".to_owned(),
        (_, Some(exit)) => format!("stopped; {}", exit.describe()),
        _ => "stopped".to_owned(),
    }
}

/// How long a task stays idle before its backtrace is read: shorter waits are a busy
/// program's ordinary rhythm, and reading each would cost more than the probe itself.
const READ_STACK_AFTER_NS: u64 = 100_000_000;

/// A running program's tasks that are idle now send no event until woken, which a hung program
/// never does: find them in its memory. The probes are in place, so nothing that starts
/// meanwhile is missed, and a task seen both ways is kept once. Returns the line that says what
/// was found (empty when nothing could be looked for).
fn find_idle_since_before<O: Observer>(
    plan: &resolve::ProbePlan,
    catalogue: &Catalogue,
    config: &ProbeConfig,
    pid: std::num::NonZeroU32,
    memory: Option<&ProcessMemory>,
    reader: Option<&StackReader<'_>>,
    session: &mut Session<O>,
) -> String {
    let scanned = std::time::Instant::now();
    let opened;
    let scanner = match memory {
        Some(memory) => Ok(memory),
        None => {
            opened = ProcessMemory::open(pid.get());
            opened.as_ref()
        }
    };
    // A large heap takes a while to read: say what is going on.
    let looking = !config.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
    if looking {
        eprint!("async-inspect: looking for tasks in the program's memory…");
    }
    let found = scanner
        .map_err(|error| anyhow::anyhow!("{error}"))
        .and_then(|scanner| find_in_memory(plan, scanner));
    if looking {
        eprint!("\r\x1b[K");
    }
    let found = match found {
        Ok(found) => found,
        Err(error) => {
            if !config.quiet {
                eprintln!(
                    "async-inspect: note: tasks idle since before the probe attached were not looked for: {error}"
                );
            }
            return String::new();
        }
    };
    // Room for exactly these: growing by doubling would leave up to half the room unused.
    session.model.reserve(found.tasks.len());
    session.stacks.reserve(found.tasks.len());
    let tasks: Vec<usize> = found
        .tasks
        .into_iter()
        .map(|task| session.observe(task))
        .collect();
    if let Some(reader) = reader {
        read_stacks(reader, session, &tasks);
    }
    let line = format!(
        "{} ({} MiB read in {})",
        count_found(catalogue, &session.model, &tasks),
        found.scan.bytes_scanned / (1024 * 1024),
        probe_user::report::duration(scanned.elapsed().as_nanos() as u64)
    );
    if !config.quiet && !config.tui {
        eprintln!("async-inspect: {line}");
    }
    line
}

/// The overhead budget under this kernel's mechanism: none with perf-event uprobes, which take
/// ~100 ms each to detach, so windows of 200 ms cannot be kept.
fn budget_under(mechanism: attach::Mechanism, config: &ProbeConfig) -> Option<f64> {
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

/// The file a launched program's output goes to while the live view owns the terminal.
fn target_log() -> anyhow::Result<(std::path::PathBuf, std::fs::File)> {
    let path =
        std::env::temp_dir().join(format!("async-inspect-output-{}.log", std::process::id()));
    let file = std::fs::File::create(&path)
        .map_err(|error| anyhow::anyhow!("cannot create {}: {error}", path.display()))?;
    Ok((path, file))
}

/// At the end: while the target is alive (attached by pid, or stopped early) and still the
/// program probed, reads where every idle task waits now, tasks idle since before the probe
/// attached included; once it is gone, tasks never read say so rather than "not read yet".
fn read_final_stacks<O: Observer>(
    reader: Option<&StackReader<'_>>,
    session: &mut Session<O>,
    pid: std::num::NonZeroU32,
    same_program: bool,
) {
    let Some(reader) = reader else { return };
    let all: Vec<usize> = (0..session.model.tasks().len()).collect();
    if target::is_alive(pid) && same_program {
        read_stacks(reader, session, &all);
        return;
    }
    let now_ns = collect::monotonic_ns();
    for (task, stack) in probe_user::analyze::stacks::gone(&session.model, &all, now_ns) {
        session.stack(task, stack);
    }
}

/// The probe plan for `runtime_binary` (symbols from `--binary` if given), checked against the
/// running executable; None when `test` meets a launched binary without tokio, which then runs
/// unprobed.
fn plan_probes(
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
    let notes = verify_plan(
        &plan,
        runtime_binary,
        config.binary.as_deref(),
        config.debuginfo.as_deref(),
    )?;
    plan.notes.extend(notes);
    if matches!(config.target, Target::Pid(_)) {
        plan.notes
            .extend(resolve::block_on::unfindable_note(&plan.task_types, true));
    }
    Ok(Some(plan))
}

/// Loads and attaches the programs; a launched target that will not be probed is let go (its
/// gate sees EOF and exits) rather than run unprobed.
async fn attach_or_abandon(
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

/// How a launched target ended, once the probe has: asked to stop like Ctrl-C would (`q` in the
/// live view), killed after a hang (a hung test must not hold up the CI run), or left to finish.
async fn settle_child(
    ended: Ended,
    child: Option<&mut tokio::process::Child>,
) -> Option<std::process::ExitStatus> {
    let child = match (ended, child) {
        (Ended::TargetExited(status), _) => return status,
        (_, None) => return None,
        (_, Some(child)) => child,
    };
    match ended {
        Ended::Hang | Ended::Deadlock => {
            let _ = child.kill().await;
            return None;
        }
        Ended::Quit => {
            if let Some(child_pid) = child.id() {
                // What Ctrl-C does without the live view, whose raw mode keeps it from the
                // program. SAFETY: kill has no memory preconditions; the pid is our child's.
                unsafe { libc::kill(child_pid as i32, libc::SIGINT) };
            }
        }
        _ => {}
    }
    // A target that got our Ctrl-C too: a moment to finish, so that its status is real.
    tokio::time::timeout(std::time::Duration::from_secs(2), child.wait())
        .await
        .ok()
        .and_then(Result::ok)
}

/// What `test` says above the report when it failed the command.
fn verdict(ended: Ended, config: &ProbeConfig) -> String {
    match ended {
        Ended::Hang => format!(
            "\nasync-inspect test: HANG: no task was polled for {}; the command was killed",
            probe_user::report::duration(config.watch.map_or(0, |w| w.timeout.as_nanos() as u64))
        ),
        Ended::Deadlock => {
            "\nasync-inspect test: DEADLOCK: tasks wait for each other; the command was killed"
                .into()
        }
        _ => String::new(),
    }
}

/// The variable through which cargo takes a runner for the host's binaries.
const CARGO_RUNNER_VAR: &str = "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER";

/// `async-inspect test -- cargo test …`: runs cargo with this program as its runner, so that
/// every test binary cargo starts is launched under `async-inspect test` with the same options,
/// probes in place before its `main`. Exits with cargo's status.
async fn test_through_cargo(args: &TestArgs) -> anyhow::Result<i32> {
    let mut runner = vec![
        std::env::current_exe()?.display().to_string(),
        "test".to_owned(),
        "--hang-timeout".to_owned(),
        format!("{}ms", args.hang_timeout.as_millis()),
    ];
    if args.fail_on_deadlock {
        runner.push("--fail-on-deadlock".to_owned());
    }
    if args.no_values {
        runner.push("--no-values".to_owned());
    }
    if let Some(dir) = &args.json {
        std::fs::create_dir_all(dir)
            .map_err(|error| anyhow::anyhow!("cannot create {}: {error}", dir.display()))?;
        runner.push("--json-dir".to_owned());
        runner.push(std::path::absolute(dir)?.display().to_string());
    }
    runner.push("--".to_owned());
    if let Some(word) = runner
        .iter()
        .find(|word| word.contains(char::is_whitespace))
    {
        anyhow::bail!(
            "cargo splits its runner at spaces, and '{word}' has one: move it, or set the runner \
             yourself with cargo's --config target.<triple>.runner = [...]"
        );
    }
    let status = tokio::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .env(CARGO_RUNNER_VAR, runner.join(" "))
        .status()
        .await
        .map_err(|source| target::TargetError::Spawn {
            program: args.command[0].to_string_lossy().into_owned(),
            source,
        })?;
    Ok(target::exit_code(status))
}

/// Reads where each of `tasks` that is idle now waits, into the session (and its recording).
fn read_stacks<O: Observer>(reader: &StackReader<'_>, session: &mut Session<O>, tasks: &[usize]) {
    // In batches, so that a re-read of 100 000 tasks never holds two backtraces of each; the
    // tasks by id are looked up once for all (storing stacks adds no task).
    let mut joined = JoinedTasks::default();
    for batch in tasks.chunks(1024) {
        let now_ns = collect::monotonic_ns();
        for (task, stack) in reader.read_idle(&session.model, batch, now_ns, &mut joined) {
            session.stack(task, stack);
        }
    }
}

/// The report of a session, with the settings the run was made with.
fn make_report<O>(
    catalogue: &Catalogue,
    session: &Session<O>,
    facts: RunFacts,
    settings: record::Settings,
) -> Report {
    Report::new(
        catalogue,
        &session.model,
        facts,
        Analysis {
            stacks: &session.stacks,
            stuck_after_ns: settings.stuck_after_ns,
            limits: Thresholds {
                long_poll_ns: settings.long_poll_ns,
                ..Thresholds::default()
            },
        },
    )
}

/// `async-inspect report FILE`: replay a recording into the same reports and exports.
fn replay(args: &ReportArgs) -> anyhow::Result<i32> {
    let started_ns = record::Reader::open(&args.recording)?
        .header
        .facts
        .started_ns;
    let replayed =
        probe_user::replay::replay(&args.recording, Exports::new(&args.output, started_ns))?;
    if let Some(note) = replayed.note(&args.recording) {
        eprintln!("async-inspect: note: {note}");
    }
    let recorded = replayed.header.settings;
    let settings = record::Settings {
        stuck_after_ns: args
            .stuck_after
            .map_or(recorded.stuck_after_ns, |d| d.as_nanos() as u64),
        long_poll_ns: args
            .long_poll
            .map_or(recorded.long_poll_ns, |d| d.as_nanos() as u64),
        keep_every_task: recorded.keep_every_task,
    };
    let catalogue = &replayed.header.catalogue;
    let report = make_report(catalogue, &replayed.session, replayed.facts, settings);
    present::emit(
        &report,
        &replayed.session,
        catalogue,
        &args.output,
        settings.stuck_after_ns,
        "",
    )?;
    Ok(0)
}

/// The live view during a run: input every tick, new data at most every [`LIVE_REFRESH`].
struct LiveView<'a> {
    tui: &'a mut Tui,
    refreshed: Option<std::time::Instant>,
}

/// How often a recording is flushed to disk, so a probe killed with SIGKILL loses little.
const RECORD_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);

/// How often the live view rebuilds its report (with lints and deadlocks) from the model.
const LIVE_REFRESH: std::time::Duration = std::time::Duration::from_millis(500);

impl LiveView<'_> {
    /// Whether the next tick rebuilds the report.
    fn due(&self) -> bool {
        self.refreshed.is_none_or(|at| at.elapsed() >= LIVE_REFRESH)
    }

    fn tick<O>(
        &mut self,
        session: &Session<O>,
        catalogue: &Catalogue,
        facts: &RunFacts,
        settings: record::Settings,
    ) -> std::io::Result<Action> {
        let action = self.tui.handle_input()?;
        if self.due() {
            self.refreshed = Some(std::time::Instant::now());
            let now = RunFacts {
                ended_ns: collect::monotonic_ns(),
                ..facts.clone()
            };
            self.tui
                .update(make_report(catalogue, session, now, settings));
        }
        self.tui.draw()?;
        Ok(action)
    }
}

/// `async-inspect dump`: find every task in memory, read where each waits, report.
fn dump(args: &DumpArgs) -> anyhow::Result<i32> {
    let (pid, exe) = target::existing(args.pid)?;
    let mut plan = resolve::resolve_with(
        args.binary.as_deref().unwrap_or(&exe),
        args.debuginfo.as_deref(),
    )?;
    // Another build's vtables and layout would find no tasks, or wrong ones, and say so calmly.
    let notes = verify_plan(
        &plan,
        &exe,
        args.binary.as_deref(),
        args.debuginfo.as_deref(),
    )?;
    plan.notes.extend(notes);
    plan.notes
        .extend(resolve::block_on::unfindable_note(&plan.task_types, false));
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
    let mut snapshot = snapshot::take(&plan, &memory, now_ns)?;
    for body in snapshot::find_block_on(&plan, &memory, now_ns)? {
        snapshot.model.observe(body);
    }
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
        &plan.catalogue(),
        &snapshot.model,
        RunFacts {
            mode: Mode::Dump,
            target: target::display_name(&exe),
            pid: pid.get(),
            started_ns,
            ended_ns,
            dropped_per_cpu: Vec::new(),
            undecodable: 0,
            probe_points: 0,
            links: 0,
            perf_event_uprobes: false,
            overhead: None,
            target_exit: None,
            exec_into: None,
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
    let written = match args.format {
        Format::Text => writeln!(
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
        .and_then(|()| report.write_diagnosis(&mut stdout)),
        Format::Json => report
            .write_json(&mut stdout)
            .and_then(|()| writeln!(stdout)),
        Format::Md => present::markdown::write(&report, args.top, u64::MAX, &mut stdout),
    };
    match written {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other?,
    }
    Ok(0)
}

/// Ctrl-C, SIGTERM, or SIGHUP (the terminal closed): stop and detach cleanly.
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut terminate), Ok(mut hangup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
        _ = hangup.recv() => {}
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
