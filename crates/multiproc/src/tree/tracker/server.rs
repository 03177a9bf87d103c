//! The tracker process: accepts connections on the tree's address, records
//! who created and who holds which segment, unlinks what the tree leaked,
//! and exits once its last connection closed.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, SystemTime};

use multiproc_sys::process as sys;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{self, SockFlag, sockopt};

use super::super::role::{ControlFd, TREE_ENV};
use super::client::MAX_FRAME;
use super::{NAME_PREFIX, TreeId, tree_of_segment};
use crate::error::Result;
use crate::wire::{BlockingChannel, TrackerMessage};

/// With no connection, how long the tracker waits for one before exiting
/// (its starter died before connecting).
const IDLE_EXIT: Duration = Duration::from_secs(10);
/// A leftover younger than this is left alone: its creator may be between
/// creating it and opening it.
const MIN_LEFTOVER_AGE: Duration = Duration::from_secs(5);

/// What the tracker knows about one segment.
#[derive(Default)]
struct Segment {
    created_here: bool,
    holders: HashSet<u32>,
}

struct Conn {
    key: u64,
    pid: u32,
    ch: BlockingChannel,
}

/// The tracker process's main loop.
pub(crate) fn run(listen: ControlFd) -> ! {
    let _ = sys::ignore_group_signals();
    let _ = sys::set_process_name("mp-tracker");
    let code = match serve(listen) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("multiproc resource tracker {}: {e}", std::process::id());
            1
        }
    };
    std::process::exit(code)
}

/// Whether `fd` is a listening socket (the tracker role's start-up check).
pub(crate) fn is_listening(fd: &OwnedFd) -> bool {
    socket::getsockopt(fd, sockopt::AcceptConn).unwrap_or(false)
}

fn serve(listen: OwnedFd) -> Result<()> {
    let tree = std::env::var(TREE_ENV).ok().as_deref().and_then(TreeId::parse);
    {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        let flags = OFlag::from_bits_truncate(fcntl(&listen, FcntlArg::F_GETFL)?);
        fcntl(&listen, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    }
    remove_leftovers(tree);
    let mut conns: Vec<Conn> = Vec::new();
    let mut next_key = 0u64;
    let mut segments: HashMap<String, Segment> = HashMap::new();
    // Everything unlinked on the tree's behalf, named in one warning at exit.
    let mut leaked: Vec<String> = Vec::new();
    let uid = nix::unistd::geteuid().as_raw();
    loop {
        {
            let mut fds = vec![PollFd::new(listen.as_fd(), PollFlags::POLLIN)];
            fds.extend(conns.iter().map(|c| PollFd::new(c.ch.fd(), PollFlags::POLLIN)));
            let timeout = if conns.is_empty() {
                PollTimeout::try_from(IDLE_EXIT.as_millis() as u32).unwrap_or(PollTimeout::MAX)
            } else {
                PollTimeout::NONE
            };
            match poll(&mut fds, timeout) {
                Ok(0) if conns.is_empty() => return finish(&mut segments, &mut leaked),
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        // Take in everything there is, until a pass finds nothing new: a
        // sync is answered only after every connection, message and close
        // that reached us before it was processed.
        let mut syncs: Vec<u64> = Vec::new();
        loop {
            let mut progress = false;
            loop {
                match multiproc_sys::fdpass::accept(listen.as_fd()) {
                    Ok(fd) => {
                        progress = true;
                        match socket::getsockopt(&fd, sockopt::PeerCredentials) {
                            Ok(peer) if peer.uid() == uid => {
                                conns.push(Conn {
                                    key: next_key,
                                    pid: peer.pid() as u32,
                                    ch: BlockingChannel::new(fd, MAX_FRAME),
                                });
                                next_key += 1;
                            }
                            // A stranger, or a peer gone already.
                            _ => drop(fd),
                        }
                    }
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::Interrupted
                            || e.raw_os_error() == Some(nix::libc::ECONNABORTED) =>
                    {
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let mut gone = Vec::new();
            for (i, c) in conns.iter_mut().enumerate() {
                match c.ch.read_all_available() {
                    Ok(any) => progress |= any,
                    Err(_) => {
                        gone.push(i);
                        continue;
                    }
                }
                loop {
                    match c.ch.try_recv::<TrackerMessage>() {
                        Ok(Some(TrackerMessage::Sync)) => syncs.push(c.key),
                        Ok(Some(TrackerMessage::Hello { .. })) => {}
                        Ok(Some(msg)) => record(&mut segments, c.pid, msg),
                        Ok(None) => break,
                        // The end of the stream, or garbage: either way
                        // this process is done with us.
                        Err(_) => {
                            gone.push(i);
                            break;
                        }
                    }
                }
            }
            for &i in gone.iter().rev() {
                progress = true;
                let c = conns.swap_remove(i);
                if !conns.iter().any(|o| o.pid == c.pid) {
                    for s in segments.values_mut() {
                        s.holders.remove(&c.pid);
                    }
                }
            }
            if !gone.is_empty() {
                sweep(&mut segments, &mut leaked);
            }
            if !progress {
                break;
            }
        }
        for key in syncs {
            if let Some(c) = conns.iter_mut().find(|c| c.key == key) {
                let _ = c.ch.send(&TrackerMessage::Hello { pid: std::process::id() });
            }
        }
        if conns.is_empty() {
            // Every process that used us is gone: clean up and leave (a
            // later user starts a new tracker at the same address).
            return finish(&mut segments, &mut leaked);
        }
    }
}

fn finish(segments: &mut HashMap<String, Segment>, leaked: &mut Vec<String>) -> Result<()> {
    sweep(segments, leaked);
    if !leaked.is_empty() {
        eprintln!(
            "multiproc resource tracker: {} leaked shared memory segment(s) unlinked: {}",
            leaked.len(),
            leaked.join(", ")
        );
    }
    Ok(())
}

fn record(segments: &mut HashMap<String, Segment>, pid: u32, msg: TrackerMessage) {
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

/// Removes segments left by trees that are gone: their tracker does not
/// answer, no process holds them, and they are not brand new. `ours` is
/// this tracker's tree (its segments no live process holds were leaked by
/// processes of the tree while it had no tracker).
fn remove_leftovers(ours: Option<TreeId>) {
    let Ok(dir) = std::fs::read_dir("/dev/shm") else { return };
    let Some(pid_ns) = ours.map(|t| t.pid_ns) else { return };
    let mut candidates = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(NAME_PREFIX) {
            continue;
        }
        // Other formats and other pid namespaces: we cannot judge, so keep.
        let Some(tree) = tree_of_segment(&name) else { continue };
        if tree.pid_ns != pid_ns {
            continue;
        }
        let old_enough = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age >= MIN_LEFTOVER_AGE);
        if !old_enough {
            continue;
        }
        if Some(tree) != ours && tracker_may_be_alive(&tree) {
            continue;
        }
        candidates.push(name);
    }
    if candidates.is_empty() {
        return;
    }
    // One look at every process's fds and mappings; any doubt keeps all.
    let Some(held) = segments_in_use() else { return };
    for name in candidates {
        if held.contains(&name) {
            continue;
        }
        if let Ok(c) = std::ffi::CString::new(format!("/{name}"))
            && multiproc_sys::shm::SharedRegion::unlink_named(&c).is_ok()
        {
            eprintln!("multiproc resource tracker: removed {name}, left by a process tree that is gone");
        }
    }
}

/// Whether the tracker of `tree` may still run: anything but a refused
/// connection counts as alive.
fn tracker_may_be_alive(tree: &TreeId) -> bool {
    let Ok(addr) = socket::UnixAddr::new_abstract(tree.tracker_address().as_bytes()) else { return true };
    let Ok(fd) = socket::socket(socket::AddressFamily::Unix, socket::SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
    else {
        return true;
    };
    !matches!(socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr), Err(Errno::ECONNREFUSED | Errno::ENOENT))
}

/// Names of every `/dev/shm` segment some process has open or mapped, or
/// `None` when the fds of a process of our user could not be read (fail
/// closed). Processes of other users are skipped (segments are created
/// 0600); a process whose mappings may not be read is judged by its fds.
fn segments_in_use() -> Option<HashSet<String>> {
    use std::os::unix::fs::MetadataExt;
    let uid = nix::unistd::geteuid().as_raw();
    let mut held = HashSet::new();
    let gone =
        |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(nix::libc::ESRCH);
    let add = |held: &mut HashSet<String>, path: &str| {
        if let Some(rest) = path.strip_prefix("/dev/shm/") {
            held.insert(rest.trim_end_matches(" (deleted)").to_owned());
        }
    };
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let owner = match entry.metadata() {
            Ok(m) => m.uid(),
            Err(e) if gone(&e) => continue,
            Err(_) => return None,
        };
        if uid != 0 && owner != uid {
            continue;
        }
        match std::fs::read_dir(format!("/proc/{pid}/fd")) {
            Ok(fds) => {
                for fd in fds.flatten() {
                    if let Ok(target) = std::fs::read_link(fd.path()) {
                        add(&mut held, &target.to_string_lossy());
                    }
                }
            }
            Err(e) if gone(&e) => continue,
            Err(_) => return None,
        }
        match std::fs::read_to_string(format!("/proc/{pid}/maps")) {
            Ok(maps) => {
                for line in maps.lines() {
                    if let Some(at) = line.find("/dev/shm/") {
                        add(&mut held, &line[at..]);
                    }
                }
            }
            Err(e) if gone(&e) => continue,
            // A process that may not be traced (not dumpable: pid 1 here,
            // setuid programs) hides its mappings even from root; its fds,
            // read above, are what we can know of it.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => continue,
            Err(_) => return None,
        }
    }
    Some(held)
}
