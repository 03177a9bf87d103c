//! `Pool::builder()`: the options of Python's `Pool(processes, initializer,
//! initargs, maxtasksperchild)` and a few more, validated in `build`.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::Pool;
use super::queue::{Config, Initializer, Shared};
use super::slot;
use crate::error::{Error, Result};
use crate::process::{Prepared, StartMethod, get_start_method};
use crate::registry::TaskFn;

/// Configures a [`Pool`]; see [`Pool::builder`].
#[derive(Debug, Default)]
pub struct PoolBuilder {
    processes: Option<usize>,
    initializer: Option<Result<Prepared>>,
    max_tasks_per_child: Option<u32>,
    method: Option<StartMethod>,
    task_timeout: Option<Duration>,
    timeout_grace: Option<Duration>,
    retries: u32,
    stop_cancelled: bool,
    max_memory_per_child: Option<u64>,
    stall_timeout: Option<Duration>,
    shared_memory: Option<bool>,
}

impl PoolBuilder {
    /// Number of worker processes (`Pool(processes=…)`); defaults to
    /// [`cpu_count()`](crate::cpu_count). Zero is refused by `build`.
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// A registered task each worker runs once before its first task
    /// (`Pool(initializer=f, initargs=(…))`). A worker whose initializer
    /// panics refuses to start.
    pub fn initializer<F, A, M>(mut self, f: F, args: A) -> Self
    where
        F: TaskFn<A, M>,
        A: Serialize,
    {
        let _ = f;
        self.initializer = Some(Prepared::new::<F, A>(&args));
        self
    }

    /// Replace a worker after it ran `n` tasks (`maxtasksperchild`; a chunk
    /// of a map counts as one task, as in Python).
    pub fn max_tasks_per_child(mut self, n: u32) -> Self {
        self.max_tasks_per_child = Some(n);
        self
    }

    /// Replace a worker once its resident memory (RSS) passes `bytes`, after
    /// the call that made it grow (Python has no such option; billiard's
    /// `max_memory_per_child` is the model). Checked as replies arrive, at
    /// most every 10 ms per worker.
    pub fn max_memory_per_child(mut self, bytes: u64) -> Self {
        self.max_memory_per_child = Some(bytes);
        self
    }

    /// How long a worker may leave a reply half-written (a partial frame
    /// that does not grow) before it is declared lost, killed and replaced;
    /// its call fails with [`Error::WorkerLost`]. Defaults to 10 seconds.
    pub fn stall_timeout(mut self, timeout: Duration) -> Self {
        self.stall_timeout = Some(timeout);
        self
    }

    /// How workers are started; defaults to [`get_start_method`].
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// Default time limit of one task (per item of a map). A task over it
    /// fails with [`Error::Timeout`]; its worker is stopped and replaced.
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.task_timeout = Some(timeout);
        self
    }

    /// Time between SIGTERM and SIGKILL when a worker is stopped (timeouts,
    /// `terminate`); defaults to one second.
    pub fn timeout_grace(mut self, grace: Duration) -> Self {
        self.timeout_grace = Some(grace);
        self
    }

    /// Runs a task up to `n` more times when its worker dies under it. Only
    /// for idempotent tasks; the default is 0. (A call its worker never
    /// started is always requeued, and that uses no retry.)
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// When a caller drops the handle of a call that is already running
    /// (an `AsyncResult`, a `MapResult`, an `imap` stream), stop the worker
    /// running it (SIGTERM, grace, SIGKILL) and start another, instead of
    /// letting the call finish. Off by default; queued work of a dropped
    /// handle is always cancelled.
    pub fn stop_cancelled(mut self, stop: bool) -> Self {
        self.stop_cancelled = stop;
        self
    }

    /// Calls and replies through a shared-memory link per worker instead of
    /// its socket (issue 13): the waiting side spins briefly while a core is
    /// idle, then sleeps (see ARCHITECTURE.md, "The shared-memory call
    /// path"). The socket still carries file descriptors and tells a dead
    /// worker, so every crash rule is the same. Default: on. A round trip
    /// on a quiet machine takes ~10-20 µs instead of ~70-100 µs, `map` with
    /// `chunksize(1)` runs 1.3-1.7x faster, CPU-bound work is the same
    /// (ARCHITECTURE.md gives the figures). Off, a worker costs three fds
    /// and a 1 MiB mapping less.
    pub fn shared_memory(mut self, on: bool) -> Self {
        self.shared_memory = Some(on);
        self
    }

    /// Starts the workers and waits until each is ready (its initializer
    /// ran).
    pub async fn build(self) -> Result<Pool> {
        crate::runtime::require("a pool")?;
        let processes = self.processes.unwrap_or_else(crate::current::cpu_count);
        if processes == 0 {
            return Err(Error::InvalidArgument("Number of processes must be at least 1".into()));
        }
        if self.stall_timeout == Some(Duration::ZERO) {
            return Err(Error::InvalidArgument("stall_timeout must be more than zero".into()));
        }
        if self.max_tasks_per_child == Some(0) {
            return Err(Error::InvalidArgument("max_tasks_per_child must be at least 1".into()));
        }
        if crate::current::current_process().daemon {
            return Err(Error::DaemonicChildren);
        }
        let initializer = match self.initializer {
            Some(prepared) => {
                let p = prepared?;
                Some(Initializer { task: p.entry.task_ref(), args: p.args, fds: p.fds })
            }
            None => None,
        };
        let config = Config {
            processes,
            method: self.method.unwrap_or_else(get_start_method),
            initializer,
            max_tasks_per_child: self.max_tasks_per_child,
            task_timeout: self.task_timeout,
            timeout_grace: self.timeout_grace.unwrap_or(Duration::from_secs(1)),
            retries: self.retries,
            stop_cancelled: self.stop_cancelled,
            max_memory_per_child: self.max_memory_per_child,
            stall_timeout: self.stall_timeout.unwrap_or(Duration::from_secs(10)),
            shared_memory: self.shared_memory.unwrap_or(super::SHARED_MEMORY_DEFAULT),
        };
        let shared = Arc::new(Shared::new(config, crate::sync::Event::new()?));
        let started = futures::future::join_all((0..processes).map(|_| slot::start_worker(&shared))).await;
        let mut workers = Vec::with_capacity(processes);
        for w in started {
            // On error the others are dropped: their channels close and they exit.
            workers.push(w?);
        }
        {
            // Known before `build` returns, so `pids()` is complete at once.
            let mut pids = shared.pids.lock().expect("pids lock");
            for (index, w) in workers.iter().enumerate() {
                pids.insert(index, (w.pid, w.spawn_id));
            }
        }
        for (index, w) in workers.into_iter().enumerate() {
            tokio::spawn(slot::run(Arc::clone(&shared), index, Some(w)));
        }
        tracing::info!(processes, "pool started");
        Ok(Pool::from_shared(shared))
    }
}
