//! Timers on an await chain: what bounds a wait however long the awaited thing takes.

use super::{Bound, Frame, Walker, intern};
use crate::resolve::futures::{State, TypeInfo, TypeKind};

impl Walker<'_> {
    /// `tokio::time::timeout(d, f)`: a frame that says when it times out, then on into `f`.
    pub(super) fn timeout(&self, address: u64, info: &TypeInfo) -> Option<(Frame, (u64, usize))> {
        if !info.name.starts_with("tokio::time::timeout::Timeout<") {
            return None;
        }
        let value = info.member("value")?;
        let deadline_ns = info
            .member("delay")
            .and_then(|delay| self.sleep_deadline(address + delay.offset, delay.ty?));
        let frame = Frame {
            function: intern("tokio::time::Timeout"),
            bound: Some(Box::new(Bound {
                by: intern("tokio::time::Timeout"),
                deadline_ns,
            })),
            ..Frame::default()
        };
        Some((frame, (address + value.offset, value.ty?)))
    }

    /// `Interval::tick` waits at most until the interval's next tick, read from the interval
    /// its `self` points at.
    pub(super) fn interval_bound(
        &self,
        address: u64,
        function: &str,
        state: &State,
    ) -> Option<Bound> {
        let tick = function.starts_with("tokio::time::interval::") && function.ends_with("::tick");
        if !tick || !state.is_suspended() {
            return None;
        }
        let interval = state.locals.iter().find(|local| local.name == "self");
        let deadline_ns = interval.and_then(|local| {
            let at = self.memory.read_u64(address + local.offset)?;
            let TypeKind::Pointer { pointee } = self.types.get(local.ty?).ok()?.kind else {
                return None;
            };
            let (offset, delay) = self.types.offset_of(pointee?, &["delay"])?;
            self.sleep_deadline(at + offset, delay)
        });
        Some(Bound {
            by: intern("tokio::time::Interval"),
            deadline_ns,
        })
    }
}

/// The bound that ends a wait on any of `bounds`: the earliest deadline (an unknown one last).
pub fn earliest(bounds: impl IntoIterator<Item = Box<Bound>>) -> Option<Box<Bound>> {
    bounds
        .into_iter()
        .min_by_key(|bound| bound.deadline_ns.unwrap_or(u64::MAX))
}

/// The bound that ends a wait on all of `bounds`: the latest, None if any is unbounded.
pub fn latest(bounds: impl IntoIterator<Item = Option<Box<Bound>>>) -> Option<Box<Bound>> {
    let all: Option<Vec<Box<Bound>>> = bounds.into_iter().collect();
    all?.into_iter()
        .max_by_key(|bound| bound.deadline_ns.unwrap_or(u64::MAX))
}

/// What ends the wait of a backtrace (outermost first) soonest, with the frame to name for it:
/// the one that holds it if that has a line (a `select!`), else the nearest caller with one
/// (the await of a timeout or a sleep).
pub fn wait_bound(frames: &[Frame]) -> Option<(&Bound, Option<&Frame>)> {
    let (at, bound) = frames
        .iter()
        .enumerate()
        .filter_map(|(index, frame)| Some((index, frame.bound.as_ref()?)))
        .min_by_key(|(_, bound)| bound.deadline_ns.unwrap_or(u64::MAX))?;
    let located = frames[..=at]
        .iter()
        .rev()
        .find(|frame| frame.line.is_some());
    Some((bound, located))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(deadline_ns: Option<u64>) -> Box<Bound> {
        Box::new(Bound {
            by: "tokio::time::Sleep".into(),
            deadline_ns,
        })
    }

    #[test]
    fn the_earliest_timer_ends_the_wait() {
        assert_eq!(
            earliest([bound(None), bound(Some(9)), bound(Some(4))]),
            Some(bound(Some(4)))
        );
        assert_eq!(earliest([bound(None)]), Some(bound(None)));
        assert_eq!(earliest([]), None);
        assert_eq!(
            latest([Some(bound(Some(9))), Some(bound(Some(4)))]),
            Some(bound(Some(9)))
        );
        assert_eq!(latest([Some(bound(Some(9))), None]), None);
    }

    #[test]
    fn a_timeout_is_named_at_the_await_that_awaits_it() {
        let frames = [
            Frame {
                function: "app::main".into(),
                file: Some("/app/src/main.rs".into()),
                line: Some(40),
                ..Frame::default()
            },
            Frame {
                function: "tokio::time::Timeout".into(),
                bound: Some(bound(Some(7))),
                ..Frame::default()
            },
            Frame {
                function: "tokio::sync::oneshot::Receiver<u32>".into(),
                ..Frame::default()
            },
        ];
        let (found, at) = wait_bound(&frames).expect("bounded");
        assert_eq!(found.deadline_ns, Some(7));
        assert_eq!(at.map(|frame| frame.line), Some(Some(40)));
        assert!(wait_bound(&frames[2..]).is_none());
    }
}
