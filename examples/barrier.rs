//! Seed: two processes meet at a barrier and then print one at a time
//! (serialized by a lock); two others print without waiting.
//!
//! ```python
//! def test_with_barrier(synchronizer, serializer):
//!     name = multiprocessing.current_process().name
//!     synchronizer.wait()
//!     now = time()
//!     with serializer:
//!         print("process %s ----> %s" % (name, datetime.fromtimestamp(now)))
//!
//! def test_without_barrier():
//!     name = multiprocessing.current_process().name
//!     now = time()
//!     print("process %s ----> %s" % (name, datetime.fromtimestamp(now)))
//!
//! if __name__ == '__main__':
//!     synchronizer = Barrier(2)
//!     serializer = Lock()
//!     Process(name='p1 - test_with_barrier', target=test_with_barrier, args=(synchronizer, serializer)).start()
//!     Process(name='p2 - test_with_barrier', target=test_with_barrier, args=(synchronizer, serializer)).start()
//!     Process(name='p3 - test_without_barrier', target=test_without_barrier).start()
//!     Process(name='p4 - test_without_barrier', target=test_without_barrier).start()
//! ```
//!
//! expect: process p1 - test_with_barrier ---->
//! expect: process p2 - test_with_barrier ---->
//! expect: process p3 - test_without_barrier ---->
//! expect: process p4 - test_without_barrier ---->

use std::time::{SystemTime, UNIX_EPOCH};

use multiproc::{Barrier, Lock, Process};

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

#[multiproc::task]
fn test_with_barrier(synchronizer: Barrier, serializer: Lock) {
    let name = multiproc::current_process().name;
    synchronizer.blocking_wait().expect("barrier");
    let now = now();
    let _with = serializer.blocking_acquire().expect("lock");
    println!("process {name} ----> {now:.6}");
}

#[multiproc::task]
fn test_without_barrier() {
    let name = multiproc::current_process().name;
    println!("process {name} ----> {:.6}", now());
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let synchronizer = Barrier::new(2)?;
    let serializer = Lock::new()?;
    let args = (synchronizer.clone(), serializer.clone());
    Process::new(test_with_barrier, args.clone()).name("p1 - test_with_barrier").start().await?;
    Process::new(test_with_barrier, args).name("p2 - test_with_barrier").start().await?;
    Process::new(test_without_barrier, ()).name("p3 - test_without_barrier").start().await?;
    Process::new(test_without_barrier, ()).name("p4 - test_without_barrier").start().await?;
    Ok(())
}
