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

mod proxy;
#[expect(unsafe_code, reason = "registering the server task declares a link-section static")]
mod server;

pub use proxy::{DictProxy, ListProxy, Namespace};

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_bytes::ByteBuf;

use crate::error::{Error, Result};
use crate::process::Process;
use crate::wire::{self, ManagerReply, ManagerRequest, ObjectKind};
use proxy::Server;

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
    process: Process,
}

impl Manager {
    /// Starts the manager's server process.
    pub async fn start() -> Result<Self> {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let (client, listen) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)?;
        let mut process =
            Process::new(server::serve_manager, (wire::fds::PassFd(listen),)).name("SyncManager").daemon(true);
        process.start().await?;
        Ok(Self { server: Arc::new(Server::new(client)), process })
    }

    /// The manager process's pid.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
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
        let id = self.create(ObjectKind::Dict, items).await?;
        Ok(DictProxy::new(Arc::clone(&self.server), id))
    }

    /// A shared list filled from `items` (`manager.list([...])`).
    pub async fn list<T>(&self, items: impl IntoIterator<Item = T>) -> Result<ListProxy<T>>
    where
        T: Serialize + DeserializeOwned,
    {
        let items = items.into_iter().map(|v| Ok((ByteBuf::new(), encode(&v)?))).collect::<Result<Vec<_>>>()?;
        let id = self.create(ObjectKind::List, items).await?;
        Ok(ListProxy::new(Arc::clone(&self.server), id))
    }

    /// A shared namespace of named attributes (`manager.Namespace()`).
    pub async fn namespace(&self) -> Result<Namespace> {
        let id = self.create(ObjectKind::Namespace, Vec::new()).await?;
        Ok(Namespace::new(Arc::clone(&self.server), id))
    }

    async fn create(&self, kind: ObjectKind, items: Vec<(ByteBuf, ByteBuf)>) -> Result<u64> {
        match self.server.request(&ManagerRequest::Create { kind, items }).await? {
            ManagerReply::Created(id) => Ok(id),
            other => Err(unexpected(other)),
        }
    }

    /// Stops the manager and waits for it; proxies fail with `Eof` afterwards.
    pub async fn shutdown(self) -> Result<()> {
        match self.server.request(&ManagerRequest::Shutdown).await {
            Ok(_) | Err(Error::Eof) => {}
            Err(e) => return Err(e),
        }
        self.process.join().await?;
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
