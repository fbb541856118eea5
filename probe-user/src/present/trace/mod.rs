//! `--trace FILE`: the run as a Chrome trace event JSON timeline that opens in Perfetto UI.
//!
//! Two processes. "threads" has a track per OS thread with a slice per poll, named after the
//! task and where that poll left it parked; polls driven from inside another poll (a runtime
//! inside a task) are its children. "tasks" has a track per task with its states back to back,
//! so scheduling delays and waits read at a glance. Arrows join a wake made from inside a poll
//! to the woken task's next poll; the report's warnings are markers on their task's track.
//!
//! A run can have millions of polls: slices are kept as small fixed-size records and named only
//! when written, and the JSON is streamed out event by event.

pub(crate) mod history;
#[cfg(test)]
pub(crate) mod script;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    io::{self, Write},
};

use serde::Serialize;

use self::history::{Closed, Follower, History, Poll, PollId, StackId};
use crate::readable;
use crate::{
    analyze::stacks::TaskStack,
    model::{TaskEvent, TaskModel, TaskState},
    report::{self, Report},
    resolve::Catalogue,
    session::Observer,
};

/// The trace's process of thread tracks.
const THREADS: u32 = 1;
/// The trace's process of task tracks.
const TASKS: u32 = 2;

pub struct Timeline {
    started_ns: u64,
    history: History,
    record: Record,
}

impl Timeline {
    /// `started_ns`: when the probe attached (time zero on the timeline).
    pub fn new(started_ns: u64) -> Self {
        Self {
            started_ns,
            history: History::default(),
            record: Record::default(),
        }
    }

    pub fn write(
        &self,
        report: &Report,
        model: &TaskModel,
        catalogue: &Catalogue,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        let end = model
            .last_ns
            .max(self.started_ns + report.summary.duration_ns);
        let mut tail = Tail::default();
        self.history.finish(end, &mut tail);
        let drawing = Drawing {
            timeline: self,
            model,
            catalogue,
            // Worker loops span their thread's life and contain every poll on it: runtime
            // plumbing, left out as the report leaves them out.
            shown: model
                .tasks()
                .iter()
                .map(|task| !report::is_runtime_worker(catalogue, model, task))
                .collect(),
            end,
            tail,
        };
        let mut json = Json::start(out, self.started_ns)?;
        drawing.threads(&mut json)?;
        drawing.tasks(&mut json, report)?;
        json.finish()
    }
}

/// What writing the trace needs at hand.
struct Drawing<'a> {
    timeline: &'a Timeline,
    model: &'a TaskModel,
    catalogue: &'a Catalogue,
    /// By task: not a runtime worker.
    shown: Vec<bool>,
    end: u64,
    tail: Tail,
}

impl Drawing<'_> {
    fn name(&self, task: usize) -> &str {
        report::task_name(self.catalogue, self.model, &self.model.tasks()[task])
    }

    fn place(&self, parked: Option<StackId>) -> Option<&history::ParkedAt> {
        parked.map(|id| self.timeline.history.parked_at(id))
    }

    fn slice_args(
        &self,
        task: usize,
        poll: Option<u32>,
        start: u64,
        end: u64,
        parked: Option<StackId>,
    ) -> SliceArgs<'_> {
        let place = self.place(parked);
        SliceArgs {
            task: self.model.tasks()[task].id,
            poll,
            duration: readable::duration(end - start),
            parked_at: place.and_then(|place| place.await_point.as_deref()),
            waiting_for: place.and_then(|place| place.leaf.as_deref()),
        }
    }

    /// `name @ await point`, when the await point is known.
    fn at(&self, name: &str, parked: Option<StackId>) -> String {
        match self
            .place(parked)
            .and_then(|place| place.await_point.as_deref())
        {
            Some(point) => format!("{name} @ {point}"),
            None => name.to_owned(),
        }
    }

    /// The "threads" process: every poll on its thread's track, with the wake arrows.
    fn threads(&self, json: &mut Json<'_>) -> io::Result<()> {
        json.event(&Event {
            args: Some(Name { name: "threads" }),
            ..Event::new("M", "process_name", THREADS, None)
        })?;
        json.event(&Event {
            args: Some(SortIndex { sort_index: 0 }),
            ..Event::new("M", "process_sort_index", THREADS, None)
        })?;
        let polls = &self.timeline.record.polls;
        let shown = |poll: &PollSlice| self.shown[poll.task as usize];
        let threads: BTreeSet<u32> = polls
            .iter()
            .filter(|poll| shown(poll))
            .map(|poll| poll.tid)
            .collect();
        for tid in threads {
            json.event(&Event {
                args: Some(Name {
                    name: &format!("worker tid {tid}"),
                }),
                ..Event::new("M", "thread_name", THREADS, Some(u64::from(tid)))
            })?;
        }

        // Flows are written next to the slices they bind to: Perfetto binds a flow event to the
        // slice open on its track when it reads it, and reads events of equal time in file order.
        let flows = &self.timeline.record.flows;
        let visible = |id: u32| polls.get(id as usize).is_some_and(shown);
        let drawn: Vec<usize> = (0..flows.len())
            .filter(|&flow| visible(flows[flow].from) && visible(flows[flow].to))
            .collect();
        let mut by_from = drawn.clone();
        by_from.sort_by_key(|&flow| (flows[flow].from, flow));
        let mut by_to = drawn;
        by_to.sort_by_key(|&flow| (flows[flow].to, flow));
        let (mut from_at, mut to_at) = (0, 0);

        let mut numbers = vec![0u32; self.shown.len()];
        for (id, poll) in polls.iter().enumerate() {
            let task = poll.task as usize;
            numbers[task] += 1;
            if !shown(poll) {
                continue;
            }
            let end = match poll.end {
                OPEN => self.tail.ends.get(&id).copied().unwrap_or(self.end),
                end => end,
            };
            let tid = Some(u64::from(poll.tid));
            json.event(&Event {
                cat: Some("poll"),
                ts: Some(json.us(poll.start)),
                dur: Some(json.span(poll.start, end)),
                args: Some(self.slice_args(
                    task,
                    Some(numbers[task]),
                    poll.start,
                    end,
                    poll.parked,
                )),
                ..Event::new("X", &self.at(self.name(task), poll.parked), THREADS, tid)
            })?;
            while let Some(&flow) = by_to.get(to_at)
                && flows[flow].to as usize == id
            {
                to_at += 1;
                json.event(&Event::<()> {
                    cat: Some(WAKE),
                    ts: Some(json.us(poll.start)),
                    id: Some(flow as u64 + 1),
                    bp: Some("e"),
                    ..Event::new("f", WAKE, THREADS, tid)
                })?;
            }
            while let Some(&flow) = by_from.get(from_at)
                && flows[flow].from as usize == id
            {
                from_at += 1;
                // Inside the waker's slice even when its end was lost and guessed.
                let ts = flows[flow].ts.clamp(poll.start, end);
                json.event(&Event::<()> {
                    cat: Some(WAKE),
                    ts: Some(json.us(ts)),
                    id: Some(flow as u64 + 1),
                    ..Event::new("s", WAKE, THREADS, tid)
                })?;
            }
        }
        Ok(())
    }

    /// The "tasks" process: each task's states back to back, and the report's warnings.
    fn tasks(&self, json: &mut Json<'_>, report: &Report) -> io::Result<()> {
        json.event(&Event {
            args: Some(Name { name: "tasks" }),
            ..Event::new("M", "process_name", TASKS, None)
        })?;
        json.event(&Event {
            args: Some(SortIndex { sort_index: 1 }),
            ..Event::new("M", "process_sort_index", TASKS, None)
        })?;
        let tasks = self.model.tasks();
        for (index, task) in tasks
            .iter()
            .enumerate()
            .filter(|(index, _)| self.shown[*index])
        {
            let id = task.id.map_or_else(|| "?".to_owned(), |id| id.to_string());
            json.event(&Event {
                args: Some(Name {
                    name: &format!("task {id} {}", self.name(index)),
                }),
                ..Event::new("M", "thread_name", TASKS, Some(track(index)))
            })?;
            // Tasks in the order the model first saw them: spawn order.
            json.event(&Event {
                args: Some(SortIndex { sort_index: index }),
                ..Event::new("M", "thread_sort_index", TASKS, Some(track(index)))
            })?;
        }
        for state in self.timeline.record.states.iter().chain(&self.tail.states) {
            let task = state.task as usize;
            if !self.shown[task] {
                continue;
            }
            let (what, parked) = state.label.read();
            json.event(&Event {
                cat: Some("state"),
                ts: Some(json.us(state.start)),
                dur: Some(json.span(state.start, state.end)),
                args: Some(self.slice_args(task, None, state.start, state.end, parked)),
                ..Event::new("X", &self.at(what, parked), TASKS, Some(track(task)))
            })?;
        }
        for warning in &report.warnings {
            let args = Some(WarningArgs {
                summary: &warning.summary,
                detail: &warning.detail,
            });
            match warning
                .task_index
                .filter(|&task| self.shown.get(task) == Some(&true))
            {
                // Where the evidence is: the state it ended in, or its end.
                Some(task) => json.event(&Event {
                    cat: Some("warning"),
                    ts: Some(json.us(tasks[task].state_entered_ns().min(self.end))),
                    s: Some("t"),
                    args,
                    ..Event::new("i", warning.kind, TASKS, Some(track(task)))
                })?,
                None => json.event(&Event {
                    cat: Some("warning"),
                    ts: Some(json.us(self.end)),
                    s: Some("p"),
                    args,
                    ..Event::new("i", warning.kind, TASKS, None)
                })?,
            }
        }
        Ok(())
    }
}

impl Observer for Timeline {
    fn event(&mut self, event: &TaskEvent, task: Option<usize>, model: &TaskModel) {
        self.history.event(event, task, model, &mut self.record);
    }
    fn stack(&mut self, task: usize, stack: &TaskStack, _model: &TaskModel) {
        self.history.stack(task, stack, &mut self.record);
    }
    fn observed(&mut self, task: usize, model: &TaskModel) {
        self.history.observed(task, model, &mut self.record);
    }
}

/// A task track's thread id: stable across runs of the same recording, and in spawn order.
fn track(task: usize) -> u64 {
    task as u64 + 1
}

/// The name and category of wake arrows.
const WAKE: &str = "wake";

/// The end of a poll still open.
const OPEN: u64 = u64::MAX;

/// A flow whose woken task was not polled again.
const NOWHERE: u32 = u32::MAX;

/// A poll on its thread's track, by [`PollId`].
#[derive(Clone, Copy)]
struct PollSlice {
    start: u64,
    /// [`OPEN`] until the poll ends.
    end: u64,
    task: u32,
    tid: u32,
    parked: Option<StackId>,
}

#[derive(Clone, Copy)]
struct StateSlice {
    start: u64,
    end: u64,
    task: u32,
    label: Label,
}

/// A task-track slice's content in 32 bits, so millions of them stay small: the state, and for
/// idle time where the task waited.
#[derive(Clone, Copy)]
struct Label(u32);

impl Label {
    const SCHEDULED: u32 = 0;
    const RUNNING: u32 = 1;
    /// Idle, where unknown; idle at place `k` is `IDLE + 1 + k`.
    const IDLE: u32 = 2;

    fn new(state: TaskState, parked: Option<StackId>) -> Self {
        Self(match (state, parked) {
            (TaskState::Scheduled, _) => Self::SCHEDULED,
            (TaskState::Running, _) => Self::RUNNING,
            (_, None) => Self::IDLE,
            (_, Some(StackId(place))) => Self::IDLE + 1 + place,
        })
    }

    fn read(self) -> (&'static str, Option<StackId>) {
        match self.0 {
            Self::SCHEDULED => ("scheduled", None),
            Self::RUNNING => ("running", None),
            Self::IDLE => ("idle", None),
            place => ("idle", Some(StackId(place - Self::IDLE - 1))),
        }
    }
}

/// A wake from inside poll `from`, drawn to the woken task's next poll `to`.
#[derive(Clone, Copy)]
struct Flow {
    from: u32,
    to: u32,
    ts: u64,
}

/// What the trace keeps of the history as it happens.
#[derive(Default)]
struct Record {
    polls: Vec<PollSlice>,
    states: Vec<StateSlice>,
    flows: Vec<Flow>,
    /// Flows whose woken task has not been polled since, by task.
    waiting: BTreeMap<usize, Vec<u32>>,
}

impl Follower for Record {
    fn poll_started(&mut self, poll: &Poll) {
        debug_assert_eq!(poll.id, self.polls.len(), "polls are numbered densely");
        self.polls.push(PollSlice {
            start: poll.start,
            end: OPEN,
            task: poll.task as u32,
            tid: poll.tid,
            parked: None,
        });
        for flow in self.waiting.remove(&poll.task).unwrap_or_default() {
            self.flows[flow as usize].to = poll.id as u32;
        }
    }
    fn poll_ended(&mut self, poll: &Closed) {
        self.polls[poll.poll.id].end = poll.end;
    }
    fn poll_settled(&mut self, poll: &Closed, parked: Option<StackId>) {
        if parked.is_some() {
            self.polls[poll.poll.id].parked = parked;
        }
    }
    fn state_ended(
        &mut self,
        task: usize,
        state: TaskState,
        since: u64,
        until: u64,
        parked: Option<StackId>,
    ) {
        push_state(&mut self.states, task, state, since, until, parked);
    }
    fn woken(&mut self, task: usize, by: &Poll, ts: u64) {
        let flow = self.flows.len() as u32;
        self.flows.push(Flow {
            from: by.id as u32,
            to: NOWHERE,
            ts,
        });
        self.waiting.entry(task).or_default().push(flow);
    }
}

/// What is still going on when the trace is written: open polls' ends and live tasks' states.
#[derive(Default)]
struct Tail {
    ends: HashMap<PollId, u64>,
    states: Vec<StateSlice>,
}

impl Follower for Tail {
    fn poll_ended(&mut self, poll: &Closed) {
        self.ends.insert(poll.poll.id, poll.end);
    }
    fn state_ended(
        &mut self,
        task: usize,
        state: TaskState,
        since: u64,
        until: u64,
        parked: Option<StackId>,
    ) {
        push_state(&mut self.states, task, state, since, until, parked);
    }
}

/// Keeps a state slice; instants (a spawn polled at once) would only clutter the track.
fn push_state(
    states: &mut Vec<StateSlice>,
    task: usize,
    state: TaskState,
    since: u64,
    until: u64,
    parked: Option<StackId>,
) {
    if until > since {
        states.push(StateSlice {
            start: since,
            end: until,
            task: task as u32,
            label: Label::new(state, parked),
        });
    }
}

/// One trace event. Fields a phase does not use are left out of the JSON.
#[derive(Serialize)]
struct Event<'a, A> {
    name: &'a str,
    ph: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cat: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dur: Option<f64>,
    pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    tid: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    /// `e`: a flow end binds to the slice enclosing it, not the next one to begin.
    #[serde(skip_serializing_if = "Option::is_none")]
    bp: Option<&'static str>,
    /// An instant's scope: `t` thread, `p` process.
    #[serde(skip_serializing_if = "Option::is_none")]
    s: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    args: Option<A>,
}

impl<'a, A> Event<'a, A> {
    fn new(ph: &'static str, name: &'a str, pid: u32, tid: Option<u64>) -> Self {
        Self {
            name,
            ph,
            cat: None,
            ts: None,
            dur: None,
            pid,
            tid,
            id: None,
            bp: None,
            s: None,
            args: None,
        }
    }
}

#[derive(Serialize)]
struct Name<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct SortIndex {
    sort_index: usize,
}

#[derive(Serialize)]
struct SliceArgs<'a> {
    /// The tokio task id.
    task: Option<u64>,
    /// Which poll of the task, from 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    poll: Option<u32>,
    duration: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parked_at: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    waiting_for: Option<&'a str>,
}

#[derive(Serialize)]
struct WarningArgs<'a> {
    summary: &'a str,
    detail: &'a str,
}

/// Streams `{"traceEvents":[…],"displayTimeUnit":"ns"}` one event at a time.
struct Json<'w> {
    out: &'w mut dyn Write,
    /// Time zero, in the probe's nanoseconds.
    zero: u64,
    empty: bool,
}

impl<'w> Json<'w> {
    fn start(out: &'w mut dyn Write, zero: u64) -> io::Result<Self> {
        out.write_all(b"{\"traceEvents\":[")?;
        Ok(Self {
            out,
            zero,
            empty: true,
        })
    }

    fn event<A: Serialize>(&mut self, event: &Event<'_, A>) -> io::Result<()> {
        self.out
            .write_all(if self.empty { b"\n" } else { b",\n" })?;
        self.empty = false;
        serde_json::to_writer(&mut *self.out, event).map_err(io::Error::other)
    }

    fn finish(self) -> io::Result<()> {
        self.out.write_all(b"\n],\"displayTimeUnit\":\"ns\"}\n")
    }

    /// Microseconds since time zero (events just before the probe's clock started are negative).
    fn us(&self, ns: u64) -> f64 {
        (i128::from(ns) - i128::from(self.zero)) as f64 / 1e3
    }

    fn span(&self, start: u64, end: u64) -> f64 {
        end.saturating_sub(start) as f64 / 1e3
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use serde_json::Value;

    use super::{
        Timeline,
        script::{self, HANDLER, HANDLER_NAME, NESTED, SERVER, SERVER_NAME, STARTED, WORKER},
    };
    use crate::{report::Report, session::Session};

    fn written(session: &Session<Timeline>, report: &Report) -> Vec<u8> {
        let mut out = Vec::new();
        session
            .observer
            .write(report, &session.model, &script::catalogue(), &mut out)
            .unwrap();
        out
    }

    fn events(session: &Session<Timeline>, report: &Report) -> Vec<Value> {
        let trace: Value = serde_json::from_slice(&written(session, report)).expect("valid JSON");
        assert_eq!(trace["displayTimeUnit"], "ns");
        trace["traceEvents"].as_array().unwrap().clone()
    }

    /// Trace microseconds back to nanoseconds since the probe attached.
    fn ns(value: &Value) -> i64 {
        (value.as_f64().unwrap() * 1e3).round() as i64
    }

    #[derive(Debug)]
    struct Slice {
        pid: u64,
        tid: u64,
        start: i64,
        end: i64,
        name: String,
        task: Option<u64>,
    }

    fn slices(events: &[Value]) -> Vec<Slice> {
        events
            .iter()
            .filter(|event| event["ph"] == "X")
            .map(|event| Slice {
                pid: event["pid"].as_u64().unwrap(),
                tid: event["tid"].as_u64().unwrap(),
                start: ns(&event["ts"]),
                end: ns(&event["ts"]) + ns(&event["dur"]),
                name: event["name"].as_str().unwrap().to_owned(),
                task: event["args"]["task"].as_u64(),
            })
            .collect()
    }

    /// On every track, each slice is inside or apart from every other, never half over one.
    fn assert_nested(slices: &[Slice]) {
        let mut tracks: BTreeMap<(u64, u64), Vec<&Slice>> = BTreeMap::new();
        for slice in slices {
            tracks
                .entry((slice.pid, slice.tid))
                .or_default()
                .push(slice);
        }
        for (track, mut slices) in tracks {
            slices.sort_by_key(|slice| (slice.start, -slice.end));
            let mut open: Vec<&Slice> = Vec::new();
            for slice in slices {
                while open.last().is_some_and(|outer| outer.end <= slice.start) {
                    open.pop();
                }
                if let Some(outer) = open.last() {
                    assert!(
                        slice.end <= outer.end,
                        "{slice:?} overlaps {outer:?} on track {track:?}"
                    );
                }
                open.push(slice);
            }
        }
    }

    /// The task tracks, by tokio id.
    fn task_tracks(events: &[Value]) -> BTreeMap<u64, u64> {
        events
            .iter()
            .filter(|event| event["ph"] == "M" && event["name"] == "thread_name")
            .filter(|event| event["pid"] == 2)
            .map(|event| {
                let name = event["args"]["name"].as_str().unwrap();
                let id = name.split(' ').nth(1).unwrap().parse().unwrap();
                (id, event["tid"].as_u64().unwrap())
            })
            .collect()
    }

    #[test]
    fn polls_nest_on_their_threads_and_agree_with_the_report() {
        let (session, report) = script::scenario(Timeline::new(STARTED));
        let events = events(&session, &report);
        let slices = slices(&events);
        assert_nested(&slices);

        let mut polls: BTreeMap<u64, u64> = BTreeMap::new();
        for slice in slices.iter().filter(|slice| slice.pid == 1) {
            *polls.entry(slice.task.unwrap()).or_default() += 1;
        }
        assert!(!polls.contains_key(&WORKER.id), "worker loops are left out");
        for row in &report.tasks {
            assert_eq!(polls[&row.id.unwrap()], row.polls, "{}", row.name);
        }
        assert_eq!(polls.len(), report.tasks.len());
        assert_eq!(task_tracks(&events).len(), report.summary.tasks);
        assert_eq!(report.summary.tasks, 3);

        let on = |tid: u64| -> Vec<(i64, i64, &str)> {
            let mut found: Vec<_> = slices
                .iter()
                .filter(|slice| slice.pid == 1 && slice.tid == tid)
                .map(|slice| (slice.start, slice.end, slice.name.as_str()))
                .collect();
            found.sort();
            found
        };
        let server_parked = format!("{SERVER_NAME} @ app/src/server.rs:10");
        let handler_parked = format!("{HANDLER_NAME} @ app/src/handler.rs:20");
        assert_eq!(
            on(7),
            [
                (300, 500, server_parked.as_str()),
                (600, 700, HANDLER_NAME),
                (1_300, 1_400, SERVER_NAME),
            ]
        );
        assert_eq!(
            on(8),
            [
                (1_100, 1_300, SERVER_NAME),
                (2_000, 2_300, script::NESTED_NAME),
                (2_100, 2_200, handler_parked.as_str()),
                (3_100, 99_000, script::NESTED_NAME),
            ],
            "a lost end closes at the next poll of its task; a poll still running closes at the end"
        );
    }

    #[test]
    fn task_tracks_show_states_back_to_back() {
        let (session, report) = script::scenario(Timeline::new(STARTED));
        let events = events(&session, &report);
        let tracks = task_tracks(&events);
        let slices = slices(&events);
        let states = |task: u64| -> Vec<(i64, i64, &str)> {
            let mut found: Vec<_> = slices
                .iter()
                .filter(|slice| slice.pid == 2 && slice.tid == tracks[&task])
                .map(|slice| (slice.start, slice.end, slice.name.as_str()))
                .collect();
            found.sort();
            found
        };
        assert_eq!(
            states(HANDLER.id),
            [
                (200, 600, "scheduled"),
                (600, 700, "running"),
                (700, 2_050, "idle"),
                (2_050, 2_100, "scheduled"),
                (2_100, 2_200, "running"),
                (2_200, 99_000, "idle @ app/src/handler.rs:20"),
            ]
        );
        assert_eq!(
            states(SERVER.id),
            [
                (100, 300, "scheduled"),
                (300, 500, "running"),
                (500, 1_000, "idle @ app/src/server.rs:10"),
                (1_000, 1_100, "scheduled"),
                (1_100, 1_350, "running"),
            ],
            "the track ends where the task did"
        );
        let order: Vec<u64> = tracks.values().copied().collect();
        assert!(order.is_sorted(), "tracks in the order tasks were seen");
    }

    #[test]
    fn wakes_from_inside_a_poll_are_arrows_to_the_next_poll() {
        let (session, report) = script::scenario(Timeline::new(STARTED));
        let events = events(&session, &report);
        let slices = slices(&events);
        let mut flows: BTreeMap<u64, BTreeMap<&str, &Value>> = BTreeMap::new();
        for event in events
            .iter()
            .filter(|event| event["ph"] == "s" || event["ph"] == "f")
        {
            let ends = flows.entry(event["id"].as_u64().unwrap()).or_default();
            assert!(ends.insert(event["ph"].as_str().unwrap(), event).is_none());
        }
        assert_eq!(flows.len(), 2, "wakes from outside any task draw no arrow");
        let poll_at = |event: &Value| {
            let (tid, ts) = (event["tid"].as_u64().unwrap(), ns(&event["ts"]));
            slices
                .iter()
                .filter(|slice| slice.pid == 1 && slice.tid == tid)
                .filter(|slice| slice.start <= ts && ts <= slice.end)
                .max_by_key(|slice| slice.start)
                .unwrap()
        };
        let mut seen = Vec::new();
        for ends in flows.values() {
            let (start, end) = (ends["s"], ends["f"]);
            assert_eq!(
                (start["cat"].clone(), start["name"].clone()),
                (end["cat"].clone(), end["name"].clone())
            );
            assert_eq!(end["bp"], "e");
            let (waker, woken) = (poll_at(start), poll_at(end));
            assert_eq!(
                ns(&end["ts"]),
                woken.start,
                "the arrow ends where the woken poll starts"
            );
            seen.push((
                waker.task.unwrap(),
                woken.task.unwrap(),
                ns(&start["ts"]),
                woken.start,
            ));
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                (SERVER.id, HANDLER.id, 400, 600),
                (NESTED.id, HANDLER.id, 2_050, 2_100),
            ]
        );
    }

    #[test]
    fn warnings_are_markers_on_their_tasks() {
        let (session, report) = script::scenario(Timeline::new(STARTED));
        let events = events(&session, &report);
        let tracks = task_tracks(&events);
        let warned: BTreeSet<(String, u64)> = report
            .warnings
            .iter()
            .map(|warning| (warning.kind.to_owned(), warning.task.unwrap()))
            .collect();
        assert_eq!(
            warned,
            BTreeSet::from([
                ("lost_waker".to_owned(), HANDLER.id),
                ("never_yields".to_owned(), NESTED.id)
            ])
        );
        let marked: BTreeSet<(String, u64)> = events
            .iter()
            .filter(|event| event["ph"] == "i")
            .map(|event| {
                let tid = event["tid"].as_u64().unwrap();
                let task = tracks.iter().find(|(_, track)| **track == tid).unwrap().0;
                assert_eq!(event["s"], "t");
                assert!(
                    event["args"]["detail"]
                        .as_str()
                        .is_some_and(|detail| !detail.is_empty())
                );
                (event["name"].as_str().unwrap().to_owned(), *task)
            })
            .collect();
        assert_eq!(marked, warned);
    }

    #[test]
    fn the_same_run_gives_the_same_file() {
        let (first, first_report) = script::scenario(Timeline::new(STARTED));
        let (second, second_report) = script::scenario(Timeline::new(STARTED));
        assert_eq!(
            written(&first, &first_report),
            written(&second, &second_report)
        );
    }

    #[test]
    fn an_empty_run_is_a_valid_trace() {
        let (session, report) = script::nothing(Timeline::new(STARTED));
        let events = events(&session, &report);
        assert!(events.iter().all(|event| event["ph"] == "M"));
        assert_eq!(task_tracks(&events).len(), 0);
    }
}
