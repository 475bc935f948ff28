//! tokenledger: an OAuth 2.0 token service whose state is a projection of an append-only,
//! hash-chained event ledger. See ARCHITECTURE.md for the map.

// The lint wall (run by `.ci/run` with `cargo clippy --all-targets -- -D warnings`). Server code
// never panics on input: no unwrap/expect/panic, no indexing or slicing that can go out of bounds
// (the few exceptions say why), no placeholders; no lock guard is held across an `.await`.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::todo,
        clippy::unimplemented
    )
)]
#![deny(clippy::await_holding_lock)]

// Modules whose root lists what the binary, tests/it and benches/ use; their parts are
// crate-private, so the compiler reports what nothing uses.
pub mod audit;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod domain;
#[doc(hidden)]
pub mod fuzz_checks;
pub mod ledger;
pub mod proto;
pub mod replication;
pub mod server;

// Crate-private layers.
mod api;
mod fsutil;
mod metrics;

pub use api::app::App;
pub use api::openapi::paths as rest_paths;
pub use api::router::router as rest_router;
pub use api::wire;
