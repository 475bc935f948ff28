//! openraft's state machine over a node's ledger: every committed batch is applied to the
//! node's own redb ledger and projections through [`crate::ledger::replicated`], on the leader
//! too, so every node holds the same events with the same hash chain.
//!
//! **Snapshots are the ledger range** (DESIGN.md "Beyond one machine"): a snapshot covers the
//! events 1..=head_seq, which never change once written, so nothing is copied when one is
//! built: the meta is recorded (`raft_meta` `snapshot`) and the events are read from the ledger
//! whenever a node must be sent it. Installing one applies its events like batches (the ones the
//! node holds must be byte-identical), so a node that catches up from a snapshot still holds the
//! whole audit history. (With the compact projection tables, the projection snapshot file will
//! travel with the range, so the receiver skips the replay.)
//!
//! Snapshot stream, version 1: `TLRAFTS1` (8 bytes), the event count (u64 big-endian), then each
//! envelope as its length (u32 big-endian) and its bytes, in seq order from 1.
//!
//! **Invariant:** a batch of an unknown version, an envelope that does not continue this node's
//! chain, or a snapshot that does not parse is a storage error: openraft stops this node, which
//! then serves nothing rather than a chain that is not the cluster's.

use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageIOError, StoredMembership};
use parking_lot::{Mutex, RwLock};

use super::codec::{self, CodecError};
use super::{Applied, Entry, LogId, NodeId, NodeInfo, RAFT_BATCH_VERSION, StorageError, TypeConfig};
use crate::domain::State;
use crate::ledger::replicated::{self, ReplicatedError};
use crate::ledger::{RaftLog, RaftLogError, Store};
use crate::proto::ledger::{RaftApplied, RaftSnapshotMeta};

const SNAPSHOT_MAGIC: &[u8; 8] = b"TLRAFTS1";

/// The state machine of one node: its ledger, its projections, and what it has applied.
#[derive(Clone)]
pub struct LedgerMachine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    state: Arc<RwLock<State>>,
    log: RaftLog,
    /// What has been applied (as recorded in `raft_meta`), read by snapshot builders.
    applied: Mutex<RaftApplied>,
    /// The ledger head after each applied entry: live event streams follow it on every node.
    head: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug, thiserror::Error)]
enum MachineError {
    #[error(transparent)]
    Replicated(#[from] ReplicatedError),
    #[error(transparent)]
    Log(#[from] RaftLogError),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("raft batch version {0} is not known to this build (it applies {RAFT_BATCH_VERSION}); upgrade this node")]
    UnknownBatch(u32),
    #[error("snapshot stream: {0}")]
    Snapshot(String),
    #[error("the ledger cannot be read: {0}")]
    Read(String),
    #[error("a blocking task failed: {0}")]
    Join(String),
}

impl LedgerMachine {
    /// The state machine over `store` (opened with [`replicated::open_replica`]) and its
    /// projections `state`; what it applied is read from the store's raft tables.
    pub fn new(store: Store, state: Arc<RwLock<State>>) -> Result<Self, RaftLogError> {
        let log = store.raft_log()?;
        let applied = log.applied()?.unwrap_or_default();
        let head = tokio::sync::watch::Sender::new(state.read().head.seq);
        Ok(Self { inner: Arc::new(Inner { store, state, log, applied: Mutex::new(applied), head }) })
    }

    /// The seq of the last event applied here, updated after every entry (as the single-node
    /// writer's `committed_head` is).
    pub fn committed_head(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.head.subscribe()
    }

    /// The projections this machine applies to.
    pub fn state(&self) -> &Arc<RwLock<State>> {
        &self.inner.state
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    async fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Inner) -> Result<T, MachineError> + Send + 'static,
    ) -> Result<T, MachineError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || op(&inner)).await.map_err(|e| MachineError::Join(e.to_string()))?
    }
}

fn membership_of(applied: &RaftApplied) -> Result<StoredMembership<NodeId, NodeInfo>, CodecError> {
    let log_id = applied.membership_log_id.as_ref().map(codec::log_id_from_stored);
    let membership = match &applied.membership {
        Some(stored) => codec::membership_from_stored(stored.clone(), log_id.map_or(0, |id| id.index))?,
        None => Default::default(),
    };
    Ok(StoredMembership::new(log_id, membership))
}

fn storage_error(error: MachineError) -> StorageError {
    // The one place an operator learns why this node stopped: say it plainly, with the seq.
    if let MachineError::Replicated(ReplicatedError::Diverged { seq, .. } | ReplicatedError::Rewritten { seq }) = &error
    {
        tracing::error!(
            seq = *seq,
            %error,
            "this node's ledger diverges from the cluster's at seq {seq}: raft stopped on this node, which now takes \
             no writes and confirms no reads (/readyz 503, gRPC health NOT_SERVING); replace its data directory \
             with a copy from a healthy node (docs/cluster.md)"
        );
    } else {
        tracing::error!(%error, "this node's raft state machine failed: raft stops on this node");
    }
    StorageIOError::write_state_machine(AnyError::new(&error)).into()
}

impl Inner {
    /// Applies one entry; answers the head seq after it.
    fn apply_entry(&self, entry: Entry) -> Result<u64, MachineError> {
        let mut next = self.applied.lock().clone();
        next.applied = Some(codec::log_id_to_stored(&entry.log_id));
        let head = match entry.payload {
            EntryPayload::Normal(batch) => {
                if batch.version != RAFT_BATCH_VERSION {
                    return Err(MachineError::UnknownBatch(batch.version));
                }
                replicated::apply_batch(&self.store, &self.state, &batch.envelopes, Some(&next))?
            }
            EntryPayload::Blank => replicated::apply_batch(&self.store, &self.state, &[], Some(&next))?,
            EntryPayload::Membership(membership) => {
                next.membership_log_id = next.applied;
                next.membership = Some(codec::membership_to_stored(&membership));
                replicated::apply_batch(&self.store, &self.state, &[], Some(&next))?
            }
        };
        next.head_seq = head;
        *self.applied.lock() = next;
        self.head.send_if_modified(|seen| std::mem::replace(seen, head) != head);
        Ok(head)
    }

    /// The snapshot stream of the events 1..=head_seq.
    fn snapshot_data(&self, head_seq: u64) -> Result<Vec<u8>, MachineError> {
        let view = self.store.reader().snapshot().map_err(|e| MachineError::Read(e.to_string()))?;
        let mut data = Vec::new();
        data.extend_from_slice(SNAPSHOT_MAGIC);
        data.extend_from_slice(&head_seq.to_be_bytes());
        let mut from = 1;
        while from <= head_seq {
            let rows = view.envelopes(from..=head_seq, 4096).map_err(|e| MachineError::Read(e.to_string()))?;
            let Some((last, _)) = rows.last() else {
                return Err(MachineError::Read(format!("the ledger ends before event {from}")));
            };
            from = last + 1;
            for (_, bytes) in rows {
                let len =
                    u32::try_from(bytes.len()).map_err(|_| MachineError::Snapshot("an envelope over 4 GiB".into()))?;
                data.extend_from_slice(&len.to_be_bytes());
                data.extend_from_slice(&bytes);
            }
        }
        Ok(data)
    }
}

/// Splits a snapshot stream into its envelopes.
fn parse_snapshot(data: &[u8]) -> Result<Vec<Vec<u8>>, MachineError> {
    let bad = |what: &str| MachineError::Snapshot(what.to_owned());
    let rest =
        data.strip_prefix(SNAPSHOT_MAGIC.as_slice()).ok_or_else(|| bad("not a tokenledger raft snapshot (magic)"))?;
    let (count, mut rest) = rest.split_first_chunk::<8>().ok_or_else(|| bad("truncated before the count"))?;
    let count = u64::from_be_bytes(*count);
    let mut envelopes = Vec::with_capacity(usize::try_from(count.min(1 << 20)).unwrap_or(0));
    for _ in 0..count {
        let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(|| bad("truncated in a length"))?;
        let len = u32::from_be_bytes(*len) as usize;
        if tail.len() < len {
            return Err(bad("truncated in an envelope"));
        }
        let (envelope, tail) = tail.split_at(len);
        envelopes.push(envelope.to_vec());
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(bad("bytes after the last envelope"));
    }
    Ok(envelopes)
}

fn snapshot_of(meta: &RaftSnapshotMeta, data: Vec<u8>) -> Result<Snapshot<TypeConfig>, MachineError> {
    let covers = meta.covers.clone().unwrap_or_default();
    let meta = SnapshotMeta {
        last_log_id: covers.applied.as_ref().map(codec::log_id_from_stored),
        last_membership: membership_of(&covers)?,
        snapshot_id: meta.snapshot_id.clone(),
    };
    Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
}

impl RaftStateMachine<TypeConfig> for LedgerMachine {
    type SnapshotBuilder = LedgerMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership<NodeId, NodeInfo>), StorageError> {
        let applied = self.inner.applied.lock().clone();
        let membership = membership_of(&applied).map_err(|e| storage_error(e.into()))?;
        Ok((applied.applied.as_ref().map(codec::log_id_from_stored), membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        self.blocking(move |inner| {
            let mut replies = Vec::with_capacity(entries.len());
            for entry in entries {
                replies.push(Applied { head_seq: inner.apply_entry(entry)? });
            }
            Ok(replies)
        })
        .await
        .map_err(storage_error)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, NodeInfo>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let meta = meta.clone();
        let data = snapshot.into_inner();
        self.blocking(move |inner| {
            let envelopes = parse_snapshot(&data)?;
            let covers = RaftApplied {
                applied: meta.last_log_id.as_ref().map(codec::log_id_to_stored),
                membership_log_id: meta.last_membership.log_id().as_ref().map(codec::log_id_to_stored),
                membership: Some(codec::membership_to_stored(meta.last_membership.membership())),
                head_seq: envelopes.len() as u64,
            };
            // In pieces, so one transaction stays bounded; each piece records the snapshot's
            // applied id only at the end (a crash midway re-installs, skipping what it holds).
            for piece in envelopes.chunks(4096) {
                replicated::apply_batch(&inner.store, &inner.state, piece, None)?;
            }
            let head = inner.state.read().head.seq;
            if head != covers.head_seq {
                return Err(MachineError::Snapshot(format!(
                    "it covers events 1..={} but this node's ledger is at {head}",
                    covers.head_seq
                )));
            }
            inner.log.save_applied(&covers)?;
            inner
                .log
                .save_snapshot(&RaftSnapshotMeta { covers: Some(covers.clone()), snapshot_id: meta.snapshot_id })?;
            inner.head.send_replace(covers.head_seq);
            *inner.applied.lock() = covers;
            Ok(())
        })
        .await
        .map_err(storage_error)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        self.blocking(|inner| {
            let Some(meta) = inner.log.snapshot()? else { return Ok(None) };
            let head = meta.covers.as_ref().map_or(0, |c| c.head_seq);
            let data = inner.snapshot_data(head)?;
            Ok(Some(snapshot_of(&meta, data)?))
        })
        .await
        .map_err(storage_error)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for LedgerMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        self.blocking(|inner| {
            let covers = inner.applied.lock().clone();
            let snapshot_id = match &covers.applied {
                Some(id) => format!("{}-{}-{}", id.term, id.index, covers.head_seq),
                None => format!("none-{}", covers.head_seq),
            };
            let meta = RaftSnapshotMeta { covers: Some(covers.clone()), snapshot_id };
            let data = inner.snapshot_data(covers.head_seq)?;
            inner.log.save_snapshot(&meta)?;
            snapshot_of(&meta, data)
        })
        .await
        .map_err(storage_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_streams_parse_back_and_refuse_damage() {
        let envelopes = vec![b"one".to_vec(), Vec::new(), vec![7; 300]];
        let mut data = SNAPSHOT_MAGIC.to_vec();
        data.extend_from_slice(&3u64.to_be_bytes());
        for envelope in &envelopes {
            data.extend_from_slice(&(envelope.len() as u32).to_be_bytes());
            data.extend_from_slice(envelope);
        }
        assert_eq!(parse_snapshot(&data).unwrap(), envelopes);
        for cut in 0..data.len() {
            assert!(parse_snapshot(&data[..cut]).is_err(), "truncated at {cut}");
        }
        let mut longer = data.clone();
        longer.push(0);
        assert!(parse_snapshot(&longer).is_err());
        let mut wrong = data.clone();
        wrong[0] = b'X';
        assert!(parse_snapshot(&wrong).is_err());
    }
}
