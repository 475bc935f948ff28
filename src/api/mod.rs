//! The api layer: wire formats to domain commands and back. `token` holds the flows shared by
//! both transports; `rest` (axum) and `grpc` (tonic) only translate.

pub mod admin;
pub mod authcode;
pub mod discovery;
pub mod form;
pub mod grpc;
pub mod grpc_authcode;
pub mod rest;
pub mod rest_authcode;
pub mod signing;
pub mod token;
pub mod wire;
