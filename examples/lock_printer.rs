//! Seed: ten processes print one at a time under a lock.
//!
//! ```python
//! def printer(item, lock):
//!     with lock:
//!         print(item)
//!
//! lock = Lock()
//! for item in range(10):
//!     Process(target=printer, args=(item, lock)).start()
//! ```
//!
//! expect: 0
//! expect: 9

use multiproc::{Lock, Process};

#[multiproc::task]
fn printer(item: u32, lock: Lock) {
    let _with = lock.blocking_acquire().expect("acquire");
    println!("{item}");
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let lock = Lock::new()?;
    for item in 0..10 {
        Process::new(printer, (item, lock.clone())).start().await?;
    }
    Ok(())
}
