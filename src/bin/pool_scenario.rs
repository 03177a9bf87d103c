//! Pool and fleet fault scenarios that need a process of their own (they
//! kill the forkserver the whole process shares, or raise SIGTERM). Used by
//! `tests/it/pool.rs` and `tests/it/fleet.rs`.
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
//! `pool_scenario leased-soak KILLS`: the Supervisor + leased-queue shape of
//! `examples/fleet_queue.rs` at soak size: 10,000 jobs on a `Queue`,
//! 4 supervised consumers taking them with `get_leased`, KILLS consumers
//! SIGKILLed at random (mostly mid-job), then a SIGTERM drain (until every
//! job has a result); prints `kills K, jobs in N, results out N, lost L,
//! duplicates D, redelivered R, restarts S, drained B` and exits 1 if a job
//! was lost.
//! `pool_scenario wide-pool N`: lowers its soft fd limit to 1024 (the usual
//! default), then starts a shared-memory `Pool` of N workers and runs a
//! chunk-1 map of 2N items on it; prints `workers W, distinct pids P, soft
//! fd limit L` and exits 1 if the pool could not start or an item failed.

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
    let mut next = move || multiproc_suite::xorshift(&mut rng);
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

/// Maps run back to back while workers are SIGKILLed at random moments:
/// every item of every map has its own result in its own place (the right
/// value, or `WorkerLost` for an item a killed worker held), whatever order
/// chunks and partial replies arrive in. Exits 1 on anything else.
/// `shm`: the pool takes its calls over shared memory.
async fn map_soak(kills: u32, shm: bool) {
    use multiproc::Error;
    use std::time::{Duration, Instant};
    let pool = Pool::builder().processes(4).shared_memory(shm).build().await.expect("pool");
    let pool = std::sync::Arc::new(pool);
    let t = Instant::now();
    let kill_count = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let killer = {
        let pool = std::sync::Arc::clone(&pool);
        let kill_count = std::sync::Arc::clone(&kill_count);
        tokio::spawn(async move {
            let mut rng = u64::from(std::process::id()) | 1;
            let mut next = move || multiproc_suite::xorshift(&mut rng);
            let mut killed = std::collections::HashSet::new();
            let mut done = 0;
            while done < kills {
                tokio::time::sleep(Duration::from_micros(2_000 + next() % 10_000)).await;
                let pids: Vec<u32> = pool.pids().into_iter().filter(|p| !killed.contains(p)).collect();
                let Some(&pid) = pids.get((next() % pids.len().max(1) as u64) as usize) else { continue };
                // Counted before the signal, so a map that sees its item
                // lost also sees the kill.
                kill_count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL)
                    .is_ok()
                {
                    killed.insert(pid);
                    done += 1;
                } else {
                    kill_count.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        })
    };
    let (mut maps, mut items, mut lost, mut wrong) = (0u32, 0usize, 0usize, 0usize);
    // At least one map of each chunk size, and maps as long as kills go on.
    while maps < 6 || !killer.is_finished() {
        let n = 1_000u64;
        let chunk = [1, 7, 1, 50, 1, 400][maps as usize % 6];
        let kills_before = kill_count.load(std::sync::atomic::Ordering::SeqCst);
        let out = pool.map(long_job, 0..n).chunksize(chunk).await.expect("map");
        let kills_during = kill_count.load(std::sync::atomic::Ordering::SeqCst) - kills_before;
        maps += 1;
        let lost_here = out.iter().filter(|r| matches!(r, Err(Error::WorkerLost { .. }))).count();
        // A kill fails the call that was running, nothing else: one item
        // at most when each call is one item.
        if chunk == 1 && lost_here > kills_during as usize {
            eprintln!("map {maps} (chunksize 1): {lost_here} items lost to {kills_during} kills");
            wrong += 1;
        }
        items += out.len();
        if out.len() != n as usize {
            eprintln!("map {maps}: {} results for {n} items", out.len());
            wrong += 1;
        }
        for (i, r) in out.iter().enumerate() {
            let want = (0..20_000u64).fold(i as u64, |acc, k| acc.rotate_left(5) ^ k);
            match r {
                Ok(v) if *v == want => {}
                Err(Error::WorkerLost { .. }) => lost += 1,
                other => {
                    eprintln!("map {maps} (chunksize {chunk}), item {i}: {other:?}");
                    wrong += 1;
                }
            }
        }
    }
    killer.await.expect("killer");
    println!(
        "kills {kills}, maps {maps}, items {items}, lost with their worker {lost}, wrong {wrong}, {:.1} s",
        t.elapsed().as_secs_f64()
    );
    if wrong > 0 {
        std::process::exit(1);
    }
    println!("ok");
}

/// `job`'s fold, ten times as long: kills land while items run.
#[multiproc::task]
fn long_job(n: u64) -> u64 {
    (0..20_000u64).fold(n, |acc, i| acc.rotate_left(5) ^ i)
}

fn leased_work(n: u64) -> u64 {
    (0..30_000u64).fold(n, |acc, i| acc.rotate_left(7) ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// A leased consumer: put the result, then acknowledge the job.
#[multiproc::task]
fn consume(jobs: multiproc::Queue<u64>, results: multiproc::Queue<(u64, u64, u32)>) -> multiproc::Result<()> {
    while !multiproc::stop_requested() {
        multiproc::heartbeat();
        let job = match jobs.blocking_get_leased_timeout(std::time::Duration::from_millis(50)) {
            Ok(job) => job,
            Err(multiproc::Error::Empty) => continue,
            Err(e) => return Err(e),
        };
        let n = *job;
        results.blocking_put((n, leased_work(n), job.deliveries()))?;
        job.ack()?;
    }
    Ok(())
}

async fn leased_soak(kills: u32) {
    use multiproc::{ChildSpec, Error, Queue, Supervisor};
    use std::time::{Duration, Instant};
    let jobs_in = 10_000u64;
    let jobs = Queue::<u64>::new().expect("jobs queue");
    let results = Queue::<(u64, u64, u32)>::new().expect("results queue");
    for n in 0..jobs_in {
        jobs.put(n).await.expect("put a job");
    }
    let t = Instant::now();
    let mut builder = Supervisor::builder()
        .intensity(100_000, Duration::from_secs(10))
        .backoff(Duration::from_millis(5), Duration::from_millis(100));
    for i in 0..4 {
        builder = builder.child(
            ChildSpec::task(format!("consumer-{i}"), consume, (jobs.clone(), results.clone()))
                .heartbeat(Duration::from_secs(30))
                .shutdown_grace(Duration::from_secs(10)),
        );
    }
    let sup = builder.start().await.expect("start the consumers");
    let signal = multiproc::shutdown_on_signals();
    let mut rng = u64::from(std::process::id()) | 1;
    let mut next = move || multiproc_suite::xorshift(&mut rng);
    let mut killed = std::collections::HashSet::new();
    while (killed.len() as u32) < kills {
        tokio::time::sleep(Duration::from_micros(500 + next() % 4_000)).await;
        let stats = sup.stats().await.expect("stats");
        let live: Vec<u32> = stats.children.iter().filter_map(|c| c.pid).filter(|p| !killed.contains(p)).collect();
        if let Some(&pid) = live.get((next() % live.len().max(1) as u64) as usize)
            && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).is_ok()
        {
            killed.insert(pid);
        }
    }
    let left = jobs.qsize();
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM).expect("raise SIGTERM");
    signal.await;
    let mut out = std::collections::HashMap::new();
    let (mut duplicates, mut redelivered, mut wrong) = (0u64, 0u64, 0u64);
    let mut add = |(n, value, deliveries): (u64, u64, u32)| {
        redelivered += u64::from(deliveries > 1);
        if n >= jobs_in || value != leased_work(n) {
            wrong += 1;
        } else if out.insert(n, value).is_some() {
            duplicates += 1;
        }
        out.len() as u64
    };
    // The drain: until every job has a result.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    let mut drained = false;
    while !drained {
        match results.get_timeout(deadline.saturating_duration_since(tokio::time::Instant::now())).await {
            Ok(r) => drained = add(r) == jobs_in,
            Err(Error::Empty) => break,
            Err(e) => panic!("read a result: {e}"),
        }
    }
    let restarts = sup.stats().await.expect("stats").restarts;
    sup.shutdown(Duration::from_secs(10)).await.expect("an orderly stop");
    loop {
        match results.get_nowait() {
            Ok(r) => {
                add(r);
            }
            Err(Error::Empty) => break,
            Err(e) => panic!("read a result: {e}"),
        }
    }
    let lost = jobs_in - out.len() as u64;
    println!(
        "kills {}, jobs in {jobs_in}, results out {}, lost {lost}, duplicates {duplicates}, \
         redelivered {redelivered}, restarts {restarts}, drained {drained}, left at SIGTERM {left}, {:.1} s",
        killed.len(),
        out.len(),
        t.elapsed().as_secs_f64()
    );
    if lost != 0 || wrong != 0 || !drained || jobs.qsize() != 0 {
        std::process::exit(1);
    }
}

#[multiproc::task]
fn pid_of_worker(_: u64) -> u32 {
    std::process::id()
}

async fn wide_pool(n: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("fd limit");
    setrlimit(Resource::RLIMIT_NOFILE, 1024.min(hard), hard).expect("lower the soft fd limit");
    let pool = match Pool::builder().processes(n).shared_memory(true).build().await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("Pool of {n} workers: {}", e.chain());
            std::process::exit(1);
        }
    };
    let out = pool.map(pid_of_worker, 0..2 * n as u64).chunksize(1).await.expect("map");
    let failed = out.iter().filter(|r| r.is_err()).count();
    let pids: std::collections::HashSet<u32> = out.into_iter().filter_map(Result::ok).collect();
    let soft = getrlimit(Resource::RLIMIT_NOFILE).expect("fd limit").0;
    println!("workers {}, distinct pids {}, soft fd limit {soft}", pool.pids().len(), pids.len());
    pool.terminate().await;
    if failed > 0 {
        eprintln!("{failed} items failed");
        std::process::exit(1);
    }
}

#[tokio::main]
async fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("forkserver-killed") => forkserver_killed().await,
        Some("soak") => soak(std::env::args().nth(2).and_then(|k| k.parse().ok()).unwrap_or(300)).await,
        Some("map-soak") => {
            let kills = std::env::args().nth(2).and_then(|k| k.parse().ok()).unwrap_or(300);
            map_soak(kills, std::env::args().nth(3).as_deref() == Some("shm")).await;
        }
        Some("leased-soak") => {
            leased_soak(std::env::args().nth(2).and_then(|k| k.parse().ok()).unwrap_or(300)).await;
        }
        Some("wide-pool") => wide_pool(std::env::args().nth(2).and_then(|k| k.parse().ok()).unwrap_or(300)).await,
        other => {
            eprintln!(
                "usage: pool_scenario forkserver-killed|soak [KILLS]|map-soak [KILLS] [shm]|leased-soak [KILLS]|wide-pool [N] (got {other:?})"
            );
            std::process::exit(2);
        }
    }
}
