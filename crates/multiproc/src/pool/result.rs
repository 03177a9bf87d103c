//! Handles on submitted work: [`AsyncResult`] (`apply_async`), [`MapCall`]
//! (a `map`/`starmap` not yet submitted, to set its chunk size) and
//! [`MapResult`] (`map_async`/`starmap_async`). Dropping a handle cancels the
//! work still queued for it.

use std::collections::{BTreeMap, HashMap};
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use super::mapped::Mapped;
use super::queue::{ChunkError, Delivery, Job, Shared, Submission, decode_chunk, decode_chunk_each, encode_pieces};
use crate::error::{Error, Result};
use crate::wire::TaskRef;

/// The result of [`Pool::apply_async`](super::Pool::apply_async), Python's
/// `AsyncResult`: `.await` it (`res.get()`), or use [`get_timeout`](Self::get_timeout)
/// (`res.get(timeout=…)`) and [`ready`](Self::ready).
#[derive(Debug)]
pub struct AsyncResult<T> {
    rx: Option<mpsc::UnboundedReceiver<Delivery>>,
    value: Option<Result<T>>,
}

// Nothing is pinned: the value is only moved out.
impl<T> Unpin for AsyncResult<T> {}

impl<T: DeserializeOwned> AsyncResult<T> {
    /// A handle whose result will come through `rx`.
    pub(crate) fn pending(rx: mpsc::UnboundedReceiver<Delivery>) -> Self {
        Self { rx: Some(rx), value: None }
    }

    /// A handle that already holds its (failed) result.
    pub(crate) fn failed(e: Error) -> Self {
        Self { rx: None, value: Some(Err(e)) }
    }

    pub(crate) fn submit(
        shared: &Shared,
        task: Result<Arc<TaskRef>>,
        args: Result<(Vec<u8>, Vec<std::os::fd::OwnedFd>)>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        match task.and_then(|task| submit_one(shared, task, args?, tx)) {
            Ok(()) => Self::pending(rx),
            Err(e) => Self::failed(e),
        }
    }

    fn take(&mut self, d: Delivery) -> Result<T> {
        decode_chunk(d, &mut HashMap::new()).pop().unwrap_or(Err(Error::PoolTerminated))
    }

    /// Whether the result has arrived (`AsyncResult.ready()`).
    pub fn ready(&mut self) -> bool {
        if self.value.is_none()
            && let Some(rx) = &mut self.rx
        {
            match rx.try_recv() {
                Ok(d) => {
                    self.rx = None;
                    self.value = Some(self.take(d));
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
            Poll::Ready(Some(d)) => {
                self.rx = None;
                Poll::Ready(self.take(d))
            }
            Poll::Ready(None) => {
                self.rx = None;
                Poll::Ready(Err(Error::PoolTerminated))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Queues one call of encoded arguments whose result goes to `sink`;
/// arguments over the call limit are refused before anything is queued.
pub(crate) fn submit_one(
    shared: &Shared,
    task: Arc<TaskRef>,
    (args, fds): (Vec<u8>, Vec<std::os::fd::OwnedFd>),
    sink: mpsc::UnboundedSender<Delivery>,
) -> Result<()> {
    if args.len() > super::MAX_CALL_BYTES {
        return Err(Error::ArgumentsTooLarge { len: args.len(), max: super::MAX_CALL_BYTES });
    }
    let end = u32::try_from(args.len()).expect("checked against the call limit");
    shared.submit(std::iter::once(Job {
        batch: shared.next_batch(),
        base: 0,
        of: Submission::new(task, sink),
        args,
        ends: vec![end],
        fds,
        timeout: shared.config.task_timeout,
        attempts: 0,
        chunk: usize::MAX,
        cut: 0,
    }))
}

/// Sends a call's failure found after the handle was returned (arguments
/// encoded off the runtime).
pub(crate) fn refuse(sink: &mpsc::UnboundedSender<Delivery>, e: Error) {
    let why = match e {
        Error::ArgumentsTooLarge { len, max } => ChunkError::ArgumentsTooLarge { len, max },
        Error::Closed(_) => ChunkError::Terminated,
        other => ChunkError::unsendable(other),
    };
    let _ = sink.send(Delivery { base: 0, len: 1, outcome: Err(why) });
}

/// A `map` or `starmap` about to be submitted: `.await` it, or set its
/// [`chunksize`](Self::chunksize) / [`timeout`](Self::timeout) first, or
/// [`submit`](Self::submit) it to get a [`MapResult`] (`map_async`).
#[must_use = "a map does nothing until it is awaited or submitted"]
pub struct MapCall<T, X> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) task: Result<Arc<TaskRef>>,
    pub(crate) items: Vec<X>,
    pub(crate) encode: fn(&mut Vec<u8>, &X) -> std::result::Result<(), rmp_serde::encode::Error>,
    pub(crate) chunksize: Option<usize>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) _out: PhantomData<fn() -> T>,
}

impl<T, X> std::fmt::Debug for MapCall<T, X> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapCall").field("items", &self.items.len()).field("chunksize", &self.chunksize).finish()
    }
}

impl<T: DeserializeOwned, X> MapCall<T, X> {
    /// Items sent to a worker at a time (`map(…, chunksize)`). Defaults to
    /// Python's rule, `ceil(len / (4 × processes))`, but at most 8,192
    /// items: larger chunks only delay the first and the last results.
    pub fn chunksize(mut self, n: usize) -> Self {
        self.chunksize = Some(n);
        self
    }

    /// Time limit of each item, instead of the pool's `task_timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Submits the work now (`map_async`).
    pub fn submit(self) -> MapResult<T> {
        let n = self.items.len();
        let (tx, rx) = mpsc::unbounded_channel();
        let mut prefailed = HashMap::new();
        let workers = self.shared.config.processes;
        let chunksize = match self.chunksize {
            Some(0) => return MapResult::failed(Error::InvalidArgument("chunksize must be at least 1".into())),
            Some(c) => c,
            None => n.div_ceil(4 * workers).clamp(1, MAX_AUTO_CHUNK),
        };
        let task = match self.task {
            Ok(t) => t,
            Err(e) => return MapResult::failed(e),
        };
        let of = Submission::new(task, tx);
        let batch = self.shared.next_batch();
        let timeout = self.timeout.or(self.shared.config.task_timeout);
        let mut encode_all = || -> Result<()> {
            // Chunks are queued a block at a time (see `Job::chunk`), each
            // block as soon as it is encoded, so workers start while the
            // rest is still being encoded: a small first block, then
            // blocks of about `BLOCK_BYTES`.
            let mut pieces = Vec::with_capacity(1);
            let mut at = 0;
            let mut block = FIRST_BLOCK_ITEMS;
            while at < n {
                let len = block.max(chunksize).div_ceil(chunksize) * chunksize;
                let items = &self.items[at..at.saturating_add(len).min(n)];
                encode_pieces(items, at, chunksize, self.encode, &mut prefailed, &mut pieces);
                if items.len() > chunksize && pieces.iter().any(|p| !p.3.is_empty()) {
                    // Arguments that carry fds: a call's fds go with its
                    // chunk, so each chunk is encoded (and queued) alone.
                    pieces.clear();
                    for (i, chunk) in items.chunks(chunksize).enumerate() {
                        encode_pieces(chunk, at + i * chunksize, 1, self.encode, &mut prefailed, &mut pieces);
                    }
                }
                let bytes: usize = pieces.iter().map(|p| p.1.len()).sum();
                block = (BLOCK_BYTES / (bytes / items.len()).max(1)).min(MAX_BLOCK_ITEMS);
                at += items.len();
                let jobs = pieces.drain(..).map(|(base, args, ends, fds)| {
                    let of = Arc::clone(&of);
                    Job { batch, base, of, args, ends, fds, timeout, attempts: 0, chunk: chunksize, cut: 0 }
                });
                self.shared.submit(jobs)?;
            }
            Ok(())
        };
        // A large map takes milliseconds to encode (the items need not be
        // `Send`, so it cannot move to the blocking pool): the runtime
        // worker's other tasks move to another thread meanwhile.
        let encoded = if n >= LONG_MAP_ITEMS { crate::runtime::long_stretch(encode_all) } else { encode_all() };
        match encoded {
            Ok(()) => MapResult {
                rx: Some(rx),
                // Reserved while the workers run the first chunks.
                results: Mapped::with_capacity(n),
                items: n,
                remaining: n,
                early: BTreeMap::new(),
                prefailed,
                error: None,
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

/// The default chunk's size limit, in items. Python's rule alone cuts a
/// million items on two workers into 125,000-item chunks: the first worker
/// waits for a whole chunk to be encoded, the last chunk's results are
/// decoded after every worker is done, and each chunk's buffers (~1 MB)
/// miss the caches and fault in fresh pages. At 8,192 items the caller's
/// encoding and decoding overlap the workers' run: `pool_map_auto` went
/// from 16.6M to 20.8M items/s (medians of 8 interleaved runs; 16,384 gave
/// 20.0M, 32,768 19.2M). A chunk of slow items is no worse off: smaller
/// chunks balance better, and a chunk costs a few microseconds.
const MAX_AUTO_CHUNK: usize = 8_192;

/// A map's first block of chunks, in items (rounded up to whole chunks):
/// the workers' first calls wait for it.
const FIRST_BLOCK_ITEMS: usize = 64;
/// Later blocks hold about this many bytes of arguments...
const BLOCK_BYTES: usize = 64 << 10;
/// ...and at most this many items.
const MAX_BLOCK_ITEMS: usize = 4_096;

/// Maps of at least this many items encode inside
/// [`long_stretch`](crate::runtime::long_stretch).
const LONG_MAP_ITEMS: usize = 16_384;

/// The result of `map_async`/`starmap_async`: a future of every item's
/// result, in input order; also [`ready`](Self::ready) and
/// [`get_timeout`](Self::get_timeout) like [`AsyncResult`].
#[derive(Debug)]
pub struct MapResult<T> {
    rx: Option<mpsc::UnboundedReceiver<Delivery>>,
    /// The items decoded so far: every item before the first one not
    /// delivered yet.
    results: Mapped<T>,
    /// Items in the map.
    items: usize,
    /// Items not delivered yet.
    remaining: usize,
    /// Deliveries that came before an earlier item's, by first index: kept
    /// encoded until their turn, so results are decoded once, in order,
    /// straight into place.
    early: BTreeMap<usize, Delivery>,
    prefailed: HashMap<usize, Error>,
    error: Option<Error>,
}

// Nothing is pinned: results are only moved out.
impl<T> Unpin for MapResult<T> {}

impl<T: DeserializeOwned> MapResult<T> {
    fn failed(e: Error) -> Self {
        Self {
            rx: None,
            results: Mapped::default(),
            items: 0,
            remaining: 0,
            early: BTreeMap::new(),
            prefailed: HashMap::new(),
            error: Some(e),
        }
    }

    /// Decodes a delivery if its items are next, and every early one that
    /// follows it; otherwise keeps it for later.
    fn store(&mut self, d: Delivery) {
        let next = self.results.len();
        let end = d.base.saturating_add(d.len);
        // Held deliveries all start past `next`, so one that starts at
        // `next` can only overlap the first of them.
        let overlaps = || {
            let before = self.early.range(..=d.base).next_back().is_some_and(|(_, e)| e.base + e.len > d.base);
            before || self.early.range(d.base..).next().is_some_and(|(base, _)| *base < end)
        };
        if d.len == 0 || d.base < next || end > self.items || overlaps() {
            // Not an undelivered range of this map (never happens): ignored.
            return;
        }
        self.remaining = self.remaining.saturating_sub(d.len);
        if d.base > next {
            self.early.insert(d.base, d);
            return;
        }
        // In order (the usual case): decoded at once, then what it frees.
        let mut d = Some(d);
        while let Some(now) = d {
            let results = &mut self.results;
            decode_chunk_each(now, &mut self.prefailed, |r| results.push(r));
            d = self.early.remove(&self.results.len());
        }
    }

    /// After the last delivery (or once none can come): items never
    /// delivered fail with `PoolTerminated`, in place.
    fn finish(&mut self) -> Mapped<T> {
        let early = std::mem::take(&mut self.early);
        for (base, d) in early {
            while self.results.len() < base {
                self.results.fail_next(Error::PoolTerminated);
            }
            let results = &mut self.results;
            decode_chunk_each(d, &mut self.prefailed, |r| results.push(r));
        }
        while self.results.len() < self.items {
            self.results.fail_next(Error::PoolTerminated);
        }
        std::mem::take(&mut self.results)
    }

    /// Whether every result has arrived.
    pub fn ready(&mut self) -> bool {
        while let Some(rx) = &mut self.rx {
            match rx.try_recv() {
                Ok(d) => self.store(d),
                Err(_) => break,
            }
        }
        self.remaining == 0
    }

    /// Waits at most `timeout`: [`Error::Timeout`] when some results are
    /// still missing; the work goes on and the handle stays usable.
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
                Poll::Ready(Some(d)) => self.store(d),
                Poll::Ready(None) => break,
                Poll::Pending => return Poll::Pending,
            }
        }
        self.rx = None;
        // Chunks that never came (their senders are gone) fail in place.
        Poll::Ready(Ok(self.finish()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::queue::ChunkDone;

    /// A delivery of items `base..base + values.len()`, all succeeded.
    fn delivery(base: usize, values: std::ops::Range<u64>) -> Delivery {
        let mut data = Vec::new();
        let mut ends = Vec::new();
        for v in values.clone() {
            rmp_serde::encode::write(&mut data, &v).expect("encode");
            ends.push(data.len() as u32);
        }
        let len = ends.len();
        Delivery { base, len, outcome: Ok(ChunkDone { data, ends, failures: Vec::new(), fds: Vec::new() }) }
    }

    fn handle(items: usize) -> (mpsc::UnboundedSender<Delivery>, MapResult<u64>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let r = MapResult {
            rx: Some(rx),
            results: Mapped::with_capacity(items),
            items,
            remaining: items,
            early: BTreeMap::new(),
            prefailed: HashMap::new(),
            error: None,
        };
        (tx, r)
    }

    #[tokio::test]
    async fn deliveries_in_any_order_land_in_input_order() {
        let (tx, mut r) = handle(10);
        // Parts of chunks, out of order, and a failed chunk between them.
        tx.send(delivery(6, 6..10)).unwrap();
        tx.send(delivery(2, 2..4)).unwrap();
        assert!(!r.ready());
        let lost = ChunkError::WorkerLost { pid: 7, status: crate::ExitStatus::Signal(9) };
        tx.send(Delivery { base: 4, len: 2, outcome: Err(lost) }).unwrap();
        // Waiting for items 0..2: nothing is decoded past the gap yet.
        assert_eq!(r.results.len(), 0);
        tx.send(delivery(0, 0..2)).unwrap();
        let out = r.await.expect("map");
        let shape: Vec<Option<u64>> = out.iter().map(|r| r.ok().copied()).collect();
        assert_eq!(shape, [Some(0), Some(1), Some(2), Some(3), None, None, Some(6), Some(7), Some(8), Some(9)]);
        assert!(matches!(out.get(4), Some(Err(Error::WorkerLost { pid: 7, .. }))));
    }

    #[tokio::test]
    async fn items_never_delivered_fail_in_place() {
        let (tx, r) = handle(8);
        tx.send(delivery(2, 2..4)).unwrap();
        tx.send(delivery(6, 6..7)).unwrap();
        // A stray delivery (past the end, or already covered) is ignored.
        tx.send(delivery(7, 7..9)).unwrap();
        tx.send(delivery(2, 2..3)).unwrap();
        drop(tx);
        let out = r.await.expect("map");
        assert_eq!(out.len(), 8);
        let ok: Vec<usize> = out.iter().enumerate().filter(|(_, r)| r.is_ok()).map(|(i, _)| i).collect();
        assert_eq!(ok, [2, 3, 6]);
        assert!(out.failures().iter().all(|(_, e)| matches!(e, Error::PoolTerminated)));
    }
}
