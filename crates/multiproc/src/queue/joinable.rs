//! `JoinableQueue`: a [`Queue`] that counts unfinished items.

use std::ops::Deref;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use serde::de::DeserializeOwned;

use super::{Leased, Queue, Seq, blocking_take, deadline_after, seq_now, sleep_on, take_async};
use crate::error::{Error, Result};

/// `multiprocessing.JoinableQueue`: every `put` adds an unfinished item,
/// every `task_done` finishes one, and `join` waits until none is left. The
/// count lives in the queue's shared memory, so it works across processes.
///
/// Derefs to [`Queue`] for `put`, `get` and the rest.
///
/// ```no_run
/// # async fn demo() -> multiproc::Result<()> {
/// let q = multiproc::JoinableQueue::<u32>::new()?;
/// q.put(1).await?;
/// let item = q.get().await?;   // in a worker, usually
/// q.task_done()?;              // q.task_done()
/// q.join().await?;             // q.join()
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct JoinableQueue<T> {
    queue: Queue<T>,
}

impl<T> JoinableQueue<T> {
    /// An unbounded joinable queue (`JoinableQueue()`).
    pub fn new() -> Result<Self> {
        Ok(Self { queue: Queue::new()? })
    }

    /// At most `maxsize` items queued (`JoinableQueue(maxsize)`).
    pub fn with_maxsize(maxsize: usize) -> Result<Self> {
        Ok(Self { queue: Queue::with_maxsize(maxsize)? })
    }

    /// A joinable queue with the options of a [`Queue::builder`].
    pub fn from_builder(builder: &super::QueueBuilder) -> Result<Self> {
        Ok(Self { queue: builder.build()? })
    }

    /// Marks one item taken with `get` as processed (`q.task_done()`); more
    /// calls than items put is [`Error::TaskDoneTooManyTimes`].
    pub fn task_done(&self) -> Result<()> {
        if self.queue.shared.ring.task_done() { Ok(()) } else { Err(Error::TaskDoneTooManyTimes) }
    }

    /// Items put and not yet marked done.
    pub fn unfinished_tasks(&self) -> usize {
        usize::try_from(self.queue.shared.ring.unfinished()).unwrap_or(usize::MAX)
    }

    /// Waits until every item put has been marked done (`q.join()`).
    pub async fn join(&self) -> Result<()> {
        let shared = &self.queue.shared;
        loop {
            let seen = seq_now(shared, Seq::Done);
            if shared.ring.unfinished() == 0 {
                return Ok(());
            }
            sleep_on(shared, Seq::Done, seen, None, None).await;
        }
    }

    /// [`join`](Self::join) for sync code.
    pub fn blocking_join(&self) -> Result<()> {
        self.queue.shared.ring.wait_all_done(None)?;
        Ok(())
    }

    /// Like [`blocking_join`](Self::blocking_join), giving up after
    /// `timeout` with [`Error::Timeout`].
    pub fn blocking_join_timeout(&self, timeout: Duration) -> Result<()> {
        if self.queue.shared.ring.wait_all_done(Some(Instant::now() + timeout))? { Ok(()) } else { Err(Error::Timeout) }
    }
}

impl<T: DeserializeOwned> JoinableQueue<T> {
    /// [`Queue::get_leased`] whose [`ack`](Leased::ack) (or
    /// [`task_done`](Leased::task_done)) is also this queue's `task_done()`.
    /// An item whose consumer dies unacknowledged is delivered again and
    /// stays unfinished meanwhile, so `join` waits for it.
    pub async fn get_leased(&self) -> Result<Leased<T>> {
        take_async(&self.queue.shared, None, |s| s.try_get_leased_now(true)).await
    }

    /// [`get_leased`](Self::get_leased), waiting at most `timeout`.
    pub async fn get_leased_timeout(&self, timeout: Duration) -> Result<Leased<T>> {
        take_async(&self.queue.shared, deadline_after(timeout), |s| s.try_get_leased_now(true)).await
    }

    /// [`get_leased`](Self::get_leased) if an item is there now, else
    /// [`Error::Empty`].
    pub fn get_leased_nowait(&self) -> Result<Leased<T>> {
        self.queue.shared.try_get_leased(true)?.ok_or(Error::Empty)
    }

    /// [`get_leased`](Self::get_leased) for sync code.
    pub fn blocking_get_leased(&self) -> Result<Leased<T>> {
        blocking_take(&self.queue.shared, None, |s| s.try_get_leased(true))
    }

    /// [`get_leased_timeout`](Self::get_leased_timeout) for sync code.
    pub fn blocking_get_leased_timeout(&self, timeout: Duration) -> Result<Leased<T>> {
        blocking_take(&self.queue.shared, deadline_after(timeout), |s| s.try_get_leased(true))
    }
}

impl<T> Deref for JoinableQueue<T> {
    type Target = Queue<T>;

    fn deref(&self) -> &Queue<T> {
        &self.queue
    }
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        Self { queue: self.queue.clone() }
    }
}

impl<T> Serialize for JoinableQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.queue.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for JoinableQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(Self { queue: Queue::deserialize(d)? })
    }
}
