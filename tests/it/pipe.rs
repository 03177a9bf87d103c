//! `Pipe`/`Connection`: messages between real processes. The whole suite
//! (`pipe_suite.rs`) runs twice: over the socket and over shared memory
//! (`PipeBuilder::shared_memory`); `shm.rs` adds what only the shared-memory
//! path has.

mod sockets {
    const SHM: bool = false;
    include!("pipe_suite.rs");
}

mod shared_memory {
    const SHM: bool = true;
    include!("pipe_suite.rs");
}

/// What only the shared-memory path has: a dead peer seen while waiting on
/// the ring, the send-side check, and waiting that costs no CPU when idle.
mod shm_path {
    use std::time::{Duration, Instant};

    use multiproc::{Connection, Error, Pipe, Process, StartMethod};

    use crate::common::cpu_ticks;
    use crate::per_method;

    fn shm_pipe() -> (Connection, Connection) {
        Pipe::builder().shared_memory(true).build().expect("pipe")
    }

    /// Says whether its end arrived as a shared-memory one, then echoes
    /// until the other end is gone.
    #[multiproc::task]
    fn report_then_echo(mut conn: Connection) {
        conn.blocking_send(&conn.is_shared_memory()).expect("send");
        while let Ok(v) = conn.blocking_recv::<u64>() {
            conn.blocking_send(&v).expect("echo");
        }
    }

    /// Says it is ready, then waits on the ring for a message that never
    /// comes (until it is killed).
    #[multiproc::task]
    fn wait_forever(mut conn: Connection) {
        conn.blocking_send("ready").expect("send");
        let _ = conn.blocking_recv::<u64>();
    }

    per_method!(an_end_sent_to_a_child_stays_on_shared_memory, a_peer_killed_while_we_wait_reads_as_eof);

    async fn an_end_sent_to_a_child_stays_on_shared_memory(m: StartMethod) {
        let (mut ours, theirs) = shm_pipe();
        assert!(ours.is_shared_memory() && theirs.is_shared_memory());
        let mut p = Process::new(report_then_echo, (theirs,)).start_method(m);
        p.start().await.expect("start");
        assert!(ours.recv::<bool>().await.expect("recv"), "the child's end maps the same memory");
        for i in 0..1000u64 {
            ours.send(&i).await.expect("send");
            assert_eq!(ours.recv::<u64>().await.expect("echo"), i);
        }
        ours.close();
        assert_eq!(p.join().await.expect("join"), 0, "the child saw the end of the stream");
    }

    async fn a_peer_killed_while_we_wait_reads_as_eof(m: StartMethod) {
        let (mut ours, theirs) = shm_pipe();
        let mut p = Process::new(wait_forever, (theirs,)).start_method(m);
        p.start().await.expect("start");
        assert_eq!(ours.recv::<String>().await.expect("recv"), "ready");
        // Our recv waits on the ring (spinning, then asleep) while the child
        // is killed: the socket's end wakes it.
        let waiting = tokio::spawn(async move { (ours.recv::<u64>().await, ours) });
        tokio::task::yield_now().await;
        p.kill().expect("kill");
        let (r, mut ours) = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the wait ended when the peer died")
            .expect("task");
        assert!(matches!(r, Err(Error::Eof)), "{r:?}");
        assert!(p.join().await.is_ok());
        // A send to the dead end fails as on a socket (the check runs at
        // most every millisecond, so a few sends may still be taken).
        let started = Instant::now();
        let err = loop {
            match ours.send(&1u64).await {
                Err(e) => break e,
                Ok(()) => assert!(started.elapsed() < Duration::from_secs(5), "sends to a dead end kept succeeding"),
            }
        };
        assert!(matches!(&err, Error::Io(e) if e.kind() == std::io::ErrorKind::BrokenPipe), "{err:?}");
    }

    #[test]
    fn a_blocking_wait_sees_the_other_end_close() {
        let (mut a, b) = shm_pipe();
        let t = std::thread::spawn(move || a.blocking_recv::<u64>());
        drop(b);
        assert!(matches!(t.join().expect("thread"), Err(Error::Eof)));
    }

    /// 16 pairs on this 2-core machine, both ends of each in a child of its
    /// own (one waiting blocking, one async), every one waiting on its ring
    /// for a message that never comes. Once they are asleep, a second costs
    /// (next to) no CPU: nobody spins while idle. (Children only: this test
    /// binary runs other tests at the same time.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_oversubscribed_set_burns_no_cpu() {
        let mut procs = Vec::new();
        let mut controls = Vec::new();
        for _ in 0..16 {
            let (x, y) = shm_pipe();
            // Each child says "ready" through the pair itself, then waits.
            let (mut cx, tx) = Pipe::new().expect("control");
            let (mut cy, ty) = Pipe::new().expect("control");
            let mut a = Process::new(relay_ready_then_wait, (x, tx));
            let mut b = Process::new(relay_ready_then_wait_async, (y, ty));
            a.start().await.expect("start");
            b.start().await.expect("start");
            assert_eq!(cx.recv::<String>().await.expect("ready"), "ready");
            assert_eq!(cy.recv::<String>().await.expect("ready"), "ready");
            controls.extend([cx, cy]);
            procs.extend([a, b]);
        }
        let pids: Vec<u32> = procs.iter().map(|p| p.pid().expect("started")).collect();
        let before: Vec<Option<u64>> = pids.iter().map(|&p| cpu_ticks(p)).collect();
        assert!(before.iter().all(Option::is_some), "every child is waiting when the second starts");
        let t = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after: Vec<Option<u64>> = pids.iter().map(|&p| cpu_ticks(p)).collect();
        let window = t.elapsed();
        let hz = 100; // USER_HZ on Linux
        let ticks: u64 = before.iter().zip(&after).map(|(b, a)| a.unwrap_or(0).saturating_sub(b.unwrap_or(0))).sum();
        let used_ms = ticks * 1000 / hz;
        // 32 spinning waiters would take the whole machine (2 CPUs: 2000 ms
        // a second); asleep they take nothing (each spins at most 100 µs
        // when it starts to wait, and only while a core is idle).
        assert!(used_ms <= 50, "{used_ms} ms of CPU in {window:?} of idle waiting");
        // (Every child should still be waiting; in the whole suite another
        // test's fault injection has been seen to end some, which stops
        // their clocks and cannot hide a spinner among the others.)
        for p in procs.iter().filter(|p| !p.is_alive()) {
            eprintln!("child {:?} stopped waiting early: exit code {:?}", p.pid(), p.exitcode());
        }
        let alive = procs.iter().filter(|p| p.is_alive()).count();
        assert!(alive >= procs.len() / 2, "only {alive} of {} children still waiting", procs.len());
        for p in &procs {
            let _ = p.kill();
        }
        for p in &procs {
            let _ = p.join().await;
        }
    }

    /// Tells `control` it is about to wait, then waits on `conn`'s ring.
    #[multiproc::task]
    fn relay_ready_then_wait(mut conn: Connection, mut control: Connection) {
        control.blocking_send("ready").expect("send");
        let _ = conn.blocking_recv::<u64>();
    }

    /// [`relay_ready_then_wait`], async.
    #[multiproc::task]
    async fn relay_ready_then_wait_async(mut conn: Connection, mut control: Connection) {
        control.send("ready").await.expect("send");
        let _ = conn.recv::<u64>().await;
    }
}
