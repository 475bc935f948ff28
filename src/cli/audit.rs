//! `tokenledger audit ...`: the history as auditors and incident responders use it. Every
//! command talks to a running server with the admin credential, except `verify-checkpoint
//! --offline`, which reads a stopped ledger (or a copy) directly. Output is for people by
//! default; `--json` prints one JSON object per line for tools.

// JSON documents built with `json!` objects: indexing an object inserts, it cannot panic.
#![allow(clippy::indexing_slicing)]

use std::io::Write as _;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::RemoteArgs;
use super::remote::{AdminAuth, admin_client, connect, describe};
use crate::audit::chain::{self, ChainWalker, Claim};
use crate::audit::checkpoint::{Checkpoint, CheckpointDocument};
use crate::audit::time::{format_ms, parse_time};
use crate::audit::view;
use crate::clock::{Clock as _, SystemClock};
use crate::domain::ids::{hex, parse_hex};
use crate::proto::audit_service_client::AuditServiceClient;
use crate::proto::{self as api};

#[derive(Args, Debug)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// List events (filtered), or follow them live with --follow.
    Events(EventsArgs),
    /// One token's history and its family's, with the reason for each change.
    Token(TokenArgs),
    /// Was a token active at a time, and which event decided it.
    StatusAt(StatusAtArgs),
    /// Walk the running server's hash chain and report the first bad event.
    Verify(VerifyArgs),
    /// Print the current head, signed with the server's checkpoint key.
    Checkpoint(CheckpointArgs),
    /// Prove a ledger (a running server, or a stopped copy with --offline) still holds exactly
    /// the events a checkpoint was signed over.
    VerifyCheckpoint(VerifyCheckpointArgs),
    /// Print the checkpoint public key, to pin it.
    CheckpointKey(OutputArgs),
    /// Every token minted from a client or token in a window, their descendants, which are
    /// live; --revoke ends exactly those.
    BlastRadius(BlastRadiusArgs),
}

#[derive(Args, Debug)]
pub struct OutputArgs {
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Print JSON (one object per line)
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    #[command(flatten)]
    pub output: OutputArgs,
    /// First sequence number
    #[arg(long, default_value_t = 1)]
    pub from_seq: u64,
    /// Keep printing new events as they commit
    #[arg(long)]
    pub follow: bool,
    /// Only events of this token (token string or 32-hex id)
    #[arg(long)]
    pub token: Option<String>,
    /// Only events of this refresh-token family (32 hex)
    #[arg(long)]
    pub family: Option<String>,
    /// Only events of this client
    #[arg(long)]
    pub client: Option<String>,
    /// Only events of this user: INSTITUTION:LOGIN
    #[arg(long)]
    pub user: Option<String>,
    /// Only events of this institution
    #[arg(long)]
    pub institution: Option<String>,
    /// Only these kinds (repeatable), e.g. tokens_issued, bulk_revoked
    #[arg(long = "kind")]
    pub kinds: Vec<String>,
    /// Only events recorded at or after this time (RFC 3339, unix ms, now, now-2h)
    #[arg(long)]
    pub since: Option<String>,
    /// Only events recorded at or before this time
    #[arg(long)]
    pub until: Option<String>,
    /// Stop after this many events
    #[arg(long)]
    pub limit: Option<u64>,
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    /// A token string or its 32-hex id
    pub token: String,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug)]
pub struct StatusAtArgs {
    /// A token string or its 32-hex id
    pub token: String,
    /// RFC 3339 (2025-11-29T16:03:01Z), unix ms, now, or now-2h
    pub time: String,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug)]
pub struct CheckpointArgs {
    #[command(flatten)]
    pub output: OutputArgs,
    /// Also write the checkpoint document (JSON) to this file
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct VerifyCheckpointArgs {
    /// The checkpoint document (from `audit checkpoint --json` or `--out`)
    pub file: PathBuf,
    /// The pinned checkpoint public key (64 hex); without it, the key in the document is used
    #[arg(long)]
    pub public_key: Option<String>,
    /// Read the ledger in --data-dir directly (a stopped server or a copy) instead of asking
    /// the server
    #[arg(long)]
    pub offline: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("credential").required(true).args(["client", "token"])))]
pub struct BlastRadiusArgs {
    /// The compromised client
    #[arg(long)]
    pub client: Option<String>,
    /// The compromised token (token string or 32-hex id)
    #[arg(long)]
    pub token: Option<String>,
    /// Start of the window the tokens were minted in (default: the beginning)
    #[arg(long)]
    pub from: Option<String>,
    /// End of the window (default: unbounded)
    #[arg(long)]
    pub to: Option<String>,
    /// Revoke exactly the live tokens listed
    #[arg(long)]
    pub revoke: bool,
    /// A note recorded with the revocation (an incident reference)
    #[arg(long, default_value = "")]
    pub note: String,
    #[command(flatten)]
    pub output: OutputArgs,
}

type AuditClient = AuditServiceClient<InterceptedService<Channel, AdminAuth>>;

async fn audit_client(remote: &RemoteArgs) -> Result<AuditClient, String> {
    let (channel, auth) = connect(remote).await?;
    Ok(AuditServiceClient::with_interceptor(channel, auth).max_decoding_message_size(64 * 1024 * 1024))
}

/// Prints one line; a closed stdout (`| head`) ends the command quietly.
fn line(text: impl std::fmt::Display) -> Result<(), String> {
    writeln!(std::io::stdout().lock(), "{text}").map_err(|_| String::new())
}

pub async fn run(args: AuditArgs) -> Result<(), String> {
    let result = match args.command {
        AuditCommand::Events(a) => events(a).await,
        AuditCommand::Token(a) => token(a).await,
        AuditCommand::StatusAt(a) => status_at(a).await,
        AuditCommand::Verify(a) => verify(a).await,
        AuditCommand::Checkpoint(a) => checkpoint(a).await,
        AuditCommand::VerifyCheckpoint(a) => verify_checkpoint(a).await,
        AuditCommand::CheckpointKey(a) => checkpoint_key(a).await,
        AuditCommand::BlastRadius(a) => blast_radius(a).await,
    };
    match result {
        // An empty error is a closed stdout: nothing more to say.
        Err(message) if message.is_empty() => Ok(()),
        other => other,
    }
}

pub fn event_json(e: &api::LedgerEvent) -> serde_json::Value {
    serde_json::json!({
        "seq": e.seq,
        "recorded_at_ms": e.recorded_at_ms,
        "recorded_at": format_ms(e.recorded_at_ms),
        "transaction_id": e.transaction_id,
        "kind": e.kind,
        "hash": hex(&e.hash),
        "prev_hash": hex(&e.prev_hash),
        "summary": e.summary,
        "event": e.event.as_ref().map(view::to_json).unwrap_or_default(),
    })
}

fn event_line(e: &api::LedgerEvent) -> String {
    format!("#{:<6} {}  {:<20} {}", e.seq, format_ms(e.recorded_at_ms), e.kind, e.summary)
}

async fn events(a: EventsArgs) -> Result<(), String> {
    let now_ms = SystemClock.now_ms();
    let time = |t: &Option<String>| t.as_deref().map(|t| parse_time(t, now_ms)).transpose();
    let user = match &a.user {
        Some(text) => {
            let (institution_id, login_id) =
                text.split_once(':').ok_or("--user takes INSTITUTION:LOGIN, e.g. 01001:alice")?;
            Some(api::EventUser { institution_id: institution_id.into(), login_id: login_id.into() })
        }
        None => None,
    };
    let request = api::StreamEventsRequest {
        from_seq: a.from_seq,
        follow: a.follow,
        token: a.token.clone().unwrap_or_default(),
        family_id: a.family.clone().unwrap_or_default(),
        client_id: a.client.clone().unwrap_or_default(),
        user,
        institution_id: a.institution.clone().unwrap_or_default(),
        kinds: a.kinds.clone(),
        from_time_ms: time(&a.since)?.unwrap_or(0),
        to_time_ms: time(&a.until)?.unwrap_or(0),
        limit: a.limit.unwrap_or(0),
        include_envelope: false,
    };
    let mut client = audit_client(&a.output.remote).await?;
    let mut stream = client.stream_events(request).await.map_err(|s| describe(&s))?.into_inner();
    let mut last_seq = None;
    loop {
        match stream.message().await {
            Ok(Some(e)) => {
                last_seq = Some(e.seq);
                if a.output.json { line(event_json(&e))? } else { line(event_line(&e))? }
            }
            Ok(None) => return Ok(()),
            Err(status) => {
                let resume = last_seq.map_or(a.from_seq, |s| s + 1);
                return Err(format!("{} (resume with --from-seq {resume})", describe(&status)));
            }
        }
    }
}

fn token_json(t: &api::TokenRecord) -> serde_json::Value {
    serde_json::json!({
        "token_id": hex(&t.token_id),
        "token_type": t.token_type,
        "family_id": hex(&t.family_id),
        "client_id": t.client_id,
        "institution_id": t.institution_id,
        "login_id": t.login_id,
        "grant_type": t.grant_type,
        "scopes": t.scopes,
        "issued_seq": t.issued_seq,
        "issued_at_ms": t.issued_at_ms,
        "expires_at_ms": t.expires_at_ms,
        "rotated_from": hex(&t.rotated_from),
    })
}

fn verdict_json(v: &api::TokenVerdict) -> serde_json::Value {
    serde_json::json!({
        "at_ms": v.at_ms,
        "at": format_ms(v.at_ms),
        "active": v.active,
        "state": v.state,
        "deciding_seq": v.deciding_seq,
        "reason": v.reason,
        "deciding_event": v.deciding_event.as_ref().map(event_json),
    })
}

fn describe_token(t: &api::TokenRecord) -> Vec<String> {
    let mut who = format!("client {}, institution {}", t.client_id, t.institution_id);
    if !t.login_id.is_empty() {
        who.push_str(&format!(", user {}", t.login_id));
    }
    if !t.family_id.is_empty() {
        who.push_str(&format!(", family {}", hex(&t.family_id)));
    }
    vec![
        format!("token {} ({}, {} grant)", hex(&t.token_id), t.token_type, t.grant_type),
        format!("  {who}"),
        format!(
            "  issued at {} by event {}; expires at {}",
            format_ms(t.issued_at_ms),
            t.issued_seq,
            format_ms(t.expires_at_ms)
        ),
    ]
}

async fn token(a: TokenArgs) -> Result<(), String> {
    let mut client = audit_client(&a.output.remote).await?;
    let request = api::GetTokenHistoryRequest { token: a.token };
    let answer = client.get_token_history(request).await.map_err(|s| describe(&s))?.into_inner();
    let (Some(token), Some(now)) = (&answer.token, &answer.status_now) else {
        return Err("the server sent an incomplete answer".into());
    };
    if a.output.json {
        let entries: Vec<_> = answer
            .entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "event": e.event.as_ref().map(event_json),
                    "change": e.change,
                    "affects_token": e.affects_token,
                })
            })
            .collect();
        let out = serde_json::json!({
            "token": token_json(token),
            "status_now": verdict_json(now),
            "entries": entries,
            "truncated": answer.truncated,
        });
        return line(out);
    }
    for text in describe_token(token) {
        line(text)?;
    }
    line(format!("  now: {} - {}", now.state, now.reason))?;
    line("history (* changed this token):")?;
    for entry in &answer.entries {
        if let Some(e) = &entry.event {
            let mark = if entry.affects_token { '*' } else { ' ' };
            line(format!("{mark} {}", event_line(e)))?;
        }
    }
    if answer.truncated {
        line("(more events exist than one answer holds)")?;
    }
    Ok(())
}

async fn status_at(a: StatusAtArgs) -> Result<(), String> {
    let at_ms = parse_time(&a.time, SystemClock.now_ms())?;
    let mut client = audit_client(&a.output.remote).await?;
    let answer = client
        .token_status_at(api::TokenStatusAtRequest { token: a.token, at_ms })
        .await
        .map_err(|s| describe(&s))?
        .into_inner();
    let (Some(token), Some(verdict)) = (&answer.token, &answer.status) else {
        return Err("the server sent an incomplete answer".into());
    };
    if a.output.json {
        let mut out = verdict_json(verdict);
        out["token"] = token_json(token);
        return line(out);
    }
    let word = if verdict.active { "ACTIVE" } else { "NOT ACTIVE" };
    line(format!("{word} at {}: {} - {}", format_ms(at_ms), verdict.state, verdict.reason))?;
    if let Some(e) = &verdict.deciding_event {
        line(format!("decided by {}", event_line(e)))?;
    }
    for text in describe_token(token) {
        line(text)?;
    }
    Ok(())
}

async fn verify(a: VerifyArgs) -> Result<(), String> {
    let mut client = audit_client(&a.output.remote).await?;
    let report =
        client.verify_ledger(api::VerifyLedgerRequest::default()).await.map_err(|s| describe(&s))?.into_inner();
    if a.output.json {
        line(serde_json::json!({
            "ok": report.ok,
            "events_checked": report.events_checked,
            "head_seq": report.head_seq,
            "head_hash": hex(&report.head_hash),
            "first_bad_seq": report.first_bad_seq,
            "problem": report.problem,
            "elapsed_ms": report.elapsed_ms,
        }))?;
    } else if report.ok {
        line(format!(
            "ledger OK: {} events, head seq {} hash {} ({} ms)",
            report.events_checked,
            report.head_seq,
            hex(&report.head_hash),
            report.elapsed_ms
        ))?;
    }
    if report.ok {
        Ok(())
    } else {
        Err(format!("ledger verification FAILED at event {}: {}", report.first_bad_seq, report.problem))
    }
}

fn checkpoint_from_wire(c: &api::Checkpoint) -> Result<Checkpoint, String> {
    let bytes32 = |b: &[u8], what: &str| <[u8; 32]>::try_from(b).map_err(|_| format!("bad {what} from the server"));
    Ok(Checkpoint {
        body: crate::audit::checkpoint::CheckpointBody {
            ledger_id: bytes32(&c.ledger_id, "ledger id")?,
            seq: c.seq,
            hash: bytes32(&c.hash, "hash")?,
            recorded_at_ms: c.recorded_at_ms,
            signed_at_ms: c.signed_at_ms,
        },
        public_key: bytes32(&c.public_key, "public key")?,
        signature: c.signature.clone(),
    })
}

async fn checkpoint(a: CheckpointArgs) -> Result<(), String> {
    let mut client = audit_client(&a.output.remote).await?;
    let wire = client.get_checkpoint(api::GetCheckpointRequest {}).await.map_err(|s| describe(&s))?.into_inner();
    let checkpoint = checkpoint_from_wire(&wire)?;
    if !checkpoint.signature_valid(None) {
        return Err("the server's checkpoint signature does not verify".into());
    }
    let document = checkpoint.to_document();
    if let Some(path) = &a.out {
        let text = serde_json::to_string_pretty(&document).map_err(|e| e.to_string())?;
        std::fs::write(path, format!("{text}\n")).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if a.output.json {
        return line(serde_json::to_string(&document).map_err(|e| e.to_string())?);
    }
    line(format!("checkpoint of ledger {}", document.ledger_id))?;
    line(format!("  seq {}, hash {}", document.seq, document.hash))?;
    line(format!("  recorded at {}, signed at {}", document.recorded_at, format_ms(document.signed_at_ms)))?;
    line(format!("  Ed25519 public key {}", document.public_key))?;
    line(format!("  signature {}", document.signature))?;
    if let Some(path) = &a.out {
        line(format!("written to {}", path.display()))?;
    }
    Ok(())
}

async fn checkpoint_key(a: OutputArgs) -> Result<(), String> {
    let mut client = audit_client(&a.remote).await?;
    let key = client.get_checkpoint_key(api::GetCheckpointKeyRequest {}).await.map_err(|s| describe(&s))?.into_inner();
    if a.json {
        return line(serde_json::json!({
            "algorithm": key.algorithm,
            "public_key": hex(&key.public_key),
            "created_at_ms": key.created_at_ms,
        }));
    }
    line(format!("{} {} (created {})", key.algorithm, hex(&key.public_key), format_ms(key.created_at_ms)))
}

/// What checking a checkpoint against a ledger found.
struct PrefixCheck {
    /// The ledger's event 1 hash.
    ledger_id: Option<[u8; 32]>,
    /// The chain hash found at the checkpoint's seq, if the chain reached it intact.
    hash_at_seq: Option<[u8; 32]>,
    events_checked: u64,
    /// Events whose envelopes the server withheld (they carry credential digests): their
    /// place and links were checked, not their content.
    events_linked_only: u64,
    problem: Option<String>,
}

/// Reads a stopped ledger (or a copy) in `data_dir` directly.
fn check_offline(data_dir: &std::path::Path, seq: u64, hash: [u8; 32]) -> Result<PrefixCheck, String> {
    let path = data_dir.join(crate::server::data_dir::LEDGER_FILE);
    if !path.exists() {
        return Err(format!("no ledger at {}", path.display()));
    }
    let _lock = crate::server::data_dir::lock(data_dir)
        .map_err(|e| format!("{e}; stop the server (or copy the data dir) to check offline"))?;
    let ledger = crate::ledger::open_read_only(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let snapshot = ledger.snapshot().map_err(|e| e.to_string())?;
    let report = chain::verify(&snapshot, Some(seq), Some(Claim { seq, hash })).map_err(|e| e.to_string())?;
    let first = snapshot.envelope(1).map_err(|e| e.to_string())?;
    let ledger_id = first.and_then(|bytes| crate::audit::open_envelope(1, &bytes).ok()).map(|opened| opened.hash);
    let reached = report.head.seq == seq && report.problem.is_none();
    Ok(PrefixCheck {
        ledger_id,
        hash_at_seq: reached.then_some(report.head.hash),
        events_checked: report.events_checked,
        events_linked_only: 0,
        problem: report.problem.map(|p| format!("event {}: {p}", chain::first_bad_seq(&p))),
    })
}

/// Streams events 1..=seq with their stored envelopes and checks the chain here: the server
/// is not trusted to compute anything. Envelopes of events that carry credential digests are
/// withheld by a server without `audit_raw_envelopes`; those are checked by their links.
async fn check_online(remote: &RemoteArgs, seq: u64) -> Result<PrefixCheck, String> {
    let mut client = audit_client(remote).await?;
    let request = api::StreamEventsRequest { from_seq: 1, limit: seq, include_envelope: true, ..Default::default() };
    let mut stream = client.stream_events(request).await.map_err(|s| describe(&s))?.into_inner();
    let mut walker = ChainWalker::default();
    let mut check =
        PrefixCheck { ledger_id: None, hash_at_seq: None, events_checked: 0, events_linked_only: 0, problem: None };
    loop {
        let event = match stream.message().await {
            Ok(Some(event)) => event,
            Ok(None) => break,
            Err(status) => {
                check.problem = Some(describe(&status));
                break;
            }
        };
        let pushed = if event.envelope_withheld {
            check.events_linked_only += 1;
            walker.push_withheld(event.seq, &event.prev_hash, &event.hash, event.recorded_at_ms)
        } else {
            walker.push(event.seq, &event.envelope)
        };
        if let Err(error) = pushed {
            check.problem = Some(format!("event {}: {error}", chain::first_bad_seq(&error)));
            break;
        }
        check.events_checked += 1;
        if walker.head.seq == 1 {
            check.ledger_id = Some(walker.head.hash);
        }
    }
    if check.problem.is_none() && walker.head.seq == seq {
        check.hash_at_seq = Some(walker.head.hash);
    }
    Ok(check)
}

async fn verify_checkpoint(a: VerifyCheckpointArgs) -> Result<(), String> {
    let text = std::fs::read_to_string(&a.file).map_err(|e| format!("cannot read {}: {e}", a.file.display()))?;
    let document: CheckpointDocument =
        serde_json::from_str(&text).map_err(|e| format!("{}: not a checkpoint document: {e}", a.file.display()))?;
    let checkpoint = document.parse()?;
    let pinned = a.public_key.as_deref().map(|k| parse_hex::<32>(k).ok_or("--public-key must be 64 hex digits"));
    let pinned = pinned.transpose()?;
    let mut failures = Vec::new();
    if !checkpoint.signature_valid(pinned.as_ref()) {
        failures.push("the signature does not verify with the checkpoint key".to_owned());
    }
    let body = &checkpoint.body;
    let found = if a.offline {
        check_offline(&a.output.remote.data_dir, body.seq, body.hash)?
    } else {
        check_online(&a.output.remote, body.seq).await?
    };
    if found.ledger_id.is_some_and(|id| id != body.ledger_id) {
        failures.push("the ledger is not the one the checkpoint was made of (ledger id differs)".to_owned());
    }
    if let Some(problem) = &found.problem {
        failures.push(format!("the chain is broken before the checkpoint: {problem}"));
    }
    match found.hash_at_seq {
        Some(hash) if hash != body.hash => {
            failures.push(format!(
                "event {} has hash {}, the checkpoint says {}",
                body.seq,
                hex(&hash),
                hex(&body.hash)
            ));
        }
        None if found.problem.is_none() => failures.push(format!(
            "the ledger ends at event {} before the checkpoint's event {}: events were dropped",
            found.events_checked, body.seq
        )),
        _ => {}
    }
    let ok = failures.is_empty();
    if a.output.json {
        line(serde_json::json!({
            "ok": ok,
            "seq": body.seq,
            "hash": hex(&body.hash),
            "key_pinned": pinned.is_some(),
            "events_checked": found.events_checked,
            "events_linked_only": found.events_linked_only,
            "failures": failures,
        }))?;
    } else if ok {
        line(format!(
            "checkpoint VERIFIED: the ledger holds exactly the {} events signed at {} (event {} hash {})",
            body.seq,
            format_ms(body.signed_at_ms),
            body.seq,
            hex(&body.hash)
        ))?;
        if pinned.is_none() {
            line("note: checked against the key in the document; pass --public-key to pin the key you trust")?;
        }
        if found.events_linked_only > 0 {
            line(format!(
                "note: {} events carry credential digests; the server withheld their envelopes, so their links were \
                 checked but not their content (check with --offline, or against a server with audit_raw_envelopes)",
                found.events_linked_only
            ))?;
        }
    }
    if ok { Ok(()) } else { Err(format!("checkpoint verification FAILED: {}", failures.join("; "))) }
}

async fn blast_radius(a: BlastRadiusArgs) -> Result<(), String> {
    use api::blast_radius_request::Credential;
    let now_ms = SystemClock.now_ms();
    let from_ms = a.from.as_deref().map(|t| parse_time(t, now_ms)).transpose()?.unwrap_or(0);
    let to_ms = a.to.as_deref().map(|t| parse_time(t, now_ms)).transpose()?.unwrap_or(0);
    let credential = match (&a.client, &a.token) {
        (Some(client), _) => Credential::ClientId(client.clone()),
        (None, Some(token)) => Credential::Token(token.clone()),
        (None, None) => return Err("give --client or --token".into()),
    };
    let mut client = audit_client(&a.output.remote).await?;
    let request = api::BlastRadiusRequest { credential: Some(credential.clone()), from_ms, to_ms };
    let listing = client.blast_radius(request).await.map_err(|s| describe(&s))?.into_inner();
    for t in &listing.tokens {
        let Some(record) = &t.token else { continue };
        if a.output.json {
            let mut out = token_json(record);
            out["relation"] = t.relation.clone().into();
            out["live"] = t.live.into();
            line(out)?;
        } else {
            line(format!(
                "{:<10} {:<4} {} {:<13} issued {} by event {}",
                t.relation,
                if t.live { "LIVE" } else { "-" },
                hex(&record.token_id),
                record.token_type,
                format_ms(record.issued_at_ms),
                record.issued_seq
            ))?;
        }
    }
    if !a.output.json {
        line(format!(
            "{} minted in the window, {} descendants, {} still live{}",
            listing.minted,
            listing.descendants,
            listing.live,
            if listing.truncated { " (list truncated)" } else { "" }
        ))?;
    }
    if !a.revoke {
        return Ok(());
    }
    let credential = match credential {
        Credential::ClientId(id) => api::revoke_blast_radius_request::Credential::ClientId(id),
        Credential::Token(token) => api::revoke_blast_radius_request::Credential::Token(token),
    };
    let request = api::RevokeBlastRadiusRequest { credential: Some(credential), from_ms, to_ms, note: a.note };
    let mut admin = admin_client(&a.output.remote).await?;
    let revoked = admin.revoke_blast_radius(request).await.map_err(|s| describe(&s))?.into_inner();
    if a.output.json {
        let ids: Vec<String> = revoked.token_ids.iter().map(|id| hex(id)).collect();
        return line(serde_json::json!({
            "revoked": revoked.live_tokens_ended,
            "token_ids": ids,
            "first_seq": revoked.first_seq,
            "last_seq": revoked.last_seq,
        }));
    }
    line(format!(
        "revoked {} live tokens (ledger events {}..{})",
        revoked.live_tokens_ended, revoked.first_seq, revoked.last_seq
    ))
}
