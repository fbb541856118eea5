//! What the probe reads of the target's memory during a run: the tasks idle since before it
//! attached, and where idle tasks wait (backtraces).

use probe_user::{
    analyze::stacks::{JoinedTasks, StackReader},
    cli::ProbeConfig,
    collect,
    memory::ProcessMemory,
    model::TaskModel,
    resolve::{self, Catalogue},
    session::{Observer, Session},
    snapshot, target,
};

/// How long a task stays idle before its backtrace is read: shorter waits are a busy
/// program's ordinary rhythm, and reading each would cost more than the probe itself.
pub const READ_STACK_AFTER_NS: u64 = 100_000_000;

/// A running program's tasks that are idle now send no event until woken, which a hung program
/// never does: find them in its memory. The probes are in place, so nothing that starts
/// meanwhile is missed, and a task seen both ways is kept once. Returns the line that says what
/// was found (empty when nothing could be looked for).
pub fn find_idle_since_before<O: Observer>(
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
        probe_user::readable::duration(scanned.elapsed().as_nanos() as u64)
    );
    if !config.quiet && !config.tui {
        eprintln!("async-inspect: {line}");
    }
    line
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

/// Reads where each of `tasks` that is idle now waits, into the session (and its recording).
pub fn read_stacks<O: Observer>(
    reader: &StackReader<'_>,
    session: &mut Session<O>,
    tasks: &[usize],
) {
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

/// At the end: while the target is alive (attached by pid, or stopped early) and still the
/// program probed, reads where every idle task waits now, tasks idle since before the probe
/// attached included; once it is gone, tasks never read say so rather than "not read yet".
pub fn read_final_stacks<O: Observer>(
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
