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
