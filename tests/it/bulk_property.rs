//! Property: random issuance, refresh and bulk revocations (cutoffs with and without a time
//! bound, one-token revocations, blast radius), submitted concurrently to the real writer over a
//! real redb file, replay to exactly the live projections, and no refresh ever succeeds from a
//! token that was not active when it was decided (bulk commands never share a batch with a
//! command decided against the state before them).

use std::sync::Arc;

use proptest::prelude::*;
use tokenledger::crypto::ServerKeys;
use tokenledger::domain::CutoffScope;
use tokenledger::domain::{BlastCredential, BlastRadius, BulkCommand};
use tokenledger::domain::{Command, Issue, IssueGrant, Outcome};
use tokenledger::domain::{FamilyId, TokenId};
use tokenledger::domain::{Recorded, State, apply};
use tokenledger::ledger::{self, LedgerHandle, Store, WriterConfig, codec};
use tokenledger::proto::ledger::event;

#[derive(Clone, Debug)]
enum Op {
    ClientCredentials,
    Password,
    Refresh {
        pick: usize,
    },
    /// A cutoff: scope 0 client, 1 user, 2 institution, 3 family of the picked token; with a
    /// time bound `ago_ms` before now when set.
    Cutoff {
        scope: u8,
        pick: usize,
        ago_ms: Option<u16>,
    },
    RevokeOne {
        pick: usize,
    },
    Blast {
        from_ago_ms: u16,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::ClientCredentials),
        3 => Just(Op::Password),
        4 => any::<usize>().prop_map(|pick| Op::Refresh { pick }),
        2 => (0u8..4, any::<usize>(), prop::option::of(0u16..50)).prop_map(|(scope, pick, ago_ms)| Op::Cutoff { scope, pick, ago_ms }),
        1 => any::<usize>().prop_map(|pick| Op::RevokeOne { pick }),
        1 => (0u16..50).prop_map(|from_ago_ms| Op::Blast { from_ago_ms }),
    ]
}

use crate::harness::wall_ms;
use crate::replay_property::{ids as fresh, setup};

fn run(ops: Vec<Op>, concurrency: usize) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.redb");
        let keys = ServerKeys::from_secret(1, &[7; 32]);
        let (store, state, _) = ledger::open(&path, wall_ms(), |_| {}).unwrap();
        let state = Arc::new(parking_lot::RwLock::new(state));
        let handle = LedgerHandle::spawn(store, state.clone(), WriterConfig::default()).unwrap();
        setup(&handle, &keys).await;
        let mut seed = 0u64;
        let mut refresh_tokens: Vec<TokenId> = Vec::new();
        let mut tokens: Vec<TokenId> = Vec::new();
        let mut families: Vec<FamilyId> = Vec::new();
        for chunk in ops.chunks(concurrency) {
            let mut pending = Vec::new();
            for op in chunk {
                let now = wall_ms();
                let issue = |grant, seed: &mut u64| Issue {
                    client_id: "c".into(),
                    institution_id: Some("1".into()),
                    grant,
                    requested_scopes: None,
                    fingerprint: [0; 32],
                    family_lifetime_max_ms: tokenledger::domain::FAMILY_LIFETIME_MAX_MS_DEFAULT,
                    fresh: fresh(seed),
                };
                let command = match op {
                    Op::ClientCredentials => Command::Issue(issue(IssueGrant::ClientCredentials, &mut seed)),
                    Op::Password => Command::Issue(issue(IssueGrant::Password { login_id: "u".into() }, &mut seed)),
                    Op::Refresh { pick } if !refresh_tokens.is_empty() => {
                        let token = refresh_tokens[pick % refresh_tokens.len()];
                        let mut issue = issue(IssueGrant::Refresh { token }, &mut seed);
                        issue.institution_id = None;
                        Command::Issue(issue)
                    }
                    Op::Cutoff { scope, pick, ago_ms } => {
                        let scope = match (scope, families.is_empty()) {
                            (0, _) => CutoffScope::Client("c".into()),
                            (1, _) => CutoffScope::User { institution_id: "1".into(), login_id: "u".into() },
                            (3, false) => CutoffScope::Family(families[pick % families.len()]),
                            _ => CutoffScope::Institution("1".into()),
                        };
                        let issued_before_ms = ago_ms.map_or(0, |ago| now - i64::from(ago));
                        Command::Bulk(BulkCommand::Cutoff { scope, issued_before_ms, note: String::new() })
                    }
                    Op::RevokeOne { pick } if !tokens.is_empty() => {
                        Command::Bulk(BulkCommand::Token { token: tokens[pick % tokens.len()] })
                    }
                    Op::Blast { from_ago_ms } => Command::Bulk(BulkCommand::BlastRadius(BlastRadius {
                        credential: BlastCredential::Client("c".into()),
                        from_ms: now - i64::from(*from_ago_ms),
                        to_ms: i64::MAX,
                        tokens: Vec::new(),
                        families: Vec::new(),
                        note: String::new(),
                    })),
                    _ => continue,
                };
                pending.push(handle.submit(command, uuid::Uuid::new_v4().to_string()));
            }
            for reply in futures_util::future::join_all(pending).await {
                if let Ok(Outcome::Issued(issued)) = reply.unwrap() {
                    tokens.push(issued.access.id);
                    if let Some(refresh) = issued.refresh {
                        refresh_tokens.push(refresh.id);
                        tokens.push(refresh.id);
                        let family = state.read().token(&refresh.id).and_then(|t| t.grant.family);
                        families.extend(family);
                    }
                }
            }
        }
        handle.stop().await;
        let live = state.read().clone();
        let (_, replayed, report) = ledger::open(&path, 0, |_| {}).unwrap();
        prop_assert_eq!(&report.head, &live.head);
        prop_assert!(replayed == live, "replay differs from the live state after {} events", live.head.seq);
        drop(replayed);

        // Walk the ledger again: every refresh was decided against a state in which the token
        // it consumed was active.
        let db = redb::Database::open(&path).unwrap();
        let store = Store::from_database(db).unwrap();
        let mut state = State::default();
        let mut problem = None;
        store
            .scan(|key, bytes| -> Result<(), ledger::StoreError> {
                let opened = codec::open(key, bytes).unwrap();
                let at = opened.envelope.recorded_at_ms;
                if let Some(event::Kind::TokensIssued(issued)) = &opened.event.kind
                    && let Some(from) = TokenId::from_slice(&issued.rotated_from)
                    && state.active_token(&from, at).is_none()
                    && problem.is_none()
                {
                    problem = Some(format!("event {key} refreshed {from}, which was not active"));
                }
                let recorded = Recorded { seq: key, recorded_at_ms: at, transaction_id: "", hash: opened.hash };
                apply(&mut state, recorded, &opened.event);
                Ok(())
            })
            .unwrap();
        prop_assert!(problem.is_none(), "{:?}", problem);
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn bulk_revocations_replay_to_the_live_state_and_never_race_a_refresh(
        ops in prop::collection::vec(op(), 1..80),
        concurrency in 1usize..10,
    ) {
        run(ops, concurrency)?;
    }
}

/// A user or institution cutoff queued right before a refresh of one of its tokens, behind a
/// burst of other work so that both land in one drain of the writer's queue. The refresh may be
/// decided before the cutoff (its new tokens are then issued before it and end with it) or after
/// it (and be refused), but never in the cutoff's batch against the state before it, which would
/// mint live tokens from a revoked one.
#[test]
fn a_refresh_racing_a_cutoff_never_mints_a_live_token() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.redb");
        let keys = ServerKeys::from_secret(1, &[7; 32]);
        let (store, state, _) = ledger::open(&path, wall_ms(), |_| {}).unwrap();
        let state = Arc::new(parking_lot::RwLock::new(state));
        let handle = LedgerHandle::spawn(store, state.clone(), WriterConfig::default()).unwrap();
        setup(&handle, &keys).await;
        let mut seed = 1_000u64;
        for round in 0..20 {
            let issue = |grant, seed: &mut u64| Issue {
                client_id: "c".into(),
                institution_id: Some("1".into()),
                grant,
                requested_scopes: None,
                fingerprint: [0; 32],
                family_lifetime_max_ms: tokenledger::domain::FAMILY_LIFETIME_MAX_MS_DEFAULT,
                fresh: fresh(seed),
            };
            let signed_in = handle
                .submit(Command::Issue(issue(IssueGrant::Password { login_id: "u".into() }, &mut seed)), String::new())
                .await
                .unwrap();
            let Ok(Outcome::Issued(signed_in)) = signed_in else { panic!("{signed_in:?}") };
            let token = signed_in.refresh.unwrap().id;
            let mut pending = Vec::new();
            for _ in 0..300 {
                let command = Command::Issue(issue(IssueGrant::ClientCredentials, &mut seed));
                pending.push(handle.submit(command, uuid::Uuid::new_v4().to_string()));
            }
            let scope = if round % 2 == 0 {
                CutoffScope::User { institution_id: "1".into(), login_id: "u".into() }
            } else {
                CutoffScope::Institution("1".into())
            };
            let cutoff = Command::Bulk(BulkCommand::Cutoff { scope, issued_before_ms: 0, note: String::new() });
            let mut refresh = issue(IssueGrant::Refresh { token }, &mut seed);
            refresh.institution_id = None;
            let burst = futures_util::future::join_all(pending);
            let cutoff = handle.submit(cutoff, uuid::Uuid::new_v4().to_string());
            let refresh = handle.submit(Command::Issue(refresh), uuid::Uuid::new_v4().to_string());
            let (_, _, refreshed) = futures_util::join!(burst, cutoff, refresh);
            if let Ok(Outcome::Issued(minted)) = refreshed.unwrap() {
                let now = wall_ms();
                assert!(
                    state.read().active_token(&minted.access.id, now).is_none(),
                    "round {round}: a refresh of a revoked token minted a live token"
                );
            }
        }
        handle.stop().await;
    });
}
