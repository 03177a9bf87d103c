//! One running child of a supervisor and the task that watches it: its
//! exit, its heartbeats and recycle requests, its age and memory, and the
//! orderly stop (stop request, SIGTERM after half the grace, SIGKILL).
//!
//! The monitor owns the child; the supervisor talks to it with [`Ctl`]
//! messages and learns how it ended from its `done` watch (plus a note on
//! the supervisor's shared channel, so one `select!` hears every child).

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::spec::{ChildSpec, Kind};
use super::supervisor::Supervisor;
use crate::error::{ExitStatus, Result};
use crate::pool::Pool;
use crate::process::GroupSignals;
use crate::tree::spawn::handshake;
use crate::tree::supervisor::{self as tree, ExitState};
use crate::wire::{Channel, FromChild, ProcessInfo, ToChild, ToWorker};

/// How often a child's RSS is read when it has a `max_memory`.
const RSS_EVERY: Duration = Duration::from_millis(250);

/// Why a child was recycled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecycleReason {
    /// It reached its `max_age`.
    Age,
    /// Its RSS passed its `max_memory`.
    Memory,
    /// It called [`request_recycle`](crate::request_recycle).
    Requested,
}

/// How a child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExitCause {
    /// It exited by itself (a code, or a signal nobody here sent).
    Exited(ExitStatus),
    /// The forkserver died and took it down.
    Lost,
    /// It missed its heartbeat deadline and was killed.
    HeartbeatMissed,
    /// Stopped in order to be started afresh (not a failure).
    Recycled(RecycleReason),
    /// Stopped by its supervisor (shutdown, a group restart, removal);
    /// `status` is how the process ended (`None` for pools and supervisors).
    Stopped {
        /// How the process ended; `None` for pools and supervisors.
        status: Option<ExitStatus>,
    },
    /// It could not be started.
    StartFailed(String),
    /// A nested supervisor gave up.
    Failed(String),
}

impl ExitCause {
    /// Whether this ending is a failure (what `Restart::Transient` restarts
    /// and what back-off and restart intensity count).
    pub fn is_failure(&self) -> bool {
        match self {
            Self::Exited(s) => *s != ExitStatus::Code(0),
            Self::Lost | Self::HeartbeatMissed | Self::StartFailed(_) | Self::Failed(_) => true,
            Self::Recycled(_) | Self::Stopped { .. } => false,
        }
    }
}

/// Supervisor → monitor.
#[derive(Debug)]
pub(crate) enum Ctl {
    /// Stop in order within `grace`.
    Stop { grace: Duration },
}

/// A started child, as its supervisor holds it.
#[derive(Debug)]
pub(crate) struct Running {
    pub pid: Option<u32>,
    /// The spawn id signals to a process child are addressed by.
    pub spawn_id: Option<tree::SpawnId>,
    pub started: Instant,
    pub ctl: mpsc::UnboundedSender<Ctl>,
    pub done: watch::Receiver<Option<ExitCause>>,
    pub pool: Option<Pool>,
    pub supervisor: Option<Supervisor>,
}

impl Running {
    /// Asks for an orderly stop and waits until the child is gone.
    pub async fn stop(&mut self, grace: Duration) -> ExitCause {
        let _ = self.ctl.send(Ctl::Stop { grace });
        self.wait().await
    }

    pub async fn wait(&mut self) -> ExitCause {
        match self.done.wait_for(Option::is_some).await {
            Ok(c) => c.clone().expect("waited for Some"),
            Err(_) => ExitCause::Lost,
        }
    }
}

/// A note on the supervisor's channel: child `id` (of that generation) ended.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ended {
    pub id: u64,
    pub generation: u64,
}

/// Starts `spec` and its monitor.
pub(crate) async fn start(spec: &ChildSpec, note: Ended, notes: mpsc::UnboundedSender<Ended>) -> Result<Running> {
    let (ctl_tx, ctl) = mpsc::unbounded_channel();
    let (done_tx, done) = watch::channel(None);
    let started = Instant::now();
    match &spec.kind {
        Kind::Process(prepare) => {
            let prepared = prepare()?;
            let (identity, _) = crate::current::next_child_identity("Supervised");
            let me = crate::current::current_process();
            let info = ProcessInfo {
                name: spec.name.clone(),
                identity,
                // The child may start children of its own...
                daemon: false,
                parent_pid: me.pid,
                parent_name: me.name,
            };
            let task = prepared.entry.task_ref();
            let msg = ToWorker::Run {
                info,
                task: task.clone(),
                args: serde_bytes::ByteBuf::from(prepared.args),
                shielded: spec.group_signals == GroupSignals::Shielded,
            };
            let exec = crate::process::get_start_method() == crate::process::StartMethod::Spawn;
            // ...yet the program's exit terminates it like a daemon (a
            // supervisor dropped without `shutdown` must not hang the exit).
            let (spawned, ch) = handshake(exec, spec.name.clone(), true, &msg, prepared.fds, &task.name).await?;
            let (pid, spawn_id) = (spawned.pid, spawned.id);
            let watch = Watch {
                pid,
                spawn_id,
                ch,
                exit: spawned.exit,
                ctl,
                heartbeat: spec.heartbeat,
                max_age: spec.max_age,
                max_memory: spec.max_memory,
                grace: spec.grace,
                started,
            };
            tokio::spawn(async move {
                let cause = watch.run().await;
                let _ = done_tx.send(Some(cause));
                let _ = notes.send(note);
            });
            Ok(Running {
                pid: Some(pid),
                spawn_id: Some(spawn_id),
                started,
                ctl: ctl_tx,
                done,
                pool: None,
                supervisor: None,
            })
        }
        Kind::Pool(build) => {
            let pool = build().await?;
            let kept = pool.clone();
            tokio::spawn(async move {
                let mut ctl = ctl;
                let cause = match ctl.recv().await {
                    Some(Ctl::Stop { grace }) => {
                        kept.shutdown(grace).await;
                        ExitCause::Stopped { status: None }
                    }
                    None => {
                        kept.terminate().await;
                        ExitCause::Stopped { status: None }
                    }
                };
                drop(kept);
                let _ = done_tx.send(Some(cause));
                let _ = notes.send(note);
            });
            Ok(Running { pid: None, spawn_id: None, started, ctl: ctl_tx, done, pool: Some(pool), supervisor: None })
        }
        Kind::Supervisor(start) => {
            let sup = start().await?;
            let kept = sup.clone();
            tokio::spawn(async move {
                let mut ctl = ctl;
                let cause = tokio::select! {
                    r = kept.wait() => match r {
                        Ok(()) => ExitCause::Exited(ExitStatus::Code(0)),
                        Err(e) => ExitCause::Failed(e.chain().to_string()),
                    },
                    c = ctl.recv() => {
                        let grace = match c {
                            Some(Ctl::Stop { grace }) => grace,
                            None => Duration::ZERO,
                        };
                        let _ = kept.shutdown(grace).await;
                        ExitCause::Stopped { status: None }
                    }
                };
                let _ = done_tx.send(Some(cause));
                let _ = notes.send(note);
            });
            Ok(Running { pid: None, spawn_id: None, started, ctl: ctl_tx, done, pool: None, supervisor: Some(sup) })
        }
    }
}

/// What the monitor of a process child holds.
struct Watch {
    pid: u32,
    spawn_id: tree::SpawnId,
    ch: Channel,
    exit: watch::Receiver<Option<ExitState>>,
    ctl: mpsc::UnboundedReceiver<Ctl>,
    heartbeat: Option<Duration>,
    max_age: Option<Duration>,
    max_memory: Option<u64>,
    grace: Duration,
    started: Instant,
}

/// What woke the monitor.
enum Woke {
    Exit(Option<ExitStatus>),
    Message(Option<FromChild>),
    Stop(Duration),
    BeatMissed,
    Recycle(RecycleReason),
    Escalate,
    Nothing,
}

/// An orderly stop under way.
struct Stopping {
    why: Option<RecycleReason>,
    term_at: Instant,
    kill_at: Instant,
    termed: bool,
}

impl Watch {
    async fn run(mut self) -> ExitCause {
        let mut last_beat = Instant::now();
        let mut reading = true;
        let mut stopping: Option<Stopping> = None;
        let mut killed_for_heartbeat = false;
        let mut rss_tick = tokio::time::interval(RSS_EVERY);
        rss_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let calm = stopping.is_none() && !killed_for_heartbeat;
            let beat_deadline = self.heartbeat.filter(|_| calm).map(|t| last_beat + t);
            let age_deadline = self.max_age.filter(|_| calm).map(|a| self.started + a);
            let signal_at = stopping.as_ref().map(|s| if s.termed { s.kill_at } else { s.term_at });
            let woke = tokio::select! {
                biased;
                state = self.exit.wait_for(Option::is_some) => Woke::Exit(match state.ok().and_then(|s| s.clone()) {
                    Some(ExitState::Exited(status)) => Some(status),
                    _ => None,
                }),
                msg = self.ch.recv::<FromChild>(), if reading => Woke::Message(msg.ok()),
                c = self.ctl.recv(), if stopping.as_ref().is_none_or(|s| s.why.is_some()) => Woke::Stop(match c {
                    Some(Ctl::Stop { grace }) => grace,
                    None => Duration::ZERO,
                }),
                () = sleep_until(beat_deadline) => Woke::BeatMissed,
                () = sleep_until(age_deadline) => Woke::Recycle(RecycleReason::Age),
                _ = rss_tick.tick(), if calm && self.max_memory.is_some() => {
                    let limit = self.max_memory.expect("checked in the guard");
                    if super::rss_bytes(self.pid).is_some_and(|rss| rss > limit) {
                        Woke::Recycle(RecycleReason::Memory)
                    } else {
                        Woke::Nothing
                    }
                }
                () = sleep_until(signal_at) => Woke::Escalate,
            };
            match woke {
                Woke::Exit(None) => return ExitCause::Lost,
                Woke::Exit(Some(status)) => {
                    return match (killed_for_heartbeat, stopping) {
                        (true, _) => ExitCause::HeartbeatMissed,
                        (false, Some(Stopping { why: Some(why), .. })) => ExitCause::Recycled(why),
                        (false, Some(_)) => ExitCause::Stopped { status: Some(status) },
                        (false, None) => ExitCause::Exited(status),
                    };
                }
                Woke::Message(Some(FromChild::Heartbeat)) => last_beat = Instant::now(),
                Woke::Message(Some(FromChild::Recycle)) => {
                    if stopping.is_none() {
                        stopping = Some(self.begin_stop(Some(RecycleReason::Requested), None).await);
                    }
                }
                // Closed (it is exiting) or garbled: only its exit matters now.
                Woke::Message(None) => reading = false,
                Woke::Stop(grace) => {
                    let deadline = stopping.as_ref().map(|s| s.kill_at);
                    let mut s = self.begin_stop(None, Some(grace)).await;
                    if let Some(d) = deadline {
                        s.kill_at = s.kill_at.min(d);
                    }
                    stopping = Some(s);
                }
                Woke::BeatMissed => {
                    tracing::warn!(pid = self.pid, "supervised child missed its heartbeat; killing it");
                    killed_for_heartbeat = true;
                    let _ = tree::signal_child(self.spawn_id, nix::libc::SIGKILL);
                }
                Woke::Recycle(why) => stopping = Some(self.begin_stop(Some(why), None).await),
                Woke::Escalate => {
                    let s = stopping.as_mut().expect("a signal time only while stopping");
                    if s.termed {
                        let _ = tree::signal_child(self.spawn_id, nix::libc::SIGKILL);
                        s.kill_at = Instant::now() + Duration::from_secs(3600);
                    } else {
                        let _ = tree::signal_child(self.spawn_id, nix::libc::SIGTERM);
                        s.termed = true;
                    }
                }
                Woke::Nothing => {}
            }
        }
    }

    /// Sends the stop request; SIGTERM and SIGKILL follow on schedule.
    async fn begin_stop(&mut self, why: Option<RecycleReason>, grace: Option<Duration>) -> Stopping {
        let grace = grace.unwrap_or(self.grace);
        tracing::debug!(pid = self.pid, ?why, ?grace, "stopping a supervised child");
        // A child busy elsewhere may not read it; the signals follow anyway.
        let _ = tokio::time::timeout(grace / 2, self.ch.send(&ToChild::Stop)).await;
        let now = Instant::now();
        Stopping { why, term_at: now + grace / 2, kill_at: now + grace, termed: false }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
