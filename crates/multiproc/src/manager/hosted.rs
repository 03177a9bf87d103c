//! Proxies to the synchronisation objects, queue, value and array a manager
//! hosts (`manager.Lock()`, `manager.Queue()`, `manager.Value(…)`, …). They
//! live in the manager process, so unlike the top-level shared-memory types
//! they work from other hosts over TCP. A waiting call (acquire, get, wait)
//! is parked by the manager and answered when it can be; nothing blocks the
//! manager for its other clients.
//!
//! Locks are released explicitly, as with Python's proxies (no guards: a
//! release is a message to the manager). A lock held by a process whose
//! connection to the manager dies is freed, and the next acquirer gets
//! `Error::OwnerDied` once, as with the top-level `Lock`.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::encode;
use super::proxy::{Handle, boolean, done, len, proxy_debug, required, twins, values};
use crate::error::{Error, Result};
use crate::wire::{ManagerReply, ObjectOp};

/// The caller inside this process, for locks that have owners: the tokio
/// task when there is one, else the thread (Python: the thread).
fn owner() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static THREAD: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    match tokio::task::try_id() {
        Some(id) => {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            id.hash(&mut h);
            h.finish() | 1 << 63
        }
        None => THREAD.with(|t| *t),
    }
}

fn millis(timeout: Duration) -> Option<u64> {
    // A sub-millisecond timeout still waits a little rather than not at all.
    let ms = timeout.as_millis();
    Some(if ms == 0 && !timeout.is_zero() { 1 } else { u64::try_from(ms).unwrap_or(u64::MAX) })
}

/// `true` → `Ok(())`; `false` cannot happen without a timeout.
fn acquired(r: ManagerReply) -> Result<()> {
    if boolean(r)? { Ok(()) } else { Err(Error::Malformed("an acquire without timeout failed".into())) }
}

fn index(r: ManagerReply) -> Result<usize> {
    len(r)
}

macro_rules! lock_methods {
    () => {
        twins!(
            /// `acquire()`: waits until the lock is ours.
            acquire / blocking_acquire() -> () =
                Ok::<_, Error>(ObjectOp::Acquire { owner: owner(), timeout_ms: None }), acquired;
        );
        twins!(
            /// `acquire(timeout=…)`: whether we got it in time.
            acquire_timeout / blocking_acquire_timeout(timeout: Duration) -> bool =
                Ok::<_, Error>(ObjectOp::Acquire { owner: owner(), timeout_ms: millis(timeout) }), boolean;
        );
        twins!(
            /// `acquire(blocking=False)`
            try_acquire / blocking_try_acquire() -> bool =
                Ok::<_, Error>(ObjectOp::Acquire { owner: owner(), timeout_ms: Some(0) }), boolean;
        );
        twins!(
            /// `release()`
            release / blocking_release() -> () = Ok::<_, Error>(ObjectOp::ReleaseLock { owner: owner() }), done;
        );
    };
}

macro_rules! proxy_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Serialize, Deserialize)]
        pub struct $name {
            handle: Handle,
        }

        proxy_debug!($name);

        impl $name {
            pub(crate) fn new(handle: Handle) -> Self {
                Self { handle }
            }
        }
    };
}

proxy_type!(
    /// A lock hosted by a manager (`manager.Lock()`): any caller may release
    /// it.
    LockProxy
);

impl LockProxy {
    lock_methods!();
    twins!(
        /// Whether someone holds the lock.
        locked / blocking_locked() -> bool = Ok::<_, Error>(ObjectOp::State), boolean;
    );
}

proxy_type!(
    /// A re-entrant lock hosted by a manager (`manager.RLock()`): owned by
    /// the task (or thread) that acquired it, which may acquire it again.
    RLockProxy
);

impl RLockProxy {
    lock_methods!();
}

proxy_type!(
    /// A semaphore hosted by a manager (`manager.Semaphore(n)` and
    /// `manager.BoundedSemaphore(n)`).
    SemaphoreProxy
);

impl SemaphoreProxy {
    lock_methods!();
    twins!(
        /// The counter (`get_value()`).
        get_value / blocking_get_value() -> usize = Ok::<_, Error>(ObjectOp::State), len;
    );
}

proxy_type!(
    /// A condition variable hosted by a manager (`manager.Condition()`), with
    /// its own re-entrant lock.
    ConditionProxy
);

impl ConditionProxy {
    lock_methods!();
    twins!(
        /// `wait()`: releases the lock, waits for a notify, takes the lock
        /// back. The caller must hold the lock (`Error::NotOwner`).
        wait / blocking_wait() -> () = Ok::<_, Error>(ObjectOp::Wait { owner: owner(), timeout_ms: None }), acquired;
    );
    twins!(
        /// `wait(timeout)`: `false` when the time ran out (the lock is held
        /// again either way).
        wait_timeout / blocking_wait_timeout(timeout: Duration) -> bool =
            Ok::<_, Error>(ObjectOp::Wait { owner: owner(), timeout_ms: millis(timeout) }), boolean;
    );
    twins!(
        /// `notify(n)`
        notify / blocking_notify(n: usize) -> () =
            Ok::<_, Error>(ObjectOp::Notify { owner: owner(), n: n as u64 }), done;
    );
    twins!(
        /// `notify_all()`
        notify_all / blocking_notify_all() -> () =
            Ok::<_, Error>(ObjectOp::Notify { owner: owner(), n: u64::MAX }), done;
    );
}

proxy_type!(
    /// An event hosted by a manager (`manager.Event()`).
    EventProxy
);

impl EventProxy {
    twins!(
        /// `set()`
        set / blocking_set() -> () = Ok::<_, Error>(ObjectOp::SetFlag), done;
    );
    twins!(
        /// `clear()`
        clear / blocking_clear() -> () = Ok::<_, Error>(ObjectOp::ClearFlag), done;
    );
    twins!(
        /// `is_set()`
        is_set / blocking_is_set() -> bool = Ok::<_, Error>(ObjectOp::State), boolean;
    );
    twins!(
        /// `wait()`: until the flag is set.
        wait / blocking_wait() -> () = Ok::<_, Error>(ObjectOp::Wait { owner: 0, timeout_ms: None }), acquired;
    );
    twins!(
        /// `wait(timeout)`: the flag at the end.
        wait_timeout / blocking_wait_timeout(timeout: Duration) -> bool =
            Ok::<_, Error>(ObjectOp::Wait { owner: 0, timeout_ms: millis(timeout) }), boolean;
    );
}

proxy_type!(
    /// A barrier hosted by a manager (`manager.Barrier(n)`).
    BarrierProxy
);

impl BarrierProxy {
    twins!(
        /// `wait()`: the arrival index, `0..parties`.
        wait / blocking_wait() -> usize = Ok::<_, Error>(ObjectOp::BarrierWait { timeout_ms: None }), index;
    );
    twins!(
        /// `wait(timeout)`: a timeout breaks the barrier (`Error::BrokenBarrier`).
        wait_timeout / blocking_wait_timeout(timeout: Duration) -> usize =
            Ok::<_, Error>(ObjectOp::BarrierWait { timeout_ms: millis(timeout) }), index;
    );
    twins!(
        /// `abort()`
        abort / blocking_abort() -> () = Ok::<_, Error>(ObjectOp::Abort), done;
    );
    twins!(
        /// `reset()`
        reset / blocking_reset() -> () = Ok::<_, Error>(ObjectOp::Reset), done;
    );
    twins!(
        /// `parties`
        parties / blocking_parties() -> usize = Ok::<_, Error>(ObjectOp::Len), len;
    );
    twins!(
        /// `n_waiting`
        n_waiting / blocking_n_waiting() -> usize = Ok::<_, Error>(ObjectOp::State), len;
    );
    twins!(
        /// `broken`
        broken / blocking_broken() -> bool = Ok::<_, Error>(ObjectOp::Contains(ByteBuf::new())), boolean;
    );
}

/// A queue hosted by a manager (`manager.Queue(maxsize)`), items `T`.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct QueueProxy<T> {
    handle: Handle,
    #[serde(skip)]
    types: PhantomData<fn() -> T>,
}

proxy_debug!(QueueProxy<T>);

impl<T> Clone for QueueProxy<T> {
    fn clone(&self) -> Self {
        Self { handle: self.handle.clone(), types: PhantomData }
    }
}

fn put(item: ByteBuf, block: bool, timeout_ms: Option<u64>) -> ObjectOp {
    ObjectOp::Put { item, block, timeout_ms }
}

impl<T: Serialize + DeserializeOwned> QueueProxy<T> {
    pub(crate) fn new(handle: Handle) -> Self {
        Self { handle, types: PhantomData }
    }

    twins!(
        /// `put(item)`: waits for room.
        put / blocking_put(item: T) -> () = encode(&item).map(|b| put(b, true, None)), done;
    );
    twins!(
        /// `put(item, timeout=…)`: `Error::Full` when no room came in time.
        put_timeout / blocking_put_timeout(item: T, timeout: Duration) -> () =
            encode(&item).map(|b| put(b, true, millis(timeout))), done;
    );
    twins!(
        /// `put_nowait(item)`: `Error::Full` when there is no room.
        put_nowait / blocking_put_nowait(item: T) -> () = encode(&item).map(|b| put(b, false, None)), done;
    );
    twins!(
        /// `get()`: waits for an item.
        get / blocking_get() -> T = Ok::<_, Error>(ObjectOp::Take { block: true, timeout_ms: None }), required;
    );
    twins!(
        /// `get(timeout=…)`: `Error::Empty` when none came in time.
        get_timeout / blocking_get_timeout(timeout: Duration) -> T =
            Ok::<_, Error>(ObjectOp::Take { block: true, timeout_ms: millis(timeout) }), required;
    );
    twins!(
        /// `get_nowait()`: `Error::Empty` when there is none.
        get_nowait / blocking_get_nowait() -> T =
            Ok::<_, Error>(ObjectOp::Take { block: false, timeout_ms: None }), required;
    );
    twins!(
        /// `qsize()`
        qsize / blocking_qsize() -> usize = Ok::<_, Error>(ObjectOp::Len), len;
    );
    twins!(
        /// `full()`
        full / blocking_full() -> bool = Ok::<_, Error>(ObjectOp::State), boolean;
    );

    /// `empty()`
    pub async fn empty(&self) -> Result<bool> {
        Ok(self.qsize().await? == 0)
    }

    /// `empty()` from sync code.
    pub fn blocking_empty(&self) -> Result<bool> {
        Ok(self.blocking_qsize()? == 0)
    }
}

/// A value hosted by a manager (`manager.Value(typecode, v)`), of any
/// serializable type.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct ValueProxy<T> {
    handle: Handle,
    #[serde(skip)]
    types: PhantomData<fn() -> T>,
}

proxy_debug!(ValueProxy<T>);

impl<T> Clone for ValueProxy<T> {
    fn clone(&self) -> Self {
        Self { handle: self.handle.clone(), types: PhantomData }
    }
}

impl<T: Serialize + DeserializeOwned> ValueProxy<T> {
    pub(crate) fn new(handle: Handle) -> Self {
        Self { handle, types: PhantomData }
    }

    twins!(
        /// `v.value`
        get / blocking_get() -> T = Ok::<_, Error>(ObjectOp::Load), required;
    );
    twins!(
        /// `v.value = x`
        set / blocking_set(value: T) -> () = encode(&value).map(ObjectOp::Store), done;
    );
}

/// An array hosted by a manager (`manager.Array(typecode, seq)`): a
/// fixed-length sequence of `T`.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct ArrayProxy<T> {
    handle: Handle,
    #[serde(skip)]
    types: PhantomData<fn() -> T>,
}

proxy_debug!(ArrayProxy<T>);

impl<T> Clone for ArrayProxy<T> {
    fn clone(&self) -> Self {
        Self { handle: self.handle.clone(), types: PhantomData }
    }
}

impl<T: Serialize + DeserializeOwned> ArrayProxy<T> {
    pub(crate) fn new(handle: Handle) -> Self {
        Self { handle, types: PhantomData }
    }

    twins!(
        /// `a[i]` (negative counts from the end)
        get / blocking_get(index: i64) -> T = Ok::<_, Error>(ObjectOp::Index(index)), required;
    );
    twins!(
        /// `a[i] = v`
        set / blocking_set(index: i64, value: T) -> () = encode(&value).map(|v| ObjectOp::SetIndex(index, v)), done;
    );
    twins!(
        /// `len(a)`
        len / blocking_len() -> usize = Ok::<_, Error>(ObjectOp::Len), len;
    );
    twins!(
        /// `a[:]`: a copy of the whole array
        to_vec / blocking_to_vec() -> Vec<T> = Ok::<_, Error>(ObjectOp::Items), values;
    );
}
