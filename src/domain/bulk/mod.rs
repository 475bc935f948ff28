//! Bulk revocation: cutoffs by client, user, institution or family ("everything issued before
//! now, or before T"), an operator's revocation of one token, and blast-radius containment (an
//! exact set of tokens). Each request is decided against the committed state like any command,
//! and records one event (blast radius: one event per `BLAST_TOKENS_PER_EVENT` tokens).
//!
//! Bulk commands run alone in their batch (`ConflictKeys::exclusive`): a command decided in the
//! same batch against the state before the revocation (an issuance, a refresh, a code
//! redemption added later) could otherwise mint a token the revocation should have ended.

pub(crate) mod apply;

use std::collections::{BTreeSet, HashMap};

use crate::domain::shared::conflict::{ConflictKeys, Entity};
use crate::domain::shared::decision::{Context, Decision, wrap};
use crate::domain::shared::error::DirectoryError;
use crate::domain::shared::ids::{FamilyId, TokenId, is_printable_ascii};
use crate::domain::state::cutoff::{Cutoff, CutoffScope};
use crate::domain::state::{EndCause, State, TokenEnd, TokenKind};
use crate::proto::ledger::{
    BlastRadiusRevoked, BulkRevoked, BulkRevokedUser, FamilyRevoked, RevocationReason, TokenRevoked,
    blast_radius_revoked, bulk_revoked, event,
};

/// Most tokens one `BlastRadiusRevoked` event lists (16 bytes each: 64 KiB).
pub const BLAST_TOKENS_PER_EVENT: usize = 4096;
/// Most tokens one blast-radius revocation may end; beyond that, a cutoff is the right tool.
pub const BLAST_TOKENS_MAX: usize = 1_000_000;
/// Longest operator note.
pub const NOTE_LEN_MAX: usize = 256;

#[derive(Clone, Debug)]
pub enum BulkCommand {
    /// Every token of a client, user, institution or family issued before now (or before
    /// `issued_before_ms`) ends.
    Cutoff {
        scope: CutoffScope,
        issued_before_ms: i64,
        note: String,
    },
    /// An operator revokes one token: an access token alone, a refresh token with its family
    /// (as RFC 7009 revocation does).
    Token {
        token: TokenId,
    },
    BlastRadius(BlastRadius),
}

/// The compromised credential of a blast-radius revocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlastCredential {
    Client(String),
    Token(TokenId),
}

/// End every live token minted from `credential` in [`from_ms`, `to_ms`], and every live
/// token descended from one of them.
#[derive(Clone, Debug)]
pub struct BlastRadius {
    pub credential: BlastCredential,
    pub from_ms: i64,
    pub to_ms: i64,
    /// What the api layer found in the ledger (which remembers tokens the projections have
    /// forgotten): tokens of the set, and families whose members from the given seq on
    /// descend from the set. `decide` adds what the committed state shows at decision time,
    /// so tokens minted between that lookup and the decision are not missed.
    pub tokens: Vec<TokenId>,
    pub families: Vec<(FamilyId, u64)>,
    pub note: String,
}

/// The answer to a bulk command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BulkOutcome {
    /// Tokens that were live and ended, counted at decision time.
    pub live_tokens_ended: u64,
    /// For blast radius: exactly the tokens ended, in id order.
    pub tokens: Vec<TokenId>,
}

impl BulkCommand {
    pub fn conflict_keys(&self, keys: &mut ConflictKeys) {
        keys.exclusive = true;
        match self {
            Self::Cutoff { scope, .. } => match scope {
                CutoffScope::Client(id) => keys.write(Entity::Client(id)),
                CutoffScope::User { institution_id, login_id } => keys.write(Entity::User(institution_id, login_id)),
                CutoffScope::Institution(id) => keys.write(Entity::Institution(id)),
                CutoffScope::Family(id) => keys.write(Entity::Family(id)),
            },
            Self::Token { token } => keys.write(Entity::Token(token)),
            Self::BlastRadius(blast) => match &blast.credential {
                BlastCredential::Client(id) => keys.write(Entity::Client(id)),
                BlastCredential::Token(id) => keys.write(Entity::Token(id)),
            },
        }
    }
}

fn check_note(note: &str) -> Result<(), DirectoryError> {
    if note.len() > NOTE_LEN_MAX || !is_printable_ascii(note) {
        return Err(DirectoryError::Invalid(format!("note must be at most {NOTE_LEN_MAX} printable ASCII characters")));
    }
    Ok(())
}

pub fn decide_bulk(state: &State, command: &BulkCommand, ctx: Context<'_>) -> Decision<BulkOutcome, DirectoryError> {
    let result = match command {
        BulkCommand::Cutoff { scope, issued_before_ms, note } => cutoff(state, scope, *issued_before_ms, note, ctx),
        BulkCommand::Token { token } => token_revocation(state, token, ctx),
        BulkCommand::BlastRadius(blast) => blast_radius(state, blast, ctx),
    };
    match result {
        Ok((events, outcome)) => Decision::ok(events, outcome),
        Err(error) => Decision::refuse(error),
    }
}

type Decided = Result<(Vec<crate::proto::ledger::Event>, BulkOutcome), DirectoryError>;

fn cutoff(state: &State, scope: &CutoffScope, issued_before_ms: i64, note: &str, ctx: Context<'_>) -> Decided {
    check_note(note)?;
    if issued_before_ms < 0 {
        return Err(DirectoryError::Invalid("issued_before_ms must not be negative".into()));
    }
    let (wire_scope, known) = match scope {
        CutoffScope::Client(id) => (bulk_revoked::Scope::ClientId(id.clone()), state.client(id).is_some()),
        CutoffScope::Institution(id) => {
            (bulk_revoked::Scope::InstitutionId(id.clone()), state.institutions.contains_key(id.as_str()))
        }
        CutoffScope::User { institution_id, login_id } => (
            bulk_revoked::Scope::User(BulkRevokedUser {
                institution_id: institution_id.clone(),
                login_id: login_id.clone(),
            }),
            state.user(institution_id, login_id).is_some(),
        ),
        CutoffScope::Family(id) => (bulk_revoked::Scope::FamilyId(id.0.to_vec()), state.family(id).is_some()),
    };
    if !known {
        return Err(DirectoryError::NotFound(format!("{} does not exist (or has expired)", describe(scope))));
    }
    // A bound at or after the clock's reading means "everything so far". Recording it as
    // no bound keeps that meaning when the ledger's time is ahead of the clock (after a clock
    // step): tokens recorded at the ledger's later time are covered too.
    let issued_before_ms = if issued_before_ms >= ctx.now_ms { 0 } else { issued_before_ms };
    // The cutoff this event will record (at the batch's recorded time, which never goes back):
    // nothing issued after the current head is covered, and no command shares this batch, so
    // every token it covers is in `state` now.
    let recorded_at_ms = ctx.now_ms.max(state.head.recorded_at_ms);
    let planned = Cutoff::new(state.head.seq.saturating_add(1), recorded_at_ms, issued_before_ms);
    let mut ended = 0u64;
    state.for_each_token(|_, t| {
        ended += u64::from(scope.includes(t) && planned.covers(t) && state.is_active(t, ctx.now_ms));
    });
    let event =
        BulkRevoked { scope: Some(wire_scope), issued_before_ms, live_tokens_ended: ended, note: note.to_owned() };
    let outcome = BulkOutcome { live_tokens_ended: ended, tokens: Vec::new() };
    Ok((vec![wrap(event::Kind::BulkRevoked(event))], outcome))
}

pub fn describe(scope: &CutoffScope) -> String {
    match scope {
        CutoffScope::Client(id) => format!("client {id}"),
        CutoffScope::Institution(id) => format!("institution {id}"),
        CutoffScope::User { institution_id, login_id } => format!("user {login_id} of institution {institution_id}"),
        CutoffScope::Family(id) => format!("family {id}"),
    }
}

fn token_revocation(state: &State, id: &TokenId, ctx: Context<'_>) -> Decided {
    let Some(token) = state.token(id) else {
        return Err(DirectoryError::NotFound(format!("token {id} is unknown (or has expired)")));
    };
    let (kind, ended) = match (token.kind, token.grant.family) {
        (TokenKind::Refresh, Some(family)) => {
            let mut ended = 0usize;
            state.for_each_token(|_, t| {
                ended += usize::from(t.grant.family == Some(family) && state.is_active(t, ctx.now_ms));
            });
            let revoked = FamilyRevoked {
                family_id: family.0.to_vec(),
                reason: RevocationReason::Admin as i32,
                trigger_token_id: id.0.to_vec(),
            };
            (event::Kind::FamilyRevoked(revoked), ended)
        }
        _ => {
            let revoked = TokenRevoked { token_id: id.0.to_vec(), reason: RevocationReason::Admin as i32 };
            (event::Kind::TokenRevoked(revoked), usize::from(state.is_active(&token, ctx.now_ms)))
        }
    };
    let outcome = BulkOutcome { live_tokens_ended: ended as u64, tokens: Vec::new() };
    Ok((vec![wrap(kind)], outcome))
}

fn blast_radius(state: &State, blast: &BlastRadius, ctx: Context<'_>) -> Decided {
    check_note(&blast.note)?;
    if blast.from_ms < 0 || blast.to_ms < blast.from_ms {
        return Err(DirectoryError::Invalid("the window must have 0 <= from_ms <= to_ms".into()));
    }
    let in_window = |at_ms: i64| (blast.from_ms..=blast.to_ms).contains(&at_ms);
    let mut roots: BTreeSet<TokenId> = blast.tokens.iter().copied().collect();
    let mut families: HashMap<FamilyId, u64> = HashMap::new();
    let taint = |families: &mut HashMap<FamilyId, u64>, family: FamilyId, from_seq: u64| {
        let seq = families.entry(family).or_insert(from_seq);
        *seq = (*seq).min(from_seq);
    };
    for (family, from_seq) in &blast.families {
        taint(&mut families, *family, *from_seq);
    }
    // What the committed state shows now, in case tokens were minted after the ledger lookup.
    match &blast.credential {
        BlastCredential::Client(client_id) => {
            state.for_each_token(|id, token| {
                if **token.grant.client_id == **client_id && in_window(token.issued_at_ms) {
                    roots.insert(id);
                    if let Some(family) = token.grant.family {
                        taint(&mut families, family, token.issued_seq);
                    }
                }
            });
        }
        BlastCredential::Token(id) => {
            roots.insert(*id);
            let successor = state.token(id).and_then(|t| match t.end {
                Some(TokenEnd { cause: EndCause::Rotated { successor }, .. }) => state.token(&successor),
                _ => None,
            });
            if let Some(successor) = successor.filter(|s| in_window(s.issued_at_ms))
                && let Some(family) = successor.grant.family
            {
                taint(&mut families, family, successor.issued_seq);
            }
        }
    }
    let mut ended = BTreeSet::new();
    state.for_each_token(|id, t| {
        let descends = t.grant.family.and_then(|f| families.get(&f)).is_some_and(|from| t.issued_seq >= *from);
        if (roots.contains(&id) || descends) && state.is_active(t, ctx.now_ms) {
            ended.insert(id);
        }
    });
    let ended: Vec<TokenId> = ended.into_iter().collect();
    if ended.len() > BLAST_TOKENS_MAX {
        return Err(DirectoryError::Invalid(format!(
            "{} live tokens are affected, more than {BLAST_TOKENS_MAX}: revoke by client or institution instead",
            ended.len()
        )));
    }
    let credential = match &blast.credential {
        BlastCredential::Client(id) => blast_radius_revoked::Credential::ClientId(id.clone()),
        BlastCredential::Token(id) => blast_radius_revoked::Credential::TokenId(id.0.to_vec()),
    };
    // One event even when nothing was live: every operator action is on the record.
    let mut events = Vec::new();
    for chunk in ended.chunks(BLAST_TOKENS_PER_EVENT).map(<[TokenId]>::to_vec).chain(ended.is_empty().then(Vec::new)) {
        events.push(wrap(event::Kind::BlastRadiusRevoked(BlastRadiusRevoked {
            credential: Some(credential.clone()),
            from_ms: blast.from_ms,
            to_ms: blast.to_ms,
            token_ids: chunk.iter().map(|id| id.0.to_vec()).collect(),
            note: blast.note.clone(),
        })));
    }
    Ok((events, BulkOutcome { live_tokens_ended: ended.len() as u64, tokens: ended }))
}

/// The scope of a recorded `BulkRevoked` event (`None` for a malformed one, which changes
/// nothing).
pub fn scope_of(event: &BulkRevoked) -> Option<CutoffScope> {
    Some(match event.scope.as_ref()? {
        bulk_revoked::Scope::ClientId(id) => CutoffScope::Client(id.clone()),
        bulk_revoked::Scope::InstitutionId(id) => CutoffScope::Institution(id.clone()),
        bulk_revoked::Scope::User(u) => {
            CutoffScope::User { institution_id: u.institution_id.clone(), login_id: u.login_id.clone() }
        }
        bulk_revoked::Scope::FamilyId(id) => CutoffScope::Family(FamilyId::from_slice(id)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Command, FreshIds, Issue, IssueGrant, Outcome, Recorded, Rejection};
    use crate::domain::{apply, decide};
    use crate::proto::ledger::{ClientCreated, Event, InstitutionCreated, UserCreated, UserType};

    /// Given-events / when-command / then-events: a state built only by `apply`.
    struct Given {
        state: State,
        now_ms: i64,
        next_id: u8,
    }

    impl Given {
        fn directory() -> Self {
            let mut given = Self { state: State::default(), now_ms: 1_000, next_id: 0 };
            let events = [
                event::Kind::InstitutionCreated(InstitutionCreated { institution_id: "1".into(), name: "One".into() }),
                event::Kind::ClientCreated(ClientCreated {
                    client_id: "c".into(),
                    institution_ids: vec!["1".into()],
                    grant_types: vec!["client_credentials".into(), "password".into()],
                    scopes: vec!["a".into()],
                    access_token_ttl_secs: 3600,
                    refresh_token_ttl_secs: 7200,
                    ..Default::default()
                }),
                event::Kind::UserCreated(UserCreated {
                    institution_id: "1".into(),
                    login_id: "u".into(),
                    institution_user_id: "U".into(),
                    user_type: UserType::Retail as i32,
                    ..Default::default()
                }),
            ];
            for kind in events {
                given.record(vec![wrap(kind)]);
            }
            given
        }

        fn record(&mut self, events: Vec<Event>) {
            for event in events {
                let seq = self.state.head.seq + 1;
                let at = Recorded { seq, recorded_at_ms: self.now_ms, transaction_id: "", hash: [0; 32] };
                apply(&mut self.state, at, &event);
            }
        }

        /// Decides `command` now and records its events; returns the decision's outcome.
        fn when(&mut self, command: Command) -> Result<Outcome, Rejection> {
            let ctx = Context { now_ms: self.now_ms, transaction_id: "" };
            let decision = decide(&self.state, &command, ctx);
            self.record(decision.events);
            decision.outcome
        }

        fn fresh(&mut self) -> FreshIds {
            self.next_id += 3;
            let n = self.next_id;
            FreshIds { access: TokenId([n; 16]), refresh: TokenId([n + 1; 16]), family: FamilyId([n + 2; 16]) }
        }

        fn issue(&mut self, grant: IssueGrant) -> crate::domain::Issued {
            let fresh = self.fresh();
            let issue = Issue {
                client_id: "c".into(),
                institution_id: Some("1".into()),
                grant,
                requested_scopes: None,
                fingerprint: [0; 32],
                family_lifetime_max_ms: crate::domain::FAMILY_LIFETIME_MAX_MS_DEFAULT,
                fresh,
            };
            match self.when(Command::Issue(issue)) {
                Ok(Outcome::Issued(issued)) => issued,
                other => panic!("issue failed: {other:?}"),
            }
        }

        fn active(&self, id: &TokenId) -> bool {
            self.state.active_token(id, self.now_ms).is_some()
        }

        fn bulk(&mut self, command: BulkCommand) -> BulkOutcome {
            match self.when(Command::Bulk(command)) {
                Ok(Outcome::Bulk(outcome)) => outcome,
                other => panic!("bulk failed: {other:?}"),
            }
        }
    }

    fn password() -> IssueGrant {
        IssueGrant::Password { login_id: "u".into() }
    }

    #[test]
    fn a_client_cutoff_ends_earlier_tokens_in_one_event_and_spares_later_ones() {
        let mut given = Given::directory();
        let first = given.issue(IssueGrant::ClientCredentials);
        let second = given.issue(password());
        given.now_ms += 10;
        let head = given.state.head.seq;
        let outcome = given.bulk(BulkCommand::Cutoff {
            scope: CutoffScope::Client("c".into()),
            issued_before_ms: 0,
            note: "INC-1".into(),
        });
        assert_eq!(outcome.live_tokens_ended, 3, "one client_credentials token, an access and a refresh token");
        assert_eq!(given.state.head.seq, head + 1, "one event");
        for id in [first.access.id, second.access.id, second.refresh.map(|r| r.id).unwrap()] {
            assert!(!given.active(&id));
        }
        let later = given.issue(IssueGrant::ClientCredentials);
        assert!(given.active(&later.access.id), "a cutoff never ends tokens issued after it");
    }

    #[test]
    fn an_issued_before_cutoff_ends_only_tokens_older_than_its_time() {
        let mut given = Given::directory();
        let old = given.issue(password());
        given.now_ms = 2_000;
        let young = given.issue(password());
        given.now_ms = 3_000;
        let scope = CutoffScope::User { institution_id: "1".into(), login_id: "u".into() };
        let outcome = given.bulk(BulkCommand::Cutoff { scope, issued_before_ms: 1_500, note: String::new() });
        assert_eq!(outcome.live_tokens_ended, 2);
        assert!(!given.active(&old.access.id));
        assert!(given.active(&young.access.id));
    }

    #[test]
    fn a_cut_off_refresh_token_cannot_be_refreshed() {
        let mut given = Given::directory();
        let issued = given.issue(password());
        given.bulk(BulkCommand::Cutoff {
            scope: CutoffScope::Institution("1".into()),
            issued_before_ms: 0,
            note: String::new(),
        });
        let fresh = given.fresh();
        let refresh = Issue {
            client_id: "c".into(),
            institution_id: None,
            grant: IssueGrant::Refresh { token: issued.refresh.unwrap().id },
            requested_scopes: None,
            fingerprint: [1; 32],
            family_lifetime_max_ms: crate::domain::FAMILY_LIFETIME_MAX_MS_DEFAULT,
            fresh,
        };
        let head = given.state.head.seq;
        assert_eq!(
            given.when(Command::Issue(refresh)),
            Err(Rejection::Refused(crate::domain::shared::error::Refusal::InvalidGrant))
        );
        assert_eq!(given.state.head.seq, head, "a cut-off token is simply invalid, not reuse");
    }

    #[test]
    fn unknown_scopes_and_bad_notes_are_refused_without_events() {
        let mut given = Given::directory();
        let head = given.state.head.seq;
        for command in [
            BulkCommand::Cutoff { scope: CutoffScope::Client("nope".into()), issued_before_ms: 0, note: String::new() },
            BulkCommand::Cutoff { scope: CutoffScope::Client("c".into()), issued_before_ms: 0, note: "\n".into() },
            BulkCommand::Cutoff { scope: CutoffScope::Client("c".into()), issued_before_ms: -1, note: String::new() },
            BulkCommand::Token { token: TokenId([9; 16]) },
        ] {
            assert!(matches!(given.when(Command::Bulk(command)), Err(Rejection::Directory(_))));
        }
        assert_eq!(given.state.head.seq, head);
    }

    #[test]
    fn blast_radius_of_a_refresh_token_ends_its_descendants_but_not_its_ancestors() {
        let mut given = Given::directory();
        let root = given.issue(password());
        let stolen = root.refresh.unwrap().id;
        given.now_ms = 2_000;
        let child = given.issue(IssueGrant::Refresh { token: stolen });
        given.now_ms = 3_000;
        let grandchild = given.issue(IssueGrant::Refresh { token: child.refresh.unwrap().id });
        let unrelated = given.issue(password());
        let outcome = given.bulk(BulkCommand::BlastRadius(BlastRadius {
            credential: BlastCredential::Token(stolen),
            from_ms: 1_500,
            to_ms: 2_500,
            tokens: Vec::new(),
            families: Vec::new(),
            note: "stolen refresh token".into(),
        }));
        // The child's refresh token was rotated (not live); its access token, and the
        // grandchild's two tokens, were.
        let mut expected = vec![child.access.id, grandchild.access.id, grandchild.refresh.unwrap().id];
        expected.sort();
        assert_eq!(outcome.tokens, expected);
        assert!(given.active(&root.access.id), "the ancestor's access token was not minted from the stolen token");
        assert!(given.active(&unrelated.access.id));
        for id in &expected {
            assert!(!given.active(id));
        }
    }

    #[test]
    fn bulk_commands_run_alone_in_their_batch() {
        let command = Command::Bulk(BulkCommand::Token { token: TokenId([1; 16]) });
        assert!(command.conflict_keys(&State::default(), "", Default::default()).exclusive);
    }
}
