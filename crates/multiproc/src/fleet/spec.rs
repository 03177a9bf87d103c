//! What a supervisor is told about each child: [`ChildSpec`] (what to run,
//! its name, restart type, grace, watchdog and recycling limits), and the
//! words of OTP: [`Restart`], [`Strategy`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;

use super::Supervisor;
use crate::error::Result;
use crate::pool::Pool;
use crate::process::{GroupSignals, Prepared};
use crate::registry::{Target, TaskFn};

/// When a child that ended is started again (OTP's restart types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Restart {
    /// Always: a child that must be running (a consumer, a server).
    #[default]
    Permanent,
    /// Only if it ended abnormally (a non-zero exit code, a signal, a lost
    /// heartbeat): a child that may finish its work and exit 0.
    Transient,
    /// Never: it runs once; once it ends it is removed.
    Temporary,
}

/// Which children restart when one ends (OTP's strategies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Strategy {
    /// Only the child that ended.
    #[default]
    OneForOne,
    /// Every child: the others are stopped (in reverse start order), then
    /// all start again in order. For children that only work together.
    OneForAll,
    /// The child that ended and every child started after it (they depend
    /// on it): those are stopped in reverse order, then restarted in order.
    RestForOne,
}

/// How to start a child, once per (re)start.
#[derive(Clone)]
pub(crate) enum Kind {
    /// A registered task or a `Target`, run as a process.
    Process(Arc<dyn Fn() -> Result<Prepared> + Send + Sync>),
    /// A pool, kept until the supervisor stops it.
    Pool(Arc<dyn Fn() -> BoxFuture<'static, Result<Pool>> + Send + Sync>),
    /// A nested supervisor: it "exits" when it gives up.
    Supervisor(Arc<dyn Fn() -> BoxFuture<'static, Result<Supervisor>> + Send + Sync>),
}

/// One child of a [`Supervisor`]: what to run and how to treat it.
///
/// ```no_run
/// # use std::time::Duration;
/// #[multiproc::task]
/// fn consumer(queue: String) {
///     while !multiproc::stop_requested() {
///         multiproc::heartbeat();
///         // take a job from `queue`, do it
///     }
/// }
///
/// let spec = multiproc::ChildSpec::task("consumer-1", consumer, ("jobs".to_owned(),))
///     .restart(multiproc::Restart::Permanent)
///     .shutdown_grace(Duration::from_secs(5))
///     .heartbeat(Duration::from_secs(30))
///     .max_memory(512 << 20);
/// ```
#[derive(Clone)]
pub struct ChildSpec {
    pub(crate) name: String,
    pub(crate) kind: Kind,
    pub(crate) restart: Restart,
    pub(crate) grace: Duration,
    pub(crate) heartbeat: Option<Duration>,
    pub(crate) max_age: Option<Duration>,
    pub(crate) max_memory: Option<u64>,
    pub(crate) group_signals: GroupSignals,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::Process(_) => "process",
            Kind::Pool(_) => "pool",
            Kind::Supervisor(_) => "supervisor",
        };
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("kind", &kind)
            .field("restart", &self.restart)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl ChildSpec {
    fn new(name: impl Into<String>, kind: Kind) -> Self {
        Self {
            name: name.into(),
            kind,
            restart: Restart::Permanent,
            grace: Duration::from_secs(5),
            heartbeat: None,
            max_age: None,
            max_memory: None,
            group_signals: GroupSignals::Shielded,
        }
    }

    /// A process running the registered task `f(args…)`; the arguments are
    /// encoded again at every start (so handles in them travel each time).
    pub fn task<F, A, M>(name: impl Into<String>, f: F, args: A) -> Self
    where
        F: TaskFn<A, M>,
        A: Serialize + Send + Sync + 'static,
    {
        let _ = f;
        Self::new(name, Kind::Process(Arc::new(move || Prepared::new::<F, A>(&args))))
    }

    /// A process running `target.run()` (a Python `Process` subclass).
    pub fn target<T: Target + Send + Sync>(name: impl Into<String>, target: T) -> Self {
        let args = (target,);
        Self::new(name, Kind::Process(Arc::new(move || Prepared::new::<T, (T,)>(&args))))
    }

    /// A [`Pool`] built by `build` (e.g. `|| Pool::builder().processes(4).build()`).
    /// The pool heals its own workers; the supervisor starts it in order,
    /// stops it in order (`Pool::shutdown` with the grace period) and hands
    /// out clones ([`Supervisor::pool`]).
    pub fn pool<B, Fut>(name: impl Into<String>, build: B) -> Self
    where
        B: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Pool>> + Send + 'static,
    {
        Self::new(name, Kind::Pool(Arc::new(move || Box::pin(build()))))
    }

    /// A nested [`Supervisor`] started by `start`. It counts as a child that
    /// exited abnormally when it gives up (its restart intensity was
    /// exceeded), and is stopped with `Supervisor::shutdown`.
    pub fn supervisor<B, Fut>(name: impl Into<String>, start: B) -> Self
    where
        B: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Supervisor>> + Send + 'static,
    {
        Self::new(name, Kind::Supervisor(Arc::new(move || Box::pin(start()))))
    }

    /// Its restart type; [`Restart::Permanent`] by default.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// How long an orderly stop may take: the stop request at once
    /// ([`stop_requested`](crate::stop_requested)), SIGTERM after half of
    /// it, SIGKILL at the end. Five seconds by default.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Watchdog: the child must call [`heartbeat`](crate::heartbeat) at
    /// least this often (the clock starts when it is ready), or it is
    /// killed (SIGKILL) and counts as a failure.
    pub fn heartbeat(mut self, timeout: Duration) -> Self {
        self.heartbeat = Some(timeout);
        self
    }

    /// Recycling by age: after running this long the child is stopped in
    /// order and started afresh (not a failure).
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// Recycling by memory: once its RSS passes `bytes` (checked four times
    /// a second) the child is stopped in order and started afresh.
    pub fn max_memory(mut self, bytes: u64) -> Self {
        self.max_memory = Some(bytes);
        self
    }

    /// What signals sent to the whole process group do to a process child.
    /// [`GroupSignals::Shielded`] by default: a Ctrl-C or a
    /// `kill -TERM -<pgid>` (systemd's `KillMode=control-group`) does not
    /// end it behind the supervisor's back; the program's own handler
    /// ([`shutdown_on_signals`](crate::shutdown_on_signals),
    /// [`Supervisor::run_until_signal`]) stops it in order, and the
    /// supervisor's SIGTERM still ends it. [`GroupSignals::Default`] for a
    /// child that handles SIGTERM itself (a shielded child dies at the
    /// supervisor's SIGTERM even if it listens for it).
    pub fn group_signals(mut self, policy: GroupSignals) -> Self {
        self.group_signals = policy;
        self
    }
}
