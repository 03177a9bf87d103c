//! The manager's protocol: what proxies send to the manager process and what
//! it answers. Keys, values and items are the msgpack bytes of the proxy's
//! types; the manager never decodes them (except a registered user type,
//! which it hosts for real).

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// A new object for the manager to host, with what it starts from.
#[derive(Debug, Serialize, Deserialize)]
pub enum NewObject {
    Dict(Vec<(ByteBuf, ByteBuf)>),
    List(Vec<ByteBuf>),
    Namespace,
    Lock,
    RLock,
    Semaphore {
        value: u64,
        bounded: bool,
    },
    Condition,
    Event,
    Barrier {
        parties: u64,
    },
    Queue {
        maxsize: u64,
    },
    Value(ByteBuf),
    Array(Vec<ByteBuf>),
    /// A type registered with `#[multiproc::hosted]`: its name and its
    /// initial state.
    User {
        type_name: String,
        init: ByteBuf,
    },
}

impl NewObject {
    /// The Python name of the object's type (user types: their Rust path).
    pub fn kind(&self) -> String {
        match self {
            Self::Dict(_) => "dict",
            Self::List(_) => "list",
            Self::Namespace => "Namespace",
            Self::Lock => "Lock",
            Self::RLock => "RLock",
            Self::Semaphore { bounded: false, .. } => "Semaphore",
            Self::Semaphore { bounded: true, .. } => "BoundedSemaphore",
            Self::Condition => "Condition",
            Self::Event => "Event",
            Self::Barrier { .. } => "Barrier",
            Self::Queue { .. } => "Queue",
            Self::Value(_) => "Value",
            Self::Array(_) => "Array",
            Self::User { type_name, .. } => return type_name.clone(),
        }
        .to_owned()
    }
}

/// Proxy → manager.
#[derive(Debug, Serialize, Deserialize)]
pub enum ManagerRequest {
    /// First message on every connection: which client process (session)
    /// it belongs to. References and held locks belong to the session and
    /// are released when its last connection closes. No reply.
    Hello {
        session: u64,
        pid: u32,
    },
    /// Host a new object; with a `name`, return the object of that name if it
    /// exists (how peers on other hosts find shared objects). The session
    /// holds one reference to the object it gets.
    Create {
        new: NewObject,
        name: Option<String>,
    },
    Call {
        id: u64,
        op: ObjectOp,
    },
    /// No reply: a proxy of this session is being sent to another process,
    /// which will `Claim` it with `token`; until then this session holds the
    /// reference for it.
    Transit {
        id: u64,
        token: u64,
    },
    /// No reply: a proxy sent with `token` arrived in this session.
    Claim {
        id: u64,
        token: u64,
    },
    /// No reply: this session dropped one reference.
    Release {
        id: u64,
    },
    /// How many objects the manager hosts.
    Count,
    Shutdown,
}

/// One operation on a hosted object; Python's method names where they exist.
/// `owner` names the caller (thread or task) inside its session, for the
/// locks that have owners; timeouts are in milliseconds, `None` waits for
/// ever.
#[derive(Debug, Serialize, Deserialize)]
pub enum ObjectOp {
    Get(ByteBuf),
    Set(ByteBuf, ByteBuf),
    Delete(ByteBuf),
    Contains(ByteBuf),
    Len,
    Items,
    Clear,
    Index(i64),
    SetIndex(i64, ByteBuf),
    Append(ByteBuf),
    Extend(Vec<ByteBuf>),
    Insert(i64, ByteBuf),
    Pop(Option<i64>),
    Reverse,
    /// Lock, RLock, Semaphore, Condition: `acquire(timeout=…)`.
    Acquire {
        owner: u64,
        timeout_ms: Option<u64>,
    },
    /// Lock, RLock, Semaphore, Condition: `release()`.
    ReleaseLock {
        owner: u64,
    },
    /// Lock: `locked()`; Semaphore: the counter; Event: `is_set()`.
    State,
    /// Condition: `wait(timeout)`; Event: `wait(timeout)`.
    Wait {
        owner: u64,
        timeout_ms: Option<u64>,
    },
    /// Condition: `notify(n)` (`u64::MAX` is `notify_all`).
    Notify {
        owner: u64,
        n: u64,
    },
    /// Event: `set()`.
    SetFlag,
    /// Event: `clear()`.
    ClearFlag,
    /// Barrier: `wait(timeout)`, answered with the arrival index.
    BarrierWait {
        timeout_ms: Option<u64>,
    },
    /// Barrier: `abort()`.
    Abort,
    /// Barrier: `reset()`.
    Reset,
    /// Queue: `put(item, block, timeout)`.
    Put {
        item: ByteBuf,
        block: bool,
        timeout_ms: Option<u64>,
    },
    /// Queue: `get(block, timeout)`.
    Take {
        block: bool,
        timeout_ms: Option<u64>,
    },
    /// Value: `v.value`.
    Load,
    /// Value: `v.value = x`.
    Store(ByteBuf),
    /// A registered user type's method, arguments as a msgpack tuple.
    Method {
        name: String,
        args: ByteBuf,
    },
}

/// What went wrong with a request, for the proxy to raise as the matching
/// `multiproc::Error`.
#[derive(Debug, Serialize, Deserialize)]
pub enum ManagerFailure {
    /// Python would raise here (`IndexError`, an unknown method, …).
    Remote(String),
    /// A named object exists with another type.
    WrongKind {
        name: String,
        found: String,
        wanted: String,
    },
    NoObject(u64),
    Timeout,
    Empty,
    Full,
    NotOwner,
    TooManyReleases,
    BrokenBarrier,
    OwnerDied {
        pid: u32,
    },
}

/// Manager → proxy.
#[derive(Debug, Serialize, Deserialize)]
pub enum ManagerReply {
    Created(u64),
    Value(Option<ByteBuf>),
    Items(Vec<(ByteBuf, ByteBuf)>),
    /// Part of an `Items` answer too large for one frame; more follow, the
    /// last as `Items`.
    Part(Vec<(ByteBuf, ByteBuf)>),
    Len(u64),
    Bool(bool),
    Done,
    Failed(ManagerFailure),
}

/// The mutual challenge on a manager's TCP connections (HMAC-SHA256 under
/// the shared authkey of a transcript naming the role and both nonces), as
/// Python's `deliver_challenge`/`answer_challenge` but both ways in one
/// exchange.
#[derive(Debug, Serialize, Deserialize)]
pub enum AuthMessage {
    Challenge { protocol: u32, nonce: ByteBuf },
    Answer { digest: ByteBuf, nonce: ByteBuf },
    Welcome { digest: ByteBuf },
    Refused,
}

/// Bumped whenever a manager message changes shape (TCP peers may run
/// another build; local ones never do).
pub const MANAGER_PROTOCOL: u32 = 3;
