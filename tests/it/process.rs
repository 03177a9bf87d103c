//! `Process`: lifecycle, exit codes, identity and isolation, under both start
//! methods.

use std::time::Duration;

use multiproc::{Error, Event, Process, StartMethod};

use crate::common::{open_fds, pid_alive};
use crate::per_method;

#[multiproc::task]
fn returns() {}

#[multiproc::task]
fn exit_with(code: i32) {
    std::process::exit(code)
}

#[multiproc::task]
fn panics() {
    panic!("boom from a child")
}

#[multiproc::task]
fn block_forever() {
    loop {
        std::thread::park();
    }
}

/// Exits 0 when this process's parent is `pid` named `name`, else 3.
#[multiproc::task]
fn check_parent(pid: u32, name: String) {
    let ok = multiproc::parent_process().is_some_and(|p| p.pid == pid && p.name == name);
    std::process::exit(if ok { 0 } else { 3 })
}

/// Starts a grandchild that checks its parent is this process; exits with the
/// grandchild's code plus 40.
#[multiproc::task]
async fn start_grandchild(spawn: bool) {
    let me = multiproc::current_process();
    let method = if spawn { StartMethod::Spawn } else { StartMethod::Forkserver };
    let mut p = Process::new(check_parent, (me.pid, me.name.clone())).start_method(method);
    p.start().await.expect("start grandchild");
    assert!(p.get_name().starts_with(&format!("{}:", me.name)), "grandchild name {}", p.get_name());
    let code = p.join().await.expect("join grandchild");
    std::process::exit(40 + code)
}

/// Tries to start a child from here; exits 5 on `DaemonicChildren`.
#[multiproc::task]
async fn try_child_from_daemon() {
    let mut p = Process::new(returns, ());
    let code = match p.start().await {
        Err(Error::DaemonicChildren) => 5,
        Err(_) => 6,
        Ok(()) => 7,
    };
    std::process::exit(code)
}

/// Exits with the number of fds this process has open.
#[multiproc::task]
fn exit_with_fd_count() {
    std::process::exit(open_fds() as i32)
}

/// Waits for `go`, then exits with `code`, or raises signal `-code`.
#[multiproc::task]
fn end_when_set(go: Event, code: i32) {
    go.blocking_wait().expect("wait");
    if let Ok(signal) = nix::sys::signal::Signal::try_from(-code) {
        let _ = nix::sys::signal::raise(signal);
    }
    std::process::exit(code)
}

fn not_registered() {}

per_method!(
    exit_codes,
    join_timeout_zero_returns_while_running,
    daemon_flag,
    active_children_tracks_running,
    parent_is_right_in_child,
    grandchild,
    daemonic_process_cannot_have_children,
    hundred_terminated_together,
    child_fds_do_not_grow_with_siblings,
);

async fn run(p: &mut Process) -> i32 {
    p.start().await.expect("start");
    p.join().await.expect("join")
}

async fn exit_codes(m: StartMethod) {
    let mut p = Process::new(returns, ()).start_method(m);
    assert_eq!(p.exitcode(), None, "before start");
    assert!(matches!(p.join().await, Err(Error::NotStarted)));
    assert_eq!(run(&mut p).await, 0);
    assert_eq!(p.exitcode(), Some(0));
    assert!(!p.is_alive());
    assert!(matches!(p.start().await, Err(Error::AlreadyStarted)));

    assert_eq!(run(&mut Process::new(exit_with, (8,)).start_method(m)).await, 8);
    assert_eq!(run(&mut Process::new(panics, ()).start_method(m)).await, 1);

    let mut p = Process::new(block_forever, ()).start_method(m);
    p.start().await.expect("start");
    assert_eq!(p.exitcode(), None, "while running");
    p.terminate().expect("terminate");
    assert_eq!(p.join().await.expect("join"), -15);
    assert_eq!(p.exitcode(), Some(-15));
    p.close().expect("close after exit");
    assert!(matches!(p.join().await, Err(Error::Closed(_))));
    assert_eq!(p.pid(), None);

    let mut p = Process::new(block_forever, ()).start_method(m);
    p.start().await.expect("start");
    p.kill().expect("kill");
    assert_eq!(p.join().await.expect("join"), -9);
}

async fn join_timeout_zero_returns_while_running(m: StartMethod) {
    let mut p = Process::new(block_forever, ()).start_method(m);
    p.start().await.expect("start");
    assert_eq!(p.join_timeout(Duration::ZERO).await.expect("join_timeout"), None);
    assert!(p.is_alive());
    assert!(matches!(p.close(), Err(Error::StillRunning)), "close of a running process");
    p.kill().expect("kill");
    assert_eq!(p.join_timeout(Duration::from_secs(30)).await.expect("join"), Some(-9));
}

async fn daemon_flag(m: StartMethod) {
    let mut p = Process::new(returns, ()).start_method(m);
    assert!(!p.is_daemon(), "daemon defaults to the parent's flag, false in the main process");
    p.set_daemon(true).expect("set before start");
    assert!(p.is_daemon());
    p.start().await.expect("start");
    assert!(matches!(p.set_daemon(false), Err(Error::AlreadyStarted)));
    assert!(p.is_daemon());
    p.join().await.expect("join");
}

async fn active_children_tracks_running(m: StartMethod) {
    let mut p = Process::new(block_forever, ()).name("watched").start_method(m);
    p.start().await.expect("start");
    let pid = p.pid().expect("pid");
    let listed = multiproc::active_children();
    assert!(listed.iter().any(|c| c.pid == pid && c.name == "watched"), "{listed:?}");
    p.terminate().expect("terminate");
    p.join().await.expect("join");
    assert!(!multiproc::active_children().iter().any(|c| c.pid == pid));
}

async fn parent_is_right_in_child(m: StartMethod) {
    assert!(multiproc::parent_process().is_none(), "the main process has no parent process");
    assert_eq!(multiproc::current_process().name, "MainProcess");
    let me = std::process::id();
    assert_eq!(run(&mut Process::new(check_parent, (me, "MainProcess".to_string())).start_method(m)).await, 0);
    assert_eq!(run(&mut Process::new(check_parent, (me + 1, "MainProcess".to_string())).start_method(m)).await, 3);
}

async fn grandchild(m: StartMethod) {
    let spawn = m == StartMethod::Spawn;
    assert_eq!(run(&mut Process::new(start_grandchild, (spawn,)).start_method(m)).await, 40);
}

async fn daemonic_process_cannot_have_children(m: StartMethod) {
    let mut p = Process::new(try_child_from_daemon, ()).daemon(true).start_method(m);
    assert_eq!(run(&mut p).await, 5);
}

async fn hundred_terminated_together(m: StartMethod) {
    let mut all = Vec::new();
    for _ in 0..100 {
        let mut p = Process::new(block_forever, ()).start_method(m);
        p.start().await.expect("start");
        all.push(p);
    }
    for p in &all {
        p.terminate().expect("terminate");
    }
    for p in &all {
        assert_eq!(p.join().await.expect("join"), -15);
        assert!(!pid_alive(p.pid().expect("pid")));
    }
}

async fn child_fds_do_not_grow_with_siblings(m: StartMethod) {
    let alone = run(&mut Process::new(exit_with_fd_count, ()).start_method(m)).await;
    let mut siblings = Vec::new();
    for _ in 0..20 {
        let mut p = Process::new(block_forever, ()).start_method(m);
        p.start().await.expect("start");
        siblings.push(p);
    }
    let crowded = run(&mut Process::new(exit_with_fd_count, ()).start_method(m)).await;
    for p in &siblings {
        p.kill().expect("kill");
        p.join().await.expect("join");
    }
    assert!(alone > 0, "the child counted its fds");
    assert_eq!(alone, crowded, "a child's fds must not depend on how many siblings exist");
}

#[tokio::test]
async fn unregistered_function_is_a_typed_error() {
    let mut p = Process::new(not_registered, ());
    match p.start().await {
        Err(e @ Error::UnregisteredTask { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("not_registered") && msg.contains("#[multiproc::task]"), "{msg}");
        }
        other => panic!("expected UnregisteredTask, got {other:?}"),
    }
    assert_eq!(p.pid(), None);
}

#[tokio::test]
async fn process_names_count_up() {
    let a = Process::new(returns, ());
    let b = Process::new(returns, ());
    let na: u32 = a.get_name().strip_prefix("Process-").and_then(|n| n.parse().ok()).expect("Process-N");
    let nb: u32 = b.get_name().strip_prefix("Process-").and_then(|n| n.parse().ok()).expect("Process-N");
    assert!(nb > na);
}

/// The forkserver (the parent of every child), stopped until this is
/// dropped.
struct Stopped(nix::unistd::Pid);

impl Stopped {
    fn parent_of(pid: u32) -> Self {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        let ppid: i32 = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .expect("ppid");
        let parent = nix::unistd::Pid::from_raw(ppid);
        nix::sys::signal::kill(parent, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
        Self(parent)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}

/// The state letter of `/proc/<pid>/stat` (`Z` for a zombie).
fn state_of(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.split_whitespace().next()?.chars().next()
}

/// `join` learns a child's end the moment it is a zombie, from the child's
/// own pidfd: with the forkserver stopped, so that it can neither reap nor
/// report, an exit code and a killing signal still arrive, right, and the
/// children are still unreaped zombies when they do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_learns_an_end_without_the_forkserver() {
    let go = Event::new().expect("event");
    let mut coded = Process::new(end_when_set, (go.clone(), 7)).start_method(StartMethod::Forkserver);
    let mut killed = Process::new(end_when_set, (go.clone(), -9)).start_method(StartMethod::Forkserver);
    coded.start().await.expect("start");
    killed.start().await.expect("start");
    let pids = [coded.pid().expect("pid"), killed.pid().expect("pid")];
    let forkserver = Stopped::parent_of(pids[0]);
    go.set();
    let limit = Duration::from_secs(30);
    assert_eq!(coded.join_timeout(limit).await.expect("join"), Some(7));
    assert_eq!(killed.join_timeout(limit).await.expect("join"), Some(-9));
    assert_eq!(pids.map(state_of), [Some('Z'); 2], "reaped: the forkserver ran");
    drop(forkserver);
}
