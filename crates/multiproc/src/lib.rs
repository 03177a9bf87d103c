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
mod fleet;
mod manager;
mod pipe;
mod pool;
mod process;
mod queue;
mod registry;
mod shared_memory;
mod shutdown;
mod sync;
mod tree;
mod value;
// The wire is an internal boundary: hidden from the docs' front page (only
// `PassFd` is public API). Still reachable for the suite's older imports.
#[doc(hidden)]
pub mod wire;

pub use current::{
    ChildProcess, CurrentProcess, ParentProcess, active_children, cpu_count, current_process, parent_process,
};
pub use error::{Error, ExitStatus, Result};
pub use fleet::{
    ChildSpec, ChildStats, ExitCause, RecycleReason, Restart, Strategy, Supervisor, SupervisorBuilder, SupervisorEvent,
    SupervisorStats,
};
pub use manager::{
    ArrayProxy, BarrierProxy, ConditionProxy, DictProxy, EventProxy, Hosted, HostedObject, HostedProxy, ListProxy,
    LockProxy, Manager, Namespace, QueueProxy, RLockProxy, SemaphoreProxy, ValueProxy,
};
pub use multiproc_macros::{hosted, main, target, task};
pub use pipe::{Connection, Pipe, PipeBuilder};
pub use pool::{
    AsyncResult, FromStream, Imap, MAX_CALL_BYTES, MAX_RESULT_BYTES, MapCall, MapResult, Pool, PoolBuilder, PoolStats,
    Source,
};
pub use process::{GroupSignals, Process, StartMethod, get_start_method, set_start_method};
pub use queue::{JoinableQueue, Leased, Queue, QueueBuilder, SimpleQueue};
pub use registry::{Async, Plain, Target, TaskFn};
pub use shared_memory::SharedMemory;
pub use shutdown::{heartbeat, request_recycle, shutdown_on_signals, stop_requested, stopped};
pub use sync::{
    Barrier, BoundedSemaphore, Condition, ConditionGuard, Event, Lock, LockGuard, RLock, RLockGuard, Semaphore,
    SemaphoreGuard,
};
pub use value::{Array, Primitive, SharedString, Value};
pub use wire::fds::PassFd;

#[doc(hidden)]
pub mod __private {
    pub use crate::manager::{
        HOSTED, HostedEntry, decode_args as hosted_decode_args, decode_init, encode_result as hosted_encode_result,
    };
    pub use crate::registry::{
        BoxFuture, Invoke, Outcome, TASKS, TaskEntry, decode_args, encode_result, type_id_of_val,
    };
    pub use crate::wire::Failure;

    /// Waits until the resource tracker processed everything it received
    /// (closed connections included); its pid. For tests.
    pub fn tracker_sync() -> crate::Result<u32> {
        crate::tree::tracker::sync()
    }
    pub use crate::manager::testing as manager_testing;
    pub use linkme;
    pub use serde;
    pub use tokio;

    /// Writes raw bytes on this pool worker's control socket, bypassing the
    /// framing. For tests that make a worker misbehave (issue 11).
    pub fn pool_worker_write_raw(bytes: &[u8]) -> crate::Result<()> {
        crate::pool::worker::write_raw(bytes)
    }
}

/// Takes this process's role in the tree if it is a forkserver, worker or
/// resource tracker copy of the program (and then never returns); does
/// nothing in the program itself. Call it as the first line of `main`,
/// before a runtime or any thread starts — or write `#[multiproc::main]`
/// instead of `#[tokio::main]`, which does it for you:
///
/// ```no_run
/// // The first line of `main`:
/// multiproc::init();
/// // … then build a runtime, start processes …
/// ```
///
/// Roles then start after every constructor of the program (static
/// initialisers of linked C and C++ libraries included) and std's set-up.
/// Without it, a constructor takes the roles before `main` — which is what
/// `cargo test` binaries rely on.
pub fn init() {
    tree::boot::init();
}
