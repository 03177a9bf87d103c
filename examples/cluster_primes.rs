//! The flagship primes demo (`examples/primes.rs`) beyond one host: the
//! same `process_range` task, run by three `cluster::Worker` agents that
//! take their work from Redis Streams.
//!
//! `cargo run --example cluster_primes` starts everything itself: a
//! `redis-server` on a Unix socket in a temp dir, three agents (this binary
//! re-run as `cluster_primes agent URL`, standing in for three hosts), then
//! the caller; it stops them all at the end. Across real hosts:
//!
//! ```text
//! host A:   redis-server
//! hosts B…: cluster_primes agent redis://A:6379/
//! caller:   cluster_primes caller redis://A:6379/
//! ```
//!
//! expect: serial:
//! expect: cluster of 3 agents:
//! expect: speed-up:

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use multiproc_cluster::{ClusterPool, Worker};

/// Return a list of the prime factors for a natural number.
fn prime_factors(mut n: u64) -> Vec<u64> {
    let mut factors = Vec::new();
    let bound = (n as f64).sqrt() as u64 + 1;
    for i in 2..bound {
        while n.is_multiple_of(i) {
            factors.push(i);
            n /= i;
        }
    }
    if n > 2 {
        factors.push(n);
    }
    factors
}

/// Factors every number of the range; returns how many factors it found.
#[multiproc::task]
fn process_range(start: u64, end: u64) -> u64 {
    (start..end).map(|i| prime_factors(i).len() as u64).sum()
}

const AGENTS: usize = 3;

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["agent", url] => {
            let processes = multiproc::cpu_count().div_ceil(AGENTS).max(1);
            Worker::new(url).processes(processes).run().await
        }
        ["caller", url] => caller(url).await,
        [] => demo().await,
        _ => {
            eprintln!("usage: cluster_primes [agent URL | caller URL]");
            std::process::exit(2);
        }
    }
}

/// The Python program's `main`, with a `ClusterPool` for the `Pool`.
async fn caller(url: &str) -> multiproc::Result<()> {
    let num_chunks = 72;
    let (start_num, end_num) = (1_000_000_000u64, 1_000_010_000u64);
    let step = (end_num - start_num) / num_chunks;
    let chunks: Vec<(u64, u64)> = (0..num_chunks).map(|i| (start_num + i * step, start_num + (i + 1) * step)).collect();

    let start_time = Instant::now();
    let serial: u64 = chunks.iter().map(|&(a, b)| process_range(a, b)).sum();
    let serial_time = start_time.elapsed();
    println!("serial:  {:.6} s ({serial} factors)", serial_time.as_secs_f64());

    let pool = ClusterPool::connect(url).await?;
    wait_for_agents(&pool, AGENTS as u64).await?;
    let start_time = Instant::now();
    // with Pool(processes=…) as pool: pool.starmap(process_range, chunks)
    let counts = pool.starmap(process_range, chunks).chunksize(1).await?;
    let parallel: u64 = counts.into_iter().sum::<multiproc::Result<u64>>()?;
    let cluster_time = start_time.elapsed();
    assert_eq!(parallel, serial, "the cluster found the same factors");
    println!("cluster of {AGENTS} agents: {:.6} s ({parallel} factors)", cluster_time.as_secs_f64());
    println!("speed-up: {:.2}x", serial_time.as_secs_f64() / cluster_time.as_secs_f64());
    Ok(())
}

async fn wait_for_agents(pool: &ClusterPool, n: u64) -> multiproc::Result<()> {
    let end = Instant::now() + Duration::from_secs(30);
    while pool.agents().await? < n {
        if Instant::now() > end {
            return Err(multiproc::Error::NoClusterWorkers(format!("fewer than {n} agents came up within 30 s")));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// A child process stopped with SIGTERM and reaped when dropped.
struct Stopped(Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

/// Everything on this machine: Redis, three agents, the caller.
async fn demo() -> multiproc::Result<()> {
    let dir = std::env::temp_dir().join(format!("cluster-primes-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let socket: PathBuf = dir.join("redis.sock");
    let url = format!("redis+unix://{}", socket.display());
    let redis = Command::new("redis-server")
        .args(["--port", "0", "--unixsocketperm", "700", "--save", "", "--appendonly", "no"])
        .arg("--unixsocket")
        .arg(&socket)
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| {
            std::io::Error::new(e.kind(), format!("start redis-server (apt-get install redis-server): {e}"))
        })?;
    let redis = Stopped(redis);
    // Connecting retries until Redis answers PING (or 10 s pass).
    drop(ClusterPool::builder(&url).reconnect_deadline(Duration::from_secs(10)).connect().await?);
    let me = std::env::current_exe()?;
    let agents: Vec<Stopped> = (0..AGENTS)
        .map(|_| Command::new(&me).arg("agent").arg(&url).spawn().map(Stopped))
        .collect::<std::io::Result<_>>()?;
    let result = caller(&url).await;
    drop(agents);
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
    result
}
