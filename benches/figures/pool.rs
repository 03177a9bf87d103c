//! Figures of the process pool; workloads identical to
//! `shared/bench/py_baseline.py` (squares of ints, prime factors of
//! 1e9..1e9+4000 in 16 chunks, an idle worker's RSS).

use std::hint::black_box;
use std::time::Instant;

use multiproc::{Pool, cpu_count};

use crate::{Figure, Measure, in_task};

pub const FIGURES: &[(&str, Measure)] = &[
    ("pool_apply_roundtrip_us", || Box::pin(in_task(apply_roundtrip(2_000, None)))),
    ("pool_apply_roundtrip_shm_us", || Box::pin(in_task(apply_roundtrip(2_000, Some(true))))),
    ("pool_map_chunk1_tasks_per_s", || Box::pin(in_task(map_chunk1(50_000)))),
    ("pool_map_auto_tasks_per_s", || Box::pin(in_task(map_auto(1_000_000)))),
    ("pool_cpu_speedup", || Box::pin(cpu_speedup())),
    ("worker_idle_rss_kib", || Box::pin(idle_rss())),
    ("supervisor_restart_us", || Box::pin(in_task(supervisor_restart(50)))),
    ("pool_recovery_ms", || Box::pin(in_task(pool_recovery(30)))),
];

/// A supervised child that waits to be stopped.
#[multiproc::task]
fn idle_until_stopped() {
    while !multiproc::stop_requested() {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn sigkill(pid: u32) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
}

/// A supervised child SIGKILLed → its replacement started and ready (no
/// back-off): exit report, restart decision, fork, handshake.
async fn supervisor_restart(n: u32) -> Figure {
    use multiproc::{ChildSpec, Supervisor, SupervisorEvent};
    use std::time::Duration;
    let sup = Supervisor::builder()
        .intensity(u32::MAX, Duration::from_secs(1))
        .backoff(Duration::ZERO, Duration::ZERO)
        .child(ChildSpec::task("victim", idle_until_stopped, ()))
        .start()
        .await
        .expect("supervisor");
    let mut total = Duration::ZERO;
    for _ in 0..n {
        let pid = sup.stats().await.expect("stats").children[0].pid.expect("running");
        let mut events = sup.subscribe();
        let t = Instant::now();
        sigkill(pid);
        loop {
            if let Ok(SupervisorEvent::Started { .. }) = events.recv().await {
                break;
            }
        }
        total += t.elapsed();
    }
    sup.shutdown(Duration::from_secs(5)).await.expect("shutdown");
    Figure { value: total.as_secs_f64() / f64::from(n) * 1e6, unit: "us", better: "lower" }
}

/// A pool worker SIGKILLed → its slot serving again: a call submitted right
/// after the kill has returned (it runs on the replacement).
async fn pool_recovery(n: u32) -> Figure {
    let pool = Pool::new(1).await.expect("pool");
    pool.apply(square, (1,)).await.expect("warm");
    let mut total = std::time::Duration::ZERO;
    for i in 0..n {
        let pid = pool.pids()[0];
        let t = Instant::now();
        sigkill(pid);
        black_box(pool.apply(square, (u64::from(i),)).await.expect("served by the replacement"));
        total += t.elapsed();
    }
    Figure { value: total.as_secs_f64() / f64::from(n) * 1e3, unit: "ms", better: "lower" }
}

#[multiproc::task]
fn square(x: u64) -> u64 {
    x * x
}

/// The seeds' `prime_factors`, the same trial division.
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

#[multiproc::task]
fn process_range(start: u64, end: u64) {
    for i in start..end {
        black_box(prime_factors(black_box(i)));
    }
}

#[multiproc::task]
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn pool() -> Pool {
    Pool::new(cpu_count()).await.expect("pool")
}

/// `shm`: force the shared-memory call path on or off (`None`: the default).
async fn apply_roundtrip(n: u32, shm: Option<bool>) -> Figure {
    let pool = match shm {
        None => pool().await,
        Some(on) => Pool::builder().processes(cpu_count()).shared_memory(on).build().await.expect("pool"),
    };
    for i in 0..100 {
        pool.apply(square, (i,)).await.expect("apply");
    }
    let t = Instant::now();
    for i in 0..n {
        black_box(pool.apply(square, (u64::from(i),)).await.expect("apply"));
    }
    Figure { value: t.elapsed().as_secs_f64() / f64::from(n) * 1e6, unit: "us", better: "lower" }
}

async fn map_chunk1(n: u64) -> Figure {
    let pool = pool().await;
    pool.map(square, 0..100).chunksize(1).await.expect("map");
    let t = Instant::now();
    let out = pool.map(square, 0..n).chunksize(1).await.expect("map");
    let dt = t.elapsed().as_secs_f64();
    assert!(out.all_ok());
    Figure { value: n as f64 / dt, unit: "task/s", better: "higher" }
}

async fn map_auto(n: u64) -> Figure {
    let pool = pool().await;
    pool.map(square, 0..100).await.expect("map");
    let t = Instant::now();
    let out = pool.map(square, 0..n).await.expect("map");
    let dt = t.elapsed().as_secs_f64();
    assert!(out.all_ok());
    Figure { value: n as f64 / dt, unit: "task/s", better: "higher" }
}

/// Serial and parallel runs of the same work, interleaved in pairs; the
/// figure is the median of the pairs' ratios. Another tenant's burst then
/// slows both halves of a pair alike, or spoils one pair of several
/// (`baseline.py` measures CPython the same way).
async fn cpu_speedup() -> Figure {
    const PAIRS: usize = 3;
    let (lo, hi, k) = (1_000_000_000u64, 1_000_004_000u64, 16);
    let step = (hi - lo) / k;
    let chunks: Vec<(u64, u64)> = (0..k).map(|i| (lo + i * step, lo + (i + 1) * step)).collect();
    let pool = pool().await;
    let mut ratios = Vec::with_capacity(PAIRS);
    for _ in 0..PAIRS {
        let t = Instant::now();
        for &(a, b) in &chunks {
            process_range(a, b);
        }
        let serial = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let out = pool.starmap(process_range, chunks.clone()).await.expect("starmap");
        let par = t.elapsed().as_secs_f64();
        assert!(out.all_ok());
        ratios.push(serial / par);
    }
    ratios.sort_by(f64::total_cmp);
    Figure { value: ratios[PAIRS / 2], unit: "x", better: "higher" }
}

async fn idle_rss() -> Figure {
    let pool = Pool::new(1).await.expect("pool");
    let kib = pool.apply(rss_kib, ()).await.expect("apply");
    Figure { value: kib as f64, unit: "KiB", better: "lower" }
}
