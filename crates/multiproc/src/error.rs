//! The one error type of the public API.

use std::io;
use std::sync::Arc;

/// How a child process ended, in Python's `exitcode` convention when turned
/// into a number: the exit code, or `-N` when signal `N` killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExitStatus {
    /// It exited with this code (`exit(code)`, or returning from `main`).
    Code(i32),
    /// This signal killed it (9 for SIGKILL, 15 for SIGTERM, …).
    Signal(i32),
}

impl From<multiproc_sys::process::Exit> for ExitStatus {
    fn from(exit: multiproc_sys::process::Exit) -> Self {
        match exit {
            multiproc_sys::process::Exit::Code(c) => Self::Code(c),
            multiproc_sys::process::Exit::Signal(s) => Self::Signal(s),
        }
    }
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

/// A cause carried by [`Error::Encode`], [`Error::Decode`] and alike: the
/// encoder's own error in the process that failed, or, for a failure
/// reported by another process, its message. Shared (not boxed) so a
/// failure fanned out to every item of a call is one value.
pub type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Makes a [`Cause`] from an error or a message.
pub(crate) fn cause(e: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Cause {
    Arc::from(e.into())
}

/// Everything that can go wrong in `multiproc`, one variant per situation a
/// caller may want to tell apart, grouped as [`ErrorKind`] names them.
///
/// Messages read well after "failed to …" and never repeat their cause:
/// a variant whose cause is an OS, encoder or nested error carries it as
/// [`source`](std::error::Error::source), so print the chain (e.g.
/// `anyhow`'s `{:#}`, or walk `source()`) to see everything.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ----- Usage and arguments ([`ErrorKind::Usage`]) -----
    /// The function or type passed as a target was never registered.
    #[error("{}", unregistered(name))]
    UnregisteredTask {
        /// The Rust type name of what was passed (a closure's ends in
        /// `{{closure}}`).
        name: &'static str,
    },
    /// `start` called twice on one `Process` (Python: "cannot start a process twice").
    #[error("start a process that was already started")]
    AlreadyStarted,
    /// `join`, `terminate`, … on a `Process` before `start`.
    #[error("use a process that has not been started")]
    NotStarted,
    /// `Process::close` while the child still runs.
    #[error("close a process that is still running")]
    StillRunning,
    /// A daemonic process tried to start a child (Python forbids it too).
    #[error("start a child from a daemonic process: daemonic processes are not allowed to have children")]
    DaemonicChildren,
    /// A pool was joined before `close` or `terminate`.
    #[error("join a pool that is still running: call close() or terminate() first")]
    PoolRunning,
    /// The object was closed by this process.
    #[error("use a closed {0}")]
    Closed(&'static str),
    /// An argument outside what the call accepts.
    #[error("accept the argument: {0}")]
    InvalidArgument(String),
    /// A byte range outside its buffer (`send_bytes(buf, offset, size)`).
    #[error("send bytes {offset}..{offset}+{size} of a {len}-byte buffer: out of range")]
    BadRange {
        /// The requested start.
        offset: usize,
        /// The requested length.
        size: usize,
        /// The buffer's length.
        len: usize,
    },
    /// Called outside a tokio runtime: processes, pools and managers are
    /// driven by one. Call from `#[tokio::main]` (or inside `Runtime::block_on`).
    #[error(
        "start {what}: there is no tokio runtime here; call it from async code running on tokio (#[tokio::main], \
         #[tokio::test] or Runtime::block_on)"
    )]
    NoRuntime {
        /// What was being started ("a pool").
        what: &'static str,
    },
    /// No child of that name under this supervisor.
    #[error("find child {0:?}: no child of that name")]
    NoSuchChild(String),

    // ----- Task outcomes ([`ErrorKind::Task`]) -----
    /// The worker has no task by that name and signature, or could not
    /// get it ready (its initializer failed).
    #[error("run task `{}` in the worker: {}", .0.name, .0.reason)]
    TaskMismatch(Box<TaskMismatch>),
    /// A task panicked; its message and source location.
    #[error("run the task: it panicked at {}: {}", .0.location, .0.message)]
    TaskPanicked(Box<TaskPanic>),
    /// A task returned `Err(e)` with `e` an ordinary `std::error::Error` (not
    /// a serde type): Python's exception raised in the worker (see
    /// [`TaskFailure`]).
    #[error("run task `{}` (defined at {}): it returned an error: {}{}", .0.task, .0.location, .0.message, causes(&.0.sources))]
    TaskFailed(Box<TaskFailure>),
    /// A deadline passed: `get_timeout`, `join_timeout`, a pool's
    /// `task_timeout` (Python's `TimeoutError`).
    #[error("wait: the operation timed out")]
    Timeout,
    /// The pool was terminated (or dropped) before the task finished.
    #[error("finish the task: the pool was terminated")]
    PoolTerminated,
    /// A call's arguments encode to more bytes than one call may carry;
    /// nothing was sent and the pool is unaffected.
    #[error("send the task: its arguments take {len} bytes; at most {max} fit in a call")]
    ArgumentsTooLarge {
        /// The encoded arguments' length.
        len: usize,
        /// The most one call carries.
        max: usize,
    },
    /// A task's result encoded to more bytes than one reply may carry.
    #[error("return the result: it takes {len} bytes; at most {max} fit in a reply")]
    ResultTooLarge {
        /// The encoded result's length.
        len: usize,
        /// The most one reply carries.
        max: usize,
    },

    // ----- Processes and the tree ([`ErrorKind::Process`]) -----
    /// A worker died while it held work.
    #[error("finish the task: worker {pid} died ({status})")]
    WorkerLost {
        /// The worker's pid.
        pid: u32,
        /// How it ended (`Signal(9)` for SIGKILL, `Signal(6)` for `abort`).
        status: ExitStatus,
    },
    /// The forkserver died; the processes it had started died with it.
    #[error("follow process {pid}: the forkserver died and took it down; the next start restarts the forkserver")]
    ForkserverLost {
        /// The process that died with the forkserver.
        pid: u32,
    },
    /// The pool could not start a worker to run the task; the source says why.
    #[error("start a pool worker")]
    PoolWorkerStart(#[source] Arc<Error>),
    /// A supervisor's children restarted more than `max` times within
    /// `within`: it stopped them all and gave up.
    #[error("supervise {:?}: more than {} restarts within {:?}; every child was stopped", .0.name, .0.max, .0.within)]
    RestartIntensity(Box<RestartLimit>),

    // ----- Transport, protocol and the OS ([`ErrorKind::Transport`]) -----
    /// A peer speaks another protocol version or runs another build.
    #[error("handshake with a peer: {0}")]
    Handshake(String),
    /// A value could not be encoded for another process.
    #[error("encode {what}")]
    Encode {
        /// What was being encoded ("the task's arguments").
        what: &'static str,
        /// The encoder's error (or its message, when another process
        /// reports it).
        #[source]
        source: Cause,
    },
    /// Bytes from another process could not be decoded.
    #[error("decode {what}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's error (or its message, when another process
        /// reports it).
        #[source]
        source: Cause,
    },
    /// A frame announced more bytes than the connection allows.
    #[error("receive a frame of {len} bytes: the limit is {max}")]
    FrameTooLarge {
        /// The announced length.
        len: usize,
        /// The connection's limit.
        max: usize,
    },
    /// The peer broke the framing rules; the connection is closed.
    #[error("read a frame: {0}")]
    Malformed(String),
    /// The other end is closed.
    #[error("receive: the other end is closed (EOF)")]
    Eof,
    /// An operating-system call failed.
    #[error(transparent)]
    Io(#[from] io::Error),

    // ----- Resources and shared state ([`ErrorKind::SharedState`]) -----
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
    ItemTooLarge {
        /// The encoded item's length.
        len: usize,
        /// The largest item the queue holds.
        max: usize,
    },
    /// `JoinableQueue.task_done` called more often than items were put.
    #[error("mark a task done: task_done() called too many times")]
    TaskDoneTooManyTimes,
    /// A queue's shared memory holds positions or lengths no correct process
    /// wrote (something scribbled on the mapping): the queue is unusable.
    #[error("use the queue: its shared memory is corrupt ({0})")]
    Corrupt(String),
    /// A lease this process no longer holds (acknowledged already).
    #[error("acknowledge the item: its lease is no longer held by this process")]
    LeaseLost,
    /// The previous holder of a lock died holding it; the data it guards may
    /// be half-updated. The lock is free again: repair, then acquire.
    #[error("acquire the lock: its holder (pid {pid}) died holding it")]
    OwnerDied {
        /// The dead holder's pid.
        pid: u32,
    },
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
    TooManyWaiters {
        /// The number of slots.
        max: usize,
    },
    /// A shared memory segment of that name already exists.
    #[error("create shared memory {name:?}: the name is taken")]
    ShmExists {
        /// The segment's name.
        name: String,
    },
    /// No shared memory segment of that name (or it was unlinked already).
    #[error("open shared memory {name:?}: no such segment")]
    ShmNotFound {
        /// The segment's name.
        name: String,
    },

    // ----- The manager ([`ErrorKind::Manager`]) -----
    /// A manager could not carry out a request (Python raises there).
    #[error("call the manager: {0}")]
    Remote(String),
    /// The peer does not know the authkey, or we do not know its.
    #[error("authenticate: {0}")]
    Authentication(String),
    /// No manager answers at that address.
    #[error("connect to the manager at {address}")]
    ManagerUnreachable {
        /// The address tried.
        address: Box<std::net::SocketAddr>,
        /// Why the connection failed.
        #[source]
        source: io::Error,
    },
    /// A named manager object exists with another type.
    #[error("open the manager object {:?}: it is a {}, not a {}", .0.name, .0.found, .0.wanted)]
    WrongKind(Box<WrongKind>),

    // ----- The cluster, `multiproc-cluster` ([`ErrorKind::Cluster`]) -----
    /// A cluster task killed its worker on each of its `deliveries`
    /// deliveries; it was moved to the dead-letter stream.
    #[error("run the task: it killed its worker on each of {deliveries} deliveries and was dead-lettered")]
    TaskPoisoned {
        /// How often it was delivered.
        deliveries: u32,
    },
    /// The cluster's Redis could not be reached, or kept failing, until the
    /// reconnect deadline passed.
    #[error("reach the cluster's Redis: {0}")]
    ClusterUnavailable(String),
    /// No live cluster agent runs this build of the program.
    #[error("find a cluster agent: {0}")]
    NoClusterWorkers(String),
    // New variants go into their group above (and into `kind`).
}

// The payloads of the variants that carry several strings live in boxes,
// so that `Error` stays small: a 1M-item map returns a million
// `Result<T, Error>`, and at 96 bytes each its results alone took ~100 MB
// (see the size test below).

/// What a task that returned `Err(e)` sent back ([`Error::TaskFailed`]).
/// The chain lived in another process, so it arrives as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailure {
    /// The task's registered name (module path and ident).
    pub task: String,
    /// The error's `Display` (`e.to_string()`).
    pub message: String,
    /// The `Display` of each error in its `source()` chain, outermost first
    /// (at most 32).
    pub sources: Vec<String>,
    /// `file:line:column` of the task's definition.
    pub location: String,
}

/// A task's panic ([`Error::TaskPanicked`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskPanic {
    /// The panic's message.
    pub message: String,
    /// `file:line:column` of the panic.
    pub location: String,
}

/// A task the worker could not run ([`Error::TaskMismatch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskMismatch {
    /// The task's registered name.
    pub name: String,
    /// Why the worker refused it.
    pub reason: String,
}

/// A supervisor that gave up ([`Error::RestartIntensity`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartLimit {
    /// The supervisor's name.
    pub name: String,
    /// The restarts allowed within `within`.
    pub max: u32,
    /// The window.
    pub within: std::time::Duration,
}

/// A named manager object of another type ([`Error::WrongKind`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrongKind {
    /// The object's name.
    pub name: String,
    /// Its type.
    pub found: String,
    /// The type asked for.
    pub wanted: String,
}

/// The groups of [`Error`]'s variants: what kind of thing went wrong, for
/// callers that handle a whole group alike (e.g. retry on `Process`, report
/// `Usage` as a bug).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The call was used wrongly: a bad argument, a closed or unstarted
    /// object, a missing registration or runtime.
    Usage,
    /// The task ran and failed, timed out, or could not be delivered or
    /// answered (too large, pool terminated).
    Task,
    /// A process of the tree died or could not be started.
    Process,
    /// Talking to another process failed: encoding, framing, a handshake,
    /// the other end closing, or a system call.
    Transport,
    /// A queue, lock, barrier, condition or shared memory segment refused
    /// or is broken.
    SharedState,
    /// A manager refused, could not be reached or authenticated.
    Manager,
    /// The cluster's Redis or agents.
    Cluster,
}

impl Error {
    /// The group this error belongs to.
    pub fn kind(&self) -> ErrorKind {
        use Error::*;
        match self {
            UnregisteredTask { .. }
            | AlreadyStarted
            | NotStarted
            | StillRunning
            | DaemonicChildren
            | PoolRunning
            | Closed(_)
            | InvalidArgument(_)
            | BadRange { .. }
            | NoRuntime { .. }
            | NoSuchChild(_) => ErrorKind::Usage,
            TaskMismatch(_)
            | TaskPanicked(_)
            | TaskFailed(_)
            | Timeout
            | PoolTerminated
            | ArgumentsTooLarge { .. }
            | ResultTooLarge { .. } => ErrorKind::Task,
            WorkerLost { .. } | ForkserverLost { .. } | PoolWorkerStart(_) | RestartIntensity(_) => ErrorKind::Process,
            Handshake(_) | Encode { .. } | Decode { .. } | FrameTooLarge { .. } | Malformed(_) | Eof | Io(_) => {
                ErrorKind::Transport
            }
            Empty
            | Full
            | ItemTooLarge { .. }
            | TaskDoneTooManyTimes
            | Corrupt(_)
            | LeaseLost
            | OwnerDied { .. }
            | NotOwner
            | TooManyReleases
            | BrokenBarrier
            | TooManyWaiters { .. }
            | ShmExists { .. }
            | ShmNotFound { .. } => ErrorKind::SharedState,
            Remote(_) | Authentication(_) | ManagerUnreachable { .. } | WrongKind(_) => ErrorKind::Manager,
            TaskPoisoned { .. } | ClusterUnavailable(_) | NoClusterWorkers(_) => ErrorKind::Cluster,
        }
    }

    /// This error with its `source()` chain, for logs: see [`ErrorChain`](crate::ErrorChain).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use multiproc::Error;
    ///
    /// let e = Error::PoolWorkerStart(Arc::new(Error::Handshake("no answer".into())));
    /// assert_eq!(e.to_string(), "start a pool worker");
    /// assert_eq!(e.chain().to_string(), "start a pool worker: handshake with a peer: no answer");
    /// ```
    pub fn chain(&self) -> ErrorChain<'_> {
        ErrorChain(self)
    }

    /// A value could not be encoded: `what` was being encoded, `e` is why.
    pub(crate) fn encode(what: &'static str, e: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Self::Encode { what, source: cause(e) }
    }

    /// Bytes could not be decoded: `what` was being decoded, `e` is why.
    pub(crate) fn decode(what: &'static str, e: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Self::Decode { what, source: cause(e) }
    }
}

/// Displays an error with its whole `source()` chain on one line, joined
/// by ": " (`Error`'s own `Display` names only the operation that failed):
/// `format!("{}", e.chain())` gives "start a pool worker: handshake with a
/// peer: …". Works for any `std::error::Error`: `ErrorChain(&io_err)`.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}

/// What to write instead of passing `name`, which no macro registered.
fn unregistered(name: &str) -> String {
    if name.contains("{{closure}}") {
        format!(
            "run `{name}`: a closure cannot run in another process (a worker finds code by its registered name); \
             move its body into a `fn` with #[multiproc::task] and pass what it captured as arguments \
             (`pool.starmap(scale, xs.map(|x| (x, factor)))` with `#[multiproc::task] fn scale(x: u64, factor: u64) -> u64`)"
        )
    } else {
        format!(
            "run `{name}`: it is not registered; put #[multiproc::task] on the function (or #[multiproc::target] on \
             its `impl Target` block)"
        )
    }
}

/// ": caused by: a: b" for a task error's source chain.
fn causes(sources: &[String]) -> String {
    sources.iter().map(|s| format!(": {s}")).collect()
}

impl From<nix::Error> for Error {
    fn from(e: nix::Error) -> Self {
        Self::Io(e.into())
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_and_a_result_of_a_word_stay_small() {
        // Every call's result carries one (a map keeps only its failed
        // items' errors, aside: `Mapped`), and imap streams one per item.
        assert!(std::mem::size_of::<Error>() <= 40, "Error is {} bytes", std::mem::size_of::<Error>());
        assert!(std::mem::size_of::<Result<u64>>() <= 40);
    }
}
