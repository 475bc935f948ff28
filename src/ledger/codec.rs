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

pub fn seal(prev_hash: &[u8; 32], seq: u64, recorded_at_ms: i64, transaction_id: &str, event: &Event) -> Sealed {
    let event_bytes = event.encode_to_vec();
    let hash = chain_hash(prev_hash, seq, recorded_at_ms, transaction_id, &event_bytes);
    let envelope = Envelope {
        seq,
        recorded_at_ms,
        transaction_id: transaction_id.to_owned(),
        prev_hash: prev_hash.to_vec(),
        hash: hash.to_vec(),
        event: event_bytes,
    };
    Sealed { seq, hash, bytes: envelope.encode_to_vec() }
}

/// A stored envelope, decoded and checked against its own hash.
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

/// Decodes the envelope stored under `key` and checks it in isolation (its hash and kind).
/// The link to the predecessor is checked by the caller, which knows the previous hash.
pub fn open(key: u64, bytes: &[u8]) -> Result<Opened, ChainError> {
    let envelope = Envelope::decode(bytes).map_err(|e| ChainError::Undecodable { seq: key, reason: e.to_string() })?;
    if envelope.seq != key {
        return Err(ChainError::MisplacedSeq { key, seq: key });
    }
    let seq = envelope.seq;
    let undecodable = |reason: &str| ChainError::Undecodable { seq, reason: reason.to_owned() };
    let prev_hash: [u8; 32] =
        envelope.prev_hash.as_slice().try_into().map_err(|_| undecodable("prev_hash is not 32 bytes"))?;
    let hash: [u8; 32] = envelope.hash.as_slice().try_into().map_err(|_| undecodable("hash is not 32 bytes"))?;
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
}
