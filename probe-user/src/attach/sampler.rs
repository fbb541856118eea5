//! The timer sample of every CPU ([`PROGRAM`]): where a thread of the target inside a poll is
//! running, noted in its `Current` entry, so that a poll that computes for long is told with
//! the line computing, as a blocked one is with the line blocking.

use aya::{
    Ebpf,
    programs::{
        PerfEvent, ProgramError,
        perf_event::{
            PerfEventConfig, PerfEventLinkId, PerfEventScope, SamplePolicy, SoftwareEvent,
        },
    },
};

const PROGRAM: &str = "sample_running";
/// Nanoseconds of CPU between two samples of a CPU, 99 a second: a computation worth warning
/// about (10 ms and more) is seen in one, a CPU that runs none of the target's polls pays a map
/// lookup per sample. Not 100, so as not to run in step with timers. A fixed period, not a
/// frequency: the kernel starts a frequency at a period of 1 and adapts it, and the timer
/// interrupts meanwhile are charged to whichever thread they interrupt, the target's polls
/// among them (measured: 1 ms polls took 10 ms of their thread's CPU time).
const PERIOD_NS: u64 = 1_000_000_000 / 99;

pub(super) fn load(ebpf: &mut Ebpf) -> Result<(), String> {
    program(ebpf)?.load().map_err(|error| error.to_string())
}

/// One sampling event per online CPU, for every process: the program keeps the target's.
pub(super) fn attach(ebpf: &mut Ebpf) -> Result<Vec<PerfEventLinkId>, String> {
    let cpus = aya::util::online_cpus().map_err(|(_, error)| error.to_string())?;
    let program = program(ebpf)?;
    let mut links = Vec::with_capacity(cpus.len());
    for cpu in cpus {
        match program.attach(
            PerfEventConfig::Software(SoftwareEvent::CpuClock),
            PerfEventScope::AllProcessesOneCpu { cpu },
            SamplePolicy::Period(PERIOD_NS),
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

pub(super) fn detach(ebpf: &mut Ebpf, links: Vec<PerfEventLinkId>) -> Result<(), String> {
    let program = program(ebpf)?;
    for link in links {
        program.detach(link).map_err(|error| error.to_string())?;
    }
    Ok(())
}

fn program(ebpf: &mut Ebpf) -> Result<&mut PerfEvent, String> {
    ebpf.program_mut(PROGRAM)
        .ok_or("no timer sample program")?
        .try_into()
        .map_err(|error: ProgramError| error.to_string())
}
