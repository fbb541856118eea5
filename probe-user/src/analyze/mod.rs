//! Analyze: facts derived from the task model and, where needed, from the target's memory
//! through the DWARF decoder: async backtraces, await points, stuck tasks.

pub mod backtrace;
pub mod deadlocks;
pub mod hangs;
pub mod lints;
pub mod stacks;
