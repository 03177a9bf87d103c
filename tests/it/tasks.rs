//! What a newcomer's task may return and what misuse looks like: ordinary
//! errors arrive as `Error::TaskFailed` with their cause chain, serde errors
//! keep their exact round trip, closures and calls outside a runtime are
//! typed errors that say what to write instead.

use std::error::Error as StdError;
use std::fmt;
use std::num::ParseIntError;

use multiproc::{Error, Pool, Process, StartMethod};

use crate::per_method;

/// `int(s)`: an ordinary, non-serde error.
#[multiproc::task]
fn parse(s: String) -> Result<i64, ParseIntError> {
    s.trim().parse()
}

#[multiproc::task]
async fn parse_later(s: String) -> Result<i64, ParseIntError> {
    tokio::task::yield_now().await;
    s.trim().parse()
}

/// An error with a cause, as `thiserror` would write it.
#[derive(Debug)]
struct BadLine {
    line: String,
    source: ParseIntError,
}

impl fmt::Display for BadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad config line `{}`", self.line)
    }
}

impl StdError for BadLine {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.source)
    }
}

#[multiproc::task]
fn port_of(line: String) -> Result<u16, BadLine> {
    let value = line.split_once('=').map_or("", |(_, v)| v);
    value.parse().map_err(|source| BadLine { line: line.clone(), source })
}

/// `anyhow`-style: any error, boxed.
#[multiproc::task]
fn boxed(s: String) -> Result<i64, Box<dyn StdError + Send + Sync>> {
    if s.is_empty() {
        return Err("empty input".into());
    }
    Ok(s.parse::<i64>()?)
}

/// A serde error type keeps today's exact round trip.
#[multiproc::task]
fn checked_sqrt(x: i64) -> Result<i64, String> {
    if x < 0 { Err(format!("{x} is negative")) } else { Ok((x as f64).sqrt() as i64) }
}

async fn pool(method: StartMethod) -> Pool {
    Pool::builder().processes(1).start_method(method).build().await.expect("pool starts")
}

fn expect_failed(r: multiproc::Result<impl fmt::Debug>) -> (String, String, Vec<String>, String) {
    match r {
        Err(Error::TaskFailed(f)) => (f.task, f.message, f.sources, f.location),
        other => panic!("expected TaskFailed, got {other:?}"),
    }
}

async fn returned_error_arrives_as_task_failed(method: StartMethod) {
    let pool = pool(method).await;
    assert_eq!(pool.apply(parse, ("12".to_owned(),)).await.expect("a number parses"), 12);
    let err = pool.apply(parse, ("twelve".to_owned(),)).await;
    let shown = err.as_ref().map_err(ToString::to_string).expect_err("not a number");
    let (task, message, sources, location) = expect_failed(err);
    assert!(task.ends_with("tasks::parse"), "{task}");
    assert_eq!(message, "invalid digit found in string");
    assert!(sources.is_empty(), "{sources:?}");
    assert!(location.starts_with("tests/it/tasks.rs:"), "{location}");
    assert!(shown.contains("it returned an error: invalid digit found in string"), "{shown}");
    // The worker survives an error, as it survives a panic.
    assert_eq!(pool.apply(parse, (" 7 ".to_owned(),)).await.expect("next call"), 7);
    assert_eq!(pool.stats().workers_replaced, 0);
}

async fn async_tasks_return_errors_too(method: StartMethod) {
    let pool = pool(method).await;
    assert_eq!(pool.apply(parse_later, ("5".to_owned(),)).await.expect("parses"), 5);
    let (task, message, ..) = expect_failed(pool.apply(parse_later, ("five".to_owned(),)).await);
    assert!(task.ends_with("tasks::parse_later"), "{task}");
    assert_eq!(message, "invalid digit found in string");
}

async fn the_source_chain_travels(method: StartMethod) {
    let pool = pool(method).await;
    assert_eq!(pool.apply(port_of, ("port=8080".to_owned(),)).await.expect("valid"), 8080);
    let err = pool.apply(port_of, ("port=99999".to_owned(),)).await;
    let shown = err.as_ref().map_err(ToString::to_string).expect_err("out of range");
    let (_, message, sources, _) = expect_failed(err);
    assert_eq!(message, "bad config line `port=99999`");
    assert_eq!(sources, ["number too large to fit in target type"]);
    assert!(shown.ends_with("bad config line `port=99999`: number too large to fit in target type"), "{shown}");
}

async fn boxed_errors_take_the_error_path(method: StartMethod) {
    let pool = pool(method).await;
    let out = pool.map(boxed, ["1", "", "x", "4"].map(String::from)).await.expect("map");
    let mut out = out.into_iter();
    assert_eq!(out.next().expect("item 0").expect("parses"), 1);
    assert_eq!(expect_failed(out.next().expect("item 1")).1, "empty input");
    assert_eq!(expect_failed(out.next().expect("item 2")).1, "invalid digit found in string");
    assert_eq!(out.next().expect("item 3").expect("parses"), 4);
}

async fn serde_errors_keep_their_round_trip(method: StartMethod) {
    let pool = pool(method).await;
    assert_eq!(pool.apply(checked_sqrt, (16,)).await.expect("call"), Ok(4));
    assert_eq!(pool.apply(checked_sqrt, (-1,)).await.expect("call"), Err("-1 is negative".to_owned()));
}

/// Python: an exception escaping `run` gives `exitcode == 1`.
async fn a_process_whose_task_fails_exits_1(method: StartMethod) {
    let mut ok = Process::new(parse, ("3".to_owned(),)).start_method(method);
    ok.start().await.expect("start");
    assert_eq!(ok.join().await.expect("join"), 0);
    let mut failing = Process::new(parse, ("three".to_owned(),)).start_method(method);
    failing.start().await.expect("start");
    assert_eq!(failing.join().await.expect("join"), 1);
}

per_method!(
    returned_error_arrives_as_task_failed,
    async_tasks_return_errors_too,
    the_source_chain_travels,
    boxed_errors_take_the_error_path,
    serde_errors_keep_their_round_trip,
    a_process_whose_task_fails_exits_1,
);

/// Python's `Pool(2)` works anywhere; ours needs tokio, and says so instead
/// of panicking in tokio's reactor.
#[test]
fn outside_a_runtime_is_a_typed_error() {
    use futures::executor::block_on;
    let no_runtime = |r: multiproc::Result<()>, what: &str| match r {
        Err(Error::NoRuntime { what: w }) => {
            assert_eq!(w, what);
            let shown = Error::NoRuntime { what: w }.to_string();
            assert!(shown.contains("#[tokio::main]"), "{shown}");
        }
        other => panic!("{what}: expected NoRuntime, got {other:?}"),
    };
    no_runtime(block_on(Pool::new(1)).map(drop), "a pool");
    no_runtime(block_on(Process::new(parse, ("1".to_owned(),)).start()), "a process");
    no_runtime(block_on(multiproc::Manager::start()).map(drop), "a manager");
}

/// Not annotated: compiles (a closure is a `Fn`), fails at the call with a
/// message that says what to write.
fn not_a_task(x: u64) -> u64 {
    x + 1
}

#[tokio::test]
async fn closures_and_plain_fns_say_what_to_write() {
    let pool = Pool::new(1).await.expect("pool");
    let factor = 3u64;
    let closure = pool.apply(move |x: u64| x * factor, (2,)).await;
    let shown = closure.map_err(|e| e.to_string()).expect_err("a closure is not registered");
    assert!(shown.contains("a closure cannot run in another process"), "{shown}");
    assert!(shown.contains("#[multiproc::task]"), "{shown}");
    let plain = pool.apply(not_a_task, (2,)).await;
    let shown = plain.map_err(|e| e.to_string()).expect_err("not registered");
    assert!(shown.contains("tasks::not_a_task`: it is not registered; put #[multiproc::task]"), "{shown}");
    let mut p = Process::new(move || factor, ());
    let shown = p.start().await.map_err(|e| e.to_string()).expect_err("a closure cannot be a Process target");
    assert!(shown.contains("a closure cannot run in another process"), "{shown}");
}
