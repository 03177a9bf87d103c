//! The chaos harness behind `cargo xtask chaos`: parties that use one
//! shared primitive in a tight loop are SIGKILLed at random moments and
//! replaced, and the survivors must keep making progress.
//!
//! `chaos SCENARIO [--kills N]` prints one JSON line:
//! `{"scenario": "lock", "kills": 1000, "stuck": 0, "owner_died": 12,
//! "duplicates": 0, "lost": 0, "deadlocks": 0, "errors": 0}`.
//!
//! - `stuck`: the parties made no progress for 10 s after a kill (the run
//!   then stops and reports, it does not hang).
//! - `owner_died`: `OwnerDied` errors seen by the parties (a lock taken
//!   over from a killed holder).
//! - `duplicates`: two holders inside a lock at once, or an item delivered
//!   twice where that is not allowed.
//! - `lost`: updates or items that vanished where the primitive promises
//!   they do not (for a plain queue get, an item taken by a consumer killed
//!   before it forwarded it is counted here: `get` is at-most-once).
//! - `deadlocks`: once every party is dead, the parent could not use the
//!   primitive within 10 s.
//! - `errors`: parties that exited on an unexpected error.
//!
//! Scenarios: lock, rlock, value, condition, semaphore, barrier, queue,
//! queue-leased.

use std::time::{Duration, Instant};

use multiproc::{Array, Barrier, Condition, Error, JoinableQueue, Lock, Process, Queue, RLock, Semaphore, Value};

const SCENARIOS: &[&str] = &["lock", "rlock", "value", "condition", "semaphore", "barrier", "queue", "queue-leased"];
/// No progress for this long is "stuck".
const STUCK_AFTER: Duration = Duration::from_secs(10);
/// Words per party slot in the shared counters.
const PROGRESS: usize = 0;
const OWNER_DIED: usize = 1;
const VIOLATIONS: usize = 2;
const WORDS: usize = 3;

/// Per-party counters in shared memory, one slot of [`WORDS`] per party
/// ever started.
type Counters = Array<u64>;

fn bump(c: &Counters, slot: usize, word: usize) {
    let at = slot * WORDS + word;
    if let Ok(v) = c.get(at) {
        let _ = c.set(at, v + 1);
    }
}

fn sum(c: &Counters, word: usize) -> u64 {
    (0..c.len() / WORDS).map(|s| c.get(s * WORDS + word).unwrap_or(0)).sum()
}

/// A few hundred nanoseconds of work inside a critical section, so kills
/// land there often.
fn work(n: u32) {
    for i in 0..n {
        std::hint::black_box(i);
    }
}

/// Checks mutual exclusion: `inside` names the holder; another live pid
/// there means two holders at once.
fn enter(inside: &Value<u32>, counters: &Counters, slot: usize) {
    let other = inside.get();
    if other != 0 && multiproc_sys::pidlock::process_alive(other) {
        bump(counters, slot, VIOLATIONS);
    }
    inside.set(std::process::id());
}

fn leave(inside: &Value<u32>, counters: &Counters, slot: usize) {
    if inside.get() != std::process::id() {
        bump(counters, slot, VIOLATIONS);
    }
    inside.set(0);
}

#[multiproc::task]
fn lock_party(lock: Lock, inside: Value<u32>, counters: Counters, slot: usize) {
    loop {
        match lock.blocking_acquire() {
            Ok(g) => {
                enter(&inside, &counters, slot);
                work(200);
                bump(&counters, slot, PROGRESS);
                leave(&inside, &counters, slot);
                drop(g);
            }
            Err(Error::OwnerDied { .. }) => bump(&counters, slot, OWNER_DIED),
            Err(_) => std::process::exit(3),
        }
    }
}

#[multiproc::task]
fn rlock_party(lock: RLock, inside: Value<u32>, counters: Counters, slot: usize) {
    loop {
        match lock.blocking_acquire() {
            Ok(outer) => {
                let inner = lock.blocking_acquire().unwrap_or_else(|_| std::process::exit(4));
                enter(&inside, &counters, slot);
                work(200);
                bump(&counters, slot, PROGRESS);
                leave(&inside, &counters, slot);
                drop(inner);
                drop(outer);
            }
            Err(Error::OwnerDied { .. }) => bump(&counters, slot, OWNER_DIED),
            Err(_) => std::process::exit(3),
        }
    }
}

/// Adds one to `total` under its lock, then counts the pass: a pass
/// counted is in `total` (a kill between the two leaves `total` ahead).
#[multiproc::task]
fn value_party(total: Value<u64>, counters: Counters, slot: usize) {
    loop {
        match total.blocking_update(|v| v + 1) {
            Ok(_) => bump(&counters, slot, PROGRESS),
            Err(Error::OwnerDied { .. }) => bump(&counters, slot, OWNER_DIED),
            Err(_) => std::process::exit(3),
        }
    }
}

/// Waits to be notified, forever.
#[multiproc::task]
fn condition_waiter(cond: Condition, counters: Counters, slot: usize) {
    loop {
        let mut g = match cond.blocking_acquire() {
            Ok(g) => g,
            Err(Error::OwnerDied { .. }) => {
                bump(&counters, slot, OWNER_DIED);
                continue;
            }
            Err(_) => std::process::exit(3),
        };
        match g.blocking_wait() {
            Ok(()) => bump(&counters, slot, PROGRESS),
            Err(Error::OwnerDied { .. }) => bump(&counters, slot, OWNER_DIED),
            Err(_) => std::process::exit(5),
        }
    }
}

/// Notifies one waiter at a time, forever (never killed: it is the
/// parent's thread).
fn condition_notifier(cond: &Condition, stop: &std::sync::atomic::AtomicBool) {
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if let Ok(g) = cond.blocking_acquire() {
            let _ = g.notify(1);
        }
        std::thread::yield_now();
    }
}

#[multiproc::task]
fn semaphore_party(sem: Semaphore, inside: Array<u32>, counters: Counters, slot: usize) {
    loop {
        match sem.blocking_acquire() {
            Ok(g) => {
                work(200);
                bump(&counters, slot, PROGRESS);
                let _ = &inside;
                drop(g);
            }
            Err(_) => std::process::exit(3),
        }
    }
}

#[multiproc::task]
fn barrier_party(barrier: Barrier, counters: Counters, slot: usize) {
    loop {
        match barrier.blocking_wait() {
            Ok(_) => bump(&counters, slot, PROGRESS),
            Err(Error::BrokenBarrier) => {
                let _ = barrier.reset();
            }
            Err(Error::OwnerDied { .. }) => bump(&counters, slot, OWNER_DIED),
            Err(_) => std::process::exit(3),
        }
    }
}

#[multiproc::task]
fn producer(q: Queue<u64>, counters: Counters, slot: usize) {
    for i in 0.. {
        q.blocking_put((slot as u64) << 32 | i).unwrap_or_else(|_| std::process::exit(3));
        bump(&counters, slot, PROGRESS);
    }
}

#[multiproc::task]
fn consumer(q: Queue<u64>, out: Queue<(u64, u32)>, counters: Counters, slot: usize) {
    loop {
        let v = q.blocking_get().unwrap_or_else(|_| std::process::exit(3));
        out.blocking_put((v, 1)).unwrap_or_else(|_| std::process::exit(3));
        bump(&counters, slot, PROGRESS);
    }
}

#[multiproc::task]
fn leased_producer(q: JoinableQueue<u64>, counters: Counters, slot: usize) {
    for i in 0.. {
        q.blocking_put((slot as u64) << 32 | i).unwrap_or_else(|_| std::process::exit(3));
        bump(&counters, slot, PROGRESS);
    }
}

#[multiproc::task]
fn leased_consumer(q: JoinableQueue<u64>, out: Queue<(u64, u32)>, counters: Counters, slot: usize) {
    loop {
        let item = q.blocking_get_leased().unwrap_or_else(|_| std::process::exit(3));
        out.blocking_put((*item, item.deliveries())).unwrap_or_else(|_| std::process::exit(3));
        item.ack().unwrap_or_else(|_| std::process::exit(6));
        bump(&counters, slot, PROGRESS);
    }
}

#[derive(Default)]
struct Report {
    kills: u64,
    stuck: u64,
    owner_died: u64,
    duplicates: u64,
    lost: u64,
    deadlocks: u64,
    errors: u64,
}

/// A scenario's parties and how to start one.
struct Run<'a> {
    counters: Counters,
    next_slot: usize,
    slots: usize,
    start: Box<dyn Fn(usize, usize) -> Process + 'a>,
    /// Party kinds: which kind the party in each position is.
    parties: Vec<(usize, Process)>,
    /// Kinds that may be killed (the others, if any, are never killed).
    killable: Vec<usize>,
    /// The counter that must advance: the progress of these kinds' slots.
    progress_of: Vec<usize>,
    kinds_by_slot: Vec<usize>,
    rng: u64,
    /// Runs after every kill, if set (a hook for scenarios that need to
    /// look at their state between kills).
    after_kill: Option<Box<dyn FnMut() + 'a>>,
}

impl Run<'_> {
    fn random(&mut self, n: u64) -> u64 {
        multiproc_suite::xorshift(&mut self.rng) % n.max(1)
    }

    async fn spawn(&mut self, kind: usize) {
        let slot = self.next_slot.min(self.slots - 1);
        self.next_slot += 1;
        self.kinds_by_slot.push(kind);
        let mut p = (self.start)(kind, slot);
        p.start().await.expect("start a party");
        self.parties.push((kind, p));
    }

    fn progress(&self) -> u64 {
        self.kinds_by_slot
            .iter()
            .enumerate()
            .filter(|(_, k)| self.progress_of.contains(k))
            .map(|(s, _)| self.counters.get(s.min(self.slots - 1) * WORDS + PROGRESS).unwrap_or(0))
            .sum()
    }

    /// Waits until progress passes `past`; `false` when stuck.
    async fn progressed(&self, past: u64) -> bool {
        let deadline = Instant::now() + STUCK_AFTER;
        while self.progress() <= past {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        true
    }

    /// Prints what each party is doing (each thread's kernel state, wait
    /// channel and syscall), for a stuck run.
    fn describe(&self) {
        for (kind, p) in &self.parties {
            let Some(pid) = p.pid() else { continue };
            eprintln!("stuck: party kind {kind} pid {pid}: {}", multiproc_suite::threads_of(pid));
        }
    }

    /// Kills a random killable party at random moments `kills` times,
    /// replacing each.
    async fn chaos(&mut self, kills: u64, spread: u64, report: &mut Report) {
        for _ in 0..kills {
            let target = self.progress() + 1 + self.random(spread);
            if !self.progressed(target).await {
                report.stuck += 1;
                self.describe();
                return;
            }
            let candidates: Vec<usize> =
                (0..self.parties.len()).filter(|&i| self.killable.contains(&self.parties[i].0)).collect();
            let i = candidates[self.random(candidates.len() as u64) as usize];
            let (kind, victim) = self.parties.swap_remove(i);
            victim.kill().expect("kill");
            match victim.join().await {
                Ok(-9) => report.kills += 1,
                _ => report.errors += 1,
            }
            self.spawn(kind).await;
            if let Some(f) = self.after_kill.as_mut() {
                f();
            }
        }
        let last = self.progress();
        if !self.progressed(last + 10).await {
            report.stuck += 1;
        }
    }

    async fn stop(&mut self, report: &mut Report) {
        for (_, p) in self.parties.drain(..) {
            let _ = p.kill();
            match p.join().await {
                Ok(-9) => {}
                _ => report.errors += 1,
            }
        }
        report.owner_died += sum(&self.counters, OWNER_DIED);
        report.duplicates += sum(&self.counters, VIOLATIONS);
    }
}

fn new_run<'a>(
    kills: u64,
    counters: Counters,
    killable: Vec<usize>,
    progress_of: Vec<usize>,
    start: impl Fn(usize, usize) -> Process + 'a,
) -> Run<'a> {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let slots = counters.len() / WORDS;
    let _ = kills;
    Run {
        counters,
        next_slot: 0,
        slots,
        start: Box::new(start),
        parties: Vec::new(),
        killable,
        progress_of,
        kinds_by_slot: Vec::new(),
        rng: t.as_nanos() as u64 | 1,
        after_kill: None,
    }
}

fn counters(kills: u64, parties: usize) -> Counters {
    Array::zeroed((kills as usize + parties + 1) * WORDS).expect("counters")
}

/// The parent takes the lock within 10 s (after at most one OwnerDied).
fn can_lock(acquire: impl Fn() -> multiproc::Result<bool>) -> bool {
    for _ in 0..2 {
        match acquire() {
            Ok(got) => return got,
            Err(Error::OwnerDied { .. }) => continue,
            Err(_) => return false,
        }
    }
    false
}

async fn lock_like(name: &str, kills: u64) -> Report {
    let mut report = Report::default();
    let c = counters(kills, 3);
    let inside = Value::new_raw(0u32).expect("value");
    let (lock, rlock) = (Lock::new().expect("lock"), RLock::new().expect("rlock"));
    let reentrant = name == "rlock";
    let mut run = new_run(kills, c.clone(), vec![0], vec![0], |_, slot| {
        if reentrant {
            Process::new(rlock_party, (rlock.clone(), inside.clone(), c.clone(), slot))
        } else {
            Process::new(lock_party, (lock.clone(), inside.clone(), c.clone(), slot))
        }
    });
    for _ in 0..3 {
        run.spawn(0).await;
    }
    run.chaos(kills, 300, &mut report).await;
    run.stop(&mut report).await;
    let (lock, rlock) = (lock.clone(), rlock.clone());
    let ok = tokio::task::spawn_blocking(move || {
        can_lock(|| {
            if reentrant {
                Ok(rlock.blocking_acquire_timeout(STUCK_AFTER)?.is_some())
            } else {
                Ok(lock.blocking_acquire_timeout(STUCK_AFTER)?.is_some())
            }
        })
    })
    .await
    .unwrap_or(false);
    report.deadlocks += u64::from(!ok);
    report
}

async fn value(kills: u64) -> Report {
    let mut report = Report::default();
    let c = counters(kills, 3);
    let total = Value::new(0u64).expect("value");
    let mut run = new_run(kills, c.clone(), vec![0], vec![0], |_, slot| {
        Process::new(value_party, (total.clone(), c.clone(), slot))
    });
    for _ in 0..3 {
        run.spawn(0).await;
    }
    run.chaos(kills, 300, &mut report).await;
    run.stop(&mut report).await;
    // Every counted pass is in the total (a kill between update and count
    // only makes the total larger).
    report.lost += sum(&c, PROGRESS).saturating_sub(total.get());
    let t = total.clone();
    let ok =
        tokio::task::spawn_blocking(move || can_lock(|| t.blocking_update(|v| v).map(|_| true))).await.unwrap_or(false);
    report.deadlocks += u64::from(!ok);
    report
}

async fn condition(kills: u64) -> Report {
    let mut report = Report::default();
    let c = counters(kills, 4);
    let cond = Condition::new().expect("condition");
    let mut run = new_run(kills, c.clone(), vec![0], vec![0], |_, slot| {
        Process::new(condition_waiter, (cond.clone(), c.clone(), slot))
    });
    for _ in 0..4 {
        run.spawn(0).await;
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let notifier = std::thread::spawn({
        let (cond, stop) = (cond.clone(), stop.clone());
        move || condition_notifier(&cond, &stop)
    });
    run.chaos(kills, 100, &mut report).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = notifier.join();
    run.stop(&mut report).await;
    let cond2 = cond.clone();
    let ok = tokio::task::spawn_blocking(move || {
        can_lock(|| {
            let mut g = cond2.blocking_acquire()?;
            g.blocking_wait_timeout(Duration::from_millis(1))?;
            Ok(true)
        })
    })
    .await
    .unwrap_or(false);
    report.deadlocks += u64::from(!ok);
    report
}

async fn semaphore(kills: u64) -> Report {
    let mut report = Report::default();
    let c = counters(kills, 4);
    let sem = Semaphore::new(2).expect("semaphore");
    let inside = Array::<u32>::zeroed(1).expect("array");
    let mut run = new_run(kills, c.clone(), vec![0], vec![0], |_, slot| {
        Process::new(semaphore_party, (sem.clone(), inside.clone(), c.clone(), slot))
    });
    for _ in 0..4 {
        run.spawn(0).await;
    }
    run.chaos(kills, 300, &mut report).await;
    run.stop(&mut report).await;
    let s = sem.clone();
    let units = tokio::task::spawn_blocking(move || {
        let mut held = Vec::new();
        while let Ok(Some(g)) = s.blocking_acquire_timeout(Duration::from_secs(if held.is_empty() { 10 } else { 1 })) {
            held.push(g);
        }
        held.len() as u64
    })
    .await
    .unwrap_or(0);
    report.deadlocks += u64::from(units == 0);
    report.lost += 2u64.saturating_sub(units);
    report
}

async fn barrier(kills: u64) -> Report {
    let mut report = Report::default();
    let c = counters(kills, 3);
    let barrier = Barrier::new(3).expect("barrier");
    let mut run = new_run(kills, c.clone(), vec![0], vec![0], |_, slot| {
        Process::new(barrier_party, (barrier.clone(), c.clone(), slot))
    });
    for _ in 0..3 {
        run.spawn(0).await;
    }
    run.chaos(kills, 30, &mut report).await;
    run.stop(&mut report).await;
    let b = barrier.clone();
    let ok = tokio::task::spawn_blocking(move || {
        b.reset().is_ok() && b.blocking_wait_timeout(Duration::from_millis(10)).is_err()
    })
    .await
    .unwrap_or(false);
    report.deadlocks += u64::from(!ok);
    report
}

async fn queue(kills: u64, leased: bool) -> Report {
    let mut report = Report::default();
    let c = counters(kills, 8);
    let plain = Queue::<u64>::with_maxsize(64).expect("queue");
    let joinable = JoinableQueue::<u64>::with_maxsize(64).expect("queue");
    // Read only at the end: room for every item a long run forwards (the
    // kernel allocates the pages as they are written).
    let out = Queue::<(u64, u32)>::builder().capacity_bytes(1 << 30).build().expect("queue");
    // Kind 0 consumers, kind 1 producers.
    let mut run = new_run(kills, c.clone(), vec![0, 1], vec![0], |kind, slot| match (kind, leased) {
        (0, false) => Process::new(consumer, (plain.clone(), out.clone(), c.clone(), slot)),
        (_, false) => Process::new(producer, (plain.clone(), c.clone(), slot)),
        (0, true) => Process::new(leased_consumer, (joinable.clone(), out.clone(), c.clone(), slot)),
        (_, true) => Process::new(leased_producer, (joinable.clone(), c.clone(), slot)),
    });
    for i in 0..8 {
        run.spawn(i % 2).await;
    }
    // What the consumers forwarded: item → the delivery counts it came with.
    let seen = std::rc::Rc::new(std::cell::RefCell::new(std::collections::HashMap::<u64, Vec<u32>>::new()));
    let drained = std::rc::Rc::new(std::cell::Cell::new(false));
    let drain = {
        let (out, seen, drained) = (out.clone(), seen.clone(), drained.clone());
        // At most what is queued now: the consumers keep forwarding while
        // this runs, and may be faster than it.
        move || {
            for _ in 0..out.qsize() {
                match out.get_nowait() {
                    Ok((v, d)) => seen.borrow_mut().entry(v).or_default().push(d),
                    Err(Error::Empty) => break,
                    Err(_) => {
                        drained.set(true);
                        break;
                    }
                }
            }
        }
    };
    run.chaos(kills, 400, &mut report).await;
    if report.stuck > 0 {
        eprintln!(
            "stuck: queue qsize {} empty {} full {}; leased queue qsize {} unfinished {}",
            plain.qsize(),
            plain.empty(),
            plain.full(),
            joinable.qsize(),
            joinable.unfinished_tasks()
        );
    }
    run.stop(&mut report).await;
    // What was produced: per producer, items 0..count (a kill between a put
    // and its count may add one more, uncounted).
    let produced: u64 = run
        .kinds_by_slot
        .iter()
        .enumerate()
        .filter(|(_, k)| **k == 1)
        .map(|(s, _)| c.get(s * WORDS).unwrap_or(0))
        .sum();
    drain();
    report.deadlocks += u64::from(drained.get());
    let mut seen = seen.take();
    // A duplicate: an item forwarded twice with the same delivery count (a
    // redelivery, with a higher count, is what a lease promises).
    for ds in seen.values_mut() {
        ds.sort_unstable();
        report.duplicates += ds.windows(2).filter(|w| w[0] == w[1]).count() as u64;
        if !leased && ds.len() > 1 {
            report.duplicates += ds.len() as u64 - 1;
        }
    }
    let mut left = 0u64;
    let deadline = Instant::now() + STUCK_AFTER;
    loop {
        let got = if leased {
            joinable.get_leased_timeout(Duration::from_millis(200)).await.and_then(|l| l.ack().map(|v| (v, 0)))
        } else {
            plain.get_timeout(Duration::from_millis(1)).await.map(|v| (v, 0))
        };
        match got {
            Ok((v, _)) => {
                if !seen.contains_key(&v) {
                    left += 1;
                }
            }
            Err(Error::Empty) => break,
            Err(_) => {
                report.deadlocks += 1;
                break;
            }
        }
        if Instant::now() >= deadline {
            report.deadlocks += 1;
            break;
        }
    }
    report.lost += produced.saturating_sub(seen.len() as u64 + left);
    // Every item put has now been acked (as a task_done): join returns.
    if leased && !matches!(tokio::time::timeout(STUCK_AFTER, joinable.join()).await, Ok(Ok(()))) {
        eprintln!("join: {} unfinished after every item was acked", joinable.unfinished_tasks());
        report.deadlocks += 1;
    }
    let ok = if leased {
        joinable.put_timeout(1, STUCK_AFTER).await.is_ok() && joinable.get_leased_timeout(STUCK_AFTER).await.is_ok()
    } else {
        plain.put_timeout(1, STUCK_AFTER).await.is_ok() && plain.get_timeout(STUCK_AFTER).await.is_ok()
    };
    report.deadlocks += u64::from(!ok);
    report
}

async fn scenario(name: &str, kills: u64) -> Report {
    match name {
        "lock" | "rlock" => lock_like(name, kills).await,
        "value" => value(kills).await,
        "condition" => condition(kills).await,
        "semaphore" => semaphore(kills).await,
        "barrier" => barrier(kills).await,
        "queue" => queue(kills, false).await,
        _ => queue(kills, true).await,
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut kills = 100u64;
    let mut names = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--kills" => kills = it.next().and_then(|n| n.parse().ok()).unwrap_or(kills),
            "--list" => {
                SCENARIOS.iter().for_each(|s| println!("{s}"));
                return;
            }
            s if SCENARIOS.contains(&s) => names.push(s.to_owned()),
            other => {
                eprintln!(
                    "unknown argument {other:?}; usage: chaos [SCENARIO…] [--kills N]; scenarios: {}",
                    SCENARIOS.join(", ")
                );
                std::process::exit(2);
            }
        }
    }
    if names.is_empty() {
        names = SCENARIOS.iter().map(|s| (*s).to_owned()).collect();
    }
    for name in names {
        let t = Instant::now();
        let r = scenario(&name, kills).await;
        println!(
            r#"{{"scenario": "{name}", "kills": {}, "stuck": {}, "owner_died": {}, "duplicates": {}, "lost": {}, "deadlocks": {}, "errors": {}, "seconds": {:.1}}}"#,
            r.kills,
            r.stuck,
            r.owner_died,
            r.duplicates,
            r.lost,
            r.deadlocks,
            r.errors,
            t.elapsed().as_secs_f64()
        );
    }
}
