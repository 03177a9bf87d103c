//! The pool's shared work queue: submissions push chunks of work, the owner
//! task of each worker takes them; results travel back through each
//! submission's own channel (its sink).
//!
//! Architecture invariant: every item is in exactly one place at a time:
//! the queue (in a job, or in the uncut rest of a block), one owner's
//! in-flight list, or delivered (or dropped, when its sink was closed by a
//! cancelled caller).

use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, mpsc, watch};

use crate::error::{Cause, Error, ExitStatus, Result};
use crate::process::StartMethod;
use crate::wire::{self, Failure, TaskRef, fds};

/// Where a pool is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Running,
    /// `close()`: no new work; workers finish the queue, then exit.
    Closing,
    /// `terminate()` or drop: workers are stopped now.
    Terminating,
}

/// What a pool was built with.
#[derive(Debug)]
pub(crate) struct Config {
    pub processes: usize,
    pub method: StartMethod,
    pub initializer: Option<Initializer>,
    pub max_tasks_per_child: Option<u32>,
    pub task_timeout: Option<Duration>,
    pub timeout_grace: Duration,
    pub retries: u32,
    /// Stop a worker whose running call's caller went away.
    pub stop_cancelled: bool,
    /// Recycle a worker whose RSS passes this many bytes.
    pub max_memory_per_child: Option<u64>,
    /// How long a partial reply may stop growing.
    pub stall_timeout: Duration,
    /// Calls and replies through a shared-memory link per worker (issue 13).
    pub shared_memory: bool,
}

/// The task every worker runs once before its first call.
#[derive(Debug)]
pub(crate) struct Initializer {
    pub task: TaskRef,
    pub args: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

/// What every chunk of one submission shares: its task, and where its
/// results go. One `Arc` per job rather than one reference count per field:
/// the jobs of a map are cloned on the caller's thread and dropped on the
/// owners', and each count moved between cores costs a cache miss (three
/// of them per chunk-1 item were ~7% of a chunk-1 map's parent CPU).
#[derive(Debug)]
pub(crate) struct Submission {
    pub task: Arc<TaskRef>,
    pub sink: Sink,
}

impl Submission {
    pub fn new(task: Arc<TaskRef>, sink: Sink) -> Arc<Self> {
        Arc::new(Self { task, sink })
    }
}

/// One chunk of a submission: consecutive items of one task.
#[derive(Debug)]
pub(crate) struct Job {
    /// The submission it belongs to (lets a worker batch its replies).
    pub batch: u64,
    /// Index of its first item in the submission.
    pub base: usize,
    pub of: Arc<Submission>,
    /// The encoded argument tuples back to back; tuple `i` ends at `ends[i]`.
    pub args: Vec<u8>,
    pub ends: Vec<u32>,
    pub fds: Vec<OwnedFd>,
    /// Per item: each item of the chunk gets this long (the worker reports
    /// progress inside long chunks, so the clock restarts at each report).
    pub timeout: Option<Duration>,
    /// How many times it was already retried after losing its worker.
    pub attempts: u32,
    /// Items per call. A map of small chunks queues its chunks in blocks,
    /// one job each, and an owner cuts the next call off the block's front
    /// when it takes one (`take_call`): a million chunk-1 items were a
    /// million jobs allocated, locked into the queue and faulted in up
    /// front. `usize::MAX` for a job that goes as one call.
    pub chunk: usize,
    /// Items already cut off the front of a block (its `args` and `ends`
    /// still hold them); 0 for every job that is not a queued block.
    pub cut: usize,
}

impl Job {
    pub fn task(&self) -> &Arc<TaskRef> {
        &self.of.task
    }

    pub fn sink(&self) -> &Sink {
        &self.of.sink
    }

    pub fn len(&self) -> usize {
        self.ends.len() - self.cut
    }

    /// Items of the next call this job makes.
    pub fn call_len(&self) -> usize {
        self.len().min(self.chunk)
    }

    /// Calls this job still makes.
    pub fn calls(&self) -> usize {
        self.len().div_ceil(self.chunk.max(1))
    }

    /// A block's next call, cut off its front as a job of its own; `None`
    /// for a job that is one whole call.
    fn cut_call(&mut self) -> Option<Job> {
        if self.cut == 0 && self.len() <= self.chunk {
            return None;
        }
        let k = self.call_len();
        let from = self.cut.checked_sub(1).map_or(0, |i| self.ends[i]);
        let ends = &self.ends[self.cut..self.cut + k];
        let to = ends.last().copied().unwrap_or(from);
        let call = Job {
            batch: self.batch,
            base: self.base,
            of: Arc::clone(&self.of),
            args: self.args.get(from as usize..to as usize).unwrap_or_default().to_vec(),
            ends: ends.iter().map(|e| e.saturating_sub(from)).collect(),
            fds: Vec::new(),
            timeout: self.timeout,
            attempts: self.attempts,
            chunk: usize::MAX,
            cut: 0,
        };
        self.cut += k;
        self.base += k;
        Some(call)
    }

    /// Drops the first `k` items (they finished elsewhere): what is left is
    /// a job of its own, at `base + k`. The fd table is kept whole, since the
    /// remaining arguments name fds by their index in it.
    pub fn drop_front(&mut self, k: usize) {
        debug_assert_eq!(self.cut, 0, "only a job on the wire loses items at its front");
        let k = k.min(self.len());
        if k == 0 {
            return;
        }
        let cut = self.ends[k - 1] as usize;
        self.args.drain(..cut.min(self.args.len()));
        self.ends.drain(..k);
        let cut = u32::try_from(cut).unwrap_or(u32::MAX);
        for e in &mut self.ends {
            *e = e.saturating_sub(cut);
        }
        self.base += k;
    }
}

/// Where a submission's results go.
pub(crate) type Sink = mpsc::UnboundedSender<Delivery>;

/// The outcome of one chunk.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub base: usize,
    pub len: usize,
    pub outcome: std::result::Result<ChunkDone, ChunkError>,
}

/// A chunk's encoded results as the worker sent them.
#[derive(Debug)]
pub(crate) struct ChunkDone {
    pub data: Vec<u8>,
    pub ends: Vec<u32>,
    pub failures: Vec<(u32, Failure)>,
    pub fds: Vec<OwnedFd>,
}

/// Why a whole chunk has no results.
#[derive(Debug, Clone)]
pub(crate) enum ChunkError {
    WorkerLost {
        pid: u32,
        status: ExitStatus,
    },
    ForkserverLost {
        pid: u32,
    },
    Timeout,
    Terminated,
    WorkerStart(Arc<Error>),
    /// Arguments over the call limit (found after encoding off the runtime).
    ArgumentsTooLarge {
        len: usize,
        max: usize,
    },
    /// Arguments that could not be encoded (found off the runtime).
    Encode(Cause),
}

impl ChunkError {
    /// A call that could not be sent: an encoder's failure keeps its cause,
    /// anything else becomes the cause.
    pub fn unsendable(e: Error) -> Self {
        match e {
            Error::Encode { source, .. } => Self::Encode(source),
            other => Self::Encode(crate::error::cause(other)),
        }
    }

    pub fn to_error(&self) -> Error {
        match self {
            Self::WorkerLost { pid, status } => Error::WorkerLost { pid: *pid, status: *status },
            Self::ForkserverLost { pid } => Error::ForkserverLost { pid: *pid },
            Self::Timeout => Error::Timeout,
            Self::Terminated => Error::PoolTerminated,
            Self::WorkerStart(why) => Error::PoolWorkerStart(why.clone()),
            Self::ArgumentsTooLarge { len, max } => Error::ArgumentsTooLarge { len: *len, max: *max },
            Self::Encode(source) => Error::Encode { what: "the task's arguments", source: source.clone() },
        }
    }
}

/// A worker-side failure as the caller sees it.
pub(crate) fn failure_to_error(f: &Failure) -> Error {
    match f {
        Failure::Panicked { message, location } => {
            Error::TaskPanicked(Box::new(crate::TaskPanic { message: message.clone(), location: location.clone() }))
        }
        Failure::Decode(reason) => Error::decode("in the worker", reason.clone()),
        Failure::Encode(reason) => Error::encode("in the worker", reason.clone()),
        Failure::Unknown { name, reason } => {
            Error::TaskMismatch(Box::new(crate::TaskMismatch { name: name.clone(), reason: reason.clone() }))
        }
        Failure::ResultTooLarge { len, max } => Error::ResultTooLarge {
            len: usize::try_from(*len).unwrap_or(usize::MAX),
            max: usize::try_from(*max).unwrap_or(usize::MAX),
        },
        Failure::Returned { task, message, sources, location } => Error::TaskFailed(Box::new(crate::TaskFailure {
            task: task.clone(),
            message: message.clone(),
            sources: sources.clone(),
            location: location.clone(),
        })),
    }
}

/// Turns one delivery into its items' results, in order. `prefailed` are the
/// items whose arguments could not be encoded (their slot was sent empty).
pub(crate) fn decode_chunk<T: serde::de::DeserializeOwned>(
    d: Delivery,
    prefailed: &mut HashMap<usize, Error>,
) -> Vec<Result<T>> {
    let mut out = Vec::with_capacity(d.len);
    decode_chunk_each(d, prefailed, |r| out.push(r));
    out
}

/// [`decode_chunk`], handing each of the delivery's items' results to `put`,
/// in order (exactly `len` of them).
///
/// A chunk whose items all succeeded is decoded in bulk: one decoder runs
/// over its results back to back, each item's end checked against the
/// boundary the worker sent; at the first item that fails or ends elsewhere
/// it goes on item by item, so every item still gets its own result or
/// error.
pub(crate) fn decode_chunk_each<T: serde::de::DeserializeOwned>(
    d: Delivery,
    prefailed: &mut HashMap<usize, Error>,
    mut put: impl FnMut(Result<T>),
) {
    let Delivery { base, len, outcome } = d;
    match outcome {
        Err(e) => {
            for i in 0..len {
                put(Err(take_prefailed(prefailed, base + i).unwrap_or_else(|| e.to_error())));
            }
        }
        Ok(ChunkDone { data, ends, failures, fds }) => fds::provide(fds, || {
            let mut i = 0;
            let mut start = 0;
            if failures.is_empty() && prefailed.is_empty() && ends.len() >= len {
                // Bulk: the common case of a chunk that fully succeeded.
                let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(&data[..]));
                while i < len {
                    let end = ends[i] as usize;
                    match T::deserialize(&mut de) {
                        Ok(v) if de.position() == end as u64 => put(Ok(v)),
                        _ => break,
                    }
                    start = end;
                    i += 1;
                }
            }
            let mut failures = failures.into_iter().peekable();
            while failures.next_if(|(at, _)| (*at as usize) < i).is_some() {}
            for i in i..len {
                let end = ends.get(i).map_or(start, |&e| e as usize);
                let bytes = data.get(start..end).unwrap_or_default();
                start = end;
                let failed = failures.next_if(|(at, _)| *at as usize == i);
                put(match (take_prefailed(prefailed, base + i), failed) {
                    (Some(e), _) => Err(e),
                    (None, Some((_, f))) => Err(failure_to_error(&f)),
                    (None, None) => wire::decode("the task's result", bytes),
                });
            }
        }),
    }
}

/// The encode error of item `i`, if it had one (almost never: skip the hash).
fn take_prefailed(prefailed: &mut HashMap<usize, Error>, i: usize) -> Option<Error> {
    if prefailed.is_empty() { None } else { prefailed.remove(&i) }
}

/// One encoded piece of a chunk: its first index, arguments, ends and fds.
pub(crate) type Piece = (usize, Vec<u8>, Vec<u32>, Vec<OwnedFd>);

/// Encodes `items` (indexes `base..` of the submission) into pieces that each
/// fit in one call, usually one. Items that fail to encode, or that alone
/// exceed the call limit, are sent empty and reported in `prefailed` (by
/// index in the submission); a piece over the limit is split in halves, at
/// a multiple of `align` items when it holds more than that (a block of
/// chunks splits between chunks).
pub(crate) fn encode_pieces<X>(
    items: &[X],
    base: usize,
    align: usize,
    encode: fn(&mut Vec<u8>, &X) -> std::result::Result<(), rmp_serde::encode::Error>,
    prefailed: &mut HashMap<usize, Error>,
    out: &mut Vec<Piece>,
) {
    // One allocation each for small items (a `u64` tuple takes 2-10
    // bytes), where growing from empty took two or three per job.
    let mut args = Vec::with_capacity(items.len().saturating_mul(16).min(64 << 10));
    let mut ends = Vec::with_capacity(items.len());
    let ((), fds) = fds::capture(|| {
        for (i, item) in items.iter().enumerate() {
            let at = args.len();
            if let Err(e) = encode(&mut args, item) {
                args.truncate(at);
                prefailed.insert(base + i, Error::encode("the task's arguments", e));
            } else if args.len() - at > super::MAX_CALL_BYTES {
                prefailed
                    .insert(base + i, Error::ArgumentsTooLarge { len: args.len() - at, max: super::MAX_CALL_BYTES });
                args.truncate(at);
            }
            ends.push(u32::try_from(args.len()).unwrap_or(u32::MAX));
        }
    });
    if items.len() > 1 && args.len() + 4 * ends.len() > super::MAX_CALL_BYTES {
        // Rare: re-encode each half on its own (fds are captured again).
        drop((args, ends, fds));
        let align = align.max(1);
        let mid = if items.len() > align { (items.len() / align / 2).max(1) * align } else { items.len() / 2 };
        let (left, right) = items.split_at(mid);
        encode_pieces(left, base, align, encode, prefailed, out);
        encode_pieces(right, base + left.len(), align, encode, prefailed, out);
        return;
    }
    out.push((base, args, ends, fds));
}

/// `map`: each item is the single argument.
pub(crate) fn encode_one<X: Serialize>(buf: &mut Vec<u8>, x: &X) -> std::result::Result<(), rmp_serde::encode::Error> {
    rmp_serde::encode::write(buf, &(x,))
}

/// `starmap`: each item is the whole argument tuple.
pub(crate) fn encode_spread<X: Serialize>(
    buf: &mut Vec<u8>,
    x: &X,
) -> std::result::Result<(), rmp_serde::encode::Error> {
    rmp_serde::encode::write(buf, x)
}

/// Counters behind `Pool::stats`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub in_flight: AtomicU64,
    pub replaced: AtomicU64,
}

#[derive(Debug, Default)]
pub(crate) struct QueueState {
    pub jobs: VecDeque<Job>,
    /// Owners waiting with no work.
    pub idle: usize,
}

impl QueueState {
    /// The calls queued, counted up to `n` at most (a block is many calls).
    pub fn calls_up_to(&self, n: usize) -> usize {
        let mut calls = 0;
        for job in &self.jobs {
            if calls >= n {
                break;
            }
            calls += job.calls();
        }
        calls.min(n)
    }

    /// Takes the next call: the front job, or the next call cut off the
    /// block at the front.
    pub fn take_call(&mut self) -> Option<Job> {
        let front = self.jobs.front_mut()?;
        match front.cut_call() {
            Some(call) => {
                if front.len() == 0 {
                    self.jobs.pop_front();
                }
                Some(call)
            }
            None => self.jobs.pop_front(),
        }
    }
}

/// Everything the pool handle, the result handles and the owners share.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<QueueState>,
    /// Wakes idle owners when work arrives.
    pub work: Notify,
    pub phase: watch::Sender<Phase>,
    pub config: Config,
    pub stats: Counters,
    next_batch: AtomicU64,
    /// The live worker of each slot, its pid and spawn id (so a dropped
    /// pool can kill them at once, by id).
    pub pids: Mutex<HashMap<usize, (u32, crate::tree::supervisor::SpawnId)>>,
    /// How many owner tasks are still running.
    pub live: watch::Sender<usize>,
    /// Set when the pool shuts down: `stop_requested()` in its workers.
    pub stop: crate::sync::Event,
}

impl Shared {
    pub fn new(config: Config, stop: crate::sync::Event) -> Self {
        Self {
            stop,
            state: Mutex::new(QueueState::default()),
            work: Notify::new(),
            phase: watch::Sender::new(Phase::Running),
            live: watch::Sender::new(config.processes),
            config,
            stats: Counters::default(),
            next_batch: AtomicU64::new(0),
            pids: Mutex::new(HashMap::new()),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().expect("the queue lock is never held across a panic")
    }

    pub fn next_batch(&self) -> u64 {
        self.next_batch.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues jobs (at the back) and wakes idle owners, the most recently
    /// idle first: its worker (and, on the shared-memory path, both ends of
    /// its link) is the one most likely still spinning, not asleep. Waking
    /// the longest idle instead put every sequential call on a sleeping
    /// worker (two wake-ups per call on the link: 38-68 µs against 12-21
    /// µs).
    pub fn submit(&self, jobs: impl IntoIterator<Item = Job>) -> Result<()> {
        if *self.phase.borrow() != Phase::Running {
            return Err(Error::Closed("pool"));
        }
        let mut st = self.lock();
        // Calls, not jobs: a block is many.
        let mut added = 0;
        st.jobs.extend(jobs.into_iter().inspect(|job| added += job.calls()));
        let wake = added.min(st.idle);
        drop(st);
        for _ in 0..wake {
            self.work.notify_last();
        }
        Ok(())
    }

    /// Puts jobs a lost worker never started back at the front, in order.
    pub fn requeue(&self, jobs: impl DoubleEndedIterator<Item = Job>) {
        let mut st = self.lock();
        for job in jobs.rev() {
            st.jobs.push_front(job);
        }
        let wake = st.calls_up_to(st.idle);
        drop(st);
        for _ in 0..wake {
            self.work.notify_last();
        }
    }

    /// Fails every queued job (terminate, or no worker can be started).
    pub fn fail_queued(&self, why: &ChunkError) {
        let jobs = std::mem::take(&mut self.lock().jobs);
        for job in jobs {
            self.stats.failed.fetch_add(job.len() as u64, Ordering::Relaxed);
            let _ = job.sink().send(Delivery { base: job.base, len: job.len(), outcome: Err(why.clone()) });
        }
    }

    pub fn queue_is_empty(&self) -> bool {
        self.lock().jobs.iter().all(|j| j.sink().is_closed())
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.send_if_modified(|p| {
            // Terminating is final; Closing never goes back to Running.
            let next = match (*p, phase) {
                (Phase::Terminating, _) => Phase::Terminating,
                (Phase::Closing, Phase::Running) => Phase::Closing,
                (_, next) => next,
            };
            let changed = *p != next;
            *p = next;
            changed
        });
        self.work.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block of `n` one-byte items `0..n` at `base`, cut into calls of `chunk`.
    fn block(base: usize, n: u8, chunk: usize) -> Job {
        let (tx, _) = mpsc::unbounded_channel();
        let task = Arc::new(crate::wire::TaskRef { name: "t".into(), signature: "s".into() });
        Job {
            batch: 0,
            base,
            of: Submission::new(task, tx),
            args: (0..n).collect(),
            ends: (1..=u32::from(n)).collect(),
            fds: Vec::new(),
            timeout: None,
            attempts: 0,
            chunk,
            cut: 0,
        }
    }

    #[test]
    fn a_block_goes_out_one_call_at_a_time_in_order() {
        let mut st = QueueState::default();
        st.jobs.push_back(block(10, 7, 3));
        st.jobs.push_back(block(0, 2, usize::MAX));
        assert_eq!(st.calls_up_to(99), 4, "3 + 3 + 1 items, then a whole job");
        assert_eq!(st.calls_up_to(2), 2);
        let mut got = Vec::new();
        while let Some(call) = st.take_call() {
            assert_eq!((call.cut, call.chunk), (0, usize::MAX), "a call is a plain job");
            assert_eq!(call.ends.last().copied().unwrap_or(0) as usize, call.args.len());
            got.push((call.base, call.args, call.ends));
        }
        assert_eq!(
            got,
            [
                (10, vec![0, 1, 2], vec![1, 2, 3]),
                (13, vec![3, 4, 5], vec![1, 2, 3]),
                (16, vec![6], vec![1]),
                (0, vec![0, 1], vec![1, 2]),
            ]
        );
        assert_eq!(st.calls_up_to(5), 0);
    }

    #[test]
    fn a_partly_taken_block_still_covers_exactly_its_remaining_items() {
        let mut st = QueueState::default();
        st.jobs.push_back(block(100, 5, 2));
        st.take_call().expect("first call");
        let rest = st.jobs.front().expect("the block stays queued");
        // What `fail_queued` and a cancelled caller see of it.
        assert_eq!((rest.base, rest.len(), rest.calls()), (102, 3, 2));
        // Items that encoded to nothing (they failed before being sent) keep
        // their place.
        let mut st = QueueState::default();
        let mut b = block(0, 4, 1);
        b.args = vec![7, 9];
        b.ends = vec![1, 1, 1, 2];
        st.jobs.push_back(b);
        let calls: Vec<Vec<u8>> = std::iter::from_fn(|| st.take_call()).map(|c| c.args).collect();
        assert_eq!(calls, [vec![7], vec![], vec![], vec![9]]);
    }

    fn done(values: &[&[u8]], failures: Vec<(u32, Failure)>) -> Delivery {
        let mut data = Vec::new();
        let mut ends = Vec::new();
        for v in values {
            data.extend_from_slice(v);
            ends.push(data.len() as u32);
        }
        Delivery { base: 0, len: values.len(), outcome: Ok(ChunkDone { data, ends, failures, fds: Vec::new() }) }
    }

    fn enc<T: Serialize>(v: &T) -> Vec<u8> {
        rmp_serde::to_vec(v).expect("encode")
    }

    #[test]
    fn a_chunk_that_fully_succeeded_decodes_in_bulk() {
        let items: Vec<Vec<u8>> = [1u64, 300, 1 << 40].iter().map(enc).collect();
        let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
        let out: Vec<Result<u64>> = decode_chunk(done(&refs, Vec::new()), &mut HashMap::new());
        assert_eq!(out.into_iter().map(|r| r.expect("ok")).collect::<Vec<_>>(), [1, 300, 1 << 40]);
    }

    #[test]
    fn an_item_that_breaks_the_bulk_decode_fails_alone() {
        // Item 1 is not a u64: bulk decoding stops there, item by item after.
        let items = [enc(&7u64), enc(&"seven"), enc(&9u64)];
        let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
        let out: Vec<Result<u64>> = decode_chunk(done(&refs, Vec::new()), &mut HashMap::new());
        assert_eq!(*out[0].as_ref().expect("item 0"), 7);
        assert!(matches!(out[1], Err(Error::Decode { .. })), "{:?}", out[1]);
        assert_eq!(*out[2].as_ref().expect("item 2"), 9);
        // A boundary that does not match what was decoded is not trusted:
        // the item is decoded from its own bytes.
        let mut d = done(&[&enc(&1u64), &enc(&2u64)], Vec::new());
        if let Ok(c) = &mut d.outcome {
            c.data.push(0xc0); // a stray byte inside item 1's bytes
            c.ends[1] += 1;
        }
        let out: Vec<Result<u64>> = decode_chunk(d, &mut HashMap::new());
        assert_eq!(*out[0].as_ref().expect("item 0"), 1);
        assert_eq!(*out[1].as_ref().expect("item 1 from its own bytes"), 2);
    }

    #[test]
    fn failures_and_prefailed_items_land_at_their_index() {
        let failure = Failure::Panicked { message: "boom".into(), location: "here".into() };
        let out: Vec<Result<u64>> =
            decode_chunk(done(&[&enc(&1u64), &[], &enc(&3u64)], vec![(1, failure)]), &mut HashMap::new());
        assert_eq!(*out[0].as_ref().expect("item 0"), 1);
        assert!(matches!(&out[1], Err(Error::TaskPanicked(p)) if p.message == "boom"));
        assert_eq!(*out[2].as_ref().expect("item 2"), 3);
        let mut prefailed = HashMap::from([(0, Error::encode("x", "y"))]);
        let out: Vec<Result<u64>> = decode_chunk(done(&[&[], &enc(&2u64)], Vec::new()), &mut prefailed);
        assert!(matches!(out[0], Err(Error::Encode { .. })));
        assert_eq!(*out[1].as_ref().expect("item 1"), 2);
        assert!(prefailed.is_empty());
    }
}
