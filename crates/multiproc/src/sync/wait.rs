//! Waiting without blocking a runtime: every primitive offers one attempt
//! that never sleeps, and one sleep on its futex; these helpers loop over
//! them until success or a deadline, blocking the calling thread (`blocking_*`
//! methods) or on tokio's blocking pool in slices (async methods, which thus
//! never park a runtime worker and give their thread back soon after the
//! caller drops the future).

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
    loop {
        if let Some(v) = attempt(prim)? {
            return Ok(Some(v));
        }
        if passed(deadline) {
            return Ok(None);
        }
        let slice = Instant::now() + SLICE;
        let until = deadline.map_or(slice, |d| d.min(slice));
        let p = prim.clone();
        tokio::task::spawn_blocking(move || sleep(&p, Some(until)))
            .await
            .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))??;
    }
}

/// Time left until `deadline` (`None`: no deadline), for a futex wait.
pub(crate) fn left(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}
