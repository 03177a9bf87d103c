//! What travels through Redis: a task entry (one chunk of one call) and a
//! reply entry (its results), each one msgpack value in a single stream
//! field. Data only: a task is named, never shipped as code.
//!
//! Architecture invariant: if a type of this crate derives `Serialize`, it
//! is here.

use std::sync::Arc;
use std::time::Duration;

use multiproc::{Error, ExitStatus, TaskFailure, TaskMismatch, TaskPanic};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// Bumped whenever an entry changes shape; agents dead-letter other versions.
pub(crate) const PROTOCOL: u32 = 1;

/// The stream field holding the encoded entry.
pub(crate) const FIELD: &str = "m";

/// One chunk of work: `ends.len()` argument tuples of task `name`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TaskMsg {
    pub protocol: u32,
    /// The caller's build id; only agents of this build may run it.
    pub build: u64,
    /// Where the results go (the caller's reply stream) and for how long.
    pub reply: String,
    pub reply_ttl_ms: u64,
    /// The caller's id of this chunk: results are deduplicated by it.
    pub call: u64,
    pub name: String,
    pub signature: String,
    pub args: ByteBuf,
    pub ends: Vec<u32>,
    /// Per item, as `MapCall::timeout`.
    pub timeout_ms: Option<u64>,
    /// Deliveries before this entry was (re)written: a chunk handed back
    /// after its worker died is a fresh entry that remembers them.
    pub prior_deliveries: u32,
}

impl TaskMsg {
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout_ms.map(Duration::from_millis)
    }
}

/// The results of chunk `call`, one per item.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ReplyMsg {
    pub call: u64,
    pub items: Vec<Result<ByteBuf, RemoteError>>,
}

/// Why an item has no result, as it crosses hosts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum RemoteError {
    Panicked {
        message: String,
        location: String,
    },
    Mismatch {
        name: String,
        reason: String,
    },
    /// The task returned an ordinary error (`Error::TaskFailed`).
    Failed {
        task: String,
        message: String,
        sources: Vec<String>,
        location: String,
    },
    Decode(String),
    Encode(String),
    WorkerLost {
        pid: u32,
        status: ExitStatus,
    },
    Timeout,
    Poisoned {
        deliveries: u32,
    },
    /// Caller side only: Redis is gone past the deadline.
    Unavailable(String),
    /// Caller side only: no live agent of this build.
    NoWorkers(String),
    /// Caller side only: the pool was dropped before the result came.
    Terminated,
    Other(String),
}

impl RemoteError {
    /// How an agent reports an item's error.
    pub fn from_local(e: &Error) -> Self {
        match e {
            Error::TaskPanicked(p) => Self::Panicked { message: p.message.clone(), location: p.location.clone() },
            Error::TaskMismatch(m) => Self::Mismatch { name: m.name.clone(), reason: m.reason.clone() },
            Error::TaskFailed(f) => Self::Failed {
                task: f.task.clone(),
                message: f.message.clone(),
                sources: f.sources.clone(),
                location: f.location.clone(),
            },
            Error::Decode { source, .. } => Self::Decode(source.to_string()),
            Error::Encode { source, .. } => Self::Encode(source.to_string()),
            Error::WorkerLost { pid, status } => Self::WorkerLost { pid: *pid, status: *status },
            Error::Timeout => Self::Timeout,
            Error::TaskPoisoned { deliveries } => Self::Poisoned { deliveries: *deliveries },
            other => Self::Other(other.chain().to_string()),
        }
    }

    /// The error the caller sees, the same variant the local `Pool` gives.
    pub fn into_error(self) -> Error {
        match self {
            Self::Panicked { message, location } => Error::TaskPanicked(Box::new(TaskPanic { message, location })),
            Self::Mismatch { name, reason } => Error::TaskMismatch(Box::new(TaskMismatch { name, reason })),
            Self::Failed { task, message, sources, location } => {
                Error::TaskFailed(Box::new(TaskFailure { task, message, sources, location }))
            }
            Self::Decode(reason) => {
                Error::Decode { what: "in the cluster agent", source: Arc::from(Box::from(reason)) }
            }
            Self::Encode(reason) => {
                Error::Encode { what: "in the cluster agent", source: Arc::from(Box::from(reason)) }
            }
            Self::WorkerLost { pid, status } => Error::WorkerLost { pid, status },
            Self::Timeout => Error::Timeout,
            Self::Poisoned { deliveries } => Error::TaskPoisoned { deliveries },
            Self::Unavailable(why) => Error::ClusterUnavailable(why),
            Self::NoWorkers(why) => Error::NoClusterWorkers(why),
            Self::Terminated => Error::PoolTerminated,
            Self::Other(why) => Error::Remote(format!("the cluster agent failed: {why}")),
        }
    }
}

pub(crate) fn encode<T: Serialize>(what: &'static str, value: &T) -> multiproc::Result<Vec<u8>> {
    rmp_serde::to_vec(value).map_err(|e| Error::Encode { what, source: Arc::new(e) })
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(what: &'static str, bytes: &[u8]) -> multiproc::Result<T> {
    rmp_serde::from_slice(bytes).map_err(|e| Error::Decode { what, source: Arc::new(e) })
}
