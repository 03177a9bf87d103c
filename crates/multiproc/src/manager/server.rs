//! The manager's server loop: one thread, non-blocking sockets, `poll(2)`.
//! It accepts local connections through the rendezvous socket and TCP peers
//! (after the authkey challenge), feeds requests to the [`State`] machine and
//! writes its replies.
//!
//! Architecture invariant: nothing a client does ends the loop. A client's
//! error (bad frame, bad message, EOF, a failed write, a deadline) closes
//! that client's connection only. Each connection has a bounded output
//! buffer: over the cap the manager reads no more of its requests, and a
//! client whose output makes no progress for [`STALL_DEADLINE`] is dropped.
//! Replies larger than a frame are streamed in parts. Before a TCP peer has
//! passed the challenge it may send one small frame; pending logins are
//! capped (oldest dropped first) and have a deadline. When the process runs
//! out of fds, accepting backs off instead of spinning or exiting.

use std::collections::{HashMap, VecDeque};
use std::net::TcpListener;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use multiproc_sys::fd::set_nonblocking;
use multiproc_sys::fdpass::{self, CmsgBuffer};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde_bytes::ByteBuf;

use super::auth;
use super::state::{ConnId, Outcome, State};
use crate::error::{Error, Result};
use crate::wire::fds::PassFd;
use crate::wire::{
    AuthMessage, DEFAULT_MAX_FRAME, FrameReader, FrameWriter, ManagerFailure, ManagerReply, ManagerRequest,
};

/// How long a TCP peer has to answer the challenge.
const AUTH_DEADLINE: Duration = Duration::from_secs(10);
/// TCP peers that have not answered yet, at most; the oldest goes first.
const MAX_PENDING_LOGINS: usize = 64;
/// Output buffered for one client above which its requests wait.
const OUT_CAP: usize = 16 << 20;
/// A client whose pending output makes no progress this long is dropped.
const STALL_DEADLINE: Duration = Duration::from_secs(10);
/// Size of one part of a streamed reply.
const PART_BYTES: usize = 8 << 20;
/// Memory for partly received frames across all clients; above it only the
/// client furthest along keeps reading.
const PARTIAL_BUDGET: usize = 256 << 20;
/// Pause in accepting after running out of fds.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The manager process's target: serves the rendezvous socket, and a TCP
/// listener with its authkey when asked to.
#[crate::task]
pub(crate) fn serve_manager(listen: PassFd, tcp: Option<(PassFd, ByteBuf)>) {
    let tcp = tcp.map(|(fd, key)| (TcpListener::from(fd.0), key.into_vec()));
    if let Err(e) = serve(listen.0, tcp) {
        eprintln!("multiproc manager {}: {e}", std::process::id());
        std::process::exit(1);
    }
}

fn out_of_fds(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(nix::libc::EMFILE | nix::libc::ENFILE | nix::libc::ENOBUFS | nix::libc::ENOMEM))
}

/// A TCP peer challenged and not answered yet.
struct Login {
    challenge: [u8; 32],
    since: Instant,
}

struct Conn {
    fd: OwnedFd,
    reader: FrameReader,
    writer: FrameWriter,
    login: Option<Login>,
    /// A request of this connection waits in the state machine.
    parked: bool,
    /// Items of a streamed reply not yet framed.
    stream: VecDeque<(ByteBuf, ByteBuf)>,
    /// Last time output went out (or was queued onto an empty buffer).
    last_write: Instant,
}

impl Conn {
    fn new(fd: OwnedFd, max: usize, login: Option<Login>) -> Self {
        let mut reader = FrameReader::new(max);
        reader.refuse_fds();
        Self {
            fd,
            reader,
            writer: FrameWriter::default(),
            login,
            parked: false,
            stream: VecDeque::new(),
            last_write: Instant::now(),
        }
    }

    fn takes_requests(&self) -> bool {
        !self.parked && self.stream.is_empty() && self.writer.pending_len() < OUT_CAP
    }

    fn wants_read(&self) -> bool {
        self.takes_requests() && !self.reader.has_frame().unwrap_or(true) && !self.reader.is_eof()
    }

    fn push<T: serde::Serialize>(&mut self, msg: &T, max: usize) -> Result<()> {
        if self.writer.is_empty() {
            self.last_write = Instant::now();
        }
        self.writer.push(max, |buf| {
            rmp_serde::encode::write(buf, msg).map_err(|e| Error::encode("a manager reply", e))?;
            Ok(Vec::new())
        })
    }

    /// Queues a reply; an `Items` reply too large for one frame is streamed.
    fn reply(&mut self, reply: ManagerReply) {
        if let ManagerReply::Items(items) = reply {
            let size: usize = items.iter().map(|(k, v)| k.len() + v.len() + 16).sum();
            if size > PART_BYTES {
                self.stream = items.into();
                self.pump();
                return;
            }
            return self.reply_one(ManagerReply::Items(items));
        }
        self.reply_one(reply);
    }

    fn reply_one(&mut self, reply: ManagerReply) {
        if let Err(e) = self.push(&reply, DEFAULT_MAX_FRAME) {
            let failed = ManagerReply::Failed(ManagerFailure::Remote(format!("send the reply: {e}")));
            if let Err(e) = self.push(&failed, DEFAULT_MAX_FRAME) {
                tracing::warn!(error = %e, "could not queue a manager reply");
            }
        }
    }

    /// Frames more of a streamed reply while the output has room.
    fn pump(&mut self) {
        while !self.stream.is_empty() && self.writer.pending_len() < OUT_CAP {
            let mut part = Vec::new();
            let mut size = 0;
            while let Some(item) = self.stream.pop_front() {
                size += item.0.len() + item.1.len() + 16;
                part.push(item);
                if size >= PART_BYTES {
                    break;
                }
            }
            let reply = if self.stream.is_empty() { ManagerReply::Items(part) } else { ManagerReply::Part(part) };
            self.reply_one(reply);
        }
    }

    /// Writes what it can without waiting. `Err`: the connection is broken.
    fn flush(&mut self) -> std::io::Result<()> {
        loop {
            self.pump();
            if self.writer.is_empty() {
                return Ok(());
            }
            match self.writer.write_to(self.fd.as_fd()) {
                Ok(()) => self.last_write = Instant::now(),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Why a connection is closed (for the log).
enum Close {
    Done,
    Error(String),
}

struct Server {
    state: State,
    conns: HashMap<ConnId, Conn>,
    next_conn: ConnId,
    key: Vec<u8>,
}

impl Server {
    fn add(&mut self, conn: Conn) -> ConnId {
        self.next_conn += 1;
        self.conns.insert(self.next_conn, conn);
        self.next_conn
    }

    fn close(&mut self, id: ConnId, why: Close) {
        if self.conns.remove(&id).is_some() {
            if let Close::Error(e) = why {
                tracing::debug!(conn = id, error = %e, "closing a manager connection");
            }
            self.state.close(id);
            self.deliver();
        }
    }

    /// Hands replies to parked requests to their connections.
    fn deliver(&mut self) {
        for (id, reply) in self.state.take_replies() {
            if let Some(c) = self.conns.get_mut(&id) {
                c.parked = false;
                c.reply(reply);
                if let Err(e) = c.flush() {
                    // Closed on its next turn: closing here would recurse.
                    tracing::debug!(conn = id, error = %e, "write failed");
                }
            }
        }
    }

    /// One TCP peer's answer to the challenge.
    fn login(&mut self, id: ConnId) -> std::result::Result<(), Close> {
        let c = self.conns.get_mut(&id).expect("a live connection");
        let Some(login) = &c.login else { return Ok(()) };
        let frame = match c.reader.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(()),
            Err(e) => return Err(Close::Error(e.to_string())),
        };
        let answer: std::result::Result<AuthMessage, _> = crate::wire::decode("a login", frame.payload);
        drop(frame);
        let answer = answer.map_err(|e| Close::Error(e.to_string()))?;
        let reply = auth::welcome(answer, &self.key, &login.challenge);
        let admitted = matches!(reply, AuthMessage::Welcome { .. });
        c.push(&reply, DEFAULT_MAX_FRAME).map_err(|e| Close::Error(e.to_string()))?;
        let _ = c.flush();
        if !admitted {
            tracing::warn!("refused a manager connection that does not know the authkey");
            return Err(Close::Done);
        }
        c.login = None;
        c.reader.set_max(DEFAULT_MAX_FRAME);
        Ok(())
    }

    /// Answers the requests buffered on `id`. `Ok(true)`: shut down.
    fn requests(&mut self, id: ConnId, now: Instant) -> std::result::Result<bool, Close> {
        loop {
            let c = self.conns.get_mut(&id).expect("a live connection");
            if !c.takes_requests() {
                break;
            }
            let frame = match c.reader.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(Error::Eof) => return Err(Close::Done),
                Err(e) => return Err(Close::Error(e.to_string())),
            };
            let req: std::result::Result<ManagerRequest, _> = crate::wire::decode("a manager request", frame.payload);
            drop(frame);
            let req = req.map_err(|e| Close::Error(e.to_string()))?;
            match self.state.handle(id, req, now) {
                Outcome::Reply(r) => c.reply(r),
                Outcome::Parked => c.parked = true,
                Outcome::Nothing => {}
                Outcome::Shutdown => {
                    c.reply(ManagerReply::Done);
                    let deadline = now + Duration::from_secs(1);
                    while !c.writer.is_empty() && Instant::now() < deadline && c.flush().is_ok() {
                        std::thread::yield_now();
                    }
                    return Ok(true);
                }
            }
            self.deliver();
        }
        let c = self.conns.get_mut(&id).expect("a live connection");
        c.flush().map_err(|e| Close::Error(e.to_string()))?;
        Ok(false)
    }

    /// Reads from and answers one ready connection. `Ok(true)`: shut down.
    fn serve_conn(&mut self, id: ConnId, revents: PollFlags, now: Instant) -> std::result::Result<bool, Close> {
        let c = self.conns.get_mut(&id).expect("a live connection");
        if revents.intersects(PollFlags::POLLOUT) {
            c.flush().map_err(|e| Close::Error(e.to_string()))?;
        }
        if revents.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            if c.wants_read() || c.login.is_some() {
                match c.reader.read_from(c.fd.as_fd()) {
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted) => {}
                    Err(e) => return Err(Close::Error(e.to_string())),
                }
            } else if c.parked {
                // A client sends one request at a time: while its request
                // waits, readable means it hung up (or broke the rule).
                use nix::sys::socket::{MsgFlags, recv};
                use std::os::fd::AsRawFd;
                match recv(c.fd.as_raw_fd(), &mut [0u8; 1], MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT) {
                    Ok(0) => return Err(Close::Done),
                    Ok(_) => return Err(Close::Error("sent a request while one was waiting".into())),
                    Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(Close::Error(e.to_string())),
                }
            } else if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                // Gone while its output is over the cap.
                return Err(Close::Done);
            }
        }
        if c.login.is_some() {
            self.login(id)?;
        }
        if self.conns[&id].login.is_some() {
            return Ok(false);
        }
        self.requests(id, now)
    }

    /// Connections that broke a deadline: logins too slow, output stuck.
    fn overdue(&self, now: Instant) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter(|(_, c)| {
                c.login.as_ref().is_some_and(|l| now.duration_since(l.since) > AUTH_DEADLINE)
                    || (!c.writer.is_empty() && now.duration_since(c.last_write) > STALL_DEADLINE)
            })
            .map(|(&id, _)| id)
            .collect()
    }

    /// The earliest deadline of a connection.
    fn next_deadline(&self) -> Option<Instant> {
        self.conns
            .values()
            .filter_map(|c| match (&c.login, c.writer.is_empty()) {
                (Some(l), _) => Some(l.since + AUTH_DEADLINE),
                (None, false) => Some(c.last_write + STALL_DEADLINE),
                (None, true) => None,
            })
            .min()
    }

    /// Drops the oldest pending login (to make room for a newer one, or to
    /// free an fd).
    fn drop_oldest_login(&mut self) -> bool {
        let oldest = self.conns.iter().filter_map(|(&id, c)| c.login.as_ref().map(|l| (l.since, id))).min();
        match oldest {
            Some((_, id)) => {
                self.close(id, Close::Done);
                true
            }
            None => false,
        }
    }

    /// Accepts TCP peers until none is waiting. `Err`: out of fds.
    fn accept(&mut self, listener: &TcpListener) -> std::io::Result<()> {
        for _ in 0..64 {
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if out_of_fds(&e) => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let fd = OwnedFd::from(stream);
            if set_nonblocking(fd.as_fd()).is_err() {
                continue;
            }
            let logins = self.conns.values().filter(|c| c.login.is_some()).count();
            if logins >= MAX_PENDING_LOGINS {
                self.drop_oldest_login();
            }
            let (hello, challenge) = match auth::challenge() {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "no nonce for a manager login");
                    continue;
                }
            };
            let mut c =
                Conn::new(fd, auth::UNAUTHENTICATED_MAX_FRAME, Some(Login { challenge, since: Instant::now() }));
            if c.push(&hello, DEFAULT_MAX_FRAME).is_ok() && c.flush().is_ok() {
                self.add(c);
            }
        }
        Ok(())
    }
}

fn serve(listen: OwnedFd, tcp: Option<(TcpListener, Vec<u8>)>) -> Result<()> {
    let (listener, key) = match tcp {
        Some((l, k)) => {
            l.set_nonblocking(true)?;
            (Some(l), k)
        }
        None => (None, Vec::new()),
    };
    let mut server = Server { state: State::default(), conns: HashMap::new(), next_conn: 0, key };
    let mut cmsg = CmsgBuffer::default();
    let mut accept_paused: Option<Instant> = None;
    loop {
        let now = Instant::now();
        server.state.expire(now);
        server.deliver();
        for id in server.overdue(now) {
            server.close(id, Close::Error("deadline passed".into()));
        }
        if accept_paused.is_some_and(|t| t <= now) {
            accept_paused = None;
        }

        // Who to wait for, and for what.
        let partial: usize = server.conns.values().map(|c| c.reader.allocated()).sum();
        let furthest = if partial > PARTIAL_BUDGET {
            server.conns.iter().max_by_key(|(_, c)| c.reader.allocated()).map(|(&id, _)| id)
        } else {
            None
        };
        let ids: Vec<ConnId> = server.conns.keys().copied().collect();
        let mut fds = Vec::with_capacity(ids.len() + 2);
        let accepting = accept_paused.is_none();
        if accepting {
            fds.push(PollFd::new(listen.as_fd(), PollFlags::POLLIN));
            if let Some(l) = &listener {
                fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
            }
        }
        let first_conn = fds.len();
        for id in &ids {
            let c = &server.conns[id];
            let mut flags = PollFlags::empty();
            let over_budget = furthest.is_some_and(|f| f != *id) && c.reader.has_partial();
            if (c.wants_read() && !over_budget) || c.login.is_some() || c.parked {
                flags |= PollFlags::POLLIN;
            }
            if !c.writer.is_empty() {
                flags |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(c.fd.as_fd(), flags));
        }
        let deadline =
            [server.state.next_deadline(), server.next_deadline(), accept_paused].into_iter().flatten().min();
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let ms = d.saturating_duration_since(Instant::now()).as_millis() + 1;
                PollTimeout::try_from(ms.min(60_000) as i32).unwrap_or(PollTimeout::MAX)
            }
        };
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let revents: Vec<PollFlags> = fds.iter().map(|f| f.revents().unwrap_or(PollFlags::empty())).collect();
        drop(fds);

        let now = Instant::now();
        for (i, id) in ids.iter().enumerate() {
            let r = revents[first_conn + i];
            if r.is_empty() || !server.conns.contains_key(id) {
                continue;
            }
            match server.serve_conn(*id, r, now) {
                Ok(false) => {}
                Ok(true) => return Ok(()),
                Err(why) => server.close(*id, why),
            }
        }

        if let Some(l) = &listener
            && accepting
            && !revents[1].is_empty()
            && let Err(e) = server.accept(l)
        {
            tracing::warn!(error = %e, "out of file descriptors: pausing accepts");
            server.drop_oldest_login();
            accept_paused = Some(Instant::now() + ACCEPT_BACKOFF);
        }
        if accepting && !revents[0].is_empty() {
            let mut received: Vec<OwnedFd> = Vec::new();
            match fdpass::recv(listen.as_fd(), &mut [0u8; 1], &mut cmsg, &mut received) {
                Ok(0) if received.is_empty() => {
                    // Every local proxy and the manager handle are gone.
                    return Ok(());
                }
                Ok(_) => {
                    for fd in received {
                        if set_nonblocking(fd.as_fd()).is_ok() {
                            server.add(Conn::new(fd, DEFAULT_MAX_FRAME, None));
                        }
                    }
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted) => {}
                Err(e) => {
                    // A connection lost in transit (out of fds): its client
                    // sees EOF. Back off so a full fd table does not spin.
                    tracing::warn!(error = %e, "could not receive a local connection");
                    server.drop_oldest_login();
                    accept_paused = Some(Instant::now() + ACCEPT_BACKOFF);
                }
            }
        }
    }
}
