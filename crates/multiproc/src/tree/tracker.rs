//! The resource tracker: one small process per process tree that unlinks
//! the named shared memory segments the tree leaked.
//!
//! Every process that creates or attaches a named segment tells the tracker
//! on a connection of its own, so the tracker knows, per segment, whether
//! the tree created it and which live processes hold it. When a connection
//! closes (its process exited, however it died), that process stops holding
//! anything; a segment the tree created, never unlinked, and no live process
//! holds any more is unlinked, and one warning names what was cleaned up.
//! Unlike CPython's tracker (a bare set of names), an attacher's exit never
//! unlinks the creator's segment.
//!
//! Reaching it: the tracker listens on one end of a `SOCK_SEQPACKET`
//! socketpair; processes hold the other end (the *rendezvous*) and send it
//! one end of a fresh socketpair to connect. The root process starts the
//! tracker; the forkserver receives the rendezvous at fd 4 and every child
//! inherits it, so a whole tree shares one tracker. The tracker has no
//! parent-death signal and a process group of its own: it outlives a killed
//! tree just long enough to clean up, and exits when the last rendezvous
//! holder is gone.
//!
//! Architecture invariant: the tracker is single-threaded and never runs
//! user code.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use multiproc_sys::fdpass::{self, CmsgBuffer};
use multiproc_sys::process as sys;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::role::{
    ControlFd, TRACKER_CHILD_FD as CHILD_FD, TRACKER_FD_ENV as FD_ENV, TRACKER_PARENT_ENV as PARENT_ENV, role_env,
};
use crate::error::{Error, Result};
use crate::wire::{BlockingChannel, TrackerMessage};

/// Names of segments `SharedMemory::create` makes: this prefix, the
/// creator's pid, a random part.
pub(crate) const NAME_PREFIX: &str = "multiproc-";
const MAX_FRAME: usize = 64 << 10;

/// The rendezvous this process received at start-up. Forked children
/// inherit it with the rest of the forkserver's memory.
static INHERITED: OnceLock<OwnedFd> = OnceLock::new();

/// This process's way to the tracker.
struct Client {
    rendezvous: OwnedFd,
    conn: Option<BlockingChannel>,
    /// Segments this process registered, to re-register with a restarted
    /// tracker.
    mine: Vec<TrackerMessage>,
}

fn client() -> &'static Mutex<Option<Client>> {
    static CLIENT: OnceLock<Mutex<Option<Client>>> = OnceLock::new();
    CLIENT.get_or_init(|| Mutex::new(None))
}

/// At start-up (before `main`, single-threaded): adopts the rendezvous the
/// parent passed, if the variables are meant for this process.
pub(crate) fn adopt_inherited() {
    let parent = std::env::var(PARENT_ENV).ok().and_then(|p| p.parse::<i32>().ok());
    if parent != Some(nix::unistd::getppid().as_raw()) {
        return;
    }
    if let Ok(fd) = sys::take_inherited_fd(FD_ENV) {
        let _ = INHERITED.set(fd);
    }
}

/// The environment and fd that give a re-executed child (the forkserver, or
/// a `spawn` worker) this process's tracker.
pub(crate) fn child_env(parent: u32) -> [(&'static str, String); 2] {
    [(FD_ENV, CHILD_FD.to_string()), (PARENT_ENV, parent.to_string())]
}

/// The inherited rendezvous, for the forkserver to pass on when it execs.
pub(crate) fn inherited() -> Option<std::os::fd::BorrowedFd<'static>> {
    INHERITED.get().map(AsFd::as_fd)
}

/// Starts a tracker process; returns our end of its rendezvous.
fn start_tracker() -> Result<OwnedFd> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    const LISTEN_FD: RawFd = 3;
    let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)?;
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("/proc/self/exe");
    if let Some(argv0) = std::env::args_os().next() {
        cmd.arg0(argv0);
    }
    // A group of its own: a signal to the tree's process group (Ctrl-C, a
    // supervisor killing the group) must leave it alive to clean up.
    cmd.process_group(0);
    cmd.envs(role_env("tracker", LISTEN_FD, std::process::id())).env_remove(FD_ENV).env_remove(PARENT_ENV);
    let _kept = sys::command_with_fds(&mut cmd, &[(theirs.as_fd(), LISTEN_FD)], false)?;
    let child = cmd.spawn()?;
    tracing::debug!(pid = child.id(), "resource tracker started");
    // Reaped by whoever waits for it at exit, or by init once it outlives us.
    drop(child);
    Ok(ours)
}

/// The rendezvous for this process, starting a tracker if the tree has none.
fn rendezvous(slot: &mut Option<Client>) -> Result<&mut Client> {
    if slot.is_none() {
        let rendezvous = match INHERITED.get() {
            Some(fd) => fd.try_clone()?,
            None => start_tracker()?,
        };
        *slot = Some(Client { rendezvous, conn: None, mine: Vec::new() });
    }
    Ok(slot.as_mut().expect("filled above"))
}

/// A dup of the rendezvous to hand to a forkserver, so its children share
/// this process's tracker.
pub(crate) fn rendezvous_for_children() -> Result<OwnedFd> {
    let mut slot = client().lock().map_err(|_| Error::Closed("tracker client"))?;
    Ok(rendezvous(&mut slot)?.rendezvous.try_clone()?)
}

fn connect(c: &mut Client) -> Result<&mut BlockingChannel> {
    if c.conn.is_none() {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)?;
        fdpass::send(c.rendezvous.as_fd(), &[std::io::IoSlice::new(&[1])], &[theirs.as_fd()])?;
        let mut ch = BlockingChannel::new(ours, MAX_FRAME);
        ch.send(&TrackerMessage::Hello { pid: std::process::id() })?;
        c.conn = Some(ch);
    }
    Ok(c.conn.as_mut().expect("connected above"))
}

/// Tells the tracker about a segment; restarts the tracker (with a warning)
/// if it died, and registers this process's segments with the new one.
pub(crate) fn notify(msg: TrackerMessage) -> Result<()> {
    let mut slot = client().lock().map_err(|_| Error::Closed("tracker client"))?;
    let c = rendezvous(&mut slot)?;
    if connect(c).and_then(|ch| ch.send(&msg)).is_err() {
        tracing::warn!("the resource tracker is gone; starting a new one");
        eprintln!("multiproc: the resource tracker died; restarting it");
        *slot = Some(Client { rendezvous: start_tracker()?, conn: None, mine: std::mem::take(&mut c.mine) });
        let c = slot.as_mut().expect("just set");
        connect(c)?;
        let ch = c.conn.as_mut().expect("connected above");
        for m in &c.mine {
            ch.send(m)?;
        }
        ch.send(&msg)?;
    }
    let c = slot.as_mut().expect("set above");
    match &msg {
        TrackerMessage::Unlinked { name } => c.mine.retain(
            |m| !matches!(m, TrackerMessage::Created { name: n } | TrackerMessage::Attached { name: n } if n == name),
        ),
        // One record per segment is enough to re-register it; repeated
        // attaches must not grow the list.
        TrackerMessage::Created { name } | TrackerMessage::Attached { name } => {
            let known = c.mine.iter().any(|m| {
                matches!(m, TrackerMessage::Created { name: n } | TrackerMessage::Attached { name: n } if n == name)
            });
            if !known {
                c.mine.push(msg);
            }
        }
        TrackerMessage::Hello { .. } | TrackerMessage::Sync => {}
    }
    Ok(())
}

/// Waits until the tracker has processed every message and every closed
/// connection it had received; returns its pid (tests use it).
pub(crate) fn sync() -> Result<u32> {
    let mut slot = client().lock().map_err(|_| Error::Closed("tracker client"))?;
    let ch = connect(rendezvous(&mut slot)?)?;
    ch.send(&TrackerMessage::Sync)?;
    match ch.recv::<TrackerMessage>()? {
        TrackerMessage::Hello { pid } => Ok(pid),
        other => Err(Error::Malformed(format!("the tracker answered a sync with {other:?}"))),
    }
}

/// What the tracker knows about one segment.
#[derive(Default)]
struct Segment {
    created_here: bool,
    holders: HashSet<u32>,
}

/// The tracker process's main loop.
pub(crate) fn run(listen: ControlFd) -> ! {
    let _ = sys::ignore_signals(true);
    let code = match serve(listen) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("multiproc resource tracker {}: {e}", std::process::id());
            1
        }
    };
    std::process::exit(code)
}

fn serve(listen: OwnedFd) -> Result<()> {
    remove_leftovers_of_dead_creators();
    let mut conns: Vec<(Option<u32>, BlockingChannel)> = Vec::new();
    let mut segments: HashMap<String, Segment> = HashMap::new();
    // Everything unlinked on the tree's behalf, named in one warning at exit.
    let mut leaked: Vec<String> = Vec::new();
    let mut cmsg = CmsgBuffer::default();
    // Syncs to answer once nothing sent before them is still unread.
    let mut answers: Vec<OwnedFd> = Vec::new();
    loop {
        let ready: Vec<bool> = {
            let mut fds = vec![PollFd::new(listen.as_fd(), PollFlags::POLLIN)];
            fds.extend(conns.iter().map(|(_, c)| PollFd::new(c.fd(), PollFlags::POLLIN)));
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
            fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect()
        };
        let mut gone = Vec::new();
        let mut syncs = Vec::new();
        for (i, (pid, ch)) in conns.iter_mut().enumerate() {
            if !ready[i + 1] {
                continue;
            }
            if ch.read_available().is_err() {
                gone.push(i);
                continue;
            }
            loop {
                match ch.try_recv::<TrackerMessage>() {
                    Ok(Some(TrackerMessage::Hello { pid: p })) => *pid = Some(p),
                    Ok(Some(TrackerMessage::Sync)) => syncs.push(i),
                    Ok(Some(msg)) => record(&mut segments, *pid, msg),
                    Ok(None) => break,
                    Err(_) => {
                        gone.push(i);
                        break;
                    }
                }
            }
        }
        // Syncs are answered after this round's closed connections are
        // processed (they were ready when the sync was), so take their fds
        // before the removals shift the indices.
        gone.dedup();
        for i in syncs {
            if !gone.contains(&i)
                && let Ok(fd) = conns[i].1.fd().try_clone_to_owned()
            {
                answers.push(fd);
            }
        }
        for i in gone.into_iter().rev() {
            let (pid, _) = conns.swap_remove(i);
            if let Some(pid) = pid
                && !conns.iter().any(|(p, _)| *p == Some(pid))
            {
                for s in segments.values_mut() {
                    s.holders.remove(&pid);
                }
            }
            sweep(&mut segments, &mut leaked);
        }
        // A connection still waiting in the rendezvous (a process that
        // registered and exited before the sync) is read next round: answer
        // only in a round that found the rendezvous empty.
        if !ready[0] {
            for fd in answers.drain(..) {
                let mut ch = BlockingChannel::new(fd, MAX_FRAME);
                let _ = ch.send(&TrackerMessage::Hello { pid: std::process::id() });
            }
        }
        if ready[0] {
            let mut fds: Vec<OwnedFd> = Vec::new();
            let n = fdpass::recv(listen.as_fd(), &mut [0u8; 1], &mut cmsg, &mut fds)?;
            if n == 0 && fds.is_empty() && conns.is_empty() {
                // Every process of the tree is gone.
                sweep(&mut segments, &mut leaked);
                if !leaked.is_empty() {
                    eprintln!(
                        "multiproc resource tracker: {} leaked shared memory segment(s) unlinked: {}",
                        leaked.len(),
                        leaked.join(", ")
                    );
                }
                return Ok(());
            }
            conns.extend(fds.into_iter().map(|fd| (None, BlockingChannel::new(fd, MAX_FRAME))));
        }
    }
}

fn record(segments: &mut HashMap<String, Segment>, pid: Option<u32>, msg: TrackerMessage) {
    let Some(pid) = pid else { return };
    match msg {
        TrackerMessage::Created { name } => {
            let s = segments.entry(name).or_default();
            s.created_here = true;
            s.holders.insert(pid);
        }
        TrackerMessage::Attached { name } => {
            segments.entry(name).or_default().holders.insert(pid);
        }
        TrackerMessage::Unlinked { name } => {
            segments.remove(&name);
        }
        TrackerMessage::Hello { .. } | TrackerMessage::Sync => {}
    }
}

/// Unlinks what the tree created and nobody alive holds, adding it to
/// `leaked` (named in the one warning printed at exit).
fn sweep(segments: &mut HashMap<String, Segment>, leaked: &mut Vec<String>) {
    let orphans: Vec<String> =
        segments.iter().filter(|(_, s)| s.created_here && s.holders.is_empty()).map(|(n, _)| n.clone()).collect();
    for name in orphans {
        segments.remove(&name);
        if let Ok(c) = std::ffi::CString::new(format!("/{name}"))
            && multiproc_sys::shm::SharedRegion::unlink_named(&c).is_ok()
        {
            leaked.push(name);
        }
    }
}

/// Removes `/dev/shm/multiproc-<pid>-…` entries whose creator is dead (a
/// tree that died with its tracker).
fn remove_leftovers_of_dead_creators() {
    let Ok(dir) = std::fs::read_dir("/dev/shm") else { return };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) =
            name.strip_prefix(NAME_PREFIX).and_then(|r| r.split('-').next()).and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !multiproc_sys::pidlock::process_alive(pid)
            && let Ok(c) = std::ffi::CString::new(format!("/{name}"))
            && multiproc_sys::shm::SharedRegion::unlink_named(&c).is_ok()
        {
            eprintln!("multiproc resource tracker: removed {name}, left by dead process {pid}");
        }
    }
}
