//! Applying committed events to the shared projections, so that readers (introspection,
//! client authentication) do not wait while a batch is applied: a run of events that change
//! only the token tables is applied under a read lock of the state (the tables change shard
//! by shard through their own locks), an event that changes more under the write lock, and the
//! chain head moves last, under a write lock held for a few stores.
//!
//! A reader may meanwhile see a token of the batch before the head covers it: it is committed
//! already, and validity only moves towards "inactive". The head never covers an event the
//! tables lack, so a reader that waits for a seq (ReadIndex) sees everything up to it.

use parking_lot::RwLock;

use crate::domain::{self, Recorded, State, apply_to_tables, set_head};
use crate::proto::ledger::Event;

/// Applies `events` (committed, consecutive, after the head) in order; one applier at a time.
pub(crate) fn apply<'a>(state: &RwLock<State>, events: impl IntoIterator<Item = (Recorded<'a>, &'a Event)>) {
    let mut events = events.into_iter();
    // The last event applied to the tables alone, whose seq the head does not show yet.
    let mut unheaded = None;
    loop {
        let mut exclusive = None;
        {
            let shared = state.read();
            for (at, event) in events.by_ref() {
                if apply_to_tables(&shared, at, event) {
                    unheaded = Some(at);
                } else {
                    exclusive = Some((at, event));
                    break;
                }
            }
        }
        let Some((at, event)) = exclusive else { break };
        domain::apply(&mut state.write(), at, event);
        unheaded = None;
    }
    if let Some(at) = unheaded {
        set_head(&mut state.write(), at);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::domain::TokenId;
    use crate::domain::shared::decision::wrap;
    use crate::proto::ledger::event::Kind;
    use crate::proto::ledger::{
        BulkRevoked, ClientCreated, GrantType, InstitutionCreated, IssuedToken, RevocationReason, SignInFailed,
        TokenRevoked, TokensIssued, UserCreated, bulk_revoked,
    };

    const T0: i64 = 1_700_000_000_000;

    fn at(seq: u64) -> Recorded<'static> {
        Recorded { seq, recorded_at_ms: T0 + seq as i64, transaction_id: "", hash: [seq as u8; 32] }
    }

    fn issued(grant: GrantType, login_id: &str, id: u8) -> Kind {
        Kind::TokensIssued(TokensIssued {
            grant_type: grant as i32,
            client_id: "app".into(),
            institution_id: "01001".into(),
            login_id: login_id.into(),
            access: Some(IssuedToken { token_id: vec![id; 16], expires_at_ms: T0 + 600_000, scopes: vec!["a".into()] }),
            ..Default::default()
        })
    }

    /// Institution 01001 and client `app` (client credentials and password), seqs 1 and 2.
    fn directory() -> State {
        let mut state = State::default();
        let events = [
            Kind::InstitutionCreated(InstitutionCreated { institution_id: "01001".into(), name: "I".into() }),
            Kind::ClientCreated(ClientCreated {
                client_id: "app".into(),
                institution_ids: vec!["01001".into()],
                grant_types: vec!["client_credentials".into(), "password".into()],
                scopes: vec!["a".into()],
                access_token_ttl_secs: 600,
                ..Default::default()
            }),
        ];
        for (i, kind) in events.into_iter().enumerate() {
            domain::apply(&mut state, at(i as u64 + 1), &wrap(kind));
        }
        state
    }

    /// The point of this module: a reader holding the state (an introspection) does not stop a
    /// batch of issuances and revocations from being applied; only the head waits for it.
    #[test]
    fn token_events_apply_while_a_reader_holds_the_state() {
        let lock = Arc::new(RwLock::new(directory()));
        let reader = lock.read();
        let applier = {
            let lock = lock.clone();
            std::thread::spawn(move || {
                let events: Vec<Event> = [
                    issued(GrantType::ClientCredentials, "", 1),
                    issued(GrantType::ClientCredentials, "", 2),
                    Kind::TokenRevoked(TokenRevoked {
                        token_id: vec![1; 16],
                        reason: RevocationReason::ClientRequest as i32,
                    }),
                ]
                .into_iter()
                .map(wrap)
                .collect();
                apply(&lock, events.iter().enumerate().map(|(i, event)| (at(i as u64 + 3), event)));
            })
        };
        // Not a timing assertion: the loop only bounds how long a broken build hangs.
        let deadline = Instant::now() + Duration::from_secs(30);
        while reader.active_token(&TokenId([2; 16]), T0).is_none()
            || reader.active_token(&TokenId([1; 16]), T0).is_some()
        {
            assert!(Instant::now() < deadline, "the batch was not applied while a reader held the state");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(reader.head.seq, 2, "the head moves only once no reader holds the state");
        drop(reader);
        applier.join().unwrap();
        assert_eq!(lock.read().head.seq, 5);
        assert_eq!(lock.read().head.hash, [5; 32]);
    }

    /// Applying under the split locks gives the state that applying one event after the other
    /// gives, with events that change more than the tables in between (a user created, a
    /// sign-in with failures on record, a bulk revocation).
    #[test]
    fn the_split_apply_equals_the_sequential_apply() {
        let kinds = vec![
            issued(GrantType::ClientCredentials, "", 1),
            Kind::UserCreated(UserCreated {
                institution_id: "01001".into(),
                login_id: "alice".into(),
                institution_user_id: "IU".into(),
                ..Default::default()
            }),
            Kind::SignInFailed(SignInFailed {
                institution_id: "01001".into(),
                login_id: "alice".into(),
                window_failures: 1,
                ..Default::default()
            }),
            issued(GrantType::ClientCredentials, "", 2),
            // Resets alice's failures: not a table-only event.
            issued(GrantType::Password, "alice", 3),
            issued(GrantType::Password, "alice", 4),
            Kind::BulkRevoked(BulkRevoked {
                scope: Some(bulk_revoked::Scope::ClientId("app".into())),
                ..Default::default()
            }),
            issued(GrantType::ClientCredentials, "", 5),
            Kind::TokenRevoked(TokenRevoked { token_id: vec![5; 16], reason: RevocationReason::ClientRequest as i32 }),
        ];
        let events: Vec<Event> = kinds.into_iter().map(wrap).collect();
        let mut sequential = directory();
        for (i, event) in events.iter().enumerate() {
            domain::apply(&mut sequential, at(i as u64 + 3), event);
        }
        let split = RwLock::new(directory());
        apply(&split, events.iter().enumerate().map(|(i, event)| (at(i as u64 + 3), event)));
        let split = split.into_inner();
        assert!(split.sign_ins.is_empty(), "the password issuance reset alice's failures");
        assert_eq!(split, sequential);
        assert_eq!(split.head.seq, 2 + events.len() as u64);
    }
}
