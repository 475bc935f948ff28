//! PKCE (RFC 7636) with the S256 method only: `plain` would let an intercepted code be
//! redeemed with the challenge itself (RFC 9700 2.1.1).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The only code_challenge_method we accept.
pub const METHOD_S256: &str = "S256";
/// RFC 7636 4.1: a verifier has 43 to 128 characters.
pub const VERIFIER_LEN_MIN: usize = 43;
pub const VERIFIER_LEN_MAX: usize = 128;
/// An S256 challenge is base64url (no padding) of 32 bytes.
pub const CHALLENGE_LEN: usize = 43;

/// RFC 7636 4.1: `[A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~"`, 43 to 128 characters.
pub fn is_valid_verifier(verifier: &str) -> bool {
    (VERIFIER_LEN_MIN..=VERIFIER_LEN_MAX).contains(&verifier.len())
        && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// SHA-256 of the verifier's ASCII bytes: what the S256 challenge encodes (RFC 7636 4.2).
pub fn s256(verifier: &str) -> [u8; 32] {
    super::sha256(verifier.as_bytes())
}

/// The digest an S256 challenge stands for, or `None` unless it is exactly 43 characters of
/// unpadded base64url encoding 32 bytes.
pub fn parse_challenge(challenge: &str) -> Option<[u8; 32]> {
    if challenge.len() != CHALLENGE_LEN {
        return None;
    }
    let mut digest = [0u8; 32];
    match URL_SAFE_NO_PAD.decode_slice(challenge, &mut digest) {
        Ok(32) => Some(digest),
        _ => None,
    }
}

/// The S256 challenge text of a digest (what a client sends; the tests play the client).
#[cfg(test)]
fn encode_challenge(digest: &[u8; 32]) -> String {
    URL_SAFE_NO_PAD.encode(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b_vector() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(is_valid_verifier(verifier));
        assert_eq!(encode_challenge(&s256(verifier)), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        assert_eq!(parse_challenge("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"), Some(s256(verifier)));
    }

    #[test]
    fn verifier_syntax() {
        assert!(is_valid_verifier(&"a".repeat(43)));
        assert!(is_valid_verifier(&"-._~Az09".repeat(16)));
        for bad in
            ["", &"a".repeat(42), &"a".repeat(129), &format!("{}+", "a".repeat(43)), &format!("{} ", "a".repeat(43))]
        {
            assert!(!is_valid_verifier(bad), "{bad:?}");
        }
    }

    #[test]
    fn challenge_syntax() {
        let good = encode_challenge(&[7; 32]);
        assert_eq!(parse_challenge(&good), Some([7; 32]));
        for bad in
            [&good[..42], &format!("{good}A"), &format!("{good}="), &good.replace(good.chars().next().unwrap(), "+")]
        {
            assert_eq!(parse_challenge(bad), None, "{bad:?}");
        }
    }
}
