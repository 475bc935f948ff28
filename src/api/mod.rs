//! The api layer: wire formats to domain commands and back. `token` holds the flows shared by
//! both transports; `rest` (axum) and `grpc` (tonic) only translate.

pub mod admin;
pub mod audit;
pub mod authcode;
pub mod bulk;
pub mod client_auth;
pub mod directory;
pub mod discovery;
pub mod dummy;
pub mod form;
pub mod grpc;
pub mod grpc_authcode;
pub mod grpc_users;
pub mod openapi;
pub mod ratelimit;
pub mod rest;
pub mod rest_authcode;
pub mod rest_users;
pub mod signin;
pub mod signing;
pub mod throttle;
pub mod token;
pub mod users;
pub mod wire;
