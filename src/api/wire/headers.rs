//! Validators for the values every transport receives: the `transactionId`, `institutionId`
//! and `Authorization` headers (HTTP headers or gRPC metadata alike).

use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};

use super::form::{percent_decode, percent_encode};
use crate::api::error::ErrorCode;
use crate::crypto::credential::SECRET_LEN_MAX;
use crate::domain::ids::{IDENTIFIER_LEN_MAX, is_printable_ascii, is_valid_institution_id};

/// The values of one header: none, one, or several (which we always refuse).
#[derive(Clone, Copy, Debug)]
pub enum HeaderValues<'a> {
    Absent,
    One(&'a [u8]),
    Repeated,
}

/// `transactionId`: exactly one canonical hyphenated UUID, any case, not the nil UUID.
pub fn transaction_id(value: HeaderValues<'_>) -> Result<String, ErrorCode> {
    let HeaderValues::One(raw) = value else {
        return Err(ErrorCode::InvalidTransactionId);
    };
    let canonical = raw.len() == 36
        && raw.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    let nil = raw.iter().all(|b| *b == b'0' || *b == b'-');
    if !canonical || nil {
        return Err(ErrorCode::InvalidTransactionId);
    }
    // Checked above: ASCII only.
    Ok(String::from_utf8_lossy(raw).into_owned())
}

/// What a request said about `institutionId`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Institution {
    Absent,
    Valid(String),
    Invalid,
}

impl Institution {
    pub fn parse(value: HeaderValues<'_>) -> Self {
        match value {
            HeaderValues::Absent => Self::Absent,
            HeaderValues::Repeated => Self::Invalid,
            HeaderValues::One(raw) => match std::str::from_utf8(raw) {
                Ok(text) if is_valid_institution_id(text) => Self::Valid(text.to_owned()),
                _ => Self::Invalid,
            },
        }
    }

    /// The id, refusing an absent or malformed header.
    pub fn required(&self) -> Result<&str, ErrorCode> {
        match self {
            Self::Valid(id) => Ok(id),
            Self::Absent | Self::Invalid => Err(ErrorCode::InvalidInstitution),
        }
    }

    /// The id if one was sent, refusing a malformed header.
    pub fn optional(&self) -> Result<Option<&str>, ErrorCode> {
        match self {
            Self::Valid(id) => Ok(Some(id)),
            Self::Absent => Ok(None),
            Self::Invalid => Err(ErrorCode::InvalidInstitution),
        }
    }
}

/// Client credentials from an `Authorization: Basic` header.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicCredentials {
    pub client_id: String,
    pub client_secret: String,
}

impl std::fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicCredentials").field("client_id", &self.client_id).finish_non_exhaustive()
    }
}

const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Parses `Basic base64(urlencode(id):urlencode(secret))` (RFC 6749 2.3.1, RFC 7617). Any
/// malformation is CMN_90004, like a wrong secret.
pub fn basic_credentials(value: HeaderValues<'_>) -> Result<BasicCredentials, ErrorCode> {
    let HeaderValues::One(raw) = value else {
        return Err(ErrorCode::InvalidClient);
    };
    let text = std::str::from_utf8(raw).map_err(|_| ErrorCode::InvalidClient)?.trim();
    let (scheme, rest) = text.split_once(' ').ok_or(ErrorCode::InvalidClient)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(ErrorCode::InvalidClient);
    }
    let encoded = rest.trim_start_matches(' ');
    if encoded.is_empty() || encoded.len() > 4 * (IDENTIFIER_LEN_MAX * 3 + SECRET_LEN_MAX * 3 + 1).div_ceil(3) {
        return Err(ErrorCode::InvalidClient);
    }
    let decoded = BASE64_LENIENT.decode(encoded).map_err(|_| ErrorCode::InvalidClient)?;
    let decoded = String::from_utf8(decoded).map_err(|_| ErrorCode::InvalidClient)?;
    let (id, secret) = decoded.split_once(':').ok_or(ErrorCode::InvalidClient)?;
    let client_id = decode_credential(id, IDENTIFIER_LEN_MAX)?;
    let client_secret = decode_credential(secret, SECRET_LEN_MAX)?;
    Ok(BasicCredentials { client_id, client_secret })
}

fn decode_credential(part: &str, len_max: usize) -> Result<String, ErrorCode> {
    let bytes = percent_decode(part.as_bytes()).ok_or(ErrorCode::InvalidClient)?;
    let text = String::from_utf8(bytes).map_err(|_| ErrorCode::InvalidClient)?;
    if text.is_empty() || text.len() > len_max || !is_printable_ascii(&text) {
        return Err(ErrorCode::InvalidClient);
    }
    Ok(text)
}

/// The bearer token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(value: HeaderValues<'_>) -> Option<&str> {
    let HeaderValues::One(raw) = value else {
        return None;
    };
    let text = std::str::from_utf8(raw).ok()?.trim();
    let (scheme, token) = text.split_once(' ')?;
    let token = token.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' ')).then_some(token)
}

/// Encodes credentials the way RFC 6749 2.3.1 asks clients to (for tests and the CLI).
pub fn encode_basic(client_id: &str, client_secret: &str) -> String {
    format!(
        "Basic {}",
        general_purpose::STANDARD.encode(format!("{}:{}", percent_encode(client_id), percent_encode(client_secret)))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> HeaderValues<'_> {
        HeaderValues::One(text.as_bytes())
    }

    #[test]
    fn transaction_ids_must_be_canonical_uuids() {
        assert!(transaction_id(one("3f2b8c1e-9d4a-4b7e-8f00-123456789abc")).is_ok());
        assert!(transaction_id(one("3F2B8C1E-9D4A-4B7E-8F00-123456789ABC")).is_ok());
        for bad in [
            "",
            "3f2b8c1e9d4a4b7e8f00123456789abc",
            "{3f2b8c1e-9d4a-4b7e-8f00-123456789abc}",
            "urn:uuid:3f2b8c1e-9d4a-4b7e-8f00-123456789abc",
            "00000000-0000-0000-0000-000000000000",
            "3f2b8c1e-9d4a-4b7e-8f00-123456789abg",
            " 3f2b8c1e-9d4a-4b7e-8f00-123456789ab",
        ] {
            assert_eq!(transaction_id(one(bad)), Err(ErrorCode::InvalidTransactionId), "{bad:?}");
        }
        assert_eq!(transaction_id(HeaderValues::Absent), Err(ErrorCode::InvalidTransactionId));
        assert_eq!(transaction_id(HeaderValues::Repeated), Err(ErrorCode::InvalidTransactionId));
    }

    #[test]
    fn basic_credentials_follow_rfc6749_encoding() {
        let header = encode_basic("a:b", "s p%c");
        let creds = basic_credentials(one(&header)).unwrap();
        assert_eq!(creds.client_id, "a:b");
        assert_eq!(creds.client_secret, "s p%c");
        let lower = header.replacen("Basic", "basic", 1);
        assert_eq!(basic_credentials(one(&lower)).unwrap().client_id, "a:b");
        let unpadded = encode_basic("ab", "c").trim_end_matches('=').to_owned();
        assert_eq!(basic_credentials(one(&unpadded)).unwrap().client_id, "ab");
    }

    #[test]
    fn malformed_basic_headers_are_invalid_client() {
        let no_colon = format!("Basic {}", general_purpose::STANDARD.encode("abc"));
        let empty_id = format!("Basic {}", general_purpose::STANDARD.encode(":secret"));
        let control = format!("Basic {}", general_purpose::STANDARD.encode("id:se\u{1}cret"));
        let bad_utf8 = format!("Basic {}", general_purpose::STANDARD.encode([b'a', b':', 0xff]));
        for bad in ["", "Basic", "Basic ", "Basic !!!", "Bearer abc", &no_colon, &empty_id, &control, &bad_utf8] {
            assert_eq!(basic_credentials(one(bad)), Err(ErrorCode::InvalidClient), "{bad:?}");
        }
        assert_eq!(basic_credentials(one(&format!("Basic {}", "A".repeat(16 * 1024)))), Err(ErrorCode::InvalidClient));
        assert_eq!(basic_credentials(HeaderValues::Repeated), Err(ErrorCode::InvalidClient));
    }

    #[test]
    fn institution_header_rules() {
        assert_eq!(Institution::parse(one("00016")), Institution::Valid("00016".into()));
        for bad in ["12a", "-1", "+1", "12345678901", " 1", ""] {
            assert_eq!(Institution::parse(one(bad)), Institution::Invalid, "{bad:?}");
        }
        assert_eq!(Institution::parse(HeaderValues::Repeated), Institution::Invalid);
        assert_eq!(Institution::Absent.required(), Err(ErrorCode::InvalidInstitution));
        assert_eq!(Institution::Absent.optional(), Ok(None));
    }
}
