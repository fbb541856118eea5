//! The timer sample of every CPU ([`PROGRAM`]): where a thread of the target inside a poll is
//! running, noted in its `Current` entry, so that a poll that computes for long is told with
//! the line computing, as a blocked one is with the line blocking, and counted in its poll's
//! end, which bounds the poll's time on CPU from above.

use probe_common::SAMPLE_PERIOD_NS;

use aya::{
    Ebpf,
    programs::{
        PerfEvent, ProgramError,
        perf_event::{
            PerfEventConfig, PerfEventLinkId, PerfEventScope, SamplePolicy, SoftwareEvent,
        },
    },
};

use super::Detaching;

const PROGRAM: &str = "sample_running";
pub(super) fn load(ebpf: &mut Ebpf) -> Result<(), String> {
    program(ebpf)?.load().map_err(|error| error.to_string())
}

/// One sampling event per online CPU, for every process: the program keeps the target's; a
/// CPU that runs none of the target's polls pays a map lookup per sample. The CPUs are sampled
/// [`SAMPLE_PERIOD_NS`] apart, a fixed period, not a frequency: the kernel starts a frequency at
/// a period of 1 and adapts it, and the timer interrupts meanwhile are charged to whichever
/// thread they interrupt, the target's polls among them (measured in the busy fixture: 1 ms
/// polls showed 10 ms of their thread's CPU time with a frequency, none with a period).
pub(super) fn attach(ebpf: &mut Ebpf) -> Result<Vec<PerfEventLinkId>, String> {
    let cpus = aya::util::online_cpus().map_err(|(_, error)| error.to_string())?;
    let program = program(ebpf)?;
    let mut links = Vec::with_capacity(cpus.len());
    for cpu in cpus {
        match program.attach(
            PerfEventConfig::Software(SoftwareEvent::CpuClock),
            PerfEventScope::AllProcessesOneCpu { cpu },
            SamplePolicy::Period(SAMPLE_PERIOD_NS),
            false,
        ) {
            Ok(link) => links.push(link),
            Err(error) => {
                for link in links {
                    let _ = program.detach(link);
                }
                return Err(error.to_string());
            }
        }
    }
    Ok(links)
}

/// Takes the links, to be dropped (detached) by the caller.
pub(super) fn take_links(
    ebpf: &mut Ebpf,
    links: Vec<PerfEventLinkId>,
) -> Result<Vec<Detaching>, String> {
    let program = program(ebpf)?;
    links
        .into_iter()
        .map(|link| {
            let link = program.take_link(link).map_err(|error| error.to_string())?;
            Ok(Box::new(link) as Detaching)
        })
        .collect()
}

fn program(ebpf: &mut Ebpf) -> Result<&mut PerfEvent, String> {
    ebpf.program_mut(PROGRAM)
        .ok_or("no timer sample program")?
        .try_into()
        .map_err(|error: ProgramError| error.to_string())
}
