//! Seed: apply_async with a timeout, map, stepping through `imap` by hand,
//! and a `get(timeout)` that gives up.
//!
//! ```python
//! from multiprocessing import Pool
//! import time
//!
//! def f(x):
//!     return x*x
//!
//! if __name__ == '__main__':
//!     with Pool(processes=4) as pool:         # start 4 worker processes
//!         result = pool.apply_async(f, (10,)) # evaluate "f(10)" asynchronously in a single process
//!         print(result.get(timeout=1))        # prints "100" unless your computer is *very* slow
//!
//!         print(pool.map(f, range(10)))       # prints "[0, 1, 4,..., 81]"
//!
//!         it = pool.imap(f, range(10))
//!         print(next(it))                     # prints "0"
//!         print(next(it))                     # prints "1"
//!         print(it.next(timeout=1))           # prints "4" unless your computer is *very* slow
//!
//!         result = pool.apply_async(time.sleep, (10,))
//!         print(result.get(timeout=1))        # raises multiprocessing.TimeoutError
//! ```
//!
//! expect: 100
//! expect: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]
//! expect: 4
//! expect: TimeoutError: failed to wait: the operation timed out

use std::time::Duration;

use futures::StreamExt;
use multiproc::Pool;

#[multiproc::task]
fn f(x: u64) -> u64 {
    x * x
}

#[multiproc::task]
fn sleep(secs: u64) {
    std::thread::sleep(Duration::from_secs(secs));
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let second = Duration::from_secs(1);
    let pool = Pool::new(4).await?; // start 4 worker processes
    let mut result = pool.apply_async(f, (10,)); // evaluate "f(10)" asynchronously in a single process
    println!("{}", result.get_timeout(second).await?); // prints "100"

    let squares = pool.map(f, 0..10).await?.into_vec()?;
    println!("{squares:?}"); // prints "[0, 1, 4,..., 81]"

    let mut it = pool.imap(f, 0..10);
    println!("{}", it.next().await.expect("an item")?); // prints "0"
    println!("{}", it.next().await.expect("an item")?); // prints "1"
    let third = tokio::time::timeout(second, it.next()).await.map_err(|_| multiproc::Error::Timeout)?;
    println!("{}", third.expect("an item")?); // prints "4"

    let mut result = pool.apply_async(sleep, (10,));
    match result.get_timeout(second).await {
        Ok(()) => println!("()"),
        // Python raises here; we print what it would say.
        Err(e) => println!("TimeoutError: failed to {e}"),
    }
    Ok(())
}
