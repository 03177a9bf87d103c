//! The wire: frames, the fd side table, channels and every message type that
//! crosses a process boundary.
//!
//! Architecture invariant: if a type derives `Serialize` for the wire, it lives
//! in this module (user payloads travel as opaque msgpack bytes).

mod channel;
pub mod fds;
mod frame;
mod manager;
mod messages;

pub(crate) use channel::{BlockingChannel, Channel};
pub(crate) use frame::{DEFAULT_MAX_FRAME, FrameReader, FrameWriter, HEADER_LEN, header};
pub(crate) use manager::*;
pub use messages::Failure;
pub(crate) use messages::*;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Bumped whenever a message changes shape.
pub const PROTOCOL_VERSION: u32 = 4;

/// Identifies this build of the program: processes only talk to processes
/// running the same binary file.
pub fn build_id() -> u64 {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::MetadataExt;
    static ID: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *ID.get_or_init(|| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        env!("CARGO_PKG_VERSION").hash(&mut h);
        if let Ok(m) = std::fs::metadata("/proc/self/exe") {
            (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()).hash(&mut h);
        }
        h.finish()
    })
}

/// Encodes a value as msgpack (compact: both ends run the same build).
pub fn encode<T: Serialize + ?Sized>(what: &'static str, value: &T) -> Result<Vec<u8>> {
    rmp_serde::to_vec(value).map_err(|e| Error::encode(what, e))
}

/// Decodes msgpack bytes.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    rmp_serde::from_slice(bytes).map_err(|e| Error::decode(what, e))
}
