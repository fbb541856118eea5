//! The event stream: a ring buffer per CPU, created here once the programs are loaded and put in
//! their `EVENTS` array of maps at each CPU's index, where a program finds the ring of the CPU
//! it runs on. A single ring shared by every CPU made each event take a contended lock: with
//! two workers polling, reserving room cost three times what it costs uncontended (about half
//! of what the programs cost per event), and more CPUs contend more.

use aya::{
    Ebpf,
    maps::{ArrayOfMaps, Map, MapData, RingBuf},
};

use super::AttachError;

/// The name each ring shows in `bpftool map` (the kernel keeps 15 bytes).
const RING_NAME: &str = "ai_events_cpu";

/// The smallest ring a CPU gets, however many CPUs share the total: a burst on one CPU must
/// still fit in what the collector drains every tick.
const MIN_RING_BYTES: u32 = 256 * 1024;

/// What each CPU's ring gets of `total_bytes`: an equal share, as a power of two (as the kernel
/// requires), no smaller than [`MIN_RING_BYTES`].
pub fn ring_bytes_per_cpu(total_bytes: u32, cpus: u32) -> u32 {
    let share = total_bytes / cpus.max(1);
    // The largest power of two in the share.
    share
        .checked_ilog2()
        .map_or(0, |power| 1 << power)
        .max(MIN_RING_BYTES)
}

/// The number of rings: one per possible CPU (a CPU brought online later has its ring).
pub fn cpus() -> u32 {
    aya::util::nr_cpus().map_or(1, |cpus| cpus.get())
}

/// Creates a ring of `bytes` for each of `cpus` CPUs and puts it in the programs' `EVENTS`
/// array (which the loader sized to `cpus`). The array holds the rings for the programs; the
/// returned handles are the collector's.
pub(super) fn create(
    ebpf: &mut Ebpf,
    cpus: u32,
    bytes: u32,
) -> Result<Vec<RingBuf<MapData>>, AttachError> {
    let map = |error| AttachError::Map(Box::new(error));
    let mut array: ArrayOfMaps<&mut MapData, MapData> = ebpf
        .map_mut("EVENTS")
        .ok_or(AttachError::Missing("EVENTS map"))?
        .try_into()
        .map_err(map)?;
    (0..cpus)
        .map(|cpu| {
            let definition = aya_obj::Map::new_from_params(
                aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_RINGBUF as u32,
                0,
                0,
                bytes,
                0,
            );
            let ring = MapData::create(definition, RING_NAME, None).map_err(map)?;
            array.set(cpu, &ring, 0).map_err(map)?;
            RingBuf::try_from(Map::RingBuf(ring)).map_err(map)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cpu_gets_a_power_of_two_share_of_the_total_but_never_a_tiny_ring() {
        const MIB: u32 = 1024 * 1024;
        assert_eq!(ring_bytes_per_cpu(4 * MIB, 2), 2 * MIB);
        assert_eq!(ring_bytes_per_cpu(4 * MIB, 3), MIB);
        assert_eq!(ring_bytes_per_cpu(4 * MIB, 1), 4 * MIB);
        assert_eq!(ring_bytes_per_cpu(4 * MIB, 64), MIN_RING_BYTES);
        assert_eq!(ring_bytes_per_cpu(4 * MIB, 0), 4 * MIB);
    }
}
