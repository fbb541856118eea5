//! Attach: load the embedded eBPF object with the plan's layout, and attach each program once as
//! a `uprobe.multi` link over all of its sites, scoped to one process. Requires Linux >= 6.6
//! (uprobe_multi with a process-wide pid filter).
//!
//! Everything is owned by [`Attachment`]: dropping it (or the process dying, since links are file
//! descriptors) detaches every probe.

use std::{num::NonZeroU32, path::Path};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{
        UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
    },
    sys::UProbeMultiFeature,
};
use probe_common::Config;

use crate::resolve::{ProbePlan, SiteKind};

static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe-ebpf"));

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(
        "attaching uprobes needs root, or the capabilities CAP_BPF and CAP_PERFMON (plus CAP_SYS_PTRACE \
         for --pid); try again with sudo"
    )]
    NotPrivileged,
    #[error(
        "this kernel cannot attach uprobe_multi links scoped to a process (Linux >= 6.6 is needed; \
         running {kernel})"
    )]
    NoUprobeMulti { kernel: String },
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

/// The loaded programs and their links. Dropping it detaches everything.
pub struct Attachment {
    ebpf: Ebpf,
    /// Number of attach points over all links.
    pub points: usize,
    pub links: usize,
}

/// Checks privileges and kernel support before anything is loaded, for a clear error.
pub fn preflight() -> Result<(), AttachError> {
    if !privileged() {
        return Err(AttachError::NotPrivileged);
    }
    match aya::sys::is_uprobe_multi_supported(UProbeMultiFeature::ProcessScopedPidFilter) {
        Ok(true) => Ok(()),
        Ok(false) => Err(AttachError::NoUprobeMulti {
            kernel: kernel_release(),
        }),
        Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(AttachError::NotPrivileged)
        }
        // The probe itself failed for another reason: let the real attach report it.
        Err(_) => Ok(()),
    }
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
    /// e.g. `/proc/PID/exe`) for process `pid` only.
    pub fn attach(
        plan: &ProbePlan,
        binary: &Path,
        pid: NonZeroU32,
        ring_bytes: u32,
    ) -> Result<Self, AttachError> {
        let config = Config {
            header_state: plan.layout.header_state,
            header_vtable: plan.layout.header_vtable,
            vtable_id_offset: plan.layout.vtable_id_offset,
            ready: 1,
        };
        let mut ebpf = EbpfLoader::new()
            .override_global("CONFIG", &config, true)
            .map_max_entries("EVENTS", ring_bytes)
            .load(PROGRAMS)
            .map_err(|error| AttachError::Load(Box::new(error)))?;
        let (mut points_attached, mut links) = (0, 0);
        // Each program and the sites it covers; the cookie is the site index, plus the event
        // kind in the high half for task_op.
        let groups: [(&'static str, &[SiteKind]); 5] = [
            ("poll_start", &[SiteKind::Poll]),
            ("poll_end", &[SiteKind::Poll]),
            (
                "spawn_return",
                &[
                    SiteKind::SpawnMultiThread,
                    SiteKind::SpawnCurrentThread,
                    SiteKind::CellNew,
                ],
            ),
            (
                "task_op",
                &[
                    SiteKind::Dealloc,
                    SiteKind::Shutdown,
                    SiteKind::WakeByVal,
                    SiteKind::WakeByRef,
                    SiteKind::CloneWaker,
                    SiteKind::DropWaker,
                    SiteKind::Complete,
                ],
            ),
            ("panic_start", &[SiteKind::Panic]),
        ];
        for (program, kinds) in groups {
            let points: Vec<UProbeAttachPoint<'static>> = plan
                .sites
                .iter()
                .enumerate()
                .filter(|(_, site)| kinds.contains(&site.kind))
                .map(|(index, site)| {
                    let kind = site.kind.task_op_event().map_or(0, |kind| kind as u64);
                    UProbeAttachPoint {
                        location: UProbeAttachLocation::AbsoluteOffset(site.file_offset),
                        cookie: Some(index as u64 | kind << 32),
                    }
                })
                .collect();
            if points.is_empty() {
                continue;
            }
            let probe: &mut UProbe = ebpf
                .program_mut(program)
                .ok_or(AttachError::Missing(program))?
                .try_into()
                .map_err(|_| AttachError::Missing(program))?;
            let attach_error = |source| AttachError::Attach {
                program,
                sites: points.len(),
                binary: binary.display().to_string(),
                source: Box::new(source),
            };
            probe.load().map_err(attach_error)?;
            probe
                .attach(points.iter().copied(), binary, UProbeScope::OneProcess(pid))
                .map_err(attach_error)?;
            points_attached += points.len();
            links += 1;
        }
        Ok(Self {
            ebpf,
            points: points_attached,
            links,
        })
    }

    /// The event ring buffer; can be taken once.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, AttachError> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .ok_or(AttachError::Missing("EVENTS map"))?;
        RingBuf::try_from(map).map_err(|error| AttachError::Map(Box::new(error)))
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
