//! The redb file: the `event_chunks` table (first seq → a chunk of envelopes, see `chunks.rs`),
//! the `events` table of formats 1 to 3 (seq → envelope bytes, read, never written since
//! format 4), the `index` table (see `index.rs`) and `meta`. Only the writer thread writes;
//! readers use MVCC read transactions.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::chunks;
use super::codec::Sealed;
use super::index;
use super::raft_log::{RaftLog, RaftLogError};
use super::reader::LedgerReader;
use super::token_ids::TokenIdScheme;

/// Index entries an index rebuild groups into lists at a time (about 16,000 events' worth).
const REBUILD_WINDOW: usize = 1 << 16;

/// How long closing the store waits for readers to finish the read they are in.
const READERS_WAIT: Duration = Duration::from_secs(5);

/// Formats 1 to 3: one row per event. Kept as it is when such a file is upgraded.
pub(crate) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// Format 4: the events after those of `events`, in chunks (`chunks.rs`).
pub(crate) const CHUNKS: TableDefinition<u64, &[u8]> = TableDefinition::new("event_chunks");
/// Index versions up to 3: one row per entry (`index.rs`). Dropped when the index is rebuilt.
pub(crate) const INDEX: TableDefinition<&[u8], ()> = TableDefinition::new("index");
/// Index version 4: list rows (`index::lists`).
pub(crate) const INDEX_LISTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("index_lists");
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// redb's page cache for the ledger file (its default is 1 GiB). The writer only appends (it
/// touches the right edge of each B-tree) and audit queries read ranges, so the upper levels
/// are what is worth caching: ~8 MiB of branch pages for a 10M-event ledger. A bigger cache
/// only fills with leaves that are not read again: it was most of a serving node's memory
/// beyond the token tables at 1 GiB (bench/README.md, 10M run), and at 128 MiB a full replay
/// spent a third of its reading thread zeroing the pages it filled the cache with. At 32 MiB
/// the writer's CPU per token and audit reads measured the same as at 128 MiB (bench/README.md,
/// "redb's page cache at 32 MiB").
pub const CACHE_BYTES: usize = 32 << 20;

/// Version of the table layout and event set; see the format log in docs/design.md.
pub const FORMAT_VERSION: u32 = 4;
/// Format 1 to 3 files open too, their events read as they are (a format-1 envelope is a
/// format-2 envelope with the transaction id as text; format 3 adds an event kind,
/// `ProjectionSnapshotWritten`, and nothing else; format 4 stores new events in chunks, and
/// the envelopes are those of format 3). Opened for writing, a file's `format_version` becomes
/// 4, so that an older build, which would not see the chunked events, refuses the file up
/// front instead. Opened read-only, nothing changes.
const FORMAT_V1: u32 = 1;
const FORMAT_V2: u32 = 2;
const FORMAT_V3: u32 = 3;
const META_FORMAT: &str = "format_version";
/// The last seq of a format-1 file when a format-2 (or later) build first opened it for
/// writing (u64 be).
const META_FORMAT_1_UNTIL: &str = "format_1_until_seq";
/// The last seq of a format-2 file when a format-3 build first opened it for writing (u64 be):
/// no event up to it is of a format-3 kind.
const META_FORMAT_2_UNTIL: &str = "format_2_until_seq";
/// The last seq stored one row per event (the `events` table of formats 1 to 3) when a format-4
/// build first opened the file for writing (u64 be): every later event is in `event_chunks`.
const META_EVENT_ROWS_UNTIL: &str = "event_rows_until_seq";
const META_INDEX: &str = "index_version";
const META_TOKEN_ID_KEY: &str = "token_id_key";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("another process has the ledger open (is a tokenledger server running on this data dir?)")]
    AlreadyOpen,
    #[error("ledger format {found} is not supported by this build (supports {FORMAT_V1} to {FORMAT_VERSION})")]
    UnsupportedFormat { found: u32 },
    #[error("ledger storage error: {0}")]
    Storage(#[from] redb::Error),
    #[error("the stored events are damaged: {0}")]
    Damaged(String),
    #[error("the ledger is closed")]
    Closed,
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                match redb::Error::from(e) {
                    redb::Error::DatabaseAlreadyOpen => StoreError::AlreadyOpen,
                    other => StoreError::Storage(other),
                }
            }
        }
    )*};
}
storage_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

pub struct Store {
    /// Shared with [`LedgerReader`]s (audit queries), which hold it only weakly.
    db: Arc<Database>,
    /// How token ids map to index positions (its key is in `meta`).
    token_ids: Arc<TokenIdScheme>,
}

/// See [`Store::flusher`].
#[derive(Clone)]
pub struct Flusher(std::sync::Weak<Database>);

impl Flusher {
    /// [`Store::flush`]; fails once the store is closed.
    pub fn flush(&self) -> Result<(), StoreError> {
        let db = self.0.upgrade().ok_or(StoreError::Closed)?;
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.commit()?;
        Ok(())
    }
}

/// An index rebuild in progress (after a change of index layout), in one write transaction:
/// it takes the entries of every event in seq order, as a replay computes them, and writes them
/// as lists of [`REBUILD_WINDOW`] entries at a time, so a ledger's entries are never all in
/// memory (redb writes the transaction's dirty pages out as its cache fills). Nothing of it is
/// visible or durable before [`IndexRebuild::finish`]; dropped unfinished (a replay that
/// failed), it leaves the file as it was, and the next open rebuilds again.
pub struct IndexRebuild {
    txn: redb::WriteTransaction,
    window: Vec<Vec<u8>>,
}

impl IndexRebuild {
    /// The next entry, in seq order.
    pub fn push(&mut self, key: Vec<u8>) -> Result<(), StoreError> {
        self.window.push(key);
        if self.window.len() == REBUILD_WINDOW {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        let mut table = self.txn.open_table(INDEX_LISTS)?;
        for (key, seqs) in index::lists(self.window.iter().map(Vec::as_slice)) {
            table.insert(key.as_slice(), seqs.as_slice())?;
        }
        self.window.clear();
        Ok(())
    }

    /// Writes the last window, records `version` and commits durably.
    pub fn finish(mut self, version: u32) -> Result<(), StoreError> {
        self.flush()?;
        self.txn.open_table(META)?.insert(META_INDEX, version.to_be_bytes().as_slice())?;
        self.txn.commit()?;
        Ok(())
    }
}

/// One event to append, with its index entries.
pub struct Append {
    pub sealed: Sealed,
    pub index_keys: Vec<Vec<u8>>,
}

impl Store {
    /// Opens (or creates) the ledger file for writing, checking its format version.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, None)
    }

    /// [`Store::open`], giving a new file `token_id_key` as its token-id key instead of a random
    /// one; a file that has a key keeps it. A cluster's nodes all give the same key (derived from
    /// the cluster's key file), so the ids one node mints are neighbours in every node's index:
    /// with a key of its own, a node's index would put another node's tokens at positions that
    /// look random, and every apply would dirty about a page per token (see `token_ids`).
    pub fn open_keyed(path: &Path, token_id_key: &[u8; 32]) -> Result<Self, StoreError> {
        Self::open_with(path, Some(token_id_key))
    }

    fn open_with(path: &Path, new_token_id_key: Option<&[u8; 32]>) -> Result<Self, StoreError> {
        let db = Database::builder().set_cache_size(CACHE_BYTES).create(path)?;
        Self::from_database_with(db, new_token_id_key)
    }

    /// Opens `db` for writing: checks its format version and marks an older format as the
    /// current one (see [`FORMAT_VERSION`]), creating the tables and the token-id key of a new
    /// file, in one durable transaction.
    pub fn from_database(db: Database) -> Result<Self, StoreError> {
        Self::from_database_with(db, None)
    }

    /// [`Store::from_database`], with the token-id key a new file gets (`None`: a random one).
    fn from_database_with(db: Database, new_token_id_key: Option<&[u8; 32]>) -> Result<Self, StoreError> {
        let db = Arc::new(db);
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let token_id_key = {
            let mut meta = txn.open_table(META)?;
            let found = meta.get(META_FORMAT)?.map(|v| read_u32(v.value()));
            match found {
                None => {
                    meta.insert(META_FORMAT, FORMAT_VERSION.to_be_bytes().as_slice())?;
                }
                Some(Some(FORMAT_VERSION)) => {}
                Some(Some(old @ (FORMAT_V1 | FORMAT_V2 | FORMAT_V3))) => {
                    let head = txn.open_table(EVENTS)?.last()?.map_or(0, |(seq, _)| seq.value());
                    match old {
                        FORMAT_V1 => meta.insert(META_FORMAT_1_UNTIL, head.to_be_bytes().as_slice())?,
                        FORMAT_V2 => meta.insert(META_FORMAT_2_UNTIL, head.to_be_bytes().as_slice())?,
                        _ => None,
                    };
                    meta.insert(META_EVENT_ROWS_UNTIL, head.to_be_bytes().as_slice())?;
                    meta.insert(META_FORMAT, FORMAT_VERSION.to_be_bytes().as_slice())?;
                }
                Some(other) => {
                    return Err(StoreError::UnsupportedFormat { found: other.unwrap_or(0) });
                }
            }
            let stored = meta.get(META_TOKEN_ID_KEY)?.map(|v| v.value().to_vec());
            let key = match stored {
                Some(key) => key,
                None => {
                    let key = new_token_id_key
                        .map_or_else(|| crate::crypto::random_bytes::<32>().to_vec(), |key| key.to_vec());
                    meta.insert(META_TOKEN_ID_KEY, key.as_slice())?;
                    key
                }
            };
            let index_version = meta.get(META_INDEX)?.and_then(|v| read_u32(v.value()));
            if index_version == Some(3) {
                drop(meta);
                convert_index_3(&txn)?;
                txn.open_table(META)?.insert(META_INDEX, index::INDEX_VERSION.to_be_bytes().as_slice())?;
            } else {
                drop(meta);
            }
            txn.open_table(EVENTS)?;
            txn.open_table(CHUNKS)?;
            txn.open_table(INDEX_LISTS)?;
            key
        };
        txn.commit()?;
        Ok(Self { db, token_ids: Arc::new(TokenIdScheme::new(&token_id_key)) })
    }

    /// Opens `db` for reading only (`verify`, offline audit checks): checks its format version
    /// in a read transaction and writes nothing, so the file's `meta` table (its format
    /// version above all) is what it was. A file without a token-id key (never opened for
    /// writing by a build that has one) gets a zero key: its index predates token positions
    /// and answers no query by token either way.
    pub fn from_database_read_only(db: Database) -> Result<Self, StoreError> {
        let db = Arc::new(db);
        let txn = db.begin_read()?;
        let meta = txn.open_table(META)?;
        match meta.get(META_FORMAT)?.map(|v| read_u32(v.value())) {
            Some(Some(FORMAT_V1 | FORMAT_V2 | FORMAT_V3 | FORMAT_VERSION)) => {}
            other => return Err(StoreError::UnsupportedFormat { found: other.flatten().unwrap_or(0) }),
        }
        let key = meta.get(META_TOKEN_ID_KEY)?.map_or_else(|| vec![0u8; 32], |v| v.value().to_vec());
        drop(meta);
        drop(txn);
        Ok(Self { db, token_ids: Arc::new(TokenIdScheme::new(&key)) })
    }

    /// The format version recorded in the file (0 when none is).
    pub fn format_version(&self) -> Result<u32, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta.get(META_FORMAT)?.and_then(|v| read_u32(v.value())).unwrap_or(0))
    }

    pub fn token_ids(&self) -> &Arc<TokenIdScheme> {
        &self.token_ids
    }

    /// The Raft log and vote of cluster mode, in this file's `raft_log` and `raft_meta` tables
    /// (created on first use; a single-node ledger never has them).
    pub fn raft_log(&self) -> Result<RaftLog, RaftLogError> {
        RaftLog::open(self.db.clone())
    }

    /// A read-only view for audit queries. It does not keep the file open: once the store
    /// is closed, reads fail with [`ReadError::Closed`](super::reader::ReadError).
    pub fn reader(&self) -> LedgerReader {
        LedgerReader::new(Arc::downgrade(&self.db), self.token_ids.clone())
    }

    /// Makes every commit so far durable (an empty transaction committed with an fsync): what
    /// the state machine applied without one (`append_applied`) survives the process then.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.flusher().flush()
    }

    /// A handle that makes this store's commits durable ([`Self::flush`]) without keeping the
    /// file open: a cluster node's snapshot writer uses it, so the seq a projection snapshot
    /// covers survives a crash of the process.
    pub fn flusher(&self) -> Flusher {
        Flusher(Arc::downgrade(&self.db))
    }

    /// Closes the file, first waiting (at most `READERS_WAIT`) for readers in the middle of
    /// a read, so that a restart in the same process can open it again.
    pub fn close(self) {
        let started = Instant::now();
        while Arc::strong_count(&self.db) > 1 && started.elapsed() < READERS_WAIT {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Appends a batch in one durable write transaction (fsync before returning).
    pub fn append(&self, batch: &[Append]) -> Result<(), StoreError> {
        self.append_in(batch, None, Durability::Immediate)
    }

    /// Cluster mode: appends what the state machine applies, recording in the same transaction
    /// how far it applied (`raft_meta`), so the two never disagree after a crash. Not fsynced:
    /// the entries are already durable in the Raft log of this same file, the next durable
    /// commit (the next log append, vote, or the snapshot record written before any log purge)
    /// makes this one durable too, and after a power loss openraft applies again from the
    /// applied id that survived (`replicated::apply_batch` is idempotent).
    pub fn append_applied(&self, batch: &[Append], raft_meta: Option<(&str, &[u8])>) -> Result<(), StoreError> {
        self.append_in(batch, raft_meta, Durability::None)
    }

    fn append_in(
        &self,
        batch: &[Append],
        raft_meta: Option<(&str, &[u8])>,
        durability: Durability,
    ) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(durability)?;
        {
            let mut chunks = txn.open_table(CHUNKS)?;
            let mut index = txn.open_table(INDEX_LISTS)?;
            append_chunked(&mut chunks, batch)?;
            let entries = batch.iter().flat_map(|item| item.index_keys.iter().map(Vec::as_slice));
            for (key, seqs) in index::lists(entries) {
                index.insert(key.as_slice(), seqs.as_slice())?;
            }
            if let Some((key, value)) = raft_meta {
                txn.open_table(super::raft_log::RAFT_META)?.insert(key, value)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The index version the stored index was built with (0 when never recorded).
    pub fn index_version(&self) -> Result<u32, StoreError> {
        recorded_index_version(&self.db.begin_read()?)
    }

    /// Starts replacing the whole index: the rows of every earlier index version are dropped
    /// in a write transaction that then takes the new entries ([`IndexRebuild`]).
    pub fn begin_index_rebuild(&self) -> Result<IndexRebuild, StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.delete_table(INDEX)?;
        txn.delete_table(INDEX_LISTS)?;
        Ok(IndexRebuild { txn, window: Vec::with_capacity(REBUILD_WINDOW) })
    }

    /// Calls `visit(seq, bytes)` for every stored event (its envelope as stored) in seq order,
    /// stopping at the first error `visit` returns. A chunk that does not parse is a
    /// [`StoreError::Damaged`].
    pub fn scan<E: From<StoreError>>(&self, mut visit: impl FnMut(u64, &[u8]) -> Result<(), E>) -> Result<(), E> {
        let snapshot = self.reader().snapshot().map_err(|e| match e {
            super::ReadError::Store(e) => e,
            other => StoreError::Damaged(other.to_string()),
        })?;
        let mut failed = None;
        let scanned = snapshot.scan(0, |seq, bytes| match visit(seq, bytes) {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        scanned.map_err(|e| StoreError::Damaged(e.to_string()).into())
    }
}

/// Rewrites an index of version 3 (one row per entry) as version 4 (lists), in `txn`: its rows
/// are already sorted by value and seq, so each value's entries become lists of up to
/// `index::LIST_MAX` in one pass, without the replay a rebuild needs. Drops the old table.
fn convert_index_3(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let started = Instant::now();
    let mut rows = 0u64;
    {
        let old = txn.open_table(INDEX)?;
        let mut lists = txn.open_table(INDEX_LISTS)?;
        let mut run: Vec<Vec<u8>> = Vec::with_capacity(index::LIST_MAX);
        let mut flush = |run: &mut Vec<Vec<u8>>| -> Result<(), StoreError> {
            for (key, seqs) in index::lists(run.iter().map(Vec::as_slice)) {
                lists.insert(key.as_slice(), seqs.as_slice())?;
            }
            run.clear();
            Ok(())
        };
        for row in old.iter()? {
            let (key, _) = row?;
            let key = key.value();
            let same_value = run.last().and_then(|last| index::split_entry(last)).map(|(prefix, _)| prefix)
                == index::split_entry(key).map(|(prefix, _)| prefix);
            if !same_value || run.len() == index::LIST_MAX {
                flush(&mut run)?;
            }
            run.push(key.to_vec());
            rows += 1;
            if rows.is_multiple_of(1 << 22) {
                tracing::info!(rows, "converting the ledger index to lists (index version 4)");
            }
        }
        flush(&mut run)?;
    }
    txn.delete_table(INDEX)?;
    tracing::info!(
        rows,
        ms = started.elapsed().as_millis() as u64,
        "ledger index converted to lists (index version 4)"
    );
    Ok(())
}

/// Appends `batch` (in seq order) to the chunks: to the last chunk while it has room and the
/// batch continues it, then to new ones.
fn append_chunked(table: &mut redb::Table<u64, &[u8]>, batch: &[Append]) -> Result<(), StoreError> {
    let Some(first) = batch.first() else { return Ok(()) };
    // The chunk being filled: its key, the seq it continues with, its bytes.
    let mut open: Option<(u64, u64, Vec<u8>)> = None;
    if let Some((key, value)) = table.last()? {
        let (key, value) = (key.value(), value.value());
        // A chunk that does not parse is left as it is (the replay reports it); the batch
        // starts a new one.
        if let Ok(n) = chunks::count(key, value)
            && key + n == first.sealed.seq
            && value.len() < chunks::CHUNK_BYTES
        {
            open = Some((key, key + n, value.to_vec()));
        }
    }
    for item in batch {
        let bytes = item.sealed.bytes.as_slice();
        let continues =
            open.as_ref().is_some_and(|(_, next, chunk)| *next == item.sealed.seq && chunks::fits(chunk, bytes.len()));
        if !continues {
            if let Some((key, _, chunk)) = open.take() {
                table.insert(key, chunk.as_slice())?;
            }
            open = Some((item.sealed.seq, item.sealed.seq, Vec::with_capacity(chunks::CHUNK_BYTES)));
        }
        if let Some((_, next, chunk)) = open.as_mut() {
            chunks::push(chunk, bytes);
            *next += 1;
        }
    }
    if let Some((key, _, chunk)) = open {
        table.insert(key, chunk.as_slice())?;
    }
    Ok(())
}

/// The index version recorded in the file `txn` reads (0 when none is, or it has no `meta`):
/// which index table holds the index (`index_lists` from version 4, `index` before).
pub(crate) fn recorded_index_version(txn: &redb::ReadTransaction) -> Result<u32, StoreError> {
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    Ok(meta.get(META_INDEX)?.and_then(|v| read_u32(v.value())).unwrap_or(0))
}

fn read_u32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(seq: u64, len: usize) -> Append {
        Append { sealed: Sealed { seq, hash: [0; 32], bytes: vec![(seq % 251) as u8; len] }, index_keys: Vec::new() }
    }

    #[test]
    fn a_new_file_takes_the_given_token_id_key_and_an_existing_one_keeps_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let id = crate::ledger::token_ids::TokenIdScheme::new(&[9; 32]).token_id(1_000, [1; 8]);
        let position = |store: &Store| store.token_ids().index_key(&id);
        // Two nodes of one cluster: the same key, so the same positions.
        let a = Store::open_keyed(&dir.path().join("a.redb"), &[9; 32]).unwrap();
        let b = Store::open_keyed(&dir.path().join("b.redb"), &[9; 32]).unwrap();
        assert_eq!(position(&a), position(&b));
        assert_eq!(&position(&a)[..8], &1_000u64.to_be_bytes(), "the minting key's time order");
        let before = position(&a);
        drop(a);
        // A file keeps the key it was created with, whatever is given later (its index holds
        // positions made with it); a file of its own gets a random key.
        let a = Store::open_keyed(&dir.path().join("a.redb"), &[7; 32]).unwrap();
        assert_eq!(position(&a), before);
        let own = Store::open(&dir.path().join("c.redb")).unwrap();
        assert_ne!(position(&own), before);
    }

    fn chunk_keys(store: &Store) -> Vec<u64> {
        let txn = store.db.begin_read().unwrap();
        let table = txn.open_table(CHUNKS).unwrap();
        table.iter().unwrap().map(|row| row.unwrap().0.value()).collect()
    }

    /// Batches fill the last chunk before opening another, across commits; an envelope too big
    /// for any chunk gets one of its own; every event reads back under its seq.
    #[test]
    fn batches_fill_chunks_across_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("ledger.redb")).unwrap();
        // 300-byte envelopes: 13 fit one chunk (13 × 302 + 1 ≤ 4064).
        store.append(&(1..=5).map(|seq| append(seq, 300)).collect::<Vec<_>>()).unwrap();
        store.append(&(6..=20).map(|seq| append(seq, 300)).collect::<Vec<_>>()).unwrap();
        assert_eq!(chunk_keys(&store), [1, 14], "the second batch filled the first chunk, then began another");
        store.append(&[append(21, 5_000), append(22, 300)]).unwrap();
        assert_eq!(chunk_keys(&store), [1, 14, 21, 22]);
        store.append(&[append(23, 300)]).unwrap();
        assert_eq!(chunk_keys(&store), [1, 14, 21, 22], "a small event continues the last chunk");
        let stored = super::super::raw::from(&store.db, 0).unwrap();
        assert_eq!(stored.len(), 23);
        for (seq, bytes) in stored {
            let len = if seq == 21 { 5_000 } else { 300 };
            assert_eq!(bytes, vec![(seq % 251) as u8; len], "event {seq}");
        }
        let snapshot = store.reader().snapshot().unwrap();
        assert_eq!(snapshot.last_seq().unwrap(), 23);
        assert_eq!(
            snapshot.envelopes(13..=15, 10).unwrap().iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
            [13, 14, 15]
        );
    }
}
