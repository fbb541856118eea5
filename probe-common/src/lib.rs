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
    /// `other_header` = the poll's off-CPU time, blocked and preempted ([`off_cpu::pack`]; 0
    /// when the `sched_switch` tracepoint is not attached, and in recordings made before it was);
    /// `other_task_id` = 0.
    PollEnd = 3,
    /// `waker::wake_by_val`: the task was woken and the waker consumed. `other_*` = the waking task.
    WakeByVal = 4,
    /// `waker::wake_by_ref`: the task was woken, the waker kept. `other_*` = the waking task.
    WakeByRef = 5,
    // 6 and 7 were waker clones and drops, probed at every clone and drop until the wakers
    // came to be counted from the state word's reference count (single-stepped probes cost
    // 20x CPU on a busy server).
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
    /// A poll of a future given to `block_on` (the body of `#[tokio::main]`, `#[tokio::test]`,
    /// `Runtime::block_on`), not of a tokio task: `header` is the future's address, and there is
    /// no task id, vtable or state word. At its poll end, `value` is [`state::COMPLETE`] when
    /// the future returned `Ready` (its state machine reached `Returned`), else 0.
    pub const BLOCK_ON: u8 = 1 << 3;
    /// At a poll end: a context switch of its thread during the poll was missed (the kernel
    /// skips a tracepoint's program while another BPF program, such as a uprobe's preempted on
    /// that CPU, is active), so part of its off-CPU time may count as on CPU.
    pub const OFF_CPU_UNKNOWN: u8 = 1 << 4;
    /// At a poll end: `other_task_id` holds the poll's CPU time by its thread's task clock
    /// ([`Config::task_cpu_time`]), in nanoseconds.
    pub const CPU_TIME: u8 = 1 << 5;
    /// At a poll end with [`CPU_TIME`]: the timer samples ([`SAMPLE_PERIOD_NS`]) were running,
    /// and the count in `other_task_id` ([`poll_cpu`]) says how many fell in the poll.
    pub const SAMPLED: u8 = 1 << 6;
}

/// How often the timer sample of each CPU fires, in nanoseconds (500 a second): a thread that
/// runs a stretch of `n` periods on a CPU is sampled `n` or `n + 1` times, so samples bound a
/// poll's time on CPU from above where the kernel's clocks cannot: a virtual CPU stalled by its
/// host (not stolen: the host faulting in the guest's memory, say) stops the guest's timers,
/// yet its task clock runs on. Fine enough that a 1 ms poll stretched so is never taken for
/// one that computed past the 10 ms `long_poll` threshold.
pub const SAMPLE_PERIOD_NS: u64 = 2_000_000;

/// How a poll end packs its CPU time into its `other_task_id`: nanoseconds by its thread's task
/// clock in the low 48 bits (78 hours), timer samples that fell in it in the high 16.
pub mod poll_cpu {
    const NS_BITS: u32 = 48;

    pub const fn pack(cpu_ns: u64, samples: u64) -> u64 {
        let samples = if samples > 0xffff { 0xffff } else { samples };
        (cpu_ns & ((1 << NS_BITS) - 1)) | samples << NS_BITS
    }

    /// `(cpu_ns, samples)`.
    pub const fn unpack(packed: u64) -> (u64, u64) {
        (packed & ((1 << NS_BITS) - 1), packed >> NS_BITS)
    }
}

/// How a poll end packs its off-CPU time into one `u64` (its `other_header`): microseconds
/// blocked in the kernel (the thread switched out sleeping: a blocking syscall, a std Mutex,
/// `thread::sleep`; until its wakeup) in the low 32 bits, microseconds preempted (switched out
/// runnable, or woken and waiting for a CPU) in the high 32, each saturating at about 71 minutes. One field, so that the event and the
/// recording format keep their shape.
pub mod off_cpu {
    pub const fn pack(blocked_ns: u64, preempted_ns: u64) -> u64 {
        micros(blocked_ns) | micros(preempted_ns) << 32
    }

    /// `(blocked_ns, preempted_ns)`, to the microsecond.
    pub const fn unpack(packed: u64) -> (u64, u64) {
        ((packed & 0xffff_ffff) * 1_000, (packed >> 32) * 1_000)
    }

    const fn micros(ns: u64) -> u64 {
        let us = ns / 1_000;
        if us > 0xffff_ffff { 0xffff_ffff } else { us }
    }
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
    /// The task being polled on this thread when the event happened (0 if none); for a
    /// [`EventKind::PollEnd`], the poll's off-CPU time instead ([`off_cpu`]).
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

/// The size of the ring buffer the program object declares as the template of its per-CPU
/// rings (one page, the smallest a ring buffer can be). The rings the user side creates may be
/// larger: since Linux 5.11 a ring in a map of maps need not match its template's size.
pub const RING_TEMPLATE_BYTES: usize = 4096;

/// One poll a thread is in, as the programs keep it in [`Current`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadPoll {
    /// The polled task's header (0: none).
    pub header: u64,
    /// The polled task's vtable and id, read once at the poll's start for its end as well:
    /// every read of the target's memory costs about as much as the rest of a program.
    pub vtable: u64,
    pub task_id: u64,
    pub flags: u64,
    /// The thread's off-CPU totals ([`Current::blocked_total`], [`Current::preempted_total`])
    /// when this poll started.
    pub blocked_base: u64,
    pub preempted_base: u64,
    /// The thread's CPU time by its task clock when this poll started, if measured
    /// ([`flags::CPU_TIME`] in `flags`; a new thread's clock may still read 0).
    pub cpu_base: u64,
    /// The thread's [`Current::samples`] when this poll started.
    pub samples_base: u64,
}

impl ThreadPoll {
    /// Zeroes every field. Word by word, volatile: the compiler turns a zeroed struct into a
    /// call of the eBPF object's `memset`, a loop over bytes that took about a twentieth of the
    /// programs' time when it ran at every poll end.
    #[inline(always)]
    pub fn clear(&mut self) {
        let words = (self as *mut Self).cast::<u64>();
        for word in 0..core::mem::size_of::<Self>() / 8 {
            // SAFETY: a repr(C) struct of u64 fields, written within its size.
            unsafe { core::ptr::write_volatile(words.add(word), 0) };
        }
    }
}

/// The per-thread record the programs keep in their `CURRENT` map (key: thread id): the task
/// being polled on the thread, its off-CPU time, and where its user code was when it last
/// blocked in a poll. The user side reads it to find where a long poll blocks.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Current {
    /// The poll running now (header 0: none).
    pub poll: ThreadPoll,
    /// The poll this one is nested in (a runtime driven from inside a task), restored at its end.
    pub outer: ThreadPoll,
    /// When this thread went off-CPU during a poll (0: on CPU), and whether it blocked.
    pub off_since: u64,
    pub off_blocked: u64,
    /// Nanoseconds this thread spent off-CPU inside polls, ever: blocked in the kernel, and
    /// runnable but preempted. Never reset, so a nested poll's time counts in its outer poll too.
    pub blocked_total: u64,
    pub preempted_total: u64,
    /// The user registers (instruction, stack and frame pointers) of the thread's last
    /// blocking switch inside a poll, and when it was (the `off_since` it set): enough to unwind
    /// its stack while it stays blocked. 0 until it blocks in a poll.
    pub blocked_ip: u64,
    pub blocked_sp: u64,
    pub blocked_bp: u64,
    pub blocked_since: u64,
    /// The user registers of the thread's last timer sample inside a poll, and when it was
    /// taken (0: none): where a poll that runs long is computing.
    pub sampled_ip: u64,
    pub sampled_sp: u64,
    pub sampled_bp: u64,
    pub sampled_at: u64,
    /// Timer samples that found the thread inside a poll, ever.
    pub samples: u64,
}

impl Current {
    /// This thread's poll of `header` starts, nested in whatever it was polling.
    #[inline(always)]
    pub fn enter(
        &mut self,
        header: u64,
        vtable: u64,
        task_id: u64,
        entry_flags: u64,
        cpu_ns: Option<u64>,
    ) {
        self.outer = self.poll;
        self.poll = ThreadPoll {
            header,
            vtable,
            task_id,
            flags: entry_flags | cpu_ns.map_or(0, |_| u64::from(flags::CPU_TIME)),
            blocked_base: self.blocked_total,
            preempted_base: self.preempted_total,
            cpu_base: cpu_ns.unwrap_or(0),
            samples_base: self.samples,
        };
    }

    /// This thread's poll ends, its thread's task clock at `cpu_ns` (`None`: not measured):
    /// returns its off-CPU time, packed for the event ([`off_cpu::pack`]), its CPU time with the
    /// timer samples that fell in it ([`poll_cpu::pack`]), and [`flags::CPU_TIME`] if that was
    /// measured (else 0); and restores the poll it was nested in (none: header 0). Plain
    /// integers, no `Option`: the compiler may spill a `None`'s undefined payload, which the
    /// verifier refuses to read.
    #[inline(always)]
    pub fn leave(&mut self, cpu_ns: Option<u64>) -> (u64, u64, u8) {
        let off = crate::off_cpu::pack(
            self.blocked_total - self.poll.blocked_base,
            self.preempted_total - self.poll.preempted_base,
        );
        let (cpu, measured) = match cpu_ns {
            Some(now) if self.poll.flags & u64::from(flags::CPU_TIME) != 0 => (
                poll_cpu::pack(
                    now.saturating_sub(self.poll.cpu_base),
                    self.samples - self.poll.samples_base,
                ),
                flags::CPU_TIME,
            ),
            _ => (0, 0),
        };
        self.poll = self.outer;
        self.outer.clear();
        (off, cpu, measured)
    }
}

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
    /// Where every task type's id sits relative to its header, when the binary's vtables all
    /// agree and it lies within the [`HEADER_WORDS`] read at once; 0 when they do not, and the
    /// id is read through the task's vtable (two more reads of the target's memory).
    pub task_id_offset: u64,
    /// Non-zero once the user side has filled this in; the programs emit nothing before that.
    pub ready: u64,
    /// [`MODE_EVENTS`] or [`MODE_COUNT_ONLY`].
    pub mode: u64,
    /// Events are submitted without waking the collector, which drains the ring buffer on a
    /// timer (a wake-up per event costs both sides a context switch), except every this many
    /// events on a CPU: a burst then wakes it before the buffer fills. Counted per CPU because
    /// asking the ring buffer how full it is costs more than the rest of the event.
    pub wake_every: u64,
    /// Offset in the kernel's `task_struct` of `se.sum_exec_runtime`, the thread's CPU time by
    /// its task clock (from the kernel's BTF; 0: unknown). The task clock leaves out the time a
    /// hypervisor ran something else on the virtual CPU (steal time), which wall time counts as
    /// on CPU. Up to date at every context switch and scheduler tick: within a tick otherwise.
    pub task_cpu_time: u64,
}

/// How many words the programs read from a task header at once: its state word, its vtable
/// and (at [`Config::task_id_offset`]) its id. One read of the target's memory costs about as
/// much as the rest of a program, whatever its size; a task cell is aligned to 128 bytes, so
/// these never cross a page.
pub const HEADER_WORDS: usize = 8;
const _: () = assert!(HEADER_WORDS.is_power_of_two());

/// The programs do their work: read the task, emit events.
pub const MODE_EVENTS: u64 = 0;
/// The programs only count their hits and return: what the bare probe mechanism costs on the
/// same sites (the benchmark's floor), with nothing read or emitted.
pub const MODE_COUNT_ONLY: u64 = 1;

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

/// An attach cookie: what a probe site is, packed into the 64 bits the kernel hands back.
///
/// | bits  | what |
/// |-------|------|
/// | 0-31  | the site's index in the probe plan's site table |
/// | 32-39 | the [`EventKind`] a `task_op` site reports |
/// | 40-47 | the [`register`] holding the task argument at the probed instruction |
/// | 48-55 | the [`HIT_SLOTS`] counter this site's hits go to |
pub mod cookie {
    pub const SITE_MASK: u64 = 0xffff_ffff;
    /// The kind byte of a `poll_start`/`poll_end` site that polls a `block_on` future rather
    /// than a tokio task (`raw::poll` sites carry 0).
    pub const BLOCK_ON: u8 = super::EventKind::PollStart as u8;
    pub const KIND_SHIFT: u32 = 32;
    pub const REGISTER_SHIFT: u32 = 40;
    pub const SLOT_SHIFT: u32 = 48;

    pub const fn pack(site: u32, kind: u8, register: u8, slot: u8) -> u64 {
        site as u64
            | (kind as u64) << KIND_SHIFT
            | (register as u64) << REGISTER_SHIFT
            | (slot as u64) << SLOT_SHIFT
    }

    pub const fn site(cookie: u64) -> u32 {
        (cookie & SITE_MASK) as u32
    }

    pub const fn kind(cookie: u64) -> u8 {
        (cookie >> KIND_SHIFT) as u8
    }

    pub const fn register(cookie: u64) -> u8 {
        (cookie >> REGISTER_SHIFT) as u8
    }

    pub const fn slot(cookie: u64) -> u8 {
        (cookie >> SLOT_SHIFT) as u8
    }
}

/// How a `block_on` future's poll end tells `Ready` from `Pending`: the future is an async state
/// machine, whose discriminant (`__state`, `size` bytes at `offset`) reads `returned` once it
/// has returned `Ready`. One per `block_on` poll site, in the `BLOCK_ON_DONE` map by site index.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BlockOnDone {
    pub offset: u64,
    /// 1, 2, 4 or 8.
    pub size: u64,
    pub returned: u64,
}

/// How many hit counters the kernel side keeps (one per kind of site, per CPU).
pub const HIT_SLOTS: u32 = 16;

/// Registers a probe can take the task argument from, numbered as in the cookie. A probe placed
/// past a function's first instruction finds its first argument where the code moved it.
pub mod register {
    pub const RDI: u8 = 0;
    pub const RSI: u8 = 1;
    pub const RDX: u8 = 2;
    pub const RCX: u8 = 3;
    pub const R8: u8 = 4;
    pub const R9: u8 = 5;
    pub const RAX: u8 = 6;
    pub const RBX: u8 = 7;
    pub const RBP: u8 = 8;
    pub const R12: u8 = 9;
    pub const R13: u8 = 10;
    pub const R14: u8 = 11;
    pub const R15: u8 = 12;
    pub const R10: u8 = 13;
    pub const R11: u8 = 14;
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: both are repr(C) structs of integers with no padding holes that matter to the kernel.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::BlockOnDone {}
    unsafe impl aya::Pod for super::Current {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_that_ends_restores_the_outer_one_and_leaves_no_outer() {
        let mut current = Current::default();
        current.enter(0x10, 1, 7, 0, Some(5));
        current.enter(0x20, 2, 8, 0, Some(6));
        current.leave(Some(9));
        assert_eq!((current.poll.header, current.poll.task_id), (0x10, 7));
        assert_eq!(current.outer, ThreadPoll::default());
        current.leave(Some(10));
        assert_eq!(current.poll, ThreadPoll::default());
    }
}
