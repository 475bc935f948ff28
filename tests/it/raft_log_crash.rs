//! Crash tests of the Raft log: the ledger file on a redb backend that freezes the durable image
//! at every `sync_data` (`crash_storage::FreezingBackend`), then every image reopened. What a
//! power loss can leave is exactly one of those images.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::{Config, Raft};
use tokenledger::ledger::{self, RaftLog, Store};
use tokenledger::proto::ledger::raft_entry::Payload;
use tokenledger::proto::ledger::{RaftBatch, RaftBlank, RaftEntry, RaftLogId, RaftVote};
use tokenledger::replication::{LogStore, NodeInfo, RAFT_BATCH_VERSION, TypeConfig};

use crate::crash_storage::FreezingBackend;
use crate::raft_support::{MemStateMachine, NoPeers};

/// Opens one frozen image as a ledger file and hands out its raft log.
fn reopen(image: Vec<u8>, what: &str) -> (Store, RaftLog) {
    let mut db = redb::Database::builder()
        .create_with_backend(FreezingBackend::from_image(image))
        .unwrap_or_else(|e| panic!("{what} does not open: {e}"));
    assert!(db.check_integrity().unwrap(), "{what} fails redb's integrity check");
    let store = Store::from_database(db).unwrap_or_else(|e| panic!("{what}: the ledger does not open: {e}"));
    let log = store.raft_log().unwrap_or_else(|e| panic!("{what}: the raft log does not open: {e}"));
    (store, log)
}

/// An acknowledged client write: its entry, and how many syncs had completed when the
/// acknowledgement arrived (so its commit's sync is at or before that one).
struct Acked {
    index: u64,
    envelopes: Vec<Vec<u8>>,
    syncs: usize,
}

/// A single-node Raft on the ledger file: every entry openraft acknowledged (which it does only
/// once this node reported it flushed) is in every image frozen from then on, unchanged, with
/// a durable vote at least as new as its term, and the log has no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_entry_raft_acknowledged_is_in_every_later_sync_image() {
    let backend = FreezingBackend::default();
    let db = redb::Database::builder().create_with_backend(backend.clone()).unwrap();
    // Images frozen while redb initialises a new file are never seen in production (a new
    // ledger is created under a temporary name and renamed into place, see crash_storage.rs).
    let created_at_sync = backend.syncs();
    let (store, _, _) = ledger::open_database(db, 1_000, |_| {}).unwrap();
    let config = Config { cluster_name: "crash".into(), ..Default::default() }.validate().unwrap();
    let log_store = LogStore::new(store.raft_log().unwrap());
    let machine = MemStateMachine::default();
    let raft = Raft::<TypeConfig>::new(1, Arc::new(config), NoPeers, log_store, machine.clone()).await.unwrap();
    raft.initialize(BTreeMap::from([(1, NodeInfo { raft_addr: "127.0.0.1:1".into() })])).await.unwrap();
    raft.wait(Some(Duration::from_secs(10))).current_leader(1, "single node leads").await.unwrap();

    let mut acked = Vec::new();
    let mut n = 0u64;
    for round in 0..30u64 {
        // Rounds of concurrent writes, so openraft appends several entries per flush.
        let width = 1 + (round % 6) as usize;
        let mut pending = Vec::new();
        for _ in 0..width {
            n += 1;
            let envelopes = vec![n.to_be_bytes().to_vec(), vec![round as u8; (n % 300) as usize]];
            let batch = RaftBatch { decided_term: 0, version: RAFT_BATCH_VERSION, envelopes: envelopes.clone() };
            let raft = raft.clone();
            pending.push(async move { (envelopes, raft.client_write(batch).await) });
        }
        for (envelopes, reply) in futures_util::future::join_all(pending).await {
            let syncs = backend.syncs();
            let reply = reply.unwrap();
            acked.push(Acked { index: reply.log_id.index, envelopes, syncs });
        }
    }
    assert_eq!(machine.head_seq(), 2 * n, "every acknowledged batch was applied once");
    raft.shutdown().await.unwrap();
    drop(raft);
    store.close();

    let images = backend.take_synced();
    let images_count = images.len();
    let mut checked = 0;
    for (index, image) in images.into_iter().enumerate() {
        let syncs_done = index + 1;
        if syncs_done < created_at_sync {
            continue;
        }
        let what = format!("the image after sync {syncs_done}");
        let (_store, log) = reopen(image, &what);
        let entries: BTreeMap<u64, RaftEntry> =
            log.entries(..).unwrap().into_iter().map(|e| (e.log_id.as_ref().unwrap().index, e)).collect();
        if let (Some(first), Some(last)) = (entries.keys().next(), entries.keys().next_back()) {
            assert_eq!(entries.len() as u64, last - first + 1, "{what}: the log has a gap");
            let last_term = entries[last].log_id.as_ref().unwrap().term;
            // openraft appends the first membership (term 0) before it ever votes.
            let vote_term = log.vote().unwrap().map_or(0, |vote| vote.term);
            assert!(vote_term >= last_term, "{what}: vote of term {vote_term} older than entry term {last_term}");
        }
        for fact in acked.iter().filter(|fact| fact.syncs <= syncs_done) {
            let entry =
                entries.get(&fact.index).unwrap_or_else(|| panic!("{what}: acknowledged entry {} lost", fact.index));
            match &entry.payload {
                Some(Payload::Batch(batch)) => {
                    assert_eq!(batch.envelopes, fact.envelopes, "{what}: entry {} changed", fact.index)
                }
                other => panic!("{what}: entry {} is {other:?}", fact.index),
            }
            checked += 1;
        }
    }
    let images = images_count;
    assert!(images > 30, "expected a sync per flush, got {images}");
    assert!(acked.len() > 90, "too few writes: {}", acked.len());
    assert!(checked > 1000, "too few facts checked: {checked}");
}

/// A small deterministic generator (xorshift64*), so a failing sequence replays from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// What the raft tables hold, as a crash image can show it (committed aside: it is checked
/// separately because it is not made durable by itself).
#[derive(Debug, Clone, Default, PartialEq)]
struct Model {
    entries: BTreeMap<u64, RaftEntry>,
    last_purged: Option<RaftLogId>,
    vote: Option<RaftVote>,
}

fn read_model(log: &RaftLog) -> Model {
    Model {
        entries: log.entries(..).unwrap().into_iter().map(|e| (e.log_id.as_ref().unwrap().index, e)).collect(),
        last_purged: log.state().unwrap().last_purged,
        vote: log.vote().unwrap(),
    }
}

/// One completed operation: the model after it, whether it was a durable write, the committed
/// index it saved (if it was `save_committed`), and the syncs completed when it returned.
struct Step {
    model: Model,
    durable: bool,
    committed: Option<u64>,
    syncs: usize,
}

/// Appends, conflict truncations, purges, votes and committed ids in a seeded random order;
/// every image equals the state after the last operation that returned before its sync, or the
/// one after that (whose commit was under way), never a mix: truncate and purge are atomic, and
/// a committed id saved before a durable write is durable with it.
#[test]
fn every_sync_image_holds_a_whole_prefix_of_raft_log_operations() {
    let seeds: Vec<u64> = match std::env::var("TOKENLEDGER_RAFT_CRASH_SEED") {
        Ok(seed) => vec![seed.parse().expect("TOKENLEDGER_RAFT_CRASH_SEED is a u64")],
        Err(_) => vec![0x5eed_0001, 0x5eed_0002, 0x5eed_0003],
    };
    for seed in seeds {
        run_operations(seed);
    }
}

fn run_operations(seed: u64) {
    let backend = FreezingBackend::default();
    let db = redb::Database::builder().create_with_backend(backend.clone()).unwrap();
    let store = Store::from_database(db).unwrap();
    let log = store.raft_log().unwrap();
    let mut rng = Rng(seed | 1);
    let mut model = Model::default();
    let mut steps = vec![Step { model: model.clone(), durable: true, committed: None, syncs: backend.syncs() }];
    let (mut term, mut committed) = (1u64, 0u64);
    for _ in 0..120 {
        let last = model.entries.keys().next_back().copied().or(model.last_purged.as_ref().map(|id| id.index));
        let next = last.map_or(1, |index| index + 1);
        let (mut saved_committed, mut durable) = (None, false);
        match rng.below(10) {
            0..=4 => {
                let count = 1 + rng.below(4);
                let entries: Vec<RaftEntry> = (next..next + count)
                    .map(|index| {
                        let log_id = Some(RaftLogId { term, leader_node_id: term % 3, index });
                        let payload = match rng.below(3) {
                            0 => Payload::Blank(RaftBlank {}),
                            _ => Payload::Batch(RaftBatch {
                                decided_term: 0,
                                version: 1,
                                envelopes: vec![vec![index as u8; 100]],
                            }),
                        };
                        RaftEntry { log_id, payload: Some(payload) }
                    })
                    .collect();
                log.append(&entries).unwrap();
                durable = true;
                for entry in entries {
                    model.entries.insert(entry.log_id.as_ref().unwrap().index, entry);
                }
            }
            5 if !model.entries.is_empty() => {
                // A new leader's log wins: drop a suffix, as conflict resolution does.
                let (&first, &last) = (model.entries.keys().next().unwrap(), model.entries.keys().next_back().unwrap());
                let from = first.max(committed + 1) + rng.below(last - first + 1);
                log.truncate_from(from).unwrap();
                durable = true;
                model.entries.retain(|&index, _| index < from);
                term += 1;
            }
            6 if !model.entries.is_empty() => {
                let upto = committed.min(*model.entries.keys().next_back().unwrap());
                if model.last_purged.as_ref().is_none_or(|purged| purged.index < upto) {
                    let id = model.entries.get(&upto).and_then(|e| e.log_id);
                    let id = id.unwrap_or(RaftLogId { term, leader_node_id: 0, index: upto });
                    log.purge_upto(&id).unwrap();
                    durable = true;
                    model.entries.retain(|&index, _| index > upto);
                    model.last_purged = Some(id);
                }
            }
            7 => {
                term += 1;
                let vote = RaftVote { term, node_id: term % 3, committed: rng.below(2) == 0 };
                log.save_vote(&vote).unwrap();
                durable = true;
                model.vote = Some(vote);
            }
            _ => {
                if let Some(&last) = model.entries.keys().next_back() {
                    committed = committed.max(last.saturating_sub(rng.below(3)));
                    let id = model.entries.get(&committed).and_then(|e| e.log_id);
                    if let Some(id) = id {
                        log.save_committed(Some(&id)).unwrap();
                        saved_committed = Some(committed);
                    }
                }
            }
        }
        steps.push(Step { model: model.clone(), durable, committed: saved_committed, syncs: backend.syncs() });
    }
    drop(log);
    drop(store);

    for (index, image) in backend.take_synced().into_iter().enumerate() {
        let syncs_done = index + 1;
        if syncs_done < steps[0].syncs {
            continue;
        }
        let what = format!("seed {seed}: the image after sync {syncs_done}");
        let (_store, log) = reopen(image, &what);
        let found = read_model(&log);
        // The last step that had returned when this sync completed; the image is that state or
        // the next step's, whose commit may have been under way.
        let done = steps.iter().rposition(|step| step.syncs <= syncs_done).unwrap_or(0);
        let matches_done = found == steps[done].model;
        let matches_next = steps.get(done + 1).is_some_and(|next| found == next.model);
        assert!(matches_done || matches_next, "{what}: {found:?} is neither step {done} nor the next");
        // A committed id saved before a durable write that had returned is on disk. (When both
        // states are equal, as after a truncation past the end, count only the finished step.)
        let upto = if matches_done { done } else { done + 1 };
        let durable_committed = steps[..=upto]
            .iter()
            .enumerate()
            .filter_map(|(i, step)| step.committed.filter(|_| steps[i + 1..=upto].iter().any(|s| s.durable)))
            .max();
        let found_committed = log.committed().unwrap().map(|id| id.index);
        if let Some(want) = durable_committed {
            assert!(found_committed >= Some(want), "{what}: committed {found_committed:?} lost {want}");
        }
    }
}

/// The state machine applies without an fsync of its own (`Store::append_applied`): the entry is
/// already durable in the Raft log of the same file. Every image a power loss can leave must
/// still open with its chain verified, hold events and applied record that agree, and keep every
/// acknowledged entry either applied or in the log after the applied id; a node restarted from
/// the last image applies the rest and ends with every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_state_machine_applies_unsynced_and_every_image_recovers() {
    use parking_lot::RwLock;
    use tokenledger::ledger::replicated;
    use tokenledger::replication::state_machine::LedgerMachine;

    let (leader_dir, events, _) = crate::replicated::leader_events().await;
    let backend = FreezingBackend::default();
    let db = redb::Database::builder().create_with_backend(backend.clone()).unwrap();
    let (store, state) = replicated::open_replica_database(db, |_| {}).unwrap();
    let created_at_sync = backend.syncs();
    let log_store = LogStore::new(store.raft_log().unwrap());
    let machine = LedgerMachine::new(store, Arc::new(RwLock::new(state)), leader_dir.path()).unwrap();
    let config = Config { cluster_name: "crash".into(), ..Default::default() }.validate().unwrap();
    let raft = Raft::<TypeConfig>::new(1, Arc::new(config), NoPeers, log_store, machine.clone()).await.unwrap();
    raft.initialize(BTreeMap::from([(1, NodeInfo { raft_addr: "127.0.0.1:1".into() })])).await.unwrap();
    raft.wait(Some(Duration::from_secs(10))).current_leader(1, "single node leads").await.unwrap();
    // (log index, head seq) of every acknowledged batch, and the syncs done when it was acknowledged.
    let mut acked = Vec::new();
    for chunk in events.chunks(3) {
        let batch = RaftBatch { decided_term: 0, version: RAFT_BATCH_VERSION, envelopes: chunk.to_vec() };
        let written = raft.client_write(batch).await.unwrap();
        acked.push((written.log_id.index, written.data.head_seq, backend.syncs()));
    }
    assert_eq!(machine.state().read().head.seq, events.len() as u64);
    raft.shutdown().await.unwrap();
    drop(raft);
    drop(machine);

    let images = backend.take_synced();
    let last = images.len() - 1;
    let mut checked = 0;
    // Acknowledged entries an image holds in its log but not yet applied: what the unsynced
    // apply leaves after a power loss (the case this test is for).
    let mut only_in_log = 0;
    for (index, image) in images.into_iter().enumerate() {
        if index + 1 < created_at_sync {
            continue;
        }
        let what = format!("the image after sync {}", index + 1);
        let db = redb::Database::builder().create_with_backend(FreezingBackend::from_image(image)).unwrap();
        let (store, state) =
            replicated::open_replica_database(db, |_| {}).unwrap_or_else(|e| panic!("{what} does not replay: {e}"));
        let log = store.raft_log().unwrap();
        let applied = log.applied().unwrap().unwrap_or_default();
        assert_eq!(applied.head_seq, state.head.seq, "{what}: the applied record and the events disagree");
        let applied_index = applied.applied.as_ref().map_or(0, |id| id.index);
        let in_log: std::collections::BTreeSet<u64> =
            log.entries(..).unwrap().into_iter().map(|e| e.log_id.unwrap().index).collect();
        for (log_index, head_seq, syncs) in &acked {
            if *syncs > index + 1 {
                continue;
            }
            let applied_here = *log_index <= applied_index && *head_seq <= state.head.seq;
            assert!(applied_here || in_log.contains(log_index), "{what}: acknowledged entry {log_index} is gone");
            if !applied_here {
                only_in_log += 1;
            }
            checked += 1;
        }
        if index == last {
            // Restarted from what the disk holds: openraft applies the rest of the log.
            let log_store = LogStore::new(store.raft_log().unwrap());
            let machine = LedgerMachine::new(store, Arc::new(RwLock::new(state)), leader_dir.path()).unwrap();
            let config = Config { cluster_name: "crash".into(), ..Default::default() }.validate().unwrap();
            let raft = Raft::<TypeConfig>::new(1, Arc::new(config), NoPeers, log_store, machine.clone()).await.unwrap();
            raft.wait(Some(Duration::from_secs(10))).current_leader(1, "leads again").await.unwrap();
            let expected = events.len() as u64;
            raft.wait(Some(Duration::from_secs(10)))
                .metrics(|_| machine.state().read().head.seq == expected, "every event applied again")
                .await
                .unwrap();
            assert_eq!(crate::replicated::envelopes_of(machine.store()), events, "the whole history, byte for byte");
            raft.shutdown().await.unwrap();
        }
    }
    assert!(checked > events.len() / 3, "too few facts checked: {checked}");
    assert!(only_in_log > 0, "no image had an acknowledged entry not yet applied");
}
