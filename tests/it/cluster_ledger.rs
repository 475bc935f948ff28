//! The Raft state machine over real ledgers (`replication::state_machine`): three in-process
//! nodes replicate a real server's events over gRPC, each into its own ledger file, and end with
//! the same events byte for byte and the same projections; a node added after the log was
//! purged catches up from the snapshot (the ledger range) and so holds the whole history; a
//! node restarted from its file catches up from the log.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use openraft::ServerState;
use parking_lot::RwLock;
use tokenledger::ledger::replicated;
use tokenledger::proto::ledger::RaftBatch;
use tokenledger::replication::network::ClusterCredential;
use tokenledger::replication::proposer::{ProposeError, Proposer};
use tokenledger::replication::state_machine::LedgerMachine;
use tokenledger::replication::{LogStore, NodeId, RAFT_BATCH_VERSION};

use crate::raft_network::{TestNode, WAIT, config, leader_among};
use crate::replicated::{envelopes_of, leader_events};

async fn ledger_node(id: NodeId, dir: &Path, snapshot_every: u64, bind: SocketAddr) -> TestNode<LedgerMachine> {
    let (store, state) = replicated::open_replica(&dir.join(format!("node-{id}.redb")), |_| {}).unwrap();
    let log_store = LogStore::new(store.raft_log().unwrap());
    let node_dir = dir.join(format!("node-{id}"));
    std::fs::create_dir_all(&node_dir).unwrap();
    let machine = LedgerMachine::new(store, Arc::new(RwLock::new(state)), &node_dir).unwrap();
    let credential = ClusterCredential::derive(b"one cluster's key files");
    TestNode::start_on(id, log_store, machine, None, &credential, config(snapshot_every), bind).await
}

async fn head_everywhere(nodes: &[&TestNode<LedgerMachine>], head: u64) {
    for node in nodes {
        node.raft
            .wait(Some(WAIT))
            .metrics(|_| node.machine.state().read().head.seq == head, format!("node {} at {head}", node.id))
            .await
            .unwrap_or_else(|e| panic!("node {} at {}: {e}", node.id, node.machine.state().read().head.seq));
    }
}

fn any() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Three voters on ledgers of their own, initialised; answers them and the leader's id.
async fn three_ledger_nodes(dir: &Path, snapshot_every: u64) -> (Vec<TestNode<LedgerMachine>>, NodeId) {
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(ledger_node(id, dir, snapshot_every, any()).await);
    }
    let members = nodes.iter().map(|n| (n.id, n.info())).collect::<std::collections::BTreeMap<_, _>>();
    nodes[0].raft.initialize(members).await.unwrap();
    let leader = leader_among(&nodes.iter().collect::<Vec<_>>()).await;
    (nodes, leader)
}

fn batch(envelopes: &[Vec<u8>]) -> RaftBatch {
    RaftBatch { decided_term: 0, version: RAFT_BATCH_VERSION, envelopes: envelopes.to_vec() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_replicate_a_real_ledger_and_late_or_restarted_nodes_catch_up() {
    let (_leader_dir, events, leader_state) = leader_events().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, leader) = three_ledger_nodes(dir.path(), 8).await;

    // The first two thirds, in batches of 1 to 5 events, acknowledged with the head they make.
    let first = events.len() * 2 / 3;
    let mut sent = 0;
    for size in [1usize, 4, 2, 5, 3].iter().cycle() {
        if sent >= first {
            break;
        }
        let end = (sent + size).min(first);
        let node = nodes.iter().find(|n| n.id == leader).unwrap();
        let written = node.raft.client_write(batch(&events[sent..end])).await.unwrap();
        assert_eq!(written.data.head_seq, end as u64, "acknowledged with the head it made");
        sent = end;
    }
    head_everywhere(&nodes.iter().collect::<Vec<_>>(), sent as u64).await;
    for node in &nodes {
        assert_eq!(envelopes_of(node.machine.store()), events[..sent].to_vec(), "node {}: the same events", node.id);
    }

    // A follower stops; the rest goes on without it; it restarts from its file and catches up.
    let follower = nodes.iter().find(|n| n.id != leader).unwrap().id;
    let position = nodes.iter().position(|n| n.id == follower).unwrap();
    let mut stopped = nodes.remove(position);
    let address = stopped.addr;
    stopped.stop().await;
    drop(stopped);
    let leader_node = nodes.iter().find(|n| n.id == leader).unwrap();
    leader_node.raft.client_write(batch(&events[sent..])).await.unwrap();
    head_everywhere(&nodes.iter().collect::<Vec<_>>(), events.len() as u64).await;
    let restarted = ledger_node(follower, dir.path(), 8, address).await;
    nodes.push(restarted);
    head_everywhere(&nodes.iter().collect::<Vec<_>>(), events.len() as u64).await;

    // The leader snapshots and purges; a node added then is sent the snapshot (the ledger range).
    let leader_node = nodes.iter().find(|n| n.id == leader).unwrap();
    leader_node.raft.trigger().snapshot().await.unwrap();
    leader_node
        .raft
        .wait(Some(WAIT))
        .metrics(|m| m.purged.is_some() && m.snapshot.is_some(), "the leader snapshotted and purged")
        .await
        .unwrap();
    let learner = ledger_node(4, dir.path(), 8, any()).await;
    leader_node.raft.add_learner(4, learner.info(), true).await.unwrap();
    learner.raft.wait(Some(WAIT)).metrics(|m| m.snapshot.is_some(), "the learner installed a snapshot").await.unwrap();
    nodes.push(learner);
    head_everywhere(&nodes.iter().collect::<Vec<_>>(), events.len() as u64).await;
    // The snapshot went through files, not memory: the leader keeps one stream file (its
    // current snapshot's), the learner's received copy is gone once installed.
    let files = |id: u64| -> Vec<String> {
        let entries = std::fs::read_dir(dir.path().join(format!("node-{id}"))).unwrap();
        entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
    };
    let streams: Vec<String> = files(leader).into_iter().filter(|n| n.starts_with("raft-snapshot-")).collect();
    assert!(streams.len() == 1 && streams[0].ends_with(".stream"), "the leader's stream files: {streams:?}");
    assert!(!files(4).iter().any(|n| n.starts_with("raft-snapshot")), "the learner's: {:?}", files(4));

    for node in &nodes {
        assert_eq!(envelopes_of(node.machine.store()), events, "node {}: the whole history, byte for byte", node.id);
        let state = node.machine.state().read().clone();
        assert_eq!(state.head, leader_state.head, "node {}: the same chain head", node.id);
        assert!(state == leader_state, "node {}: the same projections", node.id);
        assert_ne!(node.raft.metrics().borrow().state, ServerState::Candidate);
    }
    for node in nodes.iter_mut() {
        node.stop().await;
    }
}

/// The leader's writer path: it may decide only once its projections hold everything committed
/// (`ready_blocking`), then sealed batches, several in flight at once, are committed through Raft
/// in the order proposed and applied on every node before each answers; a batch whose entry
/// lands in another term than it was decided in is skipped by every node; a follower's writer is
/// told who leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leaders_writer_commits_through_raft_and_a_followers_is_told_who_leads() {
    let (_leader_dir, events, leader_state) = leader_events().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, leader) = three_ledger_nodes(dir.path(), 1_000).await;
    let runtime = tokio::runtime::Handle::current();
    let timeout = std::time::Duration::from_secs(10);
    let on_leader =
        Proposer::new(nodes.iter().find(|n| n.id == leader).unwrap().raft.clone(), runtime.clone(), timeout);
    let follower = nodes.iter().find(|n| n.id != leader).unwrap();
    let on_follower = Proposer::new(follower.raft.clone(), runtime, timeout);

    let sent = events.clone();
    let handle = tokio::runtime::Handle::current();
    let (skipped, heads) = tokio::task::spawn_blocking(move || {
        let term = on_leader.ready_blocking().unwrap();
        // Decided in a term its entry does not land in: skipped everywhere, nothing recorded.
        let stale = on_leader.propose(sent[..3].to_vec(), term + 1);
        let skipped = handle.block_on(stale).unwrap();
        // The skip counts as a failed proposal: the projections are confirmed again first.
        let term = on_leader.ready_blocking().unwrap();
        let proposals: Vec<_> = sent.chunks(3).map(|chunk| on_leader.propose(chunk.to_vec(), term)).collect();
        let heads = proposals.into_iter().map(|p| handle.block_on(p).unwrap().unwrap()).collect::<Vec<_>>();
        (skipped, heads)
    })
    .await
    .unwrap();
    assert_eq!(skipped, Err(ProposeError::NotLeader { leader: None }), "a batch of another term is refused");
    let expected: Vec<u64> = (1..=events.len().div_ceil(3)).map(|i| (i * 3).min(events.len()) as u64).collect();
    assert_eq!(heads, expected, "each batch, all in flight at once, answered with the head it made");
    let refused = tokio::task::spawn_blocking(move || on_follower.ready_blocking()).await.unwrap();
    assert_eq!(refused, Err(ProposeError::NotLeader { leader: Some(leader) }));

    head_everywhere(&nodes.iter().collect::<Vec<_>>(), events.len() as u64).await;
    for node in &nodes {
        assert_eq!(envelopes_of(node.machine.store()), events, "node {}", node.id);
        assert!(*node.machine.state().read() == leader_state, "node {}: the same projections", node.id);
    }
    for node in nodes.iter_mut() {
        node.stop().await;
    }
}

/// The real writer in cluster mode: on the leader it decides and seals, commits through Raft,
/// and answers after the state machine applied the batch; every node then holds the institution,
/// the client and the issued tokens. A follower's writer decides nothing and refuses (fail
/// closed, SPEC 8).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_writer_in_cluster_mode_commits_on_the_leader_and_refuses_on_a_follower() {
    use tokenledger::crypto::ServerKeys;
    use tokenledger::crypto::credential::keyed_digest;
    use tokenledger::crypto::random_bytes;
    use tokenledger::domain::{Command, DirectoryCommand, FamilyId, FreshIds, Issue, IssueGrant, Outcome, TokenId};
    use tokenledger::ledger::{LedgerHandle, SubmitError, WriterConfig};
    use tokenledger::proto::ledger::{ClientCreated, InstitutionCreated};

    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, leader) = three_ledger_nodes(dir.path(), 1_000).await;
    let writer = |node: &TestNode<LedgerMachine>| {
        let proposer =
            Proposer::new(node.raft.clone(), tokio::runtime::Handle::current(), std::time::Duration::from_secs(10));
        let store = node.machine.store();
        LedgerHandle::spawn_replicated(
            Arc::new(proposer),
            store.reader(),
            store.token_ids().clone(),
            node.machine.state().clone(),
            WriterConfig::default(),
            tokenledger::clock::system(),
        )
        .unwrap()
    };
    let on_leader = writer(nodes.iter().find(|n| n.id == leader).unwrap());
    let follower = nodes.iter().find(|n| n.id != leader).unwrap();
    let on_follower = writer(follower);

    let keys = ServerKeys::from_secret(1, &[7; 32]);
    let setup = [
        DirectoryCommand::CreateInstitution(InstitutionCreated { institution_id: "01001".into(), name: "Bank".into() }),
        DirectoryCommand::CreateClient(ClientCreated {
            client_id: "svc".into(),
            name: "svc".into(),
            institution_ids: vec!["01001".into()],
            grant_types: vec!["client_credentials".into()],
            scopes: vec!["api:read".into()],
            access_token_ttl_secs: 3600,
            refresh_token_ttl_secs: 3600,
            introspect: true,
            secret: Some(keyed_digest(&keys, "svc", "svc-secret")),
            ..Default::default()
        }),
    ];
    for command in setup {
        let reply = on_leader.submit(Command::Directory(command), uuid::Uuid::new_v4().to_string()).await;
        assert!(matches!(reply, Ok(Ok(_))), "{reply:?}");
    }
    // Creates of one institution arriving a millisecond apart, so that later ones reach the writer
    // while earlier batches are still replicating: a batch in flight holds its conflict keys, so
    // a later create is decided only once the first is applied, and exactly one succeeds.
    let mut creates = tokio::task::JoinSet::new();
    for _ in 0..24 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        let handle = on_leader.clone();
        let create = DirectoryCommand::CreateInstitution(InstitutionCreated {
            institution_id: "02002".into(),
            name: "Other bank".into(),
        });
        creates.spawn(async move { handle.submit(Command::Directory(create), uuid::Uuid::new_v4().to_string()).await });
    }
    let (mut created, mut refused) = (0, 0);
    while let Some(reply) = creates.join_next().await {
        match reply.unwrap() {
            Ok(Ok(_)) => created += 1,
            Ok(Err(_)) => refused += 1,
            Err(error) => panic!("a create on the leader: {error:?}"),
        }
    }
    assert_eq!((created, refused), (1, 23), "one create of an institution wins");
    let issue = || {
        Command::Issue(Issue {
            client_id: Arc::from("svc"),
            institution_id: Some("01001".to_owned()),
            grant: IssueGrant::ClientCredentials,
            requested_scopes: None,
            fingerprint: random_bytes(),
            family_lifetime_max_ms: tokenledger::domain::FAMILY_LIFETIME_MAX_MS_DEFAULT,
            fresh: FreshIds {
                access: TokenId(random_bytes()),
                refresh: TokenId(random_bytes()),
                family: FamilyId(random_bytes()),
            },
        })
    };
    let mut issued = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let handle = on_leader.clone();
        let command = issue();
        tasks.spawn(async move { handle.submit(command, uuid::Uuid::new_v4().to_string()).await });
    }
    while let Some(reply) = tasks.join_next().await {
        match reply.unwrap() {
            Ok(Ok(Outcome::Issued(tokens))) => issued.push(tokens.access.id),
            other => panic!("an issue on the leader: {other:?}"),
        }
    }
    assert_eq!(issued.len(), 40);
    assert_eq!(
        on_follower.submit(issue(), uuid::Uuid::new_v4().to_string()).await.map(|_| ()),
        Err(SubmitError),
        "a follower's writer refuses"
    );

    let head = nodes.iter().find(|n| n.id == leader).unwrap().machine.state().read().head.seq;
    head_everywhere(&nodes.iter().collect::<Vec<_>>(), head).await;
    let now = tokenledger::clock::system().now_ms();
    for node in &nodes {
        let state = node.machine.state().read();
        for id in &issued {
            assert!(state.active_token(id, now).is_some(), "node {}: every issued token is there, active", node.id);
        }
    }
    let leader_events = envelopes_of(nodes.iter().find(|n| n.id == leader).unwrap().machine.store());
    for node in &nodes {
        assert_eq!(envelopes_of(node.machine.store()), leader_events, "node {}", node.id);
    }
    on_leader.stop().await;
    on_follower.stop().await;
    for node in nodes.iter_mut() {
        node.stop().await;
    }
}
