//! Ledgers written by earlier releases keep opening (DESIGN: "keep a small fixture ledger from
//! each released format under tests/ and test that it still opens").

use tokenledger::config::Config;
use tokenledger::crypto::keys::ServerKeys;
use tokenledger::crypto::token::{self, TokenKind};
use tokenledger::domain::ids::hex;
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
    assert_eq!(state.tokens.len(), 5, "one client_credentials token, two per sign-in and refresh");
    assert_eq!(state.families.len(), 1);
    assert!(state.families.values().all(|f| f.revoked.is_some()), "reuse revoked the family");
    // The fixture's key file still verifies the token strings of its ledger.
    let keys = ServerKeys::load(&dir.path().join(data_dir::KEYS_FILE)).unwrap();
    for id in state.tokens.keys() {
        let text = token::encode(&keys, TokenKind::Access, id);
        assert_eq!(token::decode(&keys, &text), Some((TokenKind::Access, *id)));
    }
}

#[test]
fn format_v1_data_dir_starts_a_server() {
    let dir = copy_fixture(FORMAT_V1);
    let config = Config::resolve(test_settings(dir.path())).unwrap();
    let opened = data_dir::open(&config).unwrap();
    assert_eq!(opened.report.head.seq, 8);
}
