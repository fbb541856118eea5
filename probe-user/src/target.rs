//! The process being probed: launched by us (held at a gate until the probes are attached, so
//! they are in place before its `main` runs) or an existing one found by pid.

use std::{
    ffi::OsString,
    io::Write as _,
    num::NonZeroU32,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    process::ExitStatus,
};

use crate::report::TargetExit;

/// The hidden first argument that turns `async-inspect` into the launch gate.
pub const GATE_ARG: &str = "__async-inspect-gate";

/// Exit statuses of our own, as `env`, `timeout` and `docker run` use them, so that a launched
/// program's status (passed through unchanged) is never mistaken for ours: async-inspect
/// itself failed.
pub const EXIT_FAILED: u8 = 125;
/// The command was found but cannot be run (not executable, wrong format).
pub const EXIT_CANNOT_RUN: u8 = 126;
/// The command was not found.
pub const EXIT_NOT_FOUND: u8 = 127;

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("no process with pid {0}")]
    NoSuchPid(u32),
    #[error(
        "process {pid} started another program ({now}) while async-inspect was reading its \
         executable: nothing was attached; run it again on the new program"
    )]
    ExecdMeanwhile { pid: u32, now: String },
    #[error("cannot inspect process {pid} (reading /proc/{pid}/exe): {source}; {denial}")]
    Inaccessible {
        pid: u32,
        source: std::io::Error,
        denial: Denial,
    },
    #[error("{0}: no such file")]
    NoSuchProgram(PathBuf),
    #[error("{path} is not executable")]
    NotExecutable { path: PathBuf },
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl TargetError {
    /// The exit status for this error: the command's own faults get the shell's 126 and 127.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::NoSuchProgram(_) => EXIT_NOT_FOUND,
            Self::NotExecutable { .. } => EXIT_CANNOT_RUN,
            Self::Spawn { source, .. } => spawn_exit_code(source),
            _ => EXIT_FAILED,
        }
    }
}

/// 127 when the program is not there, 126 when it is but cannot be run.
pub fn spawn_exit_code(error: &std::io::Error) -> u8 {
    match error.kind() {
        std::io::ErrorKind::NotFound => EXIT_NOT_FOUND,
        _ => EXIT_CANNOT_RUN,
    }
}

/// Why the kernel would not let us look at a process, as far as we can tell from outside.
#[derive(Debug)]
pub enum Denial {
    /// Another user's process, and we lack CAP_SYS_PTRACE.
    OtherUser { owner: u32 },
    /// We are privileged, so it is not about privileges.
    DespitePrivileges,
    /// Our own user's process that refuses tracing (setuid, or dumping turned off).
    NotDumpable,
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::OtherUser { owner } => write!(
                f,
                "it belongs to user {owner}: run async-inspect as root (sudo), or give it CAP_SYS_PTRACE"
            ),
            Self::DespitePrivileges => f.write_str(
                "async-inspect already has CAP_SYS_PTRACE, so more privileges will not help: the \
                 kernel's ptrace access check refused anyway. Most likely the process is not \
                 dumpable and belongs to another user namespace (a container's or a sandbox's \
                 init, say), or a security module (Yama ptrace_scope 3, SELinux, AppArmor) forbids \
                 tracing it: run async-inspect in the process's own namespace (inside its \
                 container), or lift that policy",
            ),
            Self::NotDumpable => f.write_str(
                "it runs as your user but is not dumpable (a setuid program, or one that turned \
                 dumping off with prctl): run async-inspect as root",
            ),
        }
    }
}

impl Denial {
    /// Tells apart the reasons for a refused look at `pid`.
    fn of(pid: u32) -> Self {
        if has_ptrace_capability() {
            return Self::DespitePrivileges;
        }
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        match owner(pid) {
            Some(owner) if owner != me => Self::OtherUser { owner },
            _ => Self::NotDumpable,
        }
    }
}

/// Whether we hold CAP_SYS_PTRACE, which lets us look at any process the kernel's other checks allow.
fn has_ptrace_capability() -> bool {
    const CAP_SYS_PTRACE: u32 = 19;
    status_field("self", "CapEff:")
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_PTRACE) != 0)
}

/// The real uid of process `pid`.
fn owner(pid: u32) -> Option<u32> {
    status_field(&pid.to_string(), "Uid:")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The value of one line of `/proc/<who>/status`.
fn status_field(who: &str, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{who}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    Some(line[field.len()..].trim().to_owned())
}

/// A process we started, still waiting at the gate.
pub struct Launched {
    pub pid: NonZeroU32,
    /// The executable the target will run: what to resolve and attach to.
    pub binary: PathBuf,
    child: tokio::process::Child,
    gate: std::fs::File,
}

/// Finds `program` like `execvp` would.
pub fn find_program(program: &std::ffi::OsStr) -> Result<PathBuf, TargetError> {
    let as_path = PathBuf::from(program);
    let candidate = if as_path.components().count() > 1 {
        Some(as_path.clone())
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(&as_path))
                .find(|path| path.is_file())
        })
    };
    let path = candidate
        .filter(|path| path.exists())
        .ok_or_else(|| TargetError::NoSuchProgram(as_path.clone()))?;
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&path)?.permissions().mode();
    if mode & 0o111 == 0 || path.is_dir() {
        return Err(TargetError::NotExecutable { path });
    }
    Ok(std::fs::canonicalize(&path)?)
}

/// Starts `command` held at a gate: the child is `async-inspect` itself, waiting on a pipe, and
/// execs the real program once [`Launched::release`] is called (same pid, so the probes' pid
/// filter already covers it). Its stdio is ours, unless `output` is given: then its stdout and
/// stderr go there and its stdin is empty (the live view owns the terminal).
pub fn launch(
    command: &[OsString],
    output: Option<std::fs::File>,
) -> Result<Launched, TargetError> {
    let binary = find_program(&command[0])?;
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints. No O_CLOEXEC: the child inherits the read end.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: pipe() just returned these descriptors, owned by nobody else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // The write end must not leak into the child, or the gate would never see EOF on our death.
    // SAFETY: fcntl on a descriptor we own.
    unsafe { libc::fcntl(write_end.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    let me = std::env::current_exe()?;
    let mut gate = tokio::process::Command::new(me);
    gate.arg(GATE_ARG)
        .arg(read_end.as_raw_fd().to_string())
        .arg(&binary)
        .args(command)
        .kill_on_drop(false);
    if let Some(output) = output {
        gate.stdin(std::process::Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output);
    }
    let child = gate.spawn().map_err(|source| TargetError::Spawn {
        program: command[0].to_string_lossy().into_owned(),
        source,
    })?;
    drop(read_end);
    let pid = child
        .id()
        .and_then(NonZeroU32::new)
        .ok_or_else(|| std::io::Error::other("the launched process has no pid"))?;
    Ok(Launched {
        pid,
        binary,
        child,
        gate: std::fs::File::from(write_end),
    })
}

impl Launched {
    /// Lets the target exec its program; returns the child to wait on.
    pub fn release(mut self) -> Result<tokio::process::Child, TargetError> {
        self.gate.write_all(b"g")?;
        Ok(self.child)
    }

    /// Stops a target that will not be probed (attach failed): the gate sees EOF and exits.
    pub async fn abandon(mut self) {
        drop(self.gate);
        let _ = self.child.wait().await;
    }
}

/// The gate side, run in the child: `GATE_ARG <fd> <binary> <argv0> <args...>`. Waits for the
/// go byte, then execs; only returns on failure.
pub fn run_gate(args: &[OsString]) -> i32 {
    use std::os::unix::process::CommandExt as _;
    let (Some(fd), Some(binary), Some(argv0)) = (
        args.first().and_then(|fd| fd.to_str()?.parse::<i32>().ok()),
        args.get(1),
        args.get(2),
    ) else {
        eprintln!("async-inspect: {GATE_ARG} is internal");
        return EXIT_FAILED.into();
    };
    let mut go = [0u8; 1];
    // SAFETY: reading into a 1-byte buffer from the inherited pipe.
    let read = unsafe { libc::read(fd, go.as_mut_ptr().cast(), 1) };
    // SAFETY: closing our own inherited descriptor.
    unsafe { libc::close(fd) };
    if read != 1 {
        // The probe went away before attaching: do not run the target unprobed.
        return EXIT_FAILED.into();
    }
    let error = std::process::Command::new(binary)
        .arg0(argv0)
        .args(&args[3..])
        .exec();
    eprintln!(
        "async-inspect: cannot run {}: {error}",
        binary.to_string_lossy()
    );
    spawn_exit_code(&error).into()
}

/// How reports name an executable: by pid it is `/proc/PID/exe`, so name what that points at.
pub fn display_name(binary: &Path) -> String {
    std::fs::read_link(binary)
        .unwrap_or_else(|_| binary.to_owned())
        .display()
        .to_string()
}

/// The program `pid` runs now, if it is alive and no longer `probed` (it exec'd another).
pub fn exec_since(pid: NonZeroU32, probed: &str) -> Option<String> {
    let now = display_name(Path::new(&format!("/proc/{pid}/exe")));
    (is_alive(pid) && now != probed && !now.starts_with("/proc/")).then_some(now)
}

/// The executable `exe` (a `/proc/PID/exe`) held open, and a path that names that very file for
/// as long as it is: `/proc/PID/exe` names whatever the process runs when it is opened, so a
/// process that exec'd between resolving and attaching would get probes placed for another
/// program. Attached through this path, the probes land in the file that was resolved; a
/// program that exec'd never hits them (and the report says it exec'd).
pub fn pin(exe: &Path) -> Result<(std::fs::File, PathBuf), TargetError> {
    let file = std::fs::File::open(exe)?;
    let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    Ok((file, path))
}

/// Checks that process `pid` still runs the file `pinned` (and so the file that was resolved):
/// one that exec'd another program meanwhile is refused rather than probed by the wrong plan.
pub fn still_runs(pid: NonZeroU32, pinned: &std::fs::File) -> Result<(), TargetError> {
    use std::os::unix::fs::MetadataExt as _;
    let exe = PathBuf::from(format!("/proc/{pid}/exe"));
    let now = std::fs::metadata(&exe)?;
    let then = pinned.metadata()?;
    if (now.dev(), now.ino()) == (then.dev(), then.ino()) {
        return Ok(());
    }
    Err(TargetError::ExecdMeanwhile {
        pid: pid.get(),
        now: display_name(&exe),
    })
}

/// Checks that `pid` exists and that we can read its executable.
pub fn existing(pid: u32) -> Result<(NonZeroU32, PathBuf), TargetError> {
    let nonzero = NonZeroU32::new(pid).ok_or(TargetError::NoSuchPid(pid))?;
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    if !proc_dir.exists() {
        return Err(TargetError::NoSuchPid(pid));
    }
    let exe = proc_dir.join("exe");
    std::fs::read_link(&exe).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => TargetError::NoSuchPid(pid),
        _ => TargetError::Inaccessible {
            pid,
            denial: Denial::of(pid),
            source,
        },
    })?;
    // /proc/PID/exe opens the very file the process runs, even if it was replaced or deleted.
    Ok((nonzero, exe))
}

/// Resolves when process `pid` (not our child) has exited.
pub async fn exited(pid: NonZeroU32) -> std::io::Result<()> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.get() as libc::c_int, 0) };
    if fd < 0 {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        return Err(error);
    }
    // SAFETY: the syscall returned a new descriptor that we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // A pidfd becomes readable when the process exits.
    // SAFETY: the AsyncFd owns the pidfd until it is dropped.
    let fd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
    }?;
    let _ = fd.readable().await?;
    Ok(())
}

/// Whether process `pid` still exists (a zombie counts as gone).
pub fn is_alive(pid: NonZeroU32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state letter follows the parenthesised command name, which may contain spaces.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X')
    })
}

/// How a launched program ended, for the reports.
pub fn ended(status: ExitStatus) -> TargetExit {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => TargetExit::Code { code },
        (None, Some(signal)) => TargetExit::Signal {
            signal: signal_name(signal),
            core_dumped: status.core_dumped(),
        },
        // Stopped or continued: `wait` reports neither for a child it was not asked to trace.
        (None, None) => TargetExit::Code {
            code: exit_code(status),
        },
    }
}

/// `SIGSEGV` for 11: what `kill -l` says, with the prefix.
pub fn signal_name(signal: i32) -> String {
    const NAMES: [(i32, &str); 31] = [
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGQUIT, "SIGQUIT"),
        (libc::SIGILL, "SIGILL"),
        (libc::SIGTRAP, "SIGTRAP"),
        (libc::SIGABRT, "SIGABRT"),
        (libc::SIGBUS, "SIGBUS"),
        (libc::SIGFPE, "SIGFPE"),
        (libc::SIGKILL, "SIGKILL"),
        (libc::SIGUSR1, "SIGUSR1"),
        (libc::SIGSEGV, "SIGSEGV"),
        (libc::SIGUSR2, "SIGUSR2"),
        (libc::SIGPIPE, "SIGPIPE"),
        (libc::SIGALRM, "SIGALRM"),
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGSTKFLT, "SIGSTKFLT"),
        (libc::SIGCHLD, "SIGCHLD"),
        (libc::SIGCONT, "SIGCONT"),
        (libc::SIGSTOP, "SIGSTOP"),
        (libc::SIGTSTP, "SIGTSTP"),
        (libc::SIGTTIN, "SIGTTIN"),
        (libc::SIGTTOU, "SIGTTOU"),
        (libc::SIGURG, "SIGURG"),
        (libc::SIGXCPU, "SIGXCPU"),
        (libc::SIGXFSZ, "SIGXFSZ"),
        (libc::SIGVTALRM, "SIGVTALRM"),
        (libc::SIGPROF, "SIGPROF"),
        (libc::SIGWINCH, "SIGWINCH"),
        (libc::SIGIO, "SIGIO"),
        (libc::SIGPWR, "SIGPWR"),
        (libc::SIGSYS, "SIGSYS"),
    ];
    match NAMES.iter().find(|(number, _)| *number == signal) {
        Some((_, name)) => (*name).to_owned(),
        None if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&signal) => {
            format!("SIGRTMIN+{}", signal - libc::SIGRTMIN())
        }
        None => format!("signal {signal}"),
    }
}

/// The exit code `async-inspect probe -- CMD` ends with: the target's own, or 128 + signal.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt as _;

    use super::*;

    #[test]
    fn how_a_program_ended_is_named() {
        // wait(2)'s raw status: the code in the second byte, or the signal and the core flag.
        assert_eq!(
            ended(ExitStatus::from_raw(3 << 8)),
            TargetExit::Code { code: 3 }
        );
        let segv = ended(ExitStatus::from_raw(libc::SIGSEGV | 0x80));
        assert_eq!(
            segv,
            TargetExit::Signal {
                signal: "SIGSEGV".into(),
                core_dumped: true
            }
        );
        assert_eq!(
            segv.describe(),
            "the program was killed by SIGSEGV (core dumped)"
        );
        assert_eq!(
            serde_json::to_string(&segv).unwrap(),
            r#"{"signal":"SIGSEGV","core_dumped":true}"#
        );
        assert_eq!(
            serde_json::to_string(&TargetExit::Code { code: 0 }).unwrap(),
            r#"{"code":0}"#
        );
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGABRT)), 134);
        assert_eq!(signal_name(libc::SIGRTMIN() + 2), "SIGRTMIN+2");
    }

    #[test]
    fn a_command_that_cannot_run_gets_the_shells_statuses() {
        assert_eq!(
            TargetError::NoSuchProgram("/no/such".into()).exit_code(),
            EXIT_NOT_FOUND
        );
        assert_eq!(
            TargetError::NotExecutable {
                path: "/etc/passwd".into()
            }
            .exit_code(),
            EXIT_CANNOT_RUN
        );
        assert_eq!(TargetError::NoSuchPid(7).exit_code(), EXIT_FAILED);
    }
}
