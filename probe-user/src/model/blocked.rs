//! Where a poll blocked its thread: the thread's native stack as it went off CPU blocked,
//! symbolized, innermost frame first. What a person reads of it is the blocking call and the
//! first frame of the program's own code that made it.

use serde::{Deserialize, Serialize};

use crate::resolve::is_library_function;

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

/// A blocked thread's stack, innermost frame first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedAt {
    pub frames: Vec<NativeFrame>,
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
    /// them is the program's own.
    pub fn describe(&self, place: &Place) -> String {
        let named = |frame: &&NativeFrame| frame.function.is_some();
        match self.frames.iter().position(NativeFrame::is_own) {
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
        };
        assert_eq!(
            stack.describe(&place),
            "syscall ← parking_lot_core::parking_lot::park (parking_lot.rs:600) ← \
             tokio::runtime::park::Inner::park"
        );
        assert_eq!(stack.own_frame(), None);
    }
}
