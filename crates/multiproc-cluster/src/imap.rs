//! `imap`/`imap_unordered` over the cluster: a stream that pulls its input
//! lazily, keeping at most `window` chunks out, and yields results in input
//! order or as they finish.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use multiproc::{Error, Result};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::dispatch::{Cmd, Outcome};
use crate::pool::{CallSpec, Encode};
use crate::result::{Ticket, decode_outcome, encode_chunk};

/// Chunks an `imap` keeps out by default.
const DEFAULT_WINDOW: usize = 16;

/// The stream of [`ClusterPool::imap`](crate::ClusterPool::imap) and
/// [`imap_unordered`](crate::ClusterPool::imap_unordered). Dropping it
/// cancels the chunks not yet taken by an agent.
#[must_use = "streams do nothing unless polled"]
pub struct Imap<T, I: Iterator> {
    spec: Result<CallSpec>,
    input: I,
    encode: Encode<I::Item>,
    ordered: bool,
    chunksize: usize,
    window: usize,
    /// Items pulled so far; chunks out and not answered.
    pulled: usize,
    out: usize,
    exhausted: bool,
    rx: Option<mpsc::UnboundedReceiver<Outcome>>,
    ticket: Option<Ticket>,
    prefailed: HashMap<usize, Error>,
    /// Results ready to yield; chunks ahead of the next expected (ordered).
    ready: VecDeque<Result<T>>,
    early: BTreeMap<usize, Vec<Result<T>>>,
    next: usize,
    error: Option<Error>,
}

impl<T, I: Iterator> Unpin for Imap<T, I> {}

impl<T, I: Iterator> std::fmt::Debug for Imap<T, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imap")
            .field("ordered", &self.ordered)
            .field("pulled", &self.pulled)
            .field("chunks_out", &self.out)
            .finish()
    }
}

impl<T: DeserializeOwned, I: Iterator> Imap<T, I> {
    pub(crate) fn new(spec: Result<CallSpec>, input: I, encode: Encode<I::Item>, ordered: bool) -> Self {
        Self {
            spec,
            input,
            encode,
            ordered,
            chunksize: 1,
            window: DEFAULT_WINDOW,
            pulled: 0,
            out: 0,
            exhausted: false,
            rx: None,
            ticket: None,
            prefailed: HashMap::new(),
            ready: VecDeque::new(),
            early: BTreeMap::new(),
            next: 0,
            error: None,
        }
    }

    /// Items per chunk (`imap(…, chunksize)`, default 1).
    pub fn chunksize(mut self, n: usize) -> Self {
        self.chunksize = n.max(1);
        self
    }

    /// Chunks out at once (default 16).
    pub fn window(mut self, chunks: usize) -> Self {
        self.window = chunks.max(1);
        self
    }

    /// Time limit of each item on its agent.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        if let Ok(spec) = &mut self.spec {
            spec.timeout = Some(timeout);
        }
        self
    }

    /// Pulls and submits chunks until the window is full or the input ends.
    fn top_up(&mut self) -> Result<()> {
        let spec = match &self.spec {
            Ok(s) => s.clone(),
            Err(_) => {
                // Reported once; a later poll sees the stream as ended.
                return Err(match std::mem::replace(&mut self.spec, Err(Error::PoolTerminated)) {
                    Err(e) => e,
                    Ok(_) => Error::PoolTerminated,
                });
            }
        };
        let mut chunks = Vec::new();
        while self.out + chunks.len() < self.window && !self.exhausted {
            let items: Vec<I::Item> = self.input.by_ref().take(self.chunksize).collect();
            if items.len() < self.chunksize {
                self.exhausted = true;
            }
            if items.is_empty() {
                break;
            }
            let base = self.pulled;
            self.pulled += items.len();
            let (args, ends) = encode_chunk(items.iter(), base, self.encode, &mut self.prefailed);
            chunks.push(spec.chunk(base, args, ends)?);
        }
        if chunks.is_empty() {
            return Ok(());
        }
        self.out += chunks.len();
        let mut sink = None;
        if self.rx.is_none() {
            let (tx, rx) = mpsc::unbounded_channel();
            sink = Some(tx);
            self.rx = Some(rx);
            self.ticket = Some(Ticket { sub: spec.inner.next_id(), cmds: spec.inner.cmds.clone() });
        }
        let sub = self.ticket.as_ref().expect("set with the receiver").sub;
        spec.inner.cmds.send(Cmd::Submit { sub, sink, chunks }).map_err(|_| Error::PoolTerminated)
    }

    fn store(&mut self, o: Outcome) {
        self.out = self.out.saturating_sub(1);
        let base = o.base;
        let items = decode_outcome(o, &mut self.prefailed);
        if !self.ordered {
            self.ready.extend(items);
            return;
        }
        self.early.insert(base, items);
        while let Some(items) = self.early.remove(&self.next) {
            self.next += items.len();
            self.ready.extend(items);
        }
    }
}

impl<T: DeserializeOwned, I: Iterator> Stream for Imap<T, I> {
    type Item = Result<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<T>>> {
        if let Some(e) = self.error.take() {
            self.exhausted = true;
            return Poll::Ready(Some(Err(e)));
        }
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Poll::Ready(Some(item));
            }
            if let Err(e) = self.top_up() {
                self.exhausted = true;
                self.out = 0;
                return Poll::Ready(Some(Err(e)));
            }
            if self.out == 0 {
                return Poll::Ready(None);
            }
            let Some(rx) = &mut self.rx else { return Poll::Ready(None) };
            match rx.poll_recv(cx) {
                Poll::Ready(Some(o)) => self.store(o),
                // The pool is gone: what is still out fails once.
                Poll::Ready(None) => {
                    self.out = 0;
                    self.exhausted = true;
                    self.rx = None;
                    return Poll::Ready(Some(Err(Error::PoolTerminated)));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
