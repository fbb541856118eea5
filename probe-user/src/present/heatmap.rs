//! An ASCII heatmap of how many tasks of each type were alive over the run.

use std::{
    collections::HashMap,
    io::{self, Write},
};

use crate::readable;
use crate::report::{Mode, Report, TaskRow};

/// Columns of time: about what a terminal or a rendered code block shows without wrapping.
pub const WIDTH: usize = 60;
/// Type rows at most, `(other)` included: beyond a dozen the map stops fitting a screen.
const ROWS: usize = 12;
/// Shades from none to the row's peak.
const RAMP: [char; 5] = [' ', '░', '▒', '▓', '█'];
/// Names longer than this are cut, so that the cells start in the same column on any terminal.
const NAME_WIDTH: usize = 32;

/// `width` columns of time.
pub fn write(report: &Report, width: usize, out: &mut dyn Write) -> io::Result<()> {
    if !applies(report, width) {
        return Ok(());
    }
    writeln!(
        out,
        "\n  tasks alive over time, by type (each row shaded against its own peak):"
    )?;
    draw(report, width, "    ", out)
}

/// The map without its heading, each line after `indent`; nothing for a snapshot (it has no
/// history), an instant, or no tasks.
pub(crate) fn draw(
    report: &Report,
    width: usize,
    indent: &str,
    out: &mut dyn Write,
) -> io::Result<()> {
    if !applies(report, width) {
        return Ok(());
    }
    let duration_ns = report.summary.duration_ns;
    let rows = rows(report, width);
    let name_width = rows
        .iter()
        .map(|row| row.name.chars().count())
        .max()
        .unwrap_or(0);
    for row in &rows {
        let peak = row.alive.iter().copied().max().unwrap_or(0);
        let cells: String = row
            .alive
            .iter()
            .map(|&alive| RAMP[(alive * (RAMP.len() - 1)).div_ceil(peak.max(1))])
            .collect();
        writeln!(out, "{indent}{:<name_width$} │{cells}│ {peak}", row.name)?;
    }
    let end = readable::duration(duration_ns);
    let axis = match width.checked_sub(end.chars().count() + 1) {
        Some(gap) if gap > 0 => format!("0{:>gap$}{end}", ""),
        _ => format!("0 … {end}"),
    };
    writeln!(out, "{indent}{:name_width$}  {axis}", "")?;
    writeln!(
        out,
        "{indent}█ > 3/4 of the row's peak (the number after the row), ▓ > 1/2, ▒ > 1/4, ░ less, blank none;"
    )?;
    writeln!(
        out,
        "{indent}a cell counts the tasks alive at any time in its {} of the run",
        readable::duration(duration_ns / width as u64)
    )
}

fn applies(report: &Report, width: usize) -> bool {
    report.summary.mode == Mode::Probe
        && report.summary.duration_ns > 0
        && !report.tasks.is_empty()
        && width > 0
}

/// When a task was alive, in nanoseconds after the probe attached, within the run: from its
/// spawn (the start, if it predates the probe) to its end (the end, if it still lives).
pub(crate) fn lifetime(task: &TaskRow, duration_ns: u64) -> (u64, u64) {
    let start = task.spawned_ns.unwrap_or(0).min(duration_ns);
    let end = task
        .ended_ns
        .unwrap_or(duration_ns)
        .clamp(start, duration_ns);
    (start, end)
}

struct Row {
    name: String,
    /// Tasks alive per column.
    alive: Vec<usize>,
}

/// The most numerous types first (then by name, so that equal counts keep their order), the
/// rest as `(other)`, then `total`.
fn rows(report: &Report, width: usize) -> Vec<Row> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for task in &report.tasks {
        *counts.entry(task.name.as_str()).or_default() += 1;
    }
    let mut types: Vec<(&str, usize)> = counts.into_iter().collect();
    types.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let named = if types.len() > ROWS {
        ROWS - 1
    } else {
        types.len()
    };
    let row_of: HashMap<&str, usize> = types
        .iter()
        .enumerate()
        .map(|(at, (name, _))| (*name, at.min(named)))
        .collect();
    let mut names: Vec<String> = types[..named]
        .iter()
        .map(|(name, _)| shorten(name))
        .collect();
    if named < types.len() {
        names.push("(other)".to_owned());
    }
    names.push("total".to_owned());
    let total = names.len() - 1;

    // Where each row's count goes up and down, then a running sum per column.
    let mut steps = vec![vec![0i64; width + 1]; names.len()];
    for task in &report.tasks {
        let (first, last) = columns(lifetime(task, report.summary.duration_ns), report, width);
        for row in [row_of[task.name.as_str()], total] {
            steps[row][first] += 1;
            steps[row][last + 1] -= 1;
        }
    }
    names
        .into_iter()
        .zip(steps)
        .map(|(name, steps)| Row {
            name,
            alive: steps[..width]
                .iter()
                .scan(0i64, |alive, step| {
                    *alive += step;
                    Some(*alive as usize)
                })
                .collect(),
        })
        .collect()
}

/// The first and last columns a lifetime touches; an instant still touches its own.
fn columns((start, end): (u64, u64), report: &Report, width: usize) -> (usize, usize) {
    let duration = u128::from(report.summary.duration_ns);
    let cells = width as u128;
    let first = ((u128::from(start) * cells / duration) as usize).min(width - 1);
    let last = ((u128::from(end) * cells).div_ceil(duration) as usize)
        .saturating_sub(1)
        .clamp(first, width - 1);
    (first, last)
}

fn shorten(name: &str) -> String {
    if name.chars().count() <= NAME_WIDTH {
        return name.to_owned();
    }
    let kept: String = name.chars().take(NAME_WIDTH - 1).collect();
    format!("{kept}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{model::TaskState, present::markdown::fixtures, report::Mode};

    fn heatmap(report: &Report, width: usize) -> String {
        let mut out = Vec::new();
        write(report, width, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Each map row's name and cells.
    fn rows(text: &str) -> Vec<(String, String)> {
        text.lines()
            .filter_map(|line| {
                let (name, rest) = line.split_once(" │")?;
                let (cells, _) = rest.rsplit_once('│')?;
                Some((name.trim().to_owned(), cells.to_owned()))
            })
            .collect()
    }

    #[test]
    fn one_row_per_type_and_a_total_each_as_wide_as_asked() {
        let text = heatmap(&fixtures::report(), 40);
        println!("{text}");
        let rows = rows(&text);
        let names: Vec<&str> = rows.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            [
                "inspect_demo::worker",
                "inspect_demo::handler",
                "inspect_demo::transfer",
                "inspect_demo::flush::{closure#0}",
                "inspect_demo::server",
                "total"
            ]
        );
        for (name, cells) in &rows {
            assert_eq!(cells.chars().count(), 40, "{name}: {cells:?}");
        }
        // The server lived through the whole run: its row is full.
        assert_eq!(rows[4].1, "█".repeat(40));
        // The axis runs under the cells, from 0 to the duration.
        // (Everything before the first cell is ASCII: byte and character positions agree.)
        let cells_start = text.lines().nth(2).unwrap().find('│').unwrap() + 1;
        let axis = text.lines().nth(8).unwrap();
        assert_eq!(axis.find('0'), Some(cells_start), "{text}");
        assert!(axis.ends_with(" 2.00s"), "{text}");
        assert_eq!(axis.chars().count(), cells_start + 40);
        assert!(text.contains("█ > 3/4 of the row's peak"));
    }

    #[test]
    fn a_task_alive_half_the_run_shades_half_its_row() {
        let mut report = fixtures::empty(1_000_000_000);
        report.tasks = vec![
            fixtures::task(1, "app::always", TaskState::Idle, None, None, None),
            fixtures::task(
                2,
                "app::early",
                TaskState::Completed,
                None,
                Some(0),
                Some(500_000_000),
            ),
        ];
        let rows = rows(&heatmap(&report, 10));
        assert_eq!(rows[0], ("app::always".to_owned(), "█".repeat(10)));
        assert_eq!(
            rows[1],
            (
                "app::early".to_owned(),
                format!("{}{}", "█".repeat(5), " ".repeat(5))
            )
        );
        // Two alive in the first half, one in the second: the total shades the second lighter.
        assert_eq!(
            rows[2],
            (
                "total".to_owned(),
                format!("{}{}", "█".repeat(5), "▒".repeat(5))
            )
        );
    }

    #[test]
    fn types_beyond_a_dozen_are_merged_into_other() {
        let mut report = fixtures::empty(1_000);
        report.tasks = (0..20)
            .map(|id| {
                fixtures::task(
                    id,
                    &format!("app::t{id:02}"),
                    TaskState::Idle,
                    None,
                    None,
                    None,
                )
            })
            .collect();
        let rows = rows(&heatmap(&report, 8));
        assert_eq!(rows.len(), ROWS + 1, "12 type rows and the total");
        assert_eq!(rows[ROWS - 1].0, "(other)");
        assert_eq!(rows[ROWS].0, "total");
    }

    #[test]
    fn nothing_for_snapshots_instants_or_no_tasks() {
        let mut dump = fixtures::report();
        dump.summary.mode = Mode::Dump;
        assert_eq!(heatmap(&dump, 40), "");
        let mut instant = fixtures::report();
        instant.summary.duration_ns = 0;
        assert_eq!(heatmap(&instant, 40), "");
        assert_eq!(heatmap(&fixtures::empty(1_000), 40), "");
    }
}
