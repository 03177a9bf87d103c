//! The shared-memory call path of a pool worker (issue 13): calls and
//! replies travel through a `shmcall::Link` (two rings in one memfd) instead
//! of the worker's socket, with the link's adaptive spin-then-sleep waits.
//!
//! The socket stays, for three things:
//! - **file descriptors**: a call or reply that carries fds sends them over
//!   the socket first (a `Fds` message), then writes its frame to the ring
//!   saying how many it takes; the reader takes them from the socket when it
//!   reaches that frame. Frames stay in order on the ring, whatever carries
//!   fds;
//! - **the end of the other side**: a worker that dies (however) closes its
//!   socket; the parent's slot sees that (and the exit report) exactly as on
//!   the socket path, and fails exactly the call that was running;
//! - **control**: the `Shm` message that sets the link up, after `Ready`.
//!
//! A frame on a ring is `len: u32 LE`, `fds: u32 LE`, then `len` bytes of
//! msgpack (`ToWorker` or `FromWorker`). Both numbers are checked against
//! the frame limit and the most fds one message may carry before anything
//! is allocated or waited for.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::shmcall::{Link, Parts, Want, Woke};
use crate::wire::{BlockingChannel, Channel, DEFAULT_MAX_FRAME, FromWorker, ToWorker};

/// Bytes each direction of a worker's link buffers. A chunk's arguments or
/// results larger than this stream through it (the reader empties it as the
/// writer fills it).
pub(crate) const CAPACITY: usize = 512 << 10;
const HEADER: usize = 8;
/// Most fds one message may carry (the kernel's `SCM_MAX_FD`).
const MAX_FDS: usize = 253;

/// Appends `msg` as one ring frame that takes `fds` file descriptors.
fn push_frame<T: Serialize>(out: &mut Vec<u8>, msg: &T, fds: usize) -> Result<()> {
    let at = out.len();
    out.extend_from_slice(&[0; HEADER]);
    if let Err(e) = rmp_serde::encode::write(out, msg) {
        out.truncate(at);
        return Err(Error::encode("a pool message", e));
    }
    let len = out.len() - at - HEADER;
    if len > DEFAULT_MAX_FRAME {
        out.truncate(at);
        return Err(Error::FrameTooLarge { len, max: DEFAULT_MAX_FRAME });
    }
    if fds > MAX_FDS {
        out.truncate(at);
        return Err(Error::InvalidArgument(format!("{fds} file descriptors in one message (at most {MAX_FDS})")));
    }
    out[at..at + 4].copy_from_slice(&(len as u32).to_le_bytes());
    out[at + 4..at + 8].copy_from_slice(&(fds as u32).to_le_bytes());
    Ok(())
}

/// Bytes read from a ring and not yet taken as frames.
#[derive(Debug, Default)]
struct Inbox {
    buf: Vec<u8>,
    start: usize,
}

impl Inbox {
    /// Moves what the ring holds into the buffer; the bytes moved.
    fn fill(&mut self, link: &Link) -> io::Result<usize> {
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let avail = link.readable()?;
        if avail == 0 {
            return Ok(0);
        }
        let old = self.buf.len();
        self.buf.resize(old + avail, 0);
        let n = link.read(&mut self.buf[old..])?;
        self.buf.truncate(old + n);
        Ok(n)
    }

    /// The next whole frame's length and fd count, checked.
    fn peek(&self) -> Result<Option<(usize, usize)>> {
        let have = &self.buf[self.start..];
        let Some(header) = have.get(..HEADER) else { return Ok(None) };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let fds = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if len > DEFAULT_MAX_FRAME {
            return Err(Error::Malformed(format!("a ring frame of {len} bytes (at most {DEFAULT_MAX_FRAME})")));
        }
        if fds > MAX_FDS {
            return Err(Error::Malformed(format!("a ring frame with {fds} file descriptors (at most {MAX_FDS})")));
        }
        Ok((have.len() >= HEADER + len).then_some((len, fds)))
    }

    /// Decodes the frame [`peek`](Self::peek) found and moves past it.
    fn take<T: DeserializeOwned>(&mut self, len: usize) -> Result<T> {
        let body = &self.buf[self.start + HEADER..self.start + HEADER + len];
        self.start += HEADER + len;
        crate::wire::decode("a pool message", body)
    }

    /// Bytes of a frame not yet whole.
    fn partial_len(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// Drops `fds` that came for no frame of ours (a misbehaving peer).
fn stash(queue: &mut VecDeque<OwnedFd>, fds: Vec<OwnedFd>) -> Result<()> {
    queue.extend(fds);
    if queue.len() > 4 * MAX_FDS {
        return Err(Error::Malformed("file descriptors for no pool message".into()));
    }
    Ok(())
}

/// The parent's end of a worker's link (held by the slot's owner).
#[derive(Debug)]
pub(crate) struct ParentRing {
    link: Link,
    inbox: Inbox,
    /// Frames not yet in the ring (it was full), from `sent` on.
    out: Vec<u8>,
    sent: usize,
    /// Fds that came over the socket for frames not read yet.
    fds: VecDeque<OwnedFd>,
}

impl ParentRing {
    /// A new link: the parent's end, and the message with the fds that hand
    /// the other end to the worker.
    pub fn create() -> Result<(Self, ToWorker, Vec<OwnedFd>)> {
        let (ours, theirs) = Link::pair(CAPACITY)?;
        let Parts { ring, bell, peer_bell, end } = theirs.parts()?;
        let ring_end = Self { link: ours, inbox: Inbox::default(), out: Vec::new(), sent: 0, fds: VecDeque::new() };
        Ok((ring_end, ToWorker::Shm { end }, vec![ring, bell, peer_bell]))
    }

    /// Queues a call; its fds go ahead over the socket. It reaches the ring
    /// at the next [`pump`](Self::pump): the calls taken together go in one
    /// write, which wakes a sleeping worker once for all of them.
    pub fn send(&mut self, ch: &mut Channel, msg: &ToWorker, fds: Vec<OwnedFd>) -> Result<()> {
        let at = self.out.len();
        push_frame(&mut self.out, msg, fds.len())?;
        if !fds.is_empty()
            && let Err(e) = ch.feed_with(&ToWorker::Fds, fds)
        {
            self.out.truncate(at);
            return Err(e);
        }
        Ok(())
    }

    /// Writes what fits of the queued frames.
    pub fn pump(&mut self) -> io::Result<()> {
        while self.sent < self.out.len() {
            let n = self.link.write(&self.out[self.sent..])?;
            if n == 0 {
                break;
            }
            self.sent += n;
        }
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        }
        Ok(())
    }

    /// What a wait for the worker is for: results, and room if a call
    /// waits for it.
    pub fn want(&self) -> Want {
        if self.out.is_empty() { Want::Data } else { Want::Either }
    }

    /// The next whole reply, if its fds are here too.
    pub fn next(&mut self) -> Result<Option<(FromWorker, Vec<OwnedFd>)>> {
        loop {
            if let Some((len, nfds)) = self.inbox.peek()? {
                if self.fds.len() < nfds {
                    return Ok(None);
                }
                let fds = self.fds.drain(..nfds).collect();
                return Ok(Some((self.inbox.take(len)?, fds)));
            }
            if self.inbox.fill(&self.link)? == 0 {
                return Ok(None);
            }
        }
    }

    /// Fds the worker sent ahead of a reply.
    pub fn add_fds(&mut self, fds: Vec<OwnedFd>) -> Result<()> {
        stash(&mut self.fds, fds)
    }

    pub fn partial_len(&self) -> usize {
        self.inbox.partial_len()
    }

    pub fn link(&mut self) -> &mut Link {
        &mut self.link
    }
}

/// A copy of this worker's end of its link, for tests that make a worker
/// misbehave on it ([`write_raw`]).
static RAW: std::sync::OnceLock<std::sync::Mutex<Link>> = std::sync::OnceLock::new();

/// Writes raw bytes on this pool worker's link, bypassing the framing;
/// `None` when the worker has no link (tests only).
pub(crate) fn write_raw(bytes: &[u8]) -> Option<Result<()>> {
    let link = RAW.get()?.lock().ok()?;
    let mut sent = 0;
    while sent < bytes.len() {
        match link.write(&bytes[sent..]) {
            Ok(0) => return Some(Err(Error::Closed("the pool worker's link (full)"))),
            Ok(n) => sent += n,
            Err(e) => return Some(Err(e.into())),
        }
    }
    Some(Ok(()))
}

/// Whether this process is a pool worker whose calls come through a link.
pub(crate) fn on_link() -> bool {
    RAW.get().is_some()
}

/// The worker's end of its link.
#[derive(Debug)]
pub(crate) struct WorkerRing {
    link: Link,
    inbox: Inbox,
    out: Vec<u8>,
    fds: VecDeque<OwnedFd>,
}

impl WorkerRing {
    /// The end a `Shm { end }` message handed over with `fds` (checked: a
    /// foreign memfd is refused).
    pub fn open(end: u8, fds: Vec<OwnedFd>) -> Result<Self> {
        let [ring, bell, peer_bell]: [OwnedFd; 3] =
            fds.try_into().map_err(|_| Error::Malformed("a pool link needs three file descriptors".into()))?;
        let link = Link::from_parts(Parts { ring, bell, peer_bell, end })?;
        if let Ok(copy) = link.try_clone() {
            let _ = RAW.set(std::sync::Mutex::new(copy));
        }
        Ok(Self { link, inbox: Inbox::default(), out: Vec::new(), fds: VecDeque::new() })
    }

    /// The next call and its fds; `None` once the parent hung up.
    pub fn recv(&mut self, ch: &mut BlockingChannel) -> Result<Option<(ToWorker, Vec<OwnedFd>)>> {
        loop {
            if let Some((len, nfds)) = self.inbox.peek()? {
                while self.fds.len() < nfds {
                    // Sent before the frame: on its way or there.
                    match ch.recv_raw::<ToWorker>() {
                        Ok((ToWorker::Fds, fds)) => stash(&mut self.fds, fds)?,
                        Ok(_) => return Err(Error::Malformed("expected a call's file descriptors".into())),
                        Err(Error::Eof) => return Ok(None),
                        Err(e) => return Err(e),
                    }
                }
                let fds = self.fds.drain(..nfds).collect();
                return Ok(Some((self.inbox.take(len)?, fds)));
            }
            if self.inbox.fill(&self.link)? > 0 {
                continue;
            }
            match self.link.wait_blocking(Want::Data, ch.fd(), None)? {
                Woke::Ready | Woke::TimedOut => {}
                Woke::Socket => match ch.recv_raw::<ToWorker>() {
                    Ok((ToWorker::Fds, fds)) => stash(&mut self.fds, fds)?,
                    Ok(_) => return Err(Error::Malformed("expected a call on the ring".into())),
                    Err(Error::Eof) => return Ok(None),
                    Err(e) => return Err(e),
                },
            }
        }
    }

    /// Sends a reply (its fds ahead over the socket); returns once all of
    /// it is in the ring. An error before anything was sent leaves the
    /// link usable (the caller may send a smaller reply instead).
    pub fn send(&mut self, ch: &mut BlockingChannel, msg: &FromWorker, fds: Vec<OwnedFd>) -> Result<()> {
        self.out.clear();
        push_frame(&mut self.out, msg, fds.len())?;
        if !fds.is_empty() {
            ch.feed_with(&FromWorker::Fds, fds)?;
            ch.flush()?;
        }
        let mut sent = 0;
        while sent < self.out.len() {
            let n = self.link.write(&self.out[sent..])?;
            sent += n;
            if n == 0 && self.link.wait_blocking(Want::Room, ch.fd(), None)? == Woke::Socket {
                // A writer wakes for the socket only on a hang-up.
                return Err(Error::Eof);
            }
        }
        self.out.clear();
        Ok(())
    }
}
