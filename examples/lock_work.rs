//! Seed: three workers, first without a lock (their lines interleave), then
//! with one (each runs start to end alone).
//!
//! ```python
//! def work():
//!     print('%s is running' % os.getpid())
//!     time.sleep(2)
//!     print('%s is done' % os.getpid())
//!
//! def work(lock):
//!     lock.acquire()
//!     print('%s is running' % os.getpid())
//!     time.sleep(2)
//!     print('%s is done' % os.getpid())
//!     lock.release()
//!
//! for i in range(3):
//!     p = Process(target=work, args=(lock,))
//!     p.start()
//! ```
//!
//! expect: without a lock:
//! expect: with a lock:
//! expect: is done

use std::time::Duration;

use multiproc::{Lock, Process};

#[multiproc::task]
fn work() {
    println!("{} is running", std::process::id());
    std::thread::sleep(Duration::from_millis(100));
    println!("{} is done", std::process::id());
}

#[multiproc::task]
fn work_locked(lock: Lock) {
    let _held = lock.blocking_acquire().expect("acquire");
    println!("{} is running", std::process::id());
    std::thread::sleep(Duration::from_millis(100));
    println!("{} is done", std::process::id());
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    println!("without a lock:");
    let mut ps = Vec::new();
    for _ in 0..3 {
        let mut p = Process::new(work, ());
        p.start().await?;
        ps.push(p);
    }
    for p in &ps {
        p.join().await?;
    }
    println!("with a lock:");
    let lock = Lock::new()?;
    for _ in 0..3 {
        Process::new(work_locked, (lock.clone(),)).start().await?;
    }
    Ok(())
}
