//! Typed proxies to objects a manager hosts. Each has async methods and
//! `blocking_*` twins for sync code (a plain `fn` task in a child).

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_bytes::ByteBuf;

use super::{auth, decode, encode, unexpected};
use crate::error::{Error, Result};
use crate::wire::fds::PassFd;
use crate::wire::{BlockingChannel, Channel, DEFAULT_MAX_FRAME, ManagerReply, ManagerRequest, ObjectOp};

/// How a process reaches a manager.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Route {
    /// Locally: the rendezvous end; a new connection is a socketpair end
    /// sent through it.
    Rendezvous(PassFd),
    /// Over TCP, proving knowledge of the authkey.
    Tcp { address: SocketAddr, authkey: ByteBuf },
}

/// This process's way to the manager, and the connections made on first use
/// (one for async calls, one for blocking ones).
#[derive(Debug)]
pub(crate) struct Server {
    route: Route,
    blocking: std::sync::Mutex<Option<BlockingChannel>>,
    asynchronous: tokio::sync::Mutex<Option<Channel>>,
}

impl Server {
    pub fn new(route: Route) -> Self {
        Self { route, blocking: std::sync::Mutex::new(None), asynchronous: tokio::sync::Mutex::new(None) }
    }

    /// A new private local connection.
    fn rendezvous(rendezvous: &PassFd) -> Result<OwnedFd> {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)?;
        multiproc_sys::fdpass::send(rendezvous.borrow(), &[std::io::IoSlice::new(&[1])], &[theirs.as_fd()])
            .map_err(|e| if e.raw_os_error() == Some(nix::libc::EPIPE) { Error::Eof } else { e.into() })?;
        Ok(ours)
    }

    async fn connect(&self) -> Result<Channel> {
        match &self.route {
            Route::Rendezvous(r) => Channel::new(Self::rendezvous(r)?, DEFAULT_MAX_FRAME),
            Route::Tcp { address, authkey } => {
                let stream = tokio::net::TcpStream::connect(address).await?.into_std()?;
                let mut ch = Channel::new(OwnedFd::from(stream), auth::UNAUTHENTICATED_MAX_FRAME)?;
                let (answer, ours) = auth::answer(ch.recv().await?, authkey)?;
                ch.send(&answer).await?;
                auth::check_welcome(ch.recv().await?, authkey, &ours)?;
                ch.set_max(DEFAULT_MAX_FRAME);
                Ok(ch)
            }
        }
    }

    fn blocking_connect(&self) -> Result<BlockingChannel> {
        match &self.route {
            Route::Rendezvous(r) => Ok(BlockingChannel::new(Self::rendezvous(r)?, DEFAULT_MAX_FRAME)),
            Route::Tcp { address, authkey } => {
                let stream = std::net::TcpStream::connect(address)?;
                let mut ch = BlockingChannel::new(OwnedFd::from(stream), auth::UNAUTHENTICATED_MAX_FRAME);
                let (answer, ours) = auth::answer(ch.recv()?, authkey)?;
                ch.send(&answer)?;
                auth::check_welcome(ch.recv()?, authkey, &ours)?;
                ch.set_max(DEFAULT_MAX_FRAME);
                Ok(ch)
            }
        }
    }

    /// Checks the manager can be reached (and, over TCP, that both sides
    /// know the authkey).
    pub async fn ensure_connected(&self) -> Result<()> {
        let mut conn = self.asynchronous.lock().await;
        if conn.is_none() {
            *conn = Some(self.connect().await?);
        }
        Ok(())
    }

    pub async fn request(&self, req: &ManagerRequest) -> Result<ManagerReply> {
        let mut conn = self.asynchronous.lock().await;
        if conn.is_none() {
            *conn = Some(self.connect().await?);
        }
        let ch = conn.as_mut().expect("connected above");
        ch.send(req).await?;
        ch.recv().await
    }

    pub fn blocking_request(&self, req: &ManagerRequest) -> Result<ManagerReply> {
        let mut conn = self.blocking.lock().map_err(|_| Error::Closed("manager connection"))?;
        if conn.is_none() {
            *conn = Some(self.blocking_connect()?);
        }
        let ch = conn.as_mut().expect("connected above");
        ch.send(req)?;
        ch.recv()
    }
}

/// What every proxy is: a hosted object's id at a server.
#[derive(Debug, Clone)]
struct Handle {
    server: Arc<Server>,
    id: u64,
}

impl Handle {
    async fn call(&self, op: ObjectOp) -> Result<ManagerReply> {
        self.server.request(&ManagerRequest::Call { id: self.id, op }).await
    }

    fn blocking_call(&self, op: ObjectOp) -> Result<ManagerReply> {
        self.server.blocking_request(&ManagerRequest::Call { id: self.id, op })
    }
}

impl Serialize for Handle {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (&self.server.route, self.id).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Handle {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (route, id) = <(Route, u64)>::deserialize(d)?;
        Ok(Self { server: Arc::new(Server::new(route)), id })
    }
}

fn done(r: ManagerReply) -> Result<()> {
    match r {
        ManagerReply::Done => Ok(()),
        other => Err(unexpected(other)),
    }
}

fn boolean(r: ManagerReply) -> Result<bool> {
    match r {
        ManagerReply::Bool(b) => Ok(b),
        other => Err(unexpected(other)),
    }
}

fn len(r: ManagerReply) -> Result<usize> {
    match r {
        ManagerReply::Len(n) => Ok(n as usize),
        other => Err(unexpected(other)),
    }
}

fn optional<V: DeserializeOwned>(r: ManagerReply) -> Result<Option<V>> {
    match r {
        ManagerReply::Value(v) => v.map(|b| decode(&b)).transpose(),
        other => Err(unexpected(other)),
    }
}

fn required<V: DeserializeOwned>(r: ManagerReply) -> Result<V> {
    optional(r)?.ok_or_else(|| Error::Malformed("the manager returned no value".into()))
}

fn pairs<K: DeserializeOwned, V: DeserializeOwned>(r: ManagerReply) -> Result<Vec<(K, V)>> {
    match r {
        ManagerReply::Items(items) => items.iter().map(|(k, v)| Ok((decode(k)?, decode(v)?))).collect(),
        other => Err(unexpected(other)),
    }
}

fn values<V: DeserializeOwned>(r: ManagerReply) -> Result<Vec<V>> {
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

/// A dict hosted by a manager (`manager.dict()`), keys `K`, values `V`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct DictProxy<K, V> {
    handle: Handle,
    #[serde(skip)]
    types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for DictProxy<K, V> {
    fn clone(&self) -> Self {
        Self { handle: self.handle.clone(), types: PhantomData }
    }
}

impl<T> Clone for ListProxy<T> {
    fn clone(&self) -> Self {
        Self { handle: self.handle.clone(), types: PhantomData }
    }
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> DictProxy<K, V> {
    pub(crate) fn new(server: Arc<Server>, id: u64) -> Self {
        Self { handle: Handle { server, id }, types: PhantomData }
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
        /// `list(d.items())`, in insertion order
        items / blocking_items() -> Vec<(K, V)> = Ok::<_, Error>(ObjectOp::Items), pairs;
    );
    twins!(
        /// `d.clear()`
        clear / blocking_clear() -> () = Ok::<_, Error>(ObjectOp::Clear), done;
    );
}

/// A list hosted by a manager (`manager.list()`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct ListProxy<T> {
    handle: Handle,
    #[serde(skip)]
    types: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> ListProxy<T> {
    pub(crate) fn new(server: Arc<Server>, id: u64) -> Self {
        Self { handle: Handle { server, id }, types: PhantomData }
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
        /// `list(l)`: a copy of the whole list
        to_vec / blocking_to_vec() -> Vec<T> = Ok::<_, Error>(ObjectOp::Items), values;
    );
}

/// A namespace hosted by a manager (`manager.Namespace()`): named attributes
/// of any serializable type.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Namespace {
    handle: Handle,
}

impl Namespace {
    pub(crate) fn new(server: Arc<Server>, id: u64) -> Self {
        Self { handle: Handle { server, id } }
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
