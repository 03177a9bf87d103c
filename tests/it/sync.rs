//! Cross-process synchronization primitives, exercised by real processes.

use std::time::{Duration, Instant};

use multiproc::{Array, Barrier, BoundedSemaphore, Condition, Error, Event, Lock, Process, RLock, Semaphore, Value};

use crate::common::pid_alive;

/// Polls `cond` until it holds or 10 s pass (a real condition, not a sleep).
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn start<F, A, M>(f: F, args: A) -> Process
where
    F: multiproc::TaskFn<A, M>,
    A: serde::Serialize,
{
    let mut p = Process::new(f, args);
    p.start().await.expect("start");
    p
}

#[multiproc::task]
fn lockstep(barrier: Barrier, seen: Array<u32>, me: usize, generations: u32) {
    for g in 1..=generations {
        seen.set(me, g).expect("set");
        barrier.blocking_wait().expect("wait");
        // Everyone has arrived at generation g, nobody is past g + 1.
        for j in 0..seen.len() {
            let s = seen.get(j).expect("get");
            if s < g || s > g + 1 {
                std::process::exit(3);
            }
        }
        barrier.blocking_wait().expect("second wait keeps generations apart");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_pass_a_barrier_1000_times_in_lockstep() {
    let barrier = Barrier::new(4).expect("barrier");
    let seen = Array::<u32>::zeroed(4).expect("array");
    let mut ps = Vec::new();
    for me in 0..4 {
        ps.push(start(lockstep, (barrier.clone(), seen.clone(), me, 500)).await);
    }
    for p in &ps {
        assert_eq!(p.join().await.expect("join"), 0, "a party saw another out of step");
    }
    assert_eq!(seen.to_vec(), vec![500; 4]);
}

#[multiproc::task]
fn count_arrival(count: Value<u32>) {
    count.blocking_update(|c| c + 1).expect("update");
}

/// Passes the barrier `rounds` times; exits 4 when it finds it broken.
#[multiproc::task]
fn pass_barrier(barrier: Barrier, rounds: u32) {
    for _ in 0..rounds {
        if barrier.blocking_wait().is_err() {
            std::process::exit(4);
        }
    }
}

/// Passes a 3-party barrier `rounds` times, counting in `record` each
/// (generation, index) it was given.
#[multiproc::task]
fn pass_barrier_recording(barrier: Barrier, record: Array<u32>, rounds: usize) {
    record_passes(&barrier, &record, rounds);
}

fn record_passes(barrier: &Barrier, record: &Array<u32>, rounds: usize) {
    for g in 0..rounds {
        let index = barrier.blocking_wait().expect("wait");
        let _l = record.get_lock().expect("lock").blocking_acquire().expect("acquire");
        let at = g * 3 + index;
        record.set(at, record.get(at).expect("index below 3") + 1).expect("set");
    }
}

#[tokio::test]
async fn barrier_action_runs_once_per_generation_and_indexes_are_distinct() {
    let actions = Value::new(0u32).expect("value");
    let record = Array::<u32>::zeroed(30).expect("array");
    let barrier = Barrier::with_action(3, count_arrival, (actions.clone(),)).expect("barrier");
    let mut ps = Vec::new();
    for _ in 0..2 {
        ps.push(start(pass_barrier_recording, (barrier.clone(), record.clone(), 10)).await);
    }
    let mine = record.clone();
    tokio::task::spawn_blocking(move || record_passes(&barrier, &mine, 10)).await.expect("parent's waits");
    for p in &ps {
        assert_eq!(p.join().await.expect("join"), 0);
    }
    assert_eq!(record.to_vec(), vec![1; 30], "indexes 0, 1, 2 once each in every generation");
    assert_eq!(actions.get(), 10, "one action per generation");
}

#[tokio::test]
async fn barrier_timeout_abort_and_reset() {
    let barrier = Barrier::new(2).expect("barrier");
    assert!(matches!(barrier.wait_timeout(Duration::from_millis(50)).await, Err(Error::BrokenBarrier)));
    assert!(barrier.broken());
    assert!(matches!(barrier.blocking_wait(), Err(Error::BrokenBarrier)), "stays broken");
    barrier.reset().expect("reset");
    assert!(!barrier.broken());
    let p = start(pass_barrier, (barrier.clone(), 1)).await;
    barrier.wait().await.expect("usable after reset");
    assert_eq!(p.join().await.expect("join"), 0);

    let p = start(pass_barrier, (barrier.clone(), 1)).await;
    until("the child to wait", || barrier.n_waiting() == 1).await;
    barrier.abort().expect("abort");
    assert_eq!(p.join().await.expect("join"), 4, "the waiting child got BrokenBarrier");
    assert!(matches!(Barrier::new(0), Err(Error::InvalidArgument(_))));
}

#[multiproc::task]
fn wait_to_be_notified(cond: Condition, waiting: Value<u32>, woken: Value<u32>) {
    let mut g = cond.blocking_acquire().expect("acquire");
    waiting.blocking_update(|w| w + 1).expect("update");
    g.blocking_wait().expect("wait");
    woken.blocking_update(|w| w + 1).expect("update");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_two_wakes_exactly_two_of_four() {
    let cond = Condition::new().expect("condition");
    let waiting = Value::new(0u32).expect("value");
    let woken = Value::new(0u32).expect("value");
    let mut ps = Vec::new();
    for _ in 0..4 {
        ps.push(start(wait_to_be_notified, (cond.clone(), waiting.clone(), woken.clone())).await);
    }
    until("four waiters", || waiting.get() == 4).await;
    cond.acquire().await.expect("acquire").notify(2).expect("notify");
    until("two woken", || woken.get() == 2).await;
    let finished = ps.iter().filter(|p| !p.is_alive()).count();
    {
        let g = cond.acquire().await.expect("acquire");
        assert_eq!(woken.get(), 2, "no third waiter woke without a notify");
        g.notify_all().expect("notify");
    }
    for p in &ps {
        assert_eq!(p.join().await.expect("join"), 0);
    }
    assert_eq!(woken.get(), 4);
    assert!(finished <= 2);
}

#[tokio::test]
async fn condition_wait_timeout_and_wait_for() {
    let cond = Condition::with_lock(Lock::new().expect("lock")).expect("condition");
    let mut g = cond.acquire().await.expect("acquire");
    let t = Instant::now();
    assert!(!g.wait_timeout(Duration::from_millis(50)).await.expect("wait"));
    assert!(t.elapsed() >= Duration::from_millis(50));
    assert!(g.wait_for(|| true, None).await.expect("wait_for"));
    assert!(!g.wait_for(|| false, Some(Duration::from_millis(20))).await.expect("wait_for"));
}

#[multiproc::task]
fn wait_for_event(event: Event) {
    event.blocking_wait().expect("wait");
}

#[multiproc::task]
fn set_event(event: Event) {
    event.set();
}

#[tokio::test]
async fn event_set_in_one_process_wakes_three_others() {
    let event = Event::new().expect("event");
    assert!(!event.wait_timeout(Duration::from_millis(20)).await.expect("wait"), "false on timeout");
    let mut waiters = Vec::new();
    for _ in 0..3 {
        waiters.push(start(wait_for_event, (event.clone(),)).await);
    }
    assert!(waiters.iter().all(Process::is_alive));
    let setter = start(set_event, (event.clone(),)).await;
    assert_eq!(setter.join().await.expect("join"), 0);
    for w in &waiters {
        assert_eq!(w.join_timeout(Duration::from_secs(10)).await.expect("join"), Some(0));
    }
    assert!(event.is_set());
    event.clear();
    assert!(!event.is_set());
}

#[multiproc::task]
fn hold_forever(lock: Lock) {
    let _g = lock.blocking_acquire().expect("acquire");
    loop {
        std::thread::park();
    }
}

#[tokio::test]
async fn lock_of_a_killed_holder_is_recoverable() {
    let lock = Lock::new().expect("lock");
    let holder = start(hold_forever, (lock.clone(),)).await;
    until("the child to hold the lock", || lock.is_locked()).await;
    assert!(lock.try_acquire().is_none());
    let pid = holder.pid().expect("pid");
    holder.kill().expect("kill");
    assert_eq!(holder.join().await.expect("join"), -9);
    assert!(!pid_alive(pid));
    match lock.acquire().await {
        Err(Error::OwnerDied { pid: dead }) => assert_eq!(dead, pid),
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    let g = lock.acquire().await.expect("recovered");
    assert!(lock.try_acquire().is_none(), "a failed try_acquire leaves the lock held");
    assert!(lock.is_locked());
    drop(g);
    assert!(!lock.is_locked());
}

#[multiproc::task]
fn add_many(counter: Value<i64>, n: u32) {
    for _ in 0..n {
        counter.blocking_update(|c| c + 1).expect("update");
    }
}

#[tokio::test]
async fn counter_with_a_lock_is_exact() {
    let counter = Value::new(0i64).expect("value");
    let mut ps = Vec::new();
    for _ in 0..4 {
        ps.push(start(add_many, (counter.clone(), 2_000)).await);
    }
    for _ in 0..2_000 {
        counter.update(|c| c + 1).await.expect("update");
    }
    for p in &ps {
        assert_eq!(p.join().await.expect("join"), 0);
    }
    assert_eq!(counter.get(), 10_000);
}

#[multiproc::task]
fn exit_if_not_owner(lock: RLock) {
    std::process::exit(if matches!(lock.release(), Err(Error::NotOwner)) { 5 } else { 6 });
}

#[tokio::test]
async fn rlock_is_reentrant_and_only_its_owner_releases() {
    let lock = RLock::new().expect("rlock");
    let a = lock.blocking_acquire().expect("acquire");
    let b = lock.blocking_acquire().expect("again, same owner");
    assert_eq!(lock.depth(), 2);
    let other = lock.clone();
    assert!(std::thread::spawn(move || matches!(other.release(), Err(Error::NotOwner))).join().expect("thread"));
    let p = start(exit_if_not_owner, (lock.clone(),)).await;
    assert_eq!(p.join().await.expect("join"), 5, "another process may not release it");
    drop(b);
    drop(a);
    assert_eq!(lock.depth(), 0);
    assert!(matches!(lock.release(), Err(Error::NotOwner)), "released more than acquired");
}

/// Takes a slot of `sem` and keeps it until another holder is inside too
/// (or all `total` holders have entered: the last may be alone), recording
/// the most holders ever inside at once. The wait polls that condition
/// (with a deadline), so a correct semaphore of 2 always shows 2 inside.
#[multiproc::task]
fn hold_slot(sem: Semaphore, inside: Value<u32>, most: Value<u32>, entered: Value<u32>, total: u32) {
    let _g = sem.blocking_acquire().expect("acquire");
    let now = inside.blocking_update(|n| n + 1).expect("update");
    most.blocking_update(|m| m.max(now)).expect("update");
    entered.blocking_update(|n| n + 1).expect("update");
    let deadline = Instant::now() + Duration::from_secs(10);
    while inside.get() < 2 && entered.get() < total && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    inside.blocking_update(|n| n - 1).expect("update");
}

#[tokio::test]
async fn semaphore_admits_at_most_its_value_and_bounded_refuses_over_release() {
    let sem = Semaphore::new(2).expect("semaphore");
    let inside = Value::new(0u32).expect("value");
    let most = Value::new(0u32).expect("value");
    let entered = Value::new(0u32).expect("value");
    let mut ps = Vec::new();
    for _ in 0..5 {
        ps.push(start(hold_slot, (sem.clone(), inside.clone(), most.clone(), entered.clone(), 5)).await);
    }
    for p in &ps {
        assert_eq!(p.join().await.expect("join"), 0);
    }
    assert_eq!(most.get(), 2, "a semaphore of 2 admits two at once, never three");
    assert_eq!(sem.get_value(), 2);

    let bounded = BoundedSemaphore::new(1).expect("bounded");
    assert!(matches!(bounded.release(), Err(Error::TooManyReleases)));
    let g = bounded.acquire().await.expect("acquire");
    assert!(bounded.try_acquire().is_none());
    assert_eq!(bounded.get_value(), 0, "a failed try_acquire gives nothing back");
    assert!(bounded.acquire_timeout(Duration::from_millis(20)).await.expect("acquire").is_none());
    drop(g);
    assert_eq!(bounded.get_value(), 1);
}

#[multiproc::task]
fn negate(num: Value<f64>, arr: Array<i32>, text: multiproc::SharedString) {
    num.set(2.5);
    for i in 0..arr.len() {
        arr.set(i, -arr.get(i).expect("get")).expect("set");
    }
    text.blocking_set("changed by the child").expect("set");
}

#[tokio::test]
async fn values_arrays_and_strings_written_by_a_child_are_seen_by_the_parent() {
    let num = Value::new(0.0f64).expect("value");
    let arr = Array::from_slice(&(0..10).collect::<Vec<i32>>()).expect("array");
    let text = multiproc::SharedString::new(64, "Hello World").expect("string");
    let p = start(negate, (num.clone(), arr.clone(), text.clone())).await;
    assert_eq!(p.join().await.expect("join"), 0);
    assert_eq!(num.get(), 2.5);
    assert_eq!(arr.to_vec(), (0..10).map(|i| -i).collect::<Vec<i32>>());
    assert_eq!(text.get().await.expect("get"), "changed by the child");
    assert!(matches!(text.set(&"x".repeat(65)).await, Err(Error::InvalidArgument(_))));
    assert!(matches!(arr.get(10), Err(Error::InvalidArgument(_))));
    assert_eq!(Array::<u8>::zeroed(3).expect("array").to_vec(), vec![0, 0, 0], "arrays start zeroed");
    let raw = Value::new_raw(true).expect("raw");
    assert!(raw.get());
    assert!(raw.get_lock().is_err(), "a raw value has no lock");
    let b = Value::new(-5i8).expect("i8");
    assert_eq!(b.get(), -5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_condition_wait_leaves_the_lock_and_the_next_notify_alone() {
    let lock = Lock::new().expect("lock");
    let cond = Condition::with_lock(lock.clone()).expect("condition");
    let mut g = cond.acquire().await.expect("acquire");
    assert!(tokio::time::timeout(Duration::from_millis(20), g.wait()).await.is_err(), "nobody notified");
    // The cancelled wait left the lock released; someone else takes it.
    let other = lock.try_acquire().expect("the lock is free after a cancelled wait");
    assert!(matches!(g.wait().await, Err(Error::NotOwner)));
    drop(g);
    assert!(lock.is_locked(), "dropping the guard of a cancelled wait released another holder's lock");
    drop(other);
    // The cancelled waiter's slot is gone: the next notify(1) goes to a real
    // waiter, in another process.
    let waiting = Value::new(0u32).expect("value");
    let woken = Value::new(0u32).expect("value");
    let p = start(wait_to_be_notified, (cond.clone(), waiting.clone(), woken.clone())).await;
    until("the waiter", || waiting.get() == 1).await;
    cond.acquire().await.expect("acquire").notify(1).expect("notify");
    until("the waiter woken by notify(1)", || woken.get() == 1).await;
    assert_eq!(p.join().await.expect("join"), 0);
}
