//! `imap`, `imap_unordered` and `imap_stream`: streams that pull their input
//! lazily (from an iterator or an async stream) and keep a bounded number of
//! chunks in flight, so an endless input works and memory stays bounded.
//! Dropping the stream cancels its queued chunks.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use super::queue::{Delivery, Job, Shared, Submission, decode_chunk, encode_pieces};
use crate::error::{Error, Result};
use crate::wire::TaskRef;

/// Where an `imap` takes its input: any iterator, or an async stream
/// wrapped in [`FromStream`] ([`Pool::imap_stream`](super::Pool::imap_stream)).
pub trait Source {
    /// One input item (the task's argument).
    type Item;
    /// Appends up to `n` items to `buf`. `Ready(false)` once the input has
    /// ended (items may have been appended first); `Pending` only with
    /// nothing appended, when the input has nothing yet.
    fn pull(&mut self, cx: &mut Context<'_>, n: usize, buf: &mut Vec<Self::Item>) -> Poll<bool>;
}

impl<I: Iterator> Source for I {
    type Item = I::Item;
    fn pull(&mut self, _: &mut Context<'_>, n: usize, buf: &mut Vec<I::Item>) -> Poll<bool> {
        let before = buf.len();
        buf.extend(self.by_ref().take(n));
        Poll::Ready(buf.len() - before == n)
    }
}

/// An async [`Stream`] as the input of an `imap` ([`Pool::imap_stream`](super::Pool::imap_stream)).
#[derive(Debug)]
pub struct FromStream<S>(pub(crate) S);

impl<S: Stream + Unpin> Source for FromStream<S> {
    type Item = S::Item;
    fn pull(&mut self, cx: &mut Context<'_>, n: usize, buf: &mut Vec<S::Item>) -> Poll<bool> {
        let before = buf.len();
        while buf.len() - before < n {
            match Pin::new(&mut self.0).poll_next(cx) {
                Poll::Ready(Some(x)) => buf.push(x),
                Poll::Ready(None) => return Poll::Ready(false),
                // A partial chunk goes out now rather than wait for the rest.
                Poll::Pending if buf.len() > before => return Poll::Ready(true),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(true)
    }
}

/// The stream of [`Pool::imap`](super::Pool::imap) (results in input order)
/// or [`Pool::imap_unordered`](super::Pool::imap_unordered) (as they come).
#[must_use = "streams do nothing unless polled"]
pub struct Imap<T, I: Source> {
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
    /// Items submitted and not yet given out.
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
impl<T, I: Source> Unpin for Imap<T, I> {}

impl<T, I: Source> std::fmt::Debug for Imap<T, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imap")
            .field("ordered", &self.ordered)
            .field("chunksize", &self.chunksize)
            .field("pulled", &self.pulled)
            .field("in_flight", &self.out)
            .finish()
    }
}

impl<T: DeserializeOwned, I: Source> Imap<T, I> {
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

    /// Pulls and submits chunks until the window is full, the input ends or
    /// (an async input) has nothing yet.
    fn refill(&mut self, cx: &mut Context<'_>) -> Result<()> {
        let window = self.window.unwrap_or(8 * self.shared.config.processes).saturating_mul(self.chunksize);
        let task = match &mut self.task {
            Ok(t) => Arc::clone(t),
            Err(e) => return Err(std::mem::replace(e, Error::Closed("stream"))),
        };
        let of = Submission::new(task, self.tx.clone());
        let mut pieces = Vec::with_capacity(1);
        while self.out < window {
            let Some(iter) = &mut self.iter else { break };
            let more = match iter.pull(cx, self.chunksize, &mut self.buf) {
                Poll::Ready(more) => more,
                Poll::Pending => break,
            };
            if !more {
                self.iter = None;
            }
            if self.buf.is_empty() {
                break;
            }
            let base = self.pulled;
            self.pulled += self.buf.len();
            encode_pieces(&self.buf, base, 1, self.encode, &mut self.prefailed, &mut pieces);
            self.buf.clear();
            for (base, args, ends, fds) in pieces.drain(..) {
                let n = ends.len();
                let job = Job {
                    batch: self.batch,
                    base,
                    of: Arc::clone(&of),
                    args,
                    ends,
                    fds,
                    timeout: self.timeout.or(self.shared.config.task_timeout),
                    attempts: 0,
                    chunk: usize::MAX,
                    cut: 0,
                };
                // Only what was queued is awaited: a pool closed before
                // this stream was first polled refuses the chunk, and the
                // stream then ends with that error instead of waiting for
                // results that cannot come.
                self.shared.submit(std::iter::once(job))?;
                self.out += n;
            }
        }
        Ok(())
    }

    fn accept(&mut self, d: Delivery) {
        let base = d.base;
        let items = decode_chunk(d, &mut self.prefailed);
        if self.ordered {
            self.early.insert(base, items);
        } else {
            self.out -= items.len();
            self.ready.extend(items);
        }
    }
}

impl<T: DeserializeOwned, I: Source> Stream for Imap<T, I> {
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
                this.next_base += items.len();
                this.out -= items.len();
                this.ready.extend(items);
                continue;
            }
            if this.iter.is_some()
                && let Err(e) = this.refill(cx)
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
