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

/// How often the ring buffer is drained and `on_batch` runs. The kernel side does not wake the
/// collector for each event (only when the buffer is a quarter full): at a million events a
/// second, a wake-up per event would cost more than the events.
const TICK: std::time::Duration = std::time::Duration::from_millis(20);

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
    /// `on_batch` runs after each batch, every [`TICK`] (reading await points, live views,
    /// progress display).
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
                }
                _ = tick.tick() => {
                    drain(self.ring.get_mut(), &mut self.batch, &mut self.undecodable);
                    self.apply(session);
                    on_batch(session);
                }
            }
        }
        drain(self.ring.get_mut(), &mut self.batch, &mut self.undecodable);
        self.apply(session);
        Ok(())
    }

    fn apply<O: Observer>(&mut self, session: &mut Session<O>) {
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
            Some(event) => insert_in_order(batch, event),
            None => *undecodable += 1,
        }
    }
}

/// Appends `event` after every event of the batch that is not later than it. A probe takes its
/// timestamp before it reserves room in the ring buffer, so another CPU's event may come first:
/// those inversions are a few places deep, and moving each event back over them keeps the whole
/// in time order (ties in arrival order) in about one comparison per event.
fn insert_in_order(batch: &mut Vec<TaskEvent>, event: TaskEvent) {
    let mut at = batch.len();
    while at > 0 && batch[at - 1].ts_ns > event.ts_ns {
        at -= 1;
    }
    batch.insert(at, event);
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

#[cfg(test)]
mod tests {
    use probe_common::EventKind;

    use super::*;

    #[test]
    fn events_are_put_in_time_order_keeping_ties_in_arrival_order() {
        let event = |ts_ns, site| TaskEvent {
            ts_ns,
            kind: EventKind::PollStart,
            header: 1,
            task_id: None,
            vtable: 0,
            other_header: 0,
            value: 0,
            site,
            tid: 0,
            flags: 0,
            cpu: None,
        };
        let mut batch = Vec::new();
        for (ts, site) in [(10, 0), (30, 1), (20, 2), (30, 3), (5, 4)] {
            insert_in_order(&mut batch, event(ts, site));
        }
        let order: Vec<u32> = batch.iter().map(|event| event.site).collect();
        assert_eq!(order, [4, 0, 2, 1, 3]);
    }
}
