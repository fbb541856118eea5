//! Reading a live process's memory, never writing it. Reads race the running target: what they
//! return may be torn or stale, so callers bounds-check everything read and treat a pointer as
//! a claim to verify, not a fact.

use std::{collections::HashSet, io, path::PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("no process with pid {pid}")]
    NoSuchProcess { pid: u32 },
    #[error("cannot read {len} bytes at {address:#x}: {source}")]
    Read {
        address: u64,
        len: usize,
        source: io::Error,
    },
    #[error("refusing to read {len} bytes at once (at most {max})")]
    TooLarge { len: usize, max: usize },
    #[error("cannot read the memory map of process {pid}: {source}")]
    Maps { pid: u32, source: io::Error },
    #[error(
        "the executable of process {pid} is not mapped where its ELF says (is --binary the same build?)"
    )]
    NotMapped { pid: u32 },
    #[error("process {pid} is already being traced (a debugger?): cannot freeze it")]
    AlreadyTraced { pid: u32 },
    #[error("cannot freeze thread {tid} of process {pid}: {source}")]
    Freeze {
        pid: u32,
        tid: u32,
        source: io::Error,
    },
}

/// One read's limit: sizes come from the target and are never trusted.
const MAX_READ: usize = 16 * 1024 * 1024;
/// Scan chunk size.
const CHUNK: usize = 1024 * 1024;

/// A process whose memory is read.
pub struct ProcessMemory {
    pid: u32,
}

/// A line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub readable: bool,
    pub writable: bool,
    pub executable: bool,
    pub offset: u64,
    pub inode: u64,
    /// A file path, or a pseudo-path such as `[heap]`; `None` for anonymous memory.
    pub path: Option<PathBuf>,
}

/// What a scan covered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanStats {
    pub bytes_scanned: u64,
    pub mappings_scanned: usize,
    pub unreadable_chunks: usize,
}

impl ProcessMemory {
    pub fn open(pid: u32) -> Result<Self, MemoryError> {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return Err(MemoryError::NoSuchProcess { pid });
        }
        Ok(Self { pid })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Fills `buf` from `address`, entirely or not at all.
    pub fn read(&self, address: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        if buf.len() > MAX_READ {
            return Err(MemoryError::TooLarge {
                len: buf.len(),
                max: MAX_READ,
            });
        }
        if buf.is_empty() {
            return Ok(());
        }
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let remote = libc::iovec {
            iov_base: address as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // SAFETY: both iovecs describe valid ranges: ours is `buf`, the remote one is only
        // read by the kernel, which checks it against the target's address space.
        let read = unsafe { libc::process_vm_readv(self.pid as i32, &local, 1, &remote, 1, 0) };
        if read == buf.len() as isize {
            return Ok(());
        }
        let source = if read < 0 {
            io::Error::last_os_error()
        } else {
            io::Error::new(io::ErrorKind::UnexpectedEof, "partial read")
        };
        Err(MemoryError::Read {
            address,
            len: buf.len(),
            source,
        })
    }

    pub fn read_u64(&self, address: u64) -> Result<u64, MemoryError> {
        let mut bytes = [0u8; 8];
        self.read(address, &mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    pub fn mappings(&self) -> Result<Vec<Mapping>, MemoryError> {
        let maps =
            std::fs::read_to_string(format!("/proc/{}/maps", self.pid)).map_err(|source| {
                MemoryError::Maps {
                    pid: self.pid,
                    source,
                }
            })?;
        Ok(maps.lines().filter_map(parse_mapping).collect())
    }

    /// The load bias of the process's executable: runtime address = ELF address + bias.
    /// `segments` are the ELF's loadable `(p_vaddr, p_offset)` pairs.
    pub fn executable_load_bias(&self, segments: &[(u64, u64)]) -> Result<u64, MemoryError> {
        use std::os::unix::fs::MetadataExt as _;
        let not_mapped = || MemoryError::NotMapped { pid: self.pid };
        let inode = std::fs::metadata(format!("/proc/{}/exe", self.pid))
            .map_err(|source| MemoryError::Maps {
                pid: self.pid,
                source,
            })?
            .ino();
        let mappings = self.mappings()?;
        let page = 4096;
        for mapping in mappings.iter().filter(|mapping| mapping.inode == inode) {
            // The segment this mapping maps: same file offset, page-aligned.
            let Some((vaddr, offset)) = segments
                .iter()
                .find(|(_, offset)| offset & !(page - 1) == mapping.offset)
            else {
                continue;
            };
            let runtime_of_vaddr = mapping.start + (offset - mapping.offset);
            return Ok(runtime_of_vaddr.wrapping_sub(*vaddr));
        }
        Err(not_mapped())
    }

    /// Finds every `align`-aligned object whose 8-byte word at `word_offset` is in `wanted`,
    /// in the process's writable anonymous memory (heap, thread arenas, large allocations).
    pub fn scan_words(
        &self,
        mappings: &[Mapping],
        wanted: &HashSet<u64>,
        align: u64,
        word_offset: u64,
        mut found: impl FnMut(u64, u64),
    ) -> Result<ScanStats, MemoryError> {
        let mut stats = ScanStats::default();
        let (Some(&min), Some(&max)) = (wanted.iter().min(), wanted.iter().max()) else {
            return Ok(stats);
        };
        let align = align.max(8);
        let mut buffer = vec![0u8; CHUNK];
        for mapping in mappings.iter().filter(|mapping| is_heap_like(mapping)) {
            stats.mappings_scanned += 1;
            // The loaded window of the mapping: [window, window + loaded).
            let (mut window, mut loaded) = (0u64, 0usize);
            let mut object = mapping.start.next_multiple_of(align);
            while object + word_offset + 8 <= mapping.end {
                let word_at = object + word_offset;
                if word_at < window || word_at + 8 > window + loaded as u64 {
                    // Start the next window at this word, so no word straddles two windows.
                    window = word_at;
                    loaded = ((mapping.end - window) as usize).min(CHUNK);
                    if self.read(window, &mut buffer[..loaded]).is_err() {
                        stats.unreadable_chunks += 1;
                        let skip_to = window + loaded as u64;
                        loaded = 0;
                        object = skip_to.saturating_sub(word_offset).next_multiple_of(align);
                        continue;
                    }
                    stats.bytes_scanned += loaded as u64;
                }
                let at = (word_at - window) as usize;
                let word = u64::from_le_bytes(buffer[at..at + 8].try_into().expect("8 bytes"));
                if (min..=max).contains(&word) && wanted.contains(&word) {
                    found(object, word);
                }
                object += align;
            }
        }
        Ok(stats)
    }
}

/// Where allocators put objects: anonymous read-write memory and the brk heap.
fn is_heap_like(mapping: &Mapping) -> bool {
    if !(mapping.readable && mapping.writable) || mapping.executable {
        return false;
    }
    match &mapping.path {
        None => true,
        Some(path) => path.as_os_str() == "[heap]",
    }
}

fn parse_mapping(line: &str) -> Option<Mapping> {
    // start-end perms offset dev inode path (the path may contain spaces)
    let mut fields = line.splitn(6, ' ');
    let range = fields.next()?;
    let perms = fields.next()?.as_bytes();
    let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
    let _dev = fields.next()?;
    let inode = fields.next()?.parse().ok()?;
    let path = fields
        .next()
        .map(str::trim_start)
        .filter(|path| !path.is_empty())
        .map(|path| PathBuf::from(path.strip_suffix(" (deleted)").unwrap_or(path)));
    let (start, end) = range.split_once('-')?;
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        readable: perms.first() == Some(&b'r'),
        writable: perms.get(1) == Some(&b'w'),
        executable: perms.get(2) == Some(&b'x'),
        offset,
        inode,
        path,
    })
}

/// Every thread of a process held in a ptrace stop; resumed when dropped (also on unwinding).
/// Uses PTRACE_SEIZE + PTRACE_INTERRUPT, which the process and its parent cannot observe
/// (unlike SIGSTOP), and fails if a debugger is already attached.
pub struct Freeze {
    pid: u32,
    threads: Vec<u32>,
}

/// Pauses every thread of `pid`.
pub fn freeze(pid: u32) -> Result<Freeze, MemoryError> {
    let mut frozen = Freeze {
        pid,
        threads: Vec::new(),
    };
    // Threads can start while we work: repeat until a pass finds no new one.
    loop {
        let tids = threads_of(pid)?;
        let new: Vec<u32> = tids
            .into_iter()
            .filter(|tid| !frozen.threads.contains(tid))
            .collect();
        if new.is_empty() {
            return Ok(frozen);
        }
        for tid in new {
            // SAFETY: ptrace requests on a thread id; no memory is passed.
            let seized = unsafe { libc::ptrace(libc::PTRACE_SEIZE, tid as libc::pid_t, 0, 0) };
            if seized != 0 {
                let source = io::Error::last_os_error();
                match source.raw_os_error() {
                    // The thread exited meanwhile.
                    Some(libc::ESRCH) => continue,
                    Some(libc::EPERM) if frozen.threads.is_empty() => {
                        return Err(MemoryError::AlreadyTraced { pid });
                    }
                    _ => return Err(MemoryError::Freeze { pid, tid, source }),
                }
            }
            frozen.threads.push(tid);
            // SAFETY: as above.
            unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, tid as libc::pid_t, 0, 0) };
            let mut status = 0;
            // SAFETY: waits for the seized thread's stop; __WALL covers non-leader threads.
            unsafe { libc::waitpid(tid as libc::pid_t, &mut status, libc::__WALL) };
        }
    }
}

fn threads_of(pid: u32) -> Result<Vec<u32>, MemoryError> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|_| MemoryError::NoSuchProcess { pid })?;
    Ok(dir
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

impl Drop for Freeze {
    fn drop(&mut self) {
        for &tid in &self.threads {
            // SAFETY: detaching a thread we seized resumes it.
            unsafe { libc::ptrace(libc::PTRACE_DETACH, tid as libc::pid_t, 0, 0) };
        }
        let _ = self.pid;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_parse_with_spaces_and_deletions() {
        let line =
            "7f00-7f10 r-xp 00001000 08:01 1234                       /opt/my app/bin (deleted)";
        let mapping = parse_mapping(line).expect("parses");
        assert_eq!(
            (mapping.start, mapping.end, mapping.offset, mapping.inode),
            (0x7f00, 0x7f10, 0x1000, 1234)
        );
        assert!(mapping.readable && mapping.executable && !mapping.writable);
        assert_eq!(mapping.path, Some(PathBuf::from("/opt/my app/bin")));
        let anonymous = parse_mapping("7f00-7f10 rw-p 00000000 00:00 0 ").expect("parses");
        assert_eq!(anonymous.path, None);
        assert!(is_heap_like(&anonymous));
    }

    #[repr(C, align(128))]
    struct Fake {
        state: u64,
        queue: u64,
        marker: u64,
    }

    #[test]
    fn a_scan_finds_a_marked_heap_object_in_this_process() {
        let marker = 0x5eed_0000_0000_0000 | u64::from(std::process::id());
        let object = Box::new(Fake {
            state: 1,
            queue: 2,
            marker,
        });
        let address = &*object as *const Fake as u64;
        let memory = ProcessMemory::open(std::process::id()).expect("self");
        let mappings = memory.mappings().expect("maps");
        let mut found = Vec::new();
        let stats = memory
            .scan_words(&mappings, &HashSet::from([marker]), 128, 16, |at, _| {
                found.push(at)
            })
            .expect("scan");
        assert!(stats.bytes_scanned > 0);
        // The marker is also in `wanted`'s own heap storage, which may happen to line up.
        assert!(found.contains(&address), "{found:x?} {stats:?}");
        assert_eq!(object.state + object.queue, 3);
    }

    #[test]
    fn reads_are_whole_or_errors() {
        let memory = ProcessMemory::open(std::process::id()).expect("self");
        let value: u64 = 0x1234_5678;
        assert_eq!(
            memory.read_u64(&value as *const u64 as u64).expect("read"),
            value
        );
        assert!(memory.read_u64(8).is_err(), "page zero is never mapped");
        let mut huge = vec![0u8; MAX_READ + 1];
        assert!(matches!(
            memory.read(0x1000, &mut huge),
            Err(MemoryError::TooLarge { .. })
        ));
    }
}
