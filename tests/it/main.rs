//! The integration suite: one test binary made of modules, one per area.
//! Every test runs real processes.

mod cluster;
mod common;
mod crash;
mod errors;
mod faults;
mod fleet;
mod manager;
mod manager_attack;
mod manager_hosted;
mod pipe;
mod pool;
mod process;
mod queue;
mod shared_memory;
mod sync;
mod tasks;
mod tree;
