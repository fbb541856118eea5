//! `--mermaid FILE`: a Mermaid Gantt chart of the task timeline.

use std::io::{self, Write};

use crate::report::Report;

/// The `top` longest-lived tasks (0 for all), grouped by parent.
pub fn write(report: &Report, top: usize, out: &mut dyn Write) -> io::Result<()> {
    let _ = (report, top, out);
    Ok(())
}
