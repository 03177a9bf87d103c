//! Framing: a 4-byte big-endian payload length, a 1-byte count of attached
//! fds, then the msgpack payload. Lengths are checked against the limit before
//! any allocation, and a partial frame is "need more", not an error.
//!
//! The reader grows its buffer as a frame's bytes arrive (at most doubling
//! what it holds), never to the announced length up front: a peer that
//! announces 64 MiB and sends two bytes costs a chunk, not 64 MiB. Buffers
//! that grew for a large frame are given back once it is consumed.
//!
//! One framing core for every channel: [`FrameReader`] and [`FrameWriter`]
//! hold the bytes and fds and know the format, and do no I/O of their own
//! beyond the one-call helpers (`read_from`, `write_to`) built on their
//! sans-I/O halves (`read_buf` + `filled`, `pending` + `consumed`). The
//! async `Channel`, the `BlockingChannel` and `Connection` (socket or
//! shared-memory bytes) differ only in how they wait.
//!
//! Fds and their frame: the writer sends a frame's fds with the `sendmsg`
//! that starts at that frame's first byte (one frame's fds per call), and
//! the kernel hands them to the `recvmsg` that reads that byte. So the
//! frame owning fds always starts inside the bytes of the read that
//! brought them: fds still unclaimed when a frame starting after those
//! bytes is decoded were announced by no frame, and are closed.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

use multiproc_sys::fdpass::{self, CmsgBuffer, MAX_FDS_PER_MESSAGE};

use crate::error::{Error, Result};

pub(crate) const HEADER_LEN: usize = 5;
/// Default largest payload a connection accepts.
pub const DEFAULT_MAX_FRAME: usize = 64 << 20;
const READ_CHUNK: usize = 64 << 10;
/// A new reader's first read: it doubles, up to [`READ_CHUNK`], each time a
/// read fills all the room it was given. A fresh buffer is zero-filled
/// before the first read, and a child just forked pays a page fault per
/// page it writes: a connection that only ever carries a few small frames
/// (a child's hello and first message) touches one page, not sixteen.
const FIRST_READ: usize = 4 << 10;
/// Buffers larger than this are freed once empty.
const SHRINK_ABOVE: usize = 1 << 20;
/// Fds queued ahead of the frames that announce them, at most.
const MAX_QUEUED_FDS: usize = 4 * MAX_FDS_PER_MESSAGE;

/// Builds a frame header.
pub(crate) fn header(len: usize, nfds: usize, max: usize) -> Result<[u8; HEADER_LEN]> {
    if len > max {
        return Err(Error::FrameTooLarge { len, max });
    }
    let nfds = u8::try_from(nfds).ok().filter(|&n| usize::from(n) <= MAX_FDS_PER_MESSAGE).ok_or_else(|| {
        Error::encode("a message", format!("{nfds} file descriptors in one message; at most {MAX_FDS_PER_MESSAGE}"))
    })?;
    let len = u32::try_from(len).map_err(|_| Error::FrameTooLarge { len, max })?;
    let mut h = [0; HEADER_LEN];
    h[..4].copy_from_slice(&len.to_be_bytes());
    h[4] = nfds;
    Ok(h)
}

/// An fd received and not yet claimed by a frame, with the stream position
/// the read that brought it ended at: the frame owning it starts before.
type QueuedFd = (u64, OwnedFd);

/// Position tag for fds that come on their own (the shared-memory path):
/// they precede their frame's bytes and never expire.
const NO_EXPIRY: u64 = u64::MAX;

/// The receiving half of a framed stream: bytes and fds read so far.
pub(crate) struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Stream position of `buf[start]` (bytes consumed so far).
    consumed: u64,
    fds: VecDeque<QueuedFd>,
    cmsg: CmsgBuffer,
    max: usize,
    eof: bool,
    /// Close every fd that arrives (for peers that never send any).
    refuse_fds: bool,
    /// Room a read is given when no frame asks for more ([`FIRST_READ`] up
    /// to [`READ_CHUNK`]).
    chunk: usize,
    /// One frame per datagram: every read gets [`READ_CHUNK`] of room.
    datagrams: bool,
}

impl std::fmt::Debug for FrameReader {
    /// A line, never the buffer: handles that hold a reader print short.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameReader")
            .field("buffered", &(self.end - self.start))
            .field("fds", &self.fds.len())
            .field("eof", &self.eof)
            .finish()
    }
}

/// One decoded frame, borrowed from the reader until the next read.
pub(crate) struct Frame<'a> {
    pub payload: &'a [u8],
    pub fds: Vec<OwnedFd>,
}

impl FrameReader {
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            end: 0,
            consumed: 0,
            fds: VecDeque::new(),
            cmsg: CmsgBuffer::default(),
            max,
            eof: false,
            refuse_fds: false,
            chunk: FIRST_READ,
            datagrams: false,
        }
    }

    /// Reads from a datagram socket from now on: each read is given
    /// [`READ_CHUNK`] of room, whatever is buffered (a datagram that fills
    /// it, which may have been cut, fails the read).
    pub fn set_datagrams(&mut self) {
        self.datagrams = true;
        self.chunk = READ_CHUNK;
    }

    /// `n` more bytes are in the buffer: a read that filled all its room
    /// asks for a larger one next time.
    fn grew(&mut self, n: usize) {
        self.end += n;
        if n > 0 && self.end == self.buf.len() {
            self.chunk = (self.chunk * 2).min(READ_CHUNK);
        }
    }

    /// Closes every fd that arrives from now on: for a peer whose messages
    /// never carry any, so its fds cannot pile up in this process.
    pub fn refuse_fds(&mut self) {
        self.refuse_fds = true;
        self.fds.clear();
    }

    /// Bytes of memory the buffer holds.
    pub fn allocated(&self) -> usize {
        self.buf.len()
    }

    /// Whether part of a frame is buffered (bytes that are not a whole frame).
    pub fn has_partial(&self) -> bool {
        self.start != self.end && !self.has_frame().unwrap_or(false)
    }

    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// Length of the frame at the head of the buffer, once its header is in.
    fn pending(&self) -> Result<Option<(usize, usize)>> {
        let have = &self.buf[self.start..self.end];
        if have.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes(have[..4].try_into().expect("four bytes")) as usize;
        if len > self.max {
            return Err(Error::FrameTooLarge { len, max: self.max });
        }
        Ok(Some((len, usize::from(have[4]))))
    }

    /// Whether a whole frame is buffered (a `next_frame` call will succeed
    /// without reading).
    pub fn has_frame(&self) -> Result<bool> {
        Ok(self.pending()?.is_some_and(|(len, _)| self.end - self.start >= HEADER_LEN + len))
    }

    /// Takes the next complete frame, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>> {
        let Some((len, nfds)) = self.pending()? else { return self.eof_check() };
        if self.end - self.start < HEADER_LEN + len {
            return self.eof_check();
        }
        // Fds from reads that ended where this frame starts, or before,
        // belong to no frame still to come: close them.
        while self.fds.front().is_some_and(|(expiry, _)| *expiry <= self.consumed) {
            self.fds.pop_front();
        }
        if self.fds.len() < nfds {
            return Err(Error::Malformed(format!("frame announces {nfds} fds, {} arrived", self.fds.len())));
        }
        let fds = self.fds.drain(..nfds).map(|(_, fd)| fd).collect();
        let at = self.start + HEADER_LEN;
        self.start = at + len;
        self.consumed += (HEADER_LEN + len) as u64;
        Ok(Some(Frame { payload: &self.buf[at..at + len], fds }))
    }

    fn eof_check<'a>(&self) -> Result<Option<Frame<'a>>> {
        if self.eof {
            return Err(if self.start == self.end {
                Error::Eof
            } else {
                Error::Malformed("stream ended inside a frame".into())
            });
        }
        Ok(None)
    }

    /// The sans-I/O read half: free space to read into (made first: a
    /// chunk, or following a large frame's bytes). Report what was read
    /// with [`filled`](Self::filled).
    pub fn read_buf(&mut self) -> &mut [u8] {
        self.make_room();
        &mut self.buf[self.end..]
    }

    /// Records `n` bytes read into [`read_buf`](Self::read_buf) and the fds
    /// that came with them; 0 bytes is the end of the stream (remembered).
    /// Fails, closing the queued fds, when more fds wait than any run of
    /// frames announces (a peer must not fill our fd table).
    pub fn filled(&mut self, n: usize, fds: Vec<OwnedFd>) -> io::Result<()> {
        let n = n.min(self.buf.len() - self.end);
        self.grew(n);
        if n == 0 {
            self.eof = true;
        }
        if self.refuse_fds || fds.is_empty() {
            return Ok(());
        }
        let expiry = self.consumed + (self.end - self.start) as u64;
        self.fds.extend(fds.into_iter().map(|fd| (expiry, fd)));
        if self.fds.len() > MAX_QUEUED_FDS {
            self.fds.clear();
            return Err(io::Error::new(io::ErrorKind::InvalidData, "more file descriptors than frames announce"));
        }
        Ok(())
    }

    /// One `recvmsg` into the buffer. `Ok(0)` is end of stream (remembered).
    pub fn read_from(&mut self, sock: BorrowedFd<'_>) -> io::Result<usize> {
        let mut fds = Vec::new();
        self.make_room();
        let room = self.buf.len() - self.end;
        let n = fdpass::recv(sock, &mut self.buf[self.end..], &mut self.cmsg, &mut fds)?;
        if self.datagrams && n >= room {
            // It may have been longer (its tail is then gone): none of ours is.
            return Err(io::Error::new(io::ErrorKind::InvalidData, "a datagram as long as the read buffer"));
        }
        self.filled(n, fds)?;
        Ok(n)
    }

    pub fn is_eof(&self) -> bool {
        self.eof
    }

    /// Bytes buffered that do not make a whole frame yet (issue 11: the pool
    /// declares a worker lost when such a partial frame stops growing).
    pub fn partial_len(&self) -> usize {
        if self.has_frame().unwrap_or(true) { 0 } else { self.end - self.start }
    }

    // -- The shared-memory path of a `Connection` (issue 13): frame bytes
    // come from a shared ring, fds from the socket, on their own.

    /// Reads into the buffer with `read` (given the free space) instead of
    /// from a socket.
    pub fn fill_with(&mut self, read: impl FnOnce(&mut [u8]) -> io::Result<usize>) -> io::Result<usize> {
        let n = read(self.read_buf())?;
        // Not the end of the stream: a ring with nothing in it yet.
        self.grew(n.min(self.buf.len() - self.end));
        Ok(n)
    }

    /// Fds the frame at the head announces and that have not arrived yet.
    pub fn fds_missing(&self) -> Result<usize> {
        Ok(self.pending()?.map_or(0, |(_, nfds)| nfds.saturating_sub(self.fds.len())))
    }

    /// One `recvmsg` of fds sent on their own (with a marker byte each),
    /// keeping the fds and dropping the bytes; the bytes read (0: the
    /// socket's end).
    pub fn recv_fds(&mut self, sock: BorrowedFd<'_>) -> io::Result<usize> {
        let mut markers = [0u8; 64];
        let mut fds = Vec::new();
        let n = fdpass::recv(sock, &mut markers, &mut self.cmsg, &mut fds)?;
        if !self.refuse_fds {
            self.fds.extend(fds.into_iter().map(|fd| (NO_EXPIRY, fd)));
            if self.fds.len() > MAX_QUEUED_FDS {
                self.fds.clear();
                return Err(io::Error::new(io::ErrorKind::InvalidData, "more file descriptors than frames announce"));
            }
        }
        Ok(n)
    }

    /// No more bytes will come: what is buffered is all there is.
    pub fn set_eof(&mut self) {
        self.eof = true;
    }

    /// Ensures free space to read into, compacting first: a chunk, or for a
    /// large frame as much as is already buffered of it (so the buffer at
    /// most doubles per read, following the bytes that arrive), never past
    /// the rest of the current frame.
    fn make_room(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > SHRINK_ABOVE {
                self.buf = Vec::new();
            }
        }
        let have = self.end - self.start;
        let chunk = self.chunk.min(HEADER_LEN + self.max);
        let need = match self.pending().ok().flatten() {
            Some((len, _)) if !self.datagrams => (HEADER_LEN + len).saturating_sub(have).min(chunk.max(have)).max(1),
            _ => chunk,
        };
        if self.buf.len() - self.end >= need {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < need {
            self.buf.resize(self.end + need, 0);
        }
    }
}

/// Outgoing bytes and fds not yet written.
#[derive(Default)]
pub(crate) struct FrameWriter {
    buf: Vec<u8>,
    sent: usize,
    /// Each frame's fds, with the offset in `buf` where the frame starts.
    fds: VecDeque<(usize, Vec<OwnedFd>)>,
}

impl std::fmt::Debug for FrameWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameWriter").field("pending", &self.pending_len()).field("fds", &self.fd_count()).finish()
    }
}

impl FrameWriter {
    /// Appends one frame whose payload `encode` writes; `encode` returns the
    /// fds that travel with it. On error nothing is appended.
    pub fn push(&mut self, max: usize, encode: impl FnOnce(&mut Vec<u8>) -> Result<Vec<OwnedFd>>) -> Result<()> {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; HEADER_LEN]);
        let written =
            encode(&mut self.buf).and_then(|fds| Ok((header(self.buf.len() - at - HEADER_LEN, fds.len(), max)?, fds)));
        match written {
            Ok((h, fds)) => {
                self.buf[at..at + HEADER_LEN].copy_from_slice(&h);
                if !fds.is_empty() {
                    self.fds.push_back((at, fds));
                }
                Ok(())
            }
            Err(e) => {
                self.buf.truncate(at);
                Err(e)
            }
        }
    }

    /// Appends bytes that continue a frame whose start was written
    /// elsewhere (straight from a caller's buffer), so the rest goes out
    /// before any later frame.
    pub fn push_raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    pub fn is_empty(&self) -> bool {
        self.sent == self.buf.len()
    }

    /// Bytes buffered and not yet written.
    pub fn pending_len(&self) -> usize {
        self.buf.len() - self.sent
    }

    /// Fds queued and not yet sent.
    pub fn fd_count(&self) -> usize {
        self.fds.iter().map(|(_, fds)| fds.len()).sum()
    }

    /// The sans-I/O write half: the bytes to write next, and the fds that
    /// must go with their first byte (a frame's, when it starts there). The
    /// bytes stop where the next frame with fds starts, so each write
    /// carries at most one frame's fds. Report with
    /// [`consumed`](Self::consumed).
    pub fn pending(&self) -> (&[u8], &[OwnedFd]) {
        let mut groups = self.fds.iter();
        let (fds, next): (&[OwnedFd], Option<usize>) = match groups.next() {
            Some((at, fds)) if *at == self.sent => (fds, groups.next().map(|(at, _)| *at)),
            Some((at, _)) => (&[], Some(*at)),
            None => (&[], None),
        };
        (&self.buf[self.sent..next.unwrap_or(self.buf.len())], fds)
    }

    /// Records that `n` bytes of [`pending`](Self::pending) were written,
    /// with its fds if `n > 0`.
    pub fn consumed(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        if self.fds.front().is_some_and(|(at, _)| *at == self.sent) {
            self.fds.pop_front();
        }
        self.sent = (self.sent + n).min(self.buf.len());
        if self.sent == self.buf.len() {
            self.buf.clear();
            self.sent = 0;
            if self.buf.capacity() > SHRINK_ABOVE {
                self.buf.shrink_to(READ_CHUNK);
            }
        }
    }

    /// Hands what is pending to `write` (a shared ring, issue 13) and
    /// forgets the bytes it took. Queued fds must have gone first
    /// ([`send_fds`](Self::send_fds)).
    pub fn write_with(&mut self, write: impl FnOnce(&[u8]) -> io::Result<usize>) -> io::Result<usize> {
        debug_assert!(self.fds.is_empty(), "fds go before their frame's bytes");
        let n = write(&self.buf[self.sent..])?;
        self.consumed(n);
        Ok(n)
    }

    /// Sends the queued fds on their own (one marker byte per frame's fds),
    /// ahead of the bytes of their frames.
    pub fn send_fds(&mut self, sock: BorrowedFd<'_>) -> io::Result<()> {
        use std::os::fd::AsFd;
        while let Some((_, fds)) = self.fds.front() {
            let fds: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
            fdpass::send(sock, &[io::IoSlice::new(&[0])], &fds)?;
            self.fds.pop_front();
        }
        Ok(())
    }

    /// One `sendmsg` of what is pending (see [`pending`](Self::pending)).
    pub fn write_to(&mut self, sock: BorrowedFd<'_>) -> io::Result<()> {
        use std::os::fd::{AsFd, AsRawFd};
        let (bytes, fds) = self.pending();
        let n = if fds.is_empty() {
            // The common case: a plain send, no ancillary data to build.
            use nix::sys::socket::{MsgFlags, send};
            send(sock.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL)?
        } else {
            let fds: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
            fdpass::send(sock, &[io::IoSlice::new(bytes)], &fds)?
        };
        self.consumed(n);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::{AsFd, AsRawFd};
    use std::os::unix::net::UnixStream;

    use super::*;

    fn pair() -> (UnixStream, UnixStream) {
        UnixStream::pair().expect("socketpair")
    }

    #[test]
    fn partial_frame_is_need_more_then_whole() {
        let (mut a, b) = pair();
        let mut r = FrameReader::new(1024);
        a.write_all(&[0, 0, 0, 3, 0, 1]).expect("write");
        r.read_from(b.as_fd()).expect("read");
        assert!(r.next_frame().expect("no error").is_none(), "two bytes missing: need more");
        a.write_all(&[2, 3]).expect("write");
        r.read_from(b.as_fd()).expect("read");
        let f = r.next_frame().expect("no error").expect("a frame");
        assert_eq!(f.payload, &[1, 2, 3]);
    }

    #[test]
    fn oversized_header_is_refused_before_allocating() {
        let (mut a, b) = pair();
        let mut r = FrameReader::new(1024);
        a.write_all(&[0, 0, 4, 1, 0]).expect("write");
        r.read_from(b.as_fd()).expect("read");
        assert!(matches!(r.next_frame(), Err(Error::FrameTooLarge { len: 1025, max: 1024 })));
        assert!(r.buf.len() <= READ_CHUNK, "no allocation for the announced size");
    }

    #[test]
    fn announced_but_unsent_bytes_are_not_allocated() {
        let (mut a, b) = pair();
        let mut r = FrameReader::new(64 << 20);
        a.write_all(&[4, 0, 0, 0, 0, 1, 2]).expect("write");
        r.read_from(b.as_fd()).expect("read");
        assert!(r.next_frame().expect("need more").is_none());
        assert!(r.allocated() <= READ_CHUNK, "the buffer follows the bytes, not the announced 64 MiB");
        assert!(r.has_partial());
        // Feed the rest in pieces: the buffer grows by at most doubling.
        let mut sent = 2usize;
        let total = 64 << 20;
        let piece = vec![7u8; 32 << 10];
        while sent < total {
            let n = piece.len().min(total - sent);
            a.write_all(&piece[..n]).expect("write");
            let mut got = 0;
            while got < n {
                got += r.read_from(b.as_fd()).expect("read");
            }
            sent += n;
            assert!(r.allocated() <= 2 * (HEADER_LEN + sent) + READ_CHUNK, "buffer {} for {sent} bytes", r.allocated());
        }
        assert_eq!(r.next_frame().expect("ok").expect("whole").payload.len(), total);
        a.write_all(&[0, 0, 0, 1, 0, 9]).expect("write");
        r.read_from(b.as_fd()).expect("read");
        assert!(r.allocated() <= READ_CHUNK, "the large buffer is given back");
        assert_eq!(r.next_frame().expect("ok").expect("small").payload, &[9]);
    }

    #[test]
    fn reads_start_small_and_grow_only_while_they_fill_up() {
        let (mut a, b) = pair();
        let mut r = FrameReader::new(64 << 20);
        // A child's few small frames: one page of buffer, however many.
        for i in 0..10u8 {
            a.write_all(&[0, 0, 0, 1, 0, i]).expect("write");
            r.read_from(b.as_fd()).expect("read");
            assert_eq!(r.next_frame().expect("ok").expect("a frame").payload, &[i]);
        }
        assert!(r.allocated() <= FIRST_READ, "{} bytes for one-byte frames", r.allocated());
        // A stream that fills every read: reads grow to the full chunk.
        let stream: Vec<u8> = (0..20_000).flat_map(|_| [0, 0, 0, 1, 0, 7]).collect();
        a.write_all(&stream).expect("write");
        let mut frames = 0;
        while frames < 20_000 {
            r.read_from(b.as_fd()).expect("read");
            while let Some(f) = r.next_frame().expect("ok") {
                assert_eq!(f.payload, &[7]);
                frames += 1;
            }
        }
        assert_eq!(r.chunk, READ_CHUNK);
    }

    /// Datagrams read back to back before any frame is taken (what the
    /// forkserver does with a burst of spawn requests): each read must get
    /// room for a whole datagram. A stream's reader, given only what the
    /// buffered frames leave, cut them once the buffer filled up (a burst
    /// of 300 pool starts lost its tail of requests).
    #[test]
    fn a_burst_of_datagrams_read_before_any_frame_is_taken_stays_whole() {
        use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, send, socketpair};
        let (a, b) =
            socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_NONBLOCK).expect("socketpair");
        let mut r = FrameReader::new(64 << 20);
        r.set_datagrams();
        let mut sent = 0u32;
        for round in 0..4 {
            // As many datagrams as the socket holds, 100-byte frames.
            loop {
                let mut frame = vec![0, 0, 0, 100, 0];
                frame.extend_from_slice(&[0u8; 96]);
                frame.extend_from_slice(&sent.to_be_bytes());
                match send(a.as_raw_fd(), &frame, MsgFlags::empty()) {
                    Ok(_) => sent += 1,
                    Err(nix::errno::Errno::EAGAIN) => break,
                    Err(e) => panic!("send: {e}"),
                }
            }
            loop {
                match r.read_from(b.as_fd()) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("round {round}: {e}"),
                }
            }
            // Only now are the frames taken.
            let mut got = Vec::new();
            while let Some(f) = r.next_frame().expect("whole frames") {
                got.push(u32::from_be_bytes(f.payload[96..].try_into().expect("four bytes")));
            }
            assert!(got.windows(2).all(|w| w[1] == w[0] + 1), "round {round}: frames out of order or lost");
            assert_eq!(got.last().copied(), Some(sent - 1));
        }
        assert!(sent > 100, "the socket held only {sent} datagrams");
    }

    #[test]
    fn debug_is_a_line_not_the_buffer() {
        let (mut a, b) = pair();
        let mut r = FrameReader::new(1 << 20);
        a.write_all(&[0, 1, 0, 0, 0]).expect("write");
        a.write_all(&[7; 4096]).expect("write");
        r.read_from(b.as_fd()).expect("read");
        let mut w = FrameWriter::default();
        w.push(1 << 20, |buf| {
            buf.extend_from_slice(&[1; 4096]);
            Ok(Vec::new())
        })
        .expect("push");
        assert!(format!("{r:?}").len() < 80, "{r:?}");
        assert!(format!("{w:?}").len() < 80, "{w:?}");
    }

    #[test]
    fn eof_inside_a_frame_is_malformed_and_clean_eof_is_eof() {
        let (mut a, b) = pair();
        let mut r = FrameReader::new(1024);
        a.write_all(&[0, 0, 0, 1, 0, 7, 0, 0]).expect("write");
        drop(a);
        while r.read_from(b.as_fd()).expect("read") > 0 {}
        assert_eq!(r.next_frame().expect("first frame").expect("whole").payload, &[7]);
        assert!(matches!(r.next_frame(), Err(Error::Malformed(_))));

        let (a, b) = pair();
        let mut r = FrameReader::new(1024);
        drop(a);
        r.read_from(b.as_fd()).expect("read");
        assert!(matches!(r.next_frame(), Err(Error::Eof)));
    }

    #[test]
    fn fds_travel_with_their_frame() {
        let (a, b) = pair();
        let mut w = FrameWriter::default();
        let (x, _y) = pair();
        w.push(1024, |buf| {
            buf.push(9);
            Ok(vec![x.into()])
        })
        .expect("push");
        w.push(1024, |buf| {
            buf.push(8);
            Ok(Vec::new())
        })
        .expect("push");
        w.write_to(a.as_fd()).expect("write");
        let mut r = FrameReader::new(1024);
        r.read_from(b.as_fd()).expect("read");
        let f = r.next_frame().expect("ok").expect("frame");
        assert_eq!((f.payload, f.fds.len()), (&[9u8][..], 1));
        let f = r.next_frame().expect("ok").expect("frame");
        assert_eq!((f.payload, f.fds.len()), (&[8u8][..], 0));
    }

    #[test]
    fn frame_above_the_limit_is_not_queued() {
        let mut w = FrameWriter::default();
        let r = w.push(4, |buf| {
            buf.extend_from_slice(&[0; 5]);
            Ok(Vec::new())
        });
        assert!(matches!(r, Err(Error::FrameTooLarge { len: 5, max: 4 })));
        assert!(w.is_empty());
    }

    /// Whether the other end of `y`'s socketpair is closed everywhere.
    fn peer_closed(y: &UnixStream) -> bool {
        y.set_nonblocking(true).expect("nonblocking");
        match std::io::Read::read(&mut &*y, &mut [0u8; 1]) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
                false
            }
        }
    }

    #[test]
    fn a_frame_read_a_byte_at_a_time_comes_whole() {
        let mut w = FrameWriter::default();
        w.push(1024, |buf| {
            buf.extend_from_slice(b"hello");
            Ok(Vec::new())
        })
        .expect("push");
        let (bytes, fds) = w.pending();
        assert!(fds.is_empty());
        let bytes = bytes.to_vec();
        w.consumed(bytes.len());
        assert!(w.is_empty());
        let mut r = FrameReader::new(1024);
        for (i, b) in bytes.iter().enumerate() {
            assert!(r.next_frame().expect("no error").is_none(), "whole after {i} bytes?");
            let spare = r.read_buf();
            spare[0] = *b;
            r.filled(1, Vec::new()).expect("filled");
        }
        assert_eq!(r.next_frame().expect("ok").expect("whole").payload, b"hello");
        assert!(r.next_frame().expect("ok").is_none());
    }

    #[test]
    fn each_frames_fds_go_with_its_first_byte() {
        let mut w = FrameWriter::default();
        let (x1, y1) = pair();
        let (x2, y2) = pair();
        for (byte, fds) in [(1u8, vec![]), (2, vec![OwnedFd::from(x1)]), (3, vec![]), (4, vec![OwnedFd::from(x2)])] {
            w.push(1024, |buf| {
                buf.push(byte);
                Ok(fds)
            })
            .expect("push");
        }
        // Frame 1 alone (frame 2 starts with fds), then 2 and 3 with frame
        // 2's fd, then 4 with its own.
        let (bytes, fds) = w.pending();
        assert_eq!((bytes.len(), fds.len()), (HEADER_LEN + 1, 0));
        let (a, b) = pair();
        let mut writes = 0;
        while !w.is_empty() {
            w.write_to(a.as_fd()).expect("write");
            writes += 1;
        }
        assert_eq!(writes, 3);
        let mut r = FrameReader::new(1024);
        let mut got = Vec::new();
        while got.len() < 4 {
            r.read_from(b.as_fd()).expect("read");
            while let Some(f) = r.next_frame().expect("ok") {
                got.push((f.payload[0], f.fds));
            }
        }
        assert_eq!(got.iter().map(|(p, f)| (*p, f.len())).collect::<Vec<_>>(), [(1, 0), (2, 1), (3, 0), (4, 1)]);
        // The right fd went with each frame: closing frame 2's closes x1.
        let (_, f2) = got.remove(1);
        drop(f2);
        assert!(peer_closed(&y1), "frame 2 carried x1");
        assert!(!peer_closed(&y2), "x2 is still held by frame 4");
    }

    #[test]
    fn fds_no_frame_announces_are_closed() {
        let (a, b) = pair();
        let (x, y) = pair();
        // A frame announcing no fd, sent with one anyway.
        let fd = OwnedFd::from(x);
        fdpass::send(a.as_fd(), &[io::IoSlice::new(&[0, 0, 0, 1, 0, 7])], &[fd.as_fd()]).expect("send");
        drop(fd);
        let mut r = FrameReader::new(1024);
        r.read_from(b.as_fd()).expect("read");
        let f = r.next_frame().expect("ok").expect("frame");
        assert!(f.fds.is_empty());
        // A later frame that announces one fd, sent with its own: it gets
        // its own, and the stray one is closed, not handed on.
        let (x2, y2) = pair();
        let fd2 = OwnedFd::from(x2);
        fdpass::send(a.as_fd(), &[io::IoSlice::new(&[0, 0, 0, 1, 1, 8])], &[fd2.as_fd()]).expect("send");
        drop(fd2);
        r.read_from(b.as_fd()).expect("read");
        let f = r.next_frame().expect("ok").expect("frame");
        assert_eq!((f.payload, f.fds.len()), (&[8u8][..], 1));
        assert!(peer_closed(&y), "the unannounced fd was closed");
        assert!(!peer_closed(&y2), "the announced one was kept");
    }

    #[test]
    fn a_frame_whose_fds_never_came_is_malformed() {
        let (mut a, b) = pair();
        a.write_all(&[0, 0, 0, 1, 2, 7]).expect("write");
        let mut r = FrameReader::new(1024);
        r.read_from(b.as_fd()).expect("read");
        assert!(matches!(r.next_frame(), Err(Error::Malformed(_))));
    }

    #[test]
    fn more_fds_than_one_message_carries_go_in_a_burst() {
        // 300 frames with an fd each: more than SCM_RIGHTS takes at once.
        let (a, b) = pair();
        b.set_nonblocking(true).expect("nonblocking");
        let mut w = FrameWriter::default();
        let mut keep = Vec::new();
        for i in 0..300u16 {
            let (x, y) = pair();
            keep.push(y);
            w.push(1024, |buf| {
                buf.extend_from_slice(&i.to_be_bytes());
                Ok(vec![x.into()])
            })
            .expect("push");
        }
        let mut r = FrameReader::new(1024);
        let mut seen = 0u16;
        while seen < 300 {
            if !w.is_empty() {
                w.write_to(a.as_fd()).expect("write");
            }
            match r.read_from(b.as_fd()) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("read: {e}"),
            }
            while let Some(f) = r.next_frame().expect("ok") {
                assert_eq!((f.payload, f.fds.len()), (&seen.to_be_bytes()[..], 1));
                seen += 1;
            }
        }
        assert!(w.is_empty());
        assert_eq!(w.fd_count(), 0);
    }

    #[test]
    fn the_writer_gives_back_a_large_buffer() {
        let (a, b) = pair();
        b.set_nonblocking(true).expect("nonblocking");
        a.set_nonblocking(true).expect("nonblocking");
        let mut w = FrameWriter::default();
        w.push(8 << 20, |buf| {
            buf.resize(buf.len() + (4 << 20), 1);
            Ok(Vec::new())
        })
        .expect("push");
        let mut r = FrameReader::new(8 << 20);
        loop {
            match w.write_to(a.as_fd()) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("write: {e}"),
            }
            match r.read_from(b.as_fd()) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("read: {e}"),
            }
            if let Some(f) = r.next_frame().expect("ok") {
                assert_eq!(f.payload.len(), 4 << 20);
                break;
            }
        }
        assert!(w.is_empty());
        assert!(w.buf.capacity() <= READ_CHUNK, "writer kept {} bytes", w.buf.capacity());
    }
}
