//! Worker fleets: an OTP-style [`Supervisor`] of long-running processes,
//! pools and other supervisors; see [`Supervisor`] for the theory of
//! operation and [`guide::fleets`](crate::guide::fleets) (also the README's
//! "Fleet recipes") for the three fleet recipes: a Pool with retries as a
//! job executor, supervised consumers of a leased queue, an async service
//! offloading to a Pool with graceful shutdown.

mod child;
mod spec;
mod supervisor;

pub use child::{ExitCause, RecycleReason};
pub use spec::{ChildSpec, Restart, Strategy};
pub use supervisor::{ChildStats, Supervisor, SupervisorBuilder, SupervisorEvent, SupervisorStats};

/// Resident memory of process `pid` in bytes (`VmRSS`), if it can be read.
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
