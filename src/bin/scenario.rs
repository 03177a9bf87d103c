//! Fault scenarios that must run in a process of their own (they kill the
//! forkserver, or get killed themselves). Used by `tests/it/faults.rs`.
//!
//! e2e-args: forkserver-killed
//! e2e-args: fds-stable
//! e2e-args: orderly-exit
//! e2e-args: tracker-killed
//!
//! `scenario forkserver-killed`: kills the forkserver between two starts and
//! with a child running; prints `ok` when everything behaved.
//! `scenario tree`: starts children and a grandchild under both start methods,
//! prints `ready`, then waits to be SIGKILLed.
//! `scenario fds-stable`: starts and joins many processes under both start
//! methods and prints `ok` if neither this process's open fds nor the
//! forkserver's grew.
//! `scenario shm-tree`: creates shared memory here and in a child (which also
//! holds a `Value`, an `Array`, a taken `Lock`, a `Queue` and the parent's
//! segment), prints `tree <pid>`, `child <pid>`, the segment names and
//! `ready`, then waits to be SIGKILLed with its children.
//! `scenario shm-orderly-exit`: creates a segment a child attaches, prints
//! `segment <name>` and `tracker <pid>`, returns from `main` without
//! unlinking it.
//! `scenario tracker-killed`: kills the resource tracker between two uses;
//! prints `ok` when the second use worked.
//! `scenario orderly-exit`: starts a daemonic child that never ends and a
//! non-daemonic one that finishes a little later, then returns from `main`.
//! `scenario group-sigterm-drain`: starts a pool map whose calls wait for a
//! go, prints `ready` once one runs, and on SIGTERM (sent to the whole
//! process group) gives the go, collects every result, closes the pool and
//! prints `drained <n>`.
//! `scenario tracker-restart`: kills the resource tracker while a child
//! holds a segment, and checks that the root, that child, a later forked
//! child and a later spawned child all find the one new tracker; prints `ok`.
//! `scenario shm-orphans`: creates a segment and a second one, prints
//! `segment <name>` for each, `tracker <pid>` and `ready`, then waits to be
//! killed.
//! `scenario shm-use`: creates, syncs and unlinks a segment (so a tracker
//! of its own starts and sweeps leftovers); prints `ok`.
//! `scenario spare-killed`: checks the forkserver's spare child (it holds
//! only its link) and kills it before a start; prints `ok`.
//! `scenario spares-killed`: kills spares at random moments while starts
//! run back to back, under both start methods; prints a line of counts per
//! method, then `ok`.

use multiproc::{Array, Error, Event, Lock, Pool, Process, Queue, SharedMemory, StartMethod, Value};

#[multiproc::task]
fn returns() {}

#[multiproc::task]
fn block_forever() {
    loop {
        std::thread::park();
    }
}

#[multiproc::task]
async fn child_with_grandchild() {
    let mut p = Process::new(block_forever, ());
    p.start().await.expect("start grandchild");
    println!("grandchild {}", p.pid().expect("pid"));
    p.join().await.expect("join");
}

/// Finishes only after `main` has returned (which sets `main_returned`).
#[multiproc::task]
fn finish_later(main_returned: Event) {
    main_returned.blocking_wait().expect("wait");
    println!("non-daemon finished");
}

async fn orderly_exit() {
    let main_returned = Event::new().expect("event");
    let children =
        [(true, Process::new(block_forever, ())), (false, Process::new(finish_later, (main_returned.clone(),)))];
    for (daemon, p) in children {
        let mut p = p.daemon(daemon);
        p.start().await.expect("start");
        println!("child {} daemon={daemon}", p.pid().expect("pid"));
    }
    println!("main returns");
    main_returned.set();
}

fn open_fds() -> usize {
    fds_of("self")
}

fn fds_of(pid: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).expect("/proc/<pid>/fd")
}

/// Fds the forkserver may hold for a moment besides its steady set: a
/// spare being forked (its link pair and pidfd) and a child reaped but not
/// yet dropped (its pidfd, report socket and former spare's link).
const FORKSERVER_FD_SLACK: usize = 6;

async fn fds_stable() {
    // Each cycle is four starts; returns the forkserver's pid.
    let cycle = || async {
        let mut forkserver = 0;
        for method in [StartMethod::Forkserver, StartMethod::Spawn] {
            let mut p = Process::new(returns, ()).start_method(method);
            p.start().await.expect("start");
            p.join().await.expect("join");
            let mut p = Process::new(block_forever, ()).start_method(method);
            p.start().await.expect("start");
            forkserver = parent_of(p.pid().expect("pid")).expect("the child's parent");
            p.kill().expect("kill");
            p.join().await.expect("join");
        }
        forkserver
    };
    let forkserver = cycle().await;
    let before = open_fds();
    let forkserver_before = fds_of(&forkserver.to_string());
    for _ in 0..25 {
        assert_eq!(cycle().await, forkserver, "the forkserver was replaced");
    }
    let after = open_fds();
    assert_eq!(before, after, "open fds grew from {before} to {after}");
    // A leak of one fd per start would be 100 more.
    let forkserver_after = fds_of(&forkserver.to_string());
    assert!(
        forkserver_after <= forkserver_before + FORKSERVER_FD_SLACK,
        "the forkserver's open fds grew from {forkserver_before} to {forkserver_after} over 100 starts"
    );
    println!("ok");
}

#[multiproc::task]
fn create_and_hold(
    held: SharedMemory,
    value: Value<u64>,
    array: Array<i32>,
    lock: Lock,
    queue: Queue<u32>,
    printed: multiproc::Event,
) {
    let shm = SharedMemory::create(4096).expect("create in the child");
    // Die holding everything: a lock taken, a queue with an item in it,
    // values written, the parent's segment mapped.
    let _guard = lock.blocking_acquire().expect("acquire");
    queue.blocking_put(7).expect("put");
    value.set(42);
    array.set(0, -1).expect("set");
    held.write(0, b"held").expect("write");
    println!("segment {}", shm.name());
    printed.set();
    loop {
        std::thread::park();
    }
}

async fn shm_tree() {
    let shm = SharedMemory::create(4096).expect("create");
    println!("segment {}", shm.name());
    let printed = multiproc::Event::new().expect("event");
    let args = (
        SharedMemory::attach(shm.name()).expect("attach"),
        Value::new(0u64).expect("value"),
        Array::<i32>::zeroed(8).expect("array"),
        Lock::new().expect("lock"),
        Queue::<u32>::new().expect("queue"),
        printed.clone(),
    );
    let mut p = Process::new(create_and_hold, args);
    p.start().await.expect("start");
    println!("tree {}", std::process::id());
    println!("child {}", p.pid().expect("pid"));
    // The child sets the event once its segment line is written, so "ready"
    // always follows it.
    printed.wait().await.expect("the child reports its segment");
    println!("tracker {}", multiproc::__private::tracker_sync().expect("tracker"));
    println!("ready");
    std::future::pending::<()>().await;
}

#[multiproc::task]
fn attach_and_exit(name: String) {
    SharedMemory::attach(&name).expect("attach").write(0, b"x").expect("write");
}

/// Creates a segment, lets a child attach it, and returns from `main`
/// without unlinking it: the tracker unlinks it after we exit.
async fn shm_orderly_exit() {
    let shm = SharedMemory::create(64).expect("create");
    let mut p = Process::new(attach_and_exit, (shm.name().to_owned(),));
    p.start().await.expect("start");
    assert_eq!(p.join().await.expect("join"), 0);
    println!("segment {}", shm.name());
    println!("tracker {}", multiproc::__private::tracker_sync().expect("tracker"));
}

fn tracker_killed() {
    let first = SharedMemory::create(64).expect("create");
    let tracker = multiproc::__private::tracker_sync().expect("sync");
    assert_ne!(parent_of(tracker), Some(std::process::id()), "the tracker is not our child");
    kill_and_wait(tracker);
    let second = SharedMemory::create(64).expect("create after the tracker died");
    let new = multiproc::__private::tracker_sync().expect("sync");
    assert_ne!(new, tracker, "a new tracker");
    assert!(zombie_children().is_empty(), "no zombie of ours: {:?}", zombie_children());
    first.unlink().expect("unlink");
    second.unlink().expect("unlink");
    println!("ok");
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.split_whitespace().nth(1)?.parse().ok()
}

/// This process's children that are zombies.
fn zombie_children() -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let mut rest = stat.rsplit(')').next().unwrap_or("").split_whitespace();
            let state = rest.next();
            let ppid = rest.next().and_then(|p| p.parse::<u32>().ok());
            state == Some("Z") && ppid == Some(me)
        })
        .collect()
}

/// SIGKILLs `pid` and waits until it has exited (its pidfd turns readable).
fn kill_and_wait(pid: u32) {
    wait_exited(&kill_via_pidfd(pid).expect("a process to kill"));
}

/// SIGKILLs `pid` through a pidfd (so never a process that reused its pid
/// meanwhile); `None` when it is gone already.
fn kill_via_pidfd(pid: u32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::AsFd;
    let pidfd = multiproc_sys::process::pidfd_open(pid as i32).ok()?;
    multiproc_sys::process::pidfd_send_signal(pidfd.as_fd(), nix::libc::SIGKILL).ok()?;
    Some(pidfd)
}

/// Waits until the process behind `pidfd` has exited.
fn wait_exited(pidfd: &std::os::fd::OwnedFd) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    poll(&mut [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)], PollTimeout::NONE).expect("wait for its exit");
}

#[multiproc::task]
fn hold_then_create(held: SharedMemory, go: Event, pids: Queue<u32>) {
    held.write(0, b"held").expect("write");
    pids.blocking_put(multiproc::__private::tracker_sync().expect("sync")).expect("put");
    go.blocking_wait().expect("wait");
    let mine = SharedMemory::create(64).expect("create after the restart");
    pids.blocking_put(multiproc::__private::tracker_sync().expect("sync")).expect("put");
    mine.unlink().expect("unlink");
}

#[multiproc::task]
fn report_tracker(pids: Queue<u32>) {
    let shm = SharedMemory::create(64).expect("create");
    pids.blocking_put(multiproc::__private::tracker_sync().expect("sync")).expect("put");
    shm.unlink().expect("unlink");
}

/// Processes whose environment says they are the tracker of the tree
/// `tree`.
fn trackers_of(tree: &str) -> Vec<u32> {
    let role = b"MULTIPROC_ROLE=tracker".as_slice();
    let tree = format!("MULTIPROC_TREE={tree}");
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                let vars: Vec<&[u8]> = env.split(|&b| b == 0).collect();
                vars.contains(&role) && vars.contains(&tree.as_bytes())
            }) && multiproc_sys::pidlock::process_alive(*pid)
        })
        .collect()
}

async fn tracker_restart() {
    let a = SharedMemory::create(64).expect("create");
    let tree = a.name().split('-').nth(2).expect("the tree in the name").to_owned();
    let first = multiproc::__private::tracker_sync().expect("sync");
    let go = Event::new().expect("event");
    let pids = Queue::<u32>::new().expect("queue");
    let mut holder = Process::new(hold_then_create, (a.clone(), go.clone(), pids.clone()));
    holder.start().await.expect("start");
    assert_eq!(pids.get().await.expect("get"), first, "the child uses the tree's tracker");
    kill_and_wait(first);
    let b = SharedMemory::create(64).expect("create after the tracker died");
    let second = multiproc::__private::tracker_sync().expect("sync");
    assert_ne!(second, first, "a new tracker");
    go.set();
    assert_eq!(pids.get().await.expect("get"), second, "the running child found the new tracker");
    assert_eq!(holder.join().await.expect("join"), 0);
    for method in [StartMethod::Forkserver, StartMethod::Spawn] {
        let mut p = Process::new(report_tracker, (pids.clone(),)).start_method(method);
        p.start().await.expect("start");
        assert_eq!(p.join().await.expect("join"), 0);
        assert_eq!(pids.get().await.expect("get"), second, "a child started later ({method:?}) uses it too");
    }
    assert_eq!(trackers_of(&tree), vec![second], "one tracker for the tree");
    assert_ne!(parent_of(second), Some(std::process::id()), "the tracker is not our child");
    assert!(zombie_children().is_empty(), "no zombie of ours: {:?}", zombie_children());
    a.unlink().expect("unlink");
    b.unlink().expect("unlink");
    println!("ok");
}

#[multiproc::task]
fn wait_for_go(i: u32, started: Queue<u32>, go: Event) -> u32 {
    started.blocking_put(i).expect("put");
    go.blocking_wait().expect("wait");
    i * 2
}

async fn group_sigterm_drain() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    let pool = Pool::new(4).await.expect("pool");
    let started = Queue::<u32>::new().expect("queue");
    let go = Event::new().expect("event");
    let items: Vec<(u32, Queue<u32>, Event)> = (0..8).map(|i| (i, started.clone(), go.clone())).collect();
    let map = pool.starmap_async(wait_for_go, items);
    started.get().await.expect("a call is running");
    println!("ready");
    term.recv().await;
    println!("got SIGTERM");
    go.set();
    let results: Vec<u32> = map.await.expect("map").into_iter().map(|r| r.expect("every call succeeds")).collect();
    assert_eq!(results, (0..8).map(|i| i * 2).collect::<Vec<u32>>());
    assert_eq!(pool.stats().workers_replaced, 0, "no worker was lost to the group signal");
    pool.close();
    pool.join().await.expect("join");
    println!("drained {}", results.len());
}

async fn shm_orphans() {
    let held = SharedMemory::create(64).expect("create");
    let orphan = SharedMemory::create(64).expect("create");
    println!("segment {}", held.name());
    println!("segment {}", orphan.name());
    println!("tracker {}", multiproc::__private::tracker_sync().expect("sync"));
    println!("ready");
    std::future::pending::<()>().await;
}

fn shm_use() {
    let shm = SharedMemory::create(64).expect("create");
    multiproc::__private::tracker_sync().expect("sync");
    shm.unlink().expect("unlink");
    println!("ok");
}

/// Pids of this process's direct children whose environment says `role`.
fn children_with_role(role: &str) -> Vec<u32> {
    let me = std::process::id();
    let needle = format!("MULTIPROC_ROLE={role}");
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)).and_then(|p| p.parse().ok());
            ppid == Some(me)
                && std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes()))
        })
        .collect()
}

async fn forkserver_killed() {
    let mut p = Process::new(returns, ());
    p.start().await.expect("first start");
    assert_eq!(p.join().await.expect("join"), 0);

    let mut running = Process::new(block_forever, ());
    running.start().await.expect("start a child to lose");
    let servers = children_with_role("forkserver");
    assert_eq!(servers.len(), 1, "one forkserver: {servers:?}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(servers[0] as i32), nix::sys::signal::Signal::SIGKILL)
        .expect("kill the forkserver");
    match running.join().await {
        Err(Error::ForkserverLost { pid }) => assert_eq!(Some(pid), running.pid()),
        other => panic!("a child of a dead forkserver must report it, got {other:?}"),
    }
    assert!(!running.is_alive());

    let mut p = Process::new(returns, ());
    p.start().await.expect("start after the forkserver died");
    assert_eq!(p.join().await.expect("join"), 0);
    let servers_after = children_with_role("forkserver");
    assert_eq!(servers_after.len(), 1);
    assert_ne!(servers_after, servers, "a new forkserver");
    println!("ok");
}

/// The children of `pid` now: pid, name and state letter (`Z` a zombie).
fn children_of(pid: u32) -> Vec<(u32, String, char)> {
    let list = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    list.split_whitespace()
        .filter_map(|c| c.parse::<u32>().ok())
        .filter_map(|c| {
            let stat = std::fs::read_to_string(format!("/proc/{c}/stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            Some((c, head.split_once('(')?.1.to_owned(), rest.trim_start().chars().next()?))
        })
        .collect()
}

/// The forkserver of this test binary (the parent of a child started with
/// `m`), after one start and join.
async fn forkserver(m: StartMethod) -> u32 {
    let mut p = Process::new(block_forever, ()).start_method(m);
    p.start().await.expect("start");
    let fs = parent_of(p.pid().expect("pid")).expect("the child's parent");
    p.kill().expect("kill");
    p.join().await.expect("join");
    fs
}

/// After a start the forkserver keeps a spare child forked ahead of the
/// next one; it holds nothing but its link (one socket beside stdio), and
/// killing it costs the next start nothing: the start forks instead, and the
/// dead spare is reaped, not left a zombie.
async fn spare_killed() {
    let fs = forkserver(StartMethod::Forkserver).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let spare = loop {
        if let Some((pid, ..)) =
            children_of(fs).into_iter().find(|(_, comm, state)| comm == "mp-spare" && *state != 'Z')
        {
            break pid;
        }
        assert!(std::time::Instant::now() < deadline, "no spare appeared: {:?}", children_of(fs));
        tokio::task::yield_now().await;
    };
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{spare}/fd"))
        .expect("/proc/<spare>/fd")
        .flatten()
        .filter(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()).is_some_and(|n| n > 2))
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .collect();
    assert!(fds.len() == 1 && fds[0].starts_with("socket:["), "the spare holds only its link: {fds:?}");
    // Until it is dead its link still takes a request (and that start
    // would fail as a lost worker, as for any child killed that early).
    kill_and_wait(spare);
    let mut p = Process::new(returns, ()).start_method(StartMethod::Forkserver);
    p.start().await.expect("a start right after its spare was killed");
    assert_eq!(p.join().await.expect("join"), 0);
    // Serving that start reaped the dead spare, one way or the other.
    assert!(
        children_of(fs).iter().all(|(pid, ..)| *pid != spare),
        "the killed spare was not reaped: {:?}",
        children_of(fs)
    );
    println!("ok");
}

/// A thread SIGKILLs the forkserver's spare at random moments (before it is
/// handed a request, while it is, or just after) while starts run back to
/// back: every start either succeeds or fails as a lost worker, every
/// join ends, the forkserver keeps serving, and no child is left a zombie.
/// Spins for `spin_us` microseconds, then exits with `code`.
#[multiproc::task]
fn exit_after(code: i32, spin_us: u64) {
    let until = std::time::Instant::now() + std::time::Duration::from_micros(spin_us);
    while std::time::Instant::now() < until {
        std::hint::spin_loop();
    }
    std::process::exit(code)
}

/// One step of a xorshift generator: picks moments, cheaply and seeded.
fn next_random(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// A thread SIGKILLing children of a forkserver at random moments while
/// starts run back to back.
struct Killer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    killed: std::sync::Arc<std::sync::Mutex<Vec<std::os::fd::OwnedFd>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Killer {
    /// Watches the children of `fs`; `pick(name, random)` says how many
    /// microseconds to wait before killing one, or `None` to spare it.
    fn start(fs: u32, pick: impl Fn(&str, u64) -> Option<u64> + Send + 'static) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let killed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (halt, record) = (stop.clone(), killed.clone());
        let thread = std::thread::spawn(move || {
            let mut seed = u64::from(std::process::id()) | 1;
            while !halt.load(Ordering::Relaxed) {
                for (pid, comm, _) in children_of(fs) {
                    let Some(wait) = pick(&comm, next_random(&mut seed)) else { continue };
                    std::thread::sleep(std::time::Duration::from_micros(wait));
                    if let Some(pidfd) = kill_via_pidfd(pid) {
                        record.lock().expect("killed").push(pidfd);
                    }
                }
                std::thread::yield_now();
            }
        });
        Self { stop, killed, thread }
    }

    /// Stops, and waits until every process it killed has exited: how many
    /// it killed.
    fn finish(self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("killer");
        let killed = std::mem::take(&mut *self.killed.lock().expect("killed"));
        killed.iter().for_each(wait_exited);
        killed.len()
    }
}

/// Starts start `i` and joins it, each within a minute (a hang panics):
/// its exit code, or `None` when it was lost before accepting its target.
async fn start_and_join(p: &mut Process, i: u32) -> Option<i32> {
    let limit = std::time::Duration::from_secs(60);
    match tokio::time::timeout(limit, p.start()).await.unwrap_or_else(|_| panic!("start {i} hung")) {
        Ok(()) => {
            let code = tokio::time::timeout(limit, p.join()).await.unwrap_or_else(|_| panic!("join {i} hung"));
            Some(code.expect("join"))
        }
        Err(multiproc::Error::WorkerLost { .. }) => None,
        Err(e) => panic!("start {i}: {e}"),
    }
}

/// The zombies among `fs`'s children but `last`, the child joined last:
/// `join` returns once a child is a zombie (its own pidfd says so), maybe
/// before the forkserver reaps it, while every child before it was reaped
/// before the next start was served (the forkserver reaps what exited
/// before it reads requests).
fn zombies_but(fs: u32, last: u32) -> Vec<(u32, String, char)> {
    children_of(fs).into_iter().filter(|(pid, _, state)| *state == 'Z' && *pid != last).collect()
}

/// Children SIGKILLed at random moments around their own exit (before it,
/// inside it, as zombies), while starts and joins run back to back: every
/// join returns the child's own code or -9, whichever ended it, never
/// another code and never a hang (a child's end is read from its own pidfd
/// and `/proc` as well as from the forkserver's report).
async fn exits_killed_at_random(m: StartMethod, starts: u32) {
    let fs = forkserver(m).await;
    // Children of odd starts are killed, those of even starts spared:
    // theirs must be their own codes.
    let killer = Killer::start(fs, |comm, r| {
        let start = comm.strip_prefix("exits-").and_then(|n| n.parse::<u32>().ok())?;
        (start % 2 == 1).then_some(r % 400)
    });
    let (mut coded, mut signalled, mut lost) = (0, 0, 0);
    let mut seed = u64::from(std::process::id()).rotate_left(17) | 1;
    let mut last = 0;
    for i in 0..starts {
        let code = i32::try_from(i % 120).expect("small") + 1;
        let spin = next_random(&mut seed) % 2000;
        let mut p = Process::new(exit_after, (code, spin)).name(format!("exits-{i}")).start_method(m);
        match start_and_join(&mut p, i).await {
            Some(c) if c == code => coded += 1,
            got if i % 2 == 0 => panic!("start {i} was spared: exit code {got:?}, expected {code}"),
            Some(-9) => signalled += 1,
            Some(other) => panic!("start {i}: exit code {other}, expected {code} or -9"),
            None => lost += 1,
        }
        last = p.pid().unwrap_or(last);
    }
    let kills = killer.finish();
    let counts = format!("{coded} coded, {signalled} killed, {lost} lost at start, {kills} kills");
    assert!(coded > 0 && signalled > 0, "{counts}");
    let zombies = zombies_but(fs, last);
    assert!(zombies.is_empty(), "zombies left: {zombies:?} ({counts})");
    eprintln!("exits-killed {m:?}: {counts}");
}

async fn spares_killed_at_random(m: StartMethod) {
    const STARTS: u32 = 150;
    let fs = forkserver(m).await;
    // A random moment within a start's span.
    let killer = Killer::start(fs, |comm, r| (comm == "mp-spare").then_some(r % 1500));
    let (mut ran, mut lost) = (0, 0);
    for i in 0..STARTS {
        let mut p = Process::new(returns, ()).start_method(m);
        // 0, or -9 when a kill meant for the spare found it just after it
        // became this child.
        match start_and_join(&mut p, i).await {
            Some(0) => ran += 1,
            Some(-9) | None => lost += 1,
            Some(other) => panic!("start {i}: exit code {other}"),
        }
    }
    let kills = killer.finish();
    assert!(kills > 0, "no spare was ever seen to kill");
    assert!(ran > 0, "{ran} ran, {lost} lost, {kills} kills");
    // The forkserver still serves, and reaped everything it forked.
    let mut p = Process::new(returns, ()).start_method(m);
    p.start().await.expect("start after the storm");
    let last = p.pid().expect("pid");
    assert_eq!(p.join().await.expect("join"), 0);
    let zombies = zombies_but(fs, last);
    assert!(zombies.is_empty(), "zombies left: {zombies:?} ({kills} kills, {ran} ran, {lost} lost)");
    println!("{m:?}: {STARTS} starts, {kills} spares killed, {ran} ran, {lost} lost");
}

async fn tree() {
    // Play a terminal's foreground program: default actions for the group
    // signals, whatever this process inherited (a shell's background job
    // starts with SIGINT and SIGQUIT ignored, nohup with SIGHUP ignored, and
    // the Ctrl-C test then waited forever for a program that ignored it).
    for sig in [nix::libc::SIGINT, nix::libc::SIGQUIT, nix::libc::SIGHUP] {
        multiproc_sys::process::default_signal(sig).expect("restore a signal's default action");
    }
    let mut keep = Vec::new();
    for method in [StartMethod::Forkserver, StartMethod::Spawn] {
        let mut p = Process::new(block_forever, ()).start_method(method);
        p.start().await.expect("start");
        println!("child {}", p.pid().expect("pid"));
        keep.push(p);
        let mut p = Process::new(child_with_grandchild, ()).start_method(method);
        p.start().await.expect("start");
        println!("child {}", p.pid().expect("pid"));
        keep.push(p);
    }
    println!("ready");
    std::future::pending::<()>().await;
}

#[tokio::main]
async fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("forkserver-killed") => forkserver_killed().await,
        Some("tree") => tree().await,
        Some("orderly-exit") => orderly_exit().await,
        Some("fds-stable") => fds_stable().await,
        Some("shm-tree") => shm_tree().await,
        Some("shm-orderly-exit") => shm_orderly_exit().await,
        Some("tracker-killed") => tracker_killed(),
        Some("tracker-restart") => tracker_restart().await,
        Some("group-sigterm-drain") => group_sigterm_drain().await,
        Some("shm-orphans") => shm_orphans().await,
        Some("shm-use") => shm_use(),
        Some("spare-killed") => spare_killed().await,
        Some("exits-killed") => {
            exits_killed_at_random(StartMethod::Forkserver, 300).await;
            exits_killed_at_random(StartMethod::Spawn, 60).await;
            println!("ok");
        }
        Some("spares-killed") => {
            spares_killed_at_random(StartMethod::Forkserver).await;
            spares_killed_at_random(StartMethod::Spawn).await;
            println!("ok");
        }
        other => {
            eprintln!("usage: scenario forkserver-killed|tree (got {other:?})");
            std::process::exit(2);
        }
    }
}
