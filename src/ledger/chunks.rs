//! Event chunks (ledger format 4): consecutive envelopes packed into one row of the
//! `event_chunks` table, keyed by the seq of the first.
//!
//! redb splits a full leaf into two halves by bytes, and the left half of an append-only
//! B-tree is never written again, so one row per event left every `events` page half full:
//! ~416 B of pages per 200-byte envelope (bench/README.md, "Ledger bytes per event"). A chunk
//! is filled up to [`CHUNK_BYTES`], about one page: a leaf then holds one full chunk, and the
//! append point is the last chunk, rewritten while it fills (copy-on-write rewrites that page at
//! every commit anyway).
//!
//! Layout, chunk version 1: `version (1 byte) ‖ { len (varint) ‖ envelope (len bytes) }*`. The
//! i-th envelope (from 0) is event `key + i`; a chunk holds at least one. Envelopes are stored
//! exactly as the writer sealed them (the chain hash covers the envelope's fields, not the
//! chunk), so the chunking can change without touching the chain.
//!
//! **Invariant:** the chunks' seq ranges never overlap, and each is contiguous: a seq missing
//! from the ledger is a gap between two chunks, as it was a missing row.

use prost::encoding::{decode_varint, encode_varint, encoded_len_varint};

use super::codec::ChainError;

/// The only chunk layout this build writes and reads.
pub const CHUNK_VERSION: u8 = 1;

/// The size a chunk is filled up to: a leaf of one such row (a 4-byte header, the 8-byte key,
/// a 4-byte value offset) still fits a 4 KiB page. An envelope bigger than this gets a chunk
/// of its own (redb gives it a larger page).
pub const CHUNK_BYTES: usize = 4096 - 32;

/// The most envelopes a chunk holds as the writer fills it: an envelope (a seq, two 32-byte
/// hashes and a non-empty event, each with its field key) and its length take more than 64
/// bytes. Only a bound for pre-sizing (`Snapshot::events_at_most`): readers take any count.
pub const EVENTS_PER_CHUNK_MAX: u64 = (CHUNK_BYTES / 64) as u64;

/// Appends `envelope` to `chunk` (an empty `chunk` starts a new one).
pub fn push(chunk: &mut Vec<u8>, envelope: &[u8]) {
    if chunk.is_empty() {
        chunk.push(CHUNK_VERSION);
    }
    encode_varint(envelope.len() as u64, chunk);
    chunk.extend_from_slice(envelope);
}

/// Whether `envelope_len` more bytes keep `chunk` within [`CHUNK_BYTES`].
pub fn fits(chunk: &[u8], envelope_len: usize) -> bool {
    chunk.len() + encoded_len_varint(envelope_len as u64) + envelope_len <= CHUNK_BYTES
}

/// The envelopes of the chunk stored under `first_seq`, with their seqs. A frame that does not
/// parse ends the iteration with the error, at the seq it would have been.
pub fn entries(first_seq: u64, chunk: &[u8]) -> Entries<'_> {
    match chunk.split_first() {
        Some((&CHUNK_VERSION, rest)) if !rest.is_empty() => Entries { rest, seq: first_seq, damaged: None },
        Some((&CHUNK_VERSION, _)) | None => Entries { rest: &[], seq: first_seq, damaged: Some("it is empty") },
        Some(_) => Entries { rest: &[], seq: first_seq, damaged: Some("unknown chunk version") },
    }
}

/// The number of envelopes in a chunk (an error when a frame does not parse).
pub fn count(first_seq: u64, chunk: &[u8]) -> Result<u64, ChainError> {
    let mut n = 0;
    for entry in entries(first_seq, chunk) {
        entry?;
        n += 1;
    }
    Ok(n)
}

pub struct Entries<'a> {
    rest: &'a [u8],
    seq: u64,
    damaged: Option<&'static str>,
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<(u64, &'a [u8]), ChainError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(what) = self.damaged.take() {
            self.rest = &[];
            return Some(Err(damaged(self.seq, what)));
        }
        if self.rest.is_empty() {
            return None;
        }
        let mut cursor = self.rest;
        let parsed = decode_varint(&mut cursor).ok().and_then(|len| usize::try_from(len).ok());
        let Some(len) = parsed.filter(|len| *len <= cursor.len()) else {
            self.rest = &[];
            return Some(Err(damaged(self.seq, "an envelope's length runs past the chunk")));
        };
        let (envelope, rest) = cursor.split_at(len);
        self.rest = rest;
        let seq = self.seq;
        self.seq += 1;
        Some(Ok((seq, envelope)))
    }
}

fn damaged(seq: u64, what: &str) -> ChainError {
    ChainError::Undecodable { seq, reason: format!("its stored chunk is damaged: {what}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_hold_envelopes_in_order_and_refuse_damage() {
        let envelopes: Vec<Vec<u8>> = vec![vec![1; 3], vec![2; 200], vec![3; 1]];
        let mut chunk = Vec::new();
        for envelope in &envelopes {
            assert!(fits(&chunk, envelope.len()));
            push(&mut chunk, envelope);
        }
        let read: Vec<(u64, Vec<u8>)> = entries(7, &chunk)
            .map(|entry| entry.map(|(seq, bytes)| (seq, bytes.to_vec())))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(read, vec![(7, envelopes[0].clone()), (8, envelopes[1].clone()), (9, envelopes[2].clone())]);
        assert_eq!(count(7, &chunk).unwrap(), 3);
        // Every cut inside an envelope is refused at that envelope's seq.
        for cut in [6, 7, 100, chunk.len() - 1] {
            let error = count(7, &chunk[..cut]).unwrap_err();
            assert!(matches!(error, ChainError::Undecodable { seq: 8 | 9, .. }), "cut at {cut}: {error}");
        }
        assert_eq!(count(7, &[]).unwrap_err().seq(), 7);
        assert_eq!(count(7, &[CHUNK_VERSION]).unwrap_err().seq(), 7);
        let mut newer = chunk.clone();
        newer[0] = CHUNK_VERSION + 1;
        assert!(count(7, &newer).unwrap_err().to_string().contains("unknown chunk version"));
    }

    #[test]
    fn a_chunk_fills_to_about_one_page() {
        let envelope = vec![0u8; 200];
        let mut chunk = Vec::new();
        while fits(&chunk, envelope.len()) {
            push(&mut chunk, &envelope);
        }
        assert!(chunk.len() <= CHUNK_BYTES && chunk.len() + 202 > CHUNK_BYTES, "{}", chunk.len());
        assert!(!fits(&[], CHUNK_BYTES), "a bigger envelope needs its own chunk");
    }
}
