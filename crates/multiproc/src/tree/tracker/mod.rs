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
//! # Finding it
//!
//! A tree is named by its root process: pid, start time and pid namespace
//! ([`TreeId`]). Forked children inherit the name with the rest of the
//! forkserver's memory, re-executed ones (the forkserver, `spawn` workers)
//! through `MULTIPROC_TREE`. The tracker listens on the abstract Unix
//! socket `multiproc-tracker-<tree>`; every process connects to that
//! address, so after a tracker dies, whichever process of the tree notices
//! first binds the address again and starts a new one, and every other
//! process (the forkserver and its children included) finds that same new
//! tracker on its next use and registers its segments with it again. Both
//! ends check `SO_PEERCRED`: only processes of the same user talk.
//!
//! The tracker is spawned *detached* (a grandchild in a session of its own,
//! whose parent exits at once): it is never a process's child, so it can
//! never be anyone's zombie, no signal to the tree's process group reaches
//! it, and it outlives a killed tree just long enough to clean up. It exits
//! once its last connection closes.
//!
//! # Leftovers of dead trees
//!
//! Segment names carry the creator's pid and the tree:
//! `multiproc-<pid>-<tree>-<random>`. When a tracker starts, it removes a
//! segment of a tree only if that tree's tracker is gone (its address
//! refuses connections), no process holds the segment (no fd and no
//! mapping of it in any `/proc/<pid>`), and the segment is more than a
//! moment old. Every doubt keeps the segment: a tree in another pid
//! namespace, a `/proc` entry that cannot be read, a name in another format.
//!
//! Architecture invariant: the tracker is single-threaded and never runs
//! user code.

mod client;
mod server;

use std::sync::OnceLock;

pub(crate) use client::{notify, sync};
pub(crate) use server::{is_listening, run};

use super::role::{TREE_ENV, TREE_PARENT_ENV};

/// Names of segments `SharedMemory::create` makes start with this, then
/// the creator's pid.
pub(crate) const NAME_PREFIX: &str = "multiproc-";

/// Identifies a process tree across processes and time: its root's pid,
/// start time (clock ticks since boot) and pid namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct TreeId {
    pub root: u32,
    pub start: u64,
    pub pid_ns: u64,
}

impl TreeId {
    fn of_this_process() -> Self {
        Self { root: std::process::id(), start: start_time(std::process::id()).unwrap_or(0), pid_ns: pid_namespace() }
    }

    /// Parses what `Display` wrote.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split('.');
        let root = parts.next()?.parse().ok()?;
        let start = parts.next()?.parse().ok()?;
        let pid_ns = u64::from_str_radix(parts.next()?, 16).ok()?;
        parts.next().is_none().then_some(Self { root, start, pid_ns })
    }

    /// The abstract socket address (without the leading NUL) its tracker
    /// listens on.
    pub fn tracker_address(&self) -> String {
        format!("multiproc-tracker-{self}")
    }
}

impl std::fmt::Display for TreeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{:x}", self.root, self.start, self.pid_ns)
    }
}

static TREE: OnceLock<TreeId> = OnceLock::new();

/// This process's tree: the one it was started into, or its own.
pub(crate) fn tree() -> TreeId {
    *TREE.get_or_init(TreeId::of_this_process)
}

/// At start-up (single-threaded, before `main`): joins the tree the parent
/// named, if the variables are meant for this process.
pub(crate) fn adopt_tree() {
    let parent = std::env::var(TREE_PARENT_ENV).ok().and_then(|p| p.parse::<i32>().ok());
    if parent != Some(nix::unistd::getppid().as_raw()) {
        return;
    }
    if let Some(id) = std::env::var(TREE_ENV).ok().as_deref().and_then(TreeId::parse) {
        let _ = TREE.set(id);
    }
}

/// The environment that puts a re-executed child of `parent` in this tree.
pub(crate) fn child_env(parent: u32) -> [(&'static str, String); 2] {
    [(TREE_ENV, tree().to_string()), (TREE_PARENT_ENV, parent.to_string())]
}

/// A fresh segment name for this process: `multiproc-<pid>-<tree>-<random>`.
pub(crate) fn new_segment_name(random: u64) -> String {
    format!("{NAME_PREFIX}{}-{}-{random:016x}", std::process::id(), tree())
}

/// The tree a segment name says it belongs to (`None` for other formats).
pub(crate) fn tree_of_segment(name: &str) -> Option<TreeId> {
    let mut parts = name.strip_prefix(NAME_PREFIX)?.split('-');
    let _pid: u32 = parts.next()?.parse().ok()?;
    let tree = TreeId::parse(parts.next()?)?;
    let _random = parts.next()?;
    parts.next().is_none().then_some(tree)
}

/// A process's start time in clock ticks since boot (`/proc/<pid>/stat`
/// field 22).
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

/// The inode of this process's pid namespace (0 if unknown).
fn pid_namespace() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_carry_their_tree() {
        let name = new_segment_name(0xabc);
        assert!(name.starts_with(&format!("multiproc-{}-", std::process::id())), "{name}");
        assert_eq!(tree_of_segment(&name), Some(tree()));
        assert_eq!(tree_of_segment("multiproc-12-00000000000000ab"), None, "the old format names no tree");
        assert_eq!(tree_of_segment("other"), None);
        assert_eq!(TreeId::parse(&tree().to_string()), Some(tree()));
        assert_ne!(tree().start, 0, "a start time was read");
    }
}
