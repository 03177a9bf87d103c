//! `Manager`: hosted dict, list and namespace, reached from the parent
//! (async) and from children (blocking) through proxies passed as arguments.

use std::time::Duration;

use multiproc::{DictProxy, Error, ListProxy, Manager, Namespace, Process, StartMethod};

use crate::common::Watch;
use crate::per_method;

#[multiproc::task]
fn append_many(l: ListProxy<u32>, from: u32, n: u32) {
    for i in from..from + n {
        l.blocking_append(i).expect("append");
    }
}

#[multiproc::task]
fn fill(d: DictProxy<String, i64>, ns: Namespace) {
    d.blocking_set("child".into(), 7).expect("set");
    assert_eq!(d.blocking_get(&"parent".into()).expect("get"), Some(1), "the child sees the parent's write");
    ns.blocking_set("seen", &true).expect("ns.seen = True");
}

per_method!(children_see_and_change_hosted_objects, concurrent_appends_are_all_kept);

async fn children_see_and_change_hosted_objects(m: StartMethod) {
    let manager = Manager::start().await.expect("start manager");
    let d = manager.dict::<String, i64>().await.expect("dict");
    let ns = manager.namespace().await.expect("namespace");
    d.set("parent".into(), 1).await.expect("set");
    let mut p = Process::new(fill, (d.clone(), ns.clone())).start_method(m);
    p.start().await.expect("start");
    assert_eq!(p.join().await.expect("join"), 0);
    assert_eq!(d.items().await.expect("items"), vec![("parent".to_string(), 1), ("child".to_string(), 7)]);
    assert_eq!(ns.get::<bool>("seen").await.expect("get"), Some(true));
    assert_eq!(ns.get::<bool>("never").await.expect("get"), None);
    manager.shutdown().await.expect("shutdown");
}

async fn concurrent_appends_are_all_kept(m: StartMethod) {
    let manager = Manager::start().await.expect("start manager");
    let l = manager.list(Vec::<u32>::new()).await.expect("list");
    let mut children = Vec::new();
    for c in 0..4 {
        let mut p = Process::new(append_many, (l.clone(), c * 1000, 250)).start_method(m);
        p.start().await.expect("start");
        children.push(p);
    }
    for p in &children {
        assert_eq!(p.join().await.expect("join"), 0);
    }
    let mut all = l.to_vec().await.expect("to_vec");
    assert_eq!(all.len(), 1000);
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 1000, "no append lost or doubled");
    manager.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn list_and_dict_follow_python_semantics() {
    let manager = Manager::start().await.expect("start manager");
    let l = manager.list([1, 2, 3]).await.expect("list");
    assert_eq!(l.get(-1).await.expect("l[-1]"), 3);
    assert!(matches!(l.get(3).await, Err(Error::Remote(m)) if m.contains("out of range")));
    l.insert(0, 0).await.expect("insert");
    l.extend(vec![4, 5]).await.expect("extend");
    assert_eq!(l.pop(None).await.expect("pop"), 5);
    assert_eq!(l.pop(Some(0)).await.expect("pop(0)"), 0);
    assert_eq!(l.to_vec().await.expect("to_vec"), vec![1, 2, 3, 4]);
    assert_eq!(l.len().await.expect("len"), 4);

    let d = manager.dict_from([(1u8, "a".to_string()), (2, "b".into())]).await.expect("dict");
    assert!(d.contains_key(&1).await.expect("in"));
    assert_eq!(d.remove(&1).await.expect("pop"), Some("a".into()));
    assert_eq!(d.remove(&1).await.expect("pop again"), None);
    assert_eq!(d.len().await.expect("len"), 1);
    d.clear().await.expect("clear");
    assert_eq!(d.items().await.expect("items"), vec![]);
    manager.shutdown().await.expect("shutdown");
    assert!(d.len().await.is_err(), "a proxy to a stopped manager fails instead of hanging");
}

#[tokio::test]
async fn manager_exits_when_every_handle_is_gone() {
    let manager = Manager::start().await.expect("start manager");
    let watch = Watch::new(manager.pid().expect("pid"));
    let l = manager.list([1]).await.expect("list");
    drop(manager);
    assert_eq!(l.len().await.expect("a proxy keeps the manager alive"), 1);
    assert!(!watch.exits_within(Duration::ZERO).await, "the manager runs while a proxy lives");
    drop(l);
    watch.assert_exits(Duration::from_secs(10), "(the manager) outlived its last proxy").await;
}

#[multiproc::task]
fn push_from_child(l: ListProxy<String>) {
    l.blocking_append("from a child over TCP".into()).expect("append");
}

#[tokio::test]
async fn tcp_peers_share_named_objects_after_the_challenge() {
    let key = b"secret key";
    let server = Manager::serve("127.0.0.1:0".parse().expect("addr"), key).await.expect("serve");
    let address = server.address().expect("bound address");
    let jobs = server.list_named::<String>("jobs").await.expect("list_named");
    jobs.append("from the server".into()).await.expect("append");

    let peer = Manager::connect(address, key).await.expect("connect with the key");
    let same = peer.list_named::<String>("jobs").await.expect("the same list by name");
    assert_eq!(same.to_vec().await.expect("to_vec"), vec!["from the server".to_string()]);
    match peer.dict_named::<u8, u8>("jobs").await {
        Err(e @ Error::WrongKind { .. }) => {
            let m = e.to_string();
            assert!(m.contains("\"jobs\"") && m.contains("list") && m.contains("dict"), "names both types: {m}");
        }
        other => panic!("a name keeps its kind, got {other:?}"),
    }

    let mut p = Process::new(push_from_child, (same.clone(),));
    p.start().await.expect("start");
    assert_eq!(p.join().await.expect("join"), 0);
    assert_eq!(jobs.len().await.expect("len"), 2);
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn tcp_strangers_are_refused_and_the_manager_serves_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Manager::serve("127.0.0.1:0".parse().expect("addr"), b"right").await.expect("serve");
    let address = server.address().expect("bound address");

    match Manager::connect(address, b"wrong").await {
        Err(Error::Authentication(m)) => assert!(m.contains("refused"), "{m}"),
        other => panic!("a wrong key must be refused, got {other:?}"),
    }

    // A stranger that announces a huge frame instead of answering.
    let mut stranger = tokio::net::TcpStream::connect(address).await.expect("connect");
    stranger.write_all(&[0x7f, 0xff, 0xff, 0xff, 0]).await.expect("write");
    let mut buf = Vec::new();
    let _ = stranger.read_to_end(&mut buf).await;

    let peer = Manager::connect(address, b"right").await.expect("the right key still works");
    let ns = peer.namespace_named("ns").await.expect("namespace");
    ns.set("x", &1u8).await.expect("set");
    assert_eq!(ns.get::<u8>("x").await.expect("get"), Some(1));
    assert!(matches!(Manager::serve("127.0.0.1:0".parse().expect("addr"), b"").await, Err(Error::Authentication(_))));
    server.shutdown().await.expect("shutdown");
}
