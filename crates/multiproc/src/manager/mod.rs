//! `Manager`: a server process hosting shared objects (dict, list,
//! namespace, the synchronisation types, queue, value, array, and your own
//! `#[multiproc::hosted]` types), reached through typed proxies
//! (`multiprocessing.Manager()`, `BaseManager.register`).
//!
//! # Theory of operation
//!
//! The manager has no address: it holds one end of a `SOCK_SEQPACKET`
//! socketpair (the *rendezvous*). A proxy carries the other end (as a
//! [`PassFd`](crate::wire::fds::PassFd), so proxies are ordinary task
//! arguments); a process makes a connection by creating a socketpair and
//! sending one end through the rendezvous. A stranger without that fd cannot
//! connect. The manager exits when the rendezvous has no holder left, or on
//! `shutdown`. [`Manager::serve`] also listens on TCP for peers on other
//! hosts, which [`Manager::connect`] with the same authkey (`auth.rs`).
//!
//! - `client.rs`: a process's *session* at a manager: a control connection
//!   for one-way messages and pools of request connections. A call takes a
//!   connection, sends, reads the reply, puts it back; a call dropped
//!   half-way drops its connection, so no reply is ever read by the wrong
//!   call (cancel safety without request ids).
//! - `proxy.rs`, `hosted.rs`, `user.rs`: the proxies. Each is one reference
//!   at the manager; clones share it; a proxy sent to another process is
//!   held by the sender (`Transit`) until the receiver `Claim`s it; the last
//!   drop `Release`s it.
//! - `server.rs`: the loop (one thread, non-blocking sockets, `poll`); it
//!   survives every client (see its invariant).
//! - `state.rs`, `objects.rs`, `waits.rs`: the state machine without I/O:
//!   objects and reference counts per session, and requests that must wait
//!   (lock acquire, queue get, event wait) parked and answered later, so
//!   the loop never blocks. A session's references and locks are released
//!   when its last connection closes (a dead process's included).

mod auth;
mod client;
mod hosted;
mod objects;
mod proxy;
mod server;
mod state;
mod user;
mod waits;

pub use hosted::{
    ArrayProxy, BarrierProxy, ConditionProxy, EventProxy, LockProxy, QueueProxy, RLockProxy, SemaphoreProxy, ValueProxy,
};
pub use proxy::{DictProxy, ListProxy, Namespace};
pub use user::{Hosted, HostedObject, HostedProxy};
#[doc(hidden)]
pub use user::{HostedEntry, decode_args, decode_init, encode_result};

use std::net::SocketAddr;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_bytes::ByteBuf;

use crate::error::{Error, Result};
use crate::process::Process;
use crate::wire::fds::PassFd;
use crate::wire::{self, ManagerReply, ManagerRequest, NewObject};
use client::{Address, Route, Server, unexpected};
use proxy::Handle;

/// A running manager process (`with Manager() as manager:`).
///
/// ```no_run
/// # async fn demo() -> multiproc::Result<()> {
/// let manager = multiproc::Manager::start().await?;
/// let d = manager.dict::<String, i64>().await?;   // d = manager.dict()
/// d.set("a".into(), 1).await?;                     // d['a'] = 1
/// assert_eq!(d.get(&"a".into()).await?, Some(1));
/// manager.shutdown().await?;
/// # Ok(()) }
/// ```
pub struct Manager {
    server: Arc<Server>,
    /// The server process, when this handle started it.
    process: Option<Process>,
    address: Option<SocketAddr>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Manager");
        d.field("route", &self.server);
        if let Some(pid) = self.pid() {
            d.field("pid", &pid);
        }
        d.finish()
    }
}

impl Manager {
    /// Starts the manager's server process (`Manager()`).
    pub async fn start() -> Result<Self> {
        crate::runtime::require("a manager")?;
        Self::launch(None).await
    }

    /// Starts a manager that also accepts peers on TCP `address` (port 0
    /// picks a free one; see [`address`](Self::address)) who know `authkey`
    /// (`BaseManager(address, authkey).start()`).
    pub async fn serve(address: SocketAddr, authkey: &[u8]) -> Result<Self> {
        crate::runtime::require("a manager")?;
        if authkey.is_empty() {
            return Err(Error::Authentication("an empty authkey protects nothing".into()));
        }
        let listener = std::net::TcpListener::bind(address)?;
        let address = listener.local_addr()?;
        let mut manager = Self::launch(Some((PassFd(listener.into()), ByteBuf::from(authkey.to_vec())))).await?;
        manager.address = Some(address);
        Ok(manager)
    }

    /// Connects to a manager another program serves on TCP
    /// (`BaseManager(address, authkey).connect()`); fails with
    /// `Error::Authentication` when either side does not know the key, and
    /// `Error::ManagerUnreachable` (naming the address) when nothing answers.
    pub async fn connect(address: SocketAddr, authkey: &[u8]) -> Result<Self> {
        crate::runtime::require("a manager connection")?;
        let route = Route::Tcp { address, authkey: ByteBuf::from(authkey.to_vec()) };
        let server = Server::intern(Address { manager: auth::random_u64()?, route })?;
        server.ensure_connected().await?;
        Ok(Self { server, process: None, address: Some(address) })
    }

    async fn launch(tcp: Option<(PassFd, ByteBuf)>) -> Result<Self> {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let (client, listen) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)?;
        let mut process = Process::new(server::serve_manager, (PassFd(listen), tcp)).name("SyncManager").daemon(true);
        process.start().await?;
        let server =
            Server::intern(Address { manager: auth::random_u64()?, route: Route::Rendezvous(PassFd(client)) })?;
        Ok(Self { server, process: Some(process), address: None })
    }

    /// The manager process's pid, when this handle started it.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(Process::pid)
    }

    /// The TCP address peers connect to, for a served or connected manager.
    pub fn address(&self) -> Option<SocketAddr> {
        self.address
    }

    async fn create(&self, new: NewObject, name: Option<&str>) -> Result<Handle> {
        let name = name.map(str::to_owned);
        match self.server.request(&ManagerRequest::Create { new, name }).await? {
            ManagerReply::Created(id) => Ok(Handle::new(Arc::clone(&self.server), id)),
            other => Err(unexpected(other)),
        }
    }

    /// A new empty shared dict (`manager.dict()`).
    pub async fn dict<K, V>(&self) -> Result<DictProxy<K, V>>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        self.dict_from(std::iter::empty()).await
    }

    /// A shared dict filled from `items` (`manager.dict({...})`).
    pub async fn dict_from<K, V>(&self, items: impl IntoIterator<Item = (K, V)>) -> Result<DictProxy<K, V>>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        let items = items.into_iter().map(|(k, v)| Ok((encode(&k)?, encode(&v)?))).collect::<Result<Vec<_>>>()?;
        Ok(DictProxy::new(self.create(NewObject::Dict(items), None).await?))
    }

    /// A shared list filled from `items` (`manager.list([...])`).
    pub async fn list<T>(&self, items: impl IntoIterator<Item = T>) -> Result<ListProxy<T>>
    where
        T: Serialize + DeserializeOwned,
    {
        let items = items.into_iter().map(|v| encode(&v)).collect::<Result<Vec<_>>>()?;
        Ok(ListProxy::new(self.create(NewObject::List(items), None).await?))
    }

    /// A shared namespace of named attributes (`manager.Namespace()`).
    pub async fn namespace(&self) -> Result<Namespace> {
        Ok(Namespace::new(self.create(NewObject::Namespace, None).await?))
    }

    /// The dict called `name`, created empty by the first caller: how
    /// programs sharing a manager find the same object. Named objects live
    /// until the manager stops.
    pub async fn dict_named<K, V>(&self, name: &str) -> Result<DictProxy<K, V>>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        Ok(DictProxy::new(self.create(NewObject::Dict(Vec::new()), Some(name)).await?))
    }

    /// The list called `name`, created empty by the first caller.
    pub async fn list_named<T: Serialize + DeserializeOwned>(&self, name: &str) -> Result<ListProxy<T>> {
        Ok(ListProxy::new(self.create(NewObject::List(Vec::new()), Some(name)).await?))
    }

    /// The namespace called `name`, created empty by the first caller.
    pub async fn namespace_named(&self, name: &str) -> Result<Namespace> {
        Ok(Namespace::new(self.create(NewObject::Namespace, Some(name)).await?))
    }

    /// A lock in the manager (`manager.Lock()`).
    pub async fn lock(&self) -> Result<LockProxy> {
        Ok(LockProxy::new(self.create(NewObject::Lock, None).await?))
    }

    /// A re-entrant lock in the manager (`manager.RLock()`).
    pub async fn rlock(&self) -> Result<RLockProxy> {
        Ok(RLockProxy::new(self.create(NewObject::RLock, None).await?))
    }

    /// A semaphore in the manager (`manager.Semaphore(value)`).
    pub async fn semaphore(&self, value: u32) -> Result<SemaphoreProxy> {
        let new = NewObject::Semaphore { value: u64::from(value), bounded: false };
        Ok(SemaphoreProxy::new(self.create(new, None).await?))
    }

    /// A bounded semaphore in the manager (`manager.BoundedSemaphore(value)`):
    /// releasing above `value` is `Error::TooManyReleases`.
    pub async fn bounded_semaphore(&self, value: u32) -> Result<SemaphoreProxy> {
        let new = NewObject::Semaphore { value: u64::from(value), bounded: true };
        Ok(SemaphoreProxy::new(self.create(new, None).await?))
    }

    /// A condition variable in the manager (`manager.Condition()`).
    pub async fn condition(&self) -> Result<ConditionProxy> {
        Ok(ConditionProxy::new(self.create(NewObject::Condition, None).await?))
    }

    /// An event in the manager (`manager.Event()`).
    pub async fn event(&self) -> Result<EventProxy> {
        Ok(EventProxy::new(self.create(NewObject::Event, None).await?))
    }

    /// A barrier for `parties` callers in the manager (`manager.Barrier(n)`).
    pub async fn barrier(&self, parties: u32) -> Result<BarrierProxy> {
        Ok(BarrierProxy::new(self.create(NewObject::Barrier { parties: u64::from(parties) }, None).await?))
    }

    /// A queue in the manager (`manager.Queue(maxsize)`; 0 is unbounded).
    pub async fn queue<T: Serialize + DeserializeOwned>(&self, maxsize: usize) -> Result<QueueProxy<T>> {
        Ok(QueueProxy::new(self.create(NewObject::Queue { maxsize: maxsize as u64 }, None).await?))
    }

    /// The queue called `name`, created by the first caller with `maxsize`.
    pub async fn queue_named<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
        maxsize: usize,
    ) -> Result<QueueProxy<T>> {
        Ok(QueueProxy::new(self.create(NewObject::Queue { maxsize: maxsize as u64 }, Some(name)).await?))
    }

    /// A value in the manager (`manager.Value(typecode, value)`).
    pub async fn value<T: Serialize + DeserializeOwned>(&self, value: T) -> Result<ValueProxy<T>> {
        Ok(ValueProxy::new(self.create(NewObject::Value(encode(&value)?), None).await?))
    }

    /// An array in the manager (`manager.Array(typecode, sequence)`).
    pub async fn array<T: Serialize + DeserializeOwned>(
        &self,
        items: impl IntoIterator<Item = T>,
    ) -> Result<ArrayProxy<T>> {
        let items = items.into_iter().map(|v| encode(&v)).collect::<Result<Vec<_>>>()?;
        Ok(ArrayProxy::new(self.create(NewObject::Array(items), None).await?))
    }

    /// An object of your own type `T`, hosted by the manager from `init`
    /// (`BaseManager.register('T', T)` then `manager.T(...)`); `T`'s `impl`
    /// carries `#[multiproc::hosted]`.
    pub async fn hosted<T: Hosted>(&self, init: T) -> Result<T::Proxy> {
        let new = NewObject::User { type_name: T::NAME.to_owned(), init: encode(&init)? };
        Ok(HostedProxy::new(self.create(new, None).await?).into())
    }

    /// The object of type `T` called `name`, created from `init` by the
    /// first caller.
    pub async fn hosted_named<T: Hosted>(&self, name: &str, init: T) -> Result<T::Proxy> {
        let new = NewObject::User { type_name: T::NAME.to_owned(), init: encode(&init)? };
        Ok(HostedProxy::new(self.create(new, Some(name)).await?).into())
    }

    /// How many objects the manager hosts now (objects are freed when their
    /// last proxy anywhere is dropped, unless created by name).
    pub async fn object_count(&self) -> Result<usize> {
        proxy::len(self.server.request(&ManagerRequest::Count).await?)
    }

    /// Stops the manager (and waits for its process when this handle started
    /// it); proxies fail with `Eof` afterwards.
    pub async fn shutdown(self) -> Result<()> {
        match self.server.request(&ManagerRequest::Shutdown).await {
            Ok(_) | Err(Error::Eof) => {}
            Err(e) => return Err(e),
        }
        if let Some(p) = &self.process {
            p.join().await?;
        }
        Ok(())
    }
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<ByteBuf> {
    wire::encode("a value for the manager", value).map(ByteBuf::from)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    wire::decode("a value from the manager", bytes)
}

/// Raw access for the attack and fuzz tests: a connection to `manager`
/// that has said nothing yet (local) or has passed the challenge with
/// `authkey` (TCP, `Some`), and valid encoded request frames to mutate.
#[doc(hidden)]
pub mod testing {
    use std::os::fd::OwnedFd;

    use serde_bytes::ByteBuf;

    use super::Manager;
    use super::client::Route;
    use crate::error::Result;
    use crate::wire::{self, BlockingChannel, ManagerRequest, NewObject, ObjectOp};

    /// A raw connection; over TCP (`authkey` given) it has passed the
    /// challenge. No hello was sent.
    pub fn raw_connection(manager: &Manager, authkey: Option<&[u8]>) -> Result<OwnedFd> {
        match (authkey, manager.address) {
            (Some(key), Some(address)) => {
                let stream = std::net::TcpStream::connect(address)?;
                let fd = OwnedFd::from(stream);
                let mut ch = BlockingChannel::new(fd.try_clone()?, super::auth::UNAUTHENTICATED_MAX_FRAME);
                let (answer, theirs, ours) = super::auth::answer(ch.recv()?, key)?;
                ch.send(&answer)?;
                super::auth::check_welcome(ch.recv()?, key, &theirs, &ours)?;
                Ok(fd)
            }
            _ => match &manager.server.address().route {
                Route::Rendezvous(r) => super::client::Server::rendezvous_raw(r),
                Route::Tcp { .. } => Err(crate::Error::InvalidArgument("a TCP manager needs its authkey".into())),
            },
        }
    }

    /// One frame (header and payload).
    fn frame(req: &ManagerRequest) -> Vec<u8> {
        let payload = wire::encode("a request", req).expect("requests encode");
        let mut out = wire::header(payload.len(), 0, usize::MAX).expect("a small frame").to_vec();
        out.extend(payload);
        out
    }

    /// The frame of a hello for a new session.
    pub fn hello_frame(session: u64) -> Vec<u8> {
        frame(&ManagerRequest::Hello { session, pid: std::process::id() })
    }

    /// The frame of `Call { id, Items }` (a copy of the whole object).
    pub fn items_frame(id: u64) -> Vec<u8> {
        frame(&ManagerRequest::Call { id, op: ObjectOp::Items })
    }

    /// Valid request frames of every shape, for a fuzzer to mutate.
    pub fn sample_frames() -> Vec<Vec<u8>> {
        let b = |s: &[u8]| ByteBuf::from(s.to_vec());
        let call = |op| ManagerRequest::Call { id: 1, op };
        let mut reqs = vec![
            ManagerRequest::Create { new: NewObject::Dict(vec![(b(b"k"), b(b"v"))]), name: None },
            ManagerRequest::Create { new: NewObject::List(vec![b(b"x")]), name: Some("l".into()) },
            ManagerRequest::Create { new: NewObject::Queue { maxsize: 2 }, name: None },
            ManagerRequest::Create { new: NewObject::Barrier { parties: 2 }, name: None },
            ManagerRequest::Create { new: NewObject::User { type_name: "x".into(), init: b(b"") }, name: None },
            ManagerRequest::Transit { id: 1, token: 5 },
            ManagerRequest::Claim { id: 1, token: 6 },
            ManagerRequest::Release { id: 1 },
            ManagerRequest::Count,
        ];
        reqs.extend(
            [
                ObjectOp::Get(b(b"k")),
                ObjectOp::Set(b(b"k"), b(b"v")),
                ObjectOp::Items,
                ObjectOp::Insert(-5, b(b"v")),
                ObjectOp::Pop(Some(3)),
                ObjectOp::Acquire { owner: 1, timeout_ms: Some(5) },
                ObjectOp::Wait { owner: 1, timeout_ms: Some(5) },
                ObjectOp::Take { block: true, timeout_ms: Some(5) },
                ObjectOp::Put { item: b(b"i"), block: true, timeout_ms: Some(5) },
                ObjectOp::BarrierWait { timeout_ms: Some(5) },
                ObjectOp::Method { name: "m".into(), args: b(b"\x90") },
            ]
            .into_iter()
            .map(call),
        );
        reqs.iter().map(frame).collect()
    }
}
