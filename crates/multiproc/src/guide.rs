//! Guides: pages of prose and examples, no items of their own.
//!
//! - [`tasks`]: what a `#[multiproc::task]` may be, every rule with a
//!   compile-fail example, what errors look like, why globals are not
//!   inherited.
//! - [`coming_from_python`]: every `multiprocessing` idiom and its line here.

#[doc = include_str!("../docs/tasks.md")]
pub mod tasks {}

#[doc = include_str!("../docs/python.md")]
pub mod coming_from_python {}
