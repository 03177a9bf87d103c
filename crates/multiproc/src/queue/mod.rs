//! Queues across processes: [`Queue`], [`SimpleQueue`] and [`JoinableQueue`].
//!
//! # Theory of operation
//!
//! A queue is one shared memory mapping (a memfd, passed to other processes
//! as an fd; it has no name, so nothing can leak) holding a ring of
//! length-prefixed msgpack records, a small futex lock that records its
//! holder's pid, and sequence words to sleep on. See `multiproc_sys::ring`.
//!
//! - `put` encodes the item and copies it into the ring before it returns:
//!   there is no feeder thread, so a process may exit (and be joined) right
//!   after a `put`, whoever reads the item later. An item that cannot be
//!   encoded fails the `put` itself.
//! - `get` copies the record out and only then removes it, under the lock: a
//!   consumer killed at any point loses no item it had not received.
//! - A process that dies holding the lock is replaced by the next process
//!   that waits for it (within a few ms; it asks the kernel about the pid
//!   the lock word records), which checks and recounts the ring. A ring
//!   whose positions or lengths fail a check is [`Error::Corrupt`].
//! - `maxsize` counts items as in Python; independently the ring holds
//!   [`QueueBuilder::capacity_bytes`] bytes (32 MiB by default, allocated by
//!   the kernel only as it is used). A `put` that finds too little room waits
//!   like a `put` on a full queue; an item that could never fit is
//!   [`Error::ItemTooLarge`].
//! - Blocking methods wait on the futex directly. Async methods try first
//!   without waiting (they never sleep for the ring's lock: a busy lock is
//!   waited for like an empty queue) and otherwise register with the
//!   process's waiter thread, so they never park a runtime worker and any
//!   number of them costs no thread.
//! - [`Queue::get_leased`] hands an item out under a lease: acknowledged, it
//!   is gone; if its consumer dies first, the next consumer receives it
//!   again. Plain `get` is at-most-once, as Python's.

mod joinable;
mod simple;
mod stream;

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use multiproc_sys::pidlock::PidLock;
use multiproc_sys::ring::{self, Push, Ring, Seq};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use joinable::JoinableQueue;
pub use simple::SimpleQueue;
pub use stream::QueueState;

use crate::error::{Error, Result};
use crate::sync::{Watch, WordWait};
use crate::wire::fds::PassFd;

/// Default size of a queue's ring, in bytes.
pub const DEFAULT_CAPACITY_BYTES: usize = 32 << 20;
/// How often an async waiter for a busy ring lock looks whether its holder
/// died.
const LOCK_RECHECK: Duration = Duration::from_millis(5);
/// Times an async `get` on an empty queue yields to the runtime and looks
/// again before it waits on the blocking pool.
const ASYNC_POLLS: u32 = 8;

/// The per-process state of a queue, shared by its clones.
#[derive(Debug)]
pub(crate) struct Shared {
    ring: Ring,
    closed: AtomicBool,
}

/// A multi-producer, multi-consumer FIFO queue between processes:
/// `multiprocessing.Queue`.
///
/// ```no_run
/// #[multiproc::task]
/// fn worker(q: multiproc::Queue<String>) {
///     q.blocking_put("Data from worker process".into()).expect("put");
/// }
///
/// # async fn demo() -> multiproc::Result<()> {
/// let q = multiproc::Queue::new()?;                      // q = Queue()
/// let mut p = multiproc::Process::new(worker, (q.clone(),));
/// p.start().await?;
/// println!("{}", q.get().await?);                         // print(q.get())
/// p.join().await?;
/// # Ok(()) }
/// ```
///
/// Clones are handles to the same queue; so is the value a child receives
/// when the queue is passed as an argument. Items are msgpack-encoded, so
/// they cannot carry handles that own fds (a `Connection`, another queue):
/// pass those as process arguments instead (Python forbids them too).
pub struct Queue<T> {
    shared: Arc<Shared>,
    state: std::sync::Mutex<QueueState<T>>,
    _items: PhantomData<fn(T) -> T>,
}

/// Options of a [`Queue`].
#[derive(Debug, Clone)]
pub struct QueueBuilder {
    maxsize: usize,
    capacity: usize,
}

impl QueueBuilder {
    /// Most items queued at once (Python's `maxsize`); 0 means no limit.
    pub fn maxsize(&mut self, items: usize) -> &mut Self {
        self.maxsize = items;
        self
    }

    /// Bytes of shared storage for queued items (each takes its encoded size
    /// plus 4). The largest item is this minus 4.
    pub fn capacity_bytes(&mut self, bytes: usize) -> &mut Self {
        self.capacity = bytes;
        self
    }

    /// Creates the queue: an anonymous shared mapping (a memfd, no name in
    /// /dev/shm to leak) that lives while some process holds a handle.
    pub fn build<T>(&self) -> Result<Queue<T>> {
        let ring = Ring::create(self.capacity, self.maxsize as u64)?;
        Ok(Queue::from_ring(ring))
    }
}

fn passed(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

fn deadline_after(timeout: Duration) -> Option<Instant> {
    Some(Instant::now() + timeout)
}

thread_local! {
    /// Reused buffer for records taken out of a ring.
    static RECORD: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    /// Reused buffer for items being put.
    static ENCODED: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

impl Shared {
    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Relaxed) { Err(Error::Closed("queue")) } else { Ok(()) }
    }

    fn encode<T: Serialize>(&self, item: &T) -> Result<Vec<u8>> {
        self.check_open()?;
        crate::wire::encode("a queue item", item)
    }

    /// Encodes `item` and pushes it if there is room now; otherwise returns
    /// the encoded bytes for a waiting retry. The fast path reuses a
    /// per-thread buffer.
    /// `now`: never sleep for the ring's lock (async callers); a busy lock
    /// then also returns the bytes.
    fn try_put<T: Serialize>(&self, item: &T, now: bool) -> Result<Option<Vec<u8>>> {
        self.check_open()?;
        let mut buf = ENCODED.take();
        buf.clear();
        let r = rmp_serde::encode::write(&mut buf, item)
            .map_err(|e| Error::encode("a queue item", e))
            .and_then(|()| if now { self.try_push_now(&buf).map(|p| p == Some(true)) } else { self.try_push(&buf) });
        let out = match r {
            Ok(true) => Ok(None),
            Ok(false) => Ok(Some(buf.clone())),
            Err(e) => Err(e),
        };
        ENCODED.set(buf);
        out
    }

    /// One attempt to push; `Ok(false)` when there is no room now.
    fn try_push(&self, bytes: &[u8]) -> Result<bool> {
        push_outcome(self.ring.try_push(bytes).map_err(ring_error)?, bytes.len())
    }

    /// One attempt to push without sleeping for the lock: `None` when
    /// another process holds it.
    fn try_push_now(&self, bytes: &[u8]) -> Result<Option<bool>> {
        match self.ring.try_push_now(bytes).map_err(ring_error)? {
            Some(p) => push_outcome(p, bytes.len()).map(Some),
            None => Ok(None),
        }
    }

    /// One attempt to take an item without sleeping for the lock (outer
    /// `None`: another process holds it).
    fn try_get_now<T: DeserializeOwned>(self: &Arc<Self>) -> Result<Option<Option<T>>> {
        self.check_open()?;
        let mut buf = RECORD.take();
        let r = match self.ring.try_pop_now(&mut buf, false) {
            Ok(Some(Some(_))) => crate::wire::decode("a queue item", &buf).map(|v| Some(Some(v))),
            Ok(Some(None)) => Ok(Some(None)),
            Ok(None) => Ok(None),
            Err(e) => Err(ring_error(e)),
        };
        RECORD.set(buf);
        r
    }

    /// [`try_get_now`](Self::try_get_now) under a lease.
    fn try_get_leased_now<T: DeserializeOwned>(self: &Arc<Self>, joinable: bool) -> Result<Option<Option<Leased<T>>>> {
        self.check_open()?;
        let mut buf = RECORD.take();
        let r = match self.ring.try_pop_now(&mut buf, true) {
            Ok(Some(Some(lease))) => self.leased(&buf, lease, joinable).map(|l| Some(Some(l))),
            Ok(Some(None)) => Ok(Some(None)),
            Ok(None) => Ok(None),
            Err(e) => Err(ring_error(e)),
        };
        RECORD.set(buf);
        r
    }

    fn leased<T: DeserializeOwned>(
        self: &Arc<Self>,
        buf: &[u8],
        lease: ring::Lease,
        joinable: bool,
    ) -> Result<Leased<T>> {
        match crate::wire::decode("a queue item", buf) {
            Ok(item) => Ok(Leased { shared: self.clone(), lease, item: Some(item), joinable }),
            Err(e) => {
                // An item no consumer can decode would come back forever:
                // it is dropped, as a plain get drops it (and counted done,
                // or a JoinableQueue's join would wait for it forever).
                let _ = self.ring.ack(lease, joinable);
                Err(e)
            }
        }
    }

    /// One attempt to take an item.
    fn try_get<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        self.check_open()?;
        let mut buf = RECORD.take();
        let got = self.ring.try_pop(&mut buf);
        let r = match got {
            Ok(true) => crate::wire::decode("a queue item", &buf).map(Some),
            Ok(false) => Ok(None),
            Err(e) => Err(ring_error(e)),
        };
        RECORD.set(buf);
        r
    }

    /// One attempt to take an item under a lease.
    fn try_get_leased<T: DeserializeOwned>(self: &Arc<Self>, joinable: bool) -> Result<Option<Leased<T>>> {
        self.check_open()?;
        let mut buf = RECORD.take();
        let got = self.ring.try_pop_leased(&mut buf);
        let r = match got {
            Ok(Some(lease)) => self.leased(&buf, lease, joinable).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(ring_error(e)),
        };
        RECORD.set(buf);
        r
    }

    fn blocking_put(&self, bytes: &[u8], deadline: Option<Instant>) -> Result<()> {
        loop {
            if self.try_push(bytes)? {
                return Ok(());
            }
            if passed(deadline) {
                return Err(Error::Full);
            }
            crate::sync::assert_not_in_runtime("Queue::blocking_put");
            self.ring.wait_room(bytes.len(), deadline).map_err(ring_error)?;
        }
    }
}

/// Loops `attempt` and waits for items on this thread until `deadline`.
fn blocking_take<R>(
    shared: &Arc<Shared>,
    deadline: Option<Instant>,
    attempt: impl Fn(&Arc<Shared>) -> Result<Option<R>>,
) -> Result<R> {
    loop {
        if let Some(v) = attempt(shared)? {
            return Ok(v);
        }
        if passed(deadline) {
            return Err(Error::Empty);
        }
        crate::sync::assert_not_in_runtime("Queue::blocking_get");
        shared.ring.wait_items(deadline).map_err(ring_error)?;
    }
}

/// The library error for a ring error: [`Error::Corrupt`] when the shared
/// memory failed a check.
fn ring_error(e: std::io::Error) -> Error {
    match ring::corrupt_reason(&e) {
        Some(reason) => Error::Corrupt(reason.to_owned()),
        None => Error::Io(e),
    }
}

/// An item taken with [`Queue::get_leased`]: it stays owed to the queue
/// until [`ack`](Self::ack) (or, for a [`JoinableQueue`],
/// [`task_done`](Self::task_done)). If this process dies first, the item is
/// delivered again to another consumer with [`deliveries`](Self::deliveries)
/// one higher; dropping the guard unacknowledged gives it back at once the
/// same way. Derefs to the item.
#[must_use = "an unacknowledged lease gives the item back when dropped"]
pub struct Leased<T> {
    shared: Arc<Shared>,
    lease: ring::Lease,
    item: Option<T>,
    joinable: bool,
}

impl<T> Leased<T> {
    /// How many times this item has been handed out, this time included
    /// (1 unless an earlier consumer died or gave it back).
    pub fn deliveries(&self) -> u32 {
        self.lease.deliveries
    }

    /// Ends the lease: the item is done and never delivered again. For a
    /// [`JoinableQueue`] this also counts as its `task_done()`. Returns the
    /// item.
    pub fn ack(mut self) -> Result<T> {
        let item = self.item.take();
        match self.shared.ring.ack(self.lease, self.joinable).map_err(ring_error)? {
            ring::Acked::Done => item.ok_or(Error::LeaseLost),
            ring::Acked::NothingUnfinished => Err(Error::TaskDoneTooManyTimes),
            ring::Acked::NotHeld => Err(Error::LeaseLost),
        }
    }

    /// [`ack`](Self::ack) under `JoinableQueue`'s name.
    pub fn task_done(self) -> Result<T> {
        self.ack()
    }

    /// Gives the item back unacknowledged (as dropping the guard does): the
    /// next consumer receives it.
    pub fn give_back(mut self) -> Result<()> {
        self.item = None;
        let held = self.shared.ring.abandon(self.lease).map_err(ring_error);
        self.joinable = false;
        self.lease.deliveries = 0;
        if held? { Ok(()) } else { Err(Error::LeaseLost) }
    }
}

impl<T> std::ops::Deref for Leased<T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.item.as_ref().expect("the item is only taken by ack, which consumes the guard")
    }
}

impl<T> Drop for Leased<T> {
    fn drop(&mut self) {
        if self.item.is_some() {
            let _ = self.shared.ring.abandon(self.lease);
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Leased<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leased").field("item", &self.item).field("deliveries", &self.lease.deliveries).finish()
    }
}

fn push_outcome(p: Push, len: usize) -> Result<bool> {
    match p {
        Push::Done => Ok(true),
        Push::Full | Push::NoRoom => Ok(false),
        Push::TooLarge { max } => Err(Error::ItemTooLarge { len, max }),
    }
}

/// A ring word the process's waiter thread watches for an async wait (the
/// queue stays mapped while it does): a sequence word, or (`None`) the lock.
struct RingWord {
    shared: Arc<Shared>,
    seq: Option<Seq>,
}

impl Watch for RingWord {
    fn word(&self) -> &std::sync::atomic::AtomicU32 {
        match self.seq {
            Some(s) => self.shared.ring.seq(s).0,
            None => self.shared.ring.lock_word(),
        }
    }

    fn sleepers(&self) -> Option<&std::sync::atomic::AtomicU32> {
        self.seq.map(|s| self.shared.ring.seq(s).1)
    }
}

/// The value of `seq`'s word now, read before an attempt so that a change
/// after it is not missed.
fn seq_now(shared: &Shared, seq: Seq) -> u32 {
    shared.ring.seq(seq).0.load(Ordering::SeqCst)
}

/// Sleeps (through the waiter thread, never a runtime worker) until `seq`'s
/// word moves from `seen`, `deadline`, or `cap`.
async fn sleep_on(shared: &Arc<Shared>, seq: Seq, seen: u32, deadline: Option<Instant>, cap: Option<Duration>) {
    let until = cap.map_or(deadline, |c| {
        let c = Instant::now() + c;
        Some(deadline.map_or(c, |d| d.min(c)))
    });
    WordWait::new(Arc::new(RingWord { shared: shared.clone(), seq: Some(seq) }), seen, until).await;
}

/// Waits until the ring's lock, busy at the last attempt, changes hands
/// (or a few ms pass, for the next attempt to see whether its holder died).
async fn wait_lock(shared: &Arc<Shared>, deadline: Option<Instant>) {
    let Some(held) = PidLock::new(shared.ring.lock_word()).mark_contended() else { return };
    let c = Instant::now() + LOCK_RECHECK;
    let until = Some(deadline.map_or(c, |d| d.min(c)));
    WordWait::new(Arc::new(RingWord { shared: shared.clone(), seq: None }), held, until).await;
}

async fn put_async(shared: &Arc<Shared>, bytes: Vec<u8>, deadline: Option<Instant>) -> Result<()> {
    loop {
        let seen = seq_now(shared, Seq::Room);
        match shared.try_push_now(&bytes)? {
            Some(true) => return Ok(()),
            Some(false) if passed(deadline) => return Err(Error::Full),
            Some(false) => sleep_on(shared, Seq::Room, seen, deadline, None).await,
            None => wait_lock(shared, deadline).await,
        }
    }
}

async fn get_async<T: DeserializeOwned>(shared: &Arc<Shared>, deadline: Option<Instant>) -> Result<T> {
    take_async(shared, deadline, |s| s.try_get_now()).await
}

/// Loops `attempt` (outer `None`: the lock was busy; inner `None`: empty)
/// until an item, waiting in between without a thread of its own.
async fn take_async<R>(
    shared: &Arc<Shared>,
    deadline: Option<Instant>,
    attempt: impl Fn(&Arc<Shared>) -> Result<Option<Option<R>>>,
) -> Result<R> {
    let mut polls = 0;
    loop {
        let seen = seq_now(shared, Seq::Items);
        match attempt(shared)? {
            Some(Some(v)) => return Ok(v),
            _ if passed(deadline) => return Err(Error::Empty),
            None => wait_lock(shared, deadline).await,
            // A consumer that keeps up finds the next item a moment later:
            // yield to the runtime a few times before registering a wait.
            Some(None) if polls < ASYNC_POLLS => {
                polls += 1;
                tokio::task::yield_now().await;
            }
            Some(None) => {
                polls = 0;
                sleep_on(shared, Seq::Items, seen, deadline, shared.ring.lease_wait()).await;
            }
        }
    }
}

impl<T> Queue<T> {
    fn from_ring(ring: Ring) -> Self {
        Self::from_shared(Arc::new(Shared { ring, closed: AtomicBool::new(false) }))
    }

    fn from_shared(shared: Arc<Shared>) -> Self {
        Self { shared, state: std::sync::Mutex::new(QueueState::default()), _items: PhantomData }
    }

    /// An unbounded queue (`Queue()`).
    pub fn new() -> Result<Self> {
        Self::builder().build()
    }

    /// A queue of at most `maxsize` items (`Queue(maxsize)`; 0: unbounded).
    pub fn with_maxsize(maxsize: usize) -> Result<Self> {
        Self::builder().maxsize(maxsize).build()
    }

    /// Options: `maxsize`, the bytes of shared storage; finish with
    /// [`QueueBuilder::build`].
    pub fn builder() -> QueueBuilder {
        QueueBuilder { maxsize: 0, capacity: DEFAULT_CAPACITY_BYTES }
    }

    /// Items queued now (`q.qsize()`); other processes may change it at once.
    pub fn qsize(&self) -> usize {
        usize::try_from(self.shared.ring.len()).unwrap_or(usize::MAX)
    }

    /// `q.empty()`: no item is queued right now. Another process may put
    /// one the next moment, so as in Python this is no way to decide that
    /// the work is over: send a sentinel, count the items, or `join` a
    /// [`JoinableQueue`].
    pub fn empty(&self) -> bool {
        self.shared.ring.is_empty()
    }

    /// `q.full()`: `maxsize` items are queued.
    pub fn full(&self) -> bool {
        self.shared.ring.is_full()
    }

    /// The `maxsize` given at creation (0: unbounded).
    pub fn maxsize(&self) -> usize {
        usize::try_from(self.shared.ring.maxsize()).unwrap_or(usize::MAX)
    }

    /// Largest encoded item the queue can hold, in bytes.
    pub fn max_item_bytes(&self) -> usize {
        self.shared.ring.max_record()
    }

    /// This process will neither put nor get any more (`q.close()`); later
    /// calls through any clone in this process fail with [`Error::Closed`].
    /// Items already put stay available to other processes.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Relaxed);
    }

    /// Whether [`close`](Self::close) was called through some clone in this
    /// process.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Relaxed)
    }

    /// Python's `q.join_thread()`: returns at once, as there is no feeder
    /// thread (every `put` has finished writing when it returns).
    pub fn join_thread(&self) {}

    /// Python's `q.cancel_join_thread()`: nothing to cancel, see
    /// [`join_thread`](Self::join_thread).
    pub fn cancel_join_thread(&self) {}
}

impl<T: Serialize> Queue<T> {
    /// Puts an item, waiting while the queue is full (`q.put(item)`).
    pub async fn put(&self, item: T) -> Result<()> {
        match self.shared.try_put(&item, true)? {
            None => Ok(()),
            Some(bytes) => put_async(&self.shared, bytes, None).await,
        }
    }

    /// Puts an item, waiting at most `timeout` for room; [`Error::Full`]
    /// after that (`q.put(item, timeout=t)`).
    pub async fn put_timeout(&self, item: T, timeout: Duration) -> Result<()> {
        let bytes = self.shared.encode(&item)?;
        put_async(&self.shared, bytes, deadline_after(timeout)).await
    }

    /// Puts an item if there is room now, else [`Error::Full`]
    /// (`q.put_nowait(item)`).
    pub fn put_nowait(&self, item: T) -> Result<()> {
        match self.shared.try_put(&item, false)? {
            None => Ok(()),
            Some(_) => Err(Error::Full),
        }
    }

    /// [`put`](Self::put) for sync code.
    pub fn blocking_put(&self, item: T) -> Result<()> {
        match self.shared.try_put(&item, false)? {
            None => Ok(()),
            Some(bytes) => self.shared.blocking_put(&bytes, None),
        }
    }

    /// [`put_timeout`](Self::put_timeout) for sync code.
    pub fn blocking_put_timeout(&self, item: T, timeout: Duration) -> Result<()> {
        let bytes = self.shared.encode(&item)?;
        self.shared.blocking_put(&bytes, deadline_after(timeout))
    }
}

impl<T: DeserializeOwned> Queue<T> {
    /// Takes the oldest item, waiting for one (`q.get()`). Cancel-safe: an
    /// item is only removed by the call that returns it.
    pub async fn get(&self) -> Result<T> {
        get_async(&self.shared, None).await
    }

    /// Takes an item, waiting at most `timeout`; [`Error::Empty`] after that
    /// (`q.get(timeout=t)`).
    pub async fn get_timeout(&self, timeout: Duration) -> Result<T> {
        get_async(&self.shared, deadline_after(timeout)).await
    }

    /// Takes an item if one is queued, else [`Error::Empty`] (`q.get_nowait()`).
    pub fn get_nowait(&self) -> Result<T> {
        self.shared.try_get()?.ok_or(Error::Empty)
    }

    /// [`get`](Self::get) for sync code.
    pub fn blocking_get(&self) -> Result<T> {
        blocking_take(&self.shared, None, |s| s.try_get())
    }

    /// [`get_timeout`](Self::get_timeout) for sync code.
    pub fn blocking_get_timeout(&self, timeout: Duration) -> Result<T> {
        blocking_take(&self.shared, deadline_after(timeout), |s| s.try_get())
    }

    /// Takes the oldest item under a lease (beyond Python): the item stays
    /// owed to the queue until the returned guard's
    /// [`ack`](Leased::ack). If this process dies (or drops the guard)
    /// first, another consumer receives it again, with a higher
    /// [`deliveries`](Leased::deliveries) count: at-least-once delivery, for
    /// worker fleets that must lose no job. Plain [`get`](Self::get) stays
    /// at-most-once, as in Python. A lease held by a dead process is handed
    /// out again within about 50 ms of a consumer asking.
    pub async fn get_leased(&self) -> Result<Leased<T>> {
        take_async(&self.shared, None, |s| s.try_get_leased_now(false)).await
    }

    /// [`get_leased`](Self::get_leased), waiting at most `timeout`;
    /// [`Error::Empty`] after that.
    pub async fn get_leased_timeout(&self, timeout: Duration) -> Result<Leased<T>> {
        take_async(&self.shared, deadline_after(timeout), |s| s.try_get_leased_now(false)).await
    }

    /// [`get_leased`](Self::get_leased) if an item is there now, else
    /// [`Error::Empty`].
    pub fn get_leased_nowait(&self) -> Result<Leased<T>> {
        self.shared.try_get_leased(false)?.ok_or(Error::Empty)
    }

    /// [`get_leased`](Self::get_leased) for sync code.
    pub fn blocking_get_leased(&self) -> Result<Leased<T>> {
        blocking_take(&self.shared, None, |s| s.try_get_leased(false))
    }

    /// [`get_leased_timeout`](Self::get_leased_timeout) for sync code.
    pub fn blocking_get_leased_timeout(&self, timeout: Duration) -> Result<Leased<T>> {
        blocking_take(&self.shared, deadline_after(timeout), |s| s.try_get_leased(false))
    }
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Self::from_shared(self.shared.clone())
    }
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("qsize", &self.qsize())
            .field("maxsize", &self.maxsize())
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// A queue crosses a process boundary as its memfd.
impl<T> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let fd = self.shared.ring.fd().try_clone_to_owned().map_err(serde::ser::Error::custom)?;
        PassFd(fd).serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let fd = PassFd::deserialize(d)?;
        let ring = Ring::open(fd.0).map_err(serde::de::Error::custom)?;
        Ok(Self::from_ring(ring))
    }
}
