//! `Lock` and `RLock`: cross-process mutexes in shared memory whose
//! uncontended path is one atomic compare-and-swap (no system call). A holder
//! that dies is detected by the next waiter, which gets [`Error::OwnerDied`]
//! once (the guarded data may be half-updated) and can acquire again.

use std::time::{Duration, Instant};

use multiproc_sys::pidlock::{Acquired, PidLock};
use serde::{Deserialize, Serialize};

use super::block::Block;
use super::wait::deadline_after;
use super::waiter::{WordWait, block_word};
use crate::error::{Error, Result};

/// First wait of an async acquirer before it asks whether the holder died;
/// doubles up to [`RECHECK_MAX`].
const RECHECK_FIRST: Duration = Duration::from_millis(5);
const RECHECK_MAX: Duration = Duration::from_millis(250);

/// Takes the one-word lock at word `index` of `block` from async code,
/// without ever sleeping on the runtime: between attempts it waits for the
/// word to change through the process's waiter thread, and after a wait in
/// which it did not change it asks the kernel whether the holder died.
/// `None` when `deadline` passed. Holds nothing across an await, so a
/// dropped future leaves the lock alone.
pub(crate) async fn acquire_async(block: &Block, index: usize, deadline: Option<Instant>) -> Option<Acquired> {
    let raw = PidLock::new(block.word(index));
    let mut recheck = RECHECK_FIRST;
    loop {
        if raw.try_lock_contended() {
            return Some(Acquired::Clean);
        }
        let Some(held) = raw.mark_contended() else { continue };
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        let cap = Instant::now() + recheck;
        WordWait::new(block_word(block, index, None), held, Some(deadline.map_or(cap, |d| d.min(cap)))).await;
        if raw.word().load(std::sync::atomic::Ordering::Relaxed) == held {
            recheck = (recheck * 2).min(RECHECK_MAX);
            if let Some(pid) = raw.try_take_over() {
                return Some(Acquired::FromDeadHolder(pid));
            }
        }
    }
}

/// A lock shared between processes: `multiprocessing.Lock`.
///
/// ```no_run
/// # async fn demo(lock: multiproc::Lock) -> multiproc::Result<()> {
/// let _guard = lock.acquire().await?;   // with lock:
/// println!("only one process at a time");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lock {
    block: Block,
}

/// Holds a [`Lock`] until dropped.
#[derive(Debug)]
#[must_use = "the lock is released when the guard is dropped"]
pub struct LockGuard<'a> {
    lock: &'a Lock,
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        self.lock.raw().unlock();
    }
}

impl Lock {
    /// A new, unlocked lock (`Lock()`). Clones, and the value a child
    /// receives when the lock is passed as a task argument, are handles to
    /// the same lock.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> multiproc::Result<()> {
    /// let lock = multiproc::Lock::new()?;
    /// {
    ///     let _held = lock.acquire().await?; // with lock:
    ///     assert!(lock.try_acquire().is_none()); // not reentrant
    /// } // released here
    /// assert!(lock.try_acquire().is_some());
    /// # Ok(()) }
    /// ```
    pub fn new() -> Result<Self> {
        Ok(Self { block: Block::new(c"multiproc-lock", 8)? })
    }

    fn raw(&self) -> PidLock<'_> {
        PidLock::new(self.block.word(0))
    }

    fn guard(&self, how: Acquired) -> Result<LockGuard<'_>> {
        match how {
            Acquired::Clean => Ok(LockGuard { lock: self }),
            Acquired::FromDeadHolder(pid) => {
                self.raw().unlock();
                Err(Error::OwnerDied { pid })
            }
        }
    }

    /// `lock.acquire(block=False)`
    pub fn try_acquire(&self) -> Option<LockGuard<'_>> {
        self.raw().try_lock().then(|| LockGuard { lock: self })
    }

    /// `lock.acquire()` from sync code.
    pub fn blocking_acquire(&self) -> Result<LockGuard<'_>> {
        if let Some(g) = self.try_acquire() {
            return Ok(g);
        }
        super::assert_not_in_runtime("Lock::blocking_acquire");
        let how = self.raw().lock()?;
        self.guard(how)
    }

    /// `lock.acquire(timeout=…)` from sync code; `Ok(None)` on timeout.
    pub fn blocking_acquire_timeout(&self, timeout: Duration) -> Result<Option<LockGuard<'_>>> {
        if let Some(g) = self.try_acquire() {
            return Ok(Some(g));
        }
        super::assert_not_in_runtime("Lock::blocking_acquire_timeout");
        match self.raw().lock_until(deadline_after(Some(timeout)))? {
            Some(how) => self.guard(how).map(Some),
            None => Ok(None),
        }
    }

    /// `lock.acquire()`: waits off the runtime when the lock is held.
    pub async fn acquire(&self) -> Result<LockGuard<'_>> {
        Ok(self.acquire_until(None).await?.expect("no deadline, so never timed out"))
    }

    /// `lock.acquire(timeout=…)`; `Ok(None)` on timeout.
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<Option<LockGuard<'_>>> {
        self.acquire_until(deadline_after(Some(timeout))).await
    }

    async fn acquire_until(&self, deadline: Option<Instant>) -> Result<Option<LockGuard<'_>>> {
        if let Some(g) = self.try_acquire() {
            return Ok(Some(g));
        }
        match acquire_async(&self.block, 0, deadline).await {
            Some(how) => self.guard(how).map(Some),
            None => Ok(None),
        }
    }

    /// Whether any process holds the lock now.
    pub fn is_locked(&self) -> bool {
        self.raw().is_locked()
    }

    /// Releases without a guard (for a guard that was forgotten, as a
    /// condition does around a wait).
    pub(crate) fn release_raw(&self) {
        self.raw().unlock();
    }
}

impl LockGuard<'_> {
    /// Keeps the lock held past the guard; the caller releases it with
    /// `release_raw`.
    pub(crate) fn forget_into(self) {
        std::mem::forget(self);
    }
}

/// Who holds an [`RLock`]: the process and, inside it, the thread (sync code)
/// or the task (async code).
fn owner_token() -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match tokio::task::try_id() {
        Some(task) => (1u8, task).hash(&mut h),
        None => (2u8, nix::unistd::gettid().as_raw()).hash(&mut h),
    }
    h.finish() | 1
}

/// A reentrant lock shared between processes: `multiprocessing.RLock`. Its
/// owner (this process's thread, or async task) may acquire it again; each
/// acquire needs a release, and a release by anyone else is an error.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RLock {
    /// Words: 0 lock (owner word), 1 unused, 2-3 owner token, 4 depth.
    block: Block,
}

/// Holds one level of an [`RLock`] until dropped.
///
/// The guard is the proof of ownership: dropped on another thread (or in
/// another task) than the one that acquired, it still releases its level,
/// so the lock is never left held by a guard that is gone. A bare
/// [`RLock::release`] from a thread or task that does not own the lock is
/// [`Error::NotOwner`], as Python raises.
#[derive(Debug)]
#[must_use = "the lock is released when the guard is dropped"]
pub struct RLockGuard<'a> {
    lock: &'a RLock,
    /// The owner (thread or task) that acquired it.
    token: u64,
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        let _ = self.lock.release_as(self.token);
    }
}

impl RLock {
    /// A new, unlocked reentrant lock (`RLock()`); shared like a [`Lock`].
    pub fn new() -> Result<Self> {
        Ok(Self { block: Block::new(c"multiproc-rlock", 24)? })
    }

    fn raw(&self) -> PidLock<'_> {
        PidLock::new(self.block.word(0))
    }

    fn token(&self) -> &std::sync::atomic::AtomicU64 {
        self.block.region().atomic_u64(8).expect("token word inside the block")
    }

    fn owned_by_me(&self) -> bool {
        self.owned_by(owner_token())
    }

    fn owned_by(&self, token: u64) -> bool {
        use std::sync::atomic::Ordering;
        self.raw().held_by_me() && self.token().load(Ordering::Relaxed) == token
    }

    /// Records the caller as owner of a freshly taken lock.
    fn enter(&self, how: Acquired) -> Result<RLockGuard<'_>> {
        use std::sync::atomic::Ordering;
        if let Acquired::FromDeadHolder(pid) = how {
            self.token().store(0, Ordering::Relaxed);
            self.block.word(4).store(0, Ordering::Relaxed);
            self.raw().unlock();
            return Err(Error::OwnerDied { pid });
        }
        let token = owner_token();
        self.token().store(token, Ordering::Relaxed);
        self.block.word(4).store(1, Ordering::Relaxed);
        Ok(RLockGuard { lock: self, token })
    }

    fn reenter(&self) -> Option<RLockGuard<'_>> {
        use std::sync::atomic::Ordering;
        self.owned_by_me().then(|| {
            self.block.word(4).fetch_add(1, Ordering::Relaxed);
            RLockGuard { lock: self, token: owner_token() }
        })
    }

    /// `rlock.acquire()` from sync code.
    pub fn blocking_acquire(&self) -> Result<RLockGuard<'_>> {
        if let Some(g) = self.reenter() {
            return Ok(g);
        }
        if self.raw().try_lock() {
            return self.enter(Acquired::Clean);
        }
        super::assert_not_in_runtime("RLock::blocking_acquire");
        let how = self.raw().lock()?;
        self.enter(how)
    }

    /// `rlock.acquire(timeout=…)` from sync code; `Ok(None)` on timeout.
    pub fn blocking_acquire_timeout(&self, timeout: Duration) -> Result<Option<RLockGuard<'_>>> {
        if let Some(g) = self.reenter() {
            return Ok(Some(g));
        }
        if self.raw().try_lock() {
            return self.enter(Acquired::Clean).map(Some);
        }
        super::assert_not_in_runtime("RLock::blocking_acquire_timeout");
        match self.raw().lock_until(deadline_after(Some(timeout)))? {
            Some(how) => self.enter(how).map(Some),
            None => Ok(None),
        }
    }

    /// `rlock.acquire()`; waits off the runtime when another owner holds it.
    pub async fn acquire(&self) -> Result<RLockGuard<'_>> {
        if let Some(g) = self.reenter() {
            return Ok(g);
        }
        // Uncontended: one compare-and-swap, and a release with no wake-up.
        if self.raw().try_lock() {
            return self.enter(Acquired::Clean);
        }
        let how = acquire_async(&self.block, 0, None).await.unwrap_or(Acquired::Clean);
        self.enter(how)
    }

    /// Releases one level (`rlock.release()`); the guard does this on drop.
    /// Fails with [`Error::NotOwner`] unless the caller owns the lock.
    pub fn release(&self) -> Result<()> {
        self.release_as(owner_token())
    }

    fn release_as(&self, token: u64) -> Result<()> {
        use std::sync::atomic::Ordering;
        if !self.owned_by(token) {
            return Err(Error::NotOwner);
        }
        if self.block.word(4).fetch_sub(1, Ordering::Relaxed) == 1 {
            self.token().store(0, Ordering::Relaxed);
            self.raw().unlock();
        }
        Ok(())
    }

    /// How many times the owner holds it (0: free or held elsewhere).
    pub fn depth(&self) -> u32 {
        if self.owned_by_me() { self.block.word(4).load(std::sync::atomic::Ordering::Relaxed) } else { 0 }
    }
}

impl<'a> RLockGuard<'a> {
    /// Keeps the lock held past the guard (Python's bare `acquire()`); pair
    /// it with [`RLock::release`].
    pub fn forget(self) {
        std::mem::forget(self);
    }
}
