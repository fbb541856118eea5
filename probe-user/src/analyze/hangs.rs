//! Stuck tasks: alive, idle, and not woken for longer than the user's threshold.

use crate::model::{Task, TaskModel};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stuck {
    /// Index into the model's tasks.
    pub task: usize,
    /// How long it has been idle at `now`.
    pub idle_ns: u64,
}

/// Tasks idle for longer than `threshold_ns` at `now_ns`, longest first, among those `include`
/// accepts.
pub fn stuck_tasks(
    model: &TaskModel,
    now_ns: u64,
    threshold_ns: u64,
    include: impl Fn(&Task) -> bool,
) -> Vec<Stuck> {
    let mut stuck: Vec<Stuck> = (0..model.tasks().len())
        .filter(|&index| include(&model.tasks()[index]))
        .filter_map(|index| {
            let idle_ns = now_ns.saturating_sub(model.idle_since(index)?);
            (idle_ns > threshold_ns).then_some(Stuck {
                task: index,
                idle_ns,
            })
        })
        .collect();
    stuck.sort_by(|a, b| b.idle_ns.cmp(&a.idle_ns).then(a.task.cmp(&b.task)));
    stuck
}

#[cfg(test)]
mod tests {
    use probe_common::EventKind;

    use super::*;
    use crate::model::TaskEvent;

    fn poll(model: &mut TaskModel, header: u64, start: u64, end: u64) {
        let event = |ts_ns, kind| TaskEvent {
            ts_ns,
            kind,
            header,
            task_id: Some(header),
            vtable: 0,
            other_header: 0,
            value: 0,
            site: 0,
            tid: 1,
            flags: 0,
            cpu: None,
        };
        model.apply(&event(start, EventKind::PollStart));
        model.apply(&event(end, EventKind::PollEnd));
    }

    #[test]
    fn the_longest_idle_come_first_and_short_waits_are_not_stuck() {
        let mut model = TaskModel::new(vec![None]);
        poll(&mut model, 1, 0, 10);
        poll(&mut model, 2, 0, 5_000);
        poll(&mut model, 3, 0, 9_000);
        let stuck = stuck_tasks(&model, 10_000, 2_000, |_| true);
        assert_eq!(
            stuck,
            vec![
                Stuck {
                    task: 0,
                    idle_ns: 9_990
                },
                Stuck {
                    task: 1,
                    idle_ns: 5_000
                }
            ]
        );
        assert!(stuck_tasks(&model, 10_000, 2_000, |task| task.header != 1).len() == 1);
    }
}
