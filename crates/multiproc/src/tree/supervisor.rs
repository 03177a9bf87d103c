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
//! The start path skips this thread: a caller writes its spawn request
//! straight to the forkserver's direct socket (`SOCK_SEQPACKET`, one whole
//! request per datagram, so callers on any thread never interleave), then
//! queues a `Register` here without waking this thread; the forkserver's
//! `Started` report wakes it later. Its hello is in the child's socket
//! before the fork. The exit path skips it too: each child has a report
//! socket on which the forkserver writes its exit status the moment it
//! reaps it, read in the caller's runtime, and a `Process` child sends its
//! own pidfd with `Ready`, through which the same reader sees it end the
//! moment it is a zombie, before the forkserver has woken; the `Exited`
//! report still comes here (for the books: live children, orderly exit),
//! and whichever word arrives first sets the child's exit. When the direct
//! socket is full or gone, a request goes through this thread as before.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use multiproc_sys::fdpass::MAX_FDS_PER_MESSAGE;
use multiproc_sys::process as sys;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use tokio::sync::watch;

use super::role::{DIRECT_FD_ENV, FORKSERVER_DIRECT_FD, FORKSERVER_FD, role_env};
use crate::current::ChildProcess;
use crate::error::{Error, ExitStatus, Result};
use crate::wire::fds::PassFd;
use crate::wire::{BlockingChannel, DEFAULT_MAX_FRAME, FrameWriter, FromForkserver, Hello, ToForkserver};

/// Grace between SIGTERM and SIGKILL for daemonic children at exit.
const EXIT_GRACE: Duration = Duration::from_secs(1);
/// How long a freshly executed forkserver may take to answer our hello.
const FORKSERVER_START: Duration = Duration::from_secs(20);
/// Longest pause after a failed `poll` (a persistent error must not spin).
const POLL_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Fds one spawn request carries: the child's control socket and its exit
/// report socket.
const SPAWN_FDS: usize = 2;

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
    /// Where the child's own pidfd goes once it has sent it (with `Ready`):
    /// its exit is then seen the moment it is a zombie.
    pub own_pidfd: Option<tokio::sync::oneshot::Sender<(u32, OwnedFd)>>,
}

/// Spawn ids, unique in this process for its whole life.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

enum Request {
    /// Send this spawn request on the control stream (the direct socket was
    /// full or gone).
    Spawn {
        id: SpawnId,
        request: ToForkserver,
        name: String,
        daemon: bool,
        child: Pending,
    },
    /// A spawn request went on the direct socket of forkserver `generation`.
    Register {
        id: SpawnId,
        generation: u64,
        name: String,
        daemon: bool,
        child: Pending,
    },
    Signal {
        id: SpawnId,
        signal: i32,
    },
    Shutdown {
        done: mpsc::Sender<()>,
    },
}

/// What the supervisor keeps for a child until its `Started` report.
struct Pending {
    exit: ExitSlot,
    started: watch::Sender<Option<u32>>,
}

/// Where a child's end is published, by one of two readers: the task
/// reading its direct report (in the caller's runtime) while that task
/// lives, else the supervisor thread. While the task lives, the supervisor
/// only leaves what it learnt for the task, which publishes it (after
/// closing its socket, so a joined child holds no fd of ours) when its
/// report never comes; a task that ends (or its runtime) hands over.
#[derive(Clone)]
struct ExitSlot {
    exit: watch::Sender<Option<ExitState>>,
    handoff: std::sync::Arc<Mutex<Handoff>>,
}

struct Handoff {
    /// The direct reader still runs.
    reader: bool,
    /// What the supervisor learnt meanwhile.
    learnt: Option<ExitState>,
}

impl ExitSlot {
    fn new(exit: watch::Sender<Option<ExitState>>) -> Self {
        Self { exit, handoff: std::sync::Arc::new(Mutex::new(Handoff { reader: true, learnt: None })) }
    }

    fn handoff(&self) -> std::sync::MutexGuard<'_, Handoff> {
        self.handoff.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The supervisor's word on how the child ended.
    fn publish(&self, state: ExitState) {
        let mut h = self.handoff();
        if h.reader {
            h.learnt.get_or_insert(state);
        } else {
            drop(h);
            finish(&self.exit, state);
        }
    }

    /// The direct reader is done (its socket closed): publishes its own
    /// word, else what the supervisor left; from now on the supervisor
    /// publishes.
    fn reader_done(&self, state: Option<ExitState>) {
        let mut h = self.handoff();
        h.reader = false;
        if let Some(state) = state.or_else(|| h.learnt.take()) {
            drop(h);
            finish(&self.exit, state);
        }
    }
}

/// Hands the slot over to the supervisor if the reading task is dropped
/// before it finished (its runtime shut down).
struct ReaderGuard(Option<ExitSlot>);

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            slot.reader_done(None);
        }
    }
}

/// Sets a child's end unless it is already known: the direct report and
/// the supervisor's both say how it ended; the first one stays.
fn finish(exit: &watch::Sender<Option<ExitState>>, state: ExitState) {
    exit.send_if_modified(|s| {
        if s.is_none() {
            *s = Some(state);
            true
        } else {
            false
        }
    });
}

/// The children that said `Ready` and whose end is not known yet, shared by
/// callers (who add them) and the supervisor thread (which removes them
/// once their exit is set): what `active_children` lists.
#[derive(Default)]
struct Children {
    by_id: HashMap<SpawnId, (ChildProcess, watch::Receiver<Option<ExitState>>)>,
}

impl Children {
    fn remove(&mut self, id: SpawnId) {
        self.by_id.remove(&id);
    }
}

static CHILDREN: std::sync::LazyLock<Mutex<Children>> = std::sync::LazyLock::new(Mutex::default);

fn children() -> std::sync::MutexGuard<'static, Children> {
    CHILDREN.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The forkserver's direct request socket and which forkserver it reaches.
struct Direct {
    generation: u64,
    /// The forkserver's pid: the parent of every child requested here.
    pid: u32,
    sock: OwnedFd,
}

/// Held while a caller writes a request and queues its `Register`, so the
/// supervisor, by taking it, knows every request already written is
/// registered too.
static DIRECT: Mutex<Option<Direct>> = Mutex::new(None);

fn direct() -> std::sync::MutexGuard<'static, Option<Direct>> {
    DIRECT.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Handle {
    requests: Mutex<mpsc::Sender<Request>>,
    wake: EventFd,
}

static SUPERVISOR: OnceLock<Handle> = OnceLock::new();

fn handle() -> Result<&'static Handle> {
    if let Some(h) = SUPERVISOR.get() {
        return Ok(h);
    }
    super::boot::ensure_linked();
    let mut started = None;
    let h = SUPERVISOR.get_or_init(|| {
        // Every child costs this process a few fds: a pool of a few hundred
        // workers must not stop at the usual soft limit of 1024. Children
        // inherit the raised limit.
        if let Err(e) = multiproc_sys::fd::raise_fd_limit() {
            tracing::debug!(error = %e, "could not raise the fd limit");
        }
        let (tx, rx) = mpsc::channel();
        let wake =
            EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK).expect("eventfd is available on Linux");
        let thread = Supervisor {
            requests: rx,
            wake: wake.as_fd().try_clone_to_owned().expect("dup of a fresh eventfd"),
            forkserver: None,
            generation: 0,
            unflushed_fds: 0,
            pending: HashMap::new(),
            live: HashMap::new(),
            shutdown: Vec::new(),
            kill_at: None,
        };
        started = Some(std::thread::Builder::new().name("multiproc-supervisor".into()).spawn(move || thread.run()));
        Handle { requests: Mutex::new(tx), wake }
    });
    if let Some(Err(e)) = started {
        return Err(e.into());
    }
    if started.is_some() {
        sys::at_exit(at_exit)?;
    }
    Ok(h)
}

/// Whether this process started its supervisor (it has children to see
/// to at exit).
pub(crate) fn started() -> bool {
    SUPERVISOR.get().is_some()
}

impl Handle {
    fn send(&self, req: Request) -> Result<()> {
        self.queue(req)?;
        self.wake.write(1)?;
        Ok(())
    }

    /// Queues a request without waking the thread (something else will).
    fn queue(&self, req: Request) -> Result<()> {
        self.requests
            .lock()
            .expect("supervisor queue lock is never held across a panic")
            .send(req)
            .map_err(|_| Error::Closed("supervisor"))
    }
}

/// Asks for a child whose end of the control socket is `control`, and
/// returns at once: talk to the child on the other end (its hello names its
/// pid); `exit` says if it could not be started, and later how it ended.
/// Call it on a tokio runtime: the child's direct exit report is read there.
pub(crate) fn spawn(exec: bool, control: OwnedFd, name: String, daemon: bool) -> Result<Spawned> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    let h = handle()?;
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let (exit, rx) = watch::channel(None);
    let (started, started_rx) = watch::channel(None);
    let (report, report_theirs) =
        socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK)?;
    let request = ToForkserver::Spawn { id, exec, control: PassFd(control), report: PassFd(report_theirs) };
    let started_direct = started.clone();
    let slot = ExitSlot::new(exit);
    let child = Pending { exit: slot.clone(), started };
    // The forkserver a direct request went to: the child's parent.
    let mut parent = None;
    {
        let direct = direct();
        match direct.as_ref().map(|d| (d.generation, d.pid, send_direct(d, &request))) {
            Some((generation, pid, Ok(()))) => {
                parent = Some(pid);
                // Before the lock goes: see `DIRECT`.
                h.queue(Request::Register { id, generation, name, daemon, child })?;
            }
            _ => {
                drop(direct);
                h.send(Request::Spawn { id, request, name, daemon, child })?;
            }
        }
    }
    let (own_pidfd, pidfd) = tokio::sync::oneshot::channel();
    watch_exit(report, parent.map(|p| (p, pidfd)), slot, started_direct);
    Ok(Spawned { id, pid: 0, exit: rx, started: started_rx, own_pidfd: Some(own_pidfd) })
}

/// Writes one spawn request on the direct socket, whole or not at all.
fn send_direct(direct: &Direct, request: &ToForkserver) -> Result<()> {
    let mut writer = FrameWriter::default();
    writer.push(DEFAULT_MAX_FRAME, |buf| {
        let (r, fds) = crate::wire::fds::capture(|| {
            rmp_serde::encode::write(buf, request).map_err(|e| Error::encode("a spawn request", e))
        });
        r.map(|()| fds)
    })?;
    writer.write_to(direct.sock.as_fd())?;
    // A datagram goes whole or fails; anything else is not a direct socket.
    if writer.is_empty() { Ok(()) } else { Err(Error::Malformed("a spawn request was cut".into())) }
}

/// Learns the child's end in the caller's runtime, from whichever comes
/// first: the forkserver's direct report (its pid and status, sent when it
/// reaps the child), or the child's own pidfd turning readable (it sends
/// one with `Ready`), which happens the moment it is a zombie, before the
/// forkserver has even woken; its status is then read from `/proc`
/// (`exit_of_zombie`, which refuses anything it cannot prove is that
/// child's) and the report is not waited for.
fn watch_exit(
    report: OwnedFd,
    pidfd: Option<(u32, tokio::sync::oneshot::Receiver<(u32, OwnedFd)>)>,
    slot: ExitSlot,
    started: watch::Sender<Option<u32>>,
) {
    use tokio::io::Interest;
    if tokio::runtime::Handle::try_current().is_err() {
        slot.reader_done(None);
        return;
    }
    // Registered for readiness only (any socket type does); the reads are
    // plain `recv`s.
    let report = match tokio::net::UnixStream::from_std(std::os::unix::net::UnixStream::from(report)) {
        Ok(r) => r,
        Err(_) => {
            slot.reader_done(None);
            return;
        }
    };
    let mut guard = ReaderGuard(Some(slot));
    tokio::spawn(async move {
        let mut buf = [0u8; super::forkserver::EXIT_REPORT_LEN + 1];
        let got = {
            let own = own_end(pidfd);
            tokio::pin!(own);
            loop {
                tokio::select! {
                    biased;
                    ready = report.readable() => {
                        if ready.is_err() {
                            break None;
                        }
                        let got = report.try_io(Interest::READABLE, || {
                            use std::os::fd::AsRawFd;
                            let flags = nix::sys::socket::MsgFlags::MSG_DONTWAIT;
                            Ok(nix::sys::socket::recv(report.as_raw_fd(), &mut buf, flags)?)
                        });
                        match got {
                            Ok(n) => break buf.get(..n).and_then(super::forkserver::parse_exit_report),
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(_) => break None,
                        }
                    }
                    ended = &mut own => break Some(ended),
                }
            }
        };
        // Closed before the exit is published: a joined child holds no fd.
        drop(report);
        let Some(slot) = guard.0.take() else { return };
        match got {
            Some((pid, status)) => {
                started.send_if_modified(|p| p.is_none() && p.replace(pid).is_none());
                slot.reader_done(Some(ExitState::Exited(status)));
            }
            // The forkserver went (or never got the request): the
            // supervisor's word, now or later.
            None => slot.reader_done(None),
        }
    });
}

/// The child's end as its own pidfd tells it (see [`watch_exit`]), while
/// it is still the zombie of `parent`, the forkserver: one whose forkserver
/// died first is reparented, and its end is the supervisor's word
/// (`ForkserverLost`), as documented. Pending forever if the pidfd never
/// comes or cannot prove the end (the child was reaped first): the
/// forkserver's report then decides.
async fn own_end(pidfd: Option<(u32, tokio::sync::oneshot::Receiver<(u32, OwnedFd)>)>) -> (u32, ExitStatus) {
    if let Some((parent, pidfd)) = pidfd
        && let Ok((pid, fd)) = pidfd.await
    {
        // Often gone already: its `Ready` woke us, but its exit ran first
        // on the core we share.
        if let Some(exit) = sys::exit_of_zombie(pid, parent, fd.as_fd()) {
            return (pid, exit.into());
        }
        if let Ok(fd) = multiproc_sys::fd::register_readable(fd)
            && fd.readable().await.is_ok()
            && let Some(exit) = sys::exit_of_zombie(pid, parent, fd.get_ref().as_fd())
        {
            return (pid, exit.into());
        }
    }
    std::future::pending().await
}

/// Records a child that accepted its work (for `active_children`), unless
/// its end is already known.
pub(crate) fn ready(spawned: &Spawned, name: &str, daemon: bool) {
    let mut children = children();
    if spawned.exit.borrow().is_none() {
        let pid = spawned.pid;
        let info = ChildProcess { name: name.to_owned(), pid, daemon };
        children.by_id.insert(spawned.id, (info, spawned.exit.clone()));
    }
}

/// Sends a signal to child `id` if the forkserver has not reaped it yet.
/// Signals are addressed by spawn id only, never by pid: a child reaped
/// meanwhile is not confused with a newer process that got its pid.
pub(crate) fn signal_child(id: SpawnId, signal: i32) -> Result<()> {
    handle()?.send(Request::Signal { id, signal })
}

pub(crate) fn active_children() -> Vec<ChildProcess> {
    let mut v: Vec<ChildProcess> =
        children().by_id.values().filter(|(_, exit)| exit.borrow().is_none()).map(|(c, _)| c.clone()).collect();
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
    generation: u64,
}

struct Live {
    pid: u32,
    exit: ExitSlot,
    daemon: bool,
}

struct Supervisor {
    requests: mpsc::Receiver<Request>,
    wake: OwnedFd,
    forkserver: Option<Forkserver>,
    /// Forkservers started so far (the current one's number).
    generation: u64,
    /// Fds fed to the forkserver channel since its last flush.
    unflushed_fds: usize,
    pending: HashMap<SpawnId, (String, bool, Pending)>,
    live: HashMap<SpawnId, Live>,
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
            Request::Register { id, generation, name, daemon, child } => {
                if self.forkserver.as_ref().is_some_and(|fs| fs.generation == generation) {
                    self.pending.insert(id, (name, daemon, child));
                } else {
                    // The forkserver it went to is gone, and the child with it.
                    child.exit.publish(ExitState::Lost);
                    children().remove(id);
                }
            }
            Request::Spawn { id, request, name, daemon, child } => {
                let not_started = |child: Pending, e: Error| {
                    child.exit.publish(ExitState::NotStarted(e.chain().to_string()));
                };
                if let Err(e) = self.ensure_forkserver() {
                    not_started(child, e);
                    return;
                }
                // One write carries at most SCM_RIGHTS' limit of fds: send
                // what is queued before it would overflow.
                if self.unflushed_fds + SPAWN_FDS > MAX_FDS_PER_MESSAGE {
                    self.flush_forkserver();
                    if let Err(e) = self.ensure_forkserver() {
                        not_started(child, e);
                        return;
                    }
                }
                let fs = self.forkserver.as_mut().expect("ensured above");
                match fs.ch.feed(&request) {
                    Ok(()) => {
                        self.unflushed_fds += SPAWN_FDS;
                        self.pending.insert(id, (name, daemon, child));
                    }
                    Err(e) => not_started(child, e),
                }
            }
            Request::Signal { id, signal } => {
                // A child still pending is known to the forkserver too: its
                // spawn request went first, on the same stream or on the
                // direct socket, which the forkserver reads first.
                if (self.live.contains_key(&id) || self.pending.contains_key(&id))
                    && let Some(fs) = &mut self.forkserver
                {
                    tracing::debug!(id, signal, "signalling child");
                    let _ = fs.ch.feed(&ToForkserver::Signal { id, signal });
                }
            }
            Request::Shutdown { done } => {
                // Pending ones too: the forkserver reports `Started` lazily.
                for id in self.daemons() {
                    if let Some(fs) = &mut self.forkserver {
                        tracing::debug!(id, "terminating daemonic child at exit");
                        let _ = fs.ch.feed(&ToForkserver::Signal { id, signal: nix::libc::SIGTERM });
                    }
                }
                self.kill_at.get_or_insert(Instant::now() + EXIT_GRACE);
                self.shutdown.push(done);
            }
        }
    }

    /// Daemonic children, started or about to be.
    fn daemons(&self) -> Vec<SpawnId> {
        let live = self.live.iter().filter(|(_, l)| l.daemon).map(|(&id, _)| id);
        live.chain(self.pending.iter().filter(|(_, (_, daemon, _))| *daemon).map(|(&id, _)| id)).collect()
    }

    fn check_shutdown(&mut self) {
        if self.shutdown.is_empty() {
            return;
        }
        if self.kill_at.is_some_and(|at| Instant::now() >= at) {
            self.kill_at = None;
            let daemons = self.daemons();
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
                let Forkserver { ch, pidfd, pid, .. } = fs;
                direct().take();
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
        // A report on a child requested directly may come before its
        // `Register`: once `DIRECT`'s lock is ours, every request written
        // is registered.
        let known = |id: &SpawnId| self.pending.contains_key(id) || self.live.contains_key(id);
        let unknown = reports.iter().any(|r| match r {
            FromForkserver::Started { id, .. } | FromForkserver::SpawnFailed { id, .. } => !known(id),
            FromForkserver::Exited { .. } => false,
        });
        if unknown {
            drop(direct());
            while let Ok(req) = self.requests.try_recv() {
                self.handle(req);
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
                self.live.insert(id, Live { pid, exit: child.exit, daemon });
            }
            FromForkserver::SpawnFailed { id, reason } => {
                if let Some((_, _, child)) = self.pending.remove(&id) {
                    child.exit.publish(ExitState::NotStarted(format!("fork a child: {reason}")));
                }
            }
            FromForkserver::Exited { id, status } => {
                if let Some(live) = self.live.remove(&id) {
                    tracing::debug!(id, pid = live.pid, %status, "process exited");
                    // Exit first, then the books (see `ready`).
                    live.exit.publish(ExitState::Exited(status));
                    children().remove(id);
                }
            }
        }
    }

    fn forkserver_lost(&mut self) {
        let Some(fs) = self.forkserver.take() else { return };
        // No request goes its way any more; one already written is
        // registered with its generation and found lost.
        direct().take();
        // It is our child: reap it (it may still be exiting).
        let _ = sys::pidfd_send_signal(fs.pidfd.as_fd(), nix::libc::SIGKILL);
        let _ = wait_reap(&fs.pidfd);
        tracing::warn!(
            pid = fs.pid,
            children = self.live.len(),
            "the forkserver died; its children are lost; it restarts on the next start"
        );
        self.unflushed_fds = 0;
        for (_, live) in self.live.drain() {
            live.exit.publish(ExitState::Lost);
        }
        for (_, (_, _, child)) in self.pending.drain() {
            child.exit.publish(ExitState::NotStarted("the forkserver died before starting it".into()));
        }
        // Exits first, then the books (see `ready`).
        *children() = Children::default();
    }

    fn ensure_forkserver(&mut self) -> Result<()> {
        if self.forkserver.is_none() {
            let (fs, sock) = start_forkserver(self.generation + 1)?;
            self.generation = fs.generation;
            *direct() = Some(Direct { generation: fs.generation, pid: fs.pid, sock });
            self.forkserver = Some(fs);
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

/// Re-executes this binary as the forkserver and shakes hands with it;
/// returns it and our end of its direct request socket.
fn start_forkserver(generation: u64) -> Result<(Forkserver, OwnedFd)> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)?;
    let (direct, direct_theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)?;
    multiproc_sys::fd::set_nonblocking(direct.as_fd())?;
    let mut cmd = Command::new("/proc/self/exe");
    {
        use std::os::unix::process::CommandExt;
        // What `ps -f` shows; the forkserver sets its short name itself.
        cmd.arg0("multiproc-forkserver");
    }
    cmd.envs(role_env("forkserver", FORKSERVER_FD, std::process::id()));
    cmd.env(DIRECT_FD_ENV, FORKSERVER_DIRECT_FD.to_string());
    // The forkserver, and every child it forks, belongs to this process's
    // tree (and shares its resource tracker).
    cmd.envs(super::tracker::child_env(std::process::id()));
    super::boot::boot_env(&mut cmd);
    let _kept = sys::command_with_fds(
        &mut cmd,
        &[(theirs.as_fd(), FORKSERVER_FD), (direct_theirs.as_fd(), FORKSERVER_DIRECT_FD)],
        true,
    )?;
    let child = cmd.spawn()?;
    drop(theirs);
    drop(direct_theirs);
    let pid = child.id();
    let pidfd = sys::pidfd_open(pid as i32)?;
    multiproc_sys::fd::set_nonblocking(ours.as_fd())?;
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
    Ok((Forkserver { ch, pidfd, pid, generation }, direct))
}

#[cfg(test)]
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
