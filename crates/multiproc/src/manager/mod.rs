//! `Manager`: a server process hosting shared dicts, lists and namespaces,
//! reached through typed proxies (`multiprocessing.Manager()`).
//!
//! The manager has no address: it holds one end of a `SOCK_SEQPACKET`
//! socketpair (the *rendezvous*). A proxy carries the other end (as a
//! [`PassFd`](crate::wire::fds::PassFd), so proxies are ordinary task
//! arguments); the first time a process uses a proxy it makes a socketpair
//! and sends one end to the manager through the rendezvous. A stranger
//! without that fd cannot connect. The manager exits when the rendezvous has
//! no holder left, or on `shutdown`.
//!
//! [`Manager::serve`] also listens on TCP for peers on other hosts, which
//! [`Manager::connect`] with the same authkey: each side proves it knows the
//! key (HMAC-SHA256 of the other's random nonce) before anything else is
//! read. Such peers find shared objects by name (`dict_named`, …).

mod auth;
mod proxy;
#[expect(unsafe_code, reason = "registering the server task declares a link-section static")]
mod server;

pub use proxy::{DictProxy, ListProxy, Namespace};

use std::net::SocketAddr;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_bytes::ByteBuf;

use crate::error::{Error, Result};
use crate::process::Process;
use crate::wire::fds::PassFd;
use crate::wire::{self, ManagerReply, ManagerRequest, ObjectKind};
use proxy::{Route, Server};

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
#[derive(Debug)]
pub struct Manager {
    server: Arc<Server>,
    /// The server process, when this handle started it.
    process: Option<Process>,
    address: Option<SocketAddr>,
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
    /// `Error::Authentication` when either side does not know the key.
    pub async fn connect(address: SocketAddr, authkey: &[u8]) -> Result<Self> {
        crate::runtime::require("a manager connection")?;
        let server = Arc::new(Server::new(Route::Tcp { address, authkey: ByteBuf::from(authkey.to_vec()) }));
        server.ensure_connected().await?;
        Ok(Self { server, process: None, address: Some(address) })
    }

    async fn launch(tcp: Option<(PassFd, ByteBuf)>) -> Result<Self> {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let (client, listen) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)?;
        let mut process = Process::new(server::serve_manager, (PassFd(listen), tcp)).name("SyncManager").daemon(true);
        process.start().await?;
        let server = Arc::new(Server::new(Route::Rendezvous(PassFd(client))));
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
        let id = self.create(ObjectKind::Dict, items, None).await?;
        Ok(DictProxy::new(Arc::clone(&self.server), id))
    }

    /// A shared list filled from `items` (`manager.list([...])`).
    pub async fn list<T>(&self, items: impl IntoIterator<Item = T>) -> Result<ListProxy<T>>
    where
        T: Serialize + DeserializeOwned,
    {
        let items = items.into_iter().map(|v| Ok((ByteBuf::new(), encode(&v)?))).collect::<Result<Vec<_>>>()?;
        let id = self.create(ObjectKind::List, items, None).await?;
        Ok(ListProxy::new(Arc::clone(&self.server), id))
    }

    /// A shared namespace of named attributes (`manager.Namespace()`).
    pub async fn namespace(&self) -> Result<Namespace> {
        let id = self.create(ObjectKind::Namespace, Vec::new(), None).await?;
        Ok(Namespace::new(Arc::clone(&self.server), id))
    }

    /// The dict called `name`, created empty by the first caller: how
    /// programs sharing a manager find the same object.
    pub async fn dict_named<K, V>(&self, name: &str) -> Result<DictProxy<K, V>>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        let id = self.create(ObjectKind::Dict, Vec::new(), Some(name)).await?;
        Ok(DictProxy::new(Arc::clone(&self.server), id))
    }

    /// The list called `name`, created empty by the first caller.
    pub async fn list_named<T: Serialize + DeserializeOwned>(&self, name: &str) -> Result<ListProxy<T>> {
        let id = self.create(ObjectKind::List, Vec::new(), Some(name)).await?;
        Ok(ListProxy::new(Arc::clone(&self.server), id))
    }

    /// The namespace called `name`, created empty by the first caller.
    pub async fn namespace_named(&self, name: &str) -> Result<Namespace> {
        let id = self.create(ObjectKind::Namespace, Vec::new(), Some(name)).await?;
        Ok(Namespace::new(Arc::clone(&self.server), id))
    }

    async fn create(&self, kind: ObjectKind, items: Vec<(ByteBuf, ByteBuf)>, name: Option<&str>) -> Result<u64> {
        let name = name.map(str::to_owned);
        match self.server.request(&ManagerRequest::Create { kind, items, name }).await? {
            ManagerReply::Created(id) => Ok(id),
            other => Err(unexpected(other)),
        }
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

fn unexpected(reply: ManagerReply) -> Error {
    match reply {
        ManagerReply::Error(message) => Error::Remote(message),
        other => Error::Malformed(format!("unexpected manager reply {other:?}")),
    }
}
