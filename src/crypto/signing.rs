//! ID-token signing keys: ES256 (ECDSA P-256 with SHA-256, via ring), kept in their own key
//! file `signing-keys.json` (mode 0600) beside the ledger, and JWS compact serialization.
//!
//! File format: `{"format":1,"active_key_id":KID,"keys":[{"key_id","algorithm":"ES256",
//! "created_at_ms","private_key_pkcs8"}]}` with the PKCS#8 document in base64url. A key's id is
//! the RFC 7638 JWK thumbprint of its public key, so the id is derived, never chosen, and a
//! verifier can recompute it. The ledger records public keys only (`SigningKeyActivated`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use parking_lot::RwLock;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};

/// The JWS `alg` of every key.
pub const ALGORITHM: &str = "ES256";
const FORMAT: u32 = 1;
/// Length of an uncompressed SEC1 P-256 point: 0x04 ‖ x (32) ‖ y (32).
const POINT_LEN: usize = 65;

#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error("cannot read signing key file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot write signing key file {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("signing key file {path} is malformed: {reason}")]
    Malformed { path: String, reason: String },
    #[error("cannot generate or use an ECDSA P-256 key")]
    Crypto,
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    format: u32,
    active_key_id: String,
    keys: Vec<StoredKey>,
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    key_id: String,
    algorithm: String,
    created_at_ms: i64,
    /// base64url of the PKCS#8 v1 document (private and public key).
    private_key_pkcs8: String,
}

/// One signing key pair.
/// The version byte of a sealed signing key.
const SEAL_VERSION: u8 = 1;

pub struct SigningKey {
    pub key_id: String,
    pub created_at_ms: i64,
    pair: EcdsaKeyPair,
    pkcs8: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate(now_ms: i64) -> Result<Self, SigningKeyError> {
        let rng = SystemRandom::new();
        let document = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| SigningKeyError::Crypto)?;
        Self::from_pkcs8(document.as_ref().to_vec(), now_ms)
    }

    fn from_pkcs8(pkcs8: Vec<u8>, created_at_ms: i64) -> Result<Self, SigningKeyError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &SystemRandom::new())
            .map_err(|_| SigningKeyError::Crypto)?;
        let key_id = thumbprint(pair.public_key().as_ref()).ok_or(SigningKeyError::Crypto)?;
        Ok(Self { key_id, created_at_ms, pair, pkcs8 })
    }

    /// The private key sealed for the ledger (cluster mode): `1 ‖ nonce ‖ AES-256-GCM(pkcs8)`,
    /// with the key id as associated data, under `seal_key` (`ServerKeys::signing_seal_key`).
    pub fn seal(&self, seal_key: &[u8; 32]) -> Result<Vec<u8>, SigningKeyError> {
        use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, seal_key).map_err(|_| SigningKeyError::Crypto)?);
        let nonce_bytes: [u8; 12] = super::random_bytes();
        let mut sealed = self.pkcs8.clone();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce_bytes),
            Aad::from(self.key_id.as_bytes()),
            &mut sealed,
        )
        .map_err(|_| SigningKeyError::Crypto)?;
        let mut out = Vec::with_capacity(1 + 12 + sealed.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens what [`Self::seal`] made for `key_id`; refuses another key's or an altered seal.
    pub fn open_sealed(
        seal_key: &[u8; 32],
        key_id: &str,
        sealed: &[u8],
        created_at_ms: i64,
    ) -> Result<Self, SigningKeyError> {
        use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
        let Some((&SEAL_VERSION, rest)) = sealed.split_first() else {
            return Err(SigningKeyError::Crypto);
        };
        let (nonce, body) = rest.split_first_chunk::<12>().ok_or(SigningKeyError::Crypto)?;
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, seal_key).map_err(|_| SigningKeyError::Crypto)?);
        let mut body = body.to_vec();
        let pkcs8 = key
            .open_in_place(Nonce::assume_unique_for_key(*nonce), Aad::from(key_id.as_bytes()), &mut body)
            .map_err(|_| SigningKeyError::Crypto)?
            .to_vec();
        let key = Self::from_pkcs8(pkcs8, created_at_ms)?;
        if key.key_id != key_id {
            return Err(SigningKeyError::Crypto);
        }
        Ok(key)
    }

    /// The uncompressed SEC1 point of the public key.
    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// A JWS compact serialization of `claims` (a JWT), with `kid` in the header.
    pub fn sign_jwt(&self, claims: &serde_json::Value) -> Result<String, SigningKeyError> {
        let header = serde_json::json!({"alg": ALGORITHM, "typ": "JWT", "kid": self.key_id});
        let mut jws = URL_SAFE_NO_PAD.encode(header.to_string());
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(claims.to_string(), &mut jws);
        let signature = self.pair.sign(&SystemRandom::new(), jws.as_bytes()).map_err(|_| SigningKeyError::Crypto)?;
        // The FIXED signing algorithm yields r ‖ s, exactly the JWS ES256 encoding (RFC 7518 3.4).
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut jws);
        Ok(jws)
    }
}

/// The RFC 7638 thumbprint of a P-256 public key: base64url(SHA-256 of the canonical JWK).
pub fn thumbprint(public_key: &[u8]) -> Option<String> {
    let (x, y) = coordinates(public_key)?;
    // Members in lexicographic order, no whitespace (RFC 7638 3.2).
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    Some(URL_SAFE_NO_PAD.encode(super::sha256(canonical.as_bytes())))
}

fn coordinates(public_key: &[u8]) -> Option<(String, String)> {
    // An uncompressed SEC1 point: 0x04, then x and y of 32 bytes each.
    let (x, y) = match public_key.split_first() {
        Some((0x04, coordinates)) if public_key.len() == POINT_LEN => coordinates.split_at(32),
        _ => return None,
    };
    Some((URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y)))
}

/// The public JWK (RFC 7517, RFC 7518 6.2) of a recorded key.
pub fn public_jwk(key_id: &str, algorithm: &str, public_key: &[u8]) -> Option<serde_json::Value> {
    let (x, y) = coordinates(public_key)?;
    Some(serde_json::json!({
        "kty": "EC",
        "crv": "P-256",
        "x": x,
        "y": y,
        "kid": key_id,
        "use": "sig",
        "alg": algorithm,
    }))
}

/// The signing keys of a running server: the private keys of the key file, by key id. Which
/// one signs is decided by the ledger (`AuthorizationState::active_signing_key`); a key is
/// added here before its activation is submitted, so whatever the ledger names can sign.
pub struct SigningKeys {
    path: PathBuf,
    keys: RwLock<Vec<Arc<SigningKey>>>,
    /// Serialises rotations, which rewrite the key file.
    pub rotation: tokio::sync::Mutex<()>,
}

impl SigningKeys {
    /// Loads the key file at `path`, creating it with one new key when it does not exist.
    /// Returns the keys, the file's active key id, and whether the file was created.
    pub fn load_or_create(path: &Path, now_ms: i64) -> Result<(Self, String, bool), SigningKeyError> {
        let display = path.display().to_string();
        let created = !path.exists();
        if created {
            let key = SigningKey::generate(now_ms)?;
            let text = file_text(&key.key_id, [&key])?;
            crate::fsutil::write_private_file(path, text.as_bytes())
                .map_err(|source| SigningKeyError::Write { path: display.clone(), source })?;
        }
        let text =
            std::fs::read_to_string(path).map_err(|source| SigningKeyError::Read { path: display.clone(), source })?;
        let malformed = |reason: String| SigningKeyError::Malformed { path: display.clone(), reason };
        let file: KeyFile = serde_json::from_str(&text).map_err(|e| malformed(e.to_string()))?;
        if file.format != FORMAT {
            return Err(malformed(format!("unsupported format {}", file.format)));
        }
        let mut keys = Vec::with_capacity(file.keys.len());
        for stored in &file.keys {
            if stored.algorithm != ALGORITHM {
                return Err(malformed(format!("key {}: unsupported algorithm {}", stored.key_id, stored.algorithm)));
            }
            let pkcs8 = URL_SAFE_NO_PAD
                .decode(&stored.private_key_pkcs8)
                .map_err(|e| malformed(format!("key {}: {e}", stored.key_id)))?;
            let key = SigningKey::from_pkcs8(pkcs8, stored.created_at_ms)
                .map_err(|_| malformed(format!("key {}: not an ECDSA P-256 PKCS#8 key", stored.key_id)))?;
            if key.key_id != stored.key_id {
                return Err(malformed(format!("key {}: the id is not its public key's thumbprint", stored.key_id)));
            }
            keys.push(Arc::new(key));
        }
        if !keys.iter().any(|k| k.key_id == file.active_key_id) {
            return Err(malformed(format!("active key {} is not in the file", file.active_key_id)));
        }
        let this = Self { path: path.to_path_buf(), keys: RwLock::new(keys), rotation: tokio::sync::Mutex::new(()) };
        Ok((this, file.active_key_id, created))
    }

    pub fn get(&self, key_id: &str) -> Option<Arc<SigningKey>> {
        self.keys.read().iter().find(|k| k.key_id == key_id).cloned()
    }

    /// Makes `key` the file's active key, keeping the keys of `keep` (those still published),
    /// durably (a new file renamed over the old one), and adds it to the keys in memory.
    pub fn install(&self, key: SigningKey, keep: &[String]) -> Result<Arc<SigningKey>, SigningKeyError> {
        let key = Arc::new(key);
        let mut kept: Vec<Arc<SigningKey>> =
            self.keys.read().iter().filter(|k| keep.contains(&k.key_id)).cloned().collect();
        kept.push(key.clone());
        let text = file_text(&key.key_id, kept.iter().map(|k| &**k))?;
        let display = self.path.display().to_string();
        let write_error = |source| SigningKeyError::Write { path: display.clone(), source };
        let temporary = self.path.with_extension("json.new");
        match std::fs::remove_file(&temporary) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(write_error(e)),
        }
        crate::fsutil::write_private_file(&temporary, text.as_bytes()).map_err(write_error)?;
        std::fs::rename(&temporary, &self.path).map_err(write_error)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(write_error)?;
        }
        // Keys no longer published are forgotten in memory too; the new one can sign at once.
        *self.keys.write() = kept;
        Ok(key)
    }
}

fn file_text<'a>(active: &str, keys: impl IntoIterator<Item = &'a SigningKey>) -> Result<String, SigningKeyError> {
    let file = KeyFile {
        format: FORMAT,
        active_key_id: active.to_owned(),
        keys: keys
            .into_iter()
            .map(|k| StoredKey {
                key_id: k.key_id.clone(),
                algorithm: ALGORITHM.to_owned(),
                created_at_ms: k.created_at_ms,
                private_key_pkcs8: URL_SAFE_NO_PAD.encode(&k.pkcs8),
            })
            .collect(),
    };
    serde_json::to_string_pretty(&file)
        .map_err(|e| SigningKeyError::Malformed { path: String::new(), reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_key_opens_only_with_its_seal_key_and_id() {
        let key = SigningKey::generate(5).unwrap();
        let seal_key = [7u8; 32];
        let sealed = key.seal(&seal_key).unwrap();
        assert!(!sealed.windows(key.pkcs8.len()).any(|w| w == key.pkcs8.as_slice()), "not in clear");
        let opened = SigningKey::open_sealed(&seal_key, &key.key_id, &sealed, 5).unwrap();
        assert_eq!(opened.public_key(), key.public_key());
        assert!(SigningKey::open_sealed(&[8u8; 32], &key.key_id, &sealed, 5).is_err(), "another cluster's keys");
        assert!(SigningKey::open_sealed(&seal_key, "another-key-id", &sealed, 5).is_err(), "another key's id");
        let mut altered = sealed.clone();
        if let Some(last) = altered.last_mut() {
            *last ^= 1;
        }
        assert!(SigningKey::open_sealed(&seal_key, &key.key_id, &altered, 5).is_err(), "altered");
        assert!(SigningKey::open_sealed(&seal_key, &key.key_id, &[], 5).is_err(), "empty");
    }

    #[test]
    fn key_ids_are_rfc7638_thumbprints() {
        // RFC 7638 has no P-256 example; check the structure and that the id is stable.
        let key = SigningKey::generate(0).unwrap();
        assert_eq!(key.key_id.len(), 43);
        assert_eq!(thumbprint(key.public_key()).as_deref(), Some(key.key_id.as_str()));
        let again = SigningKey::from_pkcs8(key.pkcs8.clone(), 0).unwrap();
        assert_eq!(again.key_id, key.key_id);
        assert_eq!(thumbprint(&[4; 64]), None);
    }

    #[test]
    fn signatures_verify_with_the_public_key() {
        let key = SigningKey::generate(0).unwrap();
        let jws = key.sign_jwt(&serde_json::json!({"sub": "x"})).unwrap();
        let parts: Vec<&str> = jws.split('.').collect();
        assert_eq!(parts.len(), 3);
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        assert_eq!(signature.len(), 64);
        let public =
            ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, key.public_key());
        public.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature).unwrap();
        let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["kid"], key.key_id.as_str());
        assert_eq!(header["alg"], "ES256");
    }

    #[test]
    fn the_key_file_is_created_private_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing-keys.json");
        let (keys, active, created) = SigningKeys::load_or_create(&path, 1).unwrap();
        assert!(created);
        assert!(keys.get(&active).is_some());
        let next = keys.install(SigningKey::generate(2).unwrap(), std::slice::from_ref(&active)).unwrap();
        let (reloaded, reloaded_active, created) = SigningKeys::load_or_create(&path, 3).unwrap();
        assert!(!created);
        assert_eq!(reloaded_active, next.key_id);
        assert!(reloaded.get(&active).is_some(), "the kept key stays in the file");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        keys.install(SigningKey::generate(4).unwrap(), &[]).unwrap();
        let (reloaded, _, _) = SigningKeys::load_or_create(&path, 5).unwrap();
        assert!(reloaded.get(&active).is_none(), "keys no longer published are dropped");
    }
}
