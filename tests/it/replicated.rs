//! Cluster mode's apply path (`ledger::replicated`): a node that applies another node's
//! committed batches ends with the same events, byte for byte, the same hash chain and the same
//! projections; a batch applied twice changes nothing; a batch that does not continue the
//! node's chain is refused whole.

use parking_lot::RwLock;
use serde_json::Value;
use tokenledger::ledger::replicated::{self, ReplicatedError};
use tokenledger::ledger::{self, Store, StoreError};
use tokenledger::proto::ledger::Envelope;

use crate::harness::{ALICE_LOGIN, TestServer, wall_ms};

pub fn envelopes_of(store: &Store) -> Vec<Vec<u8>> {
    let mut envelopes = Vec::new();
    store
        .scan(|_, bytes| {
            envelopes.push(bytes.to_vec());
            Ok::<_, StoreError>(())
        })
        .unwrap();
    envelopes
}

/// A real server's ledger: clients, a user, issuance, a refresh, a revocation.
pub async fn leader_events() -> (tempfile::TempDir, Vec<Vec<u8>>, tokenledger::domain::State) {
    let (server, f) = TestServer::seeded().await;
    for _ in 0..12 {
        assert_eq!(server.token(&f.service, "grant_type=client_credentials").await.status, 200);
    }
    let signed_in: Value =
        serde_json::from_str(&server.token(&f.app, &format!("grant_type=password&{ALICE_LOGIN}")).await.text).unwrap();
    let refresh = signed_in["refresh_token"].as_str().unwrap().to_owned();
    let refreshed = server.token(&f.app, &format!("grant_type=refresh_token&refresh_token={refresh}")).await;
    assert_eq!(refreshed.status, 200);
    let access = signed_in["access_token"].as_str().unwrap().to_owned();
    assert_eq!(server.revoke(&f.app, &access).await.status, 204);
    let dir = server.stop().await;
    let copy = tempfile::tempdir().unwrap();
    let path = copy.path().join("leader.redb");
    std::fs::copy(dir.path().join("ledger.redb"), &path).unwrap();
    let (store, state, _) = ledger::open(&path, wall_ms(), |_| {}).unwrap();
    let envelopes = envelopes_of(&store);
    store.close();
    (copy, envelopes, state)
}

#[tokio::test]
async fn a_node_applying_the_leaders_batches_holds_the_same_chain_and_projections() {
    let (_leader_dir, envelopes, leader_state) = leader_events().await;
    assert!(envelopes.len() > 20, "a ledger worth replicating: {} events", envelopes.len());

    let dir = tempfile::tempdir().unwrap();
    let (store, state) = replicated::open_replica(&dir.path().join("ledger.redb"), |_| {}).unwrap();
    assert_eq!(state.head.seq, 0, "a replica starts empty: its first event comes from the leader");
    let state = RwLock::new(state);
    let mut applied = 0;
    for (i, size) in [1usize, 3, 1, 7, 2, 5].iter().cycle().enumerate() {
        if applied >= envelopes.len() {
            break;
        }
        let batch = &envelopes[applied..(applied + size).min(envelopes.len())];
        let head = replicated::apply_batch(&store, &state, batch, None).unwrap();
        applied += batch.len();
        assert_eq!(head, applied as u64);
        if i % 3 == 0 {
            // The same batch again (Raft re-applies after a crash before it recorded the apply).
            assert_eq!(replicated::apply_batch(&store, &state, batch, None).unwrap(), applied as u64);
        }
    }
    assert_eq!(envelopes_of(&store), envelopes, "the same events, byte for byte");
    let replica = state.read().clone();
    assert_eq!(replica.head, leader_state.head, "the same chain head");
    assert!(replica == leader_state, "the same projections");

    // Reopened, the replica replays its own file to the same state.
    store.close();
    let (store, reopened) = replicated::open_replica(&dir.path().join("ledger.redb"), |_| {}).unwrap();
    assert!(reopened == leader_state);
    store.close();
}

#[tokio::test]
async fn a_batch_that_does_not_continue_the_chain_is_refused_whole() {
    let (_leader_dir, envelopes, _) = leader_events().await;
    let dir = tempfile::tempdir().unwrap();
    let (store, state) = replicated::open_replica(&dir.path().join("ledger.redb"), |_| {}).unwrap();
    let state = RwLock::new(state);
    replicated::apply_batch(&store, &state, &envelopes[..5], None).unwrap();

    // A gap: event 7 where 6 is due. Nothing of the batch is written.
    let refused = replicated::apply_batch(&store, &state, &envelopes[6..8], None).unwrap_err();
    assert!(matches!(refused, ReplicatedError::Diverged { seq: 7, .. }), "{refused:?}");
    // A changed event (its hash no longer matches), after a good one in the same batch.
    let mut changed = prost::Message::decode(envelopes[6].as_slice()).map(|e: Envelope| e).unwrap();
    changed.recorded_at_ms += 1;
    let batch = vec![envelopes[5].clone(), prost::Message::encode_to_vec(&changed)];
    let refused = replicated::apply_batch(&store, &state, &batch, None).unwrap_err();
    assert!(matches!(refused, ReplicatedError::Diverged { seq: 7, .. }), "{refused:?}");
    // Another ledger's event 6 (its chain, not this node's): refused.
    let (_other_dir, other, _) = leader_events().await;
    let refused = replicated::apply_batch(&store, &state, &other[5..6], None).unwrap_err();
    assert!(matches!(refused, ReplicatedError::Diverged { seq: 6, .. }), "{refused:?}");
    // An event this node holds, with other content: refused as a rewrite.
    let refused = replicated::apply_batch(&store, &state, &other[1..2], None).unwrap_err();
    assert!(matches!(refused, ReplicatedError::Rewritten { seq: 2 }), "{refused:?}");

    assert_eq!(state.read().head.seq, 5, "nothing of a refused batch was applied");
    assert_eq!(envelopes_of(&store), envelopes[..5].to_vec(), "nothing of a refused batch was written");
    replicated::apply_batch(&store, &state, &envelopes[5..], None).unwrap();
    assert_eq!(envelopes_of(&store), envelopes);
    store.close();
}
