//! The directory flows behind AdminService (and the demo seeding): turn API requests into
//! directory commands, hashing secrets outside the writer, and read back from the projections.

pub(crate) mod bulk;
pub(crate) mod directory;
pub(crate) mod grpc;

use std::sync::Arc;

use crate::api::app::App;
pub use crate::api::error::AdminError;
use crate::crypto::credential::{self, Check, SECRET_LEN_MAX};
use crate::crypto::random_bytes;
use crate::domain::directory::{
    DirectoryCommand, DirectoryError, DirectoryOutcome, ImportPlan, ImportSummary, PlannedClient, PlannedUser,
};
use crate::domain::grant::GrantKind;
use crate::domain::ids::{hex, is_printable_ascii};
use crate::domain::state::{Client, User};
use crate::ledger::SubmitFailure;
use crate::proto::ledger::{
    self as ledger, ClientCreated, CredentialDigest, InstitutionCreated, UserCreated, UserType, credential_digest,
};
use crate::proto::{self as api};

fn invalid(text: impl Into<String>) -> AdminError {
    AdminError::Refused(DirectoryError::Invalid(text.into()))
}

async fn run(app: &App, command: DirectoryCommand, transaction_id: String) -> Result<DirectoryOutcome, AdminError> {
    match app.ledger.submit_as(command, transaction_id).await {
        Ok(outcome) => Ok(outcome),
        Err(SubmitFailure::Refused(error)) => Err(error.into()),
        Err(SubmitFailure::Unavailable) => Err(AdminError::Unavailable),
    }
}

pub async fn create_institution(
    app: &App,
    transaction_id: String,
    request: api::CreateInstitutionRequest,
) -> Result<api::Institution, AdminError> {
    let event = InstitutionCreated { institution_id: request.institution_id, name: request.name };
    run(app, DirectoryCommand::CreateInstitution(event.clone()), transaction_id).await?;
    Ok(api::Institution { institution_id: event.institution_id, name: event.name })
}

/// The event for a client spec, with server defaults filled in and `secret` as its digest.
fn client_event(app: &App, spec: &api::ClientSpec, secret: CredentialDigest) -> ClientCreated {
    let or_default = |ttl: u64, default: u64| if ttl == 0 { default } else { ttl };
    ClientCreated {
        client_id: spec.client_id.clone(),
        name: spec.name.clone(),
        institution_ids: spec.institution_ids.clone(),
        grant_types: spec.grant_types.clone(),
        scopes: spec.scopes.clone(),
        redirect_uri: spec.redirect_uri.clone(),
        access_token_ttl_secs: or_default(spec.access_token_ttl_secs, app.config.access_token_ttl_secs),
        refresh_token_ttl_secs: or_default(spec.refresh_token_ttl_secs, app.config.refresh_token_ttl_secs),
        introspect: spec.introspect,
        consent_enabled: spec.consent_enabled,
        secondary_authentication_enabled: spec.secondary_authentication_enabled,
        device_registration_enabled: spec.device_registration_enabled,
        secret: Some(secret),
        authorize_partners: spec.authorize_partners,
    }
}

pub async fn create_client(
    app: &App,
    transaction_id: String,
    mut spec: api::ClientSpec,
) -> Result<api::CreateClientResponse, AdminError> {
    if spec.client_id.is_empty() {
        spec.client_id = format!("cl_{}", hex(&random_bytes::<10>()));
    }
    let secret = credential::generate_secret();
    let digest = credential::keyed_digest(&app.keys, &spec.client_id, &secret);
    let event = client_event(app, &spec, digest);
    run(app, DirectoryCommand::CreateClient(event), transaction_id).await?;
    let client = app.state.read().client(&spec.client_id).map(client_view);
    Ok(api::CreateClientResponse { client, client_secret: secret })
}

fn check_secret(field: &str, secret: &str) -> Result<(), AdminError> {
    if secret.is_empty() || secret.len() > SECRET_LEN_MAX || !is_printable_ascii(secret) {
        return Err(invalid(format!("{field} must be 1 to {SECRET_LEN_MAX} printable ASCII characters")));
    }
    Ok(())
}

/// The event for a user spec; `institution_user_id` is generated when empty.
fn user_event(spec: &api::UserSpec, password: Option<CredentialDigest>) -> Result<UserCreated, AdminError> {
    let user_type = match spec.user_type.as_str() {
        "" | "RETAIL" => UserType::Retail,
        "BUSINESS" => UserType::Business,
        other => {
            return Err(invalid(format!("user_type must be RETAIL or BUSINESS, not {other:?}")));
        }
    };
    let institution_user_id = if spec.institution_user_id.is_empty() {
        hex(&random_bytes::<16>()).to_uppercase()
    } else {
        spec.institution_user_id.clone()
    };
    Ok(UserCreated {
        institution_id: spec.institution_id.clone(),
        login_id: spec.login_id.clone(),
        institution_user_id,
        host_user_id: spec.host_user_id.clone(),
        user_type: user_type as i32,
        first_name: spec.first_name.clone(),
        last_name: spec.last_name.clone(),
        email: spec.email.clone(),
        institution_customers: spec
            .institution_customers
            .iter()
            .map(|c| ledger::InstitutionCustomer {
                institution_customer_id: c.institution_customer_id.clone(),
                member_number: c.member_number.clone(),
                member_name: c.member_name.clone(),
                customer_type: c.customer_type.clone(),
                primary: c.primary,
            })
            .collect(),
        password,
    })
}

pub async fn create_user(
    app: &App,
    transaction_id: String,
    request: api::CreateUserRequest,
) -> Result<api::User, AdminError> {
    let spec = request.spec.ok_or_else(|| invalid("spec is required"))?;
    let password = if request.password.is_empty() {
        None
    } else {
        check_secret("password", &request.password)?;
        Some(app.hash_slow(request.password).await.map_err(|_| AdminError::Unavailable)?)
    };
    let event = user_event(&spec, password)?;
    let (institution_id, login_id) = (event.institution_id.clone(), event.login_id.clone());
    run(app, DirectoryCommand::CreateUser(event), transaction_id).await?;
    let user = app.state.read().user(&institution_id, &login_id).map(user_view);
    user.ok_or_else(|| invalid("the user was not recorded"))
}

/// Does `presented` match `stored`? Keyed digests are checked at once, PBKDF2 on the pool.
async fn matches(app: &App, client_id: &str, presented: &str, stored: &CredentialDigest) -> bool {
    match credential::verify_fast(&app.keys, client_id, presented, stored) {
        Check::Match => true,
        Check::Mismatch => false,
        Check::NeedsSlowHash => app.verify_slow(presented.to_owned(), stored.clone()).await,
    }
}

pub async fn import(
    app: &App,
    transaction_id: String,
    request: api::ImportRequest,
) -> Result<api::ImportResponse, AdminError> {
    let entries = request.institutions.len() + request.clients.len() + request.users.len();
    if entries > crate::domain::directory::IMPORT_ENTRIES_MAX {
        return Err(invalid(format!(
            "an import may hold at most {} entries",
            crate::domain::directory::IMPORT_ENTRIES_MAX
        )));
    }
    let mut plan = ImportPlan {
        institutions: request
            .institutions
            .iter()
            .map(|i| InstitutionCreated { institution_id: i.institution_id.clone(), name: i.name.clone() })
            .collect(),
        ..ImportPlan::default()
    };
    let mut generated = Vec::new();
    for entry in &request.clients {
        let spec = entry.spec.clone().ok_or_else(|| invalid("every client needs a spec"))?;
        if spec.client_id.is_empty() {
            return Err(invalid("every imported client needs a client_id"));
        }
        let existing = app.state.read().client(&spec.client_id).map(|c| c.secret.clone());
        let planned = match existing {
            Some(stored) => {
                let same = entry.client_secret.is_empty()
                    || matches(app, &spec.client_id, &entry.client_secret, &stored).await;
                PlannedClient {
                    event: client_event(app, &spec, stored.clone()),
                    matches_existing_secret: same.then_some(stored),
                }
            }
            None if entry.client_secret.is_empty() => {
                let secret = credential::generate_secret();
                let digest = credential::keyed_digest(&app.keys, &spec.client_id, &secret);
                generated.push(api::GeneratedSecret { client_id: spec.client_id.clone(), client_secret: secret });
                PlannedClient { event: client_event(app, &spec, digest), matches_existing_secret: None }
            }
            None => {
                check_secret(&format!("client_secret of {}", spec.client_id), &entry.client_secret)?;
                let digest = app.hash_slow(entry.client_secret.clone()).await.map_err(|_| AdminError::Unavailable)?;
                PlannedClient { event: client_event(app, &spec, digest), matches_existing_secret: None }
            }
        };
        plan.clients.push(planned);
    }
    for entry in &request.users {
        let spec = entry.spec.clone().ok_or_else(|| invalid("every user needs a spec"))?;
        let existing = app.state.read().user(&spec.institution_id, &spec.login_id).cloned();
        let planned = match existing {
            Some(user) => {
                let stored = user.password.clone();
                let same = entry.password.is_empty() || matches(app, "", &entry.password, &stored).await;
                let mut spec = spec.clone();
                if spec.institution_user_id.is_empty() {
                    spec.institution_user_id = user.identity.institution_user_id.to_string();
                }
                PlannedUser {
                    event: user_event(&spec, Some(stored.clone()))?,
                    matches_existing_password: same.then_some(stored),
                }
            }
            None => {
                let password = if entry.password.is_empty() {
                    None
                } else {
                    check_secret(&format!("password of {}", spec.login_id), &entry.password)?;
                    Some(app.hash_slow(entry.password.clone()).await.map_err(|_| AdminError::Unavailable)?)
                };
                PlannedUser { event: user_event(&spec, password)?, matches_existing_password: None }
            }
        };
        plan.users.push(planned);
    }
    let summary = match run(app, DirectoryCommand::Import(plan), transaction_id).await? {
        DirectoryOutcome::Imported(summary) => summary,
        DirectoryOutcome::Created => ImportSummary::default(),
    };
    // The import was all or nothing: it succeeded, so every generated secret was stored.
    Ok(api::ImportResponse {
        institutions_created: summary.institutions_created,
        clients_created: summary.clients_created,
        users_created: summary.users_created,
        unchanged: summary.unchanged,
        generated_secrets: generated,
        head_seq: app.state.read().head.seq,
    })
}

pub fn client_view(client: &Arc<Client>) -> api::Client {
    let grant_types = GrantKind::ALL
        .into_iter()
        .filter(|g| client.grant_types.contains(g.stored()))
        .map(|g| g.name().to_owned())
        .collect();
    api::Client {
        spec: Some(api::ClientSpec {
            client_id: client.id.to_string(),
            name: client.name.clone(),
            institution_ids: client.institution_ids.iter().map(|i| i.to_string()).collect(),
            grant_types,
            scopes: client.scopes.iter().map(|s| s.to_string()).collect(),
            redirect_uri: client.redirect_uri.clone(),
            access_token_ttl_secs: client.access_token_ttl_secs,
            refresh_token_ttl_secs: client.refresh_token_ttl_secs,
            introspect: client.introspect,
            consent_enabled: client.consent_enabled,
            secondary_authentication_enabled: client.secondary_authentication_enabled,
            device_registration_enabled: client.device_registration_enabled,
            authorize_partners: client.authorize_partners,
        }),
        secret_kind: match client.secret.kind {
            Some(credential_digest::Kind::Keyed(_)) => "generated".to_owned(),
            Some(credential_digest::Kind::Pbkdf2(_)) => "imported".to_owned(),
            None => "none".to_owned(),
        },
        created_seq: client.created_seq,
        disabled: client.disabled,
        previous_secret_valid_until_ms: client.previous_secret.as_ref().map_or(0, |p| p.valid_until_ms),
    }
}

pub fn user_view(user: &Arc<User>) -> api::User {
    let id = &user.identity;
    api::User {
        spec: Some(api::UserSpec {
            institution_id: id.institution_id.to_string(),
            login_id: id.login_id.to_string(),
            institution_user_id: id.institution_user_id.to_string(),
            host_user_id: id.host_user_id.clone(),
            user_type: match id.user_type {
                UserType::Business => "BUSINESS".to_owned(),
                _ => "RETAIL".to_owned(),
            },
            first_name: user.first_name.clone(),
            last_name: user.last_name.clone(),
            email: user.email.clone(),
            institution_customers: user
                .institution_customers
                .iter()
                .map(|c| api::InstitutionCustomer {
                    institution_customer_id: c.institution_customer_id.clone(),
                    member_number: c.member_number.clone(),
                    member_name: c.member_name.clone(),
                    customer_type: c.customer_type.clone(),
                    primary: c.primary,
                })
                .collect(),
        }),
        created_seq: user.created_seq,
        disabled: user.disabled,
        locked: user.locked,
        has_password: user.password.kind.is_some(),
        // The sign-in counts live in the state's sign-in records; see `directory::user_status_view`.
        ..Default::default()
    }
}
