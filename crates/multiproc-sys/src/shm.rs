//! Shared mappings: anonymous ones backed by a memfd (passed to other
//! processes as an fd, nothing to unlink) and named POSIX ones (`shm_open`).

use std::ffi::CStr;
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering};

use nix::fcntl::OFlag;
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap, shm_open, shm_unlink};
use nix::sys::stat::Mode;

/// A `MAP_SHARED` read-write mapping of a whole shared-memory object.
///
/// Bytes in it may be written by other processes at any time, so it hands out
/// raw pointers and atomics only; higher layers add the locking that makes a
/// plain copy sound.
#[derive(Debug)]
pub struct SharedRegion {
    ptr: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: the mapping is plain memory shared by design; all access goes through
// atomics or raw pointers whose users synchronise.
unsafe impl Send for SharedRegion {}
// SAFETY: as above.
unsafe impl Sync for SharedRegion {}

impl SharedRegion {
    /// A new zero-filled anonymous region of `len` bytes (memfd, no name to leak).
    pub fn anonymous(name: &CStr, len: usize) -> io::Result<Self> {
        use nix::fcntl::{FcntlArg, SealFlag, fcntl};
        use nix::sys::memfd::{MFdFlags, memfd_create};
        let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)?;
        nix::unistd::ftruncate(&fd, off(len)?)?;
        // Fixed size from now on: a process holding the fd cannot shrink it
        // under the others' mappings (which would make their accesses SIGBUS).
        fcntl(&fd, FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL))?;
        Self::map(fd, len)
    }

    /// Creates a named POSIX shared-memory object (`/dev/shm/<name>`) of `len`
    /// bytes; fails with `AlreadyExists` if the name is taken.
    pub fn create_named(name: &CStr, len: usize) -> io::Result<Self> {
        let fd = shm_open(
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )?;
        if let Err(e) = nix::unistd::ftruncate(&fd, off(len)?) {
            let _ = shm_unlink(name);
            return Err(e.into());
        }
        Self::map(fd, len).inspect_err(|_| {
            let _ = shm_unlink(name);
        })
    }

    /// Opens an existing named object and maps all of it.
    pub fn open_named(name: &CStr) -> io::Result<Self> {
        let fd = shm_open(name, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())?;
        let len =
            usize::try_from(nix::sys::stat::fstat(&fd)?.st_size).map_err(|_| io::Error::other("negative size"))?;
        Self::map(fd, len)
    }

    /// Removes a named object; mappings stay valid until dropped.
    pub fn unlink_named(name: &CStr) -> io::Result<()> {
        shm_unlink(name)?;
        Ok(())
    }

    /// Maps `len` bytes of a shared-memory fd received from another process.
    pub fn map(fd: OwnedFd, len: usize) -> io::Result<Self> {
        let size = NonZeroUsize::new(len).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "size 0"))?;
        let actual = nix::sys::stat::fstat(&fd)?.st_size;
        if usize::try_from(actual).map_or(true, |a| a < len) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "object smaller than mapping"));
        }
        // SAFETY: a fresh mapping chosen by the kernel (no address hint), so it
        // aliases no Rust object; the fd is a valid shared-memory object at
        // least `len` bytes long.
        let ptr =
            unsafe { mmap(None, size, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_SHARED, &fd, 0) }?;
        Ok(Self { ptr: ptr.cast(), len, fd })
    }

    /// The mapping's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The mapping is zero bytes long.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The start of the mapping. Reads and writes through it race with other
    /// processes unless the caller holds a lock that orders them.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The fd behind the mapping, to pass to another process.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// An atomic word at `offset`; `None` when out of bounds or misaligned.
    pub fn atomic_u32(&self, offset: usize) -> Option<&AtomicU32> {
        self.checked::<AtomicU32>(offset)
            // SAFETY: in bounds and aligned (checked), the mapping lives as
            // long as `self`, and AtomicU32 has no invalid bit patterns.
            .map(|p| unsafe { &*p })
    }

    /// An atomic byte at `offset`; `None` when out of bounds.
    pub fn atomic_u8(&self, offset: usize) -> Option<&AtomicU8> {
        self.checked::<AtomicU8>(offset)
            // SAFETY: as in `atomic_u32`.
            .map(|p| unsafe { &*p })
    }

    /// An atomic half word at `offset`; `None` when out of bounds or misaligned.
    pub fn atomic_u16(&self, offset: usize) -> Option<&AtomicU16> {
        self.checked::<AtomicU16>(offset)
            // SAFETY: as in `atomic_u32`.
            .map(|p| unsafe { &*p })
    }

    /// An atomic double word at `offset`; `None` when out of bounds or misaligned.
    pub fn atomic_u64(&self, offset: usize) -> Option<&AtomicU64> {
        self.checked::<AtomicU64>(offset)
            // SAFETY: as in `atomic_u32`.
            .map(|p| unsafe { &*p })
    }

    fn checked<T>(&self, offset: usize) -> Option<*const T> {
        let end = offset.checked_add(size_of::<T>())?;
        if end > self.len || !(self.ptr.as_ptr() as usize + offset).is_multiple_of(align_of::<T>()) {
            return None;
        }
        Some(self.ptr.as_ptr().wrapping_add(offset).cast::<T>())
    }

    /// Copies bytes out of the region at `offset` into `dst`. Other
    /// processes (and threads) may be writing at the same time: every byte
    /// is read with a relaxed atomic load (eight at a time where aligned),
    /// so a concurrent write is no data race under Rust's memory model; the
    /// copy may then be torn (a mix of old and new bytes). Callers that need
    /// a consistent view hold a lock.
    pub fn copy_out(&self, offset: usize, dst: &mut [u8]) -> io::Result<()> {
        self.check_range(offset, dst.len())?;
        let base = self.as_ptr().wrapping_add(offset);
        let mut i = 0;
        while i < dst.len() {
            let at = base.wrapping_add(i);
            if (at as usize).is_multiple_of(8) && dst.len() - i >= 8 {
                // SAFETY: in bounds (checked above) and 8-aligned; the
                // mapping lives as long as `self`; AtomicU64 accepts any bits.
                let word = unsafe { &*(at as *const AtomicU64) }.load(Ordering::Relaxed);
                dst[i..i + 8].copy_from_slice(&word.to_ne_bytes());
                i += 8;
            } else {
                // SAFETY: in bounds (checked above); AtomicU8 has no alignment
                // requirement and accepts any bits.
                dst[i] = unsafe { &*(at as *const AtomicU8) }.load(Ordering::Relaxed);
                i += 1;
            }
        }
        Ok(())
    }

    /// Copies `src` into the region at `offset` with relaxed atomic stores
    /// (see [`copy_out`](Self::copy_out) about concurrent access).
    pub fn copy_in(&self, offset: usize, src: &[u8]) -> io::Result<()> {
        self.check_range(offset, src.len())?;
        let base = self.as_ptr().wrapping_add(offset);
        let mut i = 0;
        while i < src.len() {
            let at = base.wrapping_add(i);
            if (at as usize).is_multiple_of(8) && src.len() - i >= 8 {
                let mut word = [0; 8];
                word.copy_from_slice(&src[i..i + 8]);
                // SAFETY: in bounds and 8-aligned (checked); the mapping is
                // writable and holds only plain bytes.
                unsafe { &*(at as *const AtomicU64) }.store(u64::from_ne_bytes(word), Ordering::Relaxed);
                i += 8;
            } else {
                // SAFETY: in bounds (checked above); the mapping is writable.
                unsafe { &*(at as *const AtomicU8) }.store(src[i], Ordering::Relaxed);
                i += 1;
            }
        }
        Ok(())
    }

    fn check_range(&self, offset: usize, len: usize) -> io::Result<()> {
        if offset.checked_add(len).is_some_and(|end| end <= self.len) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bytes {offset}..{offset}+{len} are outside a {}-byte region", self.len),
            ))
        }
    }

    /// Copies `dst.len()` bytes out of the region at `offset`.
    ///
    /// # Safety
    /// No other process or thread may write those bytes during the copy (the
    /// caller holds the lock that guards them).
    pub unsafe fn read_at(&self, offset: usize, dst: &mut [u8]) {
        assert!(offset.checked_add(dst.len()).is_some_and(|e| e <= self.len), "read out of bounds");
        // SAFETY: bounds checked above; exclusivity is the caller's promise.
        unsafe { std::ptr::copy_nonoverlapping(self.as_ptr().add(offset), dst.as_mut_ptr(), dst.len()) }
    }

    /// Copies `src` into the region at `offset`.
    ///
    /// # Safety
    /// No other process or thread may read or write those bytes during the copy.
    pub unsafe fn write_at(&self, offset: usize, src: &[u8]) {
        assert!(offset.checked_add(src.len()).is_some_and(|e| e <= self.len), "write out of bounds");
        // SAFETY: bounds checked above; exclusivity is the caller's promise.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.as_ptr().add(offset), src.len()) }
    }
}

impl Drop for SharedRegion {
    fn drop(&mut self) {
        // SAFETY: we mapped exactly this range and hand out no reference that
        // outlives `self`.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

fn off(len: usize) -> io::Result<i64> {
    i64::try_from(len).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "size too large"))
}
