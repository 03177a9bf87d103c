//! The process tree under load and under signals: bursts of starts past the
//! `SCM_RIGHTS` limit, children that hold nothing of their siblings, and the
//! group-signal policy.

use std::collections::{HashMap, HashSet};

use futures::future::join_all;
use multiproc::{GroupSignals, Pool, Process, Queue, StartMethod};

use crate::common::pid_alive;
use crate::per_method;

#[multiproc::task]
fn block_forever() {
    loop {
        std::thread::park();
    }
}

#[multiproc::task]
fn pid_of_worker(_: u32) -> u32 {
    std::process::id()
}

/// Echoes every number from `inbox` to `outbox`, for ever.
#[multiproc::task]
fn echo(inbox: Queue<u32>, outbox: Queue<u32>) {
    loop {
        let v = inbox.blocking_get().expect("get");
        outbox.blocking_put(v).expect("put");
    }
}

/// The `socket:[inode]` targets in `/proc/<pid>/fd`.
fn sockets_of(pid: u32) -> HashSet<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/<pid>/fd")
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .filter(|t| t.starts_with("socket:["))
        .collect()
}

per_method!(siblings_share_no_sockets, a_shielded_process_outlives_a_stray_sigterm_but_not_terminate);

/// More concurrent starts than one `SCM_RIGHTS` message can carry fds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_300_concurrent_starts() {
    let mut all: Vec<Process> = (0..300).map(|_| Process::new(block_forever, ())).collect();
    let started = join_all(all.iter_mut().map(|p| p.start())).await;
    let failed: Vec<_> = started.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "{} of 300 starts failed, first: {:?}", failed.len(), failed.first());
    let pids: HashSet<u32> = all.iter().map(|p| p.pid().expect("pid")).collect();
    assert_eq!(pids.len(), 300, "300 distinct children");
    for p in &all {
        p.kill().expect("kill");
    }
    for p in &all {
        assert_eq!(p.join().await.expect("join"), -9);
        assert!(!pid_alive(p.pid().expect("pid")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_300_workers() {
    // `new` returns once every worker has started and shaken hands.
    let pool = Pool::new(300).await.expect("Pool::new(300)");
    let results = pool.map(pid_of_worker, 0..600).chunksize(1).await.expect("map");
    let pids: HashSet<u32> = results.into_iter().map(|r| r.expect("item")).collect();
    assert!(!pids.is_empty());
    pool.terminate().await;
}

/// The usual soft fd limit (1024) does not stop a pool of 300 workers on
/// the shared-memory path (6 fds each in the pool's process): the tree
/// raises its soft limit to the hard one, as Go and the JVM do.
#[test]
fn a_pool_of_300_workers_under_the_usual_soft_fd_limit() {
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).expect("fd limit");
    if hard < 4096 {
        eprintln!("skipped: this machine's hard fd limit ({hard}) is too low for 300 workers");
        return;
    }
    let out = crate::common::pool_scenario(&["wide-pool", "300"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("workers 300, distinct pids"), "{stdout}");
    assert!(stdout.contains(&format!("soft fd limit {hard}")), "{stdout}");
}

/// Children started together (so the forkserver reads their spawn requests
/// in one batch) hold no socket of one another's: two siblings never have a
/// `socket:[inode]` in common.
async fn siblings_share_no_sockets(m: StartMethod) {
    let mut all: Vec<Process> = (0..24).map(|_| Process::new(block_forever, ()).start_method(m)).collect();
    for r in join_all(all.iter_mut().map(|p| p.start())).await {
        r.expect("start");
    }
    let mut owners: HashMap<String, Vec<u32>> = HashMap::new();
    for p in &all {
        let pid = p.pid().expect("pid");
        for s in sockets_of(pid) {
            owners.entry(s).or_default().push(pid);
        }
    }
    for p in &all {
        p.kill().expect("kill");
        p.join().await.expect("join");
    }
    let shared: Vec<_> = owners.iter().filter(|(_, pids)| pids.len() > 1).collect();
    assert!(!owners.is_empty(), "each child holds at least its control socket");
    assert!(shared.is_empty(), "sockets held by several siblings: {shared:?}");
}

/// A shielded child ignores a SIGTERM that does not come from its handle
/// (here sent straight to its pid, as a group signal would be), and still
/// ends on `terminate()`. A default child ends on the same stray SIGTERM.
async fn a_shielded_process_outlives_a_stray_sigterm_but_not_terminate(m: StartMethod) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let (inbox, outbox) = (Queue::<u32>::new().expect("queue"), Queue::<u32>::new().expect("queue"));
    let mut p =
        Process::new(echo, (inbox.clone(), outbox.clone())).group_signals(GroupSignals::Shielded).start_method(m);
    p.start().await.expect("start");
    let pid = p.pid().expect("pid");
    // The echo proves the child is running its loop.
    inbox.put(1).await.expect("put");
    assert_eq!(outbox.get().await.expect("get"), 1);
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).expect("stray SIGTERM");
    kill(Pid::from_raw(pid as i32), Signal::SIGINT).expect("stray SIGINT");
    kill(Pid::from_raw(pid as i32), Signal::SIGHUP).expect("stray SIGHUP");
    // The signals were pending before the child could take the next item:
    // an answer means it handled them and lived.
    inbox.put(2).await.expect("put");
    assert_eq!(outbox.get().await.expect("get"), 2, "the shielded child answers after stray signals");
    assert!(p.is_alive());
    p.terminate().expect("terminate");
    assert_eq!(p.join().await.expect("join"), -15, "its own handle's SIGTERM ends it");

    let mut p = Process::new(echo, (inbox.clone(), outbox.clone())).start_method(m);
    p.start().await.expect("start");
    inbox.put(3).await.expect("put");
    assert_eq!(outbox.get().await.expect("get"), 3);
    kill(Pid::from_raw(p.pid().expect("pid") as i32), Signal::SIGTERM).expect("stray SIGTERM");
    assert_eq!(p.join().await.expect("join"), -15, "a default child ends on any SIGTERM");
}

/// `#[multiproc::main]`: roles start after every constructor, so a C static
/// initialiser linked into the program has run in the forkserver a child is
/// forked from (and in a spawned child's own image). At exit, a forked child
/// runs no finaliser of the image it was forked from (as CPython's forked
/// children leave through `os._exit`); a spawned child, a fresh image, runs
/// its own, and so does the program.
#[test]
fn a_c_static_initialiser_runs_before_the_roles_and_its_finaliser_not_in_forked_children() {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_native_init"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run native_init");
    let program = child.id();
    let out = child.wait_with_output().expect("native_init output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("ok"), "{out:?}");
    let pid_of = |how: &str| -> u32 {
        let line = stdout.lines().find_map(|l| l.strip_prefix(how)).unwrap_or_else(|| panic!("no {how} line: {out:?}"));
        line.trim().parse().expect("a pid")
    };
    let ran: Vec<u32> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| l.strip_prefix("c-finaliser-ran-in ")?.trim().parse().ok())
        .collect();
    assert!(!ran.contains(&pid_of("forked ")), "a forked child ran the finaliser: {ran:?} ({out:?})");
    assert!(ran.contains(&pid_of("spawned ")), "the spawned child did not run its finaliser: {ran:?} ({out:?})");
    assert!(ran.contains(&program), "the program did not run its finaliser: {ran:?} ({out:?})");
}

/// `ps` and `top` show what each process is: the child by its name, the
/// forkserver as `mp-forkserver`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_carry_their_names() {
    let comm = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/comm")).expect("comm").trim_end().to_owned();
    let mut p = Process::new(block_forever, ()).name("named-child").start_method(StartMethod::Forkserver);
    p.start().await.expect("start");
    let pid = p.pid().expect("pid");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let forkserver: u32 =
        stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)).and_then(|p| p.parse().ok()).expect("ppid");
    // The child names itself after accepting its target; `Ready` came after.
    assert_eq!(comm(pid), "named-child");
    assert_eq!(comm(forkserver), "mp-forkserver");
    p.kill().expect("kill");
    p.join().await.expect("join");
}
