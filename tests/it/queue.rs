//! `Queue`, `SimpleQueue` and `JoinableQueue` between real processes.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use multiproc::{Connection, Error, JoinableQueue, Pipe, Process, Queue, SimpleQueue, StartMethod};

use crate::per_method;

#[multiproc::task]
fn put_list(q: Queue<(i32, Option<i32>, String)>) {
    q.blocking_put((42, None, "hello".into())).expect("put");
}

#[multiproc::task]
fn put_megabyte(q: Queue<String>) {
    q.blocking_put("X".repeat(1_000_000)).expect("put");
}

/// Puts `n` numbers tagged with the producer's id.
#[multiproc::task]
fn produce(q: Queue<Option<u64>>, id: u64, n: u64) {
    for i in 0..n {
        q.blocking_put(Some(id << 32 | i)).expect("put");
    }
}

/// Takes numbers until `None`; reports how many and their sum.
#[multiproc::task]
fn consume(q: Queue<Option<u64>>, results: Queue<(u64, u64)>) {
    let (mut count, mut sum) = (0u64, 0u64);
    while let Some(v) = q.blocking_get().expect("get") {
        count += 1;
        sum = sum.wrapping_add(v);
    }
    results.blocking_put((count, sum)).expect("report");
}

/// Forwards every item it gets to `out`, forever.
#[multiproc::task]
fn forward(q: Queue<u32>, mut out: Connection) {
    loop {
        let v = q.blocking_get().expect("get");
        out.blocking_send(&v).expect("forward");
    }
}

/// Takes one item and reports it.
#[multiproc::task]
async fn take_one(q: Queue<u32>, mut out: Connection) {
    let v = q.get().await.expect("get");
    out.send(&v).await.expect("report");
}

/// Gets items and marks each done, forever.
#[multiproc::task]
fn work_joinable(q: JoinableQueue<u32>) {
    loop {
        q.blocking_get().expect("get");
        q.task_done().expect("task_done");
    }
}

#[multiproc::task]
fn simple_echo(inq: SimpleQueue<String>, outq: SimpleQueue<String>) {
    let s = inq.blocking_get().expect("get");
    outq.blocking_put(s.to_uppercase()).expect("put");
}

per_method!(
    child_puts_parent_gets,
    child_that_put_a_megabyte_joins_before_the_get,
    four_producers_four_consumers_lose_and_duplicate_nothing,
    consumer_killed_while_blocked_in_get_loses_nothing,
    joinable_queue_join_waits_for_task_done_in_a_child
);

async fn child_puts_parent_gets(m: StartMethod) {
    let q = Queue::new().expect("queue");
    let mut p = Process::new(put_list, (q.clone(),)).start_method(m);
    p.start().await.expect("start");
    assert_eq!(q.get().await.expect("get"), (42, None, "hello".to_string()));
    assert_eq!(p.join().await.expect("join"), 0);
}

async fn child_that_put_a_megabyte_joins_before_the_get(m: StartMethod) {
    // The seed that deadlocks in CPython: join first, then get.
    let queue = Queue::<String>::new().expect("queue");
    let mut p = Process::new(put_megabyte, (queue.clone(),)).start_method(m);
    p.start().await.expect("start");
    assert_eq!(p.join().await.expect("join"), 0);
    assert_eq!(queue.get().await.expect("get").len(), 1_000_000);
}

async fn four_producers_four_consumers_lose_and_duplicate_nothing(m: StartMethod) {
    const PER_PRODUCER: u64 = 25_000;
    let q = Queue::<Option<u64>>::new().expect("queue");
    let results = Queue::<(u64, u64)>::new().expect("queue");
    let mut consumers = Vec::new();
    for _ in 0..4 {
        let mut p = Process::new(consume, (q.clone(), results.clone())).start_method(m);
        p.start().await.expect("start consumer");
        consumers.push(p);
    }
    let mut producers = Vec::new();
    for id in 0..4 {
        let mut p = Process::new(produce, (q.clone(), id, PER_PRODUCER)).start_method(m);
        p.start().await.expect("start producer");
        producers.push(p);
    }
    for p in &producers {
        assert_eq!(p.join().await.expect("join producer"), 0);
    }
    for _ in 0..4 {
        q.put(None).await.expect("sentinel");
    }
    let (mut count, mut sum) = (0u64, 0u64);
    for _ in 0..4 {
        let (c, s) = results.get().await.expect("result");
        count += c;
        sum = sum.wrapping_add(s);
    }
    for p in &consumers {
        assert_eq!(p.join().await.expect("join consumer"), 0);
    }
    let expected: u64 = (0..4u64).flat_map(|id| (0..PER_PRODUCER).map(move |i| id << 32 | i)).sum();
    assert_eq!((count, sum), (4 * PER_PRODUCER, expected));
    assert!(q.empty());
}

async fn consumer_killed_while_blocked_in_get_loses_nothing(m: StartMethod) {
    let q = Queue::<u32>::new().expect("queue");
    let (mut delivered, out) = Pipe::new().expect("pipe");
    let mut p = Process::new(forward, (q.clone(), out)).start_method(m);
    p.start().await.expect("start");
    for i in 0..10 {
        q.put(i).await.expect("put");
    }
    for i in 0..10 {
        assert_eq!(delivered.recv::<u32>().await.expect("forwarded"), i);
    }
    // The queue is empty: the consumer is blocked in `get` (or on its way).
    p.kill().expect("kill");
    assert_eq!(p.join().await.expect("join"), -9);
    for i in 10..20 {
        q.put(i).await.expect("put");
    }
    assert_eq!(q.qsize(), 10, "nothing taken by the dead consumer");
    for i in 10..20 {
        assert_eq!(q.get_nowait().expect("still there"), i);
    }
}

async fn joinable_queue_join_waits_for_task_done_in_a_child(m: StartMethod) {
    let q = JoinableQueue::<u32>::new().expect("queue");
    let mut p = Process::new(work_joinable, (q.clone(),)).start_method(m).daemon(true);
    p.start().await.expect("start");
    for i in 0..1000 {
        q.put(i).await.expect("put");
    }
    q.join().await.expect("join");
    assert_eq!(q.unfinished_tasks(), 0);
    assert!(q.empty());
    p.terminate().expect("terminate");
    p.join().await.expect("join");
}

#[tokio::test]
async fn get_with_timeout_on_an_empty_queue_waits_then_is_empty() {
    let q = Queue::<u8>::new().expect("queue");
    let timeout = Duration::from_millis(100);
    let t = Instant::now();
    assert!(matches!(q.get_timeout(timeout).await, Err(Error::Empty)));
    assert!(t.elapsed() >= timeout, "waited {:?}", t.elapsed());
    let t = Instant::now();
    let q2 = q.clone();
    let got = tokio::task::spawn_blocking(move || q2.blocking_get_timeout(timeout)).await.expect("thread");
    assert!(matches!(got, Err(Error::Empty)));
    assert!(t.elapsed() >= timeout, "waited {:?}", t.elapsed());
    assert!(matches!(q.get_nowait(), Err(Error::Empty)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_put_waits_while_full_and_resumes_when_a_consumer_takes_one() {
    let q = Queue::<u32>::with_maxsize(1).expect("queue");
    assert_eq!(q.maxsize(), 1);
    q.put(1).await.expect("put");
    assert!(q.full());
    assert!(matches!(q.put_nowait(2), Err(Error::Full)));
    let timeout = Duration::from_millis(50);
    let t = Instant::now();
    assert!(matches!(q.put_timeout(2, timeout).await, Err(Error::Full)));
    let q2 = q.clone();
    let put = tokio::task::spawn_blocking(move || q2.blocking_put_timeout(2, timeout)).await.expect("thread");
    assert!(matches!(put, Err(Error::Full)));
    assert!(t.elapsed() >= 2 * timeout);

    let waiting = tokio::spawn({
        let q = q.clone();
        async move { q.put(2).await }
    });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished(), "a put on a full queue waits");
    let (mut report, out) = Pipe::new().expect("pipe");
    let mut p = Process::new(take_one, (q.clone(), out));
    p.start().await.expect("start");
    assert_eq!(report.recv::<u32>().await.expect("report"), 1);
    waiting.await.expect("task").expect("the waiting put resumed");
    assert_eq!(q.get().await.expect("get"), 2);
    assert_eq!(p.join().await.expect("join"), 0);
}

struct Unserializable;

impl serde::Serialize for Unserializable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("this value refuses to be encoded"))
    }
}

#[tokio::test]
async fn an_unserializable_item_fails_the_put() {
    let q = Queue::<Unserializable>::new().expect("queue");
    assert!(matches!(q.put(Unserializable).await, Err(Error::Encode { .. })));
    assert!(matches!(q.blocking_put(Unserializable), Err(Error::Encode { .. })));
    assert!(matches!(q.put_nowait(Unserializable), Err(Error::Encode { .. })));
    assert_eq!(q.qsize(), 0);

    // A handle owning an fd cannot live in shared memory either.
    let q = Queue::<Connection>::new().expect("queue");
    let (a, _b) = Pipe::new().expect("pipe");
    assert!(matches!(q.put(a).await, Err(Error::Encode { .. })));
}

#[tokio::test]
async fn too_large_items_are_a_typed_error_and_big_ones_wait_for_room() {
    let q = Queue::<serde_bytes_like::Bytes>::builder().capacity_bytes(4096).build().expect("queue");
    let max = q.max_item_bytes();
    assert!(
        matches!(q.put(serde_bytes_like::Bytes(vec![0; 5000])).await, Err(Error::ItemTooLarge { max: m, .. }) if m == max)
    );
    q.put(serde_bytes_like::Bytes(vec![1; 3000])).await.expect("fits");
    // No room for a second one until the first leaves.
    assert!(matches!(q.put_nowait(serde_bytes_like::Bytes(vec![2; 3000])), Err(Error::Full)));
    assert_eq!(q.get().await.expect("get").0, vec![1; 3000]);
    q.put_nowait(serde_bytes_like::Bytes(vec![2; 3000])).expect("room now");
}

/// Bytes as msgpack bin (what `serde_bytes` does) without the dependency.
mod serde_bytes_like {
    #[derive(Debug, PartialEq)]
    pub struct Bytes(pub Vec<u8>);

    impl serde::Serialize for Bytes {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&self.0)
        }
    }

    impl<'de> serde::Deserialize<'de> for Bytes {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = Bytes;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E>(self, v: &[u8]) -> Result<Bytes, E> {
                    Ok(Bytes(v.to_vec()))
                }
            }
            d.deserialize_bytes(V)
        }
    }
}

#[tokio::test]
async fn close_refuses_later_puts_and_gets_in_this_process() {
    let q = Queue::<u8>::new().expect("queue");
    let other = q.clone();
    q.put(1).await.expect("put");
    q.close();
    assert!(matches!(q.put(2).await, Err(Error::Closed("queue"))));
    assert!(matches!(other.get_nowait(), Err(Error::Closed("queue"))));
    q.join_thread();
}

#[tokio::test]
async fn fifo_per_producer_and_sizes() {
    let q = Queue::<u32>::new().expect("queue");
    assert!(q.empty() && !q.full());
    for i in 0..100 {
        q.put(i).await.expect("put");
    }
    assert_eq!(q.qsize(), 100);
    for i in 0..100 {
        assert_eq!(q.blocking_get().expect("get"), i);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_is_a_stream_and_a_sink() {
    let mut sink = Queue::<u32>::with_maxsize(4).expect("queue");
    let mut stream = sink.clone();
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < 100 {
            got.push(stream.next().await.expect("an item").expect("ok"));
        }
        got
    });
    sink.send_all(&mut futures::stream::iter((0..100).map(Ok))).await.expect("send_all");
    assert_eq!(reader.await.expect("reader"), (0..100).collect::<Vec<_>>());
    SinkExt::close(&mut sink).await.expect("close");
    assert!(sink.next().await.is_none(), "a closed queue ends its stream");
}

#[tokio::test]
async fn task_done_too_many_times_is_a_typed_error() {
    let q = JoinableQueue::<u8>::new().expect("queue");
    q.put(1).await.expect("put");
    q.get().await.expect("get");
    q.task_done().expect("one done");
    assert!(matches!(q.task_done(), Err(Error::TaskDoneTooManyTimes)));
    q.join().await.expect("nothing unfinished");
    q.blocking_join_timeout(Duration::from_millis(1)).expect("nothing unfinished");
    q.put(2).await.expect("put");
    assert!(matches!(q.blocking_join_timeout(Duration::from_millis(20)), Err(Error::Timeout)));
}

#[tokio::test]
async fn simple_queue_round_trip_through_a_child() {
    let (inq, outq) = (SimpleQueue::new().expect("queue"), SimpleQueue::new().expect("queue"));
    let mut p = Process::new(simple_echo, (inq.clone(), outq.clone()));
    p.start().await.expect("start");
    inq.put("shout".to_string()).await.expect("put");
    assert_eq!(outq.get().await.expect("get"), "SHOUT");
    assert!(outq.empty());
    assert_eq!(p.join().await.expect("join"), 0);
}

/// On a single-threaded runtime a waiting `get` must leave the thread to
/// the task that will put (it would deadlock if it blocked).
#[tokio::test(flavor = "current_thread")]
async fn a_waiting_get_does_not_block_the_runtime() {
    let q = Queue::<u32>::new().expect("queue");
    let getter = tokio::spawn({
        let q = q.clone();
        async move { q.get().await }
    });
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    q.put(5).await.expect("put");
    assert_eq!(getter.await.expect("task").expect("get"), 5);

    let j = JoinableQueue::<u32>::new().expect("queue");
    j.put(1).await.expect("put");
    let joiner = tokio::spawn({
        let j = j.clone();
        async move { j.join().await }
    });
    tokio::task::yield_now().await;
    j.get().await.expect("get");
    j.task_done().expect("done");
    joiner.await.expect("task").expect("join");
}
