//! A multi-producer, multi-consumer queue of byte records in one shared
//! memfd mapping: the storage behind `multiproc::Queue`.
//!
//! Layout: a 128-byte header of atomics, then a byte ring holding records
//! `[u32 length][u32 state][u32 deliveries][payload, padded to 4 bytes]`
//! that wrap around its end (the capacity is a multiple of 4, so the three
//! header words of a record are aligned and never split by the wrap). A
//! [`PidLock`] guards the positions and the ring bytes; sequence words that
//! every `push` and `pop` bump let waiters sleep on a futex without holding
//! the lock.
//!
//! Positions only grow: `keep ≤ head ≤ tail`, `tail - keep ≤ capacity`.
//! - `head..tail`: queued records (state `QUEUED`).
//! - `keep..head`: records handed out. A plain `pop` marks its record
//!   `DONE`; a leased pop marks it with the consumer's pid until the lease is
//!   acknowledged (`DONE`) or dropped (`ABANDONED`). `keep` advances over
//!   `DONE` records; their bytes are free again.
//! - A record leased by a process that died, or abandoned, is handed to the
//!   next consumer, its delivery count one higher.
//!
//! Invariants that make a crash harmless:
//! - `push` copies the record in *before* it moves `tail`; `pop` copies it
//!   out *before* it moves `head`. A process that dies in the middle leaves
//!   the record either wholly in the queue or wholly out of it.
//! - Counts (`count`, `leased`, `abandoned`) are derived state: whoever takes
//!   the lock over from a dead holder recounts them, validating every
//!   position and record length on the way.
//! - The JoinableQueue count of unfinished items is not derived (a plain
//!   `get` and its `task_done` are separate calls), so the two operations
//!   that change it together with a record — a push and a joinable ack —
//!   are journaled: the lock holder numbers the operation, writes a journal
//!   word (record position and kind), changes the count with one CAS that
//!   also stamps the operation's number into the count word, then changes
//!   the record and clears the journal. Whoever takes the lock over from a
//!   dead holder finishes or undoes a journaled operation, knowing from the
//!   stamp whether the count moved.
//! - Nothing read from the mapping is trusted: positions, lengths and states
//!   are checked before use, and a check that fails is a [`Corrupt`] error
//!   (never a panic, an out-of-bounds access or a huge allocation).

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::libc;

use crate::futex;
use crate::pidlock::{self, Acquired, Liveness, PidLock};
use crate::shm::SharedRegion;

const MAGIC: u32 = 0x6d70_7133; // "mpq3"
const DATA: usize = 128;
/// Bytes of a record before its payload: length, state, deliveries.
const REC_HDR: usize = 12;

// Header offsets.
const O_MAGIC: usize = 0;
const O_LOCK: usize = 4;
const O_NOT_EMPTY: usize = 12;
const O_NOT_FULL: usize = 16;
const O_GETTERS: usize = 20;
const O_PUTTERS: usize = 24;
const O_ALL_DONE: usize = 28;
const O_JOINERS: usize = 32;
/// Records in `keep..head` not yet done (leased or abandoned).
const O_LEASED: usize = 36;
const O_HEAD: usize = 40;
const O_TAIL: usize = 48;
const O_COUNT: usize = 56;
const O_MAXSIZE: usize = 64;
const O_CAPACITY: usize = 72;
/// Items put and not yet marked done (low 32 bits), and the number of the
/// last journaled operation that changed them (high 32 bits).
const O_UNFINISHED: usize = 80;
const O_KEEP: usize = 88;
/// Monotonic milliseconds of the last look for leases of dead consumers.
const O_LAST_SCAN: usize = 96;
/// Records in `keep..head` abandoned (their lease dropped unacknowledged).
const O_ABANDONED: usize = 104;
/// Number of the last journaled operation.
const O_OP_SEQ: usize = 108;
/// The journaled operation in progress: its record position with the kind
/// in the low two bits (positions are multiples of 4); 0 when none.
const O_JOURNAL: usize = 112;

// Journaled operation kinds.
const OP_PUSH: u64 = 1;
const OP_ACK: u64 = 2;

/// The unfinished count in the low half of the `O_UNFINISHED` word.
const COUNT_MASK: u64 = u32::MAX as u64;

// Record states.
const QUEUED: u32 = 0;
const DONE: u32 = u32::MAX;
const ABANDONED: u32 = u32::MAX - 1;

/// Consumed ring bytes are given back to the kernel this many at a time, so a
/// queue's memory follows what it holds rather than its capacity.
const RELEASE_CHUNK: u64 = 2 << 20;

/// Before a consumer sleeps on the futex it polls the item count, first
/// yielding its CPU between polls (on a busy machine the producer may be
/// waiting for it), then spinning: a consumer that keeps up with its producer
/// should not pay two system calls per item.
const YIELDS: u32 = 10;
const SPINS: u32 = 200;

/// While leases are outstanding, how often consumers look for leases whose
/// holder died (a liveness check per distinct holder), and the longest a
/// waiting consumer sleeps before it looks.
const SCAN_EVERY_MS: u64 = 20;
const LEASE_WAIT: Duration = Duration::from_millis(50);

/// The ring's shared memory holds something no correct process wrote: a
/// position, length or state out of range. Carried inside an
/// [`io::Error`] of kind `InvalidData`; see [`corrupt_reason`].
#[derive(Debug)]
pub struct Corrupt(pub String);

impl std::fmt::Display for Corrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "corrupt queue: {}", self.0)
    }
}

impl std::error::Error for Corrupt {}

fn corrupt(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, Corrupt(what))
}

/// The reason, if `e` reports a corrupt ring.
pub fn corrupt_reason(e: &io::Error) -> Option<&str> {
    e.get_ref().and_then(|r| r.downcast_ref::<Corrupt>()).map(|c| c.0.as_str())
}

/// Outcome of [`Ring::try_push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// The record was appended.
    Done,
    /// `maxsize` items are queued.
    Full,
    /// Not enough free bytes right now.
    NoRoom,
    /// The record can never fit: larger than the whole ring.
    TooLarge {
        /// The largest payload the ring takes ([`Ring::max_record`]).
        max: usize,
    },
}

/// A record handed out under a lease: where it is, and how many times it
/// has been delivered (1 the first time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The record's position in the ring (its key to acknowledge it).
    pub pos: u64,
    /// Times it was handed out, this time included.
    pub deliveries: u32,
}

/// Outcome of [`Ring::ack`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acked {
    /// The lease ended; with `task_done`, one unfinished item was marked done.
    Done,
    /// The lease ended, but `task_done` found no unfinished item to mark.
    NothingUnfinished,
    /// `lease` is not held by this process (acknowledged already, or never).
    NotHeld,
}

/// What a waiter waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seq {
    /// A record to pop.
    Items,
    /// Room to push.
    Room,
    /// Every item marked done.
    Done,
}

/// How a pop marks the record it takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Take {
    Plain,
    Leased,
}

/// The shared queue storage. Cheap to share by reference between threads.
#[derive(Debug)]
pub struct Ring {
    region: SharedRegion,
    capacity: usize,
}

fn bad_header() -> io::Error {
    corrupt("not a multiproc queue (bad header)".into())
}

fn pad4(n: u64) -> u64 {
    n.div_ceil(4) * 4
}

/// Monotonic milliseconds (CLOCK_MONOTONIC is one clock for the whole
/// system, so processes can compare readings).
fn now_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to write into; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1000).saturating_add(ts.tv_nsec as u64 / 1_000_000)
}

impl Ring {
    /// A new empty ring of about `capacity` data bytes (rounded up to a
    /// multiple of 4) holding at most `maxsize` records (0: unbounded).
    pub fn create(capacity: usize, maxsize: u64) -> io::Result<Self> {
        let capacity = capacity
            .max(REC_HDR + 4)
            .checked_next_multiple_of(4)
            .ok_or_else(|| io::Error::other("capacity too large"))?;
        let len = DATA.checked_add(capacity).ok_or_else(|| io::Error::other("capacity too large"))?;
        let region = SharedRegion::anonymous(c"multiproc-queue", len)?;
        let ring = Self { region, capacity };
        ring.u64(O_MAXSIZE).store(maxsize, Ordering::Relaxed);
        ring.u64(O_CAPACITY).store(capacity as u64, Ordering::Relaxed);
        ring.u32(O_MAGIC).store(MAGIC, Ordering::Release);
        Ok(ring)
    }

    /// Maps a ring received from another process, checking its header.
    pub fn open(fd: OwnedFd) -> io::Result<Self> {
        let len = usize::try_from(nix::sys::stat::fstat(&fd)?.st_size).map_err(|_| bad_header())?;
        if len <= DATA {
            return Err(bad_header());
        }
        let region = SharedRegion::map(fd, len)?;
        let capacity = region.atomic_u64(O_CAPACITY).ok_or_else(bad_header)?.load(Ordering::Acquire);
        let magic = region.atomic_u32(O_MAGIC).ok_or_else(bad_header)?.load(Ordering::Acquire);
        if magic != MAGIC
            || usize::try_from(capacity).ok() != Some(len - DATA)
            || !capacity.is_multiple_of(4)
            || capacity < (REC_HDR + 4) as u64
        {
            return Err(bad_header());
        }
        Ok(Self { region, capacity: len - DATA })
    }

    /// The memfd behind the ring, to pass to another process.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.region.fd()
    }

    /// Data bytes; a record takes its payload (padded to 4) plus 12.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Largest payload a record may have.
    pub fn max_record(&self) -> usize {
        self.capacity - REC_HDR
    }

    /// Most records queued at once (Python's `maxsize`; 0: unbounded).
    pub fn maxsize(&self) -> u64 {
        self.u64(O_MAXSIZE).load(Ordering::Relaxed)
    }

    fn u32(&self, at: usize) -> &AtomicU32 {
        self.region.atomic_u32(at).expect("header offsets are in bounds and aligned")
    }

    fn u64(&self, at: usize) -> &AtomicU64 {
        self.region.atomic_u64(at).expect("header offsets are in bounds and aligned")
    }

    /// The record header word `field` (0 length, 1 state, 2 deliveries) of
    /// the record at ring position `pos` (a multiple of 4, checked).
    fn rec(&self, pos: u64, field: usize) -> io::Result<&AtomicU32> {
        let at = (pos.wrapping_add(4 * field as u64) % self.capacity as u64) as usize;
        self.region
            .atomic_u32(DATA + at)
            .filter(|_| pos.is_multiple_of(4) && at + 4 <= self.capacity)
            .ok_or_else(|| corrupt(format!("record position {pos} is not a record boundary")))
    }

    fn lock(&self) -> io::Result<Guard<'_>> {
        let lock = PidLock::new(self.u32(O_LOCK));
        let how = lock.lock()?;
        let mut guard = Guard { ring: self, lock, repaired: false };
        if let Acquired::FromDeadHolder(_) = how {
            guard.repair()?;
        }
        Ok(guard)
    }

    /// Records queued now (Python's `qsize`).
    pub fn len(&self) -> u64 {
        self.u64(O_COUNT).load(Ordering::SeqCst)
    }

    /// No record is queued now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records handed out under a lease and not yet acknowledged (abandoned
    /// ones included).
    pub fn leased(&self) -> u32 {
        self.u32(O_LEASED).load(Ordering::SeqCst)
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
        let outcome = self.lock()?.push(payload)?;
        if outcome == Push::Done {
            self.wake(O_NOT_EMPTY, O_GETTERS);
        }
        Ok(outcome)
    }

    fn wake(&self, seq_at: usize, waiters_at: usize) {
        self.u32(seq_at).fetch_add(1, Ordering::SeqCst);
        if self.u32(waiters_at).load(Ordering::SeqCst) > 0 {
            futex::wake(self.u32(seq_at), u32::MAX);
        }
    }

    /// Whether a pop could find something: queued records, or leases that
    /// may need handing out again.
    fn maybe_items(&self) -> bool {
        !self.is_empty() || self.handed_out()
    }

    /// Whether records are handed out and not yet done (`keep` behind
    /// `head`), read from the positions rather than from a count.
    fn handed_out(&self) -> bool {
        self.u64(O_KEEP).load(Ordering::SeqCst) != self.u64(O_HEAD).load(Ordering::SeqCst)
    }

    /// Moves the oldest record into `out` (replacing its contents); `false`
    /// when the ring is empty. Wakes waiting producers. The record is gone
    /// from the queue once this returns (at most once).
    pub fn try_pop(&self, out: &mut Vec<u8>) -> io::Result<bool> {
        Ok(self.pop_as(out, Take::Plain)?.is_some())
    }

    /// Copies the oldest record into `out` and leases it to this process:
    /// it stays in the ring until [`ack`](Self::ack)ed; if this process dies
    /// first (or [`abandon`](Self::abandon)s it), the next consumer gets it
    /// again.
    pub fn try_pop_leased(&self, out: &mut Vec<u8>) -> io::Result<Option<Lease>> {
        self.pop_as(out, Take::Leased)
    }

    fn pop_as(&self, out: &mut Vec<u8>, take: Take) -> io::Result<Option<Lease>> {
        if !self.maybe_items() {
            return Ok(None);
        }
        let (popped, freed) = self.lock()?.pop(out, take)?;
        if popped.is_some() && freed {
            self.wake(O_NOT_FULL, O_PUTTERS);
        }
        Ok(popped)
    }

    /// Ends a lease: the record is done and, with `task_done`, one
    /// unfinished item too — both or neither, even if this process dies in
    /// the middle (see the journal in the module docs).
    pub fn ack(&self, lease: Lease, task_done: bool) -> io::Result<Acked> {
        let (acked, freed) = self.lock()?.ack(lease, task_done)?;
        if freed {
            self.wake(O_NOT_FULL, O_PUTTERS);
        }
        if task_done && acked == Acked::Done && self.unfinished() == 0 {
            self.wake(O_ALL_DONE, O_JOINERS);
        }
        Ok(acked)
    }

    /// Gives a leased record back unacknowledged: the next consumer gets it,
    /// its delivery count one higher.
    pub fn abandon(&self, lease: Lease) -> io::Result<bool> {
        let ok = self.lock()?.abandon(lease)?;
        if ok {
            self.wake(O_NOT_EMPTY, O_GETTERS);
        }
        Ok(ok)
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
            if passed(deadline) {
                return Ok(false);
            }
            self.wait_items(deadline)?;
        }
    }

    /// Waits until the ring may hold a record, or `deadline` passes; does
    /// not take it. While leases are outstanding it returns every
    /// `LEASE_WAIT` so the caller looks for leases of dead consumers.
    /// `true` when a record was seen.
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
        let deadline = if self.handed_out() {
            let cap = Instant::now() + LEASE_WAIT;
            Some(deadline.map_or(cap, |d| d.min(cap)))
        } else {
            deadline
        };
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
        let keep = self.u64(O_KEEP).load(Ordering::SeqCst);
        let used = tail.saturating_sub(keep).min(self.capacity as u64);
        !self.is_full() && self.capacity as u64 - used >= REC_HDR as u64 + pad4(payload_len as u64)
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

    /// The sequence word waiters on `seq` sleep on, and the count of such
    /// sleepers wakers look at (an async waiter counts itself in it).
    pub fn seq(&self, seq: Seq) -> (&AtomicU32, &AtomicU32) {
        match seq {
            Seq::Items => (self.u32(O_NOT_EMPTY), self.u32(O_GETTERS)),
            Seq::Room => (self.u32(O_NOT_FULL), self.u32(O_PUTTERS)),
            Seq::Done => (self.u32(O_ALL_DONE), self.u32(O_JOINERS)),
        }
    }

    /// The lock's owner word (for an async waiter that found it busy).
    pub fn lock_word(&self) -> &AtomicU32 {
        self.u32(O_LOCK)
    }

    /// The lock, if it can be had without sleeping: free now (after a short
    /// spin), or held by a process that died (taken over and repaired).
    fn lock_now(&self) -> io::Result<Option<Guard<'_>>> {
        let lock = PidLock::new(self.u32(O_LOCK));
        for _ in 0..SPINS {
            if lock.try_lock() {
                return Ok(Some(Guard { ring: self, lock, repaired: false }));
            }
            std::hint::spin_loop();
        }
        if lock.try_take_over().is_some() {
            let mut guard = Guard { ring: self, lock, repaired: false };
            guard.repair()?;
            return Ok(Some(guard));
        }
        Ok(None)
    }

    /// [`try_push`](Self::try_push) that never sleeps for the lock: `None`
    /// when another process holds it (wait on [`lock_word`](Self::lock_word)).
    pub fn try_push_now(&self, payload: &[u8]) -> io::Result<Option<Push>> {
        if payload.len() > self.max_record() {
            return Ok(Some(Push::TooLarge { max: self.max_record() }));
        }
        let Some(guard) = self.lock_now()? else { return Ok(None) };
        let outcome = guard.push(payload)?;
        drop(guard);
        if outcome == Push::Done {
            self.wake(O_NOT_EMPTY, O_GETTERS);
        }
        Ok(Some(outcome))
    }

    /// [`try_pop`](Self::try_pop) (or, `leased`,
    /// [`try_pop_leased`](Self::try_pop_leased)) that never sleeps for the
    /// lock: `None` when another process holds it.
    pub fn try_pop_now(&self, out: &mut Vec<u8>, leased: bool) -> io::Result<Option<Option<Lease>>> {
        if !self.maybe_items() {
            return Ok(Some(None));
        }
        let Some(guard) = self.lock_now()? else { return Ok(None) };
        let (popped, freed) = guard.pop(out, if leased { Take::Leased } else { Take::Plain })?;
        drop(guard);
        if popped.is_some() && freed {
            self.wake(O_NOT_FULL, O_PUTTERS);
        }
        Ok(Some(popped))
    }

    /// Whether a record of `payload_len` bytes would fit now (lock-free).
    pub fn room_for(&self, payload_len: usize) -> bool {
        self.has_room(payload_len)
    }

    /// How long a waiting consumer may sleep before it looks for leases of
    /// dead consumers (`None`: no lease outstanding).
    pub fn lease_wait(&self) -> Option<Duration> {
        self.handed_out().then_some(LEASE_WAIT)
    }

    /// Items put and not yet marked done (JoinableQueue).
    pub fn unfinished(&self) -> u64 {
        self.u64(O_UNFINISHED).load(Ordering::SeqCst) & COUNT_MASK
    }

    /// Marks one item done; `false` if none was outstanding.
    pub fn task_done(&self) -> bool {
        let done = self.change_unfinished(-1, None);
        if done == Some(0) {
            self.wake(O_ALL_DONE, O_JOINERS);
        }
        done.is_some()
    }

    /// Adds `delta` (±1) to the unfinished count in one CAS, keeping the
    /// word's stamp or, given `stamp`, writing it; the new count, or `None`
    /// (nothing changed but the stamp) when the count would leave `0..=u32::MAX`.
    fn change_unfinished(&self, delta: i64, stamp: Option<u32>) -> Option<u64> {
        let word = self.u64(O_UNFINISHED);
        let mut now = word.load(Ordering::SeqCst);
        loop {
            let count = (now & COUNT_MASK).checked_add_signed(delta).filter(|c| *c <= COUNT_MASK);
            let high = stamp.map_or(now & !COUNT_MASK, |s| u64::from(s) << 32);
            let new = high | count.unwrap_or(now & COUNT_MASK);
            match word.compare_exchange_weak(now, new, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return count,
                Err(actual) => now = actual,
            }
        }
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
        // `keep + capacity` that no reader looks at until `tail` moves past
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
        if cap < 4 * RELEASE_CHUNK || from + cap < tail || to < from {
            return;
        }
        let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        let (start, len) = (from % cap, (to - from).min(cap));
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
        // `keep` and `tail` that no writer touches until `keep` moves past
        // them (lengths were checked against the ring before the call).
        unsafe {
            self.region.read_at(DATA + at, a);
            self.region.read_at(DATA, b);
        }
    }

    /// Test hook: the word at header offset `at`, to corrupt.
    #[doc(hidden)]
    pub fn header_word_for_tests(&self, at: usize) -> Option<&AtomicU64> {
        self.region.atomic_u64(at).filter(|_| at < DATA)
    }
}

/// Positions read under the lock and checked against each other.
struct Positions {
    keep: u64,
    head: u64,
    tail: u64,
}

/// The ring locked by this process; unlocks on drop.
struct Guard<'a> {
    ring: &'a Ring,
    lock: PidLock<'a>,
    /// Taken over from a dead holder and repaired: every kind of waiter is
    /// woken on unlock (the dead holder may have made room, queued a record
    /// or finished the last item without living to say so).
    repaired: bool,
}

impl Guard<'_> {
    fn positions(&self) -> io::Result<Positions> {
        let r = self.ring;
        let p = Positions {
            keep: r.u64(O_KEEP).load(Ordering::Relaxed),
            head: r.u64(O_HEAD).load(Ordering::Relaxed),
            tail: r.u64(O_TAIL).load(Ordering::Relaxed),
        };
        let cap = r.capacity as u64;
        let ordered = p.keep <= p.head && p.head <= p.tail && p.tail - p.keep <= cap;
        let aligned = (p.keep | p.head | p.tail).is_multiple_of(4);
        if !ordered || !aligned || p.tail > u64::MAX / 2 {
            return Err(corrupt(format!("positions keep {} head {} tail {} (capacity {cap})", p.keep, p.head, p.tail)));
        }
        Ok(p)
    }

    /// The payload length and whole size of the record at `pos`, checked to
    /// end at or before `end`.
    fn record(&self, pos: u64, end: u64) -> io::Result<(usize, u64)> {
        let len = self.ring.rec(pos, 0)?.load(Ordering::Relaxed);
        let size = REC_HDR as u64 + pad4(u64::from(len));
        if (len as usize) > self.ring.max_record() || pos.checked_add(size).is_none_or(|e| e > end) {
            return Err(corrupt(format!("record at {pos} claims {len} bytes, past {end}")));
        }
        Ok((len as usize, size))
    }

    fn push(&self, payload: &[u8]) -> io::Result<Push> {
        let r = self.ring;
        let count = r.u64(O_COUNT).load(Ordering::Relaxed);
        let max = r.maxsize();
        if max != 0 && count >= max {
            return Ok(Push::Full);
        }
        let p = self.positions()?;
        let need = REC_HDR as u64 + pad4(payload.len() as u64);
        if r.capacity as u64 - (p.tail - p.keep) < need {
            return Ok(Push::NoRoom);
        }
        let len = u32::try_from(payload.len()).map_err(|_| io::Error::other("record longer than 4 GiB"))?;
        if r.unfinished() == COUNT_MASK {
            return Err(io::Error::other("more than 4294967295 unfinished items"));
        }
        r.rec(p.tail, 0)?.store(len, Ordering::Relaxed);
        r.rec(p.tail, 1)?.store(QUEUED, Ordering::Relaxed);
        r.rec(p.tail, 2)?.store(0, Ordering::Relaxed);
        r.copy_in(p.tail + REC_HDR as u64, payload);
        let op = self.begin(p.tail, OP_PUSH);
        r.change_unfinished(1, Some(op));
        r.u64(O_TAIL).store(p.tail + need, Ordering::Release);
        self.end();
        r.u64(O_COUNT).store(count + 1, Ordering::SeqCst);
        Ok(Push::Done)
    }

    /// Starts a journaled operation of `kind` on the record at `pos`;
    /// returns its number, to stamp into the unfinished count word.
    fn begin(&self, pos: u64, kind: u64) -> u32 {
        let r = self.ring;
        let op = r.u32(O_OP_SEQ).load(Ordering::Relaxed).wrapping_add(1);
        // Numbered first: a death before the journal is written leaves none.
        r.u32(O_OP_SEQ).store(op, Ordering::SeqCst);
        r.u64(O_JOURNAL).store(pos | kind, Ordering::SeqCst);
        op
    }

    /// The journaled operation is complete.
    fn end(&self) {
        self.ring.u64(O_JOURNAL).store(0, Ordering::SeqCst);
    }

    /// Takes a record: first one whose lease ended without an ack (holder
    /// dead, or abandoned), else the oldest queued one. Returns its lease
    /// (for a plain take too, with its delivery count) and whether it made
    /// room for a producer (ring bytes freed, or the count fell below
    /// `maxsize`).
    fn pop(&self, out: &mut Vec<u8>, take: Take) -> io::Result<(Option<Lease>, bool)> {
        let r = self.ring;
        let p = self.positions()?;
        if let Some(pos) = self.orphan(&p)? {
            let (len, _) = self.record(pos, p.head)?;
            out.clear();
            out.resize(len, 0);
            r.copy_out(pos + REC_HDR as u64, out);
            let deliveries = r.rec(pos, 2)?.load(Ordering::Relaxed).saturating_add(1);
            r.rec(pos, 2)?.store(deliveries, Ordering::Relaxed);
            let was = r.rec(pos, 1)?.swap(self.mark(take), Ordering::Relaxed);
            if was == ABANDONED {
                let a = r.u32(O_ABANDONED);
                a.store(a.load(Ordering::Relaxed).saturating_sub(1), Ordering::Relaxed);
            }
            let mut freed = false;
            if take == Take::Plain {
                let l = r.u32(O_LEASED);
                l.store(l.load(Ordering::Relaxed).saturating_sub(1), Ordering::SeqCst);
                freed = self.advance_keep(&p)?;
            }
            return Ok((Some(Lease { pos, deliveries }), freed));
        }
        if p.head == p.tail {
            return Ok((None, false));
        }
        let (len, size) = self.record(p.head, p.tail)?;
        out.clear();
        out.resize(len, 0);
        r.copy_out(p.head + REC_HDR as u64, out);
        r.rec(p.head, 2)?.store(1, Ordering::Relaxed);
        r.rec(p.head, 1)?.store(self.mark(take), Ordering::Relaxed);
        let new_head = p.head + size;
        r.u64(O_HEAD).store(new_head, Ordering::Release);
        let count = r.u64(O_COUNT).load(Ordering::Relaxed);
        r.u64(O_COUNT).store(count.saturating_sub(1), Ordering::SeqCst);
        // A producer waiting on `maxsize` may go on, bytes freed or not.
        let below_max = r.maxsize() != 0 && count >= r.maxsize();
        let lease = Lease { pos: p.head, deliveries: 1 };
        let freed = match take {
            Take::Leased => {
                r.u32(O_LEASED).fetch_add(1, Ordering::SeqCst);
                false
            }
            Take::Plain => self.advance_keep(&Positions { head: new_head, ..p })?,
        };
        Ok((Some(lease), freed || below_max))
    }

    fn mark(&self, take: Take) -> u32 {
        match take {
            Take::Plain => DONE,
            Take::Leased => pidlock::current_pid(),
        }
    }

    /// A handed-out record whose lease ended unacknowledged, if any: an
    /// abandoned one at once, one of a dead holder when it is time to look
    /// (the queue is empty, or [`SCAN_EVERY_MS`] passed).
    fn orphan(&self, p: &Positions) -> io::Result<Option<u64>> {
        let r = self.ring;
        if p.keep == p.head {
            return Ok(None);
        }
        let abandoned = r.u32(O_ABANDONED).load(Ordering::Relaxed) > 0;
        let now = now_ms();
        let scan = p.head == p.tail || now >= r.u64(O_LAST_SCAN).load(Ordering::Relaxed).saturating_add(SCAN_EVERY_MS);
        if !abandoned && !scan {
            return Ok(None);
        }
        if scan {
            r.u64(O_LAST_SCAN).store(now, Ordering::Relaxed);
        }
        let me = pidlock::current_pid();
        let mut known: Vec<(u32, bool)> = Vec::new();
        let mut pos = p.keep;
        while pos < p.head {
            let (_, size) = self.record(pos, p.head)?;
            let state = r.rec(pos, 1)?.load(Ordering::Relaxed);
            let orphaned = match state {
                DONE | QUEUED => false,
                ABANDONED => true,
                pid if scan && pid != me => match known.iter().find(|(k, _)| *k == pid) {
                    Some(&(_, dead)) => dead,
                    None => {
                        let dead = pidlock::liveness(pid) == Liveness::Dead;
                        known.push((pid, dead));
                        dead
                    }
                },
                _ => false,
            };
            if orphaned {
                return Ok(Some(pos));
            }
            pos += size;
        }
        Ok(None)
    }

    /// Whether `lease` is held by this process: a record boundary in
    /// `keep..head` marked with this pid, delivered as many times.
    fn holds(&self, p: &Positions, lease: Lease) -> io::Result<bool> {
        let r = self.ring;
        if lease.pos < p.keep || lease.pos >= p.head || !lease.pos.is_multiple_of(4) {
            return Ok(false);
        }
        Ok(r.rec(lease.pos, 1)?.load(Ordering::Relaxed) == pidlock::current_pid()
            && r.rec(lease.pos, 2)?.load(Ordering::Relaxed) == lease.deliveries)
    }

    /// Ends `lease` with an acknowledgement (and, with `task_done`, one
    /// unfinished item, journaled); whether ring bytes were freed.
    fn ack(&self, lease: Lease, task_done: bool) -> io::Result<(Acked, bool)> {
        let r = self.ring;
        let p = self.positions()?;
        if !self.holds(&p, lease)? {
            return Ok((Acked::NotHeld, false));
        }
        let mut acked = Acked::Done;
        if task_done {
            let op = self.begin(lease.pos, OP_ACK);
            if r.change_unfinished(-1, Some(op)).is_none() {
                acked = Acked::NothingUnfinished;
            }
        }
        r.rec(lease.pos, 1)?.store(DONE, Ordering::Relaxed);
        if task_done {
            self.end();
        }
        let l = r.u32(O_LEASED);
        l.store(l.load(Ordering::Relaxed).saturating_sub(1), Ordering::SeqCst);
        Ok((acked, self.advance_keep(&p)?))
    }

    /// Gives `lease` back unacknowledged; whether it was held.
    fn abandon(&self, lease: Lease) -> io::Result<bool> {
        let p = self.positions()?;
        if !self.holds(&p, lease)? {
            return Ok(false);
        }
        self.ring.rec(lease.pos, 1)?.store(ABANDONED, Ordering::Relaxed);
        self.ring.u32(O_ABANDONED).fetch_add(1, Ordering::SeqCst);
        Ok(true)
    }

    /// Moves `keep` past the `DONE` records at its front; whether it moved.
    fn advance_keep(&self, p: &Positions) -> io::Result<bool> {
        let r = self.ring;
        let mut keep = p.keep;
        while keep < p.head && r.rec(keep, 1)?.load(Ordering::Relaxed) == DONE {
            keep += self.record(keep, p.head)?.1;
        }
        if keep == p.keep {
            return Ok(false);
        }
        r.u64(O_KEEP).store(keep, Ordering::Release);
        if keep / RELEASE_CHUNK > p.keep / RELEASE_CHUNK {
            r.release(p.keep / RELEASE_CHUNK * RELEASE_CHUNK, keep / RELEASE_CHUNK * RELEASE_CHUNK, p.tail);
        }
        Ok(true)
    }

    /// After a holder died mid-update: finishes or undoes its journaled
    /// operation, checks the positions and every record, and recounts what
    /// is derived from them.
    fn repair(&mut self) -> io::Result<()> {
        self.repaired = true;
        let r = self.ring;
        let p = self.positions()?;
        let journal = r.u64(O_JOURNAL).load(Ordering::SeqCst);
        let (at, kind) = (journal & !3, journal & 3);
        // Whether the journaled operation changed the unfinished count.
        let counted =
            r.u64(O_UNFINISHED).load(Ordering::SeqCst) >> 32 == u64::from(r.u32(O_OP_SEQ).load(Ordering::SeqCst));
        if journal != 0 && kind == OP_PUSH && counted && p.tail == at {
            // Counted, never published: the item was not put.
            r.change_unfinished(-1, None);
        }
        let (mut leased, mut abandoned, mut pos) = (0u32, 0u32, p.keep);
        while pos < p.head {
            let (_, size) = self.record(pos, p.head)?;
            let state = r.rec(pos, 1)?;
            if journal != 0
                && kind == OP_ACK
                && counted
                && pos == at
                && !matches!(state.load(Ordering::Relaxed), DONE | QUEUED | ABANDONED)
            {
                // Marked done in the count, not yet in the record.
                state.store(DONE, Ordering::Relaxed);
            }
            match state.load(Ordering::Relaxed) {
                DONE => {}
                ABANDONED => {
                    leased += 1;
                    abandoned += 1;
                }
                // A record a pop marked but whose head move the holder did not
                // live to make, or a lease.
                _ => leased += 1,
            }
            pos += size;
        }
        let mut count = 0;
        while pos < p.tail {
            pos += self.record(pos, p.tail)?.1;
            count += 1;
        }
        r.u64(O_COUNT).store(count, Ordering::SeqCst);
        r.u32(O_LEASED).store(leased, Ordering::SeqCst);
        r.u32(O_ABANDONED).store(abandoned, Ordering::SeqCst);
        self.end();
        self.advance_keep(&p)?;
        Ok(())
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.lock.unlock();
        if self.repaired {
            let r = self.ring;
            r.wake(O_NOT_EMPTY, O_GETTERS);
            r.wake(O_NOT_FULL, O_PUTTERS);
            if r.unfinished() == 0 {
                r.wake(O_ALL_DONE, O_JOINERS);
            }
        }
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

    fn dead_pid() -> u32 {
        crate::pidlock::reaped_pid().expect("a reaped pid")
    }

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
        assert_eq!(ring.try_push(&[0; 53]).expect("push"), Push::TooLarge { max: 52 });
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
        // A holder that died after moving `tail` but before counting.
        PidLock::new(ring.u32(O_LOCK)).force_held_by(dead_pid());
        ring.u64(O_COUNT).store(2, Ordering::SeqCst);
        let mut out = Vec::new();
        assert!(ring.try_pop(&mut out).expect("pop"));
        assert_eq!(out, [0; 5]);
        assert_eq!(ring.len(), 2);
    }

    #[test]
    fn corrupt_positions_and_lengths_are_typed_errors() {
        let mut out = Vec::new();
        for (at, value) in [(O_HEAD, 24u64), (O_TAIL, 1 << 40), (O_TAIL, 6), (O_KEEP, 4)] {
            let ring = Ring::create(256, 0).expect("ring");
            ring.try_push(&[1; 5]).expect("push");
            ring.header_word_for_tests(at).expect("header word").store(value, Ordering::SeqCst);
            let e = ring.try_pop(&mut out).expect_err("corrupt");
            assert!(corrupt_reason(&e).is_some(), "{e}");
            let e = ring.try_push(&[1; 5]).expect_err("corrupt");
            assert!(corrupt_reason(&e).is_some(), "{e}");
        }
        // A record length pointing past the tail: no 4 GiB allocation.
        let ring = Ring::create(256, 0).expect("ring");
        ring.try_push(&[1; 5]).expect("push");
        ring.rec(0, 0).expect("record").store(u32::MAX, Ordering::SeqCst);
        let e = ring.try_pop(&mut out).expect_err("corrupt");
        assert!(corrupt_reason(&e).is_some(), "{e}");
        // And after a holder died: the repair validates too.
        let ring = Ring::create(256, 0).expect("ring");
        ring.try_push(&[1; 5]).expect("push");
        ring.rec(0, 0).expect("record").store(1000, Ordering::SeqCst);
        PidLock::new(ring.u32(O_LOCK)).force_held_by(dead_pid());
        let e = ring.try_push(&[1; 5]).expect_err("corrupt");
        assert!(corrupt_reason(&e).is_some(), "{e}");
    }

    #[test]
    fn leases_hold_room_until_acked_and_abandoned_ones_come_back() {
        let ring = Ring::create(64, 0).expect("ring");
        let mut out = Vec::new();
        assert_eq!(ring.try_push(&[1; 20]).expect("push"), Push::Done);
        assert_eq!(ring.try_push(&[2; 20]).expect("push"), Push::Done);
        let a = ring.try_pop_leased(&mut out).expect("pop").expect("a record");
        assert_eq!((out.as_slice(), a.deliveries), (&[1u8; 20][..], 1));
        // The leased record still takes room.
        assert_eq!(ring.try_push(&[3; 20]).expect("push"), Push::NoRoom);
        assert!(ring.abandon(a).expect("abandon"));
        let again = ring.try_pop_leased(&mut out).expect("pop").expect("the abandoned record");
        assert_eq!((out.as_slice(), again.deliveries), (&[1u8; 20][..], 2));
        assert_eq!(ring.ack(a, false).expect("ack"), Acked::NotHeld, "a lease of an earlier delivery is gone");
        assert_eq!(ring.ack(again, false).expect("ack"), Acked::Done);
        assert_eq!(ring.try_push(&[3; 20]).expect("push"), Push::Done);
        assert!(ring.try_pop(&mut out).expect("pop"));
        assert_eq!(out, [2; 20]);
        assert_eq!(ring.leased(), 0);
    }

    #[test]
    fn a_dead_consumers_lease_is_delivered_again() {
        let ring = Ring::create(256, 0).expect("ring");
        let mut out = Vec::new();
        ring.try_push(b"job").expect("push");
        let lease = ring.try_pop_leased(&mut out).expect("pop").expect("record");
        // As if a consumer that died had taken it.
        ring.rec(lease.pos, 1).expect("state").store(dead_pid(), Ordering::SeqCst);
        let again = ring.try_pop_leased(&mut out).expect("pop").expect("redelivered");
        assert_eq!((out.as_slice(), again.deliveries), (&b"job"[..], 2));
        assert!(ring.try_pop_leased(&mut out).expect("pop").is_none(), "delivered once more, not twice");
        assert_eq!(ring.ack(again, false).expect("ack"), Acked::Done);
        assert_eq!(ring.leased(), 0);
    }

    /// Leaves `ring` as a holder that died inside a journaled operation on
    /// the record at `pos` would: numbered, journaled, and (if `counted`)
    /// the unfinished count moved by `delta` under the operation's stamp.
    fn die_inside(ring: &Ring, pos: u64, kind: u64, counted: Option<i64>) {
        let guard = ring.lock().expect("lock");
        let op = guard.begin(pos, kind);
        if let Some(delta) = counted {
            ring.change_unfinished(delta, Some(op)).expect("count moves");
        }
        // Never unlocked: the holder "dies" here.
        std::mem::forget(guard);
        PidLock::new(ring.u32(O_LOCK)).force_held_by(dead_pid());
    }

    #[test]
    fn a_joinable_ack_cut_short_is_finished_or_undone_whole() {
        let mut out = Vec::new();
        // Died after counting the item done, before marking the record: the
        // next holder marks it, so it is neither delivered again nor owed.
        let ring = Ring::create(256, 0).expect("ring");
        ring.try_push(b"job").expect("push");
        let lease = ring.try_pop_leased(&mut out).expect("pop").expect("record");
        ring.rec(lease.pos, 1).expect("state").store(dead_pid(), Ordering::SeqCst);
        die_inside(&ring, lease.pos, OP_ACK, Some(-1));
        assert!(ring.try_pop_leased(&mut out).expect("pop").is_none(), "a counted ack is not delivered again");
        assert_eq!((ring.unfinished(), ring.leased()), (0, 0));
        assert!(ring.wait_all_done(Some(Instant::now())).expect("join"));
        // Died before counting: the record goes to the next consumer and
        // stays owed until that consumer acks it.
        let ring = Ring::create(256, 0).expect("ring");
        ring.try_push(b"job").expect("push");
        let lease = ring.try_pop_leased(&mut out).expect("pop").expect("record");
        ring.rec(lease.pos, 1).expect("state").store(dead_pid(), Ordering::SeqCst);
        die_inside(&ring, lease.pos, OP_ACK, None);
        let again = ring.try_pop_leased(&mut out).expect("pop").expect("redelivered");
        assert_eq!((again.deliveries, ring.unfinished()), (2, 1));
        assert_eq!(ring.ack(again, true).expect("ack"), Acked::Done);
        assert_eq!((ring.unfinished(), ring.leased()), (0, 0));
    }

    #[test]
    fn a_push_cut_short_is_not_counted() {
        let mut out = Vec::new();
        let ring = Ring::create(256, 0).expect("ring");
        ring.try_push(b"one").expect("push");
        // Counted, then died before moving `tail`: the item was never put.
        let tail = ring.u64(O_TAIL).load(Ordering::SeqCst);
        die_inside(&ring, tail, OP_PUSH, Some(1));
        assert!(ring.try_pop(&mut out).expect("pop"));
        assert_eq!((out.as_slice(), ring.unfinished()), (&b"one"[..], 1));
        assert!(!ring.try_pop(&mut out).expect("pop"));
        // Counted and published, died before clearing the journal: it stays.
        ring.try_push(b"two").expect("push");
        let two_at = ring.u64(O_TAIL).load(Ordering::SeqCst) - (REC_HDR as u64 + pad4(3));
        ring.u64(O_JOURNAL).store(two_at | OP_PUSH, Ordering::SeqCst);
        PidLock::new(ring.u32(O_LOCK)).force_held_by(dead_pid());
        assert!(ring.try_pop(&mut out).expect("pop"));
        assert_eq!((out.as_slice(), ring.unfinished(), ring.len()), (&b"two"[..], 2, 0));
        // A plain task_done keeps the stamp: a later repair still reads it.
        assert!(ring.task_done());
        assert_eq!(
            ring.u64(O_UNFINISHED).load(Ordering::SeqCst) >> 32,
            u64::from(ring.u32(O_OP_SEQ).load(Ordering::SeqCst))
        );
    }

    /// Runs `push_wait(payload)` without a deadline on a thread: only a
    /// wake-up ends its wait. Its outcome arrives on the channel.
    fn waiting_producer(ring: &std::sync::Arc<Ring>, payload: &'static [u8]) -> std::sync::mpsc::Receiver<Push> {
        let (ring, (tx, rx)) = (ring.clone(), std::sync::mpsc::channel());
        std::thread::spawn(move || tx.send(ring.push_wait(payload, None).expect("push")));
        rx
    }

    /// A producer that was never woken (so never returns) fails the test
    /// instead of hanging it.
    const NEVER: Duration = Duration::from_secs(30);

    /// Waits until a producer sleeps on the ring's room word.
    fn until_a_producer_sleeps(ring: &Ring) {
        while ring.u32(O_PUTTERS).load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_leased_get_wakes_a_producer_waiting_on_maxsize() {
        let ring = std::sync::Arc::new(Ring::create(1024, 1).expect("ring"));
        let mut out = Vec::new();
        ring.try_push(b"one").expect("push");
        let producer = waiting_producer(&ring, b"two");
        until_a_producer_sleeps(&ring);
        // The lease keeps the record's bytes, but the count fell below 1.
        let lease = ring.try_pop_leased(&mut out).expect("pop").expect("record");
        assert_eq!(producer.recv_timeout(NEVER), Ok(Push::Done), "woken when the count fell below maxsize");
        assert_eq!(ring.ack(lease, false).expect("ack"), Acked::Done);
    }

    #[test]
    fn taking_over_from_a_dead_holder_wakes_waiting_producers() {
        let ring = std::sync::Arc::new(Ring::create(64, 0).expect("ring"));
        let mut out = Vec::new();
        ring.try_push(&[1; 40]).expect("push");
        let producer = waiting_producer(&ring, &[2; 40]);
        until_a_producer_sleeps(&ring);
        // A consumer took the record (state, head, count) and died before
        // moving `keep` past it: the room it made is only found by repair.
        let tail = ring.u64(O_TAIL).load(Ordering::SeqCst);
        ring.rec(0, 1).expect("state").store(DONE, Ordering::SeqCst);
        ring.u64(O_HEAD).store(tail, Ordering::SeqCst);
        ring.u64(O_COUNT).store(0, Ordering::SeqCst);
        PidLock::new(ring.u32(O_LOCK)).force_held_by(dead_pid());
        assert!(!ring.try_pop(&mut out).expect("pop"), "nothing queued");
        assert_eq!(producer.recv_timeout(NEVER), Ok(Push::Done), "woken by the repair that freed the room");
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
