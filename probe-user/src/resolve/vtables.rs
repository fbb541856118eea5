//! Finding tokio's task vtables in the ELF.
//!
//! tokio (1.32..=1.54) gives every task type `T, S` one anonymous static
//! `tokio::runtime::task::raw::Vtable`, 0x50 bytes:
//!
//! | offset | field                   |
//! |--------|-------------------------|
//! | 0x00   | `poll::<T, S>`          |
//! | 0x08   | `schedule::<S>`         |
//! | 0x10   | `dealloc::<T, S>`       |
//! | 0x18   | `try_read_output`       |
//! | 0x20   | `drop_join_handle_slow` |
//! | 0x28   | `drop_abort_handle`     |
//! | 0x30   | `shutdown::<T, S>`      |
//! | 0x38   | `trailer_offset`        |
//! | 0x40   | `scheduler_offset`      |
//! | 0x48   | `id_offset`             |
//!
//! (`tokio_unstable` appends `spawn_location_offset`; the first 0x50 bytes do not change.)
//!
//! The vtable has no symbol, so it is found by what points at `raw::poll::<T, S>`. How a pointer
//! word is stored depends on how the binary was linked:
//!
//! - PIE (`ET_DYN`): the word is filled at load time by a relative dynamic relocation, either
//!   `R_*_RELATIVE` in `.rela.dyn` (explicit addend = the target; the file holds 0) or, with
//!   `-z pack-relative-relocs`, a `.relr.dyn` entry (implicit addend = the word in the file);
//! - non-PIE (`ET_EXEC`): the word holds the absolute address in the file.
//!
//! [`PointerIndex`] gathers every word that holds a code pointer, in whichever of these forms,
//! once, so that looking up hundreds of task types in binaries with hundreds of thousands of
//! relocations stays linear.

use std::collections::{HashMap, HashSet};

use object::{
    Architecture, Object as _, ObjectKind, ObjectSection as _, ObjectSymbol as _,
    ObjectSymbolTable as _, RelocationFlags, RelocationKind, RelocationTarget, SectionFlags, elf,
    read::elf::SectionHeader as _,
};

/// The size of the part of `Vtable` read here (everything up to `id_offset`).
pub const VTABLE_SIZE: u64 = 0x50;

const POLL: u64 = 0x00;
const DEALLOC: u64 = 0x10;
const SHUTDOWN: u64 = 0x30;
const TRAILER_OFFSET: u64 = 0x38;
const SCHEDULER_OFFSET: u64 = 0x40;
const ID_OFFSET: u64 = 0x48;
/// The seven function pointers: `poll` .. `shutdown`.
const FUNCTION_WORDS: u64 = 7;

/// `Header { state, queue_next, vtable, owner_id }`: every other field of the task cell lies past
/// it.
const HEADER_SIZE: u64 = 0x20;
/// A task cell larger than this is not plausible: the offsets would be garbage.
const MAX_CELL_OFFSET: u64 = 1 << 20;

/// One task type's `tokio::runtime::task::raw::Vtable`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskVtable {
    /// Link-time virtual address of the vtable (what a task header's `vtable` field holds, plus
    /// the load bias).
    pub address: u64,
    /// `raw::dealloc::<T, S>` (link-time address).
    pub dealloc: u64,
    /// `raw::shutdown::<T, S>` (link-time address).
    pub shutdown: u64,
    /// Offset of the `Trailer` from the task header.
    pub trailer_offset: u64,
    /// Offset of the scheduler handle from the task header.
    pub scheduler_offset: u64,
    /// Offset of the task id from the task header.
    pub id_offset: u64,
}

/// For each `raw::poll::<T, S>` address (index-aligned with `poll_addresses`), the vtable whose
/// first word points at it: `None` where no plausible vtable does. Where several do (possible
/// in principle if two statics were not merged), the lowest-addressed valid one is taken.
pub fn find_task_vtables(
    file: &object::File<'_>,
    poll_addresses: &[u64],
) -> Vec<Option<TaskVtable>> {
    if poll_addresses.is_empty() {
        return Vec::new();
    }
    PointerIndex::build(file).task_vtables(poll_addresses)
}

/// Reads the little- or big-endian (as the file is) `u64` stored in the file at link-time
/// virtual address `vaddr`. `None` where the 8 bytes are not all backed by one section's file
/// data (`.bss`, gaps, out of range).
pub fn read_u64_at(file: &object::File<'_>, vaddr: u64) -> Option<u64> {
    Image::new(file).read_u64(vaddr)
}

/// How the code-pointer words found in a binary were stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PointerCounts {
    /// `R_*_RELATIVE` (or absolute-against-a-defined-symbol) entries of `SHT_RELA`/`SHT_REL`/
    /// `SHT_CREL` dynamic relocation sections.
    pub rela: usize,
    /// Entries of `SHT_RELR` sections (`.relr.dyn`).
    pub relr: usize,
    /// Words holding an absolute code address in the file (non-PIE executables only).
    pub absolute: usize,
}

/// Every pointer-sized word of the binary's data that holds the (link-time) address of code,
/// whatever the form it is stored in.
pub struct PointerIndex<'data> {
    image: Image<'data>,
    /// Word address -> the code address the word holds once loaded.
    pointers: HashMap<u64, u64>,
    /// Word addresses a dynamic relocation of any kind applies to.
    relocated: HashSet<u64>,
    counts: PointerCounts,
}

impl<'data> PointerIndex<'data> {
    pub fn build(file: &object::File<'data>) -> Self {
        let image = Image::new(file);
        let mut index = Self {
            image,
            pointers: HashMap::new(),
            relocated: HashSet::new(),
            counts: PointerCounts::default(),
        };
        if !file.is_64() {
            return index;
        }
        if file.kind() == ObjectKind::Executable {
            index.add_absolute_words();
        }
        index.add_dynamic_relocations(file);
        index.add_relr(file);
        index
    }

    /// The code address the word at `word` holds once loaded, if it holds one.
    pub fn pointer_at(&self, word: u64) -> Option<u64> {
        self.pointers.get(&word).copied()
    }

    /// Whether a dynamic relocation (of any kind) applies to the word at `word`.
    pub fn is_relocated(&self, word: u64) -> bool {
        self.relocated.contains(&word)
    }

    /// How many code-pointer words came from each form.
    pub fn counts(&self) -> PointerCounts {
        self.counts
    }

    /// [`find_task_vtables`] with an index already built.
    pub fn task_vtables(&self, poll_addresses: &[u64]) -> Vec<Option<TaskVtable>> {
        let wanted: HashSet<u64> = poll_addresses.iter().copied().collect();
        let mut candidates: HashMap<u64, Vec<u64>> = HashMap::new();
        for (&word, &target) in &self.pointers {
            if wanted.contains(&target) {
                candidates.entry(target).or_default().push(word);
            }
        }
        for words in candidates.values_mut() {
            words.sort_unstable();
        }
        poll_addresses
            .iter()
            .map(|poll| {
                candidates
                    .get(poll)?
                    .iter()
                    .find_map(|&address| self.task_vtable_at(address))
            })
            .collect()
    }

    /// The task vtable at `address`, if the 0x50 bytes there look like one.
    pub fn task_vtable_at(&self, address: u64) -> Option<TaskVtable> {
        if !address.is_multiple_of(8) || address.checked_add(VTABLE_SIZE).is_none() {
            return None;
        }
        // All seven function pointers (`poll` first) must point into code.
        for word in 0..FUNCTION_WORDS {
            self.pointer_at(address + POLL + word * 8)?;
        }
        let offset = |at: u64| {
            let word = address + at;
            if self.is_relocated(word) {
                // A relocated word is an address, not one of the cell offsets.
                return None;
            }
            let value = self.image.read_u64(word)?;
            (HEADER_SIZE..MAX_CELL_OFFSET)
                .contains(&value)
                .then_some(value)
        };
        Some(TaskVtable {
            address,
            dealloc: self.pointer_at(address + DEALLOC)?,
            shutdown: self.pointer_at(address + SHUTDOWN)?,
            trailer_offset: offset(TRAILER_OFFSET)?,
            scheduler_offset: offset(SCHEDULER_OFFSET)?,
            id_offset: offset(ID_OFFSET)?,
        })
    }

    fn insert(&mut self, word: u64, target: u64) -> bool {
        if !word.is_multiple_of(8) || !self.image.is_code(target) {
            return false;
        }
        self.pointers.insert(word, target);
        true
    }

    /// Non-PIE: every aligned word of allocated, non-executable file-backed data that holds a
    /// code address.
    fn add_absolute_words(&mut self) {
        let mut found = Vec::new();
        for section in self.image.sections.iter().filter(|s| !s.executable) {
            let Some(first) = section.address.checked_next_multiple_of(8) else {
                continue;
            };
            let skip = (first - section.address) as usize;
            let Some(data) = section.data.get(skip..) else {
                continue;
            };
            for (i, &chunk) in data.as_chunks::<8>().0.iter().enumerate() {
                let value = self.image.word(chunk);
                if self.image.is_code(value)
                    && let Some(word) = first.checked_add(i as u64 * 8)
                {
                    found.push((word, value));
                }
            }
        }
        for (word, target) in found {
            if self.insert(word, target) {
                self.counts.absolute += 1;
            }
        }
    }

    /// `SHT_RELA`/`SHT_REL`/`SHT_CREL` dynamic relocations: relative ones, and absolute 64-bit
    /// ones against defined symbols.
    fn add_dynamic_relocations(&mut self, file: &object::File<'data>) {
        let Some(relocations) = file.dynamic_relocations() else {
            return;
        };
        let relative = relative_relocation_type(file.architecture());
        let symbols = file.dynamic_symbol_table();
        for (word, relocation) in relocations {
            self.relocated.insert(word);
            let addend = if relocation.has_implicit_addend() {
                match self.image.read_u64(word) {
                    Some(value) => value as i64,
                    None => continue,
                }
            } else {
                relocation.addend()
            };
            let is_relative = matches!(
                relocation.flags(),
                RelocationFlags::Elf { r_type } if Some(r_type) == relative
            );
            let target = match relocation.target() {
                RelocationTarget::Absolute if is_relative => addend as u64,
                RelocationTarget::Symbol(symbol)
                    if relocation.kind() == RelocationKind::Absolute && relocation.size() == 64 =>
                {
                    let Some(symbol) = symbols
                        .as_ref()
                        .and_then(|table| table.symbol_by_index(symbol).ok())
                    else {
                        continue;
                    };
                    if symbol.is_undefined() {
                        continue;
                    }
                    symbol.address().wrapping_add(addend as u64)
                }
                _ => continue,
            };
            if self.insert(word, target) {
                self.counts.rela += 1;
            }
        }
    }

    /// `SHT_RELR` (`.relr.dyn`): packed relative relocations whose addend is the word in the file.
    fn add_relr(&mut self, file: &object::File<'data>) {
        let object::File::Elf64(elf_file) = file else {
            return;
        };
        let endian = elf_file.endian();
        let mut words = Vec::new();
        for section in elf_file.elf_section_table().iter() {
            if section.sh_type(endian) != elf::SHT_RELR {
                continue;
            }
            let Ok(data) = section.data(endian, elf_file.data()) else {
                continue;
            };
            let entries = data
                .as_chunks::<8>()
                .0
                .iter()
                .map(|&chunk| self.image.word(chunk));
            words.extend(decode_relr(entries));
        }
        for word in words {
            self.relocated.insert(word);
            let Some(target) = self.image.read_u64(word) else {
                continue;
            };
            if self.insert(word, target) {
                self.counts.relr += 1;
            }
        }
    }
}

/// The relative-relocation type of 64-bit targets whose tokio we may meet.
fn relative_relocation_type(architecture: Architecture) -> Option<u32> {
    Some(match architecture {
        Architecture::X86_64 => elf::R_X86_64_RELATIVE,
        Architecture::Aarch64 => elf::R_AARCH64_RELATIVE,
        Architecture::Riscv64 => elf::R_RISCV_RELATIVE,
        Architecture::LoongArch64 => elf::R_LARCH_RELATIVE,
        Architecture::PowerPc64 => elf::R_PPC64_RELATIVE,
        Architecture::S390x => elf::R_390_RELATIVE,
        _ => return None,
    })
}

/// Decodes 64-bit `SHT_RELR` entries into the addresses of the words they relocate.
///
/// An even entry is the address of a word to relocate; the next word is the start of the run.
/// An odd entry is a bitmap: bit `i` (1..=63) relocates the word `i - 1` words after the run's
/// start, and the run then moves 63 words on.
pub fn decode_relr(entries: impl IntoIterator<Item = u64>) -> Vec<u64> {
    let mut words = Vec::new();
    let mut next = 0u64;
    for entry in entries {
        if entry & 1 == 0 {
            words.push(entry);
            next = entry.wrapping_add(8);
        } else {
            let mut bits = entry >> 1;
            let mut word = next;
            while bits != 0 {
                if bits & 1 != 0 {
                    words.push(word);
                }
                bits >>= 1;
                word = word.wrapping_add(8);
            }
            next = next.wrapping_add(63 * 8);
        }
    }
    words
}

/// An allocated section with its file data (`.bss` and other `NOBITS` sections are left out).
struct MappedSection<'data> {
    address: u64,
    data: &'data [u8],
    executable: bool,
}

/// The binary's allocated sections, by address.
struct Image<'data> {
    sections: Vec<MappedSection<'data>>,
    /// `[start, end)` of every executable section, sorted.
    code: Vec<(u64, u64)>,
    little_endian: bool,
}

impl<'data> Image<'data> {
    fn new(file: &object::File<'data>) -> Self {
        let mut sections = Vec::new();
        let mut code = Vec::new();
        for section in file.sections() {
            let SectionFlags::Elf { sh_flags } = section.flags() else {
                continue;
            };
            if sh_flags & u64::from(elf::SHF_ALLOC) == 0 || section.size() == 0 {
                continue;
            }
            let executable = sh_flags & u64::from(elf::SHF_EXECINSTR) != 0;
            if executable {
                code.push((
                    section.address(),
                    section.address().saturating_add(section.size()),
                ));
            }
            let Ok(data) = section.data() else {
                continue;
            };
            if data.len() as u64 != section.size() {
                continue;
            }
            sections.push(MappedSection {
                address: section.address(),
                data,
                executable,
            });
        }
        sections.sort_by_key(|section| section.address);
        code.sort_unstable();
        Self {
            sections,
            code,
            little_endian: file.is_little_endian(),
        }
    }

    fn word(&self, bytes: [u8; 8]) -> u64 {
        if self.little_endian {
            u64::from_le_bytes(bytes)
        } else {
            u64::from_be_bytes(bytes)
        }
    }

    fn read_u64(&self, vaddr: u64) -> Option<u64> {
        let index = self
            .sections
            .partition_point(|section| section.address <= vaddr)
            .checked_sub(1)?;
        let section = &self.sections[index];
        let start = usize::try_from(vaddr - section.address).ok()?;
        let bytes = section.data.get(start..start.checked_add(8)?)?;
        Some(self.word(bytes.try_into().ok()?))
    }

    fn is_code(&self, address: u64) -> bool {
        let index = self.code.partition_point(|&(start, _)| start <= address);
        index
            .checked_sub(1)
            .is_some_and(|index| address < self.code[index].1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relr_address_entries() {
        assert_eq!(decode_relr([0x1000, 0x2000]), vec![0x1000, 0x2000]);
        assert!(decode_relr([]).is_empty());
    }

    #[test]
    fn relr_bitmaps() {
        // 0x1000, then a bitmap (low bit set) whose bits 1 and 3 relocate the first and third
        // words after it: 0x1008 and 0x1018.
        let bitmap = 1 << 3 | 1 << 1 | 1;
        assert_eq!(decode_relr([0x1000, bitmap]), vec![0x1000, 0x1008, 0x1018]);
        // A second bitmap continues 63 words after the first one's start.
        let all = u64::MAX;
        let words = decode_relr([0x1000, all, 0b11]);
        assert_eq!(words.len(), 1 + 63 + 1);
        assert_eq!(
            words[..64],
            (0..64).map(|i| 0x1000 + i * 8).collect::<Vec<_>>()[..]
        );
        assert_eq!(words[64], 0x1000 + 64 * 8);
        // A new address entry restarts the run.
        assert_eq!(
            decode_relr([0x1000, 0b11, 0x4000, 0b101]),
            vec![0x1000, 0x1008, 0x4000, 0x4010]
        );
    }

    #[test]
    fn relr_matches_object() {
        let entries = [0x2000u64, 0xffff_0000_1234_5679, 0x8001, 0x9000, 0x3];
        let bytes: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
        let (relrs, _) = object::pod::slice_from_bytes::<elf::Relr64<object::LittleEndian>>(
            &bytes,
            entries.len(),
        )
        .unwrap();
        let expected: Vec<u64> = object::read::elf::RelrIterator::<
            elf::FileHeader64<object::LittleEndian>,
        >::new(object::LittleEndian, relrs)
        .collect();
        assert_eq!(decode_relr(entries), expected);
    }

    #[test]
    fn relative_types() {
        assert_eq!(
            relative_relocation_type(Architecture::X86_64),
            Some(elf::R_X86_64_RELATIVE)
        );
        assert_eq!(relative_relocation_type(Architecture::I386), None);
    }

    /// A minimal x86-64 ELF: `.text` at 0x1000 (0x100 bytes), `.data.rel.ro` at 0x2000 (0x200
    /// bytes, `words` written into it), `.rela.dyn` with `R_X86_64_RELATIVE` entries
    /// `(word, addend)`, `.relr.dyn` with `relr` entries.
    fn synthetic_elf(
        e_type: u16,
        words: &[(u64, u64)],
        rela: &[(u64, u64)],
        relr: &[u64],
    ) -> Vec<u8> {
        const SHSTRTAB: &[u8] = b"\0.text\0.data.rel.ro\0.rela.dyn\0.relr.dyn\0.shstrtab\0";
        let name = |n: &str| {
            let needle = [n.as_bytes(), b"\0"].concat();
            SHSTRTAB
                .windows(needle.len())
                .position(|w| w == needle)
                .unwrap() as u32
        };
        let mut out = vec![0u8; 0x4000];
        let put = |out: &mut Vec<u8>, at: usize, bytes: &[u8]| {
            out[at..at + bytes.len()].copy_from_slice(bytes);
        };
        // .text: anything; .data.rel.ro: the words.
        for &(address, value) in words {
            put(&mut out, address as usize, &value.to_le_bytes());
        }
        for (i, &(word, addend)) in rela.iter().enumerate() {
            let entry = [
                word.to_le_bytes(),
                u64::from(elf::R_X86_64_RELATIVE).to_le_bytes(),
                addend.to_le_bytes(),
            ]
            .concat();
            put(&mut out, 0x3000 + i * 24, &entry);
        }
        for (i, &entry) in relr.iter().enumerate() {
            put(&mut out, 0x3800 + i * 8, &entry.to_le_bytes());
        }
        put(&mut out, 0x3f00, SHSTRTAB);
        let alloc = u64::from(elf::SHF_ALLOC);
        let sections: [(u32, u32, u64, u64, u64, u64); 6] = [
            (0, 0, 0, 0, 0, 0),
            (
                name(".text"),
                elf::SHT_PROGBITS,
                alloc | u64::from(elf::SHF_EXECINSTR),
                0x1000,
                0x100,
                0,
            ),
            (
                name(".data.rel.ro"),
                elf::SHT_PROGBITS,
                alloc | u64::from(elf::SHF_WRITE),
                0x2000,
                0x200,
                0,
            ),
            (
                name(".rela.dyn"),
                elf::SHT_RELA,
                alloc,
                0x3000,
                24 * rela.len() as u64,
                24,
            ),
            (
                name(".relr.dyn"),
                elf::SHT_RELR,
                alloc,
                0x3800,
                8 * relr.len() as u64,
                8,
            ),
            (
                name(".shstrtab"),
                elf::SHT_STRTAB,
                0,
                0x3f00,
                SHSTRTAB.len() as u64,
                0,
            ),
        ];
        for (sh_name, sh_type, sh_flags, address, size, entsize) in sections {
            // Every section's file offset equals its address; .shstrtab is not loaded.
            let sh_addr = if sh_flags & alloc != 0 { address } else { 0 };
            out.extend_from_slice(&sh_name.to_le_bytes());
            out.extend_from_slice(&sh_type.to_le_bytes());
            out.extend_from_slice(&sh_flags.to_le_bytes());
            out.extend_from_slice(&sh_addr.to_le_bytes());
            out.extend_from_slice(&address.to_le_bytes());
            out.extend_from_slice(&size.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes()); // sh_link
            out.extend_from_slice(&0u32.to_le_bytes()); // sh_info
            out.extend_from_slice(&8u64.to_le_bytes()); // sh_addralign
            out.extend_from_slice(&entsize.to_le_bytes());
        }
        let mut header = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        header.extend_from_slice(&e_type.to_le_bytes());
        header.extend_from_slice(&elf::EM_X86_64.to_le_bytes());
        header.extend_from_slice(&1u32.to_le_bytes()); // e_version
        header.extend_from_slice(&0x1000u64.to_le_bytes()); // e_entry
        header.extend_from_slice(&0u64.to_le_bytes()); // e_phoff
        header.extend_from_slice(&0x4000u64.to_le_bytes()); // e_shoff
        header.extend_from_slice(&0u32.to_le_bytes()); // e_flags
        header.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
        header.extend_from_slice(&56u16.to_le_bytes()); // e_phentsize
        header.extend_from_slice(&0u16.to_le_bytes()); // e_phnum
        header.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
        header.extend_from_slice(&6u16.to_le_bytes()); // e_shnum
        header.extend_from_slice(&5u16.to_le_bytes()); // e_shstrndx
        put(&mut out, 0, &header);
        out
    }

    /// (word address, value) pairs.
    type Words = Vec<(u64, u64)>;

    const POLL_FN: u64 = 0x1000;
    const OTHER_POLL_FN: u64 = 0x1080;

    /// A vtable at `address` for `poll`: (word address, value) pairs, the function pointers
    /// first (`[..7]`), then the three offsets.
    fn vtable_words(address: u64, poll: u64, id_offset: u64) -> Vec<(u64, u64)> {
        let mut words: Vec<(u64, u64)> =
            (0..7).map(|i| (address + i * 8, poll + 0x10 * i)).collect();
        words[0].1 = poll;
        words.extend([
            (address + TRAILER_OFFSET, 0x100),
            (address + SCHEDULER_OFFSET, 0x20),
            (address + ID_OFFSET, id_offset),
        ]);
        words
    }

    fn expected(address: u64, poll: u64, id_offset: u64) -> TaskVtable {
        TaskVtable {
            address,
            dealloc: poll + 0x20,
            shutdown: poll + 0x60,
            trailer_offset: 0x100,
            scheduler_offset: 0x20,
            id_offset,
        }
    }

    /// A lone pointer to `POLL_FN` at 0x2000 (not a vtable), the real vtable at 0x2010, an
    /// implausible one for `OTHER_POLL_FN` at 0x2100 (id_offset inside the header).
    fn layout() -> (Words, Words) {
        let decoy = vec![(0x2000, POLL_FN)];
        let mut pointers = decoy.clone();
        let mut plain = Vec::new();
        for (address, poll, id) in [(0x2010, POLL_FN, 0x28), (0x2100, OTHER_POLL_FN, 0x18)] {
            let words = vtable_words(address, poll, id);
            pointers.extend_from_slice(&words[..7]);
            plain.extend_from_slice(&words[7..]);
        }
        (pointers, plain)
    }

    fn check(data: &[u8], counts: PointerCounts) {
        let file = object::File::parse(data).unwrap();
        let index = PointerIndex::build(&file);
        assert_eq!(index.counts(), counts);
        assert_eq!(
            find_task_vtables(&file, &[POLL_FN, OTHER_POLL_FN, 0x1040, 0x9999]),
            vec![Some(expected(0x2010, POLL_FN, 0x28)), None, None, None]
        );
        assert!(index.task_vtable_at(0x2000).is_none());
        assert!(index.task_vtable_at(0x2011).is_none());
        assert!(index.task_vtable_at(u64::MAX - 7).is_none());
        assert!(
            index.task_vtable_at(0x2100).is_none(),
            "id_offset in the header"
        );
        assert_eq!(read_u64_at(&file, 0x2010 + ID_OFFSET), Some(0x28));
    }

    #[test]
    fn pie_rela() {
        let (pointers, plain) = layout();
        let data = synthetic_elf(elf::ET_DYN, &plain, &pointers, &[]);
        check(
            &data,
            PointerCounts {
                rela: 15,
                relr: 0,
                absolute: 0,
            },
        );
        // The file's zeroes are not what the relocated words hold.
        let file = object::File::parse(&*data).unwrap();
        assert_eq!(read_u64_at(&file, 0x2010), Some(0));
    }

    #[test]
    fn pie_relr() {
        let (pointers, plain) = layout();
        let words = [pointers.clone(), plain].concat();
        // 0x2000, then 0x2010..=0x2040 (bits 2..=8), then 0x2100..=0x2130 by address.
        let relr = [0x2000, (0x7f << 2) | 1, 0x2100, (0x3f << 1) | 1];
        let data = synthetic_elf(elf::ET_DYN, &words, &[], &relr);
        check(
            &data,
            PointerCounts {
                rela: 0,
                relr: 15,
                absolute: 0,
            },
        );
    }

    #[test]
    fn non_pie_absolute() {
        let (pointers, plain) = layout();
        let words = [pointers, plain].concat();
        let data = synthetic_elf(elf::ET_EXEC, &words, &[], &[]);
        check(
            &data,
            PointerCounts {
                rela: 0,
                relr: 0,
                absolute: 15,
            },
        );
        // A PIE's words mean nothing without their relocations.
        let data = synthetic_elf(elf::ET_DYN, &words, &[], &[]);
        let file = object::File::parse(&*data).unwrap();
        assert_eq!(find_task_vtables(&file, &[POLL_FN]), vec![None]);
    }

    #[test]
    fn rejects_implausible_offsets() {
        for (at, value) in [
            (TRAILER_OFFSET, MAX_CELL_OFFSET),
            (SCHEDULER_OFFSET, 0),
            (ID_OFFSET, 0x10),
        ] {
            let mut words = vtable_words(0x2010, POLL_FN, 0x28);
            words.iter_mut().find(|w| w.0 == 0x2010 + at).unwrap().1 = value;
            let data = synthetic_elf(elf::ET_EXEC, &words, &[], &[]);
            let file = object::File::parse(&*data).unwrap();
            assert_eq!(
                find_task_vtables(&file, &[POLL_FN]),
                vec![None],
                "{at:#x} = {value:#x}"
            );
        }
        // An offset word that is relocated is a pointer, not an offset.
        let words = vtable_words(0x2010, POLL_FN, 0x28);
        let mut rela = words[..7].to_vec();
        rela.push((0x2010 + ID_OFFSET, 0x28));
        let data = synthetic_elf(elf::ET_DYN, &words[7..], &rela, &[]);
        let file = object::File::parse(&*data).unwrap();
        assert_eq!(find_task_vtables(&file, &[POLL_FN]), vec![None]);
        // A function pointer into data is not a vtable.
        let mut words = vtable_words(0x2010, POLL_FN, 0x28);
        words[3].1 = 0x2000;
        let data = synthetic_elf(elf::ET_EXEC, &words, &[], &[]);
        let file = object::File::parse(&*data).unwrap();
        assert_eq!(find_task_vtables(&file, &[POLL_FN]), vec![None]);
    }

    #[test]
    fn duplicates_pick_the_lowest() {
        let words = [
            vtable_words(0x2100, POLL_FN, 0x30),
            vtable_words(0x2010, POLL_FN, 0x28),
            vtable_words(0x2080, OTHER_POLL_FN, 0x28),
        ]
        .concat();
        let data = synthetic_elf(elf::ET_EXEC, &words, &[], &[]);
        let file = object::File::parse(&*data).unwrap();
        assert_eq!(
            find_task_vtables(&file, &[OTHER_POLL_FN, POLL_FN, POLL_FN]),
            vec![
                Some(expected(0x2080, OTHER_POLL_FN, 0x28)),
                Some(expected(0x2010, POLL_FN, 0x28)),
                Some(expected(0x2010, POLL_FN, 0x28)),
            ]
        );
        assert!(find_task_vtables(&file, &[]).is_empty());
    }

    #[test]
    fn read_past_sections() {
        let path = std::env::current_exe().unwrap();
        let data = std::fs::read(path).unwrap();
        let file = object::File::parse(&*data).unwrap();
        assert_eq!(read_u64_at(&file, u64::MAX - 3), None);
        assert_eq!(read_u64_at(&file, 0), None);
    }
}
