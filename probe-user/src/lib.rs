//! async-inspect: see every task of a running tokio program, without changing it.
//!
//! Data flows one way: [`resolve`] (ELF, DWARF) -> [`attach`] (uprobe.multi links) -> [`collect`]
//! (ring buffer -> [`model`]) -> [`report`]. [`target`] launches or finds the process; [`cli`]
//! turns flags into a validated configuration.

pub mod analyze;
pub mod attach;
pub mod cli;
pub mod collect;
pub mod memory;
pub mod model;
pub mod present;
pub mod record;
pub mod report;
pub mod resolve;
pub mod session;
pub mod snapshot;
pub mod target;
