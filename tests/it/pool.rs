//! `Pool`: the whole suite (`pool_suite.rs`) runs twice: calls over the
//! workers' sockets, and over a shared-memory link per worker
//! (`PoolBuilder::shared_memory`, issue 13); `shm_path` adds what only the
//! shared-memory path has.

mod sockets {
    const SHM: bool = false;
    include!("pool_suite.rs");
}

mod shared_memory {
    const SHM: bool = true;
    include!("pool_suite.rs");
}

/// What only the shared-memory path has: the workers really take it, a
/// worker killed while the parent waits on its link, and waiting that
/// costs no CPU when idle.
mod shm_path {
    use std::io::Read;
    use std::time::Duration;

    use multiproc::{Error, ExitStatus, PassFd, Pool, StartMethod};

    use crate::common::cpu_ticks;
    use crate::per_method;

    async fn shm_pool(method: StartMethod, n: usize) -> Pool {
        Pool::builder().processes(n).start_method(method).shared_memory(true).build().await.expect("pool")
    }

    #[multiproc::task]
    fn on_shared_memory() -> bool {
        multiproc::__private::pool_worker_on_shared_memory()
    }

    #[multiproc::task]
    fn on_shared_memory_item(_i: u32) -> bool {
        multiproc::__private::pool_worker_on_shared_memory()
    }

    #[multiproc::task]
    fn square(x: u64) -> u64 {
        x * x
    }

    /// Says it started (a byte on `fd`), then runs until killed.
    #[multiproc::task]
    fn started_then_forever(fd: PassFd) {
        nix::unistd::write(fd.borrow(), &[1]).expect("write");
        loop {
            std::thread::park();
        }
    }

    per_method!(
        workers_take_the_link_and_sockets_stay_the_default,
        a_worker_killed_while_the_parent_waits_on_the_link_fails_exactly_its_call,
    );

    async fn workers_take_the_link_and_sockets_stay_the_default(m: StartMethod) {
        let pool = shm_pool(m, 2).await;
        assert!(pool.map(on_shared_memory_item, 0..8).await.expect("map").into_iter().all(|r| r.expect("item")));
        // Big chunks stream through the 512 KiB link both ways.
        let out = pool.map(square, 0..200_000u64).chunksize(100_000).await.expect("map");
        assert!(out.into_iter().enumerate().all(|(i, r)| r.expect("item") == (i as u64) * (i as u64)));
        let plain = Pool::builder().processes(1).start_method(m).shared_memory(false).build().await.expect("pool");
        assert!(!plain.apply(on_shared_memory, ()).await.expect("apply"));
    }

    async fn a_worker_killed_while_the_parent_waits_on_the_link_fails_exactly_its_call(m: StartMethod) {
        let pool = shm_pool(m, 1).await;
        let (r, w) = nix::unistd::pipe().expect("pipe");
        let mut r = std::fs::File::from(r);
        let victim = pool.pids()[0];
        let doomed = pool.apply_async(started_then_forever, (PassFd(w),));
        // Queued behind it, never started on the victim: it must run on the
        // replacement.
        let after = pool.apply_async(square, (9,));
        let mut byte = [0u8; 1];
        tokio::task::spawn_blocking(move || r.read_exact(&mut byte).map(|()| byte))
            .await
            .expect("join")
            .expect("the call started");
        // The parent's owner now waits on the link (spun out, asleep on the
        // doorbell): only the socket and the exit report can tell it.
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim as i32), nix::sys::signal::Signal::SIGKILL)
            .expect("kill");
        match tokio::time::timeout(Duration::from_secs(20), doomed).await.expect("no hang") {
            Err(Error::WorkerLost { pid, status }) => {
                assert_eq!(pid, victim);
                assert_eq!(status, ExitStatus::Signal(9));
            }
            other => panic!("expected WorkerLost, got {other:?}"),
        }
        assert_eq!(after.await.expect("the queued call ran on the replacement"), 81);
        assert!(pool.apply(on_shared_memory, ()).await.expect("apply"), "the replacement has a link too");
        assert_eq!(pool.stats().workers_replaced, 1);
    }

    /// 16 workers on this 2-core machine, every one of them warmed up on
    /// its link (spin budgets trained on quick replies), then idle for a
    /// second: spinning waiters would burn a core each; sleeping ones cost
    /// nothing. The bound (50 ms over 1 s, 5 % of one core, for all 16) is
    /// generous for sleepers and far below one spinning worker.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_oversubscribed_pool_burns_no_cpu() {
        let pool = shm_pool(StartMethod::Forkserver, 16).await;
        for _ in 0..5 {
            pool.map(square, 0..2_000u64).chunksize(1).await.expect("warm-up");
        }
        let pids = pool.pids();
        assert_eq!(pids.len(), 16);
        let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as u64;
        let before: Vec<u64> = pids.iter().map(|&p| cpu_ticks(p).expect("a worker's clock")).collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after: Vec<u64> = pids.iter().map(|&p| cpu_ticks(p).expect("a worker's clock")).collect();
        let used: u64 = after.iter().zip(&before).map(|(a, b)| a - b).sum();
        let ms = used * 1000 / tick;
        assert!(ms <= 50, "16 idle workers used {ms} ms of CPU in 1 s");
        // Still serving after the idle second.
        assert_eq!(pool.apply(square, (12,)).await.expect("apply"), 144);
    }
}

/// A large map encodes its items on the caller's thread: the runtime's
/// other tasks must not stall meanwhile.
mod runtime_threads {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use multiproc::Pool;

    #[multiproc::task]
    fn len(s: String) -> usize {
        s.len()
    }

    /// One runtime worker thread runs both a ticker and the task that
    /// submits a 300,000-item map. Had the encoding run on that thread as
    /// it is, the ticker could not tick until `map_async` returned.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_large_map_does_not_stall_the_other_tasks_of_its_worker() {
        let pool = Pool::new(1).await.expect("pool");
        let (ticks, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let ticker = tokio::spawn({
            let (ticks, stop) = (ticks.clone(), stop.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    ticks.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            }
        });
        // The ticker has run: the worker thread is shared from here on.
        while ticks.load(Ordering::Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
        let items: Vec<String> = (0..300_000).map(|i| format!("item number {i:>24}")).collect();
        let submitter = tokio::spawn({
            let (pool, ticks) = (pool.clone(), ticks.clone());
            async move {
                let before = ticks.load(Ordering::Relaxed);
                let result = pool.map_async(len, items);
                let during = ticks.load(Ordering::Relaxed) - before;
                (result.await, during)
            }
        });
        let (results, during) = submitter.await.expect("submitter");
        stop.store(true, Ordering::Relaxed);
        ticker.await.expect("ticker");
        let results = results.expect("map");
        assert_eq!(results.len(), 300_000);
        assert!(results.iter().all(|r| matches!(r, Ok(36))), "{:?}", results.get(0));
        assert!(during > 0, "the ticker never ran while the map was encoded");
    }
}
