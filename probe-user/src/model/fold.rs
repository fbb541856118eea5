//! Bounded memory under churn: a server that spawns tasks per request sees millions of them, so
//! tasks that ended and were freed are folded into their type's totals (counts, times,
//! histograms), except the few worth showing one by one: the most recent, the slowest polls,
//! the longest waits for a worker, and the panicked or cancelled-at-an-await. Live tasks are
//! always kept. Folding is decided by the event stream alone, so a replay folds the same tasks
//! at the same moments and the indices recorded with backtraces stay right.

use std::collections::HashSet;

use super::{Histogram, Task, TaskModel, TaskState};

/// The ended tasks of one type, added up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Folded {
    pub tasks: u64,
    pub completed: u64,
    pub cancelled: u64,
    pub panicked: u64,
    pub polls: u64,
    pub busy_ns: u64,
    pub scheduled_ns: u64,
    pub idle_ns: u64,
    pub wakes: u64,
    pub self_wakes: u64,
    pub max_poll_ns: u64,
    pub poll_times: Histogram,
    pub scheduled_times: Histogram,
}

impl Folded {
    fn add(&mut self, task: &Task) {
        self.tasks += 1;
        match task.state {
            TaskState::Cancelled => self.cancelled += 1,
            TaskState::Panicked => self.panicked += 1,
            // A task replaced after a lost free ended too, when is not known.
            _ => self.completed += 1,
        }
        self.polls += task.polls;
        self.busy_ns += task.busy_ns;
        self.scheduled_ns += task.scheduled_ns;
        self.idle_ns += task.idle_ns;
        self.wakes += task.wakes;
        self.self_wakes += task.self_wakes;
        self.max_poll_ns = self.max_poll_ns.max(task.max_poll_ns);
        self.poll_times.merge(&task.stats().poll_times);
        self.scheduled_times.merge(&task.stats().scheduled_times);
    }
}

/// Ended tasks kept one by one after a fold; a fold runs once twice as many have been retired.
pub const KEEP_ENDED: usize = 1_000;
const KEEP_RECENT: usize = 500;
const KEEP_SLOWEST: usize = 200;
const KEEP_LONGEST_WAIT: usize = 100;
const KEEP_NOTABLE: usize = 200;

impl TaskModel {
    /// Keep every task one by one (short runs, or exports that need every task's history).
    pub fn keep_every_task(&mut self) {
        self.keep_all = true;
    }

    /// The ended tasks folded so far, by task type.
    pub fn folded(&self) -> &std::collections::BTreeMap<Option<usize>, Folded> {
        &self.folded
    }

    /// How indices moved in the last fold (old index -> new index, None when folded), once.
    pub fn take_remap(&mut self) -> Option<Vec<Option<usize>>> {
        self.remap.take()
    }

    pub(super) fn fold_if_due(&mut self) {
        if !self.keep_all && self.retired >= 2 * KEEP_ENDED {
            self.fold();
        }
    }

    fn fold(&mut self) {
        let live: HashSet<usize> = self.live.values().copied().collect();
        let retired: Vec<usize> = (0..self.tasks.len())
            .filter(|index| !live.contains(index))
            .collect();
        let keep = self.worth_keeping(&retired);
        let mut remap = vec![None; self.tasks.len()];
        let old = std::mem::take(&mut self.tasks);
        for (index, task) in old.into_iter().enumerate() {
            if live.contains(&index) || keep.contains(&index) {
                remap[index] = Some(self.tasks.len());
                self.tasks.push(task);
            } else {
                let task_type = task
                    .task_type
                    .or_else(|| self.vtable_types.get(&task.vtable).copied());
                self.folded.entry(task_type).or_default().add(&task);
            }
        }
        self.renumber(&remap);
        self.retired = keep.len();
        self.remap = Some(remap);
    }

    /// Which of the `retired` tasks stay one by one.
    fn worth_keeping(&self, retired: &[usize]) -> HashSet<usize> {
        let mut keep = HashSet::new();
        let mut by = |key: &dyn Fn(&Task) -> u64, count: usize, only: &dyn Fn(&Task) -> bool| {
            let mut ranked: Vec<usize> = retired
                .iter()
                .copied()
                .filter(|&index| only(&self.tasks[index]))
                .collect();
            ranked
                .sort_unstable_by_key(|&index| std::cmp::Reverse((key(&self.tasks[index]), index)));
            keep.extend(ranked.into_iter().take(count));
        };
        let all = |_: &Task| true;
        by(
            &|task| task.ended_ns.unwrap_or(task.first_seen_ns),
            KEEP_RECENT,
            &all,
        );
        by(&|task| task.max_poll_ns, KEEP_SLOWEST, &all);
        by(
            &|task| task.stats().max_scheduled_ns,
            KEEP_LONGEST_WAIT,
            &all,
        );
        let notable = |task: &Task| task.state == TaskState::Panicked || task.cancelled_at_await;
        by(&|task| task.ended_ns.unwrap_or(0), KEEP_NOTABLE, &notable);
        keep
    }

    /// Points every stored index at where its task moved (or away, when it was folded).
    fn renumber(&mut self, remap: &[Option<usize>]) {
        let moved = |index: usize| remap.get(index).copied().flatten();
        for index in self.live.values_mut() {
            *index = moved(*index).expect("live tasks are kept");
        }
        for task in &mut self.tasks {
            task.parent = task.parent.and_then(moved);
            // Wakes from a folded task stay in the count, not in the list of who woke it.
            task.retain_wakers(|(waker, _)| match waker {
                Some(index) => moved(*index).map(|new| *index = new).is_some(),
                None => true,
            });
        }
        for polls in self.thread_polls.values_mut() {
            polls.retain_mut(|(index, _)| moved(*index).map(|new| *index = new).is_some());
        }
        self.newly_idle
            .retain_mut(|index| moved(*index).map(|new| *index = new).is_some());
        for worker in self.workers.values_mut() {
            worker.longest_poll_task = worker.longest_poll_task.and_then(moved);
        }
    }
}

#[cfg(test)]
mod tests {
    use probe_common::{EventKind, state};

    use super::*;
    use crate::model::TaskEvent;

    fn event(ts_ns: u64, kind: EventKind, header: u64, id: u64, value: u64) -> TaskEvent {
        TaskEvent {
            ts_ns,
            kind,
            header,
            task_id: Some(id),
            vtable: 0x5000,
            other_header: 0,
            value,
            site: 0,
            tid: 7,
            flags: 0,
            cpu: None,
        }
    }

    /// A task at `header` that is spawned, polled for `poll_ns` and freed.
    fn short_task(m: &mut TaskModel, ts: u64, header: u64, id: u64, poll_ns: u64) {
        m.apply(&event(ts, EventKind::Spawn, header, id, 0));
        m.apply(&event(ts + 1, EventKind::PollStart, header, id, 0));
        m.apply(&event(
            ts + 1 + poll_ns,
            EventKind::PollEnd,
            header,
            id,
            state::COMPLETE,
        ));
        m.apply(&event(ts + 2 + poll_ns, EventKind::Dealloc, header, id, 0));
    }

    #[test]
    fn ended_tasks_are_folded_into_their_type_keeping_the_notable_ones() {
        let mut m = TaskModel::new(vec![Some(0)]);
        let parked = 0x9000_0000;
        m.apply(&event(0, EventKind::PollStart, parked, 1, 0));
        m.apply(&event(1, EventKind::PollEnd, parked, 1, 0));
        let mut remaps = 0;
        for n in 0..10_000u64 {
            // One slow poll among them.
            let poll_ns = if n == 1234 { 5_000_000 } else { 10 };
            short_task(
                &mut m,
                100 + n * 100,
                0x1000 + (n % 64) * 0x100,
                n + 2,
                poll_ns,
            );
            remaps += usize::from(m.take_remap().is_some());
        }
        assert!(remaps >= 4, "{remaps}");
        assert!(m.tasks().len() <= 2 * KEEP_ENDED + 1, "{}", m.tasks().len());
        let folded = &m.folded()[&Some(0)];
        let kept_ended = m.tasks().iter().filter(|t| t.state.is_terminal()).count() as u64;
        assert_eq!(folded.tasks + kept_ended, 10_000);
        assert_eq!(folded.completed, folded.tasks);
        assert!(
            m.tasks().iter().any(|t| t.max_poll_ns == 5_000_000),
            "the slowest is kept"
        );
        assert_eq!(m.tasks()[0].header, parked, "live tasks stay, first");
        assert_eq!(m.idle_since(0), Some(1));
        assert_eq!(m.active(), 1);
        // The parked task is still followed at its new index.
        m.apply(&event(2_000_000, EventKind::WakeByVal, parked, 1, 0));
        assert_eq!(m.tasks()[0].state, TaskState::Scheduled);
    }

    #[test]
    fn nothing_is_folded_when_every_task_is_kept() {
        let mut m = TaskModel::new(vec![Some(0)]);
        m.keep_every_task();
        for n in 0..3_000u64 {
            short_task(&mut m, n * 100, 0x1000 + n * 0x100, n + 1, 10);
        }
        assert_eq!(m.tasks().len(), 3_000);
        assert!(m.folded().is_empty());
    }
}
