//! Seed: `multiprocessing-pool.py`, a map of squares, then close and join.
//!
//! ```python
//! import multiprocessing
//!
//! def function_square(data):
//!     result = data * data
//!     return result
//!
//! if __name__ == '__main__':
//!     inputs = list(range(100))
//!     pool = multiprocessing.Pool(processes=4)
//!     pool_outputs = pool.map(function_square, inputs)
//!     pool.close()
//!     pool.join()
//!     print('Pool    :', pool_outputs)
//! ```
//!
//! expect: Pool    : [0, 1, 4, 9, 16, 25
//! expect: 9604, 9801]

use multiproc::Pool;

#[multiproc::task]
fn function_square(data: u64) -> u64 {
    data * data
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let inputs: Vec<u64> = (0..100).collect();
    let pool = Pool::new(4).await?;
    let pool_outputs = pool.map(function_square, inputs).await?.into_vec()?;
    pool.close();
    pool.join().await?;
    println!("Pool    : {pool_outputs:?}");
    Ok(())
}
