//! `Condition`: a condition variable over a [`Lock`] or [`RLock`], exact in
//! how many waiters a `notify(n)` wakes. Each waiter claims a slot (a futex
//! word and its arrival ticket) while holding the lock; `notify(n)` marks the
//! `n` oldest waiting slots notified and wakes just those.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use multiproc_sys::futex;
use serde::{Deserialize, Serialize};

use super::block::Block;
use super::lock::{Lock, RLock};
use super::wait::{self, deadline_after};
use crate::error::{Error, Result};

/// Most processes (or threads) that may wait on one condition at once.
pub const MAX_WAITERS: usize = 127;

const FREE: u32 = 0;
const WAITING: u32 = 1;
const NOTIFIED: u32 = 2;

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Inner {
    Plain(Lock),
    Reentrant(RLock),
}

/// `multiprocessing.Condition(lock=None)`: by default over a new [`RLock`].
///
/// ```no_run
/// # async fn demo(cond: multiproc::Condition) -> multiproc::Result<()> {
/// let mut guard = cond.acquire().await?;   // with cond:
/// guard.wait().await?;                      //     cond.wait()
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Condition {
    lock: Inner,
    /// Words: 0 next ticket; then per slot: state, ticket.
    slots: Block,
}

/// The condition's lock, held; waits and notifications go through it.
#[derive(Debug)]
#[must_use = "the lock is released when the guard is dropped"]
pub struct ConditionGuard<'a> {
    cond: &'a Condition,
    /// RLock depth to restore after a wait.
    depth: u32,
}

impl Drop for ConditionGuard<'_> {
    fn drop(&mut self) {
        self.cond.unlock_raw();
    }
}

/// A slot being waited on (what a sleeping waiter needs, off the runtime).
#[derive(Clone)]
struct Waiting {
    slots: Block,
    slot: usize,
}

impl Waiting {
    fn state(&self) -> &std::sync::atomic::AtomicU32 {
        self.slots.word(1 + 2 * self.slot)
    }

    fn attempt(&self) -> Result<Option<()>> {
        Ok((self.state().load(Ordering::Acquire) == NOTIFIED).then_some(()))
    }

    fn sleep(&self, deadline: Option<Instant>) -> Result<()> {
        futex::wait(self.state(), WAITING, wait::left(deadline))?;
        Ok(())
    }
}

impl Condition {
    /// Over a new [`RLock`], as Python's default.
    pub fn new() -> Result<Self> {
        Self::build(Inner::Reentrant(RLock::new()?))
    }

    /// Over an existing [`Lock`] (`Condition(lock)`).
    pub fn with_lock(lock: Lock) -> Result<Self> {
        Self::build(Inner::Plain(lock))
    }

    /// Over an existing [`RLock`].
    pub fn with_rlock(lock: RLock) -> Result<Self> {
        Self::build(Inner::Reentrant(lock))
    }

    fn build(lock: Inner) -> Result<Self> {
        Ok(Self { lock, slots: Block::new(c"multiproc-condition", 4 * (1 + 2 * MAX_WAITERS))? })
    }

    /// Takes the lock (`with cond:`) from sync code.
    pub fn blocking_acquire(&self) -> Result<ConditionGuard<'_>> {
        match &self.lock {
            Inner::Plain(l) => l.blocking_acquire()?.forget_into(),
            Inner::Reentrant(r) => r.blocking_acquire()?.forget(),
        }
        Ok(ConditionGuard { cond: self, depth: 1 })
    }

    /// Takes the lock (`with cond:`).
    pub async fn acquire(&self) -> Result<ConditionGuard<'_>> {
        match &self.lock {
            Inner::Plain(l) => l.acquire().await?.forget_into(),
            Inner::Reentrant(r) => r.acquire().await?.forget(),
        }
        Ok(ConditionGuard { cond: self, depth: 1 })
    }

    fn unlock_raw(&self) {
        match &self.lock {
            Inner::Plain(l) => l.release_raw(),
            Inner::Reentrant(r) => {
                let _ = r.release();
            }
        }
    }

    /// Releases every level the caller holds; returns how many.
    fn release_all(&self) -> u32 {
        match &self.lock {
            Inner::Plain(l) => {
                l.release_raw();
                1
            }
            Inner::Reentrant(r) => {
                let depth = r.depth();
                for _ in 0..depth {
                    let _ = r.release();
                }
                depth
            }
        }
    }

    fn claim(&self) -> Result<Waiting> {
        let ticket = self.slots.word(0).fetch_add(1, Ordering::Relaxed);
        for slot in 0..MAX_WAITERS {
            let w = Waiting { slots: self.slots.clone(), slot };
            if w.state().load(Ordering::Relaxed) == FREE {
                self.slots.word(2 + 2 * slot).store(ticket, Ordering::Relaxed);
                w.state().store(WAITING, Ordering::Release);
                return Ok(w);
            }
        }
        Err(Error::TooManyWaiters { max: MAX_WAITERS })
    }

    /// Marks up to `n` of the oldest waiters notified and wakes them. The
    /// caller holds the lock.
    fn notify_raw(&self, n: usize) {
        let mut waiting: Vec<(u32, usize)> = (0..MAX_WAITERS)
            .filter(|&s| self.slots.word(1 + 2 * s).load(Ordering::Relaxed) == WAITING)
            .map(|s| (self.slots.word(2 + 2 * s).load(Ordering::Relaxed), s))
            .collect();
        waiting.sort_unstable_by_key(|&(ticket, _)| ticket);
        for (_, s) in waiting.into_iter().take(n) {
            let state = self.slots.word(1 + 2 * s);
            state.store(NOTIFIED, Ordering::Release);
            futex::wake(state, 1);
        }
    }
}

impl ConditionGuard<'_> {
    /// `cond.notify(n)`: wakes exactly `min(n, waiting)` waiters, oldest first.
    pub fn notify(&self, n: usize) {
        self.cond.notify_raw(n);
    }

    /// `cond.notify_all()`
    pub fn notify_all(&self) {
        self.cond.notify_raw(MAX_WAITERS);
    }

    /// Frees the slot once the lock is held again; whether it was notified.
    fn finish(&self, w: &Waiting) -> bool {
        let notified = w.state().load(Ordering::Acquire) == NOTIFIED;
        w.state().store(FREE, Ordering::Release);
        notified
    }

    fn relock_blocking(&mut self) -> Result<()> {
        match &self.cond.lock {
            Inner::Plain(l) => l.blocking_acquire()?.forget_into(),
            Inner::Reentrant(r) => {
                for _ in 0..self.depth {
                    r.blocking_acquire()?.forget();
                }
            }
        }
        Ok(())
    }

    async fn relock(&mut self) -> Result<()> {
        match &self.cond.lock {
            Inner::Plain(l) => l.acquire().await?.forget_into(),
            Inner::Reentrant(r) => {
                for _ in 0..self.depth {
                    r.acquire().await?.forget();
                }
            }
        }
        Ok(())
    }

    fn blocking_wait_until(&mut self, deadline: Option<Instant>) -> Result<bool> {
        let w = self.cond.claim()?;
        self.depth = self.cond.release_all();
        let slept = wait::blocking(&w, deadline, Waiting::attempt, Waiting::sleep);
        self.relock_blocking()?;
        slept?;
        Ok(self.finish(&w))
    }

    async fn wait_until(&mut self, deadline: Option<Instant>) -> Result<bool> {
        let w = self.cond.claim()?;
        self.depth = self.cond.release_all();
        let slept = wait::asynchronous(&w, deadline, Waiting::attempt, Waiting::sleep).await;
        self.relock().await?;
        slept?;
        Ok(self.finish(&w))
    }

    /// `cond.wait()` from sync code: releases the lock, sleeps until notified,
    /// takes the lock again.
    pub fn blocking_wait(&mut self) -> Result<()> {
        self.blocking_wait_until(None).map(|_| ())
    }

    /// `cond.wait(timeout)` from sync code: `false` when it timed out.
    pub fn blocking_wait_timeout(&mut self, timeout: Duration) -> Result<bool> {
        self.blocking_wait_until(deadline_after(Some(timeout)))
    }

    /// `cond.wait()`
    pub async fn wait(&mut self) -> Result<()> {
        self.wait_until(None).await.map(|_| ())
    }

    /// `cond.wait(timeout)`: `false` when it timed out.
    pub async fn wait_timeout(&mut self, timeout: Duration) -> Result<bool> {
        self.wait_until(deadline_after(Some(timeout))).await
    }

    /// `cond.wait_for(predicate, timeout)` from sync code: the predicate's
    /// last value.
    pub fn blocking_wait_for(
        &mut self,
        mut predicate: impl FnMut() -> bool,
        timeout: Option<Duration>,
    ) -> Result<bool> {
        let deadline = deadline_after(timeout);
        while !predicate() {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            self.blocking_wait_until(deadline)?;
        }
        Ok(true)
    }

    /// `cond.wait_for(predicate, timeout)`: the predicate's last value.
    pub async fn wait_for(&mut self, mut predicate: impl FnMut() -> bool, timeout: Option<Duration>) -> Result<bool> {
        let deadline = deadline_after(timeout);
        while !predicate() {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            self.wait_until(deadline).await?;
        }
        Ok(true)
    }
}
