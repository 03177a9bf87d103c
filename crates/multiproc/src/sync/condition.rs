//! `Condition`: a condition variable over a [`Lock`] or [`RLock`], exact in
//! how many waiters a `notify(n)` wakes. Each waiter claims a slot (a futex
//! word, its arrival ticket and its pid) while holding the lock; `notify(n)`
//! marks the `n` oldest waiting slots notified and wakes just those.
//!
//! A waiter killed while waiting leaves its slot behind: `notify` skips the
//! slots of dead processes (so a dead waiter never swallows a notification)
//! and frees them, and a waiter that finds no free slot reclaims those of
//! dead processes first.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use multiproc_sys::futex;
use multiproc_sys::pidlock;
use serde::{Deserialize, Serialize};

use super::block::Block;
use super::lock::{Lock, RLock};
use super::wait::{self, deadline_after};
use super::waiter::block_word;
use crate::error::{Error, Result};

/// Most live processes (or threads, or tasks) that may wait on one
/// condition at once; slots of dead waiters are reclaimed.
pub const MAX_WAITERS: usize = 1024;
/// Words per slot: state, ticket, pid.
const SLOT_WORDS: usize = 3;

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
    /// Words: 0 next ticket; then per slot: state, ticket, waiter's pid.
    slots: Block,
}

/// The condition's lock, held; waits and notifications go through it.
#[derive(Debug)]
#[must_use = "the lock is released when the guard is dropped"]
pub struct ConditionGuard<'a> {
    cond: &'a Condition,
    /// RLock depth to restore after a wait.
    depth: u32,
    /// Whether the caller holds the lock: not during a wait, nor after a
    /// wait that was cancelled (its future dropped) or failed to take the
    /// lock back. Dropping the guard releases the lock only if held.
    held: bool,
}

impl Drop for ConditionGuard<'_> {
    fn drop(&mut self) {
        if self.held {
            self.cond.unlock_raw();
        }
    }
}

/// A claimed slot; dropping it frees the slot (after the wait, with the lock
/// held again, or when an async wait is cancelled).
struct Claim(Waiting);

impl Drop for Claim {
    fn drop(&mut self) {
        self.0.state().store(FREE, Ordering::Release);
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
        self.slots.word(1 + SLOT_WORDS * self.slot)
    }

    fn attempt(&self) -> Result<Option<()>> {
        Ok((self.state().load(Ordering::Acquire) == NOTIFIED).then_some(()))
    }

    fn watch(&self) -> wait::Sleep {
        wait::Sleep { src: block_word(&self.slots, 1 + SLOT_WORDS * self.slot, None), expected: WAITING, cap: None }
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
        Ok(Self { lock, slots: Block::new(c"multiproc-condition", 4 * (1 + SLOT_WORDS * MAX_WAITERS))? })
    }

    /// Takes the lock (`with cond:`) from sync code.
    pub fn blocking_acquire(&self) -> Result<ConditionGuard<'_>> {
        match &self.lock {
            Inner::Plain(l) => l.blocking_acquire()?.forget_into(),
            Inner::Reentrant(r) => r.blocking_acquire()?.forget(),
        }
        Ok(ConditionGuard { cond: self, depth: 1, held: true })
    }

    /// Takes the lock (`with cond:`).
    pub async fn acquire(&self) -> Result<ConditionGuard<'_>> {
        match &self.lock {
            Inner::Plain(l) => l.acquire().await?.forget_into(),
            Inner::Reentrant(r) => r.acquire().await?.forget(),
        }
        Ok(ConditionGuard { cond: self, depth: 1, held: true })
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

    fn ticket(&self, slot: usize) -> &std::sync::atomic::AtomicU32 {
        self.slots.word(2 + SLOT_WORDS * slot)
    }

    fn pid(&self, slot: usize) -> &std::sync::atomic::AtomicU32 {
        self.slots.word(3 + SLOT_WORDS * slot)
    }

    /// Whether the waiter recorded in `slot` is a process that is gone
    /// (never true for this process: its slots are its own).
    fn waiter_dead(&self, slot: usize) -> bool {
        let pid = self.pid(slot).load(Ordering::Relaxed);
        pid != pidlock::current_pid() && !pidlock::process_alive(pid)
    }

    /// Claims a free slot (the caller holds the lock); when none is free,
    /// reclaims the slots of dead waiters first.
    fn claim(&self) -> Result<Claim> {
        let ticket = self.slots.word(0).fetch_add(1, Ordering::Relaxed);
        for reclaim in [false, true] {
            for slot in 0..MAX_WAITERS {
                let w = Waiting { slots: self.slots.clone(), slot };
                let state = w.state().load(Ordering::Relaxed);
                if state == FREE || (reclaim && self.waiter_dead(slot)) {
                    // The slot is WAITING only once ticket and pid are set.
                    if state != FREE
                        && w.state().compare_exchange(state, FREE, Ordering::AcqRel, Ordering::Relaxed).is_err()
                    {
                        continue;
                    }
                    self.ticket(slot).store(ticket, Ordering::Relaxed);
                    self.pid(slot).store(pidlock::current_pid(), Ordering::Relaxed);
                    w.state().store(WAITING, Ordering::Release);
                    return Ok(Claim(w));
                }
            }
        }
        Err(Error::TooManyWaiters { max: MAX_WAITERS })
    }

    /// Marks up to `n` of the oldest waiters notified and wakes them. The
    /// caller holds the lock.
    fn notify_raw(&self, n: usize) {
        let mut waiting: Vec<(u32, usize)> = (0..MAX_WAITERS)
            .filter(|&s| self.slots.word(1 + SLOT_WORDS * s).load(Ordering::Relaxed) == WAITING)
            .map(|s| (self.ticket(s).load(Ordering::Relaxed), s))
            .collect();
        // Tickets count up from 0 and may wrap; order them by age relative
        // to the next ticket.
        let next = self.slots.word(0).load(Ordering::Relaxed);
        waiting.sort_unstable_by_key(|&(ticket, _)| std::cmp::Reverse(next.wrapping_sub(ticket)));
        let mut left = n;
        for (_, s) in waiting {
            if left == 0 {
                break;
            }
            let state = self.slots.word(1 + SLOT_WORDS * s);
            // A waiter killed while waiting: its slot is freed, and the
            // notification goes to the next one.
            if self.waiter_dead(s) {
                let _ = state.compare_exchange(WAITING, FREE, Ordering::AcqRel, Ordering::Relaxed);
                continue;
            }
            // A cancelled async waiter frees its slot without the lock, so
            // only a slot still waiting counts.
            if state.compare_exchange(WAITING, NOTIFIED, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                left -= 1;
                // Every sleeper on the word: a cancelled wait's sleep on the
                // blocking pool may still be on it, and must not take the
                // new waiter's wake-up.
                futex::wake(state, u32::MAX);
            }
        }
    }
}

impl ConditionGuard<'_> {
    /// `cond.notify(n)`: wakes exactly `min(n, waiting)` live waiters,
    /// oldest first. [`Error::NotOwner`] when the guard no longer holds the
    /// lock (after a cancelled or failed wait), as Python raises.
    pub fn notify(&self, n: usize) -> Result<()> {
        if !self.held {
            return Err(Error::NotOwner);
        }
        self.cond.notify_raw(n);
        Ok(())
    }

    /// `cond.notify_all()`; [`Error::NotOwner`] as for [`notify`](Self::notify).
    pub fn notify_all(&self) -> Result<()> {
        self.notify(MAX_WAITERS)
    }

    /// Frees the slot once the lock is held again; whether it was notified.
    fn finish(&self, claim: Claim) -> bool {
        claim.0.state().load(Ordering::Acquire) == NOTIFIED
    }

    /// Takes the remaining levels of an RLock held before the wait (the
    /// owner re-enters at once: no waiting).
    fn restore_depth(&self) -> Result<()> {
        if let Inner::Reentrant(r) = &self.cond.lock {
            for _ in 1..self.depth {
                r.blocking_acquire()?.forget();
            }
        }
        Ok(())
    }

    /// Takes the lock back after a wait. On an error (such as
    /// [`Error::OwnerDied`]) the lock is not held, and dropping the guard
    /// leaves it alone.
    fn relock_blocking(&mut self) -> Result<()> {
        match &self.cond.lock {
            Inner::Plain(l) => l.blocking_acquire()?.forget_into(),
            Inner::Reentrant(r) => r.blocking_acquire()?.forget(),
        }
        self.held = true;
        self.restore_depth()
    }

    /// [`relock_blocking`](Self::relock_blocking) for async code. Cancelled
    /// while waiting for the lock, it leaves the lock free (the single await
    /// comes before the lock is taken).
    async fn relock(&mut self) -> Result<()> {
        match &self.cond.lock {
            Inner::Plain(l) => l.acquire().await?.forget_into(),
            Inner::Reentrant(r) => r.acquire().await?.forget(),
        }
        self.held = true;
        self.restore_depth()
    }

    /// Releases the lock for a wait on a fresh slot.
    fn start_wait(&mut self) -> Result<Claim> {
        if !self.held {
            return Err(Error::NotOwner);
        }
        let claim = self.cond.claim()?;
        self.held = false;
        self.depth = self.cond.release_all();
        Ok(claim)
    }

    fn blocking_wait_until(&mut self, deadline: Option<Instant>) -> Result<bool> {
        let claim = self.start_wait()?;
        let slept = wait::blocking(&claim.0, deadline, Waiting::attempt, Waiting::sleep);
        self.relock_blocking()?;
        slept?;
        Ok(self.finish(claim))
    }

    async fn wait_until(&mut self, deadline: Option<Instant>) -> Result<bool> {
        let claim = self.start_wait()?;
        let slept = wait::asynchronous(&claim.0, deadline, Waiting::attempt, Waiting::watch).await;
        self.relock().await?;
        slept?;
        Ok(self.finish(claim))
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

    /// `cond.wait()`. If the future is dropped before it finishes (a
    /// `select!` or a timeout around it), the wait gives up its slot and the
    /// lock stays released: the guard then no longer holds it (dropping it
    /// releases nothing, and a further wait is [`Error::NotOwner`]).
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
