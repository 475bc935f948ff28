//! The Raft traffic between nodes: openraft's `RaftNetwork` over gRPC (tonic), and the
//! `RaftService` that a node serves on its `--raft-listen` listener
//! (`proto/tokenledger/cluster/v1/raft_service.proto`).
//!
//! Entries travel in their stored encoding ([`codec`]), so a follower stores exactly the bytes
//! the leader sent. Every call carries proof that the sender holds the cluster's key files
//! ([`ClusterCredential`]) and the node id it means to reach; a node refuses anything else, and
//! says which of the two was wrong, since both are operator mistakes (a node started with other
//! key files, an address reused by another node) that must be easy to tell apart in the logs.
//!
//! **Invariant:** a node never acts on a message it cannot decode exactly: an unknown wire
//! version, a missing vote, an entry without payload are refused (`INVALID_ARGUMENT` or
//! `FAILED_PRECONDITION`), never repaired.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, SnapshotMismatch, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{RaftNetwork, RaftNetworkFactory, SnapshotMeta, SnapshotSegmentId, StoredMembership};
use parking_lot::Mutex;
use ring::{digest, hmac};
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Response, Status};

use super::codec::{self, CodecError};
use super::read_index::ReadIndex;
use super::transfer::{HandOver, TimeoutNowHandler};
use super::{NodeId, NodeInfo, TypeConfig};
use crate::domain::ids::hex;
use crate::proto::cluster as wire;
use crate::proto::cluster::raft_service_client::RaftServiceClient;
use crate::proto::cluster::raft_service_server::{RaftService, RaftServiceServer};

/// The wire rules this build follows (`version` of every request).
pub const WIRE_VERSION: u32 = 1;

/// The largest message a node sends or accepts: one replication batch is bounded by
/// [`super::log_store::ENTRIES_READ_BYTES_MAX`] and a snapshot chunk by openraft's
/// `snapshot_max_chunk_size`; this leaves room for both with their framing.
pub const MESSAGE_BYTES_MAX: usize = 32 << 20;

const AUTH_HEADER: &str = "tokenledger-cluster-auth";
const KEYS_HEADER: &str = "tokenledger-cluster-keys";
const TARGET_HEADER: &str = "tokenledger-target-node";
const CREDENTIAL_CONTEXT: &[u8] = b"tokenledger cluster raft rpc v1";

/// What proves a call comes from a node holding the cluster's key files: every call carries an
/// HMAC-SHA256, under a key derived from the cluster's secret, of the method, the node id it
/// means to reach and the message itself. A node without the key files cannot make one, and a
/// call altered on the way (or sent to another node) does not verify, so on a network without
/// TLS an eavesdropper can read the traffic but not inject or redirect it. (Replaying a call
/// whole is harmless to Raft: its term and log ids make it stale or a repeat.) The key set's
/// [`fingerprint`](Self::fingerprint) travels too, so a node can say "other key files" apart
/// from "altered in transit".
#[derive(Clone)]
pub struct ClusterCredential {
    key: hmac::Key,
    fingerprint: String,
}

impl ClusterCredential {
    /// The credential of every node holding `secret` (the same key files on every node, SPEC 8).
    pub fn derive(secret: &[u8]) -> Self {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), CREDENTIAL_CONTEXT);
        let hash = digest::digest(&digest::SHA256, tag.as_ref());
        let fingerprint = hex(hash.as_ref().get(..8).unwrap_or_default());
        Self { key: hmac::Key::new(hmac::HMAC_SHA256, tag.as_ref()), fingerprint }
    }

    /// A short, loggable name of the key set (it reveals nothing about the keys).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    fn tag(&self, method: &str, target: NodeId, message: &impl prost::Message) -> hmac::Tag {
        let mut context = hmac::Context::with_key(&self.key);
        context.update(&(method.len() as u32).to_be_bytes());
        context.update(method.as_bytes());
        context.update(&target.to_be_bytes());
        context.update(&message.encode_to_vec());
        context.sign()
    }

    /// The metadata a call of `method` to `target` carries.
    fn sign<T: prost::Message>(&self, request: &mut Request<T>, method: &str, target: NodeId) {
        let tag = hex(self.tag(method, target, request.get_ref()).as_ref());
        let metadata = request.metadata_mut();
        if let Ok(value) = AsciiMetadataValue::try_from(tag) {
            metadata.insert(AUTH_HEADER, value);
        }
        if let Ok(value) = AsciiMetadataValue::try_from(self.fingerprint.as_str()) {
            metadata.insert(KEYS_HEADER, value);
        }
        metadata.insert(TARGET_HEADER, AsciiMetadataValue::from(target));
    }

    fn verifies(&self, presented: &str, method: &str, target: NodeId, message: &impl prost::Message) -> bool {
        use subtle::ConstantTimeEq as _;
        let expected = hex(self.tag(method, target, message).as_ref());
        expected.len() == presented.len() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
    }
}

impl std::fmt::Debug for ClusterCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCredential").field("fingerprint", &self.fingerprint).finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Client side: openraft's network.

/// openraft's network factory: one [`PeerClient`] per target, connecting lazily over HTTP/2
/// (TLS with a client certificate when `tls` is set).
#[derive(Clone)]
pub struct Network {
    credential: ClusterCredential,
    tls: Option<ClientTlsConfig>,
    connect_timeout: Duration,
    /// One HTTP/2 connection per peer, shared by every client openraft makes (it makes a new
    /// one for each leadership check) and by `ReadIndex` calls; replaced when the address in
    /// the membership changes.
    channels: Arc<Mutex<HashMap<NodeId, (String, Channel)>>>,
    /// Test hook: the links a test has cut ([`Links`]); `None` in production.
    links: Option<(NodeId, Links)>,
    /// Set while this node hands its leadership over ([`super::transfer`]).
    hand_over: HandOver,
}

/// A test hook that cuts the network between nodes of one process (the partition tests):
/// every node's [`Network`] made [`with_links`](Network::with_links) over the same `Links`
/// refuses to call a node in another group, for every call it makes (Raft, `ReadIndex`,
/// `TimeoutNow`, `Forward`, `NodeStatus`), as a peer that cannot be reached. Since each side
/// refuses its own calls, a cut link carries nothing either way; a call already sent when the
/// link is cut completes (a message that was in flight). Production never makes one:
/// [`Network::new`] has none, and nothing outside the tests calls `with_links`.
#[derive(Clone, Default)]
pub struct Links {
    /// Each node's group; a node not named is in group 0. Two nodes talk iff in the same group.
    groups: Arc<Mutex<HashMap<NodeId, u32>>>,
}

impl Links {
    /// Puts each of `groups` apart from the others and from every node not named (group 0).
    pub fn split(&self, groups: &[&[NodeId]]) {
        let mut current = self.groups.lock();
        current.clear();
        for (group, nodes) in (1u32..).zip(groups) {
            for node in *nodes {
                current.insert(*node, group);
            }
        }
    }

    /// Cuts `node` off from every other node.
    pub fn isolate(&self, node: NodeId) {
        self.split(&[&[node]]);
    }

    /// Every link works again.
    pub fn heal(&self) {
        self.groups.lock().clear();
    }

    /// True when `from` and `to` can talk.
    pub fn connected(&self, from: NodeId, to: NodeId) -> bool {
        let groups = self.groups.lock();
        groups.get(&from).copied().unwrap_or(0) == groups.get(&to).copied().unwrap_or(0)
    }
}

impl Network {
    pub fn new(credential: ClusterCredential, tls: Option<ClientTlsConfig>, connect_timeout: Duration) -> Self {
        Self { credential, tls, connect_timeout, channels: Arc::default(), links: None, hand_over: HandOver::default() }
    }

    /// What tells this node's proposer that a leader hand-over runs ([`super::transfer`]).
    pub fn hand_over(&self) -> HandOver {
        self.hand_over.clone()
    }

    /// This network, of node `me`, refusing the links `links` cuts (a test hook, see [`Links`]).
    pub fn with_links(mut self, me: NodeId, links: Links) -> Self {
        self.links = Some((me, links));
        self
    }

    /// `Err` when a test has cut the link to `target` ([`Links`]).
    fn reaches(&self, target: NodeId) -> Result<(), String> {
        reaches(self.links.as_ref(), target)
    }

    /// Asks `leader` for the read index (see [`super::read_index`]); the call's deadline is the
    /// caller's (it runs under a timeout).
    pub async fn read_index(&self, leader: NodeId, node: &NodeInfo) -> Result<Option<super::LogId>, String> {
        let mut client = RaftServiceClient::new(self.channel(leader, node)?);
        let mut request = Request::new(wire::ReadIndexRequest { version: WIRE_VERSION });
        self.credential.sign(&mut request, "ReadIndex", leader);
        match client.read_index(request).await {
            Ok(answer) => Ok(answer.into_inner().read_log_id.as_ref().map(codec::log_id_from_stored)),
            Err(status) => Err(format!("node {leader}: {:?}: {}", status.code(), status.message())),
        }
    }

    /// Tells `voter` that `candidate` is to lead next ([`super::transfer`]).
    pub async fn timeout_now(
        &self,
        voter: NodeId,
        node: &NodeInfo,
        candidate: NodeId,
        hold: Duration,
    ) -> Result<(), String> {
        let mut client = RaftServiceClient::new(self.channel(voter, node)?);
        let hold_millis = u64::try_from(hold.as_millis()).unwrap_or(u64::MAX);
        let mut request = Request::new(wire::TimeoutNowRequest { version: WIRE_VERSION, candidate, hold_millis });
        request.set_timeout(self.connect_timeout.max(Duration::from_secs(1)));
        self.credential.sign(&mut request, "TimeoutNow", voter);
        client
            .timeout_now(request)
            .await
            .map(|_| ())
            .map_err(|status| format!("node {voter}: {:?}: {}", status.code(), status.message()))
    }

    /// Passes a follower's write on to `leader` (see [`Forwarder`]); at most `timeout`.
    pub async fn forward(
        &self,
        leader: NodeId,
        node: &NodeInfo,
        message: wire::ForwardRequest,
        timeout: Duration,
    ) -> Result<wire::ForwardResponse, String> {
        let mut client = RaftServiceClient::new(self.channel(leader, node)?)
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX);
        let mut request = Request::new(message);
        request.set_timeout(timeout);
        self.credential.sign(&mut request, "Forward", leader);
        match client.forward(request).await {
            Ok(answer) => Ok(answer.into_inner()),
            Err(status) => Err(format!("node {leader}: {:?}: {}", status.code(), status.message())),
        }
    }

    /// Asks `target` what it knows of itself (`cluster status`), within `timeout`.
    pub async fn node_status(
        &self,
        target: NodeId,
        node: &NodeInfo,
        timeout: Duration,
    ) -> Result<wire::NodeStatusResponse, String> {
        let mut client = RaftServiceClient::new(self.channel(target, node)?);
        let mut request = Request::new(wire::NodeStatusRequest { version: WIRE_VERSION });
        request.set_timeout(timeout);
        self.credential.sign(&mut request, "NodeStatus", target);
        match client.node_status(request).await {
            Ok(answer) => Ok(answer.into_inner()),
            Err(status) => Err(format!("node {target}: {:?}: {}", status.code(), status.message())),
        }
    }

    /// The connection to `target` at `node`'s address (made lazily, kept for reuse).
    fn channel(&self, target: NodeId, node: &NodeInfo) -> Result<Channel, String> {
        self.reaches(target)?;
        self.connection(target, node)
    }

    /// [`Self::channel`] whatever a test's [`Links`] say now.
    fn connection(&self, target: NodeId, node: &NodeInfo) -> Result<Channel, String> {
        let mut channels = self.channels.lock();
        if let Some((addr, channel)) = channels.get(&target)
            && *addr == node.raft_addr
        {
            return Ok(channel.clone());
        }
        let channel = self.connect(node)?;
        channels.insert(target, (node.raft_addr.clone(), channel.clone()));
        Ok(channel)
    }

    fn connect(&self, node: &NodeInfo) -> Result<Channel, String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", node.raft_addr))
            .map_err(|e| format!("raft address {:?} is not host:port: {e}", node.raft_addr))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| format!("raft address {:?}: TLS settings refused: {e}", node.raft_addr))?;
        }
        Ok(endpoint.connect_lazy())
    }
}

fn reaches(links: Option<&(NodeId, Links)>, target: NodeId) -> Result<(), String> {
    match links {
        Some((me, links)) if !links.connected(*me, target) => {
            Err(format!("node {target}: the test cut the link from node {me}"))
        }
        _ => Ok(()),
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerClient {
        // Connected whatever the links are now: they are checked at every call.
        let client = self.connection(target, node).map(|channel| {
            RaftServiceClient::new(channel)
                .max_decoding_message_size(MESSAGE_BYTES_MAX)
                .max_encoding_message_size(MESSAGE_BYTES_MAX)
        });
        PeerClient { target, client, credential: self.credential.clone(), links: self.links.clone() }
    }
}

/// The connection to one peer.
pub struct PeerClient {
    target: NodeId,
    /// `Err`: the peer's address cannot be used; every call reports it as unreachable.
    client: Result<RaftServiceClient<Channel>, String>,
    credential: ClusterCredential,
    links: Option<(NodeId, Links)>,
}

type RpcError<E = openraft::error::Infallible> = RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>;

impl PeerClient {
    fn request<T: prost::Message>(&self, method: &str, message: T, option: &RPCOption) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(option.hard_ttl());
        self.credential.sign(&mut request, method, self.target);
        request
    }

    fn client(&self) -> Result<RaftServiceClient<Channel>, String> {
        reaches(self.links.as_ref(), self.target)?;
        match &self.client {
            Ok(client) => Ok(client.clone()),
            Err(problem) => Err(problem.clone()),
        }
    }
}

/// A transport failure: the peer is down or refused us (Unreachable: openraft backs off), or the
/// exchange broke in another way (Network: openraft retries soon).
fn transport_error<E: std::error::Error>(target: NodeId, status: Status) -> RPCError<NodeId, NodeInfo, E> {
    let problem =
        std::io::Error::other(format!("raft call to node {target}: {:?}: {}", status.code(), status.message()));
    match status.code() {
        tonic::Code::Unavailable
        | tonic::Code::Unauthenticated
        | tonic::Code::PermissionDenied
        | tonic::Code::FailedPrecondition => RPCError::Unreachable(Unreachable::new(&problem)),
        _ => RPCError::Network(NetworkError::new(&problem)),
    }
}

fn unusable_address<E: std::error::Error>(problem: String) -> RPCError<NodeId, NodeInfo, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(problem)))
}

fn answer_error<E: std::error::Error>(target: NodeId, problem: WireError) -> RPCError<NodeId, NodeInfo, E> {
    let problem = std::io::Error::other(format!("raft answer of node {target}: {problem}"));
    RPCError::Network(NetworkError::new(&problem))
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        let mut client = self.client().map_err(unusable_address)?;
        let message = wire::AppendEntriesRequest {
            version: WIRE_VERSION,
            vote: Some(codec::vote_to_stored(&rpc.vote)),
            prev_log_id: rpc.prev_log_id.as_ref().map(codec::log_id_to_stored),
            entries: rpc.entries.into_iter().map(codec::entry_to_stored).collect(),
            leader_commit: rpc.leader_commit.as_ref().map(codec::log_id_to_stored),
        };
        let answer = client
            .append_entries(self.request("AppendEntries", message, &option))
            .await
            .map_err(|status| transport_error(self.target, status))?
            .into_inner();
        append_response_from_wire(answer).map_err(|e| answer_error(self.target, e))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcError<InstallSnapshotError>> {
        let mut client = self.client().map_err(unusable_address)?;
        let message = wire::InstallSnapshotRequest {
            version: WIRE_VERSION,
            vote: Some(codec::vote_to_stored(&rpc.vote)),
            meta: Some(snapshot_meta_to_wire(&rpc.meta)),
            offset: rpc.offset,
            data: rpc.data,
            done: rpc.done,
        };
        let answer = client
            .install_snapshot(self.request("InstallSnapshot", message, &option))
            .await
            .map_err(|status| transport_error(self.target, status))?
            .into_inner();
        match answer.result {
            Some(wire::install_snapshot_response::Result::Vote(vote)) => {
                Ok(InstallSnapshotResponse { vote: codec::vote_from_stored(&vote) })
            }
            Some(wire::install_snapshot_response::Result::Mismatch(mismatch)) => {
                let mismatch = SnapshotMismatch {
                    expect: SnapshotSegmentId { id: mismatch.expected_snapshot_id, offset: mismatch.expected_offset },
                    got: SnapshotSegmentId { id: mismatch.got_snapshot_id, offset: mismatch.got_offset },
                };
                Err(RPCError::RemoteError(RemoteError::new(
                    self.target,
                    RaftError::APIError(InstallSnapshotError::SnapshotMismatch(mismatch)),
                )))
            }
            None => Err(answer_error(self.target, WireError::Missing("install_snapshot result"))),
        }
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> Result<VoteResponse<NodeId>, RpcError> {
        let mut client = self.client().map_err(unusable_address)?;
        let message = wire::VoteRequest {
            version: WIRE_VERSION,
            vote: Some(codec::vote_to_stored(&rpc.vote)),
            last_log_id: rpc.last_log_id.as_ref().map(codec::log_id_to_stored),
        };
        let answer = client
            .vote(self.request("Vote", message, &option))
            .await
            .map_err(|status| transport_error(self.target, status))?
            .into_inner();
        let vote = answer.vote.ok_or(WireError::Missing("vote")).map_err(|e| answer_error(self.target, e))?;
        Ok(VoteResponse {
            vote: codec::vote_from_stored(&vote),
            vote_granted: answer.vote_granted,
            last_log_id: answer.last_log_id.as_ref().map(codec::log_id_from_stored),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Server side: the RaftService a node serves on its Raft listener.

/// The Raft listener's service, handing every call to this node's Raft instance.
pub struct RaftRpc {
    raft: openraft::Raft<TypeConfig>,
    node_id: NodeId,
    credential: ClusterCredential,
    read_index: ReadIndex,
    timeout_now: Arc<TimeoutNowHandler>,
    forwarder: ForwardSlot,
    /// The ledger head this node has applied (`NodeStatus`), when known.
    head: Option<tokio::sync::watch::Receiver<u64>>,
}

/// What answers the writes followers pass on (`Forward`): the node's own front door, set once
/// the server is built (the Raft listener starts first).
pub trait Forwarder: Send + Sync {
    fn forward(
        &self,
        request: wire::ForwardRequest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = wire::ForwardResponse> + Send + 'static>>;
}

/// Where a node's [`Forwarder`] is put once it exists.
#[derive(Clone, Default)]
pub struct ForwardSlot(Arc<std::sync::OnceLock<Arc<dyn Forwarder>>>);

impl ForwardSlot {
    pub fn set(&self, forwarder: Arc<dyn Forwarder>) {
        let _ = self.0.set(forwarder);
    }
}

impl RaftRpc {
    /// The service for `raft`, the node `node_id`, refusing callers without `credential`;
    /// followers' `ReadIndex` calls join the rounds of `read_index` (this node's own).
    pub fn service(
        raft: openraft::Raft<TypeConfig>,
        node_id: NodeId,
        credential: ClusterCredential,
        read_index: ReadIndex,
    ) -> RaftServiceServer<RaftRpc> {
        Self::service_with_forwarding(raft, node_id, credential, read_index, ForwardSlot::default(), None)
    }

    /// [`Self::service`] that also answers `Forward` with what `forwarder` holds, and reports the
    /// applied ledger head `head` in `NodeStatus`.
    pub fn service_with_forwarding(
        raft: openraft::Raft<TypeConfig>,
        node_id: NodeId,
        credential: ClusterCredential,
        read_index: ReadIndex,
        forwarder: ForwardSlot,
        head: Option<tokio::sync::watch::Receiver<u64>>,
    ) -> RaftServiceServer<RaftRpc> {
        let timeout_now = Arc::default();
        RaftServiceServer::new(RaftRpc { raft, node_id, credential, read_index, timeout_now, forwarder, head })
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX)
    }

    /// Refuses a call that was not made for this node by a holder of the cluster's key files,
    /// saying which: other key files, another node meant, or altered on the way.
    fn admit<T: prost::Message>(&self, method: &str, request: &Request<T>) -> Result<(), Status> {
        let metadata = request.metadata();
        let text = |name: &str| metadata.get(name).and_then(|v| v.to_str().ok());
        let keys = text(KEYS_HEADER).unwrap_or("none");
        if keys != self.credential.fingerprint() {
            return Err(Status::permission_denied(format!(
                "refused by node {}: the caller's key files differ from this node's (caller key set {keys}, this node {}); \
                 copy the cluster's key files into the node's data directory before its first start",
                self.node_id,
                self.credential.fingerprint(),
            )));
        }
        let target = text(TARGET_HEADER).and_then(|v| v.parse::<NodeId>().ok());
        if target != Some(self.node_id) {
            return Err(Status::failed_precondition(format!(
                "this is node {}, not node {}: the membership's address for that node reaches another node",
                self.node_id,
                target.map_or_else(|| "(none given)".to_owned(), |id| id.to_string()),
            )));
        }
        let presented = text(AUTH_HEADER).unwrap_or("");
        if !self.credential.verifies(presented, method, self.node_id, request.get_ref()) {
            return Err(Status::permission_denied(format!(
                "refused by node {}: the call's authentication does not verify (same key set {keys}): it was altered on the way \
                 or not made by a cluster node",
                self.node_id
            )));
        }
        Ok(())
    }
}

fn check_version(version: u32) -> Result<(), Status> {
    if version == WIRE_VERSION {
        Ok(())
    } else {
        Err(Status::failed_precondition(format!(
            "raft wire version {version} is not known to this node (it speaks {WIRE_VERSION}); upgrade it first"
        )))
    }
}

/// openraft's own failures (the node is shutting down or stopped on a storage error).
fn fatal_status<E: std::fmt::Display>(error: RaftError<NodeId, E>) -> Status {
    Status::unavailable(format!("raft on this node cannot answer: {error}"))
}

#[tonic::async_trait]
impl RaftService for RaftRpc {
    async fn append_entries(
        &self,
        request: Request<wire::AppendEntriesRequest>,
    ) -> Result<Response<wire::AppendEntriesResponse>, Status> {
        self.admit("AppendEntries", &request)?;
        let message = request.into_inner();
        check_version(message.version)?;
        let rpc = append_request_from_wire(message).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let answer = self.raft.append_entries(rpc).await.map_err(fatal_status)?;
        Ok(Response::new(append_response_to_wire(answer)))
    }

    async fn vote(&self, request: Request<wire::VoteRequest>) -> Result<Response<wire::VoteResponse>, Status> {
        self.admit("Vote", &request)?;
        let message = request.into_inner();
        check_version(message.version)?;
        let vote = message.vote.ok_or_else(|| Status::invalid_argument("vote request without a vote"))?;
        let rpc = VoteRequest {
            vote: codec::vote_from_stored(&vote),
            last_log_id: message.last_log_id.as_ref().map(codec::log_id_from_stored),
        };
        let answer = self.raft.vote(rpc).await.map_err(fatal_status)?;
        Ok(Response::new(wire::VoteResponse {
            vote: Some(codec::vote_to_stored(&answer.vote)),
            vote_granted: answer.vote_granted,
            last_log_id: answer.last_log_id.as_ref().map(codec::log_id_to_stored),
        }))
    }

    async fn install_snapshot(
        &self,
        request: Request<wire::InstallSnapshotRequest>,
    ) -> Result<Response<wire::InstallSnapshotResponse>, Status> {
        self.admit("InstallSnapshot", &request)?;
        let message = request.into_inner();
        check_version(message.version)?;
        let vote = message.vote.ok_or_else(|| Status::invalid_argument("snapshot chunk without a vote"))?;
        let meta = message.meta.ok_or_else(|| Status::invalid_argument("snapshot chunk without its meta"))?;
        let meta = snapshot_meta_from_wire(meta).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let rpc = InstallSnapshotRequest {
            vote: codec::vote_from_stored(&vote),
            meta,
            offset: message.offset,
            data: message.data,
            done: message.done,
        };
        let result = match self.raft.install_snapshot(rpc).await {
            Ok(answer) => wire::install_snapshot_response::Result::Vote(codec::vote_to_stored(&answer.vote)),
            Err(RaftError::APIError(InstallSnapshotError::SnapshotMismatch(mismatch))) => {
                wire::install_snapshot_response::Result::Mismatch(wire::SnapshotMismatch {
                    expected_snapshot_id: mismatch.expect.id,
                    expected_offset: mismatch.expect.offset,
                    got_snapshot_id: mismatch.got.id,
                    got_offset: mismatch.got.offset,
                })
            }
            Err(error) => return Err(fatal_status(error)),
        };
        Ok(Response::new(wire::InstallSnapshotResponse { result: Some(result) }))
    }

    async fn read_index(
        &self,
        request: Request<wire::ReadIndexRequest>,
    ) -> Result<Response<wire::ReadIndexResponse>, Status> {
        self.admit("ReadIndex", &request)?;
        check_version(request.into_inner().version)?;
        let (state, leader) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            (metrics.state, metrics.current_leader)
        };
        if state != openraft::ServerState::Leader {
            let leader = leader.map_or_else(|| "none known".to_owned(), |id| format!("node {id}"));
            return Err(Status::failed_precondition(format!(
                "node {} is not the leader (leader: {leader})",
                self.node_id
            )));
        }
        match self.read_index.read_index().await {
            Ok(read) => {
                Ok(Response::new(wire::ReadIndexResponse { read_log_id: read.as_ref().map(codec::log_id_to_stored) }))
            }
            Err(error) => Err(Status::unavailable(format!("node {}: {error}", self.node_id))),
        }
    }

    async fn timeout_now(
        &self,
        request: Request<wire::TimeoutNowRequest>,
    ) -> Result<Response<wire::TimeoutNowResponse>, Status> {
        self.admit("TimeoutNow", &request)?;
        let message = request.into_inner();
        check_version(message.version)?;
        let hold = Duration::from_millis(message.hold_millis.min(TIMEOUT_NOW_HOLD_MAX_MILLIS));
        self.timeout_now.handle(self.raft.clone(), self.node_id, message.candidate, hold);
        Ok(Response::new(wire::TimeoutNowResponse {}))
    }

    async fn node_status(
        &self,
        request: Request<wire::NodeStatusRequest>,
    ) -> Result<Response<wire::NodeStatusResponse>, Status> {
        self.admit("NodeStatus", &request)?;
        check_version(request.into_inner().version)?;
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        Ok(Response::new(wire::NodeStatusResponse {
            role: super::node::Role::of(metrics.state).name().to_owned(),
            term: metrics.current_term,
            leader_id: metrics.current_leader.unwrap_or(0),
            applied_index: metrics.last_applied.map_or(0, |l| l.index),
            last_log_index: metrics.last_log_index.unwrap_or(0),
            applied_seq: self.head.as_ref().map_or(0, |head| *head.borrow()),
        }))
    }

    async fn forward(&self, request: Request<wire::ForwardRequest>) -> Result<Response<wire::ForwardResponse>, Status> {
        self.admit("Forward", &request)?;
        let message = request.into_inner();
        check_version(message.version)?;
        let Some(forwarder) = self.forwarder.0.get().cloned() else {
            return Err(Status::unavailable(format!("node {} is starting and serves no requests yet", self.node_id)));
        };
        Ok(Response::new(forwarder.forward(message).await))
    }
}

/// The longest a `TimeoutNow` may hold a voter's elections back, whatever the sender asks.
/// (Forward is answered in the impl above.)
const TIMEOUT_NOW_HOLD_MAX_MILLIS: u64 = 60_000;

// ---------------------------------------------------------------------------------------------
// Conversions. Both directions are here, so a test can check that they are inverse.

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

pub fn append_request_from_wire(
    message: wire::AppendEntriesRequest,
) -> Result<AppendEntriesRequest<TypeConfig>, WireError> {
    let vote = message.vote.ok_or(WireError::Missing("append_entries vote"))?;
    let entries = message.entries.into_iter().map(codec::entry_from_stored).collect::<Result<Vec<_>, _>>()?;
    Ok(AppendEntriesRequest {
        vote: codec::vote_from_stored(&vote),
        prev_log_id: message.prev_log_id.as_ref().map(codec::log_id_from_stored),
        entries,
        leader_commit: message.leader_commit.as_ref().map(codec::log_id_from_stored),
    })
}

pub fn append_response_to_wire(answer: AppendEntriesResponse<NodeId>) -> wire::AppendEntriesResponse {
    use wire::append_entries_response::Result as Wire;
    let result = match answer {
        AppendEntriesResponse::Success => Wire::Success(wire::Accepted {}),
        AppendEntriesResponse::PartialSuccess(matching) => {
            Wire::PartialSuccess(wire::PartialSuccess { matching: matching.as_ref().map(codec::log_id_to_stored) })
        }
        AppendEntriesResponse::Conflict => Wire::Conflict(wire::Accepted {}),
        AppendEntriesResponse::HigherVote(vote) => Wire::HigherVote(codec::vote_to_stored(&vote)),
    };
    wire::AppendEntriesResponse { result: Some(result) }
}

pub fn append_response_from_wire(
    answer: wire::AppendEntriesResponse,
) -> Result<AppendEntriesResponse<NodeId>, WireError> {
    use wire::append_entries_response::Result as Wire;
    Ok(match answer.result.ok_or(WireError::Missing("append_entries result"))? {
        Wire::Success(_) => AppendEntriesResponse::Success,
        Wire::PartialSuccess(partial) => {
            AppendEntriesResponse::PartialSuccess(partial.matching.as_ref().map(codec::log_id_from_stored))
        }
        Wire::Conflict(_) => AppendEntriesResponse::Conflict,
        Wire::HigherVote(vote) => AppendEntriesResponse::HigherVote(codec::vote_from_stored(&vote)),
    })
}

pub fn snapshot_meta_to_wire(meta: &SnapshotMeta<NodeId, NodeInfo>) -> wire::SnapshotMeta {
    wire::SnapshotMeta {
        last_log_id: meta.last_log_id.as_ref().map(codec::log_id_to_stored),
        membership_log_id: meta.last_membership.log_id().as_ref().map(codec::log_id_to_stored),
        membership: Some(codec::membership_to_stored(meta.last_membership.membership())),
        snapshot_id: meta.snapshot_id.clone(),
    }
}

pub fn snapshot_meta_from_wire(meta: wire::SnapshotMeta) -> Result<SnapshotMeta<NodeId, NodeInfo>, WireError> {
    let membership_log_id = meta.membership_log_id.as_ref().map(codec::log_id_from_stored);
    let stored = meta.membership.ok_or(WireError::Missing("snapshot membership"))?;
    let membership = codec::membership_from_stored(stored, membership_log_id.map_or(0, |id| id.index))?;
    Ok(SnapshotMeta {
        last_log_id: meta.last_log_id.as_ref().map(codec::log_id_from_stored),
        last_membership: StoredMembership::new(membership_log_id, membership),
        snapshot_id: meta.snapshot_id,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::replication::{Entry, LogId, Membership, Vote};

    fn log_id(term: u64, node: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, node), index)
    }

    #[test]
    fn append_requests_cross_the_wire_unchanged() {
        let entries = vec![
            Entry { log_id: log_id(2, 1, 5), payload: EntryPayload::Blank },
            Entry {
                log_id: log_id(2, 1, 6),
                payload: EntryPayload::Normal(crate::proto::ledger::RaftBatch {
                    version: 1,
                    envelopes: vec![vec![1, 2, 3]],
                    decided_term: 2,
                }),
            },
        ];
        for (prev, commit) in [(None, None), (Some(log_id(1, 3, 4)), Some(log_id(2, 1, 5)))] {
            let rpc = AppendEntriesRequest::<TypeConfig> {
                vote: Vote::new_committed(2, 1),
                prev_log_id: prev,
                entries: entries.clone(),
                leader_commit: commit,
            };
            let message = wire::AppendEntriesRequest {
                version: WIRE_VERSION,
                vote: Some(codec::vote_to_stored(&rpc.vote)),
                prev_log_id: rpc.prev_log_id.as_ref().map(codec::log_id_to_stored),
                entries: rpc.entries.clone().into_iter().map(codec::entry_to_stored).collect(),
                leader_commit: rpc.leader_commit.as_ref().map(codec::log_id_to_stored),
            };
            let back = append_request_from_wire(message).unwrap();
            assert_eq!(
                (back.vote, back.prev_log_id, back.entries, back.leader_commit),
                (rpc.vote, prev, entries.clone(), commit)
            );
        }
    }

    #[test]
    fn append_responses_cross_the_wire_unchanged() {
        let answers = || {
            [
                AppendEntriesResponse::Success,
                AppendEntriesResponse::PartialSuccess(None),
                AppendEntriesResponse::PartialSuccess(Some(log_id(3, 2, 9))),
                AppendEntriesResponse::Conflict,
                AppendEntriesResponse::HigherVote(Vote::new(4, 3)),
            ]
        };
        for (answer, expected) in answers().into_iter().zip(answers()) {
            assert_eq!(append_response_from_wire(append_response_to_wire(answer)).unwrap(), expected);
        }
        assert!(append_response_from_wire(wire::AppendEntriesResponse { result: None }).is_err());
    }

    #[test]
    fn snapshot_metas_cross_the_wire_unchanged() {
        let node = |addr: &str| NodeInfo { raft_addr: addr.to_owned() };
        let membership = Membership::new(
            vec![BTreeSet::from([1, 2, 3])],
            BTreeMap::from([(1, node("a:1")), (2, node("b:2")), (3, node("c:3")), (4, node("d:4"))]),
        );
        for (last, member_at) in [(None, None), (Some(log_id(5, 2, 100)), Some(log_id(4, 1, 7)))] {
            let meta = SnapshotMeta {
                last_log_id: last,
                last_membership: StoredMembership::new(member_at, membership.clone()),
                snapshot_id: "5-100-1".to_owned(),
            };
            assert_eq!(snapshot_meta_from_wire(snapshot_meta_to_wire(&meta)).unwrap(), meta);
        }
    }

    #[test]
    fn a_call_verifies_only_unchanged_for_its_method_and_target_under_the_same_keys() {
        let ours = ClusterCredential::derive(b"the cluster's secret");
        let theirs = ClusterCredential::derive(b"another cluster's secret");
        let message = wire::VoteRequest { version: WIRE_VERSION, vote: None, last_log_id: None };
        let tag = |credential: &ClusterCredential, method, target, message: &wire::VoteRequest| {
            hex(credential.tag(method, target, message).as_ref())
        };
        let good = tag(&ours, "Vote", 2, &message);
        assert!(ours.verifies(&good, "Vote", 2, &message));
        assert!(!ours.verifies(&tag(&theirs, "Vote", 2, &message), "Vote", 2, &message), "other keys");
        assert!(!ours.verifies(&good, "Vote", 3, &message), "meant for another node");
        assert!(!ours.verifies(&good, "ReadIndex", 2, &message), "another method");
        let altered = wire::VoteRequest { version: WIRE_VERSION + 1, ..message };
        assert!(!ours.verifies(&good, "Vote", 2, &altered), "altered");
        assert!(!ours.verifies("", "Vote", 2, &message));
        assert!(!ours.verifies(&good[..63], "Vote", 2, &message));
        assert_ne!(ours.fingerprint(), theirs.fingerprint());
        assert_eq!(ours.fingerprint(), ClusterCredential::derive(b"the cluster's secret").fingerprint());
        assert_eq!(ours.fingerprint().len(), 16);
    }
}
