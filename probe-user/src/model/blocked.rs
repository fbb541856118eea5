//! Where a poll held its thread: the thread's native stack as it went off CPU blocked, or as a
//! timer sample found it computing, symbolized, innermost frame first. What a person reads of
//! it is the call and the frame of the program's own code that made it.

use serde::{Deserialize, Serialize};

use crate::resolve::{is_library_function, is_runtime_function};

/// How a file and line are written (the reports shorten paths).
pub type Place = dyn Fn(Option<&str>, Option<u64>) -> String;

/// One frame of a native stack; an inlined call is a frame of its own.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NativeFrame {
    /// Readable (`inspect_hangs::block_worker`), or the symbol of code without DWARF.
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// A blocked or computing thread's stack, innermost frame first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedAt {
    pub frames: Vec<NativeFrame>,
    /// What the thread was doing (recordings made before computing was sampled say blocked).
    #[serde(default)]
    pub doing: Doing,
}

/// What a poll's thread was doing when its stack was taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Doing {
    /// Off CPU, blocked in the kernel (a system call).
    #[default]
    Blocked,
    /// Running on CPU (a timer sample).
    Computing,
}

impl NativeFrame {
    /// Whether it is code of the program itself, not a library's or C's.
    fn is_own(&self) -> bool {
        self.function
            .as_deref()
            .is_some_and(|function| !is_library_function(function))
    }

    /// `inspect_hangs::block_worker (demo/src/bin/hangs.rs:213)`, the place as `place` writes
    /// a file and line.
    pub fn describe(&self, place: &Place) -> String {
        let function = self.function.as_deref().unwrap_or("?");
        match &self.file {
            Some(file) => format!(
                "{function} ({})",
                place(Some(file), self.line.map(u64::from))
            ),
            None => function.to_owned(),
        }
    }
}

impl BlockedAt {
    /// The innermost frame of the program's own code: the line that made the blocking call.
    pub fn own_frame(&self) -> Option<&NativeFrame> {
        self.frames.iter().find(|frame| frame.is_own())
    }

    /// `std::thread::sleep ← inspect_hangs::block_worker (demo/src/bin/hangs.rs:213)`: the
    /// call the program made and where it made it; the innermost named frames when none of
    /// them is the program's own. Blocked, that is the innermost frame of the program's own
    /// code, which made the blocking call. Computing, the program's frame nearest the
    /// runtime: the async code whose poll computes, the line to move to `spawn_blocking`,
    /// wherever in what it called the sample fell.
    pub fn describe(&self, place: &Place) -> String {
        let own = match self.doing {
            Doing::Blocked => self.frames.iter().position(NativeFrame::is_own),
            Doing::Computing => {
                let runtime = self
                    .frames
                    .iter()
                    .position(|frame| frame.function.as_deref().is_some_and(is_runtime_function));
                self.frames[..runtime.unwrap_or(self.frames.len())]
                    .iter()
                    .rposition(NativeFrame::is_own)
            }
        };
        let named = |frame: &&NativeFrame| frame.function.is_some();
        match own {
            Some(own) => {
                let called = self.frames[..own].iter().rev().find(named);
                let own = self.frames[own].describe(place);
                match called.and_then(|frame| frame.function.as_deref()) {
                    Some(call) => format!("{call} ← {own}"),
                    None => own,
                }
            }
            None => {
                let frames: Vec<String> = self
                    .frames
                    .iter()
                    .filter(named)
                    .take(3)
                    .map(|frame| frame.describe(place))
                    .collect();
                frames.join(" ← ")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(file: Option<&str>, line: Option<u64>) -> String {
        format!("{}:{}", file.unwrap_or("?"), line.unwrap_or(0))
    }

    fn frame(function: &str, at: Option<(&str, u32)>) -> NativeFrame {
        NativeFrame {
            function: Some(function.to_owned()),
            file: at.map(|(file, _)| file.to_owned()),
            line: at.map(|(_, line)| line),
        }
    }

    #[test]
    fn the_blocking_call_is_named_with_the_programs_own_line() {
        let stack = BlockedAt {
            frames: vec![
                frame("clock_nanosleep", None),
                frame(
                    "std::sys::pal::unix::thread::Thread::sleep",
                    Some(("thread.rs", 300)),
                ),
                frame("std::thread::sleep", Some(("mod.rs", 900))),
                frame(
                    "inspect_hangs::block_worker",
                    Some(("src/bin/hangs.rs", 213)),
                ),
                frame(
                    "<core::pin::Pin<P> as core::future::future::Future>::poll",
                    None,
                ),
                frame("tokio::runtime::task::core::Core<T,S>::poll", None),
            ],
            doing: Doing::Blocked,
        };
        assert_eq!(
            stack.describe(&place),
            "std::thread::sleep ← inspect_hangs::block_worker (src/bin/hangs.rs:213)"
        );
        assert_eq!(stack.own_frame().and_then(|frame| frame.line), Some(213));
    }

    #[test]
    fn without_the_programs_own_code_the_innermost_frames_are_named() {
        let stack = BlockedAt {
            frames: vec![
                NativeFrame::default(),
                frame("syscall", None),
                frame(
                    "parking_lot_core::parking_lot::park",
                    Some(("parking_lot.rs", 600)),
                ),
                frame("tokio::runtime::park::Inner::park", None),
                frame("tokio::runtime::park::CachedParkThread::park", None),
            ],
            doing: Doing::Blocked,
        };
        assert_eq!(
            stack.describe(&place),
            "syscall ← parking_lot_core::parking_lot::park (parking_lot.rs:600) ← \
             tokio::runtime::park::Inner::park"
        );
        assert_eq!(stack.own_frame(), None);
    }

    /// Wherever the sample fell inside what the async fn called, the async fn's line is told,
    /// with the call it made there.
    #[test]
    fn a_computation_is_named_by_the_async_code_that_runs_it() {
        let sampled = |innermost: Vec<NativeFrame>| BlockedAt {
            frames: innermost
                .into_iter()
                .chain([
                    frame("inspect_polls::compute", Some(("src/bin/polls.rs", 60))),
                    frame("inspect_polls::spin_worker", Some(("src/bin/polls.rs", 78))),
                    frame(
                        "<core::pin::Pin<P> as core::future::future::Future>::poll",
                        None,
                    ),
                    frame("tokio::runtime::task::core::Core<T,S>::poll", None),
                    frame("inspect_polls::main", Some(("src/bin/polls.rs", 40))),
                ])
                .collect(),
            doing: Doing::Computing,
        };
        let told = "inspect_polls::compute ← inspect_polls::spin_worker (src/bin/polls.rs:78)";
        assert_eq!(sampled(Vec::new()).describe(&place), told);
        let deeper = vec![
            frame("__vdso_clock_gettime", None),
            frame("clock_gettime", None),
            frame(
                "inspect_polls::thread_cpu_ns",
                Some(("src/bin/polls.rs", 70)),
            ),
        ];
        assert_eq!(sampled(deeper).describe(&place), told);
    }
}
