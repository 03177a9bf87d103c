//! Seed: every type a `Manager()` hosts, used from child processes: workers
//! take jobs from a managed queue, count under a managed lock, wait at a
//! managed barrier, and signal through an event, a condition and a semaphore.
//! A user type registered with the manager keeps a tally.
//!
//! ```python
//! from multiprocessing import Process
//! from multiprocessing.managers import BaseManager, SyncManager
//!
//! class Tally:
//!     def __init__(self): self.n = 0
//!     def add(self, k): self.n += k; return self.n
//!
//! SyncManager.register("Tally", Tally)
//!
//! def worker(i, jobs, lock, rlock, sem, bsem, cond, event, barrier, total, slots, tally):
//!     event.wait()
//!     with sem, bsem:
//!         while True:
//!             job = jobs.get()
//!             if job is None: break
//!             with lock:
//!                 total.value += job
//!             with rlock:
//!                 with rlock:
//!                     slots[i] += 1
//!             tally.add(job)
//!     barrier.wait()
//!     with cond:
//!         cond.notify_all()
//!
//! with SyncManager() as m:
//!     jobs, lock, rlock = m.Queue(4), m.Lock(), m.RLock()
//!     sem, bsem, cond, event = m.Semaphore(2), m.BoundedSemaphore(2), m.Condition(), m.Event()
//!     barrier, total, slots, tally = m.Barrier(2), m.Value('i', 0), m.Array('i', [0, 0]), m.Tally()
//!     ps = [Process(target=worker, args=(i, jobs, lock, rlock, sem, bsem, cond, event, barrier,
//!                                        total, slots, tally)) for i in range(2)]
//!     for p in ps: p.start()
//!     event.set()
//!     for j in range(1, 11): jobs.put(j)
//!     for _ in ps: jobs.put(None)
//!     for p in ps: p.join()
//!     print("total", total.value, "jobs", sum(slots[:]), "tally", tally.add(0))
//! ```
//!
//! expect: total 55 jobs 10 tally 55

use multiproc::{
    ArrayProxy, BarrierProxy, ConditionProxy, EventProxy, LockProxy, Manager, Process, QueueProxy, RLockProxy,
    SemaphoreProxy, ValueProxy,
};
use serde::{Deserialize, Serialize};

/// `class Tally` registered with the manager.
#[derive(Serialize, Deserialize)]
struct Tally {
    n: u64,
}

#[multiproc::hosted]
impl Tally {
    fn add(&mut self, k: u64) -> u64 {
        self.n += k;
        self.n
    }
}

/// Everything a worker shares, sent as one argument.
#[derive(Clone, Serialize, Deserialize)]
struct Shared {
    jobs: QueueProxy<Option<u64>>,
    lock: LockProxy,
    rlock: RLockProxy,
    sem: SemaphoreProxy,
    bsem: SemaphoreProxy,
    cond: ConditionProxy,
    event: EventProxy,
    barrier: BarrierProxy,
    total: ValueProxy<u64>,
    slots: ArrayProxy<u64>,
    tally: TallyProxy,
}

#[multiproc::task]
fn worker(i: i64, s: Shared) {
    work(i, &s).expect("a worker's calls to the manager");
}

fn work(i: i64, s: &Shared) -> multiproc::Result<()> {
    s.event.blocking_wait()?;
    s.sem.blocking_acquire()?;
    s.bsem.blocking_acquire()?;
    while let Some(job) = s.jobs.blocking_get()? {
        s.lock.blocking_acquire()?;
        s.total.blocking_set(s.total.blocking_get()? + job)?;
        s.lock.blocking_release()?;
        s.rlock.blocking_acquire()?;
        s.rlock.blocking_acquire()?;
        s.slots.blocking_set(i, s.slots.blocking_get(i)? + 1)?;
        s.rlock.blocking_release()?;
        s.rlock.blocking_release()?;
        s.tally.blocking_add(job)?;
    }
    s.bsem.blocking_release()?;
    s.sem.blocking_release()?;
    s.barrier.blocking_wait()?;
    s.cond.blocking_acquire()?;
    s.cond.blocking_notify_all()?;
    s.cond.blocking_release()
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let m = Manager::start().await?;
    let s = Shared {
        jobs: m.queue(4).await?,
        lock: m.lock().await?,
        rlock: m.rlock().await?,
        sem: m.semaphore(2).await?,
        bsem: m.bounded_semaphore(2).await?,
        cond: m.condition().await?,
        event: m.event().await?,
        barrier: m.barrier(2).await?,
        total: m.value(0).await?,
        slots: m.array([0, 0]).await?,
        tally: m.hosted(Tally { n: 0 }).await?,
    };
    let mut ps = Vec::new();
    for i in 0..2 {
        let mut p = Process::new(worker, (i, s.clone()));
        p.start().await?;
        ps.push(p);
    }
    s.event.set().await?;
    for j in 1..=10 {
        s.jobs.put(Some(j)).await?;
    }
    for _ in &ps {
        s.jobs.put(None).await?;
    }
    for p in &ps {
        assert_eq!(p.join().await?, 0, "a worker failed");
    }
    let jobs: u64 = s.slots.to_vec().await?.iter().sum();
    println!("total {} jobs {jobs} tally {}", s.total.get().await?, s.tally.add(0).await?);
    m.shutdown().await
}
