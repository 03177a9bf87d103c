//! The manager's state machine, without I/O: hosted objects with their
//! reference counts, client sessions, and parked requests. The server loop
//! feeds it requests and closed connections and delivers what it answers.
//!
//! Lifetimes: every reference belongs to a *session* (one client process's
//! connections). A session gets one reference per object it creates or
//! claims and gives it back with `Release`; when its last connection closes,
//! all it still holds is released, and the locks it held are freed with
//! `owner_died` set. A proxy sent to another process is held by the sender
//! (`Transit`) until the receiver `Claim`s it; the two may arrive in either
//! order. Objects created by name live until shutdown.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::objects::{self, Dict};
use super::user;
use super::waits::{self, Barrier, LockState, Queue, Step, Sync, Wait};
use crate::wire::{ManagerFailure, ManagerReply, ManagerRequest, NewObject, ObjectOp};

/// A connection, as the server loop numbers them.
pub(crate) type ConnId = u64;

enum Object {
    Dict(Dict),
    List(Vec<Vec<u8>>),
    Value(Vec<u8>),
    Array(Vec<Vec<u8>>),
    Sync(Sync),
    User(Box<dyn user::HostedObject>),
}

struct Entry {
    object: Object,
    kind: String,
    refs: u64,
    named: bool,
}

#[derive(Default)]
struct Session {
    pid: u32,
    conns: usize,
    refs: HashMap<u64, u64>,
}

struct Parked {
    conn: ConnId,
    id: u64,
    deadline: Option<Instant>,
    wait: Wait,
}

/// What became of a request.
pub(crate) enum Outcome {
    Reply(ManagerReply),
    /// Answered later, through [`State::take_replies`].
    Parked,
    /// A one-way message.
    Nothing,
    Shutdown,
}

/// Early claims remembered at most (a claim whose transit never comes).
const MAX_EARLY_CLAIMS: usize = 1 << 20;

#[derive(Default)]
pub(crate) struct State {
    objects: HashMap<u64, Entry>,
    names: HashMap<String, u64>,
    next_id: u64,
    sessions: HashMap<u64, Session>,
    conn_session: HashMap<ConnId, u64>,
    transits: HashMap<u64, (u64, u64)>,
    early_claims: HashSet<u64>,
    parked: Vec<Parked>,
    replies: Vec<(ConnId, ManagerReply)>,
}

fn failed(f: ManagerFailure) -> ManagerReply {
    ManagerReply::Failed(f)
}

fn deadline(now: Instant, timeout_ms: Option<u64>) -> Option<Instant> {
    timeout_ms.and_then(|ms| now.checked_add(Duration::from_millis(ms)))
}

fn timeout_of(op: &ObjectOp) -> Option<u64> {
    match op {
        ObjectOp::Acquire { timeout_ms, .. }
        | ObjectOp::Wait { timeout_ms, .. }
        | ObjectOp::BarrierWait { timeout_ms }
        | ObjectOp::Put { timeout_ms, .. }
        | ObjectOp::Take { timeout_ms, .. } => *timeout_ms,
        _ => None,
    }
}

impl State {
    /// Number of hosted objects.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Replies produced for other connections (parked requests answered).
    pub fn take_replies(&mut self) -> Vec<(ConnId, ManagerReply)> {
        std::mem::take(&mut self.replies)
    }

    /// The earliest deadline of a parked request.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.parked.iter().filter_map(|p| p.deadline).min()
    }

    pub fn handle(&mut self, conn: ConnId, req: ManagerRequest, now: Instant) -> Outcome {
        let Some(session) = self.conn_session.get(&conn).copied() else {
            return match req {
                ManagerRequest::Hello { session, pid } => {
                    self.conn_session.insert(conn, session);
                    let s = self.sessions.entry(session).or_default();
                    s.conns += 1;
                    s.pid = pid;
                    Outcome::Nothing
                }
                _ => Outcome::Reply(objects::remote("a connection starts with hello")),
            };
        };
        match req {
            ManagerRequest::Hello { .. } => Outcome::Reply(objects::remote("a connection says hello once")),
            ManagerRequest::Create { new, name } => Outcome::Reply(self.create(session, new, name)),
            ManagerRequest::Call { id, op } => self.call(conn, session, id, op, now),
            ManagerRequest::Transit { id, token } => {
                if !self.early_claims.remove(&token) && self.incref(id) {
                    self.transits.insert(token, (session, id));
                }
                Outcome::Nothing
            }
            ManagerRequest::Claim { id, token } => {
                if self.incref(id) {
                    *self.sessions.entry(session).or_default().refs.entry(id).or_default() += 1;
                    match self.transits.remove(&token) {
                        Some((_, held)) => self.decref(held),
                        None if self.early_claims.len() < MAX_EARLY_CLAIMS => {
                            self.early_claims.insert(token);
                        }
                        None => {}
                    }
                }
                Outcome::Nothing
            }
            ManagerRequest::Release { id } => {
                if let Some(s) = self.sessions.get_mut(&session)
                    && let Some(n) = s.refs.get_mut(&id)
                {
                    *n -= 1;
                    if *n == 0 {
                        s.refs.remove(&id);
                    }
                    self.decref(id);
                }
                Outcome::Nothing
            }
            ManagerRequest::Count => Outcome::Reply(ManagerReply::Len(self.objects.len() as u64)),
            ManagerRequest::Shutdown => Outcome::Shutdown,
        }
    }

    fn incref(&mut self, id: u64) -> bool {
        match self.objects.get_mut(&id) {
            Some(e) => {
                e.refs += 1;
                true
            }
            None => false,
        }
    }

    fn decref(&mut self, id: u64) {
        let Some(e) = self.objects.get_mut(&id) else { return };
        e.refs = e.refs.saturating_sub(1);
        if e.refs == 0 && !e.named {
            self.objects.remove(&id);
            let mut i = 0;
            while i < self.parked.len() {
                if self.parked[i].id == id {
                    let p = self.parked.remove(i);
                    self.replies.push((p.conn, failed(ManagerFailure::NoObject(id))));
                } else {
                    i += 1;
                }
            }
        }
    }

    fn create(&mut self, session: u64, new: NewObject, name: Option<String>) -> ManagerReply {
        let kind = new.kind();
        if let Some(name) = &name
            && let Some(&id) = self.names.get(name)
        {
            let found = &self.objects[&id].kind;
            if *found != kind {
                return failed(ManagerFailure::WrongKind { name: name.clone(), found: found.clone(), wanted: kind });
            }
            self.incref(id);
            *self.sessions.entry(session).or_default().refs.entry(id).or_default() += 1;
            return ManagerReply::Created(id);
        }
        let object = match new {
            NewObject::Dict(items) => {
                let mut d = Dict::default();
                for (k, v) in items {
                    d.set(k.into_vec(), v.into_vec());
                }
                Object::Dict(d)
            }
            NewObject::Namespace => Object::Dict(Dict::default()),
            NewObject::List(items) => Object::List(items.into_iter().map(|v| v.into_vec()).collect()),
            NewObject::Lock => Object::Sync(Sync::Lock(LockState::default())),
            NewObject::RLock => Object::Sync(Sync::RLock(LockState::default())),
            NewObject::Condition => Object::Sync(Sync::Condition(LockState::default())),
            NewObject::Semaphore { value, bounded } => Object::Sync(Sync::Semaphore { value, initial: value, bounded }),
            NewObject::Event => Object::Sync(Sync::Event(false)),
            NewObject::Barrier { parties: 0 } => return objects::remote("a barrier needs at least one party"),
            NewObject::Barrier { parties } => {
                Object::Sync(Sync::Barrier(Barrier { parties, count: 0, generation: 0, broken: false }))
            }
            NewObject::Queue { maxsize } => Object::Sync(Sync::Queue(Queue { items: Default::default(), maxsize })),
            NewObject::Value(v) => Object::Value(v.into_vec()),
            NewObject::Array(items) => Object::Array(items.into_iter().map(|v| v.into_vec()).collect()),
            NewObject::User { type_name, init } => match user::create(&type_name, &init) {
                Ok(object) => Object::User(object),
                Err(message) => return objects::remote(message),
            },
        };
        self.next_id += 1;
        let id = self.next_id;
        self.objects.insert(id, Entry { object, kind, refs: 1, named: name.is_some() });
        *self.sessions.entry(session).or_default().refs.entry(id).or_default() += 1;
        if let Some(name) = name {
            self.names.insert(name, id);
        }
        ManagerReply::Created(id)
    }

    fn call(&mut self, conn: ConnId, session: u64, id: u64, op: ObjectOp, now: Instant) -> Outcome {
        let Some(entry) = self.objects.get_mut(&id) else {
            return Outcome::Reply(failed(ManagerFailure::NoObject(id)));
        };
        let kind = entry.kind.as_str();
        let reply = match &mut entry.object {
            Object::Dict(d) => objects::dict(d, op, kind),
            Object::List(l) => objects::list(l, op),
            Object::Array(l) => objects::array(l, op),
            Object::Value(v) => objects::value_op(v, op),
            Object::User(u) => objects::user(u.as_mut(), op, kind),
            Object::Sync(s) => {
                if let (Sync::Barrier(_), ObjectOp::Reset) = (&*s, &op) {
                    self.reset_barrier(id);
                    return Outcome::Reply(ManagerReply::Done);
                }
                let notify = match &op {
                    ObjectOp::Notify { n, .. } => Some(*n),
                    _ => None,
                };
                let timeout = timeout_of(&op);
                let (step, changed) = waits::request(s, op, session, kind);
                if changed {
                    if let (Some(n), Step::Reply(ManagerReply::Done)) = (notify, &step) {
                        self.notify(id, n);
                    }
                    self.wake(id);
                }
                return match step {
                    Step::Reply(r) => Outcome::Reply(r),
                    Step::Park(wait) => {
                        self.parked.push(Parked { conn, id, deadline: deadline(now, timeout), wait });
                        Outcome::Parked
                    }
                };
            }
        };
        Outcome::Reply(reply)
    }

    /// Moves the first `n` condition waiters of `id` on to taking the lock.
    fn notify(&mut self, id: u64, n: u64) {
        let mut left = n;
        for p in self.parked.iter_mut().filter(|p| p.id == id) {
            if left == 0 {
                break;
            }
            if let Wait::Notified { owner, count } = p.wait {
                p.wait = Wait::Acquire { owner, restore: count, result: true };
                p.deadline = None;
                left -= 1;
            }
        }
    }

    fn reset_barrier(&mut self, id: u64) {
        if let Some(Entry { object: Object::Sync(Sync::Barrier(b)), .. }) = self.objects.get_mut(&id) {
            b.broken = true;
        }
        self.wake(id);
        if let Some(Entry { object: Object::Sync(Sync::Barrier(b)), .. }) = self.objects.get_mut(&id) {
            b.broken = false;
            b.count = 0;
            b.generation += 1;
        }
    }

    /// Tries the parked requests on `id` again, oldest first, until none
    /// moves (a put may let a get on, which lets a put on, …).
    fn wake(&mut self, id: u64) {
        loop {
            let mut moved = false;
            let mut i = 0;
            while i < self.parked.len() {
                if self.parked[i].id != id {
                    i += 1;
                    continue;
                }
                let Some(Entry { object: Object::Sync(s), .. }) = self.objects.get_mut(&id) else { return };
                let p = self.parked.remove(i);
                match s.attempt(p.wait) {
                    Ok(reply) => {
                        self.replies.push((p.conn, reply));
                        moved = true;
                    }
                    Err(wait) => {
                        self.parked.insert(i, Parked { wait, ..p });
                        i += 1;
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Answers the parked requests whose deadline has passed.
    pub fn expire(&mut self, now: Instant) {
        let mut touched = Vec::new();
        let mut i = 0;
        while i < self.parked.len() {
            if self.parked[i].deadline.is_none_or(|d| d > now) {
                i += 1;
                continue;
            }
            let p = self.parked.remove(i);
            let Some(Entry { object: Object::Sync(s), .. }) = self.objects.get_mut(&p.id) else { continue };
            match s.expire(p.wait) {
                Ok(reply) => self.replies.push((p.conn, reply)),
                Err(wait) => {
                    self.parked.insert(i, Parked { wait, deadline: None, ..p });
                    i += 1;
                }
            }
            touched.push(p.id);
        }
        touched.dedup();
        for id in touched {
            self.wake(id);
        }
    }

    /// A connection closed: its parked request goes, and when it was its
    /// session's last, everything the session held is released.
    pub fn close(&mut self, conn: ConnId) {
        self.parked.retain(|p| p.conn != conn);
        let Some(session) = self.conn_session.remove(&conn) else { return };
        let Some(s) = self.sessions.get_mut(&session) else { return };
        s.conns -= 1;
        if s.conns > 0 {
            return;
        }
        let s = self.sessions.remove(&session).expect("looked up above");
        // Locks its callers held: free them, and tell the next acquirer.
        let mut freed = Vec::new();
        for (&id, entry) in &mut self.objects {
            if let Object::Sync(sync) = &mut entry.object
                && let Some(l) = sync.lock_state()
                && l.holder.is_some_and(|(holder, _)| holder == session)
            {
                l.holder = None;
                l.count = 0;
                l.owner_died = Some(s.pid);
                freed.push(id);
            }
        }
        for id in freed {
            self.wake(id);
        }
        let transits: Vec<u64> =
            self.transits.iter().filter(|(_, (owner, _))| *owner == session).map(|(&t, _)| t).collect();
        for token in transits {
            if let Some((_, id)) = self.transits.remove(&token) {
                self.decref(id);
            }
        }
        for (id, n) in s.refs {
            for _ in 0..n {
                self.decref(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_bytes::ByteBuf;

    fn hello(s: &mut State, conn: ConnId, session: u64) {
        assert!(matches!(s.handle(conn, ManagerRequest::Hello { session, pid: 7 }, Instant::now()), Outcome::Nothing));
    }

    fn create(s: &mut State, conn: ConnId, new: NewObject) -> u64 {
        match s.handle(conn, ManagerRequest::Create { new, name: None }, Instant::now()) {
            Outcome::Reply(ManagerReply::Created(id)) => id,
            _ => panic!("created"),
        }
    }

    fn call(s: &mut State, conn: ConnId, id: u64, op: ObjectOp) -> Outcome {
        s.handle(conn, ManagerRequest::Call { id, op }, Instant::now())
    }

    #[test]
    fn transit_and_claim_in_either_order_keep_the_object() {
        let mut s = State::default();
        hello(&mut s, 1, 100);
        hello(&mut s, 2, 200);
        let id = create(&mut s, 1, NewObject::Namespace);
        // Claim first, then the transit, then the sender lets go.
        s.handle(2, ManagerRequest::Claim { id, token: 9 }, Instant::now());
        s.handle(1, ManagerRequest::Transit { id, token: 9 }, Instant::now());
        s.handle(1, ManagerRequest::Release { id }, Instant::now());
        assert_eq!(s.len(), 1, "the receiver still holds it");
        s.close(2);
        assert_eq!(s.len(), 0, "freed with its last holder");
        // Transit first: the sender's session holds it until the claim.
        hello(&mut s, 3, 300);
        let id = create(&mut s, 1, NewObject::Event);
        s.handle(1, ManagerRequest::Transit { id, token: 10 }, Instant::now());
        s.handle(1, ManagerRequest::Release { id }, Instant::now());
        assert_eq!(s.len(), 1);
        s.handle(3, ManagerRequest::Claim { id, token: 10 }, Instant::now());
        s.close(1);
        assert_eq!(s.len(), 1);
        s.close(3);
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn a_dead_holders_lock_is_freed_and_the_next_acquirer_told() {
        let mut s = State::default();
        hello(&mut s, 1, 100);
        hello(&mut s, 2, 200);
        let id = create(&mut s, 2, NewObject::Lock);
        let acquire = || ObjectOp::Acquire { owner: 1, timeout_ms: None };
        assert!(matches!(call(&mut s, 1, id, acquire()), Outcome::Reply(ManagerReply::Bool(true))));
        assert!(matches!(call(&mut s, 2, id, acquire()), Outcome::Parked));
        s.close(1);
        let replies = s.take_replies();
        assert!(matches!(replies.as_slice(), [(2, ManagerReply::Failed(ManagerFailure::OwnerDied { pid: 7 }))]));
        assert!(matches!(call(&mut s, 2, id, acquire()), Outcome::Reply(ManagerReply::Bool(true))));
    }

    #[test]
    fn condition_wait_notify_hands_the_lock_back() {
        let mut s = State::default();
        hello(&mut s, 1, 100);
        hello(&mut s, 2, 200);
        let id = create(&mut s, 1, NewObject::Condition);
        let acquire = ObjectOp::Acquire { owner: 1, timeout_ms: None };
        assert!(matches!(call(&mut s, 1, id, acquire), Outcome::Reply(ManagerReply::Bool(true))));
        assert!(matches!(call(&mut s, 1, id, ObjectOp::Wait { owner: 1, timeout_ms: None }), Outcome::Parked));
        let acquire = ObjectOp::Acquire { owner: 5, timeout_ms: None };
        assert!(matches!(call(&mut s, 2, id, acquire), Outcome::Reply(ManagerReply::Bool(true))));
        assert!(matches!(call(&mut s, 2, id, ObjectOp::Notify { owner: 5, n: 1 }), Outcome::Reply(ManagerReply::Done)));
        assert!(s.take_replies().is_empty(), "the waiter needs the lock back first");
        assert!(matches!(call(&mut s, 2, id, ObjectOp::ReleaseLock { owner: 5 }), Outcome::Reply(ManagerReply::Done)));
        assert!(matches!(s.take_replies().as_slice(), [(1, ManagerReply::Bool(true))]));
    }

    #[test]
    fn queue_get_parks_until_a_put_and_times_out_empty() {
        let mut s = State::default();
        hello(&mut s, 1, 100);
        let id = create(&mut s, 1, NewObject::Queue { maxsize: 1 });
        assert!(matches!(call(&mut s, 1, id, ObjectOp::Take { block: true, timeout_ms: None }), Outcome::Parked));
        let put = |b: u8| ObjectOp::Put { item: ByteBuf::from(vec![b]), block: true, timeout_ms: Some(0) };
        assert!(matches!(call(&mut s, 1, id, put(1)), Outcome::Reply(ManagerReply::Done)));
        assert!(matches!(s.take_replies().as_slice(), [(1, ManagerReply::Value(Some(v)))] if v.as_slice() == [1]));
        assert!(matches!(call(&mut s, 1, id, put(2)), Outcome::Reply(ManagerReply::Done)));
        assert!(matches!(call(&mut s, 1, id, put(3)), Outcome::Reply(ManagerReply::Failed(ManagerFailure::Full))));
        let t = ObjectOp::Take { block: true, timeout_ms: Some(5) };
        assert!(matches!(call(&mut s, 1, id, t), Outcome::Reply(ManagerReply::Value(_))));
        let t = ObjectOp::Take { block: true, timeout_ms: Some(5) };
        assert!(matches!(call(&mut s, 1, id, t), Outcome::Parked));
        s.expire(Instant::now() + Duration::from_millis(10));
        assert!(matches!(s.take_replies().as_slice(), [(1, ManagerReply::Failed(ManagerFailure::Empty))]));
    }
}
