//! `probe` and `test` (one binary): resolve, start or find the target, attach, collect until
//! something ends the run, detach, report. [`Run`] holds what lives from attach to detach.

use std::{num::NonZeroU32, path::PathBuf, time::Instant};

use probe_user::{
    analyze::stacks::{PendingStacks, StackReader},
    attach::Attachment,
    blockers::Blockers,
    budget::Budget,
    cli::ProbeConfig,
    collect::{self, Collector},
    memory::ProcessMemory,
    overhead::Prices,
    present::{self, Exports, tui::Action, tui::Tui},
    record,
    report::{Report, RunFacts, TargetExit},
    resolve::{Catalogue, ProbePlan},
    session::Session,
    target,
};

use crate::{
    live::{LiveView, StatusLine},
    make_report, scan, setup,
    stop::{self, Ended, Progress},
};

/// How often a recording is flushed to disk, so a probe killed with SIGKILL loses little.
const RECORD_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);

pub async fn probe(config: ProbeConfig) -> anyhow::Result<i32> {
    let mut run = match Run::start(&config).await? {
        Started::Probed(run) => run,
        Started::Unprobed(command) => return setup::run_unprobed(&command).await,
    };
    let ended = run.collect(&config).await?;
    let finished = run.finish(ended, &config).await;
    finished.present(&config)
}

enum Started {
    Probed(Box<Run>),
    /// `test` met a launched binary without tokio: it runs as it is.
    Unprobed(Vec<std::ffi::OsString>),
}

/// A run from attach to detach.
struct Run {
    plan: ProbePlan,
    catalogue: Catalogue,
    pid: NonZeroU32,
    attachment: Attachment,
    collector: Collector,
    /// Await points are read from the target's memory when tasks go idle (needs DWARF).
    memory: Option<ProcessMemory>,
    session: Session<Exports>,
    facts: RunFacts,
    settings: record::Settings,
    budget: Budget,
    /// Where long polls block (needs the sched tracepoints' registers).
    blockers: Option<Blockers>,
    tui: Option<Tui>,
    /// Where a launched program's output goes while the live view owns the terminal.
    target_log: Option<(PathBuf, std::fs::File)>,
    /// A launched program, released from its gate.
    child: Option<tokio::process::Child>,
    /// Attached by pid: its executable stays open for the whole run.
    _running: Option<setup::Running>,
}

impl Run {
    /// Resolves (a bad binary is reported before anything is started or attached), starts or
    /// finds the target, attaches, opens the session, and releases a launched program.
    async fn start(config: &ProbeConfig) -> anyhow::Result<Started> {
        let found = setup::find_target(config)?;
        let Some(plan) = setup::plan_probes(config, &found.binary, found.running.is_none())? else {
            let probe_user::cli::Target::Launch(command) = &config.target else {
                unreachable!("only a launched test binary runs unprobed")
            };
            return Ok(Started::Unprobed(command.clone()));
        };
        let mut catalogue = plan.catalogue();
        let mechanism = probe_user::attach::preflight()?;
        let max_overhead = setup::budget_under(mechanism, config);
        let (target_log, output) = setup::target_log(config, &found)?;
        let (pid, binary, gate) = setup::start_target(&found, config, output)?;
        let (mut attachment, gate) =
            setup::attach_or_abandon(&plan, &binary, pid, gate, config, mechanism).await?;
        catalogue.notes.extend(attachment.split_notes());
        let collector = Collector::new(attachment.take_events()?)?;
        let prices = attachment.calibrate().unwrap_or(Prices::TYPICAL);
        let memory = plan
            .types
            .as_ref()
            .and_then(|_| ProcessMemory::open(pid.get()).ok());
        let facts = setup::facts_at_start(&binary, pid, collect::monotonic_ns(), &attachment);
        let (mut session, settings) = setup::open_session(config, &catalogue, &facts)?;
        let mut attached = attached_line(config, &attachment, pid, &plan, gate.is_some());
        if gate.is_none() {
            let reader = reader(&plan, memory.as_ref(), config.values);
            let found = scan::find_idle_since_before(
                &plan,
                &catalogue,
                config,
                pid,
                memory.as_ref(),
                reader.as_ref(),
                &mut session,
            );
            if !found.is_empty() {
                attached = format!("{attached}; {found}");
            }
        }
        let tui = open_live_view(config, &attached, target_log.as_ref())?;
        // A running program's polls flood the ring buffer at once: attached only now that the
        // collector is about to drain it, past the memory scan. A launched one is still held at
        // its gate, so it is followed from its first poll all the same.
        attachment.attach_hot()?;
        Ok(Started::Probed(Box::new(Run {
            budget: Budget::new(pid.get(), prices, max_overhead, &attachment),
            blockers: attachment
                .off_cpu
                .is_ok()
                .then(|| Blockers::new(pid.get(), plan.dwarf_file.clone(), found.running.is_some()))
                .flatten(),
            child: gate.map(target::Launched::release).transpose()?,
            _running: found.running,
            plan,
            catalogue,
            pid,
            attachment,
            collector,
            memory,
            session,
            facts,
            settings,
            tui,
            target_log,
        })))
    }

    /// Collects events until something ends the run, doing each batch's work (see [`Ticks`]).
    async fn collect(&mut self, config: &ProbeConfig) -> anyhow::Result<Ended> {
        // Attached by pid only: a launched program's own output shares the terminal.
        let status_line =
            StatusLine::new(!config.quiet && self.child.is_none() && self.tui.is_none());
        let progress = Progress::default();
        let user_quit = tokio::sync::Notify::new();
        let mut ended = None;
        let stop = async {
            ended = Some(
                stop::stop_when(config, self.child.as_mut(), self.pid, &progress, &user_quit).await,
            );
        };
        let mut ticks = Ticks {
            config,
            plan: &self.plan,
            catalogue: &self.catalogue,
            attachment: &mut self.attachment,
            budget: &mut self.budget,
            blockers: self.blockers.as_mut(),
            reader: reader(&self.plan, self.memory.as_ref(), config.values),
            memory: self.memory.as_ref(),
            facts: &mut self.facts,
            settings: self.settings,
            progress: &progress,
            pending: PendingStacks::default(),
            status_line,
            live_view: self.tui.as_mut().map(LiveView::new),
            flushed: Instant::now(),
            failure: None,
        };
        self.collector
            .run(&mut self.session, stop, |session| {
                if ticks.batch(session) {
                    user_quit.notify_one();
                }
                ticks.next_batch_after()
            })
            .await?;
        ticks.status_line.clear();
        if let Some(failure) = ticks.failure {
            return Err(failure);
        }
        Ok(ended.expect("the stop future ran"))
    }

    /// Detaches, reads where tasks wait at the end, settles a launched program, finishes the
    /// recording, and makes the report.
    async fn finish(self: Box<Self>, ended: Ended, config: &ProbeConfig) -> Finished {
        let mut run = *self;
        let facts = &mut run.facts;
        let ended_ns = collect::monotonic_ns();
        facts.ended_ns = ended_ns;
        facts.dropped_per_cpu = run.attachment.drops_per_cpu().unwrap_or_default();
        if target::is_alive(run.pid) {
            let memory = run.memory.as_ref();
            run.budget
                .finish(&mut run.session, memory, &run.plan.layout);
        }
        facts.overhead = Some(run.budget.overhead(&run.attachment));
        facts.undecodable = run.collector.undecodable;
        // Detach before reporting: the target runs unprobed from here on.
        drop(run.collector);
        drop(run.attachment);
        run.session.model.close(ended_ns);
        facts.exec_into = target::exec_since(run.pid, &facts.target);
        let same_program = facts.exec_into.is_none();
        let reader = reader(&run.plan, run.memory.as_ref(), config.values);
        scan::read_final_stacks(reader.as_ref(), &mut run.session, run.pid, same_program);
        let status = stop::settle_child(ended, run.child.as_mut()).await;
        // A program killed by a signal must not look like one that ended well: every report
        // says.
        facts.target_exit = status.map(target::ended);
        // Finished once the target's end is known, so a replay reports it too. A recording that
        // failed (a full disk) must not cost the report.
        let recorded = match run.session.take_recorder().map(|r| r.finish(facts)) {
            Some(Err(error)) => {
                eprintln!("async-inspect: {error}");
                None
            }
            other => other.and_then(Result::ok),
        };
        Finished {
            report: make_report(&run.catalogue, &run.session, run.facts, run.settings),
            session: run.session,
            catalogue: run.catalogue,
            tui: run.tui,
            target_log: run.target_log,
            recorded,
            status,
            ended,
            stuck_after_ns: run.settings.stuck_after_ns,
        }
    }
}

/// A run detached and reported, to be shown.
struct Finished {
    report: Report,
    session: Session<Exports>,
    catalogue: Catalogue,
    tui: Option<Tui>,
    target_log: Option<(PathBuf, std::fs::File)>,
    recorded: Option<PathBuf>,
    status: Option<std::process::ExitStatus>,
    ended: Ended,
    stuck_after_ns: u64,
}

impl Finished {
    /// Shows the report (in the live view until the user leaves it, then as asked), says where
    /// the files went, and gives the exit status: the program's own, or [`stop::HANG_EXIT`].
    fn present(mut self, config: &ProbeConfig) -> anyhow::Result<i32> {
        let report = &self.report;
        if let Some(mut tui) = self.tui.take() {
            tui.update(report.clone());
            tui.set_status(format!(
                "{}; q to leave and print the report",
                stop::final_status(self.ended, report.summary.target_exit.as_ref())
            ));
            // A terminal that went away (SIGHUP) must not cost the report and the files.
            if let Err(error) = tui.wait_for_quit() {
                drop(tui);
                eprintln!("async-inspect: the live view ended: {error}");
            }
        }
        if let Some((path, _)) = &self.target_log {
            eprintln!(
                "async-inspect: the program's output is in {}",
                path.display()
            );
        }
        if let Some(path) = &self.recorded {
            eprintln!(
                "async-inspect: recorded to {} (replay it with `async-inspect report {}`)",
                path.display(),
                path.display()
            );
        }
        let exit_code = self.status.map_or(0, target::exit_code);
        let failed = matches!(self.ended, Ended::Hang | Ended::Deadlock);
        if config.watch.is_some() && !failed {
            present::write_files(report, &self.session, &self.catalogue, &config.output)?;
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
            return Ok(exit_code);
        }
        present::emit(
            report,
            &self.session,
            &self.catalogue,
            &config.output,
            self.stuck_after_ns,
            &stop::verdict(self.ended, config),
        )?;
        if config.explain {
            report.write_explain(std::io::stdout().lock())?;
        }
        Ok(if failed { stop::HANG_EXIT } else { exit_code })
    }
}

/// The work done after each batch of events: the budget's windows, where blocked polls block,
/// the backtraces that are due, `test`'s watch, the recording's flush, the status line and the
/// live view.
struct Ticks<'a> {
    config: &'a ProbeConfig,
    plan: &'a ProbePlan,
    catalogue: &'a Catalogue,
    attachment: &'a mut Attachment,
    budget: &'a mut Budget,
    blockers: Option<&'a mut Blockers>,
    reader: Option<StackReader<'a>>,
    memory: Option<&'a ProcessMemory>,
    facts: &'a mut RunFacts,
    settings: record::Settings,
    progress: &'a Progress,
    /// Idle tasks whose backtraces are read once they stay idle a while.
    pending: PendingStacks,
    status_line: StatusLine,
    live_view: Option<LiveView<'a>>,
    flushed: Instant,
    /// The first failure: the run ends on it.
    failure: Option<anyhow::Error>,
}

impl Ticks<'_> {
    /// One batch's work; whether the run should end now (the user quit, or something failed).
    fn batch(&mut self, session: &mut Session<Exports>) -> bool {
        let failed_before = self.failure.is_some();
        if !failed_before
            && let Err(error) =
                self.budget
                    .tick(self.attachment, session, self.memory, &self.plan.layout)
        {
            self.failure = Some(
                anyhow::Error::new(error)
                    .context("keeping the probe within its overhead budget failed"),
            );
        }
        if let Some(blockers) = &mut self.blockers {
            let now = collect::monotonic_ns();
            let thread = |tid| self.attachment.thread(tid);
            for (task, at) in blockers.look(&session.model, self.catalogue, now, thread) {
                session.blocked(task, at);
            }
        }
        let went_idle = self.read_due_stacks(session);
        if let Some(watch) = self.config.watch {
            self.progress
                .watch(session, self.catalogue, watch, went_idle);
        }
        if let Some(recorder) = session.recorder()
            && self.flushed.elapsed() >= RECORD_FLUSH
        {
            self.flushed = Instant::now();
            recorder.flush();
        }
        self.status_line.show(&session.model);
        let quit = self.refresh_view(session);
        quit || (!failed_before && self.failure.is_some())
    }

    /// How long the next batch may wait: long in a budget's gap, where only rare probes send
    /// events, unless the live view needs its keys read.
    fn next_batch_after(&self) -> std::time::Duration {
        if self.live_view.is_none() && self.budget.in_gap() {
            collect::QUIET_TICK
        } else {
            collect::TICK
        }
    }

    /// Reads the backtraces of tasks that stayed idle a while (most idle stretches of a busy
    /// program are too short to matter); whether any was due.
    fn read_due_stacks(&mut self, session: &mut Session<Exports>) -> bool {
        if let Some(remap) = session.take_remap() {
            self.pending.remap(&remap);
            self.budget.remap(&remap);
        }
        let idle = session.model.take_newly_idle();
        self.pending.add(&session.model, &idle);
        let due = self.pending.due(
            &session.model,
            collect::monotonic_ns(),
            scan::READ_STACK_AFTER_NS,
        );
        if let Some(reader) = &self.reader
            && !due.is_empty()
        {
            scan::read_stacks(reader, session, &due);
        }
        !due.is_empty()
    }

    /// The live view's input and, when due, a new report; whether the user quit.
    fn refresh_view(&mut self, session: &Session<Exports>) -> bool {
        let Some(view) = &mut self.live_view else {
            return false;
        };
        if self.failure.is_some() {
            return false;
        }
        if view.due() {
            self.facts.overhead = Some(self.budget.overhead(self.attachment));
        }
        match view.tick(session, self.catalogue, self.facts, self.settings) {
            Ok(Action::Quit) => true,
            Ok(Action::Continue) => false,
            Err(error) => {
                self.failure = Some(anyhow::anyhow!("the live view failed: {error}"));
                true
            }
        }
    }
}

/// "12 probe points attached to pid 4242 (7 task types)", said on stderr unless quiet or in
/// the live view (whose status line shows it).
fn attached_line(
    config: &ProbeConfig,
    attachment: &Attachment,
    pid: NonZeroU32,
    plan: &ProbePlan,
    launched: bool,
) -> String {
    let line = format!(
        "{} probe points attached to pid {pid} ({} task types)",
        attachment.points(),
        plan.task_types.len(),
    );
    if !config.quiet && !config.tui {
        let next = if launched {
            "starting the program"
        } else {
            "Ctrl-C to stop"
        };
        eprintln!("async-inspect: {line}; {next}");
    }
    line
}

/// The live view, if asked for, its status line saying what is attached.
fn open_live_view(
    config: &ProbeConfig,
    attached: &str,
    target_log: Option<&(PathBuf, std::fs::File)>,
) -> anyhow::Result<Option<Tui>> {
    if !config.tui {
        return Ok(None);
    }
    let mut tui = Tui::start()?;
    let output = target_log.map_or_else(String::new, |(path, _)| {
        format!("; the program's output goes to {}", path.display())
    });
    tui.set_status(format!("{attached}{output}; q to stop"));
    Ok(Some(tui))
}

/// Reads backtraces from the target's memory, when it can be read and DWARF says how.
fn reader<'a>(
    plan: &'a ProbePlan,
    memory: Option<&'a ProcessMemory>,
    values: bool,
) -> Option<StackReader<'a>> {
    memory.map(|memory| StackReader {
        plan,
        memory,
        values,
    })
}
