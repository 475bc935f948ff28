//! The server key file (`keys.json`, mode 0600, beside the ledger). The ledger never holds
//! these keys, so a copy of the ledger alone cannot mint, verify or recover any credential.
//!
//! Each key is 32 random bytes; purpose keys are derived from it with HMAC-SHA256 under a
//! distinct label, so one key file serves token MACs, secret digests and fingerprints.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::{Deserialize, Serialize};

const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct KeyFile {
    format: u32,
    active_key_id: u16,
    keys: Vec<StoredKey>,
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    id: u16,
    created_at_ms: i64,
    /// base64url of 32 random bytes.
    secret: String,
}

/// The keys derived from one stored key.
pub struct KeySet {
    pub id: u16,
    pub token_mac: hmac::Key,
    pub secret_digest: hmac::Key,
    pub fingerprint: hmac::Key,
    /// The secret cluster nodes authenticate their Raft traffic with (`cluster_secret`).
    cluster: [u8; 32],
    /// The key a cluster seals new ID-token signing keys with for the ledger (`signing_seal_key`).
    signing_seal: [u8; 32],
}

pub struct ServerKeys {
    active: usize,
    sets: Vec<KeySet>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot write key file {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("key file {path} is malformed: {reason}")]
    Malformed { path: String, reason: String },
}

impl ServerKeys {
    /// Loads the key file, creating it with one fresh key when it does not exist.
    pub fn load_or_create(path: &Path, now_ms: i64) -> Result<(Self, bool), KeyError> {
        if path.exists() {
            return Ok((Self::load(path)?, false));
        }
        let file = KeyFile {
            format: FORMAT,
            active_key_id: 1,
            keys: vec![StoredKey {
                id: 1,
                created_at_ms: now_ms,
                secret: URL_SAFE_NO_PAD.encode(super::random_bytes::<32>()),
            }],
        };
        let text = serde_json::to_string_pretty(&file)
            .map_err(|e| KeyError::Malformed { path: path.display().to_string(), reason: e.to_string() })?;
        crate::fsutil::write_private_file(path, text.as_bytes())
            .map_err(|source| KeyError::Write { path: path.display().to_string(), source })?;
        Ok((Self::load(path)?, true))
    }

    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read { path: display.clone(), source })?;
        let malformed = |reason: String| KeyError::Malformed { path: display.clone(), reason };
        let file: KeyFile = serde_json::from_str(&text).map_err(|e| malformed(e.to_string()))?;
        if file.format != FORMAT {
            return Err(malformed(format!("unsupported format {}", file.format)));
        }
        let mut sets = Vec::with_capacity(file.keys.len());
        for key in &file.keys {
            let secret = URL_SAFE_NO_PAD.decode(&key.secret).map_err(|e| malformed(format!("key {}: {e}", key.id)))?;
            if secret.len() != 32 {
                return Err(malformed(format!("key {} must be 32 bytes", key.id)));
            }
            sets.push(Self::derive(key.id, &secret));
        }
        let active = sets
            .iter()
            .position(|s| s.id == file.active_key_id)
            .ok_or_else(|| malformed(format!("active key {} is not in the file", file.active_key_id)))?;
        Ok(Self { active, sets })
    }

    /// Keys from a fixed secret, for tests and benchmarks.
    pub fn from_secret(id: u16, secret: &[u8; 32]) -> Self {
        Self { active: 0, sets: vec![Self::derive(id, secret)] }
    }

    fn derive(id: u16, secret: &[u8]) -> KeySet {
        let master = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let purpose = |label: &str| hmac::Key::new(hmac::HMAC_SHA256, hmac::sign(&master, label.as_bytes()).as_ref());
        KeySet {
            id,
            token_mac: purpose("tokenledger/token-mac/v1"),
            secret_digest: purpose("tokenledger/client-secret/v1"),
            fingerprint: purpose("tokenledger/request-fingerprint/v1"),
            cluster: derive_32(&master, b"tokenledger/cluster/v1"),
            signing_seal: derive_32(&master, b"tokenledger/signing-key-seal/v1"),
        }
    }

    /// The key new credentials are made with.
    // `active` is the position of a key in `sets`, found when the key file was read.
    #[allow(clippy::indexing_slicing)]
    pub fn active(&self) -> &KeySet {
        &self.sets[self.active]
    }

    /// The secret the Raft traffic of a cluster is authenticated with: derived from the key
    /// with the lowest id, so it is the same on every node that holds the cluster's key file
    /// and does not change when a newer key is added (SPEC 8: the same key files everywhere).
    pub fn cluster_secret(&self) -> [u8; 32] {
        self.sets.iter().min_by_key(|s| s.id).map_or([0u8; 32], |s| s.cluster)
    }

    /// The key a cluster node's new ledger file orders its token index with (`ledger::token_ids`):
    /// derived from [`Self::cluster_secret`], so it is the same on every node and the ids the
    /// leader mints are neighbours in every node's index.
    pub fn token_id_index_key(&self) -> [u8; 32] {
        derive_32(&hmac::Key::new(hmac::HMAC_SHA256, &self.cluster_secret()), b"tokenledger/token-id-index/v1")
    }

    /// The AES-256-GCM key a cluster seals a new ID-token signing key with before its activation
    /// event carries it to every node (from the key with the lowest id, like `cluster_secret`):
    /// the private key travels in the ledger and the Raft log only in this sealed form.
    pub fn signing_seal_key(&self) -> [u8; 32] {
        self.sets.iter().min_by_key(|s| s.id).map_or([0u8; 32], |s| s.signing_seal)
    }

    pub fn by_id(&self, id: u16) -> Option<&KeySet> {
        self.sets.iter().find(|s| s.id == id)
    }
}

/// The 32-byte key for `label` derived from `key` (HMAC-SHA-256 of the label).
fn derive_32(key: &hmac::Key, label: &[u8]) -> [u8; 32] {
    let mut derived = [0u8; 32];
    derived.copy_from_slice(hmac::sign(key, label).as_ref());
    derived
}
