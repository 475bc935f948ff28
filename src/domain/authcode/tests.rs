//! Given events, when a command, then events: the decisions of the code flow without I/O.

use super::*;
use crate::domain::shared::error::Refusal;
use crate::domain::shared::ids::FamilyId;
use crate::domain::{
    Command, Context, FreshIds, Issue, IssueGrant, Outcome, Recorded, Rejection, State, apply, decide,
};
use crate::proto::ledger::{
    ClientAuthorizePartnersSet, ClientCreated, Event, GrantType, InstitutionCreated, IssuedToken, SigningKeyActivated,
    TokensIssued, UserCreated, event,
};

const INSTITUTION: &str = "01001";
const T0: i64 = 1_700_000_000_000;
/// RFC 7636 Appendix B: SHA-256 of `dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk`.
const CHALLENGE: [u8; 32] = [
    0x13, 0xd3, 0x1e, 0x96, 0x1a, 0x1a, 0xd8, 0xec, 0x2f, 0x16, 0xb1, 0x0c, 0x4c, 0x98, 0x2e, 0x08, 0x76, 0xa8, 0x78,
    0xad, 0x6d, 0xf1, 0x44, 0x56, 0x6e, 0xe1, 0x89, 0x4a, 0xcb, 0x70, 0xf9, 0xc3,
];

struct World {
    state: State,
    now_ms: i64,
}

impl World {
    /// Institution 01001, a first-party app (`authorize_partners`) with an active
    /// institution-level access token (id [1; 16]), a partner for the code flow, a client
    /// `plain` that is no first-party app, and user alice.
    fn new() -> Self {
        let mut world = Self { state: State::default(), now_ms: T0 };
        world.given(event::Kind::InstitutionCreated(InstitutionCreated {
            institution_id: INSTITUTION.into(),
            name: "Bank".into(),
        }));
        world.given(client("app", &["client_credentials"], ""));
        world.given(client("partner", &["authorization_code"], "https://partner.example/cb"));
        world.given(client("plain", &["client_credentials"], "https://plain.example/cb"));
        world.given(event::Kind::ClientAuthorizePartnersSet(ClientAuthorizePartnersSet {
            client_id: "app".into(),
            authorize_partners: true,
        }));
        world.given(event::Kind::UserCreated(UserCreated {
            institution_id: INSTITUTION.into(),
            login_id: "alice".into(),
            institution_user_id: "IUID-ALICE".into(),
            ..Default::default()
        }));
        world.given(event::Kind::TokensIssued(TokensIssued {
            grant_type: GrantType::ClientCredentials as i32,
            client_id: "app".into(),
            institution_id: INSTITUTION.into(),
            access: Some(IssuedToken { token_id: vec![1; 16], expires_at_ms: T0 + 3_600_000, scopes: vec![] }),
            ..Default::default()
        }));
        world.given(event::Kind::SigningKeyActivated(SigningKeyActivated {
            key_id: "k1".into(),
            algorithm: "ES256".into(),
            public_key: vec![4; 65],
            previous_key_id: String::new(),
            sealed_private_key: Vec::new(),
        }));
        world
    }

    fn given(&mut self, kind: event::Kind) {
        let seq = self.state.head.seq + 1;
        let at = Recorded { seq, recorded_at_ms: self.now_ms, transaction_id: "", hash: [0; 32] };
        apply(&mut self.state, at, &Event { kind: Some(kind) });
    }

    /// Decides `command` and applies its events, as the writer does after the commit.
    fn when(&mut self, command: &Command) -> Decision {
        let ctx = Context { now_ms: self.now_ms, transaction_id: "" };
        let decision = decide(&self.state, command, ctx);
        for event in &decision.events {
            self.given(event.kind.clone().unwrap());
        }
        decision
    }
}

fn client(id: &str, grants: &[&str], redirect_uri: &str) -> event::Kind {
    event::Kind::ClientCreated(ClientCreated {
        client_id: id.into(),
        institution_ids: vec![INSTITUTION.into()],
        grant_types: grants.iter().map(|g| g.to_string()).collect(),
        scopes: vec!["accounts:read".into(), "transactions:read".into()],
        redirect_uri: redirect_uri.into(),
        access_token_ttl_secs: 1800,
        refresh_token_ttl_secs: 86_400,
        ..Default::default()
    })
}

fn code_request(code: u8) -> CodeRequest {
    CodeRequest {
        bearer_token: TokenId([1; 16]),
        institution_id: INSTITUTION.into(),
        partner_client_id: "partner".into(),
        username: "alice".into(),
        institution_user_id: "IUID-ALICE".into(),
        scopes: vec!["accounts:read".into()],
        requested_scopes: vec!["openid".into(), "offline_access".into()],
        nonce: Some("n-0S6_WzA2Mj".into()),
        audience: None,
        auth_time_secs: None,
        challenge: Some(CHALLENGE),
        code_id: TokenId([code; 16]),
        ttl_secs: 600,
    }
}

fn issue_code(request: CodeRequest) -> Command {
    Command::Authorization(AuthorizationCommand::IssueCode(Box::new(request)))
}

fn redeem(client: &str, code: u8, verifier: Option<PresentedVerifier>, fresh: u8) -> Command {
    Command::Issue(Issue {
        client_id: client.into(),
        institution_id: None,
        grant: IssueGrant::AuthorizationCode(CodeRedemption {
            code: TokenId([code; 16]),
            verifier,
            redirect_uri: None,
            id_token_ttl_secs: 300,
        }),
        requested_scopes: None,
        fingerprint: [fresh; 32],
        family_lifetime_max_ms: crate::domain::FAMILY_LIFETIME_MAX_MS_DEFAULT,
        fresh: FreshIds {
            access: TokenId([fresh; 16]),
            refresh: TokenId([fresh + 1; 16]),
            family: FamilyId([fresh; 16]),
        },
    })
}

fn right() -> Option<PresentedVerifier> {
    Some(PresentedVerifier { well_formed: true, digest: CHALLENGE })
}

fn kinds(decision: &Decision) -> Vec<&'static str> {
    decision
        .events
        .iter()
        .map(|e| match e.kind.as_ref().unwrap() {
            event::Kind::AuthorizationCodeIssued(_) => "issued",
            event::Kind::TokensIssued(_) => "tokens",
            event::Kind::AuthorizationCodeReplayed(_) => "replayed",
            event::Kind::FamilyRevoked(_) => "family-revoked",
            event::Kind::AuthorizationCodeBurned(_) => "burned",
            _ => "other",
        })
        .collect()
}

fn refused(decision: &Decision) -> Refusal {
    match &decision.outcome {
        Err(Rejection::Refused(code)) => *code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

type Decision = crate::domain::Decision<Outcome, Rejection>;

#[test]
fn a_code_redeems_once_with_its_verifier_and_a_replay_revokes_the_family() {
    let mut world = World::new();
    let issued = world.when(&issue_code(code_request(7)));
    assert_eq!(kinds(&issued), ["issued"]);
    let redeemed = world.when(&redeem("partner", 7, right(), 20));
    assert_eq!(kinds(&redeemed), ["tokens"]);
    let Some(event::Kind::TokensIssued(tokens)) = &redeemed.events[0].kind else { unreachable!() };
    assert_eq!(tokens.authorization_code_id, vec![7; 16]);
    assert_eq!(tokens.login_id, "alice");
    assert!(tokens.refresh.is_some(), "offline_access asks for a refresh token");
    assert_eq!(tokens.id_token_key_id, "k1");
    assert_eq!(tokens.id_token_expires_at_ms, T0 + 300_000);
    assert!(matches!(redeemed.outcome, Ok(Outcome::Issued(_))));
    assert_eq!(world.state.authorization.signing_keys["k1"].id_tokens_expire_at_ms, T0 + 300_000);

    let replay = world.when(&redeem("partner", 7, right(), 30));
    assert_eq!(kinds(&replay), ["replayed", "family-revoked"]);
    assert_eq!(refused(&replay), Refusal::InvalidGrant);
    assert!(!world.state.is_active(&world.state.token(&TokenId([20; 16])).unwrap(), world.now_ms));
    let again = world.when(&redeem("partner", 7, right(), 40));
    assert!(again.events.is_empty(), "a replay is recorded once");
    assert_eq!(refused(&again), Refusal::InvalidGrant);
}

#[test]
fn without_openid_or_offline_access_there_is_no_id_token_or_refresh_token() {
    let mut world = World::new();
    let mut request = code_request(7);
    request.requested_scopes = vec![];
    request.challenge = None;
    world.when(&issue_code(request));
    let redeemed = world.when(&redeem("partner", 7, None, 20));
    let Some(event::Kind::TokensIssued(tokens)) = &redeemed.events[0].kind else { unreachable!() };
    assert!(tokens.refresh.is_none());
    assert!(tokens.id_token_key_id.is_empty());
    assert_eq!(tokens.family_id, vec![20; 16], "code tokens always form a family");
}

#[test]
fn any_failed_verifier_check_burns_the_code() {
    for (verifier, with_challenge) in [
        (Some(PresentedVerifier { well_formed: true, digest: [9; 32] }), true),
        (Some(PresentedVerifier { well_formed: false, digest: CHALLENGE }), true),
        (None, true),
        (right(), false),
    ] {
        let mut world = World::new();
        let mut request = code_request(7);
        if !with_challenge {
            request.challenge = None;
        }
        world.when(&issue_code(request));
        let attempt = world.when(&redeem("partner", 7, verifier, 20));
        assert_eq!(kinds(&attempt), ["burned"], "{verifier:?} {with_challenge}");
        assert_eq!(refused(&attempt), Refusal::InvalidGrant);
        let next = world.when(&redeem("partner", 7, if with_challenge { right() } else { None }, 30));
        assert!(next.events.is_empty());
        assert_eq!(refused(&next), Refusal::InvalidGrant, "a burned code never redeems");
    }
}

#[test]
fn only_the_partner_it_was_issued_to_can_use_or_spend_a_code() {
    let mut world = World::new();
    world.given(client("other-partner", &["authorization_code"], "https://o.example/cb"));
    world.when(&issue_code(code_request(7)));
    let stranger = world.when(&redeem("other-partner", 7, right(), 20));
    assert!(stranger.events.is_empty());
    assert_eq!(refused(&stranger), Refusal::InvalidGrant);
    let owner = world.when(&redeem("partner", 7, right(), 30));
    assert_eq!(kinds(&owner), ["tokens"]);
}

#[test]
fn an_expired_code_is_invalid_and_changes_nothing() {
    let mut world = World::new();
    world.when(&issue_code(code_request(7)));
    world.now_ms += 600_000;
    let late = world.when(&redeem("partner", 7, right(), 20));
    assert!(late.events.is_empty());
    assert_eq!(refused(&late), Refusal::InvalidGrant);
    world.state.purge_all_expired(world.now_ms);
    assert!(world.state.authorization.codes.is_empty());
}

#[test]
fn code_requests_follow_the_spec_rules() {
    type Change = fn(&mut CodeRequest);
    let cases: [(Change, Refusal); 7] = [
        (|r| r.partner_client_id = "app".into(), Refusal::SelfAuthorization),
        (|r| r.partner_client_id = "plain".into(), Refusal::InvalidClientConfiguration),
        (|r| r.partner_client_id = "nobody".into(), Refusal::InvalidClientConfiguration),
        (|r| r.institution_user_id = "IUID-NOBODY".into(), Refusal::InvalidInstitution),
        (|r| r.username = "bob".into(), Refusal::InvalidUsername),
        (|r| r.scopes = vec!["admin".into()], Refusal::InvalidScope),
        (|r| r.bearer_token = TokenId([2; 16]), Refusal::InvalidGrant),
    ];
    for (change, expected) in cases {
        let mut world = World::new();
        let mut request = code_request(7);
        change(&mut request);
        let decision = world.when(&issue_code(request));
        assert!(decision.events.is_empty());
        assert_eq!(refused(&decision), expected);
    }
    let mut world = World::new();
    let mut request = code_request(7);
    request.institution_id = "09999".into();
    assert_eq!(refused(&world.when(&issue_code(request))), Refusal::InvalidInstitution);
}

/// An access token of `client_id`, for `login_id` when given.
fn bearer(world: &mut World, client_id: &str, login_id: &str, id: u8) -> TokenId {
    world.given(event::Kind::TokensIssued(TokensIssued {
        grant_type: if login_id.is_empty() { GrantType::ClientCredentials } else { GrantType::Password } as i32,
        client_id: client_id.into(),
        institution_id: INSTITUTION.into(),
        login_id: login_id.into(),
        access: Some(IssuedToken { token_id: vec![id; 16], expires_at_ms: T0 + 3_600_000, scopes: vec![] }),
        ..Default::default()
    }));
    TokenId([id; 16])
}

/// Security review finding 1: only a first-party app's token, and a user's token only for its
/// own user; the event names who authorized the code.
#[test]
fn only_first_party_apps_may_ask_and_a_users_token_only_for_its_user() {
    let mut world = World::new();
    world.given(event::Kind::UserCreated(UserCreated {
        institution_id: INSTITUTION.into(),
        login_id: "bob".into(),
        institution_user_id: "IUID-BOB".into(),
        ..Default::default()
    }));
    let plain = bearer(&mut world, "plain", "", 3);
    let request = CodeRequest { bearer_token: plain, ..code_request(7) };
    assert_eq!(refused(&world.when(&issue_code(request))), Refusal::UnauthorizedClient);
    let alice = bearer(&mut world, "app", "alice", 4);
    for (username, iuid) in [("bob", "IUID-BOB"), ("alice", "IUID-BOB"), ("bob", "IUID-ALICE"), ("alice", "NOBODY")] {
        let request = CodeRequest {
            bearer_token: alice,
            username: username.into(),
            institution_user_id: iuid.into(),
            ..code_request(8)
        };
        let decision = world.when(&issue_code(request));
        assert!(decision.events.is_empty());
        assert_eq!(refused(&decision), Refusal::UnauthorizedClient, "{username} {iuid}");
    }
    let issued = |decision: &Decision| match decision.events.first().and_then(|e| e.kind.clone()) {
        Some(event::Kind::AuthorizationCodeIssued(c)) => (c.authorized_by_client_id, c.authorized_by_login_id),
        other => panic!("{other:?}"),
    };
    let own = world.when(&issue_code(CodeRequest { bearer_token: alice, ..code_request(9) }));
    assert_eq!(issued(&own), ("app".to_owned(), "alice".to_owned()));
    let institution_level =
        CodeRequest { username: "bob".into(), institution_user_id: "IUID-BOB".into(), ..code_request(10) };
    assert_eq!(issued(&world.when(&issue_code(institution_level))), ("app".to_owned(), String::new()));
    // Without the capability any more, the same bearer is refused.
    world.given(event::Kind::ClientAuthorizePartnersSet(ClientAuthorizePartnersSet {
        client_id: "app".into(),
        authorize_partners: false,
    }));
    assert_eq!(refused(&world.when(&issue_code(code_request(11)))), Refusal::UnauthorizedClient);
}

#[test]
fn partner_tokens_cannot_authorize_other_partners() {
    let mut world = World::new();
    world.when(&issue_code(code_request(7)));
    world.when(&redeem("partner", 7, right(), 20));
    let mut request = code_request(8);
    request.bearer_token = TokenId([20; 16]);
    request.partner_client_id = "plain".into();
    assert_eq!(refused(&world.when(&issue_code(request))), Refusal::UnauthorizedClient);
}

#[test]
fn a_retired_key_stays_published_until_its_last_id_token_expires() {
    let mut world = World::new();
    world.when(&issue_code(code_request(7)));
    world.when(&redeem("partner", 7, right(), 20));
    let rotate = Command::Authorization(AuthorizationCommand::ActivateSigningKey(SigningKeyActivation {
        key_id: "k2".into(),
        algorithm: "ES256".into(),
        public_key: vec![4; 65],
        sealed_private_key: Vec::new(),
    }));
    let decision = world.when(&rotate);
    assert_eq!(
        decision.outcome,
        Ok(Outcome::Authorization(AuthorizationOutcome::SigningKeyActivated { previous_key_id: Some("k1".into()) }))
    );
    let published = |w: &World, at: i64| -> Vec<String> {
        w.state.authorization.published_keys(at).into_iter().map(|k| k.key_id.clone()).collect()
    };
    assert_eq!(published(&world, T0 + 299_999), ["k1", "k2"]);
    assert_eq!(published(&world, T0 + 300_000), ["k2"]);
    assert_eq!(world.state.authorization.active_signing_key.as_deref(), Some("k2"));
}
