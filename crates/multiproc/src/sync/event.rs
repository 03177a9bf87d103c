//! `Event`: a flag in shared memory that waiters sleep on.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use multiproc_sys::futex;
use serde::{Deserialize, Serialize};

use super::block::Block;
use super::wait::{self, deadline_after};
use crate::error::Result;

/// `multiprocessing.Event()`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// Words: 0 flag, 1 sleepers.
    block: Block,
}

impl Event {
    pub fn new() -> Result<Self> {
        Ok(Self { block: Block::new(c"multiproc-event", 8)? })
    }

    pub fn is_set(&self) -> bool {
        self.block.word(0).load(Ordering::Acquire) != 0
    }

    /// Sets the flag and wakes every waiter, in every process.
    pub fn set(&self) {
        self.block.word(0).store(1, Ordering::SeqCst);
        if self.block.word(1).load(Ordering::SeqCst) > 0 {
            futex::wake(self.block.word(0), u32::MAX);
        }
    }

    pub fn clear(&self) {
        self.block.word(0).store(0, Ordering::Release);
    }

    fn attempt(&self) -> Result<Option<()>> {
        Ok(self.is_set().then_some(()))
    }

    fn sleep(&self, deadline: Option<Instant>) -> Result<()> {
        let sleepers = self.block.word(1);
        sleepers.fetch_add(1, Ordering::SeqCst);
        let r = futex::wait(self.block.word(0), 0, wait::left(deadline));
        sleepers.fetch_sub(1, Ordering::SeqCst);
        r?;
        Ok(())
    }

    /// `event.wait()` from sync code.
    pub fn blocking_wait(&self) -> Result<()> {
        wait::blocking(self, None, Self::attempt, Self::sleep).map(|_| ())
    }

    /// `event.wait(timeout)` from sync code: `false` when it timed out.
    pub fn blocking_wait_timeout(&self, timeout: Duration) -> Result<bool> {
        Ok(wait::blocking(self, deadline_after(Some(timeout)), Self::attempt, Self::sleep)?.is_some())
    }

    /// `event.wait()`
    pub async fn wait(&self) -> Result<()> {
        wait::asynchronous(self, None, Self::attempt, Self::sleep).await.map(|_| ())
    }

    /// `event.wait(timeout)`: `false` when it timed out.
    pub async fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        Ok(wait::asynchronous(self, deadline_after(Some(timeout)), Self::attempt, Self::sleep).await?.is_some())
    }
}
