//! The flagship demo: the seeds' prime-factor workload, serial and on a pool.
//!
//! ```python
//! def prime_factors(n):
//!     """Return a list of the prime factors for a natural number."""
//!     factors = []
//!     for i in range(2, int(n**0.5) + 1):
//!         while n % i == 0:
//!             factors.append(i)
//!             n //= i
//!     if n > 2:
//!         factors.append(n)
//!     return factors
//!
//! def process_range(start, end):
//!     for i in range(start, end):
//!         prime_factors(i)
//!
//! def main():
//!     num_processes = 72
//!     start_num = 1000000000
//!     end_num = 1000010000
//!     step = (end_num - start_num) // num_processes
//!     chunks = [
//!         (start_num + i * step, start_num + (i + 1) * step) for i in range(num_processes)
//!     ]
//!     start_time = time.time()
//!     with Pool(processes=num_processes) as pool:
//!         pool.starmap(process_range, chunks)
//!     end_time = time.time()
//!     print(f"程序运行时间: {end_time - start_time:.6f} 秒")
//! ```
//!
//! The Rust twin runs the same ranges once in this process and once on a
//! pool of one worker per CPU, and prints both times and the speed-up.
//!
//! expect: serial:
//! expect: pool of
//! expect: speed-up:

use std::time::Instant;

use multiproc::Pool;

/// Return a list of the prime factors for a natural number.
fn prime_factors(mut n: u64) -> Vec<u64> {
    let mut factors = Vec::new();
    let bound = (n as f64).sqrt() as u64 + 1;
    for i in 2..bound {
        while n.is_multiple_of(i) {
            factors.push(i);
            n /= i;
        }
    }
    if n > 2 {
        factors.push(n);
    }
    factors
}

/// Factors every number of the range; returns how many factors it found
/// (so the work cannot be optimised away).
#[multiproc::task]
fn process_range(start: u64, end: u64) -> u64 {
    (start..end).map(|i| prime_factors(i).len() as u64).sum()
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let num_chunks = 72;
    let (start_num, end_num) = (1_000_000_000u64, 1_000_010_000u64);
    let step = (end_num - start_num) / num_chunks;
    let chunks: Vec<(u64, u64)> = (0..num_chunks).map(|i| (start_num + i * step, start_num + (i + 1) * step)).collect();

    let start_time = Instant::now();
    let serial: u64 = chunks.iter().map(|&(a, b)| process_range(a, b)).sum();
    let serial_time = start_time.elapsed();
    println!("serial:  {:.6} s ({serial} factors)", serial_time.as_secs_f64());

    let processes = multiproc::cpu_count();
    let start_time = Instant::now();
    // with Pool(processes=…) as pool: pool.starmap(process_range, chunks)
    let pool = Pool::new(processes).await?;
    let counts = pool.starmap(process_range, chunks).await?;
    let parallel: u64 = counts.into_iter().sum::<multiproc::Result<u64>>()?;
    drop(pool);
    let pool_time = start_time.elapsed();
    assert_eq!(parallel, serial, "the pool found the same factors");
    println!("pool of {processes}: {:.6} s ({parallel} factors)", pool_time.as_secs_f64());
    println!("speed-up: {:.2}x on {processes} CPUs", serial_time.as_secs_f64() / pool_time.as_secs_f64());
    Ok(())
}
