//! Helpers shared by the test modules.

/// Declares `#[tokio::test]`s `NAME::forkserver` and `NAME::spawn` that run
/// `async fn NAME(method: StartMethod)` under each start method.
#[macro_export]
macro_rules! per_method {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn forkserver() {
                super::$name(multiproc::StartMethod::Forkserver).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn spawn() {
                super::$name(multiproc::StartMethod::Spawn).await
            }
        }
    )*};
}

/// Number of open fds of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

/// CPU time (user + system) of `pid` so far, in clock ticks, from
/// `/proc/<pid>/stat` (fields 14 and 15); `None` once it is gone.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces and parentheses: count from its last ')'.
    let after = stat.rsplit(')').next()?;
    let f: Vec<&str> = after.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Whether `pid` is alive (and not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    multiproc_sys::pidlock::process_alive(pid)
}

/// A process watched through a pidfd opened while it was known to run: its
/// exit is an event to wait for (no polling of `/proc`), and a pid reused
/// after it was reaped cannot be mistaken for it.
pub struct Watch {
    pid: u32,
    /// `None` when the process was gone (reaped) before the watch began.
    fd: Option<std::os::fd::OwnedFd>,
}

impl Watch {
    /// Starts watching `pid`; call it while the process is known to run.
    pub fn new(pid: u32) -> Self {
        Self { pid, fd: multiproc_sys::process::pidfd_open(pid as i32).ok() }
    }

    /// Watches every pid of `pids`.
    pub fn all(pids: &[u32]) -> Vec<Self> {
        pids.iter().map(|&p| Self::new(p)).collect()
    }

    /// Whether the process exits (or has exited) within `limit`: its pidfd
    /// turns readable when it does (waited for off the runtime).
    pub async fn exits_within(&self, limit: std::time::Duration) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let Some(fd) = &self.fd else { return true };
        let fd = fd.try_clone().expect("dup the pidfd");
        tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + limit;
            loop {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                let ms = PollTimeout::try_from(left.as_millis().min(10_000) as u32).unwrap_or(PollTimeout::MAX);
                match poll(&mut [PollFd::new(fd.as_fd(), PollFlags::POLLIN)], ms) {
                    Ok(n) if n > 0 => return true,
                    _ if left.is_zero() => return false,
                    _ => {}
                }
            }
        })
        .await
        .expect("the pidfd wait")
    }

    /// Panics unless the process exits within `limit`.
    pub async fn assert_exits(&self, limit: std::time::Duration, what: &str) {
        assert!(self.exits_within(limit).await, "process {} {what}", self.pid);
    }
}

/// Runs `pool_scenario` with `args` (scenarios that kill workers run in a
/// process of their own, so no other test's workers are hit); its output.
pub fn pool_scenario(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_pool_scenario")).args(args).output().expect("run pool_scenario")
}
