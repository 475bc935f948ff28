//! Rotating and listing the ID-token signing keys (KeyService, `tokenledger keys`).
//!
//! A rotation generates a key, writes the key file durably with the new key active (keeping
//! the private keys that are still published, dropping the rest), makes the key available for
//! signing, and only then records `SigningKeyActivated`. A crash or failed commit after the
//! file write is repaired at the next start-up, which records the file's active key.

use crate::api::app::App;
pub use crate::api::error::RotateError;
use crate::crypto::signing::{ALGORITHM, SigningKey};
use crate::domain::authcode::{SigningKeyActivation, SigningKeyInfo};
use crate::ledger::SubmitFailure;
use crate::proto as api;

/// Makes a new key the one that signs; returns it and the key it replaced.
pub async fn rotate(app: &App, transaction_id: String) -> Result<api::RotateSigningKeyResponse, RotateError> {
    let _one_at_a_time = app.signing.rotation.lock().await;
    let now_ms = app.clock.now_ms();
    let keep: Vec<String> =
        app.state.read().authorization.published_keys(now_ms).into_iter().map(|k| k.key_id.clone()).collect();
    let key = SigningKey::generate(now_ms).map_err(|e| RotateError::KeyFile(e.to_string()))?;
    let key = app.signing.install(key, &keep).map_err(|e| RotateError::KeyFile(e.to_string()))?;
    // In a cluster the other nodes learn the private key from the activation event, sealed
    // under a key derived from keys.json (which every node holds): see `adopt_active_key`.
    let sealed_private_key = match app.cluster {
        Some(_) => key.seal(&app.keys.signing_seal_key()).map_err(|e| RotateError::KeyFile(e.to_string()))?,
        None => Vec::new(),
    };
    let activation = SigningKeyActivation {
        key_id: key.key_id.clone(),
        algorithm: ALGORITHM.to_owned(),
        public_key: key.public_key().to_vec(),
        sealed_private_key,
    };
    let previous_key_id = match app.ledger.submit_as(activation, transaction_id).await {
        Ok(previous_key_id) => previous_key_id.unwrap_or_default(),
        // The activation decider refuses nothing today; a refusal it learns would be a reason
        // to keep the old key, which is what this answer tells the operator.
        Err(SubmitFailure::Refused(_) | SubmitFailure::Unavailable) => return Err(RotateError::Unavailable),
    };
    tracing::info!(key_id = %key.key_id, %previous_key_id, "ID-token signing key rotated");
    let state = app.state.read();
    let view = state.authorization.signing_keys.get(&key.key_id).map(|k| key_view(k, now_ms));
    Ok(api::RotateSigningKeyResponse { key: view, previous_key_id })
}

/// Cluster mode: when the ledger's active signing key is not in this node's key file (another
/// node rotated), opens the sealed copy its activation event carries and installs it. Answers
/// whether a key was installed. Called after every applied batch (`server::cluster`).
pub async fn adopt_active_key(app: &App) -> Result<bool, String> {
    let (key_id, seq, created_at_ms, keep) = {
        let state = app.state.read();
        let Some(key_id) = state.authorization.active_signing_key.clone() else {
            return Ok(false);
        };
        if app.signing.get(&key_id).is_some() {
            return Ok(false);
        }
        let Some(info) = state.authorization.signing_keys.get(&key_id) else {
            return Err(format!("the ledger names signing key {key_id} but does not describe it"));
        };
        let now_ms = app.clock.now_ms();
        let keep: Vec<String> =
            state.authorization.published_keys(now_ms).into_iter().map(|k| k.key_id.clone()).collect();
        (key_id, info.activated_seq, info.activated_at_ms, keep)
    };
    let _one_at_a_time = app.signing.rotation.lock().await;
    if app.signing.get(&key_id).is_some() {
        return Ok(false);
    }
    let opened = crate::api::audit::flow::read(app, move |snapshot| crate::audit::query::open_all(snapshot, &[seq]))
        .await
        .map_err(|e| format!("reading the activation of signing key {key_id} (seq {seq}): {e}"))?;
    let sealed = match opened.into_iter().next().and_then(|o| o.event.kind) {
        Some(crate::proto::ledger::event::Kind::SigningKeyActivated(activated)) if activated.key_id == key_id => {
            activated.sealed_private_key
        }
        _ => return Err(format!("event {seq} is not the activation of signing key {key_id}")),
    };
    if sealed.is_empty() {
        return Err(format!(
            "the activation of signing key {key_id} carries no sealed key: copy signing-keys.json from the node that made it"
        ));
    }
    let key = SigningKey::open_sealed(&app.keys.signing_seal_key(), &key_id, &sealed, created_at_ms)
        .map_err(|_| format!("the sealed signing key {key_id} does not open with this node's keys.json"))?;
    app.signing.install(key, &keep).map_err(|e| format!("installing signing key {key_id}: {e}"))?;
    tracing::info!(%key_id, "ID-token signing key adopted from the ledger");
    Ok(true)
}

/// Every signing key the ledger knows, newest first.
pub fn list(app: &App) -> api::ListSigningKeysResponse {
    let now_ms = app.clock.now_ms();
    let state = app.state.read();
    let mut keys: Vec<&SigningKeyInfo> = state.authorization.signing_keys.values().collect();
    keys.sort_by_key(|k| std::cmp::Reverse(k.activated_seq));
    api::ListSigningKeysResponse { keys: keys.into_iter().map(|k| key_view(k, now_ms)).collect() }
}

fn key_view(key: &SigningKeyInfo, now_ms: i64) -> api::SigningKey {
    api::SigningKey {
        key_id: key.key_id.clone(),
        algorithm: key.algorithm.clone(),
        active: key.retired_at_ms.is_none(),
        published: key.is_published(now_ms),
        activated_seq: key.activated_seq,
        retired_at_ms: key.retired_at_ms.unwrap_or(0),
        id_tokens_valid_until_ms: key.id_tokens_expire_at_ms,
    }
}
