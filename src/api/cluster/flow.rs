//! ClusterService's flow: forming the cluster, its status, and membership changes, asked of this
//! node's Raft. Membership changes need the leader; a follower names it in its refusal.

use std::collections::BTreeSet;

use crate::api::app::App;
pub use crate::api::error::ClusterError;
use crate::proto as api;
use crate::replication::NodeInfo;
use crate::replication::node::{ClusterNode, Role};

fn node(app: &App) -> Result<&ClusterNode, ClusterError> {
    app.cluster.as_deref().ok_or(ClusterError::NotClustered)
}

/// What this node knows of the cluster, with each other member's own term and applied seq
/// (asked over the Raft listener, at most a second each, all at once).
pub async fn status(app: &App) -> Result<api::ClusterStatus, ClusterError> {
    let node = node(app)?;
    let view = node.view();
    let applied_seq = app.state.read().head.seq;
    let mut asked = tokio::task::JoinSet::new();
    for (id, info, _) in view.members.iter().filter(|(id, _, _)| *id != view.id) {
        let (id, info, network) = (*id, info.clone(), node.network.clone());
        asked.spawn(async move { (id, network.node_status(id, &info, std::time::Duration::from_secs(1)).await.ok()) });
    }
    let mut reports = std::collections::BTreeMap::new();
    while let Some(Ok((id, report))) = asked.join_next().await {
        reports.insert(id, report);
    }
    let leading = view.role == Role::Leader;
    let members = view
        .members
        .iter()
        .map(|(id, info, voter)| {
            let role = if view.leader == Some(*id) {
                "leader"
            } else if *voter {
                "follower"
            } else {
                "learner"
            };
            let matched = if *id == view.id { view.last_log_index } else { view.matched.get(id).copied().unwrap_or(0) };
            let (reachable, term, member_seq) = if *id == view.id {
                (true, view.term, applied_seq)
            } else {
                match reports.get(id).and_then(Option::as_ref) {
                    Some(report) => (true, report.term, report.applied_seq),
                    None => (false, 0, 0),
                }
            };
            api::ClusterMember {
                node_id: *id,
                raft_addr: info.raft_addr.clone(),
                role: role.to_owned(),
                voter: *voter,
                matched_index: if leading { matched } else { 0 },
                lag: if leading { view.last_log_index.saturating_sub(matched) } else { 0 },
                reachable,
                term,
                applied_seq: member_seq,
            }
        })
        .collect();
    Ok(api::ClusterStatus {
        node_id: view.id,
        role: view.role.name().to_owned(),
        term: view.term,
        leader_id: view.leader.unwrap_or(0),
        applied_index: view.applied_index,
        last_log_index: view.last_log_index,
        applied_seq,
        initialised: view.initialised,
        members,
    })
}

/// Forms the cluster from this node's `--peers`, then waits (a few election timeouts at most)
/// until a leader is known, so the answer shows it.
pub async fn init(app: &App) -> Result<api::ClusterStatus, ClusterError> {
    let node = node(app)?;
    if node.view().initialised {
        return Err(ClusterError::AlreadyInitialised(
            "this node already belongs to a cluster (cluster init runs once, on one node)".to_owned(),
        ));
    }
    if !node.voters.contains_key(&node.id) {
        return Err(ClusterError::Invalid(format!(
            "node {} is not among its own --peers: run cluster init on a voter (a learner is added by the leader)",
            node.id
        )));
    }
    node.raft.initialize(node.voters.clone()).await.map_err(|e| ClusterError::Failed(format!("cluster init: {e}")))?;
    let _ = node
        .raft
        .wait(Some(node.transfer_timeout))
        .metrics(|m| m.current_leader.is_some(), "a leader after cluster init")
        .await;
    status(app).await
}

fn leader_only(node: &ClusterNode) -> Result<(), ClusterError> {
    let view = node.view();
    if view.role == Role::Leader {
        return Ok(());
    }
    Err(ClusterError::NotLeader(match view.leader {
        Some(leader) => {
            let addr = view.members.iter().find(|(id, _, _)| *id == leader).map(|(_, n, _)| n.raft_addr.clone());
            format!("node {leader} leads (raft address {}); ask it", addr.unwrap_or_default())
        }
        None => "no leader is known; retry when one is elected".to_owned(),
    }))
}

pub async fn add_learner(app: &App, request: api::AddLearnerRequest) -> Result<api::ClusterStatus, ClusterError> {
    let node = node(app)?;
    if request.node_id == 0 {
        return Err(ClusterError::Invalid("node_id must be at least 1".to_owned()));
    }
    crate::replication::peers::parse_peers(&format!("{}={}", request.node_id, request.raft_addr))
        .map_err(|e| ClusterError::Invalid(e.to_string().replace("--peers entry", "learner")))?;
    leader_only(node)?;
    if node.view().members.iter().any(|(id, _, _)| *id == request.node_id) {
        return Err(ClusterError::Invalid(format!("node {} is already a member", request.node_id)));
    }
    let info = NodeInfo { raft_addr: request.raft_addr };
    // Blocking: the answer comes once the learner has caught up with the log.
    node.raft
        .add_learner(request.node_id, info, true)
        .await
        .map_err(|e| ClusterError::Failed(format!("add learner {}: {e}", request.node_id)))?;
    status(app).await
}

pub async fn promote(app: &App, node_id: u64) -> Result<api::ClusterStatus, ClusterError> {
    let node = node(app)?;
    leader_only(node)?;
    let view = node.view();
    match view.members.iter().find(|(id, _, _)| *id == node_id) {
        None => {
            return Err(ClusterError::Invalid(format!("node {node_id} is not a member; add it as a learner first")));
        }
        Some((_, _, true)) => return Err(ClusterError::Invalid(format!("node {node_id} is already a voter"))),
        Some(_) => {}
    }
    let mut voters: BTreeSet<u64> = view.members.iter().filter(|(_, _, voter)| *voter).map(|(id, _, _)| *id).collect();
    voters.insert(node_id);
    node.raft
        .change_membership(voters, false)
        .await
        .map_err(|e| ClusterError::Failed(format!("promote {node_id}: {e}")))?;
    status(app).await
}

pub async fn remove(app: &App, node_id: u64) -> Result<api::ClusterStatus, ClusterError> {
    let node = node(app)?;
    leader_only(node)?;
    let view = node.view();
    let Some((_, _, voter)) = view.members.iter().find(|(id, _, _)| *id == node_id) else {
        return Err(ClusterError::Invalid(format!("node {node_id} is not a member")));
    };
    let result = if *voter {
        let voters: BTreeSet<u64> =
            view.members.iter().filter(|(id, _, voter)| *voter && *id != node_id).map(|(id, _, _)| *id).collect();
        if voters.is_empty() {
            return Err(ClusterError::Invalid("the last voter cannot be removed".to_owned()));
        }
        node.raft.change_membership(voters, false).await.map(|_| ())
    } else {
        node.raft
            .change_membership(openraft::ChangeMembers::RemoveNodes(BTreeSet::from([node_id])), false)
            .await
            .map(|_| ())
    };
    result.map_err(|e| ClusterError::Failed(format!("remove {node_id}: {e}")))?;
    status(app).await
}

pub async fn transfer_leader(app: &App, node_id: u64) -> Result<api::ClusterStatus, ClusterError> {
    let node = node(app)?;
    leader_only(node)?;
    let view = node.view();
    let target = match node_id {
        0 => {
            view.best_successor().ok_or_else(|| ClusterError::Invalid("there is no other voter to lead".to_owned()))?
        }
        id => id,
    };
    crate::replication::transfer::transfer_leadership(&node.raft, &node.network, target, node.transfer_timeout)
        .await
        .map_err(|e| ClusterError::Failed(format!("transfer to {target}: {e}")))?;
    status(app).await
}
