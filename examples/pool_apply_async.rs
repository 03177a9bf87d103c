//! Seed: ten jobs of random length through `apply_async` on a pool of four,
//! then `close`, `join` and `terminate`.
//!
//! ```python
//! from multiprocessing.pool import Pool
//! from time import sleep, time
//! import random
//! import os
//!
//! def run(name):
//!     print("%s子进程开始,进程ID:%d" % (name, os.getpid()))
//!     start = time()
//!     sleep(random.choice([1, 2, 3, 4]))
//!     end = time()
//!     print("%s子进程结束,进程ID:%d。耗时0.2%f" % (name, os.getpid(), end-start))
//!
//! if __name__ == "__main__":
//!     print("父进程开始")
//!     p = Pool(4)
//!     for i in range(10):
//!         p.apply_async(run, args=(i,))
//!     p.close()
//!     p.join()
//!     print("父进程结束。")
//!     p.terminate()
//! ```
//!
//! The sleeps are tenths of a second here instead of seconds.
//!
//! expect: 父进程开始
//! expect: 9子进程结束
//! expect: 父进程结束。

use std::time::{Duration, Instant};

use multiproc::Pool;

#[multiproc::task]
fn run(name: u32) {
    println!("{name}子进程开始,进程ID:{}", std::process::id());
    let start = Instant::now();
    // random.choice([1, 2, 3, 4]), in tenths of a second
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    std::thread::sleep(Duration::from_millis(100 * u64::from(1 + (nanos ^ name) % 4)));
    println!("{name}子进程结束,进程ID:{}。耗时{:.2}", std::process::id(), start.elapsed().as_secs_f64());
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    println!("父进程开始");
    let p = Pool::new(4).await?;
    // The handles are not awaited, as in the seed: close + join waits for the work.
    let _results: Vec<_> = (0..10).map(|i| p.apply_async(run, (i,))).collect();
    p.close();
    p.join().await?;
    println!("父进程结束。");
    p.terminate().await;
    Ok(())
}
