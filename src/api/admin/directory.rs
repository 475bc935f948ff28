//! The AdminService flows beyond creation and import: reads from the projections, client
//! secret rotation and disable/enable, user passwords, locks, disable/enable and profile
//! updates. Secrets are generated and passwords hashed here, outside the writer.

use std::sync::Arc;

use super::{AdminError, client_view, user_view};
use crate::api::app::App;
use crate::crypto::credential::{self, SECRET_LEN_MAX};
use crate::domain::directory::account::{AccountCommand, UserRef};
use crate::domain::error::DirectoryError;
use crate::domain::ids::is_printable_ascii;
use crate::domain::signin;
use crate::domain::state::{Client, State, User};
use crate::ledger::SubmitFailure;
use crate::proto::ledger::{self as ledger, UserType, UserUpdated};
use crate::proto::{self as api};

/// Most users one ListUsers page holds.
pub const USERS_PAGE_MAX: u32 = 1000;
const USERS_PAGE_DEFAULT: u32 = 100;

fn invalid(text: impl Into<String>) -> AdminError {
    AdminError::Refused(DirectoryError::Invalid(text.into()))
}

fn not_found(text: impl Into<String>) -> AdminError {
    AdminError::Refused(DirectoryError::NotFound(text.into()))
}

async fn change(app: &App, command: AccountCommand, transaction_id: String) -> Result<(), AdminError> {
    match app.ledger.submit_as(command, transaction_id).await {
        Ok(()) => Ok(()),
        Err(SubmitFailure::Refused(error)) => Err(error.into()),
        Err(SubmitFailure::Unavailable) => Err(AdminError::Unavailable),
    }
}

/// A client as AdminService shows it, with its status at `now_ms`.
pub fn client_status_view(client: &Arc<Client>, now_ms: i64) -> api::Client {
    let mut view = client_view(client);
    view.previous_secret_valid_until_ms =
        client.previous_secret.as_ref().filter(|p| now_ms < p.valid_until_ms).map_or(0, |p| p.valid_until_ms);
    view
}

/// A user as AdminService shows it, with its sign-in status at `now_ms`.
pub fn user_status_view(state: &State, user: &Arc<User>, now_ms: i64) -> api::User {
    let mut view = user_view(user);
    let record = signin::user_record(state, &user.identity.institution_id, &user.identity.login_id);
    view.locked_out_until_ms = record.filter(|r| r.is_locked_at(now_ms)).map_or(0, |r| r.locked_until_ms);
    view.failed_login_count = record.map_or(0, |r| r.failed_login_count);
    view
}

pub fn list_institutions(app: &App) -> api::ListInstitutionsResponse {
    let state = app.state.read();
    let institutions = state
        .institutions
        .values()
        .map(|i| api::Institution { institution_id: i.id.to_string(), name: i.name.clone() })
        .collect();
    api::ListInstitutionsResponse { institutions }
}

pub fn get_institution(app: &App, request: &api::GetInstitutionRequest) -> Result<api::Institution, AdminError> {
    let state = app.state.read();
    let institution = state
        .institutions
        .get(request.institution_id.as_str())
        .ok_or_else(|| not_found(format!("institution {:?} does not exist", request.institution_id)))?;
    Ok(api::Institution { institution_id: institution.id.to_string(), name: institution.name.clone() })
}

pub fn list_clients(app: &App, request: &api::ListClientsRequest) -> api::ListClientsResponse {
    let now_ms = app.clock.now_ms();
    let state = app.state.read();
    let mut clients: Vec<&Arc<Client>> = state
        .clients
        .values()
        .filter(|c| request.institution_id.is_empty() || c.serves_institution(&request.institution_id))
        .collect();
    clients.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    api::ListClientsResponse { clients: clients.into_iter().map(|c| client_status_view(c, now_ms)).collect() }
}

pub fn get_client(app: &App, client_id: &str) -> Result<api::Client, AdminError> {
    let state = app.state.read();
    let client = state.client(client_id).ok_or_else(|| not_found(format!("client {client_id:?} does not exist")))?;
    Ok(client_status_view(client, app.clock.now_ms()))
}

pub fn list_users(app: &App, request: &api::ListUsersRequest) -> Result<api::ListUsersResponse, AdminError> {
    let page_size = match request.page_size {
        0 => USERS_PAGE_DEFAULT,
        n if n > USERS_PAGE_MAX => return Err(invalid(format!("page_size must be at most {USERS_PAGE_MAX}"))),
        n => n,
    } as usize;
    let now_ms = app.clock.now_ms();
    let state = app.state.read();
    if !state.institutions.contains_key(request.institution_id.as_str()) {
        return Err(not_found(format!("institution {:?} does not exist", request.institution_id)));
    }
    let mut users: Vec<&Arc<User>> = state
        .users
        .values()
        .filter(|u| *u.identity.institution_id == *request.institution_id)
        .filter(|u| request.page_token.is_empty() || *u.identity.login_id > *request.page_token)
        .collect();
    users.sort_unstable_by(|a, b| a.identity.login_id.cmp(&b.identity.login_id));
    let next_page_token = match users.get(page_size) {
        Some(_) => users.get(page_size - 1).map(|u| u.identity.login_id.to_string()).unwrap_or_default(),
        None => String::new(),
    };
    users.truncate(page_size);
    let users = users.into_iter().map(|u| user_status_view(&state, u, now_ms)).collect();
    Ok(api::ListUsersResponse { users, next_page_token })
}

/// The user a request names, by login id or institution user id.
fn find_user<'s>(state: &'s State, request: &api::GetUserRequest) -> Result<&'s Arc<User>, AdminError> {
    let found = match (request.login_id.is_empty(), request.institution_user_id.is_empty()) {
        (false, true) => state.user(&request.institution_id, &request.login_id),
        (true, false) => state.user_by_institution_user_id(&request.institution_id, &request.institution_user_id),
        _ => return Err(invalid("name the user by exactly one of login_id and institution_user_id")),
    };
    found.ok_or_else(|| {
        let id = if request.login_id.is_empty() { &request.institution_user_id } else { &request.login_id };
        not_found(format!("user {id} does not exist in institution {}", request.institution_id))
    })
}

fn user_ref(app: &App, request: &api::GetUserRequest) -> Result<UserRef, AdminError> {
    let state = app.state.read();
    let user = find_user(&state, request)?;
    Ok(UserRef {
        institution_id: user.identity.institution_id.to_string(),
        login_id: user.identity.login_id.to_string(),
    })
}

fn read_user(app: &App, user: &UserRef) -> Result<api::User, AdminError> {
    let state = app.state.read();
    let found = state
        .user(&user.institution_id, &user.login_id)
        .ok_or_else(|| not_found(format!("user {} does not exist", user.login_id)))?;
    Ok(user_status_view(&state, found, app.clock.now_ms()))
}

pub fn get_user(app: &App, request: &api::GetUserRequest) -> Result<api::User, AdminError> {
    let state = app.state.read();
    let user = find_user(&state, request)?;
    Ok(user_status_view(&state, user, app.clock.now_ms()))
}

pub async fn rotate_client_secret(
    app: &App,
    transaction_id: String,
    request: api::RotateClientSecretRequest,
) -> Result<api::RotateClientSecretResponse, AdminError> {
    let secret = credential::generate_secret();
    let digest = credential::keyed_digest(&app.keys, &request.client_id, &secret);
    let command = AccountCommand::RotateClientSecret {
        client_id: request.client_id.clone(),
        secret: digest,
        overlap_secs: request.overlap_secs,
    };
    change(app, command, transaction_id).await?;
    Ok(api::RotateClientSecretResponse { client: Some(get_client(app, &request.client_id)?), client_secret: secret })
}

pub async fn set_client_disabled(
    app: &App,
    transaction_id: String,
    client_id: String,
    disabled: bool,
) -> Result<api::Client, AdminError> {
    let command = if disabled {
        AccountCommand::DisableClient { client_id: client_id.clone() }
    } else {
        AccountCommand::EnableClient { client_id: client_id.clone() }
    };
    change(app, command, transaction_id).await?;
    get_client(app, &client_id)
}

/// SetClientAuthorizePartners: whether the client is a first-party app (SPEC 3.4).
pub async fn set_client_authorize_partners(
    app: &App,
    transaction_id: String,
    request: api::SetClientAuthorizePartnersRequest,
) -> Result<api::Client, AdminError> {
    let command = AccountCommand::SetAuthorizePartners {
        client_id: request.client_id.clone(),
        authorize_partners: request.authorize_partners,
    };
    change(app, command, transaction_id).await?;
    get_client(app, &request.client_id)
}

pub async fn set_user_password(
    app: &App,
    transaction_id: String,
    request: api::SetUserPasswordRequest,
) -> Result<api::User, AdminError> {
    let user = user_ref(app, &request.user.unwrap_or_default())?;
    if request.password.is_empty() || request.password.len() > SECRET_LEN_MAX || !is_printable_ascii(&request.password)
    {
        return Err(invalid(format!("password must be 1 to {SECRET_LEN_MAX} printable ASCII characters")));
    }
    let password = app.hash_slow(request.password).await.map_err(|_| AdminError::Unavailable)?;
    change(app, AccountCommand::SetPassword { user: user.clone(), password }, transaction_id).await?;
    read_user(app, &user)
}

/// The user changes that need nothing but the user's name.
#[derive(Clone, Copy, Debug)]
pub enum UserChange {
    Lock,
    Unlock,
    Disable,
    Enable,
}

pub async fn change_user(
    app: &App,
    transaction_id: String,
    request: api::GetUserRequest,
    kind: UserChange,
) -> Result<api::User, AdminError> {
    let user = user_ref(app, &request)?;
    let command = match kind {
        UserChange::Lock => AccountCommand::LockUser(user.clone()),
        UserChange::Unlock => AccountCommand::UnlockUser(user.clone()),
        UserChange::Disable => AccountCommand::DisableUser(user.clone()),
        UserChange::Enable => AccountCommand::EnableUser(user.clone()),
    };
    change(app, command, transaction_id).await?;
    read_user(app, &user)
}

pub async fn update_user(
    app: &App,
    transaction_id: String,
    request: api::UpdateUserRequest,
) -> Result<api::User, AdminError> {
    let spec = request.spec.ok_or_else(|| invalid("spec is required"))?;
    let name = api::GetUserRequest {
        institution_id: spec.institution_id.clone(),
        login_id: spec.login_id.clone(),
        institution_user_id: if spec.login_id.is_empty() { spec.institution_user_id.clone() } else { String::new() },
    };
    let user = user_ref(app, &name)?;
    let user_type = match spec.user_type.as_str() {
        "RETAIL" => UserType::Retail,
        "BUSINESS" => UserType::Business,
        other => return Err(invalid(format!("user_type must be RETAIL or BUSINESS, not {other:?}"))),
    };
    let update = UserUpdated {
        institution_id: user.institution_id.clone(),
        login_id: user.login_id.clone(),
        host_user_id: spec.host_user_id,
        user_type: user_type as i32,
        first_name: spec.first_name,
        last_name: spec.last_name,
        email: spec.email,
        institution_customers: spec
            .institution_customers
            .into_iter()
            .map(|c| ledger::InstitutionCustomer {
                institution_customer_id: c.institution_customer_id,
                member_number: c.member_number,
                member_name: c.member_name,
                customer_type: c.customer_type,
                primary: c.primary,
            })
            .collect(),
    };
    change(app, AccountCommand::UpdateUser(update), transaction_id).await?;
    read_user(app, &user)
}
