//! tokenledger: an OAuth 2.0 token service whose state is a projection of an append-only,
//! hash-chained event ledger. See ARCHITECTURE.md for the map.

// Server code never panics on input: no unwrap/expect/panic outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod api;
pub mod app;
pub mod audit;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod error;
pub mod fsutil;
#[doc(hidden)]
pub mod fuzz_checks;
pub mod ledger;
pub mod metrics;
pub mod proto;
pub mod replication;
pub mod server;
