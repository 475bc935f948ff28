//! How directory events change the projections: institutions, clients and users created, and
//! the account changes of `account.rs`. Like the rest of `apply` it trusts the event and never
//! fails: an event naming a client or user the state does not hold changes nothing.

use std::sync::Arc;

use crate::domain::shared::decision::Recorded;
use crate::domain::shared::grant::parse_stored;
use crate::domain::state::cutoff::{Cutoff, CutoffScope};
use crate::domain::state::{Client, GrantTypes, Institution, PreviousSecret, State, User, UserIdentity, user_key};
use crate::proto::ledger::{ClientCreated, InstitutionCreated, UserCreated, UserType, event};

pub(crate) fn institution_created(state: &mut State, at: Recorded<'_>, i: &InstitutionCreated) {
    let id: Arc<str> = i.institution_id.as_str().into();
    state.institutions.insert(id.clone(), Institution { id, name: i.name.clone(), created_seq: at.seq });
}

pub(crate) fn client_created(state: &mut State, at: Recorded<'_>, c: &ClientCreated) {
    let mut grant_types = GrantTypes::default();
    for grant in c.grant_types.iter().filter_map(|g| parse_stored(g)) {
        grant_types.insert(grant);
    }
    let id: Arc<str> = c.client_id.as_str().into();
    let client = Client {
        id: id.clone(),
        name: c.name.clone(),
        institution_ids: c.institution_ids.iter().map(|i| Arc::from(i.as_str())).collect(),
        grant_types,
        scopes: c.scopes.iter().map(|s| Box::from(s.as_str())).collect(),
        redirect_uri: c.redirect_uri.clone(),
        access_token_ttl_secs: c.access_token_ttl_secs,
        refresh_token_ttl_secs: c.refresh_token_ttl_secs,
        introspect: c.introspect,
        consent_enabled: c.consent_enabled,
        secondary_authentication_enabled: c.secondary_authentication_enabled,
        device_registration_enabled: c.device_registration_enabled,
        authorize_partners: c.authorize_partners,
        secret: c.secret.clone().unwrap_or_default(),
        created_seq: at.seq,
        disabled: false,
        previous_secret: None,
    };
    state.clients.insert(id, Arc::new(client));
}

pub(crate) fn user_created(state: &mut State, at: Recorded<'_>, u: &UserCreated) {
    let identity = UserIdentity {
        institution_id: u.institution_id.as_str().into(),
        login_id: u.login_id.as_str().into(),
        institution_user_id: u.institution_user_id.as_str().into(),
        host_user_id: u.host_user_id.clone(),
        user_type: UserType::try_from(u.user_type).unwrap_or(UserType::Unspecified),
    };
    let user = User {
        identity: Arc::new(identity),
        first_name: u.first_name.clone(),
        last_name: u.last_name.clone(),
        email: u.email.clone(),
        institution_customers: u.institution_customers.clone(),
        password: u.password.clone().unwrap_or_default(),
        created_seq: at.seq,
        disabled: false,
        locked: false,
    };
    let key = user_key(&u.institution_id, &u.login_id);
    if !u.host_user_id.is_empty() {
        state.users_by_host_user_id.insert(user_key(&u.institution_id, &u.host_user_id), key.clone());
    }
    state.users_by_institution_user_id.insert(user_key(&u.institution_id, &u.institution_user_id), key.clone());
    state.users.insert(key, Arc::new(user));
}

/// A change to an existing client or user (the events of `account.rs`).
pub(crate) fn account_changed(state: &mut State, at: Recorded<'_>, kind: &event::Kind) {
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
        // The dispatcher also resets the sign-in failures of the user (`signin::apply::reset`).
        event::Kind::UserUnlocked(l) => update_user(state, &l.institution_id, &l.login_id, |u| u.locked = false),
        event::Kind::UserDisabled(d) => {
            update_user(state, &d.institution_id, &d.login_id, |u| u.disabled = true);
            let scope = CutoffScope::User { institution_id: d.institution_id.clone(), login_id: d.login_id.clone() };
            state.cutoffs.add(&scope, Cutoff::new(at.seq, at.recorded_at_ms, 0));
        }
        event::Kind::UserEnabled(e) => update_user(state, &e.institution_id, &e.login_id, |u| u.disabled = false),
        event::Kind::UserUpdated(u) => apply_user_updated(state, u),
        _ => {}
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
