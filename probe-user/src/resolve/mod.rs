//! Resolve: read the target ELF once (symbols, DWARF, code) into a [`ProbePlan`]: every probe site
//! as a file offset, what each site is, the name of every task type, and the task-layout offsets
//! the kernel side needs. What could not be found is recorded in [`ProbePlan::notes`] so reports
//! can say so.

pub mod block_on;
mod calls;
mod debuglink;
mod dwarf;
pub mod entry;
pub mod futures;
pub mod kernel;
mod mapped;
mod names;
mod spawned;
mod symbols;
pub mod verify;
pub mod vtables;

use std::path::{Path, PathBuf};

use object::{Object as _, ObjectSection as _};
use probe_common::EventKind;

pub use names::{is_library_function, is_runtime_function, task_name_from_type};
pub use spawned::SourceLine;

/// What a probe site is. One kind per tokio function we attach to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SiteKind {
    /// `tokio::runtime::task::raw::poll::<T, S>`: one per task type.
    Poll,
    /// `raw::dealloc::<T, S>`.
    Dealloc,
    /// `raw::shutdown::<T, S>`.
    Shutdown,
    WakeByVal,
    WakeByRef,
    /// `multi_thread::handle::Handle::bind_new_task::<T>` (returns the new task's JoinHandle).
    SpawnMultiThread,
    /// `current_thread::Handle::spawn::<T>`.
    SpawnCurrentThread,
    /// `Cell::<T, S>::new`: allocates every task, blocking and local ones included (returns the
    /// header pointer). Inlined in some builds, hence the scheduler functions as well.
    CellNew,
    /// `State::transition_to_complete`: every task completion, while the task is still alive.
    Complete,
    /// `rust_panic`: a panic starts unwinding.
    Panic,
    /// The poll function of a future given to `block_on` (`#[tokio::main]`, `#[tokio::test]`):
    /// one per such future, probed by the poll programs as a pseudo-task (see [`block_on`]).
    BlockOnPoll,
}

impl SiteKind {
    /// The event a `task_op` site reports (its cookie's high half).
    pub fn task_op_event(self) -> Option<EventKind> {
        Some(match self {
            Self::Dealloc => EventKind::Dealloc,
            Self::Shutdown => EventKind::Shutdown,
            Self::WakeByVal => EventKind::WakeByVal,
            Self::WakeByRef => EventKind::WakeByRef,
            Self::Complete => EventKind::Complete,
            _ => return None,
        })
    }

    /// The kind byte of the site's attach cookie: the event a `task_op` site reports, or
    /// whether a poll site polls a `block_on` future.
    pub fn cookie_kind(self) -> u8 {
        match self {
            Self::BlockOnPoll => probe_common::cookie::BLOCK_ON,
            kind => kind.task_op_event().map_or(0, |event| event as u8),
        }
    }
}

/// One place to attach to.
#[derive(Clone, Debug)]
pub struct Site {
    pub kind: SiteKind,
    /// Virtual address in the ELF.
    pub address: u64,
    /// Offset in the file: what uprobes attach by.
    pub file_offset: u64,
    /// Index into [`ProbePlan::task_types`] for per-type sites.
    pub task_type: Option<usize>,
    /// A probe on the function's first instruction (what a return probe needs).
    pub at_start: entry::Entry,
    /// The cheapest place for a plain probe: past a first instruction the kernel would
    /// single-step, where it can.
    pub cheapest: entry::Entry,
}

/// A future type that tasks are spawned with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskType {
    /// What users see: `myapp::handler` for `myapp::handler::{async_fn_env#0}`.
    pub name: String,
    /// `raw::poll`'s address for this type.
    pub poll_address: u64,
    /// The blocking task that runs a multi-thread worker's loop: runtime plumbing, busy for
    /// the runtime's whole life, not something the program spawned.
    pub runtime_worker: bool,
    /// The future's DWARF type and its offset from the task header (inside `Stage::Running`),
    /// where DWARF has them.
    pub future: Option<FutureLocation>,
    /// This type's task vtable (link-time address), for finding its tasks in memory.
    pub vtable: Option<vtables::TaskVtable>,
    /// For a future given to `block_on` (no tokio task: `poll_address` is its own poll
    /// function, `future` is at offset 0 from the "header", its address).
    pub block_on: Option<block_on::Body>,
    /// The program's lines that spawn tasks of this type (or of another of its name: one
    /// future spawned on both schedulers is two types), where DWARF says.
    pub spawned_at: Vec<SourceLine>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FutureLocation {
    pub ty: futures::TypeId,
    pub offset: u64,
}

/// Where task names came from, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NamingSource {
    /// The `T` template parameter of each `raw::poll` instance in DWARF.
    Dwarf,
    /// Generic arguments in v0-mangled symbol names.
    V0Symbols,
    /// Following direct calls from `raw::poll` to the future's own poll function.
    CallGraph,
    /// None of the above: a stable label per type.
    Labels,
}

impl NamingSource {
    /// In words, for the reports: "task names from …".
    pub fn describe(self) -> &'static str {
        match self {
            Self::Dwarf => "DWARF",
            Self::V0Symbols => "v0 symbol names",
            Self::CallGraph => "the call graph (no DWARF)",
            Self::Labels => "labels (no DWARF, no v0 names)",
        }
    }
}

/// Offsets into tokio's task structures, handed to the kernel side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub header_state: u64,
    pub header_vtable: u64,
    pub vtable_id_offset: u64,
    /// Whether the offsets were read from the target's DWARF (else: tokio >= 1.32's known layout).
    pub from_dwarf: bool,
}

impl Layout {
    /// `Header { state, queue_next, vtable, owner_id }` and `Vtable`'s tenth field `id_offset`,
    /// unchanged from tokio 1.32 to 1.54 (see shared notes).
    pub const KNOWN: Self = Self {
        header_state: 0,
        header_vtable: 0x10,
        vtable_id_offset: 0x48,
        from_dwarf: false,
    };
}

/// Everything attach and collect need to know about the target binary.
#[derive(Clone, Debug)]
pub struct ProbePlan {
    pub binary: PathBuf,
    /// The file DWARF is read from: `binary`, or its separate debug file.
    pub dwarf_file: PathBuf,
    pub sites: Vec<Site>,
    pub task_types: Vec<TaskType>,
    pub layout: Layout,
    pub naming: NamingSource,
    pub has_dwarf: bool,
    /// The binary's DWARF types, for decoding futures in memory (None without DWARF).
    pub types: Option<std::sync::Arc<futures::TypeIndex>>,
    /// `(p_vaddr, p_offset)` of each loadable segment, for the load bias of a running copy.
    pub segments: Vec<(u64, u64)>,
    /// Things a user should know about the quality of what follows.
    pub notes: Vec<String>,
}

impl ProbePlan {
    pub fn sites_of(&self, kind: SiteKind) -> impl Iterator<Item = (usize, &Site)> {
        self.sites
            .iter()
            .enumerate()
            .filter(move |(_, site)| site.kind == kind)
    }

    /// The task type a site belongs to.
    pub fn site_task_type(&self, site: u32) -> Option<usize> {
        self.sites
            .get(site as usize)
            .and_then(|site| site.task_type)
    }

    /// Where every task type's id sits relative to its header, if the vtables of all of them
    /// agree and it lies within the words the kernel side reads at once
    /// ([`probe_common::HEADER_WORDS`]); 0 otherwise, or where a type's vtable was not found.
    pub fn uniform_task_id_offset(&self) -> u64 {
        let mut offsets = self
            .task_types
            .iter()
            .filter(|task_type| task_type.block_on.is_none())
            .map(|task_type| task_type.vtable.map(|vtable| vtable.id_offset));
        let Some(Some(first)) = offsets.next() else {
            return 0;
        };
        let within = first != 0
            && first.is_multiple_of(8)
            && first < (probe_common::HEADER_WORDS * 8) as u64
            && first != self.layout.header_state
            && first != self.layout.header_vtable;
        if within && offsets.all(|offset| offset == Some(first)) {
            first
        } else {
            0
        }
    }

    /// What the rest of the run needs of this plan once attached.
    pub fn catalogue(&self) -> Catalogue {
        Catalogue {
            task_types: self
                .task_types
                .iter()
                .map(|t| TypeName {
                    name: t.name.clone(),
                    runtime_worker: t.runtime_worker,
                    spawned_at: t.spawned_at.clone(),
                })
                .collect(),
            site_types: self.sites.iter().map(|site| site.task_type).collect(),
            naming: self.naming,
            has_dwarf: self.has_dwarf,
            notes: self.notes.clone(),
        }
    }
}

/// What collecting and presenting need of the plan: which site belongs to which task type, the
/// types' names, and how they were found. Small and serialisable, so a recording carries it and
/// replays without the binary.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Catalogue {
    pub task_types: Vec<TypeName>,
    /// `site_types[cookie]`: the task type of a per-type site.
    pub site_types: Vec<Option<usize>>,
    pub naming: NamingSource,
    pub has_dwarf: bool,
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TypeName {
    pub name: String,
    /// A multi-thread worker's loop: runtime plumbing, left out of the task counts.
    pub runtime_worker: bool,
    /// The program's lines that spawn tasks of this type.
    #[serde(default)]
    pub spawned_at: Vec<SourceLine>,
}

impl TypeName {
    /// tokio's own tasks (its blocking tasks, the worker loops): not the program's, so left out
    /// of the stuck tasks and the counts.
    pub fn is_internal(&self) -> bool {
        self.runtime_worker || names::is_tokio_internal(&self.name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not an ELF executable ({reason})")]
    NotElf { path: PathBuf, reason: String },
    #[error(
        "{path} has no symbol table (stripped binary): async-inspect finds tokio's functions by their symbols. \
         Rebuild without `strip`, or keep the unstripped binary and pass it with --binary"
    )]
    Stripped { path: PathBuf },
    #[error(
        "{path} has no symbol table (it is stripped), and {stranger}: it does not look like a tokio \
         program, and async-inspect probes tokio programs. If it is one after all, pass its \
         unstripped build with --binary"
    )]
    StrippedNotTokio { path: PathBuf, stranger: Stranger },
    #[error(
        "{path} contains no tokio task functions (tokio::runtime::task::raw::poll): is it a tokio program? \
         (tokio >= 1.32 is supported; a tokio linked as a shared library is not)"
    )]
    NoTokio { path: PathBuf },
    #[error(
        "{path}: found {missing} missing from the symbol table; this tokio version is not supported"
    )]
    MissingFunction { path: PathBuf, missing: String },
}

impl ResolveError {
    /// The binary, when it is no tokio program as far as can be told: `test` runs those unprobed.
    pub fn not_tokio(&self) -> Option<&Path> {
        match self {
            Self::NoTokio { path } | Self::StrippedNotTokio { path, .. } => Some(path),
            _ => None,
        }
    }
}

/// What a stripped binary without a trace of tokio is, as far as its strings tell.
#[derive(Debug)]
pub enum Stranger {
    /// Rust's standard library left its marks, tokio none.
    Rust,
    /// No mark of Rust either: a C program, a shell, ...
    NotRust,
}

impl std::fmt::Display for Stranger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Rust => "its read-only data has no trace of tokio (it is a Rust program)",
            Self::NotRust => "its read-only data has no trace of tokio, nor of Rust",
        })
    }
}

/// Why a binary has no symbols to resolve: "rebuild without strip" is only worth saying to a
/// tokio program. tokio's panic messages and source paths (`tokio-1.x/src/...`) stay in
/// `.rodata` when the symbols go, as do std's (`/rustc/<hash>/library/...`, `RUST_BACKTRACE`).
fn stripped(path: &Path, file: &object::File<'_>) -> ResolveError {
    let rodata = file
        .section_by_name(".rodata")
        .and_then(|section| section.data().ok())
        .unwrap_or_default();
    let has = |needle: &[u8]| rodata.windows(needle.len()).any(|window| window == needle);
    let path = path.to_owned();
    if has(b"tokio") {
        ResolveError::Stripped { path }
    } else if has(b"RUST_BACKTRACE") || has(b"/rustc/") {
        ResolveError::StrippedNotTokio {
            path,
            stranger: Stranger::Rust,
        }
    } else {
        ResolveError::StrippedNotTokio {
            path,
            stranger: Stranger::NotRust,
        }
    }
}

/// Reads `binary` and plans every probe, with DWARF from the binary or its separate debug file.
pub fn resolve(binary: &Path) -> Result<ProbePlan, ResolveError> {
    resolve_with(binary, None)
}

/// Like [`resolve`], with DWARF read from `debuginfo` when given.
pub fn resolve_with(binary: &Path, debuginfo: Option<&Path>) -> Result<ProbePlan, ResolveError> {
    let mapped = mapped::MappedFile::open(binary).map_err(|source| ResolveError::Read {
        path: binary.to_owned(),
        source,
    })?;
    let file = object::File::parse(mapped.bytes()).map_err(|error| ResolveError::NotElf {
        path: binary.to_owned(),
        reason: error.to_string(),
    })?;
    if file.format() != object::BinaryFormat::Elf {
        return Err(ResolveError::NotElf {
            path: binary.to_owned(),
            reason: format!("{:?} format", file.format()),
        });
    }
    let table = symbols::SymbolTable::read(&file);
    if table.is_empty() {
        return Err(stripped(binary, &file));
    }
    let found = table.tokio_functions();
    if found.polls.is_empty() {
        return Err(ResolveError::NoTokio {
            path: binary.to_owned(),
        });
    }
    // DWARF may live in a separate file (split by `objcopy --only-keep-debug`, or a distro's
    // -dbgsym package): addresses and linkage names are the binary's own.
    let has_own_dwarf = file
        .section_by_name(".debug_info")
        .is_some_and(|section| section.size() > 0);
    let debug_path = match debuginfo {
        Some(path) => Some(path.to_owned()),
        None if !has_own_dwarf => debuglink::find(binary, &file),
        None => None,
    };
    let debug_data = match &debug_path {
        Some(path) => {
            Some(
                mapped::MappedFile::open(path).map_err(|source| ResolveError::Read {
                    path: path.clone(),
                    source,
                })?,
            )
        }
        None => None,
    };
    let debug_file =
        match (&debug_data, &debug_path) {
            (Some(data), Some(path)) => Some(object::File::parse(data.bytes()).map_err(
                |error| ResolveError::NotElf {
                    path: path.clone(),
                    reason: error.to_string(),
                },
            )?),
            _ => None,
        };
    let dwarf_source = debug_file.as_ref().unwrap_or(&file);

    let mut notes = Vec::new();
    if let Some(path) = &debug_path {
        notes.push(format!("DWARF read from {}", path.display()));
    }
    for (kind, name) in [
        (
            SiteKind::WakeByVal,
            "tokio::runtime::task::waker::wake_by_val",
        ),
        (
            SiteKind::WakeByRef,
            "tokio::runtime::task::waker::wake_by_ref",
        ),
        (
            SiteKind::Complete,
            "tokio::runtime::task::state::State::transition_to_complete",
        ),
    ] {
        if !found.singles.iter().any(|(k, _)| *k == kind) {
            notes.push(format!("{name} not found: those events are not seen"));
        }
    }
    if !found.others.iter().any(|(kind, _)| {
        matches!(
            kind,
            SiteKind::SpawnMultiThread | SiteKind::SpawnCurrentThread | SiteKind::CellNew
        )
    }) {
        notes.push(
            "no scheduler spawn function found: tasks are first seen at their first poll".into(),
        );
    }

    // The scheduler spawn functions are generic in the future as `raw::poll` is: DWARF says
    // which task type each spawns, after the polls' own.
    let spawns: Vec<u64> = found
        .others
        .iter()
        .filter(|(kind, _)| is_spawn(*kind))
        .map(|&(_, address)| address)
        .collect();
    let generic_functions: Vec<&str> = found
        .polls
        .iter()
        .map(|p| p.symbol.as_str())
        .chain(
            spawns
                .iter()
                .map(|&address| table.at(address).map_or("", |symbol| symbol.raw.as_str())),
        )
        .collect();
    let mut dwarf_info = dwarf::read(dwarf_source, &generic_functions);
    let has_dwarf = dwarf_info.has_dwarf;
    let layout = dwarf_info.layout.unwrap_or(Layout::KNOWN);
    if has_dwarf && !layout.from_dwarf {
        notes.push(
            "tokio's Header/Vtable types not found in DWARF: using the known tokio >= 1.32 layout"
                .into(),
        );
    }

    let types = if has_dwarf {
        match futures::TypeIndex::mapped(dwarf_source, debug_data.as_ref().unwrap_or(&mapped)) {
            Ok(types) => Some(std::sync::Arc::new(types.with_names(
                dwarf_info.impls.clone(),
                std::mem::take(&mut dwarf_info.macro_awaits),
            ))),
            Err(error) => {
                notes.push(format!("DWARF types unreadable ({error}): no await points"));
                None
            }
        }
    } else {
        notes.push(
            "no DWARF: await points, async backtraces and the futures given to block_on \
             (#[tokio::main], #[tokio::test]) need a build with debuginfo \
             (e.g. `debug = \"line-tables-only\"` is not enough; `debug = 1` or more)"
                .into(),
        );
        None
    };

    let poll_addresses: Vec<u64> = found.polls.iter().map(|poll| poll.address).collect();
    let task_vtables = vtables::find_task_vtables(&file, &poll_addresses);

    // Name each task type, from the best source that knows it.
    let mut naming = NamingSource::Labels;
    let mut task_types = Vec::with_capacity(found.polls.len());
    let mut unnamed = 0;
    for (index, poll) in found.polls.iter().enumerate() {
        let (name, source) =
            if let Some(name) = dwarf_info.poll_type_names.get(index).cloned().flatten() {
                let self_type = |key: &str| dwarf_info.impls.get(key).cloned();
                (
                    names::task_name_with(&name, &self_type),
                    NamingSource::Dwarf,
                )
            } else if let Some(name) = &poll.generic_type {
                (task_name_from_type(name), NamingSource::V0Symbols)
            } else if let Some(name) = calls::name_by_calls(&file, &table, poll.address) {
                (name, NamingSource::CallGraph)
            } else {
                unnamed += 1;
                (format!("task-type-{index}"), NamingSource::Labels)
            };
        naming = best(naming, source);
        let future = types.as_ref().and_then(|types| {
            let cell = dwarf_info.poll_cells.get(index).copied().flatten()?;
            let (offset, ty) = types.offset_of(cell, &FUTURE_IN_CELL)?;
            Some(FutureLocation { ty, offset })
        });
        task_types.push(TaskType {
            future,
            vtable: task_vtables.get(index).copied().flatten(),
            runtime_worker: name
                .starts_with("blocking: tokio::runtime::scheduler::multi_thread::worker::")
                && name.ends_with("::launch"),
            name,
            poll_address: poll.address,
            block_on: None,
            spawned_at: Vec::new(),
        });
    }
    if let Some(types) = &types {
        let self_type = |key: &str| dwarf_info.impls.get(key).cloned();
        let name_of = |type_name: &str| names::task_name_with(type_name, &self_type);
        for body in dwarf_info.block_on.bodies(types, &name_of, &mut notes) {
            task_types.push(TaskType {
                name: body.name.clone(),
                poll_address: body.poll_address,
                runtime_worker: false,
                future: Some(FutureLocation {
                    ty: body.ty,
                    offset: 0,
                }),
                vtable: None,
                block_on: Some(body),
                spawned_at: Vec::new(),
            });
        }
    }
    match naming {
        NamingSource::Dwarf | NamingSource::V0Symbols => {}
        NamingSource::CallGraph => notes.push(
            "no DWARF and legacy symbol mangling: task types were named by following calls from \
             raw::poll to each future's poll function"
                .into(),
        ),
        NamingSource::Labels => {}
    }
    if unnamed > 0 {
        notes.push(format!(
            "{unnamed} task type(s) could not be named (no DWARF, no v0 names, no poll function found): \
             shown as task-type-N"
        ));
    }

    let mut sites = Vec::new();
    let mut push = |kind, address, task_type| -> Result<(), ResolveError> {
        let file_offset = file_offset(&file, address).ok_or_else(|| ResolveError::NotElf {
            path: binary.to_owned(),
            reason: format!("address {address:#x} is in no section"),
        })?;
        let size = table.at(address).map(|symbol| symbol.size);
        let (at_start, cheapest) =
            entries(&file, address, size).ok_or_else(|| ResolveError::NotElf {
                path: binary.to_owned(),
                reason: format!("the code at {address:#x} does not decode as x86-64"),
            })?;
        sites.push(Site {
            kind,
            address,
            file_offset,
            task_type,
            at_start,
            cheapest,
        });
        Ok(())
    };
    for (index, poll) in found.polls.iter().enumerate() {
        push(SiteKind::Poll, poll.address, Some(index))?;
    }
    let spawn_types = spawned_types(&dwarf_info.poll_type_names, found.polls.len(), &spawns);
    for (kind, address) in found.singles.iter().chain(&found.others) {
        push(*kind, *address, spawn_types.get(address).copied())?;
    }
    for (index, task_type) in task_types.iter().enumerate() {
        if task_type.block_on.is_some() {
            push(SiteKind::BlockOnPoll, task_type.poll_address, Some(index))?;
        }
    }

    if has_dwarf {
        let dwarf_file = debug_path.as_deref().unwrap_or(binary);
        find_spawn_lines(&file, dwarf_file, &spawn_types, &mut task_types);
    }

    let segments = file
        .segments()
        .filter_map(|segment| {
            use object::ObjectSegment as _;
            let (offset, _) = segment.file_range();
            (segment.size() > 0).then_some((segment.address(), offset))
        })
        .collect();
    for map in std::iter::once(&mapped).chain(&debug_data) {
        map.release_pages();
    }
    Ok(ProbePlan {
        binary: binary.to_owned(),
        dwarf_file: debug_path.unwrap_or_else(|| binary.to_owned()),
        sites,
        task_types,
        layout,
        naming,
        has_dwarf,
        types,
        segments,
        notes,
    })
}

fn is_spawn(kind: SiteKind) -> bool {
    matches!(
        kind,
        SiteKind::SpawnMultiThread | SiteKind::SpawnCurrentThread
    )
}

/// The task type each spawn function (by address) spawns, where DWARF names its future as it
/// names a `raw::poll`'s: `names` holds the polls' future types, then the spawns'.
fn spawned_types(
    names: &[Option<String>],
    polls: usize,
    spawns: &[u64],
) -> std::collections::HashMap<u64, usize> {
    let type_of: std::collections::HashMap<&str, usize> = names[..polls.min(names.len())]
        .iter()
        .enumerate()
        .filter_map(|(index, name)| Some((name.as_deref()?, index)))
        .collect();
    spawns
        .iter()
        .zip(names.iter().skip(polls))
        .filter_map(|(&address, name)| Some((address, *type_of.get(name.as_deref()?)?)))
        .collect()
}

/// Fills in the lines of the program that spawn each task type, through the scheduler spawn
/// functions (by address) that DWARF ties to a type.
fn find_spawn_lines(
    file: &object::File<'_>,
    dwarf_file: &Path,
    spawn_types: &std::collections::HashMap<u64, usize>,
    task_types: &mut [TaskType],
) {
    let Ok(lines) = addr2line::Loader::new(dwarf_file) else {
        return;
    };
    let mut functions: Vec<(u64, usize)> = spawn_types
        .iter()
        .map(|(&address, &task_type)| (address, task_type))
        .collect();
    functions.sort_unstable();
    let addresses: Vec<u64> = functions.iter().map(|&(address, _)| address).collect();
    for ((_, spawned), found) in functions
        .into_iter()
        .zip(spawned::spawn_lines(file, &lines, &addresses))
    {
        let name = task_types[spawned].name.clone();
        for task_type in task_types.iter_mut().filter(|t| t.name == name) {
            for line in &found {
                if !task_type.spawned_at.contains(line) {
                    task_type.spawned_at.push(line.clone());
                }
            }
        }
    }
    for task_type in task_types {
        task_type
            .spawned_at
            .sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    }
}

/// Where a task's future sits in its `Cell<T, S>`: `core.stage.stage.value` is the `Stage<T>`,
/// whose `Running` variant holds the future.
const FUTURE_IN_CELL: [&str; 6] = ["core", "stage", "stage", "value", "Running", "__0"];

fn best(current: NamingSource, new: NamingSource) -> NamingSource {
    // A plan is as good as the best source that named anything.
    let rank = |source| match source {
        NamingSource::Dwarf => 0,
        NamingSource::V0Symbols => 1,
        NamingSource::CallGraph => 2,
        NamingSource::Labels => 3,
    };
    if rank(new) < rank(current) {
        new
    } else {
        current
    }
}

/// Where to probe the function at `address` (`size` bytes long, where its symbol says): on its
/// first instruction, and where it is cheapest.
fn entries(
    file: &object::File<'_>,
    address: u64,
    size: Option<u64>,
) -> Option<(entry::Entry, entry::Entry)> {
    // Without a size, enough for the few dozen instructions the search looks at.
    let size = size.filter(|&size| size > 0).unwrap_or(256);
    let cheapest = entry::cheapest(bytes_at(file, address, size)?, address)?;
    Some((cheapest.at_start(), cheapest))
}

/// Virtual address -> offset in the file, through the section that holds it.
fn file_offset(file: &object::File<'_>, address: u64) -> Option<u64> {
    file.sections().find_map(|section| {
        let (offset, size) = section.file_range()?;
        let within = address
            .checked_sub(section.address())
            .filter(|&within| within < size)?;
        offset.checked_add(within)
    })
}

/// Reads target memory at a virtual address range of the ELF (code, for call following).
fn bytes_at<'data>(file: &object::File<'data>, address: u64, size: u64) -> Option<&'data [u8]> {
    file.sections().find_map(|section| {
        let within = address
            .checked_sub(section.address())
            .filter(|&within| within < section.size())?;
        let data = section.data().ok()?;
        let from = usize::try_from(within).ok()?;
        let to = from
            .checked_add(usize::try_from(size).ok()?)?
            .min(data.len());
        data.get(from..to)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task_type(id_offset: Option<u64>) -> TaskType {
        TaskType {
            name: "app::handler".into(),
            poll_address: 0x1000,
            runtime_worker: false,
            future: None,
            vtable: id_offset.map(|id_offset| vtables::TaskVtable {
                address: 0x2000,
                dealloc: 0x1100,
                shutdown: 0x1200,
                trailer_offset: 0x80,
                scheduler_offset: 0x20,
                id_offset,
            }),
            block_on: None,
            spawned_at: Vec::new(),
        }
    }

    fn plan(task_types: Vec<TaskType>) -> ProbePlan {
        ProbePlan {
            binary: PathBuf::from("app"),
            dwarf_file: PathBuf::from("app"),
            sites: Vec::new(),
            task_types,
            layout: Layout::KNOWN,
            naming: NamingSource::Dwarf,
            has_dwarf: false,
            types: None,
            segments: Vec::new(),
            notes: Vec::new(),
        }
    }

    #[test]
    fn a_spawn_function_spawns_the_task_type_whose_future_dwarf_names_alike() {
        let name = |name: &str| Some(name.to_owned());
        // Two polls, then three spawn functions: one per poll's future, one DWARF could not name.
        let names = [
            name("app::handler::{async_fn_env#0}"),
            name("app::main::{async_block_env#1}"),
            name("app::main::{async_block_env#1}"),
            None,
            name("app::handler::{async_fn_env#0}"),
        ];
        let types = spawned_types(&names, 2, &[0x10, 0x20, 0x30]);
        assert_eq!(types.get(&0x10), Some(&1));
        assert_eq!(types.get(&0x20), None);
        assert_eq!(types.get(&0x30), Some(&0));
    }

    #[test]
    fn the_kernel_side_reads_task_ids_at_one_offset_only_where_every_type_agrees() {
        let agree = plan(vec![task_type(Some(0x28)), task_type(Some(0x28))]);
        assert_eq!(agree.uniform_task_id_offset(), 0x28);
        // A spawn_blocking task's scheduler is larger: its id sits further on.
        let blocking = plan(vec![task_type(Some(0x28)), task_type(Some(0x30))]);
        assert_eq!(blocking.uniform_task_id_offset(), 0);
        let unknown = plan(vec![task_type(Some(0x28)), task_type(None)]);
        assert_eq!(unknown.uniform_task_id_offset(), 0);
        // Beyond the words read at once, or on the header's own fields.
        assert_eq!(
            plan(vec![task_type(Some(0x40))]).uniform_task_id_offset(),
            0
        );
        assert_eq!(
            plan(vec![task_type(Some(0x10))]).uniform_task_id_offset(),
            0
        );
        assert_eq!(plan(Vec::new()).uniform_task_id_offset(), 0);
    }
}
