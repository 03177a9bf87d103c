//! Seed: acquire and release a lock around a print, in ten processes.
//!
//! ```python
//! def f(l, i):
//!     l.acquire()
//!     try:
//!         print('hello world', i)
//!     finally:
//!         l.release()
//!
//! if __name__ == '__main__':
//!     lock = Lock()
//!     for num in range(10):
//!         Process(target=f, args=(lock, num)).start()
//! ```
//!
//! expect: hello world 0
//! expect: hello world 9

use multiproc::{Lock, Process};

#[multiproc::task]
fn f(l: Lock, i: u32) {
    let _held = l.blocking_acquire().expect("acquire"); // released on every path
    println!("hello world {i}");
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let lock = Lock::new()?;
    for num in 0..10 {
        Process::new(f, (lock.clone(), num)).start().await?;
    }
    Ok(())
}
