//! async-inspect: see every task of a running tokio program, without changing it.
//!
//! Data flows one way: [`resolve`] (ELF, DWARF) -> [`attach`] (uprobe.multi links) -> [`collect`]
//! (per-CPU ring buffers -> [`session`]: the [`model`] and the backtraces read) -> [`analyze`] (stuck
//! tasks, lints, deadlocks) -> [`report`] and [`present`] (text, JSON, Markdown, the live view,
//! timeline, flamegraphs). [`record`] writes what a session takes in, and [`replay`] plays it
//! back into a new session, so a recording gives the same reports. [`target`] launches or finds
//! the process; [`cli`] turns flags into a validated configuration; [`readable`] writes times and
//! places as every stage shows them.

pub mod analyze;
pub mod attach;
pub mod blockers;
pub mod budget;
pub mod cli;
pub mod collect;
pub mod memory;
pub mod model;
pub mod overhead;
pub mod present;
pub mod readable;
pub mod record;
pub mod replay;
pub mod report;
pub mod resolve;
pub mod session;
pub mod snapshot;
pub mod target;
