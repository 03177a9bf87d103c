//! The data objects a manager hosts (dict, list, namespace, value, array and
//! registered user types) and the operations that answer at once.

use std::collections::HashMap;

use serde_bytes::ByteBuf;

use super::user::HostedObject;
use crate::wire::{ManagerFailure, ManagerReply, ObjectOp};

/// A dict that keeps insertion order, as Python's does. Deleting leaves a
/// hole that is skipped (O(1)); the holes are squeezed out once they are
/// half the slots.
#[derive(Default)]
pub(crate) struct Dict {
    slots: Vec<Option<(Vec<u8>, Vec<u8>)>>,
    index: HashMap<Vec<u8>, usize>,
}

impl Dict {
    pub fn set(&mut self, k: Vec<u8>, v: Vec<u8>) {
        match self.index.get(&k) {
            Some(&i) => {
                if let Some(slot) = &mut self.slots[i] {
                    slot.1 = v;
                }
            }
            None => {
                self.index.insert(k.clone(), self.slots.len());
                self.slots.push(Some((k, v)));
            }
        }
    }

    pub fn get(&self, k: &[u8]) -> Option<&Vec<u8>> {
        self.index.get(k).and_then(|&i| self.slots[i].as_ref()).map(|(_, v)| v)
    }

    pub fn remove(&mut self, k: &[u8]) -> Option<Vec<u8>> {
        let i = self.index.remove(k)?;
        let (_, v) = self.slots[i].take()?;
        if self.index.len() * 2 < self.slots.len() {
            self.compact();
        }
        Some(v)
    }

    fn compact(&mut self) {
        self.slots.retain(Option::is_some);
        for (i, slot) in self.slots.iter().enumerate() {
            if let Some((k, _)) = slot
                && let Some(at) = self.index.get_mut(k)
            {
                *at = i;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    fn items(&self) -> Vec<(ByteBuf, ByteBuf)> {
        self.slots.iter().flatten().map(|(k, v)| (ByteBuf::from(k.clone()), ByteBuf::from(v.clone()))).collect()
    }
}

/// Python's index rules: negative counts from the end.
fn position(i: i64, len: usize) -> Option<usize> {
    let i = if i < 0 { i.checked_add(i64::try_from(len).ok()?)? } else { i };
    usize::try_from(i).ok().filter(|&i| i < len)
}

fn value(v: Option<&Vec<u8>>) -> ManagerReply {
    ManagerReply::Value(v.map(|b| ByteBuf::from(b.clone())))
}

pub(crate) fn remote(message: impl Into<String>) -> ManagerReply {
    ManagerReply::Failed(ManagerFailure::Remote(message.into()))
}

fn values(l: &[Vec<u8>]) -> ManagerReply {
    ManagerReply::Items(l.iter().map(|v| (ByteBuf::new(), ByteBuf::from(v.clone()))).collect())
}

/// A sequence operation shared by list and array (`array` refuses the
/// ones that change its length).
fn sequence(l: &mut Vec<Vec<u8>>, op: ObjectOp, fixed: bool) -> ManagerReply {
    use ManagerReply as R;
    match op {
        ObjectOp::Index(i) => match position(i, l.len()) {
            Some(i) => value(Some(&l[i])),
            None => remote(if fixed { "array index out of range" } else { "list index out of range" }),
        },
        ObjectOp::SetIndex(i, v) => match position(i, l.len()) {
            Some(i) => {
                l[i] = v.into_vec();
                R::Done
            }
            None => {
                remote(if fixed { "array assignment index out of range" } else { "list assignment index out of range" })
            }
        },
        ObjectOp::Len => R::Len(l.len() as u64),
        ObjectOp::Items => values(l),
        op if fixed => remote(format!("an Array has a fixed length: {} is not supported", op_name(&op))),
        ObjectOp::Append(v) => {
            l.push(v.into_vec());
            R::Done
        }
        ObjectOp::Extend(vs) => {
            l.extend(vs.into_iter().map(ByteBuf::into_vec));
            R::Done
        }
        ObjectOp::Insert(i, v) => {
            let len = l.len() as i64;
            let at = if i < 0 { i.saturating_add(len).max(0) } else { i.min(len) };
            l.insert(at as usize, v.into_vec());
            R::Done
        }
        ObjectOp::Pop(i) => {
            if l.is_empty() {
                return remote("pop from empty list");
            }
            match position(i.unwrap_or(-1), l.len()) {
                Some(i) => R::Value(Some(ByteBuf::from(l.remove(i)))),
                None => remote("pop index out of range"),
            }
        }
        ObjectOp::Reverse => {
            l.reverse();
            R::Done
        }
        ObjectOp::Clear => {
            l.clear();
            R::Done
        }
        op => unsupported("list", &op),
    }
}

/// The operation's name for messages (without its payload).
pub(crate) fn op_name(op: &ObjectOp) -> &'static str {
    match op {
        ObjectOp::Get(_) => "get",
        ObjectOp::Set(..) => "set",
        ObjectOp::Delete(_) => "pop",
        ObjectOp::Contains(_) => "contains",
        ObjectOp::Len => "len",
        ObjectOp::Items => "items",
        ObjectOp::Clear => "clear",
        ObjectOp::Index(_) => "getitem",
        ObjectOp::SetIndex(..) => "setitem",
        ObjectOp::Append(_) => "append",
        ObjectOp::Extend(_) => "extend",
        ObjectOp::Insert(..) => "insert",
        ObjectOp::Pop(_) => "pop",
        ObjectOp::Reverse => "reverse",
        ObjectOp::Acquire { .. } => "acquire",
        ObjectOp::ReleaseLock { .. } => "release",
        ObjectOp::State => "state",
        ObjectOp::Wait { .. } => "wait",
        ObjectOp::Notify { .. } => "notify",
        ObjectOp::SetFlag => "set",
        ObjectOp::ClearFlag => "clear",
        ObjectOp::BarrierWait { .. } => "wait",
        ObjectOp::Abort => "abort",
        ObjectOp::Reset => "reset",
        ObjectOp::Put { .. } => "put",
        ObjectOp::Take { .. } => "get",
        ObjectOp::Load => "value",
        ObjectOp::Store(_) => "value =",
        ObjectOp::Method { .. } => "a method",
    }
}

pub(crate) fn unsupported(kind: &str, op: &ObjectOp) -> ManagerReply {
    remote(format!("a {kind} has no operation {:?}", op_name(op)))
}

pub(crate) fn dict(d: &mut Dict, op: ObjectOp, kind: &str) -> ManagerReply {
    use ManagerReply as R;
    match op {
        ObjectOp::Get(k) => value(d.get(&k)),
        ObjectOp::Set(k, v) => {
            d.set(k.into_vec(), v.into_vec());
            R::Done
        }
        ObjectOp::Delete(k) => R::Value(d.remove(&k).map(ByteBuf::from)),
        ObjectOp::Contains(k) => R::Bool(d.index.contains_key(k.as_slice())),
        ObjectOp::Len => R::Len(d.len() as u64),
        ObjectOp::Items => R::Items(d.items()),
        ObjectOp::Clear => {
            *d = Dict::default();
            R::Done
        }
        op => unsupported(kind, &op),
    }
}

pub(crate) fn list(l: &mut Vec<Vec<u8>>, op: ObjectOp) -> ManagerReply {
    sequence(l, op, false)
}

pub(crate) fn array(l: &mut Vec<Vec<u8>>, op: ObjectOp) -> ManagerReply {
    sequence(l, op, true)
}

pub(crate) fn value_op(v: &mut Vec<u8>, op: ObjectOp) -> ManagerReply {
    match op {
        ObjectOp::Load => ManagerReply::Value(Some(ByteBuf::from(v.clone()))),
        ObjectOp::Store(new) => {
            *v = new.into_vec();
            ManagerReply::Done
        }
        op => unsupported("Value", &op),
    }
}

pub(crate) fn user(object: &mut dyn HostedObject, op: ObjectOp, kind: &str) -> ManagerReply {
    match op {
        ObjectOp::Method { name, args } => match object.call(&name, &args) {
            Ok(out) => ManagerReply::Value(Some(ByteBuf::from(out))),
            Err(message) => remote(message),
        },
        op => unsupported(kind, &op),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dict_keeps_insertion_order_across_deletes() {
        let mut d = Dict::default();
        for i in 0..10u8 {
            d.set(vec![i], vec![i]);
        }
        for i in 0..8u8 {
            assert_eq!(d.remove(&[i]), Some(vec![i]));
        }
        d.set(vec![0], vec![100]);
        d.set(vec![9], vec![99]);
        let keys: Vec<_> = d.items().into_iter().map(|(k, v)| (k.into_vec(), v.into_vec())).collect();
        assert_eq!(keys, vec![(vec![8], vec![8]), (vec![9], vec![99]), (vec![0], vec![100])]);
        assert_eq!(d.len(), 3);
        assert_eq!(d.get(&[9]), Some(&vec![99]));
    }

    #[test]
    fn python_index_rules() {
        assert_eq!(position(-1, 3), Some(2));
        assert_eq!(position(3, 3), None);
        assert_eq!(position(i64::MIN, 3), None);
    }
}
