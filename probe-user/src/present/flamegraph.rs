//! `--flamegraph FILE.svg`, `--idle-flamegraph FILE.svg` and `--folded FILE`: where busy time
//! goes by task type and await point, and where tasks wait.
//!
//! A stack is the task's name, then the frames of the backtrace read after a poll, outermost
//! first: the await that poll ended at. Busy time is each poll's own duration, charged to the
//! await it reached (polls that ran other polls inside them are left out: their time is their
//! children's). Idle time is how long the task then stayed parked there, topped with what the
//! leaf future waits for. Polls and waits with no backtrace (no DWARF, or woken before one was
//! read) are charged to the task alone.

use std::{
    borrow::Cow,
    collections::BTreeMap,
    io::{self, Write},
};

use inferno::flamegraph::{
    self as inferno_flamegraph, Options,
    color::{BasicPalette, Palette},
};

use super::trace::history::{Closed, Follower, History, StackId};
use crate::{
    analyze::stacks::TaskStack,
    model::{TaskEvent, TaskModel, TaskState},
    report::{self, Report},
    resolve::Catalogue,
    session::Observer,
};

/// Which time a flamegraph shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// Time spent in polls.
    Busy,
    /// Time spent parked at await points.
    Idle,
}

impl View {
    /// The first frame of the view's lines in the folded file, which holds both views.
    fn root(self) -> &'static str {
        match self {
            Self::Busy => "busy",
            Self::Idle => "idle",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::Busy => "async-inspect: busy time by task and await point",
            Self::Idle => "async-inspect: where tasks wait (idle time by await point)",
        }
    }

    fn palette(self) -> BasicPalette {
        match self {
            Self::Busy => BasicPalette::Hot,
            Self::Idle => BasicPalette::Blue,
        }
    }
}

#[derive(Default)]
pub struct Flame {
    history: History,
    totals: Totals,
}

impl Flame {
    pub fn new() -> Self {
        Self::default()
    }

    /// Both views as folded stacks, one `view;frame;frame… nanoseconds` line each.
    pub fn write_folded(
        &self,
        _report: &Report,
        model: &TaskModel,
        catalogue: &Catalogue,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        for view in [View::Busy, View::Idle] {
            for (stack, ns) in self.stacks(view, model, catalogue) {
                writeln!(out, "{};{stack} {ns}", view.root())?;
            }
        }
        Ok(())
    }

    pub fn write_svg(
        &self,
        view: View,
        _report: &Report,
        model: &TaskModel,
        catalogue: &Catalogue,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        let stacks = self.stacks(view, model, catalogue);
        if stacks.is_empty() {
            // inferno refuses empty input; a run with nothing to show still gets its file.
            return write_empty(view, out);
        }
        let lines: Vec<String> = stacks
            .iter()
            .map(|(stack, ns)| format!("{stack} {ns}"))
            .collect();
        let mut options = Options::default();
        options.title = view.title().to_owned();
        options.count_name = "ns".to_owned();
        options.colors = Palette::Basic(view.palette());
        // Colours from frame names, not a random generator: the same run gives the same file.
        options.hash = true;
        inferno_flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), out)
    }

    /// The view's folded stacks (without the view's root frame), nanoseconds each, sorted.
    fn stacks(
        &self,
        view: View,
        model: &TaskModel,
        catalogue: &Catalogue,
    ) -> BTreeMap<String, u64> {
        // The model was closed at the end of the probe: its last time is the end of the run.
        let mut tail = Totals::default();
        self.history.finish(model.last_ns, &mut tail);
        let mut stacks = BTreeMap::new();
        for (&(task, parked), &ns) in self.totals.of(view).iter().chain(tail.of(view)) {
            let task = &model.tasks()[task];
            if ns == 0 || report::is_runtime_worker(catalogue, model, task) {
                continue;
            }
            let mut stack = frame(report::task_name(catalogue, model, task)).into_owned();
            if let Some(place) = parked.map(|id| self.history.parked_at(id)) {
                let leaf = match view {
                    View::Busy => None,
                    View::Idle => place.leaf.as_deref(),
                };
                for name in place.frames.iter().map(String::as_str).chain(leaf) {
                    stack.push(';');
                    stack.push_str(&frame(name));
                }
            }
            *stacks.entry(stack).or_default() += ns;
        }
        stacks
    }
}

impl Observer for Flame {
    fn event(&mut self, event: &TaskEvent, task: Option<usize>, model: &TaskModel) {
        self.history.event(event, task, model, &mut self.totals);
    }
    fn stack(&mut self, task: usize, stack: &TaskStack, _model: &TaskModel) {
        self.history.stack(task, stack, &mut self.totals);
    }
    fn observed(&mut self, task: usize, model: &TaskModel) {
        self.history.observed(task, model, &mut self.totals);
    }
}

/// Nanoseconds by task (index into the model) and where it parked.
#[derive(Default)]
struct Totals {
    busy: BTreeMap<(usize, Option<StackId>), u64>,
    idle: BTreeMap<(usize, Option<StackId>), u64>,
}

impl Totals {
    fn of(&self, view: View) -> &BTreeMap<(usize, Option<StackId>), u64> {
        match view {
            View::Busy => &self.busy,
            View::Idle => &self.idle,
        }
    }
}

impl Follower for Totals {
    fn poll_settled(&mut self, poll: &Closed, parked: Option<StackId>) {
        if !poll.container {
            *self.busy.entry((poll.poll.task, parked)).or_default() += poll.duration();
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
        if state == TaskState::Idle {
            *self.idle.entry((task, parked)).or_default() += until - since;
        }
    }
}

/// A frame name as one field of a folded line: `;` separates frames (`[u8; 4]` has one) and a
/// line break would end the line.
fn frame(name: &str) -> Cow<'_, str> {
    if name.is_empty() {
        return Cow::Borrowed("?");
    }
    if !name.contains(|c: char| c == ';' || c.is_control()) {
        return Cow::Borrowed(name);
    }
    Cow::Owned(
        name.chars()
            .map(|c| match c {
                ';' => ',',
                c if c.is_control() => ' ',
                c => c,
            })
            .collect(),
    )
}

/// A small valid SVG in place of a flamegraph with no samples.
fn write_empty(view: View, out: &mut dyn Write) -> io::Result<()> {
    let why = match view {
        View::Busy => "no samples: no poll was seen while the probe was attached",
        View::Idle => "no samples: no task was seen waiting while the probe was attached",
    };
    write!(
        out,
        r##"<?xml version="1.0" standalone="no"?>
<svg version="1.1" width="1200" height="90" viewBox="0 0 1200 90" xmlns="http://www.w3.org/2000/svg">
<rect x="0" y="0" width="1200" height="90" fill="#eeeeee"/>
<text x="600" y="32" text-anchor="middle" font-family="Verdana" font-size="17">{}</text>
<text x="600" y="62" text-anchor="middle" font-family="Verdana" font-size="12">{why}</text>
</svg>
"##,
        view.title()
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{Flame, View};
    use crate::{
        present::trace::script::{self, HANDLER_NAME, NESTED_NAME, SERVER_NAME},
        report::Report,
        session::Session,
    };

    fn folded(session: &Session<Flame>, report: &Report) -> String {
        let mut out = Vec::new();
        session
            .observer
            .write_folded(report, &session.model, &script::catalogue(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    fn svg(session: &Session<Flame>, report: &Report, view: View) -> String {
        let mut out = Vec::new();
        session
            .observer
            .write_svg(view, report, &session.model, &script::catalogue(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    /// `(stack, ns)` of every folded line.
    fn lines(folded: &str) -> Vec<(&str, u64)> {
        folded
            .lines()
            .map(|line| {
                let (stack, ns) = line.rsplit_once(' ').unwrap();
                (stack, ns.parse().unwrap())
            })
            .collect()
    }

    /// Nanoseconds of `view` by task name (each line's second frame).
    fn by_task<'a>(lines: &[(&'a str, u64)], view: &str) -> BTreeMap<&'a str, u64> {
        let mut totals = BTreeMap::new();
        for (stack, ns) in lines {
            let mut frames = stack.split(';');
            if frames.next() == Some(view) {
                *totals.entry(frames.next().unwrap()).or_default() += ns;
            }
        }
        totals
    }

    #[test]
    fn a_task_idle_since_before_the_probe_waits_from_when_it_was_found() {
        let mut run = script::Script::new(Flame::new());
        run.found(1_500, script::HANDLER);
        run.parked(1_600, script::HANDLER, script::handler_parked());
        let (session, report) = run.end(Vec::new());
        let folded = folded(&session, &report);
        assert_eq!(
            by_task(&lines(&folded), "idle"),
            BTreeMap::from([(HANDLER_NAME, script::ENDED - 1_500)])
        );
        assert!(
            folded.contains("app::handler::{async_fn#0} (app/src/handler.rs:20)"),
            "{folded}"
        );
        assert!(by_task(&lines(&folded), "busy").is_empty());
    }

    #[test]
    fn busy_time_is_each_polls_own_time_at_the_await_it_reached() {
        let (session, report) = script::scenario(Flame::new());
        let folded = folded(&session, &report);
        let lines = lines(&folded);
        // SERVER: 200 + 200 (end lost, closed by its next poll) + 100; HANDLER: 100 + 100;
        // NESTED: its second poll, still running at the end (the first contained HANDLER's).
        assert_eq!(
            by_task(&lines, "busy"),
            BTreeMap::from([
                (SERVER_NAME, 500),
                (HANDLER_NAME, 200),
                (NESTED_NAME, 95_900)
            ])
        );
        let server_at = format!(
            "busy;{SERVER_NAME};app::server::run::{{async_fn#0}} (app/src/server.rs:10);tokio::sync::notify::Notified"
        );
        assert!(lines.contains(&(server_at.as_str(), 200)), "{folded}");
        assert!(
            lines.contains(&(format!("busy;{SERVER_NAME}").as_str(), 300)),
            "{folded}"
        );
        assert!(
            !folded.contains("BlockingTask"),
            "worker loops are left out"
        );
    }

    #[test]
    fn idle_time_ends_in_what_the_task_waits_for() {
        let (session, report) = script::scenario(Flame::new());
        let folded = folded(&session, &report);
        let lines = lines(&folded);
        assert_eq!(
            by_task(&lines, "idle"),
            BTreeMap::from([
                (SERVER_NAME, 500),
                (HANDLER_NAME, 1_350 + 96_800),
                (NESTED_NAME, 700)
            ])
        );
        let handler_at = format!(
            "idle;{HANDLER_NAME};app::handler::{{async_fn#0}} (app/src/handler.rs:20);\
             tokio::sync::oneshot::Receiver<[u8, 4]> (tokio-1.54.1/src/sync/oneshot.rs:1100);\
             waiting for a oneshot value"
        );
        assert!(
            lines.contains(&(handler_at.as_str(), 96_800)),
            "read twice, counted once: {folded}"
        );
        assert!(
            lines
                .iter()
                .any(|(stack, ns)| stack.ends_with(";waiting for a Notify") && *ns == 500)
        );
        assert!(
            lines.contains(&(format!("idle;{HANDLER_NAME}").as_str(), 1_350)),
            "woken before any read"
        );
    }

    #[test]
    fn folded_lines_are_sorted_and_the_same_every_time() {
        let (first, first_report) = script::scenario(Flame::new());
        let (second, second_report) = script::scenario(Flame::new());
        let folded = folded(&first, &first_report);
        assert_eq!(folded, self::folded(&second, &second_report));
        let stacks: Vec<&str> = lines(&folded).into_iter().map(|(stack, _)| stack).collect();
        assert!(stacks.is_sorted());
        assert!(
            stacks.iter().all(|stack| !stack.contains("; ")),
            "no `;` inside a frame"
        );
        assert_eq!(
            svg(&first, &first_report, View::Idle),
            svg(&second, &second_report, View::Idle)
        );
    }

    #[test]
    fn flamegraphs_are_svg_with_the_tasks_in_them() {
        let (session, report) = script::scenario(Flame::new());
        for (view, title) in [
            (View::Busy, "busy time by task"),
            (View::Idle, "where tasks wait"),
        ] {
            let svg = svg(&session, &report, view);
            assert!(svg.starts_with("<?xml"), "{svg}");
            assert!(svg.contains(title));
            assert!(svg.contains("app::server"));
            assert!(svg.trim_end().ends_with("</svg>"));
        }
    }

    #[test]
    fn an_empty_run_still_gives_valid_files() {
        let (session, report) = script::nothing(Flame::new());
        assert_eq!(folded(&session, &report), "");
        for view in [View::Busy, View::Idle] {
            let svg = svg(&session, &report, view);
            assert!(
                svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"),
                "{svg}"
            );
            assert!(svg.contains("no samples"));
            assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
        }
    }
}
