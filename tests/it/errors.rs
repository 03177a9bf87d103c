//! The shape of `multiproc::Error`: causes travel as `source()`, messages do
//! not repeat them, and every variant sits in its group.

use std::error::Error as _;
use std::io;
use std::sync::Arc;

use multiproc::{Error, ErrorKind, Manager, Pool};

/// Refuses to encode 13.
struct Thirteen;

impl serde::Serialize for Thirteen {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("13 cannot be sent"))
    }
}

#[multiproc::task]
fn take_thirteen(_t: Thirteen) -> u32 {
    13
}

impl<'de> serde::Deserialize<'de> for Thirteen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <()>::deserialize(d).map(|()| Thirteen)
    }
}

/// The `Display` of each error in `e`'s chain, outermost first.
fn chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut out = vec![e.to_string()];
    let mut next = e.source();
    while let Some(c) = next {
        out.push(c.to_string());
        next = c.source();
    }
    out
}

#[tokio::test]
async fn an_encoder_error_is_the_source_not_part_of_the_message() {
    let pool = Pool::new(1).await.expect("pool");
    let e = pool.apply(take_thirteen, (Thirteen,)).await.expect_err("13 does not encode");
    assert!(matches!(e, Error::Encode { what: "the task's arguments", .. }), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::Transport);
    assert_eq!(e.to_string(), "encode the task's arguments", "the message names the operation only");
    let chain = chain(&e);
    assert_eq!(chain.len(), 2, "{chain:?}");
    assert!(chain[1].contains("13 cannot be sent"), "{chain:?}");
    pool.close();
    pool.join().await.expect("join");
}

#[tokio::test]
async fn an_unreachable_manager_carries_the_io_error() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let e = Manager::connect(free, b"key").await.expect_err("nothing listens there");
    assert_eq!(e.kind(), ErrorKind::Manager);
    let io = e.source().and_then(|s| s.downcast_ref::<io::Error>()).expect("the source is the io::Error");
    assert_eq!(io.kind(), io::ErrorKind::ConnectionRefused);
    assert!(!e.to_string().contains(&io.to_string()), "the message does not repeat its source: {e}");
}

#[test]
fn every_group_has_its_variants() {
    let cause = || -> multiproc::Cause { Arc::new(io::Error::other("x")) };
    let cases = [
        (Error::NotStarted, ErrorKind::Usage),
        (Error::InvalidArgument("n".into()), ErrorKind::Usage),
        (Error::Timeout, ErrorKind::Task),
        (Error::PoolTerminated, ErrorKind::Task),
        (Error::WorkerLost { pid: 1, status: multiproc::ExitStatus::Signal(9) }, ErrorKind::Process),
        (Error::PoolWorkerStart(Arc::new(Error::Eof)), ErrorKind::Process),
        (Error::Decode { what: "x", source: cause() }, ErrorKind::Transport),
        (Error::Io(io::Error::other("x")), ErrorKind::Transport),
        (Error::Empty, ErrorKind::SharedState),
        (Error::OwnerDied { pid: 1 }, ErrorKind::SharedState),
        (Error::Remote("x".into()), ErrorKind::Manager),
        (Error::TaskPoisoned { deliveries: 3 }, ErrorKind::Cluster),
    ];
    for (e, kind) in cases {
        assert_eq!(e.kind(), kind, "{e:?}");
    }
    // A nested error is a source, once.
    let nested = Error::PoolWorkerStart(Arc::new(Error::Eof));
    assert_eq!(chain(&nested), ["start a pool worker", "receive: the other end is closed (EOF)"]);
}
