//! Cross-process synchronization: [`Lock`], [`RLock`], [`Semaphore`],
//! [`BoundedSemaphore`], [`Condition`], [`Event`] and [`Barrier`].
//!
//! Each lives in a few words of anonymous shared memory (a memfd mapping,
//! passed to other processes as an fd when the handle is a task argument:
//! nothing has a name, so nothing can leak). The fast paths are atomic
//! operations only; sleeping uses futexes on those words. Every wait has an
//! async form (which sleeps on tokio's blocking pool, never on a runtime
//! worker) and a `blocking_*` twin for sync code.

mod barrier;
mod block;
mod condition;
mod event;
mod lock;
mod semaphore;
mod wait;

pub use barrier::Barrier;
pub(crate) use block::Block;
pub use condition::{Condition, ConditionGuard};
pub use event::Event;
pub use lock::{Lock, LockGuard, RLock, RLockGuard};
pub use semaphore::{BoundedSemaphore, Semaphore, SemaphoreGuard};
