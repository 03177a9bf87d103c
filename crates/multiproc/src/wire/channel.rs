//! Framed msgpack channels over a Unix stream socket, with fds attached:
//! [`Channel`] for async code, [`BlockingChannel`] for the forkserver and for
//! sync code in workers. Both wait for readiness the same way a blocking
//! socket would, so the fd may be shared between them across processes.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::Interest;
use tokio::net::UnixStream;

use super::fds;
use super::frame::{Frame, FrameReader, FrameWriter};
use crate::error::{Error, Result};

/// Encodes `msg` into `buf`, collecting the fds its handles own.
fn encode_into<T: Serialize + ?Sized>(buf: &mut Vec<u8>, msg: &T) -> (Result<()>, Vec<OwnedFd>) {
    fds::capture(|| rmp_serde::encode::write(buf, msg).map_err(|e| Error::encode("a message", e)))
}

/// Decodes a frame whose fds belong to handles inside the message itself.
fn decode_frame<T: DeserializeOwned>(frame: Frame<'_>) -> Result<T> {
    let Frame { payload, fds: list } = frame;
    fds::provide(list, || super::decode("a message", payload))
}

/// Decodes a frame and hands its fds back for a nested payload to use.
fn decode_frame_raw<T: DeserializeOwned>(frame: Frame<'_>) -> Result<(T, Vec<OwnedFd>)> {
    Ok((super::decode("a message", frame.payload)?, frame.fds))
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// Waits until `fd` is readable or writable, as a blocking socket would;
/// with a deadline, fails with `TimedOut` once it passed.
fn wait_ready(fd: BorrowedFd<'_>, write: bool, deadline: Option<Instant>) -> io::Result<()> {
    if multiproc_sys::fd::wait_ready(fd, write, deadline)? { Ok(()) } else { Err(io::ErrorKind::TimedOut.into()) }
}

/// A framed channel used from synchronous code.
#[derive(Debug)]
pub(crate) struct BlockingChannel {
    fd: OwnedFd,
    reader: FrameReader,
    writer: FrameWriter,
    max: usize,
}

impl BlockingChannel {
    pub fn new(fd: OwnedFd, max: usize) -> Self {
        Self { fd, reader: FrameReader::new(max), writer: FrameWriter::default(), max }
    }

    /// A channel over a datagram socket (`SOCK_SEQPACKET`), one frame per
    /// datagram: every read is given room for a whole datagram, however
    /// many frames are buffered unread (a stream's reader may be given
    /// less, and a datagram cut short loses its tail).
    pub fn datagrams(fd: OwnedFd, max: usize) -> Self {
        let mut ch = Self::new(fd, max);
        ch.reader.set_datagrams();
        ch
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Changes the largest frame accepted from now on.
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
        self.reader.set_max(max);
    }

    /// Queues a message without writing it.
    pub fn feed<T: Serialize + ?Sized>(&mut self, msg: &T) -> Result<()> {
        self.feed_with(msg, Vec::new())
    }

    /// Queues a message with extra fds (for payloads encoded earlier).
    pub fn feed_with<T: Serialize + ?Sized>(&mut self, msg: &T, mut extra: Vec<OwnedFd>) -> Result<()> {
        self.writer.push(self.max, |buf| {
            let (r, own) = encode_into(buf, msg);
            extra.extend(own);
            r.map(|()| extra)
        })
    }

    pub fn flush(&mut self) -> Result<()> {
        while !self.writer.is_empty() {
            match self.writer.write_to(self.fd.as_fd()) {
                Ok(()) => {}
                Err(e) if would_block(&e) => wait_ready(self.fd.as_fd(), true, None)?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    pub fn send<T: Serialize + ?Sized>(&mut self, msg: &T) -> Result<()> {
        self.feed(msg)?;
        self.flush()
    }

    /// Whether everything queued has been written.
    pub fn is_flushed(&self) -> bool {
        self.writer.is_empty()
    }

    /// Reads until a frame is buffered (or the deadline passes: `Timeout`;
    /// a deadline needs a non-blocking fd).
    fn fill(&mut self, deadline: Option<Instant>) -> Result<()> {
        while !self.reader.has_frame()? && !self.reader.is_eof() {
            match self.reader.read_from(self.fd.as_fd()) {
                Ok(_) => {}
                Err(e) if would_block(&e) => wait_ready(self.fd.as_fd(), false, deadline)
                    .map_err(|e| if e.kind() == io::ErrorKind::TimedOut { Error::Timeout } else { e.into() })?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    pub fn recv<T: DeserializeOwned>(&mut self) -> Result<T> {
        self.fill(None)?;
        let frame = self.reader.next_frame()?.ok_or(Error::Eof)?;
        decode_frame(frame)
    }

    /// [`recv`](Self::recv) with a deadline (`Error::Timeout` after it); the
    /// fd must be non-blocking.
    pub fn recv_until<T: DeserializeOwned>(&mut self, deadline: Instant) -> Result<T> {
        self.fill(Some(deadline))?;
        let frame = self.reader.next_frame()?.ok_or(Error::Eof)?;
        decode_frame(frame)
    }

    pub fn recv_raw<T: DeserializeOwned>(&mut self) -> Result<(T, Vec<OwnedFd>)> {
        self.fill(None)?;
        let frame = self.reader.next_frame()?.ok_or(Error::Eof)?;
        decode_frame_raw(frame)
    }

    /// Whether the other end closed the stream (what is buffered is all).
    pub fn is_eof(&self) -> bool {
        self.reader.is_eof()
    }

    /// Reads without waiting until the socket has nothing more (or the
    /// stream ended); `Ok(false)` when nothing was there at all.
    pub fn read_all_available(&mut self) -> Result<bool> {
        let mut any = false;
        while !self.reader.is_eof() && self.read_available()? {
            any = true;
        }
        Ok(any)
    }

    /// One read without waiting; `Ok(false)` when nothing was there.
    pub fn read_available(&mut self) -> Result<bool> {
        match self.reader.read_from(self.fd.as_fd()) {
            Ok(_) => Ok(true),
            Err(e) if would_block(&e) || e.kind() == io::ErrorKind::Interrupted => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Takes a buffered frame, if any, without reading.
    pub fn try_recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>> {
        match self.reader.next_frame()? {
            Some(frame) => decode_frame(frame).map(Some),
            None => Ok(None),
        }
    }
}

/// A framed channel used from async code on a tokio runtime. The fd may be
/// any stream socket (Unix or TCP): tokio's `UnixStream` only registers it
/// for readiness; all I/O goes through `sendmsg`/`recvmsg`.
#[derive(Debug)]
pub(crate) struct Channel {
    fd: UnixStream,
    reader: FrameReader,
    writer: FrameWriter,
    max: usize,
    /// For [`recv_spinning`](Self::recv_spinning).
    spin: crate::shmcall::Spinner,
}

impl Channel {
    /// Registers the socket with the current runtime (sets `O_NONBLOCK`).
    pub fn new(fd: OwnedFd, max: usize) -> Result<Self> {
        multiproc_sys::fd::set_nonblocking(fd.as_fd())?;
        Ok(Self {
            fd: UnixStream::from_std(std::os::unix::net::UnixStream::from(fd))?,
            reader: FrameReader::new(max),
            writer: FrameWriter::default(),
            max,
            spin: crate::shmcall::Spinner::full(),
        })
    }

    pub fn feed<T: Serialize + ?Sized>(&mut self, msg: &T) -> Result<()> {
        self.feed_with(msg, Vec::new())
    }

    pub fn feed_with<T: Serialize + ?Sized>(&mut self, msg: &T, mut extra: Vec<OwnedFd>) -> Result<()> {
        self.writer.push(self.max, |buf| {
            let (r, own) = encode_into(buf, msg);
            extra.extend(own);
            r.map(|()| extra)
        })
    }

    /// Changes the largest frame accepted from now on.
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
        self.reader.set_max(max);
    }

    /// Bytes of an incomplete frame buffered so far (issue 11).
    pub fn partial_len(&self) -> usize {
        self.reader.partial_len()
    }

    /// Writes what is queued as far as the socket takes it now, without
    /// waiting for the runtime to report it writable (a socket just made
    /// is, and the runtime learns so only at its next look); the rest stays
    /// queued for [`flush`](Self::flush).
    pub fn flush_now(&mut self) -> Result<()> {
        while !self.writer.is_empty() {
            match self.writer.write_to(self.fd.as_fd()) {
                Ok(()) => {}
                Err(e) if would_block(&e) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> Result<()> {
        while !self.writer.is_empty() {
            self.fd.writable().await?;
            match self.fd.try_io(Interest::WRITABLE, || self.writer.write_to(self.fd.as_fd())) {
                Ok(()) => {}
                Err(e) if would_block(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    pub async fn send<T: Serialize + ?Sized>(&mut self, msg: &T) -> Result<()> {
        self.feed(msg)?;
        self.flush().await
    }

    async fn fill(&mut self) -> Result<()> {
        while !self.reader.has_frame()? && !self.reader.is_eof() {
            self.fd.readable().await?;
            match self.fd.try_io(Interest::READABLE, || self.reader.read_from(self.fd.as_fd())) {
                Ok(_) => {}
                Err(e) if would_block(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// [`recv`](Self::recv) for a reply expected soon (a client's request
    /// to a server): first polls the socket with non-blocking reads for this
    /// channel's spin budget, only while a core is idle (the rule of
    /// `shmcall`'s waits), so an answer that comes meanwhile costs this side
    /// no wake-up (50-90 µs for an idle CPU on this VM). The reads go to the
    /// fd directly: tokio's readiness flag changes only when its reactor
    /// runs. Not for a server's wait on its clients.
    pub async fn recv_spinning<T: DeserializeOwned>(&mut self) -> Result<T> {
        if self.reader.has_frame()? || self.reader.is_eof() || self.spin_fill()? {
            return self.recv().await;
        }
        let slept = Instant::now();
        let r = self.recv().await;
        self.spin.woke_after(slept.elapsed());
        r
    }

    /// Reads for the spin budget; whether a whole frame (or the end) came.
    fn spin_fill(&mut self) -> Result<bool> {
        let mut spin = std::mem::take(&mut self.spin);
        let (fd, reader) = (&self.fd, &mut self.reader);
        let r = spin.spin(None, 1, || -> Result<bool> {
            match reader.read_from(fd.as_fd()) {
                Ok(_) => Ok(reader.has_frame()? || reader.is_eof()),
                Err(e) if would_block(&e) || e.kind() == io::ErrorKind::Interrupted => Ok(false),
                Err(e) => Err(e.into()),
            }
        });
        self.spin = spin;
        r
    }

    /// Receives one message. Cancel-safe: a dropped call loses no bytes.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<T> {
        self.fill().await?;
        let frame = self.reader.next_frame()?.ok_or(Error::Eof)?;
        decode_frame(frame)
    }

    /// Receives one message and the fds that came with it, writing
    /// nothing. Cancel-safe.
    pub async fn recv_raw<T: DeserializeOwned>(&mut self) -> Result<(T, Vec<OwnedFd>)> {
        self.fill().await?;
        let frame = self.reader.next_frame()?.ok_or(Error::Eof)?;
        decode_frame_raw(frame)
    }

    /// Receives one message while writing what `feed` queued, so that a
    /// peer busy writing its replies can never deadlock against our own
    /// writes. A buffered frame is returned first: writes then go out in one
    /// batch once nothing more is there to read. Cancel-safe.
    pub async fn recv_flushing<T: DeserializeOwned>(&mut self) -> Result<(T, Vec<OwnedFd>)> {
        loop {
            if self.reader.has_frame()? || self.reader.is_eof() {
                let frame = self.reader.next_frame()?.ok_or(Error::Eof)?;
                return decode_frame_raw(frame);
            }
            let interest =
                if self.writer.is_empty() { Interest::READABLE } else { Interest::READABLE | Interest::WRITABLE };
            let ready = self.fd.ready(interest).await?;
            if ready.is_writable() && !self.writer.is_empty() {
                match self.fd.try_io(Interest::WRITABLE, || self.writer.write_to(self.fd.as_fd())) {
                    Ok(()) => {}
                    Err(e) if would_block(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if ready.is_readable() || ready.is_read_closed() {
                match self.fd.try_io(Interest::READABLE, || self.reader.read_from(self.fd.as_fd())) {
                    Ok(_) => {}
                    Err(e) if would_block(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
}
