//! Where a long poll blocks its worker. When a thread goes off CPU blocked inside a poll, the
//! kernel side notes the user registers its system call saved ([`Current`]). While the thread
//! stays blocked its stack stays as it was, so it is read here from the target's memory,
//! unwound with each module's DWARF CFI (`.eh_frame`, by framehop) and named (addr2line): the
//! blocking call and the program's own line that made it, e.g.
//! `std::thread::sleep ← myapp::handler (src/main.rs:42)`.
//!
//! It looks at the threads whose poll has run a while, once per blocking switch, on the
//! collector's tick: a poll that blocks for less than a tick may be missed, one that blocks
//! its worker long enough to matter is not.

use std::{collections::HashMap, ops::Range, path::PathBuf};

use framehop::{
    ExplicitModuleSectionInfo, Module, Unwinder as _,
    x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64},
};
use object::{Object as _, ObjectSection as _, ObjectSegment as _};
use probe_common::Current;

use crate::{
    memory::{Mapping, ProcessMemory},
    model::{BlockedAt, NativeFrame, TaskModel},
    resolve::{Catalogue, task_name_from_type},
};

/// A poll is looked at once it has run this long: most polls end sooner, and a look reads the
/// kernel side's map for its thread.
const LOOK_AFTER_NS: u64 = 1_000_000;
/// Frames unwound at most: a worker's stack is a few dozen deep.
const MAX_FRAMES: usize = 128;

/// Finds where the target's long polls block. One per probed process.
pub struct Blockers {
    memory: ProcessMemory,
    /// The file DWARF is read from for the main executable (`--binary`, or the one it runs).
    main_binary: PathBuf,
    /// Built when the first blocked poll is seen: most runs have none.
    modules: Option<Modules>,
    /// Whether building them was tried: a target whose maps cannot be read is not read again
    /// at every tick.
    tried: bool,
    /// The block each thread was last looked at in (its `blocked_since`): one look each.
    looked: HashMap<u32, u64>,
}

/// The target's executable mappings, ready to unwind and name addresses in.
struct Modules {
    unwinder: UnwinderX86_64<Vec<u8>>,
    cache: CacheX86_64,
    files: Vec<ModuleFile>,
}

struct ModuleFile {
    range: Range<u64>,
    /// Where the file's virtual address 0 is in the process.
    bias: u64,
    /// What names its addresses: `None` when the file could not be read.
    symbols: Option<addr2line::Loader>,
}

impl Blockers {
    pub fn new(pid: u32, main_binary: PathBuf) -> Option<Self> {
        Some(Self {
            memory: ProcessMemory::open(pid).ok()?,
            main_binary,
            modules: None,
            tried: false,
            looked: HashMap::new(),
        })
    }

    /// Where the polls running for a while in `model` are blocked now, by task: `thread` gives
    /// what the kernel side keeps for a thread.
    pub fn look(
        &mut self,
        model: &TaskModel,
        catalogue: &Catalogue,
        now_ns: u64,
        thread: impl Fn(u32) -> Option<Current>,
    ) -> Vec<(usize, BlockedAt)> {
        let mut found = Vec::new();
        for (tid, task, header, started) in model.polls_running() {
            // A worker parked inside its worker loop's task is idle, not blocking anything.
            let worker_loop = model
                .task_type(&model.tasks()[task])
                .and_then(|index| catalogue.task_types.get(index))
                .is_some_and(|task_type| task_type.runtime_worker);
            if worker_loop || now_ns.saturating_sub(started) < LOOK_AFTER_NS {
                continue;
            }
            let Some(before) = thread(tid).filter(|current| blocked_in(current, header)) else {
                continue;
            };
            if self.looked.insert(tid, before.blocked_since) == Some(before.blocked_since) {
                continue;
            }
            let addresses = self.unwind(&before);
            // Read while it stayed blocked, or its stack may have moved on under the reads.
            let still =
                thread(tid).is_some_and(|after| after.blocked_since == before.blocked_since);
            if let Some(modules) = &self.modules
                && still
                && !addresses.is_empty()
            {
                let frames = addresses
                    .into_iter()
                    .flat_map(|address| modules.name(address))
                    .collect();
                found.push((task, BlockedAt { frames }));
            }
        }
        found
    }

    /// The return addresses on the stack of the thread `current` describes, innermost first.
    fn unwind(&mut self, current: &Current) -> Vec<u64> {
        if !self.tried {
            self.tried = true;
            self.modules = Modules::load(&self.memory, &self.main_binary);
        }
        let Some(modules) = self.modules.as_mut() else {
            return Vec::new();
        };
        let memory = &self.memory;
        let mut read_stack = |address: u64| memory.read_u64(address).map_err(|_| ());
        let regs =
            UnwindRegsX86_64::new(current.blocked_ip, current.blocked_sp, current.blocked_bp);
        let mut frames = modules.unwinder.iter_frames(
            current.blocked_ip,
            regs,
            &mut modules.cache,
            &mut read_stack,
        );
        let mut addresses = Vec::new();
        while let Ok(Some(frame)) = frames.next() {
            addresses.push(frame.address_for_lookup());
            if addresses.len() == MAX_FRAMES {
                break;
            }
        }
        addresses
    }
}

/// Whether `current` says its thread is blocked, in a poll of `header`, with its registers
/// noted at this very block.
fn blocked_in(current: &Current, header: u64) -> bool {
    current.poll.header == header
        && current.off_since != 0
        && current.off_blocked != 0
        && current.blocked_since == current.off_since
        && current.blocked_sp != 0
}

impl Modules {
    fn load(memory: &ProcessMemory, main_binary: &std::path::Path) -> Option<Self> {
        let mappings = memory.mappings().ok()?;
        let exe = std::fs::read_link(format!("/proc/{}/exe", memory.pid())).ok();
        let mut unwinder = UnwinderX86_64::new();
        let mut files = Vec::new();
        for (path, range, maps) in executable_files(&mappings) {
            // The target's own paths may be in another mount namespace: read each through
            // the process's view of it.
            let seen_as = PathBuf::from(format!(
                "/proc/{}/map_files/{:x}-{:x}",
                memory.pid(),
                maps.start,
                maps.end
            ));
            let file = if exe.as_deref() == Some(path.as_path()) {
                main_binary.to_owned()
            } else {
                seen_as.clone()
            };
            let Ok(bytes) = std::fs::File::open(&seen_as)
                // SAFETY: read-only and private; a file changed under the probe gives wrong
                // names at worst (the unwinder reads the target's memory, not this).
                .and_then(|file| unsafe { memmap2::Mmap::map(&file) })
            else {
                continue;
            };
            let Ok(elf) = object::File::parse(&*bytes) else {
                continue;
            };
            let segment = |segment: object::Segment<'_, '_>| {
                maps.load_bias_of_segment(segment.address(), segment.file_range().0)
            };
            let Some(bias) = elf.segments().find_map(segment) else {
                continue;
            };
            unwinder.add_module(Module::new(
                path.display().to_string(),
                range.clone(),
                bias,
                unwind_sections(&elf),
            ));
            files.push(ModuleFile {
                range,
                bias,
                symbols: addr2line::Loader::new(&file).ok(),
            });
        }
        Some(Self {
            unwinder,
            cache: CacheX86_64::new(),
            files,
        })
    }

    /// The frames at `address` (inlined calls first), named as well as the file allows.
    fn name(&self, address: u64) -> Vec<NativeFrame> {
        let Some(file) = self.files.iter().find(|file| file.range.contains(&address)) else {
            return vec![NativeFrame::default()];
        };
        let Some(symbols) = &file.symbols else {
            return vec![NativeFrame::default()];
        };
        let probe = address.wrapping_sub(file.bias);
        let mut frames = Vec::new();
        if let Ok(mut found) = symbols.find_frames(probe) {
            while let Ok(Some(frame)) = found.next() {
                let function = frame
                    .function
                    .as_ref()
                    .and_then(|name| name.demangle().ok())
                    .map(|name| task_name_from_type(&name));
                let location = frame.location.as_ref();
                frames.push(NativeFrame {
                    function,
                    file: location.and_then(|at| at.file).map(str::to_owned),
                    line: location.and_then(|at| at.line),
                });
            }
        }
        if frames.iter().all(|frame| frame.function.is_none()) {
            // No DWARF here (libc): the symbol table names the function.
            // `{:#}`: without the hashes of legacy names and v0's crate disambiguators.
            let function = symbols
                .find_symbol(probe)
                .map(|name| task_name_from_type(&format!("{:#}", rustc_demangle::demangle(name))));
            frames = vec![NativeFrame {
                function,
                ..NativeFrame::default()
            }];
        }
        frames
    }
}

/// Each mapped file with code: its path, the span of all its mappings, and its executable one.
fn executable_files(mappings: &[Mapping]) -> Vec<(PathBuf, Range<u64>, &Mapping)> {
    let mut files: Vec<(PathBuf, Range<u64>, &Mapping)> = Vec::new();
    for mapping in mappings.iter().filter(|mapping| mapping.executable) {
        let Some(path) = &mapping.path else { continue };
        let span = mappings
            .iter()
            .filter(|other| other.path.as_ref() == Some(path) && other.inode == mapping.inode)
            .fold(mapping.start..mapping.end, |span, other| {
                span.start.min(other.start)..span.end.max(other.end)
            });
        files.push((path.clone(), span, mapping));
    }
    files
}

/// What framehop unwinds with: `.eh_frame` and its index, and where they and the GOT are.
fn unwind_sections(elf: &object::File<'_>) -> ExplicitModuleSectionInfo<Vec<u8>> {
    let section = |name: &str| elf.section_by_name(name);
    let range = |name: &str| {
        section(name).map(|section| section.address()..section.address() + section.size())
    };
    let data = |name: &str| {
        section(name)
            .and_then(|section| section.uncompressed_data().ok())
            .map(|data| data.into_owned())
    };
    ExplicitModuleSectionInfo {
        base_svma: 0,
        text_svma: range(".text"),
        eh_frame_svma: range(".eh_frame"),
        eh_frame: data(".eh_frame"),
        eh_frame_hdr_svma: range(".eh_frame_hdr"),
        eh_frame_hdr: data(".eh_frame_hdr"),
        got_svma: range(".got"),
        ..ExplicitModuleSectionInfo::default()
    }
}
