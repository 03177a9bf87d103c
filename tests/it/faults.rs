//! Faults that need a process of their own: a killed forkserver, a killed
//! parent. They run `src/bin/scenario.rs`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::pid_alive;

const SCENARIO: &str = env!("CARGO_BIN_EXE_scenario");

/// Runs `scenario ARG` and checks it succeeded and printed `ok`.
fn scenario_says_ok(arg: &str) {
    let out = Command::new(SCENARIO).arg(arg).output().expect("run scenario");
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok"), "{out:?}");
}

#[test]
fn forkserver_killed_between_starts_is_restarted() {
    scenario_says_ok("forkserver-killed");
}

/// The forkserver's spare child holds only its link, and a start right
/// after it was killed forks instead (and reaps it).
#[test]
fn a_killed_spare_costs_no_start() {
    scenario_says_ok("spare-killed");
}

/// Children SIGKILLed at random moments around their exit: every join
/// returns the child's code or -9, never another code, never a hang.
#[test]
fn joins_are_right_for_children_killed_around_their_exit() {
    scenario_says_ok("exits-killed");
}

/// Spares SIGKILLed at random moments while starts run back to back: every
/// start succeeds or fails as a lost worker, nothing hangs, no zombie.
#[test]
fn starts_survive_spares_killed_at_random_moments() {
    scenario_says_ok("spares-killed");
}

/// Every descendant of `root`, found through /proc.
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if let Some(ppid) =
            stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)).and_then(|p| p.parse().ok())
        {
            parent_of.push((pid, ppid));
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}

#[test]
fn parent_sigkilled_leaves_no_child_alive() {
    tree_dies_with_its_parent(|parent| parent.kill().expect("SIGKILL the parent"));
}

#[test]
fn ctrl_c_to_the_process_group_leaves_no_child_alive() {
    tree_dies_with_its_parent(|parent| {
        // What a terminal does on Ctrl-C: SIGINT to the whole foreground group.
        let group = nix::unistd::Pid::from_raw(-(parent.id() as i32));
        nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGINT).expect("SIGINT the group");
    });
}

fn tree_dies_with_its_parent(stop: impl FnOnce(&mut std::process::Child)) {
    use std::os::unix::process::CommandExt;
    let mut parent =
        Command::new(SCENARIO).arg("tree").stdout(Stdio::piped()).process_group(0).spawn().expect("run scenario");
    let mut lines = BufReader::new(parent.stdout.take().expect("stdout")).lines();
    let mut reported = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("line");
        if line == "ready" {
            break;
        }
        if let Some(pid) = line.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) {
            reported.push(pid);
        }
    }
    let tree = descendants(parent.id());
    // 4 children, 2 grandchildren, and at least one forkserver.
    assert!(reported.len() >= 4, "reported {reported:?}");
    for pid in &reported {
        assert!(tree.contains(pid), "{pid} is in the tree {tree:?}");
    }
    stop(&mut parent);
    let parent_gone = crate::shared_memory::exits_within(parent.id(), Duration::from_secs(10));
    if !parent_gone {
        let _ = parent.kill();
    }
    parent.wait().expect("reap the parent");
    assert!(parent_gone, "the parent outlived its stop by 10 s");
    let deadline = Instant::now() + Duration::from_secs(5);
    for &pid in &tree {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(crate::shared_memory::exits_within(pid, left), "{pid} still alive 5 s after the parent died");
        assert!(!pid_alive(pid));
    }
}

#[test]
fn orderly_exit_terminates_daemons_and_waits_for_the_rest() {
    let out = Command::new(SCENARIO).arg("orderly-exit").output().expect("run scenario");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let returned = stdout.find("main returns").expect("main returned");
    let finished = stdout.find("non-daemon finished").expect("the non-daemonic child ran to its end");
    assert!(returned < finished, "the program waited for its child after main returned:\n{stdout}");
    for pid in stdout.lines().filter_map(|l| l.strip_prefix("child ")?.split_whitespace().next()?.parse::<u32>().ok()) {
        assert!(!pid_alive(pid), "child {pid} outlived an orderly exit");
    }
}

#[test]
fn starting_and_joining_leaks_no_fd_in_the_parent() {
    scenario_says_ok("fds-stable");
}

/// `kill -TERM -<pgid>` (what systemd and `kill` on a job send) while a
/// pool map runs: the forkserver and the pool workers live through it, and
/// the application, which handles SIGTERM itself, drains every in-flight
/// call before closing its pool.
#[test]
fn a_group_sigterm_during_a_pool_map_lets_the_application_drain() {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let mut app = Command::new(SCENARIO)
        .arg("group-sigterm-drain")
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("run scenario");
    let mut stdout = BufReader::new(app.stdout.take().expect("stdout"));
    let mut line = String::new();
    while line.trim_end() != "ready" {
        line.clear();
        assert!(stdout.read_line(&mut line).expect("read") > 0, "the scenario ended before a call ran");
    }
    let group = nix::unistd::Pid::from_raw(-(app.id() as i32));
    nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM the group");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("read");
    let status = app.wait().expect("reap");
    assert!(status.success() && rest.contains("drained 8"), "{status:?}\n{rest}");
}
