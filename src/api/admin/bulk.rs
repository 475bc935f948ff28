//! The bulk-revocation flows behind AdminService.BulkRevoke and RevokeBlastRadius: parse the
//! request, look up what only the ledger remembers (blast radius), submit one command, and
//! report what it ended and which event records it.

use super::AdminError;
use crate::api::app::App;
use crate::api::audit::flow::{self as audit, AuditError, blast_listing, blast_question, parse_family, resolve_token};
use crate::audit::query::{self, Entry};
use crate::domain::bulk::{BLAST_TOKENS_PER_EVENT, BlastCredential, BlastRadius, BulkCommand, BulkOutcome};
use crate::domain::error::DirectoryError;
use crate::domain::state::cutoff::CutoffScope;
use crate::ledger::SubmitFailure;
use crate::proto::{self as api, bulk_revoke_request::Scope};

impl From<AuditError> for AdminError {
    fn from(error: AuditError) -> Self {
        Self::Read(error)
    }
}

fn invalid(text: &str) -> AdminError {
    AdminError::Refused(DirectoryError::Invalid(text.to_owned()))
}

async fn run(app: &App, command: BulkCommand, transaction_id: String) -> Result<BulkOutcome, AdminError> {
    match app.ledger.submit_as(command, transaction_id).await {
        Ok(outcome) => Ok(outcome),
        Err(SubmitFailure::Refused(error)) => Err(error.into()),
        Err(SubmitFailure::Unavailable) => Err(AdminError::Unavailable),
    }
}

/// The seq of the event that recorded `entry` under `transaction_id`, or 0.
async fn recorded_seq(app: &App, entry: Entry, transaction_id: String) -> u64 {
    let found = audit::read(app, move |snapshot| query::recorded_seq(snapshot, &entry, &transaction_id)).await;
    found.unwrap_or(0)
}

pub async fn bulk_revoke(
    app: &App,
    transaction_id: String,
    request: api::BulkRevokeRequest,
) -> Result<api::BulkRevokeResponse, AdminError> {
    let scope = match request.scope {
        Some(Scope::ClientId(id)) if !id.is_empty() => CutoffScope::Client(id),
        Some(Scope::InstitutionId(id)) if !id.is_empty() => CutoffScope::Institution(id),
        Some(Scope::User(u)) if !u.institution_id.is_empty() && !u.login_id.is_empty() => {
            CutoffScope::User { institution_id: u.institution_id, login_id: u.login_id }
        }
        Some(Scope::FamilyId(id)) => CutoffScope::Family(parse_family(&id)?),
        Some(Scope::Token(text)) => {
            if request.issued_before_ms != 0 || !request.note.is_empty() {
                return Err(invalid(
                    "revoking one token takes no issued_before_ms and records no note (its event has no field for one)",
                ));
            }
            let token = resolve_token(app, &text)?;
            let outcome = run(app, BulkCommand::Token { token }, transaction_id.clone()).await?;
            let seq = recorded_seq(app, Entry::Token(token), transaction_id).await;
            let kind = audit_kind(app, seq).await;
            return Ok(api::BulkRevokeResponse { live_tokens_ended: outcome.live_tokens_ended, seq, event_kind: kind });
        }
        _ => {
            return Err(invalid(
                "give one of client_id, user (institution_id and login_id), institution_id, family_id or token",
            ));
        }
    };
    let entry = Entry::Cutoff(scope.clone());
    let command = BulkCommand::Cutoff { scope, issued_before_ms: request.issued_before_ms, note: request.note };
    let outcome = run(app, command, transaction_id.clone()).await?;
    let seq = recorded_seq(app, entry, transaction_id).await;
    Ok(api::BulkRevokeResponse {
        live_tokens_ended: outcome.live_tokens_ended,
        seq,
        event_kind: "bulk_revoked".to_owned(),
    })
}

/// The kind name of event `seq` (empty when unknown).
async fn audit_kind(app: &App, seq: u64) -> String {
    let found = audit::read(app, move |snapshot| Ok(query::open_all(snapshot, &[seq])?.pop())).await;
    found.ok().flatten().map(|e| crate::audit::view::kind_name(&e.event)).unwrap_or_default()
}

pub async fn revoke_blast_radius(
    app: &App,
    transaction_id: String,
    request: api::RevokeBlastRadiusRequest,
) -> Result<api::RevokeBlastRadiusResponse, AdminError> {
    let credential = request.credential.map(|c| match c {
        api::revoke_blast_radius_request::Credential::ClientId(id) => {
            api::blast_radius_request::Credential::ClientId(id)
        }
        api::revoke_blast_radius_request::Credential::Token(t) => api::blast_radius_request::Credential::Token(t),
    });
    let (credential, from_ms, to_ms) = blast_question(app, credential, request.from_ms, request.to_ms)?;
    let listing = blast_listing(app, credential.clone(), from_ms, to_ms).await?;
    if listing.truncated {
        return Err(invalid("the blast radius is too large to revoke token by token: revoke by client or institution"));
    }
    let entry = match &credential {
        BlastCredential::Client(id) => Entry::Client(id.clone()),
        BlastCredential::Token(id) => Entry::Token(*id),
    };
    let command = BulkCommand::BlastRadius(BlastRadius {
        credential,
        from_ms,
        to_ms,
        tokens: listing.tokens.iter().map(|(facts, _)| facts.id).collect(),
        families: listing.families.into_iter().collect(),
        note: request.note,
    });
    let outcome = run(app, command, transaction_id.clone()).await?;
    let last_seq = recorded_seq(app, entry, transaction_id).await;
    let events = outcome.tokens.len().div_ceil(BLAST_TOKENS_PER_EVENT).max(1) as u64;
    Ok(api::RevokeBlastRadiusResponse {
        live_tokens_ended: outcome.live_tokens_ended,
        token_ids: outcome.tokens.iter().map(|id| id.0.to_vec()).collect(),
        first_seq: if last_seq == 0 { 0 } else { last_seq + 1 - events },
        last_seq,
    })
}
