//! The one check that turns "called outside a tokio runtime" from a panic
//! deep inside tokio ("there is no reactor running") into
//! [`Error::NoRuntime`] at the public entry points (`Pool` building,
//! `Process::start`, `Manager::start`/`serve`/`connect`).

use crate::error::{Error, Result};

/// Fails with [`Error::NoRuntime`] unless the caller runs inside a tokio
/// runtime; `what` names the operation for the message ("a pool").
pub(crate) fn require(what: &'static str) -> Result<()> {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => Ok(()),
        Err(_) => Err(Error::NoRuntime { what }),
    }
}

/// Runs `f`, a long synchronous stretch on the caller's thread (encoding a
/// large map), without stalling the other tasks of a runtime worker: on a
/// multi-thread runtime they move to another thread meanwhile
/// (`block_in_place`); elsewhere (a current-thread runtime, no runtime)
/// `f` just runs.
pub(crate) fn long_stretch<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}
