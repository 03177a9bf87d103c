//! A multi-producer, multi-consumer queue of byte records in one shared
//! memfd mapping: the storage behind `multiproc::Queue`.
//!
//! Layout: a 128-byte header of atomics, then a byte ring holding records
//! `[u32 length][payload]` that wrap around its end. A [`PidLock`] guards
//! `head`, `tail` and the ring bytes; sequence words that every `push` and
//! `pop` bump let waiters sleep on a futex without holding the lock.
//!
//! Invariants that make a crash harmless:
//! - `push` copies the record in *before* it moves `tail`; `pop` copies it
//!   out *before* it moves `head`. A process that dies in the middle leaves
//!   the record either wholly in the queue or wholly out of it.
//! - The item count is derived state: whoever takes the lock over from a dead
//!   holder recounts the records between `head` and `tail`.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::futex;
use crate::pidlock::{Acquired, PidLock};
use crate::shm::SharedRegion;

const MAGIC: u32 = 0x6d70_7131; // "mpq1"
const DATA: usize = 128;
const LEN_BYTES: usize = 4;

// Header offsets.
const O_MAGIC: usize = 0;
const O_LOCK: usize = 4;
const O_NOT_EMPTY: usize = 12;
const O_NOT_FULL: usize = 16;
const O_GETTERS: usize = 20;
const O_PUTTERS: usize = 24;
const O_ALL_DONE: usize = 28;
const O_JOINERS: usize = 32;
const O_HEAD: usize = 40;
const O_TAIL: usize = 48;
const O_COUNT: usize = 56;
const O_MAXSIZE: usize = 64;
const O_CAPACITY: usize = 72;
const O_UNFINISHED: usize = 80;

/// Consumed ring bytes are given back to the kernel this many at a time, so a
/// queue's memory follows what it holds rather than its capacity.
const RELEASE_CHUNK: u64 = 2 << 20;

/// Before a consumer sleeps on the futex it polls the item count, first
/// yielding its CPU between polls (on a busy machine the producer may be
/// waiting for it), then spinning: a consumer that keeps up with its producer
/// should not pay two system calls per item.
const YIELDS: u32 = 10;
const SPINS: u32 = 200;

/// Outcome of [`Ring::try_push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    Done,
    /// `maxsize` items are queued.
    Full,
    /// Not enough free bytes right now.
    NoRoom,
    /// The record can never fit: larger than the whole ring.
    TooLarge {
        max: usize,
    },
}

/// The shared queue storage. Cheap to share by reference between threads.
#[derive(Debug)]
pub struct Ring {
    region: SharedRegion,
    capacity: usize,
}

fn too_small() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "not a multiproc queue (bad header)")
}

impl Ring {
    /// A new empty ring of `capacity` data bytes holding at most `maxsize`
    /// records (0: unbounded).
    pub fn create(capacity: usize, maxsize: u64) -> io::Result<Self> {
        let capacity = capacity.max(LEN_BYTES + 1);
        let len = DATA.checked_add(capacity).ok_or_else(|| io::Error::other("capacity too large"))?;
        let region = SharedRegion::anonymous(c"multiproc-queue", len)?;
        let ring = Self { region, capacity };
        ring.u64(O_MAXSIZE).store(maxsize, Ordering::Relaxed);
        ring.u64(O_CAPACITY).store(capacity as u64, Ordering::Relaxed);
        ring.u32(O_MAGIC).store(MAGIC, Ordering::Release);
        Ok(ring)
    }

    /// Maps a ring received from another process.
    pub fn open(fd: OwnedFd) -> io::Result<Self> {
        let len = usize::try_from(nix::sys::stat::fstat(&fd)?.st_size).map_err(|_| too_small())?;
        if len <= DATA {
            return Err(too_small());
        }
        let region = SharedRegion::map(fd, len)?;
        let capacity = region.atomic_u64(O_CAPACITY).ok_or_else(too_small)?.load(Ordering::Acquire);
        let magic = region.atomic_u32(O_MAGIC).ok_or_else(too_small)?.load(Ordering::Acquire);
        if magic != MAGIC || usize::try_from(capacity).ok() != Some(len - DATA) {
            return Err(too_small());
        }
        Ok(Self { region, capacity: len - DATA })
    }

    /// The memfd behind the ring, to pass to another process.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.region.fd()
    }

    /// Data bytes; a record takes its payload plus 4.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Largest payload a record may have.
    pub fn max_record(&self) -> usize {
        self.capacity - LEN_BYTES
    }

    pub fn maxsize(&self) -> u64 {
        self.u64(O_MAXSIZE).load(Ordering::Relaxed)
    }

    fn u32(&self, at: usize) -> &AtomicU32 {
        self.region.atomic_u32(at).expect("header offsets are in bounds and aligned")
    }

    fn u64(&self, at: usize) -> &AtomicU64 {
        self.region.atomic_u64(at).expect("header offsets are in bounds and aligned")
    }

    fn lock(&self) -> io::Result<Guard<'_>> {
        let lock = PidLock::new(self.u32(O_LOCK));
        let guard = Guard { ring: self, lock };
        if let Acquired::FromDeadHolder(_) = lock.lock()? {
            guard.repair();
        }
        Ok(guard)
    }

    /// Records queued now (Python's `qsize`).
    pub fn len(&self) -> u64 {
        self.u64(O_COUNT).load(Ordering::SeqCst)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `maxsize` records are queued.
    pub fn is_full(&self) -> bool {
        let max = self.maxsize();
        max != 0 && self.len() >= max
    }

    /// Appends one record unless the ring is full; wakes waiting consumers.
    pub fn try_push(&self, payload: &[u8]) -> io::Result<Push> {
        if payload.len() > self.max_record() {
            return Ok(Push::TooLarge { max: self.max_record() });
        }
        let outcome = self.lock()?.push(payload);
        if outcome == Push::Done {
            self.u32(O_NOT_EMPTY).fetch_add(1, Ordering::SeqCst);
            if self.u32(O_GETTERS).load(Ordering::SeqCst) > 0 {
                futex::wake(self.u32(O_NOT_EMPTY), u32::MAX);
            }
        }
        Ok(outcome)
    }

    /// Moves the oldest record into `out` (replacing its contents); `false`
    /// when the ring is empty. Wakes waiting producers.
    pub fn try_pop(&self, out: &mut Vec<u8>) -> io::Result<bool> {
        if self.is_empty() {
            return Ok(false);
        }
        let popped = self.lock()?.pop(out);
        if popped {
            self.u32(O_NOT_FULL).fetch_add(1, Ordering::SeqCst);
            if self.u32(O_PUTTERS).load(Ordering::SeqCst) > 0 {
                futex::wake(self.u32(O_NOT_FULL), u32::MAX);
            }
        }
        Ok(popped)
    }

    /// Pushes, waiting for room until `deadline` (`None`: forever). Returns
    /// what the last attempt gave (`Full`/`NoRoom` only when time ran out).
    pub fn push_wait(&self, payload: &[u8], deadline: Option<Instant>) -> io::Result<Push> {
        loop {
            match self.try_push(payload)? {
                Push::Full | Push::NoRoom if !passed(deadline) => {
                    self.wait_room(payload.len(), deadline)?;
                }
                other => return Ok(other),
            }
        }
    }

    /// Pops, waiting for a record until `deadline`; `false` when time ran out.
    pub fn pop_wait(&self, out: &mut Vec<u8>, deadline: Option<Instant>) -> io::Result<bool> {
        loop {
            if self.try_pop(out)? {
                return Ok(true);
            }
            if passed(deadline) || !self.wait_items(deadline)? {
                return self.try_pop(out);
            }
        }
    }

    /// Waits until the ring holds a record or `deadline` passes; does not
    /// take it. `true` when a record was seen.
    pub fn wait_items(&self, deadline: Option<Instant>) -> io::Result<bool> {
        for _ in 0..YIELDS {
            if !self.is_empty() {
                return Ok(true);
            }
            std::thread::yield_now();
        }
        for _ in 0..SPINS {
            if !self.is_empty() {
                return Ok(true);
            }
            std::hint::spin_loop();
        }
        self.sleep_until(O_NOT_EMPTY, O_GETTERS, deadline, || !self.is_empty())
    }

    /// Waits until a record of `payload_len` bytes would fit (by item count
    /// and by bytes), or until `deadline`; a producer then retries.
    pub fn wait_room(&self, payload_len: usize, deadline: Option<Instant>) -> io::Result<bool> {
        self.sleep_until(O_NOT_FULL, O_PUTTERS, deadline, || self.has_room(payload_len))
    }

    /// A lock-free estimate: whether a record of `payload_len` bytes fits now.
    fn has_room(&self, payload_len: usize) -> bool {
        let tail = self.u64(O_TAIL).load(Ordering::SeqCst);
        let head = self.u64(O_HEAD).load(Ordering::SeqCst);
        let used = tail.saturating_sub(head);
        !self.is_full() && self.capacity as u64 - used.min(self.capacity as u64) >= (LEN_BYTES + payload_len) as u64
    }

    /// Sleeps on the sequence word at `seq_at` until `ready()` or `deadline`,
    /// counting itself in the waiter word at `waiters_at` so wakers know to
    /// make the syscall.
    fn sleep_until(
        &self,
        seq_at: usize,
        waiters_at: usize,
        deadline: Option<Instant>,
        ready: impl Fn() -> bool,
    ) -> io::Result<bool> {
        let (seq_word, waiters) = (self.u32(seq_at), self.u32(waiters_at));
        loop {
            let seq = seq_word.load(Ordering::SeqCst);
            waiters.fetch_add(1, Ordering::SeqCst);
            if ready() {
                waiters.fetch_sub(1, Ordering::SeqCst);
                return Ok(true);
            }
            let timeout = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => {
                        waiters.fetch_sub(1, Ordering::SeqCst);
                        return Ok(ready());
                    }
                },
            };
            let r = futex::wait(seq_word, seq, timeout);
            waiters.fetch_sub(1, Ordering::SeqCst);
            r?;
            if ready() {
                return Ok(true);
            }
        }
    }

    /// Items put and not yet marked done (JoinableQueue).
    pub fn unfinished(&self) -> u64 {
        self.u64(O_UNFINISHED).load(Ordering::SeqCst)
    }

    /// Marks one item done; `false` if none was outstanding.
    pub fn task_done(&self) -> bool {
        let word = self.u64(O_UNFINISHED);
        let mut now = word.load(Ordering::SeqCst);
        loop {
            if now == 0 {
                return false;
            }
            match word.compare_exchange_weak(now, now - 1, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => break,
                Err(actual) => now = actual,
            }
        }
        if now == 1 {
            self.u32(O_ALL_DONE).fetch_add(1, Ordering::SeqCst);
            if self.u32(O_JOINERS).load(Ordering::SeqCst) > 0 {
                futex::wake(self.u32(O_ALL_DONE), u32::MAX);
            }
        }
        true
    }

    /// Waits until every item put has been marked done, or `deadline`.
    pub fn wait_all_done(&self, deadline: Option<Instant>) -> io::Result<bool> {
        if self.unfinished() == 0 {
            return Ok(true);
        }
        self.sleep_until(O_ALL_DONE, O_JOINERS, deadline, || self.unfinished() == 0)
    }

    fn copy_in(&self, pos: u64, src: &[u8]) {
        let at = (pos % self.capacity as u64) as usize;
        let first = src.len().min(self.capacity - at);
        // SAFETY: only called by the lock holder, on bytes between `tail` and
        // `head + capacity` that no reader looks at until `tail` moves past
        // them; both ranges are inside the data area (checked by write_at).
        unsafe {
            self.region.write_at(DATA + at, &src[..first]);
            self.region.write_at(DATA, &src[first..]);
        }
    }

    /// Frees the pages behind ring positions `from..to` (already consumed)
    /// unless the ring is so full that they may hold live records again.
    /// Best effort: a failure only costs memory.
    fn release(&self, from: u64, to: u64, tail: u64) {
        use nix::fcntl::{FallocateFlags, fallocate};
        let cap = self.capacity as u64;
        if cap < 4 * RELEASE_CHUNK || from + cap < tail {
            return;
        }
        let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        let (start, len) = (from % cap, to - from);
        let first = len.min(cap - start);
        for (at, n) in [(start, first), (0, len - first)] {
            if n > 0 {
                let _ = fallocate(self.region.fd(), flags, (DATA as u64 + at) as i64, n as i64);
            }
        }
    }

    fn copy_out(&self, pos: u64, dst: &mut [u8]) {
        let at = (pos % self.capacity as u64) as usize;
        let first = dst.len().min(self.capacity - at);
        let (a, b) = dst.split_at_mut(first);
        // SAFETY: only called by the lock holder, on bytes of a record between
        // `head` and `tail` that no writer touches until `head` moves past them.
        unsafe {
            self.region.read_at(DATA + at, a);
            self.region.read_at(DATA, b);
        }
    }
}

/// The ring locked by this process; unlocks on drop.
struct Guard<'a> {
    ring: &'a Ring,
    lock: PidLock<'a>,
}

impl Guard<'_> {
    fn push(&self, payload: &[u8]) -> Push {
        let r = self.ring;
        let count = r.u64(O_COUNT).load(Ordering::Relaxed);
        let max = r.maxsize();
        if max != 0 && count >= max {
            return Push::Full;
        }
        let (head, tail) = (r.u64(O_HEAD).load(Ordering::Relaxed), r.u64(O_TAIL).load(Ordering::Relaxed));
        let need = (LEN_BYTES + payload.len()) as u64;
        if r.capacity as u64 - (tail - head) < need {
            return Push::NoRoom;
        }
        let len = u32::try_from(payload.len()).expect("max_record fits in u32");
        r.copy_in(tail, &len.to_le_bytes());
        r.copy_in(tail + LEN_BYTES as u64, payload);
        r.u64(O_TAIL).store(tail + need, Ordering::Release);
        r.u64(O_COUNT).store(count + 1, Ordering::SeqCst);
        r.u64(O_UNFINISHED).fetch_add(1, Ordering::SeqCst);
        Push::Done
    }

    fn pop(&self, out: &mut Vec<u8>) -> bool {
        let r = self.ring;
        let (head, tail) = (r.u64(O_HEAD).load(Ordering::Relaxed), r.u64(O_TAIL).load(Ordering::Relaxed));
        if head == tail {
            return false;
        }
        let mut len = [0; LEN_BYTES];
        r.copy_out(head, &mut len);
        let len = u32::from_le_bytes(len) as usize;
        out.clear();
        out.resize(len, 0);
        r.copy_out(head + LEN_BYTES as u64, out);
        let new_head = head + (LEN_BYTES + len) as u64;
        r.u64(O_HEAD).store(new_head, Ordering::Release);
        if new_head / RELEASE_CHUNK > head / RELEASE_CHUNK {
            let from = head / RELEASE_CHUNK * RELEASE_CHUNK;
            r.release(from, new_head / RELEASE_CHUNK * RELEASE_CHUNK, tail);
        }
        let count = r.u64(O_COUNT).load(Ordering::Relaxed);
        r.u64(O_COUNT).store(count.saturating_sub(1), Ordering::SeqCst);
        true
    }

    /// Recounts the records after a holder died mid-update.
    fn repair(&self) {
        let r = self.ring;
        let (mut pos, tail) = (r.u64(O_HEAD).load(Ordering::Relaxed), r.u64(O_TAIL).load(Ordering::Relaxed));
        let mut count = 0;
        while pos < tail {
            let mut len = [0; LEN_BYTES];
            r.copy_out(pos, &mut len);
            pos += (LEN_BYTES + u32::from_le_bytes(len) as usize) as u64;
            count += 1;
        }
        r.u64(O_COUNT).store(count, Ordering::SeqCst);
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.lock.unlock();
    }
}

fn passed(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

/// Clamps a wait so an async caller that gave up is not kept long.
pub fn slice_deadline(deadline: Option<Instant>, slice: Duration) -> Instant {
    let cap = Instant::now() + slice;
    deadline.map_or(cap, |d| d.min(cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_wrap_around_and_keep_order() {
        let ring = Ring::create(64, 0).expect("ring");
        let mut out = Vec::new();
        for round in 0..50u8 {
            let rec: Vec<u8> = (0..(round % 13 + 1)).map(|i| i ^ round).collect();
            assert_eq!(ring.try_push(&rec).expect("push"), Push::Done);
            assert!(ring.try_pop(&mut out).expect("pop"));
            assert_eq!(out, rec);
        }
        assert!(!ring.try_pop(&mut out).expect("pop"));
    }

    #[test]
    fn bounds_are_enforced() {
        let ring = Ring::create(64, 2).expect("ring");
        assert_eq!(ring.try_push(&[0; 61]).expect("push"), Push::TooLarge { max: 60 });
        assert_eq!(ring.try_push(&[1; 20]).expect("push"), Push::Done);
        assert_eq!(ring.try_push(&[2; 40]).expect("push"), Push::NoRoom);
        assert_eq!(ring.try_push(&[3; 4]).expect("push"), Push::Done);
        assert_eq!(ring.try_push(&[4; 1]).expect("push"), Push::Full);
        assert_eq!((ring.len(), ring.unfinished()), (2, 2));
    }

    #[test]
    fn a_dead_holder_is_replaced_and_the_count_repaired() {
        let ring = Ring::create(256, 0).expect("ring");
        for i in 0..3u8 {
            ring.try_push(&[i; 5]).expect("push");
        }
        let mut child = std::process::Command::new("true").spawn().expect("spawn true");
        let dead = child.id();
        child.wait().expect("reap");
        // A holder that died after moving `tail` but before counting.
        PidLock::new(ring.u32(O_LOCK)).force_held_by(dead);
        ring.u64(O_COUNT).store(2, Ordering::SeqCst);
        let mut out = Vec::new();
        assert!(ring.try_pop(&mut out).expect("pop"));
        assert_eq!(out, [0; 5]);
        assert_eq!(ring.len(), 2);
    }

    #[test]
    fn consumed_pages_are_given_back() {
        let ring = Ring::create(16 << 20, 0).expect("ring");
        let item = vec![7u8; 100_000];
        let mut out = Vec::new();
        for _ in 0..300 {
            assert_eq!(ring.try_push(&item).expect("push"), Push::Done);
            assert!(ring.try_pop(&mut out).expect("pop"));
            assert_eq!(out, item);
        }
        // 30 MB went through a 16 MiB ring; at most a few chunks stay resident.
        let blocks = nix::sys::stat::fstat(ring.fd()).expect("fstat").st_blocks as u64 * 512;
        assert!(blocks <= 3 * RELEASE_CHUNK, "{blocks} bytes still allocated");
    }

    #[test]
    fn reopened_from_its_fd() {
        let ring = Ring::create(100, 3).expect("ring");
        ring.try_push(b"hi").expect("push");
        let other = Ring::open(ring.fd().try_clone_to_owned().expect("dup")).expect("open");
        assert_eq!((other.capacity(), other.maxsize(), other.len()), (100, 3, 1));
        let mut out = Vec::new();
        assert!(other.try_pop(&mut out).expect("pop"));
        assert_eq!(out, b"hi");
    }
}
