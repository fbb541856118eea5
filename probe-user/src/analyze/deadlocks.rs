//! The wait-for graph: task A waits for B when A's leaf future waits on a lock whose guard B
//! keeps across an await, or on B's `JoinHandle`. A cycle is a deadlock; a wait on a lock held
//! by a task that is itself waiting is reported as a chain.

use std::collections::{BTreeMap, BTreeSet};

use super::{backtrace::Resource, stacks::Stacks};
use crate::model::{TaskModel, TaskState};

/// Tasks (indices into the model) that wait for each other in a cycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deadlock {
    /// In cycle order: each waits for the next, the last for the first.
    pub tasks: Vec<usize>,
    /// What each task in `tasks` waits on.
    pub waits_on: Vec<Resource>,
}

/// A task waiting on a lock held by a task that is itself waiting (not a cycle).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub waiter: usize,
    pub resource: Resource,
    pub holder: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WaitGraph {
    /// waiter -> (what it waits on, the tasks that hold it).
    edges: BTreeMap<usize, (Resource, Vec<usize>)>,
}

impl WaitGraph {
    /// Builds the graph from the backtraces of the model's live tasks.
    pub fn build(model: &TaskModel, stacks: &Stacks) -> Self {
        let live: Vec<usize> = (0..model.tasks().len())
            .filter(|&index| !model.tasks()[index].state.is_terminal())
            .collect();
        let mut holders: BTreeMap<u64, BTreeSet<usize>> = BTreeMap::new();
        let mut by_id: BTreeMap<u64, usize> = BTreeMap::new();
        for &index in &live {
            if let Some(id) = model.tasks()[index].id {
                by_id.insert(id, index);
            }
            let Some(stack) = stacks.get(index) else {
                continue;
            };
            for resource in stack.frames.iter().flat_map(|frame| &frame.holds) {
                if let Some(address) = resource.lock_address() {
                    holders.entry(address).or_default().insert(index);
                }
            }
        }
        let mut edges = BTreeMap::new();
        for &index in &live {
            let Some(resource) = stacks
                .get(index)
                .and_then(|stack| stack.frames.last())
                .and_then(|frame| frame.waits_on)
            else {
                continue;
            };
            let blockers: Vec<usize> = match resource {
                Resource::Task { id } => by_id.get(&id).copied().into_iter().collect(),
                lock => lock
                    .lock_address()
                    .and_then(|address| holders.get(&address))
                    .map(|set| set.iter().copied().collect())
                    .unwrap_or_default(),
            };
            if !blockers.is_empty() {
                edges.insert(index, (resource, blockers));
            }
        }
        Self { edges }
    }

    /// Every cycle (strongly connected set of waiting tasks, or a task waiting on itself).
    pub fn deadlocks(&self) -> Vec<Deadlock> {
        let mut found = Vec::new();
        let mut seen_cycles: BTreeSet<Vec<usize>> = BTreeSet::new();
        for &start in self.edges.keys() {
            // Follow first blockers from `start`; a repeat closes a cycle.
            let mut path = vec![start];
            let mut current = start;
            while let Some((_, blockers)) = self.edges.get(&current) {
                let next = blockers[0];
                if let Some(at) = path.iter().position(|&task| task == next) {
                    let mut cycle = path[at..].to_vec();
                    let mut key = cycle.clone();
                    key.sort_unstable();
                    if seen_cycles.insert(key) {
                        // Start the cycle at its smallest task, for stable output.
                        let smallest = (0..cycle.len()).min_by_key(|&i| cycle[i]).unwrap_or(0);
                        cycle.rotate_left(smallest);
                        let waits_on = cycle.iter().map(|task| self.edges[task].0).collect();
                        found.push(Deadlock {
                            tasks: cycle,
                            waits_on,
                        });
                    }
                    break;
                }
                path.push(next);
                current = next;
            }
        }
        found
    }

    /// Waits on a lock whose holder is itself waiting, outside any cycle.
    pub fn chains(&self, model: &TaskModel, deadlocks: &[Deadlock]) -> Vec<Chain> {
        let in_cycle: BTreeSet<usize> = deadlocks.iter().flat_map(|d| d.tasks.clone()).collect();
        let mut chains = Vec::new();
        for (&waiter, (resource, blockers)) in &self.edges {
            if in_cycle.contains(&waiter) || resource.lock_address().is_none() {
                continue;
            }
            for &holder in blockers {
                if holder != waiter && model.tasks()[holder].state == TaskState::Idle {
                    chains.push(Chain {
                        waiter,
                        resource: *resource,
                        holder,
                    });
                }
            }
        }
        chains
    }
}
