//! Figures of the cluster (`multiproc-cluster`): a `redis-server` on a Unix
//! socket in a temp dir, three agents (this bench binary re-run in the agent
//! role, one process each), and the caller here. The Python peer (RQ on its
//! own Redis, three `rq worker`s) is `xtask/py/cluster_peer.py`, run by
//! `baseline.py`'s twins of these figures. `cluster_redis_ping_us` is the
//! floor: a raw `PING` round trip over the same socket and client.

use std::hint::black_box;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use multiproc_cluster::{ClusterPool, Worker};

use crate::{Figure, Measure};

pub const FIGURES: &[(&str, Measure)] = &[
    ("cluster_apply_roundtrip_us", || Box::pin(apply_roundtrip(1_000))),
    ("cluster_map_tasks_per_s", || Box::pin(map_chunked(100_000, 1_000))),
    ("cluster_redis_ping_us", || Box::pin(ping(5_000))),
];

const AGENT_URL: &str = "MULTIPROC_BENCH_CLUSTER_AGENT";
const AGENTS: usize = 3;

#[multiproc::task]
fn square(x: u64) -> u64 {
    x * x
}

/// The agent role: when this binary was started as an agent, runs it and
/// exits (called first thing in `main`).
pub fn agent_role() {
    let Ok(url) = std::env::var(AGENT_URL) else { return };
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let code = match rt.block_on(Worker::new(&url).processes(1).run()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("cluster bench agent: {e}");
            1
        }
    };
    std::process::exit(code);
}

/// Redis and three agents; stopped (SIGTERM, reaped) on drop.
struct Cluster {
    dir: PathBuf,
    url: String,
    children: Vec<Child>,
}

impl Cluster {
    async fn start(agents: usize) -> Self {
        let dir = std::env::temp_dir().join(format!("mp-bench-redis-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let socket = dir.join("redis.sock");
        let url = format!("redis+unix://{}", socket.display());
        let redis = Command::new("redis-server")
            .args(["--port", "0", "--unixsocketperm", "700", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(&socket)
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let mut cluster = Self { dir, url, children: vec![redis] };
        // Connecting retries until Redis answers PING.
        let probe = ClusterPool::builder(&cluster.url).reconnect_deadline(Duration::from_secs(10)).connect().await;
        drop(probe.expect("redis-server answers"));
        let me = std::env::current_exe().expect("this binary");
        for _ in 0..agents {
            let agent = Command::new(&me).env(AGENT_URL, &cluster.url).stdout(Stdio::null()).spawn().expect("agent");
            cluster.children.push(agent);
        }
        cluster
    }

    async fn pool(&self) -> ClusterPool {
        let pool = ClusterPool::connect(&self.url).await.expect("connect");
        let end = Instant::now() + Duration::from_secs(30);
        while pool.agents().await.expect("agents") < AGENTS as u64 {
            assert!(Instant::now() < end, "agents did not come up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        pool
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Agents first (they drain), Redis last.
        for c in self.children.iter_mut().rev() {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn apply_roundtrip(n: u32) -> Figure {
    let cluster = Cluster::start(AGENTS).await;
    let pool = cluster.pool().await;
    for i in 0..50 {
        pool.apply(square, (i,)).await.expect("apply");
    }
    let t = Instant::now();
    for i in 0..n {
        black_box(pool.apply(square, (u64::from(i),)).await.expect("apply"));
    }
    let value = t.elapsed().as_secs_f64() / f64::from(n) * 1e6;
    drop(pool);
    drop(cluster);
    Figure { value, unit: "us", better: "lower" }
}

async fn map_chunked(n: u64, chunksize: usize) -> Figure {
    let cluster = Cluster::start(AGENTS).await;
    let pool = cluster.pool().await;
    pool.map(square, 0..1_000u64).chunksize(chunksize).await.expect("warm-up map");
    let t = Instant::now();
    let results = pool.map(square, 0..n).chunksize(chunksize).await.expect("map");
    let value = n as f64 / t.elapsed().as_secs_f64();
    assert!(results.into_iter().enumerate().all(|(i, r)| r.is_ok_and(|v| v == (i as u64) * (i as u64))));
    drop(pool);
    drop(cluster);
    Figure { value, unit: "task/s", better: "higher" }
}

async fn ping(n: u32) -> Figure {
    let cluster = Cluster::start(0).await;
    let client = redis::Client::open(cluster.url.as_str()).expect("url");
    let mut conn = client.get_multiplexed_async_connection().await.expect("connect");
    for _ in 0..100 {
        let _: String = redis::cmd("PING").query_async(&mut conn).await.expect("PING");
    }
    let t = Instant::now();
    for _ in 0..n {
        let _: String = redis::cmd("PING").query_async(&mut conn).await.expect("PING");
    }
    let value = t.elapsed().as_secs_f64() / f64::from(n) * 1e6;
    drop(cluster);
    Figure { value, unit: "us", better: "lower" }
}
