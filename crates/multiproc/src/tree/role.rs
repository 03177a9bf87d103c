//! The names every process of the tree agrees on: the role environment
//! variables, the fd numbers a re-executed process finds its sockets at.
//! A leaf module: it imports nothing of the crate, everything in `tree/`
//! imports it.

use std::os::fd::{OwnedFd, RawFd};

/// Which role a re-executed copy of the binary takes (`forkserver`,
/// `worker`, `tracker`).
pub(crate) const ROLE_ENV: &str = "MULTIPROC_ROLE";
/// The fd number of the role's control socket.
pub(crate) const FD_ENV: &str = "MULTIPROC_FD";
/// The pid of the process that set the role (a copy that merely inherited
/// the variables sees another parent and starts normally).
pub(crate) const PARENT_ENV: &str = "MULTIPROC_PARENT";

/// Set to `main` for a copy of a binary whose `main` calls
/// `multiproc::init()` first (its parent did): the constructor then leaves
/// the role to `init`, which runs after every constructor and std's set-up.
pub(crate) const BOOT_ENV: &str = "MULTIPROC_BOOT";

/// The fd number the forkserver finds its control socket at.
pub(crate) const FORKSERVER_FD: RawFd = 3;
/// The forkserver's second socket (`SOCK_SEQPACKET`): spawn requests that
/// callers write straight to it, one whole message per datagram, without
/// waking the supervisor thread. Named in [`DIRECT_FD_ENV`].
pub(crate) const FORKSERVER_DIRECT_FD: RawFd = 4;
pub(crate) const DIRECT_FD_ENV: &str = "MULTIPROC_DIRECT_FD";

/// The process tree a re-executed child belongs to (its resource tracker's
/// address and the middle part of its segment names), and the pid of the
/// process that set it (a copy of the binary that merely inherited the
/// variable sees another parent and starts a tree of its own).
pub(crate) const TREE_ENV: &str = "MULTIPROC_TREE";
pub(crate) const TREE_PARENT_ENV: &str = "MULTIPROC_TREE_PARENT";

/// The fd number the tracker finds its listening socket at.
pub(crate) const TRACKER_LISTEN_FD: RawFd = 3;

/// The environment a re-executed copy of this binary needs to take `role`
/// with the control socket at `fd`, child of `parent`.
pub(crate) fn role_env(role: &str, fd: i32, parent: u32) -> [(&'static str, String); 3] {
    [(ROLE_ENV, role.to_owned()), (FD_ENV, fd.to_string()), (PARENT_ENV, parent.to_string())]
}

/// A role's control socket, taken from the inherited fd.
pub(crate) type ControlFd = OwnedFd;
