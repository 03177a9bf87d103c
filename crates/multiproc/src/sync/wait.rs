//! Waiting without blocking a runtime: every primitive offers one attempt
//! that never sleeps, and one sleep on its futex; these helpers loop over
//! them until success or a deadline, blocking the calling thread (`blocking_*`
//! methods, which panic in debug builds if that thread drives a runtime) or
//! through the process's waiter thread (async methods, which never park a
//! runtime worker and hold nothing once the caller drops the future).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::waiter::{Watch, WordWait};
use crate::error::Result;

/// How long an async wait keeps yielding and looking before it registers
/// with the waiter thread.
const POLL_FOR: Duration = Duration::from_micros(50);

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
        super::assert_not_in_runtime("a blocking_* wait");
        sleep(prim, deadline)?;
    }
}

/// What an async wait sleeps on: a word, the value it holds now (read
/// before the attempt that failed, so no change is missed), and the longest
/// sleep before the attempt is made again anyway (for primitives that look
/// for dead processes).
pub(crate) struct Sleep {
    pub src: Arc<dyn Watch>,
    pub expected: u32,
    pub cap: Option<Duration>,
}

/// The same loop for async code: the sleeps go through the process's one
/// waiter thread ([`super::waiter`]), never a thread per waiter, and never
/// block a runtime worker.
pub(crate) async fn asynchronous<P, T>(
    prim: &P,
    deadline: Option<Instant>,
    attempt: fn(&P) -> Result<Option<T>>,
    watch: fn(&P) -> Sleep,
) -> Result<Option<T>> {
    asynchronous_handing_off(prim, deadline, attempt, watch, |_| {}).await
}

/// Calls `handoff` if the async wait it belongs to is dropped unfinished.
struct Abandon<'a, P> {
    prim: &'a P,
    handoff: fn(&P),
    finished: bool,
}

impl<P> Drop for Abandon<'_, P> {
    fn drop(&mut self) {
        if !self.finished {
            (self.handoff)(self.prim);
        }
    }
}

/// [`asynchronous`] for a primitive whose wake-ups go to one sleeper each (a
/// semaphore): if the caller drops the future, a wake-up the waiter thread
/// received for it would be lost, so `handoff` passes it on.
pub(crate) async fn asynchronous_handing_off<P, T>(
    prim: &P,
    deadline: Option<Instant>,
    attempt: fn(&P) -> Result<Option<T>>,
    watch: fn(&P) -> Sleep,
    handoff: fn(&P),
) -> Result<Option<T>> {
    let mut abandon = Abandon { prim, handoff, finished: false };
    let mut polling_since: Option<Instant> = None;
    let outcome = loop {
        let sleep = watch(prim);
        match attempt(prim) {
            Ok(Some(v)) => break Ok(Some(v)),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
        if passed(deadline) {
            break Ok(None);
        }
        // A wake-up that comes within microseconds (a ping-pong between
        // processes) is cheaper to catch by yielding to the runtime and
        // looking again than by a round trip through the waiter thread.
        let since = *polling_since.get_or_insert_with(Instant::now);
        if since.elapsed() < POLL_FOR {
            tokio::task::yield_now().await;
            continue;
        }
        polling_since = None;
        let until = match sleep.cap {
            Some(cap) => {
                let c = Instant::now() + cap;
                Some(deadline.map_or(c, |d| d.min(c)))
            }
            None => deadline,
        };
        WordWait::new(sleep.src, sleep.expected, until).await;
    };
    abandon.finished = true;
    outcome
}

/// Time left until `deadline` (`None`: no deadline), for a futex wait.
pub(crate) fn left(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}
