//! A mutex in ONE 32-bit word of shared memory that survives its holder
//! dying at any instruction.
//!
//! # The owner word
//!
//! - `0`: free.
//! - `pid | flags`: held by process `pid` (the low 30 bits; Linux pids stay
//!   below 2^22). [`CONTENDED`] says a waiter may sleep on the futex, so the
//!   release must wake one.
//!
//! Acquiring is one compare-and-swap `0 → pid`; releasing is one swap to 0.
//! There is therefore no instruction at which the lock is held and the word
//! does not name the holder: a process killed anywhere leaves either a free
//! lock or a lock that names it.
//!
//! # Owner death
//!
//! A waiter that has slept for a while (5 ms, backing off to 250 ms) asks
//! the kernel whether the recorded owner still exists ([`liveness`]: a pidfd
//! of the pid, readable once it has exited, zombie included). Only a
//! definite "dead" counts; any other answer (EMFILE, EPERM, a kernel without
//! pidfds and a zombie) is taken as alive: the check fails closed, so two
//! processes never hold the lock at once. The waiter then replaces the dead
//! owner with one compare-and-swap of the very word it read (only one waiter
//! can win it) and is told [`Acquired::FromDeadHolder`]: the data the lock
//! guards may be half-updated, as pthread's `EOWNERDEAD`.
//!
//! Pid reuse: the lock records a pid, not a process. If the owner dies and,
//! before a waiter notices, the kernel gives its pid to a new live process,
//! the lock is held until that process exits too (it can be slow to
//! recover, never taken from a live holder). All processes sharing a lock
//! must be in one pid namespace (they are: a `multiproc` tree is).
//!
//! Threads of one process share a pid: the word tells processes apart; the
//! callers (`RLock`) record thread or task identity separately.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::libc;

use crate::futex;

/// Set while some waiter may sleep on the word.
pub const CONTENDED: u32 = 1 << 31;
/// The bits that hold the owner's pid.
pub const PID_MASK: u32 = (1 << 30) - 1;

/// First wait before a waiter checks whether the owner died; doubles up to
/// [`CHECK_MAX`] while the owner stays alive.
const CHECK_FIRST: Duration = Duration::from_millis(5);
const CHECK_MAX: Duration = Duration::from_millis(250);
/// Tries before a contended `lock` sleeps.
const SPINS: u32 = 100;

/// How the lock was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// From a holder that released it.
    Clean,
    /// Taken over from a holder that died holding it: the guarded data may be
    /// half-updated.
    FromDeadHolder(u32),
}

/// What the kernel says about a pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// The process exists and has not exited.
    Alive,
    /// The process has exited (a zombie included) or no such pid exists.
    Dead,
    /// The kernel could not tell (out of fds, no permission…): treat as
    /// alive.
    Unknown,
}

/// Whether `pid` names a process that has not exited, failing closed: `false`
/// only when the process is definitely gone (exited, a zombie included). Any
/// doubt (an error such as EMFILE) answers `true`. No `/proc` read.
pub fn process_alive(pid: u32) -> bool {
    liveness(pid) != Liveness::Dead
}

/// Asks the kernel about `pid` without reading `/proc`: a pidfd of it is
/// readable once it has exited; `ESRCH` means no such process. On a kernel
/// without pidfds, `kill(pid, 0)`, where only `ESRCH` is dead (a zombie then
/// reads as alive).
pub fn liveness(pid: u32) -> Liveness {
    let Ok(raw) = libc::pid_t::try_from(pid) else { return Liveness::Unknown };
    if raw <= 0 {
        return Liveness::Unknown;
    }
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1;
    // no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) };
    if fd < 0 {
        return match io::Error::last_os_error().raw_os_error() {
            Some(libc::ESRCH) => Liveness::Dead,
            Some(libc::ENOSYS) => kill_zero(raw),
            _ => Liveness::Unknown,
        };
    }
    let fd = fd as libc::c_int;
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd for the duration of the call; timeout 0.
    let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
    // SAFETY: `fd` is the fd pidfd_open just gave us, closed once here.
    unsafe { libc::close(fd) };
    match rc {
        0 => Liveness::Alive,
        1 if pfd.revents & libc::POLLIN != 0 => Liveness::Dead,
        _ => Liveness::Unknown,
    }
}

fn kill_zero(pid: libc::pid_t) -> Liveness {
    // SAFETY: signal 0 sends nothing; kill only checks the pid.
    if unsafe { libc::kill(pid, 0) } == 0 {
        return Liveness::Alive;
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::ESRCH) => Liveness::Dead,
        Some(libc::EPERM) => Liveness::Alive,
        _ => Liveness::Unknown,
    }
}

/// This process's pid, cached: `getpid` is a system call, and the lock
/// records its holder on every acquisition. A forked child resets the cache
/// (an `atfork` handler) before it can take a lock.
pub fn current_pid() -> u32 {
    static CACHED: AtomicU32 = AtomicU32::new(0);
    static REGISTER: std::sync::Once = std::sync::Once::new();
    extern "C" fn forget_in_child() {
        CACHED.store(0, Ordering::Relaxed);
    }
    let pid = CACHED.load(Ordering::Relaxed);
    if pid != 0 {
        return pid;
    }
    REGISTER.call_once(|| {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe, so it may run in a child forked from any thread.
        unsafe { libc::pthread_atfork(None, None, Some(forget_in_child)) };
    });
    let pid = std::process::id();
    CACHED.store(pid, Ordering::Relaxed);
    pid
}

/// The owner word of a lock, borrowed from a shared mapping.
#[derive(Debug, Clone, Copy)]
pub struct PidLock<'a> {
    word: &'a AtomicU32,
}

impl<'a> PidLock<'a> {
    /// The lock whose owner word is `word` (0 = free; a mapping's zeroed
    /// bytes are a free lock).
    pub fn new(word: &'a AtomicU32) -> Self {
        Self { word }
    }

    /// The futex word itself (for a waiter that sleeps elsewhere).
    pub fn word(&self) -> &'a AtomicU32 {
        self.word
    }

    /// Takes the lock, waiting as long as it takes (a dead holder is
    /// replaced within a few checks).
    pub fn lock(&self) -> io::Result<Acquired> {
        loop {
            if let Some(how) = self.lock_until(None)? {
                return Ok(how);
            }
        }
    }

    /// Takes the lock if it is free now: one compare-and-swap.
    #[inline]
    pub fn try_lock(&self) -> bool {
        self.word.compare_exchange(0, current_pid(), Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    /// Takes the lock if it is free now, marking it contended so that its
    /// release wakes the next waiter (for a waiter that slept elsewhere).
    pub fn try_lock_contended(&self) -> bool {
        self.word.compare_exchange(0, current_pid() | CONTENDED, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    /// The pid recorded as holder, if the lock is held.
    pub fn owner(&self) -> Option<u32> {
        Some(self.word.load(Ordering::Relaxed) & PID_MASK).filter(|&p| p != 0)
    }

    /// Whether this process holds the lock (some thread of it).
    pub fn held_by_me(&self) -> bool {
        self.owner() == Some(current_pid())
    }

    /// Takes the lock, waiting until `deadline` at most; `Ok(None)` when the
    /// deadline passed first.
    pub fn lock_until(&self, deadline: Option<Instant>) -> io::Result<Option<Acquired>> {
        if self.try_lock() {
            return Ok(Some(Acquired::Clean));
        }
        for _ in 0..SPINS {
            std::hint::spin_loop();
            if self.word.load(Ordering::Relaxed) == 0 && self.try_lock() {
                return Ok(Some(Acquired::Clean));
            }
        }
        let me = current_pid();
        let mut check_every = CHECK_FIRST;
        let mut next_check = Instant::now() + check_every;
        loop {
            let v = self.word.load(Ordering::Relaxed);
            if v & PID_MASK == 0 {
                // Taken contended: other waiters may sleep, our release wakes one.
                if self.word.compare_exchange(v, me | CONTENDED, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                    return Ok(Some(Acquired::Clean));
                }
                continue;
            }
            let now = Instant::now();
            if now >= next_check {
                check_every = (check_every * 2).min(CHECK_MAX);
                next_check = now + check_every;
                if let Some(dead) = self.take_over_if_dead(v) {
                    return Ok(Some(Acquired::FromDeadHolder(dead)));
                }
                continue;
            }
            let want = v | CONTENDED;
            if v != want && self.word.compare_exchange(v, want, Ordering::Relaxed, Ordering::Relaxed).is_err() {
                continue;
            }
            let mut left = next_check - now;
            if let Some(d) = deadline {
                match d.checked_duration_since(now) {
                    Some(l) if !l.is_zero() => left = left.min(l),
                    _ => return Ok(None),
                }
            }
            futex::wait(self.word, want, Some(left))?;
        }
    }

    /// Sleeps while the lock is held, until `until` at most, without taking
    /// it (a waiter that may be cancelled takes it afterwards with
    /// [`try_lock_contended`](Self::try_lock_contended)).
    pub fn wait_while_held(&self, until: Instant) -> io::Result<()> {
        loop {
            let v = self.word.load(Ordering::Relaxed);
            if v & PID_MASK == 0 {
                return Ok(());
            }
            let want = v | CONTENDED;
            if v != want && self.word.compare_exchange(v, want, Ordering::Relaxed, Ordering::Relaxed).is_err() {
                continue;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || futex::wait(self.word, want, Some(left))? == futex::Wait::TimedOut {
                return Ok(());
            }
        }
    }

    /// Marks the lock contended if it is held, so that its release wakes a
    /// sleeper on the word; the value to sleep on (`None`: it is free).
    pub fn mark_contended(&self) -> Option<u32> {
        loop {
            let v = self.word.load(Ordering::Relaxed);
            if v & PID_MASK == 0 {
                return None;
            }
            let want = v | CONTENDED;
            if v == want || self.word.compare_exchange(v, want, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                return Some(want);
            }
        }
    }

    /// If the recorded holder died, becomes the holder in its place and
    /// returns the dead pid.
    pub fn try_take_over(&self) -> Option<u32> {
        let v = self.word.load(Ordering::Relaxed);
        self.take_over_if_dead(v)
    }

    /// Replaces the holder named in `seen` if the kernel says it is dead and
    /// the word still reads `seen`.
    fn take_over_if_dead(&self, seen: u32) -> Option<u32> {
        let holder = seen & PID_MASK;
        let me = current_pid();
        if holder == 0 || holder == me || liveness(holder) != Liveness::Dead {
            return None;
        }
        // One compare-and-swap of the word we read: only one waiter wins, and
        // a lock released and retaken in between (another value) is left be.
        self.word.compare_exchange(seen, me | CONTENDED, Ordering::Acquire, Ordering::Relaxed).ok()?;
        Some(holder)
    }

    /// Whether some process holds the lock now.
    pub fn is_locked(&self) -> bool {
        self.word.load(Ordering::Relaxed) & PID_MASK != 0
    }

    /// Releases the lock: one swap. Only its holder may call this.
    #[inline]
    pub fn unlock(&self) {
        let v = self.word.swap(0, Ordering::Release);
        debug_assert_eq!(v & PID_MASK, current_pid(), "unlock by a process that does not hold the lock");
        if v & CONTENDED != 0 {
            futex::wake(self.word, 1);
        }
    }

    /// Test hook: marks the lock held by `pid` as if that process had taken
    /// it (to simulate a holder that died; see [`reaped_pid`]).
    pub fn force_held_by(&self, pid: u32) {
        self.word.store(pid & PID_MASK, Ordering::Release);
    }
}

/// Test hook: the pid of a process that has exited and been reaped (a
/// holder for [`PidLock::force_held_by`] that is certainly dead).
#[doc(hidden)]
pub fn reaped_pid() -> io::Result<u32> {
    let mut child = std::process::Command::new("true").spawn()?;
    let pid = child.id();
    child.wait()?;
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead_pid() -> u32 {
        reaped_pid().expect("a reaped pid")
    }

    #[test]
    fn lock_held_by_a_dead_process_is_taken_over() {
        let dead = dead_pid();
        let word = AtomicU32::new(0);
        let lock = PidLock::new(&word);
        lock.force_held_by(dead);
        assert_eq!(lock.lock().expect("lock"), Acquired::FromDeadHolder(dead));
        assert!(lock.held_by_me());
        lock.unlock();
        assert_eq!(lock.lock().expect("lock"), Acquired::Clean);
        lock.unlock();
    }

    #[test]
    fn liveness_fails_closed_and_sees_zombies() {
        assert_eq!(liveness(std::process::id()), Liveness::Alive);
        assert_eq!(liveness(dead_pid()), Liveness::Dead);
        assert_eq!(liveness(0), Liveness::Unknown);
        assert_eq!(liveness(u32::MAX), Liveness::Unknown);
        // A zombie (exited, not reaped) is dead.
        let mut child = std::process::Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        while liveness(pid) != Liveness::Dead {
            assert!(Instant::now() < deadline, "an exited child still reads as alive");
            std::thread::yield_now();
        }
        child.wait().expect("reap");
    }

    #[test]
    fn a_live_holder_is_never_replaced() {
        let word = AtomicU32::new(0);
        let lock = PidLock::new(&word);
        // pid 1 is alive (or unknowable): never taken over.
        lock.force_held_by(1);
        assert_eq!(lock.try_take_over(), None);
        assert_eq!(lock.lock_until(Some(Instant::now() + Duration::from_millis(30))).expect("lock"), None);
        assert_eq!(lock.owner(), Some(1));
    }

    #[test]
    fn contended_lock_excludes() {
        let words = std::sync::Arc::new((AtomicU32::new(0), AtomicU32::new(0)));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let w = words.clone();
                std::thread::spawn(move || {
                    let lock = PidLock::new(&w.0);
                    for _ in 0..10_000 {
                        lock.lock().expect("lock");
                        // A non-atomic read-modify-write made safe by the lock.
                        let v = w.1.load(Ordering::Relaxed);
                        w.1.store(v + 1, Ordering::Relaxed);
                        lock.unlock();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(words.1.load(Ordering::Relaxed), 40_000);
    }
}
