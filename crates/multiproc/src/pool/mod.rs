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
//! println!("{:?}", squares.into_iter().collect::<multiproc::Result<Vec<u64>>>()?);
//! # Ok(()) }
//! ```

mod builder;
mod imap;
mod queue;
mod raw;
mod result;
mod slot;
pub(crate) mod worker;

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Serialize;

pub use builder::PoolBuilder;
pub use imap::Imap;
use queue::{ChunkError, Phase, Shared};
pub use result::{AsyncResult, MapCall, MapResult};

use crate::error::{Error, Result};
use crate::registry::{TaskFn, lookup};
use crate::wire::{self, TaskRef, fds};

/// A pool of worker processes: `multiprocessing.Pool`.
///
/// Dropping it terminates and reaps every worker (as leaving Python's
/// `with Pool(…) as pool:` block does); `close` then `join` lets the queued
/// work finish first.
#[derive(Debug)]
pub struct Pool {
    shared: Arc<Shared>,
}

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

    /// Runs `f(args…)` on a worker and waits for its result (`pool.apply(f, args)`).
    pub async fn apply<F, A, M>(&self, f: F, args: A) -> Result<F::Output>
    where
        F: TaskFn<A, M>,
        A: Serialize,
    {
        self.apply_async(f, args).await
    }

    /// Submits `f(args…)` and returns at once (`pool.apply_async(f, args)`).
    /// Dropping the handle before the task started cancels it.
    pub fn apply_async<F, A, M>(&self, f: F, args: A) -> AsyncResult<F::Output>
    where
        F: TaskFn<A, M>,
        A: Serialize,
    {
        let _ = f;
        let (encoded, fds) = fds::capture(|| wire::encode("the task's arguments", &args));
        AsyncResult::submit(&self.shared, self.task::<F>(), encoded.map(|a| (a, fds)))
    }

    /// `f(item)` for every item, results in input order (`pool.map(f, items)`):
    /// `.await` it, or set `.chunksize(n)` first. Each item's result is its
    /// own `Result`, so one failure does not hide the others.
    pub fn map<F, A, M, I>(&self, f: F, items: I) -> MapCall<F::Output, A>
    where
        F: TaskFn<(A,), M>,
        A: Serialize,
        I: IntoIterator<Item = A>,
    {
        let _ = f;
        self.call(self.task::<F>(), items.into_iter().collect(), queue::encode_one::<A>)
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
    pub fn starmap<F, A, M, I>(&self, f: F, items: I) -> MapCall<F::Output, A>
    where
        F: TaskFn<A, M>,
        A: Serialize,
        I: IntoIterator<Item = A>,
    {
        let _ = f;
        self.call(self.task::<F>(), items.into_iter().collect(), queue::encode_spread::<A>)
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
        items: Vec<X>,
        encode: fn(&mut Vec<u8>, &X) -> std::result::Result<(), rmp_serde::encode::Error>,
    ) -> MapCall<T, X> {
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
    /// the input lazily with a bounded window of chunks in flight.
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
    pub fn imap_unordered<F, A, M, I>(&self, f: F, items: I) -> Imap<F::Output, I::IntoIter>
    where
        F: TaskFn<(A,), M>,
        A: Serialize,
        I: IntoIterator<Item = A>,
    {
        let _ = f;
        Imap::new(Arc::clone(&self.shared), self.task::<F>(), items.into_iter(), queue::encode_one::<A>, false)
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

    /// Process ids of the current workers.
    pub fn pids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.shared.pids.lock().expect("pids lock").values().copied().collect();
        v.sort_unstable();
        v
    }
}

impl Drop for Pool {
    /// Terminates: the owners stop their workers; in case the runtime is
    /// gone too, the workers are killed right here as well.
    fn drop(&mut self) {
        if *self.shared.live.borrow() == 0 {
            return;
        }
        self.shared.set_phase(Phase::Terminating);
        self.shared.fail_queued(&ChunkError::Terminated);
        // The owners may never run again (the runtime may be shutting down):
        // signal here, through the supervisor thread; owners that do run
        // escalate to SIGKILL after the grace period and reap.
        let signal =
            if tokio::runtime::Handle::try_current().is_ok() { nix::libc::SIGTERM } else { nix::libc::SIGKILL };
        for &pid in self.shared.pids.lock().expect("pids lock").values() {
            let _ = crate::tree::supervisor::signal(pid, signal);
        }
    }
}
