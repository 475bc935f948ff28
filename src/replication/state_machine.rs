//! openraft's state machine over a node's ledger: every committed batch is applied to the
//! node's own redb ledger and projections through [`crate::ledger::replicated`], on the leader
//! too, so every node holds the same events with the same hash chain.
//!
//! **Snapshots are the ledger range** (DESIGN.md "Beyond one machine"): a snapshot covers the
//! events 1..=head_seq, which never change once written, so nothing is copied when one is
//! built: the meta is recorded (`raft_meta` `snapshot`). When a node must be sent it, its
//! stream is written once per snapshot from the ledger to a file in the data directory
//! (`raft-snapshot-<id>.stream`, renamed into place when whole; earlier ones are removed), and
//! openraft reads its chunks from there; the receiver writes the chunks to a file it unlinks at
//! once (`raft-snapshot.receiving`, reached through its handle only, so an abandoned transfer
//! leaves nothing) and installs from it, a piece of events at a time. So a
//! snapshot of any size passes through a bounded amount of memory on both sides. Installing
//! applies its events like batches (the ones the node holds must be byte-identical), so a node
//! that catches up from a snapshot holds the whole audit history and rebuilds its projections
//! (and its index, whose keys come from them) on the way.
//!
//! Snapshot stream, version 1: `TLRAFTS1` (8 bytes), the event count (u64 big-endian), then each
//! envelope as its length (u32 big-endian) and its bytes, in seq order from 1.
//!
//! **Invariant:** a batch of an unknown version, an envelope that does not continue this node's
//! chain, or a snapshot that does not parse is a storage error: openraft stops this node, which
//! then serves nothing rather than a chain that is not the cluster's.

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageIOError, StoredMembership};
use parking_lot::{Mutex, RwLock};

use super::codec::{self, CodecError};
use super::{
    Applied, Entry, LogId, NodeId, NodeInfo, RAFT_BATCH_VERSION, SnapshotData, StorageError, StorageTimes, TypeConfig,
};
use crate::domain::State;
use crate::ledger::replicated::{self, ReplicatedError};
use crate::ledger::{RaftLog, RaftLogError, Store};
use crate::proto::ledger::{RaftApplied, RaftSnapshotMeta};

const SNAPSHOT_MAGIC: &[u8; 8] = b"TLRAFTS1";
/// The longest envelope a snapshot stream may hold (a bulk import's event is a few MiB).
const ENVELOPE_MAX: u32 = 256 << 20;
/// Events applied in one transaction while a snapshot is installed.
const INSTALL_PIECE: usize = 4096;
/// Where a snapshot being received is written.
const RECEIVING_FILE: &str = "raft-snapshot.receiving";
const STREAM_PREFIX: &str = "raft-snapshot-";
const STREAM_SUFFIX: &str = ".stream";

/// The state machine of one node: its ledger, its projections, and what it has applied.
#[derive(Clone)]
pub struct LedgerMachine {
    inner: Arc<Inner>,
    /// Where applies' times are counted.
    times: Arc<StorageTimes>,
}

struct Inner {
    store: Store,
    state: Arc<RwLock<State>>,
    log: RaftLog,
    /// What has been applied (as recorded in `raft_meta`), read by snapshot builders.
    applied: Mutex<RaftApplied>,
    /// The ledger head after each applied entry: live event streams follow it on every node.
    head: tokio::sync::watch::Sender<u64>,
    /// The node's data directory: snapshot streams sent and received are files there.
    dir: PathBuf,
    /// One stream file written at a time (several followers may ask for the same snapshot).
    streaming: Mutex<()>,
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
    #[error("snapshot file {path}: {error}")]
    File { path: PathBuf, error: std::io::Error },
}

impl LedgerMachine {
    /// The state machine over `store` (opened with [`replicated::open_replica`]) and its
    /// projections `state`; what it applied is read from the store's raft tables. Snapshot
    /// streams are written to and received in `dir` (the node's data directory).
    pub fn new(store: Store, state: Arc<RwLock<State>>, dir: &Path) -> Result<Self, RaftLogError> {
        let log = store.raft_log()?;
        let applied = log.applied()?.unwrap_or_default();
        // A copy left by a build that kept it on disk (received copies are unlinked now).
        let _ = std::fs::remove_file(dir.join(RECEIVING_FILE));
        let head = tokio::sync::watch::Sender::new(state.read().head.seq);
        let (dir, streaming) = (dir.to_path_buf(), Mutex::new(()));
        let inner = Arc::new(Inner { store, state, log, applied: Mutex::new(applied), head, dir, streaming });
        Ok(Self { inner, times: Arc::default() })
    }

    /// This machine, counting its applies in `times` (shared with the log store's).
    pub fn with_times(mut self, times: Arc<StorageTimes>) -> Self {
        self.times = times;
        self
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
    /// Applies one entry; answers the head seq after it, and whether the entry was skipped.
    fn apply_entry(&self, entry: Entry) -> Result<Applied, MachineError> {
        let mut next = self.applied.lock().clone();
        next.applied = Some(codec::log_id_to_stored(&entry.log_id));
        let mut skipped = false;
        let head = match entry.payload {
            EntryPayload::Normal(batch) => {
                if batch.version != RAFT_BATCH_VERSION {
                    return Err(MachineError::UnknownBatch(batch.version));
                }
                let term = entry.log_id.leader_id.term;
                if batch.decided_term != 0 && batch.decided_term != term {
                    // Decided against the projections of an earlier term, it landed after
                    // another leader's entries may have moved the chain: applying it could
                    // fork the chain, so every node skips it alike (see `RaftBatch`).
                    tracing::warn!(
                        index = entry.log_id.index,
                        term,
                        decided_term = batch.decided_term,
                        "skipped a raft batch decided in an earlier term; its callers retry"
                    );
                    skipped = true;
                    replicated::apply_batch(&self.store, &self.state, &[], Some(&next))?
                } else {
                    replicated::apply_batch(&self.store, &self.state, &batch.envelopes, Some(&next))?
                }
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
        Ok(Applied { head_seq: head, skipped })
    }

    /// The stream file of the snapshot `meta` (events 1..=head_seq), written from the ledger
    /// if it is not there yet.
    fn stream_file(&self, meta: &RaftSnapshotMeta, head_seq: u64) -> Result<PathBuf, MachineError> {
        let _one = self.streaming.lock();
        let id: String = meta.snapshot_id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
        let path = self.dir.join(format!("{STREAM_PREFIX}{id}{STREAM_SUFFIX}"));
        if path.exists() {
            return Ok(path);
        }
        remove_streams(&self.dir);
        let temporary = path.with_extension("tmp");
        let file_error = |error| MachineError::File { path: temporary.clone(), error };
        let file = std::fs::File::create(&temporary).map_err(file_error)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        self.write_stream(&mut out, head_seq).inspect_err(|_| {
            let _ = std::fs::remove_file(&temporary);
        })?;
        let file = out.into_inner().map_err(|e| file_error(e.into_error()))?;
        file.sync_all().map_err(file_error)?;
        std::fs::rename(&temporary, &path).map_err(file_error)?;
        Ok(path)
    }

    /// Writes the snapshot stream of the events 1..=head_seq to `out`, a page at a time.
    fn write_stream(&self, out: &mut impl Write, head_seq: u64) -> Result<(), MachineError> {
        let io = |error| MachineError::File { path: self.dir.clone(), error };
        let view = self.store.reader().snapshot().map_err(|e| MachineError::Read(e.to_string()))?;
        out.write_all(SNAPSHOT_MAGIC).map_err(io)?;
        out.write_all(&head_seq.to_be_bytes()).map_err(io)?;
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
                out.write_all(&len.to_be_bytes()).map_err(io)?;
                out.write_all(&bytes).map_err(io)?;
            }
        }
        out.flush().map_err(io)
    }

    /// Installs the snapshot stream read from `stream` (see [`RaftStateMachine::install_snapshot`]).
    fn install(&self, meta: &SnapshotMeta<NodeId, NodeInfo>, stream: impl Read) -> Result<(), MachineError> {
        let mut envelopes = Envelopes::new(stream)?;
        let covers = RaftApplied {
            applied: meta.last_log_id.as_ref().map(codec::log_id_to_stored),
            membership_log_id: meta.last_membership.log_id().as_ref().map(codec::log_id_to_stored),
            membership: Some(codec::membership_to_stored(meta.last_membership.membership())),
            head_seq: envelopes.count,
        };
        // In pieces, so one transaction and the memory stay bounded; the snapshot's applied id
        // is recorded only at the end (a crash midway installs again, skipping what it holds).
        let mut piece = Vec::with_capacity(INSTALL_PIECE);
        loop {
            piece.clear();
            while piece.len() < INSTALL_PIECE
                && let Some(envelope) = envelopes.next_envelope()?
            {
                piece.push(envelope);
            }
            if piece.is_empty() {
                break;
            }
            replicated::apply_range(&self.store, &self.state, &piece)?;
        }
        envelopes.finish()?;
        let head = self.state.read().head.seq;
        if head != covers.head_seq {
            return Err(MachineError::Snapshot(format!(
                "it covers events 1..={} but this node's ledger is at {head}",
                covers.head_seq
            )));
        }
        self.log.save_applied(&covers)?;
        self.log
            .save_snapshot(&RaftSnapshotMeta { covers: Some(covers.clone()), snapshot_id: meta.snapshot_id.clone() })?;
        self.head.send_replace(covers.head_seq);
        *self.applied.lock() = covers;
        Ok(())
    }
}

/// Removes every snapshot stream file in `dir` (a new snapshot replaces them).
fn remove_streams(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(STREAM_PREFIX) && (name.ends_with(STREAM_SUFFIX) || name.ends_with(".tmp")) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Reads a snapshot stream's envelopes one at a time.
struct Envelopes<R> {
    stream: R,
    count: u64,
    read: u64,
}

impl<R: Read> Envelopes<R> {
    fn new(mut stream: R) -> Result<Self, MachineError> {
        let mut magic = [0u8; 8];
        read_exact(&mut stream, &mut magic, "not a tokenledger raft snapshot (magic)")?;
        if &magic != SNAPSHOT_MAGIC {
            return Err(MachineError::Snapshot("not a tokenledger raft snapshot (magic)".into()));
        }
        let mut count = [0u8; 8];
        read_exact(&mut stream, &mut count, "truncated before the count")?;
        Ok(Self { stream, count: u64::from_be_bytes(count), read: 0 })
    }

    fn next_envelope(&mut self) -> Result<Option<Vec<u8>>, MachineError> {
        if self.read == self.count {
            return Ok(None);
        }
        let mut len = [0u8; 4];
        read_exact(&mut self.stream, &mut len, "truncated in a length")?;
        let len = u32::from_be_bytes(len);
        if len > ENVELOPE_MAX {
            return Err(MachineError::Snapshot(format!("an envelope of {len} bytes (at most {ENVELOPE_MAX})")));
        }
        let mut envelope = vec![0u8; len as usize];
        read_exact(&mut self.stream, &mut envelope, "truncated in an envelope")?;
        self.read += 1;
        Ok(Some(envelope))
    }

    /// Checks that the stream ends after the last envelope.
    fn finish(mut self) -> Result<(), MachineError> {
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => Ok(()),
            Ok(_) => Err(MachineError::Snapshot("bytes after the last envelope".into())),
            Err(e) => Err(MachineError::Snapshot(format!("cannot read the snapshot: {e}"))),
        }
    }
}

fn read_exact(stream: &mut impl Read, buf: &mut [u8], truncated: &str) -> Result<(), MachineError> {
    stream.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => MachineError::Snapshot(truncated.to_owned()),
        _ => MachineError::Snapshot(format!("cannot read the snapshot: {e}")),
    })
}

fn snapshot_of(meta: &RaftSnapshotMeta, data: SnapshotData) -> Result<Snapshot<TypeConfig>, MachineError> {
    let covers = meta.covers.clone().unwrap_or_default();
    let meta = SnapshotMeta {
        last_log_id: covers.applied.as_ref().map(codec::log_id_from_stored),
        last_membership: membership_of(&covers)?,
        snapshot_id: meta.snapshot_id.clone(),
    };
    Ok(Snapshot { meta, snapshot: Box::new(data) })
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
        let started = std::time::Instant::now();
        let entries: Vec<Entry> = entries.into_iter().collect();
        let replies = self
            .blocking(move |inner| {
                let mut replies = Vec::with_capacity(entries.len());
                for entry in entries {
                    replies.push(inner.apply_entry(entry)?);
                }
                Ok(replies)
            })
            .await
            .map_err(storage_error)?;
        self.times.applied(started);
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, StorageError> {
        let path = self.inner.dir.join(RECEIVING_FILE);
        let opened = tokio::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).await;
        match opened {
            Ok(file) => {
                // The copy is reached through its handle only (chunks written, install read):
                // unlinked at once, its space goes back when openraft drops it, installed or
                // abandoned (a leader that stops sending, a newer snapshot, a restart), so a
                // transfer never leaves a file the size of the ledger behind.
                if let Err(error) = tokio::fs::remove_file(&path).await {
                    tracing::warn!(%error, path = %path.display(), "could not unlink the snapshot being received");
                }
                Ok(Box::new(SnapshotData::File(file)))
            }
            Err(error) => Err(storage_error(MachineError::File { path, error })),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, NodeInfo>,
        snapshot: Box<SnapshotData>,
    ) -> Result<(), StorageError> {
        let meta = meta.clone();
        let path = self.inner.dir.join(RECEIVING_FILE);
        let stream = snapshot.into_reader().await.map_err(|error| storage_error(MachineError::File { path, error }))?;
        // Installed or refused (a refusal stops Raft here), the received copy goes with `stream`.
        let installed = self.blocking(move |inner| inner.install(&meta, stream)).await;
        installed.map_err(storage_error)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let path = self
            .blocking(|inner| {
                let Some(meta) = inner.log.snapshot()? else { return Ok(None) };
                let head = meta.covers.as_ref().map_or(0, |c| c.head_seq);
                Ok(Some((inner.stream_file(&meta, head)?, meta)))
            })
            .await
            .map_err(storage_error)?;
        let Some((path, meta)) = path else { return Ok(None) };
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|error| storage_error(MachineError::File { path: path.clone(), error }))?;
        snapshot_of(&meta, SnapshotData::File(file)).map(Some).map_err(storage_error)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for LedgerMachine {
    /// Records what the snapshot covers; its stream is written only when a node must be sent
    /// it ([`RaftStateMachine::get_current_snapshot`]). openraft reads only the meta of what
    /// this answers, so its data is empty.
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        self.blocking(|inner| {
            let covers = inner.applied.lock().clone();
            let snapshot_id = match &covers.applied {
                Some(id) => format!("{}-{}-{}", id.term, id.index, covers.head_seq),
                None => format!("none-{}", covers.head_seq),
            };
            let meta = RaftSnapshotMeta { covers: Some(covers.clone()), snapshot_id };
            inner.log.save_snapshot(&meta)?;
            snapshot_of(&meta, SnapshotData::memory(Vec::new()))
        })
        .await
        .map_err(storage_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(data: &[u8]) -> Result<Vec<Vec<u8>>, MachineError> {
        let mut envelopes = Envelopes::new(data)?;
        let mut out = Vec::new();
        while let Some(envelope) = envelopes.next_envelope()? {
            out.push(envelope);
        }
        envelopes.finish()?;
        Ok(out)
    }

    #[test]
    fn snapshot_streams_parse_back_and_refuse_damage() {
        let envelopes = vec![b"one".to_vec(), Vec::new(), vec![7; 300]];
        let mut data = SNAPSHOT_MAGIC.to_vec();
        data.extend_from_slice(&3u64.to_be_bytes());
        for envelope in &envelopes {
            data.extend_from_slice(&(envelope.len() as u32).to_be_bytes());
            data.extend_from_slice(envelope);
        }
        assert_eq!(parse(&data).unwrap(), envelopes);
        for cut in 0..data.len() {
            assert!(parse(&data[..cut]).is_err(), "truncated at {cut}");
        }
        let mut longer = data.clone();
        longer.push(0);
        assert!(parse(&longer).is_err());
        let mut wrong = data.clone();
        wrong[0] = b'X';
        assert!(parse(&wrong).is_err());
    }
}
