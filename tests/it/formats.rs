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

pub fn copy_fixture(from: &str) -> tempfile::TempDir {
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

const FORMAT_V2: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/format-v2");
/// The fixture's event count and head hash (see its README.md).
const EXPECTED_V2_EVENTS: u64 = 13;
const EXPECTED_V2_HEAD: &str = "d0b0d95769a953aacb9caa87b13cb0c04e07b6370e7a0c6cc6ab35370032b218";
/// The transaction id of the fixture's revocation: a UUID in upper case, stored as text.
const V2_TEXT_TRANSACTION_ID: &str = "3F2B8C1E-9D4A-4B7E-8F00-123456789ABC";

/// Every stored envelope of a stopped ledger, as stored (not opened), from either event table.
fn raw_envelopes(dir: &std::path::Path) -> Vec<(u64, Vec<u8>)> {
    let db = redb::Database::open(dir.join(data_dir::LEDGER_FILE)).unwrap();
    tokenledger::ledger::raw::from(&db, 0).unwrap()
}

/// Rows of `table` (`u64` keys) in a stopped ledger: the event tables' row counts.
fn rows_of(dir: &std::path::Path, table: &str) -> u64 {
    let db = redb::Database::open(dir.join(data_dir::LEDGER_FILE)).unwrap();
    let read = redb::ReadableDatabase::begin_read(&db).unwrap();
    let definition: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new(table);
    match read.open_table(definition) {
        Ok(rows) => redb::ReadableTableMetadata::len(&rows).unwrap(),
        Err(redb::TableError::TableDoesNotExist(_)) => 0,
        Err(e) => panic!("{e}"),
    }
}

fn meta_u64(dir: &std::path::Path, key: &str) -> Option<u64> {
    let db = redb::Database::open(dir.join(data_dir::LEDGER_FILE)).unwrap();
    let read = redb::ReadableDatabase::begin_read(&db).unwrap();
    let meta: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
    let table = read.open_table(meta).unwrap();
    let value = table.get(key).unwrap()?.value().to_vec();
    let mut be = [0u8; 8];
    be[8 - value.len()..].copy_from_slice(&value);
    Some(u64::from_be_bytes(be))
}

/// Index entries of event kind `kind` (kind 6) in a stopped ledger.
fn kind_entries(dir: &std::path::Path, kind: u8) -> usize {
    use tokenledger::ledger::index::IndexKind;
    let db = redb::Database::open(dir.join(data_dir::LEDGER_FILE)).unwrap();
    tokenledger::ledger::raw::index_seqs(&db, IndexKind::EventKind, &[kind]).unwrap().len()
}

#[test]
fn format_v2_ledger_opens_verifies_and_replays() {
    let dir = copy_fixture(FORMAT_V2);
    let raw = raw_envelopes(dir.path());
    let (store, state, report) = tokenledger::ledger::open(&dir.path().join(data_dir::LEDGER_FILE), 0, |_| {}).unwrap();
    assert_eq!(report.events, EXPECTED_V2_EVENTS);
    assert_eq!(hex(&report.head.hash), EXPECTED_V2_HEAD);
    assert_eq!(store.index_version().unwrap(), 4, "re-indexed: the fixture has index version 3");
    drop(store);
    assert!(state.client("svc").is_some() && state.user("01001", "alice").is_some());
    assert_eq!(state.families_len(), 1, "alice's sign-in, refreshed once");
    // Stored form: the UUID transaction ids as 16 bytes, the other one as text.
    let envelopes: Vec<tokenledger::proto::ledger::Envelope> =
        raw.iter().map(|(_, bytes)| prost::Message::decode(bytes.as_slice()).unwrap()).collect();
    let compact = envelopes.iter().filter(|e| e.transaction_uuid.len() == 16 && e.transaction_id.is_empty()).count();
    assert!(compact >= 4, "the token requests carry canonical UUID transaction ids: {compact}");
    assert!(envelopes.iter().any(|e| e.transaction_id == V2_TEXT_TRANSACTION_ID && e.transaction_uuid.is_empty()));
    // Opened, every envelope is canonical and its id is the UUID's text.
    for (seq, bytes) in &raw {
        let opened = codec::open(*seq, bytes).unwrap();
        assert!(opened.envelope.transaction_uuid.is_empty());
        let stored = &envelopes[*seq as usize - 1];
        if !stored.transaction_uuid.is_empty() {
            assert_eq!(
                opened.envelope.transaction_id,
                uuid::Uuid::from_slice(&stored.transaction_uuid).unwrap().to_string()
            );
        }
    }
    assert_eq!(kind_entries(dir.path(), 10), 0, "index version 3: no event-kind entries for TokensIssued");
    assert!(kind_entries(dir.path(), 3) >= 3, "other kinds keep theirs (ClientCreated)");
}

/// A server on the fixture answers audit queries by kind (read from the events for
/// TokensIssued, from the index for the others) and by client, with canonical envelopes.
#[tokio::test]
async fn format_v2_data_dir_serves_audit_queries() {
    use crate::audit::{events, seqs};
    use tokenledger::proto as api;
    let dir = std::sync::Arc::new(copy_fixture(FORMAT_V2));
    let stored = events_of(dir.path());
    let server = crate::harness::TestServer::start_in(dir, |settings| settings.audit_raw_envelopes = Some(true)).await;
    let kind_seqs = |kinds: &[u8]| -> Vec<u64> {
        let numbers = stored.iter().map(tokenledger::ledger::index::kind_number);
        (1..).zip(numbers).filter(|(_, k)| kinds.contains(k)).map(|(seq, _)| seq).collect()
    };
    let by = |request: api::StreamEventsRequest| events(&server, request);
    let issued = by(api::StreamEventsRequest { kinds: vec!["tokens_issued".into()], ..Default::default() }).await;
    assert_eq!(seqs(&issued), kind_seqs(&[10]));
    let mixed = by(api::StreamEventsRequest {
        kinds: vec!["tokens_issued".into(), "client_created".into(), "token_revoked".into()],
        ..Default::default()
    })
    .await;
    assert_eq!(seqs(&mixed), kind_seqs(&[10, 3, 11]));
    let svc =
        by(api::StreamEventsRequest { client_id: "svc".into(), include_envelope: true, ..Default::default() }).await;
    assert!(svc.iter().any(|e| e.transaction_id == V2_TEXT_TRANSACTION_ID));
    for event in &svc {
        let envelope: tokenledger::proto::ledger::Envelope = prost::Message::decode(event.envelope.as_slice()).unwrap();
        assert!(envelope.transaction_uuid.is_empty(), "envelopes leave in canonical form");
        assert_eq!(envelope.transaction_id, event.transaction_id);
        assert_eq!(codec::open(event.seq, &event.envelope).unwrap().hash.to_vec(), event.hash);
    }
    server.stop().await;
}

/// A format-1 file keeps its events byte for byte, is marked format 4 and re-indexed.
#[test]
fn format_v1_ledger_is_marked_format_4_and_reindexed_with_its_events_unchanged() {
    let dir = copy_fixture(FORMAT_V1);
    let before = raw_envelopes(dir.path());
    assert_eq!(meta_u64(dir.path(), "format_version"), Some(1));
    assert_eq!(kind_entries(dir.path(), 10), 3, "index version 2 had event-kind entries for TokensIssued");
    let (store, _, report) = tokenledger::ledger::open(&dir.path().join(data_dir::LEDGER_FILE), 0, |_| {}).unwrap();
    assert_eq!(report.events, 8);
    assert_eq!(store.index_version().unwrap(), 4);
    drop(store);
    assert_eq!(raw_envelopes(dir.path()), before, "no event was rewritten");
    assert_eq!(meta_u64(dir.path(), "format_version"), Some(4));
    assert_eq!(meta_u64(dir.path(), "format_1_until_seq"), Some(8));
    assert_eq!(meta_u64(dir.path(), "format_2_until_seq"), None, "it never was format 2");
    assert_eq!(meta_u64(dir.path(), "event_rows_until_seq"), Some(8));
    assert_eq!(kind_entries(dir.path(), 10), 0);
    // And it opens again, as format 4 now.
    let (_, _, again) = tokenledger::ledger::open(&dir.path().join(data_dir::LEDGER_FILE), 0, |_| {}).unwrap();
    assert_eq!(hex(&again.head.hash), "f45a7556478e76c98b015237b233b042041a797dc95933174d254656e9ce572b");
}

/// The rebuild of an older index runs inside the replay and commits only at its end: a chain
/// that fails to verify part-way leaves the old index as it was (and the next open rebuilds).
#[test]
fn a_reindex_whose_replay_fails_leaves_the_old_index_in_place() {
    let dir = copy_fixture(FORMAT_V1);
    let path = dir.path().join(data_dir::LEDGER_FILE);
    let index_version = meta_u64(dir.path(), "index_version");
    assert_eq!(kind_entries(dir.path(), 10), 3);
    {
        let db = redb::Database::open(&path).unwrap();
        let mut envelope = tokenledger::ledger::raw::read(&db, 6).unwrap().unwrap();
        let last = envelope.len() - 1;
        envelope[last] ^= 1;
        tokenledger::ledger::raw::rewrite(&db, 6, &envelope).unwrap();
    }
    let failed = tokenledger::ledger::open(&path, 0, |_| {});
    assert!(failed.is_err(), "a damaged event stops the open");
    assert_eq!(meta_u64(dir.path(), "index_version"), index_version, "the index version is unchanged");
    assert_eq!(kind_entries(dir.path(), 10), 3, "and so are the old index's entries");
}

/// Every meta key of a stopped ledger, as stored.
fn meta_of(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let db = redb::Database::open(dir.join(data_dir::LEDGER_FILE)).unwrap();
    let read = redb::ReadableDatabase::begin_read(&db).unwrap();
    let meta: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
    let table = read.open_table(meta).unwrap();
    redb::ReadableTable::iter(&table)
        .unwrap()
        .map(|row| row.unwrap())
        .map(|(k, v)| (k.value().to_owned(), v.value().to_vec()))
        .collect()
}

/// `tokenledger verify --json` of a stopped data dir (a read-only open).
fn verify(dir: &std::path::Path) -> serde_json::Value {
    let out = std::process::Command::new(crate::binary::BIN)
        .args(["verify", "--json", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `verify` of a fixture's copy gives its event count and head hash, and changes nothing in its
/// `meta` table (a read-only open).
fn verify_read_only(dir: &std::path::Path, events: u64, head: &str) {
    let meta = meta_of(dir);
    let report = verify(dir);
    assert_eq!((report["events"].as_u64(), report["head_hash"].as_str()), (Some(events), Some(head)), "{report}");
    assert_eq!(meta_of(dir), meta, "verify changed the meta table");
}

/// `verify` opens a ledger read-only: a format-1, 2 or 3 file keeps its format (and every
/// other meta key) and its index; only an open for writing marks it format 4. (Before format
/// 3, `verify` marked a format-1 file format 2, since opening a store always wrote.)
#[test]
fn verify_changes_nothing_in_an_older_format_and_an_open_for_writing_marks_it_format_4() {
    for (fixture, format, events) in [
        (FORMAT_V1, 1, 8),
        (FORMAT_V1_AUTHORITY, 1, EXPECTED_AUTHORITY_EVENTS),
        (FORMAT_V2, 2, EXPECTED_V2_EVENTS),
        (FORMAT_V3, 3, EXPECTED_V3_EVENTS),
    ] {
        let dir = copy_fixture(fixture);
        let meta = meta_of(dir.path());
        let stored = raw_envelopes(dir.path());
        let kinds = kind_entries(dir.path(), 10);
        let report = verify(dir.path());
        assert_eq!(report["events"], events, "{fixture}: {report}");
        assert_eq!(meta_of(dir.path()), meta, "{fixture}: verify changed the meta table");
        assert_eq!(meta_u64(dir.path(), "format_version"), Some(format), "{fixture}");
        assert_eq!(raw_envelopes(dir.path()), stored, "{fixture}: its events are as they were");
        assert_eq!(kind_entries(dir.path(), 10), kinds, "{fixture}: and its index (format 1: not re-indexed)");
        let (_, _, report) = tokenledger::ledger::open(&dir.path().join(data_dir::LEDGER_FILE), 0, |_| {}).unwrap();
        assert_eq!(report.events, events);
        assert_eq!(meta_u64(dir.path(), "format_version"), Some(4), "{fixture}");
        let until = match format {
            1 => Some("format_1_until_seq"),
            2 => Some("format_2_until_seq"),
            _ => None,
        };
        if let Some(until) = until {
            assert_eq!(meta_u64(dir.path(), until), Some(events), "{fixture}");
        }
        assert_eq!(meta_u64(dir.path(), "event_rows_until_seq"), Some(events), "{fixture}");
    }
}

const FORMAT_V3: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/format-v3");
/// The fixture's event count, head hash and records (see its README.md).
const EXPECTED_V3_EVENTS: u64 = 13;
const EXPECTED_V3_HEAD: &str = "2f3fc09995b4b333d07fa6aef81af264f0d132c894c87a44868823300c0f99d7";
const EXPECTED_V3_RECORDS: [u64; 2] = [11, 13];

/// The `ProjectionSnapshotWritten` events of a stopped ledger, with their seqs.
fn snapshot_records(dir: &std::path::Path) -> Vec<(u64, tokenledger::proto::ledger::ProjectionSnapshotWritten)> {
    raw_envelopes(dir)
        .into_iter()
        .filter_map(|(seq, bytes)| match codec::open(seq, &bytes).unwrap().event.kind {
            Some(event::Kind::ProjectionSnapshotWritten(record)) => Some((seq, record)),
            _ => None,
        })
        .collect()
}

/// The format-3 fixture (two projection snapshots recorded) verifies read-only without a
/// change, replays, and each record names a seq before it and that seq's chain hash; a
/// server on it finds the records by kind.
#[tokio::test]
async fn format_v3_ledger_with_snapshot_records_verifies_replays_and_serves_them() {
    use crate::audit::{events, seqs};
    use tokenledger::proto as api;
    let dir = std::sync::Arc::new(copy_fixture(FORMAT_V3));
    assert_eq!(meta_u64(dir.path(), "format_version"), Some(3));
    verify_read_only(dir.path(), EXPECTED_V3_EVENTS, EXPECTED_V3_HEAD);
    let hashes: std::collections::HashMap<u64, Vec<u8>> = raw_envelopes(dir.path())
        .into_iter()
        .map(|(seq, bytes)| (seq, codec::open(seq, &bytes).unwrap().hash.to_vec()))
        .collect();
    let records = snapshot_records(dir.path());
    assert_eq!(records.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), EXPECTED_V3_RECORDS);
    for (seq, record) in &records {
        assert_eq!(record.covered_seq + 1, *seq, "each snapshot was taken of everything before its record");
        assert_eq!(Some(&record.chain_hash), hashes.get(&record.covered_seq), "the record names its seq's hash");
        assert_eq!(record.file_format_version, 3);
        assert_eq!(record.replay_from_seq, record.covered_seq + 1);
        assert_eq!(record.body_sha256.len(), 32);
        assert!(record.file_bytes > 160 && record.tokens >= 2, "{record:?}");
    }
    let (store, state, report) = tokenledger::ledger::open(&dir.path().join(data_dir::LEDGER_FILE), 0, |_| {}).unwrap();
    assert_eq!(report.events, EXPECTED_V3_EVENTS);
    assert_eq!(hex(&report.head.hash), EXPECTED_V3_HEAD);
    assert_eq!(store.index_version().unwrap(), 4, "re-indexed from index version 3");
    drop(store);
    assert!(state.client("svc").is_some() && state.user("01001", "alice").is_some());
    let server = crate::harness::TestServer::start_in(dir, |_| {}).await;
    let found = events(
        &server,
        api::StreamEventsRequest { kinds: vec!["projection_snapshot_written".into()], ..Default::default() },
    )
    .await;
    assert_eq!(seqs(&found), EXPECTED_V3_RECORDS);
    assert!(found.iter().all(|e| e.summary.starts_with("projection snapshot written")), "{found:?}");
    let Some(event::Kind::ProjectionSnapshotWritten(first)) = found[0].event.as_ref().and_then(|e| e.kind.clone())
    else {
        panic!("{found:?}")
    };
    assert_eq!(first, records[0].1, "the audit API sends the record whole");
    server.stop().await;
}

pub const FORMAT_V4: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/format-v4");
/// The fixture's event count, head hash and revoked token (see its README.md).
pub const EXPECTED_V4_EVENTS: u64 = 52;
pub const EXPECTED_V4_HEAD: &str = "6fef8e63c49813e7e13803f55ccc59aa5eb17819d005a2e5b7982632b203aae5";
const V4_REVOKED_TOKEN: &str = "tla_AAHlxhW933bVHog6fGudRTLkuPncQ3r7xw-AQDSJ6XZXGbAQJVOgErVsfl-6qt5dZ2U";

/// The format-4 fixture keeps its events in a few chunks (no row per event); it verifies
/// read-only without a change, every stored envelope opens and links, it replays to the
/// same head, and a server on it answers audit queries that read across chunk boundaries:
/// every issuance by kind, and the history of a token issued mid-ledger.
#[tokio::test]
async fn format_v4_ledger_in_chunks_verifies_replays_and_serves_audit_queries() {
    use crate::audit::{events, seqs};
    use tokenledger::proto as api;
    let dir = std::sync::Arc::new(copy_fixture(FORMAT_V4));
    assert_eq!(meta_u64(dir.path(), "format_version"), Some(4));
    assert_eq!(rows_of(dir.path(), "events"), 0, "a format-4 file has no event rows");
    let chunks = rows_of(dir.path(), "event_chunks");
    assert!((2..EXPECTED_V4_EVENTS / 4).contains(&chunks), "{chunks} chunks");
    verify_read_only(dir.path(), EXPECTED_V4_EVENTS, EXPECTED_V4_HEAD);
    let stored = raw_envelopes(dir.path());
    assert_eq!(stored.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), (1..=EXPECTED_V4_EVENTS).collect::<Vec<_>>());
    let mut prev = [0u8; 32];
    for (seq, bytes) in &stored {
        let opened = codec::open(*seq, bytes).unwrap();
        assert_eq!(opened.prev_hash, prev, "event {seq} links to the one before");
        prev = opened.hash;
    }
    let (store, _, report) = tokenledger::ledger::open(&dir.path().join(data_dir::LEDGER_FILE), 0, |_| {}).unwrap();
    assert_eq!((report.events, hex(&report.head.hash).as_str()), (EXPECTED_V4_EVENTS, EXPECTED_V4_HEAD));
    assert_eq!(store.index_version().unwrap(), 4, "no re-index");
    drop(store);
    let server = crate::harness::TestServer::start_in(dir, |_| {}).await;
    let issued =
        events(&server, api::StreamEventsRequest { kinds: vec!["tokens_issued".into()], ..Default::default() }).await;
    assert_eq!(issued.len(), V4_ISSUANCES + 2, "every client_credentials issuance, the sign-in and the refresh");
    let revoked =
        events(&server, api::StreamEventsRequest { kinds: vec!["token_revoked".into()], ..Default::default() }).await;
    assert_eq!(revoked.len(), 1);
    let history = crate::audit_history::history(&server, V4_REVOKED_TOKEN).await;
    let history_seqs: Vec<u64> = history.entries.iter().filter_map(|e| e.event.as_ref()).map(|e| e.seq).collect();
    assert_eq!(history_seqs, [seqs(&issued)[V4_REVOKED], revoked[0].seq], "issued mid-ledger, then revoked");
    let now = history.status_now.unwrap();
    assert_eq!((now.active, now.state.as_str(), now.deciding_seq), (false, "revoked", revoked[0].seq));
    server.stop().await;
}

/// Opening an index of version 3 for writing converts it to lists in place (no replay): the
/// same entries as before, and the same as a rebuild from the events gives.
#[test]
fn an_index_of_version_3_is_converted_to_lists_with_the_same_entries_as_a_rebuild() {
    let dir = copy_fixture(FORMAT_V3);
    let path = dir.path().join(data_dir::LEDGER_FILE);
    let entries = || tokenledger::ledger::raw::index_entries(&redb::Database::open(&path).unwrap()).unwrap();
    assert_eq!(meta_u64(dir.path(), "index_version"), Some(3));
    let before = entries();
    assert!(before.len() > 20, "{}", before.len());
    drop(Store::open(&path).unwrap());
    assert_eq!(meta_u64(dir.path(), "index_version"), Some(4), "converted on open");
    let list_rows = {
        let db = redb::Database::open(&path).unwrap();
        let read = redb::ReadableDatabase::begin_read(&db).unwrap();
        let lists: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("index_lists");
        redb::ReadableTableMetadata::len(&read.open_table(lists).unwrap()).unwrap()
    };
    assert!(list_rows < before.len() as u64, "as fewer rows: {list_rows}");
    assert_eq!(entries(), before, "the same entries");
    {
        // Force a rebuild from the events: another index version.
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let meta: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
        txn.open_table(meta).unwrap().insert("index_version", 1u32.to_be_bytes().as_slice()).unwrap();
        txn.commit().unwrap();
    }
    tokenledger::ledger::open(&path, 0, |_| {}).unwrap();
    assert_eq!(meta_u64(dir.path(), "index_version"), Some(4));
    assert_eq!(entries(), before, "a rebuild from the events gives the same entries");
}

/// An upgraded format-3 file keeps its rows and continues in chunks: a server on it issues
/// tokens, and after a restart (a full replay across both tables) and `verify`, the chain
/// runs from the last row into the first chunk, and audit reads see both.
#[tokio::test]
async fn an_upgraded_ledger_continues_in_chunks_after_its_rows() {
    use crate::audit::events;
    use tokenledger::proto as api;
    let dir = std::sync::Arc::new(copy_fixture(FORMAT_V3));
    let server = crate::harness::TestServer::start_in(dir, |_| {}).await;
    let creds = server
        .client(api::ClientSpec {
            client_id: "upgraded".into(),
            name: "After the upgrade".into(),
            institution_ids: vec!["01001".into()],
            grant_types: vec!["client_credentials".into()],
            scopes: vec!["accounts:read".into()],
            ..Default::default()
        })
        .await;
    for _ in 0..30 {
        server.token(&creds, "grant_type=client_credentials").await.access_token();
    }
    let dir = server.stop().await;
    std::fs::remove_file(dir.path().join(tokenledger::ledger::snapshot::SNAPSHOT_FILE_NAME)).unwrap();
    assert_eq!(rows_of(dir.path(), "events"), EXPECTED_V3_EVENTS, "the old rows stay");
    assert!(rows_of(dir.path(), "event_chunks") >= 2);
    assert_eq!(meta_u64(dir.path(), "event_rows_until_seq"), Some(EXPECTED_V3_EVENTS));
    let report = verify(dir.path());
    let total = report["events"].as_u64().unwrap();
    assert!(total > EXPECTED_V3_EVENTS + 30, "{report}");
    let stored = raw_envelopes(dir.path());
    assert_eq!(stored.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), (1..=total).collect::<Vec<_>>());
    let server = crate::harness::TestServer::start_in(dir, |_| {}).await;
    assert_eq!(crate::audit::head(&server), total, "replayed from the rows through the chunks");
    let issued =
        events(&server, api::StreamEventsRequest { kinds: vec!["tokens_issued".into()], ..Default::default() }).await;
    assert_eq!(issued.len(), 3 + 30, "the fixture's three issuances and the new ones");
    server.stop().await;
}

/// A file of a later format is refused with the format named, by a server and by `verify`
/// alike (as a format-3 build refuses a format-4 file).
#[test]
fn a_later_format_is_refused_with_its_number() {
    let dir = copy_fixture(FORMAT_V3);
    {
        let db = redb::Database::open(dir.path().join(data_dir::LEDGER_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        let meta: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
        txn.open_table(meta).unwrap().insert("format_version", 5u32.to_be_bytes().as_slice()).unwrap();
        txn.commit().unwrap();
    }
    let expected = "ledger format 5 is not supported by this build (supports 1 to 4)";
    let config = Config::resolve(test_settings(dir.path())).unwrap();
    let refused = data_dir::open(&config).err().map(|e| e.to_string());
    assert!(refused.as_deref().is_some_and(|e| e.contains(expected)), "{refused:?}");
    let out =
        std::process::Command::new(crate::binary::BIN).args(["verify", "--data-dir"]).arg(dir.path()).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(expected), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Kind queries that include TokensIssued read the events page by page: over several pages,
/// with other kinds and revocations mixed in, from a middle seq, they find exactly the
/// events a full decode finds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kind_queries_without_index_entries_page_through_every_matching_event() {
    use crate::audit::{events, seqs};
    use tokenledger::proto as api;
    let (server, f) = crate::harness::TestServer::seeded().await;
    let mut tokens = Vec::new();
    for handle in server.spawn_issuers(&f.service, 4, 270) {
        tokens.extend(handle.await.unwrap());
    }
    for token in tokens.iter().step_by(97) {
        assert_eq!(server.revoke(&f.service, token).await.status, 204);
    }
    let _ = crate::audit::sign_in(&server, &f).await;
    let all = events(&server, api::StreamEventsRequest::default()).await;
    let head = all.len() as u64;
    assert!(head > 1024, "more than two pages of 512: {head}");
    let expect = |kinds: &[&str], from: u64| -> Vec<u64> {
        all.iter().filter(|e| e.seq >= from && kinds.contains(&e.kind.as_str())).map(|e| e.seq).collect()
    };
    for (kinds, from) in [
        (vec!["tokens_issued"], 0),
        (vec!["tokens_issued"], 333),
        (vec!["tokens_issued", "token_revoked"], 0),
        (vec!["token_revoked", "user_created", "tokens_issued"], 700),
    ] {
        let request = api::StreamEventsRequest {
            kinds: kinds.iter().map(|k| k.to_string()).collect(),
            from_seq: from,
            ..Default::default()
        };
        let got = events(&server, request).await;
        let got: Vec<u64> = seqs(&got).into_iter().filter(|s| *s <= head).collect();
        assert_eq!(got, expect(&kinds, from.max(1)), "{kinds:?} from {from}");
    }
    let limited = events(
        &server,
        api::StreamEventsRequest {
            kinds: vec!["tokens_issued".into()],
            from_seq: 10,
            limit: 600,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(seqs(&limited), expect(&["tokens_issued"], 10)[..600].to_vec());
    server.stop().await;
}

/// Where a fixture writer puts its fixture: the directory named by `var`, which must not exist.
fn fixture_out(var: &str) -> std::path::PathBuf {
    let out = std::path::PathBuf::from(std::env::var(var).unwrap());
    assert!(!out.exists(), "refusing to overwrite {}", out.display());
    out
}

/// Copies a stopped server's ledger and key file into the fixture directory `out`.
fn save_fixture(data: &std::path::Path, out: &std::path::Path) {
    std::fs::create_dir_all(out).unwrap();
    for file in [data_dir::LEDGER_FILE, data_dir::KEYS_FILE] {
        std::fs::copy(data.join(file), out.join(file)).unwrap();
    }
}

/// Writes the fixture `tests/fixtures/format-v2`. Run once, by hand, for a new format only:
/// `TOKENLEDGER_WRITE_FORMAT_V2=dir cargo test --test it write_format_v2_fixture -- --ignored`.
#[tokio::test]
#[ignore = "writes a fixture; run by hand only"]
async fn write_format_v2_fixture() {
    let out = fixture_out("TOKENLEDGER_WRITE_FORMAT_V2");
    let (server, f) = crate::harness::TestServer::seeded().await;
    let cc = server.token(&f.service, "grant_type=client_credentials").await.access_token();
    server.token(&f.service, "grant_type=client_credentials").await.access_token();
    let (_, refresh) = crate::audit::sign_in(&server, &f).await;
    crate::audit::refresh(&server, &f, &refresh).await;
    // Token requests lower-case their transaction id; a revocation keeps it as sent.
    let body = format!("token={cc}");
    let headers = [("transactionId", V2_TEXT_TRANSACTION_ID)];
    let revoked =
        server.send_form(reqwest::Method::DELETE, "/oauth2/v1/revoke", Some(&f.service), &headers, &body).await;
    assert_eq!(revoked.status, 204);
    let dir = server.stop().await;
    save_fixture(dir.path(), &out);
}

/// Writes the fixture `tests/fixtures/format-v3`. Run once, by hand, for a new format only:
/// `TOKENLEDGER_WRITE_FORMAT_V3=dir cargo test --test it write_format_v3_fixture -- --ignored`.
/// Two projection snapshots, each recorded at a stop, the second after a start from the first.
#[tokio::test]
#[ignore = "writes a fixture; run by hand only"]
async fn write_format_v3_fixture() {
    let out = fixture_out("TOKENLEDGER_WRITE_FORMAT_V3");
    let (server, f) = crate::harness::TestServer::seeded().await;
    server.token(&f.service, "grant_type=client_credentials").await.access_token();
    let (_, refresh) = crate::audit::sign_in(&server, &f).await;
    let dir = server.stop().await;
    let server = crate::harness::TestServer::start_in(dir, |_| {}).await;
    assert!(server.app.snapshots.recorded_seq.load(std::sync::atomic::Ordering::Acquire) > 0, "started from it");
    crate::audit::refresh(&server, &f, &refresh).await;
    let dir = server.stop().await;
    save_fixture(dir.path(), &out);
}

/// The format-4 fixture's client_credentials issuances, and which of them is revoked.
const V4_ISSUANCES: usize = 40;
const V4_REVOKED: usize = 20;

/// Writes the fixture `tests/fixtures/format-v4`. Run once, by hand, for a new format only:
/// `TOKENLEDGER_WRITE_FORMAT_V4=dir cargo test --test it write_format_v4_fixture -- --ignored`.
/// Enough client_credentials issuances for several chunks, a sign-in, a refresh and a
/// revocation, with a projection snapshot recorded at the stop.
#[tokio::test]
#[ignore = "writes a fixture; run by hand only"]
async fn write_format_v4_fixture() {
    let out = fixture_out("TOKENLEDGER_WRITE_FORMAT_V4");
    let (server, f) = crate::harness::TestServer::seeded().await;
    let mut tokens = Vec::new();
    for _ in 0..V4_ISSUANCES {
        tokens.push(server.token(&f.service, "grant_type=client_credentials").await.access_token());
    }
    let (_, refresh) = crate::audit::sign_in(&server, &f).await;
    crate::audit::refresh(&server, &f, &refresh).await;
    let body = format!("token={}", tokens[V4_REVOKED]);
    let headers = [("transactionId", "7d0c3a52-1f3e-4c1b-9a55-0e6f2b8d4c21")];
    let revoked =
        server.send_form(reqwest::Method::DELETE, "/oauth2/v1/revoke", Some(&f.service), &headers, &body).await;
    assert_eq!(revoked.status, 204);
    let dir = server.stop().await;
    save_fixture(dir.path(), &out);
    println!("the revoked token: {}", tokens[V4_REVOKED]);
}

/// The size breakdown of a ledger file (bench/README.md, "Ledger bytes per event"): run on a
/// stopped server's copy with
/// `TOKENLEDGER_SIZE_OF=/path/ledger.redb cargo test --test it ledger_size_breakdown -- --ignored --nocapture`.
#[test]
#[ignore = "a measuring tool: needs TOKENLEDGER_SIZE_OF"]
fn ledger_size_breakdown() {
    use redb::{ReadableDatabase as _, ReadableTable as _, ReadableTableMetadata as _, TableStats};
    let Ok(path) = std::env::var("TOKENLEDGER_SIZE_OF") else { return };
    let file_bytes = std::fs::metadata(&path).unwrap().len();
    let db = redb::Database::open(&path).unwrap();
    let events_def: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("events");
    let chunks_def: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("event_chunks");
    let index_def: redb::TableDefinition<&[u8], ()> = redb::TableDefinition::new("index");
    let read = db.begin_read().unwrap();
    let events = read.open_table(events_def).unwrap();
    let chunks = read.open_table(chunks_def).ok();
    let index = read.open_table(index_def).ok();
    let lists_def: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("index_lists");
    let lists = read.open_table(lists_def).ok();
    let stored = tokenledger::ledger::raw::from(&db, 0).unwrap();
    let n_events = stored.len() as u64;
    let (mut value_bytes, mut event_bytes, mut txid_bytes) = (0u64, 0u64, 0u64);
    for (_, value) in &stored {
        value_bytes += value.len() as u64;
        if let Ok(envelope) = <tokenledger::proto::ledger::Envelope as prost::Message>::decode(value.as_slice()) {
            event_bytes += envelope.event.len() as u64;
            txid_bytes += envelope.transaction_id.len() as u64 + envelope.transaction_uuid.len() as u64;
        }
    }
    // Entries per index kind: (entries, rows, key bytes).
    let mut by_kind: std::collections::BTreeMap<u8, (u64, u64, u64)> = Default::default();
    if let Some(index) = &index {
        for row in index.iter().unwrap() {
            let (key, _) = row.unwrap();
            let entry = by_kind.entry(key.value()[0]).or_default();
            entry.0 += 1;
            entry.1 += 1;
            entry.2 += key.value().len() as u64;
        }
    }
    if let Some(lists) = &lists {
        for row in lists.iter().unwrap() {
            let (key, value) = row.unwrap();
            let (_, first) = tokenledger::ledger::index::split_entry(key.value()).unwrap();
            let entry = by_kind.entry(key.value()[0]).or_default();
            entry.0 += tokenledger::ledger::index::unpack(first, value.value()).unwrap().len() as u64;
            entry.1 += 1;
            entry.2 += key.value().len() as u64;
        }
    }
    let n_index: u64 = by_kind.values().map(|(entries, _, _)| entries).sum();
    let show = |name: &str, s: TableStats, rows: u64| {
        let pages = s.leaf_pages() + s.branch_pages();
        println!(
            "{name}: rows {rows}, stored {} B ({:.1}/row), leaf pages {}, branch pages {}, metadata {} B, fragmented {} B, pages*4096/row {:.1}, fill {:.0}%",
            s.stored_bytes(),
            s.stored_bytes() as f64 / rows.max(1) as f64,
            s.leaf_pages(),
            s.branch_pages(),
            s.metadata_bytes(),
            s.fragmented_bytes(),
            (pages * 4096) as f64 / rows.max(1) as f64,
            100.0 * s.stored_bytes() as f64 / (s.leaf_pages() * 4096).max(1) as f64,
        );
    };
    println!("file {file_bytes} B, events {n_events}, file/event {:.1} B", file_bytes as f64 / n_events as f64);
    println!(
        "envelope values {:.1} B/event (event {:.1}, transaction id {:.1})",
        value_bytes as f64 / n_events as f64,
        event_bytes as f64 / n_events as f64,
        txid_bytes as f64 / n_events as f64
    );
    show("events (rows, formats 1-3)", events.stats().unwrap(), events.len().unwrap());
    if let Some(chunks) = &chunks {
        let n_chunks = chunks.len().unwrap();
        println!("chunks {n_chunks}, events/chunk {:.1}", n_events as f64 / n_chunks.max(1) as f64);
        show("event_chunks (per event)", chunks.stats().unwrap(), n_events);
    }
    if let Some(index) = &index {
        show("index (one row per entry, index versions up to 3)", index.stats().unwrap(), n_events);
    }
    if let Some(lists) = &lists {
        show("index_lists (per event)", lists.stats().unwrap(), n_events);
    }
    println!("index entries/event {:.2}", n_index as f64 / n_events as f64);
    for (kind, (count, rows, bytes)) in by_kind {
        println!("  index kind {kind}: {count} entries in {rows} rows, {:.1} B/key", bytes as f64 / rows as f64);
    }
    drop((events, chunks, index, lists, read));
    let write = db.begin_write().unwrap();
    let stats = write.stats().unwrap();
    println!(
        "database: allocated pages {} ({} B), stored {} B, metadata {} B, fragmented {} B (free pages included), file - allocated {} B",
        stats.allocated_pages(),
        stats.allocated_pages() * stats.page_size() as u64,
        stats.stored_bytes(),
        stats.metadata_bytes(),
        stats.fragmented_bytes(),
        file_bytes as i64 - (stats.allocated_pages() * stats.page_size() as u64) as i64
    );
    write.abort().unwrap();
}
