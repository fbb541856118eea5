//! The task tree: who spawned whom.

use std::{
    collections::HashMap,
    io::{self, Write},
};

use crate::readable;
use crate::report::{self, Mode, Report};

/// Leaf siblings of one name and state are drawn as one `N ×` line from this many on: a server's
/// thousand finished connections say one thing, not a thousand.
const GROUP_AT: usize = 3;

/// At most `limit` lines (0 for all).
pub fn write(report: &Report, limit: usize, out: &mut dyn Write) -> io::Result<()> {
    let Some(forest) = Forest::new(report) else {
        return Ok(());
    };
    writeln!(out, "\n  task tree (who spawned whom):")?;
    forest.draw(limit, "    ", out)
}

/// The tree without its heading, each line after `indent`, for reports that title it themselves;
/// nothing when no task's parent is in the report (a flat list of roots is the task table's job).
pub(crate) fn draw(
    report: &Report,
    limit: usize,
    indent: &str,
    out: &mut dyn Write,
) -> io::Result<()> {
    match Forest::new(report) {
        Some(forest) => forest.draw(limit, indent, out),
        None => Ok(()),
    }
}

/// One line of the tree: a task, or identical leaf siblings drawn once.
enum Item {
    Task(usize),
    Group(Vec<usize>),
}

/// The report's tasks as a forest: each parent's children in spawn order.
struct Forest<'a> {
    report: &'a Report,
    roots: Vec<usize>,
    children: Vec<Vec<usize>>,
}

impl<'a> Forest<'a> {
    /// `None` when no task's parent is in the report.
    fn new(report: &'a Report) -> Option<Self> {
        let tasks = &report.tasks;
        let mut by_id = HashMap::new();
        for (index, task) in tasks.iter().enumerate() {
            if let Some(id) = task.id {
                by_id.entry(id).or_insert(index);
            }
        }
        let parent = |index: usize| {
            tasks[index]
                .parent
                .and_then(|parent| by_id.get(&parent).copied())
                .filter(|&parent| parent != index)
        };
        // Spawn order reads like the program ran; tasks that predate the probe come first.
        let mut order: Vec<usize> = (0..tasks.len()).collect();
        order.sort_by_key(|&index| (tasks[index].spawned_ns, tasks[index].id, index));
        let mut spawned: Vec<Vec<usize>> = vec![Vec::new(); tasks.len()];
        let mut roots = Vec::new();
        for &index in &order {
            match parent(index) {
                Some(parent) => spawned[parent].push(index),
                None => roots.push(index),
            }
        }
        if roots.len() == tasks.len() {
            return None;
        }
        // Parents come from reused or misread ids too: a cycle would hide its tasks from every
        // root, so each task is adopted once and any left over starts a tree of its own.
        let mut children = vec![Vec::new(); tasks.len()];
        let mut adopted = vec![false; tasks.len()];
        for &root in &roots {
            adopt(root, &spawned, &mut adopted, &mut children);
        }
        for &index in &order {
            if !adopted[index] {
                adopt(index, &spawned, &mut adopted, &mut children);
                roots.push(index);
            }
        }
        Some(Self {
            report,
            roots,
            children,
        })
    }

    /// Siblings as lines, grouping leaves of one name and state where there are many.
    fn items(&self, siblings: &[usize]) -> Vec<Item> {
        let tasks = &self.report.tasks;
        let key = |index: usize| (tasks[index].name.as_str(), tasks[index].state.as_str());
        let is_leaf = |index: usize| self.children[index].is_empty();
        let mut leaves: HashMap<(&str, &str), usize> = HashMap::new();
        for &index in siblings.iter().filter(|&&index| is_leaf(index)) {
            *leaves.entry(key(index)).or_default() += 1;
        }
        let mut items = Vec::new();
        let mut groups: HashMap<(&str, &str), usize> = HashMap::new();
        for &index in siblings {
            if !is_leaf(index) || leaves[&key(index)] < GROUP_AT {
                items.push(Item::Task(index));
                continue;
            }
            match groups.get(&key(index)) {
                Some(&at) => {
                    if let Item::Group(members) = &mut items[at] {
                        members.push(index);
                    }
                }
                None => {
                    groups.insert(key(index), items.len());
                    items.push(Item::Group(vec![index]));
                }
            }
        }
        items
    }

    fn line(&self, item: &Item) -> String {
        let tasks = &self.report.tasks;
        let timed = self.report.summary.mode == Mode::Probe;
        match item {
            Item::Task(index) => {
                let task = &tasks[*index];
                let mut line = format!(
                    "task {} {} [{}]",
                    report::id_text(task.id),
                    task.name,
                    task.state.as_str()
                );
                if timed {
                    line.push_str(&format!(" busy {}", readable::duration(task.busy_ns)));
                }
                line
            }
            Item::Group(members) => {
                let first = &tasks[members[0]];
                let mut line = format!(
                    "{} × {} [{}]",
                    members.len(),
                    first.name,
                    first.state.as_str()
                );
                if timed {
                    let busy = members.iter().map(|&index| tasks[index].busy_ns).sum();
                    line.push_str(&format!(" busy {} in all", readable::duration(busy)));
                }
                line
            }
        }
    }

    /// Depth first without recursion: a chain of thousands of spawns must not overflow the
    /// stack.
    fn draw(&self, limit: usize, indent: &str, out: &mut dyn Write) -> io::Result<()> {
        // (item, its line's prefix, its children's prefix), next to draw on top.
        let mut stack: Vec<(Item, String, String)> = self
            .items(&self.roots)
            .into_iter()
            .rev()
            .map(|item| (item, String::new(), String::new()))
            .collect();
        let (mut lines, mut drawn) = (0, 0);
        while let Some((item, prefix, nested)) = stack.pop() {
            if limit > 0 && lines == limit {
                writeln!(
                    out,
                    "{indent}… {} more tasks",
                    self.report.tasks.len() - drawn
                )?;
                break;
            }
            writeln!(out, "{indent}{prefix}{}", self.line(&item))?;
            lines += 1;
            let index = match item {
                Item::Task(index) => index,
                Item::Group(members) => {
                    drawn += members.len();
                    continue;
                }
            };
            drawn += 1;
            let items = self.items(&self.children[index]);
            let count = items.len();
            for (at, child) in items.into_iter().enumerate().rev() {
                let (branch, rest) = if at + 1 == count {
                    ("└─ ", "   ")
                } else {
                    ("├─ ", "│  ")
                };
                stack.push((
                    child,
                    format!("{nested}{branch}"),
                    format!("{nested}{rest}"),
                ));
            }
        }
        Ok(())
    }
}

/// Gives `root` and every task under it a place in `children`, each task once.
fn adopt(root: usize, spawned: &[Vec<usize>], adopted: &mut [bool], children: &mut [Vec<usize>]) {
    adopted[root] = true;
    let mut pending = vec![root];
    while let Some(parent) = pending.pop() {
        for &child in &spawned[parent] {
            if !adopted[child] {
                adopted[child] = true;
                children[parent].push(child);
                pending.push(child);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{model::TaskState, present::markdown::fixtures};

    fn tree(report: &Report, limit: usize) -> String {
        let mut out = Vec::new();
        write(report, limit, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn children_are_indented_under_their_parent_and_identical_leaves_grouped() {
        let text = tree(&fixtures::report(), 0);
        println!("{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "  task tree (who spawned whom):");
        assert!(lines[2].starts_with("    task 1 inspect_demo::server [idle] busy "));
        // Spawn order: handler 2 and the first worker at once, then handler 4, then handler 3.
        assert!(lines[3].starts_with("    ├─ task 2 inspect_demo::handler [completed]"));
        assert!(
            lines[4].starts_with("    ├─ 500 × inspect_demo::worker [completed] busy 5.0ms in all")
        );
        assert!(lines[5].starts_with("    ├─ task 4 inspect_demo::handler [idle]"));
        assert!(lines[6].starts_with("    │  └─ task 10 inspect_demo::flush::{closure#0} [idle]"));
        assert!(lines[7].starts_with("    └─ task 3 inspect_demo::handler [completed]"));
        // Top-level tasks without children appear too, in spawn order.
        assert!(lines[8].starts_with("    task 7 inspect_demo::transfer [idle]"));
        assert!(lines[9].starts_with("    task 8 inspect_demo::transfer [idle]"));
        assert_eq!(lines.len(), 10, "every task is drawn, none twice");
        assert!(
            !text.contains("task 100 "),
            "grouped workers are not listed one by one"
        );
    }

    #[test]
    fn the_limit_cuts_lines_and_counts_the_tasks_left_out() {
        let text = tree(&fixtures::report(), 3);
        let lines: Vec<&str> = text.lines().skip(2).collect();
        assert_eq!(lines.len(), 4, "three lines, then the cut: {text}");
        assert!(lines[2].contains("500 × inspect_demo::worker"));
        // Shown: server, handler 2 and 500 workers; left: handlers 3 and 4, flush, 2 transfers.
        assert_eq!(lines[3], "    … 5 more tasks");
        assert!(!tree(&fixtures::report(), 9).contains("more tasks"));
    }

    #[test]
    fn nothing_without_parents() {
        let mut report = fixtures::report();
        for task in &mut report.tasks {
            task.parent = None;
        }
        assert_eq!(tree(&report, 0), "");
    }

    #[test]
    fn a_parent_cycle_still_draws_every_task_once() {
        let mut report = fixtures::empty(1_000);
        report.tasks = vec![
            fixtures::task(1, "app::a", TaskState::Idle, Some(2), None, None),
            fixtures::task(2, "app::b", TaskState::Idle, Some(1), None, None),
            fixtures::task(3, "app::c", TaskState::Idle, Some(2), None, None),
        ];
        let text = tree(&report, 0);
        assert_eq!(text.lines().count(), 5, "{text}");
        for id in 1..=3 {
            assert_eq!(text.matches(&format!("task {id} ")).count(), 1, "{text}");
        }
    }

    #[test]
    fn deep_chains_do_not_overflow_the_stack() {
        let mut report = fixtures::empty(1_000);
        report.tasks = (1..=20_000)
            .map(|id| {
                let parent = (id > 1).then(|| id - 1);
                fixtures::task(id, "app::link", TaskState::Completed, parent, None, None)
            })
            .collect();
        let text = tree(&report, 40);
        assert!(text.ends_with("    … 19960 more tasks\n"), "{text}");
    }
}
