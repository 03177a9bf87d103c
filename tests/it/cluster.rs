//! The cluster (`multiproc-cluster`) against a real `redis-server`: each
//! test starts its own on a Unix socket in a temp dir, and its agents are
//! this test binary re-run in the agent role (`cluster::agent_role`), one
//! process per simulated host.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use multiproc::Error;
use multiproc_cluster::{ClusterPool, Worker};

const AGENT_URL: &str = "MP_IT_AGENT_URL";
const AGENT_PREFIX: &str = "MP_IT_AGENT_PREFIX";
const AGENT_NAME: &str = "MP_IT_AGENT_NAME";
const AGENT_LEASE_MS: &str = "MP_IT_AGENT_LEASE_MS";
const AGENT_DRAIN_MS: &str = "MP_IT_AGENT_DRAIN_MS";
const PREFIX: &str = "it";
/// Short leases so a dead agent's work moves on quickly.
const LEASE: Duration = Duration::from_millis(1000);

#[multiproc::task]
fn square(x: u64) -> u64 {
    x * x
}

#[multiproc::task]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

/// `x * x` after `ms` milliseconds.
#[multiproc::task]
fn slow_square(x: u64, ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    x * x
}

/// `x * x` after a millisecond: work that takes long enough to interrupt.
#[multiproc::task]
fn paced_square(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(1));
    x * x
}

#[multiproc::task]
fn boom(x: u64) -> u64 {
    panic!("boom {x}")
}

#[multiproc::task]
fn parse(s: String) -> Result<i64, std::num::ParseIntError> {
    s.parse()
}

/// Kills its worker process every time.
#[multiproc::task]
fn poison(_x: u64) -> u64 {
    std::process::abort()
}

/// Appends `i` to the file at `path`, then takes `ms` milliseconds.
#[multiproc::task]
fn record(path: String, i: u64, ms: u64) -> u64 {
    let mut f = std::fs::OpenOptions::new().append(true).create(true).open(path).expect("open the record file");
    writeln!(f, "{i}").expect("append to the record file");
    std::thread::sleep(Duration::from_millis(ms));
    i
}

/// The agent role: run by the tests below as a separate process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the cluster agent role of this binary; the cluster tests start it"]
async fn agent_role() {
    let Ok(url) = std::env::var(AGENT_URL) else { return };
    let ms = |var: &str, default: u64| {
        Duration::from_millis(std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default))
    };
    let mut worker = Worker::new(&url)
        .prefix(std::env::var(AGENT_PREFIX).unwrap_or_else(|_| PREFIX.into()))
        .processes(2)
        .lease(ms(AGENT_LEASE_MS, LEASE.as_millis() as u64))
        .drain_timeout(ms(AGENT_DRAIN_MS, 30_000))
        .reconnect_deadline(Duration::from_secs(20));
    if let Ok(name) = std::env::var(AGENT_NAME) {
        worker = worker.name(name);
    }
    if let Err(e) = worker.run().await {
        eprintln!("agent failed: {e}");
        std::process::exit(3);
    }
}

/// A `redis-server` of one test, on a Unix socket in its own directory.
struct Redis {
    dir: PathBuf,
    persist: bool,
    /// Extra `redis-server` arguments (ACL users).
    args: Vec<String>,
    /// What to add to the socket URL (`?user=…&pass=…`).
    auth: String,
    child: Option<Child>,
}

impl Redis {
    /// Starts one; with `persist`, every write is fsynced to an AOF first,
    /// so a SIGKILLed server comes back with everything it acknowledged.
    fn start(persist: bool) -> Self {
        Self::start_with(persist, &[], "")
    }

    fn start_with(persist: bool, args: &[&str], auth: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mp-it-redis-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the redis dir");
        let args = args.iter().map(|a| (*a).to_owned()).collect();
        let mut r = Self { dir, persist, args, auth: auth.to_owned(), child: None };
        r.spawn();
        r
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    fn url(&self) -> String {
        format!("redis+unix://{}{}", self.socket().display(), self.auth)
    }

    fn spawn(&mut self) {
        let log = std::fs::File::options().append(true).create(true).open(self.dir.join("redis.log")).expect("log");
        let persist = if self.persist {
            ["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            ["--appendonly", "no", "--appendfsync", "no"]
        };
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocketperm", "700", "--save", "", "--daemonize", "no"])
            .arg("--unixsocket")
            .arg(self.socket())
            .arg("--dir")
            .arg(&self.dir)
            .args(persist)
            .args(&self.args)
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start redis-server (install it: apt-get install redis-server)");
        self.child = Some(child);
        wait_until("redis-server answers PING", Duration::from_secs(10), || ping(&self.socket()));
    }

    /// SIGKILLs the server and reaps it.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// A plain connection for inspecting keys.
    async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test redis")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One `PING` on a fresh socket connection: whether the server answers.
fn ping(socket: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(socket) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    // A server whose default user is off answers NOAUTH: it is up too.
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && (&buf == b"+PONG\r\n" || buf.starts_with(b"-NOAUTH"))
}

/// Polls `cond` every 10 ms; panics with `what` after `limit`.
fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The async twin of [`wait_until`].
async fn wait_for<F: std::future::Future<Output = bool>>(what: &str, limit: Duration, mut cond: impl FnMut() -> F) {
    let end = Instant::now() + limit;
    while !cond().await {
        assert!(Instant::now() < end, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An agent process (a simulated host); killed and reaped on drop.
struct Agent {
    child: Child,
}

impl Agent {
    fn start(redis: &Redis, env: &[(&str, &str)]) -> Self {
        Self::start_binary(&std::env::current_exe().expect("the test binary"), redis, env)
    }

    fn start_binary(binary: &Path, redis: &Redis, env: &[(&str, &str)]) -> Self {
        let log = std::fs::File::options().append(true).create(true).open(redis.dir.join("agents.log")).expect("log");
        let mut cmd = Command::new(binary);
        cmd.args(["cluster::agent_role", "--exact", "--ignored", "--nocapture", "--test-threads", "1"])
            .env(AGENT_URL, redis.url())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self { child: cmd.spawn().expect("start an agent") }
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).expect("signal the agent");
    }

    /// Waits for the agent to exit; its exit code.
    fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let end = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(Instant::now() < end, "the agent did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn pool(redis: &Redis) -> ClusterPool {
    ClusterPool::builder(&redis.url()).prefix(PREFIX).lease(LEASE).connect().await.expect("connect")
}

async fn wait_agents(pool: &ClusterPool, n: u64) {
    wait_for(&format!("{n} agents are live"), Duration::from_secs(20), || async {
        pool.agents().await.expect("count agents") == n
    })
    .await;
}

async fn xlen(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> u64 {
    redis::cmd("XLEN").arg(key).query_async(conn).await.expect("XLEN")
}

/// Entries of the task stream read by an agent and not yet acknowledged.
async fn pending(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> u64 {
    let v: redis::Value = redis::cmd("XPENDING").arg(key).arg("agents").query_async(conn).await.expect("XPENDING");
    match v {
        redis::Value::Array(items) => items.first().map_or(0, |c| redis::from_redis_value(c).unwrap_or(0)),
        _ => 0,
    }
}

fn squares(n: u64) -> Vec<u64> {
    (0..n).map(|x| x * x).collect()
}

fn all_ok<T: std::fmt::Debug>(results: impl IntoIterator<Item = multiproc::Result<T>>) -> Vec<T> {
    results.into_iter().enumerate().map(|(i, r)| r.unwrap_or_else(|e| panic!("item {i} failed: {e}"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_api_works_across_the_cluster() {
    let redis = Redis::start(false);
    let _agent = Agent::start(&redis, &[]);
    let pool = pool(&redis).await;
    wait_agents(&pool, 1).await;

    assert_eq!(pool.apply(square, (7,)).await.expect("apply"), 49);
    let mut pending_result = pool.apply_async(slow_square, (3, 200));
    assert!(!pending_result.ready(), "a 200 ms task is not ready at once");
    assert_eq!(pending_result.get_timeout(Duration::from_secs(20)).await.expect("apply_async"), 9);

    let mapped = pool.map(square, 0..100u64).chunksize(7).await.expect("map");
    assert_eq!(all_ok(mapped), squares(100));
    let mapped = pool.map_async(square, 0..50u64).await.expect("map_async, default chunks");
    assert_eq!(all_ok(mapped), squares(50));
    let summed = pool.starmap(add, vec![(1u64, 2u64), (3, 4)]).await.expect("starmap");
    assert_eq!(all_ok(summed), vec![3, 7]);
    let empty = pool.map(square, Vec::<u64>::new()).await.expect("empty map");
    assert!(empty.is_empty());

    let ordered: Vec<u64> = pool.imap(square, 0..40u64).chunksize(3).map(|r| r.expect("imap item")).collect().await;
    assert_eq!(ordered, squares(40));
    let mut unordered: Vec<u64> =
        pool.imap_unordered(square, 0..40u64).map(|r| r.expect("imap_unordered item")).collect().await;
    unordered.sort_unstable();
    assert_eq!(unordered, squares(40));

    match pool.apply(boom, (5,)).await {
        Err(Error::TaskPanicked(p)) => assert!(p.message.contains("boom 5"), "{}", p.message),
        other => panic!("a panicking task gives TaskPanicked, got {other:?}"),
    }
    match pool.apply(parse, ("twelve".to_owned(),)).await {
        Err(Error::TaskFailed(f)) => {
            assert_eq!(f.message, "invalid digit found in string");
            assert!(f.task.ends_with("parse") && f.location.contains("cluster.rs"), "{f:?}");
        }
        other => panic!("a task's returned error gives TaskFailed, as on a local pool, got {other:?}"),
    }
    match pool.apply_timeout(slow_square, (2, 5_000), Duration::from_millis(200)).await {
        Err(Error::Timeout) => {}
        other => panic!("a task past its timeout gives Timeout, got {other:?}"),
    }
    let timed = pool.map(slow_square_one, [1u64]).timeout(Duration::from_millis(200)).await.expect("map");
    assert!(matches!(timed.get(0), Some(Err(Error::Timeout))), "{timed:?}");

    let stats = pool.stats();
    assert!(stats.completed >= 1 + 1 + 100 + 50 + 2 + 80, "{stats:?}");
    assert!(stats.failed >= 3, "{stats:?}");
    assert_eq!((stats.in_flight, stats.queued), (0, 0), "{stats:?}");
}

/// `slow_square(x, 5000)`, one argument (for `map`).
#[multiproc::task]
fn slow_square_one(x: u64) -> u64 {
    std::thread::sleep(Duration::from_secs(5));
    x * x
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_of_10000_over_three_agents_survives_one_sigkilled() {
    let redis = Redis::start(false);
    let mut agents: Vec<Agent> =
        ["a0", "a1", "a2"].iter().map(|name| Agent::start(&redis, &[(AGENT_NAME, name)])).collect();
    let pool = pool(&redis).await;
    wait_agents(&pool, 3).await;

    let mut map = pool.map_async(paced_square, 0..10_000u64);
    let mut conn = redis.conn().await;
    let tasks = pool.task_stream().to_owned();
    let end = Instant::now() + Duration::from_secs(30);
    while pool.stats().completed < 2_000 && !map.ready() {
        assert!(Instant::now() < end, "timed out waiting for a fifth of the map");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!map.ready(), "the map finished before an agent could be killed; make it longer");
    agents[0].signal(nix::sys::signal::Signal::SIGKILL);
    assert_eq!(agents[0].wait_exit(Duration::from_secs(5)), None, "killed by a signal");
    let held: Vec<redis::Value> = redis::cmd("XPENDING")
        .arg(&tasks)
        .arg("agents")
        .arg("-")
        .arg("+")
        .arg(100)
        .arg("a0")
        .query_async(&mut conn)
        .await
        .expect("XPENDING");
    assert!(!held.is_empty(), "the killed agent held chunks (they must be claimed by the others)");

    let results = map.get_timeout(Duration::from_secs(60)).await.expect("the map finishes");
    assert_eq!(results.len(), 10_000);
    assert_eq!(all_ok(results), squares(10_000), "every result, in order, exactly once");
    wait_for("the task stream is empty", Duration::from_secs(10), || {
        let (mut c, k) = (conn.clone(), tasks.clone());
        async move {
            let (conn, tasks) = (&mut c, &k);
            xlen(conn, tasks).await == 0 && pending(conn, tasks).await == 0
        }
    })
    .await;
    assert!(agents[1].is_running() && agents[2].is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_kills_its_worker_is_dead_lettered_after_max_deliveries() {
    let redis = Redis::start(false);
    let mut agent = Agent::start(&redis, &[]);
    let pool = pool(&redis).await;
    wait_agents(&pool, 1).await;

    match pool.apply(poison, (1,)).await {
        Err(Error::TaskPoisoned { deliveries: 3 }) => {}
        other => panic!("a poison task gives TaskPoisoned {{ deliveries: 3 }}, got {other:?}"),
    }
    let mut conn = redis.conn().await;
    assert_eq!(xlen(&mut conn, pool.dead_letter_stream()).await, 1, "one dead letter");
    assert_eq!(xlen(&mut conn, pool.task_stream()).await, 0, "nothing left in the task stream");
    assert_eq!(pool.apply(square, (4,)).await.expect("the agent still serves"), 16);
    assert!(agent.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_map_cancels_its_queued_work() {
    let redis = Redis::start(false);
    let _agent = Agent::start(&redis, &[]);
    let pool = pool(&redis).await;
    wait_agents(&pool, 1).await;
    let path = redis.dir.join("record");
    let lines = || std::fs::read_to_string(&path).map(|s| s.lines().count()).unwrap_or(0);

    let items: Vec<(String, u64, u64)> = (0..200).map(|i| (path.display().to_string(), i, 100)).collect();
    let map = pool.starmap(record, items).chunksize(1).submit();
    wait_for("the first items ran", Duration::from_secs(20), || async { lines() >= 2 }).await;
    drop(map);

    let conn = redis.conn().await;
    let tasks = pool.task_stream().to_owned();
    wait_for("the cancelled chunks are gone from Redis", Duration::from_secs(10), || {
        let (mut c, k) = (conn.clone(), tasks.clone());
        async move {
            let (conn, tasks) = (&mut c, &k);
            xlen(conn, tasks).await == 0 && pending(conn, tasks).await == 0
        }
    })
    .await;
    let ran = lines();
    // The agent holds at most 4 chunks (2 processes, 2 each) when the map
    // is dropped; nothing else of the 200 runs.
    assert!(ran < 20, "{ran} of 200 items ran after the map was dropped");
    assert_eq!(pool.apply(square, (3,)).await.expect("the pool still works"), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_mid_run_is_survived() {
    let mut redis = Redis::start(true);
    let mut agents: Vec<Agent> = (0..2).map(|_| Agent::start(&redis, &[])).collect();
    let pool = pool(&redis).await;
    wait_agents(&pool, 2).await;

    let mut map = pool.map_async(paced_square, 0..3_000u64);
    let end = Instant::now() + Duration::from_secs(30);
    while pool.stats().completed < 500 && !map.ready() {
        assert!(Instant::now() < end, "timed out waiting for part of the map");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!map.ready(), "the map finished before Redis could be killed");
    redis.restart();

    let results = map.get_timeout(Duration::from_secs(60)).await.expect("the map finishes after the restart");
    assert_eq!(all_ok(results), squares(3_000));
    assert_eq!(pool.apply(square, (5,)).await.expect("apply after the restart"), 25);
    assert!(agents.iter_mut().all(Agent::is_running), "agents reconnect rather than exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_an_agent() {
    let redis = Redis::start(false);
    // Between the drained agent and the next, no agent is live for a while:
    // the caller waits (a long lease) rather than failing its calls.
    let pool = ClusterPool::builder(&redis.url())
        .prefix(PREFIX)
        .lease(Duration::from_secs(30))
        .connect()
        .await
        .expect("connect");
    let mut conn = redis.conn().await;
    let tasks = pool.task_stream().to_owned();

    // Work it is running finishes before it exits. (Work it read but had
    // not started when the signal came would be handed back instead: the
    // tasks record when they start.)
    let mut agent = Agent::start(&redis, &[]);
    wait_agents(&pool, 1).await;
    let path = redis.dir.join("started");
    let started = || std::fs::read_to_string(&path).map(|s| s.lines().count()).unwrap_or(0);
    let running: Vec<_> = (0..2).map(|i| pool.apply_async(record, (path.display().to_string(), i, 500))).collect();
    wait_for("both tasks are running", Duration::from_secs(10), || async { started() == 2 }).await;
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(agent.wait_exit(Duration::from_secs(20)), Some(0), "a drained agent exits cleanly");
    // No agent runs now: these results were written by the drained one.
    for (i, r) in (0..).zip(running) {
        let got = get(r, Duration::from_secs(10)).await;
        let (len, held) = (xlen(&mut conn, &tasks).await, pending(&mut conn, &tasks).await);
        let value = got.unwrap_or_else(|e| panic!("drained task {i}: {e} (task stream: {len} entries, {held} held)"));
        assert_eq!(value, i);
    }
    assert_eq!(pool.agents().await.expect("agents"), 0, "a stopped agent leaves the live set");

    // Work that cannot finish within the drain timeout is handed back.
    let mut agent = Agent::start(&redis, &[(AGENT_DRAIN_MS, "100")]);
    wait_agents(&pool, 1).await;
    let handed: Vec<_> = (0..3).map(|x| pool.apply_async(slow_square, (x, 1_500))).collect();
    wait_for("the agent took all three tasks", Duration::from_secs(10), || {
        let (mut c, k) = (conn.clone(), tasks.clone());
        async move {
            let (conn, tasks) = (&mut c, &k);
            pending(conn, tasks).await == 3
        }
    })
    .await;
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(agent.wait_exit(Duration::from_secs(10)), Some(0));
    assert_eq!(xlen(&mut conn, &tasks).await, 3, "the three tasks are back in the stream");
    assert_eq!(pending(&mut conn, &tasks).await, 0, "and held by no one");
    let _next = Agent::start(&redis, &[]);
    for (x, r) in (0..).zip(handed) {
        assert_eq!(get(r, Duration::from_secs(20)).await.expect("handed-back task"), x * x);
    }
}

/// `get_timeout` on an owned handle.
async fn get<T: serde::de::DeserializeOwned>(
    mut r: multiproc_cluster::AsyncResult<T>,
    limit: Duration,
) -> multiproc::Result<T> {
    r.get_timeout(limit).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_of_another_build_does_not_take_the_task() {
    let redis = Redis::start(false);
    // A copy of this binary is another build: another file, another id.
    let other = redis.dir.join("other-build");
    std::fs::copy(std::env::current_exe().expect("the test binary"), &other).expect("copy the test binary");
    let _other = Agent::start_binary(&other, &redis, &[(AGENT_NAME, "other")]);
    let pool = pool(&redis).await;
    let mut conn = redis.conn().await;
    wait_for("the other build's agent is live", Duration::from_secs(20), || {
        let mut c = conn.clone();
        async move {
            let conn = &mut c;
            let keys: Vec<String> =
                redis::cmd("KEYS").arg(format!("{PREFIX}:*:agents")).query_async(conn).await.expect("KEYS");
            !keys.is_empty()
        }
    })
    .await;

    let started = Instant::now();
    match pool.apply(square, (3,)).await {
        Err(Error::NoClusterWorkers(why)) => assert!(why.contains("same binary"), "{why}"),
        other => panic!("with no agent of this build: NoClusterWorkers, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10), "a clear error, not a wait");
    assert_eq!(xlen(&mut conn, pool.task_stream()).await, 0, "nothing was queued");

    let _ours = Agent::start(&redis, &[(AGENT_NAME, "ours")]);
    wait_agents(&pool, 1).await;
    let results = pool.map(square, 0..20u64).chunksize(2).await.expect("map");
    assert_eq!(all_ok(results), squares(20));
    let info: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(pool.task_stream())
        .arg("agents")
        .query_async(&mut conn)
        .await
        .expect("XINFO");
    let text = format!("{info:?}");
    assert!(text.contains("ours") && !text.contains("other"), "only this build's agent reads its stream: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_entry_is_dead_lettered_and_the_agent_goes_on() {
    let redis = Redis::start(false);
    let mut agent = Agent::start(&redis, &[]);
    let pool = pool(&redis).await;
    wait_agents(&pool, 1).await;
    let mut conn = redis.conn().await;
    let tasks = pool.task_stream().to_owned();
    let dead = pool.dead_letter_stream().to_owned();
    let _: String = redis::cmd("XADD")
        .arg(&tasks)
        .arg("*")
        .arg("m")
        .arg(b"\xc1 not msgpack".as_slice())
        .query_async(&mut conn)
        .await
        .expect("XADD");
    let _: String =
        redis::cmd("XADD").arg(&tasks).arg("*").arg("unknown").arg("field").query_async(&mut conn).await.expect("XADD");
    // msgpack, but not a task: a map of the wrong shape.
    let _: String = redis::cmd("XADD")
        .arg(&tasks)
        .arg("*")
        .arg("m")
        .arg(b"\x81\xa1a\x01".as_slice())
        .query_async(&mut conn)
        .await
        .expect("XADD");
    wait_for("three dead letters", Duration::from_secs(10), || {
        let (mut c, k) = (conn.clone(), dead.clone());
        async move {
            let (conn, dead) = (&mut c, &k);
            xlen(conn, dead).await == 3
        }
    })
    .await;
    assert_eq!(xlen(&mut conn, &tasks).await, 0);
    assert_eq!(pool.apply(square, (6,)).await.expect("the agent still serves"), 36);
    assert!(agent.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_is_a_typed_error_within_the_deadline() {
    let dir = std::env::temp_dir().join(format!("mp-it-no-redis-{}", std::process::id()));
    let url = format!("redis+unix://{}/redis.sock", dir.display());
    let deadline = Duration::from_millis(300);
    let started = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        ClusterPool::builder(&url).reconnect_deadline(deadline).connect(),
    )
    .await
    .expect("connect gives up by itself");
    assert!(matches!(r, Err(Error::ClusterUnavailable(_))), "{r:?}");
    assert!(started.elapsed() >= deadline, "it retried until the deadline");

    // Redis gone for good in the middle of a call.
    let mut redis = Redis::start(false);
    let _agent = Agent::start(&redis, &[]);
    let pool = ClusterPool::builder(&redis.url())
        .prefix(PREFIX)
        .lease(LEASE)
        .reconnect_deadline(Duration::from_secs(1))
        .connect()
        .await
        .expect("connect");
    wait_agents(&pool, 1).await;
    let call = pool.apply_async(slow_square, (2, 3_000));
    redis.kill();
    let r = tokio::time::timeout(Duration::from_secs(20), call).await.expect("the call gives up by itself");
    assert!(matches!(r, Err(Error::ClusterUnavailable(_))), "{r:?}");
    let r = tokio::time::timeout(Duration::from_secs(20), pool.apply(square, (1,))).await.expect("no hang");
    assert!(matches!(r, Err(Error::ClusterUnavailable(_))), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_live_agent_is_a_clear_error() {
    let redis = Redis::start(false);
    let pool = pool(&redis).await;
    let r = tokio::time::timeout(Duration::from_secs(10), pool.map(square, 0..10u64)).await.expect("no hang");
    let items = r.expect("a map gives per-item results");
    assert!(items.iter().all(|r| matches!(r, Err(Error::NoClusterWorkers(_)))), "{items:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_of_a_caller_that_went_away_expire() {
    let redis = Redis::start(false);
    let _agent = Agent::start(&redis, &[]);
    let pool = ClusterPool::builder(&redis.url())
        .prefix(PREFIX)
        .lease(LEASE)
        .result_ttl(Duration::from_millis(1_000))
        .connect()
        .await
        .expect("connect");
    wait_agents(&pool, 1).await;
    let conn = redis.conn().await;
    let tasks = pool.task_stream().to_owned();
    let reply = pool.reply_stream().to_owned();
    let call = pool.apply_async(slow_square, (2, 300));
    wait_for("the agent took the task", Duration::from_secs(10), || {
        let (mut c, k) = (conn.clone(), tasks.clone());
        async move {
            let (conn, tasks) = (&mut c, &k);
            pending(conn, tasks).await == 1
        }
    })
    .await;
    // The caller goes away while its task runs.
    drop(call);
    drop(pool);
    wait_for("the result was written", Duration::from_secs(10), || {
        let (mut c, k) = (conn.clone(), reply.clone());
        async move {
            let (conn, reply) = (&mut c, &k);
            let ttl: i64 = redis::cmd("PTTL").arg(reply).query_async(conn).await.expect("PTTL");
            ttl > 0
        }
    })
    .await;
    wait_for("the result expired", Duration::from_secs(10), || {
        let (mut c, k) = (conn.clone(), reply.clone());
        async move {
            let (conn, reply) = (&mut c, &k);
            let exists: u64 = redis::cmd("EXISTS").arg(reply).query_async(conn).await.expect("EXISTS");
            exists == 0
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_is_required_and_enough() {
    // The default user is off: only `agent` with its password gets in.
    let acl = ["--user", "default", "off", "--user", "agent", "on", ">s3cret", "~*", "&*", "+@all"];
    let redis = Redis::start_with(false, &acl, "?user=agent&pass=s3cret");
    let anonymous = format!("redis+unix://{}", redis.socket().display());
    let r = ClusterPool::builder(&anonymous).reconnect_deadline(Duration::from_millis(300)).connect().await;
    assert!(matches!(r, Err(Error::ClusterUnavailable(_))), "{r:?}");
    let wrong = format!("{anonymous}?user=agent&pass=wrong");
    let r = ClusterPool::builder(&wrong).reconnect_deadline(Duration::from_millis(300)).connect().await;
    assert!(matches!(r, Err(Error::ClusterUnavailable(_))), "{r:?}");

    let _agent = Agent::start(&redis, &[]);
    let pool = pool(&redis).await;
    wait_agents(&pool, 1).await;
    assert_eq!(pool.apply(square, (9,)).await.expect("apply as the ACL user"), 81);
}

#[tokio::test]
async fn a_tls_url_needs_the_tls_feature() {
    let r = ClusterPool::connect("rediss://user:secret@127.0.0.1:1/").await;
    match r {
        Err(Error::InvalidArgument(why)) => assert!(why.contains("tls") && !why.contains("secret"), "{why}"),
        other => panic!("rediss:// without the tls feature: InvalidArgument, got {other:?}"),
    }
}
