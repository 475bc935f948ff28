//! The part of `apply` for account changes and sign-ins. Like the rest of `apply` it trusts
//! the event and never fails: an event naming a client or user the state does not hold
//! changes nothing.

use std::sync::Arc;

use super::apply::Recorded;
use super::signin;
use super::state::cutoff::{Cutoff, CutoffScope};
use super::state::{Client, PreviousSecret, State, User, UserIdentity, user_key};
use crate::proto::ledger::{GrantType, TokensIssued, UserType, event};

pub(super) fn apply_change(state: &mut State, at: Recorded<'_>, kind: &event::Kind) {
    match kind {
        event::Kind::ClientSecretRotated(r) => update_client(state, &r.client_id, |c| {
            let previous = std::mem::replace(&mut c.secret, r.secret.clone().unwrap_or_default());
            // Kept whenever it has an end: `previous_secret_at` compares that with the clock,
            // not with the recorded time, which may lie ahead of the clock after a clock step.
            c.previous_secret = (r.previous_secret_valid_until_ms > 0)
                .then_some(PreviousSecret { digest: previous, valid_until_ms: r.previous_secret_valid_until_ms });
        }),
        event::Kind::ClientDisabled(d) => {
            update_client(state, &d.client_id, |c| c.disabled = true);
            // Disabling is a cutoff on the client: every token issued before this event ends.
            // Recorded even when the client is not in this state (an audit replay of one
            // token's events holds no directory).
            state.cutoffs.add(&CutoffScope::Client(d.client_id.clone()), Cutoff::new(at.seq, at.recorded_at_ms, 0));
        }
        event::Kind::ClientEnabled(e) => update_client(state, &e.client_id, |c| c.disabled = false),
        event::Kind::ClientAuthorizePartnersSet(e) => {
            update_client(state, &e.client_id, |c| c.authorize_partners = e.authorize_partners)
        }
        event::Kind::UserPasswordSet(p) => {
            update_user(state, &p.institution_id, &p.login_id, |u| u.password = p.password.clone().unwrap_or_default())
        }
        event::Kind::UserLocked(l) => update_user(state, &l.institution_id, &l.login_id, |u| u.locked = true),
        event::Kind::UserUnlocked(l) => {
            update_user(state, &l.institution_id, &l.login_id, |u| u.locked = false);
            signin::reset(state, &l.institution_id, &l.login_id);
        }
        event::Kind::UserDisabled(d) => {
            update_user(state, &d.institution_id, &d.login_id, |u| u.disabled = true);
            let scope = CutoffScope::User { institution_id: d.institution_id.clone(), login_id: d.login_id.clone() };
            state.cutoffs.add(&scope, Cutoff::new(at.seq, at.recorded_at_ms, 0));
        }
        event::Kind::UserEnabled(e) => update_user(state, &e.institution_id, &e.login_id, |u| u.disabled = false),
        event::Kind::UserUpdated(u) => apply_user_updated(state, u),
        event::Kind::SignInFailed(f) => signin::apply_failed(state, f),
        event::Kind::SignInLockedOut(l) => signin::apply_locked_out(state, l),
        _ => {}
    }
}

/// A successful password sign-in resets the failure count of that login id.
pub(super) fn signed_in(state: &mut State, t: &TokensIssued) {
    if t.grant_type == GrantType::Password as i32 && !t.login_id.is_empty() {
        signin::reset(state, &t.institution_id, &t.login_id);
    }
}

fn update_client(state: &mut State, client_id: &str, change: impl FnOnce(&mut Client)) {
    if let Some(client) = state.clients.get_mut(client_id) {
        change(Arc::make_mut(client));
    }
}

fn update_user(state: &mut State, institution_id: &str, login_id: &str, change: impl FnOnce(&mut User)) {
    if let Some(user) = state.users.get_mut(&user_key(institution_id, login_id)) {
        change(Arc::make_mut(user));
    }
}

fn apply_user_updated(state: &mut State, u: &crate::proto::ledger::UserUpdated) {
    let key = user_key(&u.institution_id, &u.login_id);
    let Some(user) = state.users.get_mut(&key) else {
        return;
    };
    let user = Arc::make_mut(user);
    let old_host = user.identity.host_user_id.clone();
    // Tokens issued before keep the identity they were issued with; new ones get this one.
    user.identity = Arc::new(UserIdentity {
        institution_id: user.identity.institution_id.clone(),
        login_id: user.identity.login_id.clone(),
        institution_user_id: user.identity.institution_user_id.clone(),
        host_user_id: u.host_user_id.clone(),
        user_type: UserType::try_from(u.user_type).unwrap_or(UserType::Unspecified),
    });
    user.first_name = u.first_name.clone();
    user.last_name = u.last_name.clone();
    user.email = u.email.clone();
    user.institution_customers = u.institution_customers.clone();
    if !old_host.is_empty() {
        let old = user_key(&u.institution_id, &old_host);
        if state.users_by_host_user_id.get(&old) == Some(&key) {
            state.users_by_host_user_id.remove(&old);
        }
    }
    if !u.host_user_id.is_empty() {
        state.users_by_host_user_id.insert(user_key(&u.institution_id, &u.host_user_id), key);
    }
}
