//! Fleet recipe 2: a `Supervisor` owning a job `Pool` and long-running
//! processes with a heartbeat watchdog, run until SIGTERM. Workers of both
//! kinds are SIGKILLed at random; the pool retries the jobs its dead workers
//! held, the supervisor restarts its processes (one-for-one, with back-off);
//! SIGTERM then stops everything in reverse order, each process first asked
//! to stop (`stop_requested`), and the run checks jobs in = results out.
//!
//! (For supervised queue consumers that lose no job when killed mid-job,
//! with leased gets, see `fleet_queue.rs`.)
//!
//! e2e-args: 10
//! expect: lost 0

use std::time::Duration;

use multiproc::{ChildSpec, Pool, Restart, Strategy, Supervisor, SupervisorEvent};

#[multiproc::task]
fn job(n: u64) -> u64 {
    (0..20_000u64).fold(n, |acc, i| acc.rotate_left(3) ^ i.wrapping_mul(31))
}

fn expected(n: u64) -> u64 {
    (0..20_000u64).fold(n, |acc, i| acc.rotate_left(3) ^ i.wrapping_mul(31))
}

/// A long-running process: beats its heartbeat until asked to stop.
#[multiproc::task]
fn ticker(id: u32) {
    let _ = id;
    while !multiproc::stop_requested() {
        multiproc::heartbeat();
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let kills: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let sup = Supervisor::builder()
        .name("fleet")
        .strategy(Strategy::OneForOne)
        .intensity(1_000, Duration::from_secs(10))
        .backoff(Duration::from_millis(5), Duration::from_millis(100))
        .child(ChildSpec::pool("jobs", || Pool::builder().processes(3).retries(10).build()))
        .child(ChildSpec::task("ticker-1", ticker, (1,)).heartbeat(Duration::from_secs(2)))
        .child(ChildSpec::task("ticker-2", ticker, (2,)).heartbeat(Duration::from_secs(2)).restart(Restart::Permanent))
        .start()
        .await?;
    let mut events = sup.subscribe();
    let pool = sup.pool("jobs").await.expect("the pool child runs");
    let jobs = 1_000u64;
    let handles: Vec<_> = (0..jobs).map(|n| pool.apply_async(job, (n,))).collect();

    let mut rng = u64::from(std::process::id()) | 1;
    let mut killed_tickers = 0u64;
    for i in 0..kills {
        tokio::time::sleep(Duration::from_millis(3 + next(&mut rng) % 10)).await;
        let victim = if i % 2 == 0 {
            let pids = pool.pids();
            pids.get((next(&mut rng) % pids.len().max(1) as u64) as usize).copied()
        } else {
            let stats = sup.stats().await?;
            let tickers: Vec<u32> = stats.children.iter().filter_map(|c| c.pid).collect();
            let pid = tickers.get((next(&mut rng) % tickers.len().max(1) as u64) as usize).copied();
            killed_tickers += u64::from(pid.is_some());
            pid
        };
        if let Some(pid) = victim {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
    }
    let mut out = 0u64;
    for (n, h) in handles.into_iter().enumerate() {
        match h.await {
            Ok(v) if v == expected(n as u64) => out += 1,
            Ok(v) => eprintln!("job {n}: wrong result {v}"),
            Err(e) => eprintln!("job {n}: {e}"),
        }
    }
    drop(pool);
    // Every killed ticker is restarted before the drain.
    while sup.stats().await?.restarts < killed_tickers {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Ok(SupervisorEvent::Started { .. })) | Ok(Err(_)) => {}
            Ok(Ok(_)) => {}
            Err(_) => break,
        }
    }
    let restarts = sup.stats().await?.restarts;
    // The end of the run: SIGTERM, and everything stops in order.
    let run = sup.run_until_signal(Duration::from_secs(10));
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM).expect("raise SIGTERM");
    run.await?;
    println!("jobs in {jobs}, results out {out}, lost {}, kills {kills}, tickers restarted {restarts}", jobs - out);
    if out != jobs || restarts < killed_tickers {
        std::process::exit(1);
    }
    Ok(())
}
