//! Integration tests: the real server, started in-process on port 0 in a temp dir, driven
//! through its front door with real HTTP and gRPC clients; a few tests run the real binary.

mod authcode;
mod authcode_durability;
mod authcode_grpc;
mod binary;
mod cli;
mod constant_time;
mod crash_kill;
mod crash_storage;
mod directory;
mod durability;
mod formats;
mod fuzz_regressions;
mod grpc;
mod harness;
mod id_token;
mod introspect;
mod limits;
mod logs;
mod lookup;
mod metadata;
mod openapi;
mod ops_metrics;
mod ratelimit;
mod redeem;
mod refresh;
mod replay_property;
mod revoke;
mod signin;
mod storage_faults;
mod tls;
mod token;
