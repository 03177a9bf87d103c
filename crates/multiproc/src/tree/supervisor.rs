//! The supervisor: one thread in every process that starts children. It owns
//! the connection to the forkserver (starting it, and restarting it after it
//! died), turns spawn requests into children, routes signals, and publishes
//! each child's exit to whoever holds its handle.
//!
//! It is a thread rather than a tokio task so it outlives any one runtime
//! (each `#[tokio::test]` has its own) and so the forkserver's parent-death
//! signal is tied to a thread that never exits. It never installs a SIGCHLD
//! handler and never calls `waitpid(-1)`: the forkserver, its only direct
//! child, is reaped through a pidfd; everything else is the forkserver's.
//!
//! At orderly exit (`atexit`), daemonic children are terminated (then killed
//! after a grace period) and the others awaited, as Python does.
//!
//! Every child is known by the spawn id this thread gave it, never by its
//! pid alone: signals and exit reports name the id, so a pid reused after a
//! child was reaped can never be hit. Spawn requests reach the forkserver in
//! batches of at most `SCM_RIGHTS`' limit of fds per write, so any number of
//! concurrent starts works. Starting the forkserver has a deadline.
//!
//! A start does not wait for the forkserver's `Started` report before
//! talking to the child: the caller queues the request and its hello is in
//! the child's socket before the fork, so the report travels back while the
//! child shakes hands (two thread hops off the start path's critical
//! chain). The caller still waits for the report before it returns, so a
//! signal sent right after a start always finds the child.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use multiproc_sys::fdpass::MAX_FDS_PER_MESSAGE;
use multiproc_sys::process as sys;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use tokio::sync::watch;

use super::role::{FORKSERVER_FD, role_env};
use crate::current::ChildProcess;
use crate::error::{Error, ExitStatus, Result};
use crate::wire::fds::PassFd;
use crate::wire::{BlockingChannel, DEFAULT_MAX_FRAME, FromForkserver, Hello, ToForkserver};

/// Grace between SIGTERM and SIGKILL for daemonic children at exit.
const EXIT_GRACE: Duration = Duration::from_secs(1);
/// How long a freshly executed forkserver may take to answer our hello.
const FORKSERVER_START: Duration = Duration::from_secs(20);
/// Longest pause after a failed `poll` (a persistent error must not spin).
const POLL_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Names one child of the tree for its whole life (pids are reused; spawn
/// ids are not).
pub(crate) type SpawnId = u64;

/// How a child ended, as seen by its handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ExitState {
    Exited(ExitStatus),
    /// The forkserver died; the child died with it and its status is unknown.
    Lost,
    /// It was never forked: why.
    NotStarted(String),
}

/// A child being started, then started. `pid` is 0 until the child's hello
/// names it (or the forkserver's report, in `started_pid`).
#[derive(Debug)]
pub(crate) struct Spawned {
    pub id: SpawnId,
    pub pid: u32,
    pub exit: watch::Receiver<Option<ExitState>>,
    /// The pid the forkserver reported, once the supervisor has it.
    pub started: watch::Receiver<Option<u32>>,
}

/// Spawn ids, unique in this process for its whole life.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

enum Request {
    Spawn { id: SpawnId, exec: bool, control: OwnedFd, name: String, daemon: bool, child: Pending },
    Signal { id: SpawnId, signal: i32 },
    Shutdown { done: mpsc::Sender<()> },
}

/// What the supervisor keeps for a child until its `Started` report.
struct Pending {
    exit: watch::Sender<Option<ExitState>>,
    started: watch::Sender<Option<u32>>,
}

struct Handle {
    requests: Mutex<mpsc::Sender<Request>>,
    wake: EventFd,
    children: Arc<Mutex<HashMap<SpawnId, ChildProcess>>>,
}

static SUPERVISOR: OnceLock<Handle> = OnceLock::new();

fn handle() -> Result<&'static Handle> {
    if let Some(h) = SUPERVISOR.get() {
        return Ok(h);
    }
    super::boot::ensure_linked();
    let mut started = None;
    let h = SUPERVISOR.get_or_init(|| {
        let (tx, rx) = mpsc::channel();
        let wake =
            EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK).expect("eventfd is available on Linux");
        let children = Arc::new(Mutex::new(HashMap::new()));
        let thread = Supervisor {
            requests: rx,
            wake: wake.as_fd().try_clone_to_owned().expect("dup of a fresh eventfd"),
            forkserver: None,
            unflushed_fds: 0,
            pending: HashMap::new(),
            live: HashMap::new(),
            children: Arc::clone(&children),
            shutdown: Vec::new(),
            kill_at: None,
        };
        started = Some(std::thread::Builder::new().name("multiproc-supervisor".into()).spawn(move || thread.run()));
        Handle { requests: Mutex::new(tx), wake, children }
    });
    if let Some(Err(e)) = started {
        return Err(e.into());
    }
    if started.is_some() {
        sys::at_exit(at_exit)?;
    }
    Ok(h)
}

impl Handle {
    fn send(&self, req: Request) -> Result<()> {
        self.requests
            .lock()
            .expect("supervisor queue lock is never held across a panic")
            .send(req)
            .map_err(|_| Error::Closed("supervisor"))?;
        self.wake.write(1)?;
        Ok(())
    }
}

/// Asks for a child whose end of the control socket is `control`, and
/// returns at once: talk to the child on the other end (its hello names its
/// pid); `exit` says if it could not be started, and later how it ended.
pub(crate) fn spawn(exec: bool, control: OwnedFd, name: String, daemon: bool) -> Result<Spawned> {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let (exit, rx) = watch::channel(None);
    let (started, started_rx) = watch::channel(None);
    let child = Pending { exit, started };
    handle()?.send(Request::Spawn { id, exec, control, name, daemon, child })?;
    Ok(Spawned { id, pid: 0, exit: rx, started: started_rx })
}

/// Sends a signal to child `id` if the forkserver has not reaped it yet.
/// Signals are addressed by spawn id only, never by pid: a child reaped
/// meanwhile is not confused with a newer process that got its pid.
pub(crate) fn signal_child(id: SpawnId, signal: i32) -> Result<()> {
    handle()?.send(Request::Signal { id, signal })
}

pub(crate) fn active_children() -> Vec<ChildProcess> {
    let Some(h) = SUPERVISOR.get() else { return Vec::new() };
    let mut v: Vec<ChildProcess> = h.children.lock().expect("children lock").values().cloned().collect();
    v.sort_by_key(|c| c.pid);
    v
}

extern "C" fn at_exit() {
    let Some(h) = SUPERVISOR.get() else { return };
    let (done, wait) = mpsc::channel();
    if h.send(Request::Shutdown { done }).is_ok() {
        let _ = wait.recv();
    }
}

struct Forkserver {
    ch: BlockingChannel,
    pidfd: OwnedFd,
    pid: u32,
}

struct Live {
    pid: u32,
    exit: watch::Sender<Option<ExitState>>,
    daemon: bool,
}

struct Supervisor {
    requests: mpsc::Receiver<Request>,
    wake: OwnedFd,
    forkserver: Option<Forkserver>,
    /// Fds fed to the forkserver channel since its last flush.
    unflushed_fds: usize,
    pending: HashMap<SpawnId, (String, bool, Pending)>,
    live: HashMap<SpawnId, Live>,
    children: Arc<Mutex<HashMap<SpawnId, ChildProcess>>>,
    shutdown: Vec<mpsc::Sender<()>>,
    kill_at: Option<Instant>,
}

impl Supervisor {
    fn run(mut self) {
        let mut backoff = Duration::ZERO;
        loop {
            let timeout = self.kill_at.map_or(PollTimeout::NONE, |at| {
                let ms = at.saturating_duration_since(Instant::now()).as_millis().min(10_000) as u16;
                PollTimeout::from(ms)
            });
            let (wake, fs_readable, fs_exited) = {
                let mut fds = vec![PollFd::new(self.wake.as_fd(), PollFlags::POLLIN)];
                if let Some(fs) = &self.forkserver {
                    fds.push(PollFd::new(fs.ch.fd(), PollFlags::POLLIN));
                    fds.push(PollFd::new(fs.pidfd.as_fd(), PollFlags::POLLIN));
                }
                match poll(&mut fds, timeout) {
                    Ok(_) => backoff = Duration::ZERO,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        // Back off rather than spin on an error that persists.
                        tracing::error!(error = %e, "supervisor poll failed");
                        backoff = (backoff * 2).clamp(Duration::from_millis(1), POLL_BACKOFF_MAX);
                        drop(fds);
                        std::thread::sleep(backoff);
                        continue;
                    }
                }
                let ready = |i: usize| fds.get(i).and_then(|f| f.revents()).is_some_and(|r| !r.is_empty());
                (ready(0), ready(1), ready(2))
            };
            if wake {
                let mut buf = [0u8; 8];
                let _ = nix::unistd::read(&self.wake, &mut buf);
            }
            while let Ok(req) = self.requests.try_recv() {
                self.handle(req);
            }
            if fs_readable || fs_exited {
                self.read_forkserver();
            }
            self.flush_forkserver();
            self.check_shutdown();
        }
    }

    fn handle(&mut self, req: Request) {
        match req {
            Request::Spawn { id, exec, control, name, daemon, child } => {
                let not_started = |child: Pending, e: Error| {
                    let _ = child.exit.send(Some(ExitState::NotStarted(crate::error::Chain(&e).to_string())));
                };
                if let Err(e) = self.ensure_forkserver() {
                    not_started(child, e);
                    return;
                }
                // One write carries at most SCM_RIGHTS' limit of fds: send
                // what is queued before it would overflow.
                if self.unflushed_fds >= MAX_FDS_PER_MESSAGE {
                    self.flush_forkserver();
                    if let Err(e) = self.ensure_forkserver() {
                        not_started(child, e);
                        return;
                    }
                }
                let fs = self.forkserver.as_mut().expect("ensured above");
                match fs.ch.feed(&ToForkserver::Spawn { id, exec, control: PassFd(control) }) {
                    Ok(()) => {
                        self.unflushed_fds += 1;
                        self.pending.insert(id, (name, daemon, child));
                    }
                    Err(e) => not_started(child, e),
                }
            }
            Request::Signal { id, signal } => {
                // A child still pending is known to the forkserver too: its
                // spawn request went first on the same stream.
                if (self.live.contains_key(&id) || self.pending.contains_key(&id))
                    && let Some(fs) = &mut self.forkserver
                {
                    tracing::debug!(id, signal, "signalling child");
                    let _ = fs.ch.feed(&ToForkserver::Signal { id, signal });
                }
            }
            Request::Shutdown { done } => {
                for (&id, live) in &self.live {
                    if live.daemon
                        && let Some(fs) = &mut self.forkserver
                    {
                        tracing::debug!(pid = live.pid, "terminating daemonic child at exit");
                        let _ = fs.ch.feed(&ToForkserver::Signal { id, signal: nix::libc::SIGTERM });
                    }
                }
                self.kill_at.get_or_insert(Instant::now() + EXIT_GRACE);
                self.shutdown.push(done);
            }
        }
    }

    fn check_shutdown(&mut self) {
        if self.shutdown.is_empty() {
            return;
        }
        if self.kill_at.is_some_and(|at| Instant::now() >= at) {
            self.kill_at = None;
            let daemons: Vec<SpawnId> = self.live.iter().filter(|(_, l)| l.daemon).map(|(&id, _)| id).collect();
            if let Some(fs) = &mut self.forkserver {
                for id in daemons {
                    let _ = fs.ch.feed(&ToForkserver::Signal { id, signal: nix::libc::SIGKILL });
                }
                let _ = fs.ch.flush();
            }
        }
        if self.live.is_empty() && self.pending.is_empty() {
            // Close the forkserver's socket so it exits, and reap it here
            // rather than leave a zombie for init.
            if let Some(fs) = self.forkserver.take() {
                let Forkserver { ch, pidfd, pid } = fs;
                drop(ch);
                if wait_reap(&pidfd).is_err() {
                    tracing::warn!(pid, "the forkserver did not exit at shutdown");
                }
            }
            for done in self.shutdown.drain(..) {
                let _ = done.send(());
            }
            self.kill_at = None;
        }
    }

    /// Writes everything queued for the forkserver; a write error means it
    /// is gone.
    fn flush_forkserver(&mut self) {
        if let Some(fs) = &mut self.forkserver
            && let Err(e) = fs.ch.flush()
        {
            tracing::warn!(error = %e, "cannot write to the forkserver");
            self.forkserver_lost();
        }
        self.unflushed_fds = 0;
    }

    fn read_forkserver(&mut self) {
        let Some(fs) = &mut self.forkserver else { return };
        let mut lost = fs.ch.read_available().is_err();
        let mut reports = Vec::new();
        loop {
            match fs.ch.try_recv::<FromForkserver>() {
                Ok(Some(r)) => reports.push(r),
                Ok(None) => break,
                Err(e) => {
                    if !matches!(e, Error::Eof) {
                        tracing::warn!(error = %e, "bad message from the forkserver");
                    }
                    lost = true;
                    break;
                }
            }
        }
        for r in reports {
            self.report(r);
        }
        if !lost && let Some(fs) = &self.forkserver {
            lost = matches!(sys::try_reap(fs.pidfd.as_fd()), Ok(Some(_)) | Err(_));
        }
        if lost {
            self.forkserver_lost();
        }
    }

    fn report(&mut self, r: FromForkserver) {
        match r {
            FromForkserver::Started { id, pid } => {
                let Some((name, daemon, child)) = self.pending.remove(&id) else { return };
                tracing::debug!(id, pid, %name, daemon, "process started");
                let _ = child.started.send(Some(pid));
                self.children.lock().expect("children lock").insert(id, ChildProcess { name, pid, daemon });
                self.live.insert(id, Live { pid, exit: child.exit, daemon });
            }
            FromForkserver::SpawnFailed { id, reason } => {
                if let Some((_, _, child)) = self.pending.remove(&id) {
                    let _ = child.exit.send(Some(ExitState::NotStarted(format!("fork a child: {reason}"))));
                }
            }
            FromForkserver::Exited { id, status } => {
                self.children.lock().expect("children lock").remove(&id);
                if let Some(live) = self.live.remove(&id) {
                    tracing::debug!(id, pid = live.pid, %status, "process exited");
                    let _ = live.exit.send(Some(ExitState::Exited(status)));
                }
            }
        }
    }

    fn forkserver_lost(&mut self) {
        let Some(fs) = self.forkserver.take() else { return };
        // It is our child: reap it (it may still be exiting).
        let _ = sys::pidfd_send_signal(fs.pidfd.as_fd(), nix::libc::SIGKILL);
        let _ = wait_reap(&fs.pidfd);
        tracing::warn!(
            pid = fs.pid,
            children = self.live.len(),
            "the forkserver died; its children are lost; it restarts on the next start"
        );
        self.children.lock().expect("children lock").clear();
        self.unflushed_fds = 0;
        for (_, live) in self.live.drain() {
            let _ = live.exit.send(Some(ExitState::Lost));
        }
        for (_, (_, _, child)) in self.pending.drain() {
            let _ = child.exit.send(Some(ExitState::NotStarted("the forkserver died before starting it".into())));
        }
    }

    fn ensure_forkserver(&mut self) -> Result<()> {
        if self.forkserver.is_none() {
            self.forkserver = Some(start_forkserver()?);
        }
        Ok(())
    }
}

fn wait_reap(pidfd: &OwnedFd) -> Result<()> {
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    let _ = poll(&mut fds, PollTimeout::from(1000u16));
    match sys::try_reap(pidfd.as_fd())? {
        Some(_) => Ok(()),
        None => Err(Error::Timeout),
    }
}

/// Re-executes this binary as the forkserver and shakes hands with it.
fn start_forkserver() -> Result<Forkserver> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)?;
    let mut cmd = Command::new("/proc/self/exe");
    {
        use std::os::unix::process::CommandExt;
        // What `ps -f` shows; the forkserver sets its short name itself.
        cmd.arg0("multiproc-forkserver");
    }
    cmd.envs(role_env("forkserver", FORKSERVER_FD, std::process::id()));
    // The forkserver, and every child it forks, belongs to this process's
    // tree (and shares its resource tracker).
    cmd.envs(super::tracker::child_env(std::process::id()));
    super::boot::boot_env(&mut cmd);
    let _kept = sys::command_with_fds(&mut cmd, &[(theirs.as_fd(), FORKSERVER_FD)], true)?;
    let child = cmd.spawn()?;
    drop(theirs);
    let pid = child.id();
    let pidfd = sys::pidfd_open(pid as i32)?;
    set_nonblocking(ours.as_fd())?;
    let mut ch = BlockingChannel::new(ours, DEFAULT_MAX_FRAME);
    let deadline = Instant::now() + FORKSERVER_START;
    let hello = ch.send(&Hello::ours()).and_then(|()| ch.recv_until::<Hello>(deadline)).and_then(|hello| {
        hello.check().map_err(Error::Handshake)?;
        Ok(hello)
    });
    if let Err(e) = hello {
        // Never leave a half-started forkserver behind (nor its zombie).
        tracing::warn!(pid, error = %e, "the forkserver did not start");
        let _ = sys::pidfd_send_signal(pidfd.as_fd(), nix::libc::SIGKILL);
        let _ = wait_reap(&pidfd);
        return Err(e);
    }
    tracing::debug!(pid, "forkserver started");
    Ok(Forkserver { ch, pidfd, pid })
}

fn set_nonblocking(fd: std::os::fd::BorrowedFd<'_>) -> Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

#[cfg(test)]
#[expect(unsafe_code, reason = "registering a task inside the crate declares a link-section static")]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    use super::*;

    #[multiproc::task]
    fn returns() {}

    /// Starts a bare worker and hands back the parent's end of its socket.
    async fn raw_worker() -> (Spawned, UnixStream) {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        let spawned = spawn(false, theirs.into(), "raw".into(), false).expect("spawn");
        (spawned, ours)
    }

    async fn exit_of(mut s: Spawned) -> ExitState {
        s.exit.wait_for(Option::is_some).await.expect("supervisor alive").clone().expect("exited")
    }

    #[tokio::test]
    async fn garbage_to_a_worker_ends_that_worker_only() {
        // A well-formed frame holding bytes that are not a hello.
        let (worker, mut sock) = raw_worker().await;
        sock.write_all(&[0, 0, 0, 3, 0, 0xc1, 0xc1, 0xc1]).expect("write");
        assert_eq!(exit_of(worker).await, ExitState::Exited(ExitStatus::Code(1)));

        // A header announcing 4 GiB: refused before any allocation.
        let (worker, mut sock) = raw_worker().await;
        sock.write_all(&[0xff, 0xff, 0xff, 0xff, 0]).expect("write");
        assert_eq!(exit_of(worker).await, ExitState::Exited(ExitStatus::Code(1)));

        // The stream ends in the middle of a frame.
        let (worker, mut sock) = raw_worker().await;
        sock.write_all(&[0, 0, 0, 9, 0, 1]).expect("write");
        drop(sock);
        assert_eq!(exit_of(worker).await, ExitState::Exited(ExitStatus::Code(1)));

        // The supervisor and forkserver carry on.
        let mut p = crate::Process::new(returns, ());
        p.start().await.expect("start after garbage");
        assert_eq!(p.join().await.expect("join"), 0);
    }
}
