//! Seed: a CPU-bound task run serially, then in two processes at once.
//!
//! ```python
//! def task():
//!     for _ in range(int(1e7)):
//!         math.sin(40) + math.cos(40)
//!
//! if __name__ == '__main__':
//!     start_time = time.time()
//!     processes = []
//!     for _ in range(2):
//!         p = multiprocessing.Process(target=task)
//!         processes.append(p)
//!         p.start()
//!     for p in processes:
//!         p.join()
//!     print("cost time: {:.4f}s".format(time.time() - start_time))
//! ```
//!
//! expect: serial cost time:
//! expect: 2 processes cost time:

use std::hint::black_box;
use std::time::Instant;

use multiproc::Process;

#[multiproc::task]
fn task() {
    for _ in 0..3_000_000 {
        black_box(black_box(40f64).sin() + black_box(40f64).cos());
    }
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let start_time = Instant::now();
    task();
    task();
    println!("serial cost time: {:.4}s", start_time.elapsed().as_secs_f64());

    let start_time = Instant::now();
    let mut processes = Vec::new();
    for _ in 0..2 {
        let mut p = Process::new(task, ());
        p.start().await?;
        processes.push(p);
    }
    for p in &processes {
        p.join().await?;
    }
    println!("2 processes cost time: {:.4}s", start_time.elapsed().as_secs_f64());
    Ok(())
}
