//! The stored events of a ledger file read and changed row by row, whichever table holds them
//! (one row per event in formats 1 to 3, chunks since format 4): for tools and for tests that
//! damage a ledger as someone with file access could. Everything here bypasses the writer, the
//! chain and the index; nothing in the server calls it.

use redb::{Database, ReadableDatabase, ReadableTable};

use super::chunks;
use super::reader::ReadError;
use super::store::{CHUNKS, EVENTS, StoreError};
use super::token_ids::TokenIdScheme;

/// The bytes stored for event `seq` (its envelope as stored).
pub fn read(db: &Database, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
    snapshot(db)?.stored(seq).map_err(store_error)
}

/// Every stored event from `seq` on, in seq order.
pub fn from(db: &Database, seq: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    let mut out = Vec::new();
    snapshot(db)?
        .scan(seq, |at, bytes| {
            out.push((at, bytes.to_vec()));
            true
        })
        .map_err(store_error)?;
    Ok(out)
}

/// The audit reader's view of `db` (events only: no token-id key is needed for them).
fn snapshot(db: &Database) -> Result<super::reader::Snapshot, StoreError> {
    let txn = db.begin_read()?;
    super::reader::Snapshot::open(&txn, std::sync::Arc::new(TokenIdScheme::new(&[0; 32])), None).map_err(store_error)
}

fn store_error(error: ReadError) -> StoreError {
    match error {
        ReadError::Store(error) => error,
        other => StoreError::Damaged(other.to_string()),
    }
}

/// Replaces the stored bytes of event `seq` (which must be stored) with `bytes`.
pub fn rewrite(db: &Database, seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
    change_chunk(db, seq, |rows, at| {
        rows.push((at, bytes.to_vec()));
    })
}

/// Removes event `seq` (which must be stored), leaving a gap: a chunk holding it is split in two.
pub fn remove(db: &Database, seq: u64) -> Result<(), StoreError> {
    change_chunk(db, seq, |_, _| {})
}

/// Removes every event from `seq` on.
pub fn truncate_from(db: &Database, seq: u64) -> Result<(), StoreError> {
    let kept = from(db, seq)?;
    for (at, _) in kept.into_iter().rev() {
        remove(db, at)?;
    }
    Ok(())
}

/// Rewrites the row or chunk that holds `seq`: `put(rows, seq)` is called where the event was,
/// with the events before it already in `rows`; what it pushes takes the event's place. The
/// events after it follow in a chunk of their own when the event was removed.
fn change_chunk(db: &Database, seq: u64, put: impl FnOnce(&mut Vec<(u64, Vec<u8>)>, u64)) -> Result<(), StoreError> {
    let missing = || StoreError::Damaged(format!("event {seq} is not stored"));
    let txn = db.begin_write()?;
    {
        let mut rows = txn.open_table(EVENTS)?;
        if rows.get(seq)?.is_some() {
            rows.remove(seq)?;
            let mut put_rows = Vec::new();
            put(&mut put_rows, seq);
            for (at, bytes) in put_rows {
                rows.insert(at, bytes.as_slice())?;
            }
        } else {
            drop(rows);
            let mut table = txn.open_table(CHUNKS)?;
            let (key, entries) = {
                let (key, value) = table.range(..=seq)?.next_back().transpose()?.ok_or_else(missing)?;
                let entries: Vec<(u64, Vec<u8>)> = chunks::entries(key.value(), value.value())
                    .map(|entry| entry.map(|(at, bytes)| (at, bytes.to_vec())))
                    .collect::<Result<_, _>>()
                    .map_err(|e| StoreError::Damaged(e.to_string()))?;
                (key.value(), entries)
            };
            if !entries.iter().any(|(at, _)| *at == seq) {
                return Err(missing());
            }
            let (before, after): (Vec<_>, Vec<_>) =
                entries.into_iter().filter(|(at, _)| *at != seq).partition(|(at, _)| *at < seq);
            let mut first = before;
            put(&mut first, seq);
            let replaced = first.len() > usize::try_from(seq - key).unwrap_or(usize::MAX);
            table.remove(key)?;
            let groups =
                if replaced { vec![first.into_iter().chain(after).collect::<Vec<_>>()] } else { vec![first, after] };
            for group in groups {
                let Some((start, _)) = group.first() else { continue };
                let start = *start;
                let mut chunk = Vec::new();
                for (_, bytes) in &group {
                    chunks::push(&mut chunk, bytes);
                }
                table.insert(start, chunk.as_slice())?;
            }
        }
    }
    txn.commit()?;
    Ok(())
}

/// The seqs the index holds for (`kind`, `value`), `value` as the index stores it (a token id
/// as its position: `index::token_value`), from whichever index table the file's
/// `index_version` names.
pub fn index_seqs(db: &Database, kind: super::index::IndexKind, value: &[u8]) -> Result<Vec<u64>, StoreError> {
    use super::index;
    let txn = db.begin_read()?;
    let version = super::store::recorded_index_version(&txn)?;
    let low = index::entry(kind, value, 0);
    let high = index::entry(kind, value, u64::MAX);
    let mut out = Vec::new();
    if version >= 4 {
        let table = txn.open_table(super::store::INDEX_LISTS)?;
        for row in table.range(low.as_slice()..=high.as_slice())? {
            let (key, deltas) = row?;
            let seqs = index::split_entry(key.value()).and_then(|(_, first)| index::unpack(first, deltas.value()));
            out.extend(seqs.ok_or_else(|| StoreError::Damaged("an index row does not parse".into()))?);
        }
    } else {
        // Index version 2 wrote every seq in 8 bytes, version 3 in as few as it needs.
        let table = txn.open_table(super::store::INDEX)?;
        let low = index::prefix(kind, value);
        let mut high = low.clone();
        high.extend_from_slice(&[0xff; 10]);
        for row in table.range(low.as_slice()..high.as_slice())? {
            let (key, _) = row?;
            let seq = match version {
                3 => index::seq_of(key.value()),
                _ => key.value().get(low.len()..).and_then(|seq| <[u8; 8]>::try_from(seq).ok()).map(u64::from_be_bytes),
            };
            out.extend(seq);
        }
    }
    Ok(out)
}

/// Every entry the index holds (each as `index::entry` encodes it), in key order, from
/// whichever index table the file's `index_version` names (index versions 3 and 4).
pub fn index_entries(db: &Database) -> Result<Vec<Vec<u8>>, StoreError> {
    use super::index;
    let txn = db.begin_read()?;
    let version = super::store::recorded_index_version(&txn)?;
    let mut out = Vec::new();
    if version >= 4 {
        for row in txn.open_table(super::store::INDEX_LISTS)?.iter()? {
            let (key, deltas) = row?;
            let parsed = index::split_entry(key.value())
                .and_then(|(prefix, first)| Some((prefix.to_vec(), index::unpack(first, deltas.value())?)));
            let (prefix, seqs) = parsed.ok_or_else(|| StoreError::Damaged("an index row does not parse".into()))?;
            out.extend(seqs.into_iter().map(|seq| index::entry_of(&prefix, seq)));
        }
    } else {
        for row in txn.open_table(super::store::INDEX)?.iter()? {
            out.push(row?.0.value().to_vec());
        }
    }
    Ok(out)
}
