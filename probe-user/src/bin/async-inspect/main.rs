//! `async-inspect`: one short function per mode; each mode's steps live in its own module.

mod cargo_test;
mod dump;
mod live;
mod probe;
mod replay;
mod scan;
mod setup;
mod stop;

use std::{ffi::OsString, process::ExitCode};

use clap::Parser as _;
use probe_user::{
    analyze::lints::Thresholds,
    cli::{Cli, Command, ProbeConfig},
    record,
    report::{Analysis, Report, RunFacts},
    resolve::{self, Catalogue},
    session::Session,
    target,
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
        Command::Probe(args) => runtime.block_on(probe::probe(ProbeConfig::from(args))),
        Command::Test(args) if args.runs_cargo() => {
            runtime.block_on(cargo_test::test_through_cargo(&args))
        }
        Command::Test(args) => runtime.block_on(probe::probe(ProbeConfig::from(args))),
        Command::Dump(args) => dump::dump(&args),
        Command::Report(args) => replay::replay(&args),
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

/// Checks that the plan fits the file the target runs (another build's `--binary` would put the
/// probes inside its instructions), before anything is launched, attached or read; what could
/// not be checked goes into the plan's notes.
fn verify_plan(
    plan: &mut resolve::ProbePlan,
    running: &std::path::Path,
    binary: Option<&std::path::Path>,
    debuginfo: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let files = resolve::verify::Files {
        running,
        running_name: target::display_name(running),
        binary,
        debuginfo,
    };
    let notes = resolve::verify::verify(plan, &files)?;
    plan.notes.extend(notes);
    Ok(())
}
