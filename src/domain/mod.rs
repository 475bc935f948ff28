//! The pure domain core: the projections ([`State`]), commands, `decide` and `apply`.
//!
//! **Invariant:** nothing here does I/O, reads a clock or draws random numbers; time and
//! random ids come in as arguments. The domain imports no tokio, redb, tonic or axum.

pub mod account;
pub mod apply;
mod apply_account;
pub mod authcode;
pub mod bulk;
pub mod command;
pub mod cutoff;
pub mod decide;
pub mod directory;
pub mod ids;
pub mod scope;
pub mod signin;
pub mod state;
pub mod tables;
pub mod validity;

pub use apply::{Recorded, apply};
pub use command::{Command, Context, Decision};
pub use state::State;

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
