//! A mutex made of two words in shared memory (a futex word and the holder's
//! pid) that survives its holder dying: a waiter that has slept for a while
//! checks whether the recorded holder still exists, and if not takes the lock
//! over and tells its caller so (the data the lock guards may need repair).
//!
//! The futex protocol is Drepper's "mutex2": 0 unlocked, 1 locked, 2 locked
//! with (possible) waiters.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::futex;

/// How long a waiter sleeps before it checks whether the holder died.
const CHECK_EVERY: Duration = Duration::from_millis(50);
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

/// The two words of a [`PidLock`], borrowed from a shared mapping.
#[derive(Debug, Clone, Copy)]
pub struct PidLock<'a> {
    word: &'a AtomicU32,
    owner: &'a AtomicU32,
}

/// This process's pid, cached: `getpid` is a system call, and the lock
/// records its holder on every acquisition. A forked child resets the cache
/// (an `atfork` handler) before it can take a lock.
fn my_pid() -> u32 {
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
        unsafe { nix::libc::pthread_atfork(None, None, Some(forget_in_child)) };
    });
    let pid = std::process::id();
    CACHED.store(pid, Ordering::Relaxed);
    pid
}

/// Whether `pid` names a process that has not exited (a zombie has).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

impl<'a> PidLock<'a> {
    pub fn new(word: &'a AtomicU32, owner: &'a AtomicU32) -> Self {
        Self { word, owner }
    }

    /// Takes the lock, waiting as long as it takes (a dead holder is
    /// replaced within [`CHECK_EVERY`]).
    pub fn lock(&self) -> io::Result<Acquired> {
        Ok(self.lock_until(None)?.expect("no deadline, so never timed out"))
    }

    /// Takes the lock if it is free now.
    pub fn try_lock(&self) -> bool {
        if self.word.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            self.owner.store(my_pid(), Ordering::Relaxed);
            return true;
        }
        false
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
        loop {
            if self.word.swap(2, Ordering::Acquire) == 0 {
                self.owner.store(my_pid(), Ordering::Relaxed);
                return Ok(Some(Acquired::Clean));
            }
            let left = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left.min(CHECK_EVERY),
                    _ => return Ok(None),
                },
                None => CHECK_EVERY,
            };
            if futex::wait(self.word, 2, Some(left))? == futex::Wait::TimedOut
                && let Some(dead) = self.take_over_from_dead()
            {
                return Ok(Some(Acquired::FromDeadHolder(dead)));
            }
        }
    }

    /// Takes the lock if it is free now, marking it contended so that its
    /// release wakes the next waiter (for a waiter that slept elsewhere).
    pub fn try_lock_contended(&self) -> bool {
        if self.word.compare_exchange(0, 2, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            self.owner.store(my_pid(), Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Sleeps while the lock is held, until `until` at most, without taking
    /// it (a waiter that may be cancelled takes it afterwards with
    /// [`try_lock_contended`](Self::try_lock_contended)).
    pub fn wait_while_held(&self, until: Instant) -> io::Result<()> {
        loop {
            match self.word.load(Ordering::Relaxed) {
                0 => return Ok(()),
                1 if self.word.compare_exchange(1, 2, Ordering::Relaxed, Ordering::Relaxed).is_err() => continue,
                _ => {}
            }
            let left = until.saturating_duration_since(Instant::now()).min(CHECK_EVERY);
            if left.is_zero() || futex::wait(self.word, 2, Some(left))? == futex::Wait::TimedOut {
                return Ok(());
            }
        }
    }

    /// If the recorded holder died, becomes the holder in its place and
    /// returns the dead pid.
    pub fn try_take_over(&self) -> Option<u32> {
        self.take_over_from_dead()
    }

    /// Whether some process holds the lock now.
    pub fn is_locked(&self) -> bool {
        self.word.load(Ordering::Relaxed) != 0
    }

    /// If the recorded holder is gone, becomes the holder in its place.
    fn take_over_from_dead(&self) -> Option<u32> {
        let holder = self.owner.load(Ordering::Acquire);
        // 0: released, or taken by someone who has not written its pid yet.
        if holder == 0 || holder == my_pid() || process_alive(holder) {
            return None;
        }
        // Only one waiter wins; a holder that released in between changed
        // the word, so the exchange fails.
        self.owner.compare_exchange(holder, my_pid(), Ordering::AcqRel, Ordering::Relaxed).ok()?;
        // Still locked; 2 so that our unlock wakes the other waiters.
        self.word.store(2, Ordering::Release);
        Some(holder)
    }

    /// Releases the lock. Only its holder may call this.
    pub fn unlock(&self) {
        self.owner.store(0, Ordering::Relaxed);
        if self.word.swap(0, Ordering::Release) == 2 {
            futex::wake(self.word, 1);
        }
    }

    /// Test hook: marks the lock held by `pid` as if that process had taken
    /// it (to simulate a holder that died).
    pub fn force_held_by(&self, pid: u32) {
        self.word.store(1, Ordering::Release);
        self.owner.store(pid, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_held_by_a_dead_process_is_taken_over() {
        let mut child = std::process::Command::new("true").spawn().expect("spawn true");
        let dead = child.id();
        child.wait().expect("reap");
        let (word, owner) = (AtomicU32::new(0), AtomicU32::new(0));
        let lock = PidLock::new(&word, &owner);
        lock.force_held_by(dead);
        assert_eq!(lock.lock().expect("lock"), Acquired::FromDeadHolder(dead));
        lock.unlock();
        assert_eq!(lock.lock().expect("lock"), Acquired::Clean);
        lock.unlock();
    }

    #[test]
    fn contended_lock_excludes() {
        let words = std::sync::Arc::new((AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0)));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let w = words.clone();
                std::thread::spawn(move || {
                    let lock = PidLock::new(&w.0, &w.1);
                    for _ in 0..10_000 {
                        lock.lock().expect("lock");
                        // A non-atomic read-modify-write made safe by the lock.
                        let v = w.2.load(Ordering::Relaxed);
                        w.2.store(v + 1, Ordering::Relaxed);
                        lock.unlock();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(words.2.load(Ordering::Relaxed), 40_000);
    }
}
