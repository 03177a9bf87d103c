//! Seed: the worker puts data on a `Queue`; the main process gets it.
//!
//! ```python
//! from multiprocessing import Process, Queue
//!
//! def worker(q):
//!     q.put("Data from worker process")
//!
//! q = Queue()
//! p = Process(target=worker, args=(q,))
//! p.start()
//! print(q.get())  # 输出: Data from worker process
//! p.join()
//! ```
//!
//! expect: Data from worker process

use multiproc::{Process, Queue};

#[multiproc::task]
fn worker(q: Queue<String>) {
    q.blocking_put("Data from worker process".into()).expect("put");
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let q = Queue::new()?;
    let mut p = Process::new(worker, (q.clone(),));
    p.start().await?;
    println!("{}", q.get().await?); // 输出: Data from worker process
    p.join().await?;
    Ok(())
}
