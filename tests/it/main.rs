//! The integration suite: one test binary made of modules, one per area.
//! Every test runs real processes.

mod cluster;
mod common;
mod faults;
mod manager;
mod pipe;
mod pool;
mod process;
mod queue;
mod shared_memory;
mod sync;
