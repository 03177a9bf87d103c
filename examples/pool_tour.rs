//! Seed: the `Pool` tour of the `multiprocessing` docs: map, imap_unordered,
//! apply_async with `get(timeout)`, and a task that outlasts its timeout.
//!
//! ```python
//! from multiprocessing import Pool, TimeoutError
//! import time
//! import os
//!
//! def f(x):
//!     return x*x
//!
//! if __name__ == '__main__':
//!     # 启动四个工作进程的进程池
//!     with Pool(processes=4) as pool:
//!
//!         # print "[0, 1, 4,..., 81]"
//!         print(pool.map(f, range(10)))
//!
//!         # print same numbers in arbitrary order
//!         for i in pool.imap_unordered(f, range(10)):
//!             print(i)
//!
//!         # evaluate "f(20)" asynchronously
//!         res = pool.apply_async(f, (20,))      # runs in *only* one process
//!         print(res.get(timeout=1))             # prints "400"
//!
//!         # evaluate "os.getpid()" asynchronously
//!         res = pool.apply_async(os.getpid, ()) # runs in *only* one process
//!         print(res.get(timeout=1))             # prints the PID of that process
//!
//!         # launching multiple evaluations asynchronously *may* use more processes
//!         multiple_results = [pool.apply_async(os.getpid, ()) for i in range(4)]
//!         print([res.get(timeout=1) for res in multiple_results])
//!
//!         # make a single worker sleep for 10 secs
//!         res = pool.apply_async(time.sleep, (10,))
//!         try:
//!             print(res.get(timeout=1))
//!         except TimeoutError:
//!             print("We lacked patience and got a multiprocessing.TimeoutError")
//!
//!         print("For the moment, the pool remains available for more work")
//!
//!     # exiting the 'with'-block has stopped the pool
//!     print("Now the pool is closed and no longer available")
//! ```
//!
//! expect: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]
//! expect: 400
//! expect: We lacked patience and got a multiprocessing.TimeoutError
//! expect: For the moment, the pool remains available for more work
//! expect: Now the pool is closed and no longer available

use std::time::Duration;

use futures::StreamExt;
use multiproc::{Error, Pool};

#[multiproc::task]
fn f(x: u64) -> u64 {
    x * x
}

#[multiproc::task]
fn getpid() -> u32 {
    std::process::id()
}

#[multiproc::task]
fn sleep(secs: u64) {
    std::thread::sleep(Duration::from_secs(secs));
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let second = Duration::from_secs(1);
    {
        // start 4 worker processes
        let pool = Pool::new(4).await?;

        // print "[0, 1, 4,..., 81]"
        let squares = pool.map(f, 0..10).await?.into_vec()?;
        println!("{squares:?}");

        // print same numbers in arbitrary order
        let mut it = pool.imap_unordered(f, 0..10);
        while let Some(i) = it.next().await {
            println!("{}", i?);
        }

        // evaluate "f(20)" asynchronously
        let mut res = pool.apply_async(f, (20,)); // runs in *only* one process
        println!("{}", res.get_timeout(second).await?); // prints "400"

        // evaluate "getpid()" asynchronously
        let mut res = pool.apply_async(getpid, ()); // runs in *only* one process
        println!("{}", res.get_timeout(second).await?); // prints the PID of that process

        // launching multiple evaluations asynchronously *may* use more processes
        let multiple_results: Vec<_> = (0..4).map(|_| pool.apply_async(getpid, ())).collect();
        let mut pids = Vec::new();
        for mut res in multiple_results {
            pids.push(res.get_timeout(second).await?);
        }
        println!("{pids:?}");

        // make a single worker sleep for 10 secs
        let mut res = pool.apply_async(sleep, (10,));
        match res.get_timeout(second).await {
            Ok(()) => println!("()"),
            Err(Error::Timeout) => println!("We lacked patience and got a multiprocessing.TimeoutError"),
            Err(e) => return Err(e),
        }

        println!("For the moment, the pool remains available for more work");
    }
    // leaving the block dropped the pool, which stopped it
    println!("Now the pool is closed and no longer available");
    Ok(())
}
