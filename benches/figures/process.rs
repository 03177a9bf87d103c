//! Figures of process start-up.

use std::time::Instant;

use multiproc::{Process, StartMethod};

use crate::{Figure, Measure, in_task};

pub const FIGURES: &[(&str, Measure)] = &[
    ("process_start_join_forkserver_us", || Box::pin(in_task(start_join(StartMethod::Forkserver, 300)))),
    ("process_start_join_spawn_us", || Box::pin(in_task(start_join(StartMethod::Spawn, 30)))),
];

#[multiproc::task]
fn noop() {}

async fn start_join(method: StartMethod, n: u32) -> Figure {
    let once = || async {
        let mut p = Process::new(noop, ()).start_method(method);
        p.start().await.expect("start");
        p.join().await.expect("join");
    };
    once().await;
    let t = Instant::now();
    for _ in 0..n {
        once().await;
    }
    Figure { value: t.elapsed().as_secs_f64() / f64::from(n) * 1e6, unit: "us", better: "lower" }
}
