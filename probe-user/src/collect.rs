//! Collect: drain the ring buffer as it fills (tokio `AsyncFd`), decode records into
//! [`TaskEvent`]s, and feed them to the [`TaskModel`] in timestamp order.

use std::future::Future;

use aya::maps::{MapData, RingBuf};
use probe_common::{EVENT_SIZE, Event};
use tokio::io::{Interest, unix::AsyncFd};

use crate::{
    model::TaskEvent,
    session::{Observer, Session},
};

/// How often `on_batch` runs when no events come (a hung program sends none): live views and
/// watchdogs still need to look.
const TICK: std::time::Duration = std::time::Duration::from_millis(100);

pub struct Collector {
    ring: AsyncFd<RingBuf<MapData>>,
    batch: Vec<TaskEvent>,
    /// Records too short or of an unknown kind (an ABI mismatch would show up here).
    pub undecodable: u64,
    /// Print every event to stderr (`ASYNC_INSPECT_TRACE_EVENTS=1`): for debugging the probes.
    trace: bool,
}

impl Collector {
    pub fn new(ring: RingBuf<MapData>) -> std::io::Result<Self> {
        Ok(Self {
            // SAFETY: the ring buffer owns its map descriptor for as long as the AsyncFd owns it.
            ring: unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }?,
            batch: Vec::with_capacity(4096),
            undecodable: 0,
            trace: std::env::var_os("ASYNC_INSPECT_TRACE_EVENTS").is_some(),
        })
    }

    /// Feeds events to `session` until `stop` resolves, then drains what is left.
    /// `on_batch` runs after each batch, and every [`TICK`] without one (reading await points,
    /// live views, progress display).
    pub async fn run<O: Observer>(
        &mut self,
        session: &mut Session<O>,
        stop: impl Future<Output = ()>,
        mut on_batch: impl FnMut(&mut Session<O>),
    ) -> std::io::Result<()> {
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = &mut stop => break,
                guard = self.ring.readable_mut() => {
                    let mut guard = guard?;
                    drain(guard.get_inner_mut(), &mut self.batch, &mut self.undecodable);
                    guard.clear_ready();
                    self.apply(session);
                    on_batch(session);
                    tick.reset();
                }
                _ = tick.tick() => on_batch(session),
            }
        }
        drain(self.ring.get_mut(), &mut self.batch, &mut self.undecodable);
        self.apply(session);
        Ok(())
    }

    fn apply<O: Observer>(&mut self, session: &mut Session<O>) {
        // Records are reserved in order per CPU, not globally: sort what arrived together.
        self.batch.sort_by_key(|event| event.ts_ns);
        for event in self.batch.drain(..) {
            if self.trace {
                eprintln!("event {event:?}");
            }
            session.event(&event);
        }
    }
}

fn drain(ring: &mut RingBuf<MapData>, batch: &mut Vec<TaskEvent>, undecodable: &mut u64) {
    while let Some(item) = ring.next() {
        match decode(&item) {
            Some(event) => batch.push(event),
            None => *undecodable += 1,
        }
    }
}

fn decode(bytes: &[u8]) -> Option<TaskEvent> {
    if bytes.len() < EVENT_SIZE {
        return None;
    }
    // SAFETY: Event is plain repr(C) integers and the buffer holds at least EVENT_SIZE bytes.
    let raw: Event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    TaskEvent::from_raw(&raw)
}

/// CLOCK_MONOTONIC now, in the eBPF side's `bpf_ktime_get_ns` time base.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}
