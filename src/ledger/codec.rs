//! Envelopes and the hash chain. See docs/design.md for the byte layout.

use prost::Message;
use ring::digest;

use crate::proto::ledger::{Envelope, Event};

/// Domain separation for the chain hash, versioned with the format.
const HASH_LABEL: &[u8] = b"tokenledger-event-v1";

/// `hash = SHA-256(label ‖ prev_hash ‖ seq ‖ recorded_at_ms ‖ len(txid) ‖ txid ‖ event)`.
pub fn chain_hash(prev_hash: &[u8; 32], seq: u64, recorded_at_ms: i64, transaction_id: &str, event: &[u8]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(HASH_LABEL);
    ctx.update(prev_hash);
    ctx.update(&seq.to_be_bytes());
    ctx.update(&recorded_at_ms.to_be_bytes());
    ctx.update(&(transaction_id.len() as u32).to_be_bytes());
    ctx.update(transaction_id.as_bytes());
    ctx.update(event);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// An event ready to store: its envelope bytes and its place in the chain.
pub struct Sealed {
    pub seq: u64,
    pub hash: [u8; 32],
    pub bytes: Vec<u8>,
}

/// Seals an event in its stored form (format 2: a canonical UUID transaction id as 16 bytes).
pub fn seal(prev_hash: &[u8; 32], seq: u64, recorded_at_ms: i64, transaction_id: &str, event: &Event) -> Sealed {
    seal_as(prev_hash, seq, recorded_at_ms, transaction_id, event, true)
}

/// Seals an event in the canonical form other nodes receive (a Raft batch): the transaction
/// id as text, as in format 1, so the replicated payload is the same for every build.
pub fn seal_canonical(
    prev_hash: &[u8; 32],
    seq: u64,
    recorded_at_ms: i64,
    transaction_id: &str,
    event: &Event,
) -> Sealed {
    seal_as(prev_hash, seq, recorded_at_ms, transaction_id, event, false)
}

fn seal_as(
    prev_hash: &[u8; 32],
    seq: u64,
    recorded_at_ms: i64,
    transaction_id: &str,
    event: &Event,
    compact: bool,
) -> Sealed {
    let event_bytes = event.encode_to_vec();
    let hash = chain_hash(prev_hash, seq, recorded_at_ms, transaction_id, &event_bytes);
    let mut envelope = Envelope {
        seq,
        recorded_at_ms,
        transaction_id: String::new(),
        prev_hash: prev_hash.to_vec(),
        hash: hash.to_vec(),
        event: event_bytes,
        transaction_uuid: Vec::new(),
    };
    match compact_transaction_id(transaction_id).filter(|_| compact) {
        Some(uuid) => envelope.transaction_uuid = uuid.to_vec(),
        None => envelope.transaction_id = transaction_id.to_owned(),
    }
    Sealed { seq, hash, bytes: envelope.encode_to_vec() }
}

/// The stored form of an opened envelope (what [`seal`] would have written for it): how a
/// replicated envelope, received in canonical form, is stored.
pub fn stored_form(opened: &Opened) -> Vec<u8> {
    let mut envelope = opened.envelope.clone();
    if let Some(uuid) = compact_transaction_id(&envelope.transaction_id) {
        envelope.transaction_id = String::new();
        envelope.transaction_uuid = uuid.to_vec();
    }
    envelope.encode_to_vec()
}

/// The canonical form of stored envelope bytes (the transaction id as text), for envelopes that
/// leave the store: audit reads, Raft snapshots. Bytes in canonical form, and bytes that do not
/// decode, are returned as they are (opening them reports what is wrong).
pub fn canonical_bytes(stored: Vec<u8>) -> Vec<u8> {
    let Ok(mut envelope) = Envelope::decode(stored.as_slice()) else { return stored };
    if envelope.transaction_uuid.is_empty() || !envelope.transaction_id.is_empty() {
        return stored;
    }
    let Ok(uuid) = uuid::Uuid::from_slice(&envelope.transaction_uuid) else { return stored };
    envelope.transaction_id = uuid.hyphenated().to_string();
    envelope.transaction_uuid = Vec::new();
    envelope.encode_to_vec()
}

/// The 16 bytes of `id` when it is a UUID written canonically (36 characters, lower-case,
/// hyphenated), so that formatting them back gives `id` exactly; `None` for anything else.
fn compact_transaction_id(id: &str) -> Option<[u8; 16]> {
    if id.len() != 36 {
        return None;
    }
    let uuid = uuid::Uuid::try_parse(id).ok()?;
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    (&*uuid.hyphenated().encode_lower(&mut text) == id).then(|| *uuid.as_bytes())
}

/// A stored envelope, decoded and checked against its own hash. `envelope` is in canonical
/// form: `transaction_id` holds the text, `transaction_uuid` is empty.
#[derive(Clone, Debug)]
pub struct Opened {
    pub envelope: Envelope,
    pub event: Event,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

/// Why a stored event cannot be trusted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("event {seq}: the stored bytes do not decode ({reason})")]
    Undecodable { seq: u64, reason: String },
    #[error("event {seq}: stored under key {key}: an event was moved or reordered")]
    MisplacedSeq { key: u64, seq: u64 },
    #[error("event {seq}: expected sequence number {expected}: an event was dropped or reordered")]
    Gap { seq: u64, expected: u64 },
    #[error("event {seq}: its prev_hash does not match the previous event's hash: the chain is broken")]
    BrokenLink { seq: u64 },
    #[error("event {seq}: its content does not match its hash: the event was changed")]
    HashMismatch { seq: u64 },
    #[error("event {seq}: unknown event kind (written by a newer tokenledger?)")]
    UnknownKind { seq: u64 },
}

impl ChainError {
    /// The first sequence number that failed the check.
    pub fn seq(&self) -> u64 {
        match self {
            Self::Undecodable { seq, .. }
            | Self::MisplacedSeq { seq, .. }
            | Self::Gap { seq, .. }
            | Self::BrokenLink { seq }
            | Self::HashMismatch { seq }
            | Self::UnknownKind { seq } => *seq,
        }
    }
}

/// Decodes the envelope stored under `key` (either form: stored or canonical) and checks it in
/// isolation (its hash and kind); the opened envelope is in canonical form (the transaction id
/// as text). The link to the predecessor is checked by the caller, which knows the previous hash.
pub fn open(key: u64, bytes: &[u8]) -> Result<Opened, ChainError> {
    let mut envelope =
        Envelope::decode(bytes).map_err(|e| ChainError::Undecodable { seq: key, reason: e.to_string() })?;
    if envelope.seq != key {
        return Err(ChainError::MisplacedSeq { key, seq: key });
    }
    let seq = envelope.seq;
    let undecodable = |reason: &str| ChainError::Undecodable { seq, reason: reason.to_owned() };
    let prev_hash: [u8; 32] =
        envelope.prev_hash.as_slice().try_into().map_err(|_| undecodable("prev_hash is not 32 bytes"))?;
    let hash: [u8; 32] = envelope.hash.as_slice().try_into().map_err(|_| undecodable("hash is not 32 bytes"))?;
    if !envelope.transaction_uuid.is_empty() {
        // Format 2: the transaction id stored as a UUID's bytes; opened, it is the text again.
        let uuid = uuid::Uuid::from_slice(&envelope.transaction_uuid)
            .map_err(|_| undecodable("transaction_uuid is not 16 bytes"))?;
        if !envelope.transaction_id.is_empty() {
            return Err(undecodable("both transaction_id and transaction_uuid are set"));
        }
        envelope.transaction_id = uuid.hyphenated().to_string();
        envelope.transaction_uuid = Vec::new();
    }
    if chain_hash(&prev_hash, seq, envelope.recorded_at_ms, &envelope.transaction_id, &envelope.event) != hash {
        return Err(ChainError::HashMismatch { seq });
    }
    let event =
        Event::decode(envelope.event.as_slice()).map_err(|e| ChainError::Undecodable { seq, reason: e.to_string() })?;
    if event.kind.is_none() {
        return Err(ChainError::UnknownKind { seq });
    }
    Ok(Opened { envelope, event, prev_hash, hash })
}

/// A stored envelope checked by [`open_into`]: its place in the chain and where its
/// transaction id went; the event itself is decoded into the caller's slot.
#[derive(Clone, Copy, Debug)]
pub struct Checked {
    pub seq: u64,
    pub recorded_at_ms: i64,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

/// What [`open`] does, without the envelope's allocations: the envelope is read in place
/// (borrowed from `bytes`), its transaction id appended to `text` in canonical form (the text),
/// and the event decoded from its bytes in `bytes`. The result is the same as [`open`]'s for any
/// input: anything this reader does not take as it stands (a field this build does not know,
/// a wire type it does not expect, and every failure) goes through [`open`] itself, whose
/// answer (the error included) is returned.
pub fn open_into(key: u64, bytes: &[u8], text: &mut String) -> Result<(Checked, Event), ChainError> {
    if let Some(fields) = EnvelopeFields::read(bytes)
        && let Some(opened) = fields.check(key, text)
    {
        return Ok(opened);
    }
    let opened = open(key, bytes)?;
    text.push_str(&opened.envelope.transaction_id);
    let checked = Checked {
        seq: opened.envelope.seq,
        recorded_at_ms: opened.envelope.recorded_at_ms,
        prev_hash: opened.prev_hash,
        hash: opened.hash,
    };
    Ok((checked, opened.event))
}

/// The fields of a stored envelope, borrowed (field numbers as in `Envelope`; a field given
/// twice keeps its last value, as prost does).
#[derive(Default)]
struct EnvelopeFields<'a> {
    seq: u64,
    recorded_at_ms: i64,
    transaction_id: &'a [u8],
    prev_hash: &'a [u8],
    hash: &'a [u8],
    event: &'a [u8],
    transaction_uuid: &'a [u8],
}

impl<'a> EnvelopeFields<'a> {
    /// `None` for anything but known fields of the expected wire types that parse.
    fn read(mut bytes: &'a [u8]) -> Option<Self> {
        use prost::encoding::{WireType, decode_varint};
        let mut fields = Self::default();
        while !bytes.is_empty() {
            let key = decode_varint(&mut bytes).ok()?;
            let (tag, wire) = (key >> 3, key & 7);
            if wire == WireType::Varint as u64 {
                let value = decode_varint(&mut bytes).ok()?;
                match tag {
                    1 => fields.seq = value,
                    2 => fields.recorded_at_ms = value as i64,
                    _ => return None,
                }
            } else if wire == WireType::LengthDelimited as u64 {
                let len = usize::try_from(decode_varint(&mut bytes).ok()?).ok()?;
                let (value, rest) = bytes.split_at_checked(len)?;
                bytes = rest;
                match tag {
                    3 => fields.transaction_id = value,
                    4 => fields.prev_hash = value,
                    5 => fields.hash = value,
                    6 => fields.event = value,
                    7 => fields.transaction_uuid = value,
                    _ => return None,
                }
            } else {
                return None;
            }
        }
        Some(fields)
    }

    /// [`open`]'s checks on the fields; `None` when any fails (then [`open`] says which). The
    /// transaction id is appended to `text` only on success.
    fn check(&self, key: u64, text: &mut String) -> Option<(Checked, Event)> {
        if self.seq != key {
            return None;
        }
        let prev_hash: [u8; 32] = self.prev_hash.try_into().ok()?;
        let hash: [u8; 32] = self.hash.try_into().ok()?;
        let mut uuid_text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let transaction_id: &str = if self.transaction_uuid.is_empty() {
            std::str::from_utf8(self.transaction_id).ok()?
        } else {
            if !self.transaction_id.is_empty() {
                return None;
            }
            let uuid = uuid::Uuid::from_slice(self.transaction_uuid).ok()?;
            uuid.hyphenated().encode_lower(&mut uuid_text)
        };
        if chain_hash(&prev_hash, self.seq, self.recorded_at_ms, transaction_id, self.event) != hash {
            return None;
        }
        let event = Event::decode(self.event).ok()?;
        event.kind.as_ref()?;
        text.push_str(transaction_id);
        Some((Checked { seq: self.seq, recorded_at_ms: self.recorded_at_ms, prev_hash, hash }, event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ledger::{LedgerCreated, event};

    fn created() -> Event {
        Event {
            kind: Some(event::Kind::LedgerCreated(LedgerCreated { format_version: 1, software_version: "t".into() })),
        }
    }

    #[test]
    fn sealed_events_open_and_chain() {
        let first = seal(&[0; 32], 1, 10, "tx", &created());
        let opened = open(1, &first.bytes).unwrap();
        assert_eq!(opened.hash, first.hash);
        assert_eq!(opened.prev_hash, [0; 32]);
        let second = seal(&first.hash, 2, 11, "", &created());
        assert_eq!(open(2, &second.bytes).unwrap().prev_hash, first.hash);
    }

    #[test]
    fn any_changed_field_is_detected() {
        let sealed = seal(&[0; 32], 1, 10, "tx", &created());
        let mut envelope = Envelope::decode(sealed.bytes.as_slice()).unwrap();
        envelope.recorded_at_ms += 1;
        assert_eq!(open(1, &envelope.encode_to_vec()).unwrap_err(), ChainError::HashMismatch { seq: 1 });
        let mut envelope = Envelope::decode(sealed.bytes.as_slice()).unwrap();
        envelope.transaction_id.push('x');
        assert_eq!(open(1, &envelope.encode_to_vec()).unwrap_err(), ChainError::HashMismatch { seq: 1 });
        assert!(matches!(open(2, &sealed.bytes), Err(ChainError::MisplacedSeq { .. })));
        assert!(matches!(open(1, b"\xff\xff"), Err(ChainError::Undecodable { .. })));
    }

    const UUID: &str = "0f8e2a4c-1b3d-4e5f-a6b7-c8d9e0f1a2b3";

    #[test]
    fn a_canonical_uuid_transaction_id_is_stored_as_16_bytes_and_hashes_as_its_text() {
        let stored = seal(&[7; 32], 3, 10, UUID, &created());
        let canonical = seal_canonical(&[7; 32], 3, 10, UUID, &created());
        assert_eq!(stored.hash, canonical.hash, "the hash covers the text in both forms");
        assert_eq!(stored.hash, chain_hash(&[7; 32], 3, 10, UUID, &created().encode_to_vec()));
        assert_eq!(canonical.bytes.len() - stored.bytes.len(), 20, "36 characters become 16 bytes");
        let envelope = Envelope::decode(stored.bytes.as_slice()).unwrap();
        assert!(envelope.transaction_id.is_empty());
        assert_eq!(envelope.transaction_uuid, uuid::Uuid::parse_str(UUID).unwrap().as_bytes().to_vec());
        for bytes in [&stored.bytes, &canonical.bytes] {
            let opened = open(3, bytes).unwrap();
            assert_eq!(opened.envelope.transaction_id, UUID);
            assert!(opened.envelope.transaction_uuid.is_empty(), "opened envelopes are canonical");
            assert_eq!(opened.hash, stored.hash);
            assert_eq!(stored_form(&opened), stored.bytes);
            assert_eq!(opened.envelope.encode_to_vec(), canonical.bytes);
            assert_eq!(canonical_bytes(bytes.clone()), canonical.bytes);
        }
    }

    #[test]
    fn other_transaction_ids_stay_text() {
        let upper = UUID.to_uppercase();
        let braced = format!("{{{UUID}}}");
        let simple = UUID.replace('-', "");
        for id in ["", "tx-1", upper.as_str(), braced.as_str(), simple.as_str(), "0f8e2a4c-1b3d-4e5f-a6b7-c8d9e0f1a2bz"]
        {
            let sealed = seal(&[0; 32], 1, 10, id, &created());
            let envelope = Envelope::decode(sealed.bytes.as_slice()).unwrap();
            assert_eq!(envelope.transaction_id, id);
            assert!(envelope.transaction_uuid.is_empty(), "{id}");
            assert_eq!(open(1, &sealed.bytes).unwrap().envelope.transaction_id, id);
        }
    }

    #[test]
    fn a_changed_or_malformed_transaction_uuid_is_refused() {
        let sealed = seal(&[0; 32], 1, 10, UUID, &created());
        let mut envelope = Envelope::decode(sealed.bytes.as_slice()).unwrap();
        envelope.transaction_uuid[3] ^= 1;
        assert_eq!(open(1, &envelope.encode_to_vec()).unwrap_err(), ChainError::HashMismatch { seq: 1 });
        let mut envelope = Envelope::decode(sealed.bytes.as_slice()).unwrap();
        envelope.transaction_uuid.pop();
        assert!(matches!(open(1, &envelope.encode_to_vec()), Err(ChainError::Undecodable { .. })));
        let mut envelope = Envelope::decode(sealed.bytes.as_slice()).unwrap();
        envelope.transaction_id = UUID.to_owned();
        assert!(matches!(open(1, &envelope.encode_to_vec()), Err(ChainError::Undecodable { .. })));
    }

    /// What an open gives: seq, recorded time, transaction id, prev hash, hash, event.
    type Answer = Result<(u64, i64, String, [u8; 32], [u8; 32], Event), ChainError>;

    /// [`open_into`]'s answer, in [`open`]'s terms.
    fn opened_into(key: u64, bytes: &[u8]) -> Answer {
        let mut text = String::from("before");
        let (checked, event) = open_into(key, bytes, &mut text)?;
        let id = text.strip_prefix("before").expect("appended").to_owned();
        Ok((checked.seq, checked.recorded_at_ms, id, checked.prev_hash, checked.hash, event))
    }

    fn opened(key: u64, bytes: &[u8]) -> Answer {
        let o = open(key, bytes)?;
        Ok((o.envelope.seq, o.envelope.recorded_at_ms, o.envelope.transaction_id, o.prev_hash, o.hash, o.event))
    }

    fn issued() -> Event {
        use crate::proto::ledger::{IssuedToken, TokensIssued};
        Event {
            kind: Some(event::Kind::TokensIssued(TokensIssued {
                grant_type: 2,
                client_id: "client".into(),
                institution_id: "bank".into(),
                login_id: "alice".into(),
                family_id: vec![7; 16],
                access: Some(IssuedToken {
                    token_id: vec![1; 16],
                    expires_at_ms: 99,
                    scopes: vec!["a".into(), "b".into()],
                }),
                refresh: Some(IssuedToken { token_id: vec![2; 16], expires_at_ms: 999, scopes: vec![] }),
                request_fingerprint: vec![3; 32],
                issued_at_ms: 5,
                ..Default::default()
            })),
        }
    }

    /// Stored envelopes in both forms, and the ways a stored envelope can be odd or damaged:
    /// the borrowed reader gives what `open` gives, the error included.
    #[test]
    fn open_into_answers_as_open_does() {
        let mut cases: Vec<(u64, Vec<u8>)> = Vec::new();
        for id in [UUID, "", "tx-1", "0F8E2A4C-1B3D-4E5F-A6B7-C8D9E0F1A2B3"] {
            for event in [created(), issued()] {
                cases.push((3, seal(&[7; 32], 3, 10, id, &event).bytes));
                cases.push((3, seal_canonical(&[7; 32], 3, -10, id, &event).bytes));
            }
        }
        let good = seal(&[7; 32], 3, 10, UUID, &issued()).bytes;
        let envelope = Envelope::decode(good.as_slice()).unwrap();
        let mut changed = |f: &dyn Fn(&mut Envelope)| {
            let mut e = envelope.clone();
            f(&mut e);
            cases.push((3, e.encode_to_vec()));
        };
        changed(&|e| e.seq = 4);
        changed(&|e| e.recorded_at_ms += 1);
        changed(&|e| e.prev_hash.pop().map(drop).unwrap_or(()));
        changed(&|e| e.hash[0] ^= 1);
        changed(&|e| e.transaction_id = UUID.into());
        changed(&|e| e.transaction_uuid.truncate(15));
        changed(&|e| e.event = b"\xff\xff".to_vec());
        changed(&|e| e.event.clear());
        cases.push((4, good.clone()));
        // Every cut, every byte flipped, and bytes appended: an unknown field, a field given
        // twice (the last one counts, as in prost), a wire type that does not fit.
        for cut in 0..good.len() {
            cases.push((3, good[..cut].to_vec()));
        }
        for at in 0..good.len() {
            let mut flipped = good.clone();
            flipped[at] ^= 0x41;
            cases.push((3, flipped));
        }
        for tail in [&[0x40u8, 1][..], &[0x08, 3], &[0x08, 4], &[0x10, 10], &[0x10, 11], &[0x0a, 0], &[0x1a, 1, b'x']] {
            let mut more = good.clone();
            more.extend_from_slice(tail);
            cases.push((3, more));
        }
        let mut invalid_utf8 = Envelope::decode(seal(&[7; 32], 3, 10, "tx", &created()).bytes.as_slice()).unwrap();
        invalid_utf8.transaction_id.clear();
        let mut bytes = invalid_utf8.encode_to_vec();
        bytes.extend_from_slice(&[0x1a, 2, 0xc3, 0x28]);
        cases.push((3, bytes));
        for (key, bytes) in &cases {
            assert_eq!(opened_into(*key, bytes), opened(*key, bytes), "key {key}, bytes {bytes:?}");
        }
        assert!(cases.iter().filter(|(key, bytes)| opened(*key, bytes).is_ok()).count() >= 16);
        // What the writer stores is read in place, not through `open`.
        for (key, bytes) in cases.iter().take(16) {
            let fields = EnvelopeFields::read(bytes).expect("the writer's envelopes parse in place");
            assert!(fields.check(*key, &mut String::new()).is_some());
        }
        assert!(cases.iter().filter(|(key, bytes)| opened(*key, bytes).is_err()).count() >= 100);
    }

    proptest::proptest! {
        /// Random changes to a stored envelope: the same answer as `open`.
        #[test]
        fn open_into_answers_as_open_does_for_random_changes(
            changes in proptest::collection::vec((0usize..400, proptest::num::u8::ANY), 1..4),
            extra in proptest::collection::vec(proptest::num::u8::ANY, 0..6),
        ) {
            let mut bytes = seal(&[9; 32], 12, 1_700_000_000_000, UUID, &issued()).bytes;
            for (at, value) in changes {
                let len = bytes.len();
                if let Some(byte) = bytes.get_mut(at % len) {
                    *byte = value;
                }
            }
            bytes.extend_from_slice(&extra);
            proptest::prop_assert_eq!(opened_into(12, &bytes), opened(12, &bytes));
        }
    }
}
