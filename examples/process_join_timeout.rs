//! Seed: `join(timeout)` returns after at most `timeout`; check `exitcode`
//! to learn whether the process ended. A process can be joined many times.
//!
//! ```python
//! p = Process(target=work)
//! p.start()
//! p.join(0.1)
//! print('after join(0.1):', p.is_alive(), p.exitcode)   # True None
//! p.join()
//! print('after join():', p.is_alive(), p.exitcode)      # False 0
//! p.join()                                              # again: returns at once
//! ```
//!
//! expect: after join(0.1): true None
//! expect: after join(): false Some(0)
//! expect: joined again: Some(0)

use std::time::Duration;

use multiproc::Process;

#[multiproc::task]
fn work() {
    std::thread::sleep(Duration::from_millis(500));
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let mut p = Process::new(work, ());
    p.start().await?;
    p.join_timeout(Duration::from_millis(100)).await?;
    println!("after join(0.1): {} {:?}", p.is_alive(), p.exitcode());
    p.join().await?;
    println!("after join(): {} {:?}", p.is_alive(), p.exitcode());
    p.join().await?;
    println!("joined again: {:?}", p.exitcode());
    Ok(())
}
