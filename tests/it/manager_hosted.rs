//! `Manager`'s hosted types (locks, semaphores, condition, event, barrier,
//! queue, value, array, user types) from children, pool tasks and TCP
//! peers; proxy lifetimes; cancelled calls; errors and `Debug`.

use std::time::{Duration, Instant};

use multiproc::{
    ArrayProxy, BarrierProxy, ConditionProxy, Error, EventProxy, LockProxy, Manager, Pool, Process, QueueProxy,
    RLockProxy, SemaphoreProxy, ValueProxy,
};
use serde::{Deserialize, Serialize};

/// Every hosted type, passed to a child as one argument.
#[derive(Serialize, Deserialize)]
struct Kit {
    lock: LockProxy,
    rlock: RLockProxy,
    sem: SemaphoreProxy,
    bounded: SemaphoreProxy,
    cond: ConditionProxy,
    event: EventProxy,
    barrier: BarrierProxy,
    queue: QueueProxy<String>,
    value: ValueProxy<i64>,
    array: ArrayProxy<u32>,
}

async fn kit(m: &Manager) -> Kit {
    Kit {
        lock: m.lock().await.expect("lock"),
        rlock: m.rlock().await.expect("rlock"),
        sem: m.semaphore(1).await.expect("semaphore"),
        bounded: m.bounded_semaphore(1).await.expect("bounded"),
        cond: m.condition().await.expect("condition"),
        event: m.event().await.expect("event"),
        barrier: m.barrier(2).await.expect("barrier"),
        queue: m.queue(1).await.expect("queue"),
        value: m.value(0i64).await.expect("value"),
        array: m.array([0u32; 4]).await.expect("array"),
    }
}

/// The child's half of the exchange `use_every_type` drives.
#[multiproc::task]
fn child_uses_every_type(k: Kit) {
    // RLock: re-entrant for its owner.
    k.rlock.blocking_acquire().expect("rlock");
    k.rlock.blocking_acquire().expect("rlock again");
    k.rlock.blocking_release().expect("release");
    k.rlock.blocking_release().expect("release");
    // BoundedSemaphore: one release too many.
    assert!(matches!(k.bounded.blocking_release(), Err(Error::TooManyReleases)));
    // The parent holds the lock: a try fails, a wait succeeds once it lets go.
    assert!(!k.lock.blocking_try_acquire().expect("try"));
    k.event.blocking_set().expect("tell the parent we are here");
    k.lock.blocking_acquire().expect("the parent releases");
    k.lock.blocking_release().expect("release");
    // Semaphore: take the parent's permit.
    k.sem.blocking_acquire().expect("semaphore");
    // Value and array.
    k.value.blocking_set(41).expect("value");
    k.array.blocking_set(-1, 7).expect("array");
    // Queue of one: the second put waits for the parent's get.
    k.queue.blocking_put("one".into()).expect("put");
    k.queue.blocking_put("two".into()).expect("put waits for room");
    // Condition: wait for the parent's notify.
    k.cond.blocking_acquire().expect("cond lock");
    let deadline = Instant::now() + Duration::from_secs(30);
    while k.value.blocking_get().expect("value") != 42 {
        assert!(Instant::now() < deadline, "never notified");
        k.cond.blocking_wait_timeout(Duration::from_secs(1)).expect("wait");
    }
    k.cond.blocking_release().expect("cond release");
    // Barrier: meet the parent.
    let i = k.barrier.blocking_wait().expect("barrier");
    assert!(i < 2);
}

async fn use_every_type(m: &Manager) {
    let k = kit(m).await;
    k.lock.acquire().await.expect("parent takes the lock");
    let mut p = Process::new(
        child_uses_every_type,
        (Kit {
            lock: k.lock.clone(),
            rlock: k.rlock.clone(),
            sem: k.sem.clone(),
            bounded: k.bounded.clone(),
            cond: k.cond.clone(),
            event: k.event.clone(),
            barrier: k.barrier.clone(),
            queue: k.queue.clone(),
            value: k.value.clone(),
            array: k.array.clone(),
        },),
    );
    p.start().await.expect("start");
    assert!(k.event.wait_timeout(Duration::from_secs(60)).await.expect("wait"), "the child is there");
    assert!(k.lock.locked().await.expect("locked"));
    k.lock.release().await.expect("let the child have it");
    assert_eq!(k.queue.get_timeout(Duration::from_secs(60)).await.expect("get"), "one");
    assert_eq!(k.queue.get_timeout(Duration::from_secs(60)).await.expect("get"), "two");
    assert_eq!(k.array.to_vec().await.expect("array"), vec![0, 0, 0, 7]);
    assert!(!k.sem.try_acquire().await.expect("the child took the permit"));
    k.sem.release().await.expect("release");
    k.cond.acquire().await.expect("cond");
    k.value.set(42).await.expect("value");
    k.cond.notify_all().await.expect("notify");
    k.cond.release().await.expect("release");
    let i = k.barrier.wait().await.expect("barrier");
    assert!(i < 2);
    assert_eq!(p.join().await.expect("join"), 0);
    assert!(!k.event.wait_timeout(Duration::ZERO).await.expect("wait") || k.event.is_set().await.expect("set"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hosted_type_from_a_child() {
    let manager = Manager::start().await.expect("start");
    use_every_type(&manager).await;
    manager.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hosted_type_over_tcp_from_a_child() {
    let key = b"hosted over tcp";
    let server = Manager::serve("127.0.0.1:0".parse().expect("addr"), key).await.expect("serve");
    let peer = Manager::connect(server.address().expect("address"), key).await.expect("connect");
    use_every_type(&peer).await;
    drop(peer);
    server.shutdown().await.expect("shutdown");
}

#[multiproc::task]
fn take_and_die(lock: LockProxy, q: QueueProxy<u32>) {
    lock.blocking_acquire().expect("acquire");
    q.blocking_put(1).expect("tell the parent");
    std::process::exit(3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holders_hosted_lock_is_released_with_owner_died() {
    let manager = Manager::start().await.expect("start");
    let lock = manager.lock().await.expect("lock");
    let q = manager.queue::<u32>(0).await.expect("queue");
    let mut p = Process::new(take_and_die, (lock.clone(), q.clone()));
    p.start().await.expect("start");
    assert_eq!(q.get_timeout(Duration::from_secs(60)).await.expect("the child holds the lock"), 1);
    assert_eq!(p.join().await.expect("join"), 3);
    let pid = p.pid().expect("pid");
    match lock.acquire().await {
        Err(Error::OwnerDied { pid: dead }) => assert_eq!(dead, pid),
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    lock.acquire().await.expect("free again after the warning");
    lock.release().await.expect("release");
    manager.shutdown().await.expect("shutdown");
}

#[multiproc::task]
fn pool_put(q: QueueProxy<u32>, x: u32) -> u32 {
    q.blocking_put(x * 10).expect("put");
    x
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_tasks_use_hosted_queues() {
    let manager = Manager::start().await.expect("start");
    let q = manager.queue::<u32>(0).await.expect("queue");
    let pool = Pool::new(2).await.expect("pool");
    for x in 0..4 {
        assert_eq!(pool.apply(pool_put, (q.clone(), x)).await.expect("apply"), x);
    }
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(q.get_timeout(Duration::from_secs(10)).await.expect("get"));
    }
    got.sort_unstable();
    assert_eq!(got, vec![0, 10, 20, 30]);
    assert!(matches!(q.get_nowait().await, Err(Error::Empty)));
    pool.close();
    pool.join().await.expect("join");
    manager.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_time_out_in_the_manager_without_blocking_it() {
    let manager = Manager::start().await.expect("start");
    let lock = manager.lock().await.expect("lock");
    let q = manager.queue::<u8>(1).await.expect("queue");
    let barrier = manager.barrier(2).await.expect("barrier");
    let event = manager.event().await.expect("event");
    lock.acquire().await.expect("acquire");
    // A waiter parked in the manager while others are served.
    let waiter = tokio::spawn({
        let lock = lock.clone();
        async move { lock.acquire_timeout(Duration::from_millis(200)).await }
    });
    let d = manager.dict::<u8, u8>().await.expect("dict");
    d.set(1, 1).await.expect("served while a lock waiter is parked");
    assert!(!waiter.await.expect("join").expect("acquire_timeout"), "still held: timed out");
    assert!(matches!(q.get_timeout(Duration::from_millis(20)).await, Err(Error::Empty)));
    q.put(1).await.expect("put");
    assert!(matches!(q.put_timeout(2, Duration::from_millis(20)).await, Err(Error::Full)));
    assert!(!event.wait_timeout(Duration::from_millis(20)).await.expect("wait"));
    assert!(matches!(barrier.wait_timeout(Duration::from_millis(20)).await, Err(Error::BrokenBarrier)));
    assert!(barrier.broken().await.expect("broken"));
    barrier.reset().await.expect("reset");
    assert!(!barrier.broken().await.expect("broken"));
    let rlock = manager.rlock().await.expect("rlock");
    assert!(matches!(rlock.release().await, Err(Error::NotOwner)));
    manager.shutdown().await.expect("shutdown");
}

/// A user type hosted by the manager (`BaseManager.register`).
#[derive(Serialize, Deserialize)]
struct Tally {
    counts: std::collections::BTreeMap<String, u64>,
}

#[multiproc::hosted]
impl Tally {
    fn add(&mut self, word: String, n: u64) -> u64 {
        let c = self.counts.entry(word).or_default();
        *c += n;
        *c
    }

    fn top(&self) -> Option<(String, u64)> {
        self.counts.iter().max_by_key(|(_, n)| **n).map(|(w, n)| (w.clone(), *n))
    }
}

#[multiproc::task]
fn tally_in_child(t: TallyProxy) {
    for _ in 0..3 {
        t.blocking_add("child".into(), 2).expect("add");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_type_is_hosted_and_called_through_its_proxy() {
    let manager = Manager::start().await.expect("start");
    let t = manager.hosted(Tally { counts: Default::default() }).await.expect("hosted");
    assert_eq!(t.add("parent".into(), 1).await.expect("add"), 1);
    let mut p = Process::new(tally_in_child, (t.clone(),));
    p.start().await.expect("start");
    assert_eq!(p.join().await.expect("join"), 0);
    assert_eq!(t.top().await.expect("top"), Some(("child".to_string(), 6)));
    let named = manager.hosted_named("tally", Tally { counts: Default::default() }).await.expect("named");
    named.add("x".into(), 5).await.expect("add");
    let same = manager.hosted_named("tally", Tally { counts: Default::default() }).await.expect("same");
    assert_eq!(same.top().await.expect("top"), Some(("x".to_string(), 5)), "found by name, not made again");
    match manager.dict_named::<u8, u8>("tally").await {
        Err(Error::WrongKind(kind)) => {
            assert!(kind.found.ends_with("Tally") && kind.wanted == "dict", "{} / {}", kind.found, kind.wanted);
        }
        other => panic!("expected WrongKind, got {other:?}"),
    }
    manager.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_call_never_answers_the_next_one() {
    let manager = Manager::start().await.expect("start");
    // k1's value takes milliseconds to send, so a 1 ms timeout drops the call
    // while its reply is on the way.
    let d = manager.dict_from([(1u32, "1".repeat(4 << 20)), (2, "two".to_string())]).await.expect("dict");
    let mut cancelled = 0;
    for _ in 0..50 {
        if tokio::time::timeout(Duration::from_millis(1), d.get(&1)).await.is_err() {
            cancelled += 1;
        }
        assert_eq!(d.get(&2).await.expect("get"), Some("two".to_string()), "k2's value, never k1's");
    }
    eprintln!("{cancelled} of 50 calls were cancelled in flight");
    assert!(cancelled > 0, "no call was cancelled: the test proves nothing");
    manager.shutdown().await.expect("shutdown");
}

#[multiproc::task]
fn hold_then_wait(d: multiproc::DictProxy<u8, u8>, q: QueueProxy<u8>) {
    d.blocking_set(1, 1).expect("use it");
    q.blocking_put(1).expect("ready");
    // Killed while waiting here, holding its reference. (Not a get on `q`:
    // that could take the child's own "ready" before the parent asks for
    // it, end the child, and leave the parent waiting.)
    loop {
        std::thread::park();
    }
}

async fn wait_for_count(m: &Manager, want: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = m.object_count().await.expect("count");
        if n == want {
            return;
        }
        assert!(Instant::now() < deadline, "the manager holds {n} objects, expected {want}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_are_freed_with_their_last_proxy_anywhere() {
    let manager = Manager::start().await.expect("start");
    let _named = manager.dict_named::<u8, u8>("kept").await.expect("named");
    let baseline = manager.object_count().await.expect("count");
    for i in 0..20_000u32 {
        let d = manager.dict::<u32, u32>().await.expect("dict");
        if i % 1000 == 0 {
            d.set(i, i).await.expect("set");
        }
    }
    wait_for_count(&manager, baseline).await;

    // A child's reference keeps it; killing the child releases it.
    let d = manager.dict::<u8, u8>().await.expect("dict");
    let q = manager.queue::<u8>(0).await.expect("queue");
    let mut p = Process::new(hold_then_wait, (d.clone(), q.clone()));
    p.start().await.expect("start");
    let ready = tokio::select! {
        got = q.get_timeout(Duration::from_secs(60)) => got,
        code = p.join() => panic!("the child ended ({code:?}) before it had used the dict"),
    };
    let pid = p.pid().expect("started");
    let server = manager.pid().expect("a local manager");
    assert_eq!(
        ready.unwrap_or_else(|e| panic!(
            "the child's first calls: {e}; child: {}; manager: {}",
            multiproc_suite::threads_of(pid),
            multiproc_suite::threads_of(server)
        )),
        1
    );
    drop(d);
    wait_for_count(&manager, baseline + 2).await;
    assert_eq!(manager.object_count().await.expect("count"), baseline + 2, "the child still holds the dict");
    p.kill().expect("kill");
    p.join().await.expect("join");
    drop(q);
    wait_for_count(&manager, baseline).await;
    drop(_named);
    assert_eq!(manager.object_count().await.expect("count"), baseline, "named objects stay");
    manager.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn errors_name_their_cause_and_debug_is_short() {
    let manager = Manager::start().await.expect("start");
    let d = manager.dict_from([(1u8, vec![0u8; 1 << 20])]).await.expect("dict");
    let q = manager.queue::<u8>(0).await.expect("queue");
    let (mut a, mut b) = multiproc::Pipe::new().expect("pipe");
    let payload = vec![0u8; 1 << 20];
    let (sent, got) = tokio::join!(b.send(&payload), a.recv::<Vec<u8>>());
    sent.expect("send");
    assert_eq!(got.expect("recv: the reader's buffer grew").len(), 1 << 20);
    for shown in [format!("{manager:?}"), format!("{d:?}"), format!("{q:?}")] {
        assert!(shown.len() < 120, "Debug is a line: {shown}");
    }
    let shown = format!("{a:?}");
    assert!(shown.len() < 400, "a Connection's Debug shows no buffer: {shown}");
    // Nothing listens on a port we just freed.
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    match Manager::connect(free, b"key").await {
        Err(e @ Error::ManagerUnreachable { .. }) => assert!(e.to_string().contains(&free.to_string()), "{e}"),
        other => panic!("expected ManagerUnreachable, got {other:?}"),
    }
    manager.shutdown().await.expect("shutdown");
    assert!(matches!(d.len().await, Err(Error::Eof)), "a proxy after shutdown: Eof");
    assert!(matches!(q.blocking_qsize(), Err(Error::Eof)), "blocking too");
}
