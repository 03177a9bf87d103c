//! Every `unsafe` OS call `multiproc` makes, behind small safe functions.
//!
//! The rest of the workspace forbids `unsafe_code`; this crate is where the
//! invariants live (link-time registration included: [`link`]). Each `unsafe` block carries a `// SAFETY:` comment and each
//! `unsafe fn` a `# Safety` section. Everything here is synchronous and knows
//! nothing about tokio. Linux only: pidfd, memfd, futex, `PR_SET_PDEATHSIG`.
#![cfg(target_os = "linux")]
#![warn(missing_docs)]

pub mod clock;
pub mod fd;
pub mod fdpass;
pub mod futex;
pub mod link;
pub mod pidlock;
pub mod process;
pub mod ring;
pub mod shm;
pub mod shmring;
