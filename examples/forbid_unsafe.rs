//! A user crate with `#![forbid(unsafe_code)]` registers a task, a target
//! and a hosted type, and runs each in other processes: the macros'
//! link-time registration adds no `unsafe` to the crate that uses them
//! (the link-section statics come from `multiproc-sys`'s macros).
//!
//! expect: squares [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]
//! expect: target ran in a child: true
//! expect: tally 45
#![forbid(unsafe_code)]

use multiproc::{Manager, Pool, Process, Target};
use serde::{Deserialize, Serialize};

#[multiproc::task]
fn square(x: u64) -> u64 {
    x * x
}

#[derive(Serialize, Deserialize)]
struct Report {
    parent: u32,
}

#[multiproc::target]
impl Target for Report {
    fn run(self) {
        println!("target ran in a child: {}", std::process::id() != self.parent);
    }
}

#[derive(Serialize, Deserialize)]
struct Tally {
    n: u64,
}

#[multiproc::hosted]
impl Tally {
    fn add(&mut self, k: u64) -> u64 {
        self.n += k;
        self.n
    }
}

#[multiproc::task]
fn add_to(tally: TallyProxy, k: u64) -> u64 {
    tally.blocking_add(k).expect("the manager answers")
}

#[multiproc::main]
async fn main() -> multiproc::Result<()> {
    let pool = Pool::new(2).await?;
    let squares = pool.map(square, 0..10u64).await?.into_vec()?;
    println!("squares {squares:?}");

    let mut p = Process::from_target(Report { parent: std::process::id() });
    p.start().await?;
    p.join().await?;

    let m = Manager::start().await?;
    let tally = m.hosted(Tally { n: 0 }).await?;
    let args: Vec<(TallyProxy, u64)> = (0..10).map(|k| (tally.clone(), k)).collect();
    pool.starmap(add_to, args).await?.into_vec()?;
    println!("tally {}", tally.add(0).await?);
    pool.close();
    pool.join().await?;
    m.shutdown().await
}
