//! Pool fault scenarios that need a process of their own (they kill the
//! forkserver the whole process shares). Used by `tests/it/pool.rs`.
//!
//! e2e-args: forkserver-killed
//!
//! `pool_scenario forkserver-killed`: a pool without retries keeps serving
//! across three forkserver SIGKILLs; every call submitted right after a
//! kill (to workers that died with it, before the pool noticed) completes.
//! Prints `ok`.
//! `pool_scenario soak KILLS`: 5,000 idempotent jobs on a pool with retries
//! while KILLS random workers are SIGKILLed, then a drain; prints `kills K,
//! jobs in N, results out N, lost L, workers replaced R` and exits 1 if a
//! job was lost.

use multiproc::Pool;

#[multiproc::task]
fn square(x: u64) -> u64 {
    x * x
}

/// Pids of this process's direct children whose environment says `role`.
fn children_with_role(role: &str) -> Vec<u32> {
    let me = std::process::id();
    let needle = format!("MULTIPROC_ROLE={role}");
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)).and_then(|p| p.parse().ok());
            ppid == Some(me)
                && std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes()))
        })
        .collect()
}

async fn forkserver_killed() {
    let pool = Pool::builder().processes(2).build().await.expect("pool");
    for round in 0..3u64 {
        assert_eq!(pool.apply(square, (round,)).await.expect("warm"), round * round);
        let servers = children_with_role("forkserver");
        assert_eq!(servers.len(), 1, "one forkserver: {servers:?}");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(servers[0] as i32), nix::sys::signal::Signal::SIGKILL)
            .expect("kill the forkserver");
        // Once it is gone its workers have their SIGKILL (parent-death
        // signal): none of them runs another instruction of user code.
        while multiproc_sys::pidlock::process_alive(servers[0]) {
            std::thread::yield_now();
        }
        let calls: Vec<_> = (0..20u64).map(|x| pool.apply_async(square, (x,))).collect();
        let map = pool.map(square, 0..200u64).chunksize(1).submit();
        for (x, call) in calls.into_iter().enumerate() {
            let x = x as u64;
            assert_eq!(call.await.unwrap_or_else(|e| panic!("round {round}, call {x}: {e}")), x * x);
        }
        for (x, r) in map.await.expect("map").into_iter().enumerate() {
            let x = x as u64;
            assert_eq!(r.unwrap_or_else(|e| panic!("round {round}, item {x}: {e}")), x * x);
        }
    }
    assert_eq!(pool.stats().failed, 0);
    println!("ok");
}

#[multiproc::task]
fn job(n: u64) -> u64 {
    (0..2_000u64).fold(n, |acc, i| acc.rotate_left(5) ^ i)
}

async fn soak(kills: u32) {
    use std::time::{Duration, Instant};
    let jobs = 5_000u64;
    let pool = Pool::builder().processes(4).retries(30).build().await.expect("pool");
    let t = Instant::now();
    let handles: Vec<_> = (0..jobs).map(|n| pool.apply_async(job, (n,))).collect();
    let mut rng = u64::from(std::process::id()) | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut done = 0;
    // Each kill takes a live worker not killed before (a slot lists its
    // dead worker until it notices).
    let mut killed = std::collections::HashSet::new();
    while done < kills {
        tokio::time::sleep(Duration::from_micros(500 + next() % 2_000)).await;
        let pids: Vec<u32> = pool.pids().into_iter().filter(|p| !killed.contains(p)).collect();
        if let Some(&pid) = pids.get((next() % pids.len().max(1) as u64) as usize)
            && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).is_ok()
        {
            killed.insert(pid);
            done += 1;
        }
    }
    let drained = pool.shutdown(Duration::from_secs(120)).await;
    let mut out = 0u64;
    for (n, h) in handles.into_iter().enumerate() {
        let want = (0..2_000u64).fold(n as u64, |acc, i| acc.rotate_left(5) ^ i);
        match h.await {
            Ok(v) if v == want => out += 1,
            other => eprintln!("job {n}: {other:?}"),
        }
    }
    println!(
        "kills {done}, jobs in {jobs}, results out {out}, lost {}, workers replaced {}, drained {drained}, {:.1} s",
        jobs - out,
        pool.stats().workers_replaced,
        t.elapsed().as_secs_f64()
    );
    if out != jobs {
        std::process::exit(1);
    }
}

#[tokio::main]
async fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("forkserver-killed") => forkserver_killed().await,
        Some("soak") => soak(std::env::args().nth(2).and_then(|k| k.parse().ok()).unwrap_or(300)).await,
        other => {
            eprintln!("usage: pool_scenario forkserver-killed|soak [KILLS] (got {other:?})");
            std::process::exit(2);
        }
    }
}
