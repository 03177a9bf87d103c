//! Small fd helpers every part of `multiproc` needs, kept here once:
//! switching a socket to non-blocking mode, waiting for readiness with an
//! optional deadline (`poll(2)`, retried on `EINTR`, never waking early),
//! registering an owned fd with the tokio runtime, and raising the
//! open-file limit.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Instant;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// Registers `fd` (a pidfd, say) with the current tokio runtime, for
/// readiness only: await its `readable()`. Needs a runtime.
pub fn register_readable(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: the fd is owned by the `AsyncFd` from now on: nothing else
    // can close or replace it while it is registered.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// Sets `O_NONBLOCK` on `fd` (a no-op when it is already set).
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    if !flags.contains(OFlag::O_NONBLOCK) {
        fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    }
    Ok(())
}

/// The `poll(2)` timeout that ends no earlier than `deadline` (rounded up
/// to the next millisecond; `None`: wait forever).
pub fn timeout_until(deadline: Option<Instant>) -> PollTimeout {
    match deadline {
        None => PollTimeout::NONE,
        Some(at) => {
            let left = at.saturating_duration_since(Instant::now());
            let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
        }
    }
}

/// Waits until `fd` is readable (or writable, with `write`), or the
/// deadline passes: `Ok(false)`. A hang-up or error on `fd` counts as
/// ready (the next read or write says what happened).
pub fn wait_ready(fd: BorrowedFd<'_>, write: bool, deadline: Option<Instant>) -> io::Result<bool> {
    let flags = if write { PollFlags::POLLOUT } else { PollFlags::POLLIN };
    loop {
        match poll(&mut [PollFd::new(fd, flags)], timeout_until(deadline)) {
            Ok(0) if deadline.is_some_and(|d| Instant::now() >= d) => return Ok(false),
            Ok(0) => {}
            Ok(_) => return Ok(true),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Raises this process's soft limit on open files to its hard limit, as
/// Go's runtime and the JVM do at start-up: a process tree holds a few fds
/// per child in its root (sockets, doorbells, a mapping), and the usual
/// soft limit of 1024 is reached by a few hundred workers. The soft limit
/// exists for programs that still use `select(2)` (fds below 1024): such a
/// program fails either way once it has that many fds open.
pub fn raise_fd_limit() -> io::Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    use super::*;

    #[test]
    fn wait_ready_times_out_then_sees_data() {
        let (a, b) = UnixStream::pair().expect("socketpair");
        let deadline = Instant::now() + Duration::from_millis(20);
        assert!(!wait_ready(b.as_fd(), false, Some(deadline)).expect("poll"));
        assert!(Instant::now() >= deadline, "never returns before the deadline");
        io::Write::write_all(&mut &a, b"x").expect("write");
        assert!(wait_ready(b.as_fd(), false, None).expect("poll"));
        assert!(wait_ready(b.as_fd(), true, Some(Instant::now())).expect("poll"), "room to write");
    }

    #[test]
    fn set_nonblocking_makes_reads_return_would_block() {
        let (_a, b) = UnixStream::pair().expect("socketpair");
        set_nonblocking(b.as_fd()).expect("set");
        set_nonblocking(b.as_fd()).expect("idempotent");
        let err = io::Read::read(&mut &b, &mut [0u8; 1]).expect_err("nothing to read");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn the_soft_fd_limit_is_raised_to_the_hard_one() {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("limits");
        setrlimit(Resource::RLIMIT_NOFILE, hard.min(1024) - 1, hard).expect("lower the soft limit");
        raise_fd_limit().expect("raise");
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).expect("limits"), (hard, hard));
        // Already at the hard limit: nothing to do, and no error.
        raise_fd_limit().expect("raise again");
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).expect("limits"), (hard, hard));
    }
}
