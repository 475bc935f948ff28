//! Client secrets, passwords and request fingerprints.
//!
//! - Server-generated client secrets carry 256 bits of entropy and are stored as a keyed
//!   HMAC-SHA256 digest: a slow hash adds nothing against such secrets and would cap the
//!   token endpoint.
//! - Passwords and imported secrets of unknown entropy are stored with PBKDF2-HMAC-SHA256 and a
//!   per-credential salt; checking them is slow on purpose and runs on a blocking pool.

use std::num::NonZeroU32;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::{hmac, pbkdf2};

use super::keys::ServerKeys;
use crate::proto::ledger::{CredentialDigest, KeyedDigest, Pbkdf2Digest, credential_digest};

/// Longest password or client secret we hash; longer input is refused before any work.
pub const SECRET_LEN_MAX: usize = 256;

/// A new client secret: 32 bytes from the CSPRNG, base64url (43 characters).
pub fn generate_secret() -> String {
    URL_SAFE_NO_PAD.encode(super::random_bytes::<32>())
}

fn keyed_input(client_id: &str, secret: &str) -> Vec<u8> {
    let mut input = Vec::with_capacity(client_id.len() + 1 + secret.len());
    input.extend_from_slice(client_id.as_bytes());
    input.push(0);
    input.extend_from_slice(secret.as_bytes());
    input
}

/// The stored form of a server-generated secret of `client_id`.
pub fn keyed_digest(keys: &ServerKeys, client_id: &str, secret: &str) -> CredentialDigest {
    let key = keys.active();
    let digest = hmac::sign(&key.secret_digest, &keyed_input(client_id, secret));
    CredentialDigest {
        kind: Some(credential_digest::Kind::Keyed(KeyedDigest {
            key_id: u32::from(key.id),
            digest: digest.as_ref().to_vec(),
        })),
    }
}

/// The stored form of a password or imported secret.
pub fn pbkdf2_digest(iterations: NonZeroU32, secret: &str) -> CredentialDigest {
    let salt = super::random_bytes::<16>();
    let mut digest = [0u8; 32];
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, iterations, &salt, secret.as_bytes(), &mut digest);
    pbkdf2_record(iterations, salt, digest)
}

fn pbkdf2_record(iterations: NonZeroU32, salt: [u8; 16], digest: [u8; 32]) -> CredentialDigest {
    CredentialDigest {
        kind: Some(credential_digest::Kind::Pbkdf2(Pbkdf2Digest {
            iterations: iterations.get(),
            salt: salt.to_vec(),
            digest: digest.to_vec(),
        })),
    }
}

/// How a presented credential compares with a stored digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    Match,
    Mismatch,
    /// The digest is PBKDF2: call [`verify_slow`] on a blocking thread.
    NeedsSlowHash,
}

/// Checks a client secret against a keyed digest in constant time; PBKDF2 digests are left to
/// [`verify_slow`].
pub fn verify_fast(keys: &ServerKeys, client_id: &str, presented: &str, stored: &CredentialDigest) -> Check {
    match &stored.kind {
        Some(credential_digest::Kind::Keyed(keyed)) => {
            let Some(key) = u16::try_from(keyed.key_id).ok().and_then(|id| keys.by_id(id)) else {
                return Check::Mismatch;
            };
            match hmac::verify(&key.secret_digest, &keyed_input(client_id, presented), &keyed.digest) {
                Ok(()) => Check::Match,
                Err(_) => Check::Mismatch,
            }
        }
        Some(credential_digest::Kind::Pbkdf2(_)) => Check::NeedsSlowHash,
        None => Check::Mismatch,
    }
}

/// Checks a password or imported secret against a PBKDF2 digest (slow, constant-time).
pub fn verify_slow(presented: &str, stored: &CredentialDigest) -> bool {
    let Some(credential_digest::Kind::Pbkdf2(d)) = &stored.kind else {
        return false;
    };
    let Some(iterations) = NonZeroU32::new(d.iterations) else {
        return false;
    };
    pbkdf2::verify(pbkdf2::PBKDF2_HMAC_SHA256, iterations, &d.salt, presented.as_bytes(), &d.digest).is_ok()
}

/// A PBKDF2 digest with the configured cost that no password matches, checked for unknown
/// users so that an unknown login id takes as long as a wrong password: checking a password
/// against it runs the same `iterations` rounds as against a real digest. Salt and digest are
/// random bytes, not derived from a password (deriving one cost a start ~0.25 s of PBKDF2 at
/// the default cost before the node was ready); a password matches it with probability 2^-256.
pub fn dummy_digest(iterations: NonZeroU32) -> CredentialDigest {
    pbkdf2_record(iterations, super::random_bytes(), super::random_bytes())
}

/// Keyed digest of a request's non-secret parameters, for idempotent retries. Parameters are
/// sorted by name so their order on the wire does not matter.
pub fn request_fingerprint(keys: &ServerKeys, parts: &mut [(&str, &str)]) -> [u8; 32] {
    parts.sort_unstable();
    let mut ctx = hmac::Context::with_key(&keys.active().fingerprint);
    for (name, value) in parts.iter() {
        ctx.update(&(name.len() as u32).to_be_bytes());
        ctx.update(name.as_bytes());
        ctx.update(&(value.len() as u32).to_be_bytes());
        ctx.update(value.as_bytes());
    }
    let tag = ctx.sign();
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// A short, non-reversible tag of a presented secret for the in-memory cache of verified
/// imported secrets (never stored on disk).
pub fn cache_tag(keys: &ServerKeys, client_id: &str, secret: &str) -> [u8; 32] {
    let tag = hmac::sign(&keys.active().secret_digest, &keyed_input(&format!("cache:{client_id}"), secret));
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// The keyed digest that stands for a login id the institution does not know in the ledger's
/// sign-in events, so that a password typed into the username field is never recorded.
/// Deterministic under one server key, so repeated failures of one login id count together.
pub fn unknown_login_digest(keys: &ServerKeys, institution_id: &str, login_id: &str) -> [u8; 32] {
    request_fingerprint(
        keys,
        &mut [(" purpose", "unknown-login/v1"), (" institution", institution_id), (" login", login_id)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_digest_verifies_only_the_right_secret_for_the_right_client() {
        let keys = ServerKeys::from_secret(1, &[5; 32]);
        let secret = generate_secret();
        assert_eq!(secret.len(), 43);
        let stored = keyed_digest(&keys, "c1", &secret);
        assert_eq!(verify_fast(&keys, "c1", &secret, &stored), Check::Match);
        assert_eq!(verify_fast(&keys, "c1", "wrong", &stored), Check::Mismatch);
        assert_eq!(verify_fast(&keys, "c2", &secret, &stored), Check::Mismatch);
    }

    #[test]
    fn pbkdf2_digest_is_salted_and_verifies() {
        let iterations = NonZeroU32::new(1000).unwrap();
        let a = pbkdf2_digest(iterations, "hunter2");
        let b = pbkdf2_digest(iterations, "hunter2");
        assert_ne!(a, b, "salts differ");
        assert!(verify_slow("hunter2", &a));
        assert!(!verify_slow("hunter3", &a));
        let keys = ServerKeys::from_secret(1, &[5; 32]);
        assert_eq!(verify_fast(&keys, "c", "hunter2", &a), Check::NeedsSlowHash);
    }

    #[test]
    fn a_dummy_digest_costs_what_a_real_one_does_and_matches_nothing() {
        let iterations = NonZeroU32::new(1000).unwrap();
        let (a, b) = (dummy_digest(iterations), dummy_digest(iterations));
        assert_ne!(a, b, "each dummy is its own");
        for dummy in [&a, &b] {
            let Some(credential_digest::Kind::Pbkdf2(d)) = &dummy.kind else { panic!("{dummy:?}") };
            assert_eq!((d.iterations, d.salt.len(), d.digest.len()), (1000, 16, 32));
            assert!(!verify_slow("", dummy) && !verify_slow("hunter2", dummy));
        }
        let keys = ServerKeys::from_secret(1, &[5; 32]);
        assert_eq!(verify_fast(&keys, "c", "hunter2", &a), Check::NeedsSlowHash);
    }

    #[test]
    fn fingerprint_ignores_parameter_order() {
        let keys = ServerKeys::from_secret(1, &[5; 32]);
        let a = request_fingerprint(&keys, &mut [("grant_type", "client_credentials"), ("scopes", "a")]);
        let b = request_fingerprint(&keys, &mut [("scopes", "a"), ("grant_type", "client_credentials")]);
        let c = request_fingerprint(&keys, &mut [("scopes", "b"), ("grant_type", "client_credentials")]);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
