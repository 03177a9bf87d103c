//! Guides: pages of prose and examples, no items of their own.
//!
//! - [`tasks`]: what a `#[multiproc::task]` may be, every rule with a
//!   compile-fail example, what errors look like, why globals are not
//!   inherited.
//! - [`coming_from_python`]: every `multiprocessing` idiom and its line here.
//! - [`fleets`]: the three fleet recipes (a Pool with retries, a Supervisor
//!   of leased-queue consumers, an async service on a Pool) and the stop
//!   sequence they share.

#[doc = include_str!("../docs/tasks.md")]
pub mod tasks {}

#[doc = include_str!("../docs/python.md")]
pub mod coming_from_python {}

#[doc = include_str!("../docs/fleets.md")]
pub mod fleets {}
