//! Running one program as a whole process tree: started in a process group of
//! its own with a marker in its environment, waited for with a timeout, and
//! afterwards checked in `/proc` for anything it left behind (processes alive
//! or defunct, in its group or escaped from it, and processes outside it
//! still holding its stdout or stderr).
//!
//! Killing goes through `sh`'s builtin `kill`, which every Unix has: xtask has
//! no dependencies and no `unsafe`.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The variable that marks every process of one run, inherited by
/// descendants even when they leave the process group.
const MARKER_ENV: &str = "XTASK_RUN";

/// One process found in `/proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub name: String,
    /// The state letter of `/proc/PID/stat`: `Z` is a zombie.
    pub state: char,
}

impl std::fmt::Display for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.state == 'Z' { "defunct" } else { "alive" };
        write!(f, "pid {} ({}, {what})", self.pid, self.name)
    }
}

/// How a run ended.
#[derive(Debug)]
pub struct Outcome {
    /// `None` when the program hit the timeout and was killed.
    pub status: Option<ExitStatus>,
    pub elapsed: Duration,
    pub stdout: String,
    pub stderr: String,
    /// Processes of the run still there after the drain period (now killed).
    pub leftovers: Vec<Proc>,
    /// Processes outside the run's tree that still held its stdout or stderr
    /// (an fd leaked to something that outlived it; now killed).
    pub pipe_holders: Vec<Proc>,
}

/// Runs `cmd` as a process tree of its own (stdin closed, stdout and stderr
/// captured), kills the whole tree after `timeout`, then gives what it left
/// behind `drain` to disappear.
pub fn run(mut cmd: Command, timeout: Duration, drain: Duration) -> Result<Outcome, String> {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let marker = format!("{}-{}", std::process::id(), RUNS.fetch_add(1, Ordering::Relaxed));
    let started = Instant::now();
    let mut child = cmd
        .env(MARKER_ENV, &marker)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    let tree = Tree { group: child.id(), marker };
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let pipes = [fd_link(stdout.as_raw_fd()), fd_link(stderr.as_raw_fd())];
    let (done_tx, done_rx) = mpsc::channel();
    let out = collect(stdout, done_tx.clone());
    let err = collect(stderr, done_tx);

    let (status_tx, status_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = status_tx.send(child.wait());
    });
    let status = match status_rx.recv_timeout(timeout) {
        Ok(status) => Some(status.map_err(|e| format!("cannot wait for the program: {e}"))?),
        Err(_) => {
            tree.kill();
            status_rx.recv().map_err(|_| "the waiting thread died".to_owned())?.map_err(|e| e.to_string())?;
            None
        }
    };
    let elapsed = started.elapsed();
    let leftovers = tree.drain(drain);

    // With the tree gone, both pipes reach EOF unless something else holds
    // their write ends.
    let deadline = Instant::now() + drain;
    let mut open = 2;
    while open > 0 && done_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_ok() {
        open -= 1;
    }
    let mut pipe_holders = Vec::new();
    if open > 0 {
        pipe_holders = holders(&pipes);
        kill(&pipe_holders.iter().map(|p| p.pid.to_string()).collect::<Vec<_>>());
    }
    let text = |buf: &Arc<Mutex<Vec<u8>>>| String::from_utf8_lossy(&buf.lock().expect("reader panicked")).into_owned();
    Ok(Outcome { status, elapsed, stdout: text(&out), stderr: text(&err), leftovers, pipe_holders })
}

/// Reads `from` to its end on a thread of its own, then says so on `done`.
fn collect(mut from: impl Read + Send + 'static, done: mpsc::Sender<()>) -> Arc<Mutex<Vec<u8>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&buf);
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        while let Ok(n @ 1..) = from.read(&mut chunk) {
            sink.lock().expect("one writer").extend_from_slice(&chunk[..n]);
        }
        // Closed before saying so: the caller counts its fds next.
        drop(from);
        let _ = done.send(());
    });
    buf
}

/// The processes of one run.
struct Tree {
    group: u32,
    marker: String,
}

impl Tree {
    /// Every process, alive or defunct, in the run's process group or
    /// carrying its marker.
    fn members(&self) -> Vec<Proc> {
        let needle = format!("{MARKER_ENV}={}", self.marker);
        all_pids()
            .filter_map(|pid| {
                let (p, pgrp) = stat(pid)?;
                let marked = || {
                    std::fs::read(format!("/proc/{pid}/environ"))
                        .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
                };
                (pgrp == self.group || marked()).then_some(p)
            })
            .collect()
    }

    fn kill(&self) {
        let mut targets = vec![format!("-{}", self.group)];
        targets.extend(self.members().iter().map(|p| p.pid.to_string()));
        kill(&targets);
    }

    /// Polls until no process of the run is left, at most `within`; then
    /// kills and returns whatever is. "None left" must be seen twice in a
    /// row: a process that left the group (`setsid`) and is in the middle
    /// of an `execve` shows an empty environment for a moment (the new
    /// image's is not set up yet), so one look can miss its marker.
    fn drain(&self, within: Duration) -> Vec<Proc> {
        let deadline = Instant::now() + within;
        let mut seen_empty = false;
        loop {
            let left = self.members();
            if left.is_empty() {
                if seen_empty {
                    return left;
                }
                seen_empty = true;
            } else if Instant::now() > deadline {
                self.kill();
                return left;
            } else {
                seen_empty = false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn all_pids() -> impl Iterator<Item = u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(move |&pid| pid != me)
}

/// A process and its process group, from `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(Proc, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_owned();
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let pgrp = fields.nth(1)?.parse().ok()?;
    Some((Proc { pid, name, state }, pgrp))
}

/// What an fd of this process points to, as `/proc/self/fd` shows it
/// (`pipe:[1234]`).
fn fd_link(fd: i32) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}")).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Other processes holding an fd to any of `links`.
fn holders(links: &[String]) -> Vec<Proc> {
    all_pids()
        .filter(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd")).into_iter().flatten().flatten().any(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|l| links.iter().any(|want| l.as_os_str() == want.as_str()))
            })
        })
        .filter_map(|pid| Some(stat(pid)?.0))
        .collect()
}

/// SIGKILLs `targets` (pids, or `-PGID` for a group) with `sh`'s builtin.
fn kill(targets: &[String]) {
    if targets.is_empty() {
        return;
    }
    let _ = Command::new("sh")
        .args(["-c", "kill -s KILL -- \"$@\" 2>/dev/null", "sh"])
        .args(targets)
        .stdin(Stdio::null())
        .status();
}

/// How many pipes, sockets and other anonymous fds this process has open, to
/// check that runs leak none into the harness (files come and go with other
/// work on other threads).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| {
                let l = l.to_string_lossy();
                ["pipe:", "socket:", "anon_inode:"].iter().any(|kind| l.starts_with(kind))
            })
        })
        .count()
}

/// Tests that run programs take this, so one test's processes, fds and
/// `/dev/shm` entries never show up in another's checks.
#[cfg(test)]
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    const SHORT: Duration = Duration::from_secs(2);

    #[test]
    fn captures_output_and_status() {
        let _serial = serial();
        let o = run(sh("echo out; echo err >&2; exit 3"), SHORT, SHORT).expect("run");
        assert_eq!(o.status.and_then(|s| s.code()), Some(3));
        assert_eq!((o.stdout.as_str(), o.stderr.as_str()), ("out\n", "err\n"));
        assert!(o.leftovers.is_empty() && o.pipe_holders.is_empty());
    }

    #[test]
    fn a_hang_is_killed_with_its_children() {
        let _serial = serial();
        let o = run(sh("sleep 30 & sleep 30"), Duration::from_millis(200), SHORT).expect("run");
        assert!(o.status.is_none(), "timed out");
        assert!(o.leftovers.is_empty(), "the group was killed: {:?}", o.leftovers);
    }

    #[test]
    fn a_child_left_running_is_reported_and_killed() {
        let _serial = serial();
        // The background sleep closes the pipes, so only the group shows it.
        let o = run(sh("sleep 30 >/dev/null 2>&1 & echo started"), SHORT, Duration::from_millis(200)).expect("run");
        assert!(o.status.is_some_and(|s| s.success()));
        assert_eq!(o.leftovers.len(), 1, "{:?}", o.leftovers);
        let pid = o.leftovers[0].pid;
        let gone = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            stat(pid).is_none_or(|(p, _)| p.state == 'Z')
        });
        assert!(gone, "pid {pid} was killed");
    }

    #[test]
    fn an_escaped_child_is_found_by_its_marker() {
        let _serial = serial();
        // `setsid` takes it out of the process group; the environment marks it.
        let o =
            run(sh("setsid sleep 30 >/dev/null 2>&1 < /dev/null & echo started"), SHORT, Duration::from_millis(300))
                .expect("run");
        assert!(o.leftovers.iter().any(|p| p.name == "sleep"), "{:?}", o.leftovers);
    }

    #[test]
    fn a_process_holding_the_output_pipe_is_named() {
        let _serial = serial();
        // `env -u` drops the marker and setsid the group: only the pipe it
        // still holds gives it away.
        let o =
            run(sh("env -u XTASK_RUN setsid sleep 30 & echo started"), SHORT, Duration::from_millis(300)).expect("run");
        assert!(o.leftovers.is_empty(), "{:?}", o.leftovers);
        assert!(o.pipe_holders.iter().any(|p| p.name == "sleep"), "{:?}", o.pipe_holders);
        assert_eq!(o.stdout, "started\n");
    }
}
