//! Seed: `Semaphore(2)` lets at most two of five workers in at a time.
//!
//! ```python
//! def worker(s, i):
//!     s.acquire()
//!     print(current_process().name + "acquire");
//!     time.sleep(i)
//!     print(current_process().name + "release\n");
//!     s.release()
//!
//! if __name__ == "__main__":
//!     s = Semaphore(2)
//!     for i in range(5):
//!         p = Process(target=worker, args=(s, i * 2))
//!         p.start()
//! ```
//!
//! expect: Process-1acquire
//! expect: Process-5release
//! expect: never more than 2 inside at once: true

use std::time::Duration;

use multiproc::{Process, Semaphore, Value};

#[multiproc::task]
fn worker(s: Semaphore, i: u64, inside: Value<u32>, most: Value<u32>) {
    let _unit = s.blocking_acquire().expect("acquire");
    let name = multiproc::current_process().name;
    println!("{name}acquire");
    let now = inside.blocking_update(|n| n + 1).expect("count");
    most.blocking_update(|m| m.max(now)).expect("count");
    std::thread::sleep(Duration::from_millis(i * 20));
    inside.blocking_update(|n| n - 1).expect("count");
    println!("{name}release\n");
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let s = Semaphore::new(2)?;
    let (inside, most) = (Value::new(0u32)?, Value::new(0u32)?);
    let mut ps = Vec::new();
    for i in 0..5 {
        let mut p = Process::new(worker, (s.clone(), i * 2, inside.clone(), most.clone()));
        p.start().await?;
        ps.push(p);
    }
    for p in &ps {
        p.join().await?;
    }
    println!("never more than 2 inside at once: {}", most.get() <= 2);
    Ok(())
}
