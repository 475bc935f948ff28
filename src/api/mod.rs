//! The api layer: wire formats to domain commands and back. `token` holds the flows shared by
//! both transports; `rest` (axum) and `grpc` (tonic) only translate.

pub(crate) mod admin;
pub(crate) mod audit;
pub(crate) mod authcode;
pub(crate) mod client_auth;
pub(crate) mod discovery;
pub(crate) mod dummy;
pub(crate) mod error;
pub(crate) mod grpc_util;
pub(crate) mod keys;
pub(crate) mod lookup;
pub(crate) mod openapi;
pub(crate) mod ratelimit;
pub(crate) mod rest;
pub(crate) mod throttle;
pub(crate) mod token;
pub mod wire;
