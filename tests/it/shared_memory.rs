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
    // The attacher is gone; the creator's segment must still be there.
    assert!(in_dev_shm(shm.name()));
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
    assert_eq!(names.len(), 2, "{out}");
    assert!(names.iter().all(|n| in_dev_shm(n)));
    let group = nix::unistd::Pid::from_raw(-(tree.id() as i32));
    nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL).expect("SIGKILL the tree");
    tree.wait().expect("reap");
    // The tracker keeps stderr open until it is done, then exits.
    let mut err = String::new();
    tree.stderr.take().expect("stderr").read_to_string(&mut err).expect("stderr");
    let deadline = Instant::now() + Duration::from_secs(10);
    while names.iter().any(|n| in_dev_shm(n)) {
        assert!(Instant::now() < deadline, "segments still in /dev/shm: {names:?}\n{err}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(err.contains("leaked shared memory") && names.iter().all(|n| err.contains(n.as_str())), "{err}");
}

#[test]
fn a_killed_tracker_is_restarted_on_next_use() {
    let out = Command::new(SCENARIO).arg("tracker-killed").output().expect("run scenario");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stdout.contains("ok"), "{out:?}");
    assert!(stderr.contains("restarting"), "a warning says so: {stderr}");
}
