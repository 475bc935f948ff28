//! The snapshot file: round trip, the pinned v2 file format and the v1 one still read, refusal
//! of every kind of damage,
//! and crashes while a snapshot is written or installed.

use std::sync::Arc;

use super::*;
use crate::domain::ids::{FamilyId, TokenId};
use crate::domain::scope::ScopeList;
use crate::domain::tables::{Issuance, NewToken, RequestAnswer};
use crate::proto::ledger::GrantType;

/// The tables snapshot stream fixture (format 1 of the stream, 120 events).
const STREAM_FIXTURE: &[u8] = include_bytes!("../../../tests/fixtures/tables-snapshot-v1.bin");
/// The same tables and [`fixture_rest`] in a snapshot file, format 3 (a format-2 stream and a
/// state section in the body).
const FILE_FIXTURE: &[u8] = include_bytes!("../../../tests/fixtures/tables-snapshot-file-v3.bin");
/// The same tables in a snapshot file of format 2 (a format-2 stream in the body, no state).
const FILE_FIXTURE_V2: &[u8] = include_bytes!("../../../tests/fixtures/tables-snapshot-file-v2.bin");
/// The same tables in a snapshot file of format 1 (a format-1 stream in the body).
const FILE_FIXTURE_V1: &[u8] = include_bytes!("../../../tests/fixtures/tables-snapshot-file-v1.bin");
/// The chain hash the fixture file names (any ledger's hash of its seq 120).
const FIXTURE_CHAIN_HASH: [u8; 32] = [0xc4; 32];

fn config() -> TablesConfig {
    TablesConfig { token_shards_log2: 2, family_shards_log2: 1, ..TablesConfig::default() }
}

/// The fixture's tables: 120 events of every kind (seq 1..=120).
fn fixture_tables() -> TokenTables {
    TokenTables::load(&mut &STREAM_FIXTURE[..], config()).map(|(tables, _)| tables).unwrap()
}

/// The rest of a state at the fixture's seq 120: one of each kind of record (one entry per
/// map, so that the bytes do not depend on a hash map's order).
fn fixture_rest() -> RestOfState {
    use crate::domain::state::cutoff::{Cutoff, CutoffScope};
    use crate::domain::state::{ChainHead, Client, GrantTypes, Institution, SignInKey, SignInRecord, SignInSubject};
    let mut state = crate::domain::State::default();
    state.head = ChainHead { seq: 120, hash: FIXTURE_CHAIN_HASH, recorded_at_ms: 1_120 };
    state.institutions.insert("01001".into(), Institution { id: "01001".into(), name: "Bank".into(), created_seq: 2 });
    let mut grant_types = GrantTypes::default();
    grant_types.insert(GrantType::ClientCredentials);
    let client = Client {
        id: "tail-client".into(),
        name: "Tail".into(),
        institution_ids: vec!["01001".into()],
        grant_types,
        scopes: vec![Box::from("accounts")].into(),
        redirect_uri: String::new(),
        access_token_ttl_secs: 900,
        refresh_token_ttl_secs: 0,
        introspect: true,
        consent_enabled: false,
        secondary_authentication_enabled: false,
        device_registration_enabled: false,
        authorize_partners: false,
        secret: crate::proto::ledger::CredentialDigest {
            kind: Some(crate::proto::ledger::credential_digest::Kind::Keyed(crate::proto::ledger::KeyedDigest {
                key_id: 1,
                digest: vec![7; 32],
            })),
        },
        created_seq: 3,
        disabled: false,
        previous_secret: None,
    };
    state.clients.insert(client.id.clone(), Arc::new(client));
    let key = SignInKey { institution_id: "01001".into(), subject: SignInSubject::Login("dana".into()) };
    let record =
        SignInRecord { window_failures: 2, window_ends_at_ms: 9_000, failed_login_count: 2, locked_until_ms: 0 };
    state.sign_ins.insert(key, record);
    state.cutoffs.add(&CutoffScope::Client("tail-client".into()), Cutoff::new(100, 1_100, 0));
    state.rest()
}

/// A chain of made-up hashes, one per seq (as a ledger would give).
fn chain(seq: u64) -> Option<[u8; 32]> {
    let mut hash = [0u8; 32];
    hash[..8].copy_from_slice(&seq.to_le_bytes());
    hash[8..16].copy_from_slice(&(!seq).to_le_bytes());
    Some(hash)
}

/// Event `seq`: a client_credentials issuance with a retry answer, or (every third) a sign-in
/// that starts a family.
fn issue(tables: &TokenTables, seq: u64) {
    let client: Arc<str> = "tail-client".into();
    let institution: Arc<str> = "01001".into();
    let scopes: ScopeList = vec![Box::from("accounts")].into();
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&seq.to_le_bytes());
    id[8..].copy_from_slice(&seq.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    let signs_in = seq.is_multiple_of(3);
    let mut refresh_id = id;
    refresh_id[0] ^= 0xff;
    let transaction_id = format!("00000000-0000-4000-8000-{seq:012}");
    let issuance = Issuance {
        seq,
        recorded_at_ms: 1_000 + seq as i64,
        decided_at_ms: 1_000 + seq as i64,
        grant_type: if signs_in { GrantType::Password } else { GrantType::ClientCredentials },
        client_id: &client,
        institution_id: &institution,
        user: None,
        family: signs_in.then_some(FamilyId(id)),
        access: Some(NewToken { id: TokenId(id), expires_at_ms: 10_000_000, scopes: &scopes }),
        refresh: signs_in.then_some(NewToken { id: TokenId(refresh_id), expires_at_ms: 20_000_000, scopes: &scopes }),
        rotated_from: None,
        request: Some(RequestAnswer { transaction_id: &transaction_id, fingerprint: &[seq as u8; 32] }),
    };
    tables.issue(&issuance).unwrap();
    tables.advance(seq);
}

fn load(dir: &Path) -> Result<(TokenTables, Loaded), SnapshotFileError> {
    SnapshotFile::open(dir)?.load(config(), 0)
}

fn file_bytes(dir: &Path) -> Vec<u8> {
    fs::read(snapshot_path(dir)).unwrap()
}

fn put_file(dir: &Path, bytes: &[u8]) {
    fs::write(snapshot_path(dir), bytes).unwrap();
}

#[test]
fn a_written_snapshot_loads_into_equal_tables_and_names_its_chain() {
    let dir = tempfile::tempdir().unwrap();
    let tables = fixture_tables();
    for seq in 121..=150 {
        issue(&tables, seq);
    }
    let header = write_snapshot(dir.path(), &tables, chain).unwrap();
    assert_eq!((header.ledger_seq, header.replay_from_seq), (150, 151));
    assert_eq!(header.chain_hash, chain(150).unwrap());
    assert_eq!(header.tokens, tables.token_count() as u64);
    assert_eq!(header.families, tables.family_count() as u64);
    assert_eq!(header.retry_entries, tables.retry_count() as u64);
    assert!(!dir.path().join(SNAPSHOT_TEMPORARY_NAME).exists(), "the temporary was renamed");
    let bytes = file_bytes(dir.path());
    assert_eq!(bytes.len() as u64, SNAPSHOT_HEADER_LEN as u64 + header.body_len);

    let file = SnapshotFile::open(dir.path()).unwrap();
    assert_eq!(*file.header(), header);
    file.check_chain(chain).unwrap();
    assert!(matches!(file.check_chain(|_| Some([9; 32])), Err(SnapshotFileError::NotThisLedger { seq: 150 })));
    assert!(matches!(file.check_chain(|_| None), Err(SnapshotFileError::NotThisLedger { seq: 150 })));
    for workers in [0, 1, 3] {
        let (loaded, info) = SnapshotFile::open(dir.path()).unwrap().load(config(), workers).unwrap();
        assert_eq!(loaded, tables, "{workers} workers");
        assert_eq!(info.replay_from_seq, 151);
    }
}

/// What start-up will do: load the snapshot taken at some moment, replay the events after it
/// (the shards that have them skip them), and get the tables a full apply gives.
#[test]
fn snapshot_file_plus_tail_equals_the_live_tables() {
    let dir = tempfile::tempdir().unwrap();
    let live = fixture_tables();
    for seq in 121..=140 {
        issue(&live, seq);
    }
    let header = write_snapshot(dir.path(), &live, chain).unwrap();
    for seq in 141..=200 {
        issue(&live, seq);
    }
    let (loaded, info) = load(dir.path()).unwrap();
    assert_eq!(info.replay_from_seq, header.replay_from_seq);
    // The tail from the header's seq on, including events the snapshot already covers.
    for seq in header.replay_from_seq..=200 {
        issue(&loaded, seq);
    }
    assert_eq!(loaded, live);
}

/// Format version 3 of the file, pinned: the fixture's tables and state written with the
/// fixture's chain hash give exactly the fixture's bytes, and the fixture loads into those
/// tables and that state. A change of the format (or of a state type: the section is serde
/// derived) must bump the version and keep a reader of this one.
#[test]
fn the_v3_snapshot_file_fixture_is_reproduced_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (tables, rest) = (fixture_tables(), fixture_rest());
    let header =
        write_state_snapshot(dir.path(), &rest, &tables, |seq| (seq == 120).then_some(FIXTURE_CHAIN_HASH)).unwrap();
    let bytes = file_bytes(dir.path());
    if std::env::var("TABLES_WRITE_FIXTURE").is_ok() {
        fs::write("tests/fixtures/tables-snapshot-file-v3.bin", &bytes).unwrap();
    }
    assert!(bytes == FILE_FIXTURE, "the v3 file format changed (TABLES_WRITE_FIXTURE=1 rewrites the fixture)");
    assert_eq!(FILE_FIXTURE[8..12], 3u32.to_le_bytes());
    // The body is a version-2 tables stream and then the state section.
    assert_eq!(FILE_FIXTURE[SNAPSHOT_HEADER_LEN + 8..SNAPSHOT_HEADER_LEN + 12], 2u32.to_le_bytes());
    let section = SNAPSHOT_HEADER_LEN + STREAM_FIXTURE.len();
    assert_eq!(&FILE_FIXTURE[section..section + 8], STATE_SECTION_TAG);
    assert_eq!((header.ledger_seq, header.replay_from_seq, header.chain_hash), (120, 121, FIXTURE_CHAIN_HASH));

    let fixture_dir = tempfile::tempdir().unwrap();
    put_file(fixture_dir.path(), FILE_FIXTURE);
    let file = SnapshotFile::open(fixture_dir.path()).unwrap();
    assert_eq!(*file.header(), header);
    let (loaded, info, loaded_rest) = file.load_state(config(), 0).unwrap();
    assert_eq!(loaded, tables);
    assert_eq!(loaded_rest, rest);
    assert_eq!(info.replay_from_seq, 121);
}

/// A version-2 file (tables only) still loads as tables; a server does not start from it.
#[test]
fn the_v2_snapshot_file_fixture_still_reads_as_tables() {
    assert_eq!(FILE_FIXTURE_V2[8..12], 2u32.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    put_file(dir.path(), FILE_FIXTURE_V2);
    let (loaded, info) = load(dir.path()).unwrap();
    assert_eq!(loaded, fixture_tables());
    assert_eq!(info.replay_from_seq, 121);
    let refused = SnapshotFile::open(dir.path()).unwrap().load_state(config(), 0);
    assert!(matches!(refused, Err(SnapshotFileError::NoState(2))), "{refused:?}");
}

/// A state taken at an earlier seq than the tables (as a server takes it: the rest first,
/// then the tables shard by shard) makes the tail start after the state.
#[test]
fn the_tail_starts_after_the_state_when_the_tables_are_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let tables = fixture_tables();
    for seq in 121..=130 {
        issue(&tables, seq);
    }
    let rest = fixture_rest();
    let header = write_state_snapshot(dir.path(), &rest, &tables, chain).unwrap();
    assert_eq!((header.ledger_seq, header.replay_from_seq), (130, 121));
    let (_, _, loaded_rest) = SnapshotFile::open(dir.path()).unwrap().load_state(config(), 1).unwrap();
    assert_eq!(loaded_rest.head.seq, 120);
}

/// A version-1 file (written before the tables listed entries in id order) still opens and
/// loads into the same tables, through the same checks.
#[test]
fn the_v1_snapshot_file_fixture_still_reads() {
    assert_eq!(FILE_FIXTURE_V1[8..12], 1u32.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    put_file(dir.path(), FILE_FIXTURE_V1);
    let file = SnapshotFile::open(dir.path()).unwrap();
    let header = *file.header();
    assert_eq!((header.ledger_seq, header.replay_from_seq, header.chain_hash), (120, 121, FIXTURE_CHAIN_HASH));
    assert!(file.check_chain(|seq| (seq == 120).then_some(FIXTURE_CHAIN_HASH)).is_ok());
    for workers in [0, 1] {
        let (loaded, info) = SnapshotFile::open(dir.path()).unwrap().load(config(), workers).unwrap();
        assert_eq!(loaded, fixture_tables(), "{workers} workers");
        assert_eq!(info.replay_from_seq, 121);
    }
    // Damaged, it is refused like a version-2 file.
    let mut damaged = FILE_FIXTURE_V1.to_vec();
    damaged[SNAPSHOT_HEADER_LEN + 700] ^= 0x40;
    put_file(dir.path(), &damaged);
    assert!(matches!(load(dir.path()), Err(SnapshotFileError::BodyChecksum)));
}

/// Every byte of the header, a spread of the body's bytes, cuts anywhere and bytes after the
/// end: each gives its typed error and no tables.
#[test]
fn damage_of_every_kind_is_refused_with_its_own_error() {
    let dir = tempfile::tempdir().unwrap();
    let original = FILE_FIXTURE.to_vec();
    let check = |bytes: &[u8], what: &str, expect: &dyn Fn(&SnapshotFileError) -> bool| {
        put_file(dir.path(), bytes);
        match load(dir.path()) {
            Ok(_) => panic!("{what}: the damaged file loaded"),
            Err(e) => assert!(expect(&e), "{what}: unexpected error {e:?}"),
        }
    };
    // The header: the magic, the version, then every other byte (the checksum's own too).
    for at in 0..SNAPSHOT_HEADER_LEN {
        let mut damaged = original.clone();
        damaged[at] ^= 0x01;
        let what = format!("header byte {at}");
        match at {
            0..8 => check(&damaged, &what, &|e| matches!(e, SnapshotFileError::Magic)),
            // 3 ^ 1 is 2, a version this build reads: then the checksum refuses it.
            8..12 => check(&damaged, &what, &|e| {
                matches!(e, SnapshotFileError::Version(_) | SnapshotFileError::HeaderChecksum)
            }),
            _ => check(&damaged, &what, &|e| matches!(e, SnapshotFileError::HeaderChecksum)),
        }
    }
    // The body: every 13th byte and the last one; the chunk digests or the body checksum
    // catch each, and it is reported as a damaged body.
    for at in (SNAPSHOT_HEADER_LEN..original.len()).step_by(13).chain([original.len() - 1]) {
        let mut damaged = original.clone();
        damaged[at] ^= 0x40;
        check(&damaged, &format!("body byte {at}"), &|e| matches!(e, SnapshotFileError::BodyChecksum));
    }
    // Cut anywhere: in the magic, in the header, right after it, in the body, one byte short.
    for len in [0, 5, 8, 100, SNAPSHOT_HEADER_LEN - 1, SNAPSHOT_HEADER_LEN, 161, 5_000, original.len() - 1] {
        check(&original[..len], &format!("cut at {len}"), &|e| matches!(e, SnapshotFileError::Truncated { .. }));
    }
    // Trailing garbage: one byte, a block, a second copy of the file.
    for extra in [&[0u8][..], &[0x55; 4096][..], FILE_FIXTURE] {
        let mut longer = original.clone();
        longer.extend_from_slice(extra);
        check(
            &longer,
            &format!("{} bytes after the end", extra.len()),
            &|e| matches!(e, SnapshotFileError::TrailingBytes { extra: n } if *n == extra.len() as u64),
        );
    }
    // Not a snapshot at all (a ledger file's first bytes), and a future version.
    check(b"\0\0\0\0\0\0\0\0redb ledger...", "a foreign file", &|e| matches!(e, SnapshotFileError::Magic));
    let mut future = original.clone();
    future[8] = 4;
    check(&future, "version 4", &|e| matches!(e, SnapshotFileError::Version(4)));
    let mut past = original.clone();
    past[8] = 0;
    check(&past, "version 0", &|e| matches!(e, SnapshotFileError::Version(0)));
    // A header that checksums but lies about the body: another seq, other counts.
    let header = SnapshotHeader::decode(original[..SNAPSHOT_HEADER_LEN].try_into().unwrap()).unwrap();
    for (lie, what) in [
        (SnapshotHeader { ledger_seq: 130, ..header }, "another seq"),
        (SnapshotHeader { replay_from_seq: 100, ..header }, "another replay seq"),
        (SnapshotHeader { tokens: header.tokens + 1, ..header }, "another token count"),
    ] {
        let mut lying = lie.encode().to_vec();
        lying.extend_from_slice(&original[SNAPSHOT_HEADER_LEN..]);
        check(&lying, what, &|e| matches!(e, SnapshotFileError::Inconsistent(_)));
    }
    // A body that is a valid stream but not the one the checksum names.
    let mut other = header.encode().to_vec();
    let mut stream = Vec::new();
    TokenTables::new(config()).snapshot().write_to(&mut stream).unwrap();
    stream.resize(original.len() - SNAPSHOT_HEADER_LEN, 0);
    other.extend_from_slice(&stream);
    check(&other, "another stream", &|e| matches!(e, SnapshotFileError::BodyChecksum));
    // And the undamaged file still loads.
    put_file(dir.path(), &original);
    assert!(load(dir.path()).is_ok());
    fs::remove_file(snapshot_path(dir.path())).unwrap();
    assert!(matches!(SnapshotFile::open(dir.path()), Err(SnapshotFileError::Missing)));
}

/// A file the writer stops writing to after `budget` bytes, or whose fsync fails: what the
/// disk holds when the process dies at that point (the rename, the commit point, never runs).
struct Crashing {
    file: File,
    budget: u64,
    fail_sync: bool,
}

impl Write for Crashing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.budget == 0 {
            return Err(io::Error::other("crashed"));
        }
        let n = buf.len().min(self.budget as usize);
        let n = self.file.write(&buf[..n])?;
        self.budget -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for Crashing {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.file.seek(to)
    }
}

impl SnapshotSink for Crashing {
    fn sync(&mut self) -> io::Result<()> {
        if self.fail_sync {
            return Err(io::Error::other("crashed at fsync"));
        }
        self.file.sync_all()
    }
}

/// A crash at any point of writing a new snapshot leaves the previous one, which loads; a
/// temporary left by a crash is ignored and replaced by the next write.
#[test]
fn a_crash_while_writing_leaves_the_previous_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let previous = fixture_tables();
    let rest = fixture_rest();
    write_state_snapshot(dir.path(), &rest, &previous, chain).unwrap();
    let previous_bytes = file_bytes(dir.path());
    let newer = fixture_tables();
    for seq in 121..=400 {
        issue(&newer, seq);
    }
    let full = {
        let other = tempfile::tempdir().unwrap();
        write_state_snapshot(other.path(), &rest, &newer, chain).unwrap();
        file_bytes(other.path()).len() as u64
    };
    // Every write of the placeholder header, a spread of the body, the last body byte, and
    // the header written last (it comes after the whole body: budget `full` covers the body
    // and `full + k` cuts the real header after k bytes).
    let header_len = SNAPSHOT_HEADER_LEN as u64;
    let budgets: Vec<u64> = (0..=header_len)
        .chain((header_len..full).step_by(997))
        .chain([full - 1, full, full + 1, full + header_len - 1])
        .collect();
    for budget in budgets {
        let crash = |file| Ok(Crashing { file, budget, fail_sync: false });
        let crashed = write_via(dir.path(), &newer, Some(&rest), chain, crash);
        assert!(crashed.is_err(), "budget {budget}: the write succeeded");
        assert_eq!(file_bytes(dir.path()), previous_bytes, "budget {budget}: the previous file changed");
        let (loaded, _, loaded_rest) = SnapshotFile::open(dir.path()).unwrap().load_state(config(), 0).unwrap();
        assert_eq!((loaded, loaded_rest), (previous.clone(), rest.clone()), "budget {budget}");
    }
    // A failed fsync is a failed write: nothing is renamed.
    let synced = write_via(dir.path(), &newer, Some(&rest), chain, |file| {
        Ok(Crashing { file, budget: u64::MAX, fail_sync: true })
    });
    assert!(synced.is_err());
    assert_eq!(file_bytes(dir.path()), previous_bytes);
    // What a killed process leaves: a partial temporary. Loading ignores it, and the next
    // snapshot replaces it.
    let temporary = dir.path().join(SNAPSHOT_TEMPORARY_NAME);
    fs::write(&temporary, &FILE_FIXTURE[..1_000]).unwrap();
    assert_eq!(load(dir.path()).unwrap().0, previous);
    write_snapshot(dir.path(), &newer, chain).unwrap();
    assert!(!temporary.exists());
    assert_eq!(load(dir.path()).unwrap().0, newer);
}

/// A snapshot received as a stream (a Raft follower's install) is checked before it replaces
/// the current one; a damaged, cut or overlong stream leaves the current one.
#[test]
fn an_installed_stream_is_checked_before_it_replaces_the_current_snapshot() {
    let source = tempfile::tempdir().unwrap();
    let newer = fixture_tables();
    for seq in 121..=160 {
        issue(&newer, seq);
    }
    let sent = write_snapshot(source.path(), &newer, chain).unwrap();
    let stream = file_bytes(source.path());

    let dir = tempfile::tempdir().unwrap();
    put_file(dir.path(), FILE_FIXTURE);
    let mut damaged = stream.clone();
    damaged[SNAPSHOT_HEADER_LEN + 500] ^= 1;
    let mut longer = stream.clone();
    longer.push(0);
    let mut bad_header = stream.clone();
    bad_header[20] ^= 1;
    for (bad, expect) in [
        (&damaged[..], "body checksum"),
        (&stream[..stream.len() - 1], "truncated"),
        (&stream[..100], "truncated"),
        (&longer[..], "trailing"),
        (&bad_header[..], "header checksum"),
    ] {
        let result = install_snapshot(dir.path(), &mut &bad[..]);
        let ok = match &result {
            Err(SnapshotFileError::BodyChecksum) => expect == "body checksum",
            Err(SnapshotFileError::Truncated { .. }) => expect == "truncated",
            Err(SnapshotFileError::TrailingBytes { extra: 1 }) => expect == "trailing",
            Err(SnapshotFileError::HeaderChecksum) => expect == "header checksum",
            _ => false,
        };
        assert!(ok, "{expect}: {result:?}");
        assert_eq!(file_bytes(dir.path()), FILE_FIXTURE, "{expect}: the current snapshot changed");
        assert!(!dir.path().join(SNAPSHOT_TEMPORARY_NAME).exists());
    }
    // Sent in small pieces, as a network stream would arrive.
    let mut pieces = Pieces { bytes: &stream, piece: 7 };
    assert_eq!(install_snapshot(dir.path(), &mut pieces).unwrap(), sent);
    assert_eq!(file_bytes(dir.path()), stream);
    assert_eq!(load(dir.path()).unwrap().0, newer);
}

/// A reader that hands out at most `piece` bytes per call.
struct Pieces<'a> {
    bytes: &'a [u8],
    piece: usize,
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.piece).min(self.bytes.len());
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Ok(n)
    }
}
