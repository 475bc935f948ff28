//! Token strings: `prefix ‖ base64url(key_id ‖ token_id ‖ HMAC-SHA256(key, kind ‖ key_id ‖
//! token_id))`. The prefix tells kinds apart and lets secret scanners find leaked tokens; the
//! MAC means a forged or mangled token fails before any lookup, in constant time; and the same
//! id always yields the same string, which is how an idempotent retry returns the original.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

use super::keys::ServerKeys;
use crate::domain::ids::TokenId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    Access,
    Refresh,
    /// Authorization codes (SPEC 3.4).
    Code,
}

impl TokenKind {
    pub const fn prefix(self) -> &'static str {
        match self {
            Self::Access => "tla_",
            Self::Refresh => "tlr_",
            Self::Code => "tlc_",
        }
    }

    const fn tag(self) -> u8 {
        match self {
            Self::Access => b'a',
            Self::Refresh => b'r',
            Self::Code => b'c',
        }
    }
}

const PREFIX_LEN: usize = 4;
const RAW_LEN: usize = 2 + 16 + 32;
/// Every token string has exactly this length, so anything else is refused without work.
pub const TOKEN_LEN: usize = PREFIX_LEN + (RAW_LEN * 4).div_ceil(3);

fn mac_input(kind: TokenKind, key_id: u16, id: &TokenId) -> [u8; 19] {
    let mut input = [0u8; 19];
    input[0] = kind.tag();
    input[1..3].copy_from_slice(&key_id.to_be_bytes());
    input[3..].copy_from_slice(&id.0);
    input
}

pub fn encode(keys: &ServerKeys, kind: TokenKind, id: &TokenId) -> String {
    let key = keys.active();
    let tag = hmac::sign(&key.token_mac, &mac_input(kind, key.id, id));
    let mut raw = [0u8; RAW_LEN];
    raw[..2].copy_from_slice(&key.id.to_be_bytes());
    raw[2..18].copy_from_slice(&id.0);
    raw[18..].copy_from_slice(tag.as_ref());
    let mut out = String::with_capacity(TOKEN_LEN);
    out.push_str(kind.prefix());
    URL_SAFE_NO_PAD.encode_string(raw, &mut out);
    out
}

/// The kind and id of a genuine token string, or `None` for anything else.
pub fn decode(keys: &ServerKeys, text: &str) -> Option<(TokenKind, TokenId)> {
    if text.len() != TOKEN_LEN {
        return None;
    }
    let kind =
        [TokenKind::Access, TokenKind::Refresh, TokenKind::Code].into_iter().find(|k| text.starts_with(k.prefix()))?;
    let mut raw = [0u8; RAW_LEN];
    let n = URL_SAFE_NO_PAD.decode_slice(text.as_bytes().get(PREFIX_LEN..)?, &mut raw).ok()?;
    if n != RAW_LEN {
        return None;
    }
    let key_id = u16::from_be_bytes([raw[0], raw[1]]);
    let key = keys.by_id(key_id)?;
    let id = TokenId(raw[2..18].try_into().ok()?);
    hmac::verify(&key.token_mac, &mac_input(kind, key_id, &id), &raw[18..]).ok()?;
    Some((kind, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ServerKeys {
        ServerKeys::from_secret(7, &[42; 32])
    }

    #[test]
    fn round_trips_and_is_deterministic() {
        let keys = keys();
        let id = TokenId([9; 16]);
        let text = encode(&keys, TokenKind::Refresh, &id);
        assert_eq!(text.len(), TOKEN_LEN);
        assert!(text.starts_with("tlr_"));
        assert_eq!(encode(&keys, TokenKind::Refresh, &id), text);
        assert_eq!(decode(&keys, &text), Some((TokenKind::Refresh, id)));
    }

    #[test]
    fn refuses_every_single_character_change_and_kind_swap() {
        let keys = keys();
        let text = encode(&keys, TokenKind::Access, &TokenId([1; 16]));
        for i in 0..text.len() {
            let mut bytes = text.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let changed = String::from_utf8(bytes).unwrap();
            if changed != text {
                assert_eq!(decode(&keys, &changed), None, "position {i}");
            }
        }
        let swapped = text.replacen("tla_", "tlr_", 1);
        assert_eq!(decode(&keys, &swapped), None);
        assert_eq!(decode(&keys, ""), None);
        assert_eq!(decode(&keys, &"x".repeat(1 << 20)), None);
    }

    #[test]
    fn another_key_cannot_verify() {
        let text = encode(&keys(), TokenKind::Access, &TokenId([1; 16]));
        assert_eq!(decode(&ServerKeys::from_secret(7, &[43; 32]), &text), None);
    }
}
