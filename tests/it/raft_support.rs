//! What the Raft log tests need besides the log store: a minimal in-memory state machine (the
//! real one, the ledger and its projections, comes with the cluster and will go through the same
//! suite), and a network for single-node Raft instances that never send anything.

use std::sync::Arc;

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, EntryPayload, RaftNetwork, RaftNetworkFactory, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageIOError, StoredMembership,
};
use parking_lot::Mutex;
use tokenledger::replication::{
    Applied, Entry, LogId, NodeId, NodeInfo, RAFT_BATCH_VERSION, SnapshotData, StorageError, TypeConfig,
};

/// A state machine whose state is the number of envelopes applied; its snapshot is that number
/// (8 bytes, big-endian), with the applied log id and membership in the snapshot's meta.
#[derive(Clone, Default)]
pub struct MemStateMachine(Arc<Mutex<Machine>>);

#[derive(Default)]
struct Machine {
    applied: Option<LogId>,
    membership: StoredMembership<NodeId, NodeInfo>,
    head_seq: u64,
    current: Option<(SnapshotMeta<NodeId, NodeInfo>, Vec<u8>)>,
    snapshots_built: u64,
}

impl MemStateMachine {
    pub fn head_seq(&self) -> u64 {
        self.0.lock().head_seq
    }
}

impl RaftStateMachine<TypeConfig> for MemStateMachine {
    type SnapshotBuilder = MemStateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership<NodeId, NodeInfo>), StorageError> {
        let machine = self.0.lock();
        Ok((machine.applied, machine.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut machine = self.0.lock();
        let mut replies = Vec::new();
        for entry in entries {
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(batch) => {
                    if batch.version != RAFT_BATCH_VERSION {
                        let problem = AnyError::error(format!("batch version {} is unknown", batch.version));
                        return Err(StorageIOError::apply(entry.log_id, problem).into());
                    }
                    machine.head_seq += batch.envelopes.len() as u64;
                }
                EntryPayload::Membership(membership) => {
                    machine.membership = StoredMembership::new(Some(entry.log_id), membership);
                }
            }
            machine.applied = Some(entry.log_id);
            replies.push(Applied { head_seq: machine.head_seq, skipped: false });
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, StorageError> {
        Ok(Box::new(SnapshotData::memory(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, NodeInfo>,
        snapshot: Box<SnapshotData>,
    ) -> Result<(), StorageError> {
        let mut data = Vec::new();
        let read = snapshot.into_reader().await.and_then(|mut r| std::io::Read::read_to_end(&mut r, &mut data));
        read.map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), AnyError::new(&e)))?;
        let head_seq = data.as_slice().try_into().map(u64::from_be_bytes).map_err(|_| {
            StorageIOError::write_snapshot(Some(meta.signature()), AnyError::error("snapshot is not 8 bytes"))
        })?;
        let mut machine = self.0.lock();
        machine.applied = meta.last_log_id;
        machine.membership = meta.last_membership.clone();
        machine.head_seq = head_seq;
        machine.current = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let machine = self.0.lock();
        Ok(machine.current.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(SnapshotData::memory(data.clone())),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for MemStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let mut machine = self.0.lock();
        machine.snapshots_built += 1;
        let snapshot_id = match machine.applied {
            Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, machine.snapshots_built),
            None => format!("none-{}", machine.snapshots_built),
        };
        let meta =
            SnapshotMeta { last_log_id: machine.applied, last_membership: machine.membership.clone(), snapshot_id };
        let data = machine.head_seq.to_be_bytes().to_vec();
        machine.current = Some((meta.clone(), data.clone()));
        Ok(Snapshot { meta, snapshot: Box::new(SnapshotData::memory(data)) })
    }
}

/// The network of a single-node cluster: there is nobody to reach.
pub struct NoPeers;

impl RaftNetworkFactory<TypeConfig> for NoPeers {
    type Network = NoPeers;

    async fn new_client(&mut self, _target: NodeId, _node: &NodeInfo) -> Self::Network {
        NoPeers
    }
}

fn unreachable<E: std::error::Error>() -> RPCError<NodeId, NodeInfo, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other("a single-node test cluster has no peers")))
}

impl RaftNetwork<TypeConfig> for NoPeers {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        Err(unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>>
    {
        Err(unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        Err(unreachable())
    }
}
