//! How the authorization-code and signing-key events change the projections. Like the rest of
//! `apply`, these trust the event and never fail: an event about something already forgotten
//! (a purged code) changes nothing.

use super::{AuthorizationCode, CodeStatus, IdTokenRecord, Redeemed, SigningKeyInfo};
use crate::domain::shared::decision::{Recorded, decided_at_ms};
use crate::domain::shared::ids::{FamilyId, TokenId};
use crate::domain::state::State;
use crate::proto::ledger::{
    AuthorizationCodeBurned, AuthorizationCodeIssued, AuthorizationCodeReplayed, CodeBurnReason, SigningKeyActivated,
    TokensIssued,
};

pub fn code_issued(state: &mut State, at: Recorded<'_>, e: &AuthorizationCodeIssued) {
    let Some(id) = TokenId::from_slice(&e.code_id) else {
        return;
    };
    // Share the client's and institution's strings, as tokens do.
    let client_id = state.client(&e.client_id).map(|c| c.id.clone()).unwrap_or_else(|| e.client_id.as_str().into());
    let institution_id = state
        .institutions
        .get_key_value(e.institution_id.as_str())
        .map(|(k, _)| k.clone())
        .unwrap_or_else(|| e.institution_id.as_str().into());
    let authorized_by = state
        .client(&e.authorized_by_client_id)
        .map(|c| c.id.clone())
        .unwrap_or_else(|| e.authorized_by_client_id.as_str().into());
    let text = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let issued_at_ms = decided_at_ms(e.issued_at_ms, at);
    let code = AuthorizationCode {
        client_id,
        institution_id,
        login_id: e.login_id.as_str().into(),
        institution_user_id: e.institution_user_id.as_str().into(),
        scopes: e.scopes.iter().map(|s| Box::from(s.as_str())).collect::<Vec<_>>().into(),
        requested_scopes: e.requested_scopes.iter().map(|s| Box::from(s.as_str())).collect(),
        nonce: text(&e.nonce),
        audience: text(&e.audience),
        auth_time_secs: if e.auth_time_secs > 0 { e.auth_time_secs } else { issued_at_ms / 1000 },
        challenge: <[u8; 32]>::try_from(e.code_challenge.as_slice()).ok(),
        authorized_by,
        issued_at_ms,
        expires_at_ms: e.expires_at_ms,
        issued_seq: at.seq,
        status: CodeStatus::Live,
    };
    state.authorization.codes.insert(id, code);
}

/// Whether [`tokens_issued`] may change anything: only an issuance that redeemed a code or
/// came with an ID token.
pub fn tokens_issued_changes(t: &TokensIssued) -> bool {
    !t.id_token_key_id.is_empty() || !t.authorization_code_id.is_empty()
}

/// The part of a `TokensIssued` event that concerns codes and signing keys: the code it
/// redeemed, and the ID token issued with it.
pub fn tokens_issued(state: &mut State, at: Recorded<'_>, t: &TokensIssued) {
    if !t.id_token_key_id.is_empty()
        && let Some(key) = state.authorization.signing_keys.get_mut(&t.id_token_key_id)
    {
        key.id_tokens_expire_at_ms = key.id_tokens_expire_at_ms.max(t.id_token_expires_at_ms);
    }
    let (Some(code_id), Some(family), Some(access)) = (
        TokenId::from_slice(&t.authorization_code_id),
        FamilyId::from_slice(&t.family_id),
        t.access.as_ref().and_then(|a| TokenId::from_slice(&a.token_id)),
    ) else {
        return;
    };
    let Some(code) = state.authorization.codes.get_mut(&code_id) else {
        return;
    };
    let id_token = (!t.id_token_key_id.is_empty()).then(|| IdTokenRecord {
        key_id: t.id_token_key_id.clone(),
        issued_at_ms: decided_at_ms(t.issued_at_ms, at),
        expires_at_ms: t.id_token_expires_at_ms,
    });
    code.status = CodeStatus::Redeemed(Redeemed {
        seq: at.seq,
        at_ms: at.recorded_at_ms,
        family,
        access,
        id_token,
        replayed_seq: None,
    });
    state.authorization.code_by_family.insert(family, code_id);
}

pub fn code_replayed(state: &mut State, at: Recorded<'_>, e: &AuthorizationCodeReplayed) {
    let code = TokenId::from_slice(&e.code_id).and_then(|id| state.authorization.codes.get_mut(&id));
    if let Some(CodeStatus::Redeemed(redeemed)) = code.map(|c| &mut c.status) {
        redeemed.replayed_seq.get_or_insert(at.seq);
    }
}

pub fn code_burned(state: &mut State, at: Recorded<'_>, e: &AuthorizationCodeBurned) {
    let code = TokenId::from_slice(&e.code_id).and_then(|id| state.authorization.codes.get_mut(&id));
    if let Some(code) = code.filter(|c| c.status == CodeStatus::Live) {
        let reason = CodeBurnReason::try_from(e.reason).unwrap_or(CodeBurnReason::Unspecified);
        code.status = CodeStatus::Burned { seq: at.seq, reason };
    }
}

pub fn signing_key_activated(state: &mut State, at: Recorded<'_>, e: &SigningKeyActivated) {
    let authorization = &mut state.authorization;
    if let Some(previous) = authorization.active_signing_key.take().filter(|p| *p != e.key_id)
        && let Some(key) = authorization.signing_keys.get_mut(&previous)
    {
        key.retired_at_ms = Some(at.recorded_at_ms);
    }
    let key = authorization.signing_keys.entry(e.key_id.clone()).or_insert_with(|| SigningKeyInfo {
        key_id: e.key_id.clone(),
        algorithm: e.algorithm.clone(),
        public_key: e.public_key.clone(),
        activated_seq: at.seq,
        activated_at_ms: at.recorded_at_ms,
        retired_at_ms: None,
        id_tokens_expire_at_ms: 0,
    });
    // A key activated again (a key file restored from backup) signs again.
    key.activated_seq = at.seq;
    key.activated_at_ms = at.recorded_at_ms;
    key.retired_at_ms = None;
    authorization.active_signing_key = Some(e.key_id.clone());
}
