//! Integration tests: the real server, started in-process on port 0 in a temp dir, driven
//! through its front door with real HTTP and gRPC clients; a few tests run the real binary.

mod authcode;
mod authcode_durability;
mod authcode_grpc;
mod binary;
mod durability;
mod grpc;
mod harness;
mod id_token;
mod introspect;
mod metadata;
mod redeem;
mod refresh;
mod revoke;
mod token;
