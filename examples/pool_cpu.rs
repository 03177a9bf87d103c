//! Seed: `multiprocess-reconstruct-pool.py`, a CPU-bound map on a pool.
//!
//! ```python
//! from multiprocessing import Pool
//! import time
//! import math
//!
//! def task(a):
//!     # 计算密集型
//!     for _ in range(int(1e7)):
//!         math.sin(40) + math.cos(40)
//!     return
//!
//! if __name__ == '__main__':
//!     start_time = time.time()
//!     with Pool(processes=8) as p:
//!         res = p.map(task, list(range(6)))
//!     print("cost time: {:.4f}s".format(time.time() - start_time))
//! ```
//!
//! expect: cost time:

use std::hint::black_box;
use std::time::Instant;

use multiproc::Pool;

#[multiproc::task]
fn task(_a: u64) {
    // CPU-bound
    for _ in 0..10_000_000 {
        black_box(black_box(40f64).sin() + black_box(40f64).cos());
    }
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let start_time = Instant::now();
    {
        let p = Pool::new(8).await?;
        let res = p.map(task, (0..6).collect::<Vec<u64>>()).await?;
        res.into_vec()?;
    }
    println!("cost time: {:.4}s", start_time.elapsed().as_secs_f64());
    Ok(())
}
