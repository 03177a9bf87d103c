//! The manager's server loop: a plain single-threaded process that accepts
//! connections through the rendezvous socket and answers requests in order.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};

use multiproc_sys::fdpass::{self, CmsgBuffer};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde_bytes::ByteBuf;

use crate::error::{Error, Result};
use crate::wire::fds::PassFd;
use crate::wire::{BlockingChannel, DEFAULT_MAX_FRAME, ManagerReply, ManagerRequest, ObjectKind, ObjectOp};

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
    next_id: u64,
}

impl State {
    /// Answers one request; `None` means shut down.
    fn handle(&mut self, req: ManagerRequest) -> Option<ManagerReply> {
        Some(match req {
            ManagerRequest::Create { kind, items } => {
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

/// The manager process's target.
#[crate::task]
pub(crate) fn serve_manager(listen: PassFd) {
    if let Err(e) = serve(listen.0) {
        eprintln!("multiproc manager {}: {e}", std::process::id());
        std::process::exit(1);
    }
}

fn serve(listen: OwnedFd) -> Result<()> {
    let mut clients: Vec<BlockingChannel> = Vec::new();
    let mut state = State::default();
    let mut cmsg = CmsgBuffer::default();
    loop {
        let ready: Vec<bool> = {
            let mut fds = vec![PollFd::new(listen.as_fd(), PollFlags::POLLIN)];
            fds.extend(clients.iter().map(|c| PollFd::new(c.fd(), PollFlags::POLLIN)));
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
            fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect()
        };
        let mut closed = Vec::new();
        for (i, client) in clients.iter_mut().enumerate() {
            if !ready[i + 1] {
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
                            return Ok(());
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
        if ready[0] {
            let mut fds: Vec<OwnedFd> = Vec::new();
            let n = fdpass::recv(listen.as_fd(), &mut [0u8; 1], &mut cmsg, &mut fds)?;
            if n == 0 && fds.is_empty() {
                // Every proxy and the manager handle are gone.
                return Ok(());
            }
            clients.extend(fds.into_iter().map(|fd| BlockingChannel::new(fd, DEFAULT_MAX_FRAME)));
        }
    }
}
