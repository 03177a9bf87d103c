//! `Block`: a small anonymous shared mapping (memfd) holding a primitive's
//! words. It has no name, so nothing can leak; it travels to other processes
//! as an fd and is mapped again there.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use multiproc_sys::shm::SharedRegion;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Result;
use crate::wire::fds::PassFd;

/// A shared block of `len` bytes, zeroed at creation. Clones share it.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    region: Arc<SharedRegion>,
}

impl Block {
    pub fn new(name: &std::ffi::CStr, len: usize) -> Result<Self> {
        Ok(Self { region: Arc::new(SharedRegion::anonymous(name, len)?) })
    }

    /// The `i`th 32-bit word. Layouts are fixed by each primitive, so an
    /// index out of the block is a bug, not an input error.
    pub fn word(&self, i: usize) -> &AtomicU32 {
        self.region.atomic_u32(i * 4).expect("word index inside the primitive's block")
    }

    pub fn region(&self) -> &SharedRegion {
        &self.region
    }
}

impl Serialize for Block {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let fd = self.region.fd().as_fd().try_clone_to_owned().map_err(serde::ser::Error::custom)?;
        (PassFd(fd), self.region.len() as u64).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Block {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (fd, len) = <(PassFd, u64)>::deserialize(d)?;
        let len = usize::try_from(len).map_err(serde::de::Error::custom)?;
        let region = SharedRegion::map(fd.0, len).map_err(serde::de::Error::custom)?;
        Ok(Self { region: Arc::new(region) })
    }
}
