//! An async web service (axum) that offloads CPU-heavy, crash-prone work to
//! a `Pool`, and shuts down gracefully: on Ctrl-C or SIGTERM it stops
//! accepting, finishes the requests in flight, then closes and joins the
//! pool.
//!
//! ```text
//! cargo run --example service            # serves on 127.0.0.1:3000 until Ctrl-C / SIGTERM
//! curl localhost:3000/primes/1000000     # 78498 primes below 1000000
//! curl localhost:3000/primes/1000000000000  # 400: the task returned an error
//! curl localhost:3000/crash              # 503: the worker died; the next request is served
//! cargo run --example service -- --once  # starts, serves its own client, stops
//! ```
//!
//! What it shows: a task's ordinary error arrives as `Error::TaskFailed`
//! (answered 400), a worker that dies fails only its request with
//! `Error::WorkerLost` (answered 503) and is replaced, and the runtime
//! threads never do the work.
//!
//! e2e-args: --once
//! expect: GET /primes/100000 -> 200 OK: 9592 primes below 100000
//! expect: GET /primes/1000000000000 -> 400 Bad Request: counting primes below 1000000000000: above the limit of 100000000
//! expect: GET /crash -> 503 Service Unavailable: the worker died
//! expect: GET /primes/10 -> 200 OK: 4 primes below 10
//! expect: shut down cleanly

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use multiproc::{Error, Pool};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Refuses work too big for one request.
const LIMIT: u64 = 100_000_000;

/// An ordinary error type (no serde): it reaches the service as
/// `Error::TaskFailed` with this message.
#[derive(Debug)]
struct TooLarge {
    below: u64,
}

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "counting primes below {}: above the limit of {LIMIT}", self.below)
    }
}

impl std::error::Error for TooLarge {}

/// CPU-bound: a sieve, in a worker process.
#[multiproc::task]
fn count_primes(below: u64) -> Result<u64, TooLarge> {
    if below > LIMIT {
        return Err(TooLarge { below });
    }
    let n = below as usize;
    let mut composite = vec![false; n.max(2)];
    let mut count = 0;
    for i in 2..n {
        if !composite[i] {
            count += 1;
            for j in (i * i..n).step_by(i) {
                composite[j] = true;
            }
        }
    }
    Ok(count)
}

/// Stands for a C library that segfaults on bad input.
#[multiproc::task]
fn crash() {
    std::process::abort()
}

async fn primes(State(pool): State<Arc<Pool>>, Path(below): Path<u64>) -> (StatusCode, String) {
    match pool.apply(count_primes, (below,)).await {
        Ok(count) => (StatusCode::OK, format!("{count} primes below {below}")),
        Err(Error::TaskFailed(failure)) => (StatusCode::BAD_REQUEST, failure.message),
        Err(e) => unavailable(e),
    }
}

async fn crash_handler(State(pool): State<Arc<Pool>>) -> (StatusCode, String) {
    match pool.apply(crash, ()).await {
        Ok(()) => (StatusCode::OK, "survived".into()),
        Err(e) => unavailable(e),
    }
}

fn unavailable(e: Error) -> (StatusCode, String) {
    match e {
        Error::WorkerLost { pid, status } => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("the worker died (pid {pid}, {status}); try again"))
        }
        Error::Timeout => (StatusCode::SERVICE_UNAVAILABLE, "the work took too long".into()),
        e => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Resolves on Ctrl-C or SIGTERM (or when `done` fires, in `--once` mode).
async fn shutdown_signal(done: Option<oneshot::Receiver<()>>) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler can be installed");
    let done = async {
        match done {
            Some(rx) => drop(rx.await),
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        () = done => {}
    }
}

/// A minimal HTTP/1.1 client for `--once`: the status line and the body.
async fn fetch(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response.lines().next().unwrap_or_default().trim_start_matches("HTTP/1.1 ").to_owned();
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Ok(format!("GET {path} -> {status}: {body}"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let once = std::env::args().any(|a| a == "--once");
    let pool = Arc::new(
        Pool::builder()
            .processes(2)
            .task_timeout(Duration::from_secs(30)) // a stuck request is stopped, not waited for
            .build()
            .await?,
    );
    let app = Router::new()
        .route("/primes/{below}", get(primes))
        .route("/crash", get(crash_handler))
        .with_state(Arc::clone(&pool));

    let listener = TcpListener::bind(if once { "127.0.0.1:0" } else { "127.0.0.1:3000" }).await?;
    let addr = listener.local_addr()?;
    let (done_tx, done_rx) = oneshot::channel();
    let client = if once {
        Some(tokio::spawn(async move {
            for path in ["/primes/100000", "/primes/1000000000000", "/crash", "/primes/10"] {
                match fetch(addr, path).await {
                    Ok(line) => println!("{line}"),
                    Err(e) => println!("GET {path} failed: {e}"),
                }
            }
            let _ = done_tx.send(());
        }))
    } else {
        println!("listening on http://{addr} (Ctrl-C to stop)");
        drop(done_tx);
        None
    };

    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal(once.then_some(done_rx))).await?;
    if let Some(client) = client {
        client.await?;
    }
    // Every request has been answered: let the workers finish and exit.
    pool.close();
    pool.join().await?;
    println!("shut down cleanly");
    Ok(())
}
