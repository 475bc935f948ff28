//! The api layer: wire formats to domain commands and back. `token` holds the flows shared by
//! both transports; `rest` (axum) and `grpc` (tonic) only translate.

pub mod admin;
pub mod audit;
pub mod bulk;
pub mod form;
pub mod grpc;
pub mod rest;
pub mod token;
pub mod wire;
