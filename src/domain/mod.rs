//! The pure domain core: the projections ([`State`]), commands, `decide` and `apply`.
//!
//! **Invariant:** nothing here does I/O, reads a clock or draws random numbers; time and
//! random ids come in as arguments. The domain imports no tokio, redb, tonic, axum or http, and
//! refuses in its own words (`error::Refusal`); `api::error` renders refusals for callers.

pub(crate) mod account;
pub(crate) mod apply;
mod apply_account;
pub(crate) mod authcode;
pub(crate) mod bulk;
pub(crate) mod command;
pub(crate) mod decide;
pub(crate) mod directory;
pub(crate) mod shared;
pub(crate) mod signin;
pub mod state;
pub mod tables;

pub(crate) use shared::{error, grant};
pub use shared::{ids, scope};

pub use apply::{Recorded, apply};
pub use bulk::{BlastCredential, BlastRadius, BulkCommand};
pub use command::{
    Command, Context, Decision, FAMILY_LIFETIME_MAX_MS_DEFAULT, FreshIds, Issue, IssueGrant, Outcome, Revoke,
};
pub use directory::DirectoryCommand;
pub use grant::GrantKind;
pub use ids::{FamilyId, TokenId, hex};
pub use state::cutoff::CutoffScope;
pub use state::{State, TokenKind};

/// Decides `command` against `state` at `ctx.now_ms`: the events to record and the answer.
pub fn decide(state: &State, command: &Command, ctx: Context<'_>) -> Decision {
    match command {
        Command::Issue(issue) => decide::decide_issue(state, issue, ctx),
        Command::Revoke(revoke) => decide::decide_revoke(state, revoke, ctx),
        Command::Directory(command) => directory::decide_directory(state, command),
        Command::Account(command) => account::decide_account(state, command, ctx),
        Command::SignInFailed(failure) => signin::decide_failure(state, failure, ctx),
        Command::Authorization(command) => authcode::decide::decide(state, command, ctx),
        Command::Bulk(command) => bulk::decide_bulk(state, command, ctx),
    }
}
