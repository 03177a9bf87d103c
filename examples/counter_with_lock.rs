//! Seed: the same two processes, each holding a lock for its whole loop:
//! p1 runs to the end, then p2 (or the other way round), and no update is lost.
//!
//! ```python
//! def job(v, num, l):
//!     l.acquire()
//!     for _ in range(5):
//!         time.sleep(0.1)
//!         v.value += num
//!         print(v.value, end="|")
//!     l.release()
//!
//! def multicore():
//!     l = mp.Lock()
//!     v = mp.Value('i', 0)
//!     p1 = mp.Process(target=job, args=(v,1,l))
//!     p2 = mp.Process(target=job, args=(v,3,l))
//!     p1.start(); p2.start()
//!     p1.join(); p2.join()
//! ```
//!
//! expect: final value: 20

use std::io::Write;
use std::time::Duration;

use multiproc::{Lock, Process, Value};

#[multiproc::task]
fn job(v: Value<i32>, num: i32, l: Lock) {
    let _guard = l.blocking_acquire().expect("acquire");
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(10));
        v.set(v.get() + num);
        print!("{}|", v.get());
        let _ = std::io::stdout().flush();
    }
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let l = Lock::new()?;
    let v = Value::new(0i32)?;
    let mut p1 = Process::new(job, (v.clone(), 1, l.clone()));
    let mut p2 = Process::new(job, (v.clone(), 3, l.clone()));
    p1.start().await?;
    p2.start().await?;
    p1.join().await?;
    p2.join().await?;
    println!();
    println!("final value: {}", v.get());
    Ok(())
}
