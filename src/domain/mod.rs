//! The pure domain core: the projections ([`State`]), commands, `decide` and `apply`.
//!
//! One folder per aggregate, each with its commands, `decide` and `apply` side by side:
//! `token/`, `authcode/`, `directory/` (with the account changes), `signin/`, `bulk/`. Below
//! them `state/` holds every projection `State` is made of and `shared/` the vocabulary they
//! all speak; neither imports an aggregate. Above them this file and `command.rs` (the
//! [`Command`] and [`Outcome`] enums) and `apply.rs` dispatch to the aggregates, which decide
//! into their own typed [`Decision`]s.
//!
//! **Invariant:** nothing here does I/O, reads a clock or draws random numbers; time and
//! random ids come in as arguments. The domain imports no tokio, redb, tonic, axum or http, and
//! refuses in its own words (`error::Refusal`); `api::error` renders refusals for callers.

pub(crate) mod apply;
pub(crate) mod authcode;
pub(crate) mod bulk;
pub(crate) mod command;
pub(crate) mod directory;
pub(crate) mod shared;
pub(crate) mod signin;
pub(crate) mod snapshot_record;
pub mod state;
pub mod tables;
pub(crate) mod token;

pub(crate) use shared::{error, grant};
pub use shared::{ids, scope};

pub use apply::{apply, apply_to_tables, set_head};
pub use bulk::{BlastCredential, BlastRadius, BulkCommand};
pub use command::{Command, Outcome, Rejection};
pub use directory::DirectoryCommand;
pub use grant::GrantKind;
pub use ids::{FamilyId, TokenId, hex};
pub use shared::conflict::{ConflictKeys, ConflictSeed};
pub use shared::decision::{Context, Decision, Recorded};
pub use snapshot_record::RecordSnapshot;
pub use state::cutoff::CutoffScope;
pub use state::{State, TokenKind};
pub use token::{FAMILY_LIFETIME_MAX_MS_DEFAULT, FreshIds, Issue, IssueGrant, Issued, Revoke};

/// Decides `command` against `state` at `ctx.now_ms`: the events to record and the answer.
/// Each aggregate decides into its own answer and refusal; this wraps them.
pub fn decide(state: &State, command: &Command, ctx: Context<'_>) -> Decision<Outcome, Rejection> {
    match command {
        Command::Issue(issue) => token::decide::decide_issue(state, issue, ctx, |redemption| {
            authcode::decide::redeem(state, issue, redemption, ctx)
        })
        .map(Outcome::Issued, Rejection::Refused),
        Command::Revoke(revoke) => {
            token::decide::decide_revoke(state, revoke, ctx).map(|()| Outcome::Revoked, Rejection::Refused)
        }
        Command::Directory(command) => {
            directory::decide_directory(state, command).map(Outcome::Directory, Rejection::Directory)
        }
        Command::Account(command) => {
            directory::account::decide_account(state, command, ctx).map(|()| Outcome::Changed, Rejection::Directory)
        }
        Command::SignInFailed(failure) => {
            signin::decide_failure(state, failure, ctx).map(|never| match never {}, Rejection::Refused)
        }
        Command::Authorization(command) => {
            authcode::decide::decide(state, command, ctx).map(Outcome::Authorization, Rejection::Refused)
        }
        Command::Bulk(command) => bulk::decide_bulk(state, command, ctx).map(Outcome::Bulk, Rejection::Directory),
        Command::RecordSnapshot(record) => {
            snapshot_record::decide(state, record).map(|()| Outcome::Recorded, Rejection::Refused)
        }
    }
}
