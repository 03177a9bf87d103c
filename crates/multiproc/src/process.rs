//! `Process`: start a registered function or a `Target` in a child process,
//! then join, signal or inspect it.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde_bytes::ByteBuf;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::registry::{Target, TaskEntry, TaskFn, lookup};
use crate::tree::spawn::handshake;
use crate::tree::supervisor::{self, ExitState, SpawnId};
use crate::wire::{self, ProcessInfo, ToWorker, fds};

/// How a child process comes to life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartMethod {
    /// Forked from the forkserver, a clean single-threaded copy of this
    /// binary made at first use (Python's `forkserver`). Fast.
    #[default]
    Forkserver,
    /// A fresh execution of this binary for every child (Python's `spawn`).
    Spawn,
}

/// What a child does with the signals a terminal or a service manager sends
/// a whole process group: Ctrl-C (SIGINT), SIGTERM (`kill -TERM -<pgid>`,
/// systemd's default `KillMode=control-group`), SIGHUP, SIGQUIT.
///
/// The forkserver always ignores them (it ends with its parent or its
/// socket). Pool workers are always [`Shielded`](GroupSignals::Shielded):
/// after a group SIGTERM the application can still drain in-flight calls,
/// then close its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupSignals {
    /// Default actions: a group signal ends the process, as it would a
    /// Python child. The default for a [`Process`].
    #[default]
    Default,
    /// SIGINT, SIGHUP and SIGQUIT are ignored; SIGTERM ends the process only
    /// when its own handle sends it ([`Process::terminate`]). Use it for a
    /// child the application stops itself, in order.
    Shielded,
}

static DEFAULT_METHOD: AtomicU8 = AtomicU8::new(u8::MAX);

/// Sets the start method used when none is given (`multiprocessing.set_start_method`).
pub fn set_start_method(method: StartMethod) {
    DEFAULT_METHOD.store(method as u8, Ordering::Relaxed);
}

/// The start method used when none is given: the one set with
/// [`set_start_method`], else `MULTIPROC_START_METHOD` (`forkserver` or
/// `spawn`), else `Forkserver`.
pub fn get_start_method() -> StartMethod {
    match DEFAULT_METHOD.load(Ordering::Relaxed) {
        0 => StartMethod::Forkserver,
        1 => StartMethod::Spawn,
        _ => match std::env::var("MULTIPROC_START_METHOD").as_deref() {
            Ok("spawn") => StartMethod::Spawn,
            _ => StartMethod::Forkserver,
        },
    }
}

/// A registered item and its encoded arguments, ready to send.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub entry: &'static TaskEntry,
    pub args: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

impl Prepared {
    pub fn new<F: 'static, A: Serialize>(args: &A) -> Result<Self> {
        let entry = lookup::<F>()?;
        let (args, fds) = fds::capture(|| wire::encode("the task's arguments", args));
        Ok(Self { entry, args: args?, fds })
    }
}

/// A child process running a registered function: `multiprocessing.Process`.
///
/// ```no_run
/// #[multiproc::task]
/// fn greet(name: String) {
///     println!("hello, {name}");
/// }
///
/// # async fn demo() -> multiproc::Result<()> {
/// // p = Process(target=greet, args=("bob",)); p.start(); p.join()
/// let mut p = multiproc::Process::new(greet, ("bob".to_string(),));
/// p.start().await?;
/// p.join().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Process {
    target: Option<Result<Prepared>>,
    name: String,
    identity: Vec<u32>,
    daemon: bool,
    method: Option<StartMethod>,
    group_signals: GroupSignals,
    state: State,
}

#[derive(Debug)]
enum State {
    Idle,
    Started { id: SpawnId, pid: u32, exit: watch::Receiver<Option<ExitState>> },
    Closed,
}

impl Process {
    /// A process that will run `target(args…)`; `args` is a tuple (`()` for
    /// none, `(x,)` for one).
    ///
    /// `target` must be a `fn` or `async fn` carrying `#[multiproc::task]`
    /// (every rule: [`guide::tasks`](crate::guide::tasks)). A closure, or a
    /// `fn` without the attribute, compiles but cannot be found by name in
    /// the child: [`start`](Self::start) then fails with
    /// [`Error::UnregisteredTask`] and nothing is started. Write a `fn` with
    /// `#[multiproc::task]` instead and pass what a closure would have
    /// captured as arguments:
    ///
    /// ```no_run
    /// // Not `Process::new(move || println!("{factor}"), ())`:
    /// #[multiproc::task]
    /// fn show(factor: u64) {
    ///     println!("{factor}");
    /// }
    /// # async fn demo(factor: u64) -> multiproc::Result<()> {
    /// let mut p = multiproc::Process::new(show, (factor,));
    /// p.start().await?;
    /// # Ok(()) }
    /// ```
    pub fn new<F, A, M>(target: F, args: A) -> Self
    where
        F: TaskFn<A, M>,
        A: Serialize,
    {
        let _ = target;
        Self::with(Prepared::new::<F, A>(&args), "Process")
    }

    /// A process that will run `target.run()` (a Python `Process` subclass).
    /// Named after the type, like a Python subclass: `MyProcess-N`.
    pub fn from_target<T: Target>(target: T) -> Self {
        let type_name = std::any::type_name::<T>();
        let short = type_name.rsplit("::").next().unwrap_or(type_name);
        Self::with(Prepared::new::<T, (T,)>(&(target,)), short)
    }

    fn with(target: Result<Prepared>, prefix: &str) -> Self {
        let (identity, name) = crate::current::next_child_identity(prefix);
        let daemon = crate::current::current_process().daemon;
        Self {
            target: Some(target),
            name,
            identity,
            daemon,
            method: None,
            group_signals: GroupSignals::Default,
            state: State::Idle,
        }
    }

    /// Sets the name (`Process(name=…)`); defaults to `Process-N`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets the daemon flag (`Process(daemon=…)`); defaults to the current
    /// process's. Daemonic children are terminated when their parent exits and
    /// may not start children of their own.
    pub fn daemon(mut self, daemon: bool) -> Self {
        self.daemon = daemon;
        self
    }

    /// Chooses how the child is started; defaults to [`get_start_method`].
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// Chooses what the child does with signals sent to the whole process
    /// group; defaults to [`GroupSignals::Default`].
    pub fn group_signals(mut self, policy: GroupSignals) -> Self {
        self.group_signals = policy;
        self
    }

    /// Changes the daemon flag before `start` (`p.daemon = True`).
    pub fn set_daemon(&mut self, daemon: bool) -> Result<()> {
        match self.state {
            State::Idle => {
                self.daemon = daemon;
                Ok(())
            }
            State::Started { .. } => Err(Error::AlreadyStarted),
            State::Closed => Err(Error::Closed("process")),
        }
    }

    /// The name (`p.name`): Python's `Process-N` (`Process-1:2` for a
    /// grandchild; `Type-N` for [`from_target`](Self::from_target)) unless
    /// [`name`](Self::name) set one.
    pub fn get_name(&self) -> &str {
        &self.name
    }

    /// The daemon flag (`p.daemon`).
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }

    /// Starts the child and waits until it has accepted its target
    /// (`p.start()`).
    ///
    /// Fails with [`Error::UnregisteredTask`] when the target is a closure or
    /// a `fn` without `#[multiproc::task]` (see [`new`](Self::new)), with
    /// [`Error::NoRuntime`] outside a tokio runtime, with
    /// [`Error::AlreadyStarted`] the second time, and with
    /// [`Error::DaemonicChildren`] in a daemonic process.
    pub async fn start(&mut self) -> Result<()> {
        crate::runtime::require("a process")?;
        match self.state {
            State::Idle => {}
            State::Started { .. } => return Err(Error::AlreadyStarted),
            State::Closed => return Err(Error::Closed("process")),
        }
        let me = crate::current::current_process();
        if me.daemon {
            return Err(Error::DaemonicChildren);
        }
        let prepared = self.target.take().ok_or(Error::AlreadyStarted)??;
        let exec = self.method.unwrap_or_else(get_start_method) == StartMethod::Spawn;
        let info = ProcessInfo {
            name: self.name.clone(),
            identity: self.identity.clone(),
            daemon: self.daemon,
            parent_pid: me.pid,
            parent_name: me.name,
        };
        let task = prepared.entry.task_ref();
        let shielded = self.group_signals == GroupSignals::Shielded;
        let msg = ToWorker::Run { info, task: task.clone(), args: ByteBuf::from(prepared.args), shielded };
        let (spawned, _) = handshake(exec, self.name.clone(), self.daemon, &msg, prepared.fds, &task.name).await?;
        tracing::info!(pid = spawned.pid, name = %self.name, "started process");
        self.state = State::Started { id: spawned.id, pid: spawned.pid, exit: spawned.exit };
        Ok(())
    }

    /// The child's process id (`p.pid`): `None` before
    /// [`start`](Self::start) (and after [`close`](Self::close)); it stays
    /// readable once the child has exited.
    pub fn pid(&self) -> Option<u32> {
        match &self.state {
            State::Started { pid, .. } => Some(*pid),
            State::Idle | State::Closed => None,
        }
    }

    /// Python's `exitcode`: `None` while running (or never started), the exit
    /// code, or `-N` when signal `N` ended it.
    pub fn exitcode(&self) -> Option<i32> {
        match &self.state {
            State::Started { exit, .. } => match &*exit.borrow() {
                Some(ExitState::Exited(status)) => Some(status.code()),
                _ => None,
            },
            State::Idle | State::Closed => None,
        }
    }

    /// Whether the child has started and not yet exited (`p.is_alive()`).
    pub fn is_alive(&self) -> bool {
        match &self.state {
            State::Started { exit, .. } => exit.borrow().is_none(),
            State::Idle | State::Closed => false,
        }
    }

    /// Waits for the child to exit; returns its exit code (negative: the
    /// signal that ended it, as Python's `exitcode`). Joining again returns
    /// the same code. [`Error::NotStarted`] before [`start`](Self::start)
    /// (Python raises there too).
    pub async fn join(&self) -> Result<i32> {
        let (pid, exit) = match &self.state {
            State::Started { pid, exit, .. } => (pid, exit),
            State::Idle => return Err(Error::NotStarted),
            State::Closed => return Err(Error::Closed("process")),
        };
        let mut exit = exit.clone();
        let state = exit.wait_for(Option::is_some).await.map_err(|_| Error::Closed("supervisor"))?.clone();
        match state {
            Some(ExitState::Exited(status)) => Ok(status.code()),
            _ => Err(Error::ForkserverLost { pid: *pid }),
        }
    }

    /// Waits at most `timeout`; `Ok(None)` when the child is still running.
    pub async fn join_timeout(&self, timeout: Duration) -> Result<Option<i32>> {
        match tokio::time::timeout(timeout, self.join()).await {
            Ok(r) => r.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Sends SIGTERM (`Process.terminate`). A no-op once the child exited.
    pub fn terminate(&self) -> Result<()> {
        self.signal(nix::libc::SIGTERM)
    }

    /// Sends SIGKILL (`Process.kill`).
    pub fn kill(&self) -> Result<()> {
        self.signal(nix::libc::SIGKILL)
    }

    fn signal(&self, signal: i32) -> Result<()> {
        let (id, pid) = match &self.state {
            State::Started { id, pid, .. } => (*id, *pid),
            State::Idle => return Err(Error::NotStarted),
            State::Closed => return Err(Error::Closed("process")),
        };
        if self.is_alive() {
            tracing::debug!(pid, signal, "signalling process");
            supervisor::signal_child(id, signal)?;
        }
        Ok(())
    }

    /// Releases what the handle holds (`Process.close`); refuses while the
    /// child runs. Afterwards `join`, `terminate` and `kill` fail with
    /// `Error::Closed`, and `pid`/`exitcode` say `None`.
    pub fn close(&mut self) -> Result<()> {
        if self.is_alive() {
            return Err(Error::StillRunning);
        }
        self.target = None;
        self.state = State::Closed;
        Ok(())
    }
}

/// Python's repr: `<Process name='Process-1' pid=4 parent=3 stopped exitcode=-SIGTERM>`.
impl std::fmt::Display for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<Process name='{}'", self.name)?;
        if let Some(pid) = self.pid() {
            write!(f, " pid={pid}")?;
        }
        write!(f, " parent={}", std::process::id())?;
        match (&self.state, self.exitcode()) {
            (State::Idle, _) => write!(f, " initial")?,
            (State::Closed, _) => write!(f, " closed")?,
            (State::Started { .. }, None) if self.is_alive() => write!(f, " started")?,
            (State::Started { .. }, None) => write!(f, " lost")?,
            (State::Started { .. }, Some(0)) => write!(f, " stopped")?,
            (State::Started { .. }, Some(code)) if code < 0 => match nix::sys::signal::Signal::try_from(-code) {
                Ok(sig) => write!(f, " stopped exitcode=-{}", sig.as_str())?,
                Err(_) => write!(f, " stopped exitcode={code}")?,
            },
            (State::Started { .. }, Some(code)) => write!(f, " stopped exitcode={code}")?,
        }
        if self.daemon {
            write!(f, " daemon")?;
        }
        write!(f, ">")
    }
}
