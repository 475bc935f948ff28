//! Signed checkpoints: "event `seq` of ledger `ledger_id` has chain hash `hash`", signed with
//! the server's Ed25519 checkpoint key. Because every chain hash covers its predecessor, the
//! statement commits to every event up to `seq`: an auditor who keeps checkpoints can later
//! prove that the ledger still holds exactly that prefix, even against someone who rewrote the
//! file and recomputed every hash after it.
//!
//! The key lives in `checkpoint.key` (mode 0600) beside the ledger, generated at first start;
//! it signs nothing else. Auditors pin its public key (printed with every checkpoint).

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use super::time::format_ms;
use crate::crypto::keys::KeyError;
use crate::domain::ids::{hex, parse_hex};

pub const CHECKPOINT_KEY_FILE: &str = "checkpoint.key";
/// The `format` of checkpoint documents and the domain separation of their signatures.
pub const CHECKPOINT_FORMAT: &str = "tokenledger-checkpoint-v1";
const KEY_FILE_FORMAT: u32 = 1;
const ALGORITHM: &str = "Ed25519";

#[derive(Serialize, Deserialize)]
struct KeyFile {
    format: u32,
    algorithm: String,
    created_at_ms: i64,
    /// base64url of the PKCS#8 document ring generated.
    pkcs8: String,
}

pub struct CheckpointKey {
    pair: Ed25519KeyPair,
    pub created_at_ms: i64,
}

impl CheckpointKey {
    /// Loads the key file, creating it with a fresh key when it does not exist.
    pub fn load_or_create(path: &Path, now_ms: i64) -> Result<(Self, bool), KeyError> {
        if path.exists() {
            return Ok((Self::load(path)?, false));
        }
        let display = path.display().to_string();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| KeyError::Malformed { path: display.clone(), reason: "cannot generate a key".into() })?;
        let file = KeyFile {
            format: KEY_FILE_FORMAT,
            algorithm: ALGORITHM.into(),
            created_at_ms: now_ms,
            pkcs8: URL_SAFE_NO_PAD.encode(pkcs8.as_ref()),
        };
        let text = serde_json::to_string_pretty(&file)
            .map_err(|e| KeyError::Malformed { path: display.clone(), reason: e.to_string() })?;
        crate::fsutil::write_private_file(path, text.as_bytes())
            .map_err(|source| KeyError::Write { path: display, source })?;
        Ok((Self::load(path)?, true))
    }

    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read { path: display.clone(), source })?;
        let malformed = |reason: String| KeyError::Malformed { path: display.clone(), reason };
        let file: KeyFile = serde_json::from_str(&text).map_err(|e| malformed(e.to_string()))?;
        if file.format != KEY_FILE_FORMAT || file.algorithm != ALGORITHM {
            return Err(malformed(format!("unsupported format {} / algorithm {}", file.format, file.algorithm)));
        }
        let pkcs8 = URL_SAFE_NO_PAD.decode(&file.pkcs8).map_err(|e| malformed(e.to_string()))?;
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|e| malformed(e.to_string()))?;
        Ok(Self { pair, created_at_ms: file.created_at_ms })
    }

    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.pair.public_key().as_ref());
        out
    }

    pub fn sign(&self, body: &CheckpointBody) -> Checkpoint {
        let signature = self.pair.sign(&body.message());
        Checkpoint { body: body.clone(), public_key: self.public_key(), signature: signature.as_ref().to_vec() }
    }
}

/// What a checkpoint states.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointBody {
    /// The chain hash of event 1, which tells ledgers apart.
    pub ledger_id: [u8; 32],
    pub seq: u64,
    pub hash: [u8; 32],
    pub recorded_at_ms: i64,
    pub signed_at_ms: i64,
}

impl CheckpointBody {
    /// The signed bytes: format label, ledger id, seq, hash, recorded_at_ms, signed_at_ms.
    pub fn message(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CHECKPOINT_FORMAT.len() + 32 + 8 + 32 + 8 + 8);
        out.extend_from_slice(CHECKPOINT_FORMAT.as_bytes());
        out.extend_from_slice(&self.ledger_id);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.hash);
        out.extend_from_slice(&self.recorded_at_ms.to_be_bytes());
        out.extend_from_slice(&self.signed_at_ms.to_be_bytes());
        out
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub body: CheckpointBody,
    pub public_key: [u8; 32],
    pub signature: Vec<u8>,
}

impl Checkpoint {
    /// Checks the signature against `public_key` (the pinned key) or, without one, against
    /// the key the checkpoint names.
    pub fn signature_valid(&self, public_key: Option<&[u8; 32]>) -> bool {
        let key = public_key.unwrap_or(&self.public_key);
        UnparsedPublicKey::new(&ED25519, key).verify(&self.body.message(), &self.signature).is_ok()
    }

    pub fn to_document(&self) -> CheckpointDocument {
        CheckpointDocument {
            format: CHECKPOINT_FORMAT.to_owned(),
            ledger_id: hex(&self.body.ledger_id),
            seq: self.body.seq,
            hash: hex(&self.body.hash),
            recorded_at_ms: self.body.recorded_at_ms,
            recorded_at: format_ms(self.body.recorded_at_ms),
            signed_at_ms: self.body.signed_at_ms,
            algorithm: ALGORITHM.to_owned(),
            public_key: hex(&self.public_key),
            signature: hex(&self.signature),
        }
    }
}

/// The JSON form auditors store (`tokenledger audit checkpoint --json`): hex for bytes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CheckpointDocument {
    pub format: String,
    pub ledger_id: String,
    pub seq: u64,
    pub hash: String,
    pub recorded_at_ms: i64,
    /// For people; not signed (it is `recorded_at_ms` again).
    pub recorded_at: String,
    pub signed_at_ms: i64,
    pub algorithm: String,
    pub public_key: String,
    pub signature: String,
}

impl CheckpointDocument {
    pub fn parse(&self) -> Result<Checkpoint, String> {
        if self.format != CHECKPOINT_FORMAT || self.algorithm != ALGORITHM {
            return Err(format!("not a {CHECKPOINT_FORMAT} {ALGORITHM} checkpoint"));
        }
        let bytes32 =
            |field: &str, text: &str| parse_hex::<32>(text).ok_or_else(|| format!("{field} must be 64 hex digits"));
        let signature = parse_hex::<64>(&self.signature).ok_or("signature must be 128 hex digits")?;
        Ok(Checkpoint {
            body: CheckpointBody {
                ledger_id: bytes32("ledger_id", &self.ledger_id)?,
                seq: self.seq,
                hash: bytes32("hash", &self.hash)?,
                recorded_at_ms: self.recorded_at_ms,
                signed_at_ms: self.signed_at_ms,
            },
            public_key: bytes32("public_key", &self.public_key)?,
            signature: signature.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_verifies_only_unchanged_and_only_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CHECKPOINT_KEY_FILE);
        let (key, created) = CheckpointKey::load_or_create(&path, 5).unwrap();
        assert!(created);
        let (again, created) = CheckpointKey::load_or_create(&path, 6).unwrap();
        assert!(!created);
        assert_eq!(again.public_key(), key.public_key());
        let body = CheckpointBody { ledger_id: [1; 32], seq: 9, hash: [2; 32], recorded_at_ms: 3, signed_at_ms: 4 };
        let checkpoint = key.sign(&body);
        assert!(checkpoint.signature_valid(None));
        let parsed = checkpoint.to_document().parse().unwrap();
        assert_eq!(parsed, checkpoint);
        let mut changed = checkpoint.clone();
        changed.body.seq = 8;
        assert!(!changed.signature_valid(None));
        assert!(!checkpoint.signature_valid(Some(&[7; 32])));
    }
}
