// Included by `pool.rs`, twice: the Pool suite with calls over the
// workers' sockets and over shared memory (`SHM`, issue 13). Ordering, errors
// at the right item, crash isolation, timeouts, recycling, initializers and
// shutdown, under both start methods.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use std::io::{Read, Write};

use futures::StreamExt;
use multiproc::{Error, ExitStatus, PassFd, Pool, PoolBuilder, StartMethod};

use crate::common::{Watch, pid_alive};
use crate::per_method;

#[multiproc::task]
fn square(x: u64) -> u64 {
    x * x
}

#[multiproc::task]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

#[multiproc::task]
fn getpid() -> u32 {
    std::process::id()
}

/// Kills its own worker with SIGKILL on `victim`, doubles anything else.
#[multiproc::task]
fn double_or_die(x: u32, victim: u32) -> u32 {
    if x == victim {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
    }
    x * 2
}

#[multiproc::task]
fn crash() {
    std::process::abort()
}

#[multiproc::task]
fn panic_on(x: u32) -> u32 {
    if x == 3 {
        panic!("three is not allowed")
    }
    x
}

#[multiproc::task]
fn block_forever() {
    loop {
        std::thread::park();
    }
}

#[multiproc::task]
fn slow_square(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(1));
    x * x
}

static INITIALIZED: AtomicU32 = AtomicU32::new(0);

#[multiproc::task]
fn init_worker(add: u32) {
    INITIALIZED.fetch_add(add, Ordering::SeqCst);
}

/// This worker's pid and how many times its initializer ran.
#[multiproc::task]
fn init_count() -> (u32, u32) {
    (std::process::id(), INITIALIZED.load(Ordering::SeqCst))
}

/// Serializes fine except for the value 13.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
struct Picky(u32);

impl serde::Serialize for Picky {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == 13 {
            return Err(serde::ser::Error::custom("13 cannot be sent"));
        }
        s.serialize_u32(self.0)
    }
}

#[multiproc::task]
fn picky(p: Picky) -> u32 {
    p.0
}

/// Writes `byte` into the pipe end it was given.
#[multiproc::task]
fn write_byte(fd: PassFd, byte: u8) -> u8 {
    std::fs::File::from(fd.0).write_all(&[byte]).expect("write to the pipe");
    byte
}

/// Blocks until a byte arrives on the pipe end it was given.
#[multiproc::task]
fn wait_for_byte(fd: PassFd) -> u8 {
    let mut b = [0];
    std::fs::File::from(fd.0).read_exact(&mut b).expect("read from the pipe");
    b[0]
}

fn pipe() -> (std::fs::File, std::os::fd::OwnedFd) {
    let (r, w) = nix::unistd::pipe().expect("pipe");
    (std::fs::File::from(r), w)
}

/// Reads a pipe to its end off the runtime, bounded so a leak fails instead of hanging.
async fn read_all(mut r: std::fs::File) -> Vec<u8> {
    let read = tokio::task::spawn_blocking(move || {
        let mut v = Vec::new();
        r.read_to_end(&mut v).expect("read");
        v
    });
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("every write end closed").expect("join")
}

#[multiproc::task]
fn failing_init() {
    panic!("cannot initialize")
}

/// An initializer only the first worker passes: each start appends a byte
/// to `marker`, and every start after the first fails.
#[multiproc::task]
fn init_first_only(marker: String) {
    use std::io::Write;
    let before = std::fs::metadata(&marker).map_or(0, |m| m.len());
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&marker).expect("open the marker");
    f.write_all(b"x").expect("count the start");
    assert_eq!(before, 0, "only the first worker may start");
}

/// Not registered: it has no `#[multiproc::task]`.
fn unregistered(x: u64) -> u64 {
    x
}

/// Aborts the first time it runs for `marker` (creating the file), succeeds after.
#[multiproc::task]
fn crash_once(marker: String) -> u32 {
    if std::fs::OpenOptions::new().write(true).create_new(true).open(&marker).is_ok() {
        std::process::abort();
    }
    7
}

#[multiproc::task]
fn text_len(s: String) -> usize {
    s.len()
}

#[multiproc::task]
fn big_text(len: usize) -> String {
    "x".repeat(len)
}

/// Sleeps `ms` milliseconds (forever for `u64::MAX`), then returns `ms`.
#[multiproc::task]
fn nap(ms: u64) -> u64 {
    if ms == u64::MAX {
        loop {
            std::thread::park();
        }
    }
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Writes the first 8 bytes of a frame announcing 256 bytes to the parent,
/// then never writes the rest.
#[multiproc::task]
fn half_a_frame() {
    // A socket frame's header is a big-endian length; a shared-memory
    // link's is a little-endian length and an fd count (issue 13).
    let bytes: &[u8] = if multiproc::__private::pool_worker_on_shared_memory() {
        &[0, 1, 0, 0, 0, 0, 0, 0, 0x93, 1, 2]
    } else {
        &[0, 0, 1, 0, 0, 0x93, 1, 2]
    };
    multiproc::__private::pool_worker_write_raw(bytes).expect("write half a frame");
    loop {
        std::thread::park();
    }
}

/// Allocates and keeps `mib` MiB (touched, so it is resident).
#[multiproc::task]
fn grow(mib: usize) -> u32 {
    std::mem::forget(vec![1u8; mib << 20]);
    std::process::id()
}

/// A builder for this run of the suite (`SHM`: calls over shared memory).
fn builder() -> PoolBuilder {
    Pool::builder().shared_memory(SHM)
}

async fn pool(method: StartMethod, n: usize) -> Pool {
    builder().processes(n).start_method(method).build().await.expect("pool starts")
}

fn oks<T: std::fmt::Debug>(v: impl IntoIterator<Item = multiproc::Result<T>>) -> Vec<T> {
    v.into_iter().map(|r| r.expect("every item succeeds")).collect()
}

async fn map_keeps_order(method: StartMethod) {
    let pool = pool(method, 2).await;
    let want: Vec<u64> = (0..100).map(|x| x * x).collect();
    assert_eq!(oks(pool.map(square, 0..100).await.expect("map")), want);
    for chunksize in [1, 3] {
        assert_eq!(
            oks(pool.map(square, 0..100).chunksize(chunksize).await.expect("map")),
            want,
            "chunksize {chunksize}"
        );
    }
    let pairs: Vec<(u64, u64)> = (0..50).map(|i| (i, 1000 * i)).collect();
    let sums: Vec<u64> = (0..50).map(|i| 1001 * i).collect();
    assert_eq!(oks(pool.starmap(add, pairs.clone()).await.expect("starmap")), sums);
    assert_eq!(oks(pool.starmap(add, pairs.clone()).chunksize(1).await.expect("starmap")), sums);
    assert_eq!(oks(pool.starmap_async(add, pairs).await.expect("starmap_async")), sums);
    let ordered: Vec<u64> = pool.imap(square, 0..40).chunksize(3).map(|r| r.expect("item")).collect().await;
    assert_eq!(ordered, want[..40]);
    pool.close();
    pool.join().await.expect("join");
}

async fn imap_unordered_yields_each_once(method: StartMethod) {
    let pool = pool(method, 2).await;
    let mut got: Vec<u64> = pool.imap_unordered(square, 0..200).map(|r| r.expect("item")).collect().await;
    got.sort_unstable();
    assert_eq!(got, (0..200).map(|x| x * x).collect::<Vec<_>>());
}

async fn empty_input_gives_empty_output(method: StartMethod) {
    let pool = pool(method, 1).await;
    assert!(pool.map(square, Vec::<u64>::new()).await.expect("map").is_empty());
    assert!(pool.starmap(add, Vec::<(u64, u64)>::new()).await.expect("starmap").is_empty());
    assert_eq!(pool.imap(square, Vec::<u64>::new()).count().await, 0);
    assert_eq!(pool.imap_unordered(square, Vec::<u64>::new()).count().await, 0);
}

async fn get_timeout_then_pool_goes_on(method: StartMethod) {
    let pool = pool(method, 2).await;
    let mut stuck = pool.apply_async(block_forever, ());
    assert!(matches!(stuck.get_timeout(Duration::from_millis(100)).await, Err(Error::Timeout)));
    assert!(!stuck.ready());
    assert_eq!(pool.apply(square, (12,)).await.expect("next task"), 144);
    let pids = pool.pids();
    pool.terminate().await;
    assert!(matches!(stuck.await, Err(Error::PoolTerminated)));
    assert!(pids.iter().all(|&p| !pid_alive(p)));
}

async fn sigkilled_worker_fails_exactly_its_item(method: StartMethod) {
    let pool = pool(method, 2).await;
    let out = pool.starmap(double_or_die, (0..100).map(|x| (x, 37))).chunksize(1).await.expect("map");
    for (i, r) in out.iter().enumerate() {
        match r {
            Ok(v) => assert_eq!(*v, 2 * i as u32),
            Err(Error::WorkerLost { pid, status }) => {
                assert_eq!(i, 37, "only item 37 fails");
                assert!(*pid > 0);
                assert_eq!(*status, ExitStatus::Signal(9));
            }
            Err(e) => panic!("item {i}: unexpected {e}"),
        }
    }
    assert!(out.get(37).expect("item 37").is_err());
    assert!(pool.stats().workers_replaced >= 1);
    assert_eq!(pool.apply(square, (3,)).await.expect("still serving"), 9);
}

async fn many_crashes_never_hang(method: StartMethod) {
    let pool = pool(method, 2).await;
    for _ in 0..50 {
        match pool.apply(crash, ()).await {
            Err(Error::WorkerLost { status, .. }) => assert_eq!(status, ExitStatus::Signal(6)),
            other => panic!("expected WorkerLost, got {other:?}"),
        }
    }
    assert_eq!(pool.apply(square, (5,)).await.expect("still serving"), 25);
    assert_eq!(pool.stats().workers_replaced, 50);
}

async fn panic_arrives_at_its_item(method: StartMethod) {
    let pool = pool(method, 2).await;
    let out = pool.map(panic_on, 0..8).chunksize(4).await.expect("map");
    for (i, r) in out.into_iter().enumerate() {
        match (i, r) {
            (3, Err(Error::TaskPanicked(p))) => {
                assert_eq!(p.message, "three is not allowed");
                assert!(p.location.contains("pool_suite.rs"), "{}", p.location);
            }
            (3, other) => panic!("item 3: {other:?}"),
            (i, r) => assert_eq!(r.expect("other items succeed"), i as u32),
        }
    }
    assert_eq!(pool.stats().workers_replaced, 0, "a panic does not cost the worker");
}

async fn unencodable_argument_fails_that_item(method: StartMethod) {
    let pool = pool(method, 1).await;
    let out = pool.map(picky, (10..16).map(Picky)).chunksize(3).await.expect("map");
    for (x, r) in (10..16).zip(out) {
        match r {
            Err(Error::Encode { source, .. }) if x == 13 => assert!(source.to_string().contains("13 cannot be sent")),
            r => assert_eq!(r.expect("others succeed"), x),
        }
    }
    assert!(matches!(pool.apply(picky, (Picky(13),)).await, Err(Error::Encode { .. })));
    assert_eq!(pool.stats().workers_replaced, 0);
}

async fn task_timeout_replaces_the_worker(method: StartMethod) {
    let pool = builder()
        .processes(1)
        .start_method(method)
        .task_timeout(Duration::from_millis(200))
        .timeout_grace(Duration::from_millis(100))
        .build()
        .await
        .expect("pool");
    let first = pool.pids();
    assert!(matches!(pool.apply(block_forever, ()).await, Err(Error::Timeout)));
    assert_eq!(pool.apply(square, (4,)).await.expect("next task runs"), 16);
    assert!(first.iter().all(|&p| !pid_alive(p)), "the stuck worker is gone");
    assert_eq!(pool.stats().workers_replaced, 1);
}

async fn max_tasks_per_child_recycles(method: StartMethod) {
    let pool = builder().processes(1).max_tasks_per_child(2).start_method(method).build().await.expect("pool");
    let mut pids = Vec::new();
    for _ in 0..6 {
        pids.push(pool.apply(getpid, ()).await.expect("getpid"));
    }
    let distinct: HashSet<u32> = pids.iter().copied().collect();
    assert_eq!(distinct.len(), 3, "{pids:?}");
    assert!(pids.chunks(2).all(|c| c[0] == c[1]), "{pids:?}");
    // An early close with work queued still finishes it and exits.
    let queued: Vec<_> = (0..5).map(|_| pool.apply_async(getpid, ())).collect();
    pool.close();
    pool.join().await.expect("join");
    for r in queued {
        r.await.expect("queued work finished");
    }
    assert!(pool.pids().is_empty());
}

async fn initializer_runs_once_per_worker(method: StartMethod) {
    let pool =
        builder().processes(2).initializer(init_worker, (1,)).start_method(method).build().await.expect("pool");
    let seen = oks(pool.starmap(init_count, vec![(); 40]).chunksize(1).await.expect("map"));
    assert!(seen.iter().all(|&(_, n)| n == 1), "{seen:?}");
    let workers: HashSet<u32> = seen.iter().map(|&(p, _)| p).collect();
    assert!(!workers.is_empty() && workers.len() <= 2);
}

async fn terminate_during_large_map(method: StartMethod) {
    let pool = pool(method, 2).await;
    let mut big = pool.map(slow_square, 0..10_000).chunksize(1).submit();
    assert!(!big.ready());
    let pids = pool.pids();
    pool.terminate().await;
    assert!(pids.iter().all(|&p| !pid_alive(p)), "no worker left alive");
    let out = big.await.expect("results");
    assert_eq!(out.len(), 10_000);
    assert!(out.iter().any(|r| matches!(r, Err(Error::PoolTerminated))));
    assert!(matches!(pool.apply(square, (1,)).await, Err(Error::Closed(_))));
    pool.join().await.expect("join after terminate");
}

async fn imap_over_endless_input(method: StartMethod) {
    let pool = pool(method, 2).await;
    let got: Vec<u64> = pool.imap(square, 0..).window(4).take(100).map(|r| r.expect("item")).collect().await;
    assert_eq!(got, (0..100).map(|x| x * x).collect::<Vec<_>>());
    assert_eq!(pool.apply(square, (2,)).await.expect("pool still fine"), 4);
}

/// A stream made before `close()` and first read after it (or after
/// `join()` too): no chunk can be queued any more, so it ends with
/// `Closed` instead of waiting; one polled before `close()` still yields
/// what it had queued, then the error for the rest.
async fn imap_read_after_close_ends_with_closed(method: StartMethod) {
    for after_join in [false, true] {
        for ordered in [true, false] {
            let pool = pool(method, 2).await;
            let mut s = if ordered { pool.imap(square, 0..100u64) } else { pool.imap_unordered(square, 0..100u64) };
            pool.close();
            if after_join {
                pool.join().await.expect("join");
            }
            let first = tokio::time::timeout(Duration::from_secs(10), s.next()).await.expect("no hang");
            assert!(matches!(first, Some(Err(Error::Closed(_)))), "ordered {ordered}, after join {after_join}: {first:?}");
            assert!(s.next().await.is_none(), "the stream ends after the error");
            pool.join().await.expect("join");
        }
    }
    // Polled once before close: the queued window is delivered, then Closed.
    let pool = pool(method, 2).await;
    let mut s = pool.imap(square, 0..100u64).window(2);
    assert_eq!(s.next().await.expect("an item").expect("ok"), 0);
    pool.close();
    let rest: Vec<_> = tokio::time::timeout(Duration::from_secs(10), s.collect::<Vec<_>>()).await.expect("no hang");
    let (oks, errs): (Vec<_>, Vec<_>) = rest.into_iter().partition(Result::is_ok);
    assert_eq!(oks.into_iter().map(Result::unwrap).collect::<Vec<_>>(), [1], "what was queued arrives in order");
    assert!(matches!(errs.as_slice(), [Err(Error::Closed(_))]), "{errs:?}");
    pool.join().await.expect("join");
}

async fn dropped_pool_reaps_workers(method: StartMethod) {
    let pool = pool(method, 2).await;
    let stuck = pool.apply_async(block_forever, ());
    let workers = Watch::all(&pool.pids());
    drop(pool);
    assert!(matches!(stuck.await, Err(Error::PoolTerminated)));
    for w in &workers {
        w.assert_exits(Duration::from_secs(2), "(a worker) outlived its pool").await;
    }
}

async fn fds_travel_in_chunks(method: StartMethod) {
    let pool = pool(method, 2).await;
    let (r, w) = pipe();
    let items: Vec<(PassFd, u8)> = (b'a'..=b'f').map(|c| (PassFd(w.try_clone().expect("dup")), c)).collect();
    drop(w);
    let out = oks(pool.starmap(write_byte, items).chunksize(3).await.expect("starmap"));
    assert_eq!(out, b"abcdef");
    let mut got = read_all(r).await;
    got.sort_unstable();
    assert_eq!(got, b"abcdef");
}

async fn dropped_handle_cancels_queued_work(method: StartMethod) {
    let pool = pool(method, 1).await;
    let (gate_r, gate_w) = pipe();
    let (marker_r, marker_w) = pipe();
    let blocker = pool.apply_async(wait_for_byte, (PassFd(gate_r.into()),));
    let victim = pool.apply_async(write_byte, (PassFd(marker_w), b'x'));
    drop(victim);
    std::fs::File::from(gate_w).write_all(b"g").expect("open the gate");
    assert_eq!(blocker.await.expect("blocker"), b'g');
    assert_eq!(pool.apply(square, (3,)).await.expect("square"), 9);
    assert!(read_all(marker_r).await.is_empty(), "the cancelled task never ran");
    assert_eq!(pool.stats().completed, 2);
}

async fn stop_cancelled_kills_the_running_call(method: StartMethod) {
    let pool = builder()
        .processes(1)
        .stop_cancelled(true)
        .timeout_grace(Duration::from_millis(100))
        .start_method(method)
        .build()
        .await
        .expect("pool");
    let stuck = pool.apply_async(block_forever, ());
    while pool.stats().in_flight == 0 {
        tokio::task::yield_now().await;
    }
    drop(stuck);
    // The only worker was blocked forever: this runs only if it was replaced.
    assert_eq!(pool.apply(square, (6,)).await.expect("square"), 36);
    assert_eq!(pool.stats().workers_replaced, 1);
}

/// When no replacement worker can start, queued work fails with
/// `PoolWorkerStart` instead of hanging, but only after several failed
/// starts in a row (one failure is often a forkserver death being noticed).
async fn queued_work_fails_once_replacements_keep_failing(method: StartMethod) {
    let marker = std::env::temp_dir().join(format!("multiproc-init-first-{}-{method:?}-{SHM}", std::process::id()));
    let marker = marker.to_string_lossy().into_owned();
    let _ = std::fs::remove_file(&marker);
    let pool = builder()
        .processes(1)
        .max_tasks_per_child(1)
        .initializer(init_first_only, (marker.clone(),))
        .start_method(method)
        .build()
        .await
        .expect("pool");
    assert_eq!(pool.apply(square, (3,)).await.expect("the first worker runs"), 9);
    // That worker retires after its one task; no replacement can start.
    let second = tokio::time::timeout(Duration::from_secs(60), pool.apply(square, (4,))).await.expect("no hang");
    assert!(matches!(second, Err(Error::PoolWorkerStart(_))), "{second:?}");
    let starts = std::fs::metadata(&marker).expect("marker").len();
    assert!(starts >= 4, "the work failed after {} failed start(s), not 3", starts - 1);
    drop(pool);
    std::fs::remove_file(&marker).expect("remove the marker");
}

async fn failing_initializer_fails_build(method: StartMethod) {
    let err = builder().processes(2).initializer(failing_init, ()).start_method(method).build().await;
    match err {
        Err(Error::TaskMismatch(m)) => assert!(m.reason.contains("initializer failed"), "{}", m.reason),
        other => panic!("expected the initializer's failure, got {other:?}"),
    }
}

async fn retries_rerun_a_lost_call(method: StartMethod) {
    let marker = std::env::temp_dir().join(format!("multiproc-retry-{}-{method:?}", std::process::id()));
    let marker = marker.to_string_lossy().into_owned();
    let _ = std::fs::remove_file(&marker);
    let pool = builder().processes(1).retries(1).start_method(method).build().await.expect("pool");
    assert_eq!(pool.apply(crash_once, (marker.clone(),)).await.expect("second attempt succeeds"), 7);
    assert_eq!(pool.stats().workers_replaced, 1);
    std::fs::remove_file(&marker).expect("the first attempt left its marker");
    let pool = builder().processes(1).start_method(method).build().await.expect("pool");
    assert!(matches!(pool.apply(crash_once, (marker.clone(),)).await, Err(Error::WorkerLost { .. })));
    let _ = std::fs::remove_file(&marker);
}

async fn oversized_argument_fails_that_call_only(method: StartMethod) {
    let pool = pool(method, 1).await;
    let before = pool.pids();
    let big = "a".repeat(multiproc::MAX_CALL_BYTES + 1);
    match pool.apply(text_len, (big,)).await {
        Err(Error::ArgumentsTooLarge { len, max }) => {
            assert_eq!(max, multiproc::MAX_CALL_BYTES);
            assert!(len > max, "{len} > {max}");
        }
        other => panic!("expected ArgumentsTooLarge, got {other:?}"),
    }
    for i in 0..10u64 {
        assert_eq!(pool.apply(square, (i,)).await.expect("the slot keeps working"), i * i);
    }
    assert_eq!(pool.pids(), before, "the worker was never touched");
    assert_eq!(pool.stats().workers_replaced, 0);
}

async fn oversized_item_fails_alone_and_big_chunks_split(method: StartMethod) {
    let pool = pool(method, 1).await;
    let items = vec!["ab".to_owned(), "c".repeat(multiproc::MAX_CALL_BYTES + 1), "def".to_owned()];
    let out = pool.map(text_len, items).chunksize(3).await.expect("map");
    assert_eq!(*out.get(0).expect("3 items").expect("item 0"), 2);
    assert!(matches!(out.get(1), Some(Err(Error::ArgumentsTooLarge { .. }))), "{:?}", out.get(1));
    assert_eq!(*out.get(2).expect("3 items").expect("item 2"), 3);
    // Three items that fit one by one but not together in one call.
    let third = multiproc::MAX_CALL_BYTES / 3 + 1024;
    let items: Vec<String> = (0..3).map(|_| "d".repeat(third)).collect();
    let out = oks(pool.map(text_len, items).chunksize(3).await.expect("map"));
    assert_eq!(out, vec![third; 3]);
    assert_eq!(pool.stats().workers_replaced, 0);
}

async fn oversized_result_fails_that_item_only(method: StartMethod) {
    let pool = pool(method, 1).await;
    match pool.apply(big_text, (multiproc::MAX_RESULT_BYTES + 1,)).await {
        Err(Error::ResultTooLarge { len, max }) => {
            assert_eq!(max, multiproc::MAX_RESULT_BYTES);
            assert!(len > max);
        }
        other => panic!("expected ResultTooLarge, got {:?}", other.map(|s| s.len())),
    }
    assert_eq!(pool.apply(big_text, (3,)).await.expect("next call"), "xxx");
    assert_eq!(pool.stats().workers_replaced, 0);
}

async fn pids_complete_when_new_returns(method: StartMethod) {
    let pool = pool(method, 3).await;
    let pids = pool.pids();
    assert_eq!(pids.len(), 3, "{pids:?}");
    assert!(pids.iter().all(|&p| pid_alive(p)), "{pids:?}");
}

async fn call_sent_to_a_dead_worker_is_requeued(method: StartMethod) {
    // No retries: a call the worker never started must run anyway.
    let pool = pool(method, 1).await;
    for i in 0..20u64 {
        let victim = pool.pids()[0];
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim as i32), nix::sys::signal::Signal::SIGKILL)
            .expect("kill the idle worker");
        assert_eq!(pool.apply(square, (i,)).await.expect("runs on the replacement"), i * i, "round {i}");
    }
    assert_eq!(pool.stats().workers_replaced, 20);
    assert_eq!(pool.stats().failed, 0);
}

async fn half_written_reply_replaces_the_worker(method: StartMethod) {
    let pool = builder()
        .processes(1)
        .start_method(method)
        .stall_timeout(Duration::from_millis(300))
        .build()
        .await
        .expect("pool");
    let stuck = pool.pids();
    match pool.apply(half_a_frame, ()).await {
        Err(Error::WorkerLost { status, .. }) => assert_eq!(status, ExitStatus::Signal(9)),
        other => panic!("expected WorkerLost, got {other:?}"),
    }
    assert_eq!(pool.apply(square, (7,)).await.expect("the replacement serves"), 49);
    assert!(!pid_alive(stuck[0]), "the stuck worker was killed");
    assert_eq!(pool.stats().workers_replaced, 1);
}

async fn timeout_in_a_chunk_keeps_finished_items(method: StartMethod) {
    let pool = builder()
        .processes(1)
        .start_method(method)
        .timeout_grace(Duration::from_millis(50))
        .build()
        .await
        .expect("pool");
    let items = vec![20, 20, 20, u64::MAX, 20, 20];
    let out = pool.map(nap, items).chunksize(6).timeout(Duration::from_millis(400)).await.expect("map");
    for (i, r) in out.iter().enumerate() {
        match (i, r) {
            (3, Err(Error::Timeout)) => {}
            (3, other) => panic!("item 3: {other:?}"),
            (i, r) => assert_eq!(*r.unwrap_or_else(|e| panic!("item {i}: {e}")), 20),
        }
    }
    // The timeout is per item: six items of 150 ms in one chunk, 400 ms each.
    let out = oks(pool.map(nap, vec![150; 6]).chunksize(6).timeout(Duration::from_millis(400)).await.expect("map"));
    assert_eq!(out, vec![150; 6]);
    assert_eq!(pool.stats().workers_replaced, 1);
}

async fn clones_share_the_pool_and_the_last_drop_terminates(method: StartMethod) {
    let pool = pool(method, 2).await;
    let workers = Watch::all(&pool.pids());
    let other = pool.clone();
    let job = tokio::spawn(async move { other.apply(square, (9,)).await });
    drop(pool);
    assert_eq!(job.await.expect("join").expect("a clone keeps the pool"), 81);
    for w in &workers {
        w.assert_exits(Duration::from_secs(2), "(a worker) outlived the last clone").await;
    }
}

async fn imap_stream_takes_an_async_input(method: StartMethod) {
    let pool = pool(method, 2).await;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let input = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    let mut out = pool.imap_stream(square, Box::pin(input)).chunksize(4);
    // Three items, fewer than a chunk, with the input still open: they run.
    for x in 0..3 {
        tx.send(x).expect("send");
    }
    for x in 0..3 {
        assert_eq!(out.next().await.expect("an item").expect("ok"), x * x);
    }
    for x in 3..50 {
        tx.send(x).expect("send");
    }
    drop(tx);
    let rest: Vec<u64> = out.map(|r| r.expect("item")).collect().await;
    assert_eq!(rest, (3..50).map(|x| x * x).collect::<Vec<_>>());
}

async fn max_memory_per_child_recycles(method: StartMethod) {
    let pool =
        builder().processes(1).max_memory_per_child(96 << 20).start_method(method).build().await.expect("pool");
    let first = pool.apply(getpid, ()).await.expect("getpid");
    assert_eq!(pool.apply(grow, (4,)).await.expect("small growth"), first);
    assert_eq!(pool.apply(getpid, ()).await.expect("getpid"), first, "under the limit: same worker");
    assert_eq!(pool.apply(grow, (160,)).await.expect("big growth"), first);
    let next = pool.apply(getpid, ()).await.expect("getpid");
    assert_ne!(next, first, "over the limit: a fresh worker");
    assert_eq!(pool.stats().workers_replaced, 1);
}

async fn shutdown_drains_then_terminates(method: StartMethod) {
    let pool = pool(method, 2).await;
    let quick: Vec<_> = (0..4).map(|_| pool.apply_async(nap, (30,))).collect();
    assert!(pool.shutdown(Duration::from_secs(10)).await, "quick work drains");
    for r in quick {
        assert_eq!(r.await.expect("drained"), 30);
    }
    assert!(pool.pids().is_empty());
    let pool = self::pool(method, 1).await;
    let stuck = pool.apply_async(nap, (u64::MAX,));
    let pids = pool.pids();
    assert!(!pool.shutdown(Duration::from_millis(200)).await, "stuck work does not drain");
    assert!(matches!(stuck.await, Err(Error::PoolTerminated)));
    assert!(pids.iter().all(|&p| !pid_alive(p)));
}

/// An idle pool hands the next call to the worker that answered the last
/// one (its owner and its link are the ones still spinning; a round robin
/// woke a sleeper every call). In a single-thread runtime the order of
/// events is fixed, so this holds every time.
#[tokio::test(flavor = "current_thread")]
async fn sequential_calls_stay_on_the_worker_that_answered_last() {
    let pool = pool(StartMethod::Forkserver, 3).await;
    // Until every owner has had its first turn, any may be the last waiter.
    for _ in 0..3 {
        pool.apply(getpid, ()).await.expect("call");
    }
    let first = pool.apply(getpid, ()).await.expect("call");
    for i in 0..30 {
        assert_eq!(pool.apply(getpid, ()).await.expect("call"), first, "call {i} moved to another worker");
    }
}

per_method!(
    oversized_argument_fails_that_call_only,
    oversized_item_fails_alone_and_big_chunks_split,
    oversized_result_fails_that_item_only,
    pids_complete_when_new_returns,
    call_sent_to_a_dead_worker_is_requeued,
    half_written_reply_replaces_the_worker,
    timeout_in_a_chunk_keeps_finished_items,
    clones_share_the_pool_and_the_last_drop_terminates,
    imap_stream_takes_an_async_input,
    max_memory_per_child_recycles,
    shutdown_drains_then_terminates,
);

per_method!(
    queued_work_fails_once_replacements_keep_failing,
    failing_initializer_fails_build,
    retries_rerun_a_lost_call,
    stop_cancelled_kills_the_running_call,
    fds_travel_in_chunks,
    dropped_handle_cancels_queued_work,
    map_keeps_order,
    imap_unordered_yields_each_once,
    empty_input_gives_empty_output,
    get_timeout_then_pool_goes_on,
    sigkilled_worker_fails_exactly_its_item,
    many_crashes_never_hang,
    panic_arrives_at_its_item,
    unencodable_argument_fails_that_item,
    task_timeout_replaces_the_worker,
    max_tasks_per_child_recycles,
    initializer_runs_once_per_worker,
    terminate_during_large_map,
    imap_over_endless_input,
    imap_read_after_close_ends_with_closed,
    dropped_pool_reaps_workers,
);

#[multiproc::task]
fn pid_of_item(_: u32) -> u32 {
    std::process::id()
}

/// The lengths of the runs of equal values in `v`.
fn runs(v: &[u32]) -> Vec<usize> {
    v.chunk_by(|a, b| a == b).map(<[u32]>::len).collect()
}

/// A default chunk is Python's `ceil(len / (4 × processes))` items, at most
/// 8,192. With one call per worker, each chunk shows as a run of one pid.
#[tokio::test]
async fn a_default_chunk_holds_at_most_8192_items() {
    let pool = builder().processes(1).max_tasks_per_child(1).build().await.expect("pool");
    let pids = oks(pool.map(pid_of_item, 0..40_000).await.expect("map"));
    assert_eq!(runs(&pids), [8192, 8192, 8192, 8192, 7232]);
    let pids = oks(pool.map(pid_of_item, 0..40).await.expect("map"));
    assert_eq!(runs(&pids), [10, 10, 10, 10]);
    pool.terminate().await;
}

/// `terminate` and `join` return once every worker is reaped, even when
/// they come before the owner tasks first ran (on a current-thread runtime,
/// right after `build`): a first worker is stopped by its owner, not
/// dropped to exit on its own after they returned.
#[tokio::test]
async fn terminate_or_join_right_after_build_reaps_every_worker() {
    let pool = builder().processes(2).build().await.expect("pool");
    let pids = pool.pids();
    pool.terminate().await;
    assert!(pids.iter().all(|&p| !pid_alive(p)), "terminate returned with a worker alive");
    assert!(pool.pids().is_empty());
    let pool = builder().processes(2).build().await.expect("pool");
    let pids = pool.pids();
    pool.close();
    pool.join().await.expect("join");
    assert!(pids.iter().all(|&p| !pid_alive(p)), "join returned with a worker alive");
    assert!(pool.pids().is_empty());
}

/// An explicit chunk size is what each call holds, though a map queues its
/// small chunks in blocks (issue 13): with one call per worker, each chunk
/// shows as a run of one pid, across the blocks' boundaries.
#[tokio::test]
async fn an_explicit_chunk_is_one_call_each() {
    let pool = builder().processes(1).max_tasks_per_child(1).build().await.expect("pool");
    let pids = oks(pool.map(pid_of_item, 0..200).chunksize(7).await.expect("map"));
    let mut want = vec![7; 28];
    want.push(4);
    assert_eq!(runs(&pids), want);
    let pids = oks(pool.map(pid_of_item, 0..70).chunksize(1).await.expect("map"));
    assert_eq!(runs(&pids), [1; 70]);
    let pids = oks(pool.map(pid_of_item, 0..5).chunksize(usize::MAX).await.expect("map"));
    assert_eq!(runs(&pids), [5], "a chunk larger than the map is the whole map");
    pool.terminate().await;
}

#[tokio::test]
async fn unregistered_function_is_a_typed_error() {
    let pool = builder().processes(1).build().await.expect("pool");
    assert!(matches!(pool.apply(unregistered, (1,)).await, Err(Error::UnregisteredTask { .. })));
    assert!(matches!(pool.map(unregistered, 0..3).await, Err(Error::UnregisteredTask { .. })));
    let mut s = pool.imap(unregistered, 0..3);
    assert!(matches!(s.next().await, Some(Err(Error::UnregisteredTask { .. }))));
    assert!(s.next().await.is_none());
}

#[test]
fn submissions_right_after_a_forkserver_sigkill_complete() {
    let out = crate::common::pool_scenario(&["forkserver-killed"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok"), "{out:?}");
}

/// Maps with chunks of 1 to 400 items while 40 workers are SIGKILLed at
/// random moments, on this run's call path: every item's result is in its
/// place, right or `WorkerLost`.
#[test]
fn maps_keep_every_item_in_place_while_workers_are_killed_at_random() {
    let path = if SHM { "shm" } else { "sockets" };
    let out = crate::common::pool_scenario(&["map-soak", "40", path]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok"), "{out:?}");
}

#[tokio::test]
async fn zero_processes_is_refused() {
    assert!(matches!(builder().processes(0).build().await, Err(Error::InvalidArgument(_))));
}

#[tokio::test]
async fn join_before_close_is_refused() {
    let pool = builder().processes(1).build().await.expect("pool");
    assert!(matches!(pool.join().await, Err(Error::PoolRunning)));
    pool.close();
    assert!(matches!(pool.map(square, 0..3).await, Err(Error::Closed(_))));
    pool.join().await.expect("join");
}
