//! `Semaphore` and `BoundedSemaphore`: a counter in shared memory; acquiring
//! at zero sleeps on its futex.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use multiproc_sys::futex;
use serde::{Deserialize, Serialize};

use super::block::Block;
use super::wait::{self, deadline_after};
use crate::error::{Error, Result};

/// `multiprocessing.Semaphore(value)`; with a bound, `BoundedSemaphore`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Semaphore {
    /// Words: 0 value, 1 sleepers, 2 bound (0: none).
    block: Block,
}

/// `multiprocessing.BoundedSemaphore(value)`: releasing above the initial
/// value is [`Error::TooManyReleases`]. Same methods as [`Semaphore`].
pub type BoundedSemaphore = Semaphore;

/// Holds one unit of a [`Semaphore`] until dropped.
#[derive(Debug)]
#[must_use = "the unit is released when the guard is dropped"]
pub struct SemaphoreGuard<'a> {
    sem: &'a Semaphore,
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        let _ = self.sem.release();
    }
}

impl<'a> SemaphoreGuard<'a> {
    /// Keeps the unit past the guard (Python's bare `acquire()`); give it
    /// back with [`Semaphore::release`].
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl Semaphore {
    /// `Semaphore(value)`
    pub fn new(value: u32) -> Result<Self> {
        let block = Block::new(c"multiproc-semaphore", 12)?;
        block.word(0).store(value, Ordering::Relaxed);
        Ok(Self { block })
    }

    /// `BoundedSemaphore(value)`
    pub fn bounded(value: u32) -> Result<Self> {
        let s = Self::new(value)?;
        s.block.word(2).store(value, Ordering::Relaxed);
        Ok(s)
    }

    /// The current value (`get_value()`).
    pub fn get_value(&self) -> u32 {
        self.block.word(0).load(Ordering::Relaxed)
    }

    fn attempt(&self) -> Result<Option<()>> {
        let value = self.block.word(0);
        let mut v = value.load(Ordering::Relaxed);
        while v > 0 {
            match value.compare_exchange_weak(v, v - 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Ok(Some(())),
                Err(now) => v = now,
            }
        }
        Ok(None)
    }

    fn sleep(&self, deadline: Option<Instant>) -> Result<()> {
        let sleepers = self.block.word(1);
        sleepers.fetch_add(1, Ordering::SeqCst);
        let r = futex::wait(self.block.word(0), 0, wait::left(deadline));
        sleepers.fetch_sub(1, Ordering::SeqCst);
        r?;
        Ok(())
    }

    /// Passes a wake-up on to another sleeper (for an async acquire that was
    /// dropped after its sleep may have taken the wake-up of a release).
    fn handoff(&self) {
        if self.block.word(0).load(Ordering::SeqCst) > 0 && self.block.word(1).load(Ordering::SeqCst) > 0 {
            futex::wake(self.block.word(0), 1);
        }
    }

    /// `sem.acquire(block=False)`
    pub fn try_acquire(&self) -> Option<SemaphoreGuard<'_>> {
        matches!(self.attempt(), Ok(Some(()))).then(|| SemaphoreGuard { sem: self })
    }

    /// `sem.acquire()` from sync code.
    pub fn blocking_acquire(&self) -> Result<SemaphoreGuard<'_>> {
        wait::blocking(self, None, Self::attempt, Self::sleep)?;
        Ok(SemaphoreGuard { sem: self })
    }

    /// `sem.acquire(timeout=…)` from sync code; `Ok(None)` on timeout.
    pub fn blocking_acquire_timeout(&self, timeout: Duration) -> Result<Option<SemaphoreGuard<'_>>> {
        let got = wait::blocking(self, deadline_after(Some(timeout)), Self::attempt, Self::sleep)?;
        Ok(got.map(|()| SemaphoreGuard { sem: self }))
    }

    /// `sem.acquire()`
    pub async fn acquire(&self) -> Result<SemaphoreGuard<'_>> {
        wait::asynchronous_handing_off(self, None, Self::attempt, Self::sleep, Self::handoff).await?;
        Ok(SemaphoreGuard { sem: self })
    }

    /// `sem.acquire(timeout=…)`; `Ok(None)` on timeout.
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<Option<SemaphoreGuard<'_>>> {
        let got = wait::asynchronous_handing_off(
            self,
            deadline_after(Some(timeout)),
            Self::attempt,
            Self::sleep,
            Self::handoff,
        )
        .await?;
        Ok(got.map(|()| SemaphoreGuard { sem: self }))
    }

    /// `sem.release()`: gives one unit back (guards do this on drop).
    pub fn release(&self) -> Result<()> {
        let value = self.block.word(0);
        let bound = self.block.word(2).load(Ordering::Relaxed);
        let mut v = value.load(Ordering::Relaxed);
        loop {
            if (bound != 0 && v >= bound) || v == u32::MAX {
                return Err(Error::TooManyReleases);
            }
            match value.compare_exchange_weak(v, v + 1, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
        if self.block.word(1).load(Ordering::SeqCst) > 0 {
            futex::wake(value, 1);
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
        while sem.block.word(1).load(Ordering::SeqCst) != n {
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
