//! Storage-level crash test: a redb storage backend that keeps the bytes as they were at each
//! `sync_data` (the only bytes a power loss is guaranteed to leave), then reopens every such
//! image and checks that everything acknowledged before that sync survived and replays.
//! SIGKILL alone cannot show this: the page cache survives a killed process.

use std::io;
use std::sync::{Arc, Mutex};

use redb::StorageBackend;
use tokenledger::crypto::ServerKeys;
use tokenledger::crypto::credential;
use tokenledger::domain::DirectoryCommand;
use tokenledger::domain::TokenKind;
use tokenledger::domain::{Command, FreshIds, Issue, IssueGrant, Outcome, Revoke};
use tokenledger::domain::{FamilyId, TokenId};
use tokenledger::ledger::{self, LedgerHandle, WriterConfig};
use tokenledger::proto::ledger::{ClientCreated, InstitutionCreated};

#[derive(Debug, Default)]
struct Images {
    live: Vec<u8>,
    /// The whole file as it was right after each completed sync, in order.
    synced: Vec<Vec<u8>>,
}

/// Writes go to `live`; `sync_data` freezes a copy as the durable image. Also used by the Raft
/// log's crash test (`raft_log_crash.rs`).
#[derive(Debug, Clone, Default)]
pub(crate) struct FreezingBackend(Arc<Mutex<Images>>);

impl FreezingBackend {
    pub(crate) fn from_image(bytes: Vec<u8>) -> Self {
        Self(Arc::new(Mutex::new(Images { live: bytes, synced: Vec::new() })))
    }

    pub(crate) fn syncs(&self) -> usize {
        self.0.lock().unwrap().synced.len()
    }

    /// The images frozen so far, in sync order (the backend keeps none of them).
    pub(crate) fn take_synced(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.0.lock().unwrap().synced)
    }
}

impl StorageBackend for FreezingBackend {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.lock().unwrap().live.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let images = self.0.lock().unwrap();
        let start = offset as usize;
        let bytes = images.live.get(start..start + out.len()).ok_or_else(|| io::Error::other("read past the end"))?;
        out.copy_from_slice(bytes);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.lock().unwrap().live.resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut images = self.0.lock().unwrap();
        let copy = images.live.clone();
        images.synced.push(copy);
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut images = self.0.lock().unwrap();
        let start = offset as usize;
        if images.live.len() < start + data.len() {
            images.live.resize(start + data.len(), 0);
        }
        images.live[start..start + data.len()].copy_from_slice(data);
        Ok(())
    }
}

/// What the caller was told, and after how many completed syncs it was told.
enum Acked {
    Issued { token: TokenId, refresh: Option<TokenId>, syncs: usize },
    Revoked { token: TokenId, syncs: usize },
}

fn fresh(n: &mut u64) -> FreshIds {
    let mut id = || {
        *n += 1;
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&n.to_be_bytes());
        TokenId(bytes)
    };
    FreshIds { access: id(), refresh: id(), family: FamilyId(id().0) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sync_point_image_reopens_with_everything_acknowledged_before_it() {
    let backend = FreezingBackend::default();
    let db = redb::Database::builder().create_with_backend(backend.clone()).unwrap();
    // Images frozen while redb initialises a new file are never seen in production: a new
    // ledger is created under a temporary name and renamed into place once complete
    // (`ledger::open`, tested in `a_crash_during_first_start_leaves_no_half_created_ledger`).
    let created_at_sync = backend.syncs();
    let (store, state, _) = ledger::open_database(db, 1_000, |_| {}).unwrap();
    let state = Arc::new(parking_lot::RwLock::new(state));
    let handle = LedgerHandle::spawn(store, state, WriterConfig::default()).unwrap();
    let keys = ServerKeys::from_secret(1, &[3; 32]);
    for command in [
        DirectoryCommand::CreateInstitution(InstitutionCreated { institution_id: "7".into(), name: "Seven".into() }),
        DirectoryCommand::CreateClient(ClientCreated {
            client_id: "c".into(),
            institution_ids: vec!["7".into()],
            grant_types: vec!["client_credentials".into(), "refresh_token".into()],
            scopes: vec!["s".into()],
            access_token_ttl_secs: 3600,
            refresh_token_ttl_secs: 3600,
            secret: Some(credential::keyed_digest(&keys, "c", "x")),
            ..Default::default()
        }),
    ] {
        handle.submit(Command::Directory(command), String::new()).await.unwrap().unwrap();
    }
    let mut acked = Vec::new();
    let mut n = 0u64;
    for round in 0..40u64 {
        // Rounds of concurrent requests, so batches of several commands share one sync.
        let width = 1 + (round % 7) as usize;
        let mut pending = Vec::new();
        for i in 0..width {
            let command = if i % 3 == 2 && !acked.is_empty() {
                let victim = match &acked[(round as usize * 7 + i) % acked.len()] {
                    Acked::Issued { token, .. } | Acked::Revoked { token, .. } => *token,
                };
                Command::Revoke(Revoke { client_id: "c".into(), token: victim, kind: TokenKind::Access })
            } else {
                Command::Issue(Issue {
                    client_id: "c".into(),
                    institution_id: Some("7".into()),
                    grant: IssueGrant::ClientCredentials,
                    requested_scopes: None,
                    fingerprint: [0; 32],
                    family_lifetime_max_ms: tokenledger::domain::FAMILY_LIFETIME_MAX_MS_DEFAULT,
                    fresh: fresh(&mut n),
                })
            };
            let target = match &command {
                Command::Revoke(r) => Some(r.token),
                _ => None,
            };
            let handle = handle.clone();
            pending.push(async move { (target, handle.submit(command, uuid::Uuid::new_v4().to_string()).await) });
        }
        for (target, reply) in futures_util::future::join_all(pending).await {
            // The answer arrived: its commit's sync has completed, so it is in this image and
            // every later one.
            let syncs = backend.syncs();
            match (target, reply.unwrap().unwrap()) {
                (None, Outcome::Issued(issued)) => {
                    acked.push(Acked::Issued { token: issued.access.id, refresh: issued.refresh.map(|r| r.id), syncs })
                }
                (Some(token), Outcome::Revoked) => acked.push(Acked::Revoked { token, syncs }),
                (_, other) => panic!("unexpected outcome {other:?}"),
            }
        }
    }
    handle.stop().await;
    let images = std::mem::take(&mut backend.0.lock().unwrap().synced);
    assert!(images.len() > 40, "expected a sync per commit, got {}", images.len());
    let mut checked = 0;
    for (index, image) in images.into_iter().enumerate() {
        let syncs_done = index + 1;
        if syncs_done < created_at_sync {
            continue;
        }
        let mut reopened = redb::Database::builder()
            .create_with_backend(FreezingBackend::from_image(image))
            .unwrap_or_else(|e| panic!("image after sync {syncs_done} does not open: {e}"));
        assert!(reopened.check_integrity().unwrap(), "image after sync {syncs_done} fails redb's integrity check");
        let (_, state, report) = ledger::open_database(reopened, 1_000, |_| {})
            .unwrap_or_else(|e| panic!("image after sync {syncs_done} does not replay: {e}"));
        // A time inside every token's lifetime: validity below depends only on revocation.
        let now = report.head.recorded_at_ms;
        for fact in &acked {
            match *fact {
                Acked::Issued { token, syncs, .. } if syncs <= syncs_done => {
                    assert!(state.token(&token).is_some(), "sync {syncs_done}: acknowledged token lost");
                    checked += 1;
                }
                Acked::Revoked { token, syncs } if syncs <= syncs_done => {
                    let token = state.token(&token).expect("revoked token known");
                    assert!(!state.is_active(&token, now), "sync {syncs_done}: acknowledged revocation lost");
                    checked += 1;
                }
                Acked::Issued { refresh, .. } => assert!(refresh.is_none()),
                Acked::Revoked { .. } => {}
            }
        }
    }
    assert!(checked > 1000, "too few facts checked: {checked}");
}

#[test]
fn a_crash_during_first_start_leaves_no_half_created_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.redb");
    // What a crash in the middle of creating the ledger leaves behind: a partial temporary file.
    std::fs::write(dir.path().join("ledger.redb.init"), b"partial garbage").unwrap();
    let (_, state, report) = ledger::open(&path, 5, |_| {}).unwrap();
    assert_eq!(report.events, 1);
    assert_eq!(state.head.seq, 1);
    assert!(path.exists());
    assert!(!dir.path().join("ledger.redb.init").exists());
}
