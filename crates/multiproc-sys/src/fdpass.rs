//! `sendmsg`/`recvmsg` on Unix sockets with file descriptors attached
//! (`SCM_RIGHTS`), owning every received fd from the moment it arrives.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

/// Most fds one `sendmsg` may carry (the kernel's `SCM_MAX_FD`).
pub const MAX_FDS_PER_MESSAGE: usize = 253;

/// A reusable buffer for the ancillary data of [`recv`].
#[derive(Debug)]
pub struct CmsgBuffer(Vec<u8>);

impl Default for CmsgBuffer {
    fn default() -> Self {
        Self(nix::cmsg_space!([RawFd; MAX_FDS_PER_MESSAGE]))
    }
}

/// Sends `bufs` with `fds` attached; returns the bytes written (maybe fewer
/// than offered). Never raises `SIGPIPE`.
pub fn send(sock: BorrowedFd<'_>, bufs: &[IoSlice<'_>], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &rights };
    Ok(sendmsg::<()>(sock.as_raw_fd(), bufs, cmsgs, MsgFlags::MSG_NOSIGNAL, None)?)
}

/// Receives into `buf`, appending any fds that arrived to `fds`. Returns the
/// bytes read; 0 means end of stream.
pub fn recv(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    cmsg: &mut CmsgBuffer,
    fds: &mut impl Extend<OwnedFd>,
) -> io::Result<usize> {
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg.0), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: the kernel installed these fds in our table for this
            // message; nothing else knows their numbers, so we own them.
            fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
        } else {
            truncated = true;
        }
    }
    if truncated {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "unexpected or truncated ancillary data"));
    }
    Ok(msg.bytes)
}

/// Accepts one connection on a listening socket, close-on-exec and
/// non-blocking; `WouldBlock` when none is waiting (on a non-blocking
/// listener).
pub fn accept(listen: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    use nix::sys::socket::{SockFlag, accept4};
    let raw = accept4(listen.as_raw_fd(), SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK)?;
    // SAFETY: accept4 just returned this new fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}
