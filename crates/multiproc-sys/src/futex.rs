//! Futex wait and wake on words in shared (not process-private) memory.

use std::io;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use nix::libc;

/// Outcome of [`wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Woken, or the word no longer held `expected`, or a signal: re-check.
    Woken,
    TimedOut,
}

/// Sleeps while `*word == expected`, at most `timeout` (relative).
pub fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> io::Result<Wait> {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a valid aligned u32 for the call; FUTEX_WAIT (shared,
    // not FUTEX_PRIVATE) only reads it; the timespec outlives the call.
    let rc = unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, expected, ts_ptr, 0, 0) };
    if rc == 0 {
        return Ok(Wait::Woken);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(Wait::Woken),
        Some(libc::ETIMEDOUT) => Ok(Wait::TimedOut),
        _ => Err(err),
    }
}

/// Wakes up to `n` waiters on `word`; returns how many woke.
pub fn wake(word: &AtomicU32, n: u32) -> usize {
    let n = n.min(i32::MAX as u32) as libc::c_int;
    // SAFETY: `word` is a valid aligned u32; FUTEX_WAKE does not access memory
    // beyond looking the address up.
    let rc = unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n, 0, 0, 0) };
    usize::try_from(rc).unwrap_or(0)
}
