//! `tokenledger revoke`: bulk revocation (AdminService.BulkRevoke). One ledger event ends
//! every token of a client, user, institution or family issued so far (or before a time), or
//! one token.

use std::io::Write as _;

use clap::Args;

use super::RemoteArgs;
use super::remote::{admin_client, describe};
use crate::audit::time::parse_time;
use crate::clock::{Clock as _, SystemClock};
use crate::proto::{self as api, bulk_revoke_request::Scope};

#[derive(Args, Debug)]
#[command(group(
    clap::ArgGroup::new("scope").required(true).args(["client", "user", "institution", "family", "token"])
))]
pub struct RevokeArgs {
    /// Every token of this client
    #[arg(long)]
    pub client: Option<String>,
    /// Every token of this user: INSTITUTION:LOGIN
    #[arg(long)]
    pub user: Option<String>,
    /// Every token of this institution
    #[arg(long)]
    pub institution: Option<String>,
    /// Every token of this refresh-token family (32 hex)
    #[arg(long)]
    pub family: Option<String>,
    /// One token (token string or 32-hex id); a refresh token takes its family with it
    #[arg(long)]
    pub token: Option<String>,
    /// Only tokens issued before this time (RFC 3339, unix ms, now, now-2h)
    #[arg(long)]
    pub issued_before: Option<String>,
    /// A note recorded with the revocation (an incident reference)
    #[arg(long, default_value = "")]
    pub note: String,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: RevokeArgs) -> Result<(), String> {
    let (scope, label) = if let Some(id) = &args.client {
        (Scope::ClientId(id.clone()), format!("client {id}"))
    } else if let Some(user) = &args.user {
        let (institution_id, login_id) =
            user.split_once(':').ok_or("--user takes INSTITUTION:LOGIN, e.g. 01001:alice")?;
        let scope =
            Scope::User(api::BulkRevokeUser { institution_id: institution_id.into(), login_id: login_id.into() });
        (scope, format!("user {login_id} of institution {institution_id}"))
    } else if let Some(id) = &args.institution {
        (Scope::InstitutionId(id.clone()), format!("institution {id}"))
    } else if let Some(id) = &args.family {
        (Scope::FamilyId(id.clone()), format!("family {id}"))
    } else if let Some(token) = &args.token {
        (Scope::Token(token.clone()), "the token".to_owned())
    } else {
        return Err("give one of --client, --user, --institution, --family or --token".into());
    };
    let issued_before_ms =
        args.issued_before.as_deref().map(|t| parse_time(t, SystemClock.now_ms())).transpose()?.unwrap_or(0);
    let request = api::BulkRevokeRequest { scope: Some(scope), issued_before_ms, note: args.note };
    let mut client = admin_client(&args.remote).await?;
    let answer = client.bulk_revoke(request).await.map_err(|s| describe(&s))?.into_inner();
    let text = if args.json {
        serde_json::json!({
            "live_tokens_ended": answer.live_tokens_ended,
            "seq": answer.seq,
            "event_kind": answer.event_kind,
        })
        .to_string()
    } else {
        format!(
            "revoked {} live tokens of {label} (ledger event {}, {})",
            answer.live_tokens_ended, answer.seq, answer.event_kind
        )
    };
    // The revocation is done; a closed stdout is no reason to fail.
    let _ = writeln!(std::io::stdout().lock(), "{text}");
    Ok(())
}
