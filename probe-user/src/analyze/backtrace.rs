//! Async backtraces: reading a task's future out of the target's memory and walking its state
//! machines from the task's own `async fn` down through `__awaitee` to the leaf future it is
//! parked on. Reads race a running target, so everything read is bounds-checked and a walk
//! that meets nonsense stops with what it has.

use std::sync::Arc;

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::resolve::futures::{BaseEncoding, TypeIndex, TypeInfo, TypeKind};

/// Reads target memory; `false` when the range cannot be read.
pub trait Memory {
    fn read(&self, address: u64, buf: &mut [u8]) -> bool;

    fn read_u64(&self, address: u64) -> Option<u64> {
        let mut bytes = [0u8; 8];
        self.read(address, &mut bytes)
            .then(|| u64::from_le_bytes(bytes))
    }
}

impl Memory for crate::memory::ProcessMemory {
    fn read(&self, address: u64, buf: &mut [u8]) -> bool {
        crate::memory::ProcessMemory::read(self, address, buf).is_ok()
    }
}

/// One async frame, or the leaf future under the innermost one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// `app::handler`, `tokio::sync::mutex::{impl#10}::lock`, or the leaf future's type.
    pub function: Arc<str>,
    pub file: Option<Arc<str>>,
    pub line: Option<u64>,
    /// What the leaf future is waiting for, in words, where tokio's types are recognised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf: Option<String>,
    /// Locals held across this await, `name = value` (values left out with --no-values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locals: Vec<Local>,
    /// Locks this frame holds across its await (guards among its locals).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<Resource>,
    /// What the leaf waits for, when it is a lock or another task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waits_on: Option<Resource>,
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
    pub fn walk(&self, mut address: u64, mut ty: usize) -> Vec<Frame> {
        let mut frames: Vec<Frame> = Vec::new();
        let mut seen = HashSet::new();
        while frames.len() < MAX_DEPTH && seen.insert((address, ty)) {
            let Ok(info) = self.types.get(ty) else { break };
            match &info.kind {
                TypeKind::StateMachine {
                    discriminant,
                    states,
                } => {
                    let Some(value) =
                        self.read_uint(address + discriminant.offset, discriminant.size)
                    else {
                        break;
                    };
                    let Some(state) = states.iter().find(|state| state.discriminant == value)
                    else {
                        break;
                    };
                    let locals = if self.values {
                        state
                            .locals
                            .iter()
                            // `__awaitee` and the compiler's `_ref__x` copies of captures.
                            .filter(|local| {
                                !local.name.starts_with("__") && !local.name.starts_with("_ref__")
                            })
                            .filter_map(|local| {
                                Some(Local {
                                    name: intern(&local.name),
                                    value: self.value(address + local.offset, local.ty?),
                                })
                            })
                            .collect()
                    } else {
                        Vec::new()
                    };
                    let holds = state
                        .locals
                        .iter()
                        .filter_map(|local| self.guard(address + local.offset, local.ty?))
                        .collect();
                    frames.push(Frame {
                        function: intern(&function_name(&info.name)),
                        file: state.file.as_deref().map(intern),
                        line: Some(state.line),
                        leaf: (!state.is_suspended()).then(|| state.name.to_lowercase()),
                        locals,
                        holds,
                        waits_on: None,
                    });
                    let Some(awaitee) = &state.awaitee else { break };
                    let Some(next) = awaitee.ty else { break };
                    address += awaitee.offset;
                    ty = next;
                }
                _ => {
                    // A future that is not an async state machine: unwrap the wrappers we
                    // know, else it is the leaf.
                    if let Some((next_address, next_ty)) = self.unwrap(address, &info) {
                        address = next_address;
                        ty = next_ty;
                        continue;
                    }
                    let leaf = self.describe(address, ty, &info);
                    let waits_on = self.waited(address, &info, &frames);
                    frames.push(Frame {
                        function: intern(&info.name),
                        file: None,
                        line: None,
                        leaf,
                        locals: Vec::new(),
                        holds: Vec::new(),
                        waits_on,
                    });
                    break;
                }
            }
        }
        // A recognised tokio async fn (Mutex::lock, mpsc recv...) says more than a bare leaf;
        // a leaf that knows its own story (a sleep's deadline) keeps it.
        if let Some(description) = frames
            .iter()
            .rev()
            .find_map(|frame| describe_function(&frame.function))
        {
            let last = frames.last_mut().expect("found in frames");
            last.leaf = Some(match last.leaf.take() {
                Some(detail) if detail.starts_with("semaphore ") => {
                    format!("{description} ({detail})")
                }
                Some(detail) if detail.starts_with("sleeping") => detail,
                _ => description,
            });
        }
        frames
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
        None
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
        if name == "tokio::time::sleep::Sleep" {
            // tokio >= 1.50 keeps `deadline` in Sleep itself, older ones in `inner`.
            let field = |path: &[&str]| self.types.offset_of(ty, path).map(|(at, _)| address + at);
            let left = [&["deadline"][..], &["inner", "deadline"][..]]
                .iter()
                .find_map(|base| {
                    let seconds = field(&[base, &["tv_sec"][..]].concat())?;
                    let nanos = field(&[base, &["tv_nsec"][..]].concat())?;
                    let deadline = self
                        .memory
                        .read_u64(seconds)?
                        .checked_mul(1_000_000_000)?
                        .checked_add(self.read_uint(nanos, 4)?)?;
                    Some(deadline.saturating_sub(self.now_ns))
                });
            return Some(match left {
                Some(ns) => format!("sleeping ({} left)", crate::report::duration(ns)),
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
            return format!("{} @ {pointer:#x}", info.name);
        }
        let smart_pointer = ["alloc::sync::Arc<", "alloc::rc::Rc<", "alloc::boxed::Box<"]
            .iter()
            .any(|prefix| info.name.starts_with(prefix));
        if smart_pointer
            && info.size == 8
            && let Some(pointer) = self.memory.read_u64(address)
        {
            return format!("{} @ {pointer:#x}", info.name);
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
        format!("{} ({} bytes)", info.name, info.size)
    }
}

/// `app::f::{async_fn_env#0}` -> `app::f`; `app::f::{async_block_env#1}` -> `app::f::{async block#1}`;
/// generic arguments dropped: `tokio::sync::mutex::{impl#10}::lock::{async_fn_env#0}<u64>`.
pub fn function_name(type_name: &str) -> String {
    let base = match type_name.rfind("::{") {
        Some(at) => {
            let (head, tail) = type_name.split_at(at);
            if let Some(number) = tail
                .strip_prefix("::{async_block_env#")
                .and_then(|rest| rest.split('}').next())
            {
                return format!("{head}::{{async block#{number}}}");
            }
            head
        }
        None => type_name,
    };
    base.to_owned()
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
    fn function_names() {
        assert_eq!(
            function_name("app::handler::{async_fn_env#0}"),
            "app::handler"
        );
        assert_eq!(
            function_name("tokio::sync::mutex::{impl#10}::lock::{async_fn_env#0}<u64>"),
            "tokio::sync::mutex::{impl#10}::lock"
        );
        assert_eq!(
            function_name("app::main::{async_block_env#1}"),
            "app::main::{async block#1}"
        );
        assert_eq!(
            function_name("tokio::time::sleep::Sleep"),
            "tokio::time::sleep::Sleep"
        );
    }

    #[test]
    fn tokio_functions_are_described() {
        assert_eq!(
            describe_function("tokio::sync::mutex::{impl#10}::lock").as_deref(),
            Some("waiting for a tokio::sync::Mutex")
        );
        assert_eq!(describe_function("app::lock"), None);
    }

    #[test]
    fn user_code_is_told_from_dependencies() {
        let frame = |file: &str| Frame {
            function: "".into(),
            file: Some(file.into()),
            line: Some(1),
            leaf: None,
            locals: Vec::new(),
            holds: Vec::new(),
            waits_on: None,
        };
        assert!(frame("/work/app/src/main.rs").is_user_code());
        assert!(
            !frame("/root/.cargo/registry/src/index.crates.io-x/tokio-1.54.1/src/sync/mutex.rs")
                .is_user_code()
        );
    }
}
