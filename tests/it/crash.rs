//! Processes SIGKILLed at random moments while they use shared state: no
//! lock, queue or condition may be left wedged (issue 8).

use std::time::{Duration, Instant};

use multiproc::{Error, Lock, Process, StartMethod, Value};

/// A small xorshift generator seeded from the clock and pid: the kill
/// moments differ from run to run.
pub struct Rng(u64);

impl Rng {
    pub fn new() -> Self {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Self((t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32) | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Waits until `progress()` exceeds `past`: the parties are alive and not
/// stuck. Fails the test after 10 s without progress.
pub async fn progressed(what: &str, past: u64, progress: impl Fn() -> u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while progress() <= past {
        assert!(Instant::now() < deadline, "stuck: {what} made no progress past {past} in 10 s");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// Takes and releases `lock` forever, counting every pass in `passes`
/// (written under the lock).
#[multiproc::task]
fn hammer_lock(lock: Lock, passes: Value<u64>) {
    loop {
        match lock.blocking_acquire() {
            Ok(g) => {
                passes.set(passes.get() + 1);
                drop(g);
            }
            Err(Error::OwnerDied { .. }) => {}
            Err(_) => std::process::exit(2),
        }
    }
}

async fn start(mut p: Process, m: StartMethod) -> Process {
    p = p.start_method(m);
    p.start().await.expect("start");
    p
}

async fn a_lock_holder_killed_at_random_points_never_leaves_it_stuck(m: StartMethod) {
    const PARTIES: usize = 3;
    const KILLS: usize = 40;
    let lock = Lock::new().expect("lock");
    let passes = Value::new_raw(0u64).expect("value");
    let mut rng = Rng::new();
    let mut ps = Vec::new();
    for _ in 0..PARTIES {
        ps.push(start(Process::new(hammer_lock, (lock.clone(), passes.clone())), m).await);
    }
    for _ in 0..KILLS {
        // A random number of passes from now, kill a random party: it is
        // somewhere in its acquire/release loop, often holding the lock.
        let target = passes.get() + 1 + rng.below(300);
        progressed("the lock's holders", target, || passes.get()).await;
        let victim = ps.swap_remove(rng.below(PARTIES as u64) as usize);
        victim.kill().expect("kill");
        assert_eq!(victim.join().await.expect("join"), -9);
        ps.push(start(Process::new(hammer_lock, (lock.clone(), passes.clone())), m).await);
    }
    let last = passes.get();
    progressed("the survivors", last + 100, || passes.get()).await;
    for p in &ps {
        p.kill().expect("kill");
        assert_eq!(p.join().await.expect("join"), -9);
    }
    // Whoever died last, the lock can be taken (after at most one OwnerDied).
    let mut owner_died = 0;
    loop {
        match lock.acquire_timeout(Duration::from_secs(10)).await {
            Ok(Some(_g)) => break,
            Ok(None) => panic!("the lock stayed held after every party died"),
            Err(Error::OwnerDied { .. }) if owner_died == 0 => owner_died += 1,
            Err(e) => panic!("acquire: {e}"),
        }
    }
}

crate::per_method!(a_lock_holder_killed_at_random_points_never_leaves_it_stuck);
