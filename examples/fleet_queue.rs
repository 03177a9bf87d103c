//! Fleet recipe 2b: a `Supervisor` of queue consumers that take jobs under
//! a lease (`get_leased`), so a consumer SIGKILLed in the middle of a job
//! loses nothing: the job is handed to another consumer when the dead one's
//! lease is found, and the supervisor restarts the dead consumer.
//!
//! Delivery is at-least-once, and the results are deduplicated by job id:
//! a consumer puts its result, then acknowledges the job. The two are
//! writes to two queues, so a SIGKILL between them leaves a result whose job
//! is delivered again (exactly-once would need the put and the ack to be one
//! atomic step across two queues). The collector keeps the first result of
//! each job id and counts the duplicates; the jobs are pure, so a duplicate
//! is the same value.
//!
//! The run ends with a SIGTERM to this program while jobs are still
//! queued, and the drain it starts: the consumers keep working (and the
//! jobs of consumers killed just before are handed out again) until every
//! job has a result; then they are stopped in order (each sees
//! `stop_requested()` between jobs and returns).
//!
//! `fleet_queue [KILLS] [JOBS]` (defaults 20 and 3,000) prints `jobs in N,
//! results out N, lost 0, duplicates D, redelivered R, kills K, restarts S`
//! and exits non-zero if a job is lost or a result is wrong.
//!
//! e2e-args: 20
//! expect: lost 0

use std::collections::HashMap;
use std::time::Duration;

use multiproc::{ChildSpec, Error, Queue, Strategy, Supervisor};

/// A job: about a millisecond of arithmetic on its input, so most kills
/// land in the middle of one.
fn work(n: u64) -> u64 {
    (0..30_000u64).fold(n, |acc, i| acc.rotate_left(7) ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// A consumer: takes a job under a lease, puts `(job, result, deliveries)`,
/// then acknowledges the job; between jobs it beats its heartbeat and
/// looks whether it was asked to stop.
#[multiproc::task]
fn consume(jobs: Queue<u64>, results: Queue<(u64, u64, u32)>) -> multiproc::Result<()> {
    while !multiproc::stop_requested() {
        multiproc::heartbeat();
        let job = match jobs.blocking_get_leased_timeout(Duration::from_millis(50)) {
            Ok(job) => job,
            Err(Error::Empty) => continue,
            Err(e) => return Err(e),
        };
        let n = *job;
        results.blocking_put((n, work(n), job.deliveries()))?;
        // A SIGKILL here delivers the job again: the collector dedupes.
        job.ack()?;
    }
    Ok(())
}

/// The results seen: the first of each job id, and what else came.
#[derive(Default)]
struct Tally {
    out: HashMap<u64, u64>,
    duplicates: u64,
    redelivered: u64,
    wrong: u64,
}

impl Tally {
    fn add(&mut self, (n, value, deliveries): (u64, u64, u32), jobs_in: u64) {
        self.redelivered += u64::from(deliveries > 1);
        if n >= jobs_in || value != work(n) {
            eprintln!("job {n}: wrong result {value}");
            self.wrong += 1;
        } else if self.out.insert(n, value).is_some() {
            self.duplicates += 1;
        }
    }
}

/// xorshift64: which consumer to kill, and when.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[tokio::main]
async fn main() -> multiproc::Result<()> {
    let mut args = std::env::args().skip(1);
    let kills: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let jobs_in: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3_000);
    let jobs = Queue::<u64>::new()?;
    let results = Queue::<(u64, u64, u32)>::new()?;
    for n in 0..jobs_in {
        jobs.put(n).await?;
    }

    let mut builder = Supervisor::builder()
        .name("consumers")
        .strategy(Strategy::OneForOne)
        .intensity(10_000, Duration::from_secs(10))
        .backoff(Duration::from_millis(5), Duration::from_millis(100));
    for i in 0..4 {
        builder = builder.child(
            ChildSpec::task(format!("consumer-{i}"), consume, (jobs.clone(), results.clone()))
                .heartbeat(Duration::from_secs(10))
                .shutdown_grace(Duration::from_secs(10)),
        );
    }
    let sup = builder.start().await?;
    let signal = multiproc::shutdown_on_signals();

    // SIGKILL random consumers, each a live one not killed before.
    let mut rng = u64::from(std::process::id()) | 1;
    let mut killed = std::collections::HashSet::new();
    while (killed.len() as u32) < kills {
        tokio::time::sleep(Duration::from_millis(2 + next(&mut rng) % 10)).await;
        let live: Vec<u32> =
            sup.stats().await?.children.iter().filter_map(|c| c.pid).filter(|p| !killed.contains(p)).collect();
        if let Some(&pid) = live.get((next(&mut rng) % live.len().max(1) as u64) as usize)
            && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).is_ok()
        {
            killed.insert(pid);
        }
    }
    let queued_at_sigterm = jobs.qsize();

    // The end of the run: SIGTERM, then the drain: every job has a result.
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM).expect("raise SIGTERM");
    signal.await;
    let mut tally = Tally::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while (tally.out.len() as u64) < jobs_in {
        match results.get_timeout(deadline.saturating_duration_since(tokio::time::Instant::now())).await {
            Ok(r) => tally.add(r, jobs_in),
            Err(Error::Empty) => break,
            Err(e) => return Err(e),
        }
    }
    let drained = tally.out.len() as u64 == jobs_in;
    let restarts = sup.stats().await?.restarts;
    sup.shutdown(Duration::from_secs(10)).await?;
    // Results put by consumers killed before their ack: duplicates.
    loop {
        match results.get_nowait() {
            Ok(r) => tally.add(r, jobs_in),
            Err(Error::Empty) => break,
            Err(e) => return Err(e),
        }
    }
    let Tally { out, duplicates, redelivered, wrong } = tally;
    let lost = jobs_in - out.len() as u64;
    println!(
        "jobs in {jobs_in}, results out {}, lost {lost}, duplicates {duplicates}, redelivered {redelivered}, \
         kills {}, restarts {restarts}, queued at SIGTERM {queued_at_sigterm}, drained {drained}",
        out.len(),
        killed.len()
    );
    if lost != 0 || wrong != 0 || !drained || jobs.qsize() != 0 {
        std::process::exit(1);
    }
    Ok(())
}
