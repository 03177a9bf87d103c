//! Start-up: decides whether this process was started as a forkserver, a
//! worker or a resource tracker, and if so becomes one and never returns.
//!
//! Two ways in. A program whose `main` starts with `multiproc::init()` (or
//! is `#[multiproc::main]`) takes the role there, after every constructor
//! (C/C++ static initialisers of linked libraries included) and std's
//! set-up: such a program marks the copies it starts (`MULTIPROC_BOOT`), and
//! their constructor leaves the role to `init`. Otherwise, as a fallback
//! that needs no change to `main` (`cargo test`, `#[tokio::main]`), a
//! constructor in `.init_array` takes the role before `main`.
//!
//! The role comes from the environment together with the parent's pid: a
//! process that merely inherited the variables (a user-spawned copy of the
//! binary) sees another parent and starts normally.

use std::sync::atomic::{AtomicBool, Ordering};

use super::role::{BOOT_ENV, FD_ENV, PARENT_ENV, ROLE_ENV};

/// Run by the program's constructor (`multiproc_sys::link`), before `main`.
#[linkme::distributed_slice(multiproc_sys::link::AT_START)]
#[linkme(crate = multiproc_sys::link::linkme)]
static BOOT: fn() = boot;

/// Whether this process's `main` called `init` (so copies of it will too).
static INIT_IN_MAIN: AtomicBool = AtomicBool::new(false);

fn boot() {
    if std::env::var_os(BOOT_ENV).is_some_and(|v| v == "main") {
        return;
    }
    take_role();
}

/// `multiproc::init()`: see the crate docs.
pub(crate) fn init() {
    ensure_linked();
    INIT_IN_MAIN.store(true, Ordering::Relaxed);
    if std::env::var_os(BOOT_ENV).is_some_and(|v| v == "main") {
        take_role();
    }
}

/// The variable a copy of this binary needs to take its role at the same
/// point this process would (`init` or the constructor).
pub(crate) fn boot_env(cmd: &mut std::process::Command) {
    if INIT_IN_MAIN.load(Ordering::Relaxed) {
        cmd.env(BOOT_ENV, "main");
    } else {
        cmd.env_remove(BOOT_ENV);
    }
}

/// Becomes the role the environment names, if it is meant for this process.
fn take_role() {
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
    multiproc_sys::link::keep_constructor();
    std::hint::black_box(&BOOT);
}
