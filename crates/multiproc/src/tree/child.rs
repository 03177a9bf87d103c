//! The child side: handshake with the parent, then either run one target and
//! exit (a `Process`) or serve calls until the parent hangs up (a pool
//! worker). Runs synchronously; async tasks get a runtime of their own.
//!
//! Group signals (SIGINT, SIGTERM, SIGHUP, SIGQUIT sent to the whole process
//! group by a terminal or a service manager) follow a policy chosen per
//! child: a `Process` keeps their default actions unless it asked to be
//! shielded (`GroupSignals`); a pool worker is always shielded (it ignores
//! SIGINT, SIGHUP and SIGQUIT, and honours SIGTERM only from the
//! forkserver, i.e. from its pool), so the application can drain in-flight
//! calls after a group SIGTERM.

use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::panic::{AssertUnwindSafe, catch_unwind};

use multiproc_sys::process as sys;

use super::role::ControlFd;
use crate::error::{Error, Result};
use crate::registry::{Invoke, TaskEntry, Written, resolve};
use crate::wire::{BlockingChannel, DEFAULT_MAX_FRAME, Failure, FromWorker, Hello, ToWorker, fds};

/// Exit code of a worker that refused to start (bad handshake or task).
pub(crate) const REFUSED: i32 = 1;

pub(crate) fn run(control: ControlFd) -> ! {
    let code = end_code(serve(control));
    std::process::exit(code)
}

/// [`run`] in a child forked by the forkserver (`fork` and `forkserver`
/// start methods): it ends as CPython's forked children do, flushing its
/// standard streams and leaving without the exit handlers and destructors
/// of the forkserver image it was forked from. A child that started
/// children of its own ends through `exit` (its supervisor's handler joins
/// them).
pub(crate) fn run_forked(control: ControlFd) -> ! {
    let code = end_code(serve(control));
    if super::supervisor::started() {
        std::process::exit(code)
    }
    flush_std_streams();
    sys::flush_and_exit_now(code)
}

fn end_code(served: Result<i32>) -> i32 {
    match served {
        Ok(code) => code,
        Err(Error::Eof) => 0,
        Err(e) => {
            eprintln!("multiproc worker {}: {e}", std::process::id());
            1
        }
    }
}

/// What a spare child runs before it waits for a request (`forkserver.rs`):
/// the request-independent first step of [`serve`], a dry run of the
/// decoding, task lookup and encoding a start does, and of the flushes it
/// ends with. A forked child maps no page of code
/// until it runs it and copies every page it writes (72 page faults per
/// start were measured); this takes them here, off the starter's path.
/// What `serve` does after it is the same either way.
pub(crate) fn rehearse() {
    let _ = sys::ignore_signals(false);
    let mut buf = Vec::with_capacity(4 << 10);
    let info = crate::wire::ProcessInfo {
        name: String::new(),
        identity: Vec::new(),
        daemon: false,
        parent_pid: 0,
        parent_name: String::new(),
    };
    let task = crate::wire::TaskRef { name: String::new(), signature: String::new() };
    let run = ToWorker::Run { info, task, args: serde_bytes::ByteBuf::new(), shielded: false };
    if rmp_serde::encode::write(&mut buf, &Hello::ours()).is_ok() {
        let _ = rmp_serde::from_slice::<Hello>(&buf);
    }
    buf.clear();
    if rmp_serde::encode::write(&mut buf, &run).is_ok()
        && let Ok(ToWorker::Run { task, .. }) = rmp_serde::from_slice::<ToWorker>(&buf)
    {
        let _ = resolve(&task);
    }
    buf.clear();
    let _ = rmp_serde::encode::write(&mut buf, &FromWorker::Ready);
    crate::registry::rehearse_lookups();
    // The way out of a forked child (`run_forked`), rehearsed: these
    // flush only what the forkserver image had buffered, normally nothing
    // (a child flushes that at its exit anyway); they map the code and set
    // up Rust's stdout here instead of at the child's exit.
    flush_std_streams();
    sys::flush_c_stdio();
}

fn flush_std_streams() {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
}

fn serve(control: ControlFd) -> Result<i32> {
    sys::ignore_signals(false)?;
    let mut ch = BlockingChannel::new(control, DEFAULT_MAX_FRAME);
    let hello: Hello = ch.recv()?;
    // Our hello goes out with the answer to the first message (one write,
    // one wake-up of the parent): both were in the socket before the fork.
    ch.feed(&Hello::ours())?;
    if let Err(reason) = hello.check() {
        ch.send(&FromWorker::Refused { reason })?;
        return Ok(REFUSED);
    }
    let (msg, fds) = match ch.recv_raw::<ToWorker>() {
        Ok(m) => m,
        Err(e) => {
            let _ = ch.flush();
            return Err(e);
        }
    };
    match msg {
        ToWorker::Run { info, task, args, shielded } => {
            if shielded {
                sys::shield_from_group_signals()?;
            } else {
                sys::default_group_signals()?;
            }
            let _ = sys::set_process_name(&info.name);
            let entry = match resolve(&task) {
                Ok(entry) => entry,
                Err(reason) => {
                    ch.send(&FromWorker::Refused { reason })?;
                    return Ok(REFUSED);
                }
            };
            crate::current::enter_child(info);
            // Its own pidfd goes with `Ready`: the starter sees this
            // process end the moment it is a zombie (`supervisor::watch_exit`).
            let own = sys::pidfd_open(std::process::id() as i32).ok();
            ch.feed_with(&FromWorker::Ready, own.into_iter().collect())?;
            ch.flush()?;
            // Issue 11: the stop token and heartbeats use the idle channel.
            if let Ok(fd) = ch.fd().try_clone_to_owned() {
                crate::shutdown::install_control(fd);
            }
            let mut runtime = None;
            match catch_unwind(AssertUnwindSafe(|| call(entry, &args, fds, &mut runtime, &mut Vec::new()))) {
                Ok(Ok(_)) => Ok(0),
                Ok(Err(failure)) => {
                    eprintln!("multiproc: process {}: {failure:?}", std::process::id());
                    Ok(1)
                }
                // The default panic hook already printed the message.
                Err(_) => Ok(1),
            }
        }
        ToWorker::Serve { info, init, progress, stop } => {
            // An initializer may run long before `Ready`: say hello now.
            ch.flush()?;
            sys::shield_from_group_signals()?;
            let _ = sys::set_process_name("mp-worker");
            crate::current::enter_child(info);
            std::panic::set_hook(Box::new(record_panic));
            crate::pool::worker::serve_pool(ch, init, progress, stop, fds)
        }
        ToWorker::Call { .. } | ToWorker::Shm { .. } | ToWorker::Fds => {
            let _ = ch.flush();
            Err(Error::Malformed("a call arrived before the worker was told its role".into()))
        }
    }
}

fn with_fds<R>(fds: Vec<OwnedFd>, f: impl FnOnce() -> R) -> R {
    if fds.is_empty() { f() } else { fds::provide(fds, f) }
}

/// Runs a registered item on its encoded arguments, appending its encoded
/// result to `out` (which holds part of it, or none, if it failed).
fn call(
    entry: &TaskEntry,
    args: &[u8],
    fds: Vec<OwnedFd>,
    runtime: &mut Option<tokio::runtime::Runtime>,
    out: &mut Vec<u8>,
) -> Written {
    // With no fds of its own, a call decodes against the table already
    // provided around it (a pool chunk's), so it must not shadow it.
    match entry.invoke {
        Invoke::Sync(f) => with_fds(fds, || f(args, out)),
        Invoke::Async(f) => {
            let fut = with_fds(fds, || f(args));
            let rt = match runtime {
                Some(rt) => rt,
                None => {
                    runtime.insert(tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
                        Failure::Unknown { name: entry.name.into(), reason: format!("cannot start a runtime: {e}") }
                    })?)
                }
            };
            out.extend_from_slice(&rt.block_on(fut)?);
            Ok(())
        }
    }
}

thread_local! {
    static LAST_PANIC: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
}

/// Pool workers keep a task's panic for the caller instead of printing it.
pub(crate) fn record_panic(info: &std::panic::PanicHookInfo<'_>) {
    let message = if let Some(s) = info.payload().downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = info.payload().downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_owned()
    };
    let location = info.location().map_or_else(|| "<unknown>".to_owned(), |l| l.to_string());
    LAST_PANIC.with(|p| *p.borrow_mut() = Some((message, location)));
}

/// [`call`], with a panic turned into a [`Failure`].
pub(crate) fn call_caught(
    entry: &TaskEntry,
    args: &[u8],
    fds: Vec<OwnedFd>,
    runtime: &mut Option<tokio::runtime::Runtime>,
    out: &mut Vec<u8>,
) -> Written {
    match catch_unwind(AssertUnwindSafe(|| call(entry, args, fds, runtime, out))) {
        Ok(outcome) => outcome,
        Err(_) => {
            let (message, location) = LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_else(|| ("panic".to_owned(), "<unknown>".to_owned()));
            Err(Failure::Panicked { message, location })
        }
    }
}
