//! The identity directory: institutions, clients and users. Deciding a directory command
//! validates it against the committed state and yields the events that record it.

pub(crate) mod account;
pub(crate) mod apply;

use std::collections::HashSet;

use crate::domain::shared::conflict::{ConflictKeys, Entity};
use crate::domain::shared::decision::{Decision, wrap};
use crate::domain::shared::grant::GrantKind;
use crate::domain::shared::ids::{is_valid_identifier, is_valid_institution_id};
use crate::domain::shared::scope::is_valid_scope;
use crate::domain::state::{Client, Institution, Institutions, State, User};
use crate::proto::ledger::{ClientCreated, CredentialDigest, InstitutionCreated, UserCreated, UserType, event};

/// Longest free-text field (names, emails, member names).
pub const TEXT_LEN_MAX: usize = 256;
/// Longest redirect URI.
pub const REDIRECT_URI_LEN_MAX: usize = 2048;
/// Most entries in one list of a client or user (institutions, scopes, customers).
pub const LIST_LEN_MAX: usize = 256;
/// Longest token lifetime a client may be configured with: ten years.
pub const TTL_SECS_MAX: u64 = 10 * 365 * 24 * 3600;
/// Most entries one import may carry.
pub const IMPORT_ENTRIES_MAX: usize = 100_000;

#[derive(Clone, Debug)]
pub enum DirectoryCommand {
    CreateInstitution(InstitutionCreated),
    CreateClient(ClientCreated),
    CreateUser(UserCreated),
    Import(ImportPlan),
}

/// A validated import: entries to create unless an identical one exists.
#[derive(Clone, Debug, Default)]
pub struct ImportPlan {
    pub institutions: Vec<InstitutionCreated>,
    pub clients: Vec<PlannedClient>,
    pub users: Vec<PlannedUser>,
}

#[derive(Clone, Debug)]
pub struct PlannedClient {
    pub event: ClientCreated,
    /// Set when the client already existed when the import was prepared and the given secret
    /// matched its stored digest (or no secret was given): the digest it matched.
    pub matches_existing_secret: Option<CredentialDigest>,
}

#[derive(Clone, Debug)]
pub struct PlannedUser {
    pub event: UserCreated,
    /// As for clients: the stored password digest the given password matched.
    pub matches_existing_password: Option<CredentialDigest>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum DirectoryOutcome {
    Created,
    Imported(ImportSummary),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportSummary {
    pub institutions_created: u32,
    pub clients_created: u32,
    pub users_created: u32,
    pub unchanged: u32,
}

pub use crate::domain::shared::error::DirectoryError;

impl DirectoryCommand {
    pub fn conflict_keys(&self, keys: &mut ConflictKeys) {
        match self {
            Self::CreateInstitution(i) => keys.write(Entity::Institution(&i.institution_id)),
            Self::CreateClient(c) => client_keys(c, keys),
            Self::CreateUser(u) => user_keys(u, keys),
            Self::Import(plan) => {
                for i in &plan.institutions {
                    keys.write(Entity::Institution(&i.institution_id));
                }
                for c in &plan.clients {
                    client_keys(&c.event, keys);
                }
                for u in &plan.users {
                    user_keys(&u.event, keys);
                }
            }
        }
    }
}

fn client_keys(client: &ClientCreated, keys: &mut ConflictKeys) {
    keys.write(Entity::Client(&client.client_id));
    for institution in &client.institution_ids {
        keys.read(Entity::Institution(institution));
    }
}

fn user_keys(user: &UserCreated, keys: &mut ConflictKeys) {
    keys.write(Entity::User(&user.institution_id, &user.login_id));
    if !user.host_user_id.is_empty() {
        keys.write(Entity::HostUserId(&user.institution_id, &user.host_user_id));
    }
    keys.write(Entity::InstitutionUserId(&user.institution_id, &user.institution_user_id));
    keys.read(Entity::Institution(&user.institution_id));
}

pub fn decide_directory(state: &State, command: &DirectoryCommand) -> Decision<DirectoryOutcome, DirectoryError> {
    let result = match command {
        DirectoryCommand::CreateInstitution(i) => create_institution(state, i),
        DirectoryCommand::CreateClient(c) => create_client(state, c),
        DirectoryCommand::CreateUser(u) => create_user(&state.institutions, state, u, &HashSet::new(), &HashSet::new()),
        DirectoryCommand::Import(plan) => return import(state, plan),
    };
    match result {
        Ok(kind) => Decision::ok(vec![wrap(kind)], DirectoryOutcome::Created),
        Err(error) => Decision::refuse(error),
    }
}

fn invalid(text: impl Into<String>) -> DirectoryError {
    DirectoryError::Invalid(text.into())
}

fn check_text(field: &str, value: &str, required: bool) -> Result<(), DirectoryError> {
    if required && value.trim().is_empty() {
        return Err(invalid(format!("{field} is required")));
    }
    if value.len() > TEXT_LEN_MAX {
        return Err(invalid(format!("{field} is longer than {TEXT_LEN_MAX} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(format!("{field} contains control characters")));
    }
    Ok(())
}

pub fn validate_institution(i: &InstitutionCreated) -> Result<(), DirectoryError> {
    if !is_valid_institution_id(&i.institution_id) {
        return Err(invalid(format!("institution_id {:?} must be 1 to 10 ASCII digits", i.institution_id)));
    }
    check_text("institution name", &i.name, true)
}

fn create_institution(state: &State, i: &InstitutionCreated) -> Result<event::Kind, DirectoryError> {
    validate_institution(i)?;
    if state.institutions.contains_key(i.institution_id.as_str()) {
        return Err(DirectoryError::AlreadyExists(format!("institution {} already exists", i.institution_id)));
    }
    Ok(event::Kind::InstitutionCreated(i.clone()))
}

/// Syntax rules of a client; `state` is consulted for the institutions it names.
pub fn validate_client(institutions: &Institutions, c: &ClientCreated) -> Result<(), DirectoryError> {
    if !is_valid_identifier(&c.client_id) || c.client_id.contains(':') {
        return Err(invalid(format!(
            "client_id {:?} must be 1 to 128 printable ASCII characters without spaces or ':'",
            c.client_id
        )));
    }
    check_text("client name", &c.name, false)?;
    if c.institution_ids.is_empty() || c.institution_ids.len() > LIST_LEN_MAX {
        return Err(invalid("a client needs 1 to 256 institution_ids"));
    }
    for institution in &c.institution_ids {
        if !institutions.contains_key(institution.as_str()) {
            return Err(DirectoryError::NotFound(format!("institution {institution:?} does not exist")));
        }
    }
    if c.grant_types.is_empty() {
        return Err(invalid("a client needs at least one grant type"));
    }
    for grant in &c.grant_types {
        if GrantKind::parse(grant).is_none() {
            let known: Vec<&str> = GrantKind::ALL.into_iter().map(GrantKind::name).collect();
            return Err(invalid(format!("unknown grant type {grant:?} ({})", known.join(", "))));
        }
    }
    if c.scopes.len() > LIST_LEN_MAX {
        return Err(invalid("a client may have at most 256 scopes"));
    }
    if let Some(bad) = c.scopes.iter().find(|s| !is_valid_scope(s)) {
        return Err(invalid(format!("scope {bad:?} is not a valid RFC 6749 scope token")));
    }
    if !c.redirect_uri.is_empty() && !is_absolute_uri(&c.redirect_uri) {
        return Err(invalid("redirect_uri must be an absolute http(s) URI without fragment"));
    }
    for (field, ttl) in
        [("access_token_ttl_secs", c.access_token_ttl_secs), ("refresh_token_ttl_secs", c.refresh_token_ttl_secs)]
    {
        if ttl == 0 || ttl > TTL_SECS_MAX {
            return Err(invalid(format!("{field} must be between 1 and {TTL_SECS_MAX}")));
        }
    }
    if c.secret.as_ref().and_then(|s| s.kind.as_ref()).is_none() {
        return Err(invalid("a client needs a secret"));
    }
    Ok(())
}

fn is_absolute_uri(uri: &str) -> bool {
    let rest = uri.strip_prefix("https://").or_else(|| uri.strip_prefix("http://"));
    uri.len() <= REDIRECT_URI_LEN_MAX
        && rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
        && !uri.contains('#')
        && uri.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

fn create_client(state: &State, c: &ClientCreated) -> Result<event::Kind, DirectoryError> {
    validate_client(&state.institutions, c)?;
    if state.clients.contains_key(c.client_id.as_str()) {
        return Err(DirectoryError::AlreadyExists(format!("client {} already exists", c.client_id)));
    }
    Ok(event::Kind::ClientCreated(c.clone()))
}

pub fn validate_user(institutions: &Institutions, u: &UserCreated) -> Result<(), DirectoryError> {
    if !institutions.contains_key(u.institution_id.as_str()) {
        return Err(DirectoryError::NotFound(format!("institution {:?} does not exist", u.institution_id)));
    }
    if !is_valid_identifier(&u.login_id) {
        return Err(invalid(format!(
            "login_id {:?} must be 1 to 128 printable ASCII characters without spaces",
            u.login_id
        )));
    }
    if !is_valid_identifier(&u.institution_user_id) {
        return Err(invalid("institution_user_id must be 1 to 128 printable ASCII characters without spaces"));
    }
    if !u.host_user_id.is_empty() && !is_valid_identifier(&u.host_user_id) {
        return Err(invalid("host_user_id must be 1 to 128 printable ASCII characters without spaces"));
    }
    if UserType::try_from(u.user_type).ok().is_none_or(|t| t == UserType::Unspecified) {
        return Err(invalid("user_type must be RETAIL or BUSINESS"));
    }
    check_text("first_name", &u.first_name, false)?;
    check_text("last_name", &u.last_name, false)?;
    check_text("email", &u.email, false)?;
    if u.institution_customers.len() > LIST_LEN_MAX {
        return Err(invalid("a user may have at most 256 institution customers"));
    }
    for customer in &u.institution_customers {
        if !is_valid_identifier(&customer.institution_customer_id) {
            return Err(invalid("institution_customer_id must be 1 to 128 printable ASCII characters without spaces"));
        }
        check_text("member_number", &customer.member_number, false)?;
        check_text("member_name", &customer.member_name, false)?;
        if !matches!(customer.customer_type.as_str(), "" | "RETAIL" | "BUSINESS") {
            return Err(invalid("customer_type must be RETAIL or BUSINESS"));
        }
    }
    Ok(())
}

fn create_user(
    institutions: &Institutions,
    state: &State,
    u: &UserCreated,
    taken_in_batch: &HashSet<(String, String)>,
    hosts_in_batch: &HashSet<(String, String)>,
) -> Result<event::Kind, DirectoryError> {
    validate_user(institutions, u)?;
    if state.user(&u.institution_id, &u.login_id).is_some() {
        return Err(DirectoryError::AlreadyExists(format!(
            "user {} already exists in institution {}",
            u.login_id, u.institution_id
        )));
    }
    let iuid_taken = state.user_by_institution_user_id(&u.institution_id, &u.institution_user_id).is_some();
    if iuid_taken || taken_in_batch.contains(&(u.institution_id.clone(), u.institution_user_id.clone())) {
        return Err(DirectoryError::AlreadyExists(format!(
            "institution_user_id {} is already used in institution {}",
            u.institution_user_id, u.institution_id
        )));
    }
    account::check_host_user_id_in_batch(state, u, hosts_in_batch)?;
    Ok(event::Kind::UserCreated(u.clone()))
}

/// Everything of a client except its secret, compared for import idempotency.
fn same_client(existing: &Client, c: &ClientCreated) -> bool {
    let mut grant_types: Vec<&str> = c.grant_types.iter().map(String::as_str).collect();
    grant_types.sort_unstable();
    grant_types.dedup();
    let mut existing_grants: Vec<&str> =
        GrantKind::ALL.into_iter().filter(|g| existing.grant_types.contains(g.stored())).map(GrantKind::name).collect();
    existing_grants.sort_unstable();
    existing.name == c.name
        && existing.institution_ids.iter().map(|i| &**i).eq(c.institution_ids.iter().map(String::as_str))
        && existing_grants == grant_types
        && existing.scopes.iter().map(|s| &**s).eq(c.scopes.iter().map(String::as_str))
        && existing.redirect_uri == c.redirect_uri
        && existing.access_token_ttl_secs == c.access_token_ttl_secs
        && existing.refresh_token_ttl_secs == c.refresh_token_ttl_secs
        && existing.introspect == c.introspect
        && existing.consent_enabled == c.consent_enabled
        && existing.secondary_authentication_enabled == c.secondary_authentication_enabled
        && existing.device_registration_enabled == c.device_registration_enabled
        && existing.authorize_partners == c.authorize_partners
}

fn same_user(existing: &User, u: &UserCreated) -> bool {
    let id = &existing.identity;
    *id.institution_user_id == *u.institution_user_id
        && id.host_user_id == u.host_user_id
        && id.user_type as i32 == u.user_type
        && existing.first_name == u.first_name
        && existing.last_name == u.last_name
        && existing.email == u.email
        && existing.institution_customers == u.institution_customers
}

/// An import is all or nothing: identical entries are skipped, new ones created, and any
/// conflict refuses the whole import with one line per conflict.
fn import(state: &State, plan: &ImportPlan) -> Decision<DirectoryOutcome, DirectoryError> {
    let mut events = Vec::new();
    let mut summary = ImportSummary::default();
    let mut conflicts = Vec::new();
    // Committed institutions plus the ones this import creates, so later entries can refer
    // to them.
    let mut institutions = state.institutions.clone();
    let mut institutions_in_plan = HashSet::new();
    for i in &plan.institutions {
        if !institutions_in_plan.insert(i.institution_id.clone()) {
            conflicts.push(format!("institution {}: listed twice", i.institution_id));
            continue;
        }
        match state.institutions.get(i.institution_id.as_str()) {
            Some(existing) if existing.name == i.name => summary.unchanged += 1,
            Some(existing) => {
                conflicts.push(format!("institution {}: exists with name {:?}", i.institution_id, existing.name))
            }
            None => match validate_institution(i) {
                Ok(()) => {
                    summary.institutions_created += 1;
                    institutions.insert(
                        i.institution_id.as_str().into(),
                        Institution { id: i.institution_id.as_str().into(), name: i.name.clone(), created_seq: 0 },
                    );
                    events.push(wrap(event::Kind::InstitutionCreated(i.clone())));
                }
                Err(e) => conflicts.push(describe(&format!("institution {}", i.institution_id), e)),
            },
        }
    }
    let mut clients_in_plan = HashSet::new();
    for c in &plan.clients {
        let label = format!("client {}", c.event.client_id);
        if !clients_in_plan.insert(c.event.client_id.clone()) {
            conflicts.push(format!("{label}: listed twice"));
            continue;
        }
        match state.clients.get(c.event.client_id.as_str()) {
            Some(existing) => {
                let secret_ok = c.matches_existing_secret.as_ref() == Some(&existing.secret);
                if same_client(existing, &c.event) && secret_ok {
                    summary.unchanged += 1;
                } else if !secret_ok {
                    conflicts.push(format!("{label}: exists with a different secret"));
                } else {
                    conflicts.push(format!("{label}: exists with different settings"));
                }
            }
            None => match validate_client(&institutions, &c.event) {
                Ok(()) => {
                    summary.clients_created += 1;
                    events.push(wrap(event::Kind::ClientCreated(c.event.clone())));
                }
                Err(e) => conflicts.push(describe(&label, e)),
            },
        }
    }
    let mut users_in_plan = HashSet::new();
    let mut iuids_in_plan = HashSet::new();
    let mut hosts_in_plan = HashSet::new();
    for u in &plan.users {
        let label = format!("user {} of institution {}", u.event.login_id, u.event.institution_id);
        if !users_in_plan.insert((u.event.institution_id.clone(), u.event.login_id.clone())) {
            conflicts.push(format!("{label}: listed twice"));
            continue;
        }
        match state.user(&u.event.institution_id, &u.event.login_id) {
            Some(existing) => {
                let password_ok = u.matches_existing_password.as_ref() == Some(&existing.password);
                if same_user(existing, &u.event) && password_ok {
                    summary.unchanged += 1;
                } else if !password_ok {
                    conflicts.push(format!("{label}: exists with a different password"));
                } else {
                    conflicts.push(format!("{label}: exists with different settings"));
                }
            }
            None => match create_user(&institutions, state, &u.event, &iuids_in_plan, &hosts_in_plan) {
                Ok(kind) => {
                    iuids_in_plan.insert((u.event.institution_id.clone(), u.event.institution_user_id.clone()));
                    if !u.event.host_user_id.is_empty() {
                        hosts_in_plan.insert((u.event.institution_id.clone(), u.event.host_user_id.clone()));
                    }
                    summary.users_created += 1;
                    events.push(wrap(kind));
                }
                Err(e) => conflicts.push(describe(&label, e)),
            },
        }
    }
    if !conflicts.is_empty() {
        return Decision { events: Vec::new(), outcome: Err(DirectoryError::Conflicts(conflicts)) };
    }
    Decision::ok(events, DirectoryOutcome::Imported(summary))
}

fn describe(label: &str, error: DirectoryError) -> String {
    match error {
        DirectoryError::Invalid(text) | DirectoryError::AlreadyExists(text) | DirectoryError::NotFound(text) => {
            format!("{label}: {text}")
        }
        DirectoryError::Conflicts(lines) => format!("{label}: {}", lines.join("; ")),
    }
}
