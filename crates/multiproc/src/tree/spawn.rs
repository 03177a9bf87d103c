//! Starting one child: a socketpair, a fork through the supervisor and the
//! forkserver, the hello (protocol version, build id, the child's pid) and
//! the first message, until the child accepts or refuses. The hello and the
//! first message are written before the fork even happens: the child finds
//! them waiting.
//!
//! The wait for the child's answer also watches its exit: a child that dies
//! before accepting is reported as `WorkerLost` at once, whoever else might
//! hold its socket. The whole exchange has a deadline; a child that misses
//! it is killed.

use std::os::fd::OwnedFd;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::wire::{Channel, DEFAULT_MAX_FRAME, FromWorker, Hello, ToWorker};

use super::supervisor::{self, ExitState};

/// How long a started child may take to say hello and accept its work.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(60);
/// Once the child is known to have exited, how long its last words may take
/// to be read (they are already in the socket; this only bounds a socket
/// some other process still holds).
const LAST_WORDS: Duration = Duration::from_secs(1);
/// Once a child's socket has closed before it accepted, how long its end
/// may take to be reported (a few milliseconds: the forkserver reaps it).
/// No report by then means the forkserver never had the child: its start
/// request was lost, and the start fails rather than wait forever.
const END_REPORT: Duration = Duration::from_secs(10);

/// Starts a child, says hello, sends its first message and waits until it
/// accepts. Returns the child and the open channel.
pub(crate) async fn handshake(
    exec: bool,
    name: String,
    daemon: bool,
    msg: &ToWorker,
    fds: Vec<OwnedFd>,
    task: &str,
) -> Result<(supervisor::Spawned, Channel)> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)?;
    let mut ch = Channel::new(ours, DEFAULT_MAX_FRAME)?;
    ch.feed(&Hello::ours())?;
    ch.feed_with(msg, fds)?;
    // In the socket before the request goes: the child finds them there
    // instead of waiting for this runtime's next look at its fds.
    ch.flush_now()?;
    let mut spawned = supervisor::spawn(exec, theirs, name.clone(), daemon)?;
    let mut exit = spawned.exit.clone();
    let mut pid = None;
    let mut own = None;
    let reply = {
        let reply = async {
            ch.flush().await?;
            let hello: Hello = ch.recv().await?;
            hello.check().map_err(Error::Handshake)?;
            pid = Some(hello.pid);
            let (msg, mut fds) = ch.recv_raw::<FromWorker>().await?;
            // A `Process` child sends its own pidfd with `Ready`.
            if matches!(msg, FromWorker::Ready) && fds.len() == 1 {
                own = fds.pop();
            }
            Ok(msg)
        };
        tokio::pin!(reply);
        let exited = async {
            let _ = exit.wait_for(Option::is_some).await;
        };
        tokio::select! {
            biased;
            r = &mut reply => Some(r),
            () = exited => {
                // It is gone: whatever it wrote before is in the socket.
                tokio::time::timeout(LAST_WORDS, &mut reply).await.ok()
            }
            () = tokio::time::sleep(HANDSHAKE_DEADLINE) => {
                tracing::warn!(id = spawned.id, "a child did not finish its handshake in time; killing it");
                let _ = supervisor::signal_child(spawned.id, nix::libc::SIGKILL);
                return Err(Error::Timeout);
            }
        }
    };
    let reported = || *spawned.started.borrow();
    spawned.pid = pid.or_else(reported).unwrap_or(0);
    if let (Some(pid), Some(own), Some(to)) = (pid, own, spawned.own_pidfd.take()) {
        let _ = to.send((pid, own));
    }
    match reply {
        Some(Ok(FromWorker::Ready)) => {
            // A signal sent from now on reaches it: the supervisor knows its
            // id, and the forkserver read its spawn request before forking.
            supervisor::ready(&spawned, &name, daemon);
            Ok((spawned, ch))
        }
        Some(Ok(FromWorker::Refused { reason })) => {
            Err(Error::TaskMismatch(Box::new(crate::TaskMismatch { name: task.to_owned(), reason })))
        }
        Some(Ok(FromWorker::Done { .. } | FromWorker::Fds)) => {
            let _ = supervisor::signal_child(spawned.id, nix::libc::SIGKILL);
            Err(Error::Malformed("a worker answered before being asked".into()))
        }
        None | Some(Err(Error::Eof | Error::Io(_) | Error::Malformed(_))) => {
            // It died, or hung up, before accepting: make sure it is gone
            // (a no-op for a child already dead), then report how it ended.
            let _ = supervisor::signal_child(spawned.id, nix::libc::SIGKILL);
            let mut exit = spawned.exit.clone();
            let Ok(state) = tokio::time::timeout(END_REPORT, exit.wait_for(Option::is_some)).await else {
                tracing::warn!(id = spawned.id, "a child's start was never reported: its request was lost");
                return Err(Error::Io(std::io::Error::other("the forkserver never reported this child's start")));
            };
            let state = state.map_err(|_| Error::Closed("supervisor"))?.clone();
            let pid = spawned.started.borrow().unwrap_or(spawned.pid);
            match state {
                Some(ExitState::Exited(status)) => Err(Error::WorkerLost { pid, status }),
                Some(ExitState::NotStarted(reason)) => Err(Error::Io(std::io::Error::other(reason))),
                _ => Err(Error::ForkserverLost { pid }),
            }
        }
        Some(Err(e)) => {
            let _ = supervisor::signal_child(spawned.id, nix::libc::SIGKILL);
            Err(e)
        }
    }
}
