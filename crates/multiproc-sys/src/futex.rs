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
    /// The timeout passed first.
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

/// Most words one [`wait_any`] call can watch (the kernel's limit).
pub const WAIT_ANY_MAX: usize = 128;

/// Outcome of [`wait_any`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitAny {
    /// Word `i` was woken.
    Woken(usize),
    /// A word did not hold its expected value, or a signal came: re-check.
    Changed,
    /// The timeout passed first.
    TimedOut,
    /// The kernel has no `futex_waitv` (Linux < 5.16): use [`wait`].
    Unsupported,
}

/// The kernel's `struct futex_waitv`.
#[repr(C)]
struct FutexWaitv {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

/// `FUTEX2_SIZE_U32`: 32-bit words, shared (no private flag).
const FUTEX2_SIZE_U32: u32 = 2;
/// `futex_waitv`'s number on every architecture (it came after the
/// syscall tables were unified).
const SYS_FUTEX_WAITV: libc::c_long = 449;

/// Sleeps until one of `words` (each with the value it must still hold) is
/// woken, one no longer holds its value, or `deadline` (absolute) passes.
/// At most [`WAIT_ANY_MAX`] words.
pub fn wait_any(words: &[(&AtomicU32, u32)], deadline: Option<std::time::Instant>) -> io::Result<WaitAny> {
    if words.len() > WAIT_ANY_MAX {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many words for futex_waitv"));
    }
    let waitv: Vec<FutexWaitv> = words
        .iter()
        .map(|(w, v)| FutexWaitv { val: u64::from(*v), uaddr: w.as_ptr() as u64, flags: FUTEX2_SIZE_U32, reserved: 0 })
        .collect();
    let ts = deadline.map(|d| {
        // futex_waitv takes an absolute CLOCK_MONOTONIC time; `Instant` is
        // that clock on Linux, but opaque, so go through the time left.
        let left = d.saturating_duration_since(std::time::Instant::now());
        let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: a valid timespec to write; CLOCK_MONOTONIC always exists.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        let nanos = now.tv_nsec as u64 + u64::from(left.subsec_nanos());
        libc::timespec {
            tv_sec: now.tv_sec.saturating_add(left.as_secs().min(i64::MAX as u64 / 2) as libc::time_t)
                + (nanos / 1_000_000_000) as libc::time_t,
            tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
        }
    });
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `waitv` is an array of `words.len()` initialised futex_waitv
    // entries naming aligned u32 words that the borrows keep alive for the
    // call; the timespec outlives the call; flags 0.
    let rc = unsafe {
        libc::syscall(SYS_FUTEX_WAITV, waitv.as_ptr(), waitv.len() as libc::c_uint, 0, ts_ptr, libc::CLOCK_MONOTONIC)
    };
    if rc >= 0 {
        return Ok(WaitAny::Woken(rc as usize));
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(WaitAny::Changed),
        Some(libc::ETIMEDOUT) => Ok(WaitAny::TimedOut),
        Some(libc::ENOSYS) => Ok(WaitAny::Unsupported),
        _ => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn wait_any_wakes_on_any_word_and_times_out() {
        let words = std::sync::Arc::new([AtomicU32::new(0), AtomicU32::new(7)]);
        let r = wait_any(&[(&words[0], 0), (&words[1], 7)], Some(Instant::now() + Duration::from_millis(20)));
        assert!(matches!(r.expect("wait"), WaitAny::TimedOut | WaitAny::Unsupported));
        assert_eq!(wait_any(&[(&words[0], 1)], None).expect("wait"), WaitAny::Changed, "value already differs");
        let w = words.clone();
        let t = std::thread::spawn(move || {
            wait_any(&[(&w[0], 0), (&w[1], 7)], Some(Instant::now() + Duration::from_secs(10)))
        });
        while !t.is_finished() {
            words[1].store(8, std::sync::atomic::Ordering::SeqCst);
            wake(&words[1], 1);
            std::thread::yield_now();
        }
        assert!(matches!(t.join().expect("thread").expect("wait"), WaitAny::Woken(1) | WaitAny::Changed));
    }
}
