//! Seed: the documented deadlock. A child puts a 1 MB item and the parent
//! joins it before getting the item. CPython deadlocks (the child's feeder
//! thread cannot flush the item into a full pipe); here `put` has copied the
//! item into shared memory when it returns, so the child exits and the join
//! returns.
//!
//! ```python
//! from multiprocessing import Process, Queue
//!
//! def f(q):
//!     q.put('X' * 1000000)
//!
//! if __name__ == '__main__':
//!     queue = Queue()
//!     p = Process(target=f, args=(queue,))
//!     p.start()
//!     p.join()                    # this deadlocks
//!     obj = queue.get()
//! ```
//!
//! expect: joined with exit code 0
//! expect: got 1000000 bytes

use multiproc::{Process, Queue};

#[multiproc::task]
fn f(q: Queue<String>) {
    q.blocking_put("X".repeat(1_000_000)).expect("put");
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let queue = Queue::new()?;
    let mut p = Process::new(f, (queue.clone(),));
    p.start().await?;
    let code = p.join().await?; // no deadlock
    println!("joined with exit code {code}");
    let obj = queue.get().await?;
    println!("got {} bytes", obj.len());
    Ok(())
}
