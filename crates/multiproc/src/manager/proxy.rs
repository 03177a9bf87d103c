//! Typed proxies to the data objects a manager hosts (dict, list,
//! namespace), and the [`Handle`] every proxy is built on. Each proxy has
//! async methods and `blocking_*` twins for sync code (a plain `fn` task in a
//! child).
//!
//! A handle is one reference at the manager: clones inside a process share
//! it; sending a proxy to another process gives the receiver its own (see
//! `state.rs` for transit and claim); the last drop releases it.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::de::DeserializeOwned;
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_bytes::ByteBuf;

use super::client::{Address, Server, unexpected};
use super::{auth, decode, encode};
use crate::error::{Error, Result};
use crate::wire::{ManagerReply, ManagerRequest, ObjectOp};

struct Inner {
    server: Arc<Server>,
    id: u64,
    /// The transit token of a proxy received from another process and not
    /// claimed yet (0: claimed, or made here).
    unclaimed: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let token = *self.unclaimed.get_mut();
        if token != 0 {
            if !self.server.is_local() {
                // Never used: the sender's session holds the reference
                // until it ends.
                return;
            }
            if self.server.one_way(&ManagerRequest::Claim { id: self.id, token }).is_err() {
                return;
            }
        }
        self.server.one_way_if_connected(&ManagerRequest::Release { id: self.id });
    }
}

/// What every proxy is: one reference to a hosted object.
#[derive(Clone)]
pub(crate) struct Handle(Arc<Inner>);

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{} at {:?}", self.0.id, self.0.server)
    }
}

impl Handle {
    pub fn new(server: Arc<Server>, id: u64) -> Self {
        Self(Arc::new(Inner { server, id, unclaimed: AtomicU64::new(0) }))
    }

    fn claim(&self) -> Result<()> {
        let token = self.0.unclaimed.swap(0, Ordering::AcqRel);
        if token != 0 {
            self.0.server.one_way(&ManagerRequest::Claim { id: self.0.id, token })?;
        }
        Ok(())
    }

    pub async fn call(&self, op: ObjectOp) -> Result<ManagerReply> {
        if self.0.unclaimed.load(Ordering::Acquire) != 0 {
            self.0.server.ensure_control().await?;
            self.claim()?;
        }
        self.0.server.request(&ManagerRequest::Call { id: self.0.id, op }).await
    }

    pub fn blocking_call(&self, op: ObjectOp) -> Result<ManagerReply> {
        self.claim()?;
        self.0.server.blocking_request(&ManagerRequest::Call { id: self.0.id, op })
    }
}

impl Serialize for Handle {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let mut t = s.serialize_tuple(3)?;
        t.serialize_element(self.0.server.address())?;
        // The address went into the message: hold a reference for the
        // receiver until it claims it.
        self.claim().map_err(S::Error::custom)?;
        let token = auth::random_u64().map_err(S::Error::custom)?.max(1);
        self.0.server.one_way(&ManagerRequest::Transit { id: self.0.id, token }).map_err(S::Error::custom)?;
        t.serialize_element(&self.0.id)?;
        t.serialize_element(&token)?;
        t.end()
    }
}

impl<'de> Deserialize<'de> for Handle {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let (address, id, token) = <(Address, u64, u64)>::deserialize(d)?;
        let server = Server::intern(address).map_err(D::Error::custom)?;
        let local = server.is_local();
        let handle = Self(Arc::new(Inner { server, id, unclaimed: AtomicU64::new(token) }));
        if local {
            // Claim at once (no round trip): the sender may let go soon.
            // On failure the first call reports why.
            let _ = handle.claim();
        }
        Ok(handle)
    }
}

pub(crate) fn done(r: ManagerReply) -> Result<()> {
    match r {
        ManagerReply::Done => Ok(()),
        other => Err(unexpected(other)),
    }
}

pub(crate) fn boolean(r: ManagerReply) -> Result<bool> {
    match r {
        ManagerReply::Bool(b) => Ok(b),
        other => Err(unexpected(other)),
    }
}

pub(crate) fn len(r: ManagerReply) -> Result<usize> {
    match r {
        ManagerReply::Len(n) => usize::try_from(n).map_err(|_| Error::Malformed(format!("a length of {n}"))),
        other => Err(unexpected(other)),
    }
}

pub(crate) fn optional<V: DeserializeOwned>(r: ManagerReply) -> Result<Option<V>> {
    match r {
        ManagerReply::Value(v) => v.map(|b| decode(&b)).transpose(),
        other => Err(unexpected(other)),
    }
}

pub(crate) fn required<V: DeserializeOwned>(r: ManagerReply) -> Result<V> {
    optional(r)?.ok_or_else(|| Error::Malformed("the manager returned no value".into()))
}

fn pairs<K: DeserializeOwned, V: DeserializeOwned>(r: ManagerReply) -> Result<Vec<(K, V)>> {
    match r {
        ManagerReply::Items(items) => items.iter().map(|(k, v)| Ok((decode(k)?, decode(v)?))).collect(),
        other => Err(unexpected(other)),
    }
}

pub(crate) fn values<V: DeserializeOwned>(r: ManagerReply) -> Result<Vec<V>> {
    match r {
        ManagerReply::Items(items) => items.iter().map(|(_, v)| decode(v)).collect(),
        other => Err(unexpected(other)),
    }
}

/// Declares `async fn $name` and `fn blocking_$name` from one operation and
/// one reply decoder, so the twins cannot drift apart.
macro_rules! twins {
    ($(#[$doc:meta])* $name:ident / $blocking:ident ($($arg:ident: $ty:ty),*) -> $out:ty = $op:expr, $decode:expr;) => {
        $(#[$doc])*
        pub async fn $name(&self, $($arg: $ty),*) -> Result<$out> {
            let op = $op;
            $decode(self.handle.call(op?).await?)
        }

        $(#[$doc])*
        pub fn $blocking(&self, $($arg: $ty),*) -> Result<$out> {
            let op = $op;
            $decode(self.handle.blocking_call(op?)?)
        }
    };
}
pub(crate) use twins;

/// Short `Debug` for a proxy: its type and object, never its buffers.
macro_rules! proxy_debug {
    ($name:ident $(<$($g:ident),*>)?) => {
        impl$(<$($g),*>)? std::fmt::Debug for $name$(<$($g),*>)? {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!(stringify!($name), "({:?})"), self.handle)
            }
        }
    };
}
pub(crate) use proxy_debug;

/// A dict hosted by a manager (`manager.dict()`), keys `K`, values `V`.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct DictProxy<K, V> {
    handle: Handle,
    #[serde(skip)]
    types: PhantomData<fn() -> (K, V)>,
}

proxy_debug!(DictProxy<K, V>);

impl<K, V> Clone for DictProxy<K, V> {
    fn clone(&self) -> Self {
        Self { handle: self.handle.clone(), types: PhantomData }
    }
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> DictProxy<K, V> {
    pub(crate) fn new(handle: Handle) -> Self {
        Self { handle, types: PhantomData }
    }

    twins!(
        /// `d.get(k)`
        get / blocking_get(key: &K) -> Option<V> = encode(key).map(ObjectOp::Get), optional;
    );
    twins!(
        /// `d[k] = v`
        set / blocking_set(key: K, value: V) -> () = Ok::<_, Error>(ObjectOp::Set(encode(&key)?, encode(&value)?)), done;
    );
    twins!(
        /// `d.pop(k, None)`
        remove / blocking_remove(key: &K) -> Option<V> = encode(key).map(ObjectOp::Delete), optional;
    );
    twins!(
        /// `k in d`
        contains_key / blocking_contains_key(key: &K) -> bool = encode(key).map(ObjectOp::Contains), boolean;
    );
    twins!(
        /// `len(d)`
        len / blocking_len() -> usize = Ok::<_, Error>(ObjectOp::Len), len;
    );
    twins!(
        /// `list(d.items())`, in insertion order (streamed in parts when
        /// larger than one frame)
        items / blocking_items() -> Vec<(K, V)> = Ok::<_, Error>(ObjectOp::Items), pairs;
    );
    twins!(
        /// `d.clear()`
        clear / blocking_clear() -> () = Ok::<_, Error>(ObjectOp::Clear), done;
    );
}

/// A list hosted by a manager (`manager.list()`).
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct ListProxy<T> {
    handle: Handle,
    #[serde(skip)]
    types: PhantomData<fn() -> T>,
}

proxy_debug!(ListProxy<T>);

impl<T> Clone for ListProxy<T> {
    fn clone(&self) -> Self {
        Self { handle: self.handle.clone(), types: PhantomData }
    }
}

impl<T: Serialize + DeserializeOwned> ListProxy<T> {
    pub(crate) fn new(handle: Handle) -> Self {
        Self { handle, types: PhantomData }
    }

    twins!(
        /// `l[i]` (negative counts from the end; out of range is `Error::Remote`)
        get / blocking_get(index: i64) -> T = Ok::<_, Error>(ObjectOp::Index(index)), required;
    );
    twins!(
        /// `l[i] = v`
        set / blocking_set(index: i64, value: T) -> () = Ok::<_, Error>(ObjectOp::SetIndex(index, encode(&value)?)), done;
    );
    twins!(
        /// `l.append(v)`
        append / blocking_append(value: T) -> () = encode(&value).map(ObjectOp::Append), done;
    );
    twins!(
        /// `l.extend(vs)`
        extend / blocking_extend(values: Vec<T>) -> () =
            values.iter().map(encode).collect::<Result<Vec<ByteBuf>>>().map(ObjectOp::Extend), done;
    );
    twins!(
        /// `l.insert(i, v)`
        insert / blocking_insert(index: i64, value: T) -> () = encode(&value).map(|v| ObjectOp::Insert(index, v)), done;
    );
    twins!(
        /// `l.pop()` / `l.pop(i)`
        pop / blocking_pop(index: Option<i64>) -> T = Ok::<_, Error>(ObjectOp::Pop(index)), required;
    );
    twins!(
        /// `l.reverse()`
        reverse / blocking_reverse() -> () = Ok::<_, Error>(ObjectOp::Reverse), done;
    );
    twins!(
        /// `len(l)`
        len / blocking_len() -> usize = Ok::<_, Error>(ObjectOp::Len), len;
    );
    twins!(
        /// `list(l)`: a copy of the whole list (streamed in parts when larger
        /// than one frame)
        to_vec / blocking_to_vec() -> Vec<T> = Ok::<_, Error>(ObjectOp::Items), values;
    );
}

/// A namespace hosted by a manager (`manager.Namespace()`): named attributes
/// of any serializable type.
#[derive(Clone, Serialize, Deserialize)]
pub struct Namespace {
    handle: Handle,
}

proxy_debug!(Namespace);

impl Namespace {
    pub(crate) fn new(handle: Handle) -> Self {
        Self { handle }
    }

    /// `ns.name`; `None` when the attribute was never set.
    pub async fn get<V: DeserializeOwned>(&self, name: &str) -> Result<Option<V>> {
        optional(self.handle.call(ObjectOp::Get(encode(name)?)).await?)
    }

    /// `ns.name = value`
    pub async fn set<V: Serialize>(&self, name: &str, value: &V) -> Result<()> {
        done(self.handle.call(ObjectOp::Set(encode(name)?, encode(value)?)).await?)
    }

    /// `ns.name` from sync code.
    pub fn blocking_get<V: DeserializeOwned>(&self, name: &str) -> Result<Option<V>> {
        optional(self.handle.blocking_call(ObjectOp::Get(encode(name)?))?)
    }

    /// `ns.name = value` from sync code.
    pub fn blocking_set<V: Serialize>(&self, name: &str, value: &V) -> Result<()> {
        done(self.handle.blocking_call(ObjectOp::Set(encode(name)?, encode(value)?))?)
    }
}
