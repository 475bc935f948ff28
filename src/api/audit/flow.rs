//! AuditService (audit.proto): the flow its transports share — the audit refusals, reads on a
//! ledger snapshot on the blocking pool (never on the async runtime's threads), token and family
//! parsing, a token's story and the blast-radius question and listing (also used by
//! AdminService's bulk revocations).

use crate::api::app::App;
pub use crate::api::error::AuditError;
use crate::audit::blast;
use crate::audit::history::{self, TokenFacts};
use crate::audit::query::QueryError;
use crate::audit::{Opened, Snapshot};
use crate::crypto::token as token_string;
use crate::domain::bulk::BlastCredential;
use crate::domain::ids::{FamilyId, TokenId, parse_hex};
use crate::proto as api;

/// Runs `read` on a fresh snapshot on the blocking pool.
pub async fn read<T: Send + 'static>(
    app: &App,
    read: impl FnOnce(&Snapshot) -> Result<T, QueryError> + Send + 'static,
) -> Result<T, AuditError> {
    let reader = app.ledger.reader().clone();
    let answer = tokio::task::spawn_blocking(move || {
        let snapshot = reader.snapshot()?;
        read(&snapshot)
    })
    .await
    .map_err(|_| AuditError::Internal)?;
    Ok(answer?)
}

/// A token given as its string (whose MAC the server checks) or as its 32-hex-digit id.
pub fn resolve_token(app: &App, text: &str) -> Result<TokenId, AuditError> {
    if let Some(id) = parse_hex::<16>(text) {
        return Ok(TokenId(id));
    }
    token_string::decode(&app.keys, text)
        .map(|(_, id)| id)
        .ok_or_else(|| AuditError::Invalid("token must be a token string of this server or a 32-hex-digit id".into()))
}

pub fn parse_family(text: &str) -> Result<FamilyId, AuditError> {
    parse_hex::<16>(text).map(FamilyId).ok_or_else(|| AuditError::Invalid("family_id must be 32 hex digits".into()))
}

/// The token's issuance and every related event (see `history::related_events`).
pub(super) async fn token_story(app: &App, text: &str) -> Result<(TokenFacts, Vec<Opened>, bool), AuditError> {
    let id = resolve_token(app, text)?;
    let head = *app.ledger.committed_head().borrow();
    let found = read(app, move |snapshot| {
        let Some((facts, _)) = history::find_token(snapshot, &id, head)? else {
            return Ok(None);
        };
        let (events, truncated) = history::related_events(snapshot, &facts, head)?;
        Ok(Some((facts, events, truncated)))
    })
    .await?;
    found.ok_or_else(|| AuditError::NotFound(format!("token {id} is not in the ledger")))
}

/// Parses the credential and window of a blast-radius question (0 bounds: unbounded).
pub fn blast_question(
    app: &App,
    credential: Option<api::blast_radius_request::Credential>,
    from_ms: i64,
    to_ms: i64,
) -> Result<(BlastCredential, i64, i64), AuditError> {
    let credential = match credential {
        Some(api::blast_radius_request::Credential::ClientId(id)) if !id.is_empty() => BlastCredential::Client(id),
        Some(api::blast_radius_request::Credential::Token(text)) if !text.is_empty() => {
            BlastCredential::Token(resolve_token(app, &text)?)
        }
        _ => return Err(AuditError::Invalid("give a client_id or a token".into())),
    };
    let to_ms = if to_ms == 0 { i64::MAX } else { to_ms };
    if from_ms < 0 || to_ms < from_ms {
        return Err(AuditError::Invalid("the window must have 0 <= from_ms <= to_ms".into()));
    }
    Ok((credential, from_ms, to_ms))
}

/// Lists the blast radius over the committed ledger.
pub async fn blast_listing(
    app: &App,
    credential: BlastCredential,
    from_ms: i64,
    to_ms: i64,
) -> Result<blast::Listing, AuditError> {
    let head = *app.ledger.committed_head().borrow();
    if let BlastCredential::Client(id) = &credential
        && app.state.read().client(id).is_none()
    {
        return Err(AuditError::NotFound(format!("client {id} does not exist")));
    }
    read(app, move |snapshot| blast::list(snapshot, &credential, from_ms, to_ms, head)).await
}
