//! Oracles for the fuzz targets in `fuzz/` and their regression tests: each takes arbitrary
//! bytes, must never panic on them, and asserts a round-trip property when the input parses.
//! They panic only when a property is violated; the server never calls them.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use crate::api::wire::form::{self, percent_encode};
use crate::api::wire::{self, HeaderValues, Institution};
use crate::crypto::keys::ServerKeys;
use crate::crypto::token;
use crate::domain::ids::is_printable_ascii;
use crate::domain::scope;
use crate::ledger::codec;

/// `Authorization: Basic`: accepted credentials are printable and survive re-encoding.
pub fn basic_header(data: &[u8]) {
    if let Ok(credentials) = wire::basic_credentials(HeaderValues::One(data)) {
        assert!(is_printable_ascii(&credentials.client_id) && is_printable_ascii(&credentials.client_secret));
        assert!(!credentials.client_id.is_empty() && !credentials.client_secret.is_empty());
        let again = wire::encode_basic(&credentials.client_id, &credentials.client_secret);
        assert_eq!(wire::basic_credentials(HeaderValues::One(again.as_bytes())), Ok(credentials));
    }
    let _ = wire::bearer_token(HeaderValues::One(data));
}

/// Form bodies: parse → serialise → parse is stable, and every accepted value is printable.
pub fn form_body(data: &[u8]) {
    if let Ok(params) = form::parse(data) {
        let encoded: Vec<String> =
            params.iter().map(|(n, v)| format!("{}={}", percent_encode(n), percent_encode(v))).collect();
        for (name, value) in params.iter() {
            assert!(is_printable_ascii(name) && is_printable_ascii(value) && !value.is_empty());
        }
        assert_eq!(form::parse(encoded.join("&").as_bytes()), Ok(params));
    }
}

/// Scope lists: parse → join → parse is stable and every name is a valid scope token.
pub fn scopes(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(names) = scope::parse_scopes(text) {
        assert!(names.iter().all(|n| scope::is_valid_scope(n)));
        assert_eq!(scope::parse_scopes(&scope::join(&names)), Ok(names));
    }
}

/// `transactionId` and `institutionId`: accepted values have the documented shape.
pub fn headers(data: &[u8]) {
    if let Ok(id) = wire::transaction_id(HeaderValues::One(data)) {
        assert_eq!(id.len(), 36);
        assert!(uuid::Uuid::try_parse(&id).is_ok());
    }
    if let Institution::Valid(id) = Institution::parse(HeaderValues::One(data)) {
        assert!((1..=10).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit()));
    }
}

/// Token strings: only genuine tokens decode, and they re-encode to the same string.
pub fn token_string(data: &[u8]) {
    let keys = ServerKeys::from_secret(1, &[0x5a; 32]);
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some((kind, id)) = token::decode(&keys, text) {
        assert_eq!(token::encode(&keys, kind, &id), text);
    }
}

/// Stored envelopes: decoding never panics, and an envelope that opens re-seals into one that
/// opens to the same event (hashes cover stored bytes, which need not be canonical protobuf).
pub fn event_codec(data: &[u8]) {
    // Use the envelope's own seq as the key when it has one, so real envelopes open.
    let key = <crate::proto::ledger::Envelope as prost::Message>::decode(data).map_or(1, |e| e.seq);
    if let Ok(opened) = codec::open(key, data) {
        let resealed = codec::seal(
            &opened.prev_hash,
            opened.envelope.seq,
            opened.envelope.recorded_at_ms,
            &opened.envelope.transaction_id,
            &opened.event,
        );
        let reopened = codec::open(key, &resealed.bytes).expect("a resealed envelope opens");
        assert_eq!(reopened.event, opened.event);
    }
}
