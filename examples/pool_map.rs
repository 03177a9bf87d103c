//! Seed: the shortest Pool program, a map of squares over five workers.
//!
//! ```python
//! from multiprocessing import Pool
//!
//! def f(x):
//!     return x*x
//!
//! if __name__ == '__main__':
//!     with Pool(5) as p:
//!         print(p.map(f, [1, 2, 3]))
//! ```
//!
//! expect: [1, 4, 9]

use multiproc::Pool;

#[multiproc::task]
fn f(x: u64) -> u64 {
    x * x
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let p = Pool::new(5).await?;
    let squares: Vec<u64> = p.map(f, [1, 2, 3]).await?.into_vec()?;
    println!("{squares:?}");
    Ok(())
}
