//! The authkey challenge of a manager's TCP connections: each side proves it
//! knows the key by returning the HMAC-SHA256 of the other side's random
//! nonce. Nothing else is read from a peer until it has passed.

use hmac::{Hmac, Mac};
use serde_bytes::ByteBuf;
use sha2::Sha256;

use crate::error::{Error, Result};
use crate::wire::{AuthMessage, PROTOCOL_VERSION};

/// Largest frame accepted from a peer that has not authenticated yet.
pub(crate) const UNAUTHENTICATED_MAX_FRAME: usize = 1024;

pub(crate) fn nonce() -> Result<[u8; 32]> {
    use std::io::Read;
    let mut n = [0; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut n)?;
    Ok(n)
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length")
}

pub(crate) fn digest(key: &[u8], nonce: &[u8]) -> ByteBuf {
    let mut m = mac(key);
    m.update(nonce);
    ByteBuf::from(m.finalize().into_bytes().to_vec())
}

pub(crate) fn verify(key: &[u8], nonce: &[u8], digest: &[u8]) -> bool {
    let mut m = mac(key);
    m.update(nonce);
    m.verify_slice(digest).is_ok()
}

/// The client's answer to the server's challenge, and the nonce the server
/// must answer in turn.
pub(crate) fn answer(challenge: AuthMessage, key: &[u8]) -> Result<(AuthMessage, [u8; 32])> {
    match challenge {
        AuthMessage::Challenge { protocol, nonce: theirs } if protocol == PROTOCOL_VERSION => {
            let ours = nonce()?;
            Ok((AuthMessage::Answer { digest: digest(key, &theirs), nonce: ByteBuf::from(ours.to_vec()) }, ours))
        }
        AuthMessage::Challenge { protocol, .. } => Err(Error::Handshake(format!(
            "the manager speaks protocol {protocol}, this build speaks {PROTOCOL_VERSION}"
        ))),
        other => Err(Error::Authentication(format!("expected a challenge, got {other:?}"))),
    }
}

/// Checks the server's proof that it knows the key too.
pub(crate) fn check_welcome(welcome: AuthMessage, key: &[u8], ours: &[u8; 32]) -> Result<()> {
    match welcome {
        AuthMessage::Welcome { digest } if verify(key, ours, &digest) => Ok(()),
        AuthMessage::Welcome { .. } => Err(Error::Authentication("the manager does not know the authkey".into())),
        AuthMessage::Refused => Err(Error::Authentication("the manager refused our authkey".into())),
        other => Err(Error::Authentication(format!("expected a welcome, got {other:?}"))),
    }
}

/// The server's side, once it has the client's answer to `challenge`.
pub(crate) fn welcome(answer: AuthMessage, key: &[u8], challenge: &[u8; 32]) -> AuthMessage {
    match answer {
        AuthMessage::Answer { digest: proof, nonce } if verify(key, challenge, &proof) => {
            AuthMessage::Welcome { digest: digest(key, &nonce) }
        }
        _ => AuthMessage::Refused,
    }
}
