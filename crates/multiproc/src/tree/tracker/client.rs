//! Each process's side of the tracker: one connection, opened on first use
//! to the tree's tracker address (starting the tracker if nobody listens),
//! and reopened, with this process's segments registered again, after the
//! tracker died.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use multiproc_sys::process as sys;
use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr, sockopt};

use super::super::role::{FD_ENV, PARENT_ENV, ROLE_ENV, TRACKER_LISTEN_FD, TREE_ENV, TREE_PARENT_ENV};
use super::tree;
use crate::error::{Error, Result};
use crate::wire::{BlockingChannel, TrackerMessage};

pub(super) const MAX_FRAME: usize = 64 << 10;
/// How long a sync may wait for the tracker's answer.
const SYNC_DEADLINE: Duration = Duration::from_secs(60);
/// Attempts at reaching a tracker (each may find the address between
/// another process's `bind` and `listen`, or a tracker just exiting).
const DIAL_ATTEMPTS: usize = 200;

/// This process's way to the tracker.
struct Client {
    /// The process that opened `conn`: a forked child inherits this struct
    /// but must open a connection of its own.
    owner: u32,
    conn: Option<BlockingChannel>,
    /// Segments this process registered, to register again with a
    /// restarted tracker.
    mine: Vec<TrackerMessage>,
}

fn client() -> &'static Mutex<Option<Client>> {
    static CLIENT: OnceLock<Mutex<Option<Client>>> = OnceLock::new();
    CLIENT.get_or_init(|| Mutex::new(None))
}

fn address() -> Result<UnixAddr> {
    Ok(UnixAddr::new_abstract(tree().tracker_address().as_bytes())?)
}

fn same_user(fd: &OwnedFd) -> Result<()> {
    let peer = socket::getsockopt(fd, sockopt::PeerCredentials)?;
    if peer.uid() != nix::unistd::geteuid().as_raw() {
        return Err(Error::Io(std::io::Error::other(format!(
            "the resource tracker address is held by user {}, not us",
            peer.uid()
        ))));
    }
    Ok(())
}

/// Connects to the tree's tracker, starting one if nobody listens.
fn dial() -> Result<BlockingChannel> {
    let addr = address()?;
    for _ in 0..DIAL_ATTEMPTS {
        let fd = socket::socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
        match socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
            Ok(()) => {
                same_user(&fd)?;
                multiproc_sys::fd::set_nonblocking(fd.as_fd())?;
                let mut ch = BlockingChannel::new(fd, MAX_FRAME);
                ch.send(&TrackerMessage::Hello { pid: std::process::id() })?;
                return Ok(ch);
            }
            Err(Errno::ECONNREFUSED | Errno::ENOENT) => match listen_at(&addr) {
                Ok(listen) => start_tracker(listen)?,
                // Another process of the tree is starting one: dial again.
                Err(Errno::EADDRINUSE) => std::thread::yield_now(),
                Err(e) => return Err(e.into()),
            },
            Err(Errno::EINTR | Errno::EAGAIN) => std::thread::yield_now(),
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Io(std::io::Error::other("cannot reach the resource tracker")))
}

fn listen_at(addr: &UnixAddr) -> nix::Result<OwnedFd> {
    let fd = socket::socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), addr)?;
    socket::listen(&fd, socket::Backlog::new(128).unwrap_or(socket::Backlog::MAXCONN))?;
    Ok(fd)
}

/// Starts a tracker process listening on `listen`, detached from us.
fn start_tracker(listen: OwnedFd) -> Result<()> {
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("multiproc-tracker")
        .env(ROLE_ENV, "tracker")
        .env(FD_ENV, TRACKER_LISTEN_FD.to_string())
        .env(TREE_ENV, tree().to_string())
        .env_remove(PARENT_ENV)
        .env_remove(TREE_PARENT_ENV);
    super::super::boot::boot_env(&mut cmd);
    sys::spawn_detached(&mut cmd, &[(listen.as_fd(), TRACKER_LISTEN_FD)])?;
    tracing::debug!(tree = %tree(), "resource tracker started");
    Ok(())
}

impl Client {
    fn mine(slot: &mut Option<Client>) -> &mut Client {
        let me = std::process::id();
        if slot.as_ref().is_some_and(|c| c.owner != me) {
            // Inherited through a fork: the connection is the parent's (and
            // its fd may have been closed and reused here). Never touch it.
            if let Some(old) = slot.take() {
                std::mem::forget(old);
            }
        }
        slot.get_or_insert_with(|| Client { owner: me, conn: None, mine: Vec::new() })
    }

    /// Runs `op` on the connection, reconnecting (and registering this
    /// process's segments again) once if the tracker is gone.
    fn with_conn<T>(&mut self, mut op: impl FnMut(&mut BlockingChannel) -> Result<T>) -> Result<T> {
        let mut lost = false;
        loop {
            if self.conn.is_none() {
                let mut ch = dial()?;
                for m in &self.mine {
                    ch.send(m)?;
                }
                self.conn = Some(ch);
            }
            match op(self.conn.as_mut().expect("connected above")) {
                Ok(v) => return Ok(v),
                Err(e) if lost => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "the resource tracker is gone; reconnecting");
                    eprintln!("multiproc: the resource tracker died; restarting it");
                    self.conn = None;
                    lost = true;
                }
            }
        }
    }
}

/// Tells the tree's tracker about a segment.
pub(crate) fn notify(msg: TrackerMessage) -> Result<()> {
    let mut slot = client().lock().map_err(|_| Error::Closed("tracker client"))?;
    let c = Client::mine(&mut slot);
    c.with_conn(|ch| ch.send(&msg))?;
    let same = |m: &TrackerMessage, name: &str| matches!(m, TrackerMessage::Created { name: n } | TrackerMessage::Attached { name: n } if n == name);
    match &msg {
        TrackerMessage::Unlinked { name } => c.mine.retain(|m| !same(m, name)),
        // One record per segment is enough to register it again; repeated
        // attaches must not grow the list.
        TrackerMessage::Created { name } | TrackerMessage::Attached { name } => {
            if !c.mine.iter().any(|m| same(m, name)) {
                c.mine.push(msg);
            }
        }
        TrackerMessage::Hello { .. } | TrackerMessage::Sync => {}
    }
    Ok(())
}

/// Waits until the tracker has processed every message and every closed
/// connection it could see when it read this request; returns its pid.
pub(crate) fn sync() -> Result<u32> {
    let mut slot = client().lock().map_err(|_| Error::Closed("tracker client"))?;
    Client::mine(&mut slot).with_conn(|ch| {
        ch.send(&TrackerMessage::Sync)?;
        match ch.recv_until::<TrackerMessage>(Instant::now() + SYNC_DEADLINE)? {
            TrackerMessage::Hello { pid } => Ok(pid),
            other => Err(Error::Malformed(format!("the tracker answered a sync with {other:?}"))),
        }
    })
}
