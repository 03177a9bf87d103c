//! Seed: the four ways to hand work to a pool (apply_async, map_async,
//! imap_unordered, starmap_async), and `maxtasksperchild`.
//!
//! ```python
//! multiprocessing.Pool(processes=None, initializer=None, initargs=(), maxtasksperchild=None)
//!
//! def f(a, b = value):
//!     pass
//! pool = multiprocessing.Pool()
//! pool.apply_async(f, args = (a,), kwds = {b : value})
//! pool.close()
//! pool.join()
//!
//! def f(a): #map方法只允许1个参数
//!     pass
//! pool = multiprocessing.Pool()
//! result = pool.map_async(f, (a0, a1, ...)).get()
//! pool.close()
//! pool.join()
//!
//! pool = multiprocessing.Pool()
//! result = pool.imap_unordered(f, (a0, a1, ...))
//! pool.close()
//! pool.join()
//! for item in result:
//!     pass
//!
//! def f(a, b): #starmap方法允许多个参数
//!     pass
//! pool = multiprocessing.Pool()
//! result = pool.starmap_async(f, ((a0, b0), (a1, b1), ...)).get()
//! pool.close()
//! pool.join()
//! ```
//!
//! Rust has no keyword arguments: `b` is passed by position.
//!
//! expect: apply_async: 10 + 5 = 15
//! expect: map_async: [0, 2, 4, 6, 8]
//! expect: imap_unordered: [0, 2, 4, 6, 8]
//! expect: starmap_async: [1, 5, 9]
//! expect: maxtasksperchild=2: 6 tasks ran in 3 workers

use std::collections::HashSet;

use futures::StreamExt;
use multiproc::Pool;

#[multiproc::task]
fn f2(a: u64, b: u64) -> String {
    format!("{a} + {b} = {}", a + b)
}

#[multiproc::task]
fn f(a: u64) -> u64 {
    2 * a
}

#[multiproc::task]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

#[multiproc::task]
fn getpid() -> u32 {
    std::process::id()
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    // (a) apply_async
    let pool = Pool::builder().build().await?;
    let r = pool.apply_async(f2, (10, 5));
    pool.close();
    pool.join().await?;
    println!("apply_async: {}", r.await?);

    // (b) map_async(...).get()
    let pool = Pool::builder().build().await?;
    let result = pool.map_async(f, 0..5).await?.into_vec()?;
    pool.close();
    pool.join().await?;
    println!("map_async: {result:?}");

    // (c) imap_unordered: results come in finishing order
    let pool = Pool::builder().build().await?;
    let mut result: Vec<u64> = pool.imap_unordered(f, 0..5).map(|r| r.expect("f never fails")).collect().await;
    pool.close();
    pool.join().await?;
    result.sort_unstable();
    println!("imap_unordered: {result:?}");

    // (d) starmap_async(...).get()
    let pool = Pool::builder().build().await?;
    let result = pool.starmap_async(add, [(0, 1), (2, 3), (4, 5)]).await?.into_vec()?;
    pool.close();
    pool.join().await?;
    println!("starmap_async: {result:?}");

    // Pool(processes=1, maxtasksperchild=2): a fresh worker every two tasks
    let pool = Pool::builder().processes(1).max_tasks_per_child(2).build().await?;
    let mut pids = Vec::new();
    for _ in 0..6 {
        pids.push(pool.apply(getpid, ()).await?);
    }
    pool.close();
    pool.join().await?;
    let workers: HashSet<u32> = pids.iter().copied().collect();
    println!("maxtasksperchild=2: {} tasks ran in {} workers", pids.len(), workers.len());
    Ok(())
}
