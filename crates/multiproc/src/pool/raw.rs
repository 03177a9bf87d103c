//! A door for `multiproc-cluster`'s agent (doc-hidden, not a public API):
//! run a task named by its registered name on this pool, with its argument
//! tuples already encoded as msgpack, and get each item's encoded result or
//! typed error back. The agent never knows the task's Rust types.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::Pool;
use super::queue::{ChunkDone, Delivery, Job, Submission, failure_to_error};
use crate::error::{Error, Result};
use crate::wire::TaskRef;

impl Pool {
    /// Runs task `name` (whose signature fingerprint must be `signature`) once
    /// per argument tuple, as one chunk: tuple `i` is `args[ends[i-1]..ends[i]]`.
    /// Returns one entry per tuple: the msgpack result, or why it has none
    /// (`WorkerLost` for every item when the worker died mid-chunk).
    #[doc(hidden)]
    pub async fn __run_raw(
        &self,
        name: &str,
        signature: &str,
        args: Vec<u8>,
        ends: Vec<u32>,
        timeout: Option<Duration>,
    ) -> Vec<Result<Vec<u8>>> {
        let len = ends.len();
        if ends.windows(2).any(|w| w[0] > w[1]) || ends.last().is_some_and(|&e| e as usize > args.len()) {
            let why = "the item boundaries do not fit the arguments";
            return (0..len).map(|_| Err(Error::decode("a raw call", why))).collect();
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = Arc::new(TaskRef { name: name.to_owned(), signature: signature.to_owned() });
        let shared = &self.shared;
        let job = Job {
            batch: shared.next_batch(),
            base: 0,
            of: Submission::new(task, tx),
            args,
            ends,
            fds: Vec::new(),
            timeout: timeout.or(shared.config.task_timeout),
            attempts: 0,
            chunk: usize::MAX,
            cut: 0,
        };
        if let Err(e) = shared.submit(std::iter::once(job)) {
            let why = std::sync::Arc::new(e);
            return (0..len).map(|_| Err(Error::PoolWorkerStart(why.clone()))).collect();
        }
        // A chunk may come back in parts (finished items reported while the
        // rest still runs), each placed at its `base`.
        let mut out: Vec<Option<Result<Vec<u8>>>> = (0..len).map(|_| None).collect();
        let mut missing = len;
        while missing > 0 {
            let Some(d) = rx.recv().await else { break };
            let base = d.base;
            for (i, r) in split(d).into_iter().enumerate() {
                if let Some(slot) = out.get_mut(base + i)
                    && slot.is_none()
                {
                    *slot = Some(r);
                    missing -= 1;
                }
            }
        }
        out.into_iter().map(|r| r.unwrap_or(Err(Error::PoolTerminated))).collect()
    }
}

/// One delivery as per-item raw results.
fn split(d: Delivery) -> Vec<Result<Vec<u8>>> {
    let len = d.len;
    match d.outcome {
        Err(e) => (0..len).map(|_| Err(e.to_error())).collect(),
        // Results carry no fds here: a cluster task's values are data only,
        // and any fd that came along closes with `fds`.
        Ok(ChunkDone { data, ends, failures, fds: _ }) => {
            let mut failures = failures.into_iter().peekable();
            let mut start = 0usize;
            (0..len)
                .map(|i| {
                    let end = ends.get(i).map_or(start, |&e| e as usize).clamp(start, data.len());
                    let bytes = data.get(start..end).unwrap_or_default();
                    start = end;
                    match failures.next_if(|(at, _)| *at as usize == i) {
                        Some((_, f)) => Err(failure_to_error(&f)),
                        None => Ok(bytes.to_vec()),
                    }
                })
                .collect()
        }
    }
}
