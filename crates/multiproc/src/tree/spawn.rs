//! Starting one child: a socketpair, a fork through the supervisor and the
//! forkserver, the hello (protocol version and build id) and the first
//! message, until the child accepts or refuses.

use std::os::fd::OwnedFd;

use crate::error::{Error, Result};
use crate::wire::{Channel, DEFAULT_MAX_FRAME, FromWorker, Hello, ToWorker};

use super::supervisor::{self, ExitState};

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
    let spawned = supervisor::spawn(exec, theirs, name, daemon).await?;
    ch.feed(&Hello::ours())?;
    ch.feed_with(msg, fds)?;
    let reply = async {
        ch.flush().await?;
        let hello: Hello = ch.recv().await?;
        hello.check().map_err(Error::Handshake)?;
        ch.recv::<FromWorker>().await
    }
    .await;
    match reply {
        Ok(FromWorker::Ready) => Ok((spawned, ch)),
        Ok(FromWorker::Refused { reason }) => Err(Error::TaskMismatch { name: task.to_owned(), reason }),
        Ok(FromWorker::Done { .. }) => Err(Error::Malformed("a worker answered before being asked".into())),
        Err(Error::Eof) | Err(Error::Io(_)) => {
            // It died before accepting: report how.
            let mut exit = spawned.exit.clone();
            let state = *exit.wait_for(Option::is_some).await.map_err(|_| Error::Closed("supervisor"))?;
            match state {
                Some(ExitState::Exited(status)) => Err(Error::WorkerLost { pid: spawned.pid, status }),
                _ => Err(Error::ForkserverLost { pid: spawned.pid }),
            }
        }
        Err(e) => Err(e),
    }
}
