//! VerifyLedger and signed checkpoints over gRPC: the chain walk reports the head, and names
//! the first changed, dropped or reordered event when someone with file access rewrites the
//! live ledger through redb; the live stream refuses to deliver a damaged event.

use futures_util::StreamExt as _;
use tokenledger::audit::{Checkpoint, CheckpointBody};
use tokenledger::proto::{self as api};

use crate::audit::*;
use crate::harness::*;

/// How someone with file access damages a ledger, through redb itself.
#[derive(Clone, Copy, Debug)]
pub enum Tamper {
    /// Flip a bit in the stored value of event `seq`.
    Rewrite(u64),
    /// Delete event `seq`.
    Delete(u64),
    /// Swap the stored values of `seq` and `seq + 1`.
    Swap(u64),
}

impl Tamper {
    pub fn apply(self, db: &redb::Database) {
        use tokenledger::ledger::raw;
        let read = |seq: u64| raw::read(db, seq).unwrap().expect("the event is stored");
        match self {
            Tamper::Rewrite(seq) => {
                let mut value = read(seq);
                let middle = value.len() / 2;
                value[middle] ^= 0x20;
                raw::rewrite(db, seq, &value).unwrap();
            }
            Tamper::Delete(seq) => raw::remove(db, seq).unwrap(),
            Tamper::Swap(seq) => {
                let (a, b) = (read(seq), read(seq + 1));
                raw::rewrite(db, seq, &b).unwrap();
                raw::rewrite(db, seq + 1, &a).unwrap();
            }
        }
    }

    pub fn seq(self) -> u64 {
        match self {
            Tamper::Rewrite(seq) | Tamper::Delete(seq) | Tamper::Swap(seq) => seq,
        }
    }
}

pub async fn verify(server: &TestServer, request: api::VerifyLedgerRequest) -> api::VerifyLedgerResponse {
    audit_client(server).await.verify_ledger(server.admin(request)).await.expect("verify").into_inner()
}

pub async fn checkpoint(server: &TestServer) -> api::Checkpoint {
    audit_client(server).await.get_checkpoint(server.admin(api::GetCheckpointRequest {})).await.unwrap().into_inner()
}

fn parsed(c: &api::Checkpoint) -> Checkpoint {
    Checkpoint {
        body: CheckpointBody {
            ledger_id: c.ledger_id.as_slice().try_into().unwrap(),
            seq: c.seq,
            hash: c.hash.as_slice().try_into().unwrap(),
            recorded_at_ms: c.recorded_at_ms,
            signed_at_ms: c.signed_at_ms,
        },
        public_key: c.public_key.as_slice().try_into().unwrap(),
        signature: c.signature.clone(),
    }
}

async fn busy_server() -> (TestServer, Fixture) {
    let (server, f) = TestServer::seeded().await;
    for _ in 0..3 {
        server.token(&f.service, "grant_type=client_credentials").await.access_token();
    }
    let (_, refresh_token) = sign_in(&server, &f).await;
    refresh(&server, &f, &refresh_token).await;
    (server, f)
}

#[tokio::test]
async fn verify_ledger_walks_the_chain_and_checks_a_signed_checkpoint() {
    let (server, f) = busy_server().await;
    let state_head = server.app.state.read().head.clone();
    let report = verify(&server, api::VerifyLedgerRequest::default()).await;
    assert!(report.ok, "{report:?}");
    assert_eq!((report.events_checked, report.head_seq), (state_head.seq, state_head.seq));
    assert_eq!(report.head_hash, state_head.hash.to_vec());
    assert_eq!(report.first_bad_seq, 0);

    let signed = checkpoint(&server).await;
    assert_eq!((signed.seq, signed.hash.clone()), (state_head.seq, state_head.hash.to_vec()));
    let first = events(&server, api::StreamEventsRequest { limit: 1, ..Default::default() }).await;
    assert_eq!(signed.ledger_id, first[0].hash, "the ledger id is the hash of event 1");
    let key = audit_client(&server)
        .await
        .get_checkpoint_key(server.admin(api::GetCheckpointKeyRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((key.algorithm.as_str(), &key.public_key), ("Ed25519", &signed.public_key));
    let pinned: [u8; 32] = key.public_key.as_slice().try_into().unwrap();
    assert!(parsed(&signed).signature_valid(Some(&pinned)));
    let mut forged = parsed(&signed);
    forged.body.seq += 1;
    assert!(!forged.signature_valid(Some(&pinned)));

    // Later events do not change what the checkpoint proves.
    server.token(&f.service, "grant_type=client_credentials").await.access_token();
    let claim = |hash: Vec<u8>| api::VerifyLedgerRequest { checkpoint_seq: signed.seq, checkpoint_hash: hash };
    let report = verify(&server, claim(signed.hash.clone())).await;
    assert!(report.ok && report.checkpoint_checked && report.checkpoint_matches, "{report:?}");
    let report = verify(&server, claim(vec![0; 32])).await;
    assert!(!report.ok && !report.checkpoint_matches, "{report:?}");
    let beyond = api::VerifyLedgerRequest { checkpoint_seq: 10_000, checkpoint_hash: signed.hash.clone() };
    assert!(!verify(&server, beyond).await.checkpoint_matches);
}

#[tokio::test]
async fn verify_ledger_names_the_first_changed_dropped_or_reordered_event() {
    for tamper in [Tamper::Rewrite(6), Tamper::Delete(6), Tamper::Swap(6)] {
        let (server, _) = busy_server().await;
        let db = server.app.ledger.reader().database().expect("open ledger");
        tamper.apply(&db);
        drop(db);
        let report = verify(&server, api::VerifyLedgerRequest::default()).await;
        assert!(!report.ok, "{tamper:?}: {report:?}");
        assert_eq!(report.first_bad_seq, tamper.seq(), "{tamper:?}: {}", report.problem);
        assert_eq!(report.events_checked, tamper.seq() - 1);
        assert!(!report.problem.is_empty());
        // The live stream will not deliver the damaged history either.
        let request = api::StreamEventsRequest::default();
        let mut stream = audit_client(&server).await.stream_events(server.admin(request)).await.unwrap().into_inner();
        let mut delivered = Vec::new();
        let status = loop {
            match stream.next().await {
                Some(Ok(event)) => delivered.push(event.seq),
                Some(Err(status)) => break status,
                None => panic!("{tamper:?}: the stream ended without an error"),
            }
        };
        assert_eq!(status.code(), tonic::Code::DataLoss, "{tamper:?}: {status:?}");
        assert_eq!(delivered, (1..tamper.seq()).collect::<Vec<_>>(), "{tamper:?}");
        assert!(status.message().contains(&format!("event {}", tamper.seq())), "{tamper:?}: {}", status.message());
    }
}

#[cfg(unix)]
#[tokio::test]
async fn the_checkpoint_key_is_created_at_first_start_private_and_kept_across_restarts() {
    use std::os::unix::fs::PermissionsExt;
    let server = TestServer::start().await;
    let path = server.data_dir().join(tokenledger::audit::CHECKPOINT_KEY_FILE);
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let before = checkpoint(&server).await.public_key;
    let server = server.restart().await;
    assert_eq!(checkpoint(&server).await.public_key, before, "the same key signs after a restart");
}
