//! `Pipe` and `Connection`: two ends of a Unix stream socketpair carrying
//! framed messages (msgpack values or raw bytes), usable from async code and,
//! through the `blocking_*` twins, from sync code in workers.
//!
//! The socket is always non-blocking. Async methods register it with the
//! current tokio runtime the first time they would have to wait; blocking
//! methods wait with `poll(2)`. So one `Connection` may be used both ways,
//! and a `Connection` received by a sync worker task never needs a runtime.
//!
//! Writes go straight to the socket; only what the socket does not take is
//! kept in the connection's buffer (and written before anything else), so a
//! cancelled `send` loses nothing and later messages keep their order. Reads
//! take up to 64 KiB at a time: many small frames per system call.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use multiproc_sys::fd::set_nonblocking;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::io::Interest;
use tokio::net::UnixStream;

use crate::error::{Error, Result};
use crate::shmcall::{self, Link, Parts, Spinner, Want, Woke};
use crate::wire::fds::{self, PassFd};
use crate::wire::{DEFAULT_MAX_FRAME, FrameReader, FrameWriter, HEADER_LEN, header};

/// Makes connected pairs: `multiprocessing.Pipe`.
///
/// ```no_run
/// # async fn demo() -> multiproc::Result<()> {
/// // parent_conn, child_conn = Pipe()
/// let (mut parent_conn, mut child_conn) = multiproc::Pipe::new()?;
/// child_conn.send(&[42, 7]).await?;
/// assert_eq!(parent_conn.recv::<Vec<i32>>().await?, vec![42, 7]);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Pipe;

impl Pipe {
    /// Two ends that can both send and receive (`Pipe()`, `Pipe(True)`).
    #[expect(clippy::new_ret_no_self, reason = "Python's Pipe() returns the two ends, not a Pipe")]
    pub fn new() -> Result<(Connection, Connection)> {
        Self::builder().build()
    }

    /// `(reader, writer)`: the first end only receives, the second only
    /// sends (`Pipe(duplex=False)`).
    pub fn simplex() -> Result<(Connection, Connection)> {
        Self::builder().duplex(false).build()
    }

    /// Options beyond `duplex`: the largest message, a shared-memory fast
    /// path; finish with [`PipeBuilder::build`].
    pub fn builder() -> PipeBuilder {
        PipeBuilder { duplex: true, max_message: DEFAULT_MAX_FRAME, shared_memory: false }
    }
}

/// Options of a [`Pipe`].
#[derive(Debug, Clone)]
pub struct PipeBuilder {
    duplex: bool,
    max_message: usize,
    shared_memory: bool,
}

impl PipeBuilder {
    /// Both ends send and receive (the default), or `(reader, writer)`.
    pub fn duplex(&mut self, duplex: bool) -> &mut Self {
        self.duplex = duplex;
        self
    }

    /// Largest message, in bytes, either end sends or accepts (64 MiB by
    /// default). A larger `send` fails with [`Error::FrameTooLarge`] and
    /// leaves the connection usable.
    pub fn max_message(&mut self, bytes: usize) -> &mut Self {
        self.max_message = bytes;
        self
    }

    /// Carries the messages' bytes through shared memory instead of the
    /// socket (off by default): a ring each way in one memfd mapping, where
    /// a waiting end spins briefly while a core is idle before it sleeps, so
    /// a round trip between two busy processes makes no system call. Both
    /// ends must live in `multiproc` processes (they map the memory when
    /// they receive the end). The API is the same: fds still travel, `poll`
    /// works, and a closed or dead other end reads as [`Error::Eof`] once the
    /// buffered messages are read. Each end may be used by one process at a
    /// time (a second concurrent user gets an error, not mixed bytes).
    /// See `shmcall` in ARCHITECTURE.md for when it spins.
    pub fn shared_memory(&mut self, on: bool) -> &mut Self {
        self.shared_memory = on;
        self
    }

    /// Creates the two ends: `(a, b)` for a duplex pipe, `(reader, writer)`
    /// for a simplex one. Pass either end to a child as a task argument.
    pub fn build(&self) -> Result<(Connection, Connection)> {
        use nix::sys::socket::{AddressFamily, Shutdown, SockFlag, SockType, shutdown, socketpair};
        if self.max_message > u32::MAX as usize {
            return Err(Error::FrameTooLarge { len: self.max_message, max: u32::MAX as usize });
        }
        let (a, b) =
            socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK)?;
        let mut a = Connection::with(a, self.max_message);
        let mut b = Connection::with(b, self.max_message);
        if !self.duplex {
            shutdown(a.fd()?.as_raw_fd(), Shutdown::Write)?;
            shutdown(b.fd()?.as_raw_fd(), Shutdown::Read)?;
            a.writable = false;
            b.readable = false;
        }
        if self.shared_memory {
            let (la, lb) = Link::pair(shmcall::DEFAULT_CAPACITY)?;
            a.shm = Some(Box::new(la));
            b.shm = Some(Box::new(lb));
        }
        Ok((a, b))
    }
}

/// Bytes [`Connection::feed`] lets accumulate before it writes.
pub const BATCH_BYTES: usize = 64 << 10;

/// Raw messages at least this big are written straight from the caller's
/// buffer instead of being copied into the connection's first.
const DIRECT_BYTES: usize = 64 << 10;

/// A large `send_bytes` in progress, written from the caller's buffer. If it
/// stops half way (cancelled, or an error), the unsent rest is queued so the
/// stream stays well-formed: a message goes out whole or not at all.
struct DirectSend<'a> {
    conn: &'a mut Connection,
    header: [u8; HEADER_LEN],
    payload: &'a [u8],
    sent: usize,
}

impl DirectSend<'_> {
    fn done(&self) -> bool {
        self.sent == HEADER_LEN + self.payload.len()
    }

    /// One write attempt; `Ok(false)` when the socket is full.
    fn write_some(&mut self, via_runtime: bool) -> Result<bool> {
        use nix::sys::socket::{MsgFlags, sendmsg};
        let (head, body) = if self.sent < HEADER_LEN {
            (&self.header[self.sent..], self.payload)
        } else {
            (&[][..], &self.payload[self.sent - HEADER_LEN..])
        };
        let write = |fd: BorrowedFd<'_>| -> io::Result<usize> {
            let bufs = [io::IoSlice::new(head), io::IoSlice::new(body)];
            Ok(sendmsg::<()>(fd.as_raw_fd(), &bufs, &[], MsgFlags::MSG_NOSIGNAL, None)?)
        };
        let r = match self.conn.io.as_ref().ok_or(Error::Closed("connection"))? {
            Io::Registered(s) if via_runtime => s.try_io(Interest::WRITABLE, || write(s.as_fd())),
            other => write(other.fd()),
        };
        match r {
            Ok(n) => {
                self.sent += n;
                Ok(true)
            }
            Err(e) if would_block(&e) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for DirectSend<'_> {
    fn drop(&mut self) {
        if self.sent > 0 && !self.done() {
            if self.sent < HEADER_LEN {
                self.conn.writer.push_raw(&self.header[self.sent..]);
            }
            let from = self.sent.saturating_sub(HEADER_LEN);
            self.conn.writer.push_raw(&self.payload[from..]);
        }
    }
}

/// How the socket is waited on: not yet registered with a runtime, or
/// registered with the one that first waited on it.
#[derive(Debug)]
enum Io {
    Plain(OwnedFd),
    Registered(UnixStream),
}

impl Io {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Io::Plain(fd) => fd.as_fd(),
            Io::Registered(s) => s.as_fd(),
        }
    }
}

/// One end of a [`Pipe`]: `multiprocessing.connection.Connection`.
///
/// Messages keep their boundaries; `send`/`recv` carry msgpack values (which
/// may hold handles such as another `Connection` or a `Queue`: their fds
/// travel with the message), `send_bytes`/`recv_bytes` carry raw bytes. When
/// every copy of the other end is closed, in every process, `recv` fails with
/// [`Error::Eof`] once the buffered messages are read.
///
/// A `Connection` is an argument like any other: `Process::new(f, (conn,))`
/// gives the child its own copy of the socket. Python's caveat holds: two
/// processes reading (or writing) the *same* end at once interleave bytes.
#[derive(Debug)]
pub struct Connection {
    io: Option<Io>,
    reader: FrameReader,
    writer: FrameWriter,
    max: usize,
    readable: bool,
    writable: bool,
    /// The shared-memory path: bytes go through it, fds and the other end's
    /// liveness through the socket.
    shm: Option<Box<Link>>,
    /// Shared-memory path: the socket may have something (fds, or its end).
    socket_hint: bool,
    /// Shared-memory path: the socket reached its end (the other end is
    /// closed everywhere); what is left in the ring is all there is.
    peer_gone: bool,
    /// Shared-memory path: when a send last checked that the other end is
    /// still there, and whether the last write attempt waits on the socket
    /// (fds) rather than on room in the ring.
    peer_checked: Option<Instant>,
    blocked_on_socket: bool,
    /// Socket path: how long a receive polls the socket before it sleeps.
    spin: Spinner,
}

/// How often a send on the shared-memory path checks (one `poll(2)`) that
/// the other end still exists, as a socket's send does on every call.
const PEER_CHECK: Duration = Duration::from_millis(1);

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// Waits with `poll(2)` until `fd` is ready; `false` on timeout.
fn poll_fd(fd: BorrowedFd<'_>, write: bool, deadline: Option<Instant>) -> io::Result<bool> {
    multiproc_sys::fd::wait_ready(fd, write, deadline)
}

/// Registers the socket with the current runtime (first async wait only).
fn registered(io: &mut Option<Io>) -> Result<&UnixStream> {
    if let Some(Io::Plain(_)) = io {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Io(io::Error::other(
                "async Connection methods need a tokio runtime; use the blocking_* methods in sync code",
            )));
        }
        let Some(Io::Plain(fd)) = io.take() else { unreachable!("matched just above") };
        // On failure the socket is gone: the connection reads as closed.
        *io = Some(Io::Registered(UnixStream::from_std(std::os::unix::net::UnixStream::from(fd))?));
    }
    match io {
        Some(Io::Registered(s)) => Ok(s),
        _ => Err(Error::Closed("connection")),
    }
}

/// Waits (async) until the socket may be ready after a `WouldBlock`.
///
/// Async attempts go through tokio's `try_io`, which clears its readiness
/// flag when the system call says `WouldBlock`, so this sleeps until the
/// kernel reports readiness again. (Blocking attempts bypass tokio; the flag
/// they may leave set only costs one more attempt.)
async fn ready_async(io: &mut Option<Io>, write: bool) -> Result<()> {
    let s = registered(io)?;
    let interest = if write { Interest::WRITABLE } else { Interest::READABLE };
    s.ready(interest).await?;
    Ok(())
}

impl Connection {
    fn with(fd: OwnedFd, max: usize) -> Self {
        Self {
            io: Some(Io::Plain(fd)),
            reader: FrameReader::new(max),
            writer: FrameWriter::default(),
            max,
            readable: true,
            writable: true,
            shm: None,
            socket_hint: false,
            peer_gone: false,
            peer_checked: None,
            spin: Spinner::full(),
            blocked_on_socket: false,
        }
    }

    /// Wraps a connected Unix stream socket (one end of a socketpair made
    /// elsewhere, for instance). Both ends must be `multiproc` connections.
    pub fn from_fd(fd: OwnedFd) -> Result<Self> {
        set_nonblocking(fd.as_fd())?;
        Ok(Self::with(fd, DEFAULT_MAX_FRAME))
    }

    /// Another handle on the same end (the socket is duplicated; buffers
    /// are not). Useful to pass an end to a child while keeping it, as
    /// Python code does by passing `pipe` and then calling `pipe[0].close()`.
    pub fn try_clone(&self) -> Result<Self> {
        let fd = self.fd()?.try_clone_to_owned()?;
        let mut c = Self::with(fd, self.max);
        c.readable = self.readable;
        c.writable = self.writable;
        if let Some(link) = &self.shm {
            c.shm = Some(Box::new(link.try_clone()?));
        }
        Ok(c)
    }

    /// Whether this end carries messages through shared memory
    /// ([`PipeBuilder::shared_memory`]).
    pub fn is_shared_memory(&self) -> bool {
        self.shm.is_some()
    }

    /// Largest message this end sends or accepts.
    pub fn max_message(&self) -> usize {
        self.max
    }

    /// Changes the largest message this end sends or accepts.
    pub fn set_max_message(&mut self, bytes: usize) {
        self.max = bytes.min(u32::MAX as usize);
        self.reader.set_max(self.max);
    }

    fn fd(&self) -> Result<BorrowedFd<'_>> {
        self.io.as_ref().map(Io::fd).ok_or(Error::Closed("connection"))
    }

    /// Closes this end (`conn.close()`); later calls fail with
    /// [`Error::Closed`]. Dropping the connection does the same.
    pub fn close(&mut self) {
        self.io = None;
    }

    /// Whether [`close`](Self::close) was called on this end (`conn.closed`).
    pub fn is_closed(&self) -> bool {
        self.io.is_none()
    }

    fn check(&self, write: bool) -> Result<()> {
        self.fd()?;
        match (write, self.writable, self.readable) {
            (true, false, _) => Err(Error::Closed("connection for sending (it is the reading end of a simplex pipe)")),
            (false, _, false) => {
                Err(Error::Closed("connection for receiving (it is the writing end of a simplex pipe)"))
            }
            _ => Ok(()),
        }
    }

    /// Queues `msg` as one frame, without writing.
    fn queue_frame<T: Serialize + ?Sized>(&mut self, msg: &T) -> Result<()> {
        self.check(true)?;
        self.writer.push(self.max, |buf| {
            let (r, fds) =
                fds::capture(|| rmp_serde::encode::write(buf, msg).map_err(|e| Error::encode("a message", e)));
            r.map(|()| fds)
        })
    }

    fn feed_bytes(&mut self, buf: &[u8]) -> Result<()> {
        self.check(true)?;
        self.writer.push(self.max, |out| {
            out.extend_from_slice(buf);
            Ok(Vec::new())
        })
    }

    /// One write attempt; `Ok(false)` when the socket is full. `via_runtime`:
    /// an async caller, whose `WouldBlock` must clear tokio's readiness.
    fn write_some(&mut self, via_runtime: bool) -> Result<bool> {
        if self.shm.is_some() {
            return self.shm_write_some(via_runtime);
        }
        let Self { io, writer, .. } = self;
        let r = match io.as_ref().ok_or(Error::Closed("connection"))? {
            Io::Registered(s) if via_runtime => s.try_io(Interest::WRITABLE, || writer.write_to(s.as_fd())),
            other => writer.write_to(other.fd()),
        };
        match r {
            Ok(()) => Ok(true),
            Err(e) if would_block(&e) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// One read attempt; `Ok(false)` when nothing was there. `via_runtime`
    /// as for [`write_some`](Self::write_some).
    fn read_some(&mut self, via_runtime: bool) -> Result<bool> {
        if self.shm.is_some() {
            return self.shm_read_some(via_runtime);
        }
        let Self { io, reader, .. } = self;
        let r = match io.as_ref().ok_or(Error::Closed("connection"))? {
            Io::Registered(s) if via_runtime => s.try_io(Interest::READABLE, || reader.read_from(s.as_fd())),
            other => reader.read_from(other.fd()),
        };
        match r {
            Ok(_) => Ok(true),
            Err(e) if would_block(&e) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes every queued message (see [`feed`](Self::feed)).
    pub async fn flush(&mut self) -> Result<()> {
        while !self.writer.is_empty() {
            if !self.write_some(true)? {
                self.wait_writable().await?;
            }
        }
        Ok(())
    }

    /// [`flush`](Self::flush) for sync code.
    pub fn blocking_flush(&mut self) -> Result<()> {
        while !self.writer.is_empty() {
            if !self.write_some(false)? {
                self.blocking_wait_writable()?;
            }
        }
        Ok(())
    }

    /// Whether a whole frame (or the end of the stream) is buffered.
    fn has_frame(&self) -> Result<bool> {
        // (On the shared-memory path a frame's fds come over the socket, on
        // their own: the frame is whole once they are in too.)
        Ok((self.reader.has_frame()? && self.reader.fds_missing()? == 0) || self.reader.is_eof())
    }

    /// Socket path: polls the socket with non-blocking reads for this
    /// connection's spin budget, only while a core is idle (the shared-memory
    /// link's rule, see `shmcall`). An answer that comes meanwhile costs this
    /// side no wake-up: on this VM waking an idle CPU takes 50-90 µs, most of
    /// a round trip. Reads the fd directly: tokio's readiness flag changes
    /// only when its reactor runs, and a stale flag only costs one empty read.
    /// It never spins past `deadline` (`poll(Some(ZERO))` just looks).
    fn spin_read(&mut self, deadline: Option<Instant>) -> Result<bool> {
        let limit = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let mut spin = std::mem::take(&mut self.spin);
        // Each poll is a system call: the clock is read after every one.
        let r = spin.spin(limit, 1, || self.read_some(false));
        self.spin = spin;
        r
    }

    async fn fill(&mut self, deadline: Option<Instant>) -> Result<bool> {
        while !self.has_frame()? {
            if !self.read_some(true)? {
                if self.shm.is_none() && self.spin_read(deadline)? {
                    continue;
                }
                if let Some(link) = self.shm.as_deref_mut() {
                    let sock = registered(&mut self.io)?;
                    match link.wait_async(Want::Data, sock, deadline).await? {
                        Woke::Ready => {}
                        Woke::Socket => self.socket_hint = true,
                        Woke::TimedOut => return Ok(false),
                    }
                    continue;
                }
                let slept = Instant::now();
                let wait = ready_async(&mut self.io, false);
                match deadline {
                    None => wait.await?,
                    Some(d) => match tokio::time::timeout_at(d.into(), wait).await {
                        Ok(r) => r?,
                        Err(_) => return Ok(false),
                    },
                }
                self.spin.woke_after(slept.elapsed());
            }
        }
        Ok(true)
    }

    fn blocking_fill(&mut self, deadline: Option<Instant>) -> Result<bool> {
        while !self.has_frame()? {
            if self.read_some(false)? {
                continue;
            }
            if let Some(link) = self.shm.as_deref_mut() {
                let sock = self.io.as_ref().map(Io::fd).ok_or(Error::Closed("connection"))?;
                match link.wait_blocking(Want::Data, sock, deadline)? {
                    Woke::Ready => {}
                    Woke::Socket => self.socket_hint = true,
                    Woke::TimedOut => return Ok(false),
                }
            } else if !self.spin_read(deadline)? {
                let slept = Instant::now();
                if !poll_fd(self.fd()?, false, deadline)? {
                    return Ok(false);
                }
                self.spin.woke_after(slept.elapsed());
            }
        }
        Ok(true)
    }

    /// Waits (async) until a write may make progress.
    async fn wait_writable(&mut self) -> Result<()> {
        match self.shm.as_deref_mut() {
            Some(link) if !self.blocked_on_socket => {
                let sock = registered(&mut self.io)?;
                if link.wait_async(Want::Room, sock, None).await? == Woke::Socket {
                    self.check_peer(true)?;
                    self.socket_hint = true;
                }
                Ok(())
            }
            _ => ready_async(&mut self.io, true).await,
        }
    }

    /// [`wait_writable`](Self::wait_writable) for sync code.
    fn blocking_wait_writable(&mut self) -> Result<()> {
        match self.shm.as_deref_mut() {
            Some(link) if !self.blocked_on_socket => {
                let sock = self.io.as_ref().map(Io::fd).ok_or(Error::Closed("connection"))?;
                if link.wait_blocking(Want::Room, sock, None)? == Woke::Socket {
                    self.check_peer(true)?;
                    self.socket_hint = true;
                }
                Ok(())
            }
            _ => poll_fd(self.fd()?, true, None).map(drop).map_err(Into::into),
        }
    }

    /// Shared-memory path: fails with a broken pipe once the other end is
    /// closed everywhere, as a socket's send does. Looks (one `poll(2)`) at
    /// most every [`PEER_CHECK`] unless `now`.
    fn check_peer(&mut self, now: bool) -> Result<()> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        if !now && self.peer_checked.is_some_and(|t| t.elapsed() < PEER_CHECK) {
            return Ok(());
        }
        self.peer_checked = Some(Instant::now());
        // A hang-up is reported whatever the events asked: the other end is
        // closed everywhere. (Not POLLRDHUP: a simplex writing end has shut
        // its own reading side.)
        let mut fds = [PollFd::new(self.fd()?, PollFlags::empty())];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(io::Error::from(e).into()),
        }
        let gone = PollFlags::POLLHUP | PollFlags::POLLERR;
        if self.peer_gone || fds[0].revents().is_some_and(|r| r.intersects(gone)) {
            self.peer_gone = true;
            return Err(io::Error::from(io::ErrorKind::BrokenPipe).into());
        }
        Ok(())
    }

    /// [`write_some`](Self::write_some) on the shared-memory path: queued fds
    /// first, over the socket, then as many bytes as the ring takes.
    fn shm_write_some(&mut self, via_runtime: bool) -> Result<bool> {
        self.check_peer(false)?;
        let Self { io, writer, shm, blocked_on_socket, .. } = self;
        let link = shm.as_deref().ok_or(Error::Closed("connection"))?;
        let sent = match io.as_ref().ok_or(Error::Closed("connection"))? {
            Io::Registered(s) if via_runtime => s.try_io(Interest::WRITABLE, || writer.send_fds(s.as_fd())),
            other => writer.send_fds(other.fd()),
        };
        match sent {
            Ok(()) => *blocked_on_socket = false,
            Err(e) if would_block(&e) => {
                *blocked_on_socket = true;
                return Ok(false);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(true),
            Err(e) => return Err(e.into()),
        }
        let n = writer.write_with(|bytes| link.write(bytes))?;
        Ok(n > 0 || writer.is_empty())
    }

    /// [`read_some`](Self::read_some) on the shared-memory path: bytes from
    /// the ring; fds, or the end of the stream, from the socket when a frame
    /// waits for fds or a wait saw the socket readable.
    fn shm_read_some(&mut self, via_runtime: bool) -> Result<bool> {
        let Self { io, reader, shm, socket_hint, peer_gone, .. } = self;
        let link = shm.as_deref().ok_or(Error::Closed("connection"))?;
        let mut progress = reader.fill_with(|buf| link.read(buf))? > 0;
        if *socket_hint || reader.fds_missing()? > 0 {
            *socket_hint = false;
            let r = match io.as_ref().ok_or(Error::Closed("connection"))? {
                Io::Registered(s) if via_runtime => s.try_io(Interest::READABLE, || reader.recv_fds(s.as_fd())),
                other => reader.recv_fds(other.fd()),
            };
            match r {
                Ok(0) => *peer_gone = true,
                Ok(_) => progress = true,
                Err(e) if would_block(&e) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                Err(e) => return Err(e.into()),
            }
        }
        if *peer_gone && !progress {
            // Whatever the other end wrote before it went is in the ring:
            // take it all, then report the end.
            progress = reader.fill_with(|buf| link.read(buf))? > 0;
            if !progress {
                reader.set_eof();
                progress = true;
            }
        }
        Ok(progress)
    }

    fn decode_next<T: DeserializeOwned>(&mut self) -> Result<T> {
        let frame = self.reader.next_frame()?.ok_or(Error::Eof)?;
        let payload = frame.payload;
        fds::provide(frame.fds, || crate::wire::decode("a message", payload))
    }

    fn bytes_next(&mut self) -> Result<Vec<u8>> {
        Ok(self.reader.next_frame()?.ok_or(Error::Eof)?.payload.to_vec())
    }

    /// Sends one value (`conn.send(obj)`). Returns once the socket has taken
    /// all of it. Cancel-safe: a dropped call leaves the message queued
    /// whole, to be written before the next one.
    pub async fn send<T: Serialize + ?Sized>(&mut self, msg: &T) -> Result<()> {
        self.queue_frame(msg)?;
        self.flush().await
    }

    /// [`send`](Self::send) for sync code.
    pub fn blocking_send<T: Serialize + ?Sized>(&mut self, msg: &T) -> Result<()> {
        self.queue_frame(msg)?;
        self.blocking_flush()
    }

    /// Queues one value to be sent, writing only once 64 KiB are
    /// queued: many small messages then cost one system call. Queued
    /// messages are sent by the next [`flush`](Self::flush) or `send`, in
    /// order; call `flush` when done, as with a buffered writer (dropping
    /// the connection makes one last attempt that does not wait).
    pub async fn feed<T: Serialize + ?Sized>(&mut self, msg: &T) -> Result<()> {
        self.queue_frame(msg)?;
        if self.writer.pending_len() >= BATCH_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    /// [`feed`](Self::feed) for sync code.
    pub fn blocking_feed<T: Serialize + ?Sized>(&mut self, msg: &T) -> Result<()> {
        self.queue_frame(msg)?;
        if self.writer.pending_len() >= BATCH_BYTES {
            self.blocking_flush()?;
        }
        Ok(())
    }

    /// Sends raw bytes as one message (`conn.send_bytes(buf)`). Cancel-safe
    /// like [`send`](Self::send).
    pub async fn send_bytes(&mut self, buf: &[u8]) -> Result<()> {
        if buf.len() < DIRECT_BYTES || self.shm.is_some() {
            self.feed_bytes(buf)?;
            return self.flush().await;
        }
        self.check(true)?;
        let header = header(buf.len(), 0, self.max)?;
        self.flush().await?;
        let mut d = DirectSend { conn: self, header, payload: buf, sent: 0 };
        while !d.done() {
            if !d.write_some(true)? {
                ready_async(&mut d.conn.io, true).await?;
            }
        }
        Ok(())
    }

    /// [`send_bytes`](Self::send_bytes) for sync code.
    pub fn blocking_send_bytes(&mut self, buf: &[u8]) -> Result<()> {
        if buf.len() < DIRECT_BYTES || self.shm.is_some() {
            self.feed_bytes(buf)?;
            return self.blocking_flush();
        }
        self.check(true)?;
        let header = header(buf.len(), 0, self.max)?;
        self.blocking_flush()?;
        let mut d = DirectSend { conn: self, header, payload: buf, sent: 0 };
        while !d.done() {
            if !d.write_some(false)? {
                poll_fd(d.conn.fd()?, true, None)?;
            }
        }
        Ok(())
    }

    /// Sends `size` bytes of `buf` from `offset` (`send_bytes(buf, offset,
    /// size)`; `None`: to the end); a range outside `buf` is
    /// [`Error::BadRange`].
    pub async fn send_bytes_range(&mut self, buf: &[u8], offset: usize, size: Option<usize>) -> Result<()> {
        let part = range(buf, offset, size)?;
        self.send_bytes(part).await
    }

    /// [`send_bytes_range`](Self::send_bytes_range) for sync code.
    pub fn blocking_send_bytes_range(&mut self, buf: &[u8], offset: usize, size: Option<usize>) -> Result<()> {
        let part = range(buf, offset, size)?;
        self.blocking_send_bytes(part)
    }

    /// Receives one value (`conn.recv()`); [`Error::Eof`] when the other end
    /// is closed everywhere and nothing is left. Cancel-safe.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<T> {
        self.check(false)?;
        self.fill(None).await?;
        self.decode_next()
    }

    /// [`recv`](Self::recv) for sync code.
    pub fn blocking_recv<T: DeserializeOwned>(&mut self) -> Result<T> {
        self.check(false)?;
        self.blocking_fill(None)?;
        self.decode_next()
    }

    /// Receives one message as raw bytes (`conn.recv_bytes()`).
    pub async fn recv_bytes(&mut self) -> Result<Vec<u8>> {
        self.check(false)?;
        self.fill(None).await?;
        self.bytes_next()
    }

    /// [`recv_bytes`](Self::recv_bytes) for sync code.
    pub fn blocking_recv_bytes(&mut self) -> Result<Vec<u8>> {
        self.check(false)?;
        self.blocking_fill(None)?;
        self.bytes_next()
    }

    /// Whether a whole message (or the end of the stream) can be received
    /// without waiting, after waiting up to `timeout` for one (`None`:
    /// forever; `Some(ZERO)`: just look). `conn.poll(timeout)`.
    pub async fn poll(&mut self, timeout: Option<Duration>) -> Result<bool> {
        self.check(false)?;
        let deadline = timeout.map(|t| Instant::now() + t);
        self.fill(deadline).await
    }

    /// [`poll`](Self::poll) for sync code.
    pub fn blocking_poll(&mut self, timeout: Option<Duration>) -> Result<bool> {
        self.check(false)?;
        let deadline = timeout.map(|t| Instant::now() + t);
        self.blocking_fill(deadline)
    }
}

impl Connection {
    /// `poll_flush` of the `Sink`: writes until done or the socket is full.
    fn poll_write_all(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<()>> {
        use std::task::Poll;
        loop {
            if self.writer.is_empty() {
                return Poll::Ready(Ok(()));
            }
            if self.write_some(true)? {
                continue;
            }
            match self.shm.as_deref_mut() {
                Some(link) if !self.blocked_on_socket => {
                    std::task::ready!(link.poll_room(cx))?;
                }
                // As in `ready_async`: the failed attempt cleared readiness.
                _ => std::task::ready!(registered(&mut self.io)?.poll_write_ready(cx))?,
            }
        }
    }
}

/// Messages as a `futures::Sink`: `start_send` queues as [`Connection::feed`]
/// does, `poll_flush` writes, so `SinkExt::send_all` batches by itself.
/// `poll_close` flushes and closes this end.
impl<T: Serialize> futures::Sink<T> for Connection {
    type Error = Error;

    fn poll_ready(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<()>> {
        let this = self.get_mut();
        if this.writer.pending_len() >= BATCH_BYTES { this.poll_write_all(cx) } else { std::task::Poll::Ready(Ok(())) }
    }

    fn start_send(self: std::pin::Pin<&mut Self>, item: T) -> Result<()> {
        self.get_mut().queue_frame(&item)
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<()>> {
        self.get_mut().poll_write_all(cx)
    }

    fn poll_close(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_write_all(cx))?;
        this.close();
        std::task::Poll::Ready(Ok(()))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Fed but unflushed messages: one last write that does not wait.
        if !self.writer.is_empty() && self.io.is_some() {
            while matches!(self.write_some(false), Ok(true)) && !self.writer.is_empty() {}
        }
    }
}

fn range(buf: &[u8], offset: usize, size: Option<usize>) -> Result<&[u8]> {
    let size = size.unwrap_or(buf.len().saturating_sub(offset));
    offset.checked_add(size).and_then(|end| buf.get(offset..end)).ok_or(Error::BadRange {
        offset,
        size,
        len: buf.len(),
    })
}

/// What crosses a process boundary: the socket (out of band) and the
/// connection's settings. Buffered, unread messages stay behind.
impl Serialize for Connection {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let fd = self.fd().map_err(serde::ser::Error::custom)?;
        let fd = fd.try_clone_to_owned().map_err(serde::ser::Error::custom)?;
        let shm = match &self.shm {
            None => None,
            Some(link) => {
                let p = link.parts().map_err(serde::ser::Error::custom)?;
                Some((PassFd(p.ring), PassFd(p.bell), PassFd(p.peer_bell), p.end))
            }
        };
        (PassFd(fd), self.max as u64, self.readable, self.writable, shm).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Connection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        type ShmParts = Option<(PassFd, PassFd, PassFd, u8)>;
        let (fd, max, readable, writable, shm) = <(PassFd, u64, bool, bool, ShmParts)>::deserialize(d)?;
        set_nonblocking(fd.borrow()).map_err(serde::de::Error::custom)?;
        let mut c = Self::with(fd.0, usize::try_from(max).unwrap_or(usize::MAX));
        c.readable = readable;
        c.writable = writable;
        if let Some((ring, bell, peer_bell, end)) = shm {
            let parts = Parts { ring: ring.0, bell: bell.0, peer_bell: peer_bell.0, end };
            c.shm = Some(Box::new(Link::from_parts(parts).map_err(serde::de::Error::custom)?));
        }
        Ok(c)
    }
}
