//! `--mermaid FILE`: a Mermaid Gantt chart of the task timeline.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    io::{self, Write},
};

use crate::{
    model::TaskState,
    present::heatmap::lifetime,
    report::{Report, TaskRow},
};

const NS_PER_MS: u64 = 1_000_000;

/// A task and its lifetime within the run.
type Bar<'a> = (&'a TaskRow, (u64, u64));

/// The `top` longest-lived tasks (0 for all), grouped by parent.
pub fn write(report: &Report, top: usize, out: &mut dyn Write) -> io::Result<()> {
    let duration_ns = report.summary.duration_ns;
    let mut chosen: Vec<Bar<'_>> = report
        .tasks
        .iter()
        .map(|task| (task, lifetime(task, duration_ns)))
        .collect();
    // Longest first, then by spawn and id: the same report always gives the same chart.
    chosen.sort_by_key(|&(task, (start, end))| (std::cmp::Reverse(end - start), start, task.id));
    if top > 0 {
        chosen.truncate(top);
    }
    // Top-level (no parent) sorts first, then parents by id.
    let mut sections: BTreeMap<Option<u64>, Vec<Bar<'_>>> = BTreeMap::new();
    for (task, span) in chosen {
        sections.entry(task.parent).or_default().push((task, span));
    }
    let names: HashMap<u64, &str> = report
        .tasks
        .iter()
        .filter_map(|task| Some((task.id?, task.name.as_str())))
        .collect();
    let flagged: HashSet<u64> = report
        .warnings
        .iter()
        .filter_map(|warning| warning.task)
        .chain(report.stuck.iter().filter_map(|stuck| stuck.id))
        // A deadlocked task is stuck however short the run was.
        .chain(
            report
                .deadlocks
                .iter()
                .flat_map(|deadlock| deadlock.tasks.iter().flatten().copied()),
        )
        .collect();

    writeln!(out, "gantt")?;
    writeln!(
        out,
        "    title {}",
        sanitise(&format!(
            "async-inspect of {} (pid {})",
            report.summary.target, report.summary.pid
        ))
    )?;
    // Times are milliseconds since the probe attached, drawn as dates from the epoch. The axis
    // shows only the clock fields that move over a run this long; Mermaid prints them in the
    // viewer's time zone, which shifts hours (and, in a few zones, minutes) but never seconds.
    writeln!(out, "    dateFormat x")?;
    let axis = match duration_ns / NS_PER_MS {
        0..60_000 => "%S.%L",
        60_000..3_600_000 => "%M:%S",
        _ => "%H:%M:%S",
    };
    writeln!(out, "    axisFormat {axis}")?;
    // Today is decades after 1970: its marker would stretch the axis to now.
    writeln!(out, "    todayMarker off")?;
    for (parent, mut bars) in sections {
        let title = match parent {
            None => "top-level".to_owned(),
            Some(parent) => match names.get(&parent) {
                Some(name) => format!("spawned by task {parent} {name}"),
                None => format!("spawned by task {parent}"),
            },
        };
        writeln!(out, "    section {}", sanitise(&title))?;
        bars.sort_by_key(|&(task, (start, _))| (start, task.id));
        for (task, (start, end)) in bars {
            let mut tags = Vec::new();
            let critical = task.id.is_some_and(|id| flagged.contains(&id))
                || task.state == TaskState::Panicked;
            if critical {
                tags.push("crit");
            }
            if task.state == TaskState::Completed {
                tags.push("done");
            } else if !task.state.is_terminal() {
                tags.push("active");
            }
            let tags: String = tags.iter().map(|tag| format!("{tag}, ")).collect();
            writeln!(
                out,
                "    {} :{tags}{}, {}",
                sanitise(&format!(
                    "{} {}",
                    crate::report::id_text(task.id),
                    task.name
                )),
                start / NS_PER_MS,
                end.div_ceil(NS_PER_MS)
            )?;
        }
    }
    Ok(())
}

/// Mermaid reads `:` as the end of a label, `#` as the start of an entity and `;` as the end of a
/// statement: Rust paths keep their look with `.` for `::`.
fn sanitise(label: &str) -> String {
    label
        .replace("::", ".")
        .chars()
        .map(|c| match c {
            ':' => '.',
            '#' => ' ',
            ';' => ',',
            '\n' | '\r' => ' ',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::present::markdown::fixtures;

    fn chart(report: &Report, top: usize) -> String {
        let mut out = Vec::new();
        write(report, top, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Each bar's label, tags, start and end (milliseconds).
    fn bars(text: &str) -> Vec<(String, Vec<String>, u64, u64)> {
        text.lines()
            .filter(|line| line.starts_with("    ") && line.contains(" :"))
            .map(|line| {
                let (label, rest) = line.trim().split_once(" :").unwrap();
                let mut fields: Vec<String> = rest.split(", ").map(str::to_owned).collect();
                let end = fields.pop().unwrap().parse().unwrap();
                let start = fields.pop().unwrap().parse().unwrap();
                (label.to_owned(), fields, start, end)
            })
            .collect()
    }

    #[test]
    fn a_gantt_chart_with_a_section_per_parent() {
        let text = chart(&fixtures::report(), 0);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "gantt");
        assert!(lines.contains(&"    dateFormat x"));
        assert!(lines.contains(&"    axisFormat %S.%L"));
        let sections: Vec<&str> = lines
            .iter()
            .filter_map(|line| line.strip_prefix("    section "))
            .collect();
        assert_eq!(
            sections,
            [
                "top-level",
                "spawned by task 1 inspect_demo.server",
                "spawned by task 4 inspect_demo.handler"
            ]
        );
        let bars = bars(&text);
        assert_eq!(bars.len(), fixtures::report().tasks.len());
        for (label, _, start, end) in &bars {
            assert!(start <= end && *end <= 2_000, "{label}: {start}..{end}");
            assert!(!label.contains([':', '#', ';']), "{label}");
        }
        let bar = |label: &str| bars.iter().find(|bar| bar.0 == label).unwrap();
        // Existed before the probe and still alive: the whole run, active.
        let server = bar("1 inspect_demo.server");
        assert_eq!(
            (&server.1[..], server.2, server.3),
            (&["active".to_owned()][..], 0, 2_000)
        );
        // Stuck with a warning, or deadlocked: critical.
        assert_eq!(bar("4 inspect_demo.handler").1, ["crit", "active"]);
        assert_eq!(bar("7 inspect_demo.transfer").1, ["crit", "active"]);
        let handler = bar("2 inspect_demo.handler");
        assert_eq!(
            (&handler.1[..], handler.2, handler.3),
            (&["done".to_owned()][..], 0, 1_000)
        );
        // A name Mermaid would misread (`::`, `#`).
        assert!(
            text.contains("\n    10 inspect_demo.flush.{closure 0} :active, 300, 2000\n"),
            "{text}"
        );
    }

    #[test]
    fn labels_lose_what_mermaid_would_misread() {
        assert_eq!(
            sanitise("<app::Pool as Run>::run::{closure#1}; x: y\nz"),
            "<app.Pool as Run>.run.{closure 1}, x. y z"
        );
    }

    #[test]
    fn the_axis_shows_the_clock_fields_a_run_this_long_moves() {
        let mut report = fixtures::report();
        report.summary.duration_ns = 90 * 1_000 * NS_PER_MS;
        assert!(chart(&report, 1).contains("\n    axisFormat %M:%S\n"));
        report.summary.duration_ns = 2 * 3_600_000 * NS_PER_MS;
        assert!(chart(&report, 1).contains("\n    axisFormat %H:%M:%S\n"));
    }

    #[test]
    fn top_keeps_the_longest_lived_tasks() {
        let text = chart(&fixtures::report(), 6);
        println!("{text}");
        let labels: Vec<String> = bars(&text).into_iter().map(|bar| bar.0).collect();
        // The server and the deadlocked transfers lived the whole run, handler 4 from 200ms,
        // the flush from 300ms, then handlers 2 and 3 a second each (2 spawned first).
        assert_eq!(labels.len(), 6);
        for label in [
            "1 inspect_demo.server",
            "7 inspect_demo.transfer",
            "4 inspect_demo.handler",
            "2 inspect_demo.handler",
        ] {
            assert!(labels.contains(&label.to_owned()), "{labels:?}");
        }
        assert!(!text.contains("worker"), "{text}");
        assert!(!labels.contains(&"3 inspect_demo.handler".to_owned()));
        assert_eq!(text, chart(&fixtures::report(), 6), "deterministic");
    }
}
