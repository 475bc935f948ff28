//! openraft's log entries, log ids, votes and memberships ⇄ the stored protobuf of `raft.proto`.
//! The same encoding is meant for the wire, so a node of another build reads what it is sent
//! exactly as what it stores. Decoding is strict: anything an encoder of this format could not
//! have produced is an error, never silently repaired.

use std::collections::{BTreeMap, BTreeSet};

use openraft::{CommittedLeaderId, EntryPayload};

use super::{Entry, LogId, Membership, NodeId, NodeInfo, Vote};
use crate::proto::ledger::raft_entry::Payload;
use crate::proto::ledger::{RaftBlank, RaftEntry, RaftLogId, RaftMembership, RaftNode, RaftVote, RaftVoterSet};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("raft entry without a log id")]
    MissingLogId,
    #[error("raft entry {index} has no payload this build knows")]
    MissingPayload { index: u64 },
    #[error("raft entry {index}: membership voter ids are not strictly ascending")]
    UnorderedVoters { index: u64 },
    #[error("raft entry {index}: membership node ids are not strictly ascending")]
    UnorderedNodes { index: u64 },
    #[error("raft entry {index}: membership voter {voter} has no node")]
    VoterWithoutNode { index: u64, voter: NodeId },
}

pub fn log_id_to_stored(id: &LogId) -> RaftLogId {
    RaftLogId { term: id.leader_id.term, leader_node_id: id.leader_id.node_id, index: id.index }
}

pub fn log_id_from_stored(id: &RaftLogId) -> LogId {
    LogId::new(CommittedLeaderId::new(id.term, id.leader_node_id), id.index)
}

pub fn vote_to_stored(vote: &Vote) -> RaftVote {
    RaftVote { term: vote.leader_id.term, node_id: vote.leader_id.node_id, committed: vote.committed }
}

pub fn vote_from_stored(vote: &RaftVote) -> Vote {
    let mut decoded = Vote::new(vote.term, vote.node_id);
    if vote.committed {
        decoded.commit();
    }
    decoded
}

/// Encodes an entry, moving its batch (no copy of the envelopes).
pub fn entry_to_stored(entry: Entry) -> RaftEntry {
    let payload = match entry.payload {
        EntryPayload::Blank => Payload::Blank(RaftBlank {}),
        EntryPayload::Normal(batch) => Payload::Batch(batch),
        EntryPayload::Membership(membership) => Payload::Membership(membership_to_stored(&membership)),
    };
    RaftEntry { log_id: Some(log_id_to_stored(&entry.log_id)), payload: Some(payload) }
}

pub fn entry_from_stored(stored: RaftEntry) -> Result<Entry, CodecError> {
    let log_id = log_id_from_stored(&stored.log_id.ok_or(CodecError::MissingLogId)?);
    let index = log_id.index;
    let payload = match stored.payload.ok_or(CodecError::MissingPayload { index })? {
        Payload::Blank(RaftBlank {}) => EntryPayload::Blank,
        Payload::Batch(batch) => EntryPayload::Normal(batch),
        Payload::Membership(membership) => EntryPayload::Membership(membership_from_stored(membership, index)?),
    };
    Ok(Entry { log_id, payload })
}

pub fn membership_to_stored(membership: &Membership) -> RaftMembership {
    RaftMembership {
        configs: membership
            .get_joint_config()
            .iter()
            .map(|voters| RaftVoterSet { voter_ids: voters.iter().copied().collect() })
            .collect(),
        nodes: membership
            .nodes()
            .map(|(id, node)| RaftNode { node_id: *id, raft_addr: node.raft_addr.clone() })
            .collect(),
    }
}

/// Decodes a membership of entry `index`. Voter sets and nodes must be as the encoder writes
/// them (ascending, every voter with its node), so the result encodes back to the same bytes.
pub fn membership_from_stored(stored: RaftMembership, index: u64) -> Result<Membership, CodecError> {
    let mut configs = Vec::with_capacity(stored.configs.len());
    for set in stored.configs {
        if !set.voter_ids.is_sorted_by(|a, b| a < b) {
            return Err(CodecError::UnorderedVoters { index });
        }
        configs.push(set.voter_ids.into_iter().collect::<BTreeSet<NodeId>>());
    }
    if !stored.nodes.is_sorted_by(|a, b| a.node_id < b.node_id) {
        return Err(CodecError::UnorderedNodes { index });
    }
    let nodes: BTreeMap<NodeId, NodeInfo> =
        stored.nodes.into_iter().map(|node| (node.node_id, NodeInfo { raft_addr: node.raft_addr })).collect();
    if let Some(voter) = configs.iter().flatten().find(|voter| !nodes.contains_key(voter)) {
        return Err(CodecError::VoterWithoutNode { index, voter: *voter });
    }
    Ok(Membership::new(configs, nodes))
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use openraft::entry::RaftPayload as _;

    use super::*;
    use crate::proto::ledger::RaftBatch;

    fn node(addr: &str) -> NodeInfo {
        NodeInfo { raft_addr: addr.to_owned() }
    }

    fn round_trip(entry: Entry) -> Entry {
        let bytes = entry_to_stored(entry).encode_to_vec();
        entry_from_stored(RaftEntry::decode(bytes.as_slice()).unwrap()).unwrap()
    }

    #[test]
    fn entries_round_trip_exactly() {
        let log_id = LogId::new(CommittedLeaderId::new(7, 3), 42);
        let joint = Membership::new(
            vec![BTreeSet::from([1, 2, 3]), BTreeSet::from([2, 3, 4])],
            BTreeMap::from([(1, node("a:1")), (2, node("b:2")), (3, node("c:3")), (4, node("d:4")), (9, node("l:9"))]),
        );
        let batch =
            RaftBatch { decided_term: 0, version: 1, envelopes: vec![b"one".to_vec(), Vec::new(), vec![0; 300]] };
        for payload in [
            EntryPayload::Blank,
            EntryPayload::Normal(batch),
            EntryPayload::Membership(joint.clone()),
            EntryPayload::Membership(Membership::default()),
        ] {
            let entry = Entry { log_id, payload };
            assert_eq!(round_trip(entry.clone()), entry);
        }
        let learners: Vec<_> = round_trip(Entry { log_id, payload: EntryPayload::Membership(joint) })
            .payload
            .get_membership()
            .map(|m| m.learner_ids().collect())
            .unwrap();
        assert_eq!(learners, [9]);
    }

    #[test]
    fn votes_round_trip_exactly() {
        for vote in [Vote::default(), Vote::new(5, 2), Vote::new_committed(u64::MAX, 9)] {
            assert_eq!(vote_from_stored(&vote_to_stored(&vote)), vote);
        }
    }

    #[test]
    fn decoding_refuses_what_the_encoder_never_writes() {
        let log_id = Some(RaftLogId { term: 1, leader_node_id: 1, index: 5 });
        assert_eq!(
            entry_from_stored(RaftEntry { log_id, payload: None }),
            Err(CodecError::MissingPayload { index: 5 })
        );
        assert_eq!(entry_from_stored(RaftEntry { log_id: None, payload: None }), Err(CodecError::MissingLogId));
        let membership = |voters: Vec<u64>, nodes: Vec<u64>| RaftMembership {
            configs: vec![RaftVoterSet { voter_ids: voters }],
            nodes: nodes.into_iter().map(|node_id| RaftNode { node_id, raft_addr: String::new() }).collect(),
        };
        assert_eq!(
            membership_from_stored(membership(vec![2, 1], vec![1, 2]), 5),
            Err(CodecError::UnorderedVoters { index: 5 })
        );
        assert_eq!(
            membership_from_stored(membership(vec![1, 1], vec![1]), 5),
            Err(CodecError::UnorderedVoters { index: 5 })
        );
        assert_eq!(
            membership_from_stored(membership(vec![1], vec![2, 1]), 5),
            Err(CodecError::UnorderedNodes { index: 5 })
        );
        assert_eq!(
            membership_from_stored(membership(vec![1, 3], vec![1]), 5),
            Err(CodecError::VoterWithoutNode { index: 5, voter: 3 })
        );
        assert!(membership_from_stored(membership(vec![1, 3], vec![1, 3]), 5).is_ok());
    }
}
