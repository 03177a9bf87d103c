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
//!   restarts its clock at each report. The clock read after each item is
//!   the kernel's coarse one (a few ns, where the precise one costs ~30 ns
//!   on a VM: a tenth of a small item's cost). Its resolution (1-4 ms)
//!   shows in when reports go: a run of fast items reports at each tick,
//!   and an item shorter than a tick may wait for the next report instead
//!   of going at once.
//!
//! A running task sees the pool's shutdown through the stop token
//! (`stop_requested()`, `stopped()`), an `Event` the pool sets.

use std::os::fd::OwnedFd;
use std::sync::OnceLock;
use std::time::Duration;

use serde_bytes::ByteBuf;

use super::shm::WorkerRing;
use super::{MAX_RESULT_BYTES, PROGRESS_EVERY};
use crate::error::{Error, Result};
use crate::registry::{TaskEntry, resolve};
use crate::tree::child::{REFUSED, call_caught};
use crate::value::Value;
use crate::wire::{BlockingChannel, Ends, Failure, FromWorker, ToWorker, fds};

/// An item that took this long is reported at once (its successors may be
/// slow too; one report per millisecond of work costs nothing). On the
/// coarse clock: an item during which it ticked.
const SLOW_ITEM: Duration = Duration::from_millis(1);

/// A copy of the worker's control socket, for tests that make a worker
/// misbehave on it.
static CONTROL: OnceLock<OwnedFd> = OnceLock::new();

/// Whether this pool worker takes its calls through shared memory (tests).
pub(crate) fn on_shared_memory() -> bool {
    super::shm::on_link()
}

/// Writes raw bytes on this pool worker's control socket, bypassing the
/// framing (tests only); on the shared-memory path (issue 13), on its link.
pub(crate) fn write_raw(bytes: &[u8]) -> Result<()> {
    if let Some(written) = super::shm::write_raw(bytes) {
        return written;
    }
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
            Ok(entry) => match call_caught(entry, &args, init_fds, &mut runtime, &mut Vec::new()) {
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
    // Set when the parent hands over a shared-memory link (issue 13).
    let mut ring: Option<WorkerRing> = None;
    loop {
        let received = match &mut ring {
            Some(r) => r.recv(&mut ch).transpose(),
            None => match ch.recv_raw::<ToWorker>() {
                Err(Error::Eof) => None,
                other => Some(other),
            },
        };
        let (msg, fds) = match received {
            Some(m) => m?,
            None => return Ok(0),
        };
        let (id, task, args, arg_ends) = match msg {
            ToWorker::Call { id, task, args, ends } => (id, task, args, ends),
            ToWorker::Shm { end } if ring.is_none() => {
                ring = Some(WorkerRing::open(end, fds)?);
                continue;
            }
            _ => return Err(Error::Malformed("expected a call".into())),
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
                    // Deadlines rather than differences: one clock read and
                    // two comparisons per item.
                    let start_at = multiproc_sys::clock::coarse_now();
                    let report_at = start_at.map(|t| t + PROGRESS_EVERY);
                    let mut slow_at = start_at.map(|t| t + SLOW_ITEM);
                    while i < n {
                        let end = arg_ends[i] as usize;
                        let item = args.get(start..end).unwrap_or_default();
                        start = end;
                        // The result is encoded straight into the reply.
                        let at = reply.data.len();
                        let written = match current {
                            Ok(entry) => call_caught(entry, item, Vec::new(), &mut runtime, &mut reply.data),
                            Err((ref name, ref reason)) => {
                                Err(Failure::Unknown { name: name.clone(), reason: reason.clone() })
                            }
                        };
                        reply.finish_item((i - first) as u32, at, written);
                        i += 1;
                        if i == n {
                            // The reply goes out now anyway.
                            break;
                        }
                        let now = multiproc_sys::clock::coarse_now();
                        // No clock: every item is reported (slow but right).
                        let (Some(now), Some(slow), Some(report)) = (now, slow_at, report_at) else { break };
                        if now >= slow || now >= report || reply.size() > MAX_RESULT_BYTES {
                            break;
                        }
                        slow_at = Some(now + SLOW_ITEM);
                    }
                });
                let more = i < n;
                reply.send(&mut ch, ring.as_mut(), id, i - first, out_fds, more)?;
                if !more {
                    return Ok(());
                }
                // Progress goes out now: the next item may be the one that
                // never ends. (On the ring it is out already.)
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

    /// Ends item `i`, whose result was appended to `data` from `at` on: a
    /// failed or oversized result is cut back off and recorded as a failure.
    fn finish_item(&mut self, i: u32, at: usize, written: crate::registry::Written) {
        let len = self.data.len() - at;
        match written {
            Ok(()) if len > MAX_RESULT_BYTES => {
                self.data.truncate(at);
                self.failures.push((i, Failure::ResultTooLarge { len: len as u64, max: MAX_RESULT_BYTES as u64 }));
            }
            Ok(()) => {}
            Err(f) => {
                self.data.truncate(at);
                self.failures.push((i, f));
            }
        }
        self.ends.push(u32::try_from(self.data.len()).unwrap_or(u32::MAX));
    }

    /// Queues the reply for `items` items (on the socket, or writes it to
    /// the shared-memory link when there is one) and clears the buffers.
    fn send(
        &mut self,
        ch: &mut BlockingChannel,
        ring: Option<&mut WorkerRing>,
        id: u64,
        items: usize,
        fds: Vec<OwnedFd>,
        more: bool,
    ) -> Result<()> {
        let done = FromWorker::Done {
            id,
            data: ByteBuf::from(std::mem::take(&mut self.data)),
            ends: Ends(std::mem::take(&mut self.ends)),
            failures: std::mem::take(&mut self.failures),
            more,
        };
        let mut ring = ring;
        let sent = match ring.as_deref_mut() {
            Some(r) => r.send(ch, &done, fds),
            None => ch.feed_with(&done, fds),
        };
        if let Err(e) = sent {
            if matches!(e, Error::Eof) {
                return Err(e);
            }
            // Unencodable as a whole (too many fds): every item of the
            // reply fails, and the caller still hears back.
            let reason = e.to_string();
            let failures = (0..items as u32).map(|i| (i, Failure::Encode(reason.clone()))).collect();
            let failed = FromWorker::Done { id, data: ByteBuf::new(), ends: Ends(vec![0; items]), failures, more };
            match ring {
                Some(r) => r.send(ch, &failed, Vec::new())?,
                None => ch.feed(&failed)?,
            }
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
