//! The project's benchmark figures, measured on real processes.
//!
//! `cargo bench --bench figures -- [--json] [NAME…]` prints one line per
//! figure (`name value unit`), or one JSON object per line; `--list` prints
//! the names. `cargo xtask bench` runs this beside the CPython baseline and
//! prints the ratios.
//! Each area of the library owns one module and lists its figures there.

mod cluster;
mod manager;
mod pipe;
mod pool;
mod process;
mod sync;

use std::future::Future;
use std::pin::Pin;

/// One measured figure.
pub struct Figure {
    pub value: f64,
    pub unit: &'static str,
    /// `"lower"` or `"higher"` is better.
    pub better: &'static str,
}

pub type Measure = fn() -> Pin<Box<dyn Future<Output = Figure>>>;

/// Measures from a runtime task, where async services call from (not from
/// `block_on`'s thread, which parks outside the runtime and needs a
/// cross-thread wake-up for every result). The pool and process figures.
pub async fn in_task(measure: impl Future<Output = Figure> + Send + 'static) -> Figure {
    tokio::spawn(measure).await.expect("the measuring task")
}

/// Every figure, by its published (stable) name.
fn all() -> Vec<(&'static str, Measure)> {
    let mut v = Vec::new();
    v.extend(process::FIGURES.iter().copied());
    v.extend(pool::FIGURES.iter().copied());
    v.extend(manager::FIGURES.iter().copied());
    v.extend(sync::FIGURES.iter().copied());
    v.extend(pipe::FIGURES.iter().copied());
    v.extend(cluster::FIGURES.iter().copied());
    v
}

fn main() {
    cluster::agent_role();
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let json = args.iter().any(|a| a == "--json");
    let wanted: Vec<&str> = args.iter().filter(|a| !a.starts_with("--")).map(String::as_str).collect();
    let figures = all();
    if args.iter().any(|a| a == "--list") {
        figures.iter().for_each(|(name, _)| println!("{name}"));
        return;
    }
    for w in &wanted {
        if !figures.iter().any(|(n, _)| n == w) {
            eprintln!("unknown figure {w}; known: {}", figures.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "));
            std::process::exit(2);
        }
    }
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    for (name, measure) in figures {
        if !wanted.is_empty() && !wanted.contains(&name) {
            continue;
        }
        let f = rt.block_on(measure());
        if json {
            println!(
                r#"{{"name": "{name}", "unit": "{}", "better": "{}", "multiproc": {:.3}}}"#,
                f.unit, f.better, f.value
            );
        } else {
            println!("{name} {:.3} {}", f.value, f.unit);
        }
    }
}
