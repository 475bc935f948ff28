//! How stored events are shown: kind names, a secret-free copy, one line for people, and JSON
//! for tools. Kind names and JSON come from the protobuf descriptors (prost-reflect), so event
//! variants added later are shown without changes here.
//!
//! **Invariant:** what leaves the server is secret-free. Events hold no usable secret by
//! design; credential digests (salted PBKDF2 or keyed hashes of secrets and passwords) are
//! removed anyway, as is any field named like a secret or private key, so that an offline
//! guessing attack cannot start from the audit stream.

use std::sync::OnceLock;

use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MessageDescriptor, Value};

use super::time::format_ms;
use crate::domain::grant::stored_name;
use crate::domain::ids::hex;
use crate::ledger::index::kind_number;
use crate::proto::ledger::{Event, GrantType, RevocationReason, blast_radius_revoked, bulk_revoked, event};

const EVENT_MESSAGE: &str = "tokenledger.ledger.v1.Event";
const CREDENTIAL_DIGEST: &str = "tokenledger.ledger.v1.CredentialDigest";

fn pool() -> Option<&'static DescriptorPool> {
    static POOL: OnceLock<Option<DescriptorPool>> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET).ok()).as_ref()
}

fn event_descriptor() -> Option<MessageDescriptor> {
    pool()?.get_message_by_name(EVENT_MESSAGE)
}

/// The name of an event kind (its field name in `Event.kind`, e.g. `tokens_issued`).
pub fn kind_name(event: &Event) -> String {
    let number = u32::from(kind_number(event));
    event_descriptor()
        .and_then(|d| d.get_field(number))
        .map(|f| f.name().to_owned())
        .unwrap_or_else(|| format!("kind_{number}"))
}

/// Every event kind: (field number, name).
pub fn kind_names() -> Vec<(u32, String)> {
    event_descriptor()
        .and_then(|d| d.oneofs().find(|o| o.name() == "kind"))
        .map(|o| o.fields().map(|f| (f.number(), f.name().to_owned())).collect())
        .unwrap_or_default()
}

/// The field number of a kind given by name or number.
pub fn parse_kind(text: &str) -> Option<u8> {
    let names = kind_names();
    let number = match text.parse::<u32>() {
        Ok(number) => names.iter().find(|(n, _)| *n == number)?.0,
        Err(_) => names.iter().find(|(_, name)| name == text)?.0,
    };
    u8::try_from(number).ok()
}

fn is_secret_field(field: &prost_reflect::FieldDescriptor) -> bool {
    let name = field.name();
    let digest = matches!(field.kind(), Kind::Message(m) if m.full_name() == CREDENTIAL_DIGEST);
    digest || name.contains("secret") || name.contains("password") || name.contains("private")
}

fn redact_message(message: &mut DynamicMessage) {
    let secret: Vec<_> = message.fields().map(|(f, _)| f).filter(is_secret_field).collect();
    for field in &secret {
        message.clear_field(field);
    }
    for (_, value) in message.fields_mut() {
        redact_value(value);
    }
}

fn redact_value(value: &mut Value) {
    match value {
        Value::Message(m) => redact_message(m),
        Value::List(items) => items.iter_mut().for_each(redact_value),
        Value::Map(entries) => entries.values_mut().for_each(redact_value),
        _ => {}
    }
}

/// A copy of `event` without credential digests or anything named like a secret. If the
/// descriptors were unavailable, nothing but the kind is kept (fail closed).
pub fn redact(event: &Event) -> Event {
    let redacted = event_descriptor().and_then(|d| {
        let mut message = DynamicMessage::decode(d, event.encode_to_vec().as_slice()).ok()?;
        redact_message(&mut message);
        message.transcode_to::<Event>().ok()
    });
    redacted.unwrap_or_default()
}

/// The event as JSON: field names as in the proto, enums by name, bytes as lower-case hex,
/// default values left out. Apply to a redacted event.
pub fn to_json(event: &Event) -> serde_json::Value {
    event_descriptor()
        .and_then(|d| DynamicMessage::decode(d, event.encode_to_vec().as_slice()).ok())
        .map(|m| message_json(&m))
        .unwrap_or(serde_json::Value::Null)
}

fn message_json(message: &DynamicMessage) -> serde_json::Value {
    let mut object = serde_json::Map::new();
    for (field, value) in message.fields() {
        object.insert(field.name().to_owned(), value_json(&field.kind(), value));
    }
    serde_json::Value::Object(object)
}

fn value_json(kind: &Kind, value: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        Value::Bool(b) => J::Bool(*b),
        Value::I32(n) => J::from(*n),
        Value::I64(n) => J::from(*n),
        Value::U32(n) => J::from(*n),
        Value::U64(n) => J::from(*n),
        Value::F32(n) => J::from(*n),
        Value::F64(n) => J::from(*n),
        Value::String(s) => J::String(s.clone()),
        Value::Bytes(b) => J::String(hex(b)),
        Value::EnumNumber(n) => match kind {
            Kind::Enum(e) => e.get_value(*n).map_or_else(|| J::from(*n), |v| J::String(v.name().to_owned())),
            _ => J::from(*n),
        },
        Value::Message(m) => message_json(m),
        Value::List(items) => J::Array(items.iter().map(|v| value_json(kind, v)).collect()),
        Value::Map(entries) => {
            let value_kind = match kind {
                Kind::Message(m) => m.map_entry_value_field().kind(),
                other => other.clone(),
            };
            let object = entries.iter().map(|(k, v)| (format!("{k:?}"), value_json(&value_kind, v))).collect();
            J::Object(object)
        }
    }
}

fn id(bytes: &[u8]) -> String {
    if bytes.is_empty() { "-".to_owned() } else { hex(bytes) }
}

pub fn reason_text(reason: i32) -> &'static str {
    match RevocationReason::try_from(reason).unwrap_or(RevocationReason::Unspecified) {
        RevocationReason::ClientRequest => "client request",
        RevocationReason::RefreshReuse => "refresh token reuse",
        RevocationReason::Admin => "operator",
        RevocationReason::AuthorizationCodeReplay => "authorization code replayed",
        RevocationReason::Unspecified => "unspecified",
    }
}

fn with_note(text: String, note: &str) -> String {
    if note.is_empty() { text } else { format!("{text}; note: {note}") }
}

/// One line describing `event` for people.
pub fn summary(event: &Event) -> String {
    let Some(kind) = &event.kind else {
        return "unknown event".to_owned();
    };
    match kind {
        event::Kind::LedgerCreated(c) => {
            format!("ledger created (format {}, tokenledger {})", c.format_version, c.software_version)
        }
        event::Kind::InstitutionCreated(i) => format!("institution {} created ({})", i.institution_id, i.name),
        event::Kind::ClientCreated(c) => format!(
            "client {} created for institutions {}; grants {}; scopes {}{}",
            c.client_id,
            c.institution_ids.join(","),
            c.grant_types.join(","),
            c.scopes.join(" "),
            if c.authorize_partners { "; first-party (authorizes partners)" } else { "" }
        ),
        event::Kind::ClientAuthorizePartnersSet(c) => format!(
            "client {} {} authorize partners",
            c.client_id,
            if c.authorize_partners { "may now" } else { "may no longer" }
        ),
        event::Kind::AuthorizationCodeIssued(c) => {
            let by_user = if c.authorized_by_login_id.is_empty() {
                "an institution-level token".to_owned()
            } else {
                format!("the token of user {}", c.authorized_by_login_id)
            };
            format!(
                "authorization code {} for partner {}, user {} of institution {}, scopes {}; authorized by client {} with {} ({})",
                id(&c.code_id),
                c.client_id,
                c.login_id,
                c.institution_id,
                c.scopes.join(" "),
                c.authorized_by_client_id,
                by_user,
                id(&c.authorized_by_token_id),
            )
        }
        event::Kind::UserCreated(u) => format!("user {} of institution {} created", u.login_id, u.institution_id),
        event::Kind::TokensIssued(t) => {
            let grant = stored_name(GrantType::try_from(t.grant_type).unwrap_or(GrantType::Unspecified));
            let mut text = format!("{grant} grant: client {}, institution {}", t.client_id, t.institution_id);
            if !t.login_id.is_empty() {
                text.push_str(&format!(", user {}", t.login_id));
            }
            if let Some(access) = &t.access {
                text.push_str(&format!("; access {}", id(&access.token_id)));
            }
            if let Some(refresh) = &t.refresh {
                text.push_str(&format!("; refresh {}", id(&refresh.token_id)));
            }
            if !t.family_id.is_empty() {
                text.push_str(&format!("; family {}", id(&t.family_id)));
            }
            if !t.rotated_from.is_empty() {
                text.push_str(&format!("; rotated from {}", id(&t.rotated_from)));
            }
            text
        }
        event::Kind::TokenRevoked(r) => format!("token {} revoked: {}", id(&r.token_id), reason_text(r.reason)),
        event::Kind::FamilyRevoked(r) => {
            let mut text = format!("family {} revoked: {}", id(&r.family_id), reason_text(r.reason));
            if !r.trigger_token_id.is_empty() {
                text.push_str(&format!(" (token {})", id(&r.trigger_token_id)));
            }
            text
        }
        event::Kind::BulkRevoked(b) => {
            let scope = match &b.scope {
                Some(bulk_revoked::Scope::ClientId(c)) => format!("client {c}"),
                Some(bulk_revoked::Scope::User(u)) => {
                    format!("user {} of institution {}", u.login_id, u.institution_id)
                }
                Some(bulk_revoked::Scope::InstitutionId(i)) => format!("institution {i}"),
                Some(bulk_revoked::Scope::FamilyId(f)) => format!("family {}", id(f)),
                None => "nothing".to_owned(),
            };
            let before = if b.issued_before_ms > 0 {
                format!("issued before {}", format_ms(b.issued_before_ms))
            } else {
                "issued so far".to_owned()
            };
            with_note(
                format!("bulk revocation of {scope}, every token {before}: {} live ended", b.live_tokens_ended),
                &b.note,
            )
        }
        event::Kind::BlastRadiusRevoked(b) => {
            let credential = match &b.credential {
                Some(blast_radius_revoked::Credential::ClientId(c)) => format!("client {c}"),
                Some(blast_radius_revoked::Credential::TokenId(t)) => format!("token {}", id(t)),
                None => "nothing".to_owned(),
            };
            let window = match (b.from_ms, b.to_ms) {
                (0, i64::MAX) => "at any time".to_owned(),
                (from, i64::MAX) => format!("from {}", format_ms(from)),
                (from, to) => format!("from {} to {}", format_ms(from), format_ms(to)),
            };
            let text = format!(
                "blast-radius revocation for {credential}, minted {window}: {} tokens ended",
                b.token_ids.len()
            );
            with_note(text, &b.note)
        }
        event::Kind::ProjectionSnapshotWritten(s) => format!(
            "projection snapshot written (file format {}): covers seq {} (chain hash {}), a start from it replays from seq {}; {} live tokens, {} families, {} retry answers; {} bytes, body SHA-256 {}",
            s.file_format_version,
            s.covered_seq,
            id(&s.chain_hash),
            s.replay_from_seq,
            s.tokens,
            s.families,
            s.retry_entries,
            s.file_bytes,
            id(&s.body_sha256),
        ),
        // Kinds added later are shown generically until they get a line of their own.
        #[allow(unreachable_patterns)]
        _ => format!("{}: {}", kind_name(event), to_json(&redact(event))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ledger::{ClientCreated, CredentialDigest, KeyedDigest, credential_digest};

    #[test]
    fn credential_digests_never_leave_and_names_come_from_the_descriptors() {
        let digest = CredentialDigest {
            kind: Some(credential_digest::Kind::Keyed(KeyedDigest { key_id: 1, digest: vec![0xaa; 32] })),
        };
        let event = Event {
            kind: Some(event::Kind::ClientCreated(ClientCreated {
                client_id: "c".into(),
                secret: Some(digest),
                ..Default::default()
            })),
        };
        let redacted = redact(&event);
        let Some(event::Kind::ClientCreated(c)) = &redacted.kind else { panic!("{redacted:?}") };
        assert_eq!(c.client_id, "c");
        assert!(c.secret.is_none());
        assert_eq!(kind_name(&event), "client_created");
        let json = to_json(&redacted);
        assert_eq!(json["client_created"]["client_id"], "c");
        assert!(!json.to_string().contains("aaaa"));
        assert_eq!(parse_kind("bulk_revoked"), Some(40));
        assert_eq!(parse_kind("41"), Some(41));
        assert_eq!(parse_kind("nope"), None);
    }
}
