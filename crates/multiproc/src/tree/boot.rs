//! Start-up: decides, before `main` runs, whether this process was started as
//! a forkserver or a worker, and if so becomes one and never returns.
//!
//! A constructor in `.init_array` runs before `main` (and before libtest's
//! harness), so this works under `#[tokio::main]`, in examples and in
//! `cargo test`/`cargo nextest` without `harness = false`. The role comes
//! from the environment together with the parent's pid: a process that merely
//! inherited the variables (a user-spawned copy of the binary) sees another
//! parent and starts normally.

use super::role::{FD_ENV, PARENT_ENV, ROLE_ENV};

#[used]
#[unsafe(link_section = ".init_array")]
#[expect(unsafe_code, reason = "the one constructor: role detection must run before main")]
static BOOT: extern "C" fn() = boot;

extern "C" fn boot() {
    let Some(role) = std::env::var_os(ROLE_ENV) else { return };
    if role == "tracker" {
        // Started detached (its parent exited at once), so there is no
        // parent to check; its fd must be the listening socket.
        match multiproc_sys::process::take_inherited_fd(FD_ENV) {
            Ok(fd) if super::tracker::is_listening(&fd) => super::tracker::run(fd),
            _ => {
                eprintln!("multiproc: cannot start as the resource tracker: no listening socket");
                std::process::exit(70);
            }
        }
    }
    let parent = std::env::var(PARENT_ENV).ok().and_then(|p| p.parse::<i32>().ok());
    if parent != Some(nix::unistd::getppid().as_raw()) {
        return;
    }
    let fd = match multiproc_sys::process::take_inherited_fd(FD_ENV) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("multiproc: cannot start as {role:?}: {e}");
            std::process::exit(70);
        }
    };
    super::tracker::adopt_tree();
    match role.to_str() {
        Some("forkserver") => super::forkserver::run(fd),
        Some("worker") => super::child::run(fd),
        _ => {
            eprintln!("multiproc: unknown role {role:?}");
            std::process::exit(70);
        }
    }
}

/// Keeps the constructor in every binary that starts processes (a linker may
/// otherwise drop the object file holding it).
pub(crate) fn ensure_linked() {
    std::hint::black_box(&BOOT);
}
