//! `application/x-www-form-urlencoded` bodies, parsed strictly: every value printable ASCII
//! (CMN_90017), no repeated parameter (CMN_90011), bounded size and count.

use crate::api::error::ErrorCode;

/// Most parameters one form may carry.
pub const FORM_PARAMS_MAX: usize = 32;

/// The parameters of one request, in the order sent, with empty values treated as absent
/// (RFC 6749 section 3.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parameters from named values (gRPC fields); empty values count as absent.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, ErrorCode> {
        let mut params = Self::default();
        for (name, value) in pairs {
            if !crate::domain::ids::is_printable_ascii(value) {
                return Err(ErrorCode::NonPrintable);
            }
            if !value.is_empty() {
                params.pairs.push((name.to_owned(), value.to_owned()));
            }
        }
        Ok(params)
    }

    /// The non-empty value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

/// Parses a form body. Non-printable characters anywhere (raw or percent-encoded) are
/// CMN_90017; broken percent-encoding, repeated names or too many parameters are CMN_90011.
pub fn parse(body: &[u8]) -> Result<Params, ErrorCode> {
    let mut decoded: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for segment in body.split(|b| *b == b'&').filter(|s| !s.is_empty()) {
        if decoded.len() == FORM_PARAMS_MAX {
            return Err(ErrorCode::InvalidRequest);
        }
        let (name, value) = match segment.iter().position(|b| *b == b'=') {
            Some(i) => segment.split_at(i),
            None => (segment, &[][..]),
        };
        // `split_at` keeps the '=' at the start of the value.
        let value = value.get(1..).unwrap_or_default();
        if !name.iter().chain(value).all(|b| (0x21..=0x7e).contains(b)) {
            return Err(ErrorCode::NonPrintable);
        }
        let name = percent_decode(name).ok_or(ErrorCode::InvalidRequest)?;
        let value = percent_decode(value).ok_or(ErrorCode::InvalidRequest)?;
        decoded.push((name, value));
    }
    if decoded.iter().any(|(n, v)| !n.iter().chain(v).all(|b| (0x20..=0x7e).contains(b))) {
        return Err(ErrorCode::NonPrintable);
    }
    let mut params = Params::default();
    for (i, (name, value)) in decoded.iter().enumerate() {
        if decoded.iter().take(i).any(|(n, _)| n == name) {
            return Err(ErrorCode::InvalidRequest);
        }
        // Printable ASCII was checked above, so both are valid UTF-8.
        let name = String::from_utf8_lossy(name).into_owned();
        if !value.is_empty() {
            params.pairs.push((name, String::from_utf8_lossy(value).into_owned()));
        }
    }
    Ok(params)
}

/// Decodes `%XX` escapes and `+` (space); `None` for a broken escape.
pub fn percent_decode(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut bytes = input.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'%' => {
                let hi = (*bytes.next()? as char).to_digit(16)?;
                let lo = (*bytes.next()? as char).to_digit(16)?;
                out.push((hi * 16 + lo) as u8);
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    Some(out)
}

/// Encodes a value for a form or a Basic credential (unreserved characters stay as they are).
pub fn percent_encode(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    for b in input.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_treats_empty_values_as_absent() {
        let params = parse(b"grant_type=client_credentials&scopes=a%3Aread+b&empty=").unwrap();
        assert_eq!(params.get("grant_type"), Some("client_credentials"));
        assert_eq!(params.get("scopes"), Some("a:read b"));
        assert_eq!(params.get("empty"), None);
        assert_eq!(parse(b"").unwrap(), Params::default());
    }

    #[test]
    fn repeated_parameters_are_refused_even_when_empty() {
        assert_eq!(parse(b"grant_type=a&grant_type=b"), Err(ErrorCode::InvalidRequest));
        assert_eq!(parse(b"token=&token=x"), Err(ErrorCode::InvalidRequest));
        assert_eq!(parse(b"a%3D=1&a%3d=2"), Err(ErrorCode::InvalidRequest));
    }

    #[test]
    fn non_printable_input_is_cmn_90017() {
        for body in [&b"a=%00"[..], b"a=%1F", b"a=%7F", b"a=%FF", b"a=\xc3\xa9", b"a=b\tc", b"a=%C3%A9"] {
            assert_eq!(parse(body), Err(ErrorCode::NonPrintable), "{:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn broken_escapes_and_too_many_parameters_are_cmn_90011() {
        assert_eq!(parse(b"a=%G1"), Err(ErrorCode::InvalidRequest));
        assert_eq!(parse(b"a=%4"), Err(ErrorCode::InvalidRequest));
        let many: Vec<String> = (0..=FORM_PARAMS_MAX).map(|i| format!("p{i}=1")).collect();
        assert_eq!(parse(many.join("&").as_bytes()), Err(ErrorCode::InvalidRequest));
    }

    #[test]
    fn encode_then_decode_round_trips() {
        let text = "a:b c+d%e/é";
        assert_eq!(percent_decode(percent_encode(text).as_bytes()).unwrap(), text.as_bytes());
    }
}
