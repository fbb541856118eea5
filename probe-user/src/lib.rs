//! async-inspect: see every task of a running tokio program, without changing it.
//!
//! Data flows one way: [`resolve`] (ELF, DWARF) -> [`attach`] (uprobe.multi links) -> [`collect`]
//! (ring buffer -> [`model`]) -> [`report`].

pub mod resolve;
pub mod model;
