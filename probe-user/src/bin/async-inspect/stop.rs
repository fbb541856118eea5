//! What ends a run (the program's exit, Ctrl-C, `q`, `--duration`, `test`'s hang and deadlock
//! watch), and what is done with a launched program once it has ended.

use std::cell::Cell;

use probe_user::{
    analyze::deadlocks::WaitGraph,
    cli::{HangWatch, ProbeConfig},
    collect,
    report::TargetExit,
    resolve::Catalogue,
    session::Session,
    target,
};

/// How the run ended.
#[derive(Clone, Copy)]
pub enum Ended {
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
pub const HANG_EXIT: i32 = 3;

/// What the collector's batches tell the `test` watchdog, which runs when no batch comes.
#[derive(Default)]
pub struct Progress {
    last_poll_ns: Cell<Option<u64>>,
    /// Tasks of the program's own (not runtime workers) that have not ended.
    live_tasks: Cell<usize>,
    live_workers: Cell<usize>,
    counted_at: Cell<Option<std::time::Instant>>,
    deadlocked: Cell<bool>,
}

impl Progress {
    /// Takes in what the `test` watchdog needs after a batch.
    pub fn watch<O>(
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

/// Resolves once the run should end, with why: the target exits, the user interrupts or quits
/// (`user_quit`), `--duration` passes, or `test`'s watch sees a hang or a deadlock in `progress`.
pub async fn stop_when(
    config: &ProbeConfig,
    child: Option<&mut tokio::process::Child>,
    pid: std::num::NonZeroU32,
    progress: &Progress,
    user_quit: &tokio::sync::Notify,
) -> Ended {
    let target_exit = async {
        match child {
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
    tokio::select! {
        ended = target_exit => ended,
        _ = interrupted() => Ended::Interrupted,
        () = user_quit.notified() => Ended::Quit,
        () = deadline => Ended::Duration,
        ended = watch(config.watch, progress) => ended,
    }
}

/// `test`'s watch: a hang (live tasks, no poll for the timeout) or a deadlock ends the run.
async fn watch(watch: Option<HangWatch>, progress: &Progress) -> Ended {
    let Some(watch) = watch else {
        return std::future::pending().await;
    };
    let timeout = watch.timeout.as_nanos() as u64;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    loop {
        tick.tick().await;
        if progress.deadlocked.get() {
            return Ended::Deadlock;
        }
        // A hang needs tasks that should make progress: before the first poll, or once every
        // task has ended, the program is elsewhere.
        if let Some(last) = progress.last_poll_ns.get()
            && progress.live_tasks.get() > 0
            && collect::monotonic_ns().saturating_sub(last) > timeout
        {
            return Ended::Hang;
        }
    }
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

/// How a launched target ended, once the probe has: asked to stop like Ctrl-C would (`q` in the
/// live view), killed after a hang (a hung test must not hold up the CI run), or left to finish.
pub async fn settle_child(
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
pub fn verdict(ended: Ended, config: &ProbeConfig) -> String {
    match ended {
        Ended::Hang => format!(
            "\nasync-inspect test: HANG: no task was polled for {}; the command was killed",
            probe_user::readable::duration(config.watch.map_or(0, |w| w.timeout.as_nanos() as u64))
        ),
        Ended::Deadlock => {
            "\nasync-inspect test: DEADLOCK: tasks wait for each other; the command was killed"
                .into()
        }
        _ => String::new(),
    }
}

/// The live view's last status line: how the run ended, and how the program did.
pub fn final_status(ended: Ended, exit: Option<&TargetExit>) -> String {
    match (ended, exit) {
        (Ended::TargetExited(_), Some(exit)) => exit.describe(),
        (Ended::TargetExited(_), None) => "the program exited".to_owned(),
        (Ended::Duration, _) => "probed for the --duration given".to_owned(),
        (_, Some(exit)) => format!("stopped; {}", exit.describe()),
        _ => "stopped".to_owned(),
    }
}
