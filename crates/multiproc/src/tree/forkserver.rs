//! The forkserver (zygote): a re-executed copy of the binary that forks
//! children on request, reaps them and reports how they ended.
//!
//! Architecture invariant: this process is single-threaded. It never starts a
//! runtime or a thread, so `fork` here is always safe (and checked:
//! `fork_single_threaded` refuses otherwise). Only the process that started it
//! holds the other end of its socket; when that end closes, the forkserver
//! kills its children and exits.
//!
//! It ignores the signals a terminal or service manager sends a whole
//! process group (SIGINT, SIGTERM, SIGHUP, SIGQUIT): a `kill -TERM -<pgid>`
//! must not take every worker down while the application drains. It ends
//! only when its socket closes (it then stops its children) or its parent
//! dies (the parent-death signal; its children carry one tied to it).
//!
//! Children are named by the spawn id the supervisor chose, never by pid:
//! a signal for a child already reaped finds nothing, even if its pid was
//! reused.
//!
//! A forked child closes every fd but its own control socket before
//! anything else: the forkserver may hold the control sockets of siblings
//! queued in the same read.
//!
//! Forking is kept off the starter's path: after serving a spawn request the
//! forkserver forks one *spare* child ahead of need (Android's zygote keeps
//! a pool of unspecialised processes for the same reason), but only once a
//! look at its fds finds nothing else to do: an exit to report or a request
//! to serve never waits behind a fork. (The child a request was handed to
//! often runs on the forkserver's core, so the forkserver resumes only when
//! that child has exited; forking first delayed its exit report by the
//! fork, ~50 µs of a ~300 µs start and join.) The spare closes
//! every fd but its link to the forkserver and waits there; the next request
//! hands it its control socket (one message to a process already running)
//! and from then on it is that request's child in every respect. A spare
//! that dies is reaped and not replaced until the next request; a spare the
//! link cannot reach is killed, reaped, and the request forks as before. A
//! spare killed just before a request may still take it (its link is open
//! until it has died): that start fails as `WorkerLost`, as for a child
//! killed right after its fork.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::Command;

use multiproc_sys::process::{self as sys, Fork};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::role::{ControlFd, DIRECT_FD_ENV, role_env};
use crate::error::{Error, ExitStatus, Result};
use crate::wire::{BlockingChannel, DEFAULT_MAX_FRAME, FromForkserver, Hello, ToForkserver};

/// A child forked ahead of need, waiting on `link` for its control socket.
struct Spare {
    pid: u32,
    pidfd: OwnedFd,
    link: OwnedFd,
}

struct Child {
    id: u64,
    pid: u32,
    pidfd: OwnedFd,
    /// Where the child's exit status goes first: its starter's own socket.
    report: OwnedFd,
    /// A former spare's link, kept until the child is reaped: closed right
    /// after the hand-over, while the control socket it carried may still
    /// be queued in it, it makes the kernel schedule its AF_UNIX garbage
    /// collector (a kernel worker woken per start, and meanwhile every
    /// unix socket closed on the machine schedules it again). By the reap
    /// the child has taken the socket or is gone.
    _link: Option<OwnedFd>,
}

/// Length of a direct exit report.
pub(crate) const EXIT_REPORT_LEN: usize = 12;

/// The direct exit report: a tag (0: exit code, 1: signal), three zero
/// bytes, the number (little-endian `i32`), the child's pid (`u32`).
pub(crate) fn exit_report(pid: u32, status: ExitStatus) -> [u8; EXIT_REPORT_LEN] {
    let (tag, n) = match status {
        ExitStatus::Code(c) => (0u8, c),
        ExitStatus::Signal(s) => (1u8, s),
    };
    let mut b = [0u8; EXIT_REPORT_LEN];
    b[0] = tag;
    b[4..8].copy_from_slice(&n.to_le_bytes());
    b[8..].copy_from_slice(&pid.to_le_bytes());
    b
}

/// Reads a direct exit report; `None` for anything else.
pub(crate) fn parse_exit_report(b: &[u8]) -> Option<(u32, ExitStatus)> {
    let b: &[u8; EXIT_REPORT_LEN] = b.try_into().ok()?;
    if b[1..4] != [0, 0, 0] {
        return None;
    }
    let n = i32::from_le_bytes(b[4..8].try_into().ok()?);
    let pid = u32::from_le_bytes(b[8..].try_into().ok()?);
    let status = match b[0] {
        0 => ExitStatus::Code(n),
        1 if n > 0 => ExitStatus::Signal(n),
        _ => return None,
    };
    (pid > 0).then_some((pid, status))
}

/// How long `Started` and `Exited` reports may wait to go to the
/// supervisor together: nobody waits on them (each starter learns its
/// child's end from its direct report), so they are batched rather than
/// wake the supervisor thread twice per child. `SpawnFailed` goes at once.
const REPORT_BATCH: std::time::Duration = std::time::Duration::from_millis(2);

pub(crate) fn run(fd: ControlFd) -> ! {
    let code = match serve(fd) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("multiproc forkserver {}: {e}", std::process::id());
            1
        }
    };
    std::process::exit(code)
}

fn serve(fd: ControlFd) -> Result<()> {
    // Ctrl-C and group SIGTERMs reach the whole process group; the
    // application decides.
    sys::ignore_group_signals()?;
    let _ = sys::set_process_name("mp-forkserver");
    // The direct request socket, when the starter gave one.
    // Non-blocking: it is read until it has nothing more.
    let mut direct = sys::take_inherited_fd(DIRECT_FD_ENV)
        .ok()
        .filter(|fd| multiproc_sys::fd::set_nonblocking(fd.as_fd()).is_ok())
        .map(|fd| BlockingChannel::datagrams(fd, DEFAULT_MAX_FRAME));
    let mut ch = BlockingChannel::new(fd, DEFAULT_MAX_FRAME);
    let hello: Hello = ch.recv()?;
    hello.check().map_err(Error::Handshake)?;
    ch.send(&Hello::ours())?;
    crate::registry::warm();
    let mut children: Vec<Child> = Vec::new();
    let mut spare: Option<Spare> = None;
    // Set by a spawn request: make a spare once the requests are served.
    let mut want_spare = false;
    // When the reports queued for the supervisor must go at the latest.
    let mut flush_by: Option<std::time::Instant> = None;
    loop {
        let mut urgent = false;
        // A spare is forked only once a look finds nothing to do (see the
        // module doc): until then the look does not wait.
        let fork_now = want_spare && spare.is_none();
        // The fds polled: the control stream, the direct socket (if any),
        // the spare's pidfd (if any), then one pidfd per child.
        let spare_at = 1 + usize::from(direct.is_some());
        let first_child = spare_at + usize::from(spare.is_some());
        let (control_ready, direct_ready, spare_ended, exited) = {
            let mut fds = Vec::with_capacity(children.len() + first_child);
            fds.push(PollFd::new(ch.fd(), PollFlags::POLLIN));
            if let Some(d) = &direct {
                fds.push(PollFd::new(d.fd(), PollFlags::POLLIN));
            }
            if let Some(s) = &spare {
                fds.push(PollFd::new(s.pidfd.as_fd(), PollFlags::POLLIN));
            }
            fds.extend(children.iter().map(|c| PollFd::new(c.pidfd.as_fd(), PollFlags::POLLIN)));
            let timeout = if fork_now { PollTimeout::ZERO } else { multiproc_sys::fd::timeout_until(flush_by) };
            match poll(&mut fds, timeout) {
                Ok(0) if fork_now => {
                    want_spare = false;
                    // No spare this time (fork failed): the next request forks.
                    spare = fork_spare().ok();
                    continue;
                }
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
            let exited: Vec<usize> =
                fds[first_child..].iter().enumerate().filter(|(_, f)| ready(f)).map(|(i, _)| i).collect();
            let spare_ended = first_child > spare_at && ready(&fds[spare_at]);
            (ready(&fds[0]), spare_at == 2 && ready(&fds[1]), spare_ended, exited)
        };
        if spare_ended && let Some(s) = spare.take() {
            // Killed while waiting (nothing was handed to it): reap it.
            retire(s);
        }
        for i in exited.into_iter().rev() {
            if let Some(exit) = sys::try_reap(children[i].pidfd.as_fd())? {
                let child = children.swap_remove(i);
                let status = ExitStatus::from(exit);
                // First to the starter, straight (it may have gone: no
                // matter, the report below reaches its supervisor).
                let sent = nix::sys::socket::send(
                    child.report.as_raw_fd(),
                    &exit_report(child.pid, status),
                    nix::sys::socket::MsgFlags::MSG_NOSIGNAL | nix::sys::socket::MsgFlags::MSG_DONTWAIT,
                );
                // Not delivered: the supervisor's report is the only one,
                // and goes at once. A closed socket is the common case, not
                // a loss: the starter saw the exit through the child's own
                // pidfd already (`supervisor::watch_exit`); if instead its
                // runtime ended, the report goes within `REPORT_BATCH`.
                urgent |= matches!(sent, Err(e) if e != nix::errno::Errno::EPIPE);
                ch.feed(&FromForkserver::Exited { id: child.id, status })?;
            }
        }
        // Direct requests first: a signal on the control stream for a child
        // requested directly was sent after that request, so the child must
        // be known when the signal is read.
        if direct_ready && let Some(d) = &mut direct {
            // One datagram (one request) per wake-up: `poll` says at once
            // if more are queued, where reading on until `EAGAIN` costs a
            // failed read per request.
            let mut open = d.read_available().is_ok() && !d.is_eof();
            loop {
                match d.try_recv::<ToForkserver>() {
                    Ok(Some(req)) => urgent |= handle(req, &mut ch, &mut children, &mut spare, &mut want_spare)?,
                    Ok(None) => break,
                    Err(_) => {
                        open = false;
                        break;
                    }
                }
            }
            if !open {
                // Every caller's end is closed (or it wrote garbage): spawn
                // requests keep coming on the control stream.
                direct = None;
            }
        }
        if control_ready {
            ch.read_available()?;
            loop {
                match ch.try_recv::<ToForkserver>() {
                    Ok(Some(req)) => urgent |= handle(req, &mut ch, &mut children, &mut spare, &mut want_spare)?,
                    Ok(None) => break,
                    Err(Error::Eof) => {
                        // Our parent is gone or done with us: nothing we
                        // started may outlive it.
                        if let Some(s) = spare.take() {
                            retire(s);
                        }
                        stop_all(&mut children);
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        if urgent || flush_by.is_some_and(|at| std::time::Instant::now() >= at) {
            ch.flush()?;
            flush_by = None;
        } else if !ch.is_flushed() {
            flush_by.get_or_insert_with(|| std::time::Instant::now() + REPORT_BATCH);
        }
    }
}

/// Time children get between SIGTERM and SIGKILL when the parent is gone.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// Terminates every child, waits up to [`STOP_GRACE`] for them, kills the
/// rest and reaps them all.
fn stop_all(children: &mut Vec<Child>) {
    for c in children.iter() {
        let _ = sys::pidfd_send_signal(c.pidfd.as_fd(), nix::libc::SIGTERM);
    }
    let deadline = std::time::Instant::now() + STOP_GRACE;
    while !children.is_empty() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        let mut fds: Vec<PollFd<'_>> =
            children.iter().map(|c| PollFd::new(c.pidfd.as_fd(), PollFlags::POLLIN)).collect();
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX).max(1);
        if poll(&mut fds, PollTimeout::from(ms)).is_err() {
            break;
        }
        drop(fds);
        children.retain(|c| !matches!(sys::try_reap(c.pidfd.as_fd()), Ok(Some(_))));
    }
    for c in children.iter() {
        let _ = sys::pidfd_send_signal(c.pidfd.as_fd(), nix::libc::SIGKILL);
    }
}

/// Carries out one request; `Ok(true)` when the report it queued must go
/// to the supervisor at once.
fn handle(
    req: ToForkserver,
    ch: &mut BlockingChannel,
    children: &mut Vec<Child>,
    spare: &mut Option<Spare>,
    want_spare: &mut bool,
) -> Result<bool> {
    match req {
        ToForkserver::Spawn { id, exec, control, report } => {
            *want_spare = true;
            let started = match spare.take() {
                Some(s) => hand_over(s, exec, control.0).map(|(pid, pidfd, link)| (pid, pidfd, Some(link))),
                None => Err(control.0),
            }
            .or_else(|control| fork_child(exec, control).map(|(pid, pidfd)| (pid, pidfd, None)));
            let reply = match started {
                Ok((pid, pidfd, link)) => {
                    children.push(Child { id, pid, pidfd, report: report.0, _link: link });
                    FromForkserver::Started { id, pid }
                }
                Err(e) => FromForkserver::SpawnFailed { id, reason: e.to_string() },
            };
            let urgent = matches!(reply, FromForkserver::SpawnFailed { .. });
            ch.feed(&reply).map(|()| urgent)
        }
        ToForkserver::Signal { id, signal } => {
            if let Some(c) = children.iter().find(|c| c.id == id) {
                let _ = sys::pidfd_send_signal(c.pidfd.as_fd(), signal);
            }
            Ok(false)
        }
    }
}

/// Forks a child for one request: its pid and pidfd.
fn fork_child(exec: bool, control: OwnedFd) -> Result<(u32, OwnedFd)> {
    let me = std::process::id();
    match sys::fork_single_threaded()? {
        Fork::Parent(pid) => Ok((pid as u32, pidfd_of(pid)?)),
        Fork::Child => {
            // Keep only what this child was given: its control socket.
            // Everything else (our channel, pidfds, siblings' control
            // sockets still queued) goes, before any user code runs. The
            // frames owning those fds never run again here: this branch
            // exits or execs.
            if sys::close_all_fds_except(&[control.as_raw_fd()]).is_err() {
                sys::exit_now(70);
            }
            if sys::die_with_parent(me as i32).is_err() {
                sys::exit_now(70);
            }
            if exec { exec_worker(control, me) } else { super::child::run_forked(control) }
        }
    }
}

/// A pidfd for a child just forked; if none can be had the child is killed
/// and reaped at once (nothing could watch it).
fn pidfd_of(pid: i32) -> Result<OwnedFd> {
    sys::pidfd_open(pid).map_err(|e| {
        let pid = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
        e.into()
    })
}

/// Forks a spare: it keeps only its end of the link and waits there for
/// the control socket of the request it will serve.
fn fork_spare() -> Result<Spare> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    let (link, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)?;
    let me = std::process::id();
    match sys::fork_single_threaded()? {
        Fork::Parent(pid) => Ok(Spare { pid: pid as u32, pidfd: pidfd_of(pid)?, link }),
        Fork::Child => {
            // As for any child: nothing of the forkserver's survives but
            // the link (see `fork_child`).
            if sys::close_all_fds_except(&[theirs.as_raw_fd()]).is_err() || sys::die_with_parent(me as i32).is_err() {
                sys::exit_now(70);
            }
            let _ = sys::set_process_name("mp-spare");
            super::child::rehearse();
            let (exec, control) = wait_for_work(theirs);
            if exec { exec_worker(control, me) } else { super::child::run_forked(control) }
        }
    }
}

/// The spare's wait: one message, one byte (`exec`) and one fd. Anything
/// else (the link closed: the forkserver retired it or is gone) ends it.
fn wait_for_work(link: OwnedFd) -> (bool, OwnedFd) {
    let mut byte = [0u8; 1];
    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut cmsg = multiproc_sys::fdpass::CmsgBuffer::default();
    loop {
        match multiproc_sys::fdpass::recv(link.as_fd(), &mut byte, &mut cmsg, &mut fds) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(1) if fds.len() == 1 && byte[0] <= 1 => break,
            _ => sys::exit_now(0),
        }
    }
    match fds.pop() {
        Some(control) => (byte[0] == 1, control),
        None => sys::exit_now(0),
    }
}

/// Gives a spare the request's control socket: it is that request's child
/// from now on (its pid, pidfd and link come back). If the spare cannot
/// take it (it died), it is reaped and the control socket comes back for a
/// fresh fork.
fn hand_over(spare: Spare, exec: bool, control: OwnedFd) -> std::result::Result<(u32, OwnedFd, OwnedFd), OwnedFd> {
    let sent = multiproc_sys::fdpass::send(
        spare.link.as_fd(),
        &[std::io::IoSlice::new(&[u8::from(exec)])],
        &[control.as_fd()],
    );
    match sent {
        Ok(1) => Ok((spare.pid, spare.pidfd, spare.link)),
        _ => {
            retire(spare);
            Err(control)
        }
    }
}

/// Ends a spare that holds no request (closing its link is enough; the kill
/// covers one that is not reading it) and reaps it.
fn retire(spare: Spare) {
    drop(spare.link);
    let _ = sys::pidfd_send_signal(spare.pidfd.as_fd(), nix::libc::SIGKILL);
    let _ = sys::reap(spare.pidfd.as_fd());
}

/// The `spawn` start method: a fresh image of the binary in worker role.
fn exec_worker(control: OwnedFd, forkserver: u32) -> ! {
    use std::os::unix::process::CommandExt;
    if let Err(e) = sys::keep_on_exec(control.as_fd()) {
        eprintln!("multiproc: cannot pass the control socket: {e}");
        sys::exit_now(70);
    }
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("multiproc-worker").envs(role_env("worker", control.as_raw_fd(), forkserver));
    // It stays in this tree (and finds its resource tracker).
    cmd.envs(super::tracker::child_env(forkserver));
    let err = cmd.exec();
    eprintln!("multiproc: cannot re-execute /proc/self/exe: {err}");
    sys::exit_now(70)
}
