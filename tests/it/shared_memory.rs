//! `SharedMemory` and the resource tracker.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use multiproc::{Error, Process, SharedMemory};

const SCENARIO: &str = env!("CARGO_BIN_EXE_scenario");

fn in_dev_shm(name: &str) -> bool {
    std::path::Path::new("/dev/shm").join(name).exists()
}

#[test]
fn create_attach_unlink_and_every_typed_error() {
    let shm = SharedMemory::create(4096).expect("create");
    assert!(shm.name().starts_with(&format!("multiproc-{}-", std::process::id())));
    assert!(shm.size() >= 4096);
    shm.write(10, b"hello").expect("write");
    let other = SharedMemory::attach(shm.name()).expect("attach");
    let mut buf = [0; 5];
    other.read(10, &mut buf).expect("read");
    assert_eq!(&buf, b"hello");
    assert!(matches!(shm.write(4095, b"xy"), Err(Error::InvalidArgument(_))), "out of range");

    assert!(matches!(SharedMemory::create_named(shm.name(), 10), Err(Error::ShmExists { .. })));
    assert!(matches!(SharedMemory::create(0), Err(Error::InvalidArgument(_))));
    shm.unlink().expect("unlink");
    assert!(!in_dev_shm(shm.name()));
    assert!(matches!(shm.unlink(), Err(Error::ShmNotFound { .. })), "second unlink");
    assert!(matches!(SharedMemory::attach(shm.name()), Err(Error::ShmNotFound { .. })));
    other.read(10, &mut buf).expect("a mapping outlives the name");
    assert_eq!(&buf, b"hello");
}

#[multiproc::task]
fn write_greeting(shm: SharedMemory) {
    shm.write(0, b"from the child").expect("write");
}

#[tokio::test]
async fn a_child_writes_the_parent_reads_and_its_exit_unlinks_nothing() {
    let shm = SharedMemory::create(64).expect("create");
    let mut p = Process::new(write_greeting, (SharedMemory::attach(shm.name()).expect("attach"),));
    p.start().await.expect("start");
    assert_eq!(p.join().await.expect("join"), 0);
    let mut buf = [0; 14];
    shm.read(0, &mut buf).expect("read");
    assert_eq!(&buf, b"from the child");
    // The attacher is gone, and its connection closed before join returned:
    // once the tracker answers a sync it has processed that close, and the
    // creator's segment must still be there.
    multiproc::__private::tracker_sync().expect("tracker sync");
    assert!(in_dev_shm(shm.name()), "an attacher's exit unlinked the creator's segment");
    SharedMemory::attach(shm.name()).expect("still attachable");
    shm.unlink().expect("unlink");
}

#[test]
fn sigkill_of_a_whole_tree_leaves_dev_shm_clean() {
    use std::os::unix::process::CommandExt;
    let mut tree = Command::new(SCENARIO)
        .arg("shm-tree")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("run scenario");
    let mut out = String::new();
    let mut stdout = tree.stdout.take().expect("stdout");
    let mut byte = [0u8; 1];
    while !out.contains("ready\n") {
        assert_eq!(stdout.read(&mut byte).expect("read"), 1, "scenario ended early: {out}");
        out.push(byte[0] as char);
    }
    let names: Vec<String> = out.lines().filter_map(|l| l.strip_prefix("segment ")).map(str::to_owned).collect();
    let pids: Vec<&str> =
        out.lines().filter_map(|l| l.strip_prefix("tree ").or_else(|| l.strip_prefix("child "))).collect();
    assert_eq!(pids.len(), 2, "{out}");
    assert_eq!(names.len(), 2, "{out}");
    assert!(names.iter().all(|n| in_dev_shm(n)));
    let group = nix::unistd::Pid::from_raw(-(tree.id() as i32));
    nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL).expect("SIGKILL the tree");
    tree.wait().expect("reap");
    // The tracker keeps stderr open until it is done (it unlinks, warns,
    // then exits), so its end of stream means the cleanup happened.
    let mut err = String::new();
    tree.stderr.take().expect("stderr").read_to_string(&mut err).expect("stderr");
    let tracker: u32 = out.lines().find_map(|l| l.strip_prefix("tracker ")).expect("tracker pid").parse().expect("pid");
    assert!(exits_within(tracker, Duration::from_secs(10)), "the tracker outlived its tree");
    let left: Vec<&String> = names.iter().filter(|n| in_dev_shm(n)).collect();
    assert!(left.is_empty(), "segments still in /dev/shm: {left:?}\n{err}");
    // Nothing else of the tree's is left either (Value, Array, Lock and
    // Queue live in memfds and never appear there).
    let left: Vec<String> = std::fs::read_dir("/dev/shm")
        .expect("/dev/shm")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| pids.iter().any(|p| n.contains(&format!("-{p}-")) || n.ends_with(&format!("-{p}"))))
        .collect();
    assert!(left.is_empty(), "left by the killed tree: {left:?}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("leaked shared memory")).collect();
    assert_eq!(warnings.len(), 1, "one warning for the whole tree: {err}");
    assert!(names.iter().all(|n| warnings[0].contains(n.as_str())), "{err}");
}

/// A tracker killed mid-run is replaced once, for the whole tree: the root,
/// a child that was running, and children started later (forked and
/// spawned) all use the same new tracker, which is nobody's child.
#[test]
fn a_killed_tracker_is_replaced_for_every_process_of_the_tree() {
    let out = Command::new(SCENARIO).arg("tracker-restart").output().expect("run scenario");
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok"), "{out:?}");
}

/// Another program's tracker sweeps the leftovers of a tree whose tracker
/// and processes are gone, but never a segment some live process still
/// maps.
#[test]
fn a_segment_held_by_a_live_process_survives_another_programs_tracker_start() {
    use std::io::{BufRead, BufReader};
    let mut tree = Command::new(SCENARIO).arg("shm-orphans").stdout(Stdio::piped()).spawn().expect("run scenario");
    let mut out = String::new();
    let mut stdout = BufReader::new(tree.stdout.take().expect("stdout"));
    while !out.ends_with("ready\n") {
        assert!(stdout.read_line(&mut out).expect("read") > 0, "scenario ended early: {out}");
    }
    let names: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("segment ")).collect();
    let (held, orphan) = (names[0], names[1]);
    let tracker: u32 = out.lines().find_map(|l| l.strip_prefix("tracker ")).expect("tracker").parse().expect("pid");
    // We hold one segment; then the tree's tracker dies, then the tree.
    let holding = SharedMemory::attach_untracked(held).expect("attach");
    kill_and_wait(tracker);
    tree.kill().expect("kill the scenario");
    tree.wait().expect("reap");
    // Both are old enough to be judged.
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    for name in [held, orphan] {
        std::fs::File::options()
            .write(true)
            .open(std::path::Path::new("/dev/shm").join(name))
            .and_then(|f| f.set_modified(hour_ago))
            .expect("age the segment");
    }
    let out = Command::new(SCENARIO).arg("shm-use").output().expect("run another program");
    assert!(out.status.success(), "{out:?}");
    assert!(in_dev_shm(held), "a segment a live process maps was removed");
    assert!(!in_dev_shm(orphan), "the dead tree's unheld segment was left: the sweep did not run");
    drop(holding);
    SharedMemory::attach_untracked(held).expect("attach").unlink().expect("unlink");
}

/// Waits until `pid` has exited (its pidfd turns readable), at most `limit`.
pub(crate) fn exits_within(pid: u32, limit: Duration) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let Ok(pidfd) = multiproc_sys::process::pidfd_open(pid as i32) else {
        return true; // already gone (and reaped)
    };
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = PollTimeout::try_from(left.as_millis().min(10_000) as u32).unwrap_or(PollTimeout::MAX);
        match poll(&mut [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)], ms) {
            Ok(n) if n > 0 => return true,
            _ if left.is_zero() => return false,
            _ => {}
        }
    }
}

/// SIGKILLs `pid` and waits until it has exited (its pidfd turns readable).
fn kill_and_wait(pid: u32) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let pidfd = multiproc_sys::process::pidfd_open(pid as i32).expect("pidfd");
    multiproc_sys::process::pidfd_send_signal(pidfd.as_fd(), nix::libc::SIGKILL).expect("kill");
    poll(&mut [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)], PollTimeout::NONE).expect("wait for its exit");
}

#[test]
fn a_killed_tracker_is_restarted_on_next_use() {
    let out = Command::new(SCENARIO).arg("tracker-killed").output().expect("run scenario");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stdout.contains("ok"), "{out:?}");
    assert!(stderr.contains("restarting"), "a warning says so: {stderr}");
}

#[multiproc::task]
fn attach_untracked_and_exit(name: String) {
    let shm = SharedMemory::attach_untracked(&name).expect("attach untracked");
    shm.write(0, b"untracked").expect("write");
}

#[multiproc::task]
fn create_and_exit(slot: SharedMemory) {
    let shm = SharedMemory::create(64).expect("create in the child");
    let name = shm.name().as_bytes();
    slot.write(0, &[name.len() as u8]).expect("write");
    slot.write(1, name).expect("write");
}

/// A child that attaches without tracking never counts as a holder: its
/// exit changes nothing, and the creator's segment stays.
#[tokio::test]
async fn an_untracked_attacher_changes_nothing() {
    let shm = SharedMemory::create(64).expect("create");
    let mut p = Process::new(attach_untracked_and_exit, (shm.name().to_owned(),));
    p.start().await.expect("start");
    assert_eq!(p.join().await.expect("join"), 0);
    multiproc::__private::tracker_sync().expect("tracker sync");
    assert!(in_dev_shm(shm.name()));
    let mut buf = [0; 9];
    shm.read(0, &mut buf).expect("read");
    assert_eq!(&buf, b"untracked");
    shm.unlink().expect("unlink");
}

/// A segment whose every holder is gone is unlinked while the tree still
/// runs: here a child created one, never unlinked it and exited.
#[tokio::test]
async fn a_segment_is_unlinked_once_its_only_holder_exits() {
    let slot = SharedMemory::create(256).expect("create");
    let mut p = Process::new(create_and_exit, (SharedMemory::attach(slot.name()).expect("attach"),));
    p.start().await.expect("start");
    assert_eq!(p.join().await.expect("join"), 0);
    let mut len = [0u8; 1];
    slot.read(0, &mut len).expect("read");
    let mut name = vec![0u8; len[0] as usize];
    slot.read(1, &mut name).expect("read");
    let name = String::from_utf8(name).expect("utf-8");
    assert!(!name.is_empty());
    multiproc::__private::tracker_sync().expect("tracker sync");
    assert!(!in_dev_shm(&name), "{name} outlived its only holder");
    slot.unlink().expect("unlink");
}

/// A tree that ends normally without unlinking: the tracker unlinks after
/// the last process is gone, warns once, and exits.
#[test]
fn after_an_orderly_exit_the_tracker_cleans_up_and_exits() {
    // `output` waits for stderr to close, which the tracker holds too.
    let out = Command::new(SCENARIO).arg("shm-orderly-exit").output().expect("run scenario");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{out:?}");
    let name = stdout.lines().find_map(|l| l.strip_prefix("segment ")).expect("segment name");
    let tracker: u32 = stdout.lines().find_map(|l| l.strip_prefix("tracker ")).expect("tracker").parse().expect("pid");
    assert!(exits_within(tracker, Duration::from_secs(10)), "the tracker outlived its tree");
    assert!(!in_dev_shm(name), "{name} left behind");
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("leaked shared memory")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains(name), "{stderr}");
}

/// A handle passed to a child carries its fd: the child maps the same
/// segment even though the name is gone by the time it starts.
#[tokio::test]
async fn a_handle_reaches_a_child_after_its_name_was_unlinked() {
    let shm = SharedMemory::create(64).expect("create");
    let mut p = Process::new(write_greeting, (shm.clone(),));
    shm.unlink().expect("unlink before the child starts");
    p.start().await.expect("start");
    assert_eq!(p.join().await.expect("join"), 0, "the child could not map it");
    let mut buf = [0; 14];
    shm.read(0, &mut buf).expect("read");
    assert_eq!(&buf, b"from the child");
}
