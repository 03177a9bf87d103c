//! `Stream` and `Sink` for [`Queue`]: a queue read as a stream of items
//! (ending when this process closes it) and written as a sink.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::{FutureExt, Sink, Stream};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Queue, get_async, put_async};
use crate::error::{Error, Result};

/// The operation a `Stream`/`Sink` poll left in flight.
pub struct QueueState<T> {
    get: Option<BoxFuture<'static, Result<T>>>,
    put: Option<BoxFuture<'static, Result<()>>>,
}

impl<T> Default for QueueState<T> {
    fn default() -> Self {
        Self { get: None, put: None }
    }
}

impl<T> std::fmt::Debug for QueueState<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueState").field("get", &self.get.is_some()).field("put", &self.put.is_some()).finish()
    }
}

impl<T> Queue<T> {
    fn state_mut(&mut self) -> &mut QueueState<T> {
        // `&mut self`: nobody else can hold the lock, a poisoned one included.
        self.state.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Items in FIFO order; ends when this process closes the queue.
impl<T: DeserializeOwned + Send + 'static> Stream for Queue<T> {
    type Item = Result<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<T>>> {
        let this = self.get_mut();
        let shared = this.shared.clone();
        let state = this.state_mut();
        let fut = state.get.get_or_insert_with(|| async move { get_async(&shared, None).await }.boxed());
        let r = std::task::ready!(fut.as_mut().poll(cx));
        state.get = None;
        Poll::Ready(match r {
            Err(Error::Closed(_)) => None,
            other => Some(other),
        })
    }
}

impl<T: Serialize + Send + 'static> Queue<T> {
    fn poll_put(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let state = self.state_mut();
        let Some(fut) = state.put.as_mut() else { return Poll::Ready(Ok(())) };
        let r = std::task::ready!(fut.as_mut().poll(cx));
        state.put = None;
        Poll::Ready(r)
    }
}

/// Each item is put as by [`Queue::put`] (waiting while the queue is full);
/// closing the sink closes the queue in this process.
impl<T: Serialize + Send + 'static> Sink<T> for Queue<T> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().poll_put(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: T) -> Result<()> {
        let this = self.get_mut();
        let bytes = this.shared.encode(&item)?;
        let shared = this.shared.clone();
        this.state_mut().put = Some(async move { put_async(&shared, bytes, None).await }.boxed());
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().poll_put(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_put(cx))?;
        this.close();
        Poll::Ready(Ok(()))
    }
}
