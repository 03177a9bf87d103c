#![doc = include_str!("../docs/front.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// Lets the crate register its own tasks (the manager's server) with
// `#[multiproc::task]`, which names paths from `::multiproc`.
extern crate self as multiproc;

mod current;
mod error;
mod fleet;
pub mod guide;
mod manager;
mod pipe;
mod pool;
mod process;
mod queue;
mod registry;
mod runtime;
mod shared_memory;
mod shmcall;
mod shutdown;
mod sync;
mod tree;
mod value;
// The wire is an internal boundary: only `PassFd` (re-exported below) is
// public API; what `multiproc-cluster` shares of it is in `__private`.
mod wire;

pub use current::{
    ChildProcess, CurrentProcess, ParentProcess, active_children, cpu_count, current_process, parent_process,
};
pub use error::{
    Cause, Error, ErrorChain, ErrorKind, ExitStatus, RestartLimit, Result, TaskFailure, TaskMismatch, TaskPanic,
    WrongKind,
};
pub use fleet::{
    ChildSpec, ChildStats, ExitCause, RecycleReason, Restart, Strategy, Supervisor, SupervisorBuilder, SupervisorEvent,
    SupervisorStats,
};
pub use manager::{
    ArrayProxy, BarrierProxy, ConditionProxy, DictProxy, EventProxy, Hosted, HostedObject, HostedProxy, ListProxy,
    LockProxy, Manager, Namespace, QueueProxy, RLockProxy, SemaphoreProxy, ValueProxy,
};
/// Registers a `Target` impl (Python's `Process` subclass with `run`); see
/// [`Process::from_target`].
pub use multiproc_macros::target;
/// Registers a function as a task; every rule: [`guide::tasks`].
pub use multiproc_macros::task;
pub use multiproc_macros::{hosted, main};
pub use pipe::{Connection, Pipe, PipeBuilder};
pub use pool::{
    AsyncResult, FromStream, Imap, MAX_CALL_BYTES, MAX_RESULT_BYTES, MapCall, MapResult, Mapped, MappedIntoIter,
    MappedIter, Pool, PoolBuilder, PoolStats, Source,
};
pub use process::{GroupSignals, Process, StartMethod, get_start_method, set_start_method};
pub use queue::{JoinableQueue, Leased, Queue, QueueBuilder, SimpleQueue};
pub use registry::{Async, BoxedErrorResult, DynError, ErrorResult, Plain, Target, TaskFn};
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
        HostedEntry, decode_args as hosted_decode_args, decode_init, encode_result as hosted_encode_result,
    };
    pub use crate::registry::{
        BoxFuture, Encode, EncodeOutput, Invoke, Outcome, TaskEntry, TaskSite, Written, decode_args, encode_owned,
        encode_result, tasks, type_id_of_val,
    };
    pub use crate::wire::Failure;
    /// For `multiproc-cluster`: the same build id and msgpack codec the
    /// local pool uses, so a cluster agent decodes what `Pool` encodes.
    pub use crate::wire::{build_id, decode, encode};

    /// Waits until the resource tracker processed everything it received
    /// (closed connections included); its pid. For tests.
    pub fn tracker_sync() -> crate::Result<u32> {
        crate::tree::tracker::sync()
    }
    pub use crate::manager::testing as manager_testing;
    // The link-time slices live in the sys crate (their link-section
    // statics are unsafe attributes); the macros register through these.
    pub use multiproc_sys::link::{HOSTED, Registered, TASKS, linkme};
    pub use serde;
    pub use tokio;

    /// Writes raw bytes on this pool worker's control socket, bypassing the
    /// framing. For tests that make a worker misbehave (issue 11).
    pub fn pool_worker_write_raw(bytes: &[u8]) -> crate::Result<()> {
        crate::pool::worker::write_raw(bytes)
    }

    /// Whether this pool worker takes its calls through shared memory
    /// (issue 13). For tests.
    pub fn pool_worker_on_shared_memory() -> bool {
        crate::pool::worker::on_shared_memory()
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
