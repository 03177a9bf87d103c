//! `cluster::Worker`: the agent a host runs. It reads chunks of work from
//! its build's task stream through the consumer group, runs them on a local
//! `Pool` (a crashing task kills one worker process, never the agent),
//! writes each result to its caller's reply stream and acknowledges the
//! entry in the same transaction.
//!
//! # Delivery
//!
//! - An entry stays in the group's pending list, leased to this agent,
//!   until its reply is written; the agent renews the lease of what it
//!   holds every heartbeat. An agent that dies stops renewing; after the
//!   lease any other agent claims the entry (`XAUTOCLAIM`) and runs it
//!   again: execution is at least once. Callers keep each chunk's first
//!   reply only.
//! - A chunk whose worker died is handed back (a fresh entry that counts
//!   the deliveries so far); at `max_deliveries` it is dead-lettered and
//!   its caller gets `TaskPoisoned { deliveries }`.
//! - An entry that cannot be decoded, or is of another protocol or build,
//!   is dead-lettered with a warning.
//! - On SIGTERM (or the future given to `run_until`) the agent stops
//!   reading, lets what it holds finish for `drain_timeout`, hands back the
//!   rest, and exits.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use multiproc::{Error, Pool, Result};
use redis::streams::{StreamAutoClaimReply, StreamId, StreamPendingCountReply, StreamReadReply};
use serde_bytes::ByteBuf;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::Instant;

use crate::conn::{self, Conn, QueryError};
use crate::keys::{self, DEAD_LETTERS_KEPT, GROUP, Keys};
use crate::pool::{DEFAULT_LEASE, RESPONSE_TIMEOUT};
use crate::wire::{self, FIELD, PROTOCOL, RemoteError, ReplyMsg, TaskMsg};

/// How long one blocking read of the task stream waits.
const READ_BLOCK_MS: u64 = 500;

/// A cluster agent: `Worker::new(url).processes(4).run().await`.
#[derive(Debug, Clone)]
#[must_use = "an agent does nothing until `run` is awaited"]
pub struct Worker {
    url: String,
    processes: Option<usize>,
    prefix: String,
    lease: Duration,
    max_deliveries: u32,
    deadline: Duration,
    drain_timeout: Duration,
    name: Option<String>,
}

impl Worker {
    /// An agent of the Redis at `url` (see [`ClusterPool`](crate::ClusterPool)
    /// for the URL forms).
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            processes: None,
            prefix: keys::DEFAULT_PREFIX.to_owned(),
            lease: DEFAULT_LEASE,
            max_deliveries: 3,
            deadline: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(30),
            name: None,
        }
    }

    /// Worker processes of the local pool (default: the CPU count).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// Key prefix shared with the callers (default `multiproc`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long a task this agent holds stays its own without a heartbeat
    /// (default 10 s): after that, another agent may claim it.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Deliveries of a chunk that kills its worker before it is
    /// dead-lettered (default 3).
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = n;
        self
    }

    /// How long Redis may stay unreachable before `run` fails with
    /// [`Error::ClusterUnavailable`] (default 60 s).
    pub fn reconnect_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// On SIGTERM, how long held tasks may run on before they are handed
    /// back (default 30 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// The consumer name in the group (default `host-pid-random`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Runs until SIGTERM or SIGINT, then drains and returns.
    pub async fn run(self) -> Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        self.run_until(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
        .await
    }

    /// Runs until `stop` completes, then drains and returns.
    pub async fn run_until(self, stop: impl Future<Output = ()>) -> Result<()> {
        if self.lease < Duration::from_millis(30) {
            return Err(Error::InvalidArgument("an agent's lease must be at least 30 ms".into()));
        }
        if self.max_deliveries == 0 {
            return Err(Error::InvalidArgument("max_deliveries must be at least 1".into()));
        }
        let client = conn::client(&self.url)?;
        let mut conn = Conn::open(client.clone(), self.deadline, RESPONSE_TIMEOUT).await?;
        let read_timeout = RESPONSE_TIMEOUT + Duration::from_millis(READ_BLOCK_MS);
        let fetch_conn = Conn::open(client, self.deadline, read_timeout).await?;
        let keys = Keys::new(&self.prefix, multiproc::__private::build_id());
        ensure_group(&mut conn, &keys).await?;
        let processes = self.processes.unwrap_or_else(multiproc::cpu_count).max(1);
        let pool = Arc::new(Pool::builder().processes(processes).build().await?);
        let consumer = self.name.clone().unwrap_or_else(default_name);
        let capacity = 2 * processes;
        let mut agent = Agent {
            conn,
            keys,
            consumer,
            pool,
            held: HashMap::new(),
            permits: Arc::new(Semaphore::new(capacity)),
            max_deliveries: self.max_deliveries,
            lease: self.lease,
        };
        agent.heartbeat().await?;
        tracing::info!(consumer = %agent.consumer, tasks = %agent.keys.tasks, processes, "cluster agent ready");
        let result = agent.serve(fetch_conn, stop, self.drain_timeout).await;
        agent.leave().await;
        if let Ok(pool) = Arc::try_unwrap(agent.pool) {
            pool.terminate().await;
        }
        result
    }
}

fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    format!("{}-{}-{}", if host.is_empty() { "host" } else { host }, std::process::id(), keys::random_id())
}

async fn ensure_group(conn: &mut Conn, keys: &Keys) -> Result<()> {
    let mut cmd = redis::cmd("XGROUP");
    cmd.arg("CREATE").arg(&keys.tasks).arg(GROUP).arg("0").arg("MKSTREAM");
    match conn.query::<()>(&cmd).await {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A chunk this agent holds (its permit is one unit of capacity).
struct Held {
    msg: TaskMsg,
    deliveries: u32,
    _permit: OwnedSemaphorePermit,
}

/// What the fetcher hands over.
enum Fetched {
    /// Entries with their delivery counts in Redis.
    Entries(Vec<(StreamId, u32, OwnedSemaphorePermit)>),
    Failed(Error),
}

/// A finished chunk.
struct Done {
    entry_id: String,
    results: Vec<Result<Vec<u8>>>,
}

struct Agent {
    conn: Conn,
    keys: Keys,
    consumer: String,
    pool: Arc<Pool>,
    held: HashMap<String, Held>,
    permits: Arc<Semaphore>,
    max_deliveries: u32,
    lease: Duration,
}

impl Agent {
    async fn serve(&mut self, fetch_conn: Conn, stop: impl Future<Output = ()>, drain: Duration) -> Result<()> {
        let (fetched_tx, mut fetched) = mpsc::channel(4);
        let (stop_fetch, stop_rx) = watch::channel(false);
        let fetcher = tokio::spawn(fetch(
            fetch_conn,
            self.keys.clone(),
            self.consumer.clone(),
            Arc::clone(&self.permits),
            self.lease,
            fetched_tx,
            stop_rx,
        ));
        let (done_tx, mut done) = mpsc::unbounded_channel();
        let mut beat = tokio::time::interval(self.lease / 3);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop = std::pin::pin!(stop);
        let mut stop = stop;
        let mut drain_until: Option<Instant> = None;
        let mut fetching = true;
        let result = loop {
            if drain_until.is_some() && !fetching && self.held.is_empty() {
                break Ok(());
            }
            let draining = drain_until.is_some();
            let until = drain_until.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                () = &mut stop, if !draining => {
                    tracing::info!(consumer = %self.consumer, held = self.held.len(), "cluster agent draining");
                    drain_until = Some(Instant::now() + drain);
                    let _ = stop_fetch.send(true);
                }
                got = fetched.recv(), if fetching => match got {
                    Some(Fetched::Entries(entries)) => {
                        let mut failed = None;
                        for (entry, deliveries, permit) in entries {
                            if let Err(e) = self.take(entry, deliveries, permit, draining, &done_tx).await {
                                failed = Some(e);
                                break;
                            }
                        }
                        if let Some(e) = failed {
                            break Err(e);
                        }
                    }
                    Some(Fetched::Failed(e)) => break Err(e),
                    None => fetching = false,
                },
                Some(d) = done.recv() => {
                    if let Err(e) = self.finish(d).await {
                        break Err(e);
                    }
                }
                _ = beat.tick() => {
                    if let Err(e) = self.tick().await {
                        break Err(e);
                    }
                }
                () = tokio::time::sleep_until(until), if draining => {
                    let ids: Vec<String> = self.held.keys().cloned().collect();
                    tracing::info!(consumer = %self.consumer, chunks = ids.len(), "drain timeout: handing back held work");
                    for id in ids {
                        if let Some(h) = self.held.remove(&id) {
                            let prior = h.msg.prior_deliveries;
                            if let Err(e) = self.hand_back(&id, h.msg, prior).await {
                                tracing::warn!(error = %e, "could not hand back a chunk; it returns after its lease");
                            }
                        }
                    }
                }
            }
        };
        let _ = stop_fetch.send(true);
        fetcher.abort();
        result
    }

    /// Takes one entry delivered `redis_deliveries` times.
    async fn take(
        &mut self,
        entry: StreamId,
        redis_deliveries: u32,
        permit: OwnedSemaphorePermit,
        draining: bool,
        done: &mpsc::UnboundedSender<Done>,
    ) -> Result<()> {
        let id = entry.id.clone();
        if self.held.contains_key(&id) {
            // Our own entry, claimed back because a renewal came late: the
            // claim renewed its lease; it is already running here.
            return Ok(());
        }
        let msg = match parse(&entry, &self.keys) {
            Ok(msg) => msg,
            Err(why) => {
                tracing::warn!(id = %id, stream = %self.keys.tasks, reason = %why, "dead-lettering a malformed task entry");
                let raw = raw_field(&entry);
                return self.dead_letter(&id, &raw, &why, 0, None).await;
            }
        };
        let deliveries = msg.prior_deliveries.saturating_add(redis_deliveries);
        if deliveries > self.max_deliveries {
            // Its earlier holders died with it each time.
            return self.poison(&id, msg, deliveries - 1).await;
        }
        if draining {
            let prior = msg.prior_deliveries;
            return self.hand_back(&id, msg, prior).await;
        }
        let pool = Arc::clone(&self.pool);
        let done = done.clone();
        let (name, signature, args, ends, timeout) =
            (msg.name.clone(), msg.signature.clone(), msg.args.to_vec(), msg.ends.clone(), msg.timeout());
        let entry_id = id.clone();
        tokio::spawn(async move {
            let results = pool.__run_raw(&name, &signature, args, ends, timeout).await;
            let _ = done.send(Done { entry_id, results });
        });
        self.held.insert(id, Held { msg, deliveries, _permit: permit });
        Ok(())
    }

    async fn finish(&mut self, d: Done) -> Result<()> {
        let Some(h) = self.held.remove(&d.entry_id) else { return Ok(()) };
        let lost = d.results.iter().any(|r| matches!(r, Err(Error::WorkerLost { .. })));
        let stopped = d.results.iter().any(|r| matches!(r, Err(Error::PoolTerminated | Error::PoolWorkerStart(_))));
        if lost && h.deliveries >= self.max_deliveries {
            tracing::warn!(id = %d.entry_id, task = %h.msg.name, deliveries = h.deliveries, "dead-lettering a task that killed its worker every time");
            return self.poison(&d.entry_id, h.msg, h.deliveries).await;
        }
        if lost || stopped {
            let prior = if lost { h.deliveries } else { h.msg.prior_deliveries };
            tracing::debug!(id = %d.entry_id, task = %h.msg.name, deliveries = h.deliveries, "chunk lost its worker; handing it back");
            return self.hand_back(&d.entry_id, h.msg, prior).await;
        }
        let items =
            d.results.into_iter().map(|r| r.map(ByteBuf::from).map_err(|e| RemoteError::from_local(&e))).collect();
        self.reply(&d.entry_id, &h.msg, ReplyMsg { call: h.msg.call, items }, None).await
    }

    /// Writes the reply and acknowledges the entry, in one transaction
    /// (plus a dead letter when given).
    async fn reply(&mut self, id: &str, msg: &TaskMsg, reply: ReplyMsg, dead: Option<redis::Cmd>) -> Result<()> {
        let bytes = wire::encode("a reply entry", &reply)?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("XADD").arg(&msg.reply).arg("*").arg(FIELD).arg(bytes).ignore();
        pipe.cmd("PEXPIRE").arg(&msg.reply).arg(msg.reply_ttl_ms.max(1)).ignore();
        if let Some(dead) = dead {
            pipe.add_command(dead).ignore();
        }
        self.ack_into(&mut pipe, id);
        Ok(self.conn.query::<()>(&pipe).await?)
    }

    fn ack_into(&self, pipe: &mut redis::Pipeline, id: &str) {
        pipe.cmd("XACK").arg(&self.keys.tasks).arg(GROUP).arg(id).ignore();
        pipe.cmd("XDEL").arg(&self.keys.tasks).arg(id).ignore();
    }

    fn dead_cmd(&self, id: &str, raw: &[u8], reason: &str, deliveries: u32) -> redis::Cmd {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.keys.dead)
            .arg("MAXLEN")
            .arg("~")
            .arg(DEAD_LETTERS_KEPT)
            .arg("*")
            .arg("entry")
            .arg(id)
            .arg("reason")
            .arg(reason)
            .arg("deliveries")
            .arg(deliveries)
            .arg("consumer")
            .arg(&self.consumer)
            .arg(FIELD)
            .arg(raw);
        cmd
    }

    /// Moves an entry to the dead-letter stream (and tells its caller).
    async fn dead_letter(
        &mut self,
        id: &str,
        raw: &[u8],
        reason: &str,
        deliveries: u32,
        caller: Option<(&TaskMsg, ReplyMsg)>,
    ) -> Result<()> {
        let dead = self.dead_cmd(id, raw, reason, deliveries);
        if let Some((msg, reply)) = caller {
            return self.reply(id, msg, reply, Some(dead)).await;
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.add_command(dead).ignore();
        self.ack_into(&mut pipe, id);
        Ok(self.conn.query::<()>(&pipe).await?)
    }

    async fn poison(&mut self, id: &str, msg: TaskMsg, deliveries: u32) -> Result<()> {
        let raw = wire::encode("a task entry", &msg)?;
        let why = RemoteError::Poisoned { deliveries };
        let reply = ReplyMsg { call: msg.call, items: msg.ends.iter().map(|_| Err(why.clone())).collect() };
        let reason = format!("task `{}` killed its worker on {deliveries} deliveries", msg.name);
        self.dead_letter(id, &raw, &reason, deliveries, Some((&msg, reply))).await
    }

    /// Gives a chunk back to the stream as a fresh entry (for any agent)
    /// that remembers `prior` deliveries, and acknowledges the old one.
    async fn hand_back(&mut self, id: &str, mut msg: TaskMsg, prior: u32) -> Result<()> {
        msg.prior_deliveries = prior;
        let bytes = wire::encode("a task entry", &msg)?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("XADD").arg(&self.keys.tasks).arg("*").arg(FIELD).arg(bytes).ignore();
        self.ack_into(&mut pipe, id);
        Ok(self.conn.query::<()>(&pipe).await?)
    }

    /// Heartbeat and lease renewal of held entries.
    async fn tick(&mut self) -> Result<()> {
        // A draining agent still beats: its callers wait for what it holds.
        self.heartbeat().await?;
        if !self.held.is_empty() {
            let mut cmd = redis::cmd("XCLAIM");
            cmd.arg(&self.keys.tasks).arg(GROUP).arg(&self.consumer).arg(0);
            for id in self.held.keys() {
                cmd.arg(id);
            }
            cmd.arg("JUSTID");
            let _: Vec<String> = self.conn.query(&cmd).await?;
        }
        Ok(())
    }

    async fn heartbeat(&mut self) -> Result<()> {
        let now = self.conn.server_time_ms().await?;
        let mut pipe = redis::pipe();
        pipe.cmd("ZADD").arg(&self.keys.agents).arg(now).arg(&self.consumer).ignore();
        // Long-gone agents leave the set, so it stays as small as the fleet.
        let forgotten = now.saturating_sub(10 * self.lease.as_millis() as u64);
        pipe.cmd("ZREMRANGEBYSCORE").arg(&self.keys.agents).arg("-inf").arg(forgotten).ignore();
        Ok(self.conn.query::<()>(&pipe).await?)
    }

    /// Leaves the live set; drops the consumer when it holds nothing.
    async fn leave(&mut self) {
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(&self.keys.agents).arg(&self.consumer);
        let _ = self.conn.query::<()>(&cmd).await;
        if self.held.is_empty() {
            let mut cmd = redis::cmd("XGROUP");
            cmd.arg("DELCONSUMER").arg(&self.keys.tasks).arg(GROUP).arg(&self.consumer);
            let _ = self.conn.query::<()>(&cmd).await;
        }
        tracing::info!(consumer = %self.consumer, "cluster agent stopped");
    }
}

/// The entry's task, or why it is not one this agent may run.
fn parse(entry: &StreamId, keys: &Keys) -> std::result::Result<TaskMsg, String> {
    let Some(value) = entry.map.get(FIELD) else {
        return Err(format!("no `{FIELD}` field"));
    };
    let bytes: Vec<u8> = redis::from_redis_value(value).map_err(|e| format!("field `{FIELD}`: {e}"))?;
    let msg: TaskMsg = wire::decode("a task entry", &bytes).map_err(|e| e.to_string())?;
    if msg.protocol != PROTOCOL {
        return Err(format!("protocol {} (this agent speaks {PROTOCOL})", msg.protocol));
    }
    if msg.build != keys.build {
        return Err(format!("build {:016x} (this agent is {:016x})", msg.build, keys.build));
    }
    if msg.ends.windows(2).any(|w| w[0] > w[1]) || msg.ends.last().is_some_and(|&e| e as usize > msg.args.len()) {
        return Err("item boundaries outside the arguments".into());
    }
    Ok(msg)
}

/// The entry's payload as it was, for the dead-letter stream.
fn raw_field(entry: &StreamId) -> Vec<u8> {
    entry.map.get(FIELD).and_then(|v| redis::from_redis_value::<Vec<u8>>(v).ok()).unwrap_or_default()
}

/// Claims up to `count` entries idle longer than the lease (their agent
/// is gone), with their delivery counts.
async fn claim(
    conn: &mut Conn,
    keys: &Keys,
    consumer: &str,
    lease: Duration,
    cursor: &mut String,
    count: usize,
) -> std::result::Result<Vec<(StreamId, u32)>, QueryError> {
    let mut cmd = redis::cmd("XAUTOCLAIM");
    cmd.arg(&keys.tasks)
        .arg(GROUP)
        .arg(consumer)
        .arg(lease.as_millis() as u64)
        .arg(cursor.as_str())
        .arg("COUNT")
        .arg(count);
    let claimed: StreamAutoClaimReply = conn.query(&cmd).await?;
    *cursor = claimed.next_stream_id;
    if claimed.claimed.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for e in &claimed.claimed {
        pipe.cmd("XPENDING").arg(&keys.tasks).arg(GROUP).arg(&e.id).arg(&e.id).arg(1);
    }
    let counts: Vec<StreamPendingCountReply> = conn.query(&pipe).await?;
    Ok(claimed
        .claimed
        .into_iter()
        .zip(counts)
        .map(|(entry, count)| {
            let times = count.ids.first().map_or(2, |p| p.times_delivered);
            tracing::info!(id = %entry.id, deliveries = times, "claimed a task whose lease expired");
            (entry, u32::try_from(times).unwrap_or(u32::MAX))
        })
        .collect())
}

/// Takes work for this consumer while it has capacity: every `lease / 3`
/// entries whose lease expired (`XAUTOCLAIM`), otherwise new entries
/// (`XREADGROUP >`). One loop holds the capacity permits for both, so
/// neither can starve the other.
async fn fetch(
    mut conn: Conn,
    keys: Keys,
    consumer: String,
    permits: Arc<Semaphore>,
    lease: Duration,
    tx: mpsc::Sender<Fetched>,
    mut stop: watch::Receiver<bool>,
) {
    let mut cursor = "0-0".to_owned();
    let mut next_claim = Instant::now() + lease / 3;
    loop {
        if *stop.borrow() {
            break;
        }
        let first = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.changed() => break,
        };
        let mut held = vec![first];
        while let Ok(p) = Arc::clone(&permits).try_acquire_owned() {
            held.push(p);
        }
        let mut batch = Vec::new();
        let mut failure = None;
        if Instant::now() >= next_claim {
            next_claim = Instant::now() + lease / 3;
            match claim(&mut conn, &keys, &consumer, lease, &mut cursor, held.len()).await {
                Ok(entries) => {
                    batch.extend(entries.into_iter().filter_map(|(e, n)| held.pop().map(|p| (e, n, p))));
                }
                Err(e) => failure = Some(e),
            }
        }
        if failure.is_none() && batch.is_empty() {
            // Block at most until the next claim is due.
            let block =
                next_claim.saturating_duration_since(Instant::now()).as_millis().clamp(1, u128::from(READ_BLOCK_MS));
            let mut cmd = redis::cmd("XREADGROUP");
            cmd.arg("GROUP")
                .arg(GROUP)
                .arg(&consumer)
                .arg("COUNT")
                .arg(held.len())
                .arg("BLOCK")
                .arg(block as u64)
                .arg("STREAMS")
                .arg(&keys.tasks)
                .arg(">");
            match conn.query::<Option<StreamReadReply>>(&cmd).await {
                Ok(read) => {
                    let entries = read.map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect::<Vec<_>>());
                    batch.extend(entries.unwrap_or_default().into_iter().filter_map(|e| held.pop().map(|p| (e, 1, p))));
                }
                Err(e) => failure = Some(e),
            }
        }
        match failure {
            Some(e) if e.code() == Some("NOGROUP") => {
                // Redis came back without the group (no persistence).
                tracing::warn!(stream = %keys.tasks, "the consumer group is gone; creating it again");
                if let Err(e) = ensure_group(&mut conn, &keys).await {
                    let _ = tx.send(Fetched::Failed(e)).await;
                    break;
                }
                continue;
            }
            Some(e) => {
                let _ = tx.send(Fetched::Failed(e.into())).await;
                break;
            }
            None => {}
        }
        if !batch.is_empty() && tx.send(Fetched::Entries(batch)).await.is_err() {
            break;
        }
    }
}
