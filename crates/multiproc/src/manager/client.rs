//! A process's way to one manager: its connections, and the references its
//! proxies hold there.
//!
//! A [`Server`] is one *session* at the manager. It makes connections on
//! first use: a control connection for one-way messages (hello, transit,
//! claim, release), and pools of request connections (async and blocking).
//! A call takes a connection out of the pool, sends, reads the reply and puts
//! it back; a call dropped half-way (a `timeout`) drops its connection with
//! it, so no reply can ever be read by the wrong call. Servers are interned
//! per manager, so the proxies a process receives share one session.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::auth;
use crate::error::{Error, Result};
use crate::wire::fds::PassFd;
use crate::wire::{BlockingChannel, Channel, DEFAULT_MAX_FRAME, ManagerFailure, ManagerReply, ManagerRequest};

/// How a process reaches a manager.
#[derive(Serialize, Deserialize)]
pub(crate) enum Route {
    /// Locally: the rendezvous end; a new connection is a socketpair end
    /// sent through it.
    Rendezvous(PassFd),
    /// Over TCP, proving knowledge of the authkey.
    Tcp { address: SocketAddr, authkey: ByteBuf },
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rendezvous(_) => f.write_str("local"),
            Self::Tcp { address, .. } => write!(f, "tcp {address}"),
        }
    }
}

/// A manager's identity and route, as proxies carry it to other processes.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Address {
    /// Random, chosen when the manager started (or connected): proxies of
    /// one manager share a session in each process.
    pub manager: u64,
    pub route: Route,
}

/// This process's session at one manager.
pub(crate) struct Server {
    address: Address,
    session: u64,
    control: Mutex<Option<BlockingChannel>>,
    idle: Mutex<Vec<Channel>>,
    idle_blocking: Mutex<Vec<BlockingChannel>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.address.route)
    }
}

fn interned() -> &'static Mutex<HashMap<u64, Weak<Server>>> {
    static SERVERS: OnceLock<Mutex<HashMap<u64, Weak<Server>>>> = OnceLock::new();
    SERVERS.get_or_init(Default::default)
}

/// Peer-closed errors read as `Eof`: the manager is gone.
fn closed_is_eof(e: Error) -> Error {
    match e {
        Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::NotConnected
            ) =>
        {
            Error::Eof
        }
        other => other,
    }
}

fn unreachable(address: SocketAddr, source: std::io::Error) -> Error {
    Error::ManagerUnreachable { address: Box::new(address), source }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these leaves plain data behind.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Collects a reply that may come in parts.
fn assemble(first: ManagerReply, mut next: impl FnMut() -> Result<ManagerReply>) -> Result<ManagerReply> {
    let ManagerReply::Part(mut items) = first else { return Ok(first) };
    loop {
        match next()? {
            ManagerReply::Part(more) => items.extend(more),
            ManagerReply::Items(last) => {
                items.extend(last);
                return Ok(ManagerReply::Items(items));
            }
            other => return Err(Error::Malformed(format!("a streamed reply ended with {other:?}"))),
        }
    }
}

impl Server {
    /// The session for `address` in this process: the existing one, or a
    /// new one.
    pub fn intern(address: Address) -> Result<Arc<Self>> {
        let mut all = lock(interned());
        if let Some(s) = all.get(&address.manager).and_then(Weak::upgrade) {
            return Ok(s);
        }
        all.retain(|_, w| w.strong_count() > 0);
        let manager = address.manager;
        let server = Arc::new(Self {
            address,
            session: auth::random_u64()?,
            control: Mutex::new(None),
            idle: Mutex::new(Vec::new()),
            idle_blocking: Mutex::new(Vec::new()),
        });
        all.insert(manager, Arc::downgrade(&server));
        Ok(server)
    }

    pub fn address(&self) -> &Address {
        &self.address
    }

    pub fn is_local(&self) -> bool {
        matches!(self.address.route, Route::Rendezvous(_))
    }

    fn hello(&self) -> ManagerRequest {
        ManagerRequest::Hello { session: self.session, pid: std::process::id() }
    }

    /// A new private local connection.
    fn rendezvous(rendezvous: &PassFd) -> Result<OwnedFd> {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)?;
        multiproc_sys::fdpass::send(rendezvous.borrow(), &[std::io::IoSlice::new(&[1])], &[theirs.as_fd()])
            .map_err(|e| if e.raw_os_error() == Some(nix::libc::EPIPE) { Error::Eof } else { e.into() })?;
        Ok(ours)
    }

    /// A new local connection, for tests that speak the protocol by hand.
    pub fn rendezvous_raw(rendezvous: &PassFd) -> Result<OwnedFd> {
        Self::rendezvous(rendezvous)
    }

    async fn connect(&self) -> Result<Channel> {
        let mut ch = match &self.address.route {
            Route::Rendezvous(r) => Channel::new(Self::rendezvous(r)?, DEFAULT_MAX_FRAME)?,
            Route::Tcp { address, authkey } => {
                let stream =
                    tokio::net::TcpStream::connect(address).await.map_err(|e| unreachable(*address, e))?.into_std()?;
                stream.set_nodelay(true)?;
                let mut ch = Channel::new(OwnedFd::from(stream), auth::UNAUTHENTICATED_MAX_FRAME)?;
                let (answer, theirs, ours) = auth::answer(ch.recv().await?, authkey)?;
                ch.send(&answer).await?;
                auth::check_welcome(ch.recv().await?, authkey, &theirs, &ours)?;
                ch.set_max(DEFAULT_MAX_FRAME);
                ch
            }
        };
        ch.feed(&self.hello())?;
        Ok(ch)
    }

    fn blocking_connect(&self) -> Result<BlockingChannel> {
        let mut ch = match &self.address.route {
            Route::Rendezvous(r) => BlockingChannel::new(Self::rendezvous(r)?, DEFAULT_MAX_FRAME),
            Route::Tcp { address, authkey } => {
                let stream = std::net::TcpStream::connect(address).map_err(|e| unreachable(*address, e))?;
                stream.set_nodelay(true)?;
                let mut ch = BlockingChannel::new(OwnedFd::from(stream), auth::UNAUTHENTICATED_MAX_FRAME);
                let (answer, theirs, ours) = auth::answer(ch.recv()?, authkey)?;
                ch.send(&answer)?;
                auth::check_welcome(ch.recv()?, authkey, &theirs, &ours)?;
                ch.set_max(DEFAULT_MAX_FRAME);
                ch
            }
        };
        ch.feed(&self.hello())?;
        Ok(ch)
    }

    /// The control connection, its hello sent at once: it keeps the
    /// session (and so its references) alive while request connections come
    /// and go.
    fn control_connect(&self) -> Result<BlockingChannel> {
        let mut ch = self.blocking_connect()?;
        ch.flush().map_err(closed_is_eof)?;
        Ok(ch)
    }

    /// Sends a one-way message on the control connection, connecting it
    /// first if needed (a blocking connect: local ones never wait for the
    /// manager; TCP ones do a handshake).
    pub fn one_way(&self, msg: &ManagerRequest) -> Result<()> {
        let mut control = lock(&self.control);
        if control.is_none() {
            *control = Some(self.control_connect()?);
        }
        let ch = control.as_mut().expect("connected above");
        let sent = ch.send(msg).map_err(closed_is_eof);
        if sent.is_err() {
            *control = None;
        }
        sent
    }

    /// Sends a one-way message only if the control connection exists.
    pub fn one_way_if_connected(&self, msg: &ManagerRequest) {
        let mut control = lock(&self.control);
        if let Some(ch) = control.as_mut()
            && ch.send(msg).is_err()
        {
            *control = None;
        }
    }

    /// Makes the control connection from async code, so that proxies can
    /// release their references when dropped.
    pub async fn ensure_control(&self) -> Result<()> {
        if lock(&self.control).is_some() {
            return Ok(());
        }
        let ch = match &self.address.route {
            Route::Rendezvous(_) => self.control_connect()?,
            Route::Tcp { .. } => match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
                Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                    tokio::task::block_in_place(|| self.control_connect())?
                }
                _ => self.control_connect()?,
            },
        };
        let mut control = lock(&self.control);
        if control.is_none() {
            *control = Some(ch);
        }
        Ok(())
    }

    /// Checks the manager can be reached (and, over TCP, that both sides
    /// know the authkey).
    pub async fn ensure_connected(&self) -> Result<()> {
        self.ensure_control().await?;
        let ch = self.connect().await?;
        lock(&self.idle).push(ch);
        Ok(())
    }

    /// One request and its reply. Cancel-safe: dropped half-way, the
    /// connection goes with it.
    pub async fn request(&self, req: &ManagerRequest) -> Result<ManagerReply> {
        let pooled = lock(&self.idle).pop();
        let mut ch = match pooled {
            Some(ch) => ch,
            None => {
                self.ensure_control().await?;
                self.connect().await?
            }
        };
        ch.send(req).await.map_err(closed_is_eof)?;
        let first = ch.recv_spinning().await.map_err(closed_is_eof)?;
        let reply = match first {
            ManagerReply::Part(items) => {
                let mut items = items;
                loop {
                    match ch.recv().await.map_err(closed_is_eof)? {
                        ManagerReply::Part(more) => items.extend(more),
                        ManagerReply::Items(last) => {
                            items.extend(last);
                            break ManagerReply::Items(items);
                        }
                        other => return Err(Error::Malformed(format!("a streamed reply ended with {other:?}"))),
                    }
                }
            }
            other => other,
        };
        lock(&self.idle).push(ch);
        Ok(reply)
    }

    /// [`request`](Self::request) from sync code.
    pub fn blocking_request(&self, req: &ManagerRequest) -> Result<ManagerReply> {
        let pooled = lock(&self.idle_blocking).pop();
        let mut ch = match pooled {
            Some(ch) => ch,
            None => {
                if lock(&self.control).is_none() {
                    let c = self.control_connect()?;
                    lock(&self.control).get_or_insert(c);
                }
                self.blocking_connect()?
            }
        };
        ch.send(req).map_err(closed_is_eof)?;
        let first = ch.recv().map_err(closed_is_eof)?;
        let reply = assemble(first, || ch.recv().map_err(closed_is_eof))?;
        lock(&self.idle_blocking).push(ch);
        Ok(reply)
    }
}

/// Turns a failure the manager reported into the matching error.
pub(crate) fn failure(f: ManagerFailure) -> Error {
    match f {
        ManagerFailure::Remote(m) => Error::Remote(m),
        ManagerFailure::WrongKind { name, found, wanted } => {
            Error::WrongKind(Box::new(crate::WrongKind { name, found, wanted }))
        }
        ManagerFailure::NoObject(id) => Error::Remote(format!("the manager has no object {id} (freed or never made)")),
        ManagerFailure::Timeout => Error::Timeout,
        ManagerFailure::Empty => Error::Empty,
        ManagerFailure::Full => Error::Full,
        ManagerFailure::NotOwner => Error::NotOwner,
        ManagerFailure::TooManyReleases => Error::TooManyReleases,
        ManagerFailure::BrokenBarrier => Error::BrokenBarrier,
        ManagerFailure::OwnerDied { pid } => Error::OwnerDied { pid },
    }
}

/// Any reply other than the expected one.
pub(crate) fn unexpected(reply: ManagerReply) -> Error {
    match reply {
        ManagerReply::Failed(f) => failure(f),
        other => Error::Malformed(format!("unexpected manager reply {other:?}")),
    }
}
