//! The Raft log store: openraft's own storage test suite against it on a real redb ledger file,
//! what survives reopening the file, and the committed fixture of raft log format 1.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use openraft::storage::RaftLogStorage;
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, EntryPayload, RaftLogReader};
use tokenledger::ledger::{self, RaftLogError, Store, StoreError};
use tokenledger::proto::ledger::raft_entry::Payload;
use tokenledger::proto::ledger::{RaftBatch, RaftEntry, RaftLogId, RaftVote};
use tokenledger::replication::{Entry, LogId, LogStore, Membership, NodeInfo, StorageError, TypeConfig, Vote, codec};

use crate::raft_support::MemStateMachine;

/// Builds each suite case on a fresh ledger file (with its `LedgerCreated` event) in a temp dir;
/// the temp dir is the suite's guard, dropped when the case ends.
struct RedbLedger;

/// A new ledger file in `dir` and its raft log store.
fn ledger_in(dir: &Path) -> (Store, LogStore) {
    let (store, _, _) = ledger::open(&dir.join("ledger.redb"), 1_000, |_| {}).unwrap();
    let log = store.raft_log().unwrap();
    (store, LogStore::new(log))
}

impl StoreBuilder<TypeConfig, LogStore, MemStateMachine, tempfile::TempDir> for RedbLedger {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, MemStateMachine), StorageError> {
        let dir = tempfile::tempdir().unwrap();
        let (_store, log_store) = ledger_in(dir.path());
        Ok((dir, log_store, MemStateMachine::default()))
    }
}

/// openraft's `Suite::test_all`: log state, reads, limited reads, vote, append, truncate
/// (conflicts), purge, committed re-apply, membership and initial state from log and state
/// machine, snapshot transfer. Each case panics on a failed assertion.
#[test]
fn openraft_storage_suite_passes_on_a_redb_ledger_file() {
    Suite::test_all(RedbLedger).unwrap();
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn batch(index: u64) -> Entry {
    let envelopes = vec![format!("envelope {index}").into_bytes(), vec![index as u8; 64]];
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::Normal(RaftBatch { decided_term: 0, version: 1, envelopes }),
    }
}

fn membership() -> Membership {
    let nodes = BTreeMap::from([
        (1, NodeInfo { raft_addr: "10.0.0.1:7001".into() }),
        (2, NodeInfo { raft_addr: "10.0.0.2:7001".into() }),
        (3, NodeInfo { raft_addr: "10.0.0.3:7001".into() }),
        (4, NodeInfo { raft_addr: "10.0.0.4:7001".into() }),
    ]);
    Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_vote_and_committed_survive_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let entries = vec![
        Entry { log_id: log_id(1, 1), payload: EntryPayload::Membership(membership()) },
        batch(2),
        batch(3),
        Entry { log_id: log_id(2, 4), payload: EntryPayload::Blank },
    ];
    {
        let (store, mut log_store) = ledger_in(dir.path());
        let stored: Vec<RaftEntry> = entries.iter().cloned().map(codec::entry_to_stored).collect();
        store.raft_log().unwrap().append(&stored).unwrap();
        log_store.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
        log_store.save_committed(Some(log_id(1, 3))).await.unwrap();
        drop(log_store);
        store.close();
    }
    let store = Store::open(&dir.path().join("ledger.redb")).unwrap();
    let mut log_store = LogStore::new(store.raft_log().unwrap());
    assert_eq!(log_store.try_get_log_entries(0..).await.unwrap(), entries);
    assert_eq!(log_store.read_vote().await.unwrap(), Some(Vote::new_committed(2, 1)));
    assert_eq!(log_store.read_committed().await.unwrap(), Some(log_id(1, 3)));
    drop(log_store);
    store.close();
    // The ledger beside the raft tables still opens, verifies and replays.
    let (_, state, report) = ledger::open(&dir.path().join("ledger.redb"), 1_000, |_| {}).unwrap();
    assert_eq!((report.events, state.head.seq), (1, 1));
}

#[test]
fn append_refuses_overwrites_and_gaps_inside_one_append() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = ledger_in(dir.path());
    let log = store.raft_log().unwrap();
    let stored = |index| codec::entry_to_stored(batch(index));
    log.append(&[stored(5), stored(6)]).unwrap();
    let overwrite = log.append(&[stored(6), stored(7)]);
    assert!(matches!(overwrite, Err(RaftLogError::Overwrite { index: 6, last: 6 })), "{overwrite:?}");
    let gap = log.append(&[stored(7), stored(9)]);
    assert!(matches!(gap, Err(RaftLogError::NotConsecutive { index: 9, expected: 8 })), "{gap:?}");
    let indexes = |log: &ledger::RaftLog| -> Vec<u64> {
        log.entries(..).unwrap().iter().map(|e| e.log_id.as_ref().unwrap().index).collect()
    };
    assert_eq!(indexes(&log), [5, 6], "a refused append writes nothing");
    // A conflict is resolved by truncating first, then appending the leader's entries.
    log.truncate_from(6).unwrap();
    log.append(&[stored(6), stored(7)]).unwrap();
    assert_eq!(indexes(&log), [5, 6, 7]);
    log.purge_upto(&RaftLogId { term: 1, leader_node_id: 1, index: 10 }).unwrap();
    assert!(indexes(&log).is_empty());
    log.append(&[stored(11)]).unwrap();
    let state = log.state().unwrap();
    assert_eq!(state.last_purged.map(|id| id.index), Some(10));
    assert_eq!(state.last.map(|id| id.index), Some(11));
    log.purge_upto(&RaftLogId { term: 1, leader_node_id: 1, index: 3 }).unwrap();
    assert_eq!(log.state().unwrap().last_purged.map(|id| id.index), Some(10), "a purge never goes back");
    let missing_payload =
        RaftEntry { log_id: Some(RaftLogId { term: 1, leader_node_id: 1, index: 12 }), payload: None };
    assert!(matches!(log.append(&[missing_payload]), Err(RaftLogError::CorruptEntry { index: 12, .. })));
}

#[test]
fn limited_reads_stop_at_the_byte_budget_but_always_return_one_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = ledger_in(dir.path());
    let log = store.raft_log().unwrap();
    let stored: Vec<RaftEntry> = (1..=10).map(|index| codec::entry_to_stored(batch(index))).collect();
    log.append(&stored).unwrap();
    assert_eq!(log.entries_limited(1..11, 1).unwrap().len(), 1);
    let one = prost::Message::encoded_len(&stored[0]);
    assert_eq!(log.entries_limited(1..11, 3 * one).unwrap().len(), 3);
    assert_eq!(log.entries_limited(4..6, usize::MAX).unwrap().len(), 2);
    #[allow(clippy::reversed_empty_ranges)]
    let backwards = log.entries(7..3).unwrap();
    assert!(backwards.is_empty(), "a backwards range holds nothing (and does not panic)");
}

#[test]
fn a_raft_log_of_an_unknown_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.redb");
    let (store, _) = ledger_in(dir.path());
    drop(store.raft_log().unwrap());
    store.close();
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let definition: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("raft_meta");
        txn.open_table(definition).unwrap().insert("format_version", 2u32.to_be_bytes().as_slice()).unwrap();
        txn.commit().unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert!(matches!(store.raft_log(), Err(RaftLogError::UnsupportedFormat { found: 2 })));
}

// ---- The fixture of raft log format 1 ----

const RAFT_LOG_V1: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/raft-log-v1/ledger.redb");

/// What the fixture holds (see its README.md): entries 1..=6 written by leader 1 in term 1 and
/// leader 2 in term 2, purged up to 1, so 2..=6 remain.
fn fixture_entries(envelope: &[u8]) -> Vec<Entry> {
    let id = |term, node, index| LogId::new(CommittedLeaderId::new(term, node), index);
    let node = |addr: &str| NodeInfo { raft_addr: addr.into() };
    let nodes = BTreeMap::from([
        (1, node("10.0.0.1:7001")),
        (2, node("10.0.0.2:7001")),
        (3, node("10.0.0.3:7001")),
        (4, node("10.0.0.4:7001")),
    ]);
    let voters = Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes.clone());
    let joint = Membership::new(vec![BTreeSet::from([1, 2, 3]), BTreeSet::from([2, 3, 4])], nodes);
    let batch = |envelopes| EntryPayload::Normal(RaftBatch { decided_term: 0, version: 1, envelopes });
    vec![
        Entry { log_id: id(1, 1, 1), payload: EntryPayload::Blank },
        Entry { log_id: id(1, 1, 2), payload: EntryPayload::Membership(voters) },
        Entry { log_id: id(1, 1, 3), payload: batch(vec![envelope.to_vec()]) },
        Entry { log_id: id(2, 2, 4), payload: EntryPayload::Blank },
        Entry { log_id: id(2, 2, 5), payload: EntryPayload::Membership(joint) },
        Entry { log_id: id(2, 2, 6), payload: batch(vec![b"second".to_vec(), Vec::new(), vec![0xff; 40]]) },
    ]
}

/// The fixture's vote, committed and last purged ids.
fn fixture_vote() -> Vote {
    Vote::new_committed(2, 2)
}

fn the_ledger_created_envelope(store: &Store) -> Vec<u8> {
    let mut first = None;
    store
        .scan(|seq, bytes| -> Result<(), StoreError> {
            if seq == 1 {
                first = Some(bytes.to_vec());
            }
            Ok(())
        })
        .unwrap();
    first.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_log_v1_fixture_reads_back_entries_vote_and_log_state() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(RAFT_LOG_V1, dir.path().join("ledger.redb")).unwrap();
    let (store, _, report) = ledger::open(&dir.path().join("ledger.redb"), 0, |_| {}).unwrap();
    assert_eq!(report.events, 1, "the fixture's ledger holds its LedgerCreated event");
    let envelope = the_ledger_created_envelope(&store);
    let mut log_store = LogStore::new(store.raft_log().unwrap());
    let want = fixture_entries(&envelope);
    assert_eq!(log_store.try_get_log_entries(0..).await.unwrap(), want[1..]);
    assert_eq!(log_store.read_vote().await.unwrap(), Some(fixture_vote()));
    assert_eq!(log_store.read_committed().await.unwrap(), Some(want[4].log_id));
    let state = log_store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(want[0].log_id));
    assert_eq!(state.last_log_id, Some(want[5].log_id));
    // The stored bytes are exactly what this build encodes (raw check, not only a round trip).
    let stored = store.raft_log().unwrap().entries(..).unwrap();
    assert!(matches!(&stored[1].payload, Some(Payload::Batch(b)) if b.envelopes == [envelope.clone()]));
    let raw_vote = store.raft_log().unwrap().vote().unwrap();
    assert_eq!(raw_vote, Some(RaftVote { term: 2, node_id: 2, committed: true }));
}

/// Writes the fixture. Run once, by hand, for a new format version only:
/// `TOKENLEDGER_WRITE_RAFT_FIXTURE=path cargo test --test it write_raft_log_v1_fixture -- --ignored`.
/// It refuses to overwrite a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes a fixture file; run by hand only"]
async fn write_raft_log_v1_fixture() {
    let path = std::path::PathBuf::from(std::env::var("TOKENLEDGER_WRITE_RAFT_FIXTURE").unwrap());
    assert!(!path.exists(), "refusing to overwrite {}", path.display());
    let (store, _, _) = ledger::open(&path, 1_767_225_600_000, |_| {}).unwrap();
    let envelope = the_ledger_created_envelope(&store);
    let mut log_store = LogStore::new(store.raft_log().unwrap());
    let entries = fixture_entries(&envelope);
    log_store.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
    let stored: Vec<RaftEntry> = entries[..3].iter().cloned().map(codec::entry_to_stored).collect();
    store.raft_log().unwrap().append(&stored).unwrap();
    log_store.save_vote(&fixture_vote()).await.unwrap();
    let stored: Vec<RaftEntry> = entries[3..].iter().cloned().map(codec::entry_to_stored).collect();
    store.raft_log().unwrap().append(&stored).unwrap();
    log_store.save_committed(Some(entries[4].log_id)).await.unwrap();
    log_store.purge(entries[0].log_id).await.unwrap();
    drop(log_store);
    store.close();
}
