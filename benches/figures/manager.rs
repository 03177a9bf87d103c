//! Figures of the manager: one proxy call round trip.

use std::time::Instant;

use multiproc::Manager;

use crate::{Figure, Measure};

pub const FIGURES: &[(&str, Measure)] = &[("manager_proxy_call_us", || Box::pin(proxy_call(5_000)))];

/// `d['k'] = i` through a dict proxy, as py_baseline measures it.
async fn proxy_call(n: u32) -> Figure {
    let manager = Manager::start().await.expect("start manager");
    let d = manager.dict::<String, u32>().await.expect("dict");
    d.set("k".into(), 0).await.expect("set");
    let t = Instant::now();
    for i in 0..n {
        d.set("k".into(), i).await.expect("set");
    }
    let value = t.elapsed().as_secs_f64() / f64::from(n) * 1e6;
    manager.shutdown().await.expect("shutdown");
    Figure { value, unit: "us", better: "lower" }
}
