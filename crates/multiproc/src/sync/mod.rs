//! Cross-process synchronization: [`Lock`], [`RLock`], [`Semaphore`],
//! [`BoundedSemaphore`], [`Condition`], [`Event`] and [`Barrier`].
//!
//! Each lives in a few words of anonymous shared memory (a memfd mapping,
//! passed to other processes as an fd when the handle is a task argument:
//! nothing has a name, so nothing can leak). The fast paths are atomic
//! operations only; sleeping uses futexes on those words. Every wait has an
//! async form (which sleeps through the process's single waiter thread,
//! never on a runtime worker nor a thread per waiter) and a `blocking_*`
//! twin for sync code.

mod barrier;
mod block;
mod condition;
mod event;
mod lock;
mod semaphore;
mod wait;
mod waiter;

pub use barrier::Barrier;
pub(crate) use block::Block;
pub use condition::{Condition, ConditionGuard};
pub use event::Event;
pub use lock::{Lock, LockGuard, RLock, RLockGuard};
pub use semaphore::{BoundedSemaphore, Semaphore, SemaphoreGuard};
pub(crate) use waiter::{Watch, WordWait};

/// Panics, in debug builds, when called on a tokio runtime worker thread
/// (where a blocking wait would stall every task of that worker), as
/// tokio's own `blocking_recv` does. Called by `blocking_*` methods just
/// before they would sleep; their fast paths stay usable anywhere. Threads
/// of `spawn_blocking` and plain threads pass.
#[track_caller]
pub(crate) fn assert_not_in_runtime(what: &str) {
    #[cfg(debug_assertions)]
    if tokio::runtime::Handle::try_current().is_ok() {
        // A ready oneshot: `blocking_recv` returns at once, except on a
        // runtime thread, where tokio panics before looking.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let _ = tx.send(());
        let ok =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || rx.blocking_recv().is_ok())).unwrap_or(false);
        assert!(
            ok,
            "{what} was called from an async runtime thread, where it would block the runtime; use its async twin (or spawn_blocking)"
        );
    }
    #[cfg(not(debug_assertions))]
    let _ = what;
}
