//! Orderly shutdown, both sides of it.
//!
//! In a supervised child: the cooperative stop token
//! ([`stop_requested`], [`stopped`]), the watchdog's [`heartbeat`] and
//! [`request_recycle`]. They talk to the parent over the child's control
//! socket, which is otherwise idle once the child runs its target: the
//! parent sends `ToChild::Stop`, a small reader thread (started on first
//! use, so a child that never asks pays nothing) sets the flag; heartbeats
//! go the other way as tiny frames written without blocking.
//!
//! In a pool worker the stop token is the pool's instead: an [`Event`] in
//! shared memory that every worker of the pool received when it started,
//! set by `Pool::shutdown` (and `terminate`) before any signal is sent.
//! `stop_requested()` reads it (one atomic load); `stopped()` waits on it.
//!
//! In the user program: [`shutdown_on_signals`] resolves on the first
//! SIGTERM or SIGINT, for `pool.shutdown(grace)` / `supervisor.shutdown(grace)`
//! or axum's `with_graceful_shutdown`.
//!
//! The order of an orderly stop, for every child a [`Supervisor`](crate::Supervisor)
//! holds: the stop request at once, SIGTERM after half its grace period,
//! SIGKILL at the end of it.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once, OnceLock};

use tokio::sync::Notify;

use crate::sync::Event;
use crate::wire::{self, BlockingChannel, DEFAULT_MAX_FRAME, FromChild, ToChild};

/// The child's link to its parent, once it runs its target.
struct Link {
    fd: OwnedFd,
    /// Bytes of a frame a non-blocking write could not finish.
    unsent: Mutex<Vec<u8>>,
    reader: Once,
}

static LINK: OnceLock<Link> = OnceLock::new();
/// In a pool worker: the pool's stop token.
static POOL_STOP: OnceLock<Event> = OnceLock::new();
static STOP: AtomicBool = AtomicBool::new(false);
static STOP_NOTIFY: Notify = Notify::const_new();

/// Called by the child side (`tree/child.rs`) once the child has accepted
/// its target: a copy of the control socket.
pub(crate) fn install_control(fd: OwnedFd) {
    let _ = LINK.set(Link { fd, unsent: Mutex::new(Vec::new()), reader: Once::new() });
}

/// Called by a pool worker (`pool/worker.rs`) before it serves calls: the
/// pool's stop token.
pub(crate) fn install_pool_stop(token: Event) {
    let _ = POOL_STOP.set(token);
}

/// Starts the thread that waits for the parent's stop request.
fn listen() {
    let Some(link) = LINK.get() else { return };
    link.reader.call_once(|| {
        let Ok(fd) = link.fd.try_clone() else { return };
        let spawned = std::thread::Builder::new().name("multiproc-stop".into()).spawn(move || {
            let mut ch = BlockingChannel::new(fd, DEFAULT_MAX_FRAME);
            // Until the parent hangs up (a plain `Process` does at once).
            while let Ok(ToChild::Stop) = ch.recv::<ToChild>() {
                STOP.store(true, Ordering::Release);
                STOP_NOTIFY.notify_waiters();
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the stop-request reader");
        }
    });
}

/// Whether this process was asked to stop (`Supervisor::shutdown`, a
/// restart of its group, `remove_child`): finish the current unit of work
/// and return. A process that does not look is sent SIGTERM after half its
/// grace period, SIGKILL at the end of it.
///
/// In a pool worker it turns true when the pool's
/// [`shutdown(grace)`](crate::Pool::shutdown) begins: a long task can wrap
/// up and return its result; one that does not look is sent SIGTERM when the
/// grace period is over and SIGKILL after the pool's `timeout_grace`.
/// Always `false` in a process no supervisor or pool started.
///
/// ```no_run
/// #[multiproc::task]
/// fn consume() {
///     while !multiproc::stop_requested() {
///         // take one job, do it, report it
///     }
/// }
/// ```
pub fn stop_requested() -> bool {
    if let Some(token) = POOL_STOP.get() {
        return token.is_set();
    }
    listen();
    STOP.load(Ordering::Acquire)
}

/// Resolves once this process was asked to stop (see [`stop_requested`]);
/// never, in a process no supervisor or pool started. For `tokio::select!`
/// in async tasks.
pub async fn stopped() {
    if let Some(token) = POOL_STOP.get() {
        match token.wait().await {
            Ok(()) => return,
            // Cannot wait on it (no waiter thread): look every few ms.
            Err(e) => {
                tracing::warn!(error = %e, "cannot wait on the pool's stop token; polling it");
                while !token.is_set() {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                return;
            }
        }
    }
    listen();
    loop {
        let notified = STOP_NOTIFY.notified();
        if STOP.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }
}

/// Tells the supervisor this process is making progress. With a heartbeat
/// timeout in its [`ChildSpec`](crate::ChildSpec), a process that goes
/// longer than that without calling it is killed and restarted. Never
/// blocks; a no-op in a process no supervisor started.
pub fn heartbeat() {
    send(&FromChild::Heartbeat);
}

/// Asks the supervisor for a fresh process in place of this one (a leak
/// noticed, a cache to drop): it is stopped in order and restarted; this
/// does not count towards the restart intensity.
pub fn request_recycle() {
    send(&FromChild::Recycle);
}

fn send(msg: &FromChild) {
    let Some(link) = LINK.get() else { return };
    let Ok(payload) = wire::encode("a message to the supervisor", msg) else { return };
    let Ok(header) = wire::header(payload.len(), 0, DEFAULT_MAX_FRAME) else { return };
    let mut unsent = link.unsent.lock().expect("never held across a panic");
    // A frame left half-written goes first, so frames never interleave; a
    // new one is dropped while the parent is not reading (it is a signal,
    // not data: the next one says the same).
    if unsent.is_empty() {
        unsent.extend_from_slice(&header);
        unsent.extend_from_slice(&payload);
    }
    use nix::sys::socket::{MsgFlags, send};
    use std::os::fd::AsRawFd;
    match send(link.fd.as_raw_fd(), &unsent, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL) {
        Ok(n) => {
            unsent.drain(..n);
        }
        Err(nix::errno::Errno::EAGAIN) => {}
        // The parent is gone or never listened: nothing to tell.
        Err(_) => unsent.clear(),
    }
}

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C) with its number: the
/// moment to start an orderly shutdown. Called within a runtime, it listens
/// from the moment it is called (a signal that comes before the future is
/// first polled is not missed); outside one, from its first poll.
///
/// It listens through `tokio::signal`, so it steals nothing from other
/// `tokio::signal` listeners in the program: each of them is woken too.
/// (From the first call on, those two signals no longer end the process by
/// themselves; that is the point.) A program that handles them some other
/// way (`signal-hook`, its own `sigaction`) should not call this: let its
/// own handler call `shutdown(grace)`.
///
/// With axum, one signal drives both the server and the pool: the server
/// stops accepting and finishes the requests in flight (which may still
/// call the pool), then the pool drains.
///
/// ```no_run
/// # async fn demo(pool: multiproc::Pool) -> multiproc::Result<()> {
/// let signal = multiproc::shutdown_on_signals();
/// // axum::serve(listener, app).with_graceful_shutdown(async move { signal.await; }).await?;
/// signal.await; // (stands for the line above)
/// pool.shutdown(std::time::Duration::from_secs(10)).await;
/// # Ok(()) }
/// ```
pub fn shutdown_on_signals() -> impl Future<Output = i32> + Send + 'static {
    use tokio::signal::unix::{Signal, SignalKind, signal};
    fn listen() -> Option<(Signal, Signal)> {
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(term), Ok(int)) => Some((term, int)),
            _ => {
                tracing::warn!("cannot listen for SIGTERM/SIGINT");
                None
            }
        }
    }
    let early = tokio::runtime::Handle::try_current().ok().and_then(|_| listen());
    async move {
        let Some((mut term, mut int)) = early.or_else(listen) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => nix::libc::SIGTERM,
            _ = int.recv() => nix::libc::SIGINT,
        }
    }
}
