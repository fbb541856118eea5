//! Verify: before anything is launched, attached or read, check that the plan fits the program
//! that runs. `--binary` and `--debuginfo` name files the user believes to be builds of it; a
//! wrong one puts uprobes at another build's offsets, inside the running code's instructions,
//! and the target crashes or hangs (or, read from memory, gets confident wrong names).
//!
//! Build ids decide when both files have one. Without them, the bytes at every probe site must
//! be the same in both files. Either way, each probe must then start an instruction of the
//! running code, decoded from its function's start: the kernel writes its `int3` at any offset it
//! is given.
//!
//! The running code is read from the executable's file (`/proc/PID/exe` opens the very file a
//! process runs, even deleted or replaced), not from the process's memory: uprobes patch the
//! file's pages at file offsets, which is what must match, and memory also holds the `int3`s of
//! any debugger or other tracer, which would read as a difference.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use object::Object as _;

use super::{ProbePlan, Site, SiteKind, bytes_at, entry, file_offset};

/// The longest x86-64 instruction: a probed instruction lies within this many bytes of its start.
const MAX_INSTRUCTION: u64 = 15;

/// The files a run is planned from, and the one it runs.
pub struct Files<'a> {
    /// What the target runs: `/proc/PID/exe`, or the program to launch.
    pub running: &'a Path,
    /// How messages name it (what `/proc/PID/exe` points at).
    pub running_name: String,
    /// `--binary`, when given: where the symbols and the probe offsets came from.
    pub binary: Option<&'a Path>,
    /// `--debuginfo`, when given.
    pub debuginfo: Option<&'a Path>,
}

/// What to pass instead of a file that is not the running program's.
#[derive(Debug)]
pub enum Instead {
    /// The running executable has symbols of its own.
    LeaveOut,
    /// It is stripped: only its own unstripped build will do.
    SameBuild,
}

impl fmt::Display for Instead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::LeaveOut => "leave --binary out: the running executable has symbols of its own",
            Self::SameBuild => {
                "pass the unstripped build this very executable was stripped from (the same \
                 build id; `readelf -n FILE` shows it), or deploy an unstripped build"
            }
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read {path} to check it against the program: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not an ELF file ({reason})")]
    NotElf { path: PathBuf, reason: String },
    #[error(
        "refusing: --binary {binary} (build id {binary_id}) is not the program that runs, \
         {running} (build id {running_id}). Probes placed by another build's offsets would corrupt \
         the running code, and its task layout would find wrong tasks; nothing was started, \
         attached or read. Instead, {instead}"
    )]
    OtherBuild {
        binary: PathBuf,
        binary_id: String,
        running: String,
        running_id: String,
        instead: Instead,
    },
    #[error(
        "refusing: --binary {binary} is not the program that runs, {running}: {ids}, and {what} \
         differ at {site}. Probes placed by another build's offsets would corrupt the running \
         code; nothing was started, attached or read. Instead, {instead}"
    )]
    OtherCode {
        binary: PathBuf,
        running: String,
        ids: &'static str,
        site: String,
        what: &'static str,
        instead: Instead,
    },
    #[error(
        "refusing to use --debuginfo {debuginfo} (build id {debuginfo_id}): it describes another \
         build than the program that runs, {running} (build id {running_id}). Pass the debug file \
         of this build, or leave --debuginfo out to find it by build id under /usr/lib/debug"
    )]
    OtherDebuginfo {
        debuginfo: PathBuf,
        debuginfo_id: String,
        running: String,
        running_id: String,
    },
    #[error(
        "refusing to probe {site} in {running}: {problem}, decoding the function from its start. \
         A probe there would corrupt the instruction; this is a bug in async-inspect's planning, \
         please report it with the binary"
    )]
    Misplaced {
        site: String,
        running: String,
        problem: String,
    },
}

/// Checks `plan` against the program that runs; returns notes on what could not be checked.
pub fn verify(plan: &ProbePlan, files: &Files<'_>) -> Result<Vec<String>, VerifyError> {
    let running_data = read(files.running)?;
    let running = parse(files.running, &running_data)?;
    let running_id = build_id(&running);
    if let Some(binary) = files.binary {
        let data = read(binary)?;
        let file = parse(binary, &data)?;
        same_program(plan, binary, &file, files, &running)?;
    }
    let mut notes = Vec::new();
    if let Some(debuginfo) = files.debuginfo {
        notes.extend(same_debuginfo(debuginfo, files, running_id.as_deref())?);
    }
    for site in &plan.sites {
        on_boundaries(site, &running).map_err(|problem| VerifyError::Misplaced {
            site: describe(site),
            running: files.running_name.clone(),
            problem,
        })?;
    }
    Ok(notes)
}

/// `--binary` is the running program: same build id, or, without build ids, the same code at
/// every probe site.
fn same_program(
    plan: &ProbePlan,
    binary: &Path,
    file: &object::File<'_>,
    files: &Files<'_>,
    running: &object::File<'_>,
) -> Result<(), VerifyError> {
    let fix = || instead(running);
    match (build_id(file), build_id(running)) {
        (Some(ours), Some(theirs)) if ours == theirs => Ok(()),
        (Some(binary_id), Some(running_id)) => Err(VerifyError::OtherBuild {
            binary: binary.to_owned(),
            binary_id,
            running: files.running_name.clone(),
            running_id,
            instead: fix(),
        }),
        // One build id is no evidence either way: the code decides.
        (ours, theirs) => match plan
            .sites
            .iter()
            .find_map(|site| differs(site, file, running).map(|what| (site, what)))
        {
            None => Ok(()),
            Some((site, what)) => Err(VerifyError::OtherCode {
                binary: binary.to_owned(),
                running: files.running_name.clone(),
                ids: match (ours, theirs) {
                    (None, None) => "neither file has a build id",
                    _ => "only one of them has a build id",
                },
                site: describe(site),
                what,
                instead: fix(),
            }),
        },
    }
}

/// What differs at `site` between the two files, if anything: where the site is in the file, or
/// the code from the function's start through both probed instructions.
fn differs(
    site: &Site,
    binary: &object::File<'_>,
    running: &object::File<'_>,
) -> Option<&'static str> {
    if file_offset(running, site.address) != Some(site.file_offset) {
        return Some("the file offsets of the code");
    }
    let len = site.cheapest.offset + MAX_INSTRUCTION;
    let ours = bytes_at(binary, site.address, len);
    let theirs = bytes_at(running, site.address, len);
    (ours.is_none() || ours != theirs).then_some("the instructions")
}

/// Both places a site is probed at (its entry, for return probes, and the cheapest place) start
/// an instruction of the running code, and the instruction there is the one planned.
fn on_boundaries(site: &Site, running: &object::File<'_>) -> Result<(), String> {
    let len = site.cheapest.offset + MAX_INSTRUCTION;
    let code = bytes_at(running, site.address, len)
        .ok_or_else(|| format!("no code at {:#x}", site.address))?;
    for planned in [&site.at_start, &site.cheapest] {
        if !entry::starts_instruction(code, site.address, planned.offset) {
            return Err(format!(
                "+{} ({}) does not start an instruction",
                planned.offset, planned.instruction
            ));
        }
        let found = code
            .get(planned.offset as usize..)
            .and_then(|rest| entry::classify(rest, site.address + planned.offset))
            .map(|(_, text)| text);
        if found.as_deref() != Some(planned.instruction.as_str()) {
            return Err(format!(
                "+{} holds {} where {} was planned",
                planned.offset,
                found.as_deref().unwrap_or("no valid instruction"),
                planned.instruction
            ));
        }
    }
    Ok(())
}

/// `--debuginfo` describes the running build: compared by build id, the only thing a debug file
/// shares with its binary (its code sections are empty).
fn same_debuginfo(
    debuginfo: &Path,
    files: &Files<'_>,
    running_id: Option<&str>,
) -> Result<Option<String>, VerifyError> {
    let data = read(debuginfo)?;
    let file = parse(debuginfo, &data)?;
    match (build_id(&file), running_id) {
        (Some(ours), Some(theirs)) if ours == theirs => Ok(None),
        (Some(debuginfo_id), Some(running_id)) => Err(VerifyError::OtherDebuginfo {
            debuginfo: debuginfo.to_owned(),
            debuginfo_id,
            running: files.running_name.clone(),
            running_id: running_id.to_owned(),
        }),
        _ => Ok(Some(format!(
            "--debuginfo {} could not be checked against the program (a build id is missing): \
             if it is another build's, await points and task names may be wrong",
            debuginfo.display()
        ))),
    }
}

fn instead(running: &object::File<'_>) -> Instead {
    if super::symbols::SymbolTable::read(running).is_empty() {
        Instead::SameBuild
    } else {
        Instead::LeaveOut
    }
}

/// A site as messages name it.
fn describe(site: &Site) -> String {
    let function = match site.kind {
        SiteKind::Poll => "tokio's raw::poll",
        SiteKind::Dealloc => "tokio's raw::dealloc",
        SiteKind::Shutdown => "tokio's raw::shutdown",
        SiteKind::WakeByVal => "tokio's waker::wake_by_val",
        SiteKind::WakeByRef => "tokio's waker::wake_by_ref",
        SiteKind::SpawnMultiThread => "tokio's multi_thread bind_new_task",
        SiteKind::SpawnCurrentThread => "tokio's current_thread spawn",
        SiteKind::CellNew => "tokio's Cell::new",
        SiteKind::Complete => "tokio's State::transition_to_complete",
        SiteKind::Panic => "rust_panic",
        SiteKind::BlockOnPoll => "the poll function of a future given to block_on",
    };
    format!("{function} at {:#x}", site.address)
}

/// The GNU build id, in hex as `readelf -n` shows it.
fn build_id(file: &object::File<'_>) -> Option<String> {
    let id = file.build_id().ok().flatten().filter(|id| !id.is_empty())?;
    Some(id.iter().map(|byte| format!("{byte:02x}")).collect())
}

fn read(path: &Path) -> Result<Vec<u8>, VerifyError> {
    std::fs::read(path).map_err(|source| VerifyError::Read {
        path: path.to_owned(),
        source,
    })
}

fn parse<'data>(path: &Path, data: &'data [u8]) -> Result<object::File<'data>, VerifyError> {
    object::File::parse(data).map_err(|error| VerifyError::NotElf {
        path: path.to_owned(),
        reason: error.to_string(),
    })
}
