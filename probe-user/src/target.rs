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

/// The hidden first argument that turns `async-inspect` into the launch gate.
pub const GATE_ARG: &str = "__async-inspect-gate";

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("no process with pid {0}")]
    NoSuchPid(u32),
    #[error("cannot inspect process {pid}: {source} (probing another user's process needs root)")]
    Inaccessible { pid: u32, source: std::io::Error },
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
        return 2;
    };
    let mut go = [0u8; 1];
    // SAFETY: reading into a 1-byte buffer from the inherited pipe.
    let read = unsafe { libc::read(fd, go.as_mut_ptr().cast(), 1) };
    // SAFETY: closing our own inherited descriptor.
    unsafe { libc::close(fd) };
    if read != 1 {
        // The probe went away before attaching: do not run the target unprobed.
        return 125;
    }
    let error = std::process::Command::new(binary)
        .arg0(argv0)
        .args(&args[3..])
        .exec();
    eprintln!(
        "async-inspect: cannot run {}: {error}",
        binary.to_string_lossy()
    );
    127
}

/// How reports name an executable: by pid it is `/proc/PID/exe`, so name what that points at.
pub fn display_name(binary: &Path) -> String {
    std::fs::read_link(binary)
        .unwrap_or_else(|_| binary.to_owned())
        .display()
        .to_string()
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
        _ => TargetError::Inaccessible { pid, source },
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

/// The exit code `async-inspect probe -- CMD` ends with: the target's own, or 128 + signal.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1)
}
