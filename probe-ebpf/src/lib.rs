#![no_std]
// The programs live in the binary target (src/main.rs); this library target only lets the
// workspace resolve the crate on the host.
