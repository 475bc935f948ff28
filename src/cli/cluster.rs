//! `tokenledger cluster init|status|add-learner|promote|remove|transfer-leader`: the membership
//! of a cluster (SPEC 8, docs/cluster.md), through ClusterService with the admin credential.

use super::RemoteArgs;
use super::remote::{connect, describe};
use crate::proto::cluster_service_client::ClusterServiceClient;
use crate::proto::{
    AddLearnerRequest, ClusterStatus, GetClusterStatusRequest, InitClusterRequest, PromoteLearnerRequest,
    RemoveNodeRequest, TransferLeaderRequest,
};

#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// Form the cluster from the voters of the node's --peers (once, on one node).
    Init(ClusterOptions),
    /// Every member's id, address, role, and (asked of the leader) how far it is behind.
    Status(ClusterOptions),
    /// Add a non-voting learner: NODE_ID RAFT_ADDR (HOST:PORT of its Raft listener).
    AddLearner(LearnerArgs),
    /// Make a learner a voter.
    Promote(NodeArgs),
    /// Remove a voter or learner.
    Remove(NodeArgs),
    /// Hand the leadership to another voter (default: the one that holds the most of the log).
    TransferLeader(OptionalNodeArgs),
}

#[derive(clap::Args, Debug)]
pub struct ClusterOptions {
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct NodeArgs {
    /// The node's id
    #[arg(value_name = "NODE_ID", required_unless_present = "node_id")]
    pub id: Option<u64>,
    /// The node's id (instead of the positional NODE_ID)
    #[arg(long = "node-id", conflicts_with = "id")]
    pub node_id: Option<u64>,
    #[command(flatten)]
    pub options: ClusterOptions,
}

#[derive(clap::Args, Debug)]
pub struct OptionalNodeArgs {
    /// The voter to lead
    #[arg(value_name = "NODE_ID")]
    pub id: Option<u64>,
    /// The voter to lead (instead of the positional NODE_ID)
    #[arg(long = "node-id", conflicts_with = "id")]
    pub node_id: Option<u64>,
    #[command(flatten)]
    pub options: ClusterOptions,
}

#[derive(clap::Args, Debug)]
pub struct LearnerArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// The learner's Raft address, HOST:PORT
    #[arg(value_name = "RAFT_ADDR", required_unless_present = "raft_addr_flag")]
    pub raft_addr: Option<String>,
    /// The learner's Raft address (instead of the positional RAFT_ADDR)
    #[arg(long = "raft-addr", conflicts_with = "raft_addr")]
    pub raft_addr_flag: Option<String>,
}

fn status_json(status: &ClusterStatus) -> serde_json::Value {
    serde_json::json!({
        "node_id": status.node_id,
        "role": status.role,
        "term": status.term,
        "leader_id": status.leader_id,
        "applied_index": status.applied_index,
        "last_log_index": status.last_log_index,
        "applied_seq": status.applied_seq,
        "initialised": status.initialised,
        "members": status.members.iter().map(|m| serde_json::json!({
            "node_id": m.node_id,
            "raft_addr": m.raft_addr,
            "role": m.role,
            "voter": m.voter,
            "matched_index": m.matched_index,
            "lag": m.lag,
            "reachable": m.reachable,
            "term": m.term,
            "applied_seq": m.applied_seq,
        })).collect::<Vec<_>>(),
    })
}

fn print(status: &ClusterStatus, json: bool) {
    if json {
        println!("{}", status_json(status));
        return;
    }
    let leader = if status.leader_id == 0 { "none".to_owned() } else { status.leader_id.to_string() };
    println!(
        "node {}: {}, term {}, leader {leader}, applied index {} (ledger seq {}), last log index {}",
        status.node_id, status.role, status.term, status.applied_index, status.applied_seq, status.last_log_index
    );
    if !status.initialised {
        println!("not part of a cluster yet: run `tokenledger cluster init` against one node");
    }
    let leading = status.role == "leader";
    for member in &status.members {
        let kind = if member.voter { "voter" } else { "learner" };
        let own = if member.reachable {
            format!("term {} applied seq {}", member.term, member.applied_seq)
        } else {
            "unreachable".to_owned()
        };
        if leading {
            println!(
                "  {:>4}  {:<24} {:<9} {kind:<8} {own}, matched index {} lag {}",
                member.node_id, member.raft_addr, member.role, member.matched_index, member.lag
            );
        } else {
            println!("  {:>4}  {:<24} {:<9} {kind:<8} {own}", member.node_id, member.raft_addr, member.role);
        }
    }
}

pub async fn run(args: ClusterArgs) -> Result<(), String> {
    let options = match &args.command {
        ClusterCommand::Init(options) | ClusterCommand::Status(options) => options,
        ClusterCommand::AddLearner(learner) => &learner.node.options,
        ClusterCommand::Promote(node) | ClusterCommand::Remove(node) => &node.options,
        ClusterCommand::TransferLeader(node) => &node.options,
    };
    let (channel, auth) = connect(&options.remote).await?;
    let mut client = ClusterServiceClient::with_interceptor(channel, auth);
    let id = |node: &NodeArgs| node.id.or(node.node_id).ok_or_else(|| "give the node's id".to_owned());
    let answer = match &args.command {
        ClusterCommand::Init(_) => client.init_cluster(InitClusterRequest {}).await,
        ClusterCommand::Status(_) => client.get_cluster_status(GetClusterStatusRequest {}).await,
        ClusterCommand::AddLearner(learner) => {
            let node_id = id(&learner.node)?;
            let raft_addr = learner
                .raft_addr
                .clone()
                .or_else(|| learner.raft_addr_flag.clone())
                .ok_or_else(|| "give the learner's raft address".to_owned())?;
            client.add_learner(AddLearnerRequest { node_id, raft_addr }).await
        }
        ClusterCommand::Promote(node) => client.promote_learner(PromoteLearnerRequest { node_id: id(node)? }).await,
        ClusterCommand::Remove(node) => client.remove_node(RemoveNodeRequest { node_id: id(node)? }).await,
        ClusterCommand::TransferLeader(node) => {
            client.transfer_leader(TransferLeaderRequest { node_id: node.id.or(node.node_id).unwrap_or(0) }).await
        }
    };
    let status = answer.map_err(|s| describe(&s))?.into_inner();
    print(&status, options.json);
    Ok(())
}
