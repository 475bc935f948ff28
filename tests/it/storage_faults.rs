//! Storage faults: when the disk fails (I/O error or full), writes fail closed with CMN_90019,
//! introspection of existing tokens keeps working from memory, readiness turns false; after the
//! fault is gone and the process restarts, nothing acknowledged is lost.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use redb::StorageBackend;

use crate::harness::*;

/// An in-memory disk that can be told to start failing every write and sync.
#[derive(Debug, Clone, Default)]
struct FlakyDisk {
    bytes: Arc<Mutex<Vec<u8>>>,
    failing: Arc<AtomicBool>,
    /// ENOSPC instead of EIO.
    full: bool,
}

impl FlakyDisk {
    fn fault(&self) -> io::Result<()> {
        if !self.failing.load(Ordering::SeqCst) {
            return Ok(());
        }
        Err(if self.full { io::Error::from_raw_os_error(28) } else { io::Error::other("injected I/O error") })
    }
}

impl StorageBackend for FlakyDisk {
    fn len(&self) -> io::Result<u64> {
        Ok(self.bytes.lock().unwrap().len() as u64)
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let bytes = self.bytes.lock().unwrap();
        let start = offset as usize;
        out.copy_from_slice(bytes.get(start..start + out.len()).ok_or_else(|| io::Error::other("read past the end"))?);
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.fault()?;
        self.bytes.lock().unwrap().resize(len as usize, 0);
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        self.fault()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.fault()?;
        let mut bytes = self.bytes.lock().unwrap();
        let end = offset as usize + data.len();
        if bytes.len() < end {
            bytes.resize(end, 0);
        }
        bytes[offset as usize..end].copy_from_slice(data);
        Ok(())
    }
}

async fn fault_then_recover(full: bool) {
    let disk = FlakyDisk { full, ..FlakyDisk::default() };
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let server = TestServer::start_on_backend(disk.clone(), dir.clone()).await;
    let f = server.seed().await;
    let kept = server.token(&f.service, "grant_type=client_credentials").await.access_token();
    let revoked = server.token(&f.service, "grant_type=client_credentials").await.access_token();
    assert_eq!(server.revoke(&f.service, &revoked).await.status, 204);
    assert_eq!(server.http.get(server.url("/readyz")).send().await.unwrap().status(), 200);

    disk.failing.store(true, Ordering::SeqCst);
    server.token(&f.service, "grant_type=client_credentials").await.assert_error(500, "CMN_90019");
    // Once failed, the ledger refuses writes without touching the disk again.
    server.token(&f.app, &format!("grant_type=password&{ALICE_LOGIN}")).await.assert_error(500, "CMN_90019");
    server.revoke(&f.service, &kept).await.assert_error(500, "CMN_90019");
    // Reads keep working from memory, and the revocation that was not recorded did not happen.
    assert!(server.is_active(&f.service, &kept).await);
    assert!(!server.is_active(&f.service, &revoked).await);
    assert_eq!(server.http.get(server.url("/readyz")).send().await.unwrap().status(), 503);
    assert_eq!(server.http.get(server.url("/healthz")).send().await.unwrap().status(), 200, "alive, not ready");
    let mut tokens = server.token_client().await;
    let mut request = tonic::Request::new(tokenledger::proto::CreateTokenRequest {
        grant_type: "client_credentials".into(),
        ..Default::default()
    });
    request.metadata_mut().insert("transactionid", txid().parse().unwrap());
    request.metadata_mut().insert("institutionid", INSTITUTION.parse().unwrap());
    request
        .metadata_mut()
        .insert("authorization", tokenledger::wire::encode_basic(&f.service.id, &f.service.secret).parse().unwrap());
    assert_eq!(tokens.create_token(request).await.unwrap_err().code(), tonic::Code::Unavailable);
    // gRPC health follows readiness (checked once a second).
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let mut status = tonic_health::pb::health_check_response::ServingStatus::Serving;
    for _ in 0..30 {
        let check = tonic_health::pb::HealthCheckRequest { service: "tokenledger.v1.TokenService".into() };
        status = health.check(check).await.expect("health").into_inner().status();
        if status == tonic_health::pb::health_check_response::ServingStatus::NotServing {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::NotServing);
    server.stop().await;

    // The fault is gone (space freed); a restart replays what is durable.
    disk.failing.store(false, Ordering::SeqCst);
    let server = TestServer::start_on_backend(disk.clone(), dir).await;
    assert!(server.is_active(&f.service, &kept).await, "an acknowledged token was lost");
    assert!(!server.is_active(&f.service, &revoked).await, "an acknowledged revocation was lost");
    assert_eq!(server.token(&f.service, "grant_type=client_credentials").await.status, 200);
}

#[tokio::test]
async fn an_io_error_fails_writes_closed_and_keeps_reads() {
    fault_then_recover(false).await;
}

#[tokio::test]
async fn a_full_disk_fails_writes_closed_and_keeps_reads() {
    fault_then_recover(true).await;
}
