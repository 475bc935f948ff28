//! Property: any sequence of operations, submitted to the real writer (with concurrent batches)
//! over a real redb file, replays from that file to exactly the live projections.

use std::sync::Arc;

use proptest::prelude::*;
use tokenledger::crypto::ServerKeys;
use tokenledger::crypto::credential;
use tokenledger::domain::DirectoryCommand;
use tokenledger::domain::TokenKind;
use tokenledger::domain::{Command, FreshIds, Issue, IssueGrant, Outcome, Revoke};
use tokenledger::domain::{FamilyId, TokenId};
use tokenledger::ledger::{self, LedgerHandle, WriterConfig};
use tokenledger::proto::ledger::{ClientCreated, InstitutionCreated, UserCreated, UserType};

#[derive(Clone, Debug)]
enum Op {
    ClientCredentials {
        scopes: Option<Vec<&'static str>>,
    },
    Password,
    /// Refresh the n-th refresh token seen so far (rotated ones included: that is reuse).
    Refresh {
        pick: usize,
        narrow: bool,
    },
    /// Revoke the n-th token seen so far.
    Revoke {
        pick: usize,
    },
    /// Retry the previous request with its transaction id.
    RetryLast,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => prop::option::of(prop::sample::subsequence(vec!["a", "b"], 1..=2)).prop_map(|scopes| Op::ClientCredentials { scopes }),
        3 => Just(Op::Password),
        4 => (any::<usize>(), any::<bool>()).prop_map(|(pick, narrow)| Op::Refresh { pick, narrow }),
        2 => any::<usize>().prop_map(|pick| Op::Revoke { pick }),
        1 => Just(Op::RetryLast),
    ]
}

/// Deterministic, distinct ids for the n-th request (shared with `bulk_property`).
pub fn ids(seed: &mut u64) -> FreshIds {
    let mut next = || {
        *seed += 1;
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&seed.to_be_bytes());
        bytes[8..].copy_from_slice(&seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
        bytes
    };
    FreshIds { access: TokenId(next()), refresh: TokenId(next()), family: FamilyId(next()) }
}

/// Institution "1", client "c" (client_credentials and password, scopes a and b) and user "u"
/// with password "p", through the real writer (shared with `bulk_property`).
pub async fn setup(handle: &LedgerHandle, keys: &ServerKeys) {
    let iterations = std::num::NonZeroU32::new(1).unwrap();
    let commands = vec![
        DirectoryCommand::CreateInstitution(InstitutionCreated { institution_id: "1".into(), name: "One".into() }),
        DirectoryCommand::CreateClient(ClientCreated {
            client_id: "c".into(),
            name: "c".into(),
            institution_ids: vec!["1".into()],
            grant_types: vec!["client_credentials".into(), "password".into()],
            scopes: vec!["a".into(), "b".into()],
            access_token_ttl_secs: 3600,
            refresh_token_ttl_secs: 7200,
            secret: Some(credential::keyed_digest(keys, "c", "s")),
            ..Default::default()
        }),
        DirectoryCommand::CreateUser(UserCreated {
            institution_id: "1".into(),
            login_id: "u".into(),
            institution_user_id: "U1".into(),
            user_type: UserType::Retail as i32,
            password: Some(credential::pbkdf2_digest(iterations, "p")),
            ..Default::default()
        }),
    ];
    for command in commands {
        let reply = handle.submit(Command::Directory(command), String::new()).await.unwrap();
        assert!(reply.is_ok(), "{reply:?}");
    }
}

fn run(ops: Vec<Op>, concurrency: usize) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.redb");
        let keys = ServerKeys::from_secret(1, &[7; 32]);
        let (store, state, _) = ledger::open(&path, 1_000, |_| {}).unwrap();
        let state = Arc::new(parking_lot::RwLock::new(state));
        let handle = LedgerHandle::spawn(store, state.clone(), WriterConfig::default()).unwrap();
        setup(&handle, &keys).await;
        let mut seed = 0u64;
        let mut refresh_tokens: Vec<TokenId> = Vec::new();
        let mut tokens: Vec<(TokenId, TokenKind)> = Vec::new();
        let mut last: Option<(Command, String)> = None;
        for chunk in ops.chunks(concurrency) {
            let mut pending = Vec::new();
            for op in chunk {
                let txid = uuid::Uuid::new_v4().to_string();
                let issue = |grant, scopes: Option<Vec<Box<str>>>, seed: &mut u64, fingerprint: u8| Issue {
                    client_id: "c".into(),
                    institution_id: Some("1".into()),
                    grant,
                    requested_scopes: scopes,
                    fingerprint: [fingerprint; 32],
                    family_lifetime_max_ms: tokenledger::domain::FAMILY_LIFETIME_MAX_MS_DEFAULT,
                    fresh: ids(seed),
                };
                let command = match op {
                    Op::ClientCredentials { scopes } => {
                        let scopes = scopes.clone().map(|s| s.into_iter().map(Box::from).collect());
                        Command::Issue(issue(IssueGrant::ClientCredentials, scopes, &mut seed, 1))
                    }
                    Op::Password => {
                        Command::Issue(issue(IssueGrant::Password { login_id: "u".into() }, None, &mut seed, 2))
                    }
                    Op::Refresh { pick, narrow } if !refresh_tokens.is_empty() => {
                        let token = refresh_tokens[pick % refresh_tokens.len()];
                        let scopes = narrow.then(|| vec![Box::from("a")]);
                        let mut issue = issue(IssueGrant::Refresh { token }, scopes, &mut seed, 3);
                        issue.institution_id = None;
                        Command::Issue(issue)
                    }
                    Op::Revoke { pick } if !tokens.is_empty() => {
                        let (token, kind) = tokens[pick % tokens.len()];
                        Command::Revoke(Revoke { client_id: "c".into(), token, kind })
                    }
                    Op::RetryLast => match &last {
                        Some((Command::Issue(issue), txid)) => {
                            pending.push(handle.submit(Command::Issue(issue.clone()), txid.clone()));
                            continue;
                        }
                        _ => continue,
                    },
                    _ => continue,
                };
                if let Command::Issue(issue) = &command {
                    last = Some((Command::Issue(issue.clone()), txid.clone()));
                }
                pending.push(handle.submit(command, txid));
            }
            for reply in futures_util::future::join_all(pending).await {
                if let Ok(Outcome::Issued(issued)) = reply.unwrap() {
                    tokens.push((issued.access.id, TokenKind::Access));
                    if let Some(refresh) = issued.refresh {
                        refresh_tokens.push(refresh.id);
                        tokens.push((refresh.id, TokenKind::Refresh));
                    }
                }
            }
        }
        handle.stop().await;
        let live = state.read().clone();
        let (_, replayed, report) = ledger::open(&path, 1_000, |_| {}).unwrap();
        prop_assert_eq!(&report.head, &live.head);
        prop_assert!(replayed == live, "replay differs from the live state after {} events", live.head.seq);
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_operation_sequence_replays_to_the_live_state(ops in prop::collection::vec(op(), 1..80), concurrency in 1usize..8) {
        run(ops, concurrency)?;
    }
}
