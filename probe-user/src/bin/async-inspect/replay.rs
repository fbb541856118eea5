//! `async-inspect report FILE`: a recording, replayed into the same reports and exports.

use probe_user::{
    cli::ReportArgs,
    present::{self, Exports},
    record,
};

use crate::make_report;

/// `async-inspect report FILE`: replay a recording into the same reports and exports.
pub fn replay(args: &ReportArgs) -> anyhow::Result<i32> {
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
