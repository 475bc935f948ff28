//! Identifiers and the syntax rules for the values callers send.

use std::fmt;

/// The random part of a token (access, refresh or code): 16 bytes from a CSPRNG.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct TokenId(pub [u8; 16]);

/// Identifies one refresh-token family: every token descended from one original grant.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct FamilyId(pub [u8; 16]);

macro_rules! hex_id {
    ($t:ty) => {
        impl $t {
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                bytes.try_into().ok().map(Self)
            }

            pub fn to_hex(&self) -> String {
                hex(&self.0)
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
    };
}
hex_id!(TokenId);
hex_id!(FamilyId);

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Parses lower- or upper-case hex into exactly `N` bytes.
pub fn parse_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let bytes = text.as_bytes();
    if bytes.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let &[hi, lo] = pair else { return None };
        *byte = ((hi as char).to_digit(16)? * 16 + (lo as char).to_digit(16)?) as u8;
    }
    Some(out)
}

/// Institution ids are 1 to 10 ASCII digits, compared exactly as given (leading zeros count).
pub fn is_valid_institution_id(id: &str) -> bool {
    (1..=10).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit())
}

/// Printable ASCII (0x20..=0x7E), the alphabet SPEC section 3 allows in every field.
pub fn is_printable_ascii(text: &str) -> bool {
    text.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

/// Longest client id, login id or other directory identifier we accept.
pub const IDENTIFIER_LEN_MAX: usize = 128;

/// Directory identifiers (client ids, login ids, user ids): 1 to 128 printable ASCII
/// characters without spaces, so they survive headers, forms and logs unchanged.
pub fn is_valid_identifier(id: &str) -> bool {
    (1..=IDENTIFIER_LEN_MAX).contains(&id.len()) && id.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn institution_ids_are_one_to_ten_ascii_digits() {
        for ok in ["0", "00016", "1234567890"] {
            assert!(is_valid_institution_id(ok), "{ok}");
        }
        for bad in ["", "12345678901", "12a", "-1", "+1", " 1", "1 ", "١٢"] {
            assert!(!is_valid_institution_id(bad), "{bad}");
        }
    }

    #[test]
    fn hex_round_trips() {
        let id = TokenId([0xab; 16]);
        assert_eq!(parse_hex::<16>(&id.to_hex()), Some(id.0));
        assert_eq!(parse_hex::<16>(&id.to_hex().to_uppercase()), Some(id.0));
        assert_eq!(parse_hex::<16>("zz"), None);
    }
}
