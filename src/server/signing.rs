//! Start-up of the ID-token signing keys: load (or, on first start, create) `signing-keys.json`
//! and make sure the ledger names the file's active key as the one that signs. The ledger and
//! the file can disagree after a crash between a rotation's file write and its ledger event, on
//! the first start of a ledger made before signing keys existed, or after a key file was
//! restored from backup; the file wins, and the change is recorded as an event like any other.

use std::path::Path;

use crate::crypto::signing::{ALGORITHM, SigningKeyError, SigningKeys};
use crate::domain::State;
use crate::domain::authcode::SigningKeyActivation;
use crate::domain::authcode::decide::activation_event;
use crate::ledger::{self, Store, StoreError};

pub const SIGNING_KEYS_FILE: &str = "signing-keys.json";

#[derive(Debug, thiserror::Error)]
pub enum SigningStartError {
    #[error(transparent)]
    Keys(#[from] SigningKeyError),
    #[error("cannot record the signing key in the ledger: {0}")]
    Ledger(#[from] StoreError),
}

/// Loads the signing keys of `dir` and records the active one in the ledger if the ledger does
/// not already name it. Runs before the writer starts, so it appends through
/// [`ledger::append_bootstrap`] (as the `LedgerCreated` event is). Returns the keys and whether the key file was created.
pub fn prepare(
    dir: &Path,
    store: &Store,
    state: &mut State,
    now_ms: i64,
) -> Result<(SigningKeys, bool), SigningStartError> {
    let (keys, active, created) = SigningKeys::load_or_create(&dir.join(SIGNING_KEYS_FILE), now_ms)?;
    if state.authorization.active_signing_key.as_deref() == Some(active.as_str()) {
        return Ok((keys, created));
    }
    let Some(key) = keys.get(&active) else {
        // load_or_create checked that the active key is in the file.
        return Err(SigningKeyError::Crypto.into());
    };
    let activation = SigningKeyActivation {
        key_id: key.key_id.clone(),
        algorithm: ALGORITHM.to_owned(),
        public_key: key.public_key().to_vec(),
        sealed_private_key: Vec::new(),
    };
    let event = activation_event(state, &activation);
    ledger::append_bootstrap(store, state, &event, now_ms)?;
    tracing::info!(key_id = %key.key_id, "ID-token signing key recorded in the ledger");
    Ok((keys, created))
}
