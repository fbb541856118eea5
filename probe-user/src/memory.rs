//! Reading a live process's memory (stub: being written).
