//! The user check of the password grant, in the order that keeps it from being an oracle:
//!
//! 1. a running lockout of (institution, login id) answers CMN_90009 at once, for known and
//!    unknown login ids alike (no hash, nothing recorded);
//! 2. a client that has used up its budget of failed sign-ins
//!    (`sign_in_failures_per_client_per_min`) is answered CMN_90003 with `Retry-After`, again
//!    before any hash and without recording anything, so no lockout is counted: one client
//!    cannot lock every known login id at will (security review finding 11);
//! 3. the password is checked with PBKDF2 against the user's digest, or against a dummy digest
//!    for an unknown login id or a user without a password, so every path costs one hash (the
//!    dummy's iteration count follows those of stored passwords, `api::dummy`);
//! 4. a wrong pair is charged to the client's budget, recorded as a `SignInFailed` event (and a `SignInLockedOut` when it
//!    reaches the threshold) and only then answered with CMN_90015;
//! 5. the right password of an operator-locked user answers CMN_90009, of a disabled user
//!    CMN_90016. The writer checks these again when it issues the tokens.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::api::app::App;
use crate::api::error::ErrorCode;
use crate::api::ratelimit::note_retry_after;
use crate::crypto::credential;
use crate::domain::signin::{self, LockoutPolicy, SignInFailure};
use crate::domain::state::{SignInKey, SignInSubject};
use crate::ledger::SubmitFailure;

/// Checks `password` for (institution, login id), presented by `client_id`; `Ok` means the
/// writer may issue tokens.
pub async fn check_user(
    app: &App,
    client_id: &Arc<str>,
    institution_id: &str,
    login_id: &str,
    password: &str,
    transaction_id: &str,
) -> Result<(), ErrorCode> {
    let now_ms = app.clock.now_ms();
    let (key, stored) = {
        let state = app.state.read();
        match state.user(institution_id, login_id) {
            Some(user) => (signin::login_key(institution_id, login_id), Some(user.password.clone())),
            None => {
                let digest = credential::unknown_login_digest(&app.keys, institution_id, login_id);
                let key =
                    SignInKey { institution_id: institution_id.to_owned(), subject: SignInSubject::Unknown(digest) };
                (key, None)
            }
        }
    };
    if signin::is_locked_out(&app.state.read(), &key, now_ms) {
        tracing::info!(institution_id, "sign-in refused: locked out");
        return Err(ErrorCode::AccessBlocked);
    }
    if let Err(wait) = app.sign_in_failures.check(client_id) {
        app.sign_in_failures_refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(institution_id, "sign-in refused: the client used up its failed sign-ins");
        note_retry_after(wait);
        return Err(ErrorCode::SpikeLimit);
    }
    // A user created without a password has an empty digest: check the dummy instead, so
    // the answer takes as long as any other wrong password.
    let stored = stored.filter(|d| d.kind.is_some());
    let known = stored.is_some();
    let digest = stored.unwrap_or_else(|| app.dummy_passwords.pick(&app.keys, institution_id, login_id));
    if !app.verify_slow(password.to_owned(), digest).await || !known {
        app.sign_in_failures.charge(client_id);
        return record_failure(app, key, transaction_id).await;
    }
    signin::may_sign_in(&app.state.read(), institution_id, login_id, now_ms).map_err(ErrorCode::from)
}

/// Records the failure durably, then answers (CMN_90015, or CMN_90009 if a lockout began
/// meanwhile).
async fn record_failure(app: &App, key: SignInKey, transaction_id: &str) -> Result<(), ErrorCode> {
    let lockout = app.config.lockout;
    let policy = LockoutPolicy {
        failures_max: lockout.failures_max,
        window_ms: lockout.window_ms,
        duration_ms: lockout.duration_ms,
    };
    let failure = SignInFailure { key, policy };
    match app.ledger.submit_as(failure, transaction_id.to_owned()).await {
        Ok(never) => match never {},
        Err(SubmitFailure::Refused(refusal)) => Err(refusal.into()),
        // Not recorded means not answered as a plain failure: the caller may retry.
        Err(SubmitFailure::Unavailable) => Err(ErrorCode::TokenNotRecorded),
    }
}
