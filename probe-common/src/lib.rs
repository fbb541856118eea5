//! The ABI between async-inspect's eBPF programs and its collector: the fixed-size event record,
//! the per-load configuration, and the meaning of each bit both sides must agree on.
//!
//! Everything here is `#[repr(C)]` plain data, so the kernel side writes it with one ring-buffer
//! reservation and the user side reads it with one unaligned copy.
#![no_std]

/// What happened. Stored in [`Event::kind`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// A scheduler created the task (`value` = 0). `other_*` is the task running on the spawning
    /// thread, if any: the parent.
    Spawn = 1,
    /// `raw::poll` entered. `value` = the state word before the poll.
    PollStart = 2,
    /// `raw::poll` returned. `value` = the state word after the poll, unless
    /// [`flags::FREED_DURING_POLL`] is set (the task was freed inside the poll: nothing to read).
    PollEnd = 3,
    /// `waker::wake_by_val`: the task was woken and the waker consumed. `other_*` = the waking task.
    WakeByVal = 4,
    /// `waker::wake_by_ref`: the task was woken, the waker kept. `other_*` = the waking task.
    WakeByRef = 5,
    /// `waker::clone_waker`: one more waker for the task exists.
    WakerClone = 6,
    /// `waker::drop_waker`: one waker for the task was dropped.
    WakerDrop = 7,
    /// `raw::shutdown`: the runtime (shutdown) or an abort asked the task to cancel.
    Shutdown = 8,
    /// `raw::dealloc`: the task's memory is freed; its header address may be reused from now on.
    /// (Frees through `Harness::dealloc` called directly are not seen; the user side tells reuse
    /// by the task id.)
    Dealloc = 9,
    /// `State::transition_to_complete`: the task finished (returned, was cancelled, or
    /// panicked). `value` = the state word just before, so `CANCELLED` tells a cancellation;
    /// [`flags::PANICKED`] is set when a panic started during the current poll.
    Complete = 10,
}

impl EventKind {
    pub const fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => Self::Spawn,
            2 => Self::PollStart,
            3 => Self::PollEnd,
            4 => Self::WakeByVal,
            5 => Self::WakeByRef,
            6 => Self::WakerClone,
            7 => Self::WakerDrop,
            8 => Self::Shutdown,
            9 => Self::Dealloc,
            10 => Self::Complete,
            _ => return None,
        })
    }
}

/// Bits of [`Event::flags`].
pub mod flags {
    /// The task was deallocated while it was being polled (it completed and its last reference
    /// went away), so its state word could not be read at poll end. It did complete.
    pub const FREED_DURING_POLL: u8 = 1 << 0;
    /// A panic started on this thread while the task was being polled.
    pub const PANICKED: u8 = 1 << 1;
    /// The task id could not be read (bad header, unreadable memory).
    pub const NO_TASK_ID: u8 = 1 << 2;
}

/// One record in the ring buffer. 72 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// The task header address (the task's `RawTask` pointer).
    pub header: u64,
    /// The tokio task id, read through the task vtable's `id_offset`.
    pub task_id: u64,
    /// The task's vtable address: one vtable per (future type, scheduler), so it names the type.
    pub vtable: u64,
    /// The task being polled on this thread when the event happened (0 if none).
    pub other_header: u64,
    /// The tokio task id of `other_header` (0 if none).
    pub other_task_id: u64,
    /// Kind-specific: the task state word for polls.
    pub value: u64,
    /// The attach cookie: an index into the probe plan's site table.
    pub site: u32,
    /// The kernel thread id (what userspace calls a TID).
    pub tid: u32,
    /// The process id (thread group id).
    pub pid: u32,
    /// An [`EventKind`] as u8.
    pub kind: u8,
    /// [`flags`] bits.
    pub flags: u8,
    pub _pad: [u8; 2],
}

pub const EVENT_SIZE: usize = core::mem::size_of::<Event>();

/// Offsets into tokio's task structures that the kernel side needs. Handed down by the user side
/// (from DWARF when the target has it, from known tokio layouts otherwise), never hard-coded in
/// the eBPF programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Offset of `Header::state` (an `AtomicUsize`).
    pub header_state: u64,
    /// Offset of `Header::vtable` (a `&'static Vtable`).
    pub header_vtable: u64,
    /// Offset of `Vtable::id_offset` (a `usize`: where the task id sits relative to the header).
    pub vtable_id_offset: u64,
    /// Non-zero once the user side has filled this in; the programs emit nothing before that.
    pub ready: u64,
}

/// Bits of tokio's task state word (`tokio::runtime::task::state`), stable since tokio 1.0.
pub mod state {
    pub const RUNNING: u64 = 0b0000_0001;
    pub const COMPLETE: u64 = 0b0000_0010;
    pub const NOTIFIED: u64 = 0b0000_0100;
    pub const JOIN_INTEREST: u64 = 0b0000_1000;
    pub const JOIN_WAKER: u64 = 0b0001_0000;
    pub const CANCELLED: u64 = 0b0010_0000;
    pub const REF_COUNT_SHIFT: u32 = 6;
}

/// The site-table index in a cookie occupies the low 32 bits; the high bits are reserved.
pub const COOKIE_SITE_MASK: u64 = 0xffff_ffff;

#[cfg(feature = "user")]
mod user {
    // SAFETY: both are repr(C) structs of integers with no padding holes that matter to the kernel.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::Event {}
}
