//! `Supervisor`: strategies, restart types, intensity, back-off, the
//! heartbeat watchdog, recycling, nesting, and the orderly shutdown (stop
//! request, SIGTERM, SIGKILL), with real processes. Timings are checked as
//! lower bounds from the supervisor's own event timestamps.

use std::time::Duration;

use multiproc::{
    ChildSpec, Error, Event, ExitCause, ExitStatus, GroupSignals, Pool, RecycleReason, Restart, StartMethod, Strategy,
    Supervisor, SupervisorEvent,
};
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::common::{Watch, pid_alive};

/// Runs until asked to stop, then exits 0.
#[multiproc::task]
fn until_stopped() {
    while !multiproc::stop_requested() {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The same, waiting asynchronously.
#[multiproc::task]
async fn until_stopped_async() {
    multiproc::stopped().await;
}

#[multiproc::task]
fn exit_with(code: i32) {
    std::process::exit(code)
}

/// Never looks at the stop request (SIGTERM ends it).
#[multiproc::task]
fn deaf() {
    loop {
        std::thread::park();
    }
}

/// Ignores the stop request and SIGTERM (only SIGKILL ends it).
#[multiproc::task]
async fn stubborn() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("listen for SIGTERM");
    loop {
        term.recv().await;
    }
}

/// Beats `beats` times, 20 ms apart, then hangs without beating.
#[multiproc::task]
fn beat_then_hang(beats: u32) {
    for _ in 0..beats {
        multiproc::heartbeat();
        std::thread::sleep(Duration::from_millis(20));
    }
    loop {
        std::thread::park();
    }
}

/// The first run (marker file absent) asks to be recycled once `go` is set
/// (the test listens by then); every run then waits for its stop request.
#[multiproc::task]
fn recycle_once(marker: String, go: multiproc::Event) {
    if std::fs::OpenOptions::new().write(true).create_new(true).open(&marker).is_ok() {
        go.blocking_wait().expect("wait for the test to listen");
        multiproc::request_recycle();
    }
    while !multiproc::stop_requested() {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The first run (marker file absent) grows its RSS by 64 MiB; every run
/// then waits for its stop request.
#[multiproc::task]
fn grow_once(marker: String) -> u8 {
    let mut held = Vec::new();
    if std::fs::OpenOptions::new().write(true).create_new(true).open(&marker).is_ok() {
        held = vec![1u8; 64 << 20];
    }
    while !multiproc::stop_requested() {
        std::thread::sleep(Duration::from_millis(5));
    }
    held.last().copied().unwrap_or(0)
}

#[multiproc::task]
fn square(x: u64) -> u64 {
    x * x
}

const WAIT: Duration = Duration::from_secs(30);

/// The next event that `pick` accepts (others are skipped).
async fn next_event<T>(
    events: &mut broadcast::Receiver<SupervisorEvent>,
    mut pick: impl FnMut(&SupervisorEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            let e = events.recv().await.expect("the supervisor is running");
            if let Some(t) = pick(&e) {
                return t;
            }
        }
    })
    .await
    .expect("the event came")
}

fn started(name: &str) -> impl FnMut(&SupervisorEvent) -> Option<(Option<u32>, Instant)> + '_ {
    move |e| match e {
        SupervisorEvent::Started { child, pid, at, .. } if child == name => Some((*pid, *at)),
        _ => None,
    }
}

/// The first exit of each of `names`, in whatever order they come; their
/// causes in the order of `names`.
async fn exits_of(events: &mut broadcast::Receiver<SupervisorEvent>, names: &[&str]) -> Vec<ExitCause> {
    let mut causes: Vec<Option<ExitCause>> = vec![None; names.len()];
    while causes.iter().any(Option::is_none) {
        let (i, cause) = next_event(events, |e| match e {
            SupervisorEvent::Exited { child, cause, .. } => {
                names.iter().position(|n| n == child).filter(|&i| causes[i].is_none()).map(|i| (i, cause.clone()))
            }
            _ => None,
        })
        .await;
        causes[i] = Some(cause);
    }
    causes.into_iter().flatten().collect()
}

fn exited(name: &str) -> impl FnMut(&SupervisorEvent) -> Option<(ExitCause, Instant)> + '_ {
    move |e| match e {
        SupervisorEvent::Exited { child, cause, at, .. } if child == name => Some((cause.clone(), *at)),
        _ => None,
    }
}

async fn pids(sup: &Supervisor) -> Vec<u32> {
    sup.stats().await.expect("stats").children.iter().map(|c| c.pid.expect("a process child runs")).collect()
}

fn kill(pid: u32) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL)
        .expect("SIGKILL a child");
}

async fn three(strategy: Strategy) -> Supervisor {
    Supervisor::builder()
        .strategy(strategy)
        .backoff(Duration::from_millis(1), Duration::from_millis(10))
        .child(ChildSpec::task("a", until_stopped, ()))
        .child(ChildSpec::task("b", until_stopped, ()))
        .child(ChildSpec::task("c", until_stopped, ()))
        .start()
        .await
        .expect("the supervisor starts")
}

/// Each watched child exits within 5 s (watches opened while they ran).
async fn assert_all_gone(children: &[Watch]) {
    for w in children {
        w.assert_exits(Duration::from_secs(5), "(a child) outlived its supervisor").await;
    }
}

/// Kills `b` of a, b, c and returns the pids before and after, and the
/// order of the stops and starts that followed.
async fn kill_b(strategy: Strategy, restarted: &[&str]) -> (Vec<u32>, Vec<u32>, Vec<String>) {
    let sup = three(strategy).await;
    let before = pids(&sup).await;
    let mut events = sup.subscribe();
    kill(before[1]);
    let mut order = Vec::new();
    let mut to_start: Vec<&str> = restarted.to_vec();
    while !to_start.is_empty() {
        let e = tokio::time::timeout(WAIT, events.recv()).await.expect("events come").expect("running");
        match e {
            SupervisorEvent::Started { child, .. } => {
                to_start.retain(|n| *n != child);
                order.push(format!("start {child}"));
            }
            SupervisorEvent::Exited { child, .. } => order.push(format!("exit {child}")),
            _ => {}
        }
    }
    let after = pids(&sup).await;
    let watched = Watch::all(&after);
    sup.shutdown(Duration::from_secs(5)).await.expect("shutdown");
    assert_all_gone(&watched).await;
    (before, after, order)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_one_restarts_only_the_dead_child() {
    let (before, after, order) = kill_b(Strategy::OneForOne, &["b"]).await;
    assert_eq!(order, ["exit b", "start b"]);
    assert_eq!((before[0], before[2]), (after[0], after[2]), "a and c untouched");
    assert_ne!(before[1], after[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_all_restarts_every_child() {
    let (before, after, order) = kill_b(Strategy::OneForAll, &["a", "b", "c"]).await;
    // b died; c then a are stopped (reverse order); all start in order.
    assert_eq!(order, ["exit b", "exit c", "exit a", "start a", "start b", "start c"]);
    for i in 0..3 {
        assert_ne!(before[i], after[i], "child {i} restarted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_for_one_restarts_the_dead_child_and_later_ones() {
    let (before, after, order) = kill_b(Strategy::RestForOne, &["b", "c"]).await;
    assert_eq!(order, ["exit b", "exit c", "start b", "start c"]);
    assert_eq!(before[0], after[0], "a untouched");
    assert_ne!(before[1], after[1]);
    assert_ne!(before[2], after[2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intensity_exceeded_stops_children_and_fails() {
    let sup = Supervisor::builder()
        .name("flaky")
        .intensity(3, Duration::from_secs(60))
        .backoff(Duration::from_millis(1), Duration::from_millis(1))
        .child(ChildSpec::task("steady", until_stopped, ()))
        .child(ChildSpec::task("crasher", exit_with, (3,)))
        .start()
        .await
        .expect("start");
    let steady = Watch::all(&[sup.stats().await.expect("stats").children[0].pid.expect("pid")]);
    match tokio::time::timeout(WAIT, sup.wait()).await.expect("it gives up") {
        Err(Error::RestartIntensity(limit)) => assert_eq!((limit.name.as_str(), limit.max), ("flaky", 3)),
        other => panic!("expected RestartIntensity, got {other:?}"),
    }
    assert_all_gone(&steady).await;
    assert!(matches!(sup.stats().await, Err(Error::Closed(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_doubles_with_jitter_between_restarts() {
    let (min, max) = (Duration::from_millis(80), Duration::from_millis(320));
    let sup = Supervisor::builder()
        .intensity(100, Duration::from_secs(60))
        .backoff(min, max)
        .child(ChildSpec::task("crasher", exit_with, (1,)))
        .start()
        .await
        .expect("start");
    let mut events = sup.subscribe();
    for k in 0..5u32 {
        let (cause, exit_at) = next_event(&mut events, exited("crasher")).await;
        assert_eq!(cause, ExitCause::Exited(ExitStatus::Code(1)));
        let (_, start_at) = next_event(&mut events, started("crasher")).await;
        let full = (min * 2u32.pow(k)).min(max);
        let gap = start_at - exit_at;
        assert!(gap >= full / 2, "restart {k}: waited {gap:?}, at least {:?} expected", full / 2);
    }
    sup.shutdown(Duration::from_secs(5)).await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_heartbeat_kills_and_restarts() {
    let timeout = Duration::from_millis(300);
    let sup = Supervisor::builder()
        .child(ChildSpec::task("beater", beat_then_hang, (5,)).heartbeat(timeout))
        .start()
        .await
        .expect("start");
    let mut events = sup.subscribe();
    let first = pids(&sup).await[0];
    let since = Instant::now();
    let (cause, at) = next_event(&mut events, exited("beater")).await;
    assert_eq!(cause, ExitCause::HeartbeatMissed);
    // Five beats 20 ms apart, then the full timeout without one.
    assert!(at - since >= timeout, "killed after {:?}", at - since);
    let (pid, _) = next_event(&mut events, started("beater")).await;
    assert_ne!(pid, Some(first));
    assert!(!pid_alive(first));
    assert_eq!(sup.stats().await.expect("stats").restarts, 1);
    sup.shutdown(Duration::from_secs(5)).await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_in_reverse_order_with_grace() {
    let grace = Duration::from_millis(600);
    let sup = Supervisor::builder()
        .child(ChildSpec::task("polite", until_stopped, ()))
        .child(ChildSpec::task("async", until_stopped_async, ()))
        .child(ChildSpec::task("deaf", deaf, ()).shutdown_grace(grace))
        // It listens for SIGTERM itself: not shielded (a shielded child dies
        // at its supervisor's SIGTERM whoever else listens).
        .child(ChildSpec::task("stubborn", stubborn, ()).shutdown_grace(grace).group_signals(GroupSignals::Default))
        .start()
        .await
        .expect("start");
    let all = Watch::all(&pids(&sup).await);
    let mut events = sup.subscribe();
    let t0 = Instant::now();
    sup.shutdown(Duration::from_secs(10)).await.expect("shutdown");
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let SupervisorEvent::Exited { child, cause, at, .. } = e {
            seen.push((child, cause, at - t0));
        }
    }
    let names: Vec<&str> = seen.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ["stubborn", "deaf", "async", "polite"]);
    let stopped = |code: ExitStatus| ExitCause::Stopped { status: Some(code) };
    assert_eq!(seen[0].1, stopped(ExitStatus::Signal(9)), "SIGKILL at the end of the grace");
    assert!(seen[0].2 >= grace, "{:?}", seen[0].2);
    assert_eq!(seen[1].1, stopped(ExitStatus::Signal(15)), "SIGTERM after half the grace");
    assert!(seen[1].2 - seen[0].2 >= grace / 2, "{:?}", seen[1].2 - seen[0].2);
    assert_eq!(seen[2].1, stopped(ExitStatus::Code(0)), "the async stop token");
    assert_eq!(seen[3].1, stopped(ExitStatus::Code(0)), "the stop token");
    assert_all_gone(&all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_types_and_dynamic_children() {
    let sup = Supervisor::builder().start().await.expect("an empty supervisor");
    let mut events = sup.subscribe();
    sup.add_child(ChildSpec::task("done", exit_with, (0,)).restart(Restart::Transient)).await.expect("add");
    sup.add_child(ChildSpec::task("once", exit_with, (5,)).restart(Restart::Temporary)).await.expect("add");
    sup.add_child(ChildSpec::task("keep", until_stopped, ())).await.expect("add");
    assert!(matches!(sup.add_child(ChildSpec::task("keep", until_stopped, ())).await, Err(Error::InvalidArgument(_))));
    exits_of(&mut events, &["done", "once"]).await;
    let stats = sup.stats().await.expect("stats");
    let names: Vec<&str> = stats.children.iter().map(|c| c.name.as_str()).collect();
    // A transient child that exited 0 stays, not running; a temporary one is gone.
    assert_eq!(names, ["done", "keep"]);
    assert!(!stats.children[0].running);
    assert_eq!(stats.restarts, 0);
    let keep = Watch::all(&[stats.children[1].pid.expect("pid")]);
    sup.remove_child("keep").await.expect("remove");
    assert_all_gone(&keep).await;
    assert!(matches!(sup.remove_child("keep").await, Err(Error::NoSuchChild(_))));
    sup.shutdown(Duration::from_secs(5)).await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recycling_by_request_and_by_age() {
    let marker = std::env::temp_dir().join(format!("multiproc-recycle-{}", std::process::id()));
    let marker = marker.to_string_lossy().into_owned();
    let _ = std::fs::remove_file(&marker);
    let go = multiproc::Event::new().expect("event");
    let sup = Supervisor::builder()
        .child(ChildSpec::task("asks", recycle_once, (marker.clone(), go.clone())))
        .child(ChildSpec::task("ages", until_stopped, ()).max_age(Duration::from_millis(300)))
        .start()
        .await
        .expect("start");
    // Subscribed before the request can be made (an event sent before a
    // subscription is not replayed); `ages` recycles every 300 ms anyway.
    let mut events = sup.subscribe();
    go.set();
    let causes = exits_of(&mut events, &["asks", "ages"]).await;
    assert_eq!(causes[0], ExitCause::Recycled(RecycleReason::Requested));
    assert_eq!(causes[1], ExitCause::Recycled(RecycleReason::Age));
    next_event(&mut events, started("ages")).await;
    let stats = sup.stats().await.expect("stats");
    assert_eq!(stats.restarts, 0, "recycles are not restarts");
    assert!(stats.recycles >= 2);
    sup.shutdown(Duration::from_secs(5)).await.expect("shutdown");
    std::fs::remove_file(&marker).expect("the first run left its marker");
}

/// A child whose RSS passes its `max_memory` is stopped in order and
/// started afresh; that is a recycle, not a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recycling_by_memory() {
    let marker = std::env::temp_dir().join(format!("multiproc-grow-{}", std::process::id()));
    let marker = marker.to_string_lossy().into_owned();
    let _ = std::fs::remove_file(&marker);
    let sup = Supervisor::builder()
        .child(ChildSpec::task("grows", grow_once, (marker.clone(),)).max_memory(48 << 20))
        .start()
        .await
        .expect("start");
    let mut events = sup.subscribe();
    let (cause, _) = next_event(&mut events, exited("grows")).await;
    assert_eq!(cause, ExitCause::Recycled(RecycleReason::Memory));
    next_event(&mut events, started("grows")).await;
    let stats = sup.stats().await.expect("stats");
    assert_eq!((stats.restarts, stats.recycles), (0, 1));
    sup.shutdown(Duration::from_secs(5)).await.expect("shutdown");
    std::fs::remove_file(&marker).expect("the first run left its marker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_supervisor_and_pool() {
    let outer = Supervisor::builder()
        .name("outer")
        .child(ChildSpec::pool("pool", || Pool::new(2)))
        .child(ChildSpec::supervisor("inner", || {
            Supervisor::builder().name("inner").child(ChildSpec::task("x", until_stopped, ())).start()
        }))
        .start()
        .await
        .expect("start");
    let pool = outer.pool("pool").await.expect("the pool runs");
    assert_eq!(pool.apply(square, (12,)).await.expect("apply"), 144);
    let inner = outer.supervisor("inner").await.expect("the inner supervisor runs");
    let mut inner_events = inner.subscribe();
    let x = pids(&inner).await[0];
    kill(x);
    let (pid, _) = next_event(&mut inner_events, started("x")).await;
    let x2 = pid.expect("a process");
    assert_ne!(x2, x);
    let x2_watch = Watch::all(&[x2]);
    let stats = outer.stats().await.expect("stats");
    assert_eq!(stats.restarts, 0, "the inner supervisor handled it");
    let workers = Watch::all(&pool.pids());
    drop(pool);
    outer.shutdown(Duration::from_secs(5)).await.expect("shutdown");
    assert_all_gone(&workers).await;
    assert_all_gone(&x2_watch).await;
    assert!(inner.wait().await.is_ok(), "the inner supervisor was shut down, not failed");
}

/// Echoes numbers from `inbox` to `outbox` until asked to stop.
#[multiproc::task]
fn echo_until_stopped(inbox: multiproc::Queue<u32>, outbox: multiproc::Queue<u32>) {
    while !multiproc::stop_requested() {
        if let Ok(v) = inbox.blocking_get_timeout(Duration::from_millis(10)) {
            outbox.blocking_put(v).expect("put");
        }
    }
}

/// A group SIGTERM or Ctrl-C (here sent straight to the child's pid by a
/// process that is not its parent, as a group signal would be) does not
/// end a supervised child behind its supervisor's back: it still serves
/// afterwards, was never restarted, and stops in order at `shutdown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervised_children_outlive_group_signals() {
    let (inbox, outbox) = (multiproc::Queue::new().expect("queue"), multiproc::Queue::new().expect("queue"));
    let sup = Supervisor::builder()
        .child(ChildSpec::task("echo", echo_until_stopped, (inbox.clone(), outbox.clone())))
        .start()
        .await
        .expect("start");
    let mut events = sup.subscribe();
    let pid = pids(&sup).await[0];
    let watch = Watch::all(&[pid]);
    for sig in [nix::sys::signal::Signal::SIGTERM, nix::sys::signal::Signal::SIGINT, nix::sys::signal::Signal::SIGHUP] {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).expect("signal the child");
    }
    inbox.put(7).await.expect("put");
    assert_eq!(outbox.get_timeout(WAIT).await.expect("the child still echoes"), 7);
    let stats = sup.stats().await.expect("stats");
    assert_eq!((stats.restarts, stats.children[0].pid), (0, Some(pid)), "the same child, never restarted");
    sup.shutdown(Duration::from_secs(10)).await.expect("shutdown");
    let (cause, _) = next_event(&mut events, exited("echo")).await;
    assert_eq!(cause, ExitCause::Stopped { status: Some(ExitStatus::Code(0)) }, "it stopped in order");
    assert_all_gone(&watch).await;
}

/// A few hundred random SIGKILLs under a pool with retries: every job's
/// result comes out, none is lost.
#[test]
fn soak_random_kills_lose_no_job() {
    let out = crate::common::pool_scenario(&["soak", "300"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("kills 300, jobs in 5000, results out 5000, lost 0"), "{stdout}");
}

/// The same with supervised consumers of a leased queue: a few hundred
/// random SIGKILLs (most in the middle of a job), then a SIGTERM drain;
/// every job's result comes out (at least once; the scenario dedupes by job
/// id and checks every value), none is lost, the queue ends empty.
#[test]
fn leased_queue_soak_random_kills_lose_no_job() {
    let out = crate::common::pool_scenario(&["leased-soak", "300"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("kills 300, jobs in 10000, results out 10000, lost 0,"), "{stdout}");
    assert!(stdout.contains("drained true"), "{stdout}");
}

// Pool workers see the pool's stop request mid-call (`Pool::shutdown`).

/// Says it started, then loops until the pool asks it to stop; returns how
/// many rounds it made.
#[multiproc::task]
fn loop_until_pool_stops(started: Event) -> u64 {
    started.set();
    let mut rounds = 0;
    while !multiproc::stop_requested() {
        rounds += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    rounds
}

/// The same, waiting asynchronously.
#[multiproc::task]
async fn wait_until_pool_stops(started: Event) -> bool {
    started.set();
    multiproc::stopped().await;
    multiproc::stop_requested()
}

/// Blocks SIGTERM, says when it saw the stop request, and goes on anyway:
/// only SIGKILL ends it.
#[multiproc::task]
fn sees_the_stop_then_carries_on(started: Event, saw_stop: Event) {
    nix::sys::signal::SigSet::from(nix::sys::signal::Signal::SIGTERM).thread_block().expect("block SIGTERM");
    started.set();
    while !multiproc::stop_requested() {
        std::thread::sleep(Duration::from_millis(2));
    }
    saw_stop.set();
    loop {
        std::thread::park();
    }
}

/// Two tasks that run until asked to stop (one polling `stop_requested`,
/// one awaiting `stopped`) return on their own when the pool shuts down:
/// the pool drains within its grace, no signal needed.
async fn pool_task_sees_the_stop_request_mid_call(method: StartMethod) {
    let pool = Pool::builder().processes(2).start_method(method).build().await.expect("pool");
    let (a, b) = (Event::new().expect("event"), Event::new().expect("event"));
    let polling = pool.apply_async(loop_until_pool_stops, (a.clone(),));
    assert!(a.wait_timeout(WAIT).await.expect("wait"), "the polling task runs");
    // The other worker is idle: the second task runs beside the first.
    let waiting = pool.apply_async(wait_until_pool_stops, (b.clone(),));
    assert!(b.wait_timeout(WAIT).await.expect("wait"), "the waiting task runs");
    let workers = Watch::all(&pool.pids());
    assert!(pool.shutdown(Duration::from_secs(60)).await, "both tasks returned when asked to stop");
    polling.await.expect("the polling task returned on its own");
    assert!(waiting.await.expect("the waiting task's result"), "stopped() resolved with the stop requested");
    assert_eq!(pool.stats().failed, 0);
    assert_all_gone(&workers).await;
}

/// A task that sees the stop request but carries on (and ignores SIGTERM):
/// it saw the request at once, before the grace ran out and so before any
/// SIGTERM; SIGTERM at the end of the grace does nothing; SIGKILL after
/// the pool's `timeout_grace` ends it and its call fails `PoolTerminated`.
async fn pool_shutdown_asks_then_sigterm_then_sigkill(method: StartMethod) {
    let term_grace = Duration::from_millis(500);
    let pool = Pool::builder().processes(1).start_method(method).timeout_grace(term_grace).build().await.expect("pool");
    let (started, saw_stop) = (Event::new().expect("event"), Event::new().expect("event"));
    let call = pool.apply_async(sees_the_stop_then_carries_on, (started.clone(), saw_stop.clone()));
    assert!(started.wait_timeout(WAIT).await.expect("wait"), "the task runs");
    let workers = Watch::all(&pool.pids());
    let grace = Duration::from_secs(3);
    let t0 = Instant::now();
    let shutdown = tokio::spawn({
        let pool = pool.clone();
        async move { pool.shutdown(grace).await }
    });
    assert!(saw_stop.wait_timeout(WAIT).await.expect("wait"), "the task saw the stop request");
    assert!(t0.elapsed() < grace, "seen before the grace ran out (SIGTERM comes after it): {:?}", t0.elapsed());
    assert!(!shutdown.is_finished());
    assert!(!shutdown.await.expect("the shutdown task"), "the task did not finish in time");
    assert!(t0.elapsed() >= grace + term_grace, "SIGTERM was blocked: SIGKILL after timeout_grace ended it");
    assert!(matches!(call.await, Err(Error::PoolTerminated)));
    assert_all_gone(&workers).await;
}

crate::per_method!(pool_task_sees_the_stop_request_mid_call, pool_shutdown_asks_then_sigterm_then_sigkill);
