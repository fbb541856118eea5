//! async-inspect's kernel side. Each program is attached once as a `uprobe.multi` link over every
//! site of its kind in the target (kernel >= 6.6); the attach cookie's low 32 bits index the probe
//! plan's site table and, for the generic [`task_op`] program, the high 32 bits carry the
//! [`EventKind`] to emit; on [`poll_start`]/[`poll_end`] sites they say whether the site polls a
//! tokio task or a future given to `block_on` ([`cookie::BLOCK_ON`]).
//!
//! Two tracepoints, `sched:sched_switch` and `sched:sched_wakeup`, split each poll of the
//! target's threads into time on CPU, blocked in the kernel and preempted, sent in its poll end.
//! A timer sample of each CPU ([`sample_running`]) notes where a thread inside a poll runs.
//!
//! Nothing about tokio's layout is hard-coded here: the offsets come in [`CONFIG`], written by the
//! user side before the programs are loaded.
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    btf_maps::{ArrayOfMaps, RingBuf},
    helpers::{
        bpf_get_attach_cookie, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user,
    },
    macros::{btf_map, map, perf_event, tracepoint, uprobe, uretprobe},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::{PerfEventContext, ProbeContext, RetProbeContext, TracePointContext},
};
use probe_common::{
    BlockOnDone, Config, Current, Event, EventKind, HEADER_WORDS, HIT_SLOTS, MODE_COUNT_ONLY,
    cookie, flags, register, state,
};

/// Each program twice: as a `uprobe.multi` program (one link over every point, Linux >= 6.6) and
/// as a plain one, attached as one perf-event uprobe per point on older kernels (cookies need
/// 5.15). Both run the same body.
macro_rules! programs {
    ($multi:ident, $single:ident, $attribute:ident, $context:ty, $body:ident) => {
        #[$attribute(multi)]
        pub fn $multi(ctx: $context) -> u32 {
            $body(ctx)
        }

        #[$attribute]
        pub fn $single(ctx: $context) -> u32 {
            $body(ctx)
        }
    };
}

/// Written by the user side at load time (`EbpfLoader::set_global`).
#[unsafe(no_mangle)]
static CONFIG: Config = Config {
    header_state: 0,
    header_vtable: 0,
    vtable_id_offset: 0,
    task_id_offset: 0,
    ready: 0,
    mode: 0,
    wake_every: 0,
    task_cpu_time: 0,
};

/// The event stream: a ring buffer per CPU (index: the CPU's id), created and put here by the
/// user side, which sizes this array to the machine's possible CPUs at load time. One ring
/// shared by every CPU costs each event a contended lock: with two workers polling, reserving
/// room took three times what it takes uncontended, half of what the programs cost.
#[btf_map]
static EVENTS: ArrayOfMaps<RingBuf<Event, { probe_common::RING_TEMPLATE_BYTES }>, 1> =
    ArrayOfMaps::new();

/// Events that found the ring buffer full, per CPU.
#[map]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// 1 once a timer sample ([`sample_running`]) has run: poll ends then say how many fell in them.
#[map]
static SAMPLER: Array<u64> = Array::with_max_entries(1, 0);

/// Written by the user side while it runs: slot 0 holds a bit per hit slot (cookie) whose
/// probes are being detached. Detaching takes a few hundred ms, during which they still fire;
/// they emit nothing then, or they would fill the ring buffer while the collector waits.
#[map]
static CONTROL: Array<u64> = Array::with_max_entries(1, 0);

/// Events submitted on each CPU, for waking the collector every [`Config::wake_every`].
#[map]
static SUBMITTED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Hits per kind of site (the cookie's slot), per CPU: what the probe costs is mostly how often
/// its sites are hit, so the user side prices each kind by these counts.
#[map]
static HITS: PerCpuArray<u64> = PerCpuArray::with_max_entries(HIT_SLOTS, 0);

/// The task being polled on each thread (key: thread id; header 0 when none), so that wakes,
/// spawns and panics can be attributed to the task that caused them, and poll ends to the task
/// that started. LRU, so the slots of exited threads are recycled.
#[map]
static CURRENT: LruHashMap<u32, Current> = LruHashMap::with_max_entries(16384, 0);

/// Where the task id sits in the tasks of each vtable (key: the vtable's runtime address), as
/// read from the vtable's `id_offset` the first time a program met it: a vtable lives on a page
/// of its own, and reading it costs a program more than this lookup (used when the task types
/// disagree, see [`Config::task_id_offset`]). LRU, so a header that was not a task cannot fill it.
#[map]
static ID_OFFSETS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(4096, 0);

/// How each `block_on` poll site's future says it returned `Ready` (key: site index), written
/// by the user side before it attaches.
#[map]
static BLOCK_ON_DONE: HashMap<u32, BlockOnDone> = HashMap::with_max_entries(1024, 0);

#[inline(always)]
fn config() -> Config {
    // SAFETY: CONFIG is a plain static; the volatile read keeps the compiler from folding the
    // zero initialiser that the loader overwrites.
    unsafe { core::ptr::read_volatile(&CONFIG) }
}

/// Counts this hit and says whether to go on: not before the user side is ready, nor in
/// count-only mode, nor while the user side pauses the events ([`CONTROL`]).
#[inline(always)]
fn counted(ctx: &impl EbpfContext, config: &Config) -> bool {
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let slot = cookie::slot(cookie);
    if let Some(count) = HITS.get_ptr_mut(u32::from(slot)) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *count += 1 };
    }
    let paused = CONTROL
        .get(0)
        .is_some_and(|paused| (*paused >> (slot & 63)) & 1 != 0);
    config.ready != 0 && config.mode != MODE_COUNT_ONLY && !paused
}

/// The task argument, from the register the cookie names: a probe placed past the function's
/// first instruction (to avoid single-stepping it) finds the argument where the code moved it.
#[inline(always)]
fn task_argument(ctx: &ProbeContext) -> u64 {
    use aya_ebpf::bindings::pt_regs;
    use core::mem::offset_of;
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let register = cookie::register(cookie);
    if register == register::RDI {
        // Most sites: a direct load from the context, at a constant offset the verifier
        // accepts, costs a fraction of the helper call below.
        // SAFETY: the context of a uprobe program is the trapped thread's pt_regs.
        return unsafe { (*ctx.regs).rdi };
    }
    let offset = match register {
        register::RSI => offset_of!(pt_regs, rsi),
        register::RDX => offset_of!(pt_regs, rdx),
        register::RCX => offset_of!(pt_regs, rcx),
        register::R8 => offset_of!(pt_regs, r8),
        register::R9 => offset_of!(pt_regs, r9),
        register::RAX => offset_of!(pt_regs, rax),
        register::RBX => offset_of!(pt_regs, rbx),
        register::RBP => offset_of!(pt_regs, rbp),
        register::R12 => offset_of!(pt_regs, r12),
        register::R13 => offset_of!(pt_regs, r13),
        register::R14 => offset_of!(pt_regs, r14),
        register::R15 => offset_of!(pt_regs, r15),
        register::R10 => offset_of!(pt_regs, r10),
        register::R11 => offset_of!(pt_regs, r11),
        _ => offset_of!(pt_regs, rdi),
    };
    // The verifier allows only constant offsets in direct context loads, and the compiler
    // merges the branches into one load at a variable offset: read through the helper.
    // SAFETY: the offset is a field of the trapped thread's pt_regs.
    unsafe { bpf_probe_read_kernel((ctx.regs as *const u8).add(offset) as *const u64) }.unwrap_or(0)
}

/// The current thread's CPU time by its task clock (`None`: not measured): see
/// [`Config::task_cpu_time`].
#[inline(always)]
fn thread_cpu_ns(config: &Config) -> Option<u64> {
    if config.task_cpu_time == 0 {
        return None;
    }
    // SAFETY: the helper returns the current task_struct; the field's offset is the kernel's
    // own (BTF), and the read faults safely.
    unsafe {
        let task = bpf_get_current_task();
        bpf_probe_read_kernel((task + config.task_cpu_time) as *const u64).ok()
    }
}

#[inline(always)]
fn read_u64(address: u64) -> Option<u64> {
    // SAFETY: bpf_probe_read_user faults safely on bad addresses.
    unsafe { bpf_probe_read_user(address as *const u64).ok() }
}

/// A task's vtable and tokio task id (0: unknown; tokio's ids start at 1).
#[derive(Clone, Copy)]
struct Identity {
    vtable: u64,
    task_id: u64,
}

/// What a `block_on` future has: nothing at its address is a task header.
const NO_IDENTITY: Identity = Identity {
    vtable: 0,
    task_id: 0,
};

/// What one read of a task's first [`HEADER_WORDS`] gives: its state word and its identity.
#[derive(Clone, Copy)]
struct TaskWords {
    state: u64,
    identity: Identity,
}

/// A task's state word, vtable and tokio task id, from one read of the target's memory. The
/// id's offset is the one every task type shares ([`Config::task_id_offset`]), or else its
/// vtable's, from [`ID_OFFSETS`] (read from the vtable the first time it is met).
#[inline(always)]
fn read_task(config: &Config, header: u64) -> TaskWords {
    // SAFETY: bpf_probe_read_user faults safely on bad addresses.
    let Ok(words) = (unsafe { bpf_probe_read_user(header as *const [u64; HEADER_WORDS]) }) else {
        return TaskWords {
            state: 0,
            identity: NO_IDENTITY,
        };
    };
    let word = |offset: u64| {
        // Masked after a volatile read: the compiler would otherwise drop the mask where a
        // caller's check already bounds the offset, and older verifiers (6.1) lose that bound
        // on the way to the stack access.
        // SAFETY: a read of a local.
        let offset = unsafe { core::ptr::read_volatile(&offset) };
        words[(offset / 8) as usize & (HEADER_WORDS - 1)]
    };
    let vtable = word(config.header_vtable);
    let id_offset = if config.task_id_offset != 0 {
        config.task_id_offset
    } else {
        id_offset(config, vtable)
    };
    let task_id = if id_offset != 0 && id_offset < (HEADER_WORDS * 8) as u64 {
        word(id_offset)
    } else if id_offset != 0 {
        read_u64(header + id_offset).unwrap_or(0)
    } else {
        0
    };
    TaskWords {
        state: word(config.header_state),
        identity: Identity { vtable, task_id },
    }
}

/// Where the tasks of `vtable` keep their id (0: unknown), cached in [`ID_OFFSETS`].
#[inline(always)]
fn id_offset(config: &Config, vtable: u64) -> u64 {
    // SAFETY: map values stay valid while the program runs.
    if let Some(offset) = unsafe { ID_OFFSETS.get(&vtable) } {
        return *offset;
    }
    // The id lives inside the task cell; anything far away is not a tokio task.
    let Some(offset) =
        read_u64(vtable + config.vtable_id_offset).filter(|offset| *offset < 1 << 20)
    else {
        return 0;
    };
    let _ = ID_OFFSETS.insert(&vtable, &offset, 0);
    offset
}

#[inline(always)]
fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

#[inline(always)]
fn emit(
    ctx: &impl EbpfContext,
    config: &Config,
    kind: EventKind,
    (header, identity): (u64, Identity),
    value: u64,
    event_flags: u8,
    other: Running,
) {
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    // SAFETY: a helper without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(mut entry) = EVENTS.get(cpu).and_then(|ring| ring.reserve(0)) else {
        if let Some(count) = DROPS.get_ptr_mut(0) {
            // SAFETY: per-CPU slot, no concurrent writer on this CPU.
            unsafe { *count += 1 };
        }
        return;
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    entry.write(Event {
        ts_ns,
        header,
        task_id: identity.task_id,
        vtable: identity.vtable,
        other_header: other.header,
        other_task_id: other.task_id,
        value,
        site: cookie::site(cookie),
        tid: pid_tgid as u32,
        pid: (pid_tgid >> 32) as u32,
        kind: kind as u8,
        flags: event_flags
            | if identity.task_id == 0 {
                flags::NO_TASK_ID
            } else {
                0
            },
        _pad: [0; 2],
    });
    // Wake the collector only now and then, in case of a burst; it drains on a timer.
    let wake = match SUBMITTED.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        Some(count) => unsafe {
            *count += 1;
            if *count >= config.wake_every {
                *count = 0;
                BPF_RB_FORCE_WAKEUP
            } else {
                BPF_RB_NO_WAKEUP
            }
        },
        None => BPF_RB_NO_WAKEUP,
    };
    entry.submit(u64::from(wake));
}

/// The task being polled on a thread; all zero when none. Plain scalars (no Option of a
/// struct): the verifier rejects reads of the uninitialised bytes of a `None`.
#[derive(Clone, Copy)]
struct Running {
    header: u64,
    task_id: u64,
    flags: u64,
}

const NOT_RUNNING: Running = Running {
    header: 0,
    task_id: 0,
    flags: 0,
};

#[inline(always)]
fn running(tid: u32) -> Running {
    match CURRENT.get_ptr(&tid) {
        // SAFETY: map values stay valid while the program runs; only this thread writes its
        // entry (and task_op/panic_start, on this same thread).
        Some(entry) => unsafe { running_in(entry) },
        None => NOT_RUNNING,
    }
}

/// The task being polled according to a thread's entry in CURRENT.
///
/// # Safety
/// `entry` comes from a lookup in CURRENT in this run of the program.
#[inline(always)]
unsafe fn running_in(entry: *const Current) -> Running {
    // SAFETY: the caller's.
    unsafe {
        Running {
            header: (*entry).poll.header,
            task_id: (*entry).poll.task_id,
            flags: (*entry).poll.flags,
        }
    }
}

/// This thread's slot, created on first use. Hash-map updates take a bucket lock and fail with
/// EBUSY when another program on this CPU was preempted holding it, so the slot is written in
/// place through the lookup pointer (lock-free) and inserted only once per thread.
#[inline(always)]
fn slot(tid: u32) -> Option<*mut Current> {
    if let Some(entry) = CURRENT.get_ptr_mut(&tid) {
        return Some(entry);
    }
    let empty = Current::default();
    let _ = CURRENT.insert(&tid, &empty, 0);
    CURRENT.get_ptr_mut(&tid)
}

/// Whether this site polls a `block_on` future rather than a tokio task.
#[inline(always)]
fn block_on_site(ctx: &impl EbpfContext) -> bool {
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    cookie::kind(cookie) == cookie::BLOCK_ON
}

// `tokio::runtime::task::raw::poll::<T, S>(ptr: NonNull<Header>)`, every instance; and the poll
// function of each future given to `block_on` (`self: Pin<&mut F>`, the future's address).
programs!(
    poll_start,
    poll_start_single,
    uprobe,
    ProbeContext,
    poll_start_body
);

#[inline(always)]
fn poll_start_body(ctx: ProbeContext) -> u32 {
    let config = config();
    if !counted(&ctx, &config) {
        return 0;
    }
    let header = task_argument(&ctx);
    if header == 0 {
        return 0;
    }
    let Some(entry) = slot(current_tid()) else {
        return 0;
    };
    // SAFETY: see slot().
    let outer = unsafe { running_in(entry) };
    let block_on = block_on_site(&ctx);
    if block_on && outer.header != 0 {
        // Polled inside a task's poll: a task's own future, or a block_on nested in a task
        // (spawn_blocking, block_in_place), which that task's entry covers. Its return is left
        // out too (poll_end).
        return 0;
    }
    let (identity, state, entry_flags) = if block_on {
        (NO_IDENTITY, 0, flags::BLOCK_ON)
    } else {
        let task = read_task(&config, header);
        (task.identity, task.state, 0)
    };
    // SAFETY: see slot().
    unsafe {
        (*entry).enter(
            header,
            identity.vtable,
            identity.task_id,
            u64::from(entry_flags),
            thread_cpu_ns(&config),
        )
    };
    emit(
        &ctx,
        &config,
        EventKind::PollStart,
        (header, identity),
        state,
        entry_flags,
        outer,
    );
    0
}

/// [`state::COMPLETE`] when the `block_on` future at `future` has returned `Ready` (its state
/// machine's discriminant reads "returned", as the site's entry in `BLOCK_ON_DONE` says), else 0.
#[inline(always)]
fn block_on_done(site: u32, future: u64) -> u64 {
    // SAFETY: map values stay valid while the program runs; the user side writes them once,
    // before attaching.
    let Some(done) = (unsafe { BLOCK_ON_DONE.get(&site) }) else {
        return 0;
    };
    let at = future + done.offset;
    // SAFETY: bpf_probe_read_user faults safely on bad addresses.
    let value = unsafe {
        match done.size {
            1 => bpf_probe_read_user(at as *const u8).ok().map(u64::from),
            2 => bpf_probe_read_user(at as *const u16).ok().map(u64::from),
            4 => bpf_probe_read_user(at as *const u32).ok().map(u64::from),
            _ => read_u64(at),
        }
    };
    if value == Some(done.returned) {
        state::COMPLETE
    } else {
        0
    }
}

// The return of every `raw::poll` instance: reports the state word the poll left behind.
programs!(
    poll_end,
    poll_end_single,
    uretprobe,
    RetProbeContext,
    poll_end_body
);

#[inline(always)]
fn poll_end_body(ctx: RetProbeContext) -> u32 {
    let config = config();
    if !counted(&ctx, &config) {
        return 0;
    }
    let tid = current_tid();
    let Some(slot) = CURRENT.get_ptr_mut(&tid) else {
        return 0;
    };
    // SAFETY: see slot().
    let entry = unsafe { *slot };
    if entry.poll.header == 0 {
        // Attached while this poll was already running: its start was never seen.
        return 0;
    }
    let mut event_flags = entry.poll.flags as u8;
    if entry.off_since != 0 {
        // Running now, yet its return to a CPU was not seen.
        event_flags |= flags::OFF_CPU_UNKNOWN;
        // SAFETY: see slot().
        unsafe { (*slot).off_since = 0 };
    }
    let block_on = block_on_site(&ctx);
    if block_on != (event_flags & flags::BLOCK_ON != 0) {
        // A block_on future polled inside a task, whose start was left out.
        return 0;
    }
    let state = if block_on {
        let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
        block_on_done(cookie::site(cookie), entry.poll.header)
    } else if event_flags & flags::FREED_DURING_POLL != 0 {
        0
    } else {
        read_u64(entry.poll.header + config.header_state).unwrap_or(0)
    };
    // SAFETY: see slot().
    let (off, cpu, measured) = unsafe { (*slot).leave(thread_cpu_ns(&config)) };
    // The identity read at the poll's start: the header may be freed memory now
    // (FREED_DURING_POLL).
    let identity = Identity {
        vtable: entry.poll.vtable,
        task_id: entry.poll.task_id,
    };
    emit(
        &ctx,
        &config,
        EventKind::PollEnd,
        (entry.poll.header, identity),
        state,
        // Set at the start where the clock was read then: only where it was at the end too.
        event_flags & !flags::CPU_TIME | cpu_flags(measured),
        poll_times(off, cpu),
    );
    0
}

// The return of a scheduler's spawn function (`multi_thread::Handle::bind_new_task::<T>`,
// `current_thread::Handle::spawn::<T>`), whose `JoinHandle` is the new task's header pointer.
programs!(
    spawn_return,
    spawn_return_single,
    uretprobe,
    RetProbeContext,
    spawn_return_body
);

#[inline(always)]
fn spawn_return_body(ctx: RetProbeContext) -> u32 {
    let config = config();
    if !counted(&ctx, &config) {
        return 0;
    }
    let header: u64 = ctx.ret();
    if header == 0 {
        return 0;
    }
    let parent = running(current_tid());
    let identity = read_task(&config, header).identity;
    emit(
        &ctx,
        &config,
        EventKind::Spawn,
        (header, identity),
        0,
        0,
        parent,
    );
    0
}

// Functions whose first argument is a task header: the wake functions, `raw::shutdown` and
// `raw::dealloc`; and `State::transition_to_complete`, whose `&State` points `header_state`
// bytes into the header. The cookie says which [`EventKind`] this site reports.
programs!(task_op, task_op_single, uprobe, ProbeContext, task_op_body);

#[inline(always)]
fn task_op_body(ctx: ProbeContext) -> u32 {
    let config = config();
    if !counted(&ctx, &config) {
        return 0;
    }
    let argument = task_argument(&ctx);
    if argument == 0 {
        return 0;
    }
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let Some(kind) = EventKind::from_u8(cookie::kind(cookie)) else {
        return 0;
    };
    let tid = current_tid();
    let polled = running(tid);
    if kind == EventKind::Complete {
        let header = argument - config.header_state;
        let task = read_task(&config, header);
        let panicked = if polled.header == header {
            polled.flags as u8 & flags::PANICKED
        } else {
            0
        };
        emit(
            &ctx,
            &config,
            kind,
            (header, task.identity),
            task.state,
            panicked,
            polled,
        );
        return 0;
    }
    let header = argument;
    if kind == EventKind::Dealloc
        && polled.header == header
        && let Some(entry) = CURRENT.get_ptr_mut(&tid)
    {
        // SAFETY: see slot().
        unsafe { (*entry).poll.flags |= u64::from(flags::FREED_DURING_POLL) };
    }
    let identity = read_task(&config, header).identity;
    emit(&ctx, &config, kind, (header, identity), 0, 0, polled);
    0
}

// `rust_panic`: a panic is unwinding on this thread; if a task is being polled, its poll end
// carries [`flags::PANICKED`]. tokio catches a task's panic inside `raw::poll`, but not a
// `block_on` future's: that one unwinds out of `block_on`, past its poll's return probe, so
// its poll ends here, panicked.
programs!(
    panic_start,
    panic_start_single,
    uprobe,
    ProbeContext,
    panic_start_body
);

#[inline(always)]
fn panic_start_body(ctx: ProbeContext) -> u32 {
    let config = config();
    if !counted(&ctx, &config) {
        return 0;
    }
    let tid = current_tid();
    let Some(entry) = CURRENT.get_ptr_mut(&tid) else {
        return 0;
    };
    // SAFETY: see slot().
    let polled = unsafe { (*entry).poll };
    if polled.header == 0 {
        return 0;
    }
    if polled.flags & u64::from(flags::BLOCK_ON) == 0 {
        // SAFETY: see slot().
        unsafe { (*entry).poll.flags |= u64::from(flags::PANICKED) };
        return 0;
    }
    // SAFETY: see slot(). Restores the poll this one was nested in, as poll_end does.
    let (off, cpu, measured) = unsafe { (*entry).leave(thread_cpu_ns(&config)) };
    emit(
        &ctx,
        &config,
        EventKind::PollEnd,
        (polled.header, NO_IDENTITY),
        state::COMPLETE,
        flags::BLOCK_ON | flags::PANICKED | cpu_flags(measured),
        poll_times(off, cpu),
    );
    0
}

/// A poll end's flags for its CPU time (`poll_cpu`): whether it was measured (`measured`, as
/// `leave` gives it), and whether the timer samples it counts were running.
#[inline(always)]
fn cpu_flags(measured: u8) -> u8 {
    match (measured, SAMPLER.get(0)) {
        (0, _) => 0,
        (_, Some(&1)) => flags::CPU_TIME | flags::SAMPLED,
        _ => flags::CPU_TIME,
    }
}

/// A poll end's `other_*` fields, where other events name the running task (a poll end has
/// none): its off-CPU time ([`probe_common::off_cpu::pack`]) and its CPU time
/// ([`flags::CPU_TIME`]).
#[inline(always)]
fn poll_times(off_cpu: u64, cpu: u64) -> Running {
    Running {
        header: off_cpu,
        task_id: cpu,
        flags: 0,
    }
}

// `sched:sched_switch`, on every context switch of the machine: splits the polls of the
// target's threads (those with an entry in CURRENT) into on-CPU, blocked and preempted time,
// so that a worker preempted on a busy machine is not taken for a blocking poll.
#[tracepoint]
pub fn sched_switch(ctx: TracePointContext) -> u32 {
    // Offsets from events/sched/sched_switch/format, stable since Linux 4.14.
    const PREV_PID: usize = 24;
    const PREV_STATE: usize = 32;
    const NEXT_PID: usize = 56;
    let config = config();
    if config.ready == 0 || config.mode == MODE_COUNT_ONLY {
        return 0;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: the offsets are within the tracepoint's record.
    let (prev, state, next) = unsafe {
        (
            ctx.read_at::<i32>(PREV_PID).unwrap_or(0) as u32,
            ctx.read_at::<i64>(PREV_STATE).unwrap_or(0) as u64,
            ctx.read_at::<i32>(NEXT_PID).unwrap_or(0) as u32,
        )
    };
    if let Some(entry) = CURRENT.get_ptr_mut(&prev) {
        // SAFETY: see slot(); the thread itself is not running while it is switched.
        unsafe { switched_out(entry, now, state) };
    }
    if let Some(entry) = CURRENT.get_ptr_mut(&next) {
        // SAFETY: as above.
        unsafe { switched_in(entry, now) };
    }
    0
}

// `sched:sched_wakeup`: a thread that blocked inside a poll is runnable again. From now on it
// waits for a CPU, which counts as preempted, not blocked: on a busy machine that wait can be
// far longer than the sleep itself (a tokio-internal lock held for a microsecond).
#[tracepoint]
pub fn sched_wakeup(ctx: TracePointContext) -> u32 {
    // Offset from events/sched/sched_wakeup/format, stable since Linux 4.14.
    const PID: usize = 24;
    let config = config();
    if config.ready == 0 || config.mode == MODE_COUNT_ONLY {
        return 0;
    }
    // SAFETY: the offset is within the tracepoint's record.
    let tid = unsafe { ctx.read_at::<i32>(PID) }.unwrap_or(0) as u32;
    let Some(entry) = CURRENT.get_ptr_mut(&tid) else {
        return 0;
    };
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: see slot(); the woken thread is not running, and its CPU's run-queue lock,
    // held here, orders this before it is switched in.
    unsafe {
        let since = (*entry).off_since;
        if since == 0 || (*entry).off_blocked == 0 {
            return 0;
        }
        (*entry).blocked_total += now.saturating_sub(since);
        (*entry).off_since = now;
        (*entry).off_blocked = 0;
    }
    0
}

/// The thread of `entry` leaves its CPU: if inside a poll, note when and why.
#[inline(always)]
unsafe fn switched_out(entry: *mut Current, now: u64, prev_state: u64) {
    // SAFETY: see sched_switch().
    unsafe {
        if (*entry).poll.header == 0 {
            return;
        }
        if (*entry).off_since != 0 {
            // Its return to a CPU was not seen.
            (*entry).poll.flags |= u64::from(flags::OFF_CPU_UNKNOWN);
        }
        (*entry).off_since = now;
        // The low byte holds the sleep states (S, D, ...); a runnable thread reports none,
        // with the preemption bit (TASK_REPORT_MAX, 0x100) set when preempted.
        let blocked = prev_state & 0xff != 0;
        (*entry).off_blocked = u64::from(blocked);
        if blocked {
            note_user_registers(entry, now);
        }
    }
}

/// Where the switched-out thread's user code is: the registers its kernel entry saved (the
/// blocking system call's). The tracepoint runs on that thread, before the switch. The user
/// side unwinds the stack from them while the thread stays blocked.
#[inline(always)]
unsafe fn note_user_registers(entry: *mut Current, now: u64) {
    let Some(regs) = user_registers() else {
        return;
    };
    // SAFETY: see slot().
    unsafe {
        (*entry).blocked_ip = regs.rip;
        (*entry).blocked_sp = regs.rsp;
        (*entry).blocked_bp = regs.rbp;
        (*entry).blocked_since = now;
    }
}

/// The current thread's user registers, as its last entry into the kernel (a system call, or
/// the interrupt that runs a tracepoint or a timer sample) saved them.
#[inline(always)]
fn user_registers() -> Option<aya_ebpf::bindings::pt_regs> {
    use aya_ebpf::{
        bindings::pt_regs,
        helpers::{bpf_get_current_task_btf, bpf_task_pt_regs},
    };
    // SAFETY: the helpers take the current task; the registers are read through the helper.
    unsafe {
        let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const pt_regs;
        bpf_probe_read_kernel(regs).ok()
    }
}

// A timer sample of each CPU, every `SAMPLE_PERIOD_NS`: a thread of the target inside a poll
// counts it (which bounds the poll's time on CPU) and notes where its user code is running, so
// that a poll that computes for long is told with the line computing. Other threads return at
// once.
#[perf_event]
pub fn sample_running(_ctx: PerfEventContext) -> u32 {
    let config = config();
    if config.ready == 0 || config.mode == MODE_COUNT_ONLY {
        return 0;
    }
    let Some(entry) = CURRENT.get_ptr_mut(&current_tid()) else {
        return 0;
    };
    // SAFETY: see slot(); the sample interrupts the thread itself.
    unsafe {
        if (*entry).poll.header == 0 {
            return 0;
        }
    }
    if let Some(running) = SAMPLER.get_ptr_mut(0) {
        // SAFETY: one word, written alike from every CPU.
        unsafe { *running = 1 };
    }
    // SAFETY: as above. Counted whether or not the registers can be read: the count bounds
    // the poll's time on CPU, and a sample missing from it would lower the bound.
    unsafe { (*entry).samples += 1 };
    let Some(regs) = user_registers() else {
        return 0;
    };
    // SAFETY: as above.
    unsafe {
        (*entry).sampled_ip = regs.rip;
        (*entry).sampled_sp = regs.rsp;
        (*entry).sampled_bp = regs.rbp;
        (*entry).sampled_at = bpf_ktime_get_ns();
    }
    0
}

/// The thread of `entry` is back on a CPU: count the time it was off, by why it left.
#[inline(always)]
unsafe fn switched_in(entry: *mut Current, now: u64) {
    // SAFETY: see sched_switch().
    unsafe {
        let since = (*entry).off_since;
        if since == 0 {
            if (*entry).poll.header != 0 {
                // It started the poll on a CPU, so its leaving was not seen.
                (*entry).poll.flags |= u64::from(flags::OFF_CPU_UNKNOWN);
            }
            return;
        }
        (*entry).off_since = 0;
        let off = now.saturating_sub(since);
        if (*entry).off_blocked != 0 {
            (*entry).blocked_total += off;
        } else {
            (*entry).preempted_total += off;
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
