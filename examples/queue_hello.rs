//! Seed: a child puts a list on a `Queue`; the parent gets it.
//!
//! ```python
//! from multiprocessing import Process, Queue
//!
//! def f(q):
//!     q.put([42, None, 'hello'])
//!
//! if __name__ == '__main__':
//!     q = Queue()
//!     p = Process(target=f, args=(q,))
//!     p.start()
//!     print(q.get())    # prints "[42, None, 'hello']"
//!     p.join()
//! ```
//!
//! expect: (42, None, "hello")

use multiproc::{Process, Queue};

type Item = (i32, Option<i32>, String);

#[multiproc::task]
fn f(q: Queue<Item>) {
    q.blocking_put((42, None, "hello".into())).expect("put");
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let q = Queue::new()?;
    let mut p = Process::new(f, (q.clone(),));
    p.start().await?;
    println!("{:?}", q.get().await?); // prints "(42, None, "hello")"
    p.join().await?;
    Ok(())
}
