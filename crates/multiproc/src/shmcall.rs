//! The shared-memory call channel (issue 13): two byte streams in one memfd
//! mapping (`multiproc_sys::shmring`), one each way between two ends, with
//! adaptive waiting. It carries the bytes of a [`Connection`] built with
//! [`PipeBuilder::shared_memory`], and the calls and replies of a pool
//! worker built with `PoolBuilder::shared_memory` (`pool/shm.rs`); the
//! socket beside it stays for file descriptors, for `poll`, and to learn
//! that the other end is gone.
//!
//! # When a waiter spins, and when it sleeps
//!
//! A round trip through a socket pays two kernel wake-ups (5-50 µs each on a
//! busy VM); a cache line moving between two running cores costs well under
//! a microsecond. So a side that finds nothing to read (or no room to write)
//! first polls the shared counters for a short while, but only when that can
//! pay:
//!
//! - **Only while a core is idle.** The number of runnable threads in the
//!   system (`/proc/loadavg`, read at most every 2 ms per process) may
//!   exceed the CPUs this process may use by one at most. On an
//!   oversubscribed machine a spinning waiter would steal the very core its
//!   peer needs to answer, so it sleeps at once. One over is allowed
//!   because a pool call in flight is three threads: the waiting worker,
//!   the pool's owner task and the caller's task it hands the answer to (on
//!   another runtime thread); with "not over" a 2-core machine stopped
//!   every spin, and `pool_apply_roundtrip_us` read 16 µs (median of 10
//!   runs, 6-35) against 7 µs (5-25) with one over allowed, read every
//!   2 ms instead of 10, the same minutes.
//! - **For a measured budget.** Each end keeps a budget (50 µs to start,
//!   at most 100 µs): a wait that the spin satisfied after `t` raises it to
//!   at least `4t`, a spin that ran out halves it, and below 2 µs it stops
//!   spinning, probing again once every 32 waits. A peer that answers at once
//!   (a ping-pong) keeps both sides spinning, with no system call at all; an
//!   idle peer costs one budget, then nothing.
//!
//! Then it sleeps: it announces itself in its end's `parked` word, re-checks
//! the counters, and waits in `poll(2)` (or tokio's reactor) on its
//! *doorbell*, a datagram socket the other side sends one byte to when it
//! moves a counter and sees the `parked` word set, and on the connection's
//! socket at the same time. A doorbell socket rather than a futex: a futex
//! cannot be waited on together with the connection's socket, and that
//! socket is how a dead peer shows (it reads end-of-stream once every copy of
//! the other end is closed, by exit or by crash), so a reader, spinning or
//! asleep, notices within one spin budget. (An eventfd would do as well, but
//! tokio registers only sockets without `unsafe`.) A writer waiting for room
//! cannot watch the socket's readability (the reader's fds, or a simplex
//! end's own shutdown, make it readable): it sleeps on the doorbell and the
//! socket's hang-up alone, and in async code looks every 10 ms.
//!
//! [`Connection`]: crate::Connection
//! [`PipeBuilder::shared_memory`]: crate::PipeBuilder::shared_memory

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use multiproc_sys::shmring::ShmDuplex;
use tokio::io::Interest;
use tokio::net::{UnixDatagram, UnixStream};

/// Bytes each direction buffers by default.
pub(crate) const DEFAULT_CAPACITY: usize = 256 << 10;

const START_SPIN: Duration = Duration::from_micros(50);
const MAX_SPIN: Duration = Duration::from_micros(100);
const MIN_SPIN: Duration = Duration::from_micros(2);
const PROBE_SPIN: Duration = Duration::from_micros(10);
const PROBE_EVERY: u32 = 32;
const LOAD_EVERY: Duration = Duration::from_millis(2);
/// An async writer waiting for room looks at the socket this often.
const ROOM_CHECK: Duration = Duration::from_millis(10);

/// Why a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woke {
    /// What the caller waits for is there.
    Ready,
    /// The socket is readable: fds, or the other end is gone (for a wait
    /// for room: look whether it is gone).
    Socket,
    TimedOut,
}

/// What a side waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    /// Bytes to read.
    Data,
    /// Room to write.
    Room,
    /// Either (a pool's parent waits for results while a call waits for
    /// room).
    Either,
}

impl Want {
    /// The parked word's value while an end sleeps waiting for this.
    fn code(self) -> u32 {
        match self {
            Want::Data => 1,
            Want::Room => 2,
            Want::Either => 3,
        }
    }
}

/// Whether a core is free for a spinning waiter: at most one runnable
/// thread in the system more than the CPUs this process may use (see the
/// module docs), read at most every [`LOAD_EVERY`].
pub(crate) fn core_idle() -> bool {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static IDLE: AtomicBool = AtomicBool::new(false);
    static CPUS: OnceLock<usize> = OnceLock::new();
    let now = EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64;
    if now < NEXT.load(Ordering::Relaxed) {
        return IDLE.load(Ordering::Relaxed);
    }
    NEXT.store(now + LOAD_EVERY.as_nanos() as u64, Ordering::Relaxed);
    let cpus = *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // The fourth field is `runnable/total` scheduling entities (this thread
    // among the runnable ones).
    let running = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().nth(3)?.split('/').next()?.parse::<usize>().ok());
    let idle = cpus > 1 && running.is_some_and(|r| r <= cpus + 1);
    IDLE.store(idle, Ordering::Relaxed);
    idle
}

/// Whether waiters spin: `MULTIPROC_SHM_SPIN` = `auto` (the default: while
/// a core is idle), `always` or `never`; read once per process. For
/// measurements and for machines where the load figure misleads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    Auto,
    Always,
    Never,
}

fn policy() -> Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    *POLICY.get_or_init(|| match std::env::var("MULTIPROC_SHM_SPIN").as_deref() {
        Ok("always") => Policy::Always,
        Ok("never") => Policy::Never,
        _ => Policy::Auto,
    })
}

/// One end's spin budget (see the module docs). Also a socket
/// [`Connection`](crate::Connection)'s, which polls its socket with
/// non-blocking reads the same way before it sleeps.
#[derive(Clone)]
pub(crate) struct Spinner {
    budget: Duration,
    waits: u32,
}

/// Just the budget: a `Connection`'s `Debug` stays one short line.
impl std::fmt::Debug for Spinner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.budget)
    }
}

impl Default for Spinner {
    fn default() -> Self {
        Self { budget: START_SPIN, waits: 0 }
    }
}

impl Spinner {
    /// A budget that starts at the most a wait may spin: one wake-up of a
    /// sleeping peer on a slow VM takes 50-90 µs, and a side that gives up
    /// before its peer's first answer never learns that the peer answers.
    pub(crate) fn full() -> Self {
        Self { budget: MAX_SPIN, waits: 0 }
    }

    /// The budget for this wait; zero: sleep at once.
    pub(crate) fn budget(&mut self) -> Duration {
        let planned = self.planned();
        let spin = match policy() {
            Policy::Auto => core_idle(),
            Policy::Always => true,
            Policy::Never => false,
        };
        if spin && !planned.is_zero() { planned } else { Duration::ZERO }
    }

    /// The budget if a core is idle: zero after misses, but a probe once
    /// every [`PROBE_EVERY`] waits.
    fn planned(&mut self) -> Duration {
        if self.budget.is_zero() {
            self.waits = self.waits.wrapping_add(1);
            if !self.waits.is_multiple_of(PROBE_EVERY) {
                return Duration::ZERO;
            }
            self.budget = PROBE_SPIN;
        }
        self.budget
    }

    /// Polls `ready` for this wait's budget, cut to `limit` if one is given,
    /// reading the clock once every `batch` polls; whether it became ready.
    /// A spin that ran its whole budget out is a miss; one `limit` cut
    /// short is not (it says nothing of the peer).
    pub(crate) fn spin<E>(
        &mut self,
        limit: Option<Duration>,
        batch: u32,
        ready: impl FnMut() -> Result<bool, E>,
    ) -> Result<bool, E> {
        let full = self.budget();
        self.spin_for(full, limit, batch, ready)
    }

    /// [`spin`](Self::spin) with this wait's budget already decided.
    fn spin_for<E>(
        &mut self,
        full: Duration,
        limit: Option<Duration>,
        batch: u32,
        mut ready: impl FnMut() -> Result<bool, E>,
    ) -> Result<bool, E> {
        let budget = limit.map_or(full, |l| full.min(l));
        if budget.is_zero() {
            return Ok(false);
        }
        let start = Instant::now();
        loop {
            for _ in 0..batch.max(1) {
                if ready()? {
                    self.hit(start.elapsed());
                    return Ok(true);
                }
                std::hint::spin_loop();
            }
            if start.elapsed() >= budget {
                if budget == full {
                    self.miss();
                }
                return Ok(false);
            }
        }
    }

    /// A sleep the other end ended `after` it began: a spin that long
    /// would have caught it, so the next wait spins (a side that only ever
    /// slept would otherwise never learn that its peer now answers fast).
    pub(crate) fn woke_after(&mut self, after: Duration) {
        if after <= MAX_SPIN {
            self.hit(after);
        }
    }

    pub(crate) fn hit(&mut self, after: Duration) {
        self.budget = self.budget.max(after * 4).min(MAX_SPIN);
    }

    pub(crate) fn miss(&mut self) {
        self.budget /= 2;
        if self.budget < MIN_SPIN {
            self.budget = Duration::ZERO;
        }
    }
}

/// The doorbell an end sleeps on (the receiving socket of a datagram
/// pair): plain until an async wait registers it.
#[derive(Debug)]
enum Bell {
    Plain(OwnedFd),
    Registered(UnixDatagram),
}

impl Bell {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Bell::Plain(fd) => fd.as_fd(),
            Bell::Registered(d) => d.as_fd(),
        }
    }
}

/// A doorbell: (the end that sleeps on it, the end that rings it).
fn doorbell() -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    Ok(socketpair(AddressFamily::Unix, SockType::Datagram, None, flags)?)
}

/// Takes one ring from a doorbell (non-blocking). One is all a sleep gets;
/// a late one left over only makes a later wait look once more.
fn drain(fd: BorrowedFd<'_>) {
    use nix::sys::socket::{MsgFlags, recv};
    let mut byte = [0u8; 16];
    let _ = recv(fd.as_raw_fd(), &mut byte, MsgFlags::MSG_DONTWAIT);
}

fn ring_bell(fd: BorrowedFd<'_>) {
    use nix::sys::socket::{MsgFlags, send};
    // Fails only when the doorbell is full of unanswered rings (one more
    // wakes nobody better) or the sleeper is gone.
    let _ = send(fd.as_raw_fd(), &[1], MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL);
}

/// One end of a shared-memory channel.
#[derive(Debug)]
pub(crate) struct Link {
    ring: ShmDuplex,
    end: usize,
    bell: Bell,
    peer_bell: OwnedFd,
    spin: Spinner,
    /// When this end last announced itself asleep (`mono_ns`).
    parked_at: u64,
    room_timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for both processes.
fn mono_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map_or(0, |t| (t.tv_sec() as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec() as u64))
}

/// What crosses a process boundary for one end: the mapping, both
/// doorbells, and which end it is.
pub(crate) struct Parts {
    pub ring: OwnedFd,
    pub bell: OwnedFd,
    pub peer_bell: OwnedFd,
    pub end: u8,
}

impl Link {
    /// Both ends of a new channel of `capacity` bytes each way.
    pub fn pair(capacity: usize) -> io::Result<(Self, Self)> {
        let ring = ShmDuplex::create(capacity)?;
        let ((bell0, peer1), (bell1, peer0)) = (doorbell()?, doorbell()?);
        let other = ShmDuplex::open(ring.fd().try_clone_to_owned()?)?;
        Ok((
            Self {
                ring,
                end: 0,
                bell: Bell::Plain(bell0),
                peer_bell: peer0,
                spin: Spinner::default(),
                parked_at: 0,
                room_timer: None,
            },
            Self {
                ring: other,
                end: 1,
                bell: Bell::Plain(bell1),
                peer_bell: peer1,
                spin: Spinner::default(),
                parked_at: 0,
                room_timer: None,
            },
        ))
    }

    /// Duplicated fds of this end, to send or to clone.
    pub fn parts(&self) -> io::Result<Parts> {
        Ok(Parts {
            ring: self.ring.fd().try_clone_to_owned()?,
            bell: self.bell.fd().try_clone_to_owned()?,
            peer_bell: self.peer_bell.try_clone()?,
            end: self.end as u8,
        })
    }

    /// The end `parts` describe (checked: a foreign memfd is refused).
    pub fn from_parts(p: Parts) -> io::Result<Self> {
        if p.end > 1 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "shared-memory pipe: bad end index"));
        }
        Ok(Self {
            ring: ShmDuplex::open(p.ring)?,
            end: usize::from(p.end),
            bell: Bell::Plain(p.bell),
            peer_bell: p.peer_bell,
            spin: Spinner::default(),
            parked_at: 0,
            room_timer: None,
        })
    }

    pub fn try_clone(&self) -> io::Result<Self> {
        Self::from_parts(self.parts()?)
    }

    /// Wakes the other end if it sleeps (called after moving a counter,
    /// which the ring follows with a `SeqCst` fence).
    /// Wakes the other end if it sleeps waiting for what we just made
    /// (`Data` after a write, `Room` after a read). Whoever clears its
    /// parked word rings, once per sleep: the sleeper has one datagram to
    /// take.
    fn notify(&self, made: Want) {
        let parked = self.ring.parked(1 - self.end);
        let now = parked.load(Ordering::SeqCst);
        if (now == made.code() || now == Want::Either.code())
            && parked.compare_exchange(now, 0, Ordering::SeqCst, Ordering::SeqCst).is_ok()
        {
            self.ring.rung_at(1 - self.end).store(mono_ns(), Ordering::Relaxed);
            ring_bell(self.peer_bell.as_fd());
        }
    }

    /// Copies buffered bytes from the other end into `dst`.
    pub fn read(&self, dst: &mut [u8]) -> io::Result<usize> {
        let n = self.ring.read(1 - self.end, dst)?;
        if n > 0 {
            self.notify(Want::Room);
        }
        Ok(n)
    }

    /// Copies as much of `src` as fits towards the other end.
    pub fn write(&self, src: &[u8]) -> io::Result<usize> {
        let n = self.ring.write(self.end, src)?;
        if n > 0 {
            self.notify(Want::Data);
        }
        Ok(n)
    }

    fn ready(&self, want: Want) -> io::Result<bool> {
        Ok(match want {
            Want::Data => self.ring.readable(1 - self.end)? > 0,
            Want::Room => self.ring.writable(self.end)? > 0,
            Want::Either => self.ring.readable(1 - self.end)? > 0 || self.ring.writable(self.end)? > 0,
        })
    }

    /// Bytes buffered from the other end, ready to read.
    pub fn readable(&self) -> io::Result<usize> {
        self.ring.readable(1 - self.end)
    }

    /// Whether `want` holds now, or comes within this end's spin budget
    /// (spinning only while a core is idle; see the module docs).
    pub fn ready_or_spin(&mut self, want: Want) -> io::Result<bool> {
        Ok(self.ready(want)? || self.spin(want)?)
    }

    /// Sleeps until the other end rings this end's doorbell for `want`
    /// (call [`ready_or_spin`](Self::ready_or_spin) first). For a
    /// `select!` beside other wake-ups: dropping it leaves the parked word
    /// set, so the caller calls [`unpark`](Self::unpark) after the select,
    /// whichever branch won; a ring that comes later is drained by the next
    /// sleep and costs one spurious look.
    pub async fn sleep(&mut self, want: Want) -> io::Result<()> {
        Self::registered_bell(&mut self.bell)?;
        if self.park(want)? {
            return Ok(());
        }
        let Bell::Registered(bell) = &self.bell else { unreachable!("registered above") };
        bell.readable().await?;
        Self::drain_registered(bell);
        self.unpark();
        Ok(())
    }

    /// Polls the counters for this end's spin budget (if a core is idle).
    fn spin(&mut self, want: Want) -> io::Result<bool> {
        let mut spin = std::mem::take(&mut self.spin);
        // Looking at the counters costs a few ns: the clock is read once
        // every 64 looks.
        let r = spin.spin(None, 64, || self.ready(want));
        self.spin = spin;
        r
    }

    /// Announces this end as asleep; `true` if `want` came meanwhile (then
    /// it is not asleep after all).
    fn park(&mut self, want: Want) -> io::Result<bool> {
        self.parked_at = mono_ns();
        self.ring.rung_at(self.end).store(0, Ordering::Relaxed);
        self.ring.parked(self.end).store(want.code(), Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let ready = self.ready(want);
        if !matches!(ready, Ok(false)) {
            self.unpark();
        }
        ready
    }

    /// This end is not asleep (after a [`sleep`](Self::sleep) that was
    /// dropped). If the other end rang, the spin budget learns how soon.
    pub fn unpark(&mut self) {
        self.ring.parked(self.end).store(0, Ordering::SeqCst);
        let rung = self.ring.rung_at(self.end).swap(0, Ordering::Relaxed);
        if rung >= self.parked_at && rung > 0 {
            self.spin.woke_after(Duration::from_nanos(rung - self.parked_at));
        }
    }

    /// Waits (blocking) until `want` holds, the socket is readable, or
    /// `deadline` passes.
    pub fn wait_blocking(&mut self, want: Want, sock: BorrowedFd<'_>, deadline: Option<Instant>) -> io::Result<Woke> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        if self.ready(want)? || self.spin(want)? {
            return Ok(Woke::Ready);
        }
        loop {
            if self.park(want)? {
                return Ok(Woke::Ready);
            }
            let timeout = match deadline {
                None => PollTimeout::NONE,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
                    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
                }
            };
            // A reader wakes for fds or the end of the stream; a writer only
            // for a hang-up (reported whatever the events asked).
            let events = if want == Want::Data { PollFlags::POLLIN } else { PollFlags::empty() };
            let mut fds = [PollFd::new(self.bell.fd(), PollFlags::POLLIN), PollFd::new(sock, events)];
            let r = poll(&mut fds, timeout);
            let rang = fds[0].revents().is_some_and(|r| !r.is_empty());
            let socket = fds[1].revents().is_some_and(|r| !r.is_empty());
            self.unpark();
            if rang {
                drain(self.bell.fd());
            }
            match r {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            if self.ready(want)? {
                return Ok(Woke::Ready);
            }
            if socket {
                return Ok(Woke::Socket);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Woke::TimedOut);
            }
        }
    }

    /// The doorbell, registered with the current runtime.
    fn registered_bell(bell: &mut Bell) -> io::Result<&UnixDatagram> {
        if let Bell::Plain(fd) = bell {
            let fd = fd.try_clone()?;
            *bell = Bell::Registered(UnixDatagram::from_std(std::os::unix::net::UnixDatagram::from(fd))?);
        }
        match bell {
            Bell::Registered(d) => Ok(d),
            Bell::Plain(_) => unreachable!("registered just above"),
        }
    }

    /// Takes the rings of a registered doorbell through tokio, so its
    /// readiness is cleared once it is empty.
    fn drain_registered(bell: &UnixDatagram) {
        let mut byte = [0u8; 16];
        let _ = bell.try_recv(&mut byte);
    }

    /// [`wait_blocking`](Self::wait_blocking) for async code: the sleep is on
    /// tokio's reactor (the caller has registered `sock` with it). A wait
    /// for room does not watch the socket (see the module docs) but returns
    /// [`Woke::Socket`] every 10 ms for the caller to look.
    pub async fn wait_async(&mut self, want: Want, sock: &UnixStream, deadline: Option<Instant>) -> io::Result<Woke> {
        if self.ready(want)? || self.spin(want)? {
            return Ok(Woke::Ready);
        }
        Self::registered_bell(&mut self.bell)?;
        loop {
            if self.park(want)? {
                return Ok(Woke::Ready);
            }
            let Bell::Registered(bell) = &self.bell else { unreachable!("registered above") };
            let wait = async {
                let socket = async {
                    if want == Want::Data {
                        sock.ready(Interest::READABLE).await.map(|_| true)
                    } else {
                        tokio::time::sleep(ROOM_CHECK).await;
                        Ok(true)
                    }
                };
                tokio::select! {
                    r = bell.readable() => {
                        r?;
                        Self::drain_registered(bell);
                        io::Result::Ok(false)
                    }
                    r = socket => r,
                }
            };
            let woke = match deadline {
                None => Some(wait.await),
                Some(d) => tokio::time::timeout_at(d.into(), wait).await.ok(),
            };
            self.unpark();
            let socket = match woke {
                None => return Ok(if self.ready(want)? { Woke::Ready } else { Woke::TimedOut }),
                Some(r) => r?,
            };
            if self.ready(want)? {
                return Ok(Woke::Ready);
            }
            if socket {
                return Ok(Woke::Socket);
            }
        }
    }

    /// One poll of a wait for room (a `Sink`'s `poll_flush`): `Ready` when
    /// there is room, or every 10 ms for the caller to look whether the
    /// other end is gone; otherwise parked, with `cx` woken by the doorbell.
    pub fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.ready(Want::Room)? {
                self.unpark();
                self.room_timer = None;
                return Poll::Ready(Ok(()));
            }
            Self::registered_bell(&mut self.bell)?;
            if self.park(Want::Room)? {
                self.room_timer = None;
                return Poll::Ready(Ok(()));
            }
            let timer = self.room_timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(ROOM_CHECK)));
            if timer.as_mut().poll(cx).is_ready() {
                self.unpark();
                self.room_timer = None;
                return Poll::Ready(Ok(()));
            }
            let Bell::Registered(bell) = &self.bell else { unreachable!("registered above") };
            std::task::ready!(bell.poll_recv_ready(cx))?;
            Self::drain_registered(bell);
            self.unpark();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spin_budget_grows_on_hits_and_stops_after_misses() {
        let mut s = Spinner::default();
        s.hit(Duration::from_micros(20));
        assert_eq!(s.budget, Duration::from_micros(80));
        s.hit(Duration::from_micros(80));
        assert_eq!(s.budget, MAX_SPIN, "capped");
        for _ in 0..10 {
            s.miss();
        }
        assert_eq!(s.budget, Duration::ZERO);
        let mut probes = 0;
        for _ in 0..PROBE_EVERY * 2 {
            if !s.planned().is_zero() {
                probes += 1;
                s.miss();
                s.miss();
                s.miss();
            }
        }
        assert_eq!(probes, 2, "a probe once every {PROBE_EVERY} waits");
    }

    #[test]
    fn a_spin_never_polls_past_its_limit() {
        // The budget is given: whether a core is idle here does not matter.
        let mut s = Spinner::full();
        let mut polls = 0;
        let r: Result<bool, ()> = s.spin_for(MAX_SPIN, Some(Duration::ZERO), 1, || {
            polls += 1;
            Ok(false)
        });
        assert_eq!((r, polls), (Ok(false), 0), "a zero limit (`poll(Some(ZERO))`) just looks");
        let r: Result<bool, ()> = s.spin_for(MAX_SPIN, Some(Duration::from_micros(5)), 1, || Ok(false));
        assert_eq!(r, Ok(false));
        assert_eq!(s.budget, MAX_SPIN, "a spin the limit cut short is no miss");
        let r: Result<bool, ()> = s.spin_for(MAX_SPIN, None, 1, || {
            polls += 1;
            Ok(polls == 3)
        });
        assert_eq!((r, polls), (Ok(true), 3), "ready on the third poll");
        let r: Result<bool, &str> = s.spin_for(MAX_SPIN, None, 1, || Err("gone"));
        assert_eq!(r, Err("gone"), "an error ends the spin");
    }

    #[test]
    fn a_sleep_the_peer_ended_soon_revives_the_spin() {
        let (mut a, b) = Link::pair(4096).unwrap();
        for _ in 0..10 {
            a.spin.miss();
        }
        assert_eq!(a.spin.budget, Duration::ZERO);
        // `a` sleeps; `b`'s write rings it and stamps the time.
        assert!(!a.park(Want::Data).unwrap());
        b.write(b"x").unwrap();
        let rung = a.ring.rung_at(a.end).load(Ordering::Relaxed);
        assert!(rung >= a.parked_at, "the ringer stamps when it rang");
        // As if it rang 5 µs after `a` parked: a 20 µs spin would have caught it.
        a.ring.rung_at(a.end).store(a.parked_at + 5_000, Ordering::Relaxed);
        a.unpark();
        assert_eq!(a.spin.budget, Duration::from_micros(20));
        // A ring long after the sleep began teaches nothing.
        for _ in 0..10 {
            a.spin.miss();
        }
        assert_eq!(a.read(&mut [0; 4]).unwrap(), 1);
        assert!(!a.park(Want::Data).unwrap());
        a.ring.rung_at(a.end).store(a.parked_at + 5_000_000, Ordering::Relaxed);
        a.unpark();
        assert_eq!(a.spin.budget, Duration::ZERO);
    }

    #[test]
    fn a_blocking_wait_is_woken_by_the_other_end() {
        let (mut a, b) = Link::pair(4096).unwrap();
        let (s1, _s2) = std::os::unix::net::UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            // Not a timing assumption: the wait below succeeds whenever the
            // write lands, before or after it parks.
            std::thread::sleep(Duration::from_millis(20));
            b.write(b"hello").unwrap();
            b
        });
        assert_eq!(a.wait_blocking(Want::Data, s1.as_fd(), None).unwrap(), Woke::Ready);
        let mut buf = [0; 8];
        assert_eq!(a.read(&mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"hello");
        writer.join().unwrap();
    }

    #[test]
    fn a_closed_socket_ends_the_wait() {
        let (mut a, _b) = Link::pair(4096).unwrap();
        let (s1, s2) = std::os::unix::net::UnixStream::pair().unwrap();
        drop(s2);
        assert_eq!(a.wait_blocking(Want::Data, s1.as_fd(), None).unwrap(), Woke::Socket);
        let soon = Some(Instant::now() + Duration::from_millis(10));
        let (s3, _s4) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(a.wait_blocking(Want::Data, s3.as_fd(), soon).unwrap(), Woke::TimedOut);
    }
}
