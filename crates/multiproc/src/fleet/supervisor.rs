//! `Supervisor`: an actor task that owns a list of children (processes,
//! pools, other supervisors), restarts them by their spec and its strategy,
//! gives up past its restart intensity, and stops them in reverse order.
//!
//! The handle is a cheap `Clone`; its verbs queue a [`Control`] message and
//! await the actor's answer. The actor's loop waits on three things: a
//! control message, a note that a child ended, the next due restart.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;

use super::child::{self, Ended, ExitCause, Running};
use super::spec::{ChildSpec, Restart, Strategy};
use crate::error::{Error, Result};
use crate::pool::Pool;

/// Something that happened to a supervisor's child ([`Supervisor::subscribe`]);
/// each is also a `tracing` event.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SupervisorEvent {
    /// The child is running (and ready: a process accepted its target).
    Started {
        /// The child's name in its [`ChildSpec`].
        child: String,
        /// Its process id; `None` for a pool or supervisor child.
        pid: Option<u32>,
        /// When it started.
        at: Instant,
    },
    /// The child ended, and why.
    Exited {
        /// The child's name in its [`ChildSpec`].
        child: String,
        /// Its process id; `None` for a pool or supervisor child.
        pid: Option<u32>,
        /// Why it ended.
        cause: ExitCause,
        /// When its end was seen.
        at: Instant,
    },
    /// The child will start again after `delay` (back-off with jitter).
    Restarting {
        /// The child's name in its [`ChildSpec`].
        child: String,
        /// How long until the restart.
        delay: Duration,
        /// When the restart was decided.
        at: Instant,
    },
    /// The restart intensity was exceeded: every child is being stopped.
    GaveUp {
        /// When the supervisor gave up.
        at: Instant,
    },
}

/// A snapshot of one child ([`Supervisor::stats`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ChildStats {
    /// The child's name in its [`ChildSpec`].
    pub name: String,
    /// Its current process id; `None` while it is down, or for a pool or
    /// supervisor child.
    pub pid: Option<u32>,
    /// Whether it is running now.
    pub running: bool,
    /// Times it was restarted after a failure or exit (recycles not counted).
    pub restarts: u64,
    /// Times it was recycled (age, memory, its own request).
    pub recycles: u64,
    /// When its current run started; `None` while it is down.
    pub started: Option<Instant>,
}

/// A snapshot of a supervisor ([`Supervisor::stats`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SupervisorStats {
    /// In start order.
    pub children: Vec<ChildStats>,
    /// Restarts of all children together (see [`ChildStats::restarts`]).
    pub restarts: u64,
    /// Recycles of all children together.
    pub recycles: u64,
}

/// How a supervisor's run ended, as every handle sees it.
#[derive(Debug, Clone)]
enum Outcome {
    Stopped,
    GaveUp { name: String, max: u32, within: Duration },
}

enum Control {
    Add(Box<ChildSpec>, oneshot::Sender<Result<()>>),
    Remove(String, oneshot::Sender<Result<()>>),
    Shutdown(Duration),
    Stats(oneshot::Sender<SupervisorStats>),
    Pool(String, oneshot::Sender<Option<Pool>>),
    Supervisor(String, oneshot::Sender<Option<Supervisor>>),
}

/// An OTP-style supervisor of long-running children: processes running a
/// registered task or a `Target`, [`Pool`]s, and other supervisors.
///
/// # Theory of operation
///
/// Children start in the order given, each once the previous one is ready,
/// and stop in the reverse order. When one ends, its [`Restart`] type says
/// whether it starts again and the [`Strategy`] says which others go with
/// it; a restart waits a back-off (doubling from `backoff_min` to
/// `backoff_max`, each delay drawn uniformly from its upper half) that is
/// reset once a child has run for four times `backoff_max`. More than
/// `max_restarts` restarts within `within` and the supervisor stops every
/// child and ends with [`Error::RestartIntensity`] (a parent supervisor then
/// treats it as a failed child).
///
/// Stopping a child is cooperative first: it is asked to stop
/// ([`stop_requested`](crate::stop_requested)), sent SIGTERM after half its
/// grace period and SIGKILL at the end of it. Recycling (age, memory, the
/// child's own request) is such an orderly stop followed at once by a start,
/// and counts neither as a failure nor towards the intensity.
///
/// ```no_run
/// # use std::time::Duration;
/// # use multiproc::{ChildSpec, Restart, Strategy, Supervisor};
/// #[multiproc::task]
/// fn worker(n: u32) {
///     while !multiproc::stop_requested() {
///         multiproc::heartbeat();
///         std::thread::sleep(Duration::from_millis(100));
///     }
/// }
///
/// # async fn demo() -> multiproc::Result<()> {
/// let sup = Supervisor::builder()
///     .strategy(Strategy::OneForOne)
///     .intensity(5, Duration::from_secs(10))
///     .child(ChildSpec::task("worker-1", worker, (1,)).heartbeat(Duration::from_secs(5)))
///     .child(ChildSpec::task("worker-2", worker, (2,)).restart(Restart::Transient))
///     .start()
///     .await?;
/// // Runs until SIGTERM/SIGINT, then stops every child in order.
/// sup.run_until_signal(Duration::from_secs(10)).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Supervisor {
    ctl: mpsc::UnboundedSender<Control>,
    outcome: watch::Receiver<Option<Outcome>>,
    events: broadcast::Sender<SupervisorEvent>,
    /// Subscribed at start, handed to the first `subscribe` call so that
    /// the events of the first moments (a child that exits at once) are not lost.
    first: Arc<std::sync::Mutex<Option<broadcast::Receiver<SupervisorEvent>>>>,
    name: Arc<str>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor").field("name", &self.name).finish_non_exhaustive()
    }
}

/// Configures a [`Supervisor`]; see [`Supervisor::builder`].
#[derive(Debug)]
pub struct SupervisorBuilder {
    name: String,
    strategy: Strategy,
    max_restarts: u32,
    within: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
    children: Vec<ChildSpec>,
}

impl Default for SupervisorBuilder {
    fn default() -> Self {
        Self {
            name: "supervisor".into(),
            strategy: Strategy::OneForOne,
            max_restarts: 3,
            within: Duration::from_secs(5),
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_secs(5),
            children: Vec::new(),
        }
    }
}

impl SupervisorBuilder {
    /// Its name in events, logs and errors.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Which children restart together; [`Strategy::OneForOne`] by default.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// At most `max_restarts` restarts within `within` (OTP's intensity
    /// and period; 3 in 5 s by default), then give up.
    pub fn intensity(mut self, max_restarts: u32, within: Duration) -> Self {
        self.max_restarts = max_restarts;
        self.within = within;
        self
    }

    /// Back-off between restarts of a failing child: from `min`, doubling
    /// up to `max` (10 ms and 5 s by default), with jitter.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max.max(min);
        self
    }

    /// A child, started after those added before it.
    pub fn child(mut self, spec: ChildSpec) -> Self {
        self.children.push(spec);
        self
    }

    /// Starts every child in order; if one cannot start, those already
    /// started are stopped and its error is returned.
    pub async fn start(self) -> Result<Supervisor> {
        let mut names = std::collections::HashSet::new();
        if let Some(dup) = self.children.iter().find(|c| !names.insert(c.name.clone())) {
            return Err(Error::InvalidArgument(format!("two children are named {:?}", dup.name)));
        }
        let (ctl, control) = mpsc::unbounded_channel();
        let (notes_tx, notes) = mpsc::unbounded_channel();
        let (outcome_tx, outcome) = watch::channel(None);
        let (events, _) = broadcast::channel(1024);
        let mut actor = Actor {
            name: self.name.clone(),
            strategy: self.strategy,
            max_restarts: self.max_restarts,
            within: self.within,
            backoff_min: self.backoff_min,
            backoff_max: self.backoff_max,
            children: Vec::new(),
            next_id: 0,
            restarts_log: Vec::new(),
            restarts: 0,
            recycles: 0,
            notes_tx,
            events: events.clone(),
            rng: seed(),
        };
        for spec in self.children {
            if let Err(e) = actor.add(spec).await {
                actor.stop_all(None).await;
                return Err(e);
            }
        }
        tracing::info!(supervisor = %self.name, children = actor.children.len(), "supervisor started");
        // Everything from here on reaches the first `subscribe` call.
        let first = events.subscribe();
        tokio::spawn(actor.run(control, notes, outcome_tx));
        Ok(Supervisor {
            ctl,
            outcome,
            events,
            first: Arc::new(std::sync::Mutex::new(Some(first))),
            name: self.name.into(),
        })
    }
}

impl Supervisor {
    /// Strategy, intensity, back-off and the first children.
    pub fn builder() -> SupervisorBuilder {
        SupervisorBuilder::default()
    }

    /// Child events. The first call (on any clone) receives every event
    /// since `start` returned, so a child that exits at once is seen; later
    /// calls receive events from the moment of the call. A lagging receiver
    /// loses the oldest (at most 1024 are kept).
    pub fn subscribe(&self) -> broadcast::Receiver<SupervisorEvent> {
        let first = self.first.lock().map(|mut f| f.take()).unwrap_or_default();
        first.unwrap_or_else(|| self.events.subscribe())
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Control) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.ctl.send(make(tx)).map_err(|_| Error::Closed("supervisor"))?;
        rx.await.map_err(|_| Error::Closed("supervisor"))
    }

    /// Starts a child now, after the existing ones (an error if the name is
    /// taken or it cannot start; it is not added then).
    pub async fn add_child(&self, spec: ChildSpec) -> Result<()> {
        self.ask(|tx| Control::Add(Box::new(spec), tx)).await?
    }

    /// Stops a child in order and forgets it.
    pub async fn remove_child(&self, name: &str) -> Result<()> {
        self.ask(|tx| Control::Remove(name.to_owned(), tx)).await?
    }

    /// Counters and the children, in start order.
    pub async fn stats(&self) -> Result<SupervisorStats> {
        self.ask(Control::Stats).await
    }

    /// A clone of the pool started by the child spec `name`, while it runs.
    pub async fn pool(&self, name: &str) -> Option<Pool> {
        self.ask(|tx| Control::Pool(name.to_owned(), tx)).await.ok().flatten()
    }

    /// The nested supervisor started by the child spec `name`, while it runs.
    pub async fn supervisor(&self, name: &str) -> Option<Supervisor> {
        self.ask(|tx| Control::Supervisor(name.to_owned(), tx)).await.ok().flatten()
    }

    /// Stops every child in reverse start order, all within `grace` (each
    /// gets the smaller of its own grace and what is left), then ends.
    /// Returns how the supervisor ended (an error if it had given up).
    pub async fn shutdown(&self, grace: Duration) -> Result<()> {
        let _ = self.ctl.send(Control::Shutdown(grace));
        self.wait().await
    }

    /// Waits until the supervisor ends: `Ok` after a shutdown,
    /// [`Error::RestartIntensity`] when it gave up.
    pub async fn wait(&self) -> Result<()> {
        let mut outcome = self.outcome.clone();
        let ended = outcome.wait_for(Option::is_some).await.map_err(|_| Error::Closed("supervisor"))?.clone();
        match ended {
            Some(Outcome::GaveUp { name, max, within }) => {
                Err(Error::RestartIntensity(Box::new(crate::RestartLimit { name, max, within })))
            }
            _ => Ok(()),
        }
    }

    /// Runs until SIGTERM or SIGINT ([`shutdown_on_signals`](crate::shutdown_on_signals),
    /// listening from this call on), then shuts down within `grace`; or
    /// until the supervisor gives up.
    pub fn run_until_signal(&self, grace: Duration) -> impl Future<Output = Result<()>> + Send + 'static {
        let signal = crate::shutdown::shutdown_on_signals();
        let sup = self.clone();
        async move {
            tokio::select! {
                r = sup.wait() => r,
                signal = signal => {
                    tracing::info!(supervisor = %sup.name, signal, "signal received; shutting down");
                    sup.shutdown(grace).await
                }
            }
        }
    }
}

/// One child as the actor holds it.
struct Slot {
    id: u64,
    generation: u64,
    spec: ChildSpec,
    running: Option<Running>,
    /// When it is due to start again.
    restart_at: Option<Instant>,
    /// Failures in a row (for the back-off).
    failures: u32,
    restarts: u64,
    recycles: u64,
    /// A temporary child that ended: removed at the end of the turn.
    gone: bool,
}

struct Actor {
    name: String,
    strategy: Strategy,
    max_restarts: u32,
    within: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
    children: Vec<Slot>,
    next_id: u64,
    restarts_log: Vec<Instant>,
    restarts: u64,
    recycles: u64,
    notes_tx: mpsc::UnboundedSender<Ended>,
    events: broadcast::Sender<SupervisorEvent>,
    rng: u64,
}

impl Drop for Actor {
    /// The actor is gone (its runtime shut down, or it ended): no process it
    /// started may outlive it.
    fn drop(&mut self) {
        for slot in &self.children {
            if let Some(id) = slot.running.as_ref().and_then(|r| r.spawn_id) {
                let _ = crate::tree::supervisor::signal_child(id, nix::libc::SIGKILL);
            }
        }
    }
}

impl Actor {
    async fn run(
        mut self,
        mut control: mpsc::UnboundedReceiver<Control>,
        mut notes: mpsc::UnboundedReceiver<Ended>,
        outcome: watch::Sender<Option<Outcome>>,
    ) {
        let result = loop {
            let next = self.children.iter().filter_map(|c| c.restart_at).min();
            tokio::select! {
                c = control.recv() => match c {
                    Some(Control::Shutdown(grace)) => {
                        self.stop_all(Some(Instant::now() + grace)).await;
                        break Outcome::Stopped;
                    }
                    Some(c) => self.control(c).await,
                    // Every handle is gone: nobody can stop it later.
                    None => {
                        self.stop_all(Some(Instant::now())).await;
                        break Outcome::Stopped;
                    }
                },
                Some(note) = notes.recv() => {
                    if let Err(gave_up) = self.ended(note).await {
                        break gave_up;
                    }
                }
                () = sleep_until(next) => {
                    if let Err(gave_up) = self.start_due().await {
                        break gave_up;
                    }
                }
            }
        };
        if let Outcome::GaveUp { .. } = result {
            self.stop_all(None).await;
        }
        tracing::info!(supervisor = %self.name, outcome = ?result, "supervisor ended");
        let _ = outcome.send(Some(result));
    }

    async fn control(&mut self, c: Control) {
        match c {
            Control::Add(spec, reply) => {
                let r = if self.children.iter().any(|s| s.spec.name == spec.name) {
                    Err(Error::InvalidArgument(format!("a child is already named {:?}", spec.name)))
                } else {
                    self.add(*spec).await
                };
                let _ = reply.send(r);
            }
            Control::Remove(name, reply) => {
                let r = match self.children.iter().position(|s| s.spec.name == name) {
                    Some(i) => {
                        self.stop_one(i, None).await;
                        self.children.remove(i);
                        Ok(())
                    }
                    None => Err(Error::NoSuchChild(name)),
                };
                let _ = reply.send(r);
            }
            Control::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
            Control::Pool(name, reply) => {
                let pool = self.find(&name).and_then(|s| s.running.as_ref()?.pool.clone());
                let _ = reply.send(pool);
            }
            Control::Supervisor(name, reply) => {
                let sup = self.find(&name).and_then(|s| s.running.as_ref()?.supervisor.clone());
                let _ = reply.send(sup);
            }
            // Taken by the loop before it gets here.
            Control::Shutdown(_) => {}
        }
    }

    fn find(&self, name: &str) -> Option<&Slot> {
        self.children.iter().find(|s| s.spec.name == name)
    }

    fn stats(&self) -> SupervisorStats {
        SupervisorStats {
            children: self
                .children
                .iter()
                .map(|s| ChildStats {
                    name: s.spec.name.clone(),
                    pid: s.running.as_ref().and_then(|r| r.pid),
                    running: s.running.is_some(),
                    restarts: s.restarts,
                    recycles: s.recycles,
                    started: s.running.as_ref().map(|r| r.started),
                })
                .collect(),
            restarts: self.restarts,
            recycles: self.recycles,
        }
    }

    fn event(&self, e: SupervisorEvent) {
        match &e {
            SupervisorEvent::Started { child, pid, .. } => {
                tracing::info!(supervisor = %self.name, child, pid, "child started")
            }
            SupervisorEvent::Exited { child, pid, cause, .. } => {
                tracing::info!(supervisor = %self.name, child, pid, ?cause, "child exited")
            }
            SupervisorEvent::Restarting { child, delay, .. } => {
                tracing::info!(supervisor = %self.name, child, ?delay, "child restarting")
            }
            SupervisorEvent::GaveUp { .. } => {
                tracing::error!(supervisor = %self.name, max = self.max_restarts, within = ?self.within, "restart intensity exceeded; giving up")
            }
        }
        let _ = self.events.send(e);
    }

    /// Adds and starts a child (initial children, `add_child`).
    async fn add(&mut self, spec: ChildSpec) -> Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        let note = Ended { id, generation: 0 };
        let running = child::start(&spec, note, self.notes_tx.clone()).await?;
        let pid = running.pid;
        self.children.push(Slot {
            id,
            generation: 0,
            spec,
            running: Some(running),
            restart_at: None,
            failures: 0,
            restarts: 0,
            recycles: 0,
            gone: false,
        });
        let child = self.children.last().expect("just pushed").spec.name.clone();
        self.event(SupervisorEvent::Started { child, pid, at: Instant::now() });
        Ok(())
    }

    /// Stops child `i` in order (its own grace, bounded by `deadline`).
    async fn stop_one(&mut self, i: usize, deadline: Option<Instant>) {
        let slot = &mut self.children[i];
        slot.restart_at = None;
        let Some(mut running) = slot.running.take() else { return };
        let grace =
            deadline.map_or(slot.spec.grace, |d| slot.spec.grace.min(d.saturating_duration_since(Instant::now())));
        let cause = running.stop(grace).await;
        let (child, pid) = (slot.spec.name.clone(), running.pid);
        self.event(SupervisorEvent::Exited { child, pid, cause, at: Instant::now() });
    }

    /// Stops every child, last started first.
    async fn stop_all(&mut self, deadline: Option<Instant>) {
        for i in (0..self.children.len()).rev() {
            self.stop_one(i, deadline).await;
        }
    }

    /// A child's monitor reported its end.
    async fn ended(&mut self, note: Ended) -> Result<(), Outcome> {
        let Some(i) = self.children.iter().position(|s| s.id == note.id && s.generation == note.generation) else {
            return Ok(());
        };
        let Some(mut running) = self.children[i].running.take() else {
            // Stopped by us already; its end was reported then.
            return Ok(());
        };
        let cause = running.wait().await;
        let now = Instant::now();
        let ran = now - running.started;
        let slot = &mut self.children[i];
        let (child, pid) = (slot.spec.name.clone(), running.pid);
        drop(running);
        self.event(SupervisorEvent::Exited { child: child.clone(), pid, cause: cause.clone(), at: now });
        let scheduled = self.schedule_after_exit(i, &cause, ran);
        if scheduled.is_ok() {
            // The rest of its group stops now (last started first) and
            // starts again with it.
            for j in (0..self.children.len()).rev() {
                let at = self.children[j].restart_at;
                if at.is_some() && self.children[j].running.is_some() {
                    self.stop_one(j, None).await;
                    self.children[j].restart_at = at;
                }
            }
        }
        self.children.retain(|s| !s.gone);
        scheduled
    }

    /// Decides what follows child `i`'s end.
    fn schedule_after_exit(&mut self, i: usize, cause: &ExitCause, ran: Duration) -> Result<(), Outcome> {
        let now = Instant::now();
        if let ExitCause::Recycled(_) = cause {
            self.recycles += 1;
            self.children[i].recycles += 1;
            self.children[i].restart_at = Some(now);
            return Ok(());
        }
        let failed = cause.is_failure();
        let restart = match self.children[i].spec.restart {
            Restart::Permanent => true,
            Restart::Transient => failed,
            Restart::Temporary => false,
        };
        if !restart {
            self.children[i].gone = self.children[i].spec.restart == Restart::Temporary;
            return Ok(());
        }
        // Restart intensity: more than `max_restarts` within `within`.
        self.restarts_log.retain(|t| now - *t < self.within);
        self.restarts_log.push(now);
        if self.restarts_log.len() > self.max_restarts as usize {
            self.event(SupervisorEvent::GaveUp { at: now });
            return Err(Outcome::GaveUp { name: self.name.clone(), max: self.max_restarts, within: self.within });
        }
        let delay = {
            let slot = &mut self.children[i];
            if !failed || ran >= self.backoff_max * 4 {
                slot.failures = 0;
            }
            let exp = self.backoff_min.saturating_mul(1u32 << slot.failures.min(20)).min(self.backoff_max);
            if failed {
                slot.failures += 1;
            }
            let half = exp / 2;
            half + half.mul_f64(next_unit(&mut self.rng))
        };
        self.restarts += 1;
        self.children[i].restarts += 1;
        let group: Vec<usize> = match self.strategy {
            Strategy::OneForOne => vec![i],
            Strategy::OneForAll => (0..self.children.len()).collect(),
            Strategy::RestForOne => (i..self.children.len()).collect(),
        };
        let at = now + delay;
        for &j in &group {
            self.children[j].restart_at = Some(at);
        }
        self.event(SupervisorEvent::Restarting { child: self.children[i].spec.name.clone(), delay, at: now });
        Ok(())
    }

    /// Starts the children whose restart is due, in order; first stops the
    /// others of their group still running (in reverse order).
    async fn start_due(&mut self) -> Result<(), Outcome> {
        let now = Instant::now();
        let due: Vec<usize> =
            (0..self.children.len()).filter(|&j| self.children[j].restart_at.is_some_and(|t| t <= now)).collect();
        for &j in due.iter().rev() {
            if self.children[j].running.is_some() {
                self.stop_one(j, None).await;
                self.children[j].restart_at = Some(now);
            }
        }
        let mut result = Ok(());
        for j in due {
            let slot = &mut self.children[j];
            slot.restart_at = None;
            slot.generation += 1;
            let note = Ended { id: slot.id, generation: slot.generation };
            match child::start(&slot.spec, note, self.notes_tx.clone()).await {
                Ok(running) => {
                    let slot = &mut self.children[j];
                    let pid = running.pid;
                    slot.running = Some(running);
                    let child = slot.spec.name.clone();
                    self.event(SupervisorEvent::Started { child, pid, at: Instant::now() });
                }
                Err(e) => {
                    let cause = ExitCause::StartFailed(e.to_string());
                    let child = self.children[j].spec.name.clone();
                    tracing::warn!(supervisor = %self.name, child, error = %e, "child could not start");
                    self.event(SupervisorEvent::Exited { child, pid: None, cause: cause.clone(), at: Instant::now() });
                    result = self.schedule_after_exit(j, &cause, Duration::ZERO);
                    if result.is_err() {
                        break;
                    }
                }
            }
        }
        self.children.retain(|s| !s.gone);
        result
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    (t ^ (u64::from(std::process::id()) << 32)) | 1
}

/// xorshift64*: a number in [0, 1) for the back-off's jitter.
fn next_unit(state: &mut u64) -> f64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
}
