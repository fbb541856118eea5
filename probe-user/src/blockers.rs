//! Where a long poll blocks its worker. When a thread goes off CPU blocked inside a poll, the
//! kernel side notes the user registers its system call saved ([`Current`]). While the thread
//! stays blocked its stack stays as it was, so it is read here from the target's memory,
//! unwound with each module's DWARF CFI (`.eh_frame`, by framehop) and named (addr2line): the
//! blocking call and the program's own line that made it, e.g.
//! `std::thread::sleep ← myapp::handler (src/main.rs:42)`.
//!
//! A thread that computes inside a poll is found the same way from a timer sample's registers
//! (`sample_running`), e.g. `myapp::parse ← myapp::handler (src/main.rs:57)`. Its stack moves
//! on as it runs, but the frames from the sampled one outwards stay while it computes there:
//! an unwind is kept only when it reaches the runtime that polls the task.
//!
//! It looks at the threads whose poll has run a while, once per blocking switch or sample, on
//! the collector's tick: a poll that blocks for less than a tick may be missed, one that blocks
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
    model::{BlockedAt, Doing, NativeFrame, TaskModel},
    resolve::{Catalogue, is_runtime_function, task_name_from_type},
};

/// A poll is looked at once it has run this long: most polls end sooner, and a look reads the
/// kernel side's map for its thread.
const LOOK_AFTER_NS: u64 = 1_000_000;
/// A poll's computation is looked at once it has run this long: samples fall in most polls
/// of a busy worker, and a look unwinds a stack.
const COMPUTING_AFTER_NS: u64 = 5_000_000;
/// Frames unwound at most: a worker's stack is a few dozen deep.
const MAX_FRAMES: usize = 128;

/// Finds where the target's long polls block or compute. One per probed process.
pub struct Blockers {
    memory: ProcessMemory,
    /// Read on a thread of their own: a look must unwind a computing thread while it still
    /// computes there, and reading every module's tables takes a while.
    modules: Loading,
    /// A launched program's modules are read from its first polls (it has then loaded its
    /// libraries), ready for its first long one. A running one's (about 11 MiB for a program
    /// built with debuginfo, with its libc) only when a poll is first looked at: a service
    /// whose polls stay short never pays for them; its first long poll may end before they
    /// are read and go unnamed.
    read_from_first_poll: bool,
    /// The block or sample each thread was last looked at in (its `blocked_since` or
    /// `sampled_at`): one look each.
    looked: HashMap<u32, u64>,
}

/// The target's modules: not read yet, being read, or read (`None`: its memory map could not
/// be read).
enum Loading {
    NotYet(u32, PathBuf),
    Started(std::thread::JoinHandle<Option<Modules>>),
    Done(Option<Modules>),
}

impl Loading {
    /// The modules once read; `None` until then (reading them from the first call), or if
    /// they could not be.
    fn ready(&mut self) -> Option<&mut Modules> {
        let finished = match self {
            Self::NotYet(..) => true,
            Self::Started(thread) => thread.is_finished(),
            Self::Done(_) => false,
        };
        if finished {
            *self = match std::mem::replace(self, Self::Done(None)) {
                Self::NotYet(pid, main_binary) => Self::start(pid, main_binary),
                Self::Started(thread) => Self::Done(thread.join().ok().flatten()),
                done => done,
            };
        }
        match self {
            Self::Done(modules) => modules.as_mut(),
            _ => None,
        }
    }

    fn start(pid: u32, main_binary: PathBuf) -> Self {
        let load = move || Modules::load(&ProcessMemory::open(pid).ok()?, &main_binary);
        match std::thread::Builder::new()
            .name("read-modules".into())
            .spawn(load)
        {
            Ok(thread) => Self::Started(thread),
            Err(_) => Self::Done(None),
        }
    }
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
    /// For process `pid`, whose executable's DWARF is in `main_binary`; `runs`: it was running
    /// before the probe (not held before its first instruction).
    pub fn new(pid: u32, main_binary: PathBuf, runs: bool) -> Option<Self> {
        Some(Self {
            memory: ProcessMemory::open(pid).ok()?,
            modules: Loading::NotYet(pid, main_binary),
            looked: HashMap::new(),
            read_from_first_poll: !runs,
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
            if self.read_from_first_poll {
                self.modules.ready();
            }
            // A worker parked inside its worker loop's task is idle, not blocking anything.
            let worker_loop = model
                .task_type(&model.tasks()[task])
                .and_then(|index| catalogue.task_types.get(index))
                .is_some_and(|task_type| task_type.runtime_worker);
            if worker_loop || now_ns.saturating_sub(started) < LOOK_AFTER_NS {
                continue;
            }
            let Some(seen) =
                thread(tid).and_then(|current| Seen::in_poll(&current, header, started))
            else {
                continue;
            };
            if seen.doing == Doing::Computing && now_ns.saturating_sub(started) < COMPUTING_AFTER_NS
            {
                continue;
            }
            // One look per block or sample, once there are modules to unwind in (for a program
            // that ran before the probe, read from its first look on).
            if self.modules.ready().is_none() || self.looked.insert(tid, seen.at) == Some(seen.at) {
                continue;
            }
            let addresses = self.unwind(&seen);
            // Read while it stayed blocked, or its stack may have moved on under the reads.
            if thread(tid).is_some_and(|after| seen.still(&after, header))
                && let Some(at) = self.named(&seen, addresses)
            {
                found.push((task, at));
            }
        }
        found
    }

    /// The stack of `addresses` (from [`Blockers::unwind`]), named; `None` when it is empty, or
    /// a computing thread's unwind did not reach the runtime polling the task: its stack is
    /// read as it runs on, and only such an unwind was read whole.
    fn named(&mut self, seen: &Seen, addresses: Vec<u64>) -> Option<BlockedAt> {
        let modules = self.modules.ready().filter(|_| !addresses.is_empty())?;
        let frames: Vec<NativeFrame> = addresses
            .into_iter()
            .flat_map(|address| modules.name(address))
            .collect();
        let whole = seen.doing == Doing::Blocked
            || frames
                .iter()
                .any(|frame| frame.function.as_deref().is_some_and(is_runtime_function));
        whole.then_some(BlockedAt {
            frames,
            doing: seen.doing,
        })
    }

    /// The return addresses on the stack of the thread as `seen`, innermost first.
    fn unwind(&mut self, seen: &Seen) -> Vec<u64> {
        let Some(modules) = self.modules.ready() else {
            return Vec::new();
        };
        let memory = &self.memory;
        let mut read_stack = |address: u64| memory.read_u64(address).map_err(|_| ());
        let regs = UnwindRegsX86_64::new(seen.ip, seen.sp, seen.bp);
        let mut frames =
            modules
                .unwinder
                .iter_frames(seen.ip, regs, &mut modules.cache, &mut read_stack);
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

/// Where a thread inside a poll was caught, by the kernel side: blocked (its registers as it
/// went off CPU) or computing (a timer sample's), and when.
struct Seen {
    doing: Doing,
    ip: u64,
    sp: u64,
    bp: u64,
    at: u64,
}

impl Seen {
    /// What `current` says of its thread's poll of `header`, started at `started`: blocked now,
    /// with its registers noted at this very block, or runnable and sampled since the start.
    fn in_poll(current: &Current, header: u64, started: u64) -> Option<Self> {
        if current.poll.header != header {
            return None;
        }
        // A thread sampled running after it was seen leaving its CPU is back on it, though its
        // return was not seen (seen in CI: a computation then told as blocked where it blocked
        // before it started).
        let blocked = current.off_since != 0
            && current.off_blocked != 0
            && current.sampled_at <= current.off_since;
        if blocked {
            let noted = current.blocked_since == current.off_since && current.blocked_sp != 0;
            return noted.then_some(Self {
                doing: Doing::Blocked,
                ip: current.blocked_ip,
                sp: current.blocked_sp,
                bp: current.blocked_bp,
                at: current.blocked_since,
            });
        }
        // On CPU, or preempted (by the collector itself, often, on a small machine).
        (current.sampled_at > started && current.sampled_sp != 0).then_some(Self {
            doing: Doing::Computing,
            ip: current.sampled_ip,
            sp: current.sampled_sp,
            bp: current.sampled_bp,
            at: current.sampled_at,
        })
    }

    /// Whether the thread, as `after` says, is still where it was seen: the same block, or the
    /// same poll.
    fn still(&self, after: &Current, header: u64) -> bool {
        match self.doing {
            Doing::Blocked => after.blocked_since == self.at,
            Doing::Computing => after.poll.header == header,
        }
    }
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
        if let Some((range, bias, sections)) = vdso(memory, &mappings) {
            unwinder.add_module(Module::new("[vdso]".into(), range.clone(), bias, sections));
            files.push(ModuleFile {
                range,
                bias,
                symbols: None,
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

/// The kernel's vDSO, where `clock_gettime` and its kin run, is in no file: its image is read
/// from the target's memory for its unwind tables (a computation timing itself is sampled
/// there often). Its span, load bias and sections; its functions stay unnamed.
fn vdso(
    memory: &ProcessMemory,
    mappings: &[Mapping],
) -> Option<(Range<u64>, u64, ExplicitModuleSectionInfo<Vec<u8>>)> {
    let maps = mappings
        .iter()
        .find(|mapping| mapping.pseudo.as_deref() == Some("[vdso]"))?;
    let bytes = memory.read_bytes(maps.start, maps.end - maps.start).ok()?;
    let elf = object::File::parse(&*bytes).ok()?;
    let bias = elf
        .segments()
        .find_map(|segment| maps.load_bias_of_segment(segment.address(), segment.file_range().0))?;
    Some((maps.start..maps.end, bias, unwind_sections(&elf)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_sampled_after_it_was_seen_leaving_is_computing() {
        let mut current = Current::default();
        current.poll.header = 0x10;
        (current.off_since, current.off_blocked) = (100, 1);
        (current.blocked_since, current.blocked_sp) = (100, 0xb10c);
        let seen = Seen::in_poll(&current, 0x10, 50).expect("seen");
        assert_eq!((seen.doing, seen.sp), (Doing::Blocked, 0xb10c));
        // Its return to a CPU went unseen, but a timer sample found it running since.
        (current.sampled_at, current.sampled_sp) = (150, 0xc0de);
        let seen = Seen::in_poll(&current, 0x10, 50).expect("seen");
        assert_eq!((seen.doing, seen.sp), (Doing::Computing, 0xc0de));
    }
}
