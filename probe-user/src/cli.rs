//! Command-line flags, parsed once into a validated [`ProbeConfig`].

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "async-inspect",
    version,
    about = "X-ray vision for async Rust: see every tokio task of a running program, without changing it",
    long_about = "X-ray vision for async Rust: see every tokio task of a running program, without \
changing it.\n\nasync-inspect attaches eBPF uprobes to tokio's task and waker functions in an \
unmodified binary (no console-subscriber, no tokio_unstable, no rebuild) and reports every task: \
its name, state, polls, how its time split between running, waiting for a worker and idling, the \
.await it is parked on, and what is wrong (deadlocks, lost wakers, blocking polls). On a terminal \
it shows a live view; it also writes Perfetto timelines, flamegraphs and recordings to replay.\n\n\
Needs root (or CAP_BPF + CAP_PERFMON) and Linux >= 5.15 (>= 6.6 for uprobe_multi links and the \
overhead budget; dump works on any kernel).\n\n\
Exit status: a launched command's own (128 + N when signal N killed it); 3 when `test` finds a \
hang; 125 when async-inspect itself fails; 126 when the command cannot be run; 127 when it is not \
found.",
    after_help = "Examples:\n  \
sudo async-inspect probe -- ./target/debug/myapp --port 8080\n  \
sudo async-inspect probe --pid 4242 --duration 30s --json report.json --trace timeline.json\n  \
sudo async-inspect dump --pid 4242\n  \
sudo async-inspect test --hang-timeout 30s -- cargo test\n  \
sudo async-inspect probe --pid 4242 --record incident.airec\n  \
async-inspect report incident.airec --format md"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Trace every task of a tokio program: launch it, or attach to a running one.
    #[command(
        after_help = "Launching (`-- CMD`) places the probes before the program's main runs and ends when it \
exits, with its exit status (128 + N when signal N killed it; the report names the signal); its \
stdio passes through (into a log file while the live view is up).\nAttaching (`--pid`) never stops or changes the program: Ctrl-C, q in the live view or \
--duration ends the probe, and nothing stays attached afterwards.\n\nLive view keys: arrows or j/k \
select, ←/→ pick the sort column, i inverts it, / filters, Enter opens a task, w warnings and \
deadlocks, t threads, ? all keys, q stops."
    )]
    Probe(ProbeArgs),
    /// Run a command (a test binary) under the probe; fail with a hang report if it hangs.
    #[command(
        after_help = "Exits with the command's own status, unless no task makes progress for --hang-timeout \
(or, with --fail-on-deadlock, tasks deadlock): then it prints the stuck tasks with their async \
backtraces, deadlocks and warnings, writes --json, kills the command and exits with status 3.\n\n\
Under `cargo test`, every test binary cargo runs is probed (async-inspect makes itself cargo's \
runner); test binaries without tokio run as they are:\n  \
async-inspect test --hang-timeout 30s -- cargo test --workspace"
    )]
    Test(TestArgs),
    /// Snapshot every live task of a running process, with where each one waits.
    #[command(
        after_help = "Finds the tasks in the process's memory, so tasks idle since long before you looked are \
found too, and reads each one's async backtrace (needs DWARF in the binary, or --binary). Costs the \
process nothing unless --freeze is given, which pauses it for the moment of the snapshot."
    )]
    Dump(DumpArgs),
    /// Make every report and export again from a recording (`probe --record FILE`), offline.
    #[command(
        after_help = "Needs neither the target nor root: the recording holds the events, the backtraces read \
during the run and the task names. The JSON report comes out the same as the live run's.\n\n\
Examples:\n  \
async-inspect report run.airec\n  \
async-inspect report run.airec --format md > report.md\n  \
async-inspect report run.airec --trace run.json --flamegraph busy.svg"
    )]
    Report(ReportArgs),
}

/// How the report is printed on stdout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tables for a terminal.
    #[default]
    Text,
    /// The JSON report (as --json writes it).
    Json,
    /// Markdown, for an issue or a wiki page.
    Md,
}

/// Where the report and the exports go: shared by `probe` and `report`.
#[derive(Args, Clone, Debug, Default)]
pub struct OutputArgs {
    /// How the report is printed on stdout.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = Format::Text)]
    pub format: Format,

    /// Also write the report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Write a timeline to FILE (Chrome trace JSON: open it at ui.perfetto.dev): a track per
    /// thread with a slice per poll, a track per task, wake arrows, warnings.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,

    /// Write a flamegraph of busy time by task type and await point to FILE (SVG).
    #[arg(long, value_name = "FILE")]
    pub flamegraph: Option<PathBuf>,

    /// Write a flamegraph of idle time by await point to FILE (SVG): where tasks wait.
    #[arg(long, value_name = "FILE")]
    pub idle_flamegraph: Option<PathBuf>,

    /// Write both flamegraphs' stacks to FILE, folded (`busy;…` and `idle;…` lines, nanoseconds),
    /// for inferno, flamegraph.pl or speedscope.
    #[arg(long, value_name = "FILE")]
    pub folded: Option<PathBuf>,

    /// Write a Mermaid Gantt chart of the task timeline to FILE.
    #[arg(long, value_name = "FILE")]
    pub mermaid: Option<PathBuf>,

    /// How many tasks the tables show, busiest first, and the Gantt chart, longest-lived first
    /// (0: all).
    #[arg(long, value_name = "N", default_value_t = 25)]
    pub top: usize,
}

#[derive(Args)]
pub struct ReportArgs {
    /// A recording made by `async-inspect probe --record FILE`.
    #[arg(value_name = "RECORDING")]
    pub recording: PathBuf,

    #[command(flatten)]
    pub output: OutputArgs,

    /// Report tasks idle longer than this as stuck (default: as the recorded run did).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub stuck_after: Option<Duration>,

    /// Warn about polls longer than this (default: as the recorded run did).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub long_poll: Option<Duration>,
}

#[derive(Args)]
pub struct TestArgs {
    /// A hang: live tasks, and none polled for this long.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub hang_timeout: Duration,

    /// Fail as soon as tasks deadlock on tokio locks or each other's JoinHandles.
    #[arg(long)]
    pub fail_on_deadlock: bool,

    /// Write the report as JSON to FILE (under `cargo test`: FILE is a directory, with a report
    /// per test binary).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Leave the values of locals out of backtraces.
    #[arg(long)]
    pub no_values: bool,

    /// As cargo's runner: write the report to DIR/<test binary>.json.
    #[arg(long, value_name = "DIR", hide = true, conflicts_with = "json")]
    pub json_dir: Option<PathBuf>,

    /// The command and its arguments.
    #[arg(last = true, value_name = "CMD", required = true)]
    pub command: Vec<OsString>,
}

impl TestArgs {
    /// `cargo test` (or any cargo command): cargo is no tokio program, the test binaries it
    /// runs are.
    pub fn runs_cargo(&self) -> bool {
        Path::new(&self.command[0])
            .file_name()
            .is_some_and(|name| name == "cargo")
    }
}

impl From<TestArgs> for ProbeConfig {
    fn from(args: TestArgs) -> Self {
        let json = args.json.or_else(|| {
            let mut name = Path::new(&args.command[0]).file_name()?.to_owned();
            name.push(".json");
            Some(args.json_dir?.join(name))
        });
        Self {
            target: Target::Launch(args.command),
            duration: None,
            output: OutputArgs {
                json,
                top: 25,
                ..OutputArgs::default()
            },
            record: None,
            tui: false,
            binary: None,
            debuginfo: None,
            ring_bytes: DEFAULT_RING_MIB * 1024 * 1024,
            stuck_after: args.hang_timeout / 2,
            long_poll: Duration::from_millis(10),
            values: !args.no_values,
            quiet: true,
            watch: Some(HangWatch {
                timeout: args.hang_timeout,
                fail_on_deadlock: args.fail_on_deadlock,
            }),
            // A hang is "no poll for so long": every poll must be seen.
            max_overhead: None,
            explain: false,
            count_only: false,
            // A test binary's report lists every task it ran.
            keep_every_task: true,
        }
    }
}

/// `test` mode: what counts as a failure.
#[derive(Clone, Copy, Debug)]
pub struct HangWatch {
    pub timeout: Duration,
    pub fail_on_deadlock: bool,
}

#[derive(Args)]
pub struct DumpArgs {
    /// The running process.
    #[arg(short, long, value_name = "PID")]
    pub pid: u32,

    /// Also write the report as JSON to FILE (the same schema as `probe --json`).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Read symbols and DWARF from this file instead of the process's executable. It must be the
    /// same build (the unstripped build a stripped one came from): its build id, or without build
    /// ids its code, is checked against the process's, and another build is refused.
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,

    /// Read DWARF from this separate debug file (found by build id or .gnu_debuglink otherwise).
    /// A file whose build id is not the process's is refused.
    #[arg(long, value_name = "PATH")]
    pub debuginfo: Option<PathBuf>,

    /// Pause every thread of the process while reading, for a consistent snapshot.
    #[arg(long)]
    pub freeze: bool,

    /// Leave the values of locals out of backtraces (they may hold user data).
    #[arg(long)]
    pub no_values: bool,

    /// How many tasks the table shows (0: all).
    #[arg(long, value_name = "N", default_value_t = 25)]
    pub top: usize,

    /// How the snapshot is printed on stdout.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Args)]
pub struct ProbeArgs {
    /// Attach to this running process.
    #[arg(short, long, value_name = "PID", conflicts_with = "command")]
    pub pid: Option<u32>,

    /// Stop after this long (e.g. 500ms, 10s, 5m). Default: until the target exits or Ctrl-C.
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    #[command(flatten)]
    pub output: OutputArgs,

    /// Record the run to FILE (events, backtraces, task names; compressed), for
    /// `async-inspect report FILE` later, anywhere.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,

    /// Show the live view even when stdout is not a terminal (it draws on the terminal).
    #[arg(long, conflicts_with = "no_tui")]
    pub tui: bool,

    /// No live view: print the report when the probe ends (the default when stdout is not a
    /// terminal).
    #[arg(long)]
    pub no_tui: bool,

    /// Read symbols and DWARF from this file instead of the target's executable (for a stripped
    /// deployment whose unstripped build you kept). It must be that very build: its build id, or
    /// without build ids its code at every probe site, is checked against the target's before
    /// anything is launched or attached, and another build is refused (probes placed by its
    /// offsets would corrupt the target's code).
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,

    /// Read DWARF from this separate debug file (found by build id or .gnu_debuglink otherwise).
    /// A file whose build id is not the target's is refused.
    #[arg(long, value_name = "PATH")]
    pub debuginfo: Option<PathBuf>,

    /// Size of the kernel-to-collector event buffers, in MiB (a power of two), all CPUs together:
    /// each CPU has a ring of its own, an equal share of this but at least 256 KiB. Default: 16
    /// when every poll is followed (a launched program, --exact), 4 under an overhead budget.
    /// Events that find their ring full are counted as dropped.
    #[arg(long, value_name = "MIB", value_parser = parse_ring_mib)]
    pub ring_buffer_mb: Option<u32>,

    /// Report tasks idle longer than this at the end as stuck, with their async backtraces.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub stuck_after: Duration,

    /// Leave the values of locals out of backtraces (they may hold user data).
    #[arg(long)]
    pub no_values: bool,

    /// Warn about polls that held their worker longer than this, on CPU or blocked in the
    /// kernel: blocking code in async stalls its worker. The warning says which, and where: the
    /// blocking call, or the line computing. Time preempted on a busy machine, or taken by a
    /// virtual machine's host, does not count
    #[arg(long, value_name = "DURATION", default_value = "10ms", value_parser = parse_duration)]
    pub long_poll: Duration,

    /// No progress lines on stderr.
    #[arg(short, long)]
    pub quiet: bool,

    /// Keep the probe's cost under PERCENT of the target's own CPU: when following every poll
    /// would cost more, the per-poll probes are attached in windows (counts and times are then
    /// estimates, and the report says so); hangs, deadlocks and lost wakers are still found.
    /// Default with --pid: 5. A launched program is followed exactly unless this is given.
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent, conflicts_with = "exact")]
    pub max_overhead: Option<f64>,

    /// Follow every poll and wake, whatever it costs (no overhead budget).
    #[arg(long)]
    pub exact: bool,

    /// Keep every task in the report one by one. By default, once a thousand or so tasks have
    /// ended, ended tasks are folded into per-type totals (the slowest, the most recent, the
    /// panicked and cancelled stay), so memory and reports stay bounded on a busy server.
    #[arg(long)]
    pub keep_all_tasks: bool,

    /// Print what each kind of probe costs: points, hits per second, whether the kernel
    /// emulates or single-steps its instruction, and the estimated nanoseconds per hit.
    #[arg(long)]
    pub explain: bool,

    /// Benchmarking: the same probe points with programs that only count their hits (what the
    /// bare uprobe mechanism costs); no events, no report figures.
    #[arg(long, hide = true)]
    pub floor: bool,

    /// The program to launch under the probe, and its arguments.
    #[arg(last = true, value_name = "CMD", required_unless_present = "pid")]
    pub command: Vec<OsString>,
}

/// What to probe.
pub enum Target {
    Launch(Vec<OsString>),
    Pid(u32),
}

/// The validated probe configuration.
pub struct ProbeConfig {
    pub target: Target,
    pub duration: Option<Duration>,
    pub output: OutputArgs,
    pub record: Option<PathBuf>,
    /// Show the live terminal view.
    pub tui: bool,
    pub binary: Option<PathBuf>,
    pub debuginfo: Option<PathBuf>,
    pub ring_bytes: u32,
    pub stuck_after: Duration,
    pub long_poll: Duration,
    pub values: bool,
    pub quiet: bool,
    /// `test` mode.
    pub watch: Option<HangWatch>,
    /// The share of the target's CPU the probe may take, in percent (None: every poll).
    pub max_overhead: Option<f64>,
    pub explain: bool,
    /// Load the programs in count-only mode (the benchmark's floor).
    pub count_only: bool,
    /// Fold no ended task into its type's totals.
    pub keep_every_task: bool,
}

/// The event rings' default size, all CPUs together, when every poll is followed: 16 MiB, about
/// 200,000 events of 80 bytes. The collector drains them every 20 ms, but the target's threads
/// can keep it off a CPU far longer: following every poll of a workload that only yields (1.5
/// million events a second on two CPUs), it was kept waiting 100 ms at a time, and 4 MiB (35 ms
/// of events a CPU) overflowed in 6 runs of 8, 16 MiB in none.
pub const DEFAULT_RING_MIB: u32 = 16;

/// The same under an overhead budget, which keeps the event rate down: the rings' pages count
/// twice in the collector's resident memory (the kernel maps each ring twice, all at once), and
/// an operator attaching to a service with 100,000 tasks expects the probe to stay small.
pub const BUDGETED_RING_MIB: u32 = 4;

fn default_ring_mib(max_overhead: Option<f64>) -> u32 {
    match max_overhead {
        Some(_) => BUDGETED_RING_MIB,
        None => DEFAULT_RING_MIB,
    }
}

/// The overhead budget when attaching to a running program and none is given, in percent.
pub const DEFAULT_MAX_OVERHEAD: f64 = 5.0;

impl From<ProbeArgs> for ProbeConfig {
    fn from(args: ProbeArgs) -> Self {
        let target = match args.pid {
            Some(pid) => Target::Pid(pid),
            None => Target::Launch(args.command),
        };
        use std::io::IsTerminal as _;
        let max_overhead = match (&target, args.exact || args.floor) {
            (_, true) => None,
            (Target::Pid(_), false) => Some(args.max_overhead.unwrap_or(DEFAULT_MAX_OVERHEAD)),
            (Target::Launch(_), false) => args.max_overhead,
        };
        Self {
            max_overhead,
            explain: args.explain,
            count_only: args.floor,
            keep_every_task: args.keep_all_tasks,
            target,
            duration: args.duration,
            output: args.output,
            record: args.record,
            tui: args.tui || (!args.no_tui && std::io::stdout().is_terminal()),
            binary: args.binary,
            debuginfo: args.debuginfo,
            ring_bytes: args
                .ring_buffer_mb
                .unwrap_or(default_ring_mib(max_overhead))
                * 1024
                * 1024,
            stuck_after: args.stuck_after,
            long_poll: args.long_poll,
            values: !args.no_values,
            quiet: args.quiet,
            watch: None,
        }
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration like 500ms, 10s or 5m"))?;
    let seconds = match unit {
        "ms" => number / 1e3,
        "" | "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => {
            return Err(format!(
                "unknown unit '{unit}' in '{text}': use ms, s, m or h"
            ));
        }
    };
    if !(seconds > 0.0 && seconds.is_finite()) {
        return Err(format!("'{text}' must be longer than zero"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn parse_percent(text: &str) -> Result<f64, String> {
    let percent: f64 = text
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("'{text}' is not a percentage like 5 or 2.5"))?;
    if !(percent > 0.0 && percent <= 100.0) {
        return Err(format!("{percent} must be above 0 and at most 100"));
    }
    Ok(percent)
}

fn parse_ring_mib(text: &str) -> Result<u32, String> {
    let mib: u32 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a whole number"))?;
    if !mib.is_power_of_two() || mib > 1024 {
        return Err(format!("{mib} must be a power of two from 1 to 1024"));
    }
    Ok(mib)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("10 parsecs").is_err());
    }

    #[test]
    fn pid_and_command_exclude_each_other() {
        assert!(Cli::try_parse_from(["async-inspect", "probe", "--pid", "1", "--", "ls"]).is_err());
        assert!(Cli::try_parse_from(["async-inspect", "probe"]).is_err());
        assert!(Cli::try_parse_from(["async-inspect", "probe", "--", "./app", "--flag"]).is_ok());
    }

    #[test]
    fn a_budget_applies_to_attaching_unless_exact() {
        let config = |args: &[&str]| {
            let Command::Probe(args) = Cli::try_parse_from(args).expect("parses").command else {
                panic!("not probe");
            };
            ProbeConfig::from(args).max_overhead
        };
        assert_eq!(
            config(&["ai", "probe", "--pid", "1"]),
            Some(DEFAULT_MAX_OVERHEAD)
        );
        assert_eq!(
            config(&["ai", "probe", "--pid", "1", "--max-overhead", "2%"]),
            Some(2.0)
        );
        assert_eq!(config(&["ai", "probe", "--pid", "1", "--exact"]), None);
        assert_eq!(config(&["ai", "probe", "--", "./app"]), None);
        assert!(parse_percent("0").is_err());
        assert!(
            Cli::try_parse_from([
                "ai",
                "probe",
                "--pid",
                "1",
                "--exact",
                "--max-overhead",
                "3"
            ])
            .is_err()
        );
    }

    #[test]
    fn every_poll_followed_gets_the_larger_rings_unless_told() {
        let ring_mib = |args: &[&str]| {
            let Command::Probe(args) = Cli::try_parse_from(args).expect("parses").command else {
                panic!("not probe");
            };
            ProbeConfig::from(args).ring_bytes / (1024 * 1024)
        };
        assert_eq!(ring_mib(&["ai", "probe", "--pid", "1"]), BUDGETED_RING_MIB);
        assert_eq!(
            ring_mib(&["ai", "probe", "--pid", "1", "--exact"]),
            DEFAULT_RING_MIB
        );
        assert_eq!(ring_mib(&["ai", "probe", "--", "./app"]), DEFAULT_RING_MIB);
        let told = ["ai", "probe", "--pid", "1", "--ring-buffer-mb", "2"];
        assert_eq!(ring_mib(&told), 2);
    }

    #[test]
    fn ring_sizes_are_powers_of_two() {
        assert_eq!(parse_ring_mib("8"), Ok(8));
        assert!(parse_ring_mib("3").is_err());
    }
}
