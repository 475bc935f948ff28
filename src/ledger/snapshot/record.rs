//! The ledger's record of a projection snapshot: the `ProjectionSnapshotWritten` event (kind
//! 50, ledger format 3) a single node appends through its writer once a snapshot file is in
//! place, and how a start-up finds the event that recorded the file it loaded.
//!
//! **Finding it is one index range read, not a scan.** Every event kind but `TokensIssued` has
//! an event-kind index entry (`index::kind_is_indexed`), so the records are the entries of
//! (event kind, 50). A file's record comes after the seq it covers (it is appended after the
//! rename), so only the entries after `covered_seq` are read, newest first, until one matches:
//! normally the first.
//!
//! **What ties an event to a file:** the covered seq and its chain hash, the seq a start
//! replays from, the body's SHA-256 (the header's, which every load recomputes in its one pass
//! over the file and checks; no second hash of the file is needed), the file's size and format
//! version, and the counts of the header. A file that loads and matches is byte for byte the
//! one recorded, but for a header identical in every field checked.

use super::{SNAPSHOT_FILE_VERSION, SNAPSHOT_HEADER_LEN, SnapshotHeader};
use crate::ledger::codec;
use crate::ledger::index::IndexKind;
use crate::ledger::reader::{ReadError, Snapshot};
use crate::proto::ledger::{ProjectionSnapshotWritten, event};

/// The kind number of `ProjectionSnapshotWritten` (its field number in `Event.kind`).
pub const RECORD_KIND: u8 = 50;

/// The record of a file with `header` (format [`SNAPSHOT_FILE_VERSION`]), written in
/// `write_ms` milliseconds.
pub fn record_of(header: &SnapshotHeader, write_ms: u64) -> ProjectionSnapshotWritten {
    ProjectionSnapshotWritten {
        covered_seq: header.ledger_seq,
        chain_hash: header.chain_hash.to_vec(),
        replay_from_seq: header.replay_from_seq,
        file_format_version: SNAPSHOT_FILE_VERSION,
        body_sha256: header.body_sha256.to_vec(),
        file_bytes: file_bytes(header),
        tokens: header.tokens,
        families: header.families,
        retry_entries: header.retry_entries,
        write_ms,
    }
}

/// The size of the file `header` heads.
pub fn file_bytes(header: &SnapshotHeader) -> u64 {
    SNAPSHOT_HEADER_LEN as u64 + header.body_len
}

/// Does `record` describe the format-3 file with `header`?
pub fn matches(record: &ProjectionSnapshotWritten, header: &SnapshotHeader) -> bool {
    record.covered_seq == header.ledger_seq
        && record.chain_hash == header.chain_hash
        && record.replay_from_seq == header.replay_from_seq
        && record.file_format_version == SNAPSHOT_FILE_VERSION
        && record.body_sha256 == header.body_sha256
        && record.file_bytes == file_bytes(header)
        && (record.tokens, record.families, record.retry_entries)
            == (header.tokens, header.families, header.retry_entries)
}

/// The seq of the latest event that recorded the file with `header`, if this ledger holds one
/// (see the module comment). An entry whose event does not open (a damaged ledger) is skipped:
/// the chain checks report it.
pub fn find(snapshot: &Snapshot, header: &SnapshotHeader) -> Result<Option<u64>, ReadError> {
    let after = header.ledger_seq;
    let mut below = u64::MAX;
    while let Some(seq) = snapshot.index_last(IndexKind::EventKind, &[RECORD_KIND], below)? {
        if seq <= after {
            break;
        }
        let recorded = snapshot.envelope(seq)?.and_then(|bytes| codec::open(seq, &bytes).ok());
        if let Some(Some(event::Kind::ProjectionSnapshotWritten(record))) = recorded.map(|o| o.event.kind)
            && matches(&record, header)
        {
            return Ok(Some(seq));
        }
        below = seq - 1;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::index;

    fn header() -> SnapshotHeader {
        SnapshotHeader {
            ledger_seq: 41,
            chain_hash: [7; 32],
            replay_from_seq: 40,
            body_len: 1000,
            body_sha256: [9; 32],
            tokens: 12,
            families: 3,
            retry_entries: 5,
        }
    }

    #[test]
    fn the_record_matches_its_header_and_no_other() {
        let header = header();
        let record = &record_of(&header, 17);
        let event = crate::proto::ledger::Event { kind: Some(event::Kind::ProjectionSnapshotWritten(record.clone())) };
        assert_eq!(index::kind_number(&event), RECORD_KIND);
        assert_eq!(record.file_bytes, 1160);
        assert!(matches(record, &header));
        let others = [
            SnapshotHeader { ledger_seq: 42, ..header },
            SnapshotHeader { chain_hash: [8; 32], ..header },
            SnapshotHeader { replay_from_seq: 41, ..header },
            SnapshotHeader { body_len: 1001, ..header },
            SnapshotHeader { body_sha256: [0; 32], ..header },
            SnapshotHeader { tokens: 13, ..header },
            SnapshotHeader { families: 4, ..header },
            SnapshotHeader { retry_entries: 6, ..header },
        ];
        for other in others {
            assert!(!matches(record, &other), "{other:?}");
        }
        let older = ProjectionSnapshotWritten { file_format_version: 2, ..record.clone() };
        assert!(!matches(&older, &header));
    }
}
