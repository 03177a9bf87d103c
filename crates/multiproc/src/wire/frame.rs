//! Framing: a 4-byte big-endian payload length, a 1-byte count of attached
//! fds, then the msgpack payload. Lengths are checked against the limit before
//! any allocation, and a partial frame is "need more", not an error.
//!
//! The reader grows its buffer as a frame's bytes arrive (at most doubling
//! what it holds), never to the announced length up front: a peer that
//! announces 64 MiB and sends two bytes costs a chunk, not 64 MiB. Buffers
//! that grew for a large frame are given back once it is consumed.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

use multiproc_sys::fdpass::{self, CmsgBuffer, MAX_FDS_PER_MESSAGE};

use crate::error::{Error, Result};

pub(crate) const HEADER_LEN: usize = 5;
/// Default largest payload a connection accepts.
pub const DEFAULT_MAX_FRAME: usize = 64 << 20;
const READ_CHUNK: usize = 64 << 10;
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

/// The receiving half of a framed stream: bytes and fds read so far.
pub(crate) struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    fds: VecDeque<OwnedFd>,
    cmsg: CmsgBuffer,
    max: usize,
    eof: bool,
    /// Close every fd that arrives (for peers that never send any).
    refuse_fds: bool,
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
            fds: VecDeque::new(),
            cmsg: CmsgBuffer::default(),
            max,
            eof: false,
            refuse_fds: false,
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
        if self.fds.len() < nfds {
            return Err(Error::Malformed(format!("frame announces {nfds} fds, {} arrived", self.fds.len())));
        }
        let fds = self.fds.drain(..nfds).collect();
        let at = self.start + HEADER_LEN;
        self.start = at + len;
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

    /// One `recvmsg` into the buffer. `Ok(0)` is end of stream (remembered).
    pub fn read_from(&mut self, sock: BorrowedFd<'_>) -> io::Result<usize> {
        self.make_room();
        let n = fdpass::recv(sock, &mut self.buf[self.end..], &mut self.cmsg, &mut self.fds)?;
        if self.refuse_fds {
            self.fds.clear();
        } else if self.fds.len() > MAX_QUEUED_FDS {
            // More fds than any run of frames announces: close them rather
            // than let a peer fill our fd table.
            self.fds.clear();
            return Err(io::Error::new(io::ErrorKind::InvalidData, "more file descriptors than frames announce"));
        }
        if n == 0 {
            self.eof = true;
        }
        self.end += n;
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
        self.make_room();
        let n = read(&mut self.buf[self.end..])?;
        self.end += n;
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
        fdpass::recv(sock, &mut markers, &mut self.cmsg, &mut self.fds)
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
        let chunk = READ_CHUNK.min(HEADER_LEN + self.max);
        let need = match self.pending().ok().flatten() {
            Some((len, _)) => (HEADER_LEN + len).saturating_sub(have).min(chunk.max(have)).max(1),
            None => chunk,
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
    fds: Vec<OwnedFd>,
}

impl std::fmt::Debug for FrameWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameWriter").field("pending", &self.pending_len()).field("fds", &self.fds.len()).finish()
    }
}

impl FrameWriter {
    /// Appends one frame whose payload `encode` writes; `encode` returns the
    /// fds that travel with it. On error nothing is appended.
    pub fn push(&mut self, max: usize, encode: impl FnOnce(&mut Vec<u8>) -> Result<Vec<OwnedFd>>) -> Result<()> {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; HEADER_LEN]);
        let written = encode(&mut self.buf).and_then(|fds| {
            if self.fds.len() + fds.len() > MAX_FDS_PER_MESSAGE {
                return Err(Error::encode(
                    "a message",
                    format!("more than {MAX_FDS_PER_MESSAGE} file descriptors queued at once"),
                ));
            }
            Ok((header(self.buf.len() - at - HEADER_LEN, fds.len(), max)?, fds))
        });
        match written {
            Ok((h, fds)) => {
                self.buf[at..at + HEADER_LEN].copy_from_slice(&h);
                self.fds.extend(fds);
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

    /// Hands what is pending to `write` (a shared ring, issue 13) and
    /// forgets the bytes it took. Queued fds must have gone first
    /// ([`send_fds`](Self::send_fds)).
    pub fn write_with(&mut self, write: impl FnOnce(&[u8]) -> io::Result<usize>) -> io::Result<usize> {
        debug_assert!(self.fds.is_empty(), "fds go before their frame's bytes");
        let n = write(&self.buf[self.sent..])?;
        self.sent += n;
        if self.sent == self.buf.len() {
            self.buf.clear();
            self.sent = 0;
        }
        Ok(n)
    }

    /// Sends the queued fds on their own (one marker byte), ahead of the
    /// bytes of their frames.
    pub fn send_fds(&mut self, sock: BorrowedFd<'_>) -> io::Result<()> {
        use std::os::fd::AsFd;
        if self.fds.is_empty() {
            return Ok(());
        }
        let fds: Vec<BorrowedFd<'_>> = self.fds.iter().map(|f| f.as_fd()).collect();
        fdpass::send(sock, &[io::IoSlice::new(&[0])], &fds)?;
        self.fds.clear();
        Ok(())
    }

    /// One `sendmsg` of what is pending; fds ride on the first write so they
    /// arrive no later than the first byte of their frame.
    pub fn write_to(&mut self, sock: BorrowedFd<'_>) -> io::Result<()> {
        use std::os::fd::{AsFd, AsRawFd};
        let pending = &self.buf[self.sent..];
        let n = if self.fds.is_empty() {
            // The common case: a plain send, no ancillary data to build.
            use nix::sys::socket::{MsgFlags, send};
            send(sock.as_raw_fd(), pending, MsgFlags::MSG_NOSIGNAL)?
        } else {
            let fds: Vec<BorrowedFd<'_>> = self.fds.iter().map(|f| f.as_fd()).collect();
            fdpass::send(sock, &[io::IoSlice::new(pending)], &fds)?
        };
        self.fds.clear();
        self.sent += n;
        if self.sent == self.buf.len() {
            self.buf.clear();
            self.sent = 0;
            if self.buf.capacity() > SHRINK_ABOVE {
                self.buf.shrink_to(READ_CHUNK);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::AsFd;
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
}
