//! Secrets and everything derived from them: the server key file, token strings, client
//! secret and password digests, request fingerprints.
//!
//! **Invariant:** every comparison of a secret or MAC is constant-time on fixed-length
//! digests (`ring::hmac::verify`, `ring::pbkdf2::verify`, `subtle`).

pub mod credential;
pub(crate) mod keys;
pub(crate) mod pkce;
pub(crate) mod signing;
pub mod token;

pub use keys::ServerKeys;
pub use signing::SigningKeys;

use ring::rand::{SecureRandom, SystemRandom};

/// `N` bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The OS generator only fails when the platform has no entropy source at all; there is
    // no safe way to continue issuing credentials then.
    #[allow(clippy::expect_used)]
    SystemRandom::new().fill(&mut bytes).expect("the operating system random generator failed");
    bytes
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (o, d) in out.iter_mut().zip(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref()) {
        *o = *d;
    }
    out
}

/// Constant-time equality of two equal-length digests.
pub fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}
