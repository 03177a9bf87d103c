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
    /// Words: 0 the state, 1 sleepers. The state is the flag (bit 0) and
    /// how many times the event was set (the rest), in one word so that a
    /// `set` is one atomic step: a waiter that noted the count before a
    /// set returns once it changes (a `set` quickly followed by a `clear`
    /// still releases it, as in Python), and never counts one set twice
    /// (with flag and count in two words, a waiter that looked between a
    /// set's two stores took the late count for a second set, and a
    /// ping-pong between two events slipped a round and hung).
    block: Block,
}

/// The flag in the state word; the set count is the rest.
const FLAG: u32 = 1;

/// A wait in progress: the state word when it began.
#[derive(Clone)]
struct Waiting {
    block: Block,
    began: u32,
}

impl Waiting {
    /// Whether the wait is over at `state`: set now, or set (and maybe
    /// cleared) since the wait began.
    fn over(&self, state: u32) -> bool {
        state & FLAG != 0 || state >> 1 != self.began >> 1
    }

    fn now(&self) -> u32 {
        self.block.word(0).load(Ordering::Acquire)
    }

    fn attempt(&self) -> Result<Option<()>> {
        Ok(self.over(self.now()).then_some(()))
    }

    /// Sleeps until the state word changes (a `clear` also wakes it; the
    /// caller then looks again).
    fn watch(&self) -> wait::Sleep {
        wait::Sleep { src: block_word(&self.block, 0, Some(1)), expected: self.now(), cap: None }
    }

    fn sleep(&self, deadline: Option<Instant>) -> Result<()> {
        // The value slept on is the value looked at: a set after this load
        // changes the word, so the futex returns at once.
        let state = self.now();
        if self.over(state) {
            return Ok(());
        }
        let sleepers = self.block.word(1);
        sleepers.fetch_add(1, Ordering::SeqCst);
        let r = futex::wait(self.block.word(0), state, wait::left(deadline));
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
        Ok(Self { block: Block::new(c"multiproc-event", 8)? })
    }

    /// Whether the flag is set (`ev.is_set()`).
    pub fn is_set(&self) -> bool {
        self.block.word(0).load(Ordering::Acquire) & FLAG != 0
    }

    /// Sets the flag and wakes every waiter, in every process.
    pub fn set(&self) {
        let state = self.block.word(0);
        // One step: the count one higher and the flag on (the count wraps).
        let _ = state.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| Some(s.wrapping_add(2) | FLAG));
        if self.block.word(1).load(Ordering::SeqCst) > 0 {
            futex::wake(state, u32::MAX);
        }
    }

    /// Clears the flag (`ev.clear()`): later waits block until the next
    /// [`set`](Self::set).
    pub fn clear(&self) {
        self.block.word(0).fetch_and(!FLAG, Ordering::SeqCst);
    }

    fn waiting(&self) -> Waiting {
        Waiting { block: self.block.clone(), began: self.block.word(0).load(Ordering::SeqCst) }
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
