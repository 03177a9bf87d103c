//! Waiting without blocking a runtime: every primitive offers one attempt
//! that never sleeps, and one sleep on its futex; these helpers loop over
//! them until success or a deadline, blocking the calling thread (`blocking_*`
//! methods) or on tokio's blocking pool in slices (async methods, which thus
//! never park a runtime worker and give their thread back soon after the
//! caller drops the future).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Longest sleep on the blocking pool per round of an async wait.
const SLICE: Duration = Duration::from_millis(100);

pub(crate) fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.map(|t| Instant::now() + t)
}

fn passed(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

/// Loops `attempt` and `sleep(deadline)` on this thread; `Ok(None)` when the
/// deadline passed.
pub(crate) fn blocking<P, T>(
    prim: &P,
    deadline: Option<Instant>,
    attempt: fn(&P) -> Result<Option<T>>,
    sleep: fn(&P, Option<Instant>) -> Result<()>,
) -> Result<Option<T>> {
    loop {
        if let Some(v) = attempt(prim)? {
            return Ok(Some(v));
        }
        if passed(deadline) {
            return Ok(None);
        }
        sleep(prim, deadline)?;
    }
}

/// The same loop for async code: sleeps run on the blocking pool, a slice at
/// a time.
pub(crate) async fn asynchronous<P, T>(
    prim: &P,
    deadline: Option<Instant>,
    attempt: fn(&P) -> Result<Option<T>>,
    sleep: fn(&P, Option<Instant>) -> Result<()>,
) -> Result<Option<T>>
where
    P: Clone + Send + 'static,
{
    asynchronous_handing_off(prim, deadline, attempt, sleep, |_| {}).await
}

/// Calls `handoff` if the async wait it belongs to is dropped unfinished.
struct Abandon<P> {
    prim: P,
    handoff: fn(&P),
    alive: Arc<AtomicBool>,
    finished: bool,
}

impl<P> Drop for Abandon<P> {
    fn drop(&mut self) {
        if !self.finished {
            self.alive.store(false, Ordering::SeqCst);
            (self.handoff)(&self.prim);
        }
    }
}

/// [`asynchronous`] for a primitive whose wake-ups go to one sleeper each (a
/// semaphore): if the caller drops the future, a wake-up its sleep on the
/// blocking pool received (or receives later) would be lost, so `handoff`
/// passes it on, from the drop and again from the sleep when it ends.
pub(crate) async fn asynchronous_handing_off<P, T>(
    prim: &P,
    deadline: Option<Instant>,
    attempt: fn(&P) -> Result<Option<T>>,
    sleep: fn(&P, Option<Instant>) -> Result<()>,
    handoff: fn(&P),
) -> Result<Option<T>>
where
    P: Clone + Send + 'static,
{
    let alive = Arc::new(AtomicBool::new(true));
    let mut abandon = Abandon { prim: prim.clone(), handoff, alive: alive.clone(), finished: false };
    let outcome = loop {
        match attempt(prim) {
            Ok(Some(v)) => break Ok(Some(v)),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
        if passed(deadline) {
            break Ok(None);
        }
        let slice = Instant::now() + SLICE;
        let until = deadline.map_or(slice, |d| d.min(slice));
        let (p, alive) = (prim.clone(), alive.clone());
        let slept = tokio::task::spawn_blocking(move || {
            let r = sleep(&p, Some(until));
            if !alive.load(Ordering::SeqCst) {
                handoff(&p);
            }
            r
        })
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e.to_string())));
        if let Err(e) = slept.and_then(|r| r) {
            break Err(e);
        }
    };
    abandon.finished = true;
    outcome
}

/// Time left until `deadline` (`None`: no deadline), for a futex wait.
pub(crate) fn left(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}
