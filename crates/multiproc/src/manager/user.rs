//! Your own types in a manager (`BaseManager.register`): a type whose
//! `impl` block carries `#[multiproc::hosted]` is registered once (by name,
//! in a link-time table like tasks), hosted by the manager process, and
//! called through a generated typed proxy.
//!
//! ```no_run
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Counter { n: i64 }
//!
//! #[multiproc::hosted]
//! impl Counter {
//!     fn add(&mut self, by: i64) -> i64 { self.n += by; self.n }
//!     fn get(&self) -> i64 { self.n }
//! }
//!
//! # async fn demo() -> multiproc::Result<()> {
//! let manager = multiproc::Manager::start().await?;
//! let c = manager.hosted(Counter { n: 0 }).await?;   // a CounterProxy
//! assert_eq!(c.add(2).await?, 2);
//! assert_eq!(c.blocking_get()?, 2);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::proxy::{Handle, optional};
use super::{decode, encode};
use crate::error::{Error, Result};
use crate::wire::ObjectOp;

/// A hosted value the manager calls methods on by name; implemented by
/// `#[multiproc::hosted]`.
pub trait HostedObject: 'static {
    /// Calls `method` with msgpack `args` (a tuple), returning its msgpack
    /// result, or why not (an unknown method, undecodable arguments).
    fn call(&mut self, method: &str, args: &[u8]) -> std::result::Result<Vec<u8>, String>;
}

/// A type the manager can host; implemented by `#[multiproc::hosted]`.
pub trait Hosted: Serialize + DeserializeOwned + HostedObject {
    /// The typed proxy generated for it.
    type Proxy: From<HostedProxy>;
    /// Its registered name (`module::Type`).
    const NAME: &'static str;
}

/// Builds a hosted object from its encoded initial state.
pub type CreateFn = fn(&[u8]) -> std::result::Result<Box<dyn HostedObject>, String>;

/// One registered type; built by the macro, never by hand.
#[derive(Debug)]
pub struct HostedEntry {
    /// The name the type is registered under (its module path and ident).
    pub name: &'static str,
    /// Decodes the initial state sent by `Manager::hosted`.
    pub create: CreateFn,
}

/// The manager's side: a new object of the type registered as `name`.
pub(crate) fn create(name: &str, init: &[u8]) -> std::result::Result<Box<dyn HostedObject>, String> {
    static INDEX: OnceLock<HashMap<&'static str, &'static HostedEntry>> = OnceLock::new();
    let index = INDEX.get_or_init(|| {
        multiproc_sys::link::HOSTED
            .iter()
            .filter_map(|r| r.entry.downcast_ref::<HostedEntry>())
            .map(|e| (e.name, e))
            .collect()
    });
    match index.get(name) {
        Some(entry) => (entry.create)(init),
        None => Err(format!("no type named `{name}` is registered with #[multiproc::hosted] in the manager's binary")),
    }
}

/// Decodes a method's arguments (for the macro).
pub fn decode_args<A: DeserializeOwned>(method: &str, args: &[u8]) -> std::result::Result<A, String> {
    rmp_serde::from_slice(args).map_err(|e| format!("decode the arguments of `{method}`: {e}"))
}

/// Encodes a method's result (for the macro).
pub fn encode_result<R: Serialize>(method: &str, result: &R) -> std::result::Result<Vec<u8>, String> {
    rmp_serde::to_vec(result).map_err(|e| format!("encode the result of `{method}`: {e}"))
}

/// Decodes a registered type's initial state (for the macro).
pub fn decode_init<T: HostedObject + DeserializeOwned>(
    init: &[u8],
) -> std::result::Result<Box<dyn HostedObject>, String> {
    let value: T = rmp_serde::from_slice(init).map_err(|e| format!("decode the initial state: {e}"))?;
    Ok(Box::new(value))
}

/// An untyped proxy to a hosted user object: what the generated typed proxy
/// wraps.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct HostedProxy {
    handle: Handle,
}

impl std::fmt::Debug for HostedProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.handle)
    }
}

fn method<A: Serialize>(name: &str, args: &A) -> Result<ObjectOp> {
    Ok(ObjectOp::Method { name: name.to_owned(), args: encode(args)? })
}

impl HostedProxy {
    pub(crate) fn new(handle: Handle) -> Self {
        Self { handle }
    }

    /// Calls `name` with `args` (a tuple) in the manager.
    pub async fn call<A: Serialize, R: DeserializeOwned>(&self, name: &str, args: &A) -> Result<R> {
        let reply = self.handle.call(method(name, args)?).await?;
        let bytes: Option<serde_bytes::ByteBuf> = optional_bytes(reply)?;
        decode(&bytes.ok_or_else(|| Error::Malformed("a method returned nothing".into()))?)
    }

    /// [`call`](Self::call) from sync code.
    pub fn blocking_call<A: Serialize, R: DeserializeOwned>(&self, name: &str, args: &A) -> Result<R> {
        let reply = self.handle.blocking_call(method(name, args)?)?;
        let bytes: Option<serde_bytes::ByteBuf> = optional_bytes(reply)?;
        decode(&bytes.ok_or_else(|| Error::Malformed("a method returned nothing".into()))?)
    }
}

fn optional_bytes(reply: crate::wire::ManagerReply) -> Result<Option<serde_bytes::ByteBuf>> {
    match reply {
        crate::wire::ManagerReply::Value(v) => Ok(v),
        other => optional::<()>(other).map(|_| None),
    }
}
