//! Seeded partitions over real ledgers (SPEC 8): three in-process nodes, each with its own
//! ledger file, the real state machine (`LedgerMachine`) and the real writer, talk over loopback
//! gRPC through the network's test switch (`replication::network::Links`), which cuts a node off
//! both ways. While writes (issue, revoke) go to the leader and confirmed (ReadIndex) reads run
//! on every node, a seeded schedule isolates the leader, isolates a follower, splits every node
//! from the others (no majority anywhere), hands the leadership over, snapshots and purges the
//! log while a follower is cut off (it must catch up from the snapshot), and restarts a follower
//! (sometimes after a purge, so it catches up from a snapshot too).
//!
//! Oracles, checked throughout: at most one leader per term (every node's metrics, sampled
//! every few milliseconds); the same chain head hash at the same seq on every node (sampled);
//! a confirmed read never misses an acknowledged issuance and never says "active" for a token
//! whose revocation was acknowledged before the read began. At the end every node holds the same
//! events byte for byte and every acknowledged write.
//!
//! Seed and rounds: TOKENLEDGER_TEST_SEED (random when unset; printed at the start and on a
//! failure), TOKENLEDGER_PARTITION_ROUNDS (default 6: each kind of step once, in seeded order).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use openraft::{Raft, ServerState};
use parking_lot::{Mutex, RwLock};
use tokenledger::crypto::ServerKeys;
use tokenledger::crypto::credential::keyed_digest;
use tokenledger::crypto::random_bytes;
use tokenledger::domain::{
    Command, DirectoryCommand, FamilyId, FreshIds, Issue, IssueGrant, Outcome, Revoke, TokenId, TokenKind,
};
use tokenledger::ledger::{LedgerHandle, WriterConfig, replicated};
use tokenledger::proto::ledger::{ClientCreated, InstitutionCreated};
use tokenledger::replication::network::{ClusterCredential, Links, Network};
use tokenledger::replication::proposer::Proposer;
use tokenledger::replication::read_index::ReadIndex;
use tokenledger::replication::state_machine::LedgerMachine;
use tokenledger::replication::transfer::transfer_leadership;
use tokenledger::replication::{LogStore, NodeId, TypeConfig};

use crate::harness::Rng;
use crate::raft_network::{TestNode, WAIT, config};
use crate::replicated::envelopes_of;

const ROUNDS_DEFAULT: usize = 6;
const CLIENT: &str = "svc";

/// What the load tasks use of a running node (cheap clones; a stopped node is taken out first).
#[derive(Clone)]
struct Member {
    id: NodeId,
    raft: Raft<TypeConfig>,
    reads: ReadIndex,
    machine: LedgerMachine,
    writer: LedgerHandle,
}

#[derive(Default)]
struct Model {
    /// Issuance acknowledged at that instant, not revoked since: every confirmed read that
    /// began after it must see the token active.
    live: HashMap<TokenId, Instant>,
    /// Revocation acknowledged at that instant: no confirmed read that began after it may say
    /// "active".
    revoked: HashMap<TokenId, Instant>,
    issued: u64,
    revocations: u64,
    confirmed: u64,
    refused: u64,
    /// The leader each term had, as any node's metrics said (a node leading, or following one).
    leaders: HashMap<u64, NodeId>,
    /// The chain head hash each sampled seq had on the first node seen there.
    heads: HashMap<u64, [u8; 32]>,
    violations: Vec<String>,
}

#[derive(Clone, Copy, Debug)]
enum Step {
    IsolateLeader,
    IsolateFollower,
    SplitAll,
    Transfer,
    SnapshotCatchUp,
    RestartFollower,
}

const STEPS: [Step; 6] = [
    Step::IsolateLeader,
    Step::IsolateFollower,
    Step::SplitAll,
    Step::Transfer,
    Step::SnapshotCatchUp,
    Step::RestartFollower,
];

/// Prints the seed when the test fails, so the run can be replayed.
struct SeedOnFailure(u64);

impl Drop for SeedOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("cluster partition test FAILED: replay with TOKENLEDGER_TEST_SEED={}", self.0);
        }
    }
}

struct Cluster {
    dir: tempfile::TempDir,
    links: Links,
    nodes: Vec<TestNode<LedgerMachine>>,
    members: Arc<RwLock<Vec<Member>>>,
}

async fn start_node(id: NodeId, dir: &Path, links: &Links, bind: SocketAddr) -> (TestNode<LedgerMachine>, Member) {
    let path = dir.join(format!("node-{id}.redb"));
    // A restarted node's file may be held a moment longer by a load task that was using it.
    let deadline = Instant::now() + WAIT;
    let (store, state) = loop {
        match replicated::open_replica(&path, |_| {}) {
            Ok(opened) => break opened,
            Err(error) => {
                assert!(Instant::now() < deadline, "node {id}: its ledger does not open again: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let log_store = LogStore::new(store.raft_log().unwrap());
    let node_dir = dir.join(format!("node-{id}"));
    std::fs::create_dir_all(&node_dir).unwrap();
    let machine = LedgerMachine::new(store, Arc::new(RwLock::new(state)), &node_dir).unwrap();
    let credential = ClusterCredential::derive(b"one cluster's key files");
    let network = Network::new(credential.clone(), None, Duration::from_millis(500)).with_links(id, links.clone());
    // Snapshots every 200 entries besides the ones the schedule asks for; the log is purged
    // right after each (config keeps no tail), so a lagging node often needs one.
    let node =
        TestNode::start_with(id, log_store, machine.clone(), None, &credential, config(200), bind, network).await;
    let proposer = Proposer::new(node.raft.clone(), tokio::runtime::Handle::current(), Duration::from_secs(3))
        .with_hand_over(node.network.hand_over());
    let store = machine.store();
    let writer = LedgerHandle::spawn_replicated(
        Arc::new(proposer),
        store.reader(),
        store.token_ids().clone(),
        machine.state().clone(),
        WriterConfig::default(),
        tokenledger::clock::system(),
    )
    .unwrap();
    let member = Member { id, raft: node.raft.clone(), reads: node.reads.clone(), machine, writer };
    (node, member)
}

/// The node that leads in the highest term any node reports, if any.
fn leader_of(members: &[Member]) -> Option<Member> {
    members
        .iter()
        .filter(|m| m.raft.metrics().borrow().state == ServerState::Leader)
        .max_by_key(|m| m.raft.metrics().borrow().current_term)
        .cloned()
}

fn head_seq(member: &Member) -> u64 {
    member.machine.state().read().head.seq
}

fn last_log_index(raft: &Raft<TypeConfig>) -> u64 {
    raft.metrics().borrow().last_log_index.unwrap_or(0)
}

impl Cluster {
    /// Three fresh nodes in a temp dir, every link up, initialised as one cluster of voters.
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let links = Links::default();
        let mut nodes = Vec::new();
        let mut members = Vec::new();
        for id in 1..=3 {
            let (node, member) = start_node(id, dir.path(), &links, "127.0.0.1:0".parse().unwrap()).await;
            nodes.push(node);
            members.push(member);
        }
        let voters = nodes.iter().map(|n| (n.id, n.info())).collect::<std::collections::BTreeMap<_, _>>();
        nodes[0].raft.initialize(voters).await.unwrap();
        Self { dir, links, nodes, members: Arc::new(RwLock::new(members)) }
    }

    fn members(&self) -> Vec<Member> {
        self.members.read().clone()
    }

    fn member(&self, id: NodeId) -> Member {
        self.members().into_iter().find(|m| m.id == id).unwrap()
    }

    /// Waits until one node leads in the highest term and, apart from `except`, no other node
    /// does (an isolated old leader may still think it leads its older term).
    async fn leader(&self, except: Option<NodeId>, what: &str) -> Member {
        let deadline = Instant::now() + WAIT;
        loop {
            let members: Vec<Member> = self.members().into_iter().filter(|m| Some(m.id) != except).collect();
            if let Some(leader) = leader_of(&members) {
                return leader;
            }
            assert!(Instant::now() < deadline, "{what}: no leader within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the leader's log is `more` entries past `index` (the writes go on meanwhile).
    async fn log_grows(&self, leader: &Member, index: u64, more: u64) {
        let deadline = Instant::now() + WAIT;
        while last_log_index(&leader.raft) < index + more {
            assert!(
                Instant::now() < deadline,
                "node {}'s log did not grow past {index} + {more}: {}",
                leader.id,
                self.describe()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The leader snapshots and purges its log past `past`; answers the snapshot's index.
    async fn snapshot_and_purge(&self, leader: &Member, past: u64) -> u64 {
        leader.raft.trigger().snapshot().await.unwrap();
        let metrics = leader
            .raft
            .wait(Some(WAIT))
            .metrics(
                |m| m.snapshot.is_some_and(|s| s.index > past) && m.purged.is_some_and(|p| p.index > past),
                format!("node {} snapshotted and purged past {past}", leader.id),
            )
            .await
            .unwrap();
        metrics.snapshot.map_or(0, |s| s.index)
    }

    /// Heals every link and waits until the cluster has converged — one leader that every node
    /// follows and that has heard back from every node (a leader cut off before the heal may
    /// still believe it leads until a heartbeat reaches it) — and every node has applied what
    /// the leader had applied then.
    async fn settle(&self, what: &str) {
        self.links.heal();
        let deadline = Instant::now() + WAIT;
        let leader = loop {
            let leader = self.leader(None, what).await;
            let members = self.members();
            let replication = leader.raft.metrics().borrow().replication.clone().unwrap_or_default();
            let converged = members.iter().all(|m| {
                m.raft.metrics().borrow().current_leader == Some(leader.id)
                    && replication.get(&m.id).is_some_and(|matched| matched.is_some())
            });
            if converged {
                break leader;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: the cluster did not converge within {WAIT:?}: {}",
                self.describe()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let target = head_seq(&leader);
        for member in self.members() {
            member
                .raft
                .wait(Some(WAIT))
                .metrics(|_| head_seq(&member) >= target, format!("{what}: node {} applies up to {target}", member.id))
                .await
                .unwrap_or_else(|e| panic!("{what}: node {} at {}: {e}", member.id, head_seq(&member)));
        }
    }

    async fn stop_node(&mut self, id: NodeId) -> SocketAddr {
        let member = {
            let mut members = self.members.write();
            let at = members.iter().position(|m| m.id == id).unwrap();
            members.remove(at)
        };
        member.writer.stop().await;
        drop(member);
        let at = self.nodes.iter().position(|n| n.id == id).unwrap();
        let mut node = self.nodes.remove(at);
        node.stop().await;
        node.addr
    }

    async fn start_again(&mut self, id: NodeId, addr: SocketAddr) {
        let (node, member) = start_node(id, self.dir.path(), &self.links, addr).await;
        self.nodes.push(node);
        self.members.write().push(member);
    }

    /// Every node's role, term, leader and log, for a failure message.
    fn describe(&self) -> String {
        let mut text = String::new();
        for member in self.members() {
            let metrics = member.raft.metrics().borrow().clone();
            text.push_str(&format!(
                "\n  node {}: {:?} term {} leader {:?} last log {:?} applied {:?} head seq {}",
                member.id,
                metrics.state,
                metrics.current_term,
                metrics.current_leader,
                metrics.last_log_index,
                metrics.last_applied.map(|l| l.index),
                head_seq(&member)
            ));
        }
        text
    }

    fn network_of(&self, id: NodeId) -> &Network {
        &self.nodes.iter().find(|n| n.id == id).unwrap().network
    }
}

fn issue() -> Command {
    Command::Issue(Issue {
        client_id: Arc::from(CLIENT),
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
}

async fn setup(writer: &LedgerHandle) {
    let keys = ServerKeys::from_secret(1, &[7; 32]);
    let commands = [
        DirectoryCommand::CreateInstitution(InstitutionCreated { institution_id: "01001".into(), name: "Bank".into() }),
        DirectoryCommand::CreateClient(ClientCreated {
            client_id: CLIENT.into(),
            name: CLIENT.into(),
            institution_ids: vec!["01001".into()],
            grant_types: vec!["client_credentials".into()],
            scopes: vec!["api:read".into()],
            access_token_ttl_secs: 3600,
            refresh_token_ttl_secs: 3600,
            introspect: true,
            secret: Some(keyed_digest(&keys, CLIENT, "svc-secret")),
            ..Default::default()
        }),
    ];
    for command in commands {
        let reply = writer.submit(Command::Directory(command), uuid::Uuid::new_v4().to_string()).await;
        assert!(matches!(reply, Ok(Ok(_))), "{reply:?}");
    }
}

/// Issues and revokes through whichever node leads, until `stop`.
async fn write_load(members: Arc<RwLock<Vec<Member>>>, model: Arc<Mutex<Model>>, stop: Arc<AtomicBool>, seed: u64) {
    let mut rng = Rng(seed);
    while !stop.load(Ordering::Acquire) {
        let target = {
            let members = members.read();
            // Mostly the leader; sometimes any node (a follower's writer must refuse).
            if rng.below(8) == 0 && !members.is_empty() {
                Some(members[rng.below(members.len() as u64) as usize].clone())
            } else {
                leader_of(&members)
            }
        };
        let Some(member) = target else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let revoke = if rng.below(4) == 0 {
            let mut model = model.lock();
            let count = model.live.len() as u64;
            let token = (count > 0).then(|| *model.live.keys().nth(rng.below(count) as usize).unwrap());
            // Until acknowledged, the token is neither live nor revoked: a lost answer leaves
            // its fate uncertain.
            if let Some(token) = token {
                model.live.remove(&token);
            }
            token
        } else {
            None
        };
        let command = match revoke {
            Some(token) => Command::Revoke(Revoke { client_id: Arc::from(CLIENT), token, kind: TokenKind::Access }),
            None => issue(),
        };
        let reply = tokio::time::timeout(
            Duration::from_secs(15),
            member.writer.submit(command, uuid::Uuid::new_v4().to_string()),
        )
        .await;
        let acknowledged = Instant::now();
        let refused = {
            let mut model = model.lock();
            record_write(&mut model, member.id, revoke, reply, acknowledged)
        };
        if refused {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

type WriteReply = Result<
    Result<Result<Outcome, tokenledger::domain::Rejection>, tokenledger::ledger::SubmitError>,
    tokio::time::error::Elapsed,
>;

/// Records an acknowledged write; true when it was refused or its outcome is not known.
fn record_write(model: &mut Model, node: NodeId, revoke: Option<TokenId>, reply: WriteReply, at: Instant) -> bool {
    match (revoke, reply) {
        (None, Ok(Ok(Ok(Outcome::Issued(issued))))) => {
            model.live.insert(issued.access.id, at);
            model.issued += 1;
        }
        (Some(token), Ok(Ok(Ok(Outcome::Revoked)))) => {
            model.revoked.insert(token, at);
            model.revocations += 1;
        }
        (_, Ok(Ok(Ok(other)))) => model.violations.push(format!("node {node}: an unexpected outcome {other:?}")),
        (_, Ok(Ok(Err(rejection)))) => {
            model.violations.push(format!("node {node}: a valid command was rejected: {rejection:?}"))
        }
        // Refused (not the leader, no quorum) or not known in time: uncertain, as a client
        // sees it.
        (_, Ok(Err(_)) | Err(_)) => return true,
    }
    false
}

/// Confirmed reads on random nodes of random tokens, checked against what was acknowledged
/// before each read began.
async fn read_load(members: Arc<RwLock<Vec<Member>>>, model: Arc<Mutex<Model>>, stop: Arc<AtomicBool>, seed: u64) {
    let mut rng = Rng(seed);
    while !stop.load(Ordering::Acquire) {
        let member = {
            let members = members.read();
            if members.is_empty() { None } else { Some(members[rng.below(members.len() as u64) as usize].clone()) }
        };
        let picked = {
            let model = model.lock();
            let pick_revoked = rng.below(2) == 0 && !model.revoked.is_empty();
            let pool: Vec<&TokenId> =
                if pick_revoked { model.revoked.keys().collect() } else { model.live.keys().collect() };
            (!pool.is_empty()).then(|| *pool[rng.below(pool.len() as u64) as usize])
        };
        let (Some(member), Some(token)) = (member, picked) else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let began = Instant::now();
        let confirmed = member.reads.confirm().await;
        let active =
            member.machine.state().read().active_token(&token, tokenledger::clock::system().now_ms()).is_some();
        let refused = {
            let mut model = model.lock();
            record_read(&mut model, member.id, token, confirmed.is_ok(), active, began)
        };
        if refused {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Checks a read against the model; true when it was not confirmed.
fn record_read(model: &mut Model, node: NodeId, token: TokenId, confirmed: bool, active: bool, began: Instant) -> bool {
    if !confirmed {
        model.refused += 1;
        return true;
    }
    model.confirmed += 1;
    if active && model.revoked.get(&token).is_some_and(|at| *at < began) {
        model.violations.push(format!(
            "node {node}: a confirmed read said active for a token whose revocation was acknowledged before it"
        ));
    }
    if !active && model.live.get(&token).is_some_and(|at| *at < began) {
        model
            .violations
            .push(format!("node {node}: a confirmed read missed a token whose issuance was acknowledged before it"));
    }
    false
}

/// Samples every node's metrics and chain head: one leader per term, one hash per seq.
async fn sample(members: Arc<RwLock<Vec<Member>>>, model: Arc<Mutex<Model>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Acquire) {
        let members = members.read().clone();
        check_sample(&mut model.lock(), &members);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

fn check_sample(model: &mut Model, members: &[Member]) {
    for member in members {
        let (state, term, leader) = {
            let metrics = member.raft.metrics();
            let metrics = metrics.borrow();
            (metrics.state, metrics.current_term, metrics.current_leader)
        };
        let claimed = if state == ServerState::Leader { Some(member.id) } else { leader };
        if let Some(claimed) = claimed {
            let known = *model.leaders.entry(term).or_insert(claimed);
            if known != claimed {
                model.violations.push(format!(
                    "term {term}: node {} says node {claimed} leads, but node {known} was seen leading it",
                    member.id
                ));
            }
        }
        let head = member.machine.state().read().head.clone();
        if head.seq > 0 {
            let known = *model.heads.entry(head.seq).or_insert(head.hash);
            if known != head.hash {
                model.violations.push(format!("node {}: another chain head hash at seq {}", member.id, head.seq));
            }
        }
    }
}

fn pause(rng: &mut Rng) -> Duration {
    Duration::from_millis(200 + rng.below(800))
}

async fn run_step(cluster: &mut Cluster, step: Step, rng: &mut Rng, round: usize) {
    let what = format!("round {round} ({step:?})");
    let leader = cluster.leader(None, &what).await;
    let followers: Vec<NodeId> = cluster.members().iter().map(|m| m.id).filter(|id| *id != leader.id).collect();
    let follower = followers[rng.below(followers.len() as u64) as usize];
    match step {
        Step::IsolateLeader => {
            cluster.links.isolate(leader.id);
            // Cut off, the old leader confirms no read (it cannot know it has seen every write).
            let refused = leader.reads.confirm().await;
            assert!(refused.is_err(), "{what}: the isolated leader node {} confirmed a read: {refused:?}", leader.id);
            let new = cluster.leader(Some(leader.id), &what).await;
            assert_ne!(new.id, leader.id);
            tokio::time::sleep(pause(rng)).await;
        }
        Step::IsolateFollower => {
            cluster.links.isolate(follower);
            tokio::time::sleep(pause(rng)).await;
        }
        Step::SplitAll => {
            let ids: Vec<NodeId> = cluster.members().iter().map(|m| m.id).collect();
            let groups: Vec<&[NodeId]> = ids.iter().map(std::slice::from_ref).collect();
            cluster.links.split(&groups);
            // No majority anywhere: no node confirms a read.
            let alone = cluster.member(follower);
            let refused = alone.reads.confirm().await;
            assert!(refused.is_err(), "{what}: node {follower}, alone, confirmed a read: {refused:?}");
            tokio::time::sleep(pause(rng)).await;
        }
        Step::Transfer => {
            let handed =
                transfer_leadership(&leader.raft, cluster.network_of(leader.id), follower, Duration::from_secs(10))
                    .await;
            assert_eq!(handed, Ok(()), "{what}: node {} hands over to node {follower}", leader.id);
            let new = cluster.leader(None, &what).await;
            assert_eq!(new.id, follower, "{what}: the chosen node leads");
        }
        Step::SnapshotCatchUp => {
            cluster.links.isolate(follower);
            let behind = last_log_index(&cluster.member(follower).raft);
            cluster.log_grows(&leader, behind, 3).await;
            let snapshot = cluster.snapshot_and_purge(&leader, behind).await;
            cluster.links.heal();
            let caught_up = cluster.member(follower);
            caught_up
                .raft
                .wait(Some(WAIT))
                .metrics(
                    |m| m.snapshot.is_some_and(|s| s.index >= snapshot),
                    format!("{what}: node {follower} installs the snapshot at {snapshot}"),
                )
                .await
                .unwrap();
        }
        Step::RestartFollower => {
            let behind = last_log_index(&cluster.member(follower).raft);
            let addr = cluster.stop_node(follower).await;
            let from_snapshot = rng.below(2) == 0;
            let snapshot = if from_snapshot {
                cluster.log_grows(&leader, behind, 3).await;
                Some(cluster.snapshot_and_purge(&leader, behind).await)
            } else {
                tokio::time::sleep(pause(rng)).await;
                None
            };
            cluster.start_again(follower, addr).await;
            if let Some(snapshot) = snapshot {
                let restarted = cluster.member(follower);
                restarted
                    .raft
                    .wait(Some(WAIT))
                    .metrics(
                        |m| m.snapshot.is_some_and(|s| s.index >= snapshot),
                        format!("{what}: restarted node {follower} installs the snapshot at {snapshot}"),
                    )
                    .await
                    .unwrap();
            }
        }
    }
    cluster.settle(&what).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_heal_without_losing_an_acknowledged_write_or_confirming_a_stale_read() {
    let seed: u64 = std::env::var("TOKENLEDGER_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| u64::from_le_bytes(random_bytes()));
    let rounds: usize =
        std::env::var("TOKENLEDGER_PARTITION_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(ROUNDS_DEFAULT);
    eprintln!("cluster partition test: TOKENLEDGER_TEST_SEED={seed} TOKENLEDGER_PARTITION_ROUNDS={rounds}");
    let _seed = SeedOnFailure(seed);
    let mut rng = Rng(seed);

    let mut cluster = Cluster::start().await;
    // Not kept: a clone of a node held here would keep its ledger open when it restarts.
    setup(&cluster.leader(None, "the first election").await.writer).await;

    let model = Arc::new(Mutex::new(Model::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = tokio::task::JoinSet::new();
    for worker in 0..2u64 {
        let worker_seed = seed ^ (worker + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        load.spawn(write_load(cluster.members.clone(), model.clone(), stop.clone(), worker_seed));
        load.spawn(read_load(cluster.members.clone(), model.clone(), stop.clone(), worker_seed.rotate_left(17)));
    }
    load.spawn(sample(cluster.members.clone(), model.clone(), stop.clone()));

    let mut order = STEPS;
    for round in 0..rounds {
        if round % STEPS.len() == 0 {
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i as u64 + 1) as usize);
            }
        }
        let step = order[round % STEPS.len()];
        eprintln!("round {round}: {step:?}");
        run_step(&mut cluster, step, &mut rng, round).await;
        let violations = model.lock().violations.clone();
        assert!(violations.is_empty(), "round {round} ({step:?}): {violations:#?}");
    }

    stop.store(true, Ordering::Release);
    while let Some(task) = load.join_next().await {
        task.unwrap();
    }
    cluster.settle("the end").await;
    let model = Arc::into_inner(model).unwrap().into_inner();
    eprintln!(
        "acknowledged {} issuances and {} revocations; {} confirmed reads, {} refused; {} terms",
        model.issued,
        model.revocations,
        model.confirmed,
        model.refused,
        model.leaders.len()
    );
    assert!(model.violations.is_empty(), "{:#?}", model.violations);
    assert!(model.issued >= 20 && model.revocations >= 1, "too little was acknowledged to check anything");
    assert!(model.confirmed >= 20, "too few confirmed reads to check anything: {}", model.confirmed);

    // Every node: the same events, byte for byte, and every acknowledged write.
    let members = cluster.members();
    assert_eq!(members.len(), 3);
    let first = envelopes_of(members[0].machine.store());
    let now = tokenledger::clock::system().now_ms();
    for member in &members {
        assert_eq!(
            envelopes_of(member.machine.store()),
            first,
            "node {}: the same events as node {}",
            member.id,
            members[0].id
        );
        let state = member.machine.state().read();
        assert_eq!(state.head.seq, first.len() as u64, "node {}", member.id);
        for token in model.live.keys() {
            assert!(
                state.active_token(token, now).is_some(),
                "node {}: an acknowledged issuance is missing",
                member.id
            );
        }
        for token in model.revoked.keys() {
            assert!(state.token(token).is_some(), "node {}: an acknowledged revoked token is missing", member.id);
            assert!(
                state.active_token(token, now).is_none(),
                "node {}: an acknowledged revocation is missing",
                member.id
            );
        }
    }
    drop(members);
    for member in cluster.members() {
        member.writer.stop().await;
    }
    cluster.members.write().clear();
    for node in cluster.nodes.iter_mut() {
        node.stop().await;
    }
}

/// The leader's writer after a proposal whose outcome it did not learn (no quorum within the
/// commit timeout): the entry is still in the leader's log and commits once the quorum is back,
/// so the next batch must be decided only after it is applied. Decided before (the old code),
/// the next batch reused its seqs and every node halted on "event N differs". The followers are
/// kept out of elections so the leader keeps its term through the cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_whose_commit_timed_out_is_applied_before_the_next_is_decided() {
    let mut cluster = Cluster::start().await;
    let leader = cluster.leader(None, "the first election").await;
    setup(&leader.writer).await;
    for member in cluster.members().iter().filter(|m| m.id != leader.id) {
        member.raft.runtime_config().elect(false);
    }

    cluster.links.isolate(leader.id);
    let first = leader.writer.submit(issue(), uuid::Uuid::new_v4().to_string()).await;
    assert!(first.is_err(), "no quorum, so no acknowledgement: {first:?}");
    // The next write is sent while the first is still pending in the leader's log, and the
    // quorum comes back while it waits.
    let writer = leader.writer.clone();
    let second = tokio::spawn(async move { writer.submit(issue(), uuid::Uuid::new_v4().to_string()).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    cluster.links.heal();
    let _ = second.await.unwrap();
    let third = tokio::time::timeout(WAIT, async {
        loop {
            match leader.writer.submit(issue(), uuid::Uuid::new_v4().to_string()).await {
                Ok(Ok(Outcome::Issued(issued))) => return issued,
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await;
    assert!(third.is_ok(), "no write acknowledged after the heal: {}", cluster.describe());
    cluster.settle("after the heal").await;
    let members = cluster.members();
    let first_events = envelopes_of(members[0].machine.store());
    for member in &members {
        assert_ne!(member.raft.metrics().borrow().state, ServerState::Shutdown, "node {} halted", member.id);
        assert_eq!(envelopes_of(member.machine.store()), first_events, "node {}", member.id);
    }
    drop((members, leader));
    for member in cluster.members() {
        member.writer.stop().await;
    }
    cluster.members.write().clear();
    for node in cluster.nodes.iter_mut() {
        node.stop().await;
    }
}
