//! Reading a live process's memory, never writing it: for `dump` (finding every task in the
//! heap) and for decoding await points.
//!
//! Unless the target is held still with [`freeze`], every read races the running program: a
//! structure may be half-updated, a pointer may be freed and reused between two reads, a mapping
//! may disappear between [`ProcessMemory::mappings`] and a read of it. So callers bounds-check
//! everything they read, treat every pointer and size as a claim to verify rather than a fact,
//! and retry (or give up on that one object) when what they read is inconsistent. This module
//! does its part: a read is whole or an error, never a crash and never a partial buffer, and
//! sizes read from the target are capped before anything is allocated for them.

use std::{
    collections::{HashMap, HashSet},
    ffi::OsStr,
    fs::File,
    io,
    os::unix::{
        ffi::OsStrExt as _,
        fs::{FileExt as _, MetadataExt as _},
    },
    path::PathBuf,
    sync::{
        OnceLock,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

/// The most [`ProcessMemory::read_bytes`] reads at once. Sizes come from the target, where a
/// torn or stale word can claim anything; no real object we decode comes near this.
pub const MAX_READ: u64 = 16 * 1024 * 1024;

/// How much of a mapping [`ProcessMemory::scan_words`] reads per system call: large enough that
/// syscall overhead vanishes, small enough that one unreadable page loses little.
const SCAN_CHUNK: u64 = 1024 * 1024;

/// How long [`freeze`] waits for a thread to reach its stop. Only a thread stuck in an
/// uninterruptible kernel wait (a hung NFS server, say) takes more than microseconds.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("no process with pid {pid}")]
    NoSuchProcess { pid: u32 },
    #[error("cannot read {len} bytes at {address:#x} in process {pid}: {source}")]
    Read {
        pid: u32,
        address: u64,
        len: usize,
        source: io::Error,
    },
    #[error(
        "refusing to read {len} bytes at once (at most {max}): the size probably came from a torn or stale read"
    )]
    TooLarge { len: u64, max: u64 },
    #[error("cannot read the memory map of process {pid}: {source}")]
    Maps { pid: u32, source: io::Error },
    #[error("unexpected line in /proc/{pid}/maps: {line:?}")]
    MalformedMaps { pid: u32, line: String },
    #[error("cannot identify the executable of process {pid} (/proc/{pid}/exe): {source}")]
    Executable { pid: u32, source: io::Error },
    #[error(
        "the executable of process {pid} is not mapped where its ELF says (is --binary the same build?)"
    )]
    NotMapped { pid: u32 },
    #[error("scan alignment {align} is not a power of two")]
    InvalidAlign { align: u64 },
    #[error("cannot list the threads of process {pid}: {source}")]
    Threads { pid: u32, source: io::Error },
    #[error("cannot freeze thread {tid} of process {pid}: {source}")]
    Freeze {
        pid: u32,
        tid: u32,
        source: io::Error,
    },
    #[error(
        "process {pid} (thread {tid}) is already traced by process {tracer} (a debugger such as gdb or strace?): \
         a thread can have only one tracer, so it cannot be frozen; detach the other tracer or dump without --freeze"
    )]
    AlreadyTraced { pid: u32, tid: u32, tracer: u32 },
    #[error(
        "thread {tid} of process {pid} did not stop within {timeout:?} (blocked in the kernel?)"
    )]
    FreezeTimeout {
        pid: u32,
        tid: u32,
        timeout: Duration,
    },
    #[error("process {pid} is this process: it cannot freeze itself")]
    FreezeSelf { pid: u32 },
}

/// The memory of one process, read through `process_vm_readv` (or `/proc/PID/mem` where that
/// system call is refused). Shareable between threads: reads take `&self`.
#[derive(Debug)]
pub struct ProcessMemory {
    pid: u32,
    /// Set once `process_vm_readv` was refused: a seccomp filter or a sandboxed kernel that
    /// refuses it once refuses it always, so later reads go straight to `/proc/PID/mem`.
    use_mem_file: AtomicBool,
    /// Opened on first need, read-only: this module never writes to the target.
    mem_file: OnceLock<File>,
}

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
    pub fn open(pid: u32) -> Result<Self, MemoryError> {
        // pid_t is signed: a pid above i32::MAX cannot exist and would turn negative (a
        // process group) in the system calls.
        if pid == 0 || libc::pid_t::try_from(pid).is_err() {
            return Err(MemoryError::NoSuchProcess { pid });
        }
        if std::fs::metadata(format!("/proc/{pid}")).is_err() {
            return Err(MemoryError::NoSuchProcess { pid });
        }
        Ok(Self {
            pid,
            use_mem_file: AtomicBool::new(false),
            mem_file: OnceLock::new(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Fills `buf` from `address` in the target, entirely or not at all: a range that is
    /// partly unmapped is an error, not a short read.
    pub fn read(&self, address: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        if buf.is_empty() {
            return Ok(());
        }
        let len = buf.len();
        let error = |source| MemoryError::Read {
            pid: self.pid,
            address,
            len,
            source,
        };
        if address.checked_add(len as u64).is_none() {
            return Err(error(io::Error::from_raw_os_error(libc::EFAULT)));
        }
        if !self.use_mem_file.load(Ordering::Relaxed) {
            match self.read_vm(address, buf) {
                Ok(()) => return Ok(()),
                Err(source)
                    if matches!(source.raw_os_error(), Some(libc::EPERM | libc::ENOSYS)) =>
                {
                    self.use_mem_file.store(true, Ordering::Relaxed);
                }
                Err(source) => return Err(error(source)),
            }
        }
        self.read_mem_file(address, buf).map_err(error)
    }

    /// The little-endian 8-byte word at `address`.
    pub fn read_u64(&self, address: u64) -> Result<u64, MemoryError> {
        let mut bytes = [0u8; 8];
        self.read(address, &mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    /// `len` bytes at `address`. `len` is typically read from the target, so it is capped at
    /// [`MAX_READ`] before anything is allocated.
    pub fn read_bytes(&self, address: u64, len: u64) -> Result<Vec<u8>, MemoryError> {
        if len > MAX_READ {
            return Err(MemoryError::TooLarge { len, max: MAX_READ });
        }
        // Lossless: len <= MAX_READ.
        let mut bytes = vec![0u8; len as usize];
        self.read(address, &mut bytes)?;
        Ok(bytes)
    }

    fn read_vm(&self, address: u64, buf: &mut [u8]) -> io::Result<()> {
        let remote_base =
            usize::try_from(address).map_err(|_| io::Error::from_raw_os_error(libc::EFAULT))?;
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // The remote address is never dereferenced here, only handed to the kernel, which
        // checks it against the target's mappings.
        let remote = libc::iovec {
            iov_base: std::ptr::without_provenance_mut(remote_base),
            iov_len: buf.len(),
        };
        loop {
            // SAFETY: `local` describes `buf`, exclusively borrowed for the call; the kernel
            // only writes there, and only reads the target through `remote`.
            let read = unsafe {
                libc::process_vm_readv(self.pid as libc::pid_t, &local, 1, &remote, 1, 0)
            };
            if read < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            // The kernel stops at the first page it cannot read; what follows is unreadable.
            return match usize::try_from(read) {
                Ok(read) if read == buf.len() => Ok(()),
                Ok(read) => Err(partial(read)),
                Err(_) => Err(partial(0)),
            };
        }
    }

    fn read_mem_file(&self, address: u64, buf: &mut [u8]) -> io::Result<()> {
        let file = match self.mem_file.get() {
            Some(file) => file,
            None => {
                let file = File::open(format!("/proc/{}/mem", self.pid))?;
                // A racing thread may have opened it too: either copy will do.
                self.mem_file.get_or_init(|| file)
            }
        };
        let mut done = 0;
        while done < buf.len() {
            match file.read_at(&mut buf[done..], address + done as u64) {
                Ok(0) => return Err(partial(done)),
                Ok(read) => done += read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) if done == 0 => return Err(error),
                Err(_) => return Err(partial(done)),
            }
        }
        Ok(())
    }

    /// The process's memory map, one [`Mapping`] per line of `/proc/PID/maps`. A snapshot: the
    /// map may change as soon as it is read.
    pub fn mappings(&self) -> Result<Vec<Mapping>, MemoryError> {
        let pid = self.pid;
        let maps = std::fs::read(format!("/proc/{pid}/maps")).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                MemoryError::NoSuchProcess { pid }
            } else {
                MemoryError::Maps { pid, source }
            }
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
        let page_mask = !(page_size() - 1);
        let mut votes: HashMap<u64, usize> = HashMap::new();
        for &(vaddr, offset) in segments {
            for mapping in &executable {
                if mapping.offset == offset & page_mask {
                    let bias = mapping.start.wrapping_sub(vaddr & page_mask);
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

fn partial(read: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("only the first {read} bytes are mapped and readable"),
    )
}

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size)
        .ok()
        .filter(|size| size.is_power_of_two())
        .unwrap_or(4096)
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

/// Every thread of a process held still, for a consistent snapshot of its memory; resumed when
/// dropped, also when a panic unwinds, and by the kernel if this process dies.
///
/// Threads are stopped with `PTRACE_SEIZE` + `PTRACE_INTERRUPT`, which, unlike `SIGSTOP`,
/// sends no signal: neither the process nor its parent (a shell's job control) sees anything
/// but the pause. System calls the pause interrupts are restarted by the kernel (an
/// `epoll_wait` or `futex` wait resumes with the time it had left). A signal that arrives
/// while frozen is delivered on resume.
///
/// A thread can have only one tracer: freezing fails with [`MemoryError::AlreadyTraced`] if a
/// debugger (gdb, strace, another freeze) is attached.
///
/// ptrace binds a tracee to the tracing *thread*: a dedicated thread seizes and releases, so a
/// `Freeze` may be dropped on any thread (a tokio worker included).
///
/// Caveat for a target that is this process's own child: ptrace stops are reported to any
/// `waitpid` of this process, so a concurrent wait for that child (tokio's `Child::wait`) can
/// take a stop for an exit and make the freeze time out. `dump` freezes processes it did not
/// start, where this cannot happen.
#[derive(Debug)]
pub struct Freeze {
    pid: u32,
    threads: Vec<u32>,
    release: Option<mpsc::Sender<()>>,
    tracer: Option<thread::JoinHandle<Vec<(u32, io::Error)>>>,
}

/// Stops every thread of `pid` (see [`Freeze`]). Threads started while this works are stopped
/// too: it repeats until a pass over `/proc/PID/task` finds no new thread.
pub fn freeze(pid: u32) -> Result<Freeze, MemoryError> {
    if pid == std::process::id() || std::fs::metadata(format!("/proc/self/task/{pid}")).is_ok() {
        return Err(MemoryError::FreezeSelf { pid });
    }
    if libc::pid_t::try_from(pid).is_err() || pid == 0 {
        return Err(MemoryError::NoSuchProcess { pid });
    }
    let (ready_tx, ready_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let tracer = thread::Builder::new()
        .name(format!("freeze-{pid}"))
        .spawn(move || {
            let mut tracees = Tracees {
                pid,
                list: Vec::new(),
            };
            match tracees.stop_all() {
                Ok(()) => {
                    let threads = tracees.list.iter().map(|tracee| tracee.tid).collect();
                    if ready_tx.send(Ok(threads)).is_ok() {
                        // Also returns when the Freeze is dropped without a message.
                        let _ = release_rx.recv();
                    }
                }
                Err(error) => {
                    let _ = ready_tx.send(Err(error));
                }
            }
            tracees.detach_all()
        })
        .map_err(|source| MemoryError::Freeze {
            pid,
            tid: pid,
            source,
        })?;
    match ready_rx.recv() {
        Ok(Ok(threads)) => Ok(Freeze {
            pid,
            threads,
            release: Some(release_tx),
            tracer: Some(tracer),
        }),
        Ok(Err(error)) => {
            let _ = tracer.join();
            Err(error)
        }
        // The tracer panicked; its Tracees resumed whatever it had stopped while unwinding.
        Err(_) => {
            let _ = tracer.join();
            Err(MemoryError::Freeze {
                pid,
                tid: pid,
                source: io::Error::other("the freezing thread panicked"),
            })
        }
    }
}

impl Freeze {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The threads held stopped.
    pub fn threads(&self) -> &[u32] {
        &self.threads
    }

    /// Resumes the process now, reporting a thread that could not be released (dropping does
    /// the same silently). A thread that died meanwhile (SIGKILL) is not an error.
    pub fn resume(mut self) -> Result<(), MemoryError> {
        match self.release().into_iter().next() {
            None => Ok(()),
            Some((tid, source)) => Err(MemoryError::Freeze {
                pid: self.pid,
                tid,
                source,
            }),
        }
    }

    fn release(&mut self) -> Vec<(u32, io::Error)> {
        drop(self.release.take());
        match self.tracer.take() {
            Some(tracer) => tracer.join().unwrap_or_default(),
            None => Vec::new(),
        }
    }
}

impl Drop for Freeze {
    fn drop(&mut self) {
        self.release();
    }
}

struct Tracee {
    tid: u32,
    /// A signal the thread was about to receive when it stopped: handed back on detach, or the
    /// freeze would have swallowed it.
    signal: libc::c_int,
}

/// The threads seized by the current thread; detached on drop, so an early error or a panic
/// never leaves the target stopped.
struct Tracees {
    pid: u32,
    list: Vec<Tracee>,
}

impl Tracees {
    fn stop_all(&mut self) -> Result<(), MemoryError> {
        let mut seen = HashSet::new();
        loop {
            let fresh: Vec<u32> = threads_of(self.pid)?
                .into_iter()
                .filter(|&tid| seen.insert(tid))
                .collect();
            if fresh.is_empty() {
                return Ok(());
            }
            let mut stopping = Vec::new();
            for tid in fresh {
                if self.seize(tid)? {
                    stopping.push(tid);
                }
            }
            self.wait_stopped(stopping)?;
        }
    }

    /// Seizes and interrupts `tid`; `false` if it is exiting or gone.
    fn seize(&mut self, tid: u32) -> Result<bool, MemoryError> {
        let pid = self.pid;
        let null = std::ptr::null_mut::<libc::c_void>();
        // SAFETY: PTRACE_SEIZE with no options passes no memory.
        if unsafe { libc::ptrace(libc::PTRACE_SEIZE, tid as libc::pid_t, null, null) } == -1 {
            let source = io::Error::last_os_error();
            return match source.raw_os_error() {
                Some(libc::ESRCH) => Ok(false),
                Some(libc::EPERM) => {
                    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
                        .unwrap_or_default();
                    let tracer = status_field(&status, "TracerPid:")
                        .and_then(|value| value.parse::<u32>().ok())
                        .unwrap_or(0);
                    // TracerPid names the tracing thread; its process is what a user knows.
                    let tracer = std::fs::read_to_string(format!("/proc/{tracer}/status"))
                        .ok()
                        .and_then(|status| status_field(&status, "Tgid:")?.parse().ok())
                        .unwrap_or(tracer);
                    let state = status_field(&status, "State:").and_then(|s| s.chars().next());
                    if tracer != 0 {
                        Err(MemoryError::AlreadyTraced { pid, tid, tracer })
                    } else if status.is_empty() || matches!(state, Some('Z' | 'X')) {
                        // An exiting thread (a zombie leader whose other threads live on)
                        // cannot be traced and runs no more code: nothing to stop.
                        Ok(false)
                    } else {
                        Err(MemoryError::Freeze {
                            pid,
                            tid,
                            source: io::Error::new(
                                io::ErrorKind::PermissionDenied,
                                "ptrace not permitted (needs root or CAP_SYS_PTRACE for another \
                                 user's process, and kernel.yama.ptrace_scope below 3)",
                            ),
                        })
                    }
                }
                _ => Err(MemoryError::Freeze { pid, tid, source }),
            };
        }
        self.list.push(Tracee { tid, signal: 0 });
        // SAFETY: PTRACE_INTERRUPT passes no memory.
        if unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, tid as libc::pid_t, null, null) } == -1 {
            let source = io::Error::last_os_error();
            // ESRCH: it is dying; its exit is collected while waiting.
            if source.raw_os_error() != Some(libc::ESRCH) {
                return Err(MemoryError::Freeze { pid, tid, source });
            }
        }
        Ok(true)
    }

    /// Waits until each of `stopping` is in a ptrace stop (or gone), polling so that a thread
    /// that never stops becomes an error instead of a hang.
    fn wait_stopped(&mut self, mut stopping: Vec<u32>) -> Result<(), MemoryError> {
        let deadline = Instant::now() + FREEZE_TIMEOUT;
        loop {
            let mut pending = Vec::new();
            for tid in stopping {
                let mut status = 0;
                // SAFETY: writes the status to a local; __WALL because non-leader threads
                // report like clone children, which plain waitpid ignores.
                let waited = unsafe {
                    libc::waitpid(
                        tid as libc::pid_t,
                        &mut status,
                        libc::__WALL | libc::WNOHANG,
                    )
                };
                if waited == 0 {
                    pending.push(tid);
                } else if waited == -1 {
                    let source = io::Error::last_os_error();
                    match source.raw_os_error() {
                        Some(libc::EINTR) => pending.push(tid),
                        Some(libc::ECHILD) => self.forget(tid),
                        _ => {
                            return Err(MemoryError::Freeze {
                                pid: self.pid,
                                tid,
                                source,
                            });
                        }
                    }
                } else if libc::WIFSTOPPED(status) {
                    // No ptrace event: a signal-delivery stop, which stops the thread just as
                    // well (the interrupt stays pending and is dropped on detach). The signal
                    // must be re-sent on detach or the target would lose it.
                    if status >> 16 == 0 {
                        let signal = libc::WSTOPSIG(status);
                        if let Some(tracee) = self.list.iter_mut().find(|t| t.tid == tid) {
                            tracee.signal = signal;
                        }
                    }
                } else {
                    // Exited or killed while being seized.
                    self.forget(tid);
                }
            }
            let Some(&late) = pending.first() else {
                return Ok(());
            };
            if Instant::now() >= deadline {
                return Err(MemoryError::FreezeTimeout {
                    pid: self.pid,
                    tid: late,
                    timeout: FREEZE_TIMEOUT,
                });
            }
            stopping = pending;
            thread::sleep(Duration::from_micros(200));
        }
    }

    fn forget(&mut self, tid: u32) {
        self.list.retain(|tracee| tracee.tid != tid);
    }

    /// Resumes every seized thread; returns the ones that could not be released.
    fn detach_all(&mut self) -> Vec<(u32, io::Error)> {
        let mut failures = Vec::new();
        for tracee in self.list.drain(..) {
            let tid = tracee.tid as libc::pid_t;
            // The signal travels in ptrace's data argument, as an integer.
            let signal =
                std::ptr::without_provenance_mut::<libc::c_void>(tracee.signal.max(0) as usize);
            // SAFETY: PTRACE_DETACH passes no memory; `signal` is a number, not a pointer.
            let detached = unsafe {
                libc::ptrace(
                    libc::PTRACE_DETACH,
                    tid,
                    std::ptr::null_mut::<libc::c_void>(),
                    signal,
                )
            };
            if detached == -1 {
                let error = io::Error::last_os_error();
                if error.raw_os_error() == Some(libc::ESRCH) {
                    // Killed while frozen: reap the zombie it leaves for its tracer.
                    let mut status = 0;
                    // SAFETY: writes the status to a local.
                    unsafe { libc::waitpid(tid, &mut status, libc::__WALL | libc::WNOHANG) };
                } else {
                    failures.push((tracee.tid, error));
                }
            }
        }
        failures
    }
}

impl Drop for Tracees {
    fn drop(&mut self) {
        self.detach_all();
    }
}

fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .map(str::trim)
}

fn threads_of(pid: u32) -> Result<Vec<u32>, MemoryError> {
    let entries = std::fs::read_dir(format!("/proc/{pid}/task")).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            MemoryError::NoSuchProcess { pid }
        } else {
            MemoryError::Threads { pid, source }
        }
    })?;
    let mut tids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| MemoryError::Threads { pid, source })?;
        if let Some(tid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
            tids.push(tid);
        }
    }
    tids.sort_unstable();
    Ok(tids)
}

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead as _, BufReader},
        process::{Child, Command, Stdio},
    };

    use object::{Object as _, ObjectSegment as _, ObjectSymbol as _};

    use super::*;

    fn own() -> ProcessMemory {
        ProcessMemory::open(std::process::id()).expect("open self")
    }

    #[test]
    fn open_rejects_missing_processes() {
        for pid in [0, u32::MAX, i32::MAX as u32] {
            assert!(
                matches!(ProcessMemory::open(pid), Err(MemoryError::NoSuchProcess { pid: p }) if p == pid),
                "{pid}"
            );
        }
    }

    /// Two pages, the second unmapped: reads that touch it must fail, not crash or come back
    /// short.
    struct HalfMapped {
        base: *mut libc::c_void,
        page: usize,
    }

    impl HalfMapped {
        fn new() -> Self {
            let page = page_size() as usize;
            // SAFETY: a fresh anonymous mapping; the second page is unmapped again right away.
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    2 * page,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(base, libc::MAP_FAILED);
            // SAFETY: the second page of the mapping above.
            assert_eq!(
                unsafe { libc::munmap(base.cast::<u8>().add(page).cast(), page) },
                0
            );
            // SAFETY: the first page is mapped read-write.
            unsafe { base.cast::<u8>().write_bytes(0xa5, page) };
            Self { base, page }
        }

        fn address(&self) -> u64 {
            self.base as u64
        }
    }

    impl Drop for HalfMapped {
        fn drop(&mut self) {
            // SAFETY: the page still mapped.
            unsafe { libc::munmap(self.base, self.page) };
        }
    }

    #[test]
    fn reads_are_whole_or_errors() {
        let memory = own();
        let value: u64 = 0x1234_5678_9abc_def0;
        assert_eq!(
            memory.read_u64(&raw const value as u64).expect("read"),
            value
        );
        assert!(memory.read_u64(8).is_err(), "page zero is never mapped");
        assert!(memory.read_u64(u64::MAX - 3).is_err(), "wraps around");

        let half = HalfMapped::new();
        let page = half.page as u64;
        assert_eq!(
            memory
                .read_bytes(half.address(), page)
                .expect("mapped page"),
            vec![0xa5; half.page]
        );
        let mut straddling = [0u8; 16];
        let error = memory
            .read(half.address() + page - 8, &mut straddling)
            .expect_err("straddles into the unmapped page");
        assert!(
            matches!(error, MemoryError::Read { len: 16, .. }),
            "{error}"
        );
        assert!(memory.read_u64(half.address() + page).is_err());

        // The /proc/PID/mem fallback behaves the same.
        let mut word = [0u8; 8];
        memory
            .read_mem_file(&raw const value as u64, &mut word)
            .expect("mem file");
        assert_eq!(u64::from_le_bytes(word), value);
        assert!(
            memory
                .read_mem_file(half.address() + page - 8, &mut straddling)
                .is_err()
        );
        assert!(
            memory
                .read_mem_file(half.address() + page, &mut word)
                .is_err()
        );
    }

    #[test]
    fn sizes_from_the_target_are_capped() {
        assert!(matches!(
            own().read_bytes(0x1000, MAX_READ + 1),
            Err(MemoryError::TooLarge { len, max: MAX_READ }) if len == MAX_READ + 1
        ));
        assert!(matches!(
            own().read_bytes(0x1000, u64::MAX),
            Err(MemoryError::TooLarge { .. })
        ));
    }

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
        let only_the_object = Mapping {
            start: address,
            end: address + size_of::<Fake>() as u64,
            readable: true,
            writable: true,
            executable: false,
            private: true,
            offset: 0,
            dev: (0, 0),
            inode: 0,
            path: None,
            pseudo: None,
            deleted: false,
        };
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
        let region = |start: u64, end: u64| Mapping {
            start,
            end,
            readable: true,
            writable: true,
            executable: false,
            private: true,
            offset: 0,
            dev: (0, 0),
            inode: 0,
            path: None,
            pseudo: Some("[anon:test]".into()),
            deleted: false,
        };
        let mappings = [
            region(hole, hole + half.page as u64),
            region(start, start + bytes.len() as u64),
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

    /// A child that is reaped even when an assertion fails.
    struct Reaped(Child);

    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn stat_fields(pid: u32, tid: u32) -> Option<(char, u64)> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
        // After the parenthesised command (which may contain anything): state, then fields;
        // utime is the 14th field of the line, the 12th after the command.
        let after = stat.get(stat.rfind(')')? + 2..)?;
        let mut fields = after.split(' ');
        let state = fields.next()?.chars().next()?;
        let utime = fields.nth(10)?.parse().ok()?;
        Some((state, utime))
    }

    fn states(pid: u32) -> Vec<char> {
        threads_of(pid)
            .expect("threads")
            .into_iter()
            .filter_map(|tid| stat_fields(pid, tid).map(|(state, _)| state))
            .collect()
    }

    fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting: {what}");
            thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn freeze_stops_a_busy_process_and_resumes_it() {
        let child = Reaped(
            Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .expect("spawn sh"),
        );
        let pid = child.0.id();
        let cpu = || stat_fields(pid, pid).expect("stat").1;
        wait_until("the loop runs", || cpu() > 0);

        let frozen = freeze(pid).expect("freeze");
        assert_eq!(frozen.threads(), [pid]);
        assert_eq!(states(pid), ['t']);
        let before = cpu();
        thread::sleep(Duration::from_millis(100));
        assert_eq!(cpu(), before, "no CPU time while frozen");
        // Its memory can be read meanwhile.
        let memory = ProcessMemory::open(pid).expect("open");
        let stack = memory
            .mappings()
            .expect("maps")
            .into_iter()
            .find(|mapping| mapping.pseudo.as_deref() == Some("[stack]"))
            .expect("a stack");
        memory.read_u64(stack.end - 8).expect("stack top");

        // A second tracer is refused with a clear error, and leaves the first in place.
        match freeze(pid) {
            Err(MemoryError::AlreadyTraced {
                pid: p,
                tid,
                tracer,
            }) => {
                assert_eq!((p, tid, tracer), (pid, pid, std::process::id()));
            }
            other => panic!("expected AlreadyTraced, got {other:?}"),
        }
        assert_eq!(states(pid), ['t']);

        drop(frozen);
        wait_until("running again", || {
            states(pid).iter().all(|state| matches!(state, 'R' | 'S'))
        });
        wait_until("CPU time again", || cpu() > before);
        // Nothing of the freeze stays behind: it can be frozen again and resumed explicitly.
        freeze(pid).expect("again").resume().expect("resume");
        wait_until("running again", || states(pid) == ['R']);
    }

    const HELPER_ENV: &str = "ASYNC_INSPECT_FREEZE_HELPER";
    const HELPER_READY: &str = "freeze-helper-ready";

    /// Not a test: the multi-threaded target of `freeze_stops_every_thread` (this test binary
    /// run again with the variable set).
    #[test]
    #[ignore = "helper process for freeze_stops_every_thread"]
    fn freeze_helper_process() {
        if std::env::var_os(HELPER_ENV).is_none() {
            return;
        }
        // Die with the test that started it, however that ends.
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        for busy in [true, true, false, false] {
            thread::spawn(move || {
                loop {
                    if busy {
                        std::hint::black_box(0u64);
                    } else {
                        thread::sleep(Duration::from_millis(1));
                    }
                }
            });
        }
        println!("{HELPER_READY}");
        // Killed by the test long before; a bound in case the test dies first.
        thread::sleep(Duration::from_secs(60));
    }

    #[test]
    fn freeze_stops_every_thread() {
        let mut child = Reaped(
            Command::new(std::env::current_exe().expect("own executable"))
                .args([
                    "--exact",
                    "memory::tests::freeze_helper_process",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(HELPER_ENV, "1")
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn helper"),
        );
        let pid = child.0.id();
        let stdout = child.0.stdout.take().expect("stdout");
        let ready = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            // libtest prints the test's name on the same line first.
            .any(|line| line.contains(HELPER_READY));
        assert!(ready, "helper never got ready");

        let frozen = freeze(pid).expect("freeze");
        let threads = threads_of(pid).expect("threads");
        assert!(threads.len() >= 5, "{threads:?}");
        assert_eq!(frozen.threads(), threads);
        assert!(
            states(pid).iter().all(|&state| state == 't'),
            "{:?}",
            states(pid)
        );
        drop(frozen);
        wait_until("no thread stopped", || {
            states(pid).iter().all(|state| matches!(state, 'R' | 'S'))
        });
    }

    #[test]
    fn freezing_is_refused_for_self_and_missing_processes() {
        assert!(matches!(
            freeze(std::process::id()),
            Err(MemoryError::FreezeSelf { .. })
        ));
        assert!(matches!(
            freeze(i32::MAX as u32),
            Err(MemoryError::NoSuchProcess { .. })
        ));
    }
}
