//! ClusterService (cluster.proto): the membership of a cluster (SPEC 8): `flow.rs` what each
//! call does through this node's Raft, `grpc.rs` its transport.

pub(crate) mod flow;
pub(crate) mod grpc;
