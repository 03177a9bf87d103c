//! A long `imap_unordered` with a progress bar: results are counted as they
//! arrive, in whatever order the workers finish them.
//!
//! ```python
//! from multiprocessing import Pool
//! from tqdm import tqdm
//!
//! def factor_count(n): ...
//!
//! if __name__ == "__main__":
//!     with Pool() as pool:
//!         for _ in tqdm(pool.imap_unordered(factor_count, range(2, 20002), chunksize=64), total=20000):
//!             pass
//! ```
//!
//! The bar draws on stderr when it is a terminal and stays hidden otherwise
//! (as under `cargo xtask e2e`); the totals go to stdout.
//!
//! expect: items: 20000
//! expect: primes: 2262

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use multiproc::Pool;

/// The number of prime factors of `n`, with multiplicity.
#[multiproc::task]
fn factor_count(mut n: u64) -> u32 {
    let mut count = 0;
    let mut d = 2;
    while d * d <= n {
        loop {
            let (quotient, remainder) = (n / d, n % d);
            if remainder != 0 {
                break;
            }
            n = quotient;
            count += 1;
        }
        d += 1;
    }
    if n > 1 {
        count += 1;
    }
    count
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let items = 2..20_002u64;
    let total = items.end - items.start;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} items, {per_sec}, eta {eta}")
            .expect("the template is valid"),
    );

    let pool = Pool::builder().build().await?; // one worker per CPU, as `Pool()`
    // `imap_unordered` is a `Stream` (hence `futures::StreamExt`), with a
    // bounded number of chunks in flight: memory stays flat however long
    // the input.
    let mut results = pool.imap_unordered(factor_count, items).chunksize(64);
    let (mut seen, mut primes) = (0u64, 0u64);
    while let Some(result) = results.next().await {
        if result? == 1 {
            primes += 1;
        }
        seen += 1;
        bar.inc(1);
    }
    bar.finish();

    println!("items: {seen}");
    println!("primes: {primes}");
    pool.close();
    pool.join().await?;
    Ok(())
}
