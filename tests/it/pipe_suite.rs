// Included by `pipe.rs`, twice: the Pipe suite over the socket and over
// shared memory (`SHM`). Both start methods, async in the parent and
// blocking in the children.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use multiproc::{Connection, Error, Pipe, PipeBuilder, Process, StartMethod};

use crate::per_method;

/// A builder for this run of the suite (`SHM`: over shared memory).
fn builder() -> PipeBuilder {
    let mut b = Pipe::builder();
    b.shared_memory(SHM);
    b
}

fn pipe() -> multiproc::Result<(Connection, Connection)> {
    builder().build()
}

fn simplex() -> multiproc::Result<(Connection, Connection)> {
    builder().duplex(false).build()
}

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

/// Echoes numbers until its connection ends.
#[multiproc::task]
fn echo_numbers(mut conn: Connection) {
    while let Ok(x) = conn.blocking_recv::<u64>() {
        if conn.blocking_send(&x).is_err() {
            return;
        }
    }
}

/// The peer of a ping-pong SIGKILLed at a random moment (before a message
/// goes, or while its reply is awaited), many times: every wait ends, with
/// the echo or the end of the stream, whether this side was spinning on its
/// socket or link or asleep; no reply comes from a dead peer.
async fn a_peer_killed_mid_ping_pong_ends_every_wait(method: StartMethod) {
    let mut rng = crate::crash::Rng::new();
    for round in 0..30 {
        let (a, mut b) = pipe().expect("pipe");
        let mut p = Process::new(echo_numbers, (a,)).start_method(method);
        p.start().await.expect("start");
        let victim = nix::unistd::Pid::from_raw(p.pid().expect("pid") as i32);
        let kill = || nix::sys::signal::kill(victim, nix::sys::signal::Signal::SIGKILL).expect("kill");
        let kill_at = rng.below(200);
        let before_send = rng.below(2) == 0;
        let mut i = 0u64;
        loop {
            if i == kill_at && before_send {
                kill();
            }
            if b.send(&i).await.is_err() {
                break;
            }
            if i == kill_at && !before_send {
                kill();
            }
            match tokio::time::timeout(Duration::from_secs(10), b.recv::<u64>()).await {
                Err(_) => panic!("round {round}: a wait outlived its killed peer (message {i})"),
                Ok(Ok(x)) => assert_eq!(x, i, "round {round}"),
                Ok(Err(Error::Eof)) => break,
                Ok(Err(Error::Io(e))) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Ok(Err(e)) => panic!("round {round}: {e}"),
            }
            i += 1;
            assert!(i <= kill_at + 1, "round {round}: a reply came from a killed peer");
        }
        assert_eq!(p.join().await.expect("join"), -9, "round {round}");
    }
}

per_method!(
    child_sends_a_value,
    sixteen_mib_and_empty_messages_echo,
    eof_after_every_copy_closes,
    fds_above_256_reach_the_child,
    a_peer_killed_mid_ping_pong_ends_every_wait
);

async fn child_sends_a_value(m: StartMethod) {
    let (mut parent_conn, child_conn) = pipe().expect("pipe");
    let mut p = Process::new(send_list, (child_conn,)).start_method(m);
    p.start().await.expect("start");
    let v: (i32, Option<i32>, String) = parent_conn.recv().await.expect("recv");
    assert_eq!(v, (42, None, "hello".to_string()));
    assert_eq!(p.join().await.expect("join"), 0);
}

async fn sixteen_mib_and_empty_messages_echo(m: StartMethod) {
    let (mut ours, theirs) = pipe().expect("pipe");
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
    let (mut rx, tx) = pipe().expect("pipe");
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
    let (mut a, mut b) = builder().max_message(1024).build().expect("pipe");
    assert!(matches!(a.send_bytes(&[7; 1025]).await, Err(Error::FrameTooLarge { len: 1025, max: 1024 })));
    assert!(matches!(a.blocking_send(&vec![0u8; 2000]), Err(Error::FrameTooLarge { .. })));
    a.send_bytes(&[7; 1024]).await.expect("at the limit");
    assert_eq!(b.recv_bytes().await.expect("recv"), vec![7; 1024]);

    // A peer that allows more: the receiver refuses the frame before
    // allocating it.
    let (mut small, mut big) = builder().max_message(1024).build().expect("pipe");
    big.set_max_message(1 << 20);
    big.blocking_send_bytes(&[1; 4096]).expect("send");
    assert!(matches!(small.recv_bytes().await, Err(Error::FrameTooLarge { len: 4096, max: 1024 })));
}

#[tokio::test]
async fn byte_ranges_are_checked() {
    let (mut a, mut b) = pipe().expect("pipe");
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
    let (mut a, mut b) = pipe().expect("pipe");
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
    let (mut r, mut w) = simplex().expect("pipe");
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
    let (mut control, theirs) = pipe().expect("pipe");
    let (mut rx, tx) = pipe().expect("pipe");
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
    let (mut ours, theirs) = pipe().expect("pipe");
    let mut p = Process::new(async_square, (theirs,));
    p.start().await.expect("start");
    ours.send(&12u64).await.expect("send");
    assert_eq!(ours.recv::<u64>().await.expect("recv"), 144);
    assert_eq!(p.join().await.expect("join"), 0);
}

#[test]
fn blocking_methods_need_no_runtime() {
    let (mut a, mut b) = pipe().expect("pipe");
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
    let (_a, mut b) = pipe().expect("pipe");
    let r = futures::executor::block_on(b.recv::<u8>());
    assert!(matches!(r, Err(Error::Io(e)) if e.to_string().contains("blocking_")));
}

#[tokio::test]
async fn fed_messages_arrive_in_order_after_flush_or_send() {
    let (mut a, mut b) = pipe().expect("pipe");
    // More than the socket holds: `feed` writes (and waits) as it goes.
    let reader = std::thread::spawn(move || {
        for i in 0..200_000u32 {
            assert_eq!(b.blocking_recv::<u32>().expect("recv"), i);
        }
        assert_eq!(b.blocking_recv::<u32>().expect("recv"), u32::MAX);
        assert_eq!(b.blocking_recv::<u32>().expect("recv"), 7);
        assert_eq!(b.blocking_recv::<u32>().expect("dropping makes one last write"), 8);
        assert!(matches!(b.blocking_recv::<u32>(), Err(Error::Eof)));
    });
    for i in 0..200_000u32 {
        a.feed(&i).await.expect("feed");
    }
    a.send(&u32::MAX).await.expect("send writes what was fed first");
    a.blocking_feed(&7u32).expect("feed");
    a.blocking_flush().expect("flush");
    a.feed(&8u32).await.expect("feed");
    drop(a);
    tokio::task::spawn_blocking(move || reader.join().expect("reader")).await.expect("join");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_a_sink() {
    use futures::SinkExt;
    let (mut a, mut b) = pipe().expect("pipe");
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        loop {
            match b.recv::<u32>().await {
                Ok(v) => got.push(v),
                Err(Error::Eof) => return got,
                Err(e) => panic!("recv: {e}"),
            }
        }
    });
    a.send_all(&mut futures::stream::iter((0..100_000u32).map(Ok))).await.expect("send_all");
    SinkExt::<u32>::close(&mut a).await.expect("close");
    assert!(a.is_closed());
    assert_eq!(reader.await.expect("reader"), (0..100_000).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_cancelled_large_send_still_goes_out_whole_before_the_next() {
    let (mut a, mut b) = pipe().expect("pipe");
    let big: Vec<u8> = (0..4u32 << 20).map(|i| (i % 253) as u8).collect();
    // Nobody reads yet: the socket fills and the send is cancelled half way.
    let r = tokio::time::timeout(Duration::from_millis(50), a.send_bytes(&big)).await;
    assert!(r.is_err(), "4 MiB cannot fit in the socket without a reader");
    let expected = big.clone();
    let reader = std::thread::spawn(move || {
        assert!(b.blocking_recv_bytes().expect("the big message") == expected);
        assert_eq!(b.blocking_recv_bytes().expect("the next"), b"after");
    });
    a.send_bytes(b"after").await.expect("send");
    tokio::task::spawn_blocking(move || reader.join().expect("reader")).await.expect("join");
}

/// On a single-threaded runtime a waiting `recv` must leave the thread to
/// the task that will send.
#[tokio::test(flavor = "current_thread")]
async fn a_waiting_recv_does_not_block_the_runtime() {
    let (mut a, mut b) = pipe().expect("pipe");
    let receiver = tokio::spawn(async move { b.recv::<String>().await });
    tokio::task::yield_now().await;
    a.send("wake up").await.expect("send");
    assert_eq!(receiver.await.expect("task").expect("recv"), "wake up");
}
