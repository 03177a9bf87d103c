//! Figures of the synchronization primitives.

use std::time::Instant;

use multiproc::{Barrier, Event, JoinableQueue, Lock, Process};

use crate::{Figure, Measure};

pub const FIGURES: &[(&str, Measure)] = &[
    ("lock_uncontended_ns", || Box::pin(lock_uncontended(2_000_000))),
    ("event_wake_us", || Box::pin(event_wake(20_000))),
    ("barrier_pass_us", || Box::pin(barrier_pass(20_000))),
    ("async_event_wake_us", || Box::pin(async_event_wake(20_000))),
    ("queue_leased_msgs_per_s", || Box::pin(queue_leased_msgs(200_000))),
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

/// [`event_wake`] with this side's waits async: a task woken (through the
/// process's waiter thread) by a `set` in another process.
async fn async_event_wake(n: u32) -> Figure {
    let (ping, pong) = (Event::new().expect("event"), Event::new().expect("event"));
    let mut p = Process::new(answer_pings, (ping.clone(), pong.clone(), n));
    p.start().await.expect("start");
    let t = Instant::now();
    for _ in 0..n {
        ping.set();
        pong.wait().await.expect("wait");
        pong.clear();
    }
    let t = t.elapsed();
    p.join().await.expect("join");
    Figure { value: t.as_secs_f64() / f64::from(2 * n) * 1e6, unit: "us", better: "lower" }
}

#[multiproc::task]
fn lease_and_ack(q: JoinableQueue<u64>) {
    loop {
        q.blocking_get_leased().expect("get_leased").ack().expect("ack");
    }
}

/// Items through a joinable queue whose consumer takes each under a lease
/// and acknowledges it (the CPython twin: `get` + `task_done`).
async fn queue_leased_msgs(n: u64) -> Figure {
    let q = JoinableQueue::new().expect("queue");
    let mut p = Process::new(lease_and_ack, (q.clone(),)).daemon(true);
    p.start().await.expect("start");
    let t = Instant::now();
    for i in 0..n {
        q.put(i).await.expect("put");
    }
    q.join().await.expect("join");
    let dt = t.elapsed();
    p.terminate().expect("terminate");
    p.join().await.expect("join");
    Figure { value: n as f64 / dt.as_secs_f64(), unit: "msg/s", better: "higher" }
}
