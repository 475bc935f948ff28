//! Ledgers written by earlier releases keep opening (DESIGN: "keep a small fixture ledger from
//! each released format under tests/ and test that it still opens").

use tokenledger::config::Config;
use tokenledger::crypto::ServerKeys;
use tokenledger::crypto::token::{self, TokenKind};
use tokenledger::domain::hex;
use tokenledger::ledger::{Store, StoreError, codec};
use tokenledger::proto::ledger::{AuthorizationCodeIssued, CodeBurnReason, Event, event};
use tokenledger::server::data_dir;

use crate::harness::test_settings;

const FORMAT_V1: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/format-v1");

fn copy_fixture(from: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in [data_dir::LEDGER_FILE, data_dir::KEYS_FILE] {
        std::fs::copy(format!("{from}/{file}"), dir.path().join(file)).unwrap();
    }
    dir
}

#[test]
fn format_v1_ledger_opens_verifies_and_replays() {
    let dir = copy_fixture(FORMAT_V1);
    let (_, state, report) = tokenledger::ledger::open(&dir.path().join(data_dir::LEDGER_FILE), 0, |_| {}).unwrap();
    assert_eq!(report.events, 8);
    assert_eq!(hex(&report.head.hash), "f45a7556478e76c98b015237b233b042041a797dc95933174d254656e9ce572b");
    assert!(state.institutions.contains_key("01001"));
    // Clients created before `authorize_partners` existed are no first-party apps.
    assert!(state.client("demo-client").is_some_and(|c| !c.authorize_partners));
    assert!(state.user("01001", "demo.user").is_some());
    assert_eq!(state.tokens_len(), 5, "one client_credentials token, two per sign-in and refresh");
    assert_eq!(state.families_len(), 1);
    let mut all_revoked = true;
    state.for_each_family(|_, f| all_revoked &= f.revoked.is_some());
    assert!(all_revoked, "reuse revoked the family");
    // The fixture's key file still verifies the token strings of its ledger.
    let keys = ServerKeys::load(&dir.path().join(data_dir::KEYS_FILE)).unwrap();
    state.for_each_token(|id, _| {
        let text = token::encode(&keys, TokenKind::Access, &id);
        assert_eq!(token::decode(&keys, &text), Some((TokenKind::Access, id)));
    });
}

#[test]
fn format_v1_data_dir_starts_a_server() {
    let dir = copy_fixture(FORMAT_V1);
    let config = Config::resolve(test_settings(dir.path())).unwrap();
    let opened = data_dir::open(&config).unwrap();
    assert_eq!(opened.report.head.seq, 8);
}

/// The fixture's event count and head hash (see its README.md).
const EXPECTED_AUTHORITY_EVENTS: u64 = 15;
const EXPECTED_AUTHORITY_HEAD: &str = "944afaf07c7b4a16c3a311b12cbad7ca8730ecb3740d73901f512b70356015a3";
const FORMAT_V1_AUTHORITY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/format-v1-authority");

/// Every event of a stopped ledger, in order.
fn events_of(dir: &std::path::Path) -> Vec<Event> {
    let store = Store::open(&dir.join(data_dir::LEDGER_FILE)).unwrap();
    let mut events = Vec::new();
    store
        .scan(|key, bytes| -> Result<(), StoreError> {
            events.push(codec::open(key, bytes).unwrap().event);
            Ok(())
        })
        .unwrap();
    events
}

/// The fields and event of the authorization and clock fixes (first-party apps, who
/// authorized a code, decision times, the authorizer-disabled burn) keep their meaning.
#[test]
fn format_v1_authority_ledger_keeps_first_party_apps_code_authorizers_and_decision_times() {
    let dir = copy_fixture(FORMAT_V1_AUTHORITY);
    let (_, state, report) = tokenledger::ledger::open(&dir.path().join(data_dir::LEDGER_FILE), 0, |_| {}).unwrap();
    assert_eq!(report.events, EXPECTED_AUTHORITY_EVENTS);
    assert_eq!(hex(&report.head.hash), EXPECTED_AUTHORITY_HEAD);
    let client = |id: &str| state.client(id).unwrap().clone();
    assert!(client("bank-app").authorize_partners, "set at creation");
    assert!(client("portal").authorize_partners && client("portal").disabled, "set later, then disabled");
    assert!(!client("budget").authorize_partners);
    let events = events_of(dir.path());
    let codes: Vec<&AuthorizationCodeIssued> = events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(event::Kind::AuthorizationCodeIssued(c)) => Some(c),
            _ => None,
        })
        .collect();
    let authorizers: Vec<(&str, &str)> =
        codes.iter().map(|c| (c.authorized_by_client_id.as_str(), c.authorized_by_login_id.as_str())).collect();
    assert_eq!(authorizers, [("bank-app", "dana"), ("portal", "")]);
    assert!(codes.iter().all(|c| c.issued_at_ms > 0));
    let issued = events.iter().filter_map(|e| match &e.kind {
        Some(event::Kind::TokensIssued(t)) => Some(t),
        _ => None,
    });
    assert!(issued.clone().count() >= 3 && issued.clone().all(|t| t.issued_at_ms > 0));
    let burned = events.iter().any(|e| {
        matches!(&e.kind, Some(event::Kind::AuthorizationCodeBurned(b)) if b.reason == CodeBurnReason::AuthorizerDisabled as i32)
    });
    assert!(burned, "the code of the disabled first-party app was burned");
    assert_eq!(state.families_len(), 2, "dana's sign-in and the redemption");
    let first_issue = issued.clone().next().unwrap();
    let mut started = false;
    state.for_each_family(|_, f| started |= f.started_at_ms == first_issue.issued_at_ms);
    assert!(started, "a family started at the first issuance");
}

#[test]
fn format_v1_authority_data_dir_starts_a_server() {
    let dir = copy_fixture(FORMAT_V1_AUTHORITY);
    let config = Config::resolve(test_settings(dir.path())).unwrap();
    let opened = data_dir::open(&config).unwrap();
    assert_eq!(opened.report.head.seq, EXPECTED_AUTHORITY_EVENTS);
}
