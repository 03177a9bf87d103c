//! Link-time registration: the `.init_array` constructor and the
//! link-section slices (`linkme`) the task and hosted-type macros add to.
//!
//! Both put statics in named ELF sections, which Rust cannot check (an
//! unsafe attribute). They live here so the rest of the workspace, and a
//! user crate with `#![forbid(unsafe_code)]`, registers through safe items:
//!
//! - [`AT_START`] holds the functions the program's constructor runs before
//!   `main` (multiproc's role detection). The constructor itself is the one
//!   `.init_array` entry below; [`keep_constructor`] stops the linker from
//!   dropping it.
//! - [`TASKS`] and [`HOSTED`] hold one [`Registered`] per `#[multiproc::task]`
//!   / `#[multiproc::target]` / `#[multiproc::hosted]` item. An element is
//!   added with `#[linkme::distributed_slice(TASKS)]`, which expands through
//!   the `TASKS!` macro declared here: the link-section attribute comes from
//!   this crate's macro, so rustc's `unsafe_code` lint (not reported for
//!   code from another crate's macro) does not fire in the registering
//!   crate. The element types are `multiproc`'s; this crate sees them as
//!   `dyn Any` and `multiproc` downcasts.

use std::any::Any;

pub use linkme;

/// One registered item: a `'static` value of a type the registering crate
/// knows (`multiproc`'s `TaskEntry` or `HostedEntry`).
#[derive(Debug)]
pub struct Registered {
    /// The entry; downcast it to its type.
    pub entry: &'static (dyn Any + Send + Sync),
}

/// Every task and target the macros registered in this binary.
#[linkme::distributed_slice]
pub static TASKS: [Registered];

/// Every hosted type the macro registered in this binary.
#[linkme::distributed_slice]
pub static HOSTED: [Registered];

/// Functions the constructor runs, in link order, before `main`.
#[linkme::distributed_slice]
pub static AT_START: [fn()];

// SAFETY: `.init_array` holds pointers to `extern "C" fn()` the loader calls
// once, before `main`, on the main thread; `CONSTRUCTOR` is such a pointer,
// to a function that takes no arguments and never unwinds out (an unwinding
// panic in an `extern "C"` fn aborts). What it runs must not rely on std's
// runtime set-up (the functions in `AT_START` are written for that).
#[unsafe(link_section = ".init_array")]
#[used]
static CONSTRUCTOR: extern "C" fn() = run_at_start;

extern "C" fn run_at_start() {
    for f in AT_START {
        f();
    }
}

/// Keeps the constructor in the binary: a linker drops an object file
/// nothing refers to, `#[used]` statics and all. Call it from code that
/// always runs where processes are started.
pub fn keep_constructor() {
    std::hint::black_box(&CONSTRUCTOR);
}
