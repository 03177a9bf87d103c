//! The hosted synchronisation objects (Lock, RLock, Semaphore, Condition,
//! Event, Barrier, Queue) and the waits a request parks on until it can be
//! answered. Nothing here blocks: a request that cannot be answered yet
//! becomes a [`Wait`], tried again whenever its object changes, and answered
//! at its deadline otherwise.

use std::collections::VecDeque;

use serde_bytes::ByteBuf;

use crate::wire::{ManagerFailure, ManagerReply};

/// Who holds a lock: a session and the caller (thread or task) inside it.
pub(crate) type Owner = (u64, u64);

#[derive(Default)]
pub(crate) struct LockState {
    pub holder: Option<Owner>,
    /// Recursion depth (RLock and Condition; 1 for a Lock).
    pub count: u64,
    /// The pid of a holder whose session ended while it held the lock: the
    /// next acquirer is told once.
    pub owner_died: Option<u32>,
}

impl LockState {
    /// One attempt to take the lock. `None`: it is held by someone else.
    fn try_acquire(&mut self, who: Owner, reentrant: bool, count: u64) -> Option<ManagerReply> {
        match self.holder {
            Some(h) if reentrant && h == who => {
                self.count += count;
                Some(ManagerReply::Bool(true))
            }
            Some(_) => None,
            None => {
                if let Some(pid) = self.owner_died.take() {
                    return Some(ManagerReply::Failed(ManagerFailure::OwnerDied { pid }));
                }
                self.holder = Some(who);
                self.count = count;
                Some(ManagerReply::Bool(true))
            }
        }
    }

    /// Releases once; a plain Lock may be released by anyone.
    pub fn release(&mut self, who: Owner, reentrant: bool) -> ManagerReply {
        match self.holder {
            None if reentrant => ManagerReply::Failed(ManagerFailure::NotOwner),
            None => super::objects::remote("release unlocked lock"),
            Some(h) if reentrant && h != who => ManagerReply::Failed(ManagerFailure::NotOwner),
            Some(_) => {
                self.count = self.count.saturating_sub(1);
                if self.count == 0 || !reentrant {
                    self.holder = None;
                    self.count = 0;
                }
                ManagerReply::Done
            }
        }
    }
}

pub(crate) struct Barrier {
    pub parties: u64,
    pub count: u64,
    pub generation: u64,
    pub broken: bool,
}

pub(crate) struct Queue {
    pub items: VecDeque<Vec<u8>>,
    pub maxsize: u64,
}

impl Queue {
    fn full(&self) -> bool {
        self.maxsize > 0 && self.items.len() as u64 >= self.maxsize
    }
}

/// What a parked request waits for.
#[derive(Debug)]
pub(crate) enum Wait {
    /// Lock, RLock or Condition `acquire`, or a condition waiter taking its
    /// lock back (`restore` levels deep, answering `result`).
    Acquire {
        owner: Owner,
        restore: u64,
        result: bool,
    },
    /// A condition waiter not notified yet.
    Notified {
        owner: Owner,
        count: u64,
    },
    Semaphore,
    Event,
    Barrier {
        generation: u64,
        index: u64,
    },
    Put(Vec<u8>),
    Take,
}

/// A synchronisation object's state.
pub(crate) enum Sync {
    Lock(LockState),
    RLock(LockState),
    Condition(LockState),
    Semaphore { value: u64, initial: u64, bounded: bool },
    Event(bool),
    Barrier(Barrier),
    Queue(Queue),
}

/// The outcome of a request on a synchronisation object.
pub(crate) enum Step {
    Reply(ManagerReply),
    Park(Wait),
}

fn failed(f: ManagerFailure) -> Step {
    Step::Reply(ManagerReply::Failed(f))
}

impl Sync {
    /// One attempt at `wait`: its answer, or `Err(wait)` to stay parked
    /// (possibly changed: a notified condition waiter now waits for its lock).
    pub fn attempt(&mut self, wait: Wait) -> Result<ManagerReply, Wait> {
        match (self, wait) {
            (Self::Lock(l), w @ Wait::Acquire { owner, .. }) => l.try_acquire(owner, false, 1).ok_or(w),
            (Self::RLock(l), w @ Wait::Acquire { owner, .. }) => l.try_acquire(owner, true, 1).ok_or(w),
            (Self::Condition(l), w @ Wait::Acquire { owner, restore, result }) => {
                match l.try_acquire(owner, restore == 0, restore.max(1)) {
                    Some(ManagerReply::Bool(true)) if restore > 0 => Ok(ManagerReply::Bool(result)),
                    Some(r) => Ok(r),
                    None => Err(w),
                }
            }
            (Self::Condition(_), w @ Wait::Notified { .. }) => Err(w),
            (Self::Semaphore { value, .. }, Wait::Semaphore) if *value > 0 => {
                *value -= 1;
                Ok(ManagerReply::Bool(true))
            }
            (Self::Event(true), Wait::Event) => Ok(ManagerReply::Bool(true)),
            (Self::Barrier(b), Wait::Barrier { .. }) if b.broken => {
                Ok(ManagerReply::Failed(ManagerFailure::BrokenBarrier))
            }
            (Self::Barrier(b), Wait::Barrier { generation, index }) if b.generation != generation => {
                Ok(ManagerReply::Len(index))
            }
            (Self::Queue(q), Wait::Put(item)) if !q.full() => {
                q.items.push_back(item);
                Ok(ManagerReply::Done)
            }
            (Self::Queue(q), Wait::Take) if !q.items.is_empty() => {
                Ok(ManagerReply::Value(q.items.pop_front().map(ByteBuf::from)))
            }
            (_, w) => Err(w),
        }
    }

    /// `wait`'s deadline passed: its answer, or `Err` when it must still
    /// wait (a condition waiter takes its lock back before it returns).
    pub fn expire(&mut self, wait: Wait) -> Result<ManagerReply, Wait> {
        match wait {
            Wait::Notified { owner, count } => self.attempt(Wait::Acquire { owner, restore: count, result: false }),
            Wait::Acquire { restore, .. } if restore > 0 => Err(wait),
            Wait::Acquire { .. } | Wait::Semaphore | Wait::Event => Ok(ManagerReply::Bool(false)),
            Wait::Barrier { .. } => {
                if let Self::Barrier(b) = self {
                    b.broken = true;
                }
                Ok(ManagerReply::Failed(ManagerFailure::BrokenBarrier))
            }
            Wait::Put(_) => Ok(ManagerReply::Failed(ManagerFailure::Full)),
            Wait::Take => Ok(ManagerReply::Failed(ManagerFailure::Empty)),
        }
    }

    /// Whether a timed-out wait leaves the object changed for the others
    /// (a broken barrier wakes every waiter).
    pub fn lock_state(&mut self) -> Option<&mut LockState> {
        match self {
            Self::Lock(l) | Self::RLock(l) | Self::Condition(l) => Some(l),
            _ => None,
        }
    }

    pub fn kind_reentrant(&self) -> bool {
        matches!(self, Self::RLock(_) | Self::Condition(_))
    }
}

/// Answers a request that needs no waiting, or says what to wait for.
/// `immediate` is a zero timeout: never park.
pub(crate) fn request(object: &mut Sync, op: crate::wire::ObjectOp, session: u64, kind: &str) -> (Step, bool) {
    use crate::wire::ObjectOp as Op;
    // The bool: the object changed in a way that may let parked waiters on.
    let reply = |r| (Step::Reply(r), false);
    let changed = |r| (Step::Reply(r), true);
    match (object, op) {
        (o @ (Sync::Lock(_) | Sync::RLock(_) | Sync::Condition(_)), Op::Acquire { owner, timeout_ms }) => {
            let wait = Wait::Acquire { owner: (session, owner), restore: 0, result: true };
            match o.attempt(wait) {
                Ok(r) => reply(r),
                Err(_) if timeout_ms == Some(0) => reply(ManagerReply::Bool(false)),
                Err(w) => (Step::Park(w), false),
            }
        }
        (o @ (Sync::Lock(_) | Sync::RLock(_) | Sync::Condition(_)), Op::ReleaseLock { owner }) => {
            let reentrant = o.kind_reentrant();
            let l = o.lock_state().expect("a lock");
            changed(l.release((session, owner), reentrant))
        }
        (Sync::Lock(l), Op::State) => reply(ManagerReply::Bool(l.holder.is_some())),
        (Sync::Condition(l), Op::Wait { owner, .. }) => {
            if l.holder != Some((session, owner)) {
                return (failed(ManagerFailure::NotOwner), false);
            }
            let count = l.count;
            l.holder = None;
            l.count = 0;
            (Step::Park(Wait::Notified { owner: (session, owner), count }), true)
        }
        (Sync::Condition(l), Op::Notify { owner, .. }) if l.holder != Some((session, owner)) => {
            (failed(ManagerFailure::NotOwner), false)
        }
        (Sync::Condition(_), Op::Notify { .. }) => {
            // The caller notifies the parked waiters (it sees them).
            changed(ManagerReply::Done)
        }
        (Sync::Semaphore { value, .. }, Op::Acquire { timeout_ms, .. }) => {
            if *value > 0 {
                *value -= 1;
                reply(ManagerReply::Bool(true))
            } else if timeout_ms == Some(0) {
                reply(ManagerReply::Bool(false))
            } else {
                (Step::Park(Wait::Semaphore), false)
            }
        }
        (Sync::Semaphore { value, initial, bounded }, Op::ReleaseLock { .. }) => {
            if *bounded && *value >= *initial {
                return (failed(ManagerFailure::TooManyReleases), false);
            }
            *value += 1;
            changed(ManagerReply::Done)
        }
        (Sync::Semaphore { value, .. }, Op::State) => reply(ManagerReply::Len(*value)),
        (Sync::Event(flag), Op::SetFlag) => {
            *flag = true;
            changed(ManagerReply::Done)
        }
        (Sync::Event(flag), Op::ClearFlag) => {
            *flag = false;
            reply(ManagerReply::Done)
        }
        (Sync::Event(flag), Op::State) => reply(ManagerReply::Bool(*flag)),
        (Sync::Event(flag), Op::Wait { timeout_ms, .. }) => {
            if *flag || timeout_ms == Some(0) {
                reply(ManagerReply::Bool(*flag))
            } else {
                (Step::Park(Wait::Event), false)
            }
        }
        (Sync::Barrier(b), Op::BarrierWait { .. }) if b.broken => (failed(ManagerFailure::BrokenBarrier), false),
        (Sync::Barrier(b), Op::BarrierWait { timeout_ms }) => {
            let index = b.count;
            b.count += 1;
            if b.count >= b.parties {
                b.count = 0;
                b.generation += 1;
                changed(ManagerReply::Len(index))
            } else if timeout_ms == Some(0) {
                b.broken = true;
                (failed(ManagerFailure::BrokenBarrier), true)
            } else {
                (Step::Park(Wait::Barrier { generation: b.generation, index }), false)
            }
        }
        (Sync::Barrier(b), Op::Abort) => {
            b.broken = true;
            changed(ManagerReply::Done)
        }
        (Sync::Barrier(b), Op::State) => reply(ManagerReply::Len(b.count)),
        (Sync::Barrier(b), Op::Len) => reply(ManagerReply::Len(b.parties)),
        (Sync::Barrier(b), Op::Contains(_)) => reply(ManagerReply::Bool(b.broken)),
        (Sync::Queue(q), Op::Put { item, block, timeout_ms }) => {
            if !q.full() {
                q.items.push_back(item.into_vec());
                changed(ManagerReply::Done)
            } else if !block || timeout_ms == Some(0) {
                (failed(ManagerFailure::Full), false)
            } else {
                (Step::Park(Wait::Put(item.into_vec())), false)
            }
        }
        (Sync::Queue(q), Op::Take { block, timeout_ms }) => match q.items.pop_front() {
            Some(item) => changed(ManagerReply::Value(Some(ByteBuf::from(item)))),
            None if !block || timeout_ms == Some(0) => (failed(ManagerFailure::Empty), false),
            None => (Step::Park(Wait::Take), false),
        },
        (Sync::Queue(q), Op::Len) => reply(ManagerReply::Len(q.items.len() as u64)),
        (Sync::Queue(q), Op::State) => reply(ManagerReply::Bool(q.full())),
        (_, op) => reply(super::objects::unsupported(kind, &op)),
    }
}
