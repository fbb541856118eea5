//! Attach: load the embedded eBPF object with the plan's layout, and attach each program once as
//! a `uprobe.multi` link over all of its sites, scoped to one process. Requires Linux >= 6.6
//! (uprobe_multi with a process-wide pid filter).
//!
//! Everything is owned by [`Attachment`]: dropping it (or the process dying, since links are file
//! descriptors) detaches every probe.

use std::{num::NonZeroU32, path::Path};

mod rings;
mod run_time;
mod sampler;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{
        ProgramError, TracePoint, UProbe,
        trace_point::TracePointLinkId,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope},
    },
    sys::UProbeMultiFeature,
};
use probe_common::{BlockOnDone, Config, Current, MODE_COUNT_ONLY, MODE_EVENTS, cookie};

use crate::resolve::{ProbePlan, SiteKind, entry::Stepping};

static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe-ebpf"));

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(
        "attaching uprobes needs root, or the capabilities CAP_BPF and CAP_PERFMON (plus CAP_SYS_PTRACE \
         for --pid); try again with sudo"
    )]
    NotPrivileged,
    #[error(
        "this kernel cannot give uprobes the cookies async-inspect's programs need (Linux >= 5.15 \
         is needed, >= 6.6 for uprobe_multi links; running {kernel})"
    )]
    TooOld { kernel: String },
    #[error("loading the eBPF programs failed: {0}")]
    Load(Box<aya::EbpfError>),
    #[error("the eBPF object has no {0}: the build is inconsistent")]
    Missing(&'static str),
    #[error("attaching {program} to {sites} site(s) in {binary} failed: {source}")]
    Attach {
        program: &'static str,
        sites: usize,
        binary: String,
        source: Box<aya::programs::ProgramError>,
    },
    #[error(transparent)]
    Map(Box<aya::maps::MapError>),
}

/// One kind of probe: a program attached over every site of some kinds. Its hits are counted
/// in the slot of its index in [`PROBES`], and priced by how the kernel runs its instruction.
#[derive(Debug)]
pub struct ProbeKind {
    /// In words, for `--explain`.
    pub name: &'static str,
    program: &'static str,
    sites: &'static [SiteKind],
    /// A uretprobe: it must sit on the function's first instruction (it reads the return
    /// address at the top of the stack), and returning through its trampoline costs a trap too.
    pub returns: bool,
    /// Hit at every poll or wake: what a budget duty-cycles.
    pub hot: bool,
}

const SPAWNS: &[SiteKind] = &[
    SiteKind::SpawnMultiThread,
    SiteKind::SpawnCurrentThread,
    SiteKind::CellNew,
];

pub const PROBES: [ProbeKind; 11] = [
    ProbeKind {
        name: "poll (raw::poll entry)",
        program: "poll_start",
        sites: &[SiteKind::Poll],
        returns: false,
        hot: true,
    },
    ProbeKind {
        name: "poll end (raw::poll return)",
        program: "poll_end",
        sites: &[SiteKind::Poll],
        returns: true,
        hot: true,
    },
    ProbeKind {
        name: "spawn (scheduler spawn return)",
        program: "spawn_return",
        sites: SPAWNS,
        returns: true,
        hot: true,
    },
    ProbeKind {
        name: "wake (waker::wake_by_val)",
        program: "task_op",
        sites: &[SiteKind::WakeByVal],
        returns: false,
        hot: true,
    },
    ProbeKind {
        name: "wake (waker::wake_by_ref)",
        program: "task_op",
        sites: &[SiteKind::WakeByRef],
        returns: false,
        hot: true,
    },
    ProbeKind {
        name: "completion (State::transition_to_complete)",
        program: "task_op",
        sites: &[SiteKind::Complete],
        returns: false,
        hot: true,
    },
    ProbeKind {
        name: "free (raw::dealloc)",
        program: "task_op",
        sites: &[SiteKind::Dealloc],
        returns: false,
        hot: true,
    },
    ProbeKind {
        name: "cancel (raw::shutdown)",
        program: "task_op",
        sites: &[SiteKind::Shutdown],
        returns: false,
        hot: false,
    },
    ProbeKind {
        name: "panic (rust_panic)",
        program: "panic_start",
        sites: &[SiteKind::Panic],
        returns: false,
        hot: false,
    },
    // A program's block_on future is polled once per wake of its main thread: rare enough to
    // stay attached through a budget's gaps, whose memory checks know nothing of it.
    ProbeKind {
        name: "block_on poll (its future's poll function)",
        program: "poll_start",
        sites: &[SiteKind::BlockOnPoll],
        returns: false,
        hot: false,
    },
    ProbeKind {
        name: "block_on poll end (its return)",
        program: "poll_end",
        sites: &[SiteKind::BlockOnPoll],
        returns: true,
        hot: false,
    },
];

/// How one kind of probe was placed: how many points, and how the kernel runs them.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Placed {
    pub points: usize,
    /// Points whose probed instruction the kernel single-steps (two traps a hit).
    pub single_stepped: usize,
    /// Points moved past their function's first instruction to one the kernel emulates.
    pub moved: usize,
    /// The probed instruction of the first point, e.g. `jmp …` or `push rbx`.
    pub instruction: String,
}

/// The loaded programs and their links. Dropping it detaches everything.
pub struct Attachment {
    ebpf: Ebpf,
    /// The points of each of [`PROBES`] (empty when the target has no such site).
    points: Vec<Vec<UProbeAttachPoint<'static>>>,
    /// The live link of each of [`PROBES`], while attached.
    links: Vec<Option<UProbeLinkId>>,
    pub placed: Vec<Placed>,
    binary: std::path::PathBuf,
    pid: NonZeroU32,
    pub mechanism: Mechanism,
    /// Whether the `sched:sched_switch` and `sched_wakeup` programs could be loaded (and
    /// attached): poll ends then say how long their thread was blocked and preempted. Why not,
    /// otherwise.
    pub off_cpu: Result<(), String>,
    /// Whether poll ends carry their thread's CPU time by its task clock, which tells time a
    /// hypervisor stole from the virtual CPU from time on it. Why not, otherwise.
    pub cpu_time: Result<(), String>,
    /// Their links while attached: with the per-poll probes, since they only act on threads
    /// inside a followed poll, and fire at every context switch of the machine.
    sched_links: Vec<(&'static str, TracePointLinkId)>,
    /// Whether the timer sample of each CPU could be loaded (and attached): long polls are
    /// then told where they compute. Why not, otherwise.
    pub sampling: Result<(), String>,
    /// Its links while attached, with the per-poll probes.
    sample_links: Vec<aya::programs::perf_event::PerfEventLinkId>,
    /// The collector's handles on the per-CPU event rings, until it takes them.
    events: Option<Vec<RingBuf<MapData>>>,
    /// The kernel's BPF run-time statistics, on in windows.
    windows: run_time::Windows,
}

/// How the probes are attached, by what the kernel offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    /// One `uprobe_multi` link per kind of probe, scoped to the process (Linux >= 6.6):
    /// attached and detached in tens of milliseconds, however many points.
    UprobeMulti,
    /// One perf-event uprobe per point (Linux 5.15 to 6.5; cookies need 5.15): each point
    /// takes about 100 ms to detach, so the overhead budget's windows are not used.
    PerfEvent,
}

impl Mechanism {
    /// The program that runs `body` under this mechanism (the eBPF object has both).
    fn program(self, body: &'static str) -> &'static str {
        match (self, body) {
            (Self::UprobeMulti, body) => body,
            (Self::PerfEvent, "poll_start") => "poll_start_single",
            (Self::PerfEvent, "poll_end") => "poll_end_single",
            (Self::PerfEvent, "spawn_return") => "spawn_return_single",
            (Self::PerfEvent, "task_op") => "task_op_single",
            (Self::PerfEvent, "panic_start") => "panic_start_single",
            (Self::PerfEvent, other) => other,
        }
    }
}

/// Checks privileges and kernel support before anything is loaded, for a clear error, and
/// picks how to attach.
pub fn preflight() -> Result<Mechanism, AttachError> {
    if !privileged() {
        return Err(AttachError::NotPrivileged);
    }
    match aya::sys::is_uprobe_multi_supported(UProbeMultiFeature::ProcessScopedPidFilter) {
        Ok(true) => Ok(Mechanism::UprobeMulti),
        Ok(false) if kernel_at_least(5, 15) => Ok(Mechanism::PerfEvent),
        Ok(false) => Err(AttachError::TooOld {
            kernel: kernel_release(),
        }),
        Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(AttachError::NotPrivileged)
        }
        // The probe itself failed for another reason: let the real attach report it.
        Err(_) => Ok(Mechanism::UprobeMulti),
    }
}

/// Whether the running kernel's release is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = kernel_release();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|part| part.parse::<u32>().ok());
    let found = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    found >= (major, minor)
}

fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let effective = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("CapEff:"))?;
            u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
        })
        .unwrap_or(0);
    effective & (1 << CAP_BPF) != 0 && effective & (1 << CAP_PERFMON) != 0
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|release| release.trim().to_owned())
        .unwrap_or_else(|_| "an unknown kernel".into())
}

impl Attachment {
    /// Loads the programs and attaches them to `binary` (the file the target process runs,
    /// e.g. `/proc/PID/exe`) for process `pid` only. `count_only` loads them in the mode that
    /// only counts hits (the benchmark's floor).
    pub fn attach(
        plan: &ProbePlan,
        binary: &Path,
        pid: NonZeroU32,
        ring_bytes: u32,
        count_only: bool,
        mechanism: Mechanism,
    ) -> Result<Self, AttachError> {
        let cpu_time = crate::resolve::kernel::task_cpu_time_offset();
        let cpus = rings::cpus();
        let per_cpu = rings::ring_bytes_per_cpu(ring_bytes, cpus);
        let config = program_config(plan, per_cpu, count_only, cpu_time.as_ref().ok());
        let block_on = block_on_done(plan);
        let mut ebpf = EbpfLoader::new()
            .override_global("CONFIG", &config, true)
            .map_max_entries("EVENTS", cpus)
            // A map cannot be empty.
            .map_max_entries("BLOCK_ON_DONE", block_on.len().max(1) as u32)
            .load(PROGRAMS)
            .map_err(|error| AttachError::Load(Box::new(error)))?;
        fill_block_on_done(&mut ebpf, &block_on)?;
        let events = Some(rings::create(&mut ebpf, cpus, per_cpu)?);
        let mut loaded = std::collections::HashSet::new();
        for probe in &PROBES {
            let name = mechanism.program(probe.program);
            if loaded.insert(name) {
                program(&mut ebpf, name)?
                    .load()
                    .map_err(|source| attach_error(probe, 0, binary, source))?;
            }
        }
        let (off_cpu, sampling) = if count_only {
            (Err("count-only mode".into()), Err("count-only mode".into()))
        } else {
            (load_sched_programs(&mut ebpf), sampler::load(&mut ebpf))
        };
        let (points, placed) = PROBES
            .iter()
            .enumerate()
            .map(|(slot, probe)| place(plan, slot, probe))
            .unzip();
        let mut attachment = Self {
            ebpf,
            points,
            links: PROBES.iter().map(|_| None).collect(),
            placed,
            binary: binary.to_owned(),
            pid,
            mechanism,
            off_cpu,
            cpu_time: cpu_time.map(drop).map_err(|error| error.to_string()),
            sched_links: Vec::new(),
            sampling,
            sample_links: Vec::new(),
            events,
            // Without them the kernel keeps no run time per program; the probe then prices its
            // programs by their hits alone.
            windows: run_time::Windows::start(crate::collect::monotonic_ns()),
        };
        attachment.attach_where(|probe| !probe.hot)?;
        Ok(attachment)
    }

    /// What the report's polls lack on this kernel, and what that changes, for the report's
    /// notes.
    pub fn split_notes(&self) -> Vec<String> {
        match (&self.off_cpu, &self.cpu_time) {
            (Err(why), _) => vec![format!(
                "polls are not split into time on CPU, blocked and preempted ({why}): long_poll \
                 counts whole polls, preemption included"
            )],
            (Ok(()), Err(why)) => vec![format!(
                "polls' CPU time is not measured ({why}): time a hypervisor took from a virtual \
                 CPU counts as on CPU"
            )],
            (Ok(()), Ok(())) => Vec::new(),
        }
        .into_iter()
        .chain(self.sampling.as_ref().err().map(|why| {
            format!("long polls are not told where they compute ({why}): no timer samples")
        }))
        .collect()
    }

    /// Attaches every kind of probe that `which` selects and is not attached yet. The most
    /// frequently hit kinds go last: each link takes milliseconds to attach, while the collector
    /// is not draining the ring buffer.
    fn attach_where(&mut self, which: impl Fn(&ProbeKind) -> bool) -> Result<(), AttachError> {
        for (slot, probe) in PROBES.iter().enumerate().rev() {
            if !which(probe) || self.links[slot].is_some() || self.points[slot].is_empty() {
                continue;
            }
            let points = &self.points[slot];
            let uprobe = program(&mut self.ebpf, self.mechanism.program(probe.program))?;
            let link = uprobe
                .attach(
                    points.iter().copied(),
                    &self.binary,
                    UProbeScope::OneProcess(self.pid),
                )
                .map_err(|source| attach_error(probe, points.len(), &self.binary, source))?;
            self.links[slot] = Some(link);
        }
        Ok(())
    }

    /// Attaches the per-poll and per-wake probes: once the collector is ready to drain what
    /// they send (a busy program fills the ring buffer in tens of ms), and again after
    /// [`Attachment::detach_hot`].
    pub fn attach_hot(&mut self) -> Result<(), AttachError> {
        self.windows.open(crate::collect::monotonic_ns());
        if self.off_cpu.is_ok()
            && self.sched_links.is_empty()
            && let Err(why) = self.attach_sched()
        {
            // Not fatal: every poll then counts as on CPU, as before they existed.
            self.off_cpu = Err(why);
        }
        if self.sampling.is_ok() && self.sample_links.is_empty() {
            // Not fatal either: long polls are then told without where they compute.
            match sampler::attach(&mut self.ebpf) {
                Ok(links) => self.sample_links = links,
                Err(why) => self.sampling = Err(why),
            }
        }
        // Quiet until all are in place: each link takes milliseconds to attach, the collector
        // does not drain meanwhile, and a busy program's spawns, wakes and frees would fill the
        // ring buffer with events of polls not followed yet.
        self.pause_events(hot_slots())?;
        let attached = self.attach_where(|probe| probe.hot);
        self.pause_events(0)?;
        attached
    }

    /// Attaches the `sched_wakeup` and `sched_switch` tracepoints, wakeups first: a switch seen
    /// without its wakeup would count the run-queue wait as blocked.
    fn attach_sched(&mut self) -> Result<(), String> {
        for name in SCHED_PROGRAMS {
            let program = sched_program(&mut self.ebpf, name)?;
            let link = program
                .attach("sched", name)
                .map_err(|error| error.to_string())?;
            self.sched_links.push((name, link));
        }
        Ok(())
    }

    /// Takes the `sched_switch` and `sched_wakeup` links, to be dropped (detached) by the caller.
    fn take_sched_links(&mut self) -> Result<Vec<Detaching>, String> {
        let mut taken: Vec<Detaching> = Vec::new();
        for (name, link) in std::mem::take(&mut self.sched_links) {
            let program = sched_program(&mut self.ebpf, name)?;
            let link = program.take_link(link).map_err(|error| error.to_string())?;
            taken.push(Box::new(link));
        }
        Ok(taken)
    }

    /// Detaches the probes hit at every poll or wake: the target then runs at full speed, and
    /// the probe sees spawns, polls, wakes and completions only once they are attached again.
    pub fn detach_hot(&mut self) -> Result<(), AttachError> {
        // The probes fire until their link is gone: quiet meanwhile.
        self.pause_events(hot_slots())?;
        let mut links = Vec::new();
        let taken = self.take_hot_links(&mut links);
        match self.take_sched_links() {
            Ok(sched) => links.extend(sched),
            Err(why) => self.off_cpu = Err(why),
        }
        let samples = std::mem::take(&mut self.sample_links);
        match sampler::take_links(&mut self.ebpf, samples) {
            Ok(samples) => links.extend(samples),
            Err(why) => self.sampling = Err(why),
        }
        detach_together(links);
        self.pause_events(0)?;
        taken
    }

    /// Tells the programs of the hit slots in `mask` to emit nothing (they still count their
    /// hits), and the others to go on.
    fn pause_events(&mut self, mask: u64) -> Result<(), AttachError> {
        let map_error = |error| AttachError::Map(Box::new(error));
        let map = self
            .ebpf
            .map_mut("CONTROL")
            .ok_or(AttachError::Missing("CONTROL map"))?;
        let mut control: Array<_, u64> = Array::try_from(map).map_err(map_error)?;
        control.set(0, &mask, 0).map_err(map_error)
    }

    /// Takes the links of the per-poll probes into `links`, to be dropped (detached) there.
    fn take_hot_links(&mut self, links: &mut Vec<Detaching>) -> Result<(), AttachError> {
        for (slot, probe) in PROBES.iter().enumerate() {
            if !probe.hot {
                continue;
            }
            if let Some(link) = self.links[slot].take() {
                let link = program(&mut self.ebpf, self.mechanism.program(probe.program))?
                    .take_link(link)
                    .map_err(|source| attach_error(probe, 0, &self.binary, source))?;
                links.push(Box::new(link));
            }
        }
        Ok(())
    }

    /// Number of attach points over all kinds of probe.
    pub fn points(&self) -> usize {
        self.placed.iter().map(|placed| placed.points).sum()
    }

    /// Number of links (one per kind of probe that has sites).
    pub fn links(&self) -> usize {
        self.points
            .iter()
            .filter(|points| !points.is_empty())
            .count()
    }

    /// Hits of each of [`PROBES`] so far, over all CPUs.
    pub fn hits(&self) -> Result<Vec<u64>, AttachError> {
        let map_error = |error| AttachError::Map(Box::new(error));
        let map = self
            .ebpf
            .map("HITS")
            .ok_or(AttachError::Missing("HITS map"))?;
        let hits: PerCpuArray<_, u64> = PerCpuArray::try_from(map).map_err(map_error)?;
        (0..PROBES.len() as u32)
            .map(|slot| Ok(hits.get(&slot, 0).map_err(map_error)?.iter().sum()))
            .collect()
    }

    /// The event ring buffers, one per CPU; can be taken once.
    pub fn take_events(&mut self) -> Result<Vec<RingBuf<MapData>>, AttachError> {
        self.events
            .take()
            .ok_or(AttachError::Missing("EVENTS rings"))
    }

    /// What the kernel side keeps for thread `tid` of the target: the poll it is in, and
    /// where it last blocked inside one. `None` for a thread that never polled while probed.
    pub fn thread(&self, tid: u32) -> Option<Current> {
        let map = self.ebpf.map("CURRENT")?;
        let threads: aya::maps::HashMap<_, u32, Current> =
            aya::maps::HashMap::try_from(map).ok()?;
        threads.get(&tid, 0).ok()
    }

    /// Events the kernel side could not reserve room for, per CPU.
    pub fn drops_per_cpu(&self) -> Result<Vec<u64>, AttachError> {
        let map = self
            .ebpf
            .map("DROPS")
            .ok_or(AttachError::Missing("DROPS map"))?;
        let map_error = |error| AttachError::Map(Box::new(error));
        let drops: PerCpuArray<_, u64> = PerCpuArray::try_from(map).map_err(map_error)?;
        Ok(drops
            .get(&0, 0)
            .map_err(map_error)?
            .iter()
            .copied()
            .collect())
    }
}

/// How each `block_on` poll site's future says it returned, by site index (the cookie's).
fn block_on_done(plan: &ProbePlan) -> Vec<(u32, BlockOnDone)> {
    plan.sites_of(SiteKind::BlockOnPoll)
        .filter_map(|(index, site)| {
            let body = plan.task_types.get(site.task_type?)?.block_on.as_ref()?;
            Some((index as u32, body.done))
        })
        .collect()
}

fn fill_block_on_done(ebpf: &mut Ebpf, done: &[(u32, BlockOnDone)]) -> Result<(), AttachError> {
    let map_error = |error| AttachError::Map(Box::new(error));
    let map = ebpf
        .map_mut("BLOCK_ON_DONE")
        .ok_or(AttachError::Missing("BLOCK_ON_DONE map"))?;
    let mut map: aya::maps::HashMap<_, u32, BlockOnDone> =
        aya::maps::HashMap::try_from(map).map_err(map_error)?;
    for (site, done) in done {
        map.insert(site, done, 0).map_err(map_error)?;
    }
    Ok(())
}

/// The hit slots of the hot kinds of probe, as a mask for [`Attachment::pause_events`].
fn hot_slots() -> u64 {
    PROBES
        .iter()
        .enumerate()
        .filter(|(_, probe)| probe.hot)
        .fold(0, |mask, (slot, _)| mask | 1 << slot)
}

/// What the programs are told at load: the target's task layout, their mode, how often to wake
/// the collector, and where a thread's CPU time is (`None`: unknown).
fn program_config(
    plan: &ProbePlan,
    ring_bytes_per_cpu: u32,
    count_only: bool,
    task_cpu_time: Option<&u64>,
) -> Config {
    Config {
        header_state: plan.layout.header_state,
        header_vtable: plan.layout.header_vtable,
        vtable_id_offset: plan.layout.vtable_id_offset,
        task_id_offset: plan.uniform_task_id_offset(),
        ready: 1,
        mode: if count_only {
            MODE_COUNT_ONLY
        } else {
            MODE_EVENTS
        },
        wake_every: wake_every(ring_bytes_per_cpu),
        task_cpu_time: task_cpu_time.copied().unwrap_or(0),
    }
}

/// The tracepoint programs that split each poll into on-CPU, blocked and preempted time.
const SCHED_PROGRAMS: [&str; 2] = ["sched_wakeup", "sched_switch"];

fn sched_program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut TracePoint, String> {
    ebpf.program_mut(name)
        .ok_or("no sched tracepoint program")?
        .try_into()
        .map_err(|error: ProgramError| error.to_string())
}

/// Loads the [`SCHED_PROGRAMS`]; they attach with the per-poll probes. Not fatal: without them
/// every poll counts as on CPU, as before they existed.
fn load_sched_programs(ebpf: &mut Ebpf) -> Result<(), String> {
    mount_tracefs();
    for name in SCHED_PROGRAMS {
        sched_program(ebpf, name)?
            .load()
            .map_err(|error| error.to_string())?;
    }
    Ok(())
}

/// Tracepoints are found by name in tracefs, which systemd mounts but containers often lack.
fn mount_tracefs() {
    const AT: &str = "/sys/kernel/tracing";
    if Path::new(AT).join("events").exists()
        || Path::new("/sys/kernel/debug/tracing/events").exists()
    {
        return;
    }
    let (source, at, kind) = (c"nodev", c"/sys/kernel/tracing", c"tracefs");
    // SAFETY: plain C strings; a failure just leaves the tracepoint unattached.
    unsafe {
        libc::mount(
            source.as_ptr(),
            at.as_ptr(),
            kind.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
}

/// A link taken from its program: dropping it detaches it.
pub(super) type Detaching = Box<dyn Send>;

/// Drops every link at once, each on a thread of its own. Each detach waits for the kernel's
/// RCU grace periods (30-80 ms each here): one after the other, the eleven links of the per-poll
/// probes took half a second, and those not yet detached went on trapping and running their
/// programs: 42-52 ms of the target's CPU after each window, against 72 ms in it (server
/// benchmark). Waiting together, they share the grace periods: 4-14 ms after each window.
fn detach_together(links: Vec<Detaching>) {
    std::thread::scope(|scope| {
        for link in links {
            scope.spawn(move || drop(link));
        }
    });
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut UProbe, AttachError> {
    ebpf.program_mut(name)
        .ok_or(AttachError::Missing(name))?
        .try_into()
        .map_err(|_| AttachError::Missing(name))
}

fn attach_error(
    probe: &ProbeKind,
    sites: usize,
    binary: &Path,
    source: ProgramError,
) -> AttachError {
    AttachError::Attach {
        program: probe.program,
        sites,
        binary: binary.display().to_string(),
        source: Box::new(source),
    }
}

/// The points of one kind of probe, each at the cheapest instruction it may sit on, with the
/// cookie that tells the programs what the site is, where its argument is and where to count.
fn place(
    plan: &ProbePlan,
    slot: usize,
    probe: &ProbeKind,
) -> (Vec<UProbeAttachPoint<'static>>, Placed) {
    let mut placed = Placed::default();
    let points = plan
        .sites
        .iter()
        .enumerate()
        .filter(|(_, site)| probe.sites.contains(&site.kind))
        .map(|(index, site)| {
            // A return probe hijacks the return address at entry; others may move inside.
            let entry = if probe.returns {
                &site.at_start
            } else {
                &site.cheapest
            };
            placed.points += 1;
            placed.single_stepped += usize::from(entry.stepping == Stepping::SingleStepped);
            placed.moved += usize::from(entry.offset != 0);
            if placed.instruction.is_empty() {
                placed.instruction = entry.instruction.clone();
            }
            let kind = site.kind.cookie_kind();
            UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(site.file_offset + entry.offset),
                cookie: Some(cookie::pack(
                    index as u32,
                    kind,
                    entry.argument as u8,
                    slot as u8,
                )),
            }
        })
        .collect();
    (points, placed)
}

// Two functions to calibrate the price of a hit on: one whose first instruction the kernel
// emulates (push), one it single-steps (mov). Both return 0, so the return probe attached to the
// first (a spawn probe) sees no task.
std::arch::global_asm!(
    ".pushsection .text.async_inspect_calibrate,\"ax\",@progbits",
    ".globl async_inspect_calibrate_emulated",
    ".type async_inspect_calibrate_emulated,@function",
    "async_inspect_calibrate_emulated:",
    "push rbx",
    "pop rbx",
    "xor eax, eax",
    "ret",
    ".globl async_inspect_calibrate_stepped",
    ".type async_inspect_calibrate_stepped,@function",
    "async_inspect_calibrate_stepped:",
    "mov rax, 0",
    "ret",
    ".popsection",
);

unsafe extern "C" {
    fn async_inspect_calibrate_emulated() -> u64;
    fn async_inspect_calibrate_stepped() -> u64;
}

/// How many events a CPU submits between wake-ups of the collector: its ring is then a quarter
/// full.
fn wake_every(ring_bytes_per_cpu: u32) -> u64 {
    // Each record has an 8-byte header in the ring.
    let record = (probe_common::EVENT_SIZE + 8) as u64;
    (u64::from(ring_bytes_per_cpu) / 4 / record).max(1)
}

/// The hit counter calibration uses: no kind of probe counts there.
const CALIBRATION_SLOT: u8 = probe_common::HIT_SLOTS as u8 - 1;

impl Attachment {
    /// Measures what a hit costs on this machine: this thread's CPU time over calls of the two
    /// calibration functions, probed as the target is and not. Takes a few tens of ms; None when
    /// the probes cannot be placed on this process.
    pub fn calibrate(&mut self) -> Option<crate::overhead::Prices> {
        let emulated = async_inspect_calibrate_emulated as *const () as u64;
        let stepped = async_inspect_calibrate_stepped as *const () as u64;
        let bare = time_calls(emulated);
        let emulated_ns = self
            .time_probed("panic_start", emulated)?
            .saturating_sub(bare);
        let stepped_ns = self
            .time_probed("panic_start", stepped)?
            .saturating_sub(bare);
        let returned_ns = self
            .time_probed("spawn_return", emulated)?
            .saturating_sub(bare);
        Some(crate::overhead::Prices {
            emulated_ns,
            single_stepped_ns: stepped_ns.max(emulated_ns),
            // The return probe's entry is an emulated hit; the rest is its trampoline.
            return_ns: returned_ns.saturating_sub(emulated_ns),
            calibrated: true,
        })
    }

    /// Nanoseconds of this thread's CPU per call of `function`, with `program` attached to it.
    fn time_probed(&mut self, program_name: &'static str, function: u64) -> Option<u64> {
        let (path, offset) = own_file_offset(function)?;
        let pid = NonZeroU32::new(std::process::id())?;
        let point = UProbeAttachPoint {
            location: UProbeAttachLocation::AbsoluteOffset(offset),
            cookie: Some(cookie::pack(0, 0, 0, CALIBRATION_SLOT)),
        };
        let uprobe = program(&mut self.ebpf, self.mechanism.program(program_name)).ok()?;
        let link = uprobe
            .attach([point], &path, UProbeScope::OneProcess(pid))
            .ok()?;
        let took = time_calls(function);
        uprobe.detach(link).ok()?;
        Some(took)
    }
}

/// The median, over a few rounds, of this thread's CPU nanoseconds per call of `function`.
fn time_calls(function: u64) -> u64 {
    const CALLS: u64 = 2_000;
    // SAFETY: both calibration functions take nothing, touch nothing and return 0.
    let call: unsafe extern "C" fn() -> u64 = unsafe { std::mem::transmute(function as *const ()) };
    let mut rounds: Vec<u64> = (0..3)
        .map(|_| {
            let start = thread_cpu_ns();
            for _ in 0..CALLS {
                // SAFETY: see above.
                std::hint::black_box(unsafe { call() });
            }
            thread_cpu_ns().saturating_sub(start) / CALLS
        })
        .collect();
    rounds.sort_unstable();
    rounds[1]
}

fn thread_cpu_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// The file and file offset that hold this process's code at `address` (from /proc/self/maps).
fn own_file_offset(address: u64) -> Option<(std::path::PathBuf, u64)> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let (start, end) = (
            u64::from_str_radix(start, 16).ok()?,
            u64::from_str_radix(end, 16).ok()?,
        );
        let offset = u64::from_str_radix(fields.nth(1)?, 16).ok()?;
        let path = fields.nth(2)?;
        (start <= address && address < end && path.starts_with('/'))
            .then(|| (path.into(), address - start + offset))
    })
}
