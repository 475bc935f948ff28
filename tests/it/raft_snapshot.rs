//! The Raft snapshot stream, version 1 (`TLRAFTS1`, `replication::state_machine`): the bytes a
//! leader sends a node that must catch up past its purged log, written to and read from files in
//! the data directories. The fixture `tests/fixtures/raft-snapshot-v1.stream` is the stream of
//! the format-4 fixture ledger: a leader on that ledger reproduces it byte for byte, and an empty
//! node installs it into the same events, chain head and projections as a replay of the ledger.

use std::io::Read as _;
use std::sync::Arc;

use openraft::storage::RaftStateMachine as _;
use openraft::{CommittedLeaderId, EntryPayload, LogId, RaftSnapshotBuilder as _, SnapshotMeta};
use parking_lot::RwLock;
use tokenledger::domain::hex;
use tokenledger::ledger::replicated;
use tokenledger::replication::state_machine::LedgerMachine;
use tokenledger::replication::{Entry, NodeId, NodeInfo};
use tokio::io::AsyncWriteExt as _;

use crate::formats::{EXPECTED_V4_EVENTS, EXPECTED_V4_HEAD, FORMAT_V4, copy_fixture};
use crate::replicated::envelopes_of;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/raft-snapshot-v1.stream");

/// A state machine over the ledger in `dir` (opened as a cluster replica; empty if there is none).
fn machine_in(dir: &std::path::Path) -> LedgerMachine {
    let (store, state) = replicated::open_replica(&dir.join("ledger.redb"), |_| {}).unwrap();
    LedgerMachine::new(store, Arc::new(RwLock::new(state)), dir).unwrap()
}

/// A state machine over a copy of the format-4 fixture ledger.
fn fixture_machine() -> (tempfile::TempDir, LedgerMachine) {
    let dir = copy_fixture(FORMAT_V4);
    let machine = machine_in(dir.path());
    (dir, machine)
}

/// What openraft passes with the fixture stream when it installs it.
fn fixture_meta() -> SnapshotMeta<NodeId, NodeInfo> {
    SnapshotMeta {
        last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), 9)),
        last_membership: Default::default(),
        snapshot_id: "fixture".to_owned(),
    }
}

/// The stream a leader on the fixture ledger sends (once a Raft entry was applied there, so
/// its applied record names the ledger's head).
async fn fixture_stream() -> Vec<u8> {
    let (_dir, mut machine) = fixture_machine();
    let blank = Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), 1), payload: EntryPayload::Blank };
    machine.apply([blank]).await.unwrap();
    machine.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let current = machine.get_current_snapshot().await.unwrap().expect("a snapshot after the build");
    let mut bytes = Vec::new();
    current.snapshot.into_reader().await.unwrap().read_to_end(&mut bytes).unwrap();
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_snapshot_stream_v1_fixture_is_reproduced_and_installs_into_the_same_ledger() {
    let fixture = std::fs::read(FIXTURE).unwrap();
    assert_eq!(&fixture[..8], b"TLRAFTS1");
    assert_eq!(fixture_stream().await, fixture, "the stream of the fixture ledger is the fixture");

    // An empty node receives it as openraft delivers it (chunks written to the receiving
    // file), then installs it.
    let dir = tempfile::tempdir().unwrap();
    let mut machine = machine_in(dir.path());
    let mut receiving = machine.begin_receiving_snapshot().await.unwrap();
    for chunk in fixture.chunks(1000) {
        receiving.write_all(chunk).await.unwrap();
    }
    assert!(!dir.path().join("raft-snapshot.receiving").exists(), "the copy being received has no name");
    let meta = fixture_meta();
    machine.install_snapshot(&meta, receiving).await.unwrap();
    let state = machine.state().read().clone();
    assert_eq!((state.head.seq, hex(&state.head.hash)), (EXPECTED_V4_EVENTS, EXPECTED_V4_HEAD.to_owned()));
    let (source_dir, source) = fixture_machine();
    assert_eq!(envelopes_of(machine.store()), envelopes_of(source.store()), "the same events, byte for byte");
    assert!(state == *source.state().read(), "the same projections as a replay of the ledger");
    assert!(!dir.path().join("raft-snapshot.receiving").exists(), "the received copy is removed once installed");
    assert_eq!(machine.applied_state().await.unwrap().0, meta.last_log_id);
    // And the same index: an audit query answers alike on the node that installed the stream
    // (a revocation's entries come from the token it names, issued earlier in the stream).
    drop((machine, source));
    // Token entries are keyed by each file's own mask of the token ids (`ledger::token_ids`),
    // so those are compared by number; every other entry byte for byte.
    let entries = |path: &std::path::Path| {
        let all = tokenledger::ledger::raw::index_entries(&redb::Database::open(path).unwrap()).unwrap();
        let token = tokenledger::ledger::index::IndexKind::Token as u8;
        let (tokens, mut others): (Vec<_>, Vec<_>) = all.into_iter().partition(|entry| entry.first() == Some(&token));
        others.sort();
        (tokens.len(), others)
    };
    assert_eq!(
        entries(&dir.path().join("ledger.redb")),
        entries(&source_dir.path().join("ledger.redb")),
        "the same index entries as the ledger the stream came from"
    );

    // A damaged stream is refused and nothing of it is applied.
    let dir = tempfile::tempdir().unwrap();
    let mut machine = machine_in(dir.path());
    let mut receiving = machine.begin_receiving_snapshot().await.unwrap();
    receiving.write_all(&fixture[..fixture.len() - 1]).await.unwrap();
    assert!(machine.install_snapshot(&meta, receiving).await.is_err(), "a truncated stream installs");
}

/// A transfer that never ends (the leader stopped sending, or sends a newer snapshot) and a copy
/// kept on disk by an earlier build leave nothing in the data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_snapshot_transfer_leaves_no_file() {
    let fixture = std::fs::read(FIXTURE).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let receiving_path = dir.path().join("raft-snapshot.receiving");
    std::fs::write(&receiving_path, &fixture).unwrap();
    let mut machine = machine_in(dir.path());
    assert!(!receiving_path.exists(), "a copy left on disk is removed when the node opens");
    for _ in 0..2 {
        let mut receiving = machine.begin_receiving_snapshot().await.unwrap();
        receiving.write_all(&fixture[..fixture.len() / 2]).await.unwrap();
        drop(receiving);
    }
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|name| !name.starts_with("raft-snapshot")), "left behind: {names:?}");
    // The node still installs a whole stream afterwards.
    let mut receiving = machine.begin_receiving_snapshot().await.unwrap();
    receiving.write_all(&fixture).await.unwrap();
    let meta = fixture_meta();
    machine.install_snapshot(&meta, receiving).await.unwrap();
    assert_eq!(machine.state().read().head.seq, EXPECTED_V4_EVENTS);
}

/// Writes `tests/fixtures/raft-snapshot-v1.stream` from the format-4 fixture. Run once, by hand,
/// for a new stream version only:
/// `TOKENLEDGER_WRITE_RAFT_SNAPSHOT_V1=file cargo test --test it write_raft_snapshot_v1_fixture -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes a fixture; run by hand only"]
async fn write_raft_snapshot_v1_fixture() {
    let out = std::path::PathBuf::from(std::env::var("TOKENLEDGER_WRITE_RAFT_SNAPSHOT_V1").unwrap());
    assert!(!out.exists(), "refusing to overwrite {}", out.display());
    std::fs::write(out, fixture_stream().await).unwrap();
}
