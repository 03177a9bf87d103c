//! `SimpleQueue`: an unbounded [`Queue`] with Python's smaller API.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Queue;
use crate::error::Result;

/// `multiprocessing.SimpleQueue`: `put`, `get`, `empty` and `close`, no
/// size limit and no timeouts.
#[derive(Debug)]
pub struct SimpleQueue<T> {
    queue: Queue<T>,
}

impl<T> SimpleQueue<T> {
    /// A new, empty queue (`SimpleQueue()`).
    pub fn new() -> Result<Self> {
        Ok(Self { queue: Queue::new()? })
    }

    /// Whether no item is queued right now (`q.empty()`).
    pub fn empty(&self) -> bool {
        self.queue.empty()
    }

    /// Later `put`/`get` in this process fail with `Error::Closed`.
    pub fn close(&self) {
        self.queue.close();
    }
}

impl<T: Serialize> SimpleQueue<T> {
    /// Adds an item, waiting for room (`q.put(item)`).
    pub async fn put(&self, item: T) -> Result<()> {
        self.queue.put(item).await
    }

    /// [`put`](Self::put) for sync code.
    pub fn blocking_put(&self, item: T) -> Result<()> {
        self.queue.blocking_put(item)
    }
}

impl<T: DeserializeOwned> SimpleQueue<T> {
    /// Takes an item, waiting for one (`q.get()`).
    pub async fn get(&self) -> Result<T> {
        self.queue.get().await
    }

    /// [`get`](Self::get) for sync code.
    pub fn blocking_get(&self) -> Result<T> {
        self.queue.blocking_get()
    }
}

impl<T> Clone for SimpleQueue<T> {
    fn clone(&self) -> Self {
        Self { queue: self.queue.clone() }
    }
}

impl<T> Serialize for SimpleQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.queue.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for SimpleQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(Self { queue: Queue::deserialize(d)? })
    }
}
