//! Finding objects in the target's heap by a word they contain.

use std::collections::HashSet;

use super::{Mapping, MemoryError, ProcessMemory};

/// How much of a mapping [`ProcessMemory::scan_words`] reads per system call: large enough that
/// syscall overhead vanishes, small enough that one unreadable page loses little.
const SCAN_CHUNK: u64 = 1024 * 1024;

/// What a [`ProcessMemory::scan_words`] covered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanStats {
    pub bytes_scanned: u64,
    pub mappings_scanned: usize,
    /// Chunks that could not be read (unmapped since the maps were read, or device memory):
    /// skipped, so objects in them are missed.
    pub unreadable_chunks: usize,
}

impl ProcessMemory {
    /// Finds objects by a word they contain: calls `found(object, word)` for every address
    /// `object` with `object % align == 0` whose little-endian 8-byte word at
    /// `object + word_offset` is in `wanted`. Only mappings that
    /// [may hold heap objects](Mapping::may_hold_heap_objects) are read.
    ///
    /// Every copy of a wanted value at the right alignment is reported, wherever it came from
    /// (a stale copy in freed memory, a pointer on a thread stack): callers verify each hit.
    /// A chunk that cannot be read is counted in [`ScanStats::unreadable_chunks`] and skipped.
    /// `align` must be a power of two.
    pub fn scan_words(
        &self,
        mappings: &[Mapping],
        wanted: &HashSet<u64>,
        align: u64,
        word_offset: u64,
        mut found: impl FnMut(u64, u64),
    ) -> Result<ScanStats, MemoryError> {
        if !align.is_power_of_two() {
            return Err(MemoryError::InvalidAlign { align });
        }
        let mut stats = ScanStats::default();
        let Some(filter) = WordFilter::new(wanted) else {
            return Ok(stats);
        };
        // Bigger than the array: one candidate per chunk at most, which the loop handles.
        let step = usize::try_from(align).unwrap_or(usize::MAX);
        let residue = word_offset & (align - 1);
        // Chunks overlap by 7 bytes so a word straddling two chunks is still read whole.
        let mut buffer = vec![0u8; (SCAN_CHUNK + 7) as usize];
        for mapping in mappings.iter().filter(|m| m.may_hold_heap_objects()) {
            stats.mappings_scanned += 1;
            let mut chunk = mapping.start;
            while chunk < mapping.end {
                // Words starting in [chunk, words_end) belong to this chunk.
                let words_end = mapping.end.min(chunk.saturating_add(SCAN_CHUNK));
                let read_end = mapping.end.min(words_end.saturating_add(7));
                // At most SCAN_CHUNK + 7: fits the buffer.
                let bytes = &mut buffer[..(read_end - chunk) as usize];
                if self.read(chunk, bytes).is_err() {
                    stats.unreadable_chunks += 1;
                    chunk = words_end;
                    continue;
                }
                stats.bytes_scanned += words_end - chunk;
                let words_len = (words_end - chunk) as usize;
                // The first word address >= chunk that is ≡ word_offset (mod align).
                let mut at = (residue.wrapping_sub(chunk) & (align - 1)) as usize;
                while at < words_len {
                    let Some(word) = bytes.get(at..at + 8) else {
                        break;
                    };
                    let mut le = [0u8; 8];
                    le.copy_from_slice(word);
                    let word = u64::from_le_bytes(le);
                    if filter.contains(word)
                        && let Some(object) = (chunk + at as u64).checked_sub(word_offset)
                    {
                        found(object, word);
                    }
                    at = at.saturating_add(step);
                }
                chunk = words_end;
            }
        }
        Ok(stats)
    }
}

/// Membership test for the scan's inner loop, which sees every word of the heap and must
/// reject almost all of them without hashing: a range check, then a 64 Ki-bit map of a few
/// address bits, and only then the set.
struct WordFilter<'a> {
    min: u64,
    span: u64,
    bits: Vec<u64>,
    set: &'a HashSet<u64>,
}

impl<'a> WordFilter<'a> {
    const BITS: usize = 1 << 16;

    fn new(set: &'a HashSet<u64>) -> Option<Self> {
        let min = *set.iter().min()?;
        let max = *set.iter().max()?;
        let mut bits = vec![0u64; Self::BITS / 64];
        for &value in set {
            let key = Self::key(value);
            bits[key / 64] |= 1 << (key % 64);
        }
        Some(Self {
            min,
            span: max - min,
            bits,
            set,
        })
    }

    /// Wanted words are pointers: the low 3 bits are usually zero and the high ones shared, so
    /// the bits just above carry the information.
    fn key(value: u64) -> usize {
        ((value >> 3) ^ (value >> 19)) as usize & (Self::BITS - 1)
    }

    #[inline]
    fn contains(&self, value: u64) -> bool {
        if value.wrapping_sub(self.min) > self.span {
            return false;
        }
        let key = Self::key(value);
        self.bits[key / 64] & (1 << (key % 64)) != 0 && self.set.contains(&value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::testing::*;

    #[repr(C, align(128))]
    struct Fake {
        state: u64,
        queue: u64,
        marker: u64,
        rest: [u64; 29],
    }

    fn fake(marker: u64) -> Box<Fake> {
        let mut rest = [0u64; 29];
        // Copies of the marker at offsets 24 and 40 sit at the wrong place in an aligned
        // object: never reported. The one at offset 144 is at offset 16 of the 128-aligned
        // address object + 128, which the scan must report.
        rest[0] = marker;
        rest[2] = marker;
        rest[15] = marker;
        Box::new(Fake {
            state: 0xfeed_0001,
            queue: 0xfeed_0002,
            marker,
            rest,
        })
    }

    fn unique_marker(salt: u64) -> u64 {
        0x5eed_0000_0000_0000 ^ (u64::from(std::process::id()) << 16) ^ salt
    }

    #[test]
    fn a_scan_of_one_object_reports_exactly_its_aligned_copies() {
        let marker = unique_marker(1);
        let object = fake(marker);
        let address = &raw const *object as u64;
        assert_eq!(address % 128, 0);
        let only_the_object = anonymous(address, address + size_of::<Fake>() as u64);
        let mut found = Vec::new();
        let stats = own()
            .scan_words(
                std::slice::from_ref(&only_the_object),
                &HashSet::from([marker, 1, u64::MAX]),
                128,
                16,
                |at, word| found.push((at, word)),
            )
            .expect("scan");
        assert_eq!(found, [(address, marker), (address + 128, marker)]);
        assert_eq!(
            stats,
            ScanStats {
                bytes_scanned: 256,
                mappings_scanned: 1,
                unreadable_chunks: 0
            }
        );
        assert_eq!(
            (object.state, object.queue, object.rest[1]),
            (0xfeed_0001, 0xfeed_0002, 0)
        );
        assert!(matches!(
            own().scan_words(
                &[only_the_object],
                &HashSet::from([marker]),
                24,
                0,
                |_, _| {}
            ),
            Err(MemoryError::InvalidAlign { align: 24 })
        ));
    }

    #[test]
    fn a_scan_of_this_process_finds_a_boxed_object() {
        let marker = unique_marker(2);
        let object = fake(marker);
        let address = &raw const *object as u64;
        let memory = own();
        let mappings = memory.mappings().expect("maps");
        let mut found = Vec::new();
        let stats = memory
            .scan_words(&mappings, &HashSet::from([marker]), 128, 16, |at, word| {
                assert_eq!(word, marker);
                found.push(at);
            })
            .expect("scan");
        assert!(
            stats.bytes_scanned > 0 && stats.mappings_scanned > 0,
            "{stats:?}"
        );
        // The marker is also in `wanted`'s storage and maybe on a stack, which can line up by
        // chance: hits are candidates, checked by their other fields as `dump` does.
        let is_fake = |at: u64| {
            memory.read_u64(at).ok() == Some(0xfeed_0001)
                && memory.read_u64(at + 8).ok() == Some(0xfeed_0002)
        };
        let verified: Vec<u64> = found.iter().copied().filter(|&at| is_fake(at)).collect();
        assert_eq!(verified, [address], "{found:x?} {stats:?}");
        assert_eq!(found.iter().filter(|&&at| at == address + 128).count(), 1);
    }

    #[test]
    fn a_scan_reads_words_across_chunk_boundaries_and_survives_holes() {
        let marker = 0x1122_3344_5566_7788u64;
        let mut bytes = vec![0u8; 2 * SCAN_CHUNK as usize + 64];
        let at = SCAN_CHUNK as usize - 3;
        bytes[at..at + 8].copy_from_slice(&marker.to_le_bytes());
        let start = bytes.as_ptr() as u64;
        let half = HalfMapped::new();
        let hole = half.address() + half.page as u64;
        let mappings = [
            anonymous(hole, hole + half.page as u64),
            anonymous(start, start + bytes.len() as u64),
        ];
        let mut found = Vec::new();
        let stats = own()
            .scan_words(&mappings, &HashSet::from([marker]), 1, 0, |at, _| {
                found.push(at)
            })
            .expect("scan");
        assert_eq!(found, [start + at as u64]);
        assert_eq!(stats.unreadable_chunks, 1);
        assert_eq!(stats.bytes_scanned, bytes.len() as u64);
        // With the word 5 bytes into the object.
        found.clear();
        own()
            .scan_words(&mappings, &HashSet::from([marker]), 1, 5, |at, _| {
                found.push(at)
            })
            .expect("scan");
        assert_eq!(found, [start + at as u64 - 5]);
    }
}
