//! Commands (what a caller asks the writer to do), their outcomes, and the conflict keys that
//! let the writer put independent commands in one batch.

use std::sync::Arc;

use super::account::AccountCommand;
use super::authcode::{AuthorizationCommand, AuthorizationOutcome, CodeRedemption, CodeRequest, SigningKeyActivation};
use super::bulk::{BulkCommand, BulkOutcome};
use super::directory::{DirectoryCommand, DirectoryError, DirectoryOutcome};
use super::shared::ids::{FamilyId, TokenId};
use super::shared::scope::ScopeList;
use super::signin::SignInFailure;
use super::state::{State, TokenKind};
use crate::domain::shared::error::Refusal;
use crate::proto::ledger::Event;

pub use super::shared::conflict::{ConflictKeys, ConflictSeed, Entity};
pub use super::shared::decision::Context;

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
}

/// A token request whose caller has been authenticated (client secret, and for the password
/// grant the user's password) by the api layer.
#[derive(Clone, Debug)]
pub struct Issue {
    pub client_id: Arc<str>,
    /// The `institutionId` header, already checked for syntax.
    pub institution_id: Option<String>,
    pub grant: IssueGrant,
    /// `None` when the request named no scopes.
    pub requested_scopes: Option<Vec<Box<str>>>,
    /// Keyed digest of the request without secrets, for idempotent retries.
    pub fingerprint: [u8; 32],
    /// No token of a refresh-token family outlives the family's start by more than this
    /// (`family_lifetime_max_secs`), however often it is refreshed.
    pub family_lifetime_max_ms: i64,
    /// Random ids for whatever this request mints (the domain draws no randomness itself).
    pub fresh: FreshIds,
}

#[derive(Clone, Debug)]
pub enum IssueGrant {
    ClientCredentials,
    Password { login_id: String },
    Refresh { token: TokenId },
    AuthorizationCode(CodeRedemption),
}

#[derive(Clone, Copy, Debug)]
pub struct FreshIds {
    pub access: TokenId,
    pub refresh: TokenId,
    pub family: FamilyId,
}

/// The default of `family_lifetime_max_secs`: 90 days.
pub const FAMILY_LIFETIME_MAX_MS_DEFAULT: i64 = 90 * 24 * 3600 * 1000;

/// An RFC 7009 revocation by the token's owning client.
#[derive(Clone, Debug)]
pub struct Revoke {
    pub client_id: Arc<str>,
    pub token: TokenId,
    pub kind: TokenKind,
}

/// The result of deciding one command: events to append (possibly even when the command is
/// refused, e.g. a family revocation on refresh-token reuse) and the answer for the caller.
#[derive(Debug)]
pub struct Decision {
    pub events: Vec<Event>,
    pub outcome: Result<Outcome, Rejection>,
}

impl Decision {
    pub fn ok(events: Vec<Event>, outcome: Outcome) -> Self {
        Self { events, outcome: Ok(outcome) }
    }

    pub fn refuse(code: Refusal) -> Self {
        Self { events: Vec::new(), outcome: Err(Rejection::Refused(code)) }
    }
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

#[derive(Clone, Debug, PartialEq)]
pub struct Issued {
    pub access: IssuedToken,
    pub refresh: Option<IssuedToken>,
    pub scopes: ScopeList,
    /// True when this answers a retry with the tokens of an earlier identical request.
    pub replayed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IssuedToken {
    pub id: TokenId,
    pub expires_at_ms: i64,
}

impl Command {
    /// What this command touches, looked up in the committed `state`, hashed with `seed`.
    pub fn conflict_keys(&self, state: &State, transaction_id: &str, seed: ConflictSeed) -> ConflictKeys {
        let mut keys = ConflictKeys::new(seed);
        match self {
            Command::Issue(issue) => {
                keys.read(Entity::Client(&issue.client_id));
                if let Some(institution) = &issue.institution_id {
                    keys.read(Entity::Institution(institution));
                }
                keys.write(Entity::Request(&issue.client_id, transaction_id));
                match &issue.grant {
                    IssueGrant::ClientCredentials => {}
                    IssueGrant::Password { login_id } => {
                        if let Some(institution) = &issue.institution_id {
                            keys.write(Entity::User(institution, login_id));
                        }
                    }
                    IssueGrant::Refresh { token } => {
                        token_keys(state, token, &mut keys);
                        // Disabling (or locking) the grant's user or client must not share the
                        // refresh's batch: decided against the state before, the refresh
                        // would mint tokens after the disable's cutoff.
                        if let Some(grant) = state.token(token).map(|t| &t.grant) {
                            keys.read(Entity::Client(&grant.client_id));
                            if let Some(user) = &grant.user {
                                keys.read(Entity::User(&user.institution_id, &user.login_id));
                            }
                        }
                    }
                    IssueGrant::AuthorizationCode(redemption) => {
                        super::authcode::decide::redemption_keys(state, redemption, &mut keys)
                    }
                }
            }
            Command::Revoke(revoke) => token_keys(state, &revoke.token, &mut keys),
            Command::Directory(command) => command.conflict_keys(&mut keys),
            Command::Account(command) => command.conflict_keys(&mut keys),
            Command::SignInFailed(failure) => failure.conflict_keys(&mut keys),
            Command::Authorization(command) => command.conflict_keys(state, &mut keys),
            Command::Bulk(command) => command.conflict_keys(&mut keys),
        }
        keys
    }
}

fn token_keys(state: &State, token: &TokenId, keys: &mut ConflictKeys) {
    keys.write(Entity::Token(token));
    if let Some(family) = state.token(token).and_then(|t| t.grant.family) {
        keys.write(Entity::Family(&family));
    }
}
