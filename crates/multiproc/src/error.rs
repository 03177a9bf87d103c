//! The one error type of the public API.

use std::io;

/// How a child process ended, in Python's `exitcode` convention when turned
/// into a number: the exit code, or `-N` when signal `N` killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    /// Python's `Process.exitcode`: the code, or minus the signal number.
    pub fn code(self) -> i32 {
        match self {
            Self::Code(c) => c,
            Self::Signal(s) => -s,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Code(c) => write!(f, "exit code {c}"),
            Self::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// Everything that can go wrong in `multiproc`, one variant per situation a
/// caller may want to tell apart. Messages read well after "failed to …".
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The function or type passed as a target was never registered.
    #[error(
        "run `{name}`: it is not registered; put #[multiproc::task] on the function (or #[multiproc::target] on its `impl Target` block)"
    )]
    UnregisteredTask { name: &'static str },
    /// The worker has no task by that name and signature.
    #[error("run task `{name}` in the worker: {reason}")]
    TaskMismatch { name: String, reason: String },
    /// A peer speaks another protocol version or runs another build.
    #[error("handshake with a peer: {0}")]
    Handshake(String),
    #[error("start a process that was already started")]
    AlreadyStarted,
    #[error("use a process that has not been started")]
    NotStarted,
    #[error("close a process that is still running")]
    StillRunning,
    #[error("start a child from a daemonic process: daemonic processes are not allowed to have children")]
    DaemonicChildren,
    /// The forkserver died; the processes it had started died with it.
    #[error("follow process {pid}: the forkserver died and took it down; the next start restarts the forkserver")]
    ForkserverLost { pid: u32 },
    /// A worker died while it held work.
    #[error("finish the task: worker {pid} died ({status})")]
    WorkerLost { pid: u32, status: ExitStatus },
    /// A task panicked; its message and source location.
    #[error("run the task: it panicked at {location}: {message}")]
    TaskPanicked { message: String, location: String },
    #[error("wait: the operation timed out")]
    Timeout,
    /// A value could not be encoded for another process.
    #[error("encode {what}: {reason}")]
    Encode { what: &'static str, reason: String },
    /// Bytes from another process could not be decoded.
    #[error("decode {what}: {reason}")]
    Decode { what: &'static str, reason: String },
    /// A frame announced more bytes than the connection allows.
    #[error("receive a frame of {len} bytes: the limit is {max}")]
    FrameTooLarge { len: usize, max: usize },
    /// The peer broke the framing rules; the connection is closed.
    #[error("read a frame: {0}")]
    Malformed(String),
    /// The other end is closed.
    #[error("receive: the other end is closed (EOF)")]
    Eof,
    /// The object was closed by this process.
    #[error("use a closed {0}")]
    Closed(&'static str),
    /// A pool was joined before `close` or `terminate`.
    #[error("join a pool that is still running: call close() or terminate() first")]
    PoolRunning,
    /// The pool was terminated (or dropped) before the task finished.
    #[error("finish the task: the pool was terminated")]
    PoolTerminated,
    /// The pool could not start a worker to run the task.
    #[error("start a pool worker: {0}")]
    PoolWorkerStart(String),
    /// A manager could not carry out a request (Python raises there).
    #[error("call the manager: {0}")]
    Remote(String),
    /// The peer does not know the authkey, or we do not know its.
    #[error("authenticate: {0}")]
    Authentication(String),
    /// Nothing to take: `queue.Empty`.
    #[error("get an item: the queue is empty")]
    Empty,
    /// No room: `queue.Full`.
    #[error("put an item: the queue is full")]
    Full,
    /// An item too big for the queue's shared storage.
    #[error(
        "put an item of {len} bytes: the queue holds items of at most {max} bytes (see Queue::builder().capacity_bytes)"
    )]
    ItemTooLarge { len: usize, max: usize },
    /// `JoinableQueue.task_done` called more often than items were put.
    #[error("mark a task done: task_done() called too many times")]
    TaskDoneTooManyTimes,
    /// A byte range outside its buffer (`send_bytes(buf, offset, size)`).
    #[error("send bytes {offset}..{offset}+{size} of a {len}-byte buffer: out of range")]
    BadRange { offset: usize, size: usize, len: usize },
    /// The previous holder of a lock died holding it; the data it guards may
    /// be half-updated. The lock is free again: repair, then acquire.
    #[error("acquire the lock: its holder (pid {pid}) died holding it")]
    OwnerDied { pid: u32 },
    /// An `RLock` released by a thread, task or process that does not own it.
    #[error("release the lock: it is not owned by the caller")]
    NotOwner,
    /// A `BoundedSemaphore` released above its initial value.
    #[error("release the semaphore: released too many times")]
    TooManyReleases,
    /// The barrier was broken (abort, reset, a timeout, a failed action).
    #[error("wait at the barrier: it is broken")]
    BrokenBarrier,
    /// More simultaneous waiters than a condition has slots for.
    #[error("wait on the condition: more than {max} waiters at once")]
    TooManyWaiters { max: usize },
    /// An argument outside what the call accepts.
    #[error("accept the argument: {0}")]
    InvalidArgument(String),
    /// A shared memory segment of that name already exists.
    #[error("create shared memory {name:?}: the name is taken")]
    ShmExists { name: String },
    /// No shared memory segment of that name (or it was unlinked already).
    #[error("open shared memory {name:?}: no such segment")]
    ShmNotFound { name: String },
    #[error(transparent)]
    Io(#[from] io::Error),
    // Issue 12, the cluster (`multiproc-cluster`): added at the end.
    /// A cluster task killed its worker on each of its `deliveries`
    /// deliveries; it was moved to the dead-letter stream.
    #[error("run the task: it killed its worker on each of {deliveries} deliveries and was dead-lettered")]
    TaskPoisoned { deliveries: u32 },
    /// The cluster's Redis could not be reached, or kept failing, until the
    /// reconnect deadline passed.
    #[error("reach the cluster's Redis: {0}")]
    ClusterUnavailable(String),
    /// No live cluster agent runs this build of the program.
    #[error("find a cluster agent: {0}")]
    NoClusterWorkers(String),
}

impl From<nix::Error> for Error {
    fn from(e: nix::Error) -> Self {
        Self::Io(e.into())
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
