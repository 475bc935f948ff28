//! `apply`: the only code that changes the projections, dispatching each event to the
//! appliers of the aggregates it concerns. It trusts the event (it was decided against the
//! state of its time) and never fails: an event that refers to something the projections have
//! already forgotten (an expired token) changes nothing.

use super::shared::decision::Recorded;
use super::state::State;
use super::{authcode, bulk, directory, signin, token};
use crate::proto::ledger::{Event, event};

pub fn apply(state: &mut State, at: Recorded<'_>, event: &Event) {
    debug_assert!(at.seq > state.head.seq, "events apply in ledger order: seq {} after {}", at.seq, state.head.seq);
    if !apply_to_tables(state, at, event) {
        apply_to_rest(state, at, event);
        state.tables().advance(at.seq);
    }
    set_head(state, at);
}

/// Applies `event` when all it changes is the token tables (which change through shared
/// references, shard by shard) and returns true; changes nothing and returns false when it
/// changes more than them. The caller moves the chain head ([`set_head`]) afterwards: so
/// the writer applies most batches under a read lock of the state and takes the write lock
/// only to move the head, and introspection does not wait for a batch to be applied.
pub fn apply_to_tables(state: &State, at: Recorded<'_>, event: &Event) -> bool {
    match &event.kind {
        Some(event::Kind::TokensIssued(t))
            if !signin::apply::signed_in_changes(state, t) && !authcode::apply::tokens_issued_changes(t) =>
        {
            token::apply::tokens_issued(state, at, t);
        }
        Some(event::Kind::TokenRevoked(r)) => token::apply::token_revoked(state, at, r),
        Some(event::Kind::FamilyRevoked(r)) => token::apply::family_revoked(state, at, r),
        _ => return false,
    }
    state.tables().advance(at.seq);
    true
}

/// Makes `at` the last applied event.
pub fn set_head(state: &mut State, at: Recorded<'_>) {
    state.head.seq = at.seq;
    state.head.hash = at.hash;
    state.head.recorded_at_ms = at.recorded_at_ms;
}

/// Every event that changes more than the token tables.
fn apply_to_rest(state: &mut State, at: Recorded<'_>, event: &Event) {
    match &event.kind {
        // A projection snapshot's record changes nothing but the head (below).
        None | Some(event::Kind::LedgerCreated(_)) | Some(event::Kind::ProjectionSnapshotWritten(_)) => {}
        Some(event::Kind::InstitutionCreated(i)) => directory::apply::institution_created(state, at, i),
        Some(event::Kind::ClientCreated(c)) => directory::apply::client_created(state, at, c),
        Some(event::Kind::UserCreated(u)) => directory::apply::user_created(state, at, u),
        Some(event::Kind::TokensIssued(t)) => {
            token::apply::tokens_issued(state, at, t);
            signin::apply::signed_in(state, t);
            authcode::apply::tokens_issued(state, at, t);
        }
        Some(
            kind @ (event::Kind::ClientSecretRotated(_)
            | event::Kind::ClientDisabled(_)
            | event::Kind::ClientEnabled(_)
            | event::Kind::ClientAuthorizePartnersSet(_)
            | event::Kind::UserPasswordSet(_)
            | event::Kind::UserLocked(_)
            | event::Kind::UserDisabled(_)
            | event::Kind::UserEnabled(_)
            | event::Kind::UserUpdated(_)),
        ) => directory::apply::account_changed(state, at, kind),
        Some(kind @ event::Kind::UserUnlocked(l)) => {
            directory::apply::account_changed(state, at, kind);
            signin::apply::reset(state, &l.institution_id, &l.login_id);
        }
        Some(event::Kind::SignInFailed(f)) => signin::apply::failed(state, f),
        Some(event::Kind::SignInLockedOut(l)) => signin::apply::locked_out(state, l),
        Some(event::Kind::TokenRevoked(r)) => token::apply::token_revoked(state, at, r),
        Some(event::Kind::FamilyRevoked(r)) => token::apply::family_revoked(state, at, r),
        Some(event::Kind::AuthorizationCodeIssued(e)) => authcode::apply::code_issued(state, at, e),
        Some(event::Kind::AuthorizationCodeReplayed(e)) => authcode::apply::code_replayed(state, at, e),
        Some(event::Kind::AuthorizationCodeBurned(e)) => authcode::apply::code_burned(state, at, e),
        Some(event::Kind::SigningKeyActivated(e)) => authcode::apply::signing_key_activated(state, at, e),
        Some(event::Kind::BulkRevoked(b)) => bulk::apply::bulk_revoked(state, at, b),
        Some(event::Kind::BlastRadiusRevoked(b)) => bulk::apply::blast_radius_revoked(state, at, b),
    }
}
