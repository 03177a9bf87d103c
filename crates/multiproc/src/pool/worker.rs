//! The pool worker's loop: after the handshake (`tree::child`), run the
//! initializer, then serve calls until the parent hangs up. Every reply goes
//! out before the next call starts.
//!
//! Two things the parent relies on to lose nothing:
//! - before running call `id` the worker stores `id + 1` in the shared
//!   progress word, so a call lost with its worker is known to have started
//!   (it fails, or is retried) or not (it is requeued, always);
//! - inside a long chunk it reports the items finished so far (a `Done` with
//!   `more`) after an item that took [`SLOW_ITEM`] or more, or every
//!   [`PROGRESS_EVERY`], so a per-item timeout keeps the finished items and
//!   restarts its clock at each report.
//!
//! A running task sees the pool's shutdown through the stop token
//! (`stop_requested()`, `stopped()`), an `Event` the pool sets.

use std::os::fd::OwnedFd;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_bytes::ByteBuf;

use super::{MAX_RESULT_BYTES, PROGRESS_EVERY};
use crate::error::{Error, Result};
use crate::registry::{TaskEntry, resolve};
use crate::tree::child::{REFUSED, call_caught};
use crate::value::Value;
use crate::wire::{BlockingChannel, Ends, Failure, FromWorker, ToWorker, fds};

/// An item that took this long is reported at once (its successors may be
/// slow too; one report per millisecond of work costs nothing).
const SLOW_ITEM: Duration = Duration::from_millis(1);

/// A copy of the worker's control socket, for tests that make a worker
/// misbehave on it.
static CONTROL: OnceLock<OwnedFd> = OnceLock::new();

/// Writes raw bytes on this pool worker's control socket, bypassing the
/// framing (tests only).
pub(crate) fn write_raw(bytes: &[u8]) -> Result<()> {
    let fd = CONTROL.get().ok_or(Error::Closed("pool worker control socket (not in a pool worker)"))?;
    nix::unistd::write(fd, bytes)?;
    Ok(())
}

pub(crate) fn serve_pool(
    mut ch: BlockingChannel,
    init: Option<(crate::wire::TaskRef, ByteBuf)>,
    progress: Option<ByteBuf>,
    stop: Option<ByteBuf>,
    mut init_fds: Vec<OwnedFd>,
) -> Result<i32> {
    if let Ok(fd) = ch.fd().try_clone_to_owned() {
        let _ = CONTROL.set(fd);
    }
    // The pool's stop token's fd comes last (issue 11: `stop_requested()`
    // in a pool worker reads it).
    if let Some(bytes) = stop {
        let fd = init_fds.pop().ok_or_else(|| Error::Malformed("the stop token's fd is missing".into()))?;
        crate::shutdown::install_pool_stop(fds::provide(vec![fd], || crate::wire::decode("the stop token", &bytes))?);
    }
    // The progress word's fd comes before it, after the initializer's.
    let progress: Option<Value<u64>> = match progress {
        Some(bytes) => {
            let fd = init_fds.pop().ok_or_else(|| Error::Malformed("the progress word's fd is missing".into()))?;
            Some(fds::provide(vec![fd], || crate::wire::decode("the progress word", &bytes))?)
        }
        None => None,
    };
    let mut runtime = None;
    if let Some((task, args)) = init {
        let failure = match resolve(&task) {
            Ok(entry) => match call_caught(entry, &args, init_fds, &mut runtime) {
                Ok(_) => None,
                Err(f) => Some(format!("{f:?}")),
            },
            Err(reason) => Some(reason),
        };
        if let Some(reason) = failure {
            ch.send(&FromWorker::Refused { reason: format!("the initializer failed: {reason}") })?;
            return Ok(REFUSED);
        }
    }
    ch.send(&FromWorker::Ready)?;
    // The task of the previous call (calls name it only when it changes).
    let mut current: std::result::Result<&'static TaskEntry, (String, String)> =
        Err((String::new(), "no task was named yet".to_owned()));
    let mut reply = Reply::default();
    loop {
        let (msg, fds) = match ch.recv_raw::<ToWorker>() {
            Ok(m) => m,
            Err(Error::Eof) => return Ok(0),
            Err(e) => return Err(e),
        };
        let ToWorker::Call { id, task, args, ends: arg_ends } = msg else {
            return Err(Error::Malformed("expected a call".into()));
        };
        if let Some(p) = &progress {
            p.set(id + 1);
        }
        if let Some(task) = task {
            current = resolve(&task).map_err(|reason| (task.name, reason));
        }
        let n = arg_ends.len();
        fds::provide(fds, || -> Result<()> {
            let mut i = 0;
            let mut start = 0;
            loop {
                let first = i;
                // One reply's worth of items, with the fds their results own.
                let ((), out_fds) = fds::capture(|| {
                    let mut last = Instant::now();
                    let since = last;
                    while i < n {
                        let end = arg_ends[i] as usize;
                        let item = args.get(start..end).unwrap_or_default();
                        start = end;
                        let outcome = match current {
                            Ok(entry) => call_caught(entry, item, Vec::new(), &mut runtime),
                            Err((ref name, ref reason)) => {
                                Err(Failure::Unknown { name: name.clone(), reason: reason.clone() })
                            }
                        };
                        reply.push((i - first) as u32, outcome);
                        i += 1;
                        let now = Instant::now();
                        let report =
                            now - last >= SLOW_ITEM || now - since >= PROGRESS_EVERY || reply.size() > MAX_RESULT_BYTES;
                        last = now;
                        if report {
                            break;
                        }
                    }
                });
                let more = i < n;
                reply.send(&mut ch, id, i - first, out_fds, more)?;
                if !more {
                    return Ok(());
                }
                // Progress goes out now: the next item may be the one that never ends.
                ch.flush()?;
            }
        })?;
        // Every reply goes out before the next call starts: if that call
        // kills the worker, all it finished has been reported.
        ch.flush()?;
    }
}

/// The results of one reply being built; buffers reused from reply to reply.
#[derive(Default)]
struct Reply {
    data: Vec<u8>,
    ends: Vec<u32>,
    failures: Vec<(u32, Failure)>,
}

impl Reply {
    fn size(&self) -> usize {
        self.data.len() + 4 * self.ends.len()
    }

    fn push(&mut self, i: u32, outcome: crate::registry::Outcome) {
        match outcome {
            Ok(bytes) if bytes.len() > MAX_RESULT_BYTES => self
                .failures
                .push((i, Failure::ResultTooLarge { len: bytes.len() as u64, max: MAX_RESULT_BYTES as u64 })),
            Ok(bytes) => self.data.extend_from_slice(&bytes),
            Err(f) => self.failures.push((i, f)),
        }
        self.ends.push(u32::try_from(self.data.len()).unwrap_or(u32::MAX));
    }

    /// Queues the reply for `items` items and clears the buffers.
    fn send(&mut self, ch: &mut BlockingChannel, id: u64, items: usize, fds: Vec<OwnedFd>, more: bool) -> Result<()> {
        let done = FromWorker::Done {
            id,
            data: ByteBuf::from(std::mem::take(&mut self.data)),
            ends: Ends(std::mem::take(&mut self.ends)),
            failures: std::mem::take(&mut self.failures),
            more,
        };
        if let Err(e) = ch.feed_with(&done, fds) {
            // Unencodable as a whole (too many fds): every item of the
            // reply fails, and the caller still hears back.
            let reason = e.to_string();
            let failures = (0..items as u32).map(|i| (i, Failure::Encode(reason.clone()))).collect();
            ch.feed(&FromWorker::Done { id, data: ByteBuf::new(), ends: Ends(vec![0; items]), failures, more })?;
        }
        if let FromWorker::Done { data, ends, failures, .. } = done {
            (self.data, self.ends, self.failures) = (data.into_vec(), ends.0, failures);
            self.data.clear();
            self.ends.clear();
            self.failures.clear();
        }
        Ok(())
    }
}
