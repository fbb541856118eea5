//! Reading a live process's memory, never writing it: for `dump` (finding every task in the
//! heap), for decoding await points, and for unwinding blocked threads. Its parts: reads
//! ([`ProcessMemory`], here), the memory map (`maps`), the heap scan (`scan`) and holding a
//! process still (`freeze`).
//!
//! Unless the target is held still with [`freeze`], every read races the running program: a
//! structure may be half-updated, a pointer may be freed and reused between two reads, a mapping
//! may disappear between [`ProcessMemory::mappings`] and a read of it. So callers bounds-check
//! everything they read, treat every pointer and size as a claim to verify rather than a fact,
//! and retry (or give up on that one object) when what they read is inconsistent. This module
//! does its part: a read is whole or an error, never a crash and never a partial buffer, and
//! sizes read from the target are capped before anything is allocated for them.

use std::{
    fs::File,
    io,
    os::unix::fs::FileExt as _,
    sync::{
        OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

mod freeze;
mod maps;
mod scan;

pub use freeze::{Freeze, freeze};
pub use maps::Mapping;
pub use scan::ScanStats;

/// The most [`ProcessMemory::read_bytes`] reads at once. Sizes come from the target, where a
/// torn or stale word can claim anything; no real object we decode comes near this.
pub const MAX_READ: u64 = 16 * 1024 * 1024;

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

impl MemoryError {
    /// A `/proc/PID/...` entry that could not be read: the process is gone when it is not
    /// found, else the error `other` makes of the cause.
    fn reading_proc(pid: u32, source: io::Error, other: impl FnOnce(io::Error) -> Self) -> Self {
        if source.kind() == io::ErrorKind::NotFound {
            Self::NoSuchProcess { pid }
        } else {
            other(source)
        }
    }
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
}

fn partial(read: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("only the first {read} bytes are mapped and readable"),
    )
}

pub(super) fn page_size() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size)
        .ok()
        .filter(|size| size.is_power_of_two())
        .unwrap_or(4096)
}

/// What the tests of each part read: this process, and memory with a hole.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A private read-write anonymous mapping from `start` to `end`.
    pub fn anonymous(start: u64, end: u64) -> Mapping {
        Mapping {
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
        }
    }

    pub fn own() -> ProcessMemory {
        ProcessMemory::open(std::process::id()).expect("open self")
    }

    /// Two pages, the second unmapped: reads that touch it must fail, not crash or come back
    /// short.
    pub struct HalfMapped {
        base: *mut libc::c_void,
        pub page: usize,
    }

    impl HalfMapped {
        pub fn new() -> Self {
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

        pub fn address(&self) -> u64 {
            self.base as u64
        }
    }

    impl Drop for HalfMapped {
        fn drop(&mut self) {
            // SAFETY: the page still mapped.
            unsafe { libc::munmap(self.base, self.page) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{testing::*, *};

    #[test]
    fn open_rejects_missing_processes() {
        for pid in [0, u32::MAX, i32::MAX as u32] {
            assert!(
                matches!(ProcessMemory::open(pid), Err(MemoryError::NoSuchProcess { pid: p }) if p == pid),
                "{pid}"
            );
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
}
