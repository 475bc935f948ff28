//! Integration tests: the real server, started in-process on port 0 in a temp dir, driven
//! through its front door with real HTTP and gRPC clients; a few tests run the real binary.

mod audit;
mod audit_cli;
mod audit_history;
mod audit_verify;
mod binary;
mod bulk;
mod bulk_property;
mod durability;
mod formats;
mod grpc;
mod harness;
mod introspect;
mod refresh;
mod replay_property;
mod revoke;
mod token;
