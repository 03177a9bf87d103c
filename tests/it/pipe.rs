//! `Pipe`/`Connection`: messages between real processes, both start methods,
//! async in the parent and blocking in the children.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use multiproc::{Connection, Error, Pipe, Process, StartMethod};

use crate::per_method;

#[multiproc::task]
fn send_list(mut conn: Connection) {
    conn.blocking_send(&(42, None::<i32>, "hello")).expect("send");
    conn.close();
}

/// Echoes raw messages until the other end closes.
#[multiproc::task]
fn echo_bytes(mut conn: Connection) {
    loop {
        match conn.blocking_recv_bytes() {
            Ok(b) => conn.blocking_send_bytes(&b).expect("echo"),
            Err(Error::Eof) => return,
            Err(e) => panic!("recv: {e}"),
        }
    }
}

/// Sends its pid and the fd number its connection arrived on.
#[multiproc::task]
fn report_fd(mut conn: Connection, fd_in_parent: i32) {
    conn.blocking_send(&(std::process::id(), fd_in_parent)).expect("send");
}

/// Receives a connection inside a message and answers through it.
#[multiproc::task]
fn answer_on_received(mut control: Connection) {
    let mut reply: Connection = control.blocking_recv().expect("a connection in a message");
    reply.blocking_send("through the passed end").expect("send");
}

/// An async task in the child: awaits a question and answers it.
#[multiproc::task]
async fn async_square(mut conn: Connection) {
    let x: u64 = conn.recv().await.expect("recv");
    conn.send(&(x * x)).await.expect("send");
}

per_method!(
    child_sends_a_value,
    sixteen_mib_and_empty_messages_echo,
    eof_after_every_copy_closes,
    fds_above_256_reach_the_child
);

async fn child_sends_a_value(m: StartMethod) {
    let (mut parent_conn, child_conn) = Pipe::new().expect("pipe");
    let mut p = Process::new(send_list, (child_conn,)).start_method(m);
    p.start().await.expect("start");
    let v: (i32, Option<i32>, String) = parent_conn.recv().await.expect("recv");
    assert_eq!(v, (42, None, "hello".to_string()));
    assert_eq!(p.join().await.expect("join"), 0);
}

async fn sixteen_mib_and_empty_messages_echo(m: StartMethod) {
    let (mut ours, theirs) = Pipe::new().expect("pipe");
    let mut p = Process::new(echo_bytes, (theirs,)).start_method(m);
    p.start().await.expect("start");
    let big: Vec<u8> = (0..16 << 20).map(|i: u32| (i % 251) as u8).collect();
    for msg in [&b""[..], b"a", &big, b"", b"end"] {
        ours.send_bytes(msg).await.expect("send");
    }
    for msg in [&b""[..], b"a", &big, b"", b"end"] {
        assert!(ours.recv_bytes().await.expect("echo") == msg, "boundaries kept, {} bytes", msg.len());
    }
    ours.close();
    assert_eq!(p.join().await.expect("join"), 0, "the child saw EOF and returned");
}

async fn eof_after_every_copy_closes(m: StartMethod) {
    // The seeds' pipeline: the middle stage ends on EOF once the first stage
    // and the parent have closed their copies of the sending end.
    let (mut rx, tx) = Pipe::new().expect("pipe");
    let mut p = Process::new(send_list, (tx,)).start_method(m);
    p.start().await.expect("start");
    assert_eq!(p.join().await.expect("join"), 0);
    let _: (i32, Option<i32>, String) = rx.recv().await.expect("the message before EOF");
    assert!(matches!(rx.recv::<i32>().await, Err(Error::Eof)));
    assert!(matches!(rx.blocking_recv::<i32>(), Err(Error::Eof)), "EOF is sticky");
}

async fn fds_above_256_reach_the_child(m: StartMethod) {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let raw = nix::fcntl::fcntl(&theirs, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(300)).expect("dup above 300");
    // SAFETY: F_DUPFD_CLOEXEC just returned this new fd; nothing else owns it.
    let high = unsafe { OwnedFd::from_raw_fd(raw) };
    drop(theirs);
    assert!(high.as_raw_fd() >= 300);
    let mut ours = Connection::from_fd(ours.into()).expect("wrap");
    let high = Connection::from_fd(high).expect("wrap");
    let mut p = Process::new(report_fd, (high, raw)).start_method(m);
    p.start().await.expect("start");
    let (pid, fd): (u32, i32) = ours.recv().await.expect("recv");
    assert_eq!((Some(pid), fd), (p.pid(), raw));
    assert_eq!(p.join().await.expect("join"), 0);
}

#[tokio::test]
async fn above_the_maximum_is_a_typed_error_and_the_connection_survives() {
    let (mut a, mut b) = Pipe::builder().max_message(1024).build().expect("pipe");
    assert!(matches!(a.send_bytes(&[7; 1025]).await, Err(Error::FrameTooLarge { len: 1025, max: 1024 })));
    assert!(matches!(a.blocking_send(&vec![0u8; 2000]), Err(Error::FrameTooLarge { .. })));
    a.send_bytes(&[7; 1024]).await.expect("at the limit");
    assert_eq!(b.recv_bytes().await.expect("recv"), vec![7; 1024]);

    // A peer that allows more: the receiver refuses the frame before
    // allocating it.
    let (mut small, mut big) = Pipe::builder().max_message(1024).build().expect("pipe");
    big.set_max_message(1 << 20);
    big.blocking_send_bytes(&[1; 4096]).expect("send");
    assert!(matches!(small.recv_bytes().await, Err(Error::FrameTooLarge { len: 4096, max: 1024 })));
}

#[tokio::test]
async fn byte_ranges_are_checked() {
    let (mut a, mut b) = Pipe::new().expect("pipe");
    a.send_bytes_range(b"hello world", 6, Some(5)).await.expect("in range");
    a.blocking_send_bytes_range(b"hello world", 6, None).expect("to the end");
    assert_eq!(b.recv_bytes().await.expect("recv"), b"world");
    assert_eq!(b.recv_bytes().await.expect("recv"), b"world");
    assert!(matches!(
        a.send_bytes_range(b"hello", 3, Some(5)).await,
        Err(Error::BadRange { offset: 3, size: 5, len: 5 })
    ));
    assert!(matches!(a.blocking_send_bytes_range(b"hello", usize::MAX, Some(2)), Err(Error::BadRange { .. })));
}

#[tokio::test]
async fn poll_waits_for_a_whole_message() {
    let (mut a, mut b) = Pipe::new().expect("pipe");
    assert!(!b.poll(Some(Duration::ZERO)).await.expect("poll"));
    assert!(!b.blocking_poll(Some(Duration::from_millis(20))).expect("poll"));
    a.send(&1u8).await.expect("send");
    assert!(b.poll(Some(Duration::from_secs(5))).await.expect("poll"));
    assert!(b.blocking_poll(None).expect("poll"));
    assert_eq!(b.recv::<u8>().await.expect("recv"), 1);
    drop(a);
    assert!(b.poll(None).await.expect("EOF counts as readable"));
    assert!(matches!(b.recv::<u8>().await, Err(Error::Eof)));
}

#[tokio::test]
async fn simplex_ends_go_one_way_and_closed_ends_refuse() {
    let (mut r, mut w) = Pipe::simplex().expect("pipe");
    w.send("one way").await.expect("send");
    assert_eq!(r.recv::<String>().await.expect("recv"), "one way");
    assert!(matches!(r.send(&1).await, Err(Error::Closed(_))));
    assert!(matches!(w.recv::<i32>().await, Err(Error::Closed(_))));
    w.close();
    assert!(w.is_closed());
    assert!(matches!(w.blocking_send(&1), Err(Error::Closed("connection"))));
    assert!(matches!(r.recv::<i32>().await, Err(Error::Eof)));
}

#[tokio::test]
async fn a_connection_travels_inside_a_message() {
    let (mut control, theirs) = Pipe::new().expect("pipe");
    let (mut rx, tx) = Pipe::new().expect("pipe");
    let mut p = Process::new(answer_on_received, (theirs,));
    p.start().await.expect("start");
    control.send(&tx).await.expect("send a connection");
    drop(tx);
    assert_eq!(rx.recv::<String>().await.expect("recv"), "through the passed end");
    assert_eq!(p.join().await.expect("join"), 0);
    assert!(matches!(rx.recv::<String>().await, Err(Error::Eof)), "the child's copy closed at exit");
}

#[tokio::test]
async fn async_task_in_the_child_uses_the_async_methods() {
    let (mut ours, theirs) = Pipe::new().expect("pipe");
    let mut p = Process::new(async_square, (theirs,));
    p.start().await.expect("start");
    ours.send(&12u64).await.expect("send");
    assert_eq!(ours.recv::<u64>().await.expect("recv"), 144);
    assert_eq!(p.join().await.expect("join"), 0);
}

#[test]
fn blocking_methods_need_no_runtime() {
    let (mut a, mut b) = Pipe::new().expect("pipe");
    let t = std::thread::spawn(move || {
        for i in 0..10_000u32 {
            a.blocking_send(&i).expect("send");
        }
    });
    for i in 0..10_000u32 {
        assert_eq!(b.blocking_recv::<u32>().expect("recv"), i);
    }
    t.join().expect("sender");
}

#[test]
fn async_methods_outside_a_runtime_are_an_error() {
    let (_a, mut b) = Pipe::new().expect("pipe");
    let r = futures::executor::block_on(b.recv::<u8>());
    assert!(matches!(r, Err(Error::Io(e)) if e.to_string().contains("blocking_")));
}
