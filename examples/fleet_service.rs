//! Fleet recipe 3: an async service that offloads CPU work to a `Pool` and
//! shuts down gracefully. A small TCP service answers one number per line
//! with `job(n)` computed on the pool; clients keep it busy while workers
//! are SIGKILLed at random; then SIGTERM: the service stops accepting, the
//! connections in flight are served to the end, and the pool drains.
//! (With axum: `axum::serve(..).with_graceful_shutdown(signal)`, then
//! `pool.shutdown(grace)`; the same order.)
//!
//! Prints `requests in N, responses out N, lost 0` and exits non-zero if a
//! request went unanswered or wrong.
//!
//! e2e-args: 10
//! expect: lost 0

use std::time::Duration;

use multiproc::Pool;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[multiproc::task]
fn job(n: u64) -> u64 {
    (0..10_000u64).fold(n, |acc, i| acc.rotate_left(7) ^ i)
}

fn expected(n: u64) -> u64 {
    (0..10_000u64).fold(n, |acc, i| acc.rotate_left(7) ^ i)
}

/// Answers each line of one connection until the client hangs up.
async fn serve(pool: Pool, stream: TcpStream) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        let reply = match line.trim().parse::<u64>() {
            Ok(n) => match pool.apply(job, (n,)).await {
                Ok(v) => v.to_string(),
                Err(e) => format!("error: {e}"),
            },
            Err(e) => format!("error: {e}"),
        };
        write.write_all(format!("{reply}\n").as_bytes()).await?;
    }
    Ok(())
}

/// One client: `n` requests, one at a time; how many came back right.
async fn client(addr: std::net::SocketAddr, first: u64, n: u64) -> std::io::Result<u64> {
    let stream = TcpStream::connect(addr).await?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut ok = 0;
    for x in first..first + n {
        write.write_all(format!("{x}\n").as_bytes()).await?;
        match lines.next_line().await? {
            Some(reply) if reply == expected(x).to_string() => ok += 1,
            other => eprintln!("request {x}: {other:?}"),
        }
    }
    Ok(ok)
}

fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let kills: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let pool = Pool::builder().processes(2).retries(10).build().await.map_err(std::io::Error::other)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let signal = multiproc::shutdown_on_signals();

    // The service: accept until the signal, then serve what is open to its end.
    let server = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            tokio::pin!(signal);
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let (stream, _) = accepted?;
                        connections.spawn(serve(pool.clone(), stream));
                    }
                    sig = &mut signal => {
                        println!("signal {sig}: no new connections; finishing {}", connections.len());
                        break;
                    }
                }
            }
            drop(listener);
            while let Some(r) = connections.join_next().await {
                r.map_err(std::io::Error::other)??;
            }
            std::io::Result::Ok(())
        })
    };

    let (clients, per) = (8u64, 100u64);
    let mut running = tokio::task::JoinSet::new();
    for c in 0..clients {
        running.spawn(client(addr, c * per, per));
    }
    let mut rng = u64::from(std::process::id()) | 1;
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(5 + next(&mut rng) % 10)).await;
        let pids = pool.pids();
        if let Some(&pid) = pids.get((next(&mut rng) % pids.len().max(1) as u64) as usize) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
    }
    // SIGTERM while clients are still mid-conversation.
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM).map_err(std::io::Error::other)?;
    let mut out = 0;
    while let Some(r) = running.join_next().await {
        out += r.map_err(std::io::Error::other)??;
    }
    server.await.map_err(std::io::Error::other)??;
    let drained = pool.shutdown(Duration::from_secs(30)).await;
    let requests = clients * per;
    println!(
        "requests in {requests}, responses out {out}, lost {}, workers replaced {}, drained {drained}",
        requests - out,
        pool.stats().workers_replaced
    );
    if out != requests {
        std::process::exit(1);
    }
    Ok(())
}
