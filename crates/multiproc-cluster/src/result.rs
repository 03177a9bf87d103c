//! Handles on submitted cluster work, shaped like the local pool's:
//! [`AsyncResult`] (`apply_async`), [`MapCall`] (a `map`/`starmap` not yet
//! submitted) and [`MapResult`] (`map_async`). Dropping a handle cancels the
//! work still queued for it, here and in Redis.

use std::collections::{BTreeMap, HashMap};
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use multiproc::{Error, Mapped, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::dispatch::{Chunk, Cmd, Outcome};
use crate::pool::{CallSpec, Encode};

/// Cancels a submission when its handle goes (a no-op once it is complete).
#[derive(Debug)]
pub(crate) struct Ticket {
    pub sub: u64,
    pub cmds: mpsc::UnboundedSender<Cmd>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let _ = self.cmds.send(Cmd::Cancel { sub: self.sub });
    }
}

/// Sends chunks of submission `sub`; the receiver of its outcomes.
pub(crate) fn submit(spec: &CallSpec, chunks: Vec<Chunk>) -> Result<(Ticket, mpsc::UnboundedReceiver<Outcome>)> {
    let sub = spec.inner.next_id();
    let (tx, rx) = mpsc::unbounded_channel();
    let cmds = spec.inner.cmds.clone();
    cmds.send(Cmd::Submit { sub, sink: Some(tx), chunks }).map_err(|_| Error::PoolTerminated)?;
    Ok((Ticket { sub, cmds }, rx))
}

/// Encodes items as one chunk's argument bytes; an item that does not
/// encode is sent empty and its error kept in `prefailed`.
pub(crate) fn encode_chunk<'a, X: 'a>(
    items: impl Iterator<Item = &'a X>,
    base: usize,
    encode: Encode<X>,
    prefailed: &mut HashMap<usize, Error>,
) -> (Vec<u8>, Vec<u32>) {
    let mut args = Vec::new();
    let mut ends = Vec::new();
    for (i, item) in items.enumerate() {
        let at = args.len();
        if let Err(e) = encode(&mut args, item) {
            args.truncate(at);
            prefailed.insert(base + i, Error::Encode { what: "the task's arguments", source: std::sync::Arc::new(e) });
        }
        ends.push(u32::try_from(args.len()).unwrap_or(u32::MAX));
    }
    (args, ends)
}

/// One outcome as typed results.
pub(crate) fn decode_outcome<T: DeserializeOwned>(
    outcome: Outcome,
    prefailed: &mut HashMap<usize, Error>,
) -> Vec<Result<T>> {
    let base = outcome.base;
    outcome
        .items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match (prefailed.remove(&(base + i)), item) {
            (Some(e), _) => Err(e),
            (None, Ok(bytes)) => multiproc::__private::decode("the task's result", &bytes),
            (None, Err(e)) => Err(e.into_error()),
        })
        .collect()
}

/// The result of [`ClusterPool::apply_async`](crate::ClusterPool::apply_async):
/// `.await` it (`res.get()`), or use [`get_timeout`](Self::get_timeout) and
/// [`ready`](Self::ready), as the local pool's `AsyncResult`.
#[derive(Debug)]
pub struct AsyncResult<T> {
    rx: Option<mpsc::UnboundedReceiver<Outcome>>,
    value: Option<Result<T>>,
    _ticket: Option<Ticket>,
}

impl<T> Unpin for AsyncResult<T> {}

impl<T: DeserializeOwned> AsyncResult<T> {
    pub(crate) fn submit<A: Serialize>(spec: Result<CallSpec>, args: &A, timeout: Option<Duration>) -> Self {
        let submitted = spec.and_then(|mut spec| {
            spec.timeout = timeout;
            let bytes = multiproc::__private::encode("the task's arguments", args)?;
            let end = u32::try_from(bytes.len())
                .map_err(|_| Error::FrameTooLarge { len: bytes.len(), max: u32::MAX as usize })?;
            let chunk = spec.chunk(0, bytes, vec![end])?;
            submit(&spec, vec![chunk])
        });
        match submitted {
            Ok((ticket, rx)) => Self { rx: Some(rx), value: None, _ticket: Some(ticket) },
            Err(e) => Self { rx: None, value: Some(Err(e)), _ticket: None },
        }
    }

    fn take(o: Outcome) -> Result<T> {
        decode_outcome(o, &mut HashMap::new()).pop().unwrap_or(Err(Error::PoolTerminated))
    }

    /// Whether the result has arrived (`AsyncResult.ready()`).
    pub fn ready(&mut self) -> bool {
        if self.value.is_none()
            && let Some(rx) = &mut self.rx
        {
            match rx.try_recv() {
                Ok(o) => {
                    self.rx = None;
                    self.value = Some(Self::take(o));
                }
                Err(mpsc::error::TryRecvError::Empty) => {}
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.rx = None;
                    self.value = Some(Err(Error::PoolTerminated));
                }
            }
        }
        self.value.is_some()
    }

    /// Waits at most `timeout` (`res.get(timeout=…)`): [`Error::Timeout`] when
    /// it is not there yet; the task goes on and the handle stays usable.
    pub async fn get_timeout(&mut self, timeout: Duration) -> Result<T> {
        tokio::time::timeout(timeout, self).await.unwrap_or(Err(Error::Timeout))
    }
}

impl<T: DeserializeOwned> Future for AsyncResult<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        if let Some(v) = self.value.take() {
            return Poll::Ready(v);
        }
        let Some(rx) = &mut self.rx else {
            return Poll::Ready(Err(Error::Closed("result (it was already taken)")));
        };
        match rx.poll_recv(cx) {
            Poll::Ready(Some(o)) => {
                self.rx = None;
                Poll::Ready(Self::take(o))
            }
            Poll::Ready(None) => {
                self.rx = None;
                Poll::Ready(Err(Error::PoolTerminated))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A `map` or `starmap` about to be submitted: `.await` it, or set its
/// [`chunksize`](Self::chunksize) / [`timeout`](Self::timeout) first, or
/// [`submit`](Self::submit) it for a [`MapResult`] (`map_async`).
#[must_use = "a map does nothing until it is awaited or submitted"]
pub struct MapCall<T, X> {
    spec: Result<CallSpec>,
    items: Vec<X>,
    encode: Encode<X>,
    chunksize: Option<usize>,
    _out: PhantomData<fn() -> T>,
}

impl<T, X> std::fmt::Debug for MapCall<T, X> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapCall").field("items", &self.items.len()).field("chunksize", &self.chunksize).finish()
    }
}

/// Chunks a `map` is cut into by default (Python's rule, `4 × processes`,
/// for 16 processes across the agents): `ceil(len / 64)` items each.
const DEFAULT_CHUNKS: usize = 64;

impl<T: DeserializeOwned, X> MapCall<T, X> {
    pub(crate) fn new(spec: Result<CallSpec>, items: Vec<X>, encode: Encode<X>) -> Self {
        Self { spec, items, encode, chunksize: None, _out: PhantomData }
    }

    /// Items sent to an agent at a time (`map(…, chunksize)`). Defaults to
    /// `ceil(len / 64)`.
    pub fn chunksize(mut self, n: usize) -> Self {
        self.chunksize = Some(n);
        self
    }

    /// Time limit of each item on its agent: [`Error::Timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        if let Ok(spec) = &mut self.spec {
            spec.timeout = Some(timeout);
        }
        self
    }

    /// Submits the work now (`map_async`).
    pub fn submit(self) -> MapResult<T> {
        let n = self.items.len();
        let chunksize = match self.chunksize {
            Some(0) => return MapResult::failed(Error::InvalidArgument("chunksize must be at least 1".into())),
            Some(c) => c,
            None => n.div_ceil(DEFAULT_CHUNKS).max(1),
        };
        let spec = match self.spec {
            Ok(s) => s,
            Err(e) => return MapResult::failed(e),
        };
        let mut prefailed = HashMap::new();
        let mut chunks = Vec::with_capacity(n.div_ceil(chunksize));
        for (i, items) in self.items.chunks(chunksize).enumerate() {
            let base = i * chunksize;
            let (args, ends) = encode_chunk(items.iter(), base, self.encode, &mut prefailed);
            match spec.chunk(base, args, ends) {
                Ok(c) => chunks.push(c),
                Err(e) => return MapResult::failed(e),
            }
        }
        if n == 0 {
            return MapResult { remaining: 0, ..MapResult::failed(Error::PoolTerminated) }.empty();
        }
        match submit(&spec, chunks) {
            Ok((ticket, rx)) => MapResult {
                rx: Some(rx),
                results: Mapped::default(),
                early: BTreeMap::new(),
                remaining: n,
                prefailed,
                error: None,
                _ticket: Some(ticket),
            },
            Err(e) => MapResult::failed(e),
        }
    }
}

impl<T: DeserializeOwned, X> IntoFuture for MapCall<T, X> {
    type Output = Result<Mapped<T>>;
    type IntoFuture = MapResult<T>;

    fn into_future(self) -> MapResult<T> {
        self.submit()
    }
}

/// The result of `map_async`/`starmap_async`: every item's result, in input
/// order; also [`ready`](Self::ready) and [`get_timeout`](Self::get_timeout).
#[derive(Debug)]
pub struct MapResult<T> {
    rx: Option<mpsc::UnboundedReceiver<Outcome>>,
    results: Mapped<T>,
    early: BTreeMap<usize, Vec<Result<T>>>,
    remaining: usize,
    prefailed: HashMap<usize, Error>,
    error: Option<Error>,
    _ticket: Option<Ticket>,
}

impl<T> Unpin for MapResult<T> {}

impl<T: DeserializeOwned> MapResult<T> {
    fn failed(e: Error) -> Self {
        Self {
            rx: None,
            results: Mapped::default(),
            early: BTreeMap::new(),
            remaining: 0,
            prefailed: HashMap::new(),
            error: Some(e),
            _ticket: None,
        }
    }

    /// A map of no items: done at once.
    fn empty(mut self) -> Self {
        self.error = None;
        self
    }

    fn store(&mut self, o: Outcome) {
        let (base, len) = (o.base, o.items.len());
        self.remaining = self.remaining.saturating_sub(len);
        let items = decode_outcome(o, &mut self.prefailed);
        if base != self.results.len() {
            self.early.insert(base, items);
            return;
        }
        self.results.extend(items);
        while let Some(items) = self.early.remove(&self.results.len()) {
            self.results.extend(items);
        }
    }

    /// Whether every result has arrived.
    pub fn ready(&mut self) -> bool {
        while let Some(rx) = &mut self.rx {
            match rx.try_recv() {
                Ok(o) => self.store(o),
                Err(_) => break,
            }
        }
        self.remaining == 0
    }

    /// Waits at most `timeout`: [`Error::Timeout`] when results are still
    /// missing; the work goes on and the handle stays usable.
    pub async fn get_timeout(&mut self, timeout: Duration) -> Result<Mapped<T>> {
        tokio::time::timeout(timeout, self).await.unwrap_or(Err(Error::Timeout))
    }
}

impl<T: DeserializeOwned> Future for MapResult<T> {
    type Output = Result<Mapped<T>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(e) = self.error.take() {
            return Poll::Ready(Err(e));
        }
        while self.remaining > 0 {
            let Some(rx) = &mut self.rx else { break };
            match rx.poll_recv(cx) {
                Poll::Ready(Some(o)) => self.store(o),
                Poll::Ready(None) => break,
                Poll::Pending => return Poll::Pending,
            }
        }
        self.rx = None;
        // Chunks that never came (the pool is gone) fail in place.
        let n = self.results.len() + self.remaining + self.early.values().map(Vec::len).sum::<usize>();
        let mut results = std::mem::take(&mut self.results);
        let mut early = std::mem::take(&mut self.early).into_iter().peekable();
        while results.len() < n {
            match early.next_if(|(base, _)| *base == results.len()) {
                Some((_, items)) => results.extend(items),
                None => results.extend([Err(Error::PoolTerminated)]),
            }
        }
        Poll::Ready(Ok(results))
    }
}
