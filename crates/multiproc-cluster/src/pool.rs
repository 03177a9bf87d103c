//! `ClusterPool`: the `Pool` API with agents on other hosts as workers.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use multiproc::{Error, Result, TaskFn};
use serde::Serialize;
use serde_bytes::ByteBuf;
use tokio::sync::mpsc;

use crate::conn::{self, Conn};
use crate::dispatch::{self, Chunk, Cmd, Counters, Dispatcher};
use crate::imap::Imap;
use crate::keys::{self, Keys};
use crate::result::{AsyncResult, MapCall, MapResult};
use crate::wire::{self, PROTOCOL, TaskMsg};

/// Default: chunks of one caller in Redis at a time.
const DEFAULT_WINDOW: usize = 64;
/// Default: how long Redis may be unreachable before calls fail.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);
/// Default: an agent silent this long is taken for dead (its tasks are
/// claimed by others after the same time).
pub(crate) const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// Default: how long results wait in Redis for a caller that went away.
const DEFAULT_RESULT_TTL: Duration = Duration::from_secs(600);
/// Longest any single Redis answer may take.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A pool whose workers are `cluster::Worker` agents on any number of hosts,
/// reached through Redis Streams: `multiproc::Pool`'s methods, semantics and
/// error shapes, so code moves between the two by changing the constructor.
///
/// ```no_run
/// #[multiproc::task]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// # async fn demo() -> multiproc::Result<()> {
/// let pool = multiproc_cluster::ClusterPool::connect("redis://127.0.0.1/").await?;
/// let squares = pool.map(square, 0..10u64).await?;
/// # Ok(()) }
/// ```
///
/// Dropping it cancels its queued work (deleted from Redis); results still
/// on their way expire with the reply stream.
#[derive(Debug)]
pub struct ClusterPool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub cmds: mpsc::UnboundedSender<Cmd>,
    pub stats: Arc<Counters>,
    pub keys: Keys,
    pub reply: String,
    pub result_ttl: Duration,
    pub lease: Duration,
    pub next_id: AtomicU64,
    /// For the few requests outside the dispatcher (`agents`).
    pub conn: tokio::sync::Mutex<Conn>,
}

impl Inner {
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// Options of a [`ClusterPool`] ([`ClusterPool::builder`]).
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `connect` is awaited"]
pub struct ClusterPoolBuilder {
    url: String,
    prefix: String,
    window: usize,
    deadline: Duration,
    lease: Duration,
    result_ttl: Duration,
}

impl ClusterPoolBuilder {
    /// Key prefix shared with the agents (default `multiproc`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Chunks of this caller in Redis at once (default 64): back-pressure,
    /// so nothing in Redis grows with the size of a `map`.
    pub fn window(mut self, chunks: usize) -> Self {
        self.window = chunks;
        self
    }

    /// How long Redis may stay unreachable before calls fail with
    /// [`Error::ClusterUnavailable`] (default 30 s).
    pub fn reconnect_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// An agent whose heartbeat is older than this counts as gone (default
    /// 10 s; use the agents' lease).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long results wait in Redis for a caller that went away (default
    /// 10 min).
    pub fn result_ttl(mut self, ttl: Duration) -> Self {
        self.result_ttl = ttl;
        self
    }

    /// Connects (a `PING` within the reconnect deadline) and starts the
    /// caller's dispatcher and reply reader.
    pub async fn connect(self) -> Result<ClusterPool> {
        if self.window == 0 {
            return Err(Error::InvalidArgument("a cluster pool's window must be at least 1 chunk".into()));
        }
        if self.result_ttl < Duration::from_millis(1) || self.lease < Duration::from_millis(1) {
            return Err(Error::InvalidArgument("a lease or result TTL must be at least 1 ms".into()));
        }
        let client = conn::client(&self.url)?;
        let main = Conn::open(client.clone(), self.deadline, RESPONSE_TIMEOUT).await?;
        let dispatch_conn = Conn::open(client.clone(), self.deadline, RESPONSE_TIMEOUT).await?;
        let reader_conn = Conn::open(client, self.deadline, RESPONSE_TIMEOUT).await?;
        let keys = Keys::new(&self.prefix, multiproc::__private::build_id());
        let reply = keys.reply(&keys::random_id());
        let stats = Arc::new(Counters::default());
        let (cmds, cmd_rx) = mpsc::unbounded_channel();
        let (reply_tx, reply_rx) = mpsc::channel(64);
        let dispatcher = Dispatcher::new(dispatch_conn, keys.clone(), self.window, self.lease, Arc::clone(&stats));
        tokio::spawn(dispatcher.run(cmd_rx, reply_rx));
        tokio::spawn(dispatch::read_replies(reader_conn, reply.clone(), reply_tx));
        tracing::debug!(url = %conn::redact(&self.url), %reply, "cluster pool connected");
        Ok(ClusterPool {
            inner: Arc::new(Inner {
                cmds,
                stats,
                keys,
                reply,
                result_ttl: self.result_ttl,
                lease: self.lease,
                next_id: AtomicU64::new(0),
                conn: tokio::sync::Mutex::new(main),
            }),
        })
    }
}

/// A snapshot of a cluster pool's counters ([`ClusterPool::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterStats {
    /// Items that ran to a result.
    pub completed: u64,
    /// Items that failed (panic, timeout, lost worker, poison, Redis gone).
    pub failed: u64,
    /// Chunks in Redis (queued there or on an agent).
    pub in_flight: u64,
    /// Chunks waiting here for room in the window.
    pub queued: u64,
    /// Replies dropped because their chunk was already answered (it ran
    /// twice after a lease expired) or cancelled.
    pub duplicates: u64,
}

/// The registered name and signature of task `F`.
#[derive(Debug)]
pub(crate) struct TaskId {
    pub name: &'static str,
    pub signature: &'static str,
}

fn task_id<F: 'static>() -> Result<&'static TaskId> {
    static INDEX: OnceLock<HashMap<TypeId, TaskId>> = OnceLock::new();
    let index = INDEX.get_or_init(|| {
        multiproc::__private::tasks()
            .map(|e| ((e.key)(), TaskId { name: e.name, signature: (e.signature)() }))
            .collect()
    });
    index.get(&TypeId::of::<F>()).ok_or(Error::UnregisteredTask { name: std::any::type_name::<F>() })
}

/// Everything needed to encode chunks of one call.
#[derive(Debug, Clone)]
pub(crate) struct CallSpec {
    pub inner: Arc<Inner>,
    pub task: &'static TaskId,
    pub timeout: Option<Duration>,
}

impl CallSpec {
    /// One chunk of encoded argument tuples.
    pub fn chunk(&self, base: usize, args: Vec<u8>, ends: Vec<u32>) -> Result<Chunk> {
        let call = self.inner.next_id();
        let len = ends.len();
        let msg = TaskMsg {
            protocol: PROTOCOL,
            build: self.inner.keys.build,
            reply: self.inner.reply.clone(),
            reply_ttl_ms: self.inner.result_ttl.as_millis() as u64,
            call,
            name: self.task.name.to_owned(),
            signature: self.task.signature.to_owned(),
            args: ByteBuf::from(args),
            ends,
            timeout_ms: self.timeout.map(|t| t.as_millis() as u64),
            prior_deliveries: 0,
        };
        Ok(Chunk { call, base, len, entry: wire::encode("a task entry", &msg)? })
    }
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

pub(crate) type Encode<X> = fn(&mut Vec<u8>, &X) -> std::result::Result<(), rmp_serde::encode::Error>;

impl ClusterPool {
    /// Connects with the default options (`ClusterPool::builder(url).connect()`).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::builder(url).connect().await
    }

    /// Options: key prefix, window, reconnect deadline, lease, result TTL.
    pub fn builder(url: &str) -> ClusterPoolBuilder {
        ClusterPoolBuilder {
            url: url.to_owned(),
            prefix: keys::DEFAULT_PREFIX.to_owned(),
            window: DEFAULT_WINDOW,
            deadline: DEFAULT_DEADLINE,
            lease: DEFAULT_LEASE,
            result_ttl: DEFAULT_RESULT_TTL,
        }
    }

    fn spec<F: 'static>(&self) -> Result<CallSpec> {
        Ok(CallSpec { inner: Arc::clone(&self.inner), task: task_id::<F>()?, timeout: None })
    }

    /// Runs `f(args…)` on an agent and waits for its result (`pool.apply(f, args)`).
    pub async fn apply<F, A, M>(&self, f: F, args: A) -> Result<F::Output>
    where
        F: TaskFn<A, M>,
        A: Serialize,
    {
        self.apply_async(f, args).await
    }

    /// Submits `f(args…)` and returns at once (`pool.apply_async(f, args)`).
    /// Dropping the handle before an agent took the task cancels it.
    pub fn apply_async<F, A, M>(&self, f: F, args: A) -> AsyncResult<F::Output>
    where
        F: TaskFn<A, M>,
        A: Serialize,
    {
        let _ = f;
        AsyncResult::submit(self.spec::<F>(), &args, None)
    }

    /// [`apply_async`](Self::apply_async) with a time limit for the task on
    /// its agent (the local pool's `task_timeout`): [`Error::Timeout`].
    pub fn apply_timeout<F, A, M>(&self, f: F, args: A, timeout: Duration) -> AsyncResult<F::Output>
    where
        F: TaskFn<A, M>,
        A: Serialize,
    {
        let _ = f;
        AsyncResult::submit(self.spec::<F>(), &args, Some(timeout))
    }

    /// `f(item)` for every item, results in input order (`pool.map(f, items)`):
    /// `.await` it, or set `.chunksize(n)` / `.timeout(d)` first.
    pub fn map<F, A, M, I>(&self, f: F, items: I) -> MapCall<F::Output, A>
    where
        F: TaskFn<(A,), M>,
        A: Serialize,
        I: IntoIterator<Item = A>,
    {
        let _ = f;
        MapCall::new(self.spec::<F>(), items.into_iter().collect(), encode_one::<A>)
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
        MapCall::new(self.spec::<F>(), items.into_iter().collect(), encode_spread::<A>)
    }

    /// [`starmap`](Self::starmap), submitted now (`pool.starmap_async`).
    pub fn starmap_async<F, A, M, I>(&self, f: F, items: I) -> MapResult<F::Output>
    where
        F: TaskFn<A, M>,
        A: Serialize,
        I: IntoIterator<Item = A>,
    {
        self.starmap(f, items).submit()
    }

    /// A stream of `f(item)` in input order (`pool.imap(f, items)`), pulling
    /// the input lazily with a bounded number of chunks out.
    pub fn imap<F, A, M, I>(&self, f: F, items: I) -> Imap<F::Output, I::IntoIter>
    where
        F: TaskFn<(A,), M>,
        A: Serialize,
        I: IntoIterator<Item = A>,
    {
        let _ = f;
        Imap::new(self.spec::<F>(), items.into_iter(), encode_one::<A>, true)
    }

    /// Like [`imap`](Self::imap), results as they finish (`pool.imap_unordered`).
    pub fn imap_unordered<F, A, M, I>(&self, f: F, items: I) -> Imap<F::Output, I::IntoIter>
    where
        F: TaskFn<(A,), M>,
        A: Serialize,
        I: IntoIterator<Item = A>,
    {
        let _ = f;
        Imap::new(self.spec::<F>(), items.into_iter(), encode_one::<A>, false)
    }

    /// Counters: completed, failed, in flight, queued, duplicates dropped.
    pub fn stats(&self) -> ClusterStats {
        let s = &self.inner.stats;
        ClusterStats {
            completed: s.completed.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            in_flight: s.in_flight.load(Ordering::Relaxed),
            queued: s.queued.load(Ordering::Relaxed),
            duplicates: s.duplicates.load(Ordering::Relaxed),
        }
    }

    /// Agents of this build whose heartbeat is younger than the lease.
    pub async fn agents(&self) -> Result<u64> {
        let mut conn = self.inner.conn.lock().await;
        let now = conn.server_time_ms().await?;
        let since = now.saturating_sub(self.inner.lease.as_millis() as u64);
        let mut cmd = redis::cmd("ZCOUNT");
        cmd.arg(&self.inner.keys.agents).arg(since).arg("+inf");
        Ok(conn.query::<u64>(&cmd).await?)
    }

    /// This caller's reply stream (its results pass through it).
    pub fn reply_stream(&self) -> &str {
        &self.inner.reply
    }

    /// The task stream of this build (for inspection and tests).
    pub fn task_stream(&self) -> &str {
        &self.inner.keys.tasks
    }

    /// The dead-letter stream of this build.
    pub fn dead_letter_stream(&self) -> &str {
        &self.inner.keys.dead
    }
}
