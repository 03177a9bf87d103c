//! The manager against clients that misbehave, honestly or on purpose:
//! huge replies, clients that never read, frames announced and never sent,
//! fd floods at a low fd limit, and fuzzed frames before and after login.
//! Each time the manager must keep serving everyone else.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use multiproc::__private::manager_testing as raw;
use multiproc::{ListProxy, Manager, Process};

use crate::common::pid_alive;

/// (VmRSS, VmHWM) of `pid` in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .expect("a memory field")
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A small deterministic generator (xorshift64*), so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// Flips, truncates, extends or rewrites the length of a frame.
    fn mutate(&mut self, frame: &[u8]) -> Vec<u8> {
        let mut f = frame.to_vec();
        match self.below(6) {
            0 => {
                for _ in 0..1 + self.below(4) {
                    let i = self.below(f.len());
                    f[i] ^= 1 << self.below(8);
                }
            }
            1 => f.truncate(self.below(f.len())),
            2 => {
                let n = self.below(64);
                let more = self.bytes(n);
                f.extend(more);
            }
            3 => {
                let len = self.next() as u32;
                f[..4].copy_from_slice(&len.to_be_bytes());
            }
            4 => f[4] = self.next() as u8,
            _ => {
                let i = 5 + self.below(f.len().saturating_sub(5).max(1));
                if i < f.len() {
                    f[i] = self.next() as u8;
                }
            }
        }
        f
    }
}

fn local(manager: &Manager) -> UnixStream {
    UnixStream::from(raw::raw_connection(manager, None).expect("a raw local connection"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_reply_is_streamed_and_the_manager_serves_on() {
    let manager = Manager::start().await.expect("start");
    let big = "x".repeat(40 << 20);
    let l: ListProxy<String> = manager.list([big.clone()]).await.expect("list");
    l.append(big).await.expect("append: the list is now over one frame");
    let all = l.to_vec().await.expect("to_vec of 80 MiB: streamed in parts");
    assert_eq!(all.iter().map(String::len).collect::<Vec<_>>(), vec![40 << 20, 40 << 20]);
    let l2 = l.clone();
    let n = tokio::task::spawn_blocking(move || l2.blocking_to_vec().map(|v| v.len())).await.expect("join");
    assert_eq!(n.expect("blocking_to_vec"), 2);
    let d = manager.dict::<u8, u8>().await.expect("the manager is alive");
    d.set(1, 1).await.expect("and serving");
    manager.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_freezes_no_one() {
    let manager = Manager::start().await.expect("start");
    // The manager's first object: id 1.
    let l: ListProxy<String> = manager.list(["y".repeat(8 << 20), "z".repeat(8 << 20)]).await.expect("list");
    let mut stuck = local(&manager);
    stuck.write_all(&raw::hello_frame(0x5106)).expect("hello");
    for _ in 0..8 {
        // 16 MiB replies, never read.
        stuck.write_all(&raw::items_frame(1)).expect("request");
    }
    let d = manager.dict::<u32, u32>().await.expect("dict");
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let t = Instant::now();
        tokio::time::timeout(Duration::from_secs(2), d.set(i, i))
            .await
            .expect("served while another client does not read")
            .expect("set");
        slowest = slowest.max(t.elapsed());
    }
    eprintln!("slowest call beside a client that never reads: {slowest:?}");
    assert_eq!(l.len().await.expect("len"), 2);
    drop(stuck);
    manager.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_but_unsent_frames_cost_no_memory() {
    let key = b"memory";
    let manager = Manager::serve("127.0.0.1:0".parse().expect("addr"), key).await.expect("serve");
    let pid = manager.pid().expect("pid");
    let d = manager.dict::<u8, u8>().await.expect("dict");
    d.set(0, 0).await.expect("warm up");
    let (before, _) = memory_kib(pid);
    let mut held = Vec::new();
    for i in 0..16 {
        // 64 MiB announced (the limit), two bytes sent.
        let announce = [4, 0, 0, 0, 0, 0x92, 0x01];
        if i % 2 == 0 {
            let mut s = TcpStream::from(raw::raw_connection(&manager, Some(key)).expect("login"));
            s.write_all(&announce).expect("write");
            held.push(Box::new(s) as Box<dyn Write>);
        } else {
            let mut s = local(&manager);
            s.write_all(&raw::hello_frame(0xa000 + i)).expect("hello");
            s.write_all(&announce).expect("write");
            held.push(Box::new(s) as Box<dyn Write>);
        }
    }
    for i in 0..3 {
        d.set(i, i).await.expect("served");
    }
    let (after, peak) = memory_kib(pid);
    eprintln!("manager RSS {before} KiB before, {after} KiB with 16 frames of 64 MiB announced; peak {peak} KiB");
    assert!(after < before + 32 * 1024, "16 announced frames grew the manager from {before} to {after} KiB");
    drop(held);
    manager.shutdown().await.expect("shutdown");
}

const FLOOD_KEY: &[u8] = b"flood";

#[multiproc::task]
async fn serve_with_few_fds(address: String) {
    use nix::sys::resource::{Resource, setrlimit};
    setrlimit(Resource::RLIMIT_NOFILE, 160, 160).expect("lower the fd limit");
    let manager = Manager::serve(address.parse().expect("addr"), FLOOD_KEY).await.expect("serve");
    let info = manager.dict_named::<String, u32>("info").await.expect("info");
    info.set("pid".into(), manager.pid().expect("pid")).await.expect("pid");
    let stop = manager.queue_named::<bool>("stop", 0).await.expect("stop");
    stop.get().await.expect("told to stop");
    manager.shutdown().await.expect("shutdown");
}

async fn connect_soon(address: SocketAddr) -> Manager {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match Manager::connect(address, FLOOD_KEY).await {
            Ok(m) => return m,
            Err(e) => assert!(Instant::now() < deadline, "the manager never answered: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_fd_flood_at_a_low_fd_limit_does_not_end_the_manager() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("limit");
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("raise our own limit");
    }
    let flood = 1000.min(hard.saturating_sub(300) as usize);
    let address = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let mut child = Process::new(serve_with_few_fds, (address.to_string(),));
    child.start().await.expect("start");
    let peer = connect_soon(address).await;
    let info = peer.dict_named::<String, u32>("info").await.expect("info");
    let deadline = Instant::now() + Duration::from_secs(30);
    let pid = loop {
        if let Some(pid) = info.get(&"pid".into()).await.expect("get") {
            break pid;
        }
        assert!(Instant::now() < deadline, "no pid");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };

    let mut conns = Vec::new();
    for _ in 0..flood {
        match tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(address)).await {
            Ok(Ok(s)) => conns.push(s),
            Ok(Err(e)) => panic!("connect: {e}"),
            Err(_) => {}
        }
    }
    // The manager still logs in a new peer and serves it.
    let again = connect_soon(address).await;
    let ns = again.namespace_named("after the flood").await.expect("namespace");
    ns.set("ok", &true).await.expect("set");
    assert_eq!(ns.get::<bool>("ok").await.expect("get"), Some(true));
    assert!(pid_alive(pid), "the manager survived {flood} idle connections at 160 fds");
    let mut open = 0;
    for c in &conns {
        let mut buf = [0u8; 256];
        let mut alive = true;
        loop {
            match c.try_read(&mut buf) {
                Ok(0) => {
                    alive = false;
                    break;
                }
                Ok(_) => continue,
                Err(_) => break,
            }
        }
        open += usize::from(alive);
    }
    eprintln!("fd flood: {} connections made, {open} still held by the manager (cap 64 pending logins)", conns.len());
    assert!(open <= 160, "{open} idle connections held at a limit of 160 fds");
    drop(conns);
    let stop = again.queue_named::<bool>("stop", 0).await.expect("stop");
    stop.put(true).await.expect("stop");
    assert_eq!(child.join().await.expect("join"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_frames_before_and_after_login_leave_the_manager_serving() {
    let key = b"fuzz";
    let manager = Manager::serve("127.0.0.1:0".parse().expect("addr"), key).await.expect("serve");
    let address = manager.address().expect("address");
    let pid = manager.pid().expect("pid");
    let d = manager.dict::<u32, u32>().await.expect("dict");
    let samples = raw::sample_frames();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut tried = 0;
    let mut held: Vec<OwnedFd> = Vec::new();

    // Before login: random bytes, mutated challenges, huge announcements.
    for i in 0..400 {
        let mut s = TcpStream::connect(address).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut challenge = vec![0u8; 5];
        s.read_exact(&mut challenge).expect("challenge header");
        let len = u32::from_be_bytes(challenge[..4].try_into().expect("4")) as usize;
        let mut body = vec![0u8; len.min(4096)];
        s.read_exact(&mut body).expect("challenge");
        challenge.extend(body);
        let input = match rng.below(3) {
            0 => {
                let n = rng.below(2048);
                rng.bytes(n)
            }
            1 => rng.mutate(&challenge),
            _ => {
                let k = rng.below(samples.len());
                rng.mutate(&samples[k])
            }
        };
        let _ = s.write_all(&input);
        tried += 1;
        if i % 4 == 0 {
            held.push(s.into());
        }
        if i % 50 == 0 {
            d.set(i, i).await.expect("served during the pre-login fuzz");
        }
    }
    held.clear();

    // After login (local and TCP): mutated and random frames.
    for i in 0..3000u32 {
        let fd = if i % 10 == 0 {
            raw::raw_connection(&manager, Some(key)).expect("login")
        } else {
            raw::raw_connection(&manager, None).expect("local")
        };
        let mut s = UnixStream::from(fd);
        let mut input = Vec::new();
        if rng.below(10) != 0 {
            input.extend(raw::hello_frame(rng.next()));
        }
        for _ in 0..1 + rng.below(4) {
            let frame = &samples[rng.below(samples.len())];
            match rng.below(4) {
                0 => input.extend(frame),
                1 => {
                    let n = rng.below(256);
                    input.extend(rng.bytes(n));
                }
                _ => input.extend(rng.mutate(frame)),
            }
        }
        let _ = s.write_all(&input);
        tried += 1;
        if i % 8 == 0 {
            held.push(s.into());
            if held.len() > 64 {
                held.remove(0);
            }
        }
        if i % 250 == 0 {
            d.set(i, i).await.expect("served during the fuzz");
        }
    }
    drop(held);
    d.set(1, 2).await.expect("served after the fuzz");
    assert_eq!(d.get(&1).await.expect("get"), Some(2));
    assert!(pid_alive(pid));
    let (rss, peak) = memory_kib(pid);
    eprintln!("fuzz: {tried} inputs; manager RSS {rss} KiB, peak {peak} KiB");
    assert!(rss < 256 * 1024, "the manager grew to {rss} KiB");
    manager.shutdown().await.expect("shutdown");
}
