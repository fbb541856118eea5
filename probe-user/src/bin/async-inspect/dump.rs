//! `async-inspect dump --pid PID`: every task found in the program's memory, where each waits.

use std::io::Write as _;

use probe_user::{
    analyze::{
        lints::Thresholds,
        stacks::{StackReader, Stacks},
    },
    cli::{DumpArgs, Format},
    collect,
    memory::ProcessMemory,
    present,
    report::{Analysis, Mode, Report, RunFacts},
    resolve, snapshot, target,
};

use crate::verify_plan;

/// `async-inspect dump`: find every task in memory, read where each waits, report.
pub fn dump(args: &DumpArgs) -> anyhow::Result<i32> {
    let (pid, exe) = target::existing(args.pid)?;
    let plan = plan(args, &exe)?;
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
            ..RunFacts::default()
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
    match print(&report, args, snapshot.scan.bytes_scanned) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other?,
    }
    Ok(0)
}

/// The probe plan for the executable `exe` runs (symbols from `--binary` if given), checked
/// against it: another build's vtables and layout would find no tasks, or wrong ones.
fn plan(args: &DumpArgs, exe: &std::path::Path) -> anyhow::Result<resolve::ProbePlan> {
    let mut plan = resolve::resolve_with(
        args.binary.as_deref().unwrap_or(exe),
        args.debuginfo.as_deref(),
    )?;
    verify_plan(
        &mut plan,
        exe,
        args.binary.as_deref(),
        args.debuginfo.as_deref(),
    )?;
    plan.notes
        .extend(resolve::block_on::unfindable_note(&plan.task_types, false));
    if plan.types.is_none() {
        eprintln!(
            "async-inspect: note: no DWARF in {}: tasks are listed without await points or backtraces \
             (pass the unstripped build with --binary)",
            plan.binary.display()
        );
    }
    Ok(plan)
}

/// The report on stdout, in the format asked for.
fn print(report: &Report, args: &DumpArgs, bytes_scanned: u64) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    let s = &report.summary;
    match args.format {
        Format::Text => writeln!(
            stdout,
            "async-inspect: dump of {} (pid {}): {} tasks in {} MiB of memory, read in {}{}",
            s.target,
            s.pid,
            s.tasks,
            bytes_scanned / (1024 * 1024),
            probe_user::readable::duration(s.duration_ns),
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
        Format::Md => present::markdown::write(report, args.top, u64::MAX, &mut stdout),
    }
}
