//! The target's memory map (`/proc/PID/maps`), and where its executable is loaded.

use std::{
    collections::HashMap,
    ffi::OsStr,
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    path::PathBuf,
};

use super::{MemoryError, ProcessMemory, page_size};

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    /// Exclusive.
    pub end: u64,
    pub readable: bool,
    pub writable: bool,
    pub executable: bool,
    /// Copy-on-write (`p`), as opposed to shared (`s`).
    pub private: bool,
    /// Offset in the mapped file (0 for anonymous memory).
    pub offset: u64,
    /// `(major, minor)` of the device holding the file.
    pub dev: (u32, u32),
    /// The file's inode; 0 for anonymous memory.
    pub inode: u64,
    /// The mapped file, without the kernel's ` (deleted)` suffix; `None` for anonymous memory
    /// and pseudo-paths.
    pub path: Option<PathBuf>,
    /// The kernel's name for memory that is not a file: `[heap]`, `[stack]`, `[vdso]`,
    /// `[anon:NAME]` (named with `prctl(PR_SET_VMA)`), ...
    pub pseudo: Option<String>,
    /// The file was deleted (or replaced, as by a rebuild) after it was mapped. The kernel
    /// appends ` (deleted)` to the path; a file really named `x (deleted)` is indistinguishable.
    pub deleted: bool,
}

impl Mapping {
    /// The load bias (runtime address less ELF address) this mapping gives, if it maps the
    /// `PT_LOAD` segment at ELF address `vaddr` and file offset `offset`: the loader maps a
    /// segment from its page-aligned offset to its page-aligned address plus the bias.
    pub fn load_bias_of_segment(&self, vaddr: u64, offset: u64) -> Option<u64> {
        let page_mask = !(page_size() - 1);
        (self.offset == offset & page_mask).then(|| self.start.wrapping_sub(vaddr & page_mask))
    }

    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, address: u64) -> bool {
        (self.start..self.end).contains(&address)
    }

    /// Memory backed by no file: plain anonymous mappings and ones named with `[anon:...]`.
    pub fn is_anonymous(&self) -> bool {
        self.path.is_none()
            && self
                .pseudo
                .as_deref()
                .is_none_or(|name| name.starts_with("[anon:"))
    }

    /// Where an allocator may have put objects: private read-write memory that is the brk heap
    /// or anonymous (mmap'd large allocations, glibc's thread arenas, jemalloc/mimalloc
    /// regions, thread stacks). Not file data, not stacks the kernel labels, not `[vvar]` and
    /// friends, whose reads can fault or have side effects.
    pub fn may_hold_heap_objects(&self) -> bool {
        self.readable
            && self.writable
            && self.private
            && (self.is_anonymous() || self.pseudo.as_deref() == Some("[heap]"))
    }
}

impl ProcessMemory {
    /// The process's memory map, one [`Mapping`] per line of `/proc/PID/maps`. A snapshot: the
    /// map may change as soon as it is read.
    pub fn mappings(&self) -> Result<Vec<Mapping>, MemoryError> {
        let pid = self.pid;
        let maps = std::fs::read(format!("/proc/{pid}/maps")).map_err(|source| {
            MemoryError::reading_proc(pid, source, |source| MemoryError::Maps { pid, source })
        })?;
        maps.split(|&byte| byte == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| {
                parse_maps_line(line).ok_or_else(|| MemoryError::MalformedMaps {
                    pid,
                    line: String::from_utf8_lossy(line).into_owned(),
                })
            })
            .collect()
    }

    /// The load bias of the process's main executable: the runtime address of an ELF virtual
    /// address is `vaddr.wrapping_add(bias)`; 0 for a non-PIE (`ET_EXEC`) executable.
    /// `segments` are the `(p_vaddr, p_offset)` of the ELF's `PT_LOAD` program headers.
    ///
    /// The executable's mappings are found by the device and inode of `/proc/PID/exe` (so a
    /// different file at the same path, such as a rebuilt binary, is not mistaken for it). The
    /// loader maps each segment from its page-aligned file offset to its page-aligned address
    /// plus the bias, so a mapping whose offset is a segment's aligned offset gives a bias. The
    /// process may map its own executable again (a backtrace symbolizer reading its own debug
    /// info does), so each candidate bias is voted for by the segments it explains and the
    /// best-supported one wins; on a tie, the lowest, as the kernel puts executables below the
    /// mmap area.
    pub fn executable_load_bias(&self, segments: &[(u64, u64)]) -> Result<u64, MemoryError> {
        let pid = self.pid;
        let exe = format!("/proc/{pid}/exe");
        let stat =
            std::fs::metadata(&exe).map_err(|source| MemoryError::Executable { pid, source })?;
        let (inode, dev) = (
            stat.ino(),
            (libc::major(stat.dev()), libc::minor(stat.dev())),
        );
        let mappings = self.mappings()?;
        let file_backed = || mappings.iter().filter(|mapping| mapping.path.is_some());
        // Inode numbers are per filesystem: the device disambiguates.
        let mut executable: Vec<&Mapping> = file_backed()
            .filter(|mapping| mapping.inode == inode && mapping.dev == dev)
            .collect();
        if executable.is_empty() {
            // Stacked filesystems (overlayfs) have shown the lower file's device, or even
            // inode, in the maps while stat shows the upper one's: relax to the inode, then
            // to the path the exe link names.
            executable = file_backed()
                .filter(|mapping| mapping.inode == inode)
                .collect();
        }
        if executable.is_empty()
            && let Ok(target) = std::fs::read_link(&exe)
        {
            let target = target.as_os_str().as_bytes();
            let target = target.strip_suffix(b" (deleted)").unwrap_or(target);
            executable = file_backed()
                .filter(|mapping| {
                    mapping
                        .path
                        .as_ref()
                        .is_some_and(|path| path.as_os_str().as_bytes() == target)
                })
                .collect();
        }
        let mut votes: HashMap<u64, usize> = HashMap::new();
        for &(vaddr, offset) in segments {
            for mapping in &executable {
                if let Some(bias) = mapping.load_bias_of_segment(vaddr, offset) {
                    *votes.entry(bias).or_default() += 1;
                }
            }
        }
        votes
            .into_iter()
            .max_by(|(bias_a, votes_a), (bias_b, votes_b)| {
                votes_a.cmp(votes_b).then(bias_b.cmp(bias_a))
            })
            .map(|(bias, _)| bias)
            .ok_or(MemoryError::NotMapped { pid })
    }
}

/// Parses `start-end perms offset dev inode [name]`. The name is everything after the inode's
/// padding, so it may contain spaces.
fn parse_maps_line(line: &[u8]) -> Option<Mapping> {
    let mut rest = line;
    let range = next_field(&mut rest)?;
    let perms = next_field(&mut rest)?;
    let offset = next_field(&mut rest)?;
    let dev = next_field(&mut rest)?;
    let inode = next_field(&mut rest)?;
    let name = rest.trim_ascii_start();

    let (start, end) = split_once(range, b'-')?;
    let (major, minor) = split_once(dev, b':')?;
    let &[read, write, execute, share] = perms else {
        return None;
    };
    let (path, pseudo, deleted) = if name.is_empty() {
        (None, None, false)
    } else if name.starts_with(b"/") {
        let (name, deleted) = match name.strip_suffix(b" (deleted)") {
            Some(name) => (name, true),
            None => (name, false),
        };
        (Some(PathBuf::from(OsStr::from_bytes(name))), None, deleted)
    } else {
        (
            None,
            Some(String::from_utf8_lossy(name).into_owned()),
            false,
        )
    };
    Some(Mapping {
        start: hex(start)?,
        end: hex(end)?,
        readable: read == b'r',
        writable: write == b'w',
        executable: execute == b'x',
        private: share == b'p',
        offset: hex(offset)?,
        dev: (
            u32::try_from(hex(major)?).ok()?,
            u32::try_from(hex(minor)?).ok()?,
        ),
        inode: std::str::from_utf8(inode).ok()?.parse().ok()?,
        path,
        pseudo,
        deleted,
    })
}

fn next_field<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let trimmed = rest.trim_ascii_start();
    let end = trimmed
        .iter()
        .position(|&byte| byte == b' ')
        .unwrap_or(trimmed.len());
    let (field, tail) = trimmed.split_at(end);
    *rest = tail;
    (!field.is_empty()).then_some(field)
}

fn split_once(bytes: &[u8], separator: u8) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|&byte| byte == separator)?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

fn hex(bytes: &[u8]) -> Option<u64> {
    u64::from_str_radix(std::str::from_utf8(bytes).ok()?, 16).ok()
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use object::{Object as _, ObjectSegment as _, ObjectSymbol as _};

    use super::*;
    use crate::memory::testing::*;

    #[test]
    fn maps_lines_parse() {
        let parse = |line: &str| parse_maps_line(line.as_bytes()).expect(line);
        let library = parse(
            "7f0000001000-7f0000002000 r-xp 00001000 fd:1a 1234                       /opt/my app/lib.so (deleted)",
        );
        assert_eq!(
            (library.start, library.end, library.offset, library.inode),
            (0x7f00_0000_1000, 0x7f00_0000_2000, 0x1000, 1234)
        );
        assert_eq!(library.dev, (0xfd, 0x1a));
        assert!(library.readable && !library.writable && library.executable && library.private);
        assert_eq!(library.path, Some(PathBuf::from("/opt/my app/lib.so")));
        assert!(library.deleted && library.pseudo.is_none() && !library.is_anonymous());
        assert!(!library.may_hold_heap_objects());

        let anonymous = parse("7f00-7f10 rw-p 00000000 00:00 0 ");
        assert_eq!(
            (anonymous.path.clone(), anonymous.pseudo.clone()),
            (None, None)
        );
        assert!(anonymous.is_anonymous() && anonymous.may_hold_heap_objects());
        assert!(parse("7f00-7f10 rw-p 00000000 00:00 0").may_hold_heap_objects());

        let heap = parse("55d0-55f0 rw-p 00000000 00:00 0                          [heap]");
        assert_eq!(heap.pseudo.as_deref(), Some("[heap]"));
        assert!(heap.path.is_none() && !heap.is_anonymous() && heap.may_hold_heap_objects());

        let arena = parse("7f00-7f10 rw-p 00000000 00:00 0    [anon:glibc: malloc arena]");
        assert_eq!(arena.pseudo.as_deref(), Some("[anon:glibc: malloc arena]"));
        assert!(arena.may_hold_heap_objects());

        for skipped in [
            "7ffc-7ffd rw-p 00000000 00:00 0                          [stack]",
            "7ffc-7ffd r--p 00000000 00:00 0                          [vvar]",
            "7f00-7f10 rw-s 00000000 00:01 77                         /dev/zero (deleted)",
            "7f00-7f10 ---p 00000000 00:00 0 ",
            "7f00-7f10 rw-p 00002000 08:01 99                         /usr/bin/prog",
        ] {
            assert!(!parse(skipped).may_hold_heap_objects(), "{skipped}");
        }
        let memfd = parse("7f00-7f10 rw-s 00000000 00:01 5 /memfd:ring buffer (deleted)");
        assert_eq!(memfd.path, Some(PathBuf::from("/memfd:ring buffer")));

        for malformed in [
            "",
            "7f00-7f10 rw-p",
            "zz-7f10 rw-p 0 00:00 0",
            "7f00 rw-p 0 00:00 0",
        ] {
            assert_eq!(parse_maps_line(malformed.as_bytes()), None, "{malformed}");
        }
    }

    #[test]
    fn own_mappings_cover_own_memory() {
        let memory = own();
        let mappings = memory.mappings().expect("maps");
        let boxed = Box::new([7u64; 64 * 1024]);
        let heap_address = boxed.as_ptr() as u64;
        let mappings_after = memory.mappings().expect("maps");
        let holding = mappings_after
            .iter()
            .find(|mapping| mapping.contains(heap_address))
            .expect("the heap is mapped");
        assert!(holding.may_hold_heap_objects(), "{holding:?}");
        let code = own_mappings_cover_own_memory as fn() as usize as u64;
        let text = mappings
            .iter()
            .find(|mapping| mapping.contains(code))
            .expect("code is mapped");
        assert!(text.executable && text.path.is_some() && !text.may_hold_heap_objects());
    }

    #[unsafe(no_mangle)]
    #[inline(never)]
    extern "C" fn async_inspect_memory_test_marker() -> u64 {
        std::hint::black_box(0x6d61_726b)
    }

    #[test]
    fn the_load_bias_puts_own_symbols_at_their_runtime_addresses() {
        let image = std::fs::read("/proc/self/exe").expect("own executable");
        let elf = object::File::parse(&*image).expect("own ELF");
        let segments: Vec<(u64, u64)> = elf
            .segments()
            .map(|segment| (segment.address(), segment.file_range().0))
            .collect();
        assert!(!segments.is_empty());
        let symbol = elf
            .symbols()
            .find(|symbol| symbol.name() == Ok("async_inspect_memory_test_marker"))
            .expect("marker symbol in .symtab");
        let bias = own().executable_load_bias(&segments).expect("bias");
        let runtime = async_inspect_memory_test_marker as extern "C" fn() -> u64 as usize as u64;
        assert_eq!(
            symbol.address().wrapping_add(bias),
            runtime,
            "bias {bias:#x}"
        );
        assert_eq!(async_inspect_memory_test_marker(), 0x6d61_726b);

        // A duplicate mapping of the executable (as a symbolizer makes) does not sway it.
        let file = File::open("/proc/self/exe").expect("open own executable");
        let page = page_size() as usize;
        // SAFETY: a read-only private mapping of a file we hold open; unmapped below.
        let copy = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
            )
        };
        assert_ne!(copy, libc::MAP_FAILED);
        let again = own().executable_load_bias(&segments);
        // SAFETY: the mapping made above.
        unsafe { libc::munmap(copy, page) };
        assert_eq!(again.expect("bias"), bias);

        assert!(matches!(
            own().executable_load_bias(&[(0x1000, 0x7fff_f000)]),
            Err(MemoryError::NotMapped { .. })
        ));
    }
}
