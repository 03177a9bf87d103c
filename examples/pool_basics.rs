//! Seed: a pool of four, `map`, `apply`, `apply_async` + `get`, then close
//! and join.
//!
//! ```python
//! from multiprocessing import Pool
//! pool = Pool(processes=4)  # 创建一个包含4个进程的进程池
//!
//! def square(x):
//!     return x * x
//!
//! results = pool.map(square, [1, 2, 3, 4])  # 输出 [1, 4, 9, 16]
//!
//! result = pool.apply(func, args=(arg1, arg2))  # 阻塞调用
//! async_result = pool.apply_async(func, args=(arg1, arg2))  # 非阻塞调用
//! result = async_result.get()  # 从AsyncResult对象中获取结果
//!
//! pool.close()
//! pool.join()  # 等待所有进程完成
//! ```
//!
//! expect: [1, 4, 9, 16]
//! expect: apply: 7
//! expect: apply_async: 7

use multiproc::Pool;

#[multiproc::task]
fn square(x: u64) -> u64 {
    x * x
}

#[multiproc::task]
fn func(arg1: u64, arg2: u64) -> u64 {
    arg1 + arg2
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let pool = Pool::new(4).await?;

    let results = pool.map(square, [1, 2, 3, 4]).await?.into_vec()?;
    println!("{results:?}");

    let (arg1, arg2) = (3, 4);
    let result = pool.apply(func, (arg1, arg2)).await?; // blocking call
    println!("apply: {result}");
    let async_result = pool.apply_async(func, (arg1, arg2)); // non-blocking call
    let result = async_result.await?; // async_result.get()
    println!("apply_async: {result}");

    pool.close();
    pool.join().await?; // wait for every worker
    Ok(())
}
