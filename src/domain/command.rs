//! Commands (what a caller asks the writer to do) over every aggregate, their outcomes, the
//! typed answer of each ([`Answered`]), and the dispatch of their conflict keys, which let the
//! writer put independent commands in one batch.

use super::authcode::{AuthorizationCommand, AuthorizationOutcome, CodeRequest, SigningKeyActivation};
use super::bulk::{BulkCommand, BulkOutcome};
use super::directory::account::AccountCommand;
use super::directory::{DirectoryCommand, DirectoryError, DirectoryOutcome};
use super::shared::conflict::{ConflictKeys, ConflictSeed};
use super::shared::error::Refusal;
use super::shared::ids::TokenId;
use super::signin::SignInFailure;
use super::state::State;
use super::token::{Issue, Issued, Revoke};

pub enum Command {
    Issue(Issue),
    Revoke(Revoke),
    Directory(DirectoryCommand),
    /// A change to an existing client or user.
    Account(AccountCommand),
    /// A failed password sign-in, recorded before the caller hears CMN_90015.
    SignInFailed(SignInFailure),
    Authorization(AuthorizationCommand),
    /// Bulk revocation and blast-radius containment (operator commands).
    Bulk(BulkCommand),
    /// The record of a projection snapshot this node wrote (`snapshot_record`).
    RecordSnapshot(super::snapshot_record::RecordSnapshot),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Issued(Issued),
    Revoked,
    Directory(DirectoryOutcome),
    /// An account change was recorded.
    Changed,
    Authorization(AuthorizationOutcome),
    Bulk(BulkOutcome),
    /// A node's record (a projection snapshot's) was appended.
    Recorded,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Rejection {
    Refused(Refusal),
    Directory(DirectoryError),
}

/// A command with the answer its decider gives, so that a caller of the writer
/// (`LedgerHandle::submit_as`) matches only what can happen. [`Answered::answer`] is the one
/// place that knows which [`Outcome`] and [`Rejection`] each decider produces; a mismatch
/// there would be a bug in a decider, and is answered as [`Refusal::Inconsistent`] or a
/// directory error instead of a panic.
pub trait Answered: Sized {
    type Answer;
    type Refusal;
    fn into_command(self) -> Command;
    fn answer(outcome: Result<Outcome, Rejection>) -> Result<Self::Answer, Self::Refusal>;
}

fn inconsistent_directory() -> DirectoryError {
    DirectoryError::Invalid("unexpected answer from the ledger".to_owned())
}

/// The answer of a token decider: a refusal, or what `pick` finds in the outcome.
fn token_answer<T>(outcome: Result<Outcome, Rejection>, pick: impl FnOnce(Outcome) -> Option<T>) -> Result<T, Refusal> {
    match outcome {
        Ok(outcome) => pick(outcome).ok_or(Refusal::Inconsistent),
        Err(Rejection::Refused(refusal)) => Err(refusal),
        Err(Rejection::Directory(_)) => Err(Refusal::Inconsistent),
    }
}

/// The answer of a directory decider: a directory error, or what `pick` finds in the outcome.
fn directory_answer<T>(
    outcome: Result<Outcome, Rejection>,
    pick: impl FnOnce(Outcome) -> Option<T>,
) -> Result<T, DirectoryError> {
    match outcome {
        Ok(outcome) => pick(outcome).ok_or_else(inconsistent_directory),
        Err(Rejection::Directory(error)) => Err(error),
        Err(Rejection::Refused(_)) => Err(inconsistent_directory()),
    }
}

impl Answered for Issue {
    type Answer = Issued;
    type Refusal = Refusal;
    fn into_command(self) -> Command {
        Command::Issue(self)
    }
    fn answer(outcome: Result<Outcome, Rejection>) -> Result<Issued, Refusal> {
        token_answer(outcome, |o| if let Outcome::Issued(issued) = o { Some(issued) } else { None })
    }
}

impl Answered for Revoke {
    type Answer = ();
    type Refusal = Refusal;
    fn into_command(self) -> Command {
        Command::Revoke(self)
    }
    fn answer(outcome: Result<Outcome, Rejection>) -> Result<(), Refusal> {
        token_answer(outcome, |o| matches!(o, Outcome::Revoked).then_some(()))
    }
}

impl Answered for SignInFailure {
    /// Recording a failure always refuses the sign-in (CMN_90015, or CMN_90009 once locked).
    type Answer = std::convert::Infallible;
    type Refusal = Refusal;
    fn into_command(self) -> Command {
        Command::SignInFailed(self)
    }
    fn answer(outcome: Result<Outcome, Rejection>) -> Result<std::convert::Infallible, Refusal> {
        token_answer(outcome, |_| None)
    }
}

impl Answered for CodeRequest {
    /// The code's id and the redirect URI it goes to.
    type Answer = (TokenId, String);
    type Refusal = Refusal;
    fn into_command(self) -> Command {
        Command::Authorization(AuthorizationCommand::IssueCode(Box::new(self)))
    }
    fn answer(outcome: Result<Outcome, Rejection>) -> Result<(TokenId, String), Refusal> {
        token_answer(outcome, |o| match o {
            Outcome::Authorization(AuthorizationOutcome::CodeIssued { code, redirect_uri, .. }) => {
                Some((code, redirect_uri))
            }
            _ => None,
        })
    }
}

impl Answered for SigningKeyActivation {
    /// The key that signed before, if any.
    type Answer = Option<String>;
    type Refusal = Refusal;
    fn into_command(self) -> Command {
        Command::Authorization(AuthorizationCommand::ActivateSigningKey(self))
    }
    fn answer(outcome: Result<Outcome, Rejection>) -> Result<Option<String>, Refusal> {
        token_answer(outcome, |o| match o {
            Outcome::Authorization(AuthorizationOutcome::SigningKeyActivated { previous_key_id }) => {
                Some(previous_key_id)
            }
            _ => None,
        })
    }
}

impl Answered for DirectoryCommand {
    type Answer = DirectoryOutcome;
    type Refusal = DirectoryError;
    fn into_command(self) -> Command {
        Command::Directory(self)
    }
    fn answer(outcome: Result<Outcome, Rejection>) -> Result<DirectoryOutcome, DirectoryError> {
        directory_answer(outcome, |o| if let Outcome::Directory(outcome) = o { Some(outcome) } else { None })
    }
}

impl Answered for AccountCommand {
    type Answer = ();
    type Refusal = DirectoryError;
    fn into_command(self) -> Command {
        Command::Account(self)
    }
    fn answer(outcome: Result<Outcome, Rejection>) -> Result<(), DirectoryError> {
        directory_answer(outcome, |o| matches!(o, Outcome::Changed).then_some(()))
    }
}

impl Answered for BulkCommand {
    type Answer = BulkOutcome;
    type Refusal = DirectoryError;
    fn into_command(self) -> Command {
        Command::Bulk(self)
    }
    fn answer(outcome: Result<Outcome, Rejection>) -> Result<BulkOutcome, DirectoryError> {
        directory_answer(outcome, |o| if let Outcome::Bulk(outcome) = o { Some(outcome) } else { None })
    }
}

impl Command {
    /// What this command touches, looked up in the committed `state`, hashed with `seed`.
    pub fn conflict_keys(&self, state: &State, transaction_id: &str, seed: ConflictSeed) -> ConflictKeys {
        let mut keys = ConflictKeys::new(seed);
        match self {
            Command::Issue(issue) => issue.conflict_keys(state, transaction_id, &mut keys, |redemption, keys| {
                super::authcode::decide::redemption_keys(state, redemption, keys)
            }),
            Command::Revoke(revoke) => revoke.conflict_keys(state, &mut keys),
            Command::Directory(command) => command.conflict_keys(&mut keys),
            Command::Account(command) => command.conflict_keys(&mut keys),
            Command::SignInFailed(failure) => failure.conflict_keys(&mut keys),
            Command::Authorization(command) => command.conflict_keys(state, &mut keys),
            Command::Bulk(command) => command.conflict_keys(&mut keys),
            // Reads and writes no entity.
            Command::RecordSnapshot(_) => {}
        }
        keys
    }
}
