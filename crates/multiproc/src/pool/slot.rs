//! The owner of one worker slot: a task that starts a worker, feeds it jobs
//! from the queue, delivers its replies, and replaces it when it dies, times
//! out or has done its `max_tasks_per_child`.
//!
//! Several chunks are kept in flight per worker when the queue has more work
//! than there are idle workers, so a worker never waits for the parent
//! between short calls; a long call never has work queued behind it while
//! another worker idles.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_bytes::ByteBuf;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use super::PROGRESS_EVERY;
use super::queue::{ChunkDone, ChunkError, Delivery, Job, Phase, Shared, Submission};
use super::shm::ParentRing;
use crate::error::{Error, Result};
use crate::process::StartMethod;
use crate::shmcall;
use crate::tree::spawn::handshake;
use crate::tree::supervisor::{self, ExitState, SpawnId};
use crate::value::Value;
use crate::wire::{self, Channel, Ends, FromWorker, ProcessInfo, TaskRef, ToWorker, fds};

/// At most this many items in flight on one worker...
const ITEM_WINDOW: usize = 256;
/// ...in at most this many calls...
const CALL_WINDOW: usize = 64;
/// ...and no more than this much work by the worker's recent pace: enough to
/// cover a round trip to the parent, not so much that a long call sits
/// queued behind another while an idle worker could have taken it.
const PIPELINE_AHEAD: Duration = Duration::from_micros(300);
/// How long a worker whose channel closed may take to exit before it is killed.
const EXIT_WAIT: Duration = Duration::from_secs(2);
/// Once a worker is gone, how long reading what it sent may take. Only a
/// safety net: its socket ends at once (no other process holds its end),
/// unless something it forked by hand still holds it.
const LAST_WORDS: Duration = Duration::from_secs(5);
/// Restart backoff when workers cannot be started.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Consecutive failed starts, with no worker alive, before the queued work
/// is failed: one failure is often the forkserver's death being noticed (the
/// next start makes a new one), and such a loss must not fail calls that
/// never ran.
const START_FAILURES_BEFORE_FAILING_WORK: u32 = 3;
/// Slack on a per-item deadline: the worker reports progress at most
/// [`PROGRESS_EVERY`] late, plus the time to hear it.
const DEADLINE_SLACK: Duration = PROGRESS_EVERY.saturating_mul(2);
/// Least time between two RSS readings of one worker (`max_memory_per_child`).
const RSS_EVERY: Duration = Duration::from_millis(10);

/// A started, ready worker.
pub(crate) struct Worker {
    pub pid: u32,
    /// The spawn id every signal to this worker is addressed by.
    pub spawn_id: SpawnId,
    ch: Channel,
    exit: watch::Receiver<Option<ExitState>>,
    /// `id + 1` of the last call the worker started (see `worker.rs`).
    progress: Value<u64>,
    /// The shared-memory link calls and replies take, when the pool uses one.
    ring: Option<ParentRing>,
}

/// Starts one pool worker and waits until it is ready (initializer done).
pub(crate) async fn start_worker(shared: &Shared) -> Result<Worker> {
    let prefix = match shared.config.method {
        StartMethod::Forkserver => "ForkPoolWorker",
        StartMethod::Spawn => "SpawnPoolWorker",
    };
    let (identity, name) = crate::current::next_child_identity(prefix);
    let me = crate::current::current_process();
    let info = ProcessInfo { name: name.clone(), identity, daemon: true, parent_pid: me.pid, parent_name: me.name };
    let (init, mut fds, task) = match &shared.config.initializer {
        Some(i) => {
            let fds = i.fds.iter().map(OwnedFd::try_clone).collect::<std::io::Result<Vec<_>>>()?;
            (Some((i.task.clone(), ByteBuf::from(i.args.clone()))), fds, i.task.name.clone())
        }
        None => (None, Vec::new(), "pool worker".to_owned()),
    };
    let progress = Value::new_raw(0u64)?;
    let (encoded, progress_fds) = fds::capture(|| wire::encode("the progress word", &progress));
    fds.extend(progress_fds);
    // The pool's stop token: its one fd goes last (the worker pops it).
    let (stop, stop_fds) = fds::capture(|| wire::encode("the stop token", &shared.stop));
    if stop_fds.len() != 1 {
        return Err(Error::Malformed(format!("the stop token took {} fds, not 1", stop_fds.len())));
    }
    fds.extend(stop_fds);
    let msg = ToWorker::Serve { info, init, progress: Some(ByteBuf::from(encoded?)), stop: Some(ByteBuf::from(stop?)) };
    let exec = shared.config.method == StartMethod::Spawn;
    let (spawned, mut ch) = handshake(exec, name, true, &msg, fds, &task).await?;
    let ring = if shared.config.shared_memory {
        // The worker reads this before any call, so every call can take the link.
        let (ring, msg, fds) = ParentRing::create()?;
        ch.feed_with(&msg, fds)?;
        ch.flush().await?;
        Some(ring)
    } else {
        None
    };
    tracing::debug!(pid = spawned.pid, shared_memory = ring.is_some(), "pool worker ready");
    Ok(Worker { pid: spawned.pid, spawn_id: spawned.id, ch, exit: spawned.exit, progress, ring })
}

/// Runs slot `index` until the pool closes or terminates.
pub(crate) async fn run(shared: Arc<Shared>, index: usize, mut first: Option<Worker>) {
    let mut phase = shared.phase.subscribe();
    let mut backoff = BACKOFF_MIN;
    let mut failed_starts = 0u32;
    loop {
        let now = *phase.borrow_and_update();
        // A first worker (started by `build`) is stopped and reaped by its
        // owner like any other, even when the pool was closed or terminated
        // before this task first ran: dropped here, it would exit on its own
        // after `terminate` or `join` had returned.
        if first.is_none() && (now == Phase::Terminating || (now == Phase::Closing && shared.queue_is_empty())) {
            break;
        }
        let worker = match first.take() {
            Some(w) => w,
            None => match start_worker(&shared).await {
                Ok(w) => {
                    backoff = BACKOFF_MIN;
                    failed_starts = 0;
                    w
                }
                Err(e) => {
                    tracing::warn!(error = %e.chain(), "could not start a pool worker; retrying");
                    failed_starts += 1;
                    if failed_starts >= START_FAILURES_BEFORE_FAILING_WORK
                        && shared.pids.lock().expect("pids lock").is_empty()
                    {
                        // Nobody can run the queued work: fail it rather than hang.
                        shared.fail_queued(&ChunkError::WorkerStart(Arc::new(e)));
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = phase.changed() => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            },
        };
        let pid = worker.pid;
        shared.pids.lock().expect("pids lock").insert(index, (pid, worker.spawn_id));
        let span = tracing::debug_span!("pool_worker", pid, slot = index);
        let end = Owner::new(&shared, worker).serve(&mut phase).instrument(span).await;
        shared.pids.lock().expect("pids lock").remove(&index);
        tracing::debug!(pid, ?end, "pool worker gone");
        match end {
            End::Replace => {}
            End::Stop => break,
        }
    }
    shared.live.send_modify(|n| *n -= 1);
}

#[derive(Debug)]
enum End {
    /// The worker is gone (died, timed out, or recycled); start another.
    Replace,
    /// The pool is closing or terminating.
    Stop,
}

/// A call on the wire.
struct Sent {
    id: u64,
    job: Job,
    /// Items of the job already reported (a long chunk reports progress).
    done: usize,
    /// Copies of the job's fds, kept only when it may have to be requeued.
    fds: Vec<OwnedFd>,
    /// One span per call: call id, submission, worker pid.
    span: tracing::Span,
}

struct Owner<'a> {
    shared: &'a Shared,
    pid: u32,
    spawn_id: SpawnId,
    ch: Channel,
    exit: watch::Receiver<Option<ExitState>>,
    in_flight: VecDeque<Sent>,
    items: usize,
    /// When the call at the head of `in_flight` started running.
    head_since: Instant,
    /// Calls sent to this worker (Python counts a chunk as one task).
    calls: u32,
    next_id: u64,
    last_task: Option<Arc<TaskRef>>,
    idle: bool,
    taken: Vec<Job>,
    /// How long an item takes on this worker, once measured.
    per_item: Option<Duration>,
    progress: Value<u64>,
    /// A partial frame's length and since when it has not grown.
    stall: (usize, Instant),
    rss_checked: Option<Instant>,
    /// Over `max_memory_per_child`: take no more work, retire when idle.
    recycle: bool,
    /// Calls and replies go through this link instead of `ch` (issue 13).
    ring: Option<ParentRing>,
}

impl<'a> Owner<'a> {
    fn new(shared: &'a Shared, w: Worker) -> Self {
        Self {
            shared,
            pid: w.pid,
            spawn_id: w.spawn_id,
            ch: w.ch,
            exit: w.exit,
            in_flight: VecDeque::new(),
            items: 0,
            head_since: Instant::now(),
            calls: 0,
            next_id: 0,
            last_task: None,
            idle: false,
            taken: Vec::new(),
            per_item: None,
            progress: w.progress,
            stall: (0, Instant::now()),
            rss_checked: None,
            recycle: false,
            ring: w.ring,
        }
    }

    fn budget(&self) -> u32 {
        if self.recycle {
            return 0;
        }
        self.shared.config.max_tasks_per_child.map_or(u32::MAX, |k| k.saturating_sub(self.calls))
    }

    /// Whether the worker started call `id` (it stores `id + 1` first).
    fn started(&self, id: u64) -> bool {
        self.progress.get() > id
    }

    /// `max_memory_per_child`: reads the worker's RSS now and then; over the
    /// limit, the worker takes no more work and is replaced once idle.
    fn check_memory(&mut self) {
        let Some(limit) = self.shared.config.max_memory_per_child else { return };
        let now = Instant::now();
        if self.recycle || self.rss_checked.is_some_and(|t| now - t < RSS_EVERY) {
            return;
        }
        self.rss_checked = Some(now);
        if let Some(rss) = crate::fleet::rss_bytes(self.pid)
            && rss > limit
        {
            tracing::info!(pid = self.pid, rss, limit, "pool worker over max_memory_per_child; recycling it");
            self.recycle = true;
        }
    }

    async fn serve(mut self, phase: &mut watch::Receiver<Phase>) -> End {
        loop {
            if *phase.borrow_and_update() == Phase::Terminating {
                return self.stop(ChunkError::Terminated).await;
            }
            // Registered before looking at the queue, so no wake-up is missed.
            let work = std::pin::pin!(Some(self.shared.work.notified()));
            let mut work = work;
            if self.in_flight.is_empty() {
                work.as_mut().as_pin_mut().expect("just set").enable();
            }
            if let Err(e) = self.take_jobs() {
                tracing::warn!(error = %e.chain(), "could not send work to a pool worker");
                return self.lost().await;
            }
            if !self.in_flight.is_empty() {
                // Busy: a wake-up meant for an idle owner must go to one
                // (dropping a notified waiter passes its wake-up on).
                work.as_mut().set(None);
            }
            // The shared-memory link: take the replies there, else spin for
            // them a while if that can pay (see `shmcall`), then sleep below.
            let mut ring_wait = None;
            if !self.in_flight.is_empty() {
                match self.ring_replies() {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(pid = self.pid, error = %e, "a pool worker's shared-memory link failed; replacing it");
                        return self.lost().await;
                    }
                }
                if let Some(ring) = &mut self.ring {
                    let want = ring.want();
                    match ring.link().ready_or_spin(want) {
                        Ok(true) => continue,
                        Ok(false) => ring_wait = Some(want),
                        Err(_) => return self.lost().await,
                    }
                }
            }
            if self.in_flight.is_empty() {
                if self.budget() == 0 {
                    return self.retire(End::Replace).await;
                }
                if *phase.borrow() == Phase::Closing && self.shared.queue_is_empty() {
                    return self.retire(End::Stop).await;
                }
            }
            // Each item gets its timeout; the worker reports progress inside
            // a chunk, and each report restarts the clock.
            let deadline =
                self.in_flight.front().and_then(|s| s.job.timeout).map(|t| self.head_since + t + DEADLINE_SLACK);
            // A partial frame must keep growing (a worker that wrote half a
            // reply and stopped would hold its call forever).
            let partial = self.partial_len();
            if partial != self.stall.0 {
                self.stall = (partial, Instant::now());
            }
            // Checked while a reply is awaited: a partial frame appears
            // inside the receive below, without waking this loop.
            let stall_deadline =
                (partial > 0 || !self.in_flight.is_empty()).then(|| self.stall.1 + self.shared.config.stall_timeout);
            tokio::select! {
                biased;
                r = self.ch.recv_flushing::<FromWorker>() => match r {
                    Ok((FromWorker::Fds, fds)) if self.ring.is_some() => {
                        if self.ring.as_mut().is_some_and(|r| r.add_fds(fds).is_err()) {
                            return self.lost().await;
                        }
                    }
                    Ok((FromWorker::Done { id, data, ends, failures, more }, fds)) if self.ring.is_none() => {
                        let done = ChunkDone { data: data.into_vec(), ends: ends.0, failures, fds };
                        if !self.on_done(id, done, more, &mut Deliveries::default()) {
                            return self.lost().await;
                        }
                    }
                    Ok(_) => {
                        tracing::warn!(pid = self.pid, "a pool worker broke the protocol; replacing it");
                        return self.lost().await;
                    }
                    Err(_) => return self.lost().await,
                },
                r = ring_sleep(self.ring.as_mut(), ring_wait) => {
                    if r.is_err() {
                        return self.lost().await;
                    }
                }
                _ = self.exit.changed() => return self.lost().await,
                () = sleep_until(deadline) => return self.timed_out().await,
                () = sleep_until(stall_deadline) => {
                    let partial = self.partial_len();
                    if partial > 0 && partial == self.stall.0 {
                        return self.stalled().await;
                    }
                    self.stall = (partial, Instant::now());
                }
                () = head_cancelled(self.in_flight.front()), if self.shared.config.stop_cancelled => {
                    return self.cancelled().await;
                }
                () = async { if let Some(w) = work.as_mut().as_pin_mut() { w.await } }, if self.in_flight.is_empty() => {}
                _ = phase.changed() => {}
            }
            if let Some(ring) = &mut self.ring {
                ring.link().unpark();
            }
        }
    }

    /// Bytes of a reply not yet whole (socket and link).
    fn partial_len(&self) -> usize {
        self.ch.partial_len() + self.ring.as_ref().map_or(0, ParentRing::partial_len)
    }

    /// Moves queued calls into the link and delivers the replies waiting
    /// there; whether any was delivered. An error (or a reply that answers
    /// no call) means the worker broke the protocol.
    fn ring_replies(&mut self) -> Result<bool> {
        let mut any = false;
        // Sent on every way out (dropped).
        let mut out = Deliveries::default();
        loop {
            let Some(ring) = &mut self.ring else { return Ok(any) };
            ring.pump()?;
            match ring.next()? {
                Some((FromWorker::Done { id, data, ends, failures, more }, fds)) => {
                    let done = ChunkDone { data: data.into_vec(), ends: ends.0, failures, fds };
                    if !self.on_done(id, done, more, &mut out) {
                        return Err(Error::Malformed("a reply that answers no call".into()));
                    }
                    any = true;
                }
                Some(_) => return Err(Error::Malformed("expected a reply on the ring".into())),
                None => return Ok(any),
            }
        }
    }

    /// Moves jobs from the queue onto the wire (see the module doc).
    fn take_jobs(&mut self) -> Result<()> {
        let mut budget = self.budget();
        {
            let mut st = self.shared.lock();
            if self.idle {
                st.idle -= 1;
                self.idle = false;
            }
            let mut items = self.items;
            let mut calls = self.in_flight.len();
            while budget > 0 {
                let Some(job) = st.jobs.front() else { break };
                if job.sink().is_closed() {
                    // Its caller is gone: cancelled.
                    st.jobs.pop_front();
                    continue;
                }
                let first = calls == 0;
                let len = job.call_len();
                let ahead = match self.per_item {
                    // Pace unknown yet: one call ahead at most.
                    None => calls >= 2,
                    Some(t) => t.saturating_mul(u32::try_from(items + len).unwrap_or(u32::MAX)) > PIPELINE_AHEAD,
                };
                let fds = !job.fds.is_empty();
                if !first
                    && (st.calls_up_to(st.idle + 1) <= st.idle
                        || ahead
                        || items + len > ITEM_WINDOW
                        || calls >= CALL_WINDOW
                        || fds)
                {
                    break;
                }
                let job = st.take_call().expect("front was Some");
                items += job.len();
                calls += 1;
                budget -= 1;
                self.taken.push(job);
                if !self.taken.last().expect("just pushed").fds.is_empty() {
                    break;
                }
            }
            if calls == 0 && budget > 0 {
                st.idle += 1;
                self.idle = true;
            }
        }
        let mut taken = std::mem::take(&mut self.taken);
        let any = !taken.is_empty();
        for job in taken.drain(..) {
            self.send(job)?;
        }
        self.taken = taken;
        if let Some(ring) = &mut self.ring {
            ring.pump()?;
        }
        if any && self.in_flight.is_empty() {
            // Everything taken was refused before it went out: look again,
            // and mark this owner idle if the queue is empty (an owner that
            // waits without being counted idle is never woken).
            return self.take_jobs();
        }
        Ok(())
    }

    fn send(&mut self, mut job: Job) -> Result<()> {
        let task = match &self.last_task {
            Some(t) if Arc::ptr_eq(t, job.task()) || t.name == job.task().name => None,
            _ => {
                self.last_task = Some(Arc::clone(job.task()));
                Some((**job.task()).clone())
            }
        };
        let fds = std::mem::take(&mut job.fds);
        let keep = if self.shared.config.retries > 0 || !fds.is_empty() {
            fds.iter().map(OwnedFd::try_clone).collect::<std::io::Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        let id = self.next_id;
        self.next_id += 1;
        let msg = ToWorker::Call {
            id,
            task,
            args: ByteBuf::from(std::mem::take(&mut job.args)),
            ends: Ends(std::mem::take(&mut job.ends)),
        };
        let fed = match &mut self.ring {
            Some(ring) => ring.send(&mut self.ch, &msg, fds),
            None => self.ch.feed_with(&msg, fds),
        };
        if let ToWorker::Call { args, ends, .. } = msg {
            job.args = args.into_vec();
            job.ends = ends.0;
        }
        if let Err(e) = fed {
            // This job cannot be sent (callers check sizes first, so: too
            // many fds): it fails, the worker is fine.
            self.last_task = None;
            let why = match e {
                Error::FrameTooLarge { len, max } => ChunkError::ArgumentsTooLarge { len, max },
                other => ChunkError::unsendable(other),
            };
            self.fail(job, why);
            return Ok(());
        }
        if self.in_flight.is_empty() {
            self.head_since = Instant::now();
        }
        self.calls += 1;
        self.items += job.len();
        self.shared.stats.in_flight.fetch_add(job.len() as u64, Ordering::Relaxed);
        let span = tracing::debug_span!("pool_call", call = id, batch = job.batch, pid = self.pid, items = job.len());
        span.in_scope(|| tracing::trace!("sent"));
        self.in_flight.push_back(Sent { id, job, done: 0, fds: keep, span });
        Ok(())
    }

    /// Delivers a reply (all or, with `more`, the next part of the head
    /// call's items) through `out`; `false` when it answers no call we made.
    fn on_done(&mut self, id: u64, done: ChunkDone, more: bool, out: &mut Deliveries) -> bool {
        let Some(head) = self.in_flight.front_mut().filter(|s| s.id == id) else {
            tracing::warn!(pid = self.pid, call = id, "a pool worker answered a call it was not given");
            return false;
        };
        let left = head.job.len() - head.done;
        let n = done.ends.len();
        if (more && n >= left) || (!more && n != left) {
            tracing::warn!(pid = self.pid, call = id, n, left, "a pool worker miscounted its results");
            return false;
        }
        let base = head.job.base + head.done;
        head.done += n;
        let now = Instant::now();
        // The worker's pace per item, smoothed.
        let took = (now - self.head_since) / u32::try_from(n.max(1)).unwrap_or(u32::MAX);
        self.per_item = Some(self.per_item.map_or(took, |avg| (avg * 3 + took) / 4));
        self.head_since = now;
        self.items -= n;
        let failed = done.failures.len() as u64;
        let stats = &self.shared.stats;
        stats.in_flight.fetch_sub(n as u64, Ordering::Relaxed);
        stats.failed.fetch_add(failed, Ordering::Relaxed);
        stats.completed.fetch_add(n as u64 - failed.min(n as u64), Ordering::Relaxed);
        if n > 0 {
            out.add(&head.job.of, Delivery { base, len: n, outcome: Ok(done) });
        }
        if !more {
            let Sent { span, .. } = self.in_flight.pop_front().expect("checked above");
            span.in_scope(|| tracing::debug!(failed, "done"));
            self.check_memory();
        }
        true
    }

    fn fail(&mut self, job: Job, why: ChunkError) {
        let n = job.len() as u64;
        self.shared.stats.failed.fetch_add(n, Ordering::Relaxed);
        let _ = job.sink().send(Delivery { base: job.base, len: job.len(), outcome: Err(why) });
    }

    fn unmark_idle(&mut self) {
        if self.idle {
            self.shared.lock().idle -= 1;
            self.idle = false;
        }
    }

    /// Learns how the worker ended, then reads everything it managed to
    /// send.
    ///
    /// The exit comes first: once the worker is gone nothing more can reach
    /// its socket, so the drain reads every reply in it and stops at the end
    /// of the stream; no clock decides when its last words are over (a 100
    /// ms cut-off per reply here dropped a reply already sent, on a loaded
    /// machine, and its finished item failed as lost). Nothing is written:
    /// the calls still queued for it go back to the queue.
    async fn drain_and_reap(&mut self) -> ChunkError {
        self.unmark_idle();
        let why = self.reap(EXIT_WAIT).await;
        let deadline = tokio::time::Instant::now() + LAST_WORDS;
        loop {
            // Whole replies on the link first (their fds may still be on
            // the socket: then read it and look again).
            if self.ring_replies().is_err() {
                break;
            }
            match tokio::time::timeout_at(deadline, self.ch.recv_raw::<FromWorker>()).await {
                Ok(Ok((FromWorker::Done { id, data, ends, failures, more }, fds))) if self.ring.is_none() => {
                    let done = ChunkDone { data: data.into_vec(), ends: ends.0, failures, fds };
                    if !self.on_done(id, done, more, &mut Deliveries::default()) {
                        break;
                    }
                }
                Ok(Ok((FromWorker::Fds, fds))) if self.ring.is_some() => {
                    if self.ring.as_mut().is_some_and(|r| r.add_fds(fds).is_err()) {
                        break;
                    }
                }
                _ => break,
            }
        }
        why
    }

    /// Waits for the worker's exit, killing it if it takes longer than `wait`.
    async fn reap(&mut self, wait: Duration) -> ChunkError {
        let status = |s: &Option<ExitState>, pid| match s {
            Some(ExitState::Exited(status)) => ChunkError::WorkerLost { pid, status: *status },
            _ => ChunkError::ForkserverLost { pid },
        };
        let pid = self.pid;
        if let Ok(Ok(s)) = tokio::time::timeout(wait, self.exit.wait_for(Option::is_some)).await {
            return status(&s, pid);
        }
        let _ = supervisor::signal_child(self.spawn_id, nix::libc::SIGKILL);
        match self.exit.wait_for(Option::is_some).await {
            Ok(s) => status(&s, pid),
            Err(_) => ChunkError::ForkserverLost { pid },
        }
    }

    /// The worker died or broke its channel: its running call fails (or is
    /// retried), the calls it never started go back to the queue.
    async fn lost(mut self) -> End {
        let why = self.drain_and_reap().await;
        if *self.shared.phase.borrow() == Phase::Terminating {
            return self.fail_all(ChunkError::Terminated);
        }
        tracing::warn!(pid = self.pid, reason = %why.to_error(), "pool worker lost");
        // Counted before the failures are delivered, so a caller sees it.
        self.shared.stats.replaced.fetch_add(1, Ordering::Relaxed);
        if let Some(head) = self.in_flight.front()
            && self.started(head.id)
        {
            let head = self.in_flight.pop_front().expect("front was Some");
            self.retry_or_fail(head, why);
        }
        // What the worker never started goes back, whatever `retries` says:
        // the task did not fail, the infrastructure did.
        self.requeue_rest();
        End::Replace
    }

    /// A partial frame stopped growing: the worker is stuck mid-reply.
    async fn stalled(self) -> End {
        tracing::warn!(pid = self.pid, partial = self.stall.0, "a pool worker stopped mid-frame; replacing it");
        let _ = supervisor::signal_child(self.spawn_id, nix::libc::SIGKILL);
        self.lost().await
    }

    fn retry_or_fail(&mut self, head: Sent, why: ChunkError) {
        let Sent { mut job, done, fds, span, .. } = head;
        span.in_scope(|| tracing::debug!(reason = %why.to_error(), "lost its worker"));
        job.drop_front(done);
        self.items -= job.len();
        self.shared.stats.in_flight.fetch_sub(job.len() as u64, Ordering::Relaxed);
        if job.attempts < self.shared.config.retries
            && matches!(why, ChunkError::WorkerLost { .. } | ChunkError::ForkserverLost { .. })
        {
            job.attempts += 1;
            job.fds = fds;
            tracing::info!(batch = job.batch, attempt = job.attempts, "retrying a call after its worker was lost");
            self.shared.requeue(std::iter::once(job));
        } else {
            self.fail(job, why);
        }
    }

    fn requeue_rest(&mut self) {
        let rest: Vec<Job> = self
            .in_flight
            .drain(..)
            .map(|Sent { mut job, done, fds, .. }| {
                job.drop_front(done);
                job.fds = fds;
                job
            })
            .collect();
        let n: usize = rest.iter().map(Job::len).sum();
        self.items -= n;
        self.shared.stats.in_flight.fetch_sub(n as u64, Ordering::Relaxed);
        self.shared.requeue(rest.into_iter());
    }

    fn fail_all(&mut self, why: ChunkError) -> End {
        while let Some(Sent { mut job, done, .. }) = self.in_flight.pop_front() {
            job.drop_front(done);
            self.shared.stats.in_flight.fetch_sub(job.len() as u64, Ordering::Relaxed);
            self.fail(job, why.clone());
        }
        self.items = 0;
        End::Stop
    }

    /// The call at the head ran past its timeout: stop the worker (SIGTERM,
    /// grace, SIGKILL); that call fails with `Timeout`, the others go back.
    async fn timed_out(mut self) -> End {
        self.unmark_idle();
        tracing::warn!(pid = self.pid, "a pool task timed out; stopping its worker");
        let _ = supervisor::signal_child(self.spawn_id, nix::libc::SIGTERM);
        let _ = self.reap(self.shared.config.timeout_grace).await;
        self.shared.stats.replaced.fetch_add(1, Ordering::Relaxed);
        // The item running fails; those reported are kept (delivered
        // already); those after it never started and go back to the queue.
        if let Some(head) = self.in_flight.front_mut()
            && head.job.len() - head.done > 1
        {
            let mut rest = Job {
                batch: head.job.batch,
                base: head.job.base,
                of: Arc::clone(&head.job.of),
                args: head.job.args.clone(),
                ends: head.job.ends.clone(),
                fds: head.fds.iter().map(OwnedFd::try_clone).collect::<std::io::Result<Vec<_>>>().unwrap_or_default(),
                timeout: head.job.timeout,
                attempts: head.job.attempts,
                chunk: usize::MAX,
                cut: 0,
            };
            rest.drop_front(head.done + 1);
            let n = rest.len();
            head.job.ends.truncate(head.done + 1);
            self.items -= n;
            self.shared.stats.in_flight.fetch_sub(n as u64, Ordering::Relaxed);
            self.shared.requeue(std::iter::once(rest));
        }
        if let Some(head) = self.in_flight.pop_front() {
            self.retry_or_fail(head, ChunkError::Timeout);
        }
        self.requeue_rest();
        End::Replace
    }

    /// The caller of the running call went away (`stop_cancelled`): stop
    /// the worker; the calls it had not started go back to the queue.
    async fn cancelled(mut self) -> End {
        self.unmark_idle();
        tracing::debug!(pid = self.pid, "the running call was cancelled; stopping its worker");
        let _ = supervisor::signal_child(self.spawn_id, nix::libc::SIGTERM);
        let _ = self.reap(self.shared.config.timeout_grace).await;
        self.shared.stats.replaced.fetch_add(1, Ordering::Relaxed);
        if let Some(head) = self.in_flight.pop_front() {
            let n = head.job.len() - head.done;
            self.items -= n;
            self.shared.stats.in_flight.fetch_sub(n as u64, Ordering::Relaxed);
        }
        self.requeue_rest();
        End::Replace
    }

    /// Terminate: stop the worker now; what it held fails.
    async fn stop(mut self, why: ChunkError) -> End {
        self.unmark_idle();
        let _ = supervisor::signal_child(self.spawn_id, nix::libc::SIGTERM);
        let _ = self.reap(self.shared.config.timeout_grace).await;
        self.fail_all(why)
    }

    /// An orderly goodbye: closing the channel makes the worker exit.
    async fn retire(self, end: End) -> End {
        let Owner { shared, spawn_id, ch, mut exit, idle, .. } = self;
        if idle {
            shared.lock().idle -= 1;
        }
        if matches!(end, End::Replace) {
            shared.stats.replaced.fetch_add(1, Ordering::Relaxed);
        }
        drop(ch);
        if tokio::time::timeout(EXIT_WAIT, exit.wait_for(Option::is_some)).await.is_err() {
            let _ = supervisor::signal_child(spawn_id, nix::libc::SIGKILL);
            let _ = exit.wait_for(Option::is_some).await;
        }
        end
    }
}

/// The deliveries of replies read together: the results of consecutive
/// items of one submission go to its caller as one delivery (one channel
/// send and one wake-up of its task for a run of chunk-1 calls, where each
/// call was one). Whatever is held goes when this is dropped.
///
/// Only well-formed replies are held or merged (boundaries in order and
/// inside the results, failures in order and inside the reply): a broken
/// worker's bad boundary, shifted into a merged delivery, would otherwise
/// reach into the results of the replies merged after it. A reply that is
/// not goes alone, as it came.
#[derive(Default)]
struct Deliveries {
    held: Option<(Arc<Submission>, Delivery)>,
}

/// Replies are merged up to this many bytes of results (a copy each).
const MERGE_BYTES: usize = 64 << 10;

impl Deliveries {
    fn add(&mut self, of: &Arc<Submission>, d: Delivery) {
        // The cheap tests first: a large reply is never scanned.
        let mergeable = match &d.outcome {
            Ok(done) => done.fds.is_empty() && done.data.len() < MERGE_BYTES && well_formed(done, d.len),
            Err(_) => false,
        };
        if !mergeable {
            self.send();
            let _ = of.sink.send(d);
            return;
        }
        if let Some((held_of, held)) = &mut self.held
            && Arc::ptr_eq(held_of, of)
            && held.base + held.len == d.base
            && let (Ok(a), Ok(b)) = (&mut held.outcome, &d.outcome)
            && a.data.len() + b.data.len() <= MERGE_BYTES
            && let Ok(b) = d.outcome
        {
            let (offset, first) = (a.data.len() as u32, held.len as u32);
            a.data.extend_from_slice(&b.data);
            a.ends.extend(b.ends.iter().map(|e| e + offset));
            a.failures.extend(b.failures.into_iter().map(|(i, f)| (i + first, f)));
            held.len += d.len;
            return;
        }
        self.send();
        self.held = Some((Arc::clone(of), d));
    }

    fn send(&mut self) {
        if let Some((of, d)) = self.held.take() {
            let _ = of.sink.send(d);
        }
    }
}

/// Whether a reply of `len` items has its boundaries in order and inside its
/// results, and its failures in order and inside the reply.
fn well_formed(done: &ChunkDone, len: usize) -> bool {
    done.ends.len() == len
        && done.ends.windows(2).all(|w| w[0] <= w[1])
        && done.ends.last().is_none_or(|&e| e as usize <= done.data.len())
        && done.failures.windows(2).all(|w| w[0].0 < w[1].0)
        && done.failures.last().is_none_or(|f| (f.0 as usize) < len)
}

impl Drop for Deliveries {
    fn drop(&mut self) {
        self.send();
    }
}

/// Resolves when the caller of the running call dropped its handle.
async fn head_cancelled(head: Option<&Sent>) {
    match head {
        Some(s) => s.job.sink().closed().await,
        None => std::future::pending().await,
    }
}

/// Sleeps on the link until the worker rings for `want` (never without one).
async fn ring_sleep(ring: Option<&mut ParentRing>, want: Option<shmcall::Want>) -> std::io::Result<()> {
    match (ring, want) {
        (Some(r), Some(want)) => r.link().sleep(want).await,
        _ => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tokio::sync::mpsc;

    use super::*;
    use crate::pool::queue::decode_chunk;
    use crate::wire::Failure;

    /// Items `base..base + values.len()` as one reply; `failed` (index in
    /// the reply) failed with a panic.
    fn reply(base: usize, values: &[u64], failed: Option<u32>) -> Delivery {
        let (mut data, mut ends, mut failures) = (Vec::new(), Vec::new(), Vec::new());
        for (i, v) in values.iter().enumerate() {
            if failed == Some(i as u32) {
                failures.push((i as u32, Failure::Panicked { message: "boom".into(), location: "here".into() }));
            } else {
                rmp_serde::encode::write(&mut data, v).expect("encode");
            }
            ends.push(data.len() as u32);
        }
        Delivery { base, len: values.len(), outcome: Ok(ChunkDone { data, ends, failures, fds: Vec::new() }) }
    }

    /// `d` with its results changed by `f`.
    fn edited(mut d: Delivery, f: impl FnOnce(&mut ChunkDone)) -> Delivery {
        if let Ok(done) = &mut d.outcome {
            f(done);
        }
        d
    }

    /// Everything delivered so far, in order.
    fn delivered(rx: &mut mpsc::UnboundedReceiver<Delivery>) -> Vec<Delivery> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    fn submission() -> (Arc<Submission>, mpsc::UnboundedReceiver<Delivery>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = Arc::new(crate::wire::TaskRef { name: "t".into(), signature: "s".into() });
        (Submission::new(task, tx), rx)
    }

    #[test]
    fn consecutive_replies_of_one_submission_go_as_one_delivery() {
        let (a, mut rx_a) = submission();
        let (b, mut rx_b) = submission();
        let mut out = Deliveries::default();
        out.add(&a, reply(0, &[10, 11], None));
        out.add(&a, reply(2, &[12], Some(0)));
        out.add(&a, reply(3, &[13, 14], Some(1)));
        assert!(rx_a.try_recv().is_err(), "held while the run goes on");
        // Not the next item: the run so far goes, this one is held.
        out.add(&a, reply(7, &[17], None));
        // Another submission's reply: not merged with `a`'s.
        out.add(&b, reply(8, &[18], None));
        drop(out);

        let run = rx_a.try_recv().expect("the merged run");
        assert_eq!((run.base, run.len), (0, 5));
        let items: Vec<Result<u64>> = decode_chunk(run, &mut HashMap::new());
        let shape: Vec<Option<u64>> = items.iter().map(|r| r.as_ref().ok().copied()).collect();
        assert_eq!(shape, [Some(10), Some(11), None, Some(13), None]);
        assert!(matches!(&items[2], Err(Error::TaskPanicked(p)) if p.message == "boom"));
        assert!(matches!(&items[4], Err(Error::TaskPanicked(_))));
        let next = rx_a.try_recv().expect("the reply after the gap");
        assert_eq!((next.base, next.len), (7, 1));
        assert!(rx_a.try_recv().is_err());
        let other = rx_b.try_recv().expect("the other submission's reply");
        assert_eq!((other.base, other.len), (8, 1));
    }

    #[test]
    fn a_malformed_reply_goes_alone_and_spoils_no_other() {
        let (a, mut rx) = submission();
        let mut out = Deliveries::default();
        out.add(&a, reply(0, &[1], None));
        // Its boundary points past its results.
        out.add(&a, edited(reply(1, &[2], None), |done| done.ends[0] = u32::MAX));
        // A failure index outside its reply.
        out.add(&a, edited(reply(2, &[3], None), |done| done.failures.push((7, Failure::Decode("x".into())))));
        out.add(&a, reply(3, &[4], None));
        out.add(&a, reply(4, &[5], None));
        drop(out);
        let got = delivered(&mut rx);
        let shape: Vec<(usize, usize)> = got.iter().map(|d| (d.base, d.len)).collect();
        assert_eq!(shape, [(0, 1), (1, 1), (2, 1), (3, 2)]);
        let last: Vec<Result<u64>> = decode_chunk(got.into_iter().last().expect("four"), &mut HashMap::new());
        assert_eq!(last.into_iter().map(|r| r.expect("ok")).collect::<Vec<_>>(), [4, 5]);
    }

    #[test]
    fn replies_with_fds_or_large_results_are_not_merged() {
        let (a, mut rx) = submission();
        let mut out = Deliveries::default();
        out.add(&a, reply(0, &[1], None));
        let fd = || std::fs::File::open("/dev/null").expect("open").into();
        out.add(&a, edited(reply(1, &[2], None), |done| done.fds.push(fd())));
        out.add(&a, reply(2, &[3], None));
        // Results past the bound, after a held reply: not merged into it,
        // and not held for the next one either.
        let large = edited(reply(3, &[4], None), |done| {
            done.data.resize(MERGE_BYTES, 0);
            done.ends[0] = MERGE_BYTES as u32;
        });
        out.add(&a, large);
        out.add(&a, reply(4, &[5], None));
        drop(out);
        let got: Vec<(usize, usize)> = delivered(&mut rx).iter().map(|d| (d.base, d.len)).collect();
        assert_eq!(got, [(0, 1), (1, 1), (2, 1), (3, 1), (4, 1)]);
    }
}
