//! Two single-producer, single-consumer byte streams in one shared memfd
//! mapping: the shared-memory path of a `Connection` (one stream each way
//! between two ends, 0 and 1). End `e` writes stream `e` and reads stream
//! `1 - e`.
//!
//! Layout: a 4 KiB header of atomics (each counter on its own cache line),
//! then the two data rings of `capacity` bytes (a power of two). `head` and
//! `tail` count bytes since creation and only grow: the reader owns `head`,
//! the writer owns `tail`, and `tail - head` is what is buffered.
//!
//! Memory ordering: the writer copies bytes into the free part of the ring
//! and then stores `tail` (release); the reader loads `tail` (acquire) before
//! it copies out, and stores `head` after. Each side thus touches only bytes
//! the other is not touching. Waiting is left to the caller: it announces
//! itself in its end's `parked` word, re-checks, then sleeps; the other side
//! stores its counter, issues a `SeqCst` fence and looks at `parked` (the
//! store-buffer pattern: one of the two always sees the other).
//!
//! One writer and one reader per stream is what makes the plain copies
//! sound, and it is enforced: every read or write claims its side of the
//! stream for the duration of the copy with a compare-and-swap of the
//! caller's pid (a claim left by a dead process is taken over), and a second
//! concurrent user gets [`io::ErrorKind::ResourceBusy`] instead of a race.
//! Counters read from the mapping are checked (`tail - head` never exceeds
//! the capacity) so a corrupted header is an error, never an out-of-bounds
//! copy.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use crate::shm::SharedRegion;

const MAGIC: u32 = 0x6d70_7332; // "mps2"
const HEADER: usize = 4096;
const O_MAGIC: usize = 0;
const O_CAPACITY: usize = 8;
/// Stream `d`'s words start at `STREAM + d * STREAM_STRIDE`.
const STREAM: usize = 256;
const STREAM_STRIDE: usize = 512;
const S_HEAD: usize = 0;
const S_TAIL: usize = 128;
const S_WRITER: usize = 256;
const S_READER: usize = 384;
/// End `e`'s parked word.
const PARKED: usize = 1536;
const PARKED_STRIDE: usize = 128;

/// Smallest ring (per direction).
pub const MIN_CAPACITY: usize = 4096;
/// Largest ring (per direction).
pub const MAX_CAPACITY: usize = 1 << 30;

/// This process's pid, cached (`getpid` is a system call and every copy
/// claims with it); a forked child forgets it through an `atfork` handler.
fn my_pid() -> u32 {
    static CACHED: AtomicU32 = AtomicU32::new(0);
    static REGISTER: std::sync::Once = std::sync::Once::new();
    extern "C" fn forget_in_child() {
        CACHED.store(0, Ordering::Relaxed);
    }
    let pid = CACHED.load(Ordering::Relaxed);
    if pid != 0 {
        return pid;
    }
    REGISTER.call_once(|| {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe, so it may run in a child forked from any thread.
        unsafe { nix::libc::pthread_atfork(None, None, Some(forget_in_child)) };
    });
    let pid = std::process::id();
    CACHED.store(pid, Ordering::Relaxed);
    pid
}

/// Whether `pid` is a process that has not exited (a zombie has).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()).is_some_and(|s| s != "Z" && s != "X")
    })
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("shared-memory stream: {what}"))
}

/// The two streams of one shared-memory connection.
#[derive(Debug)]
pub struct ShmDuplex {
    region: SharedRegion,
    capacity: usize,
}

/// A side of a stream held for one copy.
struct Claim<'a>(&'a AtomicU32);

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Release);
    }
}

impl ShmDuplex {
    /// New empty streams of `capacity` bytes each (rounded up to a power of
    /// two within [`MIN_CAPACITY`]..=[`MAX_CAPACITY`]).
    pub fn create(capacity: usize) -> io::Result<Self> {
        let capacity = capacity.clamp(MIN_CAPACITY, MAX_CAPACITY).next_power_of_two();
        let region = SharedRegion::anonymous(c"multiproc-pipe", HEADER + 2 * capacity)?;
        let d = Self { region, capacity };
        d.u64(O_CAPACITY).store(capacity as u64, Ordering::Relaxed);
        d.u32(O_MAGIC).store(MAGIC, Ordering::Release);
        Ok(d)
    }

    /// Maps streams received from another process, checking the header
    /// against the object's size.
    pub fn open(fd: OwnedFd) -> io::Result<Self> {
        let len = usize::try_from(nix::sys::stat::fstat(&fd)?.st_size).map_err(|_| bad("negative size"))?;
        if len <= HEADER {
            return Err(bad("object too small"));
        }
        let region = SharedRegion::map(fd, len)?;
        let magic = region.atomic_u32(O_MAGIC).ok_or_else(|| bad("header"))?.load(Ordering::Acquire);
        let capacity = region.atomic_u64(O_CAPACITY).ok_or_else(|| bad("header"))?.load(Ordering::Acquire);
        let capacity = usize::try_from(capacity).map_err(|_| bad("capacity"))?;
        if magic != MAGIC
            || !capacity.is_power_of_two()
            || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity)
            || HEADER + 2 * capacity != len
        {
            return Err(bad("not a multiproc shared-memory pipe"));
        }
        Ok(Self { region, capacity })
    }

    /// The memfd, to pass to the other end's process.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.region.fd()
    }

    /// Bytes each stream buffers.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn u32(&self, at: usize) -> &AtomicU32 {
        self.region.atomic_u32(at).expect("header offsets are in bounds and aligned")
    }

    fn u64(&self, at: usize) -> &AtomicU64 {
        self.region.atomic_u64(at).expect("header offsets are in bounds and aligned")
    }

    fn stream(&self, dir: usize, word: usize) -> usize {
        STREAM + (dir & 1) * STREAM_STRIDE + word
    }

    /// End `end`'s parked word: non-zero while it is (about to be) asleep.
    pub fn parked(&self, end: usize) -> &AtomicU32 {
        self.u32(PARKED + (end & 1) * PARKED_STRIDE)
    }

    /// When the other end last rang end `end`'s doorbell (`CLOCK_MONOTONIC`
    /// nanoseconds, written by the ringer): how long the sleeper's wait
    /// would have taken had it spun. Only advice (a peer may write anything).
    pub fn rung_at(&self, end: usize) -> &AtomicU64 {
        self.u64(PARKED + (end & 1) * PARKED_STRIDE + 8)
    }

    /// `(head, tail)` of stream `dir`, checked.
    fn counters(&self, dir: usize) -> io::Result<(u64, u64)> {
        let head = self.u64(self.stream(dir, S_HEAD)).load(Ordering::Acquire);
        let tail = self.u64(self.stream(dir, S_TAIL)).load(Ordering::Acquire);
        let used = tail.wrapping_sub(head);
        if used > self.capacity as u64 {
            return Err(bad("corrupted counters"));
        }
        Ok((head, tail))
    }

    /// Bytes buffered in stream `dir`.
    pub fn readable(&self, dir: usize) -> io::Result<usize> {
        let (head, tail) = self.counters(dir)?;
        Ok((tail - head) as usize)
    }

    /// Free bytes in stream `dir`.
    pub fn writable(&self, dir: usize) -> io::Result<usize> {
        Ok(self.capacity - self.readable(dir)?)
    }

    fn claim(&self, word: &'static str, at: usize) -> io::Result<Claim<'_>> {
        let w = self.u32(at);
        let me = my_pid();
        let mut seen = 0;
        loop {
            match w.compare_exchange(seen, me, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Ok(Claim(w)),
                Err(0) => seen = 0,
                Err(other) if other != me && !alive(other) => seen = other,
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::ResourceBusy,
                        format!("one end of a shared-memory pipe {word} by two users at once"),
                    ));
                }
            }
        }
    }

    /// Copies up to `src.len()` bytes into stream `dir` (as many as fit) and
    /// publishes them; returns how many.
    pub fn write(&self, dir: usize, src: &[u8]) -> io::Result<usize> {
        let _claim = self.claim("written", self.stream(dir, S_WRITER))?;
        let (head, tail) = self.counters(dir)?;
        let free = self.capacity - (tail - head) as usize;
        let n = src.len().min(free);
        if n == 0 {
            return Ok(0);
        }
        let base = HEADER + (dir & 1) * self.capacity;
        let at = (tail as usize) & (self.capacity - 1);
        let first = n.min(self.capacity - at);
        // SAFETY: both ranges lie inside stream `dir`'s ring (at < capacity,
        // first <= capacity - at, n - first < capacity), which the mapping
        // holds (checked when it was made or opened). They are free space:
        // the reader copies only bytes below `tail`, which we have not moved
        // yet, and no other writer copies while we hold the writer claim.
        unsafe {
            self.region.write_at(base + at, &src[..first]);
            self.region.write_at(base, &src[first..n]);
        }
        self.u64(self.stream(dir, S_TAIL)).store(tail + n as u64, Ordering::Release);
        fence(Ordering::SeqCst);
        Ok(n)
    }

    /// Copies up to `dst.len()` buffered bytes out of stream `dir` and frees
    /// them; returns how many.
    pub fn read(&self, dir: usize, dst: &mut [u8]) -> io::Result<usize> {
        let _claim = self.claim("read", self.stream(dir, S_READER))?;
        let (head, tail) = self.counters(dir)?;
        let n = dst.len().min((tail - head) as usize);
        if n == 0 {
            return Ok(0);
        }
        let base = HEADER + (dir & 1) * self.capacity;
        let at = (head as usize) & (self.capacity - 1);
        let first = n.min(self.capacity - at);
        // SAFETY: inside stream `dir`'s ring as in `write`. These bytes lie
        // between `head` and the `tail` loaded (acquire) above, so the writer
        // has finished them and will not touch them until we move `head`; no
        // other reader copies while we hold the reader claim.
        unsafe {
            self.region.read_at(base + at, &mut dst[..first]);
            self.region.read_at(base, &mut dst[first..n]);
        }
        self.u64(self.stream(dir, S_HEAD)).store(head + n as u64, Ordering::Release);
        fence(Ordering::SeqCst);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn bytes_cross_in_order_and_wrap_around() {
        let a = ShmDuplex::create(100).unwrap();
        assert_eq!(a.capacity(), MIN_CAPACITY);
        let b = ShmDuplex::open(a.fd().try_clone_to_owned().unwrap()).unwrap();
        let msg: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let mut out = vec![0; 4096];
        let mut got = Vec::new();
        for _ in 0..10 {
            assert_eq!(a.write(0, &msg).unwrap(), msg.len());
            let n = b.read(0, &mut out).unwrap();
            got.extend_from_slice(&out[..n]);
        }
        assert_eq!(got.len(), 30_000);
        assert!(got.chunks(3000).all(|c| c == &msg[..]));
        assert_eq!(b.readable(0).unwrap(), 0);
        assert_eq!(b.readable(1).unwrap(), 0, "the other stream is untouched");
    }

    #[test]
    fn a_full_stream_takes_what_fits() {
        let a = ShmDuplex::create(MIN_CAPACITY).unwrap();
        let big = vec![7u8; MIN_CAPACITY + 10];
        assert_eq!(a.write(1, &big).unwrap(), MIN_CAPACITY);
        assert_eq!(a.write(1, &big).unwrap(), 0);
        assert_eq!(a.writable(1).unwrap(), 0);
        let mut out = vec![0; 10];
        assert_eq!(a.read(1, &mut out).unwrap(), 10);
        assert_eq!(a.writable(1).unwrap(), 10);
    }

    #[test]
    fn a_foreign_object_is_refused() {
        let r = SharedRegion::anonymous(c"not-a-pipe", HEADER + 2 * MIN_CAPACITY).unwrap();
        let fd = r.fd().try_clone_to_owned().unwrap();
        assert_eq!(ShmDuplex::open(fd).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn corrupted_counters_are_an_error_not_a_wild_copy() {
        let a = ShmDuplex::create(MIN_CAPACITY).unwrap();
        a.u64(a.stream(0, S_TAIL)).store(1 << 40, Ordering::Relaxed);
        let mut out = vec![0; 16];
        assert_eq!(a.read(0, &mut out).unwrap_err().kind(), io::ErrorKind::InvalidData);
        assert_eq!(a.write(0, b"x").unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_claim_held_by_a_live_user_is_busy_and_a_dead_ones_is_taken_over() {
        let a = ShmDuplex::create(MIN_CAPACITY).unwrap();
        let writer = a.u32(a.stream(0, S_WRITER));
        writer.store(std::process::id(), Ordering::Relaxed);
        assert_eq!(a.write(0, b"x").unwrap_err().kind(), io::ErrorKind::ResourceBusy);
        // A pid that is not running (pid_max is at most 2^22).
        writer.store(u32::MAX - 1, Ordering::Relaxed);
        assert_eq!(a.write(0, b"x").unwrap(), 1);
        assert_eq!(writer.load(Ordering::Relaxed), 0, "released after the copy");
        let _ = a.fd().as_fd();
    }
}
