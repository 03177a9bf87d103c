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

/// Leases `n` items, reports them, then waits to be killed with the
/// leases unacknowledged.
#[multiproc::task]
fn lease_and_die(q: multiproc::JoinableQueue<u32>, n: u32, leased: Value<u32>) {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(q.blocking_get_leased().expect("lease"));
        leased.set(held.len() as u32);
    }
    loop {
        std::thread::park();
    }
}

async fn leased_items_of_a_killed_consumer_are_delivered_exactly_once_more(m: StartMethod) {
    let q = multiproc::JoinableQueue::<u32>::new().expect("queue");
    for i in 0..20 {
        q.put(i).await.expect("put");
    }
    let leased = Value::new_raw(0u32).expect("value");
    let p = start(Process::new(lease_and_die, (q.clone(), 5, leased.clone())), m).await;
    progressed("the consumer's leases", 4, || u64::from(leased.get())).await;
    p.kill().expect("kill");
    assert_eq!(p.join().await.expect("join"), -9);
    assert_eq!(q.unfinished_tasks(), 20, "leased items are unfinished until acknowledged");
    let mut seen = vec![0u32; 20];
    for _ in 0..20 {
        let item = q.get_leased_timeout(Duration::from_secs(10)).await.expect("every item, again or first");
        let expected = if *item < 5 { 2 } else { 1 };
        assert_eq!(item.deliveries(), expected, "item {}", *item);
        let v = item.ack().expect("ack");
        seen[v as usize] += 1;
    }
    assert_eq!(seen, vec![1; 20], "each item delivered once to the survivor");
    assert!(matches!(q.get_leased_nowait(), Err(Error::Empty)), "no third delivery");
    assert_eq!(q.unfinished_tasks(), 0);
    q.join().await.expect("join");
    // Plain gets stay at-most-once: an item taken by a consumer that dies is gone.
    q.put(99).await.expect("put");
    assert_eq!(q.get().await.expect("get"), 99);
    assert!(matches!(q.get_nowait(), Err(Error::Empty)));
}

crate::per_method!(leased_items_of_a_killed_consumer_are_delivered_exactly_once_more);

#[multiproc::task]
fn produce_forever(q: multiproc::Queue<u64>, id: u64, counts: multiproc::Array<u64>, slot: usize) {
    for i in 0.. {
        q.blocking_put(id << 32 | i).expect("put");
        counts.set(slot, i + 1).expect("count");
    }
}

#[multiproc::task]
fn consume_forever(q: multiproc::Queue<u64>, out: multiproc::Queue<u64>, counts: multiproc::Array<u64>, slot: usize) {
    for n in 1.. {
        let v = q.blocking_get().expect("get");
        out.blocking_put(v).expect("forward");
        counts.set(slot, n).expect("count");
    }
}

async fn a_queue_survives_eight_parties_killed_at_random(m: StartMethod) {
    const KILLS: usize = 24;
    let q = multiproc::Queue::<u64>::with_maxsize(64).expect("queue");
    let out = multiproc::Queue::<u64>::new().expect("queue");
    // A slot per party ever started (consumers even, producers odd): the
    // items it put or got.
    let counts = multiproc::Array::<u64>::zeroed(2 * (8 + KILLS)).expect("array");
    let mut next = [0usize, 1usize];
    let mut rng = Rng::new();
    let mut parties: Vec<(bool, Process)> = Vec::new();
    for i in 0..8 {
        let consumer = i % 2 == 0;
        let slot = next[usize::from(!consumer)];
        next[usize::from(!consumer)] += 2;
        parties.push((consumer, spawn_party(&q, &out, &counts, consumer, slot, m).await));
    }
    let consumed = || -> u64 { (0..counts.len()).step_by(2).map(|s| counts.get(s).expect("count")).sum() };
    for _ in 0..KILLS {
        let target = consumed() + 1 + rng.below(400);
        progressed("the queue's consumers", target, consumed).await;
        let (consumer, victim) = parties.swap_remove(rng.below(parties.len() as u64) as usize);
        victim.kill().expect("kill");
        assert_eq!(victim.join().await.expect("join"), -9);
        let slot = next[usize::from(!consumer)];
        next[usize::from(!consumer)] += 2;
        parties.push((consumer, spawn_party(&q, &out, &counts, consumer, slot, m).await));
    }
    for (_, p) in &parties {
        p.kill().expect("kill");
        assert_eq!(p.join().await.expect("join"), -9);
    }
    let mut got = std::collections::HashSet::new();
    loop {
        match out.get_timeout(Duration::from_millis(1)).await {
            Ok(v) => assert!(got.insert(v), "item {v:#x} delivered twice"),
            Err(Error::Empty) => break,
            Err(e) => panic!("get: {e}"),
        }
    }
    assert!(!got.is_empty());
    // Usable after it all: no lock left held, no corrupt ring.
    while q.get_timeout(Duration::from_millis(1)).await.is_ok() {}
    q.put_timeout(1, Duration::from_secs(10)).await.expect("put after the chaos");
    assert_eq!(q.get_timeout(Duration::from_secs(10)).await.expect("get after the chaos"), 1);
}

async fn spawn_party(
    q: &multiproc::Queue<u64>,
    out: &multiproc::Queue<u64>,
    counts: &multiproc::Array<u64>,
    consumer: bool,
    slot: usize,
    m: StartMethod,
) -> Process {
    let p = if consumer {
        Process::new(consume_forever, (q.clone(), out.clone(), counts.clone(), slot))
    } else {
        Process::new(produce_forever, (q.clone(), slot as u64, counts.clone(), slot))
    };
    start(p, m).await
}

crate::per_method!(a_queue_survives_eight_parties_killed_at_random);

#[multiproc::task]
fn wait_on_condition(cond: multiproc::Condition, waiting: Value<u32>, woken: Value<u32>) {
    let mut g = cond.blocking_acquire().expect("acquire");
    waiting.set(waiting.get() + 1);
    g.blocking_wait().expect("wait");
    woken.set(woken.get() + 1);
}

async fn a_dead_condition_waiter_does_not_swallow_a_notify(m: StartMethod) {
    let cond = multiproc::Condition::new().expect("condition");
    let (waiting, woken) = (Value::new_raw(0u32).expect("value"), Value::new_raw(0u32).expect("value"));
    for round in 0..3u64 {
        // The oldest waiter, killed while it waits.
        let doomed = start(Process::new(wait_on_condition, (cond.clone(), waiting.clone(), woken.clone())), m).await;
        progressed("the doomed waiter", 2 * round, || u64::from(waiting.get())).await;
        // Taking the lock proves it is inside its wait (its slot claimed).
        drop(cond.acquire().await.expect("acquire"));
        doomed.kill().expect("kill");
        assert_eq!(doomed.join().await.expect("join"), -9);
        let live = start(Process::new(wait_on_condition, (cond.clone(), waiting.clone(), woken.clone())), m).await;
        progressed("the live waiter", 2 * round + 1, || u64::from(waiting.get())).await;
        drop(cond.acquire().await.expect("acquire"));
        cond.acquire().await.expect("acquire").notify(1).expect("notify");
        progressed("the live waiter woken by notify(1)", round, || u64::from(woken.get())).await;
        assert_eq!(live.join().await.expect("join"), 0);
    }
}

crate::per_method!(a_dead_condition_waiter_does_not_swallow_a_notify);

#[multiproc::task]
fn hold_semaphore_forever(sem: multiproc::Semaphore, holding: Value<u32>) {
    let _g = sem.blocking_acquire().expect("acquire");
    holding.set(1);
    loop {
        std::thread::park();
    }
}

async fn a_semaphore_unit_of_a_killed_holder_comes_back(m: StartMethod) {
    let sem = multiproc::Semaphore::new(1).expect("semaphore");
    for round in 0..3 {
        let holding = Value::new_raw(0u32).expect("value");
        let p = start(Process::new(hold_semaphore_forever, (sem.clone(), holding.clone())), m).await;
        progressed("the holder", 0, || u64::from(holding.get())).await;
        assert!(sem.try_acquire().is_none(), "round {round}: the only unit is held");
        p.kill().expect("kill");
        assert_eq!(p.join().await.expect("join"), -9);
        let g = sem.acquire_timeout(Duration::from_secs(10)).await.expect("acquire");
        assert!(g.is_some(), "round {round}: the dead holder's unit never came back");
    }
    assert_eq!(sem.get_value(), 1);
}

crate::per_method!(a_semaphore_unit_of_a_killed_holder_comes_back);

#[cfg(debug_assertions)]
#[tokio::test]
async fn a_blocking_wait_on_a_runtime_thread_panics_in_debug_builds() {
    let lock = Lock::new().expect("lock");
    let held = lock.try_acquire().expect("free");
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lock.blocking_acquire().map(drop)));
    assert!(r.is_err(), "Lock::blocking_acquire blocked a runtime thread");
    let q = multiproc::Queue::<u8>::new().expect("queue");
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| q.blocking_get()));
    assert!(r.is_err(), "Queue::blocking_get blocked a runtime thread");
    // Fast paths and spawn_blocking threads are fine.
    drop(held);
    drop(lock.blocking_acquire().expect("free again"));
    let l = lock.clone();
    let _g = lock.acquire().await.expect("acquire");
    assert!(
        tokio::task::spawn_blocking(move || l.blocking_acquire_timeout(Duration::from_millis(10)).map(|g| g.is_none()))
            .await
            .expect("thread")
            .expect("acquire")
    );
}

fn threads_of_this_process() -> u32 {
    std::fs::read_dir("/proc/self/task").map(|d| d.count() as u32).unwrap_or(u32::MAX)
}

/// Starts `n` async waiters on `event`, reports (in `report`: threads
/// before, most threads while they wait, then how many woke).
#[multiproc::task]
async fn many_async_waiters(event: multiproc::Event, n: u32, report: multiproc::Array<u32>) {
    report.set(0, threads_of_this_process()).expect("report");
    let started = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (e, s) = (event.clone(), started.clone());
        tasks.push(tokio::spawn(async move {
            s.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            e.wait().await
        }));
    }
    // Every waiter has been polled (and registered) once started is n and
    // the runtime has had a few turns.
    let mut most = 0;
    while started.load(std::sync::atomic::Ordering::SeqCst) < n {
        most = most.max(threads_of_this_process());
        tokio::task::yield_now().await;
    }
    for _ in 0..100 {
        most = most.max(threads_of_this_process());
        tokio::task::yield_now().await;
    }
    report.set(1, most).expect("report");
    report.set(3, 1).expect("ready");
    let mut woke = 0;
    for t in tasks {
        if matches!(t.await, Ok(Ok(()))) {
            woke += 1;
        }
    }
    report.set(2, woke).expect("report");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_async_waiters_on_one_event_use_a_bounded_number_of_threads_and_all_wake() {
    const N: u32 = 10_000;
    let event = multiproc::Event::new().expect("event");
    let report = multiproc::Array::<u32>::zeroed(4).expect("array");
    let p = start(Process::new(many_async_waiters, (event.clone(), N, report.clone())), StartMethod::Forkserver).await;
    progressed("the waiters to register", 0, || u64::from(report.get(3).expect("ready"))).await;
    // Set from another process than the waiters'.
    event.set();
    assert_eq!(p.join_timeout(Duration::from_secs(60)).await.expect("join"), Some(0));
    let (before, most, woke) = (report.get(0).expect("r"), report.get(1).expect("r"), report.get(2).expect("r"));
    assert_eq!(woke, N, "every waiter woke");
    assert!(most <= before + 2, "{N} async waiters took {} threads beyond the {before} the process had", most - before);
}
