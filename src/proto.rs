//! Generated protobuf and gRPC code (see `proto/` and `build.rs`).
#![allow(clippy::all, missing_docs)]

tonic::include_proto!("tokenledger.v1");

/// The encoded descriptor set of every proto file, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tokenledger_descriptor.bin"));

/// The ledger's event format.
pub mod ledger {
    tonic::include_proto!("tokenledger.ledger.v1");
}

/// The Raft traffic between cluster nodes (served on the Raft listener only).
pub mod cluster {
    tonic::include_proto!("tokenledger.cluster.v1");
}
