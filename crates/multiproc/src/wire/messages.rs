//! Every message exchanged between the user's process, the forkserver and
//! workers. User values travel inside as opaque msgpack bytes.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::fds::PassFd;
use crate::error::ExitStatus;

/// First frame each way on every connection.
#[derive(Debug, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    pub build_id: u64,
    pub pid: u32,
}

impl Hello {
    pub fn ours() -> Self {
        Self { protocol: super::PROTOCOL_VERSION, build_id: super::build_id(), pid: std::process::id() }
    }

    /// Why a peer's hello is unacceptable, if it is.
    pub fn check(&self) -> Result<(), String> {
        if self.protocol != super::PROTOCOL_VERSION {
            return Err(format!(
                "peer {} speaks protocol {}, this build speaks {}",
                self.pid,
                self.protocol,
                super::PROTOCOL_VERSION
            ));
        }
        if self.build_id != super::build_id() {
            return Err(format!(
                "peer {} runs another build of the program (build id {:016x}, ours {:016x}); start both from the same binary",
                self.pid,
                self.build_id,
                super::build_id()
            ));
        }
        Ok(())
    }
}

/// User process → forkserver.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToForkserver {
    /// Fork a child that talks to its parent over `control`; `exec` re-executes
    /// the binary first (the `spawn` start method).
    /// `id` names the child from then on (pids are reused; spawn ids are not).
    /// `report` (a `SOCK_SEQPACKET` end) gets the child's exit status
    /// straight from the forkserver, ahead of the `Exited` report (8 bytes,
    /// see `tree::forkserver::exit_report`).
    Spawn { id: u64, exec: bool, control: PassFd, report: PassFd },
    /// Send `signal` to child `id` if it has not been reaped yet.
    Signal { id: u64, signal: i32 },
}

/// Forkserver → user process.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromForkserver {
    Started { id: u64, pid: u32 },
    SpawnFailed { id: u64, reason: String },
    Exited { id: u64, status: ExitStatus },
}

/// What a worker runs, named as registered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRef {
    pub name: String,
    pub signature: String,
}

/// Who a child process is, as `current_process()` reports it there.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub name: String,
    pub identity: Vec<u32>,
    pub daemon: bool,
    pub parent_pid: u32,
    pub parent_name: String,
}

/// User process → worker, after the hellos.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToWorker {
    /// Run one target and exit (a `Process`).
    /// `shielded`: the child shields itself from group signals (see
    /// `GroupSignals`).
    Run { info: ProcessInfo, task: TaskRef, args: ByteBuf, shielded: bool },
    /// Serve calls until the channel closes (a pool worker). `progress`
    /// (issue 11) is an encoded `Value<u64>` whose fd comes last in the
    /// frame: the worker stores `id + 1` there as it starts call `id`, so the
    /// parent knows whether a call it lost had started.
    /// `stop` (issue 11) is the pool's encoded stop token (an `Event`,
    /// one fd, after the progress word's): set when the pool shuts down, it
    /// is what `stop_requested()` reads inside a pool worker.
    Serve { info: ProcessInfo, init: Option<(TaskRef, ByteBuf)>, progress: Option<ByteBuf>, stop: Option<ByteBuf> },
    /// Run a task once per argument tuple (a chunk of a map). `args` holds
    /// the encoded tuples back to back; tuple `i` ends at `ends[i]`. `task` is
    /// `None` when it is the same as in the previous call on this connection.
    Call { id: u64, task: Option<TaskRef>, args: ByteBuf, ends: Ends },
    /// Issue 13: from now on calls and replies travel through a shared-memory
    /// link (`pool/shm.rs`); the frame's fds are its ring, this end's
    /// doorbell and the other end's, and `end` says which end it is.
    Shm { end: u8 },
    /// Issue 13: the fds of the next call on the link that takes some.
    Fds,
}

/// Item boundaries in a call's arguments or results, sent as packed
/// little-endian `u32`s: one copy instead of one msgpack integer per item.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ends(pub Vec<u32>);

impl std::ops::Deref for Ends {
    type Target = Vec<u32>;
    fn deref(&self) -> &Vec<u32> {
        &self.0
    }
}

impl Serialize for Ends {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // A call's few boundaries go from the stack, without an allocation.
        const ON_STACK: usize = 16;
        if self.0.len() <= ON_STACK {
            let mut bytes = [0u8; 4 * ON_STACK];
            for (e, out) in self.0.iter().zip(bytes.chunks_exact_mut(4)) {
                out.copy_from_slice(&e.to_le_bytes());
            }
            return s.serialize_bytes(&bytes[..4 * self.0.len()]);
        }
        let bytes: Vec<u8> = self.0.iter().flat_map(|e| e.to_le_bytes()).collect();
        s.serialize_bytes(&bytes)
    }
}

impl<'de> Deserialize<'de> for Ends {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// Reads the packed bytes where they are (no intermediate buffer).
        struct Packed;
        impl serde::de::Visitor<'_> for Packed {
            type Value = Ends;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("item boundaries as packed little-endian u32s")
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Ends, E> {
                if !bytes.len().is_multiple_of(4) {
                    return Err(E::custom("item boundaries are not a whole number of u32s"));
                }
                Ok(Ends(bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()))
            }
        }
        d.deserialize_bytes(Packed)
    }
}

/// How one call ended in the worker. `Returned`: the task returned `Err`
/// with a `std::error::Error` (its message, `source()` chain, and where the
/// task is defined; issue 14).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Failure {
    /// The task panicked.
    Panicked {
        /// The panic's payload, if it was a string.
        message: String,
        /// Where it panicked (`file:line:column`).
        location: String,
    },
    /// The worker could not decode the call's arguments.
    Decode(String),
    /// The worker could not encode the task's result.
    Encode(String),
    /// The worker does not know the task (or refused it).
    Unknown {
        /// The task's registered name.
        name: String,
        /// Why it was refused.
        reason: String,
    },
    /// The result encoded to more bytes than one reply may carry (issue 11).
    ResultTooLarge {
        /// The encoded result's size in bytes.
        len: u64,
        /// The most a reply carries.
        max: u64,
    },
    /// The task returned `Err` with a `std::error::Error`.
    Returned {
        /// The task's registered name.
        task: String,
        /// The error's `Display`.
        message: String,
        /// The `Display` of each `source()` in its chain, outermost first.
        sources: Vec<String>,
        /// Where the task is defined.
        location: String,
    },
}

/// Worker → user process.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromWorker {
    Ready,
    Refused {
        reason: String,
    },
    /// The results of call `id`, laid out like its arguments: result `i` ends
    /// at `ends[i]` in `data`; the items listed in `failures` have no bytes.
    /// With `more` (issue 11), these are the next finished items of a call
    /// still running (progress of a long chunk); the last reply has `more: false`.
    Done {
        id: u64,
        data: ByteBuf,
        ends: Ends,
        failures: Vec<(u32, Failure)>,
        more: bool,
    },
    /// Issue 13: the fds of the next reply on the shared-memory link that
    /// takes some.
    Fds,
}

/// Parent → a supervised child, after `Ready` (issue 11).
#[derive(Debug, Serialize, Deserialize)]
pub enum ToChild {
    /// Stop soon: `multiproc::stop_requested()` turns true in the child.
    Stop,
}

/// A supervised child → its parent, after `Ready` (issue 11).
#[derive(Debug, Serialize, Deserialize)]
pub enum FromChild {
    /// `multiproc::heartbeat()`: the child is making progress.
    Heartbeat,
    /// `multiproc::request_recycle()`: replace me with a fresh process.
    Recycle,
}

/// A `SharedMemory` handle on the wire: its name, size and the segment's fd.
#[derive(Debug, Serialize, Deserialize)]
pub struct ShmHandle {
    pub name: String,
    pub size: u64,
    pub fd: PassFd,
}

/// A process → the resource tracker, on that process's own connection.
#[derive(Debug, Serialize, Deserialize)]
pub enum TrackerMessage {
    /// First message: who is on this connection.
    Hello { pid: u32 },
    /// This process created the named shared memory segment.
    Created { name: String },
    /// This process mapped an existing segment.
    Attached { name: String },
    /// Someone unlinked it: nothing to clean up any more.
    Unlinked { name: String },
    /// Answer with `Hello { pid: <tracker> }` once every message and every
    /// closed connection it has seen so far is processed.
    Sync,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_from_another_build_or_protocol_is_refused() {
        assert!(Hello::ours().check().is_ok());
        let other_build = Hello { build_id: super::super::build_id() ^ 1, ..Hello::ours() };
        let why = other_build.check().expect_err("another build");
        assert!(why.contains("another build") && why.contains("same binary"), "{why}");
        let other_protocol = Hello { protocol: super::super::PROTOCOL_VERSION + 1, ..Hello::ours() };
        assert!(other_protocol.check().expect_err("another protocol").contains("protocol"));
    }
}
