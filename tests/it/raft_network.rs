//! The Raft network over real gRPC on loopback: in-process nodes, each with its own redb ledger
//! file and raft log store, electing, replicating, failing over, catching a learner up from a
//! snapshot after the log was purged, and refusing callers with other key files or a wrong
//! target. (The state machine is the test one of `raft_support`; the ledger's own comes with the
//! cluster.)

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::RaftStateMachine;
use openraft::{Config, Raft, ServerState, SnapshotPolicy};
use tokenledger::ledger::{self, Store};
use tokenledger::proto::cluster::VoteRequest;
use tokenledger::proto::cluster::raft_service_client::RaftServiceClient;
use tokenledger::proto::ledger::{RaftBatch, RaftVote};
use tokenledger::replication::network::{ClusterCredential, Network, RaftRpc, WIRE_VERSION};
use tokenledger::replication::read_index::{ReadIndex, ReadIndexError};
use tokenledger::replication::transfer::{TransferError, transfer_leadership};
use tokenledger::replication::{LogStore, NodeId, NodeInfo, RAFT_BATCH_VERSION, TypeConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::raft_support::MemStateMachine;

pub const WAIT: Duration = Duration::from_secs(20);

pub fn config(snapshot_every: u64) -> Arc<Config> {
    let config = Config {
        cluster_name: "test".into(),
        heartbeat_interval: 100,
        election_timeout_min: 500,
        election_timeout_max: 1_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(snapshot_every),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..Config::default()
    };
    Arc::new(config.validate().unwrap())
}

/// One in-process node: its Raft, served on a loopback port, with the state machine `M`.
pub struct TestNode<M = MemStateMachine> {
    pub id: NodeId,
    pub raft: Raft<TypeConfig>,
    pub reads: ReadIndex,
    pub network: Network,
    pub machine: M,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    _store: Option<Store>,
}

impl TestNode {
    async fn start(id: NodeId, dir: &Path, credential: &ClusterCredential, config: Arc<Config>) -> TestNode {
        let (store, _, _) = ledger::open(&dir.join(format!("node-{id}.redb")), 1_000, |_| {}).unwrap();
        let log_store = LogStore::new(store.raft_log().unwrap());
        let any = "127.0.0.1:0".parse().unwrap();
        TestNode::start_on(id, log_store, MemStateMachine::default(), Some(store), credential, config, any).await
    }
}

impl<M: RaftStateMachine<TypeConfig> + Clone> TestNode<M> {
    /// A node over `log_store` and `machine` (`keep`: a store to keep open while it runs),
    /// listening on `bind` (port 0: any; a restarted node binds its old address).
    pub async fn start_on(
        id: NodeId,
        log_store: LogStore,
        machine: M,
        keep: Option<Store>,
        credential: &ClusterCredential,
        config: Arc<Config>,
        bind: SocketAddr,
    ) -> TestNode<M> {
        let network = Network::new(credential.clone(), None, Duration::from_millis(500));
        TestNode::start_with(id, log_store, machine, keep, credential, config, bind, network).await
    }

    /// [`Self::start_on`] over `network` (the partition tests pass one with cut links).
    #[allow(clippy::too_many_arguments)]
    pub async fn start_with(
        id: NodeId,
        log_store: LogStore,
        machine: M,
        keep: Option<Store>,
        credential: &ClusterCredential,
        config: Arc<Config>,
        bind: SocketAddr,
        network: Network,
    ) -> TestNode<M> {
        let raft = Raft::new(id, config, network.clone(), log_store, machine.clone()).await.unwrap();
        let reads = ReadIndex::new(raft.clone(), network.clone(), Duration::from_millis(1), Duration::from_secs(2));
        let listener = TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let service = RaftRpc::service(raft.clone(), id, credential.clone(), reads.clone());
        let incoming = futures_util::stream::unfold(listener, |listener| async move {
            let accepted = listener.accept().await.map(|(stream, _)| stream);
            Some((accepted, listener))
        });
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await
        });
        TestNode { id, raft, reads, network, machine, addr, stop: Some(stop), _store: keep }
    }

    pub fn info(&self) -> NodeInfo {
        NodeInfo { raft_addr: self.addr.to_string() }
    }

    /// Stops the node as a crash would look to its peers: its listener closes, its Raft stops.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.raft.shutdown().await.unwrap();
    }
}

pub async fn leader_among<M>(nodes: &[&TestNode<M>]) -> NodeId {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        for node in nodes {
            if node.raft.metrics().borrow().state == ServerState::Leader {
                return node.id;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader elected within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn batch(envelopes: usize) -> RaftBatch {
    RaftBatch {
        decided_term: 0,
        version: RAFT_BATCH_VERSION,
        envelopes: (0..envelopes).map(|i| vec![i as u8; 40]).collect(),
    }
}

async fn applied_everywhere(nodes: &[&TestNode], head_seq: u64) {
    for node in nodes {
        node.raft
            .wait(Some(WAIT))
            .metrics(|_| node.machine.head_seq() == head_seq, format!("node {} applies up to {head_seq}", node.id))
            .await
            .unwrap_or_else(|e| panic!("node {} at {} instead of {head_seq}: {e}", node.id, node.machine.head_seq()));
    }
}

/// Three voters elect a leader over the network, replicate batches to all, and after the leader
/// stops the two others elect a new one and keep committing; the stopped node's writes are not
/// lost (every batch acknowledged before is on the survivors).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_replicate_over_grpc_and_survive_losing_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let credential = ClusterCredential::derive(b"one cluster's key files");
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(TestNode::start(id, dir.path(), &credential, config(1_000)).await);
    }
    let members: BTreeMap<NodeId, NodeInfo> = nodes.iter().map(|n| (n.id, n.info())).collect();
    nodes[0].raft.initialize(members).await.unwrap();

    let leader = leader_among(&nodes.iter().collect::<Vec<_>>()).await;
    let mut acknowledged = 0u64;
    for size in [1, 5, 64, 3] {
        let node = nodes.iter().find(|n| n.id == leader).unwrap();
        let written = node.raft.client_write(batch(size)).await.unwrap();
        acknowledged += size as u64;
        assert_eq!(written.data.head_seq, acknowledged, "the leader answers its own applied head");
    }
    applied_everywhere(&nodes.iter().collect::<Vec<_>>(), acknowledged).await;

    let old = nodes.iter().position(|n| n.id == leader).unwrap();
    nodes[old].stop().await;
    let survivors: Vec<&TestNode> = nodes.iter().filter(|n| n.id != leader).collect();
    let new_leader = leader_among(&survivors).await;
    assert_ne!(new_leader, leader);
    let node = survivors.iter().find(|n| n.id == new_leader).unwrap();
    node.raft.client_write(batch(7)).await.unwrap();
    acknowledged += 7;
    applied_everywhere(&survivors, acknowledged).await;
    for node in nodes.iter_mut() {
        if node.id != leader {
            node.stop().await;
        }
    }
}

/// A learner added after the leader snapshotted and purged its log cannot be sent the log: it
/// is sent the snapshot over `InstallSnapshot`, then the entries after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_learner_catches_up_from_a_snapshot_after_the_log_was_purged() {
    let dir = tempfile::tempdir().unwrap();
    let credential = ClusterCredential::derive(b"one cluster's key files");
    let mut leader = TestNode::start(1, dir.path(), &credential, config(5)).await;
    leader.raft.initialize(BTreeMap::from([(1, leader.info())])).await.unwrap();
    leader.raft.wait(Some(WAIT)).state(ServerState::Leader, "single voter leads").await.unwrap();
    let mut acknowledged = 0;
    for size in 1..=12 {
        leader.raft.client_write(batch(size)).await.unwrap();
        acknowledged += size as u64;
    }
    leader.raft.trigger().snapshot().await.unwrap();
    let snapshot_at = leader
        .raft
        .wait(Some(WAIT))
        .metrics(|m| m.snapshot.is_some_and(|s| s.index >= 10), "a snapshot covers the writes")
        .await
        .unwrap()
        .snapshot
        .unwrap()
        .index;
    let purged = leader.raft.wait(Some(WAIT)).metrics(|m| m.purged.is_some(), "the log is purged").await.unwrap();
    assert!(purged.purged.unwrap().index >= snapshot_at, "purged up to the snapshot");

    let mut learner = TestNode::start(2, dir.path(), &credential, config(5)).await;
    leader.raft.add_learner(2, learner.info(), true).await.unwrap();
    applied_everywhere(&[&leader, &learner], acknowledged).await;
    let metrics = learner
        .raft
        .wait(Some(WAIT))
        .metrics(|m| m.snapshot.is_some(), "the learner reports the installed snapshot")
        .await
        .unwrap();
    assert!(metrics.snapshot.unwrap().index >= snapshot_at, "it installed the leader's snapshot: {metrics:?}");
    assert!(metrics.purged.is_none() || metrics.purged <= metrics.snapshot, "{metrics:?}");

    leader.raft.client_write(batch(4)).await.unwrap();
    applied_everywhere(&[&leader, &learner], acknowledged + 4).await;
    learner.stop().await;
    leader.stop().await;
}

/// A caller without the cluster's credential (a node started with other key files) or meaning
/// another node is refused with a message that says which, and a node with other keys never
/// receives the cluster's entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_with_other_key_files_or_the_wrong_target_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ours = ClusterCredential::derive(b"one cluster's key files");
    let theirs = ClusterCredential::derive(b"another set of key files");
    let mut node = TestNode::start(1, dir.path(), &ours, config(1_000)).await;

    let mut client = RaftServiceClient::connect(format!("http://{}", node.addr)).await.unwrap();
    let vote = || VoteRequest {
        version: WIRE_VERSION,
        vote: Some(RaftVote { term: 1, node_id: 9, committed: false }),
        last_log_id: None,
    };
    let status = client.vote(vote()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(status.message().contains("key files differ"), "{}", status.message());
    assert!(status.message().contains(ours.fingerprint()), "names this node's key set: {}", status.message());

    // A node with other key files, added as a learner, gets nothing; the leader keeps serving.
    node.raft.initialize(BTreeMap::from([(1, node.info())])).await.unwrap();
    node.raft.wait(Some(WAIT)).state(ServerState::Leader, "single voter leads").await.unwrap();
    let mut stranger = TestNode::start(2, dir.path(), &theirs, config(1_000)).await;
    node.raft.add_learner(2, stranger.info(), false).await.unwrap();
    node.raft.client_write(batch(3)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stranger.machine.head_seq(), 0, "a node with other keys receives nothing");
    assert_eq!(node.machine.head_seq(), 3);
    stranger.stop().await;

    // The right key files but an address that reaches another node (node 3 answers where the
    // membership says node 4 is): refused as misaddressed, and node 3 takes nothing.
    let mut other = TestNode::start(3, dir.path(), &ours, config(1_000)).await;
    node.raft.add_learner(4, other.info(), false).await.unwrap();
    node.raft.client_write(batch(2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(other.machine.head_seq(), 0, "a node reached under another node's id takes nothing");
    let replication = node.raft.metrics().borrow().replication.clone().unwrap_or_default();
    assert_eq!(
        replication.get(&4).copied().flatten(),
        None,
        "node 4 (really node 3) never acknowledged: {replication:?}"
    );
    other.stop().await;

    let members: BTreeSet<NodeId> = BTreeSet::from([1]);
    assert_eq!(
        node.raft.metrics().borrow().membership_config.membership().voter_ids().collect::<BTreeSet<_>>(),
        members
    );
    node.stop().await;
}

async fn three_node_cluster(dir: &Path) -> (Vec<TestNode>, NodeId) {
    let credential = ClusterCredential::derive(b"one cluster's key files");
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(TestNode::start(id, dir, &credential, config(1_000)).await);
    }
    let members: BTreeMap<NodeId, NodeInfo> = nodes.iter().map(|n| (n.id, n.info())).collect();
    nodes[0].raft.initialize(members).await.unwrap();
    let leader = leader_among(&nodes.iter().collect::<Vec<_>>()).await;
    for node in &nodes {
        node.raft.wait(Some(WAIT)).current_leader(leader, "every node knows the leader").await.unwrap();
    }
    (nodes, leader)
}

/// SPEC 8: after a write is acknowledged, a read confirmed on any node (follower or leader)
/// sees it: `confirm` returns only once the node has applied everything committed before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_confirmed_read_on_any_node_sees_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, leader) = three_node_cluster(dir.path()).await;
    let mut acknowledged = 0;
    for round in 0..40 {
        let writer = nodes.iter().find(|n| n.id == leader).unwrap();
        writer.raft.client_write(batch(1 + round % 3)).await.unwrap();
        acknowledged += (1 + round % 3) as u64;
        for node in &nodes {
            node.reads.confirm().await.unwrap();
            assert!(
                node.machine.head_seq() >= acknowledged,
                "node {} confirmed a read at {} before applying the write that made {acknowledged}",
                node.id,
                node.machine.head_seq()
            );
        }
    }
    for node in &nodes {
        let stats = node.reads.stats();
        let confirmed = stats.confirmed.load(std::sync::atomic::Ordering::Relaxed).max(1);
        eprintln!(
            "node {} ({}): {confirmed} reads right after a write, mean wait {} µs",
            node.id,
            if node.id == leader { "leader" } else { "follower" },
            stats.confirm_micros.load(std::sync::atomic::Ordering::Relaxed) / confirmed
        );
    }
    for node in nodes.iter_mut() {
        node.stop().await;
    }
}

/// Concurrent reads share rounds: 300 reads at once on a follower cost a handful of calls to
/// the leader, not 300, and all are confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reads_share_one_leader_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, leader) = three_node_cluster(dir.path()).await;
    nodes.iter().find(|n| n.id == leader).unwrap().raft.client_write(batch(2)).await.unwrap();
    let follower = nodes.iter().find(|n| n.id != leader).unwrap();
    let before = follower.reads.stats().rounds.load(std::sync::atomic::Ordering::Relaxed);
    let mut reads = tokio::task::JoinSet::new();
    for _ in 0..300 {
        let confirmations = follower.reads.clone();
        reads.spawn(async move { confirmations.confirm().await });
    }
    while let Some(read) = reads.join_next().await {
        read.unwrap().unwrap();
    }
    let rounds = follower.reads.stats().rounds.load(std::sync::atomic::Ordering::Relaxed) - before;
    let stats = follower.reads.stats();
    let confirmed = stats.confirmed.load(std::sync::atomic::Ordering::Relaxed).max(1);
    eprintln!(
        "300 concurrent follower reads: {rounds} rounds, mean wait {} µs",
        stats.confirm_micros.load(std::sync::atomic::Ordering::Relaxed) / confirmed
    );
    assert!((1..=30).contains(&rounds), "300 concurrent reads took {rounds} rounds");
    for node in nodes.iter_mut() {
        node.stop().await;
    }
}

/// A node cut off from the majority never confirms a read (it cannot know it has seen the
/// latest revocation): it answers an error within its timeout, whether it was leader or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_majority_no_read_is_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, leader) = three_node_cluster(dir.path()).await;
    nodes.iter().find(|n| n.id == leader).unwrap().raft.client_write(batch(1)).await.unwrap();
    // Keep the leader alone: stop both followers. Then keep one follower alone: new cluster.
    for node in nodes.iter_mut().filter(|n| n.id != leader) {
        node.stop().await;
    }
    let alone = nodes.iter().find(|n| n.id == leader).unwrap();
    let refused = alone.reads.confirm().await.unwrap_err();
    assert!(
        matches!(refused, ReadIndexError::Unconfirmed(_) | ReadIndexError::Timeout(_)),
        "a leader without its followers refuses: {refused:?}"
    );
    nodes.iter_mut().find(|n| n.id == leader).unwrap().stop().await;

    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, leader) = three_node_cluster(dir.path()).await;
    let follower = nodes.iter().find(|n| n.id != leader).unwrap().id;
    for node in nodes.iter_mut().filter(|n| n.id != follower) {
        node.stop().await;
    }
    let alone = nodes.iter().find(|n| n.id == follower).unwrap();
    let refused = alone.reads.confirm().await.unwrap_err();
    assert!(
        matches!(refused, ReadIndexError::Unconfirmed(_) | ReadIndexError::Timeout(_) | ReadIndexError::NoLeader),
        "a follower without a leader refuses: {refused:?}"
    );
    nodes.iter_mut().find(|n| n.id == follower).unwrap().stop().await;
}

/// A leader hands over to a chosen follower: the follower leads, the old leader follows, no
/// acknowledged write is lost and the next writes commit everywhere. Handing over to a node that
/// is down fails within the timeout, and the cluster then elects as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_hands_over_to_the_chosen_follower() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, leader) = three_node_cluster(dir.path()).await;
    let old = nodes.iter().find(|n| n.id == leader).unwrap();
    for size in [3, 4] {
        old.raft.client_write(batch(size)).await.unwrap();
    }
    let target = nodes.iter().find(|n| n.id != leader).unwrap().id;
    let started = std::time::Instant::now();
    transfer_leadership(&old.raft, &old.network, target, Duration::from_secs(10)).await.unwrap();
    eprintln!("hand-over from node {leader} to node {target} took {:?}", started.elapsed());
    let new = nodes.iter().find(|n| n.id == target).unwrap();
    new.raft.wait(Some(WAIT)).state(ServerState::Leader, "the chosen node leads").await.unwrap();
    old.raft.wait(Some(WAIT)).current_leader(target, "the old leader follows it").await.unwrap();
    assert_ne!(old.raft.metrics().borrow().state, ServerState::Leader);
    new.raft.client_write(batch(5)).await.unwrap();
    applied_everywhere(&nodes.iter().collect::<Vec<_>>(), 12).await;

    // From a node that is not the leader, or to a node that is not a voter: refused at once.
    let from_a_follower = transfer_leadership(&old.raft, &old.network, target, Duration::from_secs(1)).await;
    assert_eq!(from_a_follower, Err(TransferError::NotLeader));
    assert_eq!(
        transfer_leadership(&new.raft, &new.network, 42, Duration::from_secs(1)).await,
        Err(TransferError::NotAVoter(42))
    );

    // To a node that is down: fails in time; afterwards the cluster still elects and commits.
    let down = nodes.iter().find(|n| n.id != target && n.id != leader).unwrap().id;
    nodes.iter_mut().find(|n| n.id == down).unwrap().stop().await;
    let new = nodes.iter().find(|n| n.id == target).unwrap();
    let failed = transfer_leadership(&new.raft, &new.network, down, Duration::from_secs(3)).await;
    assert!(failed.is_err(), "{failed:?}");
    let live: Vec<&TestNode> = nodes.iter().filter(|n| n.id != down).collect();
    let leader = leader_among(&live).await;
    live.iter().find(|n| n.id == leader).unwrap().raft.client_write(batch(1)).await.unwrap();
    applied_everywhere(&live, 13).await;
    for node in nodes.iter_mut().filter(|n| n.id != down) {
        node.stop().await;
    }
}

/// A node whose Raft stopped (a divergence or a storage error halts it) confirms no read, though
/// it still knows the leader it last followed and has applied everything committed: what it
/// holds may be another history, so nothing it says may count as confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_whose_raft_stopped_confirms_no_read() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, leader) = three_node_cluster(dir.path()).await;
    nodes.iter().find(|n| n.id == leader).unwrap().raft.client_write(batch(2)).await.unwrap();
    applied_everywhere(&nodes.iter().collect::<Vec<_>>(), 2).await;
    let follower = nodes.iter().position(|n| n.id != leader).unwrap();
    nodes[follower].reads.confirm().await.unwrap();
    nodes[follower].stop().await;
    assert_eq!(nodes[follower].raft.metrics().borrow().current_leader, Some(leader), "it still names the leader");
    assert_eq!(nodes[follower].reads.confirm().await, Err(ReadIndexError::ShuttingDown));
    for node in nodes.iter_mut() {
        if node.raft.metrics().borrow().state != ServerState::Shutdown {
            node.stop().await;
        }
    }
}
