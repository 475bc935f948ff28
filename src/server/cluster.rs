//! Starting a cluster node (SPEC 8, docs/cluster.md): the ledger opened as a replica, the Raft
//! instance over its log and state machine, the Raft listener (mutual TLS when TLS is
//! configured), and the writer that commits through Raft. Also what a node does on its own
//! once it leads (record the ledger's first events and the signing key through Raft) and on a
//! graceful shutdown (hand its leadership over).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::{Raft, SnapshotPolicy};
use parking_lot::RwLock;
use tokio::sync::oneshot;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use super::data_dir::StartError;
use crate::api::app::App;
use crate::clock::Clock;
use crate::config::{ClusterConfig, Config, TlsFiles};
use crate::crypto::keys::ServerKeys;
use crate::crypto::signing::{ALGORITHM, SigningKeys};
use crate::domain::State;
use crate::domain::authcode::SigningKeyActivation;
use crate::ledger::{LedgerHandle, Store};
use crate::replication::network::{ClusterCredential, ForwardSlot, Network, RaftRpc};
use crate::replication::node::ClusterNode;
use crate::replication::peers::{PeersError, check_self, parse_peers};
use crate::replication::proposer::Proposer;
use crate::replication::read_index::ReadIndex;
use crate::replication::state_machine::LedgerMachine;
use crate::replication::{LogStore, NodeId, NodeInfo, StorageTimes};

/// How long a proposal may wait for its commit before its outcome counts as unknown.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);
/// The window in which a follower's reads share one ReadIndex round, and their longest wait.
const READ_WINDOW: Duration = Duration::from_millis(1);
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The pieces of a started node that `data_dir` hands on.
pub struct Started {
    pub node: Arc<ClusterNode>,
    pub writer: LedgerHandle,
    pub raft_addr: SocketAddr,
    /// Stops the Raft listener.
    stop_listener: Option<oneshot::Sender<()>>,
    /// The ledger the state machine applies to, flushed when the node stops.
    machine: LedgerMachine,
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Some(stop) = self.stop_listener.take() {
            let _ = stop.send(());
        }
        // A graceful stop leaves the ledger as applied, not as last fsynced (a SIGKILL leaves the
        // latter, and openraft applies the rest again at the next start).
        if let Err(error) = self.machine.store().flush() {
            tracing::warn!(%error, "could not flush the ledger at shutdown; the next start applies the tail again");
        }
    }
}

/// The voters of `cluster`, checked against this node's id and Raft listener.
pub fn voters(cluster: &ClusterConfig) -> Result<(BTreeMap<NodeId, NodeInfo>, SocketAddr), StartError> {
    let bad = |text: String| StartError::Cluster(text);
    let raft_listen: SocketAddr = cluster
        .raft_listen
        .parse()
        .map_err(|e| bad(format!("raft_listen {:?} is not HOST:PORT with an IP address: {e}", cluster.raft_listen)))?;
    let voters = parse_peers(&cluster.peers).map_err(|e| bad(e.to_string()))?;
    match check_self(cluster.node_id, raft_listen, &voters) {
        Ok(()) => {}
        // Not a voter of the list: a learner-to-be, which the leader adds (`cluster add-learner`).
        Err(PeersError::SelfMissing { .. }) => {
            tracing::info!(
                node_id = cluster.node_id,
                "not among --peers: this node joins when the leader adds it as a learner"
            );
        }
        Err(error) => return Err(bad(error.to_string())),
    }
    Ok((voters, raft_listen))
}

fn raft_config(cluster: &ClusterConfig) -> Result<Arc<openraft::Config>, StartError> {
    let config = openraft::Config {
        cluster_name: "tokenledger".into(),
        heartbeat_interval: cluster.heartbeat_ms,
        election_timeout_min: cluster.election_timeout_min_ms,
        election_timeout_max: cluster.election_timeout_max_ms,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(cluster.snapshot_every_entries),
        // Keep a tail after a snapshot, so a follower a little behind catches up from the log.
        max_in_snapshot_log_to_keep: cluster.snapshot_every_entries.min(10_000),
        ..openraft::Config::default()
    };
    config.validate().map(Arc::new).map_err(|e| StartError::Cluster(format!("raft settings: {e}")))
}

/// The TLS both sides of the Raft traffic use when the server has TLS: this node's certificate
/// and key (the API listener's), and `raft_tls_ca_file` to verify the other nodes, as servers
/// and as clients (mutual TLS).
fn raft_tls(
    files: &TlsFiles,
    ca_path: Option<&std::path::Path>,
) -> Result<(ServerTlsConfig, ClientTlsConfig), StartError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| StartError::Cluster(format!("TLS file {}: {e}", path.display())))
    };
    let Some(ca_path) = ca_path else {
        return Err(StartError::Cluster(
            "cluster mode with TLS needs raft_tls_ca_file: the CA that signed every node's certificate, which the \
             nodes verify each other with (mutual TLS on the Raft listener, docs/cluster.md)"
                .to_owned(),
        ));
    };
    let (cert, key, ca) = (read(&files.cert)?, read(&files.key)?, read(ca_path)?);
    let identity = Identity::from_pem(&cert, &key);
    let ca = Certificate::from_pem(&ca);
    let server = ServerTlsConfig::new().identity(identity.clone()).client_ca_root(ca.clone());
    let client = ClientTlsConfig::new().identity(identity).ca_certificate(ca);
    Ok((server, client))
}

/// Starts the node over `store`/`state` (opened with `ledger::replicated::open_replica`).
/// Runs on a blocking thread of the runtime; Raft's futures run on `runtime`.
pub fn start(
    config: &Config,
    cluster: &ClusterConfig,
    keys: &ServerKeys,
    store: Store,
    state: Arc<RwLock<State>>,
    clock: Arc<dyn Clock>,
    runtime: &tokio::runtime::Handle,
) -> Result<Started, StartError> {
    let (voters, raft_listen) = voters(cluster)?;
    let raft_config = raft_config(cluster)?;
    let credential = ClusterCredential::derive(&keys.cluster_secret());
    let tls = config.tls.as_ref().map(|files| raft_tls(files, cluster.tls_ca.as_deref())).transpose()?;
    let network = Network::new(credential.clone(), tls.as_ref().map(|(_, client)| client.clone()), READ_TIMEOUT);
    let storage_times = Arc::new(StorageTimes::default());
    let log_store = LogStore::new(store.raft_log().map_err(|e| StartError::Cluster(format!("raft log: {e}")))?)
        .with_times(storage_times.clone());
    let machine = LedgerMachine::new(store, state.clone(), &config.data_dir)
        .map_err(|e| StartError::Cluster(format!("raft state machine: {e}")))?
        .with_times(storage_times.clone());
    let (reader, token_ids) = (machine.store().reader(), machine.store().token_ids().clone());
    let committed_head = machine.committed_head();
    let kept_machine = machine.clone();
    let raft = runtime
        .block_on(Raft::new(cluster.node_id, raft_config, network.clone(), log_store, machine))
        .map_err(|e| StartError::Cluster(format!("cannot start raft: {e}")))?;
    let reads = ReadIndex::new(raft.clone(), network.clone(), READ_WINDOW, READ_TIMEOUT);

    let listener = std::net::TcpListener::bind(raft_listen)
        .map_err(|e| StartError::Cluster(format!("cannot listen on raft_listen {raft_listen}: {e}")))?;
    listener.set_nonblocking(true).map_err(|e| StartError::Cluster(e.to_string()))?;
    let raft_addr = listener.local_addr().map_err(|e| StartError::Cluster(e.to_string()))?;
    let forwarder = ForwardSlot::default();
    let service = RaftRpc::service_with_forwarding(
        raft.clone(),
        cluster.node_id,
        credential.clone(),
        reads.clone(),
        forwarder.clone(),
        Some(kept_machine.committed_head()),
    );
    let (stop_listener, stopped) = oneshot::channel::<()>();
    let mut builder = tonic::transport::Server::builder();
    if let Some((server_tls, _)) = &tls {
        builder = builder.tls_config(server_tls.clone()).map_err(|e| StartError::Cluster(format!("raft TLS: {e}")))?;
    }
    let router = builder.add_service(service);
    runtime.spawn(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(%error, "the raft listener failed");
                return;
            }
        };
        // TCP_NODELAY on every accepted connection, as on the API listener: without it a reply
        // written in more than one segment (a forwarded write's answer, an append's) waits for
        // the peer's delayed ACK, up to 40 ms on Linux.
        let incoming =
            tokio_stream::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(listener), |stream| {
                if let Ok(stream) = &stream {
                    let _ = stream.set_nodelay(true);
                }
                stream
            });
        if let Err(error) = router
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await
        {
            tracing::error!(%error, "the raft listener stopped");
        }
    });
    tracing::info!(
        node_id = cluster.node_id,
        raft_listen = %raft_addr,
        key_set = credential.fingerprint(),
        tls = tls.is_some(),
        voters = voters.len(),
        "cluster node started"
    );

    let proposer = Proposer::new(raft.clone(), runtime.clone(), COMMIT_TIMEOUT).with_hand_over(network.hand_over());
    let writer =
        LedgerHandle::spawn_replicated(Arc::new(proposer), reader, token_ids, state, config.writer.clone(), clock)
            .map_err(StartError::Writer)?
            .with_committed_head(committed_head);
    let transfer_timeout = Duration::from_millis(cluster.election_timeout_max_ms * 3);
    let ledger_flush = kept_machine.store().flusher();
    let node = Arc::new(ClusterNode {
        id: cluster.node_id,
        raft,
        reads,
        network,
        voters,
        transfer_timeout,
        forwarder,
        ledger_flush,
        storage_times,
    });
    Ok(Started { node, writer, raft_addr, stop_listener: Some(stop_listener), machine: kept_machine })
}

/// What a node does on its own while it runs: whenever it leads a cluster whose ledger names no
/// signing key yet, it records the active key of `signing-keys.json` (the same file on every
/// node) through Raft; on a new cluster that first batch also opens the chain with
/// `LedgerCreated`.
pub async fn lead_duties(app: Arc<App>, node: Arc<ClusterNode>, file_key_id: String) {
    let mut metrics = node.raft.metrics();
    loop {
        let leads = metrics.borrow().state == openraft::ServerState::Leader;
        if leads {
            activate_signing_key(&app, &app.signing, &file_key_id).await;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

async fn activate_signing_key(app: &App, signing: &SigningKeys, file_key_id: &str) {
    let Some(key) = signing.get(file_key_id) else {
        return;
    };
    // Only a ledger that names no key yet: afterwards keys change by rotation, which goes
    // through the ledger like every write (the file of a node may lag behind it).
    if app.state.read().authorization.active_signing_key.is_some() {
        return;
    }
    // Every node holds this file (copied before its first start), so nothing is sealed.
    let activation = SigningKeyActivation {
        key_id: key.key_id.clone(),
        algorithm: ALGORITHM.to_owned(),
        public_key: key.public_key().to_vec(),
        sealed_private_key: Vec::new(),
    };
    match app.ledger.submit_as(activation, uuid::Uuid::new_v4().to_string()).await {
        Ok(_) => tracing::info!(key_id = %key.key_id, "ID-token signing key recorded through raft"),
        Err(_) => {
            tracing::warn!(key_id = %key.key_id, "could not record the signing key yet; retried on the next leadership change")
        }
    }
}

/// A graceful stop of a cluster node: a leader first hands its leadership to the voter that
/// holds the most of its log (so the cluster does not wait an election timeout), then Raft
/// stops. Called after the writer has stopped, so nothing is proposed meanwhile.
pub async fn leave(node: &ClusterNode) {
    let view = node.view();
    if view.role == crate::replication::node::Role::Leader
        && let Some(target) = view.best_successor()
    {
        match crate::replication::transfer::transfer_leadership(
            &node.raft,
            &node.network,
            target,
            node.transfer_timeout,
        )
        .await
        {
            Ok(()) => tracing::info!(target, "leadership handed over before shutdown"),
            Err(error) => {
                tracing::warn!(%error, "could not hand leadership over before shutdown; the cluster elects a new leader")
            }
        }
    }
    if let Err(error) = node.raft.shutdown().await {
        tracing::warn!(%error, "raft did not stop cleanly");
    }
}

/// On every node: after each applied batch, adopt the ledger's active signing key if this
/// node's key file lacks it (a rotation made on another node), so the key is here before this
/// node could lead and sign with it.
pub async fn adopt_signing_keys(app: Arc<App>) {
    let mut head = app.ledger.committed_head();
    let mut reported: Option<String> = None;
    loop {
        match crate::api::keys::flow::adopt_active_key(&app).await {
            Ok(_) => reported = None,
            Err(problem) if reported.as_deref() != Some(problem.as_str()) => {
                tracing::error!(%problem, "cannot adopt the ledger's ID-token signing key");
                reported = Some(problem);
            }
            Err(_) => {}
        }
        if head.changed().await.is_err() {
            return;
        }
    }
}
