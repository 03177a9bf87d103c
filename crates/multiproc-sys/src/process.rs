//! Process control: fork, exec of the current binary, pidfds, parent-death
//! signals, and process-wide settings that must be made before threads exist.
//!
//! Code that runs in a child between `fork` and `exec` of a multithreaded
//! process may only make async-signal-safe calls; [`command_with_fds`] is the
//! only such place and it calls raw syscalls (`dup2`, `prctl`, `getppid`).

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::libc;

/// Result of [`fork`] as seen by the calling process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fork {
    /// We are the parent; the child has this pid.
    Parent(i32),
    /// We are the child.
    Child,
}

/// Forks the calling process.
///
/// # Safety
/// The caller must be single-threaded, or the child must restrict itself to
/// async-signal-safe calls until it execs or exits: any lock held by another
/// thread at the time of the fork stays locked forever in the child.
pub unsafe fn fork() -> io::Result<Fork> {
    // SAFETY: forwarded to the caller, see `# Safety`.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(Fork::Parent(child.as_raw())),
        nix::unistd::ForkResult::Child => Ok(Fork::Child),
    }
}

/// Opens a pidfd for `pid`, which must be a child not yet reaped (or any
/// process, if the caller accepts the pid-reuse race).
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("pidfd out of range"))?;
    // SAFETY: the kernel just returned this fd to us and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `signal` through a pidfd: it can never hit a recycled pid.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: i32) -> io::Result<()> {
    // SAFETY: the fd is borrowed for the call; null siginfo is allowed.
    let rc = unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), signal, std::ptr::null::<libc::siginfo_t>(), 0)
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How a reaped process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code (`exit(code)` or returning from `main`).
    Code(i32),
    /// A signal of this number killed it.
    Signal(i32),
}

/// Reaps the exited child behind `pidfd` without blocking. `Ok(None)` means it
/// is still running.
pub fn try_reap(pidfd: BorrowedFd<'_>) -> io::Result<Option<Exit>> {
    use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
    match waitid(Id::PIDFd(pidfd), WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG)? {
        WaitStatus::Exited(_, code) => Ok(Some(Exit::Code(code))),
        WaitStatus::Signaled(_, sig, _) => Ok(Some(Exit::Signal(sig as i32))),
        _ => Ok(None),
    }
}

/// How a process that is *not* our child ended, learnt the moment it
/// became a zombie of `parent` rather than when `parent` reaps it: once
/// `pidfd` (which the process opened on itself) is readable,
/// `/proc/<pid>/stat` shows state `Z`, the parent (field 4) and the wait
/// status (field 52), and a null signal through `pidfd` still reaches the
/// process after that read, so what was read was this process and not a
/// later one given its pid (a pid is not reused while its zombie stands).
/// `None` if any step fails (`parent` reaped it first, or died and left it
/// to another, or `/proc` is unreadable): ask its parent.
pub fn exit_of_zombie(pid: u32, parent: u32, pidfd: BorrowedFd<'_>) -> Option<Exit> {
    use std::io::Read;
    let mut buf = [0u8; 1024];
    let n = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?.read(&mut buf).ok()?;
    let (ppid, status) = zombie_wait_status(buf.get(..n)?)?;
    (ppid == parent).then_some(())?;
    pidfd_send_signal(pidfd, 0).ok()?;
    if libc::WIFEXITED(status) {
        Some(Exit::Code(libc::WEXITSTATUS(status)))
    } else if libc::WIFSIGNALED(status) {
        Some(Exit::Signal(libc::WTERMSIG(status)))
    } else {
        None
    }
}

/// The parent and the wait status in a `/proc/<pid>/stat` line, if it is
/// a zombie's.
fn zombie_wait_status(stat: &[u8]) -> Option<(u32, i32)> {
    let text = std::str::from_utf8(stat).ok()?;
    // The name (field 2) may hold anything but ends at the last ')'.
    let mut fields = text.rsplit_once(')')?.1.split_whitespace();
    // Field 3 is the state, 4 the parent, 52 the exit code.
    (fields.next()? == "Z").then_some(())?;
    let parent = fields.next()?.parse().ok()?;
    Some((parent, fields.nth(47)?.parse().ok()?))
}

/// Reaps the child behind `pidfd`, waiting for it to exit.
pub fn reap(pidfd: BorrowedFd<'_>) -> io::Result<Exit> {
    use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
    loop {
        match waitid(Id::PIDFd(pidfd), WaitPidFlag::WEXITED) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(Exit::Code(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(Exit::Signal(sig as i32)),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Asks the kernel to send `SIGKILL` to this process when its parent dies,
/// then checks the parent is still `expected_parent`: if it died before the
/// request, the signal would never come, so we exit at once.
pub fn die_with_parent(expected_parent: i32) -> io::Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
    if nix::unistd::getppid().as_raw() != expected_parent {
        std::process::exit(1);
    }
    Ok(())
}

/// Makes `cmd` start with each `(fd, target)` duplicated onto `target` (and
/// not close-on-exec there); with `die_with_parent`, the child is killed when
/// the spawning thread's process dies.
///
/// Returns duplicates of the fds numbered above any target, which the
/// caller keeps until `cmd` has spawned: the child copies from those, so a
/// source can never be overwritten by an earlier target.
///
/// With `die_with_parent`, spawn `cmd` from a thread that lives as long as
/// the process: Linux sends the parent-death signal when the *thread* that
/// forked exits.
pub fn command_with_fds(
    cmd: &mut Command,
    fds: &[(BorrowedFd<'_>, RawFd)],
    die_with_parent: bool,
) -> io::Result<Vec<OwnedFd>> {
    const ABOVE_TARGETS: RawFd = 100;
    let mut high = Vec::with_capacity(fds.len());
    let mut pairs = Vec::with_capacity(fds.len());
    for (fd, target) in fds {
        let dup = nix::fcntl::fcntl(*fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(ABOVE_TARGETS.max(*target + 1)))?;
        // SAFETY: F_DUPFD_CLOEXEC just returned this new fd, owned by nobody else.
        let dup = unsafe { OwnedFd::from_raw_fd(dup) };
        pairs.push((dup.as_raw_fd(), *target));
        high.push(dup);
    }
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec in a possibly
    // multithreaded process, so it only makes async-signal-safe syscalls and
    // touches no allocator or lock (`pairs` was built before the fork).
    unsafe {
        cmd.pre_exec(move || {
            for &(source, target) in &pairs {
                if libc::dup2(source, target) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if die_with_parent {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
            }
            Ok(())
        });
    }
    Ok(high)
}

/// Clears close-on-exec on `fd` so an `exec` keeps it.
pub fn keep_on_exec(fd: BorrowedFd<'_>) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
    Ok(())
}

/// Removes an environment variable.
///
/// # Safety
/// No other thread may read or write the environment at the same time; call it
/// only while the process is still single-threaded (at start-up).
pub unsafe fn remove_env(key: impl AsRef<OsStr>) {
    // SAFETY: forwarded to the caller.
    unsafe { std::env::remove_var(key) }
}

/// Ignores `SIGPIPE` (a write to a closed socket then fails with `EPIPE`
/// instead of killing us), as Rust's `main` would have done, and optionally
/// `SIGINT` (workers leave Ctrl-C to their supervisor).
pub fn ignore_signals(sigint_too: bool) -> io::Result<()> {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: SIG_IGN installs no handler code, so nothing can run in signal
    // context.
    unsafe {
        signal(Signal::SIGPIPE, SigHandler::SigIgn)?;
        if sigint_too {
            signal(Signal::SIGINT, SigHandler::SigIgn)?;
        }
    }
    Ok(())
}

/// Restores the default action of signals a forked child should not inherit
/// ignored (`SIGINT` for a process the user may Ctrl-C directly).
pub fn default_signal(sig: i32) -> io::Result<()> {
    use nix::sys::signal::{SigHandler, Signal, signal};
    let sig = Signal::try_from(sig)?;
    // SAFETY: SIG_DFL installs no handler code.
    unsafe { signal(sig, SigHandler::SigDfl) }?;
    Ok(())
}

/// Registers `f` to run at orderly process exit (`exit`, return from `main`).
pub fn at_exit(f: extern "C" fn()) -> io::Result<()> {
    // SAFETY: atexit stores a function pointer valid for the whole program.
    if unsafe { libc::atexit(f) } != 0 {
        return Err(io::Error::other("atexit table full"));
    }
    Ok(())
}

/// Leaves the process at once, without running `atexit` handlers or flushing
/// stdio: for a forked child whose parent's handlers must not run twice.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

/// Flushes every C stdio stream (`fflush(NULL)`).
pub fn flush_c_stdio() {
    // SAFETY: fflush(NULL) is defined for any process state: it flushes
    // every open output stream, each under its own lock.
    unsafe { libc::fflush(std::ptr::null_mut()) };
}

/// Flushes every C stdio stream (`fflush(NULL)`), then leaves at once like
/// [`exit_now`]: how a forked child ends (the `atexit` handlers and
/// destructors it inherited belong to the process it was forked from).
pub fn flush_and_exit_now(code: i32) -> ! {
    flush_c_stdio();
    exit_now(code)
}

/// The number of threads of this process: the link count of
/// `/proc/self/task` (two plus one per thread), read with one `fstat` on a
/// directory fd kept open (a forkserver forks a spare per start; reading
/// `/proc/self/stat` cost a `pread` and a parse). A process forked since the
/// fd was opened opens its own.
fn thread_count() -> io::Result<usize> {
    use std::os::unix::fs::MetadataExt;
    static TASKS: std::sync::Mutex<Option<(u32, std::fs::File)>> = std::sync::Mutex::new(None);
    let me = std::process::id();
    let mut tasks = TASKS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = match &mut *tasks {
        Some((pid, dir)) if *pid == me => dir,
        slot => {
            // An fd kept here belongs to the process this one was forked
            // from, and may have been closed here: forget it, never close it.
            std::mem::forget(slot.take());
            &slot.insert((me, std::fs::File::open("/proc/self/task")?)).1
        }
    };
    let links = dir.metadata()?.nlink();
    links
        .checked_sub(2)
        .filter(|&n| n > 0)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| io::Error::other(format!("/proc/self/task has {links} links: not procfs's thread count")))
}

/// Forks, after checking that the calling process has exactly one thread:
/// the child of a single-threaded process may do anything, so this is safe.
pub fn fork_single_threaded() -> io::Result<Fork> {
    let threads = thread_count()?;
    if threads != 1 {
        return Err(io::Error::other(format!("refusing to fork a process with {threads} threads")));
    }
    // SAFETY: the process has one thread (checked just above, and nothing in
    // between could have started another), so no lock can be held elsewhere.
    unsafe { fork() }
}

/// Takes ownership of an fd a parent placed in this process and named in the
/// environment variable `key` (the start-up protocol between a process and
/// the forkserver or worker it re-executes). Marks it close-on-exec.
pub fn take_inherited_fd(key: &str) -> io::Result<OwnedFd> {
    let raw: RawFd = std::env::var(key)
        .map_err(|_| io::Error::new(io::ErrorKind::NotFound, format!("{key} is not set")))?
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{key} is not an fd number")))?;
    // SAFETY: F_GETFD only inspects the fd table.
    if raw < 3 || unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{key}={raw} is not an open fd")));
    }
    // SAFETY: by the start-up protocol the parent created this fd for us alone
    // and nothing else in this freshly exec'd process refers to it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))?;
    Ok(fd)
}

/// Closes every fd of this process except 0, 1, 2 and those in `keep`
/// (`close_range` over the gaps), so a freshly forked child holds nothing
/// its parent was not meant to give it.
///
/// Call it only in a freshly forked child that never returns to the frames
/// owning the closed fds (it exits or execs): their destructors would
/// otherwise close numbers that may have been reused.
pub fn close_all_fds_except(keep: &[RawFd]) -> io::Result<()> {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|&fd| fd > 2).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut from: RawFd = 3;
    for fd in keep.into_iter().chain(std::iter::once(RawFd::MAX)) {
        if fd > from {
            let last = if fd == RawFd::MAX { u32::MAX } else { (fd - 1) as u32 };
            // SAFETY: close_range only closes fds of this process; the caller
            // guarantees no live owner of these numbers will close them again
            // (see the function's doc).
            let rc = unsafe { libc::syscall(libc::SYS_close_range, from as u32, last, 0u32) };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        from = fd.saturating_add(1);
    }
    Ok(())
}

/// Sets the calling thread's name (`/proc/<pid>/comm`, what `ps` and `top`
/// show); the kernel keeps the first 15 bytes. For a single-threaded process
/// that is the process name.
pub fn set_process_name(name: &str) -> io::Result<()> {
    let mut buf = [0u8; 16];
    let bytes: Vec<u8> = name.bytes().filter(|&b| b != 0).take(15).collect();
    buf[..bytes.len()].copy_from_slice(&bytes);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes
    // from the pointer; `buf` is 16 bytes and its last byte stays 0.
    let rc = unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr() as libc::c_ulong, 0, 0, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The signals a terminal or a service manager sends a whole process group:
/// Ctrl-C, hang-up, Ctrl-\, and `kill -TERM -<pgid>` / systemd's stop.
pub const GROUP_SIGNALS: [i32; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// Ignores every signal in [`GROUP_SIGNALS`] (and `SIGPIPE`): for the
/// forkserver, which ends only when its parent or its socket goes away.
pub fn ignore_group_signals() -> io::Result<()> {
    ignore_signals(false)?;
    for sig in GROUP_SIGNALS {
        set_disposition(sig, libc::SIG_IGN)?;
    }
    Ok(())
}

/// Restores the default action of every signal in [`GROUP_SIGNALS`] (a
/// forked child inherits the forkserver's ignored ones).
pub fn default_group_signals() -> io::Result<()> {
    for sig in GROUP_SIGNALS {
        set_disposition(sig, libc::SIG_DFL)?;
    }
    Ok(())
}

/// Shields this process from signals sent to its whole group: `SIGINT`,
/// `SIGHUP` and `SIGQUIT` are ignored, and `SIGTERM` takes its default
/// action (ending the process) only when this process's parent sent it —
/// the forkserver, acting for the handle that owns this process. A
/// `kill -TERM -<pgid>` from anyone else is ignored.
pub fn shield_from_group_signals() -> io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGHUP, libc::SIGQUIT] {
        set_disposition(sig, libc::SIG_IGN)?;
    }
    // SAFETY: an all-zero sigaction is a valid value to fill in.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = term_from_parent_only as *const () as libc::sighandler_t;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
    // SAFETY: sigemptyset initialises the mask in place.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: the handler only makes async-signal-safe calls (getppid,
    // signal, raise); `action` is fully initialised.
    if unsafe { libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

extern "C" fn term_from_parent_only(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler;
    // si_pid is meaningful for signals sent by kill/pidfd_send_signal, and
    // for any other origin it is not our parent's pid. getppid, signal and
    // raise are async-signal-safe.
    unsafe {
        if !info.is_null() && (*info).si_pid() == libc::getppid() {
            libc::signal(sig, libc::SIG_DFL);
            // Blocked while this handler runs: delivered, with its default
            // action, as soon as it returns.
            libc::raise(sig);
        }
    }
}

fn set_disposition(sig: i32, handler: libc::sighandler_t) -> io::Result<()> {
    // SAFETY: SIG_IGN and SIG_DFL install no handler code.
    if unsafe { libc::signal(sig, handler) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Spawns `cmd` *detached*: it runs as a grandchild in a session of its
/// own, its parent (an intermediate child) exits at once and is reaped
/// here, so the process is never this program's child and can never become
/// its zombie (init, or the nearest subreaper, reaps it). Each `(fd,
/// target)` is duplicated onto `target` as in [`command_with_fds`].
///
/// Returns once the program was executed (or failed to be).
pub fn spawn_detached(cmd: &mut Command, fds: &[(BorrowedFd<'_>, RawFd)]) -> io::Result<()> {
    let _kept = command_with_fds(cmd, fds, false)?;
    // SAFETY: runs between fork and exec in a possibly multithreaded
    // process: only raw, async-signal-safe syscalls (clone without any
    // libc fork handlers, _exit, setsid), no allocation, no lock.
    unsafe {
        cmd.pre_exec(|| {
            let pid = libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, 0, 0, 0, 0);
            if pid < 0 {
                return Err(io::Error::last_os_error());
            }
            if pid > 0 {
                // The intermediate: its child carries on to exec.
                libc::_exit(0);
            }
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut intermediate = cmd.spawn()?;
    intermediate.wait()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_count_follows_threads_and_a_threaded_process_is_never_forked() {
        // Other tests' threads come and go meanwhile: only bounds hold.
        let (stop, wait) = std::sync::mpsc::channel::<()>();
        assert!(thread_count().expect("thread count") >= 1);
        let extra = std::thread::spawn(move || {
            let _ = wait.recv();
        });
        // This test's thread and the extra one, at least.
        assert!(thread_count().expect("thread count") >= 2);
        // This test process has two threads at least now: no fork.
        let refused = fork_single_threaded();
        assert!(refused.as_ref().is_err_and(|e| e.to_string().contains("threads")), "{:?}", refused.map(|_| ()));
        drop(stop);
        extra.join().expect("the extra thread");
    }

    /// Waits until `pidfd` is readable (the process has exited).
    fn wait_exited(pidfd: &OwnedFd) {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        assert_eq!(poll(&mut fds, PollTimeout::from(30_000u16)).expect("poll"), 1, "the child never exited");
    }

    #[test]
    fn a_zombie_tells_its_exit_until_it_is_reaped() {
        use std::os::fd::AsFd;
        let mut coded = Command::new("sh").args(["-c", "exit 7"]).spawn().expect("sh");
        let mut killed = Command::new("sleep").arg("60").spawn().expect("sleep");
        let coded_fd = pidfd_open(coded.id() as i32).expect("pidfd");
        let killed_fd = pidfd_open(killed.id() as i32).expect("pidfd");
        killed.kill().expect("SIGKILL");
        wait_exited(&coded_fd);
        wait_exited(&killed_fd);
        let me = std::process::id();
        assert_eq!(exit_of_zombie(coded.id(), me, coded_fd.as_fd()), Some(Exit::Code(7)));
        assert_eq!(exit_of_zombie(killed.id(), me, killed_fd.as_fd()), Some(Exit::Signal(libc::SIGKILL)));
        // Not the zombie of the parent named: the parent's word is needed.
        assert_eq!(exit_of_zombie(coded.id(), me + 1, coded_fd.as_fd()), None);
        // Reaped: its pid may name another process from now on.
        coded.wait().expect("reap");
        killed.wait().expect("reap");
        assert_eq!(exit_of_zombie(coded.id(), me, coded_fd.as_fd()), None);
        assert_eq!(exit_of_zombie(killed.id(), me, killed_fd.as_fd()), None);
    }

    #[test]
    fn a_running_process_has_no_exit() {
        use std::os::fd::AsFd;
        let me = pidfd_open(std::process::id() as i32).expect("pidfd");
        let parent = std::os::unix::process::parent_id();
        assert_eq!(exit_of_zombie(std::process::id(), parent, me.as_fd()), None);
        assert_eq!(zombie_wait_status(b"12 (a) b) Z 1 2 3"), None, "too few fields");
        let mut line = String::from("12 (odd ) name) Z 77");
        (5..=51).for_each(|_| line.push_str(" 0"));
        line.push_str(" 2304 ");
        assert_eq!(zombie_wait_status(line.as_bytes()), Some((77, 2304)));
        assert_eq!(zombie_wait_status(line.replace(") Z", ") S").as_bytes()), None, "not a zombie");
    }
}
