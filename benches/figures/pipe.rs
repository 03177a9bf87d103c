//! Figures of pipes and queues, with py_baseline's workloads: the parent
//! (async) sends to a child that reads (blocking) until 'DONE'.

use std::time::Instant;

use multiproc::{Connection, JoinableQueue, Pipe, Process, Queue};

use crate::{Figure, Measure};

pub const FIGURES: &[(&str, Measure)] = &[
    ("pipe_msgs_per_s", || Box::pin(pipe_msgs(300_000, true))),
    ("pipe_send_msgs_per_s", || Box::pin(pipe_msgs(300_000, false))),
    ("pipe_1mib_gib_per_s", || Box::pin(pipe_1mib(500))),
    ("pipe_roundtrip_us", || Box::pin(pipe_roundtrip(20_000, false))),
    ("pipe_roundtrip_shm_us", || Box::pin(pipe_roundtrip(20_000, true))),
    ("queue_msgs_per_s", || Box::pin(queue_msgs(300_000))),
    ("joinable_queue_msgs_per_s", || Box::pin(joinable_queue_msgs(200_000))),
];

/// `while conn.recv() != 'DONE': pass` (`None` stands for 'DONE').
#[multiproc::task]
fn read_until_done(mut conn: Connection) {
    while conn.blocking_recv::<Option<u64>>().expect("recv").is_some() {}
}

#[multiproc::task]
fn read_bytes_until_done(mut conn: Connection) {
    while conn.blocking_recv_bytes().expect("recv") != b"DONE" {}
}

#[multiproc::task]
fn echo(mut conn: Connection) {
    while let Some(m) = conn.blocking_recv::<Option<u64>>().expect("recv") {
        conn.blocking_send(&Some(m)).expect("send");
    }
}

#[multiproc::task]
fn get_until_done(q: Queue<Option<u64>>) {
    while q.blocking_get().expect("get").is_some() {}
}

#[multiproc::task]
fn get_and_mark_done(q: JoinableQueue<u64>) {
    loop {
        q.blocking_get().expect("get");
        q.task_done().expect("task_done");
    }
}

async fn started<F, A, M>(f: F, args: A) -> Process
where
    F: multiproc::TaskFn<A, M>,
    A: serde::Serialize,
{
    let mut p = Process::new(f, args);
    p.start().await.expect("start");
    p
}

/// `n` small messages one way. `batched`: `feed` (written 64 KiB at a
/// time), else an awaited `send` (one system call) per message.
async fn pipe_msgs(n: u64, batched: bool) -> Figure {
    let (a, mut b) = Pipe::new().expect("pipe");
    let p = started(read_until_done, (a,)).await;
    let t = Instant::now();
    for i in 0..n {
        if batched {
            b.feed(&Some(i)).await.expect("feed");
        } else {
            b.send(&Some(i)).await.expect("send");
        }
    }
    b.send(&None::<u64>).await.expect("send");
    p.join().await.expect("join");
    Figure { value: n as f64 / t.elapsed().as_secs_f64(), unit: "msg/s", better: "higher" }
}

async fn pipe_1mib(n: u32) -> Figure {
    let (a, mut b) = Pipe::new().expect("pipe");
    let p = started(read_bytes_until_done, (a,)).await;
    let buf = vec![b'x'; 1 << 20];
    let t = Instant::now();
    for _ in 0..n {
        b.send_bytes(&buf).await.expect("send");
    }
    b.send_bytes(b"DONE").await.expect("send");
    p.join().await.expect("join");
    Figure { value: f64::from(n) / 1024.0 / t.elapsed().as_secs_f64(), unit: "GiB/s", better: "higher" }
}

/// `conn.send(i); conn.recv()` to an echoing child, from a spawned task:
/// where async code runs in a tokio program. (The main future of a
/// multi-thread runtime's `block_on` does not poll the reactor itself, so
/// each of its waits costs one more thread wake-up.) `shm`: the pipe
/// carries its bytes through shared memory (`pipe_roundtrip_shm_us`; its
/// CPython twin is CPython's only pipe, the socket one).
async fn pipe_roundtrip(n: u64, shm: bool) -> Figure {
    let (a, mut b) = Pipe::builder().shared_memory(shm).build().expect("pipe");
    let p = started(echo, (a,)).await;
    let dt = tokio::spawn(async move {
        b.send(&Some(0u64)).await.expect("send");
        b.recv::<Option<u64>>().await.expect("recv");
        let t = Instant::now();
        for i in 0..n {
            b.send(&Some(i)).await.expect("send");
            b.recv::<Option<u64>>().await.expect("recv");
        }
        let dt = t.elapsed();
        b.send(&None::<u64>).await.expect("send");
        dt
    })
    .await
    .expect("the round-trip task");
    p.join().await.expect("join");
    Figure { value: dt.as_secs_f64() / n as f64 * 1e6, unit: "us", better: "lower" }
}

async fn queue_msgs(n: u64) -> Figure {
    let q = Queue::new().expect("queue");
    let p = started(get_until_done, (q.clone(),)).await;
    let t = Instant::now();
    for i in 0..n {
        q.put(Some(i)).await.expect("put");
    }
    q.put(None).await.expect("put");
    p.join().await.expect("join");
    Figure { value: n as f64 / t.elapsed().as_secs_f64(), unit: "msg/s", better: "higher" }
}

async fn joinable_queue_msgs(n: u64) -> Figure {
    let q = JoinableQueue::new().expect("queue");
    let mut p = Process::new(get_and_mark_done, (q.clone(),)).daemon(true);
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
