//! `Pool`: a fixed set of worker processes running registered tasks, with
//! Python's `apply`/`map`/`imap`/`starmap` family, crash isolation, per-task
//! timeouts, cancellation and backpressure.
//!
//! # Theory of operation
//!
//! Every worker slot has an owner task ([`slot`]) that starts a worker
//! process, takes chunks of work from the shared queue ([`queue`]), sends
//! them as one `Call` each, and delivers each `Done` to the submission's
//! channel. The handles ([`result`], [`imap`]) encode arguments on the
//! caller's task and decode results there, so the owners only move bytes.
//! When a worker dies, its owner fails exactly the call it was running with
//! `WorkerLost`, puts the calls it had not started back in the queue, and
//! starts a replacement.
//!
//! # What cannot wedge it
//!
//! - Arguments over [`MAX_CALL_BYTES`] fail that call with
//!   [`Error::ArgumentsTooLarge`] before anything is queued (a map's chunk
//!   over the limit is split); a result over [`MAX_RESULT_BYTES`] fails its
//!   item with [`Error::ResultTooLarge`]. The worker is untouched.
//! - A worker stores the id of each call in a shared progress word before
//!   running it, so a call lost with its worker is known to have started or
//!   not. Calls it never started (sent to a worker already dead, or lost with
//!   the forkserver) go back to the queue, always, without using a retry.
//! - A worker whose reply stops halfway (a partial frame that does not grow
//!   for [`PoolBuilder::stall_timeout`]) is killed and replaced.
//! - Long chunks report their finished items as they go, so a per-item
//!   timeout fails only the item that ran over; the items before it are
//!   delivered and the items after it run on another worker.
//!
//! ```no_run
//! #[multiproc::task]
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! # async fn demo() -> multiproc::Result<()> {
//! // with Pool(4) as pool: print(pool.map(square, range(10)))
//! let pool = multiproc::Pool::new(4).await?;
//! let squares = pool.map(square, 0..10).await?;
//! println!("{:?}", squares.into_vec()?);
//! # Ok(()) }
//! ```

mod builder;
mod imap;
mod mapped;
mod queue;
mod raw;
mod result;
mod shm;
mod slot;
pub(crate) mod worker;

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Serialize;

pub use builder::PoolBuilder;
pub use imap::{FromStream, Imap, Source};
pub use mapped::{Mapped, MappedIntoIter, MappedIter};
use queue::{ChunkError, Phase, Shared};
pub use result::{AsyncResult, MapCall, MapResult};

use crate::error::{Error, Result};
use crate::registry::{TaskFn, lookup};
use crate::wire::{DEFAULT_MAX_FRAME, TaskRef, fds};

/// Most bytes of encoded arguments one call (or one chunk of a map) may
/// carry: the frame limit, less room for the call's envelope.
pub const MAX_CALL_BYTES: usize = DEFAULT_MAX_FRAME - (64 << 10);
/// Most bytes one task's encoded result may take (half a call: a reply also
/// carries the results finished before it).
pub const MAX_RESULT_BYTES: usize = MAX_CALL_BYTES / 2;
/// A worker in a long chunk reports its finished items at least this often.
pub(crate) const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(10);
/// Whether a pool's workers take calls through shared memory unless
/// [`PoolBuilder::shared_memory`] says otherwise.
pub const SHARED_MEMORY_DEFAULT: bool = true;
/// Arguments that encode to more than this are encoded again off the
/// runtime's threads (the first attempt stops here).
const INLINE_ENCODE_MAX: usize = 1 << 20;

/// A pool of worker processes: `multiprocessing.Pool`.
///
/// `Pool` is a cheap handle: clones share the same workers (no `Arc`
/// needed). Dropping the last clone terminates and reaps every worker (as
/// leaving Python's `with Pool(…) as pool:` block does); `close` then `join`,
/// or [`shutdown`](Self::shutdown), lets the queued work finish first.
///
/// # What a pool can run
///
/// The `f` of every method is a `fn` or `async fn` carrying
/// `#[multiproc::task]` (every rule: [`guide::tasks`](crate::guide::tasks)):
/// a worker finds the code by its registered name. A closure or a `fn`
/// without the attribute compiles, but the call fails at run time with
/// [`Error::UnregisteredTask`] before anything is sent (the whole call: a
/// `map`'s `.await`, the first and only item of an `imap` stream). Its
/// message says what to write. Instead of a closure, write a task and pass
/// what it captured as arguments:
///
/// ```no_run
/// #[multiproc::task]
/// fn scale(x: u64, factor: u64) -> u64 {
///     x * factor
/// }
///
/// # async fn demo(pool: multiproc::Pool, factor: u64) -> multiproc::Result<()> {
/// // Not `pool.map(move |x| x * factor, 0..100)`:
/// let scaled = pool.starmap(scale, (0..100).map(|x| (x, factor))).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Pool {
    shared: Arc<Shared>,
    _last: Arc<Terminator>,
}

/// Owned by every clone of a `Pool`; the last one dropped terminates it.
#[derive(Debug)]
struct Terminator(Arc<Shared>);

/// A snapshot of a pool's counters ([`Pool::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Items that ran to a result.
    pub completed: u64,
    /// Items that failed (panic, timeout, lost worker, terminate).
    pub failed: u64,
    /// Items on a worker right now.
    pub in_flight: u64,
    /// Workers replaced (died, timed out or recycled).
    pub workers_replaced: u64,
}

impl Pool {
    /// A pool of `processes` workers (`Pool(processes)`), started and ready.
    /// Zero is an [`Error::InvalidArgument`].
    pub async fn new(processes: usize) -> Result<Self> {
        Self::builder().processes(processes).build().await
    }

    /// Every option of Python's `Pool(…)` and more.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// Number of worker processes.
    pub fn processes(&self) -> usize {
        self.shared.config.processes
    }

    fn task<F: 'static>(&self) -> Result<Arc<TaskRef>> {
        Ok(Arc::new(lookup::<F>()?.task_ref()))
    }

    fn from_shared(shared: Arc<Shared>) -> Self {
        Self { _last: Arc::new(Terminator(Arc::clone(&shared))), shared }
    }

    /// Runs `f(args…)` on a worker and waits for its result (`pool.apply(f, args)`).
    ///
    /// `f` must be a `#[multiproc::task]` function; a closure or an
    /// un-annotated `fn` fails with [`Error::UnregisteredTask`] (see [What a
    /// pool can run](Pool#what-a-pool-can-run)).
    pub async fn apply<F, A, M>(&self, f: F, args: A) -> Result<F::Output>
    where
        F: TaskFn<A, M>,
        A: Serialize + Send + 'static,
    {
        self.apply_async(f, args).await
    }

    /// Submits `f(args…)` and returns at once (`pool.apply_async(f, args)`).
    /// Dropping the handle before the task started cancels it.
    ///
    /// Arguments over [`MAX_CALL_BYTES`] fail with
    /// [`Error::ArgumentsTooLarge`]; nothing is sent. Arguments over 1 MiB
    /// are encoded on tokio's blocking pool, not on the caller's thread.
    ///
    /// `f` must be a `#[multiproc::task]` function; a closure or an
    /// un-annotated `fn` fails with [`Error::UnregisteredTask`] (see [What a
    /// pool can run](Pool#what-a-pool-can-run)).
    pub fn apply_async<F, A, M>(&self, f: F, args: A) -> AsyncResult<F::Output>
    where
        F: TaskFn<A, M>,
        A: Serialize + Send + 'static,
    {
        let _ = f;
        let task = match self.task::<F>() {
            Ok(t) => t,
            Err(e) => return AsyncResult::failed(e),
        };
        let mut buf = Vec::new();
        let (first, fds) = fds::capture(|| encode_capped(&mut buf, &args, INLINE_ENCODE_MAX));
        match first {
            Ok(true) => AsyncResult::submit(&self.shared, Ok(task), Ok((buf, fds))),
            Ok(false) => match tokio::runtime::Handle::try_current() {
                // Big: encode again where a long copy blocks no runtime thread.
                Ok(rt) => {
                    drop((buf, fds));
                    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                    let shared = Arc::clone(&self.shared);
                    rt.spawn_blocking(move || {
                        let (encoded, fds) = fds::capture(|| crate::wire::encode("the task's arguments", &args));
                        if let Err(e) = encoded.and_then(|a| result::submit_one(&shared, task, (a, fds), tx.clone())) {
                            result::refuse(&tx, e);
                        }
                    });
                    AsyncResult::pending(rx)
                }
                Err(_) => {
                    let (encoded, fds) = fds::capture(|| crate::wire::encode("the task's arguments", &args));
                    AsyncResult::submit(&self.shared, Ok(task), encoded.map(|a| (a, fds)))
                }
            },
            Err(e) => AsyncResult::failed(e),
        }
    }

    /// `f(item)` for every item, results in input order (`pool.map(f, items)`):
    /// `.await` it, or set `.chunksize(n)` first. It gives a [`Mapped`]:
    /// each item has its own result, so one failure does not hide the
    /// others ([`Mapped::into_vec`] is Python's list-or-first-exception). The items are
    /// encoded on the caller's thread when the map is submitted; a map of
    /// many items (16,384 or more) on a multi-thread runtime does it inside
    /// `block_in_place`, so the thread's other tasks run elsewhere meanwhile.
    ///
    /// `f` must be a `#[multiproc::task]` function; a closure or an
    /// un-annotated `fn` fails with [`Error::UnregisteredTask`] (see [What a
    /// pool can run](Pool#what-a-pool-can-run)).
    pub fn map<F, A, M, I>(&self, f: F, items: I) -> MapCall<F::Output, A>
    where
        F: TaskFn<(A,), M>,
        A: Serialize,
        I: IntoIterator<Item = A>,
    {
        let _ = f;
        self.call(self.task::<F>(), items, queue::encode_one::<A>)
    }

    /// [`map`](Self::map), submitted now (`pool.map_async(f, items)`).
    pub fn map_async<F, A, M, I>(&self, f: F, items: I) -> MapResult<F::Output>
    where
        F: TaskFn<(A,), M>,
        A: Serialize,
        I: IntoIterator<Item = A>,
    {
        self.map(f, items).submit()
    }

    /// `f(*args)` for every argument tuple, in order (`pool.starmap(f, items)`).
    ///
    /// `f` must be a `#[multiproc::task]` function; a closure or an
    /// un-annotated `fn` fails with [`Error::UnregisteredTask`] (see [What a
    /// pool can run](Pool#what-a-pool-can-run)).
    pub fn starmap<F, A, M, I>(&self, f: F, items: I) -> MapCall<F::Output, A>
    where
        F: TaskFn<A, M>,
        A: Serialize,
        I: IntoIterator<Item = A>,
    {
        let _ = f;
        self.call(self.task::<F>(), items, queue::encode_spread::<A>)
    }

    /// [`starmap`](Self::starmap), submitted now (`pool.starmap_async(f, items)`).
    pub fn starmap_async<F, A, M, I>(&self, f: F, items: I) -> MapResult<F::Output>
    where
        F: TaskFn<A, M>,
        A: Serialize,
        I: IntoIterator<Item = A>,
    {
        self.starmap(f, items).submit()
    }

    fn call<T, X>(
        &self,
        task: Result<Arc<TaskRef>>,
        items: impl IntoIterator<Item = X>,
        encode: fn(&mut Vec<u8>, &X) -> std::result::Result<(), rmp_serde::encode::Error>,
    ) -> MapCall<T, X> {
        let items: Vec<X> = items.into_iter().collect();
        MapCall {
            shared: Arc::clone(&self.shared),
            task,
            items,
            encode,
            chunksize: None,
            timeout: None,
            _out: PhantomData,
        }
    }

    /// A stream of `f(item)` in input order (`pool.imap(f, items)`), pulling
    /// the input lazily with a bounded window of chunks in flight (an
    /// endless iterator is fine). Read it with `futures::StreamExt`:
    ///
    /// ```
    /// use futures::StreamExt;
    ///
    /// #[multiproc::task]
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// #[multiproc::main]
    /// async fn main() -> multiproc::Result<()> {
    ///     let pool = multiproc::Pool::new(2).await?;
    ///     // for y in pool.imap(square, range(10)):
    ///     let mut squares = pool.imap(square, 0..10);
    ///     let mut seen = Vec::new();
    ///     while let Some(y) = squares.next().await {
    ///         seen.push(y?);
    ///     }
    ///     assert_eq!(seen, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// `f` must be a `#[multiproc::task]` function; a closure or an
    /// un-annotated `fn` fails with [`Error::UnregisteredTask`] (see [What a
    /// pool can run](Pool#what-a-pool-can-run)).
    pub fn imap<F, A, M, I>(&self, f: F, items: I) -> Imap<F::Output, I::IntoIter>
    where
        F: TaskFn<(A,), M>,
        A: Serialize,
        I: IntoIterator<Item = A>,
    {
        let _ = f;
        Imap::new(Arc::clone(&self.shared), self.task::<F>(), items.into_iter(), queue::encode_one::<A>, true)
    }

    /// Like [`imap`](Self::imap), results as they finish (`pool.imap_unordered`).
    ///
    /// `f` must be a `#[multiproc::task]` function; a closure or an
    /// un-annotated `fn` fails with [`Error::UnregisteredTask`] (see [What a
    /// pool can run](Pool#what-a-pool-can-run)).
    pub fn imap_unordered<F, A, M, I>(&self, f: F, items: I) -> Imap<F::Output, I::IntoIter>
    where
        F: TaskFn<(A,), M>,
        A: Serialize,
        I: IntoIterator<Item = A>,
    {
        let _ = f;
        Imap::new(Arc::clone(&self.shared), self.task::<F>(), items.into_iter(), queue::encode_one::<A>, false)
    }

    /// [`imap`](Self::imap) over an async input: items are pulled from
    /// `stream` as the bounded window allows, a partial chunk goes out as
    /// soon as the stream has nothing more ready, and results come in input
    /// order. Dropping the returned stream cancels its queued work.
    ///
    /// `f` must be a `#[multiproc::task]` function; a closure or an
    /// un-annotated `fn` fails with [`Error::UnregisteredTask`] (see [What a
    /// pool can run](Pool#what-a-pool-can-run)).
    pub fn imap_stream<F, A, M, S>(&self, f: F, stream: S) -> Imap<F::Output, FromStream<S>>
    where
        F: TaskFn<(A,), M>,
        A: Serialize,
        S: futures::Stream<Item = A> + Unpin,
    {
        let _ = f;
        Imap::new(Arc::clone(&self.shared), self.task::<F>(), FromStream(stream), queue::encode_one::<A>, true)
    }

    /// No more work is accepted (`pool.close()`); workers exit once the queue
    /// is done. New submissions fail with [`Error::Closed`].
    pub fn close(&self) {
        self.shared.set_phase(Phase::Closing);
    }

    /// Stops every worker now (`pool.terminate()`): SIGTERM, then SIGKILL
    /// after the grace period. Unfinished work fails with
    /// [`Error::PoolTerminated`]. Returns once every worker is reaped.
    pub async fn terminate(&self) {
        self.shared.stop.set();
        self.shared.set_phase(Phase::Terminating);
        self.shared.fail_queued(&ChunkError::Terminated);
        let _ = self.shared.live.subscribe().wait_for(|n| *n == 0).await;
        self.shared.fail_queued(&ChunkError::Terminated);
    }

    /// Waits for every worker to exit (`pool.join()`); call [`close`](Self::close)
    /// or [`terminate`](Self::terminate) first, else [`Error::PoolRunning`].
    pub async fn join(&self) -> Result<()> {
        if *self.shared.phase.borrow() == Phase::Running {
            return Err(Error::PoolRunning);
        }
        let _ = self.shared.live.subscribe().wait_for(|n| *n == 0).await;
        Ok(())
    }

    /// An orderly stop (`pool.close(); pool.join()` with a deadline): no new
    /// work is accepted, running tasks are asked to stop
    /// ([`stop_requested`](crate::stop_requested) turns true in every worker
    /// at once), the queued and running work may finish within `grace`;
    /// then whatever is left is terminated (SIGTERM, the pool's
    /// `timeout_grace`, SIGKILL) and fails with [`Error::PoolTerminated`].
    /// Returns whether everything finished in time. Every worker is reaped
    /// when it returns.
    pub async fn shutdown(&self, grace: std::time::Duration) -> bool {
        self.close();
        self.shared.stop.set();
        let mut live = self.shared.live.subscribe();
        let drained = tokio::time::timeout(grace, live.wait_for(|n| *n == 0)).await.is_ok();
        if !drained {
            tracing::info!(?grace, "pool shutdown: grace period over; terminating the rest");
            self.terminate().await;
        }
        drained
    }

    /// Counters: completed, failed, in flight, workers replaced.
    pub fn stats(&self) -> PoolStats {
        let s = &self.shared.stats;
        PoolStats {
            completed: s.completed.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            in_flight: s.in_flight.load(Ordering::Relaxed),
            workers_replaced: s.replaced.load(Ordering::Relaxed),
        }
    }

    /// Process ids of the current workers: all of them once `new` returned
    /// (a slot between a lost worker and its replacement is missing).
    pub fn pids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.shared.pids.lock().expect("pids lock").values().map(|&(pid, _)| pid).collect();
        v.sort_unstable();
        v
    }
}

impl Drop for Terminator {
    /// Terminates: the owners stop their workers; in case the runtime is
    /// gone too, the workers are killed right here as well.
    fn drop(&mut self) {
        let shared = &self.0;
        if *shared.live.borrow() == 0 {
            return;
        }
        shared.set_phase(Phase::Terminating);
        shared.fail_queued(&ChunkError::Terminated);
        // The owners may never run again (the runtime may be shutting down):
        // signal here, through the supervisor thread; owners that do run
        // escalate to SIGKILL after the grace period and reap.
        let signal =
            if tokio::runtime::Handle::try_current().is_ok() { nix::libc::SIGTERM } else { nix::libc::SIGKILL };
        for &(_, id) in shared.pids.lock().expect("pids lock").values() {
            let _ = crate::tree::supervisor::signal_child(id, signal);
        }
    }
}

/// Encodes `value` into `buf` unless it takes more than `cap` bytes:
/// `Ok(false)` then (the encoding stopped there).
fn encode_capped<T: Serialize>(buf: &mut Vec<u8>, value: &T, cap: usize) -> Result<bool> {
    struct Capped<'a> {
        buf: &'a mut Vec<u8>,
        cap: usize,
        over: bool,
    }
    impl std::io::Write for Capped<'_> {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if self.buf.len() + b.len() > self.cap {
                self.over = true;
                return Err(std::io::Error::other("over the inline encoding limit"));
            }
            self.buf.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut w = Capped { buf, cap, over: false };
    match rmp_serde::encode::write(&mut w, value) {
        Ok(()) => Ok(true),
        Err(_) if w.over => Ok(false),
        Err(e) => Err(Error::encode("the task's arguments", e)),
    }
}
