#![doc = include_str!("../docs/front.md")]
#![deny(unsafe_code)]

// Lets the crate register its own tasks (the manager's server) with
// `#[multiproc::task]`, which names paths from `::multiproc`.
extern crate self as multiproc;

mod current;
mod error;
pub mod guide;
mod manager;
mod pipe;
mod pool;
mod process;
mod queue;
mod registry;
mod runtime;
mod shared_memory;
mod sync;
mod tree;
mod value;
// The wire protocol is internal; `PassFd` is its one public type. Hidden
// rather than private so the crate's own tests and sibling crates keep
// their paths.
#[doc(hidden)]
pub mod wire;

pub use current::{
    ChildProcess, CurrentProcess, ParentProcess, active_children, cpu_count, current_process, parent_process,
};
pub use error::{Error, ExitStatus, Result};
pub use manager::{DictProxy, ListProxy, Manager, Namespace};
/// Registers a `Target` impl (Python's `Process` subclass with `run`); see
/// [`Process::from_target`].
pub use multiproc_macros::target;
/// Registers a function as a task; every rule: [`guide::tasks`].
pub use multiproc_macros::task;
pub use pipe::{Connection, Pipe, PipeBuilder};
pub use pool::{AsyncResult, Imap, MapCall, MapResult, Pool, PoolBuilder, PoolStats};
pub use process::{Process, StartMethod, get_start_method, set_start_method};
pub use queue::{JoinableQueue, Queue, QueueBuilder, SimpleQueue};
pub use registry::{Async, BoxedErrorResult, DynError, ErrorResult, Plain, Target, TaskFn};
pub use shared_memory::SharedMemory;
pub use sync::{
    Barrier, BoundedSemaphore, Condition, ConditionGuard, Event, Lock, LockGuard, RLock, RLockGuard, Semaphore,
    SemaphoreGuard,
};
pub use value::{Array, Primitive, SharedString, Value};
pub use wire::fds::PassFd;

#[doc(hidden)]
pub mod __private {
    pub use crate::registry::{
        BoxFuture, Encode, EncodeOutput, Invoke, Outcome, TASKS, TaskEntry, TaskSite, decode_args, encode_result,
        type_id_of_val,
    };
    pub use crate::wire::Failure;

    /// Waits until the resource tracker processed everything it received
    /// (closed connections included); its pid. For tests.
    pub fn tracker_sync() -> crate::Result<u32> {
        crate::tree::tracker::sync()
    }
    pub use linkme;
}
