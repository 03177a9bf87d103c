//! The authkey challenge of a manager's TCP connections. The server sends a
//! random nonce; the client answers with its own nonce and the HMAC-SHA256 of
//! a transcript naming its role and both nonces; the server checks it and
//! proves itself with the HMAC of the server's transcript. Role labels keep
//! one side's proof from being reflected back as the other's; fresh nonces on
//! both sides keep an old exchange from being replayed. Nothing else is read
//! from a peer until it has passed.

use hmac::{Hmac, Mac};
use serde_bytes::ByteBuf;
use sha2::Sha256;

use crate::error::{Error, Result};
use crate::wire::{AuthMessage, MANAGER_PROTOCOL};

/// Largest frame accepted from a peer that has not authenticated yet.
pub(crate) const UNAUTHENTICATED_MAX_FRAME: usize = 1024;

const NONCE_LEN: usize = 32;
const CLIENT_ROLE: &[u8] = b"multiproc manager client proof v1";
const SERVER_ROLE: &[u8] = b"multiproc manager server proof v1";

/// A fresh random nonce from `getrandom(2)`: no fd to run out of.
pub(crate) fn nonce() -> Result<[u8; NONCE_LEN]> {
    let mut n = [0; NONCE_LEN];
    getrandom::fill(&mut n).map_err(random_failed)?;
    Ok(n)
}

/// `getrandom`'s failure as the OS error it is (its text when it has none).
fn random_failed(e: getrandom::Error) -> Error {
    Error::Io(e.raw_os_error().map_or_else(|| std::io::Error::other(e.to_string()), std::io::Error::from_raw_os_error))
}

/// A random `u64` (session ids, transit tokens).
pub(crate) fn random_u64() -> Result<u64> {
    let mut n = [0; 8];
    getrandom::fill(&mut n).map_err(random_failed)?;
    Ok(u64::from_ne_bytes(n))
}

fn transcript(key: &[u8], role: &[u8], server_nonce: &[u8], client_nonce: &[u8]) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(role);
    m.update(server_nonce);
    m.update(client_nonce);
    m
}

fn proof(key: &[u8], role: &[u8], server_nonce: &[u8], client_nonce: &[u8]) -> ByteBuf {
    ByteBuf::from(transcript(key, role, server_nonce, client_nonce).finalize().into_bytes().to_vec())
}

/// Constant-time check of a proof.
fn verify(key: &[u8], role: &[u8], server_nonce: &[u8], client_nonce: &[u8], digest: &[u8]) -> bool {
    transcript(key, role, server_nonce, client_nonce).verify_slice(digest).is_ok()
}

/// The server's opening message and the nonce it must remember.
pub(crate) fn challenge() -> Result<(AuthMessage, [u8; NONCE_LEN])> {
    let ours = nonce()?;
    Ok((AuthMessage::Challenge { protocol: MANAGER_PROTOCOL, nonce: ByteBuf::from(ours.to_vec()) }, ours))
}

/// The client's answer to the server's challenge: its proof and its nonce,
/// and the transcript the server's welcome must prove.
pub(crate) fn answer(challenge: AuthMessage, key: &[u8]) -> Result<(AuthMessage, Vec<u8>, [u8; NONCE_LEN])> {
    match challenge {
        AuthMessage::Challenge { protocol, nonce: theirs } if protocol == MANAGER_PROTOCOL => {
            if theirs.len() != NONCE_LEN {
                return Err(Error::Authentication(format!("the manager sent a {}-byte nonce", theirs.len())));
            }
            let ours = nonce()?;
            let digest = proof(key, CLIENT_ROLE, &theirs, &ours);
            Ok((AuthMessage::Answer { digest, nonce: ByteBuf::from(ours.to_vec()) }, theirs.into_vec(), ours))
        }
        AuthMessage::Challenge { protocol, .. } => Err(Error::Handshake(format!(
            "the manager speaks manager protocol {protocol}, this build speaks {MANAGER_PROTOCOL}"
        ))),
        other => Err(Error::Authentication(format!("expected a challenge, got {other:?}"))),
    }
}

/// Checks the server's proof that it knows the key too.
pub(crate) fn check_welcome(welcome: AuthMessage, key: &[u8], server_nonce: &[u8], ours: &[u8]) -> Result<()> {
    match welcome {
        AuthMessage::Welcome { digest } if verify(key, SERVER_ROLE, server_nonce, ours, &digest) => Ok(()),
        AuthMessage::Welcome { .. } => Err(Error::Authentication("the manager does not know the authkey".into())),
        AuthMessage::Refused => Err(Error::Authentication("the manager refused our authkey".into())),
        other => Err(Error::Authentication(format!("expected a welcome, got {other:?}"))),
    }
}

/// The server's side, once it has the client's answer to `challenge`.
pub(crate) fn welcome(answer: AuthMessage, key: &[u8], challenge: &[u8; NONCE_LEN]) -> AuthMessage {
    match answer {
        AuthMessage::Answer { digest, nonce }
            if nonce.len() == NONCE_LEN
                && nonce.as_slice() != challenge.as_slice()
                && verify(key, CLIENT_ROLE, challenge, &nonce, &digest) =>
        {
            AuthMessage::Welcome { digest: proof(key, SERVER_ROLE, challenge, &nonce) }
        }
        _ => AuthMessage::Refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_prove_the_key_and_a_reflected_proof_fails() {
        let key = b"k";
        let (hello, server_nonce) = challenge().expect("challenge");
        let (answer_msg, theirs, client_nonce) = answer(hello, key).expect("answer");
        assert_eq!(theirs, server_nonce);
        let AuthMessage::Answer { digest, .. } = &answer_msg else { panic!("an answer") };
        let client_digest = digest.clone();
        let w = welcome(answer_msg, key, &server_nonce);
        check_welcome(w, key, &server_nonce, &client_nonce).expect("the server knows the key");
        // The client's own proof sent back as the server's must not pass.
        let reflected = AuthMessage::Welcome { digest: client_digest };
        assert!(check_welcome(reflected, key, &server_nonce, &client_nonce).is_err());
        // A wrong key is refused.
        let (hello, server_nonce) = challenge().expect("challenge");
        let (a, _, _) = answer(hello, b"wrong").expect("answer");
        assert!(matches!(welcome(a, key, &server_nonce), AuthMessage::Refused));
    }
}
