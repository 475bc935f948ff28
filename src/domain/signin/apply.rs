//! How sign-in events change the projections: failures and lockouts are copied from the event
//! (the counts were decided in `decide_failure`), and a password sign-in or an operator's
//! unlock forgets the failures of that login id.

use super::login_key;
use crate::domain::state::{SignInKey, SignInSubject, State};
use crate::proto::ledger::{GrantType, SignInFailed, SignInLockedOut, TokensIssued};

/// The sign-in key an event names.
fn event_key(institution_id: &str, login_id: &str, unknown_login_digest: &[u8]) -> SignInKey {
    let subject = match <[u8; 32]>::try_from(unknown_login_digest) {
        Ok(digest) if login_id.is_empty() => SignInSubject::Unknown(digest),
        _ => SignInSubject::Login(login_id.to_owned()),
    };
    SignInKey { institution_id: institution_id.to_owned(), subject }
}

pub(crate) fn failed(state: &mut State, e: &SignInFailed) {
    let record = state.sign_ins.entry(event_key(&e.institution_id, &e.login_id, &e.unknown_login_digest)).or_default();
    record.window_failures = e.window_failures;
    record.window_ends_at_ms = e.window_ends_at_ms;
    record.failed_login_count = e.failed_login_count;
}

pub(crate) fn locked_out(state: &mut State, e: &SignInLockedOut) {
    let record = state.sign_ins.entry(event_key(&e.institution_id, &e.login_id, &e.unknown_login_digest)).or_default();
    record.locked_until_ms = e.locked_until_ms;
    // The lockout consumed this window's failures: after it ends, counting starts afresh.
    record.window_failures = 0;
}

/// A successful password sign-in resets the failure count of that login id.
pub(crate) fn signed_in(state: &mut State, t: &TokensIssued) {
    if t.grant_type == GrantType::Password as i32 && !t.login_id.is_empty() {
        reset(state, &t.institution_id, &t.login_id);
    }
}

/// Whether [`signed_in`] would change anything: only a sign-in that has failures on record.
pub(crate) fn signed_in_changes(state: &State, t: &TokensIssued) -> bool {
    t.grant_type == GrantType::Password as i32
        && !t.login_id.is_empty()
        && !state.sign_ins.is_empty()
        && state.sign_ins.contains_key(&login_key(&t.institution_id, &t.login_id))
}

/// A successful sign-in or an operator's unlock forgets the failures of that login id.
pub(crate) fn reset(state: &mut State, institution_id: &str, login_id: &str) {
    if !state.sign_ins.is_empty() {
        state.sign_ins.remove(&login_key(institution_id, login_id));
    }
}
