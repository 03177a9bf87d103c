//! Python's `multiprocessing` for async Rust.
//!
//! # Theory of operation
//!
//! Functions that run in other processes are *registered* with
//! `#[multiproc::task]`: a child finds them by name, never by address. The
//! first time a process starts a child, a supervisor thread re-executes the
//! current binary as a **forkserver**, a single-threaded zygote that forks
//! every child on request, reaps it, and reports how it ended. A constructor
//! that runs before `main` recognises the forkserver and worker roles, so
//! this works under `#[tokio::main]` and in `cargo test` alike.
//!
//! Parent and child talk over a Unix socketpair: length-prefixed msgpack
//! frames, with file descriptors (pipe ends, shared memory) attached out of
//! band by `SCM_RIGHTS`. Nothing started here outlives the program: children
//! die with the forkserver, and the forkserver dies with its parent.
//!
//! ```no_run
//! #[multiproc::task]
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! #[tokio::main]
//! async fn main() -> multiproc::Result<()> {
//!     let mut p = multiproc::Process::new(square, (7,)).name("squarer");
//!     p.start().await?;
//!     assert_eq!(p.join().await?, 0);
//!     Ok(())
//! }
//! ```
#![deny(unsafe_code)]

// Lets the crate register its own tasks (the manager's server) with
// `#[multiproc::task]`, which names paths from `::multiproc`.
extern crate self as multiproc;

mod current;
mod error;
mod manager;
mod pipe;
mod pool;
mod process;
mod queue;
mod registry;
mod shared_memory;
mod shmcall;
mod sync;
mod tree;
mod value;
pub mod wire;

pub use current::{
    ChildProcess, CurrentProcess, ParentProcess, active_children, cpu_count, current_process, parent_process,
};
pub use error::{Error, ExitStatus, Result};
pub use manager::{DictProxy, ListProxy, Manager, Namespace};
pub use multiproc_macros::{target, task};
pub use pipe::{Connection, Pipe, PipeBuilder};
pub use pool::{AsyncResult, Imap, MapCall, MapResult, Pool, PoolBuilder, PoolStats};
pub use process::{Process, StartMethod, get_start_method, set_start_method};
pub use queue::{JoinableQueue, Queue, QueueBuilder, SimpleQueue};
pub use registry::{Async, Plain, Target, TaskFn};
pub use shared_memory::SharedMemory;
pub use sync::{
    Barrier, BoundedSemaphore, Condition, ConditionGuard, Event, Lock, LockGuard, RLock, RLockGuard, Semaphore,
    SemaphoreGuard,
};
pub use value::{Array, Primitive, SharedString, Value};

#[doc(hidden)]
pub mod __private {
    pub use crate::registry::{
        BoxFuture, Invoke, Outcome, TASKS, TaskEntry, decode_args, encode_result, type_id_of_val,
    };
    pub use crate::wire::Failure;

    /// Waits until the resource tracker processed everything it received
    /// (closed connections included); its pid. For tests.
    pub fn tracker_sync() -> crate::Result<u32> {
        crate::tree::tracker::sync()
    }
    pub use linkme;
}
