//! The manager's server loop: a plain single-threaded process that accepts
//! connections through the rendezvous socket and answers requests in order.

use std::collections::HashMap;
use std::net::TcpListener;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use multiproc_sys::fdpass::{self, CmsgBuffer};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde_bytes::ByteBuf;

use super::auth;
use crate::error::{Error, Result};
use crate::wire::fds::PassFd;
use crate::wire::{
    AuthMessage, BlockingChannel, DEFAULT_MAX_FRAME, ManagerReply, ManagerRequest, ObjectKind, ObjectOp,
    PROTOCOL_VERSION,
};

/// How long a TCP peer has to answer the challenge.
const AUTH_DEADLINE: Duration = Duration::from_secs(10);

/// A dict that keeps insertion order, as Python's does.
#[derive(Default)]
struct Dict {
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    index: HashMap<Vec<u8>, usize>,
}

impl Dict {
    fn set(&mut self, k: Vec<u8>, v: Vec<u8>) {
        match self.index.get(&k) {
            Some(&i) => self.entries[i].1 = v,
            None => {
                self.index.insert(k.clone(), self.entries.len());
                self.entries.push((k, v));
            }
        }
    }

    fn remove(&mut self, k: &[u8]) -> Option<Vec<u8>> {
        let i = self.index.remove(k)?;
        let (_, v) = self.entries.remove(i);
        for slot in self.index.values_mut() {
            if *slot > i {
                *slot -= 1;
            }
        }
        Some(v)
    }
}

enum Object {
    Dict(Dict),
    List(Vec<Vec<u8>>),
}

/// Python's index rules: negative counts from the end.
fn position(i: i64, len: usize) -> Option<usize> {
    let i = if i < 0 { i + len as i64 } else { i };
    usize::try_from(i).ok().filter(|&i| i < len)
}

fn value(v: Option<&Vec<u8>>) -> ManagerReply {
    ManagerReply::Value(v.map(|b| ByteBuf::from(b.clone())))
}

fn apply(object: &mut Object, op: ObjectOp) -> ManagerReply {
    use ManagerReply as R;
    match (object, op) {
        (Object::Dict(d), ObjectOp::Get(k)) => value(d.index.get(k.as_slice()).map(|&i| &d.entries[i].1)),
        (Object::Dict(d), ObjectOp::Set(k, v)) => {
            d.set(k.into_vec(), v.into_vec());
            R::Done
        }
        (Object::Dict(d), ObjectOp::Delete(k)) => R::Value(d.remove(&k).map(ByteBuf::from)),
        (Object::Dict(d), ObjectOp::Contains(k)) => R::Bool(d.index.contains_key(k.as_slice())),
        (Object::Dict(d), ObjectOp::Len) => R::Len(d.entries.len() as u64),
        (Object::Dict(d), ObjectOp::Items) => {
            R::Items(d.entries.iter().map(|(k, v)| (ByteBuf::from(k.clone()), ByteBuf::from(v.clone()))).collect())
        }
        (Object::Dict(d), ObjectOp::Clear) => {
            *d = Dict::default();
            R::Done
        }
        (Object::List(l), ObjectOp::Index(i)) => match position(i, l.len()) {
            Some(i) => value(Some(&l[i])),
            None => R::Error("list index out of range".into()),
        },
        (Object::List(l), ObjectOp::SetIndex(i, v)) => match position(i, l.len()) {
            Some(i) => {
                l[i] = v.into_vec();
                R::Done
            }
            None => R::Error("list assignment index out of range".into()),
        },
        (Object::List(l), ObjectOp::Append(v)) => {
            l.push(v.into_vec());
            R::Done
        }
        (Object::List(l), ObjectOp::Extend(vs)) => {
            l.extend(vs.into_iter().map(ByteBuf::into_vec));
            R::Done
        }
        (Object::List(l), ObjectOp::Insert(i, v)) => {
            let len = l.len() as i64;
            let at = if i < 0 { (i + len).max(0) } else { i.min(len) };
            l.insert(at as usize, v.into_vec());
            R::Done
        }
        (Object::List(l), ObjectOp::Pop(i)) => {
            if l.is_empty() {
                return R::Error("pop from empty list".into());
            }
            match position(i.unwrap_or(-1), l.len()) {
                Some(i) => R::Value(Some(ByteBuf::from(l.remove(i)))),
                None => R::Error("pop index out of range".into()),
            }
        }
        (Object::List(l), ObjectOp::Reverse) => {
            l.reverse();
            R::Done
        }
        (Object::List(l), ObjectOp::Len) => R::Len(l.len() as u64),
        (Object::List(l), ObjectOp::Items) => {
            R::Items(l.iter().map(|v| (ByteBuf::new(), ByteBuf::from(v.clone()))).collect())
        }
        (Object::List(l), ObjectOp::Clear) => {
            l.clear();
            R::Done
        }
        (_, op) => R::Error(format!("this object does not support {op:?}")),
    }
}

#[derive(Default)]
struct State {
    objects: HashMap<u64, Object>,
    names: HashMap<String, (ObjectKind, u64)>,
    next_id: u64,
}

impl State {
    /// Answers one request; `None` means shut down.
    fn handle(&mut self, req: ManagerRequest) -> Option<ManagerReply> {
        Some(match req {
            ManagerRequest::Create { kind, items, name } => {
                if let Some(&(k, id)) = name.as_ref().and_then(|n| self.names.get(n)) {
                    return Some(if k == kind {
                        ManagerReply::Created(id)
                    } else {
                        ManagerReply::Error(format!("{name:?} names a {k:?}, not a {kind:?}"))
                    });
                }
                let object = match kind {
                    ObjectKind::Dict | ObjectKind::Namespace => {
                        let mut d = Dict::default();
                        for (k, v) in items {
                            d.set(k.into_vec(), v.into_vec());
                        }
                        Object::Dict(d)
                    }
                    ObjectKind::List => Object::List(items.into_iter().map(|(_, v)| v.into_vec()).collect()),
                };
                self.next_id += 1;
                self.objects.insert(self.next_id, object);
                if let Some(name) = name {
                    self.names.insert(name, (kind, self.next_id));
                }
                ManagerReply::Created(self.next_id)
            }
            ManagerRequest::Call { id, op } => match self.objects.get_mut(&id) {
                Some(object) => apply(object, op),
                None => ManagerReply::Error(format!("no object with id {id}")),
            },
            ManagerRequest::Shutdown => return None,
        })
    }
}

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

/// A TCP peer that has been challenged and not answered yet.
struct Pending {
    ch: BlockingChannel,
    challenge: [u8; 32],
    since: Instant,
}

/// Whether each polled fd is ready, in the order they were listed.
fn poll_ready(fds: Vec<BorrowedFd<'_>>, timeout: PollTimeout) -> Result<Vec<bool>> {
    let mut polled: Vec<PollFd<'_>> = fds.into_iter().map(|fd| PollFd::new(fd, PollFlags::POLLIN)).collect();
    loop {
        match poll(&mut polled, timeout) {
            Ok(_) => return Ok(polled.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn serve(listen: OwnedFd, tcp: Option<(TcpListener, Vec<u8>)>) -> Result<()> {
    let mut clients: Vec<BlockingChannel> = Vec::new();
    let mut pending: Vec<Pending> = Vec::new();
    let mut state = State::default();
    let mut cmsg = CmsgBuffer::default();
    loop {
        let mut fds = vec![listen.as_fd()];
        fds.extend(tcp.as_ref().map(|(l, _)| l.as_fd()));
        let first_pending = fds.len();
        fds.extend(pending.iter().map(|p| p.ch.fd()));
        let first_client = fds.len();
        fds.extend(clients.iter().map(|c| c.fd()));
        let timeout = if pending.is_empty() { PollTimeout::NONE } else { PollTimeout::from(100u16) };
        let ready = poll_ready(fds, timeout)?;

        if serve_clients(&mut clients, &ready[first_client..], &mut state)? {
            return Ok(());
        }
        if let Some((_, key)) = &tcp {
            admit(&mut pending, &ready[first_pending..first_client], key, &mut clients);
        }
        if let Some((listener, _)) = &tcp
            && ready[1]
            && let Ok((stream, _)) = listener.accept()
        {
            let mut ch = BlockingChannel::new(OwnedFd::from(stream), auth::UNAUTHENTICATED_MAX_FRAME);
            let challenge = auth::nonce()?;
            let hello = AuthMessage::Challenge { protocol: PROTOCOL_VERSION, nonce: ByteBuf::from(challenge.to_vec()) };
            if ch.send(&hello).is_ok() {
                pending.push(Pending { ch, challenge, since: Instant::now() });
            }
        }
        if ready[0] {
            let mut fds: Vec<OwnedFd> = Vec::new();
            let n = fdpass::recv(listen.as_fd(), &mut [0u8; 1], &mut cmsg, &mut fds)?;
            if n == 0 && fds.is_empty() {
                // Every local proxy and the manager handle are gone.
                return Ok(());
            }
            clients.extend(fds.into_iter().map(|fd| BlockingChannel::new(fd, DEFAULT_MAX_FRAME)));
        }
    }
}

/// Moves TCP peers that answered the challenge correctly to `clients`; drops
/// the ones that answered wrong, sent garbage or took too long.
fn admit(pending: &mut Vec<Pending>, ready: &[bool], key: &[u8], clients: &mut Vec<BlockingChannel>) {
    let mut i = pending.len();
    while i > 0 {
        i -= 1;
        if !ready[i] {
            if pending[i].since.elapsed() > AUTH_DEADLINE {
                pending.swap_remove(i);
            }
            continue;
        }
        let mut p = pending.swap_remove(i);
        let answer = match p.ch.read_available().and_then(|_| p.ch.try_recv::<AuthMessage>()) {
            Ok(Some(answer)) => answer,
            Ok(None) => {
                pending.push(p);
                continue;
            }
            Err(_) => continue,
        };
        let reply = auth::welcome(answer, key, &p.challenge);
        let admitted = matches!(reply, AuthMessage::Welcome { .. });
        if p.ch.send(&reply).is_ok() && admitted {
            p.ch.set_max(DEFAULT_MAX_FRAME);
            clients.push(p.ch);
        } else {
            tracing::warn!("refused a manager connection that does not know the authkey");
        }
    }
}

/// Answers every request buffered on the ready clients; drops closed ones.
/// Returns `true` when asked to shut down.
fn serve_clients(clients: &mut Vec<BlockingChannel>, ready: &[bool], state: &mut State) -> Result<bool> {
    let mut closed = Vec::new();
    for (i, client) in clients.iter_mut().enumerate() {
        if !ready[i] {
            continue;
        }
        if client.read_available().is_err() {
            closed.push(i);
            continue;
        }
        loop {
            match client.try_recv::<ManagerRequest>() {
                Ok(Some(req)) => match state.handle(req) {
                    Some(reply) => client.feed(&reply)?,
                    None => {
                        client.send(&ManagerReply::Done)?;
                        return Ok(true);
                    }
                },
                Ok(None) => break,
                Err(Error::Eof) => {
                    closed.push(i);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "closing a manager connection");
                    closed.push(i);
                    break;
                }
            }
        }
        if client.flush().is_err() {
            closed.push(i);
        }
    }
    closed.dedup();
    for i in closed.into_iter().rev() {
        clients.swap_remove(i);
    }
    Ok(false)
}
