//! A program whose `main` is `#[multiproc::main]` and which links a C static
//! initialiser and finaliser (`tests/c/static_init.c`, built by `build.rs`).
//! The initialiser records the pid of the process image it ran in; a forked
//! child must see its forkserver's (the forkserver took its role after every
//! constructor had run), a spawned child its own. Prints each child's pid
//! (`forked <pid>`, `spawned <pid>`: `tests/it/tree.rs` checks which of
//! them ran the finaliser), then `ok`, or exits 1.
//!
//! e2e-args:
//! expect: ok

use multiproc::{Process, StartMethod};

/// Exits 0 when the C initialiser ran in the image this process came from.
#[multiproc::task]
fn initialiser_ran(spawned: bool) {
    let ran_in: Option<u32> = std::env::var("MULTIPROC_TEST_C_INIT_PID").ok().and_then(|v| v.parse().ok());
    let image = if spawned { std::process::id() } else { nix::unistd::getppid().as_raw() as u32 };
    if ran_in != Some(image) {
        eprintln!("the C initialiser ran in {ran_in:?}, this child's image is {image}");
        std::process::exit(3);
    }
}

#[multiproc::main(flavor = "current_thread")]
async fn main() {
    for method in [StartMethod::Forkserver, StartMethod::Spawn] {
        let mut p = Process::new(initialiser_ran, (method == StartMethod::Spawn,)).start_method(method);
        p.start().await.expect("start");
        let code = p.join().await.expect("join");
        let how = if method == StartMethod::Spawn { "spawned" } else { "forked" };
        println!("{how} {}", p.pid().expect("pid"));
        if code != 0 {
            eprintln!("{method:?}: the child exited {code}");
            std::process::exit(1);
        }
    }
    println!("ok");
}
