//! AuditService over gRPC: the live event stream, token history and point-in-time status,
//! online verification, signed checkpoints and blast radius, over the flow in `flow.rs`.

use std::sync::{Arc, OnceLock};

use tokio::sync::{Semaphore, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::flow::{AuditError, blast_listing, blast_question, parse_family, read, resolve_token, token_story};
use crate::api::app::App;
use crate::api::error::audit_status;
use crate::api::grpc_util::admin_call;
use crate::audit::Opened;
use crate::audit::blast::Relation;
use crate::audit::chain::{self, Claim};
use crate::audit::checkpoint::{CHECKPOINT_FORMAT, CheckpointBody, CheckpointKey};
use crate::audit::history::{self, StatusAt, TokenFacts};
use crate::audit::query::{EventFilter, first_seq_at_or_after};
use crate::audit::time::format_ms;
use crate::audit::view;
use crate::domain::grant::stored_name;
use crate::domain::state::EndCause;
use crate::domain::state::validity::Validity;
use crate::proto::audit_service_server::AuditService;
use crate::proto::{self as api};

/// Live streams served at once; more are refused with RESOURCE_EXHAUSTED.
pub const STREAMS_MAX: usize = 64;
/// Events read from the store per page of a stream.
const STREAM_PAGE_EVENTS: usize = 512;
/// Events buffered per stream before the reader waits for the client.
const STREAM_BUFFER_EVENTS: usize = 256;
/// A follow with an end time ends at the first event after it; on an idle ledger, this long
/// after it, by when no batch stamped before the end time can still be committing.
const FOLLOW_END_GRACE_MS: i64 = 60_000;

/// Which stored envelopes a stream sends beside the decoded events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Envelopes {
    None,
    /// Every envelope except those of events that carry a credential digest (or anything the
    /// redaction removes): those are withheld, their `hash` and `prev_hash` still sent, so a
    /// client checks the chain's links through them and the content of every other event.
    WithoutCredentials,
    /// Every envelope as stored, digests included (`audit_raw_envelopes`: a trusted replica).
    Raw,
}

/// The wire form of a stored event; its decoded event carries no credential digest, and
/// neither does any envelope it carries unless the server hands out raw envelopes.
pub fn ledger_event(opened: &Opened, envelopes: Envelopes) -> api::LedgerEvent {
    use prost::Message as _;
    let redacted = view::redact(&opened.event);
    let (envelope, envelope_withheld) = match envelopes {
        Envelopes::None => (Vec::new(), false),
        Envelopes::WithoutCredentials if redacted != opened.event => (Vec::new(), true),
        Envelopes::WithoutCredentials | Envelopes::Raw => (opened.envelope.encode_to_vec(), false),
    };
    api::LedgerEvent {
        seq: opened.envelope.seq,
        recorded_at_ms: opened.envelope.recorded_at_ms,
        transaction_id: opened.envelope.transaction_id.clone(),
        kind: view::kind_name(&opened.event),
        hash: opened.hash.to_vec(),
        prev_hash: opened.prev_hash.to_vec(),
        event: Some(redacted),
        summary: view::summary(&opened.event),
        envelope,
        envelope_withheld,
    }
}

pub fn token_record(facts: &TokenFacts) -> api::TokenRecord {
    api::TokenRecord {
        token_id: facts.id.0.to_vec(),
        token_type: facts.kind.introspection_name().to_owned(),
        family_id: facts.family.map(|f| f.0.to_vec()).unwrap_or_default(),
        client_id: facts.client_id.clone(),
        institution_id: facts.institution_id.clone(),
        login_id: facts.login_id.clone(),
        grant_type: stored_name(facts.grant_type).to_owned(),
        scopes: facts.scopes.clone(),
        issued_seq: facts.issued_seq,
        issued_at_ms: facts.issued_at_ms,
        expires_at_ms: facts.expires_at_ms,
        rotated_from: facts.rotated_from.map(|t| t.0.to_vec()).unwrap_or_default(),
    }
}

/// Why the token has the status it has, in words.
fn reason(facts: &TokenFacts, status: &StatusAt, deciding: Option<&Opened>) -> String {
    let seq = status.deciding_seq;
    let summary = deciding.map(|e| view::summary(&e.event)).unwrap_or_default();
    match &status.validity {
        None => format!("issued later, at {} by event {seq}", format_ms(facts.issued_at_ms)),
        Some(Validity::Active { .. }) => format!(
            "issued at {} by event {seq}, expires at {}",
            format_ms(facts.issued_at_ms),
            format_ms(facts.expires_at_ms)
        ),
        Some(Validity::Expired { expires_at_ms, .. }) => format!("expired at {}", format_ms(*expires_at_ms)),
        Some(Validity::Ended { cause: EndCause::Rotated { successor }, at_ms, .. }) => format!(
            "exchanged for the refresh token {successor} at {} by event {seq}; presenting it again is reuse",
            format_ms(*at_ms)
        ),
        Some(Validity::Ended { cause: EndCause::Revoked(why), at_ms, .. }) => {
            format!("revoked ({}) at {} by event {seq}", view::reason_text(*why as i32), format_ms(*at_ms))
        }
        Some(Validity::FamilyRevoked { reason, at_ms, .. }) => format!(
            "its refresh-token family was revoked ({}) at {} by event {seq}",
            view::reason_text(*reason as i32),
            format_ms(*at_ms)
        ),
        Some(Validity::CutOff { cutoff }) => {
            format!("ended at {} by event {seq}: {summary}", format_ms(cutoff.at_ms))
        }
    }
}

fn verdict(facts: &TokenFacts, status: &StatusAt, events: &[Opened]) -> api::TokenVerdict {
    let deciding = events.iter().find(|e| e.envelope.seq == status.deciding_seq);
    api::TokenVerdict {
        active: status.is_active(),
        state: status.state_name().to_owned(),
        deciding_seq: status.deciding_seq,
        deciding_event: deciding.map(|e| ledger_event(e, Envelopes::None)),
        reason: reason(facts, status, deciding),
        at_ms: status.at_ms,
    }
}

pub struct AuditGrpc {
    pub app: Arc<App>,
    checkpoint_key: CheckpointKey,
    /// Bounds concurrent streams (`STREAMS_MAX`).
    streams: Arc<Semaphore>,
    /// Turns true when the server starts draining: live streams end so shutdown is prompt.
    draining: watch::Receiver<bool>,
    /// One online verification at a time: it reads the whole file.
    verifications: Semaphore,
    /// The hash of event 1, read once.
    ledger_id: OnceLock<[u8; 32]>,
}

impl AuditGrpc {
    pub fn new(app: Arc<App>, checkpoint_key: CheckpointKey, draining: watch::Receiver<bool>) -> Self {
        Self {
            app,
            checkpoint_key,
            streams: Arc::new(Semaphore::new(STREAMS_MAX)),
            draining,
            verifications: Semaphore::new(1),
            ledger_id: OnceLock::new(),
        }
    }

    async fn ledger_id(&self) -> Result<[u8; 32], AuditError> {
        if let Some(id) = self.ledger_id.get() {
            return Ok(*id);
        }
        let first = read(&self.app, |snapshot| Ok(crate::audit::query::open_all(snapshot, &[1])?.pop())).await?;
        let id = first.map(|e| e.hash).ok_or(AuditError::Unavailable)?;
        Ok(*self.ledger_id.get_or_init(|| id))
    }
}

/// A parsed StreamEvents request.
struct StreamPlan {
    filter: Arc<EventFilter>,
    from_seq: u64,
    follow: bool,
    from_time_ms: Option<i64>,
    to_time_ms: Option<i64>,
    limit: Option<u64>,
    envelopes: Envelopes,
}

fn stream_plan(app: &App, r: api::StreamEventsRequest) -> Result<StreamPlan, AuditError> {
    let nonempty = |s: String| (!s.is_empty()).then_some(s);
    let mut kinds = Vec::new();
    for kind in &r.kinds {
        let number = view::parse_kind(kind).ok_or_else(|| {
            let names: Vec<String> = view::kind_names().into_iter().map(|(_, n)| n).collect();
            AuditError::Invalid(format!("unknown event kind {kind:?}; kinds: {}", names.join(", ")))
        })?;
        kinds.push(number);
    }
    let user = match r.user {
        Some(u) if u.institution_id.is_empty() || u.login_id.is_empty() => {
            return Err(AuditError::Invalid("user needs institution_id and login_id".into()));
        }
        Some(u) => Some((u.institution_id, u.login_id)),
        None => None,
    };
    let filter = EventFilter {
        token: nonempty(r.token).map(|t| resolve_token(app, &t)).transpose()?,
        family: nonempty(r.family_id).map(|f| parse_family(&f)).transpose()?,
        client: nonempty(r.client_id),
        user,
        institution: nonempty(r.institution_id),
        kinds,
    };
    let time = |ms: i64, name: &str| match ms {
        0 => Ok(None),
        ms if ms < 0 => Err(AuditError::Invalid(format!("{name} must not be negative"))),
        ms => Ok(Some(ms)),
    };
    Ok(StreamPlan {
        filter: Arc::new(filter),
        from_seq: r.from_seq.max(1),
        follow: r.follow,
        from_time_ms: time(r.from_time_ms, "from_time_ms")?,
        to_time_ms: time(r.to_time_ms, "to_time_ms")?,
        limit: (r.limit > 0).then_some(r.limit),
        envelopes: match (r.include_envelope, app.config.audit_raw_envelopes) {
            (false, _) => Envelopes::None,
            (true, false) => Envelopes::WithoutCredentials,
            (true, true) => Envelopes::Raw,
        },
    })
}

type EventSender = mpsc::Sender<Result<api::LedgerEvent, Status>>;

/// Delivers the plan's events in seq order; with `follow`, waits for each new committed head
/// and reads on from the cursor, so nothing is skipped or repeated.
async fn stream(app: Arc<App>, plan: StreamPlan, sender: EventSender, mut draining: watch::Receiver<bool>) {
    if let Err(status) = stream_events(&app, &plan, &sender, &mut draining).await {
        let _ = sender.send(Err(status)).await;
    }
}

async fn stream_events(
    app: &Arc<App>,
    plan: &StreamPlan,
    sender: &EventSender,
    draining: &mut watch::Receiver<bool>,
) -> Result<(), Status> {
    let mut heads = app.ledger.committed_head();
    let mut cursor = plan.from_seq;
    let mut sent = 0u64;
    loop {
        let head = *heads.borrow_and_update();
        let (start, upper, range_ends) = bounds(app, plan, cursor, head).await.map_err(audit_status)?;
        cursor = start;
        while cursor <= upper {
            let filter = plan.filter.clone();
            let from = cursor;
            let page = read(app, move |snapshot| filter.read_page(snapshot, from, upper, STREAM_PAGE_EVENTS))
                .await
                .map_err(audit_status)?;
            cursor = page.next_seq;
            for opened in &page.events {
                if plan.limit.is_some_and(|limit| sent >= limit) {
                    return Ok(());
                }
                if sender.send(Ok(ledger_event(opened, plan.envelopes))).await.is_err() {
                    return Ok(());
                }
                sent += 1;
            }
            if let Some(problem) = page.problem {
                return Err(audit_status(problem.into()));
            }
        }
        if !plan.follow || range_ends || plan.limit.is_some_and(|limit| sent >= limit) {
            return Ok(());
        }
        let resume = format!("resume from seq {cursor}");
        let idle_end = plan.to_time_ms.map(|to| {
            let wait_ms = to.saturating_add(FOLLOW_END_GRACE_MS).saturating_sub(app.clock.now_ms()).max(0);
            tokio::time::Instant::now() + std::time::Duration::from_millis(wait_ms as u64)
        });
        tokio::select! {
            () = sleep_until(idle_end) => return Ok(()),
            changed = heads.changed() => {
                if changed.is_err() {
                    return Err(Status::unavailable(format!("the ledger closed; {resume}")));
                }
            }
            _ = draining.wait_for(|d| *d) => {
                return Err(Status::unavailable(format!("the server is shutting down; {resume}")));
            }
            () = sender.closed() => return Ok(()),
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The seq range to deliver next: from the cursor (moved up to the start time) to the head
/// (moved down to the end time), and whether the end time cuts the range off for good.
async fn bounds(app: &App, plan: &StreamPlan, cursor: u64, head: u64) -> Result<(u64, u64, bool), AuditError> {
    if cursor > head || (plan.from_time_ms.is_none() && plan.to_time_ms.is_none()) {
        return Ok((cursor, head, false));
    }
    let (from_time, to_time) = (plan.from_time_ms, plan.to_time_ms);
    read(app, move |snapshot| {
        let start = match from_time {
            Some(ms) => first_seq_at_or_after(snapshot, ms, cursor, head)?,
            None => cursor,
        };
        match to_time {
            Some(ms) => {
                let after = first_seq_at_or_after(snapshot, ms.saturating_add(1), start, head)?;
                Ok((start, after.saturating_sub(1), after <= head))
            }
            None => Ok((start, head, false)),
        }
    })
    .await
}

#[tonic::async_trait]
impl AuditService for AuditGrpc {
    type StreamEventsStream = ReceiverStream<Result<api::LedgerEvent, Status>>;

    async fn stream_events(
        &self,
        request: Request<api::StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        admin_call(&self.app, request.metadata())?;
        let plan = stream_plan(&self.app, request.into_inner()).map_err(audit_status)?;
        let permit = self
            .streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| Status::resource_exhausted(format!("at most {STREAMS_MAX} event streams at once")))?;
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER_EVENTS);
        let (app, draining) = (self.app.clone(), self.draining.clone());
        tokio::spawn(async move {
            stream(app, plan, sender, draining).await;
            drop(permit);
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn get_token_history(
        &self,
        request: Request<api::GetTokenHistoryRequest>,
    ) -> Result<Response<api::GetTokenHistoryResponse>, Status> {
        admin_call(&self.app, request.metadata())?;
        let (facts, events, truncated) =
            token_story(&self.app, &request.get_ref().token).await.map_err(audit_status)?;
        let last_ms = events.last().map_or(0, |e| e.envelope.recorded_at_ms);
        let (steps, status) = history::replay(&facts, &events, self.app.clock.now_ms().max(last_ms));
        let entries = steps
            .iter()
            .map(|step| api::HistoryEntry {
                event: Some(ledger_event(&step.event, Envelopes::None)),
                change: view::summary(&step.event.event),
                affects_token: step.affects_token,
            })
            .collect();
        let answer = api::GetTokenHistoryResponse {
            token: Some(token_record(&facts)),
            entries,
            status_now: Some(verdict(&facts, &status, &events)),
            truncated,
        };
        Ok(Response::new(answer))
    }

    async fn token_status_at(
        &self,
        request: Request<api::TokenStatusAtRequest>,
    ) -> Result<Response<api::TokenStatusAtResponse>, Status> {
        admin_call(&self.app, request.metadata())?;
        let r = request.into_inner();
        if r.at_ms <= 0 {
            return Err(Status::invalid_argument("at_ms (unix milliseconds) is required"));
        }
        let (facts, events, _) = token_story(&self.app, &r.token).await.map_err(audit_status)?;
        let (_, status) = history::replay(&facts, &events, r.at_ms);
        let answer = api::TokenStatusAtResponse {
            token: Some(token_record(&facts)),
            status: Some(verdict(&facts, &status, &events)),
        };
        Ok(Response::new(answer))
    }

    async fn verify_ledger(
        &self,
        request: Request<api::VerifyLedgerRequest>,
    ) -> Result<Response<api::VerifyLedgerResponse>, Status> {
        admin_call(&self.app, request.metadata())?;
        let r = request.into_inner();
        let claim = match (r.checkpoint_seq, r.checkpoint_hash.as_slice()) {
            (0, []) => None,
            (seq, hash) if seq > 0 => {
                let hash = <[u8; 32]>::try_from(hash)
                    .map_err(|_| Status::invalid_argument("checkpoint_hash must be 32 bytes"))?;
                Some(Claim { seq, hash })
            }
            _ => return Err(Status::invalid_argument("checkpoint_hash needs checkpoint_seq")),
        };
        let _turn = self.verifications.acquire().await.map_err(|_| Status::unavailable("shutting down"))?;
        let started = std::time::Instant::now();
        let report =
            read(&self.app, move |snapshot| Ok(chain::verify(snapshot, None, claim)?)).await.map_err(audit_status)?;
        let answer = api::VerifyLedgerResponse {
            ok: report.ok(),
            events_checked: report.events_checked,
            head_seq: report.head.seq,
            head_hash: report.head.hash.to_vec(),
            first_bad_seq: report.problem.as_ref().map_or(0, chain::first_bad_seq),
            problem: report.problem.as_ref().map(ToString::to_string).unwrap_or_default(),
            checkpoint_checked: claim.is_some(),
            checkpoint_matches: report.claim_holds == Some(true),
            elapsed_ms: started.elapsed().as_millis() as u64,
        };
        Ok(Response::new(answer))
    }

    async fn get_checkpoint(
        &self,
        request: Request<api::GetCheckpointRequest>,
    ) -> Result<Response<api::Checkpoint>, Status> {
        admin_call(&self.app, request.metadata())?;
        let ledger_id = self.ledger_id().await.map_err(audit_status)?;
        let head = self.app.state.read().head.clone();
        let body = CheckpointBody {
            ledger_id,
            seq: head.seq,
            hash: head.hash,
            recorded_at_ms: head.recorded_at_ms,
            signed_at_ms: self.app.clock.now_ms(),
        };
        let signed = self.checkpoint_key.sign(&body);
        Ok(Response::new(api::Checkpoint {
            format: CHECKPOINT_FORMAT.to_owned(),
            ledger_id: ledger_id.to_vec(),
            seq: body.seq,
            hash: body.hash.to_vec(),
            recorded_at_ms: body.recorded_at_ms,
            signed_at_ms: body.signed_at_ms,
            public_key: signed.public_key.to_vec(),
            signature: signed.signature,
        }))
    }

    async fn get_checkpoint_key(
        &self,
        request: Request<api::GetCheckpointKeyRequest>,
    ) -> Result<Response<api::CheckpointKey>, Status> {
        admin_call(&self.app, request.metadata())?;
        Ok(Response::new(api::CheckpointKey {
            algorithm: "Ed25519".to_owned(),
            public_key: self.checkpoint_key.public_key().to_vec(),
            created_at_ms: self.checkpoint_key.created_at_ms,
        }))
    }

    async fn blast_radius(
        &self,
        request: Request<api::BlastRadiusRequest>,
    ) -> Result<Response<api::BlastRadiusResponse>, Status> {
        admin_call(&self.app, request.metadata())?;
        let r = request.into_inner();
        let (credential, from_ms, to_ms) =
            blast_question(&self.app, r.credential, r.from_ms, r.to_ms).map_err(audit_status)?;
        let listing = blast_listing(&self.app, credential, from_ms, to_ms).await.map_err(audit_status)?;
        let now_ms = self.app.clock.now_ms();
        let state = self.app.state.read();
        let mut answer = api::BlastRadiusResponse { truncated: listing.truncated, ..Default::default() };
        for (facts, relation) in &listing.tokens {
            let live = state.active_token(&facts.id, now_ms).is_some_and(|t| t.kind == facts.kind);
            match relation {
                Relation::Minted => answer.minted += 1,
                Relation::Descendant => answer.descendants += 1,
                Relation::Credential => {}
            }
            answer.live += u64::from(live);
            answer.tokens.push(api::BlastRadiusToken {
                token: Some(token_record(facts)),
                live,
                relation: relation.name().to_owned(),
            });
        }
        Ok(Response::new(answer))
    }
}
