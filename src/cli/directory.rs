//! `tokenledger institution|client|user ...`: the directory commands, each one AdminService
//! call with the admin credential. Passwords come from stdin (`--password-stdin`, one line)
//! or a prompt without echo on a terminal, never from the command line.

// JSON documents built with `json!` objects: indexing an object inserts, it cannot panic.
#![allow(clippy::indexing_slicing)]

use std::io::{BufRead, IsTerminal};

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::RemoteArgs;
use super::remote::{AdminClient, admin_client, describe};
use crate::proto as api;

#[derive(Args, Debug)]
pub struct InstitutionArgs {
    #[command(subcommand)]
    pub command: InstitutionCommand,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Print the result as JSON
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum InstitutionCommand {
    /// Create an institution
    Create {
        /// 1 to 10 ASCII digits, kept exactly as given
        institution_id: String,
        #[arg(long)]
        name: String,
    },
    /// List every institution
    List,
    /// Show one institution
    Show { institution_id: String },
}

#[derive(Args, Debug)]
pub struct ClientArgs {
    #[command(subcommand)]
    pub command: ClientCommand,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Print the result as JSON
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Create a client; its generated secret is printed once
    Create(ClientSpecArgs),
    /// List clients, optionally only those of one institution
    List {
        #[arg(long)]
        institution: Option<String>,
    },
    /// Show one client
    Show { client_id: String },
    /// Replace the secret with a new generated one, printed once
    RotateSecret {
        client_id: String,
        /// How long the old secret keeps working (seconds; at most 30 days)
        #[arg(long, default_value_t = 0)]
        overlap_secs: u64,
    },
    /// Mark the client as a first-party app whose access tokens may mint authorization codes
    /// for partner apps (SPEC 3.4), or take that away with --off
    AuthorizePartners {
        client_id: String,
        /// Take the capability away
        #[arg(long)]
        off: bool,
    },
    /// Refuse the client everywhere and end every token it holds
    Disable { client_id: String },
    /// Let a disabled client authenticate again
    Enable { client_id: String },
}

#[derive(Args, Debug)]
pub struct ClientSpecArgs {
    /// Client id (default: generated)
    #[arg(long)]
    pub client_id: Option<String>,
    #[arg(long, default_value = "")]
    pub name: String,
    /// Institution the client serves (repeat for several)
    #[arg(long = "institution", required = true)]
    pub institutions: Vec<String>,
    /// client_credentials, password, refresh_token or authorization_code (repeat)
    #[arg(long = "grant-type", required = true)]
    pub grant_types: Vec<String>,
    /// Allowed scope (repeat)
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    #[arg(long, default_value = "")]
    pub redirect_uri: String,
    /// Access-token lifetime (default: the server's)
    #[arg(long, default_value_t = 0)]
    pub access_token_ttl_secs: u64,
    /// Refresh-token lifetime (default: the server's)
    #[arg(long, default_value_t = 0)]
    pub refresh_token_ttl_secs: u64,
    /// May call the introspection endpoint
    #[arg(long)]
    pub introspect: bool,
    #[arg(long)]
    pub consent_enabled: bool,
    #[arg(long)]
    pub secondary_authentication_enabled: bool,
    #[arg(long)]
    pub device_registration_enabled: bool,
    /// A first-party app: its access tokens may mint authorization codes for partner apps
    #[arg(long)]
    pub authorize_partners: bool,
}

#[derive(Args, Debug)]
pub struct UserArgs {
    #[command(subcommand)]
    pub command: UserCommand,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Print the result as JSON
    #[arg(long, global = true)]
    pub json: bool,
}

/// Names one user: institution plus login id (or `--institution-user-id`).
#[derive(Args, Debug, Clone)]
pub struct UserName {
    #[arg(long)]
    pub institution: String,
    /// The login id
    #[arg(required_unless_present = "institution_user_id", conflicts_with = "institution_user_id")]
    pub login_id: Option<String>,
    /// Name the user by institution user id instead of login id
    #[arg(long)]
    pub institution_user_id: Option<String>,
}

impl UserName {
    fn request(&self) -> api::GetUserRequest {
        api::GetUserRequest {
            institution_id: self.institution.clone(),
            login_id: self.login_id.clone().unwrap_or_default(),
            institution_user_id: self.institution_user_id.clone().unwrap_or_default(),
        }
    }
}

#[derive(Args, Debug)]
pub struct PasswordInput {
    /// Read the password from the first line of standard input
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user (with a password from --password-stdin or a prompt with --password-prompt)
    Create {
        #[command(flatten)]
        profile: UserProfileArgs,
        /// The login id, unique in the institution
        login_id: String,
        #[arg(long)]
        institution_user_id: Option<String>,
        #[command(flatten)]
        password: PasswordInput,
        /// Prompt for the password on the terminal (no echo)
        #[arg(long, conflicts_with = "password_stdin")]
        password_prompt: bool,
    },
    /// List the users of an institution
    List {
        #[arg(long)]
        institution: String,
    },
    /// Show one user with its sign-in status
    Show(UserName),
    /// Replace the user's password (from --password-stdin, or a prompt on a terminal)
    SetPassword {
        #[command(flatten)]
        user: UserName,
        #[command(flatten)]
        password: PasswordInput,
    },
    /// Refuse the user's sign-ins (CMN_90009) until unlocked
    Lock(UserName),
    /// Clear the lock, any lockout and the failed sign-in count
    Unlock(UserName),
    /// Refuse the user's sign-ins (CMN_90016) and end every token it holds
    Disable(UserName),
    /// Let a disabled user sign in again
    Enable(UserName),
    /// Change profile fields; fields not given keep their value
    Update {
        #[command(flatten)]
        user: UserName,
        #[command(flatten)]
        changes: UserUpdateArgs,
    },
}

#[derive(Args, Debug)]
pub struct UserProfileArgs {
    #[arg(long)]
    pub institution: String,
    #[arg(long, default_value = "")]
    pub host_user_id: String,
    /// RETAIL or BUSINESS
    #[arg(long = "type", default_value = "RETAIL")]
    pub user_type: String,
    #[arg(long, default_value = "")]
    pub first_name: String,
    #[arg(long, default_value = "")]
    pub last_name: String,
    #[arg(long, default_value = "")]
    pub email: String,
    /// An institution customer: "id=IC1,member_number=123,member_name=Acme,customer_type=BUSINESS,primary=true" (repeat)
    #[arg(long = "customer")]
    pub customers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct UserUpdateArgs {
    #[arg(long)]
    pub host_user_id: Option<String>,
    /// RETAIL or BUSINESS
    #[arg(long = "type")]
    pub user_type: Option<String>,
    #[arg(long)]
    pub first_name: Option<String>,
    #[arg(long)]
    pub last_name: Option<String>,
    #[arg(long)]
    pub email: Option<String>,
    /// Replace the institution customers with these (repeat; see `user create`)
    #[arg(long = "customer")]
    pub customers: Vec<String>,
    /// Remove every institution customer
    #[arg(long, conflicts_with = "customers")]
    pub clear_customers: bool,
}

fn parse_customer(text: &str) -> Result<api::InstitutionCustomer, String> {
    let mut customer = api::InstitutionCustomer::default();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once('=').ok_or_else(|| format!("--customer part {part:?} is not key=value"))?;
        match key {
            "id" | "institution_customer_id" => customer.institution_customer_id = value.to_owned(),
            "member_number" => customer.member_number = value.to_owned(),
            "member_name" => customer.member_name = value.to_owned(),
            "customer_type" => customer.customer_type = value.to_owned(),
            "primary" => {
                customer.primary =
                    value.parse().map_err(|_| format!("--customer primary={value:?} is not a boolean"))?
            }
            other => return Err(format!("--customer: unknown key {other:?}")),
        }
    }
    Ok(customer)
}

/// One line from stdin, without its line ending.
fn read_password_line() -> Result<String, String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| format!("cannot read the password from stdin: {e}"))?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        return Err("no password on standard input".to_owned());
    }
    Ok(password)
}

fn prompt_password() -> Result<String, String> {
    let first = rpassword::prompt_password("Password: ").map_err(|e| format!("cannot read the password: {e}"))?;
    let again =
        rpassword::prompt_password("Repeat password: ").map_err(|e| format!("cannot read the password: {e}"))?;
    if first != again {
        return Err("the passwords do not match".to_owned());
    }
    if first.is_empty() {
        return Err("the password is empty".to_owned());
    }
    Ok(first)
}

/// The password of `set-password`: stdin with the flag, else a prompt on a terminal.
fn required_password(input: &PasswordInput) -> Result<String, String> {
    if input.password_stdin {
        read_password_line()
    } else if std::io::stdin().is_terminal() {
        prompt_password()
    } else {
        Err("standard input is not a terminal: pass the password with --password-stdin".to_owned())
    }
}

fn print(json_output: bool, value: Value, text: String) {
    if json_output {
        println!("{value}");
    } else {
        println!("{text}");
    }
}

fn institution_json(i: &api::Institution) -> Value {
    json!({"institution_id": i.institution_id, "name": i.name})
}

fn client_json(client: &api::Client) -> Value {
    let spec = client.spec.clone().unwrap_or_default();
    json!({
        "client_id": spec.client_id,
        "name": spec.name,
        "institution_ids": spec.institution_ids,
        "grant_types": spec.grant_types,
        "scopes": spec.scopes,
        "redirect_uri": spec.redirect_uri,
        "access_token_ttl_secs": spec.access_token_ttl_secs,
        "refresh_token_ttl_secs": spec.refresh_token_ttl_secs,
        "introspect": spec.introspect,
        "consent_enabled": spec.consent_enabled,
        "secondary_authentication_enabled": spec.secondary_authentication_enabled,
        "device_registration_enabled": spec.device_registration_enabled,
        "authorize_partners": spec.authorize_partners,
        "secret_kind": client.secret_kind,
        "disabled": client.disabled,
        "previous_secret_valid_until_ms": client.previous_secret_valid_until_ms,
        "created_seq": client.created_seq,
    })
}

fn client_text(client: &api::Client) -> String {
    let spec = client.spec.clone().unwrap_or_default();
    format!(
        "client {} ({}){}{}: institutions {}; grants {}; scopes {}",
        spec.client_id,
        if spec.name.is_empty() { "no name" } else { &spec.name },
        if client.disabled { " DISABLED" } else { "" },
        if spec.authorize_partners { " first-party (authorizes partners)" } else { "" },
        spec.institution_ids.join(","),
        spec.grant_types.join(","),
        spec.scopes.join(" "),
    )
}

fn user_json(user: &api::User) -> Value {
    let spec = user.spec.clone().unwrap_or_default();
    let customers: Vec<Value> = spec
        .institution_customers
        .iter()
        .map(|c| {
            json!({"institution_customer_id": c.institution_customer_id, "member_number": c.member_number,
                   "member_name": c.member_name, "customer_type": c.customer_type, "primary": c.primary})
        })
        .collect();
    json!({
        "institution_id": spec.institution_id,
        "login_id": spec.login_id,
        "institution_user_id": spec.institution_user_id,
        "host_user_id": spec.host_user_id,
        "user_type": spec.user_type,
        "first_name": spec.first_name,
        "last_name": spec.last_name,
        "email": spec.email,
        "institution_customers": customers,
        "disabled": user.disabled,
        "locked": user.locked,
        "locked_out_until_ms": user.locked_out_until_ms,
        "failed_login_count": user.failed_login_count,
        "has_password": user.has_password,
        "created_seq": user.created_seq,
    })
}

fn user_text(user: &api::User) -> String {
    let spec = user.spec.clone().unwrap_or_default();
    let mut flags = Vec::new();
    if user.disabled {
        flags.push("DISABLED".to_owned());
    }
    if user.locked {
        flags.push("LOCKED".to_owned());
    }
    if user.locked_out_until_ms > 0 {
        flags.push(format!("LOCKED OUT until {} ms", user.locked_out_until_ms));
    }
    if !user.has_password {
        flags.push("no password".to_owned());
    }
    format!(
        "user {} of institution {}: {} {}, institution user id {}, {} failed sign-ins{}",
        spec.login_id,
        spec.institution_id,
        spec.user_type,
        [spec.first_name.as_str(), spec.last_name.as_str()].join(" ").trim(),
        spec.institution_user_id,
        user.failed_login_count,
        if flags.is_empty() { String::new() } else { format!(" [{}]", flags.join(", ")) },
    )
}

macro_rules! call {
    ($client:expr, $method:ident, $request:expr) => {
        $client.$method($request).await.map_err(|s| describe(&s))?.into_inner()
    };
}

pub async fn run_institution(args: InstitutionArgs) -> Result<(), String> {
    let mut client = admin_client(&args.remote).await?;
    match args.command {
        InstitutionCommand::Create { institution_id, name } => {
            let created = call!(client, create_institution, api::CreateInstitutionRequest { institution_id, name });
            let text = format!("created institution {} ({})", created.institution_id, created.name);
            print(args.json, institution_json(&created), text);
        }
        InstitutionCommand::List => {
            let list = call!(client, list_institutions, api::ListInstitutionsRequest {});
            let text = list.institutions.iter().map(|i| format!("{}  {}", i.institution_id, i.name)).collect();
            print(args.json, Value::Array(list.institutions.iter().map(institution_json).collect()), lines(text));
        }
        InstitutionCommand::Show { institution_id } => {
            let found = call!(client, get_institution, api::GetInstitutionRequest { institution_id });
            let text = format!("institution {} ({})", found.institution_id, found.name);
            print(args.json, institution_json(&found), text);
        }
    }
    Ok(())
}

fn lines(lines: Vec<String>) -> String {
    if lines.is_empty() { "(none)".to_owned() } else { lines.join("\n") }
}

pub async fn run_client(args: ClientArgs) -> Result<(), String> {
    let mut client = admin_client(&args.remote).await?;
    match args.command {
        ClientCommand::Create(spec) => {
            let spec = api::ClientSpec {
                client_id: spec.client_id.unwrap_or_default(),
                name: spec.name,
                institution_ids: spec.institutions,
                grant_types: spec.grant_types,
                scopes: spec.scopes,
                redirect_uri: spec.redirect_uri,
                access_token_ttl_secs: spec.access_token_ttl_secs,
                refresh_token_ttl_secs: spec.refresh_token_ttl_secs,
                introspect: spec.introspect,
                consent_enabled: spec.consent_enabled,
                secondary_authentication_enabled: spec.secondary_authentication_enabled,
                device_registration_enabled: spec.device_registration_enabled,
                authorize_partners: spec.authorize_partners,
            };
            let created = call!(client, create_client, api::CreateClientRequest { spec: Some(spec) });
            print_secret(args.json, created.client.as_ref(), &created.client_secret, "created");
        }
        ClientCommand::List { institution } => {
            let request = api::ListClientsRequest { institution_id: institution.unwrap_or_default() };
            let list = call!(client, list_clients, request);
            let text = lines(list.clients.iter().map(client_text).collect());
            print(args.json, Value::Array(list.clients.iter().map(client_json).collect()), text);
        }
        ClientCommand::Show { client_id } => {
            let found = call!(client, get_client, api::GetClientRequest { client_id });
            print(args.json, client_json(&found), client_text(&found));
        }
        ClientCommand::RotateSecret { client_id, overlap_secs } => {
            let rotated =
                call!(client, rotate_client_secret, api::RotateClientSecretRequest { client_id, overlap_secs });
            print_secret(args.json, rotated.client.as_ref(), &rotated.client_secret, "rotated the secret of");
        }
        ClientCommand::AuthorizePartners { client_id, off } => {
            let request = api::SetClientAuthorizePartnersRequest { client_id, authorize_partners: !off };
            let changed = call!(client, set_client_authorize_partners, request);
            print(args.json, client_json(&changed), client_text(&changed));
        }
        ClientCommand::Disable { client_id } => {
            let changed = call!(client, disable_client, api::GetClientRequest { client_id });
            print(args.json, client_json(&changed), client_text(&changed));
        }
        ClientCommand::Enable { client_id } => {
            let changed = call!(client, enable_client, api::GetClientRequest { client_id });
            print(args.json, client_json(&changed), client_text(&changed));
        }
    }
    Ok(())
}

fn print_secret(json_output: bool, client: Option<&api::Client>, secret: &str, verb: &str) {
    let client = client.cloned().unwrap_or_default();
    let mut value = client_json(&client);
    value["client_secret"] = Value::String(secret.to_owned());
    let id = client.spec.map(|s| s.client_id).unwrap_or_default();
    let text = format!("{verb} client {id}\nclient_secret: {secret}\n(shown only now: store it safely)");
    print(json_output, value, text);
}

pub async fn run_user(args: UserArgs) -> Result<(), String> {
    let json_output = args.json;
    // Read the password before connecting, so a prompt is not raced by connection errors.
    let password = match &args.command {
        UserCommand::Create { password, password_prompt, .. } if password.password_stdin || *password_prompt => {
            Some(if password.password_stdin { read_password_line()? } else { prompt_password()? })
        }
        UserCommand::SetPassword { password, .. } => Some(required_password(password)?),
        _ => None,
    };
    let mut client = admin_client(&args.remote).await?;
    let user = match args.command {
        UserCommand::Create { profile, login_id, institution_user_id, .. } => {
            let spec = api::UserSpec {
                institution_id: profile.institution,
                login_id,
                institution_user_id: institution_user_id.unwrap_or_default(),
                host_user_id: profile.host_user_id,
                user_type: profile.user_type,
                first_name: profile.first_name,
                last_name: profile.last_name,
                email: profile.email,
                institution_customers: profile.customers.iter().map(|c| parse_customer(c)).collect::<Result<_, _>>()?,
            };
            let request = api::CreateUserRequest { spec: Some(spec), password: password.unwrap_or_default() };
            call!(client, create_user, request)
        }
        UserCommand::List { institution } => return list_users(&mut client, institution, json_output).await,
        UserCommand::Show(name) => call!(client, get_user, name.request()),
        UserCommand::SetPassword { user, .. } => {
            let request =
                api::SetUserPasswordRequest { user: Some(user.request()), password: password.unwrap_or_default() };
            call!(client, set_user_password, request)
        }
        UserCommand::Lock(name) => call!(client, lock_user, name.request()),
        UserCommand::Unlock(name) => call!(client, unlock_user, name.request()),
        UserCommand::Disable(name) => call!(client, disable_user, name.request()),
        UserCommand::Enable(name) => call!(client, enable_user, name.request()),
        UserCommand::Update { user, changes } => {
            let current = call!(client, get_user, user.request());
            let mut spec = current.spec.unwrap_or_default();
            if let Some(v) = changes.host_user_id {
                spec.host_user_id = v;
            }
            if let Some(v) = changes.user_type {
                spec.user_type = v;
            }
            if let Some(v) = changes.first_name {
                spec.first_name = v;
            }
            if let Some(v) = changes.last_name {
                spec.last_name = v;
            }
            if let Some(v) = changes.email {
                spec.email = v;
            }
            if changes.clear_customers {
                spec.institution_customers.clear();
            } else if !changes.customers.is_empty() {
                spec.institution_customers =
                    changes.customers.iter().map(|c| parse_customer(c)).collect::<Result<_, _>>()?;
            }
            call!(client, update_user, api::UpdateUserRequest { spec: Some(spec) })
        }
    };
    print(json_output, user_json(&user), user_text(&user));
    Ok(())
}

async fn list_users(client: &mut AdminClient, institution_id: String, json_output: bool) -> Result<(), String> {
    let mut users = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = api::ListUsersRequest { institution_id: institution_id.clone(), page_size: 1000, page_token };
        let page = call!(client, list_users, request);
        users.extend(page.users);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let text = lines(users.iter().map(user_text).collect());
    print(json_output, Value::Array(users.iter().map(user_json).collect()), text);
    Ok(())
}
