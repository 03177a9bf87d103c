//! `SharedMemory`: a named POSIX shared memory segment
//! (`multiprocessing.shared_memory.SharedMemory`), registered with the
//! resource tracker so a crashed tree does not leak it.

use std::ffi::CString;
use std::io;
use std::sync::Arc;

use multiproc_sys::shm::SharedRegion;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::tree::tracker;
use crate::wire::fds::PassFd;
use crate::wire::{ShmHandle, TrackerMessage};

/// A block of shared memory other processes can open by name.
///
/// ```no_run
/// # fn demo() -> multiproc::Result<()> {
/// use multiproc::SharedMemory;
/// let shm = SharedMemory::create(1024)?;              // SharedMemory(create=True, size=1024)
/// shm.write(0, b"hello")?;                             // shm.buf[:5] = b'hello'
/// let other = SharedMemory::attach(shm.name())?;       // SharedMemory(name)
/// let mut buf = [0; 5];
/// other.read(0, &mut buf)?;
/// shm.unlink()?;                                       // shm.unlink()
/// # Ok(()) }
/// ```
///
/// Dropping it unmaps it (`close()`); `unlink` removes the name. A segment
/// this program created and nobody unlinked is unlinked by the resource
/// tracker once no process that used it is alive, with a warning.
///
/// Cloning gives another handle on the same mapping.
#[derive(Debug, Clone)]
pub struct SharedMemory {
    name: String,
    region: Arc<SharedRegion>,
}

fn c_name(name: &str) -> Result<CString> {
    if name.is_empty() || name.contains('/') || name.len() > 250 {
        return Err(Error::InvalidArgument(format!("{name:?} is not a valid shared memory name")));
    }
    CString::new(format!("/{name}")).map_err(|_| Error::InvalidArgument(format!("{name:?} contains a NUL byte")))
}

fn random_suffix() -> Result<u64> {
    use std::io::Read;
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

impl SharedMemory {
    /// A new segment of `size` bytes with a fresh name carrying this
    /// process's pid (`SharedMemory(create=True, size=size)`).
    pub fn create(size: usize) -> Result<Self> {
        loop {
            let name = tracker::new_segment_name(random_suffix()?);
            match Self::create_named(&name, size) {
                Err(Error::ShmExists { .. }) => continue,
                other => return other,
            }
        }
    }

    /// A new segment called `name`; [`Error::ShmExists`] if it exists.
    pub fn create_named(name: &str, size: usize) -> Result<Self> {
        if size == 0 {
            return Err(Error::InvalidArgument("a shared memory segment needs a size above 0".into()));
        }
        let c = c_name(name)?;
        let region = SharedRegion::create_named(&c, size).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => Error::ShmExists { name: name.to_owned() },
            _ => e.into(),
        })?;
        if let Err(e) = tracker::notify(TrackerMessage::Created { name: name.to_owned() }) {
            let _ = SharedRegion::unlink_named(&c);
            return Err(e);
        }
        Ok(Self { name: name.to_owned(), region: Arc::new(region) })
    }

    /// Opens the segment called `name` (`SharedMemory(name)`); the tracker
    /// counts this process as a holder.
    pub fn attach(name: &str) -> Result<Self> {
        let shm = Self::attach_untracked(name)?;
        tracker::notify(TrackerMessage::Attached { name: name.to_owned() })?;
        Ok(shm)
    }

    /// Opens the segment called `name` without telling the tracker (for a
    /// segment another program owns).
    pub fn attach_untracked(name: &str) -> Result<Self> {
        let region = SharedRegion::open_named(&c_name(name)?).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::ShmNotFound { name: name.to_owned() },
            _ => e.into(),
        })?;
        Ok(Self { name: name.to_owned(), region: Arc::new(region) })
    }

    /// The segment's name (`shm.name`), without the leading `/`; another
    /// process attaches with it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The size in bytes (at least what was asked for).
    pub fn size(&self) -> usize {
        self.region.len()
    }

    /// Copies bytes at `offset` into `buf`. Every byte is read atomically
    /// (relaxed), so concurrent writers in other threads or processes are
    /// no data race, but they may tear what is read (a mix of old and new
    /// bytes); guard with a `Lock` when that matters.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.region.copy_out(offset, buf).map_err(|e| Error::InvalidArgument(e.to_string()))
    }

    /// Copies `data` into the segment at `offset`.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.region.copy_in(offset, data).map_err(|e| Error::InvalidArgument(e.to_string()))
    }

    /// Removes the name (`shm.unlink()`); mappings stay valid until dropped.
    /// A second unlink is [`Error::ShmNotFound`].
    pub fn unlink(&self) -> Result<()> {
        SharedRegion::unlink_named(&c_name(&self.name)?).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::ShmNotFound { name: self.name.clone() },
            _ => e.into(),
        })?;
        tracker::notify(TrackerMessage::Unlinked { name: self.name.clone() })
    }
}

/// Travels by file descriptor, not by name (Python pickles the name): the
/// receiver maps the very object the sender had, even if the name was
/// unlinked, or its creator died and the tracker unlinked it, while the
/// message was in flight. The receiver then registers with the tracker as a
/// holder, as `attach` does.
impl Serialize for SharedMemory {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let fd = self.region.fd().try_clone_to_owned().map_err(serde::ser::Error::custom)?;
        ShmHandle { name: self.name.clone(), size: self.size() as u64, fd: PassFd(fd) }.serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedMemory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let h = ShmHandle::deserialize(d)?;
        let size = usize::try_from(h.size).map_err(D::Error::custom)?;
        let region = SharedRegion::map(h.fd.0, size).map_err(D::Error::custom)?;
        tracker::notify(TrackerMessage::Attached { name: h.name.clone() }).map_err(D::Error::custom)?;
        Ok(Self { name: h.name, region: Arc::new(region) })
    }
}
