//! The api layer: wire formats to domain commands and back. One folder per service, mirroring
//! proto/tokenledger/v1/*.proto (token, authcode, lookup, admin, keys, audit), each with its flow
//! and its transports; the shared plumbing is in `wire/` (both transports), `rest.rs` (axum) and
//! `grpc_util.rs` (tonic); `router.rs` merges the services' REST routes; `error.rs` is the one table from refusals to the wire.

pub(crate) mod admin;
pub(crate) mod app;
pub(crate) mod audit;
pub(crate) mod authcode;
pub(crate) mod client_auth;
pub(crate) mod cluster;
pub(crate) mod discovery;
pub(crate) mod dummy;
pub(crate) mod error;
pub(crate) mod grpc_util;
pub(crate) mod keys;
pub(crate) mod lookup;
pub(crate) mod openapi;
pub(crate) mod ratelimit;
pub(crate) mod rest;
pub(crate) mod router;
pub(crate) mod throttle;
pub(crate) mod token;
pub mod wire;
