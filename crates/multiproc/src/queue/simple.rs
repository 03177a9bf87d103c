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
    pub fn new() -> Result<Self> {
        Ok(Self { queue: Queue::new()? })
    }

    pub fn empty(&self) -> bool {
        self.queue.empty()
    }

    /// Later `put`/`get` in this process fail with `Error::Closed`.
    pub fn close(&self) {
        self.queue.close();
    }
}

impl<T: Serialize> SimpleQueue<T> {
    pub async fn put(&self, item: T) -> Result<()> {
        self.queue.put(item).await
    }

    pub fn blocking_put(&self, item: T) -> Result<()> {
        self.queue.blocking_put(item)
    }
}

impl<T: DeserializeOwned> SimpleQueue<T> {
    pub async fn get(&self) -> Result<T> {
        self.queue.get().await
    }

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
