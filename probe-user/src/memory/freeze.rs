//! Holding a process still while it is read, and letting it go.

use std::{
    collections::HashSet,
    io,
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use super::MemoryError;

/// How long [`freeze`] waits for a thread to reach its stop. Only a thread stuck in an
/// uninterruptible kernel wait (a hung NFS server, say) takes more than microseconds.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

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
        MemoryError::reading_proc(pid, source, |source| MemoryError::Threads { pid, source })
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

    use super::*;
    use crate::memory::ProcessMemory;

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
                    // libtest names a test by its path without the crate's name.
                    &format!(
                        "{}::freeze_helper_process",
                        module_path!().split_once("::").expect("in a crate").1
                    ),
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
