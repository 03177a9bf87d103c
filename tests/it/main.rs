//! The integration suite: one test binary made of modules, one per area.
//! Every test runs real processes.

mod common;
mod faults;
mod pool;
mod process;
