//! `Semaphore` and `BoundedSemaphore`: a counter in shared memory; acquiring
//! at zero sleeps on its futex.
//!
//! A unit held through a [`SemaphoreGuard`] is recorded with the holder's
//! pid in a table of slots; if the holder dies, a waiter that finds no unit
//! free gives the dead holder's units back. Changes to the counter and the
//! table happen under a small internal lock, with a journal word written
//! first: a process killed mid-change is rolled back by the next locker, so
//! no unit is ever lost or doubled by a kill. Units taken and never given
//! back on purpose ([`SemaphoreGuard::forget`], Python's bare `acquire()`)
//! are not recorded, and are not reclaimed.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use multiproc_sys::futex;
use multiproc_sys::pidlock::{self, Acquired, PidLock};
use serde::{Deserialize, Serialize};

use super::block::Block;
use super::wait::{self, deadline_after};
use super::waiter::block_word;
use crate::error::{Error, Result};

// Word indexes.
const VALUE: usize = 0;
const SLEEPERS: usize = 1;
const BOUND: usize = 2;
const LOCK: usize = 3;
/// Slot + 1 of the change in progress (0: none), then what to restore.
const JOURNAL: usize = 4;
const OLD_VALUE: usize = 5;
const OLD_PID: usize = 6;
/// Milliseconds (truncated) of the last look for dead holders.
const LAST_CHECK: usize = 7;
const SLOTS: usize = 8;
/// Units recorded per semaphore; more guards at once are not recorded.
const HOLDERS: usize = 128;
/// How often waiters look for dead holders, and the longest they sleep
/// between looks.
const CHECK_EVERY_MS: u32 = 20;
const SLEEP_CAP: Duration = Duration::from_millis(50);

/// `multiprocessing.Semaphore(value)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Semaphore {
    block: Block,
}

/// `multiprocessing.BoundedSemaphore(value)`: releasing above the initial
/// value is [`Error::TooManyReleases`]. Derefs to [`Semaphore`] for the rest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BoundedSemaphore(Semaphore);

impl BoundedSemaphore {
    /// `BoundedSemaphore(value)`
    pub fn new(value: u32) -> Result<Self> {
        let s = Semaphore::new(value)?;
        s.block.word(BOUND).store(value, Ordering::Relaxed);
        Ok(Self(s))
    }
}

impl std::ops::Deref for BoundedSemaphore {
    type Target = Semaphore;

    fn deref(&self) -> &Semaphore {
        &self.0
    }
}

/// Holds one unit of a [`Semaphore`] until dropped.
#[derive(Debug)]
#[must_use = "the unit is released when the guard is dropped"]
pub struct SemaphoreGuard<'a> {
    sem: &'a Semaphore,
    /// The holder slot recording this unit, if one was free.
    slot: Option<usize>,
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        let _ = self.sem.give_back(self.slot);
    }
}

impl<'a> SemaphoreGuard<'a> {
    /// Keeps the unit past the guard (Python's bare `acquire()`); give it
    /// back with [`Semaphore::release`]. The unit is no longer recorded as
    /// this process's, so it is not given back if this process dies.
    pub fn forget(self) {
        if let Some(slot) = self.slot {
            let _ = self.sem.locked(|s| {
                s.journal(slot);
                s.slot(slot).store(0, Ordering::Relaxed);
                s.commit();
            });
        }
        std::mem::forget(self);
    }
}

fn now_ms() -> u32 {
    use std::sync::OnceLock;
    static START: OnceLock<Instant> = OnceLock::new();
    // Process-local is enough: each process rate-limits its own checks.
    START.get_or_init(Instant::now).elapsed().as_millis() as u32
}

impl Semaphore {
    /// `Semaphore(value)`
    pub fn new(value: u32) -> Result<Self> {
        let block = Block::new(c"multiproc-semaphore", 4 * (SLOTS + HOLDERS))?;
        block.word(VALUE).store(value, Ordering::Relaxed);
        Ok(Self { block })
    }

    /// The current value (`get_value()`).
    pub fn get_value(&self) -> u32 {
        self.block.word(VALUE).load(Ordering::Relaxed)
    }

    fn slot(&self, i: usize) -> &AtomicU32 {
        self.block.word(SLOTS + i)
    }

    /// Runs `f` under the internal lock (held for a few loads and stores),
    /// rolling back the change of a holder that died mid-way first.
    fn locked<R>(&self, f: impl FnOnce(&Self) -> R) -> Result<R> {
        let lock = PidLock::new(self.block.word(LOCK));
        if let Acquired::FromDeadHolder(_) = lock.lock()? {
            self.roll_back();
        }
        let r = f(self);
        lock.unlock();
        Ok(r)
    }

    /// [`locked`](Self::locked), or (`now`) only if the internal lock can
    /// be had without sleeping (async callers on a runtime thread): `None`
    /// when it is busy.
    fn locked_if<R>(&self, now: bool, f: impl FnOnce(&Self) -> R) -> Result<Option<R>> {
        if !now {
            return self.locked(f).map(Some);
        }
        let lock = PidLock::new(self.block.word(LOCK));
        let mut got = false;
        for _ in 0..100 {
            if lock.try_lock() {
                got = true;
                break;
            }
            std::hint::spin_loop();
        }
        if !got {
            if lock.try_take_over().is_none() {
                return Ok(None);
            }
            self.roll_back();
        }
        let r = f(self);
        lock.unlock();
        Ok(Some(r))
    }

    /// Notes what slot `slot` and the value hold before a change.
    fn journal(&self, slot: usize) {
        let b = &self.block;
        b.word(OLD_VALUE).store(b.word(VALUE).load(Ordering::Relaxed), Ordering::Relaxed);
        b.word(OLD_PID).store(self.slot(slot).load(Ordering::Relaxed), Ordering::Relaxed);
        b.word(JOURNAL).store(slot as u32 + 1, Ordering::Release);
    }

    fn commit(&self) {
        self.block.word(JOURNAL).store(0, Ordering::Release);
    }

    fn roll_back(&self) {
        let b = &self.block;
        let j = b.word(JOURNAL).load(Ordering::Acquire) as usize;
        if j != 0 && j <= HOLDERS {
            b.word(VALUE).store(b.word(OLD_VALUE).load(Ordering::Relaxed), Ordering::Relaxed);
            self.slot(j - 1).store(b.word(OLD_PID).load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.commit();
    }

    /// Gives back the units of holders that died, at most every
    /// [`CHECK_EVERY_MS`]; how many.
    fn reclaim_dead(&self, now_only: bool) -> Result<u32> {
        let last = self.block.word(LAST_CHECK);
        let now = now_ms();
        let before = last.load(Ordering::Relaxed);
        if now.wrapping_sub(before) < CHECK_EVERY_MS && before != 0 {
            return Ok(0);
        }
        last.store(now.max(1), Ordering::Relaxed);
        let me = pidlock::current_pid();
        let dead: Vec<usize> = (0..HOLDERS)
            .filter(|&i| {
                let pid = self.slot(i).load(Ordering::Relaxed);
                pid != 0 && pid != me && !pidlock::process_alive(pid)
            })
            .collect();
        if dead.is_empty() {
            return Ok(0);
        }
        let n = self
            .locked_if(now_only, |s| {
                let mut n = 0;
                for &i in &dead {
                    let pid = s.slot(i).load(Ordering::Relaxed);
                    if pid != 0 && pid != me && !pidlock::process_alive(pid) {
                        s.journal(i);
                        s.slot(i).store(0, Ordering::Relaxed);
                        let v = s.block.word(VALUE).load(Ordering::Relaxed);
                        s.block.word(VALUE).store(v.saturating_add(1), Ordering::Release);
                        s.commit();
                        n += 1;
                    }
                }
                n
            })?
            .unwrap_or(0);
        if n > 0 && self.block.word(SLEEPERS).load(Ordering::SeqCst) > 0 {
            futex::wake(self.block.word(VALUE), n);
        }
        Ok(n)
    }

    /// One try: a unit, recorded in a free holder slot.
    fn attempt(&self) -> Result<Option<Option<usize>>> {
        self.attempt_if(false)
    }

    /// One try that never sleeps for the internal lock (a busy lock is a
    /// failed try), for async callers.
    fn attempt_now(&self) -> Result<Option<Option<usize>>> {
        self.attempt_if(true)
    }

    fn attempt_if(&self, now: bool) -> Result<Option<Option<usize>>> {
        if self.get_value() == 0 && self.reclaim_dead(now)? == 0 {
            return Ok(None);
        }
        let me = pidlock::current_pid();
        let got = self.locked_if(now, |s| {
            let v = s.block.word(VALUE).load(Ordering::Relaxed);
            if v == 0 {
                return None;
            }
            match (0..HOLDERS).find(|&i| s.slot(i).load(Ordering::Relaxed) == 0) {
                Some(i) => {
                    s.journal(i);
                    s.slot(i).store(me, Ordering::Relaxed);
                    s.block.word(VALUE).store(v - 1, Ordering::Release);
                    s.commit();
                    Some(Some(i))
                }
                None => {
                    s.block.word(VALUE).store(v - 1, Ordering::Release);
                    Some(None)
                }
            }
        })?;
        Ok(got.flatten())
    }

    fn watch(&self) -> wait::Sleep {
        wait::Sleep {
            src: block_word(&self.block, VALUE, Some(SLEEPERS)),
            expected: self.get_value(),
            cap: Some(SLEEP_CAP),
        }
    }

    fn sleep(&self, deadline: Option<Instant>) -> Result<()> {
        let sleepers = self.block.word(SLEEPERS);
        sleepers.fetch_add(1, Ordering::SeqCst);
        let cap = Some(wait::left(deadline).map_or(SLEEP_CAP, |l| l.min(SLEEP_CAP)));
        let r = futex::wait(self.block.word(VALUE), 0, cap);
        sleepers.fetch_sub(1, Ordering::SeqCst);
        r?;
        Ok(())
    }

    /// Passes a wake-up on to another sleeper (for an async acquire that was
    /// dropped after its sleep may have taken the wake-up of a release).
    fn handoff(&self) {
        if self.get_value() > 0 && self.block.word(SLEEPERS).load(Ordering::SeqCst) > 0 {
            futex::wake(self.block.word(VALUE), 1);
        }
    }

    fn guard(&self, slot: Option<usize>) -> SemaphoreGuard<'_> {
        SemaphoreGuard { sem: self, slot }
    }

    /// `sem.acquire(block=False)`
    pub fn try_acquire(&self) -> Option<SemaphoreGuard<'_>> {
        match self.attempt() {
            Ok(Some(slot)) => Some(self.guard(slot)),
            _ => None,
        }
    }

    /// `sem.acquire()` from sync code.
    pub fn blocking_acquire(&self) -> Result<SemaphoreGuard<'_>> {
        Ok(self.guard(wait::blocking(self, None, Self::attempt, Self::sleep)?.flatten()))
    }

    /// `sem.acquire(timeout=…)` from sync code; `Ok(None)` on timeout.
    pub fn blocking_acquire_timeout(&self, timeout: Duration) -> Result<Option<SemaphoreGuard<'_>>> {
        let got = wait::blocking(self, deadline_after(Some(timeout)), Self::attempt, Self::sleep)?;
        Ok(got.map(|slot| self.guard(slot)))
    }

    /// `sem.acquire()`
    pub async fn acquire(&self) -> Result<SemaphoreGuard<'_>> {
        let got = wait::asynchronous_handing_off(self, None, Self::attempt_now, Self::watch, Self::handoff).await?;
        Ok(self.guard(got.flatten()))
    }

    /// `sem.acquire(timeout=…)`; `Ok(None)` on timeout.
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<Option<SemaphoreGuard<'_>>> {
        let got = wait::asynchronous_handing_off(
            self,
            deadline_after(Some(timeout)),
            Self::attempt_now,
            Self::watch,
            Self::handoff,
        )
        .await?;
        Ok(got.map(|slot| self.guard(slot)))
    }

    /// `sem.release()`: gives one unit back (guards do this on drop).
    pub fn release(&self) -> Result<()> {
        self.give_back(None)
    }

    /// Gives a unit back, clearing the holder slot that recorded it.
    fn give_back(&self, slot: Option<usize>) -> Result<()> {
        let bound = self.block.word(BOUND).load(Ordering::Relaxed);
        let me = pidlock::current_pid();
        self.locked(|s| {
            let value = s.block.word(VALUE);
            let v = value.load(Ordering::Relaxed);
            if (bound != 0 && v >= bound) || v == u32::MAX {
                return Err(Error::TooManyReleases);
            }
            match slot.filter(|&i| s.slot(i).load(Ordering::Relaxed) == me) {
                Some(i) => {
                    s.journal(i);
                    s.slot(i).store(0, Ordering::Relaxed);
                    value.store(v + 1, Ordering::Release);
                    s.commit();
                }
                None => value.store(v + 1, Ordering::Release),
            }
            Ok(())
        })??;
        if self.block.word(SLEEPERS).load(Ordering::SeqCst) > 0 {
            futex::wake(self.block.word(VALUE), 1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits (10 s at most) until `n` acquirers sleep on the semaphore.
    async fn sleepers(sem: &Semaphore, n: u32) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while sem.block.word(SLEEPERS).load(Ordering::SeqCst) != n {
            assert!(Instant::now() < deadline, "timed out waiting for {n} sleepers");
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_dropped_async_acquire_passes_on_the_wake_up_it_took() {
        let sem = Semaphore::new(0).expect("semaphore");
        // First in the futex queue: an async acquire, sleeping on the
        // blocking pool, soon cancelled.
        let a = tokio::spawn({
            let sem = sem.clone();
            async move { sem.acquire().await.map(SemaphoreGuard::forget) }
        });
        sleepers(&sem, 1).await;
        let b = std::thread::spawn({
            let sem = sem.clone();
            move || sem.blocking_acquire().expect("acquire").forget()
        });
        sleepers(&sem, 2).await;
        a.abort();
        assert!(a.await.is_err(), "cancelled");
        // The release wakes the first sleeper, the cancelled one's; it must
        // hand the unit's wake-up to the blocked thread.
        sem.release().expect("release");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !b.is_finished() && Instant::now() < deadline {
            tokio::task::yield_now().await;
        }
        let woke = b.is_finished();
        if !woke {
            sem.release().expect("release, to end the thread");
        }
        b.join().expect("thread");
        assert!(woke, "the blocked acquirer slept on with a unit free");
        assert_eq!(sem.get_value(), 0);
    }
}
