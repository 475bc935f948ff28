//! The institution-user lookup (SPEC 3.5), shared by REST and gRPC. The checks run in this
//! order: bearer token (ISR_11001), scope (ISR_11003), `institutionId` (ISR_10000 malformed,
//! ISR_11003 another institution), the query and `userIdType` (ISR_10000), the path id
//! (ISR_10000 when no user can have it), then the lookup inside the token's institution
//! (ISR_10001). Each ISR_10000 message names the faulty parameter. A token bound to a user (password grant) may look up only
//! that user: any other id is ISR_11003 whether or not it exists, so such a token cannot
//! enumerate the institution's users.

use crate::api::app::App;
use crate::api::error::LookupError;
use crate::api::wire::Institution;
use crate::crypto::token::{self as token_string, TokenKind as StringKind};
use crate::domain::ids::is_valid_identifier;
use crate::domain::signin;
use crate::domain::state::{State, TokenKind, User};
use crate::proto::ledger::{InstitutionCustomer, UserType};

/// The scope a token needs for the lookup.
pub const LOOKUP_SCOPE: &str = "institution-users:read";

/// One lookup request, after the transport has checked `transactionId`.
pub struct LookupCall {
    /// The bearer token, if the `authorization` header was `Bearer <token>`.
    pub bearer: Option<String>,
    pub institution: Institution,
    /// The path id, or the error of one that could not be decoded, reported after the token
    /// checks.
    pub id: Result<String, LookupError>,
    /// The `userIdType` parameter (`None` when absent), or the error of a malformed query,
    /// reported after the token checks.
    pub user_id_type: Result<Option<String>, LookupError>,
}

/// Which identifier a lookup names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserIdType {
    InstitutionUserId,
    LoginId,
    HostUserId,
    /// Candescent's authentication id; ours is the institution user id.
    UserId,
    /// Candescent's legacy user GUID: tokenledger keeps none, so nothing matches.
    LegacyUserGuid,
}

impl UserIdType {
    pub fn parse(text: Option<&str>) -> Result<Self, LookupError> {
        let Some(text) = text else {
            return Ok(Self::InstitutionUserId);
        };
        match text.to_ascii_uppercase().as_str() {
            "INSTITUTION_USER_ID" => Ok(Self::InstitutionUserId),
            "LOGIN_ID" => Ok(Self::LoginId),
            "HOST_USER_ID" => Ok(Self::HostUserId),
            "USER_ID" => Ok(Self::UserId),
            "LEGACY_USER_GUID" => Ok(Self::LegacyUserGuid),
            _ => Err(LookupError::BadUserIdType),
        }
    }
}

/// What the lookup answers; both transports render it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstitutionUserView {
    pub institution_user_id: String,
    pub institution_id: String,
    pub institution_user_type: &'static str,
    pub user_id: String,
    pub user_name: String,
    pub failed_login_count: u32,
    pub failed_password_reset_count: u32,
    pub additional_info: Vec<(String, String)>,
    pub active: bool,
    pub locked: bool,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub institution_customers: Vec<InstitutionCustomer>,
}

/// GET /db-users/v1/institution-users/{id}, GET /v1/institution-users/{id} and
/// InstitutionUserService.GetInstitutionUser.
pub fn lookup(app: &App, call: &LookupCall) -> Result<InstitutionUserView, LookupError> {
    let presented = call.bearer.as_deref().ok_or(LookupError::Unauthenticated)?;
    let Some((StringKind::Access, token_id)) = token_string::decode(&app.keys, presented) else {
        return Err(LookupError::Unauthenticated);
    };
    let now_ms = app.clock.now_ms();
    let state = app.state.read();
    let token = state
        .active_token(&token_id, now_ms)
        .filter(|t| t.kind == TokenKind::Access)
        .ok_or(LookupError::Unauthenticated)?;
    if !token.scopes.iter().any(|s| &**s == LOOKUP_SCOPE) {
        return Err(LookupError::Forbidden);
    }
    let institution_id = &**token.grant.institution_id;
    match &call.institution {
        Institution::Invalid => return Err(LookupError::BadInstitution),
        Institution::Valid(named) if named != institution_id => return Err(LookupError::Forbidden),
        _ => {}
    }
    let id_type = UserIdType::parse(call.user_id_type.clone()?.as_deref())?;
    let id = call.id.as_deref().map_err(|e| *e)?;
    // No user can have such an id; a control character is a malformed request, not a miss.
    if !is_valid_identifier(id) {
        return Err(LookupError::BadUserId);
    }
    let found = find(&state, institution_id, id_type, id);
    if let Some(bound) = token.grant.user {
        let is_self = found.is_some_and(|u| u.identity.login_id == bound.login_id);
        if !is_self {
            return Err(LookupError::Forbidden);
        }
    }
    let user = found.ok_or(LookupError::NotFound)?;
    Ok(view(&state, user, now_ms))
}

fn find<'s>(state: &'s State, institution_id: &str, id_type: UserIdType, id: &str) -> Option<&'s User> {
    let user = match id_type {
        UserIdType::InstitutionUserId | UserIdType::UserId => state.user_by_institution_user_id(institution_id, id),
        UserIdType::LoginId => state.user(institution_id, id),
        UserIdType::HostUserId => state.user_by_host_user_id(institution_id, id),
        UserIdType::LegacyUserGuid => None,
    };
    user.map(|u| &**u)
}

fn view(state: &State, user: &User, now_ms: i64) -> InstitutionUserView {
    let id = &user.identity;
    let record = signin::user_record(state, &id.institution_id, &id.login_id);
    let optional = |text: &str| (!text.is_empty()).then(|| text.to_owned());
    let mut additional_info = Vec::new();
    if !id.host_user_id.is_empty() {
        additional_info.push(("hostUserId".to_owned(), id.host_user_id.clone()));
    }
    InstitutionUserView {
        institution_user_id: id.institution_user_id.to_string(),
        institution_id: id.institution_id.to_string(),
        institution_user_type: if id.user_type == UserType::Business { "BUSINESS" } else { "RETAIL" },
        user_id: id.institution_user_id.to_string(),
        user_name: id.login_id.to_string(),
        failed_login_count: record.map_or(0, |r| r.failed_login_count),
        failed_password_reset_count: 0,
        additional_info,
        active: !user.disabled,
        locked: user.locked || record.is_some_and(|r| r.is_locked_at(now_ms)),
        first_name: optional(&user.first_name),
        last_name: optional(&user.last_name),
        email: optional(&user.email),
        institution_customers: user.institution_customers.clone(),
    }
}
