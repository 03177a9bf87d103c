//! The pool worker's loop: after the handshake (`tree::child`), run the
//! initializer, then serve calls until the parent hangs up. Every reply goes
//! out before the next call starts.

use std::os::fd::OwnedFd;

use serde_bytes::ByteBuf;

use crate::error::{Error, Result};
use crate::registry::{TaskEntry, resolve};
use crate::tree::child::{REFUSED, call_caught};
use crate::wire::{BlockingChannel, Ends, Failure, FromWorker, ToWorker, fds};

pub(crate) fn serve_pool(
    mut ch: BlockingChannel,
    init: Option<(crate::wire::TaskRef, ByteBuf)>,
    init_fds: Vec<OwnedFd>,
) -> Result<i32> {
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
    // Reply buffers, reused from call to call.
    let mut data = Vec::new();
    let mut ends = Vec::new();
    let mut failures = Vec::new();
    loop {
        let (msg, fds) = match ch.recv_raw::<ToWorker>() {
            Ok(m) => m,
            Err(Error::Eof) => return Ok(0),
            Err(e) => return Err(e),
        };
        let ToWorker::Call { id, task, args, ends: arg_ends } = msg else {
            return Err(Error::Malformed("expected a call".into()));
        };
        if let Some(task) = task {
            current = resolve(&task).map_err(|reason| (task.name, reason));
        }
        let (r, out_fds) = fds::capture(|| {
            fds::provide(fds, || {
                let mut start = 0;
                for (i, &end) in arg_ends.iter().enumerate() {
                    let item = args.get(start..end as usize).unwrap_or_default();
                    start = end as usize;
                    let outcome = match current {
                        Ok(entry) => call_caught(entry, item, Vec::new(), &mut runtime),
                        Err((ref name, ref reason)) => {
                            Err(Failure::Unknown { name: name.clone(), reason: reason.clone() })
                        }
                    };
                    match outcome {
                        Ok(bytes) => data.extend_from_slice(&bytes),
                        Err(f) => failures.push((i as u32, f)),
                    }
                    ends.push(u32::try_from(data.len()).unwrap_or(u32::MAX));
                }
            })
        });
        let () = r;
        let done = FromWorker::Done {
            id,
            data: ByteBuf::from(std::mem::take(&mut data)),
            ends: Ends(std::mem::take(&mut ends)),
            failures: std::mem::take(&mut failures),
        };
        if let Err(e) = ch.feed_with(&done, out_fds) {
            // Too large or unencodable as a whole: every item of the call
            // fails, and the caller still hears back.
            let reason = e.to_string();
            let n = arg_ends.len();
            let failures = (0..n as u32).map(|i| (i, Failure::Encode(reason.clone()))).collect();
            ch.feed(&FromWorker::Done { id, data: ByteBuf::new(), ends: Ends(vec![0; n]), failures })?;
        }
        if let FromWorker::Done { data: d, ends: e, failures: f, .. } = done {
            (data, ends, failures) = (d.into_vec(), e.0, f);
            data.clear();
            ends.clear();
            failures.clear();
        }
        // Every reply goes out before the next call starts: if that call
        // kills the worker, all it finished has been reported.
        ch.flush()?;
    }
}
