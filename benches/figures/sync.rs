//! Figures of the synchronization primitives.

use std::time::Instant;

use multiproc::{Barrier, Event, Lock, Process};

use crate::{Figure, Measure};

pub const FIGURES: &[(&str, Measure)] = &[
    ("lock_uncontended_ns", || Box::pin(lock_uncontended(2_000_000))),
    ("event_wake_us", || Box::pin(event_wake(20_000))),
    ("barrier_pass_us", || Box::pin(barrier_pass(20_000))),
];

/// Acquire and release of a cross-process lock nobody else holds.
async fn lock_uncontended(n: u32) -> Figure {
    let lock = Lock::new().expect("lock");
    let t = Instant::now();
    for _ in 0..n {
        drop(std::hint::black_box(lock.blocking_acquire().expect("uncontended")));
    }
    Figure { value: t.elapsed().as_secs_f64() / f64::from(n) * 1e9, unit: "ns", better: "lower" }
}

#[multiproc::task]
fn answer_pings(ping: Event, pong: Event, n: u32) {
    for _ in 0..n {
        ping.blocking_wait().expect("wait");
        ping.clear();
        pong.set();
    }
}

/// One wake-up across processes: half of a ping-pong round between two
/// events (the same loop as the CPython baseline).
async fn event_wake(n: u32) -> Figure {
    let (ping, pong) = (Event::new().expect("event"), Event::new().expect("event"));
    let mut p = Process::new(answer_pings, (ping.clone(), pong.clone(), n));
    p.start().await.expect("start");
    let t = tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        for _ in 0..n {
            ping.set();
            pong.blocking_wait().expect("wait");
            pong.clear();
        }
        t.elapsed()
    })
    .await
    .expect("ping thread");
    p.join().await.expect("join");
    Figure { value: t.as_secs_f64() / f64::from(2 * n) * 1e6, unit: "us", better: "lower" }
}

#[multiproc::task]
fn pass_barrier(barrier: Barrier, n: u32) {
    for _ in 0..n {
        barrier.blocking_wait().expect("wait");
    }
}

/// One generation of a two-party barrier across two processes.
async fn barrier_pass(n: u32) -> Figure {
    let barrier = Barrier::new(2).expect("barrier");
    let mut p = Process::new(pass_barrier, (barrier.clone(), n));
    p.start().await.expect("start");
    let t = tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        for _ in 0..n {
            barrier.blocking_wait().expect("wait");
        }
        t.elapsed()
    })
    .await
    .expect("barrier thread");
    p.join().await.expect("join");
    Figure { value: t.as_secs_f64() / f64::from(n) * 1e6, unit: "us", better: "lower" }
}
