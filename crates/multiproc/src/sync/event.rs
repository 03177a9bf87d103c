//! `Event`: a flag in shared memory that waiters sleep on.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use multiproc_sys::futex;
use serde::{Deserialize, Serialize};

use super::block::Block;
use super::wait::{self, deadline_after};
use super::waiter::block_word;
use crate::error::Result;

/// `multiprocessing.Event()`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// Words: 0 flag, 1 sleepers, 2 how many times it was set (waiters
    /// sleep on this one, so that a `set` quickly followed by a `clear`
    /// still releases them, as in Python).
    block: Block,
}

/// A wait in progress: the set count when it began.
#[derive(Clone)]
struct Waiting {
    block: Block,
    sets: u32,
}

impl Waiting {
    fn attempt(&self) -> Result<Option<()>> {
        let flag = self.block.word(0).load(Ordering::Acquire) != 0;
        Ok((flag || self.block.word(2).load(Ordering::Acquire) != self.sets).then_some(()))
    }

    fn watch(&self) -> wait::Sleep {
        wait::Sleep { src: block_word(&self.block, 2, Some(1)), expected: self.sets, cap: None }
    }

    fn sleep(&self, deadline: Option<Instant>) -> Result<()> {
        let sleepers = self.block.word(1);
        sleepers.fetch_add(1, Ordering::SeqCst);
        let r = futex::wait(self.block.word(2), self.sets, wait::left(deadline));
        sleepers.fetch_sub(1, Ordering::SeqCst);
        r?;
        Ok(())
    }
}

impl Event {
    /// A new event, its flag clear (`Event()`). Clones, and the value a
    /// child receives when the event is passed as a task argument, are
    /// handles to the same flag.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> multiproc::Result<()> {
    /// let ev = multiproc::Event::new()?;
    /// assert!(!ev.is_set());
    /// ev.set();
    /// ev.wait().await?; // returns at once: the flag is set
    /// ev.clear();
    /// assert!(!ev.is_set());
    /// # Ok(()) }
    /// ```
    pub fn new() -> Result<Self> {
        Ok(Self { block: Block::new(c"multiproc-event", 12)? })
    }

    /// Whether the flag is set (`ev.is_set()`).
    pub fn is_set(&self) -> bool {
        self.block.word(0).load(Ordering::Acquire) != 0
    }

    /// Sets the flag and wakes every waiter, in every process.
    pub fn set(&self) {
        self.block.word(0).store(1, Ordering::SeqCst);
        self.block.word(2).fetch_add(1, Ordering::SeqCst);
        if self.block.word(1).load(Ordering::SeqCst) > 0 {
            futex::wake(self.block.word(2), u32::MAX);
        }
    }

    /// Clears the flag (`ev.clear()`): later waits block until the next
    /// [`set`](Self::set).
    pub fn clear(&self) {
        self.block.word(0).store(0, Ordering::Release);
    }

    fn waiting(&self) -> Waiting {
        Waiting { block: self.block.clone(), sets: self.block.word(2).load(Ordering::SeqCst) }
    }

    /// `event.wait()` from sync code: returns once the flag is set (or was
    /// set while waiting, even if cleared since).
    pub fn blocking_wait(&self) -> Result<()> {
        wait::blocking(&self.waiting(), None, Waiting::attempt, Waiting::sleep).map(|_| ())
    }

    /// `event.wait(timeout)` from sync code: the flag when the wait ends
    /// (`false` when it timed out, as in Python).
    pub fn blocking_wait_timeout(&self, timeout: Duration) -> Result<bool> {
        wait::blocking(&self.waiting(), deadline_after(Some(timeout)), Waiting::attempt, Waiting::sleep)?;
        Ok(self.is_set())
    }

    /// `event.wait()`: returns once the flag is set (or was set while
    /// waiting, even if cleared since).
    pub async fn wait(&self) -> Result<()> {
        wait::asynchronous(&self.waiting(), None, Waiting::attempt, Waiting::watch).await.map(|_| ())
    }

    /// `event.wait(timeout)`: the flag when the wait ends (`false` when it
    /// timed out, as in Python).
    pub async fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        wait::asynchronous(&self.waiting(), deadline_after(Some(timeout)), Waiting::attempt, Waiting::watch).await?;
        Ok(self.is_set())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_set_cleared_at_once_still_releases_the_waiters() {
        let event = Event::new().expect("event");
        let blocking = std::thread::spawn({
            let e = event.clone();
            move || e.blocking_wait_timeout(Duration::from_secs(30)).expect("wait")
        });
        let asynchronous = tokio::spawn({
            let e = event.clone();
            async move { e.wait().await }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while event.block.word(1).load(Ordering::SeqCst) != 2 {
            assert!(Instant::now() < deadline, "timed out waiting for two sleepers");
            tokio::task::yield_now().await;
        }
        event.set();
        event.clear();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(blocking.is_finished() && asynchronous.is_finished()) && Instant::now() < deadline {
            tokio::task::yield_now().await;
        }
        let released = blocking.is_finished() && asynchronous.is_finished();
        if !released {
            event.set(); // ends whichever still waits, before failing
        }
        assert!(released, "a set followed by a clear left waiters asleep");
        // (What the timed wait returns depends on whether it read the flag
        // before the clear, as in Python.)
        blocking.join().expect("thread");
        asynchronous.await.expect("task").expect("wait");
    }
}
