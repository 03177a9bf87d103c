//! The fd side table: handles that own file descriptors (pipe ends, queues,
//! shared memory) serialize as an index into a table that travels beside the
//! msgpack bytes and crosses the socket with `SCM_RIGHTS`.
//!
//! [`capture`] opens an outgoing table on this thread for the duration of an
//! encode; [`provide`] installs an incoming one for a decode. [`PassFd`] is the
//! serde type that reads and writes those tables.

use std::cell::RefCell;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

thread_local! {
    static OUTGOING: RefCell<Option<Vec<OwnedFd>>> = const { RefCell::new(None) };
    static INCOMING: RefCell<Option<Vec<Option<OwnedFd>>>> = const { RefCell::new(None) };
}

/// Runs `f` (an encode) and returns its result with the fds it captured.
pub fn capture<R>(f: impl FnOnce() -> R) -> (R, Vec<OwnedFd>) {
    let outer = OUTGOING.with(|t| t.borrow_mut().replace(Vec::new()));
    let r = f();
    let fds = OUTGOING.with(|t| std::mem::replace(&mut *t.borrow_mut(), outer)).unwrap_or_default();
    (r, fds)
}

/// Runs `f` (a decode) with `fds` available to [`PassFd`]; fds it did not take
/// are closed.
pub fn provide<R>(fds: Vec<OwnedFd>, f: impl FnOnce() -> R) -> R {
    let outer = INCOMING.with(|t| t.borrow_mut().replace(fds.into_iter().map(Some).collect()));
    let r = f();
    INCOMING.with(|t| *t.borrow_mut() = outer);
    r
}

/// A file descriptor that can be part of a serialized value sent through a
/// `multiproc` channel (task arguments, pipe and queue messages).
///
/// Serializing duplicates the fd into the outgoing table; deserializing takes
/// ownership of the received one. Outside a channel it fails with a clear
/// error instead of sending a meaningless number.
#[derive(Debug)]
pub struct PassFd(pub OwnedFd);

impl PassFd {
    /// The descriptor, borrowed.
    pub fn borrow(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Serialize for PassFd {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let dup = self.0.try_clone().map_err(serde::ser::Error::custom)?;
        let index = OUTGOING.with(|t| {
            t.borrow_mut().as_mut().map(|table| {
                table.push(dup);
                table.len() - 1
            })
        });
        match index {
            Some(i) => s.serialize_u32(u32::try_from(i).map_err(serde::ser::Error::custom)?),
            None => Err(serde::ser::Error::custom(
                "a handle owning a file descriptor can only be sent to another process through multiproc (Process/Pool arguments, Pipe, Queue)",
            )),
        }
    }
}

impl<'de> Deserialize<'de> for PassFd {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let i = u32::deserialize(d)? as usize;
        INCOMING
            .with(|t| t.borrow_mut().as_mut().and_then(|table| table.get_mut(i).and_then(Option::take)))
            .map(PassFd)
            .ok_or_else(|| serde::de::Error::custom(format!("file descriptor #{i} missing from the message")))
    }
}
