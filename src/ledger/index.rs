//! Secondary index keys, written in the same transaction as the events they point to, so
//! audit queries by token, family, client, user, institution or kind never scan the log.
//!
//! Key layout: `kind (1 byte) ‖ len (1 byte) ‖ value (len bytes) ‖ seq (8 bytes, big endian)`;
//! all entries of one value are contiguous and ordered by seq.

use super::token_ids::TokenIdScheme;
use crate::domain::ids::{FamilyId, TokenId};
use crate::domain::state::{State, user_key};
use crate::proto::ledger::{self, Event, event};

/// Bumped whenever `keys_for` changes; a ledger with another version is re-indexed on open.
pub const INDEX_VERSION: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum IndexKind {
    Token = 1,
    Family = 2,
    Client = 3,
    User = 4,
    Institution = 5,
    EventKind = 6,
}

/// The index value of a token id: its position by creation time (see `token_ids`). Queries by
/// token use this with [`prefix`].
pub fn token_value(token_ids: &TokenIdScheme, id: &TokenId) -> [u8; 16] {
    token_ids.index_key(id)
}

/// The prefix shared by every index entry of (`kind`, `value`).
pub fn prefix(kind: IndexKind, value: &[u8]) -> Vec<u8> {
    let len = value.len().min(255);
    let mut key = Vec::with_capacity(2 + len + 8);
    key.push(kind as u8);
    key.push(len as u8);
    key.extend_from_slice(&value[..len]);
    key
}

pub fn entry(kind: IndexKind, value: &[u8], seq: u64) -> Vec<u8> {
    let mut key = prefix(kind, value);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The seq at the end of an index entry.
pub fn seq_of(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// The number of an event's kind (its field number in `Event.kind`).
pub fn kind_number(event: &Event) -> u8 {
    match &event.kind {
        None => 0,
        Some(event::Kind::LedgerCreated(_)) => 1,
        Some(event::Kind::InstitutionCreated(_)) => 2,
        Some(event::Kind::ClientCreated(_)) => 3,
        Some(event::Kind::UserCreated(_)) => 4,
        Some(event::Kind::ClientSecretRotated(_)) => 5,
        Some(event::Kind::ClientDisabled(_)) => 6,
        Some(event::Kind::ClientEnabled(_)) => 7,
        Some(event::Kind::UserPasswordSet(_)) => 20,
        Some(event::Kind::UserLocked(_)) => 21,
        Some(event::Kind::UserUnlocked(_)) => 22,
        Some(event::Kind::UserDisabled(_)) => 23,
        Some(event::Kind::UserEnabled(_)) => 24,
        Some(event::Kind::UserUpdated(_)) => 25,
        Some(event::Kind::SignInFailed(_)) => 26,
        Some(event::Kind::SignInLockedOut(_)) => 27,
        Some(event::Kind::TokensIssued(_)) => 10,
        Some(event::Kind::TokenRevoked(_)) => 11,
        Some(event::Kind::FamilyRevoked(_)) => 12,
        Some(event::Kind::AuthorizationCodeIssued(_)) => 30,
        Some(event::Kind::AuthorizationCodeReplayed(_)) => 31,
        Some(event::Kind::AuthorizationCodeBurned(_)) => 32,
        Some(event::Kind::SigningKeyActivated(_)) => 33,
    }
}

/// Index entries of `event` at `seq`. `state` (before the event) supplies what the event only
/// refers to, such as the client of a revoked token.
pub fn keys_for(state: &State, token_ids: &TokenIdScheme, event: &Event, seq: u64) -> Vec<Vec<u8>> {
    let mut keys = vec![entry(IndexKind::EventKind, &[kind_number(event)], seq)];
    let mut add = |kind: IndexKind, value: &[u8]| match (kind, TokenId::from_slice(value)) {
        // Tokens are indexed by creation time (see `token_ids`), so new ones are neighbours.
        (IndexKind::Token, Some(id)) => keys.push(entry(kind, &token_ids.index_key(&id), seq)),
        _ if !value.is_empty() => keys.push(entry(kind, value, seq)),
        _ => {}
    };
    match &event.kind {
        None | Some(event::Kind::LedgerCreated(_)) => {}
        Some(event::Kind::InstitutionCreated(i)) => add(IndexKind::Institution, i.institution_id.as_bytes()),
        Some(event::Kind::ClientCreated(c)) => {
            add(IndexKind::Client, c.client_id.as_bytes());
            for institution in &c.institution_ids {
                add(IndexKind::Institution, institution.as_bytes());
            }
        }
        Some(event::Kind::UserCreated(u)) => {
            add(IndexKind::User, user_key(&u.institution_id, &u.login_id).as_bytes());
            add(IndexKind::Institution, u.institution_id.as_bytes());
        }
        Some(event::Kind::ClientSecretRotated(ledger::ClientSecretRotated { client_id, .. }))
        | Some(event::Kind::ClientDisabled(ledger::ClientDisabled { client_id }))
        | Some(event::Kind::ClientEnabled(ledger::ClientEnabled { client_id })) => {
            add(IndexKind::Client, client_id.as_bytes())
        }
        Some(event::Kind::UserPasswordSet(ledger::UserPasswordSet { institution_id, login_id, .. }))
        | Some(event::Kind::UserLocked(ledger::UserLocked { institution_id, login_id }))
        | Some(event::Kind::UserUnlocked(ledger::UserUnlocked { institution_id, login_id }))
        | Some(event::Kind::UserDisabled(ledger::UserDisabled { institution_id, login_id }))
        | Some(event::Kind::UserEnabled(ledger::UserEnabled { institution_id, login_id }))
        | Some(event::Kind::UserUpdated(ledger::UserUpdated { institution_id, login_id, .. }))
        | Some(event::Kind::SignInFailed(ledger::SignInFailed { institution_id, login_id, .. }))
        | Some(event::Kind::SignInLockedOut(ledger::SignInLockedOut { institution_id, login_id, .. })) => {
            // Sign-ins of unknown login ids carry no login id: they index by institution only.
            if !login_id.is_empty() {
                add(IndexKind::User, user_key(institution_id, login_id).as_bytes());
            }
            add(IndexKind::Institution, institution_id.as_bytes());
        }
        Some(event::Kind::TokensIssued(t)) => {
            for token in [&t.access, &t.refresh].into_iter().flatten() {
                add(IndexKind::Token, &token.token_id);
            }
            add(IndexKind::Token, &t.rotated_from);
            add(IndexKind::Token, &t.authorization_code_id);
            add(IndexKind::Family, &t.family_id);
            add(IndexKind::Client, t.client_id.as_bytes());
            add(IndexKind::Institution, t.institution_id.as_bytes());
            if !t.login_id.is_empty() {
                add(IndexKind::User, user_key(&t.institution_id, &t.login_id).as_bytes());
            }
        }
        Some(event::Kind::TokenRevoked(r)) => {
            add(IndexKind::Token, &r.token_id);
            if let Some(token) = TokenId::from_slice(&r.token_id).and_then(|id| state.tokens.get(&id)) {
                add_grant(&mut add, &token.grant);
            }
        }
        Some(event::Kind::FamilyRevoked(r)) => {
            add(IndexKind::Family, &r.family_id);
            add(IndexKind::Token, &r.trigger_token_id);
            let family = FamilyId::from_slice(&r.family_id).and_then(|id| state.families.get(&id));
            let grant = family.and_then(|f| f.live_refresh.or_else(|| TokenId::from_slice(&r.trigger_token_id)));
            if let Some(token) = grant.and_then(|id| state.tokens.get(&id)) {
                add_grant(&mut add, &token.grant);
            }
            // A code replay's family may hold no refresh token: its code names the parties.
            add_code(&mut add, state, &r.trigger_token_id);
        }
        Some(event::Kind::AuthorizationCodeIssued(c)) => {
            add(IndexKind::Token, &c.code_id);
            add(IndexKind::Client, c.client_id.as_bytes());
            add(IndexKind::Client, c.authorized_by_client_id.as_bytes());
            add(IndexKind::Token, &c.authorized_by_token_id);
            add(IndexKind::Institution, c.institution_id.as_bytes());
            add(IndexKind::User, user_key(&c.institution_id, &c.login_id).as_bytes());
        }
        Some(event::Kind::AuthorizationCodeReplayed(r)) => {
            add(IndexKind::Token, &r.code_id);
            add(IndexKind::Family, &r.family_id);
            add_code(&mut add, state, &r.code_id);
        }
        Some(event::Kind::AuthorizationCodeBurned(b)) => {
            add(IndexKind::Token, &b.code_id);
            add_code(&mut add, state, &b.code_id);
        }
        Some(event::Kind::SigningKeyActivated(_)) => {}
    }
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The client, institution and user of the code `code_id`, from the state before the event.
fn add_code(add: &mut impl FnMut(IndexKind, &[u8]), state: &State, code_id: &[u8]) {
    if let Some(code) = TokenId::from_slice(code_id).and_then(|id| state.authorization.codes.get(&id)) {
        add(IndexKind::Client, code.client_id.as_bytes());
        add(IndexKind::Institution, code.institution_id.as_bytes());
        add(IndexKind::User, user_key(&code.institution_id, &code.login_id).as_bytes());
    }
}

fn add_grant(add: &mut impl FnMut(IndexKind, &[u8]), grant: &crate::domain::state::Grant) {
    add(IndexKind::Client, grant.client_id.as_bytes());
    add(IndexKind::Institution, grant.institution_id.as_bytes());
    if let Some(user) = &grant.user {
        add(IndexKind::User, user_key(&user.institution_id, &user.login_id).as_bytes());
    }
}
