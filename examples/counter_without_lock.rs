//! Seed: two processes add to a shared value without a lock; their
//! read-then-write steps interleave, so updates can be lost.
//!
//! ```python
//! def job(v, num):
//!     for _ in range(5):
//!         time.sleep(0.1)
//!         v.value += num
//!         print(v.value, end="|")
//!
//! def multicore():
//!     v = mp.Value('i', 0)
//!     p1 = mp.Process(target=job, args=(v,1))
//!     p2 = mp.Process(target=job, args=(v,3))
//!     p1.start(); p2.start()
//!     p1.join(); p2.join()
//! ```
//!
//! expect: final value:

use std::io::Write;
use std::time::Duration;

use multiproc::{Process, Value};

#[multiproc::task]
fn job(v: Value<i32>, num: i32) {
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(10));
        v.set(v.get() + num); // v.value += num: a read, then a write
        print!("{}|", v.get());
        let _ = std::io::stdout().flush();
    }
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let v = Value::new(0i32)?;
    let mut p1 = Process::new(job, (v.clone(), 1));
    let mut p2 = Process::new(job, (v.clone(), 3));
    p1.start().await?;
    p2.start().await?;
    p1.join().await?;
    p2.join().await?;
    println!();
    println!("final value: {} (20 unless an update was lost)", v.get());
    Ok(())
}
