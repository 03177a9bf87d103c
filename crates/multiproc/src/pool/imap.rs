//! `imap` and `imap_unordered`: streams that pull their input lazily and keep
//! a bounded number of chunks in flight, so an endless iterator works and
//! memory stays bounded. Dropping the stream cancels its queued chunks.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use super::queue::{Delivery, Job, Shared, decode_chunk, encode_chunk};
use crate::error::{Error, Result};
use crate::wire::TaskRef;

/// The stream of [`Pool::imap`](super::Pool::imap) (results in input order)
/// or [`Pool::imap_unordered`](super::Pool::imap_unordered) (as they come).
#[must_use = "streams do nothing unless polled"]
pub struct Imap<T, I: Iterator> {
    shared: Arc<Shared>,
    task: Result<Arc<TaskRef>>,
    iter: Option<I>,
    encode: fn(&mut Vec<u8>, &I::Item) -> std::result::Result<(), rmp_serde::encode::Error>,
    ordered: bool,
    chunksize: usize,
    window: Option<usize>,
    timeout: Option<Duration>,
    batch: u64,
    tx: mpsc::UnboundedSender<Delivery>,
    rx: mpsc::UnboundedReceiver<Delivery>,
    /// Items pulled so far.
    pulled: usize,
    /// Chunks submitted and not yet given out.
    out: usize,
    /// Ordered: chunks that arrived early, by their first index.
    early: BTreeMap<usize, Vec<Result<T>>>,
    next_base: usize,
    ready: VecDeque<Result<T>>,
    prefailed: HashMap<usize, Error>,
    buf: Vec<I::Item>,
    error: Option<Error>,
    _out: PhantomData<fn() -> T>,
}

// Nothing is pinned: the stream only moves values in and out of its buffers.
impl<T, I: Iterator> Unpin for Imap<T, I> {}

impl<T, I: Iterator> std::fmt::Debug for Imap<T, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imap")
            .field("ordered", &self.ordered)
            .field("chunksize", &self.chunksize)
            .field("pulled", &self.pulled)
            .field("in_flight", &self.out)
            .finish()
    }
}

impl<T: DeserializeOwned, I: Iterator> Imap<T, I> {
    pub(crate) fn new(
        shared: Arc<Shared>,
        task: Result<Arc<TaskRef>>,
        iter: I,
        encode: fn(&mut Vec<u8>, &I::Item) -> std::result::Result<(), rmp_serde::encode::Error>,
        ordered: bool,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let batch = shared.next_batch();
        Self {
            shared,
            task,
            iter: Some(iter),
            encode,
            ordered,
            chunksize: 1,
            window: None,
            timeout: None,
            batch,
            tx,
            rx,
            pulled: 0,
            out: 0,
            early: BTreeMap::new(),
            next_base: 0,
            ready: VecDeque::new(),
            prefailed: HashMap::new(),
            buf: Vec::new(),
            error: None,
            _out: PhantomData,
        }
    }

    /// Items per chunk (`imap(…, chunksize)`); defaults to 1 as in Python. Zero counts as 1.
    pub fn chunksize(mut self, n: usize) -> Self {
        self.chunksize = n.max(1);
        self
    }

    /// Most chunks submitted and not yet yielded; defaults to eight per
    /// worker. Bounds memory whatever the input's length.
    pub fn window(mut self, chunks: usize) -> Self {
        self.window = Some(chunks.max(1));
        self
    }

    /// Time limit of each item, instead of the pool's `task_timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Pulls and submits chunks until the window is full or the input ends.
    fn refill(&mut self) -> Result<()> {
        let window = self.window.unwrap_or(8 * self.shared.config.processes);
        let task = match &mut self.task {
            Ok(t) => Arc::clone(t),
            Err(e) => return Err(std::mem::replace(e, Error::Closed("stream"))),
        };
        while self.out < window {
            let Some(iter) = &mut self.iter else { break };
            self.buf.extend(iter.by_ref().take(self.chunksize));
            if self.buf.is_empty() {
                self.iter = None;
                break;
            }
            let base = self.pulled;
            self.pulled += self.buf.len();
            let (args, ends, fds) = encode_chunk(self.buf.iter(), base, self.encode, &mut self.prefailed);
            self.buf.clear();
            let job = Job {
                batch: self.batch,
                base,
                task: Arc::clone(&task),
                args,
                ends,
                fds,
                timeout: self.timeout.or(self.shared.config.task_timeout),
                attempts: 0,
                sink: self.tx.clone(),
            };
            self.shared.submit(std::iter::once(job))?;
            self.out += 1;
        }
        Ok(())
    }

    fn accept(&mut self, d: Delivery) {
        let base = d.base;
        let items = decode_chunk(d, &mut self.prefailed);
        if self.ordered {
            self.early.insert(base, items);
        } else {
            self.out -= 1;
            self.ready.extend(items);
        }
    }
}

impl<T: DeserializeOwned, I: Iterator> Stream for Imap<T, I> {
    type Item = Result<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<T>>> {
        let this = &mut *self;
        loop {
            if let Some(r) = this.ready.pop_front() {
                return Poll::Ready(Some(r));
            }
            if this.ordered
                && let Some(items) = this.early.remove(&this.next_base)
            {
                this.next_base += items.len().max(1);
                this.out -= 1;
                this.ready.extend(items);
                continue;
            }
            if this.iter.is_some()
                && let Err(e) = this.refill()
            {
                // No more input is taken; the error comes after what is in flight.
                this.iter = None;
                this.error = Some(e);
            }
            if this.out == 0 && this.iter.is_none() {
                return Poll::Ready(this.error.take().map(Err));
            }
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(d)) => this.accept(d),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
