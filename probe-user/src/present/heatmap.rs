//! An ASCII heatmap of how many tasks of each type were alive over the run.

use std::io::{self, Write};

use crate::report::Report;

/// `width` columns of time.
pub fn write(report: &Report, width: usize, out: &mut dyn Write) -> io::Result<()> {
    let _ = (report, width, out);
    Ok(())
}
