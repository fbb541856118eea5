//! Collect: drain the per-CPU event rings as they fill (tokio `AsyncFd` over an epoll of
//! them), decode records into [`TaskEvent`]s, and feed them to the [`TaskModel`] in timestamp
//! order.
//!
//! [`TaskModel`]: crate::model::TaskModel

use std::{
    future::Future,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use aya::maps::{MapData, RingBuf};
use probe_common::{EVENT_SIZE, Event};
use tokio::io::{Interest, unix::AsyncFd};

use crate::{
    model::TaskEvent,
    session::{Observer, Session},
};

/// How often the rings are drained and `on_batch` runs. The kernel side does not wake the
/// collector for each event (only when a ring is a quarter full): at a million events a second,
/// a wake-up per event would cost more than the events.
pub const TICK: std::time::Duration = std::time::Duration::from_millis(20);
/// The same while events are rare (an overhead budget's gap, when only the per-poll probes
/// send many): each wake-up of an idle collector costs tens of µs in a VM, which at 50 a second
/// was most of what a gap cost.
pub const QUIET_TICK: std::time::Duration = std::time::Duration::from_millis(200);

/// How much later than its timestamp a program may put its event in its CPU's ring. Each ring
/// is drained in turn, so an event of one CPU can miss this drain while a later one of another
/// CPU makes it: events this close to the drain wait for the next one, where whatever came
/// before them has arrived. A program takes microseconds, unless preempted in between.
const SETTLE_NS: u64 = 2_000_000;

pub struct Collector {
    rings: Vec<RingBuf<MapData>>,
    /// Readable when any ring is.
    ready: AsyncFd<OwnedFd>,
    /// Events in time order; those of the last [`SETTLE_NS`] wait here for the next drain.
    batch: Vec<TaskEvent>,
    /// Records too short or of an unknown kind (an ABI mismatch would show up here).
    pub undecodable: u64,
    /// Print every event to stderr (`ASYNC_INSPECT_TRACE_EVENTS=1`): for debugging the probes.
    trace: bool,
}

impl Collector {
    pub fn new(rings: Vec<RingBuf<MapData>>) -> std::io::Result<Self> {
        Ok(Self {
            // SAFETY: the epoll descriptor is owned by the AsyncFd for as long as it is registered.
            ready: unsafe {
                AsyncFd::register_with_interest(epoll_of(&rings)?, Interest::READABLE)
            }?,
            rings,
            batch: Vec::with_capacity(4096),
            undecodable: 0,
            trace: std::env::var_os("ASYNC_INSPECT_TRACE_EVENTS").is_some(),
        })
    }

    /// Feeds events to `session` until `stop` resolves, then drains what is left.
    /// `on_batch` runs after each batch (reading await points, live views, progress display)
    /// and says how long the next may wait: [`TICK`], or [`QUIET_TICK`] when events are rare.
    /// A ring a quarter full does not wait.
    pub async fn run<O: Observer>(
        &mut self,
        session: &mut Session<O>,
        stop: impl Future<Output = ()>,
        mut on_batch: impl FnMut(&mut Session<O>) -> std::time::Duration,
    ) -> std::io::Result<()> {
        tokio::pin!(stop);
        let mut wait = TICK;
        loop {
            tokio::select! {
                biased;
                () = &mut stop => break,
                guard = self.ready.readable() => {
                    let mut guard = guard?;
                    guard.clear_ready();
                }
                () = tokio::time::sleep(wait) => {}
            }
            let settled = monotonic_ns().saturating_sub(SETTLE_NS);
            self.drain();
            self.apply(session, settled);
            wait = on_batch(session);
        }
        self.drain();
        self.apply(session, u64::MAX);
        Ok(())
    }

    fn drain(&mut self) {
        for ring in &mut self.rings {
            while let Some(item) = ring.next() {
                match decode(&item) {
                    Some(event) => self.batch.push(event),
                    None => self.undecodable += 1,
                }
            }
        }
        in_time_order(&mut self.batch);
    }

    /// Feeds `session` the events stamped before `settled`, in time order.
    fn apply<O: Observer>(&mut self, session: &mut Session<O>, settled: u64) {
        let ready = self.batch.partition_point(|event| event.ts_ns < settled);
        for event in self.batch.drain(..ready) {
            if self.trace {
                eprintln!("event {event:?}");
            }
            session.event(&event);
        }
        session.settle(settled);
    }
}

/// An epoll instance watching every ring: its descriptor is readable when one of them is.
fn epoll_of(rings: &[RingBuf<MapData>]) -> std::io::Result<OwnedFd> {
    // SAFETY: plain system calls; the new descriptor is owned at once.
    unsafe {
        let fd = libc::epoll_create1(libc::EPOLL_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let epoll = OwnedFd::from_raw_fd(fd);
        for ring in rings {
            let mut interest = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: 0,
            };
            let added = libc::epoll_ctl(
                epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                ring.as_raw_fd(),
                &mut interest,
            );
            if added < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(epoll)
    }
}

/// Sorts the batch by timestamp, ties in arrival order. It comes as runs already in about that
/// order: the events kept from the last drain, then each ring's (a program preempted between
/// its timestamp and its record comes a little late), which a stable sort merges in about
/// O(n log runs).
fn in_time_order(batch: &mut [TaskEvent]) {
    batch.sort_by_key(|event| event.ts_ns);
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
        let mut batch: Vec<TaskEvent> = [(10, 0), (30, 1), (20, 2), (30, 3), (5, 4)]
            .into_iter()
            .map(|(ts, site)| event(ts, site))
            .collect();
        in_time_order(&mut batch);
        let order: Vec<u32> = batch.iter().map(|event| event.site).collect();
        assert_eq!(order, [4, 0, 2, 1, 3]);
    }
}
