//! Fleet recipe 1: a `Pool` with retries as a job executor that loses
//! nothing. Workers are SIGKILLed at random while jobs run; a SIGTERM at the
//! end drains the queue in order (`shutdown_on_signals` + `Pool::shutdown`).
//! Every job is idempotent, so a job whose worker died under it simply runs
//! again (`retries`); a job its worker never started is requeued for free.
//!
//! `fleet_jobs [KILLS]` (default 20) prints `jobs in N, results out N,
//! lost 0, kills K, workers replaced R` and exits non-zero if a job is lost.
//!
//! e2e-args: 20
//! expect: lost 0

use std::time::Duration;

use multiproc::Pool;

/// A job: a few hundred microseconds of arithmetic on its input.
#[multiproc::task]
fn job(n: u64) -> u64 {
    (0..20_000u64).fold(n, |acc, i| acc.rotate_left(5) ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

fn expected(n: u64) -> u64 {
    (0..20_000u64).fold(n, |acc, i| acc.rotate_left(5) ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// xorshift64: which worker to kill, and when.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let kills: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let jobs = 2_000u64;
    // Idempotent jobs: rerun one whose worker died under it, up to 10 times.
    let pool = Pool::builder().processes(4).retries(10).build().await?;

    // Ctrl-C / SIGTERM starts the drain: no new jobs, queued ones finish.
    let signal = multiproc::shutdown_on_signals();
    let drain = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let signal = signal.await;
            println!("signal {signal}: draining");
            pool.shutdown(Duration::from_secs(60)).await
        })
    };

    let handles: Vec<_> = (0..jobs).map(|n| pool.apply_async(job, (n,))).collect();

    // Chaos: SIGKILL a random worker every few milliseconds.
    let mut rng = u64::from(std::process::id()) | 1;
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(2 + next(&mut rng) % 8)).await;
        let pids = pool.pids();
        if let Some(&pid) = pids.get((next(&mut rng) % pids.len().max(1) as u64) as usize) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
    }
    // The end of the run: what systemd or Ctrl-C would send.
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM).expect("raise SIGTERM");
    let drained = drain.await.expect("the drain task");

    let mut out = 0u64;
    for (n, h) in handles.into_iter().enumerate() {
        match h.await {
            Ok(v) if v == expected(n as u64) => out += 1,
            Ok(v) => eprintln!("job {n}: wrong result {v}"),
            Err(e) => eprintln!("job {n}: {e}"),
        }
    }
    let stats = pool.stats();
    println!(
        "jobs in {jobs}, results out {out}, lost {}, kills {kills}, workers replaced {}, drained {drained}",
        jobs - out,
        stats.workers_replaced
    );
    if out != jobs {
        std::process::exit(1);
    }
    Ok(())
}
