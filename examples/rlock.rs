//! Seed: a reentrant lock: its owner may take it again without blocking and
//! must release it as many times; for other processes it is a plain mutex,
//! and they may not release it.
//!
//! ```python
//! lock = multiprocessing.RLock()
//! with lock:
//!     with lock:            # the owner takes it again
//!         ...
//! lock.release()            # RuntimeError: cannot release un-acquired lock
//! ```
//!
//! expect: depth 2 after two acquires
//! expect: child cannot release it: true
//! expect: free again: depth 0

use multiproc::{Error, Process, RLock};

#[multiproc::task]
fn try_release(lock: RLock) {
    println!("child cannot release it: {}", matches!(lock.release(), Err(Error::NotOwner)));
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let lock = RLock::new()?;
    {
        let _outer = lock.acquire().await?;
        let _inner = lock.acquire().await?;
        println!("depth {} after two acquires", lock.depth());
        let mut p = Process::new(try_release, (lock.clone(),));
        p.start().await?;
        p.join().await?;
    }
    println!("free again: depth {}", lock.depth());
    Ok(())
}
