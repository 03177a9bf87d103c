//! The caller's side of the wire: one dispatcher task per `ClusterPool`
//! owns the chunks waiting for the window, the chunks in Redis, and the
//! routing of replies; one reader task follows the caller's reply stream.
//!
//! Architecture invariant: a chunk is in exactly one place: the local
//! queue, in flight (an entry in the task stream, recorded in `flights`),
//! or delivered. A reply whose chunk is not in flight is a duplicate (the
//! chunk ran twice after a lease expired) and is dropped: each result
//! reaches the caller exactly once.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::streams::StreamReadReply;
use serde_bytes::ByteBuf;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::conn::{Conn, QueryError};
use crate::keys::Keys;
use crate::wire::{self, FIELD, RemoteError, ReplyMsg};

/// Replies read from the reply stream per request.
const READ_COUNT: usize = 512;
/// How long one blocking read of the reply stream waits.
const READ_BLOCK_MS: u64 = 250;
/// How often the dispatcher looks for live agents while work is out.
const LIVENESS_TICK: Duration = Duration::from_millis(500);

/// One chunk, encoded and ready for the task stream.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub call: u64,
    pub base: usize,
    pub len: usize,
    pub entry: Vec<u8>,
}

/// The outcome of one chunk, per item.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub base: usize,
    pub items: Vec<Result<ByteBuf, RemoteError>>,
}

impl Outcome {
    fn failed(base: usize, len: usize, why: &RemoteError) -> Self {
        Self { base, items: (0..len).map(|_| Err(why.clone())).collect() }
    }
}

pub(crate) type Sink = mpsc::UnboundedSender<Outcome>;

/// Handles → dispatcher.
#[derive(Debug)]
pub(crate) enum Cmd {
    /// Chunks of submission `sub` (several times for an `imap`, with the
    /// sink the first time only: the handle keeps none, so its stream ends
    /// when the dispatcher does).
    Submit { sub: u64, sink: Option<Sink>, chunks: Vec<Chunk> },
    /// The handle is gone: drop what is queued, delete what is in Redis.
    Cancel { sub: u64 },
}

/// Counters behind `ClusterPool::stats`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub in_flight: AtomicU64,
    pub queued: AtomicU64,
    pub duplicates: AtomicU64,
}

#[derive(Debug)]
struct Flight {
    sub: u64,
    base: usize,
    len: usize,
    entry_id: String,
}

pub(crate) struct Dispatcher {
    pub conn: Conn,
    pub keys: Keys,
    /// Chunks in Redis at most.
    pub window: usize,
    pub lease: Duration,
    pub stats: Arc<Counters>,
    queued: VecDeque<(u64, Chunk)>,
    flights: HashMap<u64, Flight>,
    subs: HashMap<u64, Sink>,
    /// When agents were last counted, how many were live, and since when
    /// every count found none (counted from a successful request, so time
    /// Redis was unreachable does not count as time without agents).
    checked: Option<Instant>,
    live: u64,
    none_since: Option<Instant>,
}

impl Dispatcher {
    pub fn new(conn: Conn, keys: Keys, window: usize, lease: Duration, stats: Arc<Counters>) -> Self {
        Self {
            conn,
            keys,
            window,
            lease,
            stats,
            queued: VecDeque::new(),
            flights: HashMap::new(),
            subs: HashMap::new(),
            checked: None,
            live: 0,
            none_since: None,
        }
    }

    /// Runs until the pool is dropped (its command channel closes).
    pub async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Cmd>, mut replies: mpsc::Receiver<Vec<ReplyMsg>>) {
        let mut tick = tokio::time::interval(LIVENESS_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    Some(cmd) => self.command(cmd).await,
                    None => break,
                },
                Some(batch) = replies.recv() => self.deliver(batch),
                _ = tick.tick() => self.check_agents().await,
            }
            // Take whatever else is ready before the next round trip.
            while let Ok(cmd) = cmds.try_recv() {
                self.command(cmd).await;
            }
            while let Ok(batch) = replies.try_recv() {
                self.deliver(batch);
            }
            self.fill().await;
            self.publish();
        }
        // The pool is gone: take its work back out of Redis.
        let ids: Vec<String> = self.flights.drain().map(|(_, f)| f.entry_id).collect();
        self.delete(ids).await;
        tracing::debug!("cluster dispatcher stopped");
    }

    fn publish(&self) {
        self.stats.in_flight.store(self.flights.len() as u64, Ordering::Relaxed);
        self.stats.queued.store(self.queued.len() as u64, Ordering::Relaxed);
    }

    async fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Submit { sub, sink, chunks } => {
                if let Some(sink) = sink {
                    self.subs.insert(sub, sink);
                }
                if !self.subs.contains_key(&sub) {
                    return;
                }
                if let Err(why) = self.require_agents().await {
                    let refused = chunks.into_iter().map(|c| (sub, c)).collect();
                    self.fail(refused, &why);
                    return;
                }
                self.queued.extend(chunks.into_iter().map(|c| (sub, c)));
            }
            Cmd::Cancel { sub } => {
                if self.subs.remove(&sub).is_none() {
                    return;
                }
                self.queued.retain(|(s, _)| *s != sub);
                let mut ids = Vec::new();
                self.flights.retain(|_, f| {
                    if f.sub == sub {
                        ids.push(std::mem::take(&mut f.entry_id));
                        false
                    } else {
                        true
                    }
                });
                if !ids.is_empty() {
                    tracing::debug!(sub, chunks = ids.len(), "cancelled: deleting queued chunks");
                }
                self.delete(ids).await;
            }
        }
    }

    /// Deletes task entries (cancelled work). An entry an agent already
    /// took runs to its end; its reply is dropped as a stranger's.
    async fn delete(&mut self, ids: Vec<String>) {
        if ids.is_empty() {
            return;
        }
        let mut cmd = redis::cmd("XDEL");
        cmd.arg(&self.keys.tasks).arg(&ids);
        if let Err(e) = self.conn.query::<u64>(&cmd).await {
            tracing::warn!(error = ?e, "could not delete cancelled chunks");
        }
    }

    fn deliver(&mut self, batch: Vec<ReplyMsg>) {
        for reply in batch {
            let Some(f) = self.flights.remove(&reply.call) else {
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let Some(sink) = self.subs.get(&f.sub) else { continue };
            let mut items = reply.items;
            if items.len() != f.len {
                let why = RemoteError::Other(format!("a reply of {} items for a chunk of {}", items.len(), f.len));
                items = (0..f.len).map(|_| Err(why.clone())).collect();
            }
            let failed = items.iter().filter(|r| r.is_err()).count() as u64;
            self.stats.failed.fetch_add(failed, Ordering::Relaxed);
            self.stats.completed.fetch_add(f.len as u64 - failed, Ordering::Relaxed);
            // Counters first: a caller that sees its result sees them too.
            self.stats.in_flight.store(self.flights.len() as u64, Ordering::Relaxed);
            let _ = sink.send(Outcome { base: f.base, items });
        }
    }

    /// Sends queued chunks while the window has room, one pipeline per round.
    async fn fill(&mut self) {
        let room = self.window.saturating_sub(self.flights.len()).min(self.queued.len());
        if room == 0 {
            return;
        }
        let batch: Vec<(u64, Chunk)> = self.queued.drain(..room).collect();
        let mut pipe = redis::pipe();
        for (_, c) in &batch {
            pipe.cmd("XADD").arg(&self.keys.tasks).arg("*").arg(FIELD).arg(&c.entry);
        }
        match self.conn.query::<Vec<String>>(&pipe).await {
            Ok(ids) if ids.len() == batch.len() => {
                for ((sub, c), entry_id) in batch.into_iter().zip(ids) {
                    self.flights.insert(c.call, Flight { sub, base: c.base, len: c.len, entry_id });
                }
            }
            Ok(ids) => {
                let why = RemoteError::Other(format!("Redis answered {} ids for {} chunks", ids.len(), batch.len()));
                self.fail(batch, &why);
            }
            Err(e) => {
                let why = unavailable(e);
                self.fail(batch, &why);
                self.fail_all(&why).await;
            }
        }
    }

    fn fail(&mut self, chunks: Vec<(u64, Chunk)>, why: &RemoteError) {
        for (sub, c) in chunks {
            self.stats.failed.fetch_add(c.len as u64, Ordering::Relaxed);
            if let Some(sink) = self.subs.get(&sub) {
                let _ = sink.send(Outcome::failed(c.base, c.len, why));
            }
        }
    }

    /// Fails everything queued and in flight.
    async fn fail_all(&mut self, why: &RemoteError) {
        let queued: Vec<_> = self.queued.drain(..).collect();
        let flights: Vec<Flight> = self.flights.drain().map(|(_, f)| f).collect();
        self.publish();
        self.fail(queued, why);
        let mut ids = Vec::new();
        for f in flights {
            self.stats.failed.fetch_add(f.len as u64, Ordering::Relaxed);
            if let Some(sink) = self.subs.get(&f.sub) {
                let _ = sink.send(Outcome::failed(f.base, f.len, why));
            }
            ids.push(f.entry_id);
        }
        if !matches!(why, RemoteError::Unavailable(_)) {
            self.delete(ids).await;
        }
    }

    /// Counts live agents of this build (server clock).
    async fn count_agents(&mut self) -> Result<u64, QueryError> {
        let now = self.conn.server_time_ms().await?;
        let since = now.saturating_sub(self.lease.as_millis() as u64);
        let mut cmd = redis::cmd("ZCOUNT");
        cmd.arg(&self.keys.agents).arg(since).arg("+inf");
        let live: u64 = self.conn.query(&cmd).await?;
        self.checked = Some(Instant::now());
        self.live = live;
        if live > 0 {
            self.none_since = None;
        } else if self.none_since.is_none() {
            self.none_since = Some(Instant::now());
        }
        Ok(live)
    }

    /// Before taking a submission: a caller with no live agent of its
    /// build gets an error now rather than a wait with no end.
    async fn require_agents(&mut self) -> Result<(), RemoteError> {
        // A recent count of live agents stands; "none" is always checked again.
        let fresh = self.live > 0 && self.checked.is_some_and(|t| t.elapsed() < LIVENESS_TICK);
        let live = if fresh { self.live } else { self.count_agents().await.map_err(unavailable)? };
        if live == 0 { Err(no_workers(&self.keys)) } else { Ok(()) }
    }

    /// While work is out: fail it once every count for a lease found no
    /// live agent.
    async fn check_agents(&mut self) {
        if self.flights.is_empty() && self.queued.is_empty() {
            return;
        }
        match self.count_agents().await {
            Ok(0) if self.none_since.is_some_and(|t| t.elapsed() >= self.lease) => {
                let why = no_workers(&self.keys);
                tracing::warn!(%self.keys.tasks, "no live cluster agent: failing the work in flight");
                self.fail_all(&why).await;
            }
            Ok(_) => {}
            Err(e) => {
                let why = unavailable(e);
                self.fail_all(&why).await;
            }
        }
    }
}

fn unavailable(e: QueryError) -> RemoteError {
    match multiproc::Error::from(e) {
        multiproc::Error::ClusterUnavailable(why) => RemoteError::Unavailable(why),
        other => RemoteError::Unavailable(other.to_string()),
    }
}

fn no_workers(keys: &Keys) -> RemoteError {
    RemoteError::NoWorkers(format!(
        "no live agent runs this build ({:016x}) under prefix `{}`; start `cluster::Worker` from the same binary",
        keys.build, keys.prefix
    ))
}

/// Follows the reply stream and hands replies to the dispatcher; deletes
/// what it read. Ends when the dispatcher is gone.
pub(crate) async fn read_replies(mut conn: Conn, key: String, tx: mpsc::Sender<Vec<ReplyMsg>>) {
    let mut last = "0-0".to_owned();
    while !tx.is_closed() {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(READ_COUNT).arg("BLOCK").arg(READ_BLOCK_MS).arg("STREAMS").arg(&key).arg(&last);
        let read: Option<StreamReadReply> = match conn.query(&cmd).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = ?e, "reading replies failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(read) = read else { continue };
        let mut batch = Vec::new();
        let mut ids = Vec::new();
        for entry in read.keys.into_iter().flat_map(|k| k.ids) {
            last.clone_from(&entry.id);
            match entry.map.get(FIELD).map(redis::from_redis_value::<Vec<u8>>) {
                Some(Ok(bytes)) => match wire::decode::<ReplyMsg>("a reply entry", &bytes) {
                    Ok(reply) => batch.push(reply),
                    Err(e) => tracing::warn!(id = %entry.id, error = %e, "dropping a malformed reply entry"),
                },
                _ => tracing::warn!(id = %entry.id, "dropping a reply entry without its field"),
            }
            ids.push(entry.id);
        }
        if !ids.is_empty() {
            let mut del = redis::cmd("XDEL");
            del.arg(&key).arg(&ids);
            let _ = conn.query::<u64>(&del).await;
        }
        if !batch.is_empty() && tx.send(batch).await.is_err() {
            break;
        }
    }
}
