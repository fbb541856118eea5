//! Async backtraces: reading a task's future out of the target's memory and walking its state
//! machines from the task's own `async fn` down through `__awaitee` to the leaf future it is
//! parked on. Reads race a running target, so everything read is bounds-checked and a walk
//! that meets nonsense stops with what it has.

use std::sync::Arc;

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::resolve::futures::{BaseEncoding, State, TypeIndex, TypeInfo, TypeKind, Variant};

mod macros;
mod resources;
mod timers;

pub use timers::wait_bound;

/// Reads target memory; `false` when the range cannot be read.
pub trait Memory {
    fn read(&self, address: u64, buf: &mut [u8]) -> bool;

    fn read_u64(&self, address: u64) -> Option<u64> {
        let mut bytes = [0u8; 8];
        self.read(address, &mut bytes)
            .then(|| u64::from_le_bytes(bytes))
    }

    /// The process read, where there is one: what its fds are is read from `/proc/PID`.
    fn pid(&self) -> Option<u32> {
        None
    }

    /// Why `len` bytes at `address` cannot be read, or None when they can.
    fn unreadable(&self, address: u64, len: usize) -> Option<Unreadable> {
        let mut bytes = vec![0u8; len];
        (!self.read(address, &mut bytes)).then(|| Unreadable {
            gone: false,
            error: "unreadable".into(),
        })
    }
}

/// A read that failed, and whether because the process is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreadable {
    pub gone: bool,
    /// The system's words, with the errno: `... No such process (os error 3)`.
    pub error: String,
}

impl Memory for crate::memory::ProcessMemory {
    fn read(&self, address: u64, buf: &mut [u8]) -> bool {
        crate::memory::ProcessMemory::read(self, address, buf).is_ok()
    }

    fn pid(&self) -> Option<u32> {
        Some(crate::memory::ProcessMemory::pid(self))
    }

    fn unreadable(&self, address: u64, len: usize) -> Option<Unreadable> {
        use crate::memory::MemoryError;
        let mut bytes = vec![0u8; len];
        let error = crate::memory::ProcessMemory::read(self, address, &mut bytes).err()?;
        let gone = match &error {
            MemoryError::NoSuchProcess { .. } => true,
            MemoryError::Read { source, .. } => source.raw_os_error() == Some(libc::ESRCH),
            _ => false,
        };
        Some(Unreadable {
            gone,
            error: error.to_string(),
        })
    }
}

/// `tokio::time::sleep`'s future.
const SLEEP: &str = "tokio::time::sleep::Sleep";

/// A task's async backtrace, outermost frame first. Shared, not copied, by the reports that
/// show it, and allocated to its exact size: a program can have 100 000 parked tasks.
pub type Frames = Arc<[Frame]>;

/// One async frame, or the leaf future under the innermost one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// `app::handler`, `tokio::sync::mutex::{impl#10}::lock`, or the leaf future's type.
    pub function: Arc<str>,
    pub file: Option<Arc<str>>,
    pub line: Option<u64>,
    /// What the leaf future is waiting for, in words, where tokio's types are recognised.
    /// (Boxed strings and slices here: a frame is kept for every parked task, and most have
    /// neither locals nor locks.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf: Option<Box<str>>,
    /// Locals held across this await, `name = value` (values left out with --no-values).
    #[serde(default, skip_serializing_if = "<[_]>::is_empty")]
    pub locals: Box<[Local]>,
    /// Locks this frame holds across its await (guards among its locals).
    #[serde(default, skip_serializing_if = "<[_]>::is_empty")]
    pub holds: Box<[Resource]>,
    /// What the leaf waits for, when it is a lock or another task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waits_on: Option<Resource>,
    /// A timer that ends the wait at this frame whatever the rest waits for: a
    /// `tokio::time::timeout`, a sleep, a sleep branch of a `select!`, an interval's tick.
    /// Boxed: few frames have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<Box<Bound>>,
}

/// What bounds a wait: a timer on the await chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bound {
    /// What it is, in words: `tokio::time::Timeout`, `tokio::time::Sleep in a tokio::select!
    /// branch`. Interned: every sleeping task has one.
    pub by: Arc<str>,
    /// When it fires (CLOCK_MONOTONIC ns), where that could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ns: Option<u64>,
}

/// Something a task can hold or wait for. Locks are identified by their semaphore's address
/// (every tokio Mutex, RwLock and Semaphore is one underneath).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Resource {
    Mutex {
        address: u64,
    },
    RwLock {
        address: u64,
    },
    Semaphore {
        address: u64,
    },
    /// Another task, awaited through its JoinHandle (by tokio task id).
    Task {
        id: u64,
    },
}

impl Resource {
    /// Two resources are the same lock when their semaphores are.
    pub fn lock_address(self) -> Option<u64> {
        match self {
            Self::Mutex { address } | Self::RwLock { address } | Self::Semaphore { address } => {
                Some(address)
            }
            Self::Task { .. } => None,
        }
    }
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Mutex { address } => write!(f, "tokio::sync::Mutex {address:#x}"),
            Self::RwLock { address } => write!(f, "tokio::sync::RwLock {address:#x}"),
            Self::Semaphore { address } => write!(f, "tokio::sync::Semaphore {address:#x}"),
            Self::Task { id } => write!(f, "task {id}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Local {
    pub name: Arc<str>,
    pub value: String,
}

/// One shared copy of each name a backtrace holds: a hundred thousand tasks parked at the same
/// await would otherwise keep a hundred thousand copies of its function and file names.
pub fn intern(name: &str) -> Arc<str> {
    thread_local! {
        static NAMES: std::cell::RefCell<std::collections::HashSet<Arc<str>>> =
            std::cell::RefCell::default();
    }
    NAMES.with(|names| {
        let mut names = names.borrow_mut();
        if let Some(known) = names.get(name) {
            return known.clone();
        }
        let new: Arc<str> = Arc::from(name);
        names.insert(new.clone());
        new
    })
}

impl Frame {
    /// Is this frame in the program's own code (not tokio's, std's or a dependency's)?
    pub fn is_user_code(&self) -> bool {
        let Some(file) = &self.file else { return false };
        !(file.contains("/.cargo/registry/")
            || file.contains("/.cargo/git/")
            || file.starts_with("/rustc/")
            || file.contains("/rustlib/src/"))
    }
}

/// How deep a walk may go: a cycle in corrupted memory must not loop forever.
const MAX_DEPTH: usize = 64;

/// Facts about tokio's task layout the walker needs for `JoinHandle` leaves.
#[derive(Clone, Copy, Debug)]
pub struct TaskLayout {
    pub header_vtable: u64,
    pub vtable_id_offset: u64,
}

pub struct Walker<'a> {
    pub types: &'a TypeIndex,
    pub memory: &'a dyn Memory,
    pub layout: TaskLayout,
    /// Read the values of locals kept across awaits.
    pub values: bool,
    /// CLOCK_MONOTONIC now, for how long a sleep has left.
    pub now_ns: u64,
}

impl Walker<'_> {
    /// The backtrace of the future of type `ty` at `address`, outermost first.
    pub fn walk(&self, address: u64, ty: usize) -> Vec<Frame> {
        self.walk_nested(address, ty, 0)
    }

    /// [`Walker::walk`] inside `nesting` `select!`/`join!` branches: corrupted memory could
    /// nest them without end.
    fn walk_nested(&self, address: u64, ty: usize, nesting: usize) -> Vec<Frame> {
        let (mut frames, detail) = self.chain(address, ty, nesting);
        describe_innermost(&mut frames);
        resources::apply(&mut frames, detail);
        frames
    }

    /// The frames from the future at `address` down through `__awaitee` to its leaf, and the
    /// innermost detail read on the way of what the leaf waits for (a socket, a channel).
    fn chain(
        &self,
        mut address: u64,
        mut ty: usize,
        nesting: usize,
    ) -> (Vec<Frame>, Option<resources::Detail>) {
        let mut frames: Vec<Frame> = Vec::new();
        let mut detail = None;
        let mut seen = HashSet::new();
        while frames.len() < MAX_DEPTH && seen.insert((address, ty)) {
            let Ok(info) = self.types.get(ty) else { break };
            let next = match &info.kind {
                TypeKind::StateMachine {
                    discriminant,
                    states,
                } => {
                    let value = self.read_uint(address + discriminant.offset, discriminant.size);
                    let Some(state) = states
                        .iter()
                        .find(|state| Some(state.discriminant) == value)
                    else {
                        break;
                    };
                    let frame = self.state_frame(address, &info, state);
                    detail = self
                        .frame_detail(address, &frame.function, state)
                        .or(detail);
                    frames.push(frame);
                    self.awaited(address, state, nesting, &mut frames)
                }
                _ => {
                    detail = self.leaf_detail(address, ty, &info, &frames).or(detail);
                    self.plain_future(address, ty, &info, &mut frames)
                }
            };
            let Some(next) = next else { break };
            (address, ty) = next;
        }
        (frames, detail)
    }

    /// The frame of an async fn or block in `state`, with the locals it keeps across the await
    /// and the locks among them.
    fn state_frame(&self, address: u64, info: &TypeInfo, state: &State) -> Frame {
        let locals = if self.values {
            state
                .locals
                .iter()
                // `__awaitee` and the compiler's `_ref__x` copies of captures.
                .filter(|local| !local.name.starts_with("__") && !local.name.starts_with("_ref__"))
                .filter_map(|local| {
                    Some(Local {
                        name: intern(&local.name),
                        value: self.value(address + local.offset, local.ty?),
                    })
                })
                .collect()
        } else {
            Box::default()
        };
        let holds = state
            .locals
            .iter()
            .filter_map(|local| self.guard(address + local.offset, local.ty?))
            .collect();
        let function = self.types.function_name(&info.name);
        Frame {
            bound: self.interval_bound(address, &function, state).map(Box::new),
            function: intern(&function),
            file: state.file.as_deref().map(intern),
            line: Some(state.line),
            leaf: (!state.is_suspended()).then(|| state.name.to_lowercase().into()),
            locals,
            holds,
            waits_on: None,
        }
    }

    /// Where the walk goes on from the state machine at `address` in `state` (whose frame is
    /// the last of `frames`): into the future it awaits, or nowhere once a `select!` or
    /// `join!` is summed up in a frame of its own.
    fn awaited(
        &self,
        address: u64,
        state: &State,
        nesting: usize,
        frames: &mut Vec<Frame>,
    ) -> Option<(u64, usize)> {
        let awaitee = state.awaitee.as_ref()?;
        let next = (address + awaitee.offset, awaitee.ty?);
        let awaited = self.types.get(next.1).ok()?;
        let frame = frames.last_mut()?;
        // An await a macro wrote is located in the macro's source; DWARF keeps the line where
        // the user wrote the macro on the function's `__awaitee` variable.
        if let Some((file, line)) = self.types.macro_await(&awaited.name) {
            frame.file = Some(intern(file));
            frame.line = Some(line);
        }
        let Some(which) = state.file.as_deref().and_then(macros::TokioMacro::of) else {
            return Some(next);
        };
        which.hide_locals(&mut frame.locals);
        let (file, line) = (frame.file.clone(), frame.line);
        let summary = self.macro_frame(which, next.0, &awaited, nesting);
        frames.push(Frame {
            file,
            line,
            ..summary
        });
        None
    }

    /// A future that is no async state machine: a wrapper to see through (`Pin<Box<_>>`, a
    /// timeout, ...), or the leaf.
    fn plain_future(
        &self,
        address: u64,
        ty: usize,
        info: &TypeInfo,
        frames: &mut Vec<Frame>,
    ) -> Option<(u64, usize)> {
        if let Some(next) = self.unwrap(address, info) {
            return Some(next);
        }
        if let Some((frame, next)) = self.timeout(address, info) {
            frames.push(frame);
            return Some(next);
        }
        let frame = Frame {
            function: intern(&self.types.readable(&info.name)),
            leaf: self.describe(address, ty, info).map(String::into_boxed_str),
            waits_on: self.waited(address, info, frames),
            bound: (info.name == SLEEP).then(|| {
                Box::new(Bound {
                    by: intern("tokio::time::Sleep"),
                    deadline_ns: self.sleep_deadline(address, ty),
                })
            }),
            ..Frame::default()
        };
        frames.push(frame);
        None
    }

    /// The lock a guard local holds: its semaphore's address.
    fn guard(&self, address: u64, ty: usize) -> Option<Resource> {
        let info = self.types.get(ty).ok()?;
        let name = info.name.as_str();
        let pointer_at = |member: &str| {
            let member = info.member(member)?;
            Some((self.memory.read_u64(address + member.offset)?, member.ty?))
        };
        if name.starts_with("tokio::sync::mutex::MutexGuard<") {
            // `lock: &Mutex<T>`; the Mutex's semaphore is its field `s`.
            let (mutex, reference) = pointer_at("lock")?;
            let TypeKind::Pointer { pointee } = self.types.get(reference).ok()?.kind else {
                return None;
            };
            let (offset, _) = self.types.offset_of(pointee?, &["s"])?;
            return Some(Resource::Mutex {
                address: mutex + offset,
            });
        }
        if name.starts_with("tokio::sync::rwlock::read_guard::RwLockReadGuard<")
            || name.starts_with("tokio::sync::rwlock::write_guard::RwLockWriteGuard<")
        {
            let (semaphore, _) = pointer_at("s")?;
            return Some(Resource::RwLock { address: semaphore });
        }
        if name == "tokio::sync::semaphore::SemaphorePermit" {
            let (semaphore, _) = pointer_at("sem")?;
            return Some(Resource::Semaphore { address: semaphore });
        }
        None
    }

    /// What a leaf future waits for, as a resource the deadlock analysis can follow.
    fn waited(&self, address: u64, info: &TypeInfo, frames: &[Frame]) -> Option<Resource> {
        let name = info.name.as_str();
        if name == "tokio::sync::batch_semaphore::Acquire" {
            let member = info.member("semaphore")?;
            let address = self.memory.read_u64(address + member.offset)?;
            let inside = |module: &str| frames.iter().any(|f| f.function.starts_with(module));
            return Some(if inside("tokio::sync::mutex::") {
                Resource::Mutex { address }
            } else if inside("tokio::sync::rwlock::") {
                Resource::RwLock { address }
            } else {
                Resource::Semaphore { address }
            });
        }
        if name.starts_with("tokio::runtime::task::join::JoinHandle<") {
            return Some(Resource::Task {
                id: self.joined_task_id(address)?,
            });
        }
        None
    }

    /// The tokio id of the task a `JoinHandle` at `address` joins (its first word is the
    /// task's header).
    fn joined_task_id(&self, address: u64) -> Option<u64> {
        let header = self.memory.read_u64(address)?;
        let vtable = self.memory.read_u64(header + self.layout.header_vtable)?;
        let id_offset = self
            .memory
            .read_u64(vtable + self.layout.vtable_id_offset)?;
        (id_offset < 1 << 20)
            .then(|| self.memory.read_u64(header + id_offset))
            .flatten()
    }

    /// Futures that only wrap another: `Pin<Box<F>>`, `Box<F>`, and single-future adaptors.
    fn unwrap(&self, address: u64, info: &TypeInfo) -> Option<(u64, usize)> {
        let name = info.name.as_str();
        if name.starts_with("core::pin::Pin<") {
            let pointer = info
                .member("__pointer")
                .or_else(|| info.member("pointer"))?;
            return Some((address + pointer.offset, pointer.ty?));
        }
        if name.starts_with("alloc::boxed::Box<") {
            let target = self.pointee_of_box(info)?;
            let heap = self.memory.read_u64(address)?;
            return (heap != 0).then_some((heap, target));
        }
        if let TypeKind::Pointer { pointee } = &info.kind {
            let target = (*pointee)?;
            let heap = self.memory.read_u64(address)?;
            return (heap != 0).then_some((heap, target));
        }
        if name.starts_with("tokio::task::coop::Coop<")
            || name.starts_with("tracing::instrument::Instrumented<")
        {
            let inner = info
                .member("fut")
                .or_else(|| info.member("inner"))
                .or_else(|| info.member("future"))?;
            return Some((address + inner.offset, inner.ty?));
        }
        if name.starts_with("core::option::Option<") {
            // A `timeout`'s sleep is an `Option<Sleep>` (none for a timeout of Duration::MAX).
            return self.variant_field(address, info, "Some", "__0");
        }
        None
    }

    /// The field `field` of the enum at `address`, if it holds the variant `variant` now.
    fn variant_field(
        &self,
        address: u64,
        info: &TypeInfo,
        variant: &str,
        field: &str,
    ) -> Option<(u64, usize)> {
        let active = self.active_variant(address, info)?;
        if active.name != variant {
            return None;
        }
        let (offset, ty) = self.types.offset_of(active.ty?, &[field])?;
        Some((address + active.offset + offset, ty))
    }

    /// The variant the enum at `address` holds now: the one whose discriminant it reads, else
    /// the one without (what a niche-optimised enum holds when its niche has no variant's value).
    fn active_variant<'i>(&self, address: u64, info: &'i TypeInfo) -> Option<&'i Variant> {
        let TypeKind::Struct {
            variants: Some((tag, variants)),
            ..
        } = &info.kind
        else {
            return None;
        };
        let value = self.read_uint(address + tag.offset, tag.size)?;
        variants
            .iter()
            .find(|known| known.discriminant == Some(value))
            .or_else(|| variants.iter().find(|known| known.discriminant.is_none()))
    }

    /// `Box<T>` is `Unique<T>` -> `NonNull<T>` -> `*const T` in DWARF: find the pointee.
    fn pointee_of_box(&self, info: &TypeInfo) -> Option<usize> {
        let mut current = info.member("__0").or_else(|| info.member("pointer"))?.ty?;
        for _ in 0..4 {
            let inner = self.types.get(current).ok()?;
            match &inner.kind {
                TypeKind::Pointer { pointee } => return *pointee,
                TypeKind::Struct { members, .. } => current = members.first()?.ty?,
                _ => return None,
            }
        }
        None
    }

    fn describe(&self, address: u64, ty: usize, info: &TypeInfo) -> Option<String> {
        let name = info.name.as_str();
        if name == SLEEP {
            let left = self
                .sleep_deadline(address, ty)
                .map(|deadline| deadline.saturating_sub(self.now_ns));
            return Some(match left {
                Some(ns) => format!("sleeping ({} left)", crate::readable::duration(ns)),
                None => "sleeping".into(),
            });
        }
        if name == "tokio::sync::batch_semaphore::Acquire" {
            let semaphore = info
                .member("semaphore")
                .and_then(|member| self.memory.read_u64(address + member.offset));
            return Some(match semaphore {
                Some(at) => format!("semaphore {at:#x}"),
                None => "waiting for a semaphore permit".into(),
            });
        }
        if name.starts_with("tokio::runtime::task::join::JoinHandle<") {
            return Some(match self.joined_task_id(address) {
                Some(id) => format!("waiting for task {id} (JoinHandle)"),
                None => "waiting for a task (JoinHandle)".into(),
            });
        }
        if name.starts_with("tokio::sync::oneshot::Receiver<") {
            return Some("waiting for a oneshot value".into());
        }
        if name == "tokio::sync::notify::Notified" {
            return Some("waiting for a Notify".into());
        }
        if name == "tokio::runtime::io::scheduled_io::Readiness" {
            return Some("waiting for I/O readiness".into());
        }
        None
    }

    /// When the `tokio::time::Sleep` at `address` (behind pins and boxes) fires,
    /// CLOCK_MONOTONIC ns.
    fn sleep_deadline(&self, mut address: u64, mut ty: usize) -> Option<u64> {
        for _ in 0..4 {
            let info = self.types.get(ty).ok()?;
            if info.name != SLEEP {
                (address, ty) = self.unwrap(address, &info)?;
                continue;
            }
            // tokio >= 1.50 keeps `deadline` in Sleep itself, older ones in `inner`.
            let field = |path: &[&str]| self.types.offset_of(ty, path).map(|(at, _)| address + at);
            return [&["deadline"][..], &["inner", "deadline"][..]]
                .iter()
                .find_map(|base| {
                    let seconds = field(&[base, &["tv_sec"][..]].concat())?;
                    let nanos = field(&[base, &["tv_nsec"][..]].concat())?;
                    self.memory
                        .read_u64(seconds)?
                        .checked_mul(1_000_000_000)?
                        .checked_add(self.read_uint(nanos, 4)?)
                });
        }
        None
    }

    fn read_uint(&self, address: u64, size: u64) -> Option<u64> {
        let size = usize::try_from(size)
            .ok()
            .filter(|size| (1..=8).contains(size))?;
        let mut bytes = [0u8; 8];
        self.memory
            .read(address, &mut bytes[..size])
            .then(|| u64::from_le_bytes(bytes))
    }

    /// A local's value in words: numbers, bools and chars as themselves, the rest by type.
    fn value(&self, address: u64, ty: usize) -> String {
        let Ok(info) = self.types.get(ty) else {
            return "?".into();
        };
        if let TypeKind::Base { encoding } = info.kind
            && let Some(raw) = self.read_uint(address, info.size)
        {
            let bits = info.size * 8;
            return match encoding {
                BaseEncoding::Bool => (raw != 0).to_string(),
                BaseEncoding::Char => char::from_u32(raw as u32)
                    .map_or_else(|| format!("{raw:#x}"), |c| format!("{c:?}")),
                BaseEncoding::Signed => {
                    let shift = 64 - bits;
                    (((raw << shift) as i64) >> shift).to_string()
                }
                BaseEncoding::Unsigned => raw.to_string(),
                BaseEncoding::Float if info.size == 8 => f64::from_bits(raw).to_string(),
                BaseEncoding::Float => f32::from_bits(raw as u32).to_string(),
            };
        }
        if let TypeKind::Pointer { .. } = info.kind
            && let Some(pointer) = self.memory.read_u64(address)
        {
            return format!("{} @ {pointer:#x}", self.types.readable(&info.name));
        }
        let smart_pointer = ["alloc::sync::Arc<", "alloc::rc::Rc<", "alloc::boxed::Box<"]
            .iter()
            .any(|prefix| info.name.starts_with(prefix));
        if smart_pointer
            && info.size == 8
            && let Some(pointer) = self.memory.read_u64(address)
        {
            return format!("{} @ {pointer:#x}", self.types.readable(&info.name));
        }
        if info.name == "&str"
            && let (Some(pointer), Some(length)) = (
                self.memory.read_u64(address),
                self.memory.read_u64(address + 8),
            )
            && length <= 64
        {
            let mut bytes = vec![0u8; length as usize];
            if self.memory.read(pointer, &mut bytes) {
                return format!("{:?}", String::from_utf8_lossy(&bytes));
            }
        }
        format!("{} ({} bytes)", self.types.readable(&info.name), info.size)
    }
}

/// A recognised tokio async fn (Mutex::lock, mpsc recv...) says more than a bare leaf; a leaf
/// that knows its own story (a sleep's deadline) keeps it, and a `select!` or `join!` frame sums
/// up its branches itself.
fn describe_innermost(frames: &mut [Frame]) {
    if frames
        .last()
        .is_none_or(|last| last.function.ends_with('!'))
    {
        return;
    }
    let Some(description) = frames
        .iter()
        .rev()
        .find_map(|frame| describe_function(&frame.function))
    else {
        return;
    };
    let last = frames.last_mut().expect("checked above");
    last.leaf = Some(match last.leaf.take() {
        Some(detail) if detail.starts_with("semaphore ") => {
            format!("{description} ({detail})").into()
        }
        Some(detail) if detail.starts_with("sleeping") => detail,
        _ => description.into(),
    });
}

/// What a recognised tokio async fn waits for.
fn describe_function(function: &str) -> Option<String> {
    let table: [(&str, &str, &str); 10] = [
        (
            "tokio::sync::mutex::",
            "::lock",
            "waiting for a tokio::sync::Mutex",
        ),
        (
            "tokio::sync::rwlock::",
            "::read",
            "waiting to read a tokio::sync::RwLock",
        ),
        (
            "tokio::sync::rwlock::",
            "::write",
            "waiting to write a tokio::sync::RwLock",
        ),
        (
            "tokio::sync::semaphore::",
            "::acquire",
            "waiting for a tokio::sync::Semaphore permit",
        ),
        (
            "tokio::sync::mpsc::",
            "::recv",
            "waiting for an mpsc message",
        ),
        (
            "tokio::sync::mpsc::",
            "::send",
            "waiting for room in an mpsc channel",
        ),
        (
            "tokio::sync::broadcast::",
            "::recv",
            "waiting for a broadcast message",
        ),
        (
            "tokio::sync::watch::",
            "::changed",
            "waiting for a watch change",
        ),
        ("tokio::task::yield_now", "", "yielding"),
        (
            "tokio::runtime::io::",
            "readiness",
            "waiting for I/O readiness",
        ),
    ];
    table
        .iter()
        .find(|(prefix, part, _)| function.starts_with(prefix) && function.contains(part))
        .map(|(_, _, description)| (*description).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokio_functions_are_described() {
        assert_eq!(
            describe_function("tokio::sync::mutex::{impl#10}::lock").as_deref(),
            Some("waiting for a tokio::sync::Mutex")
        );
        assert_eq!(
            describe_function("tokio::sync::mpsc::bounded::Receiver::recv").as_deref(),
            Some("waiting for an mpsc message")
        );
        assert_eq!(describe_function("app::lock"), None);
    }

    #[test]
    fn a_macro_frame_keeps_its_own_summary() {
        let mut frames = vec![
            Frame {
                function: "tokio::sync::mpsc::bounded::Receiver::recv".into(),
                ..Frame::default()
            },
            Frame {
                function: "tokio::select!".into(),
                leaf: Some("in tokio::select!, 1 of 2 branches pending".into()),
                ..Frame::default()
            },
        ];
        describe_innermost(&mut frames);
        assert_eq!(
            frames[1].leaf.as_deref(),
            Some("in tokio::select!, 1 of 2 branches pending")
        );
        frames.pop();
        describe_innermost(&mut frames);
        assert_eq!(
            frames[0].leaf.as_deref(),
            Some("waiting for an mpsc message")
        );
    }

    #[test]
    fn user_code_is_told_from_dependencies() {
        let frame = |file: &str| Frame {
            file: Some(file.into()),
            line: Some(1),
            ..Frame::default()
        };
        assert!(frame("/work/app/src/main.rs").is_user_code());
        assert!(
            !frame("/root/.cargo/registry/src/index.crates.io-x/tokio-1.54.1/src/sync/mutex.rs")
                .is_user_code()
        );
    }
}
