//! `tokenledger import FILE.json`: the SPEC section 5 schema, sent as one AdminService.Import
//! call, so the import is atomic and idempotent.

use std::path::PathBuf;

use serde::Deserialize;

use super::RemoteArgs;
use crate::proto as api;

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// The JSON file to import
    pub file: PathBuf,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ImportFile {
    pub institutions: Vec<FileInstitution>,
    pub clients: Vec<FileClient>,
    pub users: Vec<FileUser>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileInstitution {
    pub institution_id: String,
    pub name: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct FileClient {
    pub client_id: String,
    pub client_secret: String,
    pub name: String,
    pub institution_ids: Vec<String>,
    pub grant_types: Vec<String>,
    pub scopes: Vec<String>,
    pub redirect_uri: String,
    pub access_token_ttl_secs: u64,
    pub refresh_token_ttl_secs: u64,
    pub introspect: bool,
    pub consent_enabled: bool,
    pub secondary_authentication_enabled: bool,
    pub device_registration_enabled: bool,
    /// A first-party app that may mint authorization codes for partners (SPEC 3.4).
    pub authorize_partners: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct FileUser {
    pub institution_id: String,
    pub login_id: String,
    pub password: String,
    pub institution_user_id: String,
    pub host_user_id: String,
    pub user_type: String,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub institution_customers: Vec<FileCustomer>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct FileCustomer {
    pub institution_customer_id: String,
    pub member_number: String,
    pub member_name: String,
    pub customer_type: String,
    pub primary: bool,
}

impl ImportFile {
    pub fn into_request(self) -> api::ImportRequest {
        api::ImportRequest {
            institutions: self
                .institutions
                .into_iter()
                .map(|i| api::Institution { institution_id: i.institution_id, name: i.name })
                .collect(),
            clients: self
                .clients
                .into_iter()
                .map(|c| api::ImportClient {
                    spec: Some(api::ClientSpec {
                        client_id: c.client_id,
                        name: c.name,
                        institution_ids: c.institution_ids,
                        grant_types: c.grant_types,
                        scopes: c.scopes,
                        redirect_uri: c.redirect_uri,
                        access_token_ttl_secs: c.access_token_ttl_secs,
                        refresh_token_ttl_secs: c.refresh_token_ttl_secs,
                        introspect: c.introspect,
                        consent_enabled: c.consent_enabled,
                        secondary_authentication_enabled: c.secondary_authentication_enabled,
                        device_registration_enabled: c.device_registration_enabled,
                        authorize_partners: c.authorize_partners,
                    }),
                    client_secret: c.client_secret,
                })
                .collect(),
            users: self
                .users
                .into_iter()
                .map(|u| api::ImportUser {
                    spec: Some(api::UserSpec {
                        institution_id: u.institution_id,
                        login_id: u.login_id,
                        institution_user_id: u.institution_user_id,
                        host_user_id: u.host_user_id,
                        user_type: u.user_type,
                        first_name: u.first_name,
                        last_name: u.last_name,
                        email: u.email,
                        institution_customers: u
                            .institution_customers
                            .into_iter()
                            .map(|c| api::InstitutionCustomer {
                                institution_customer_id: c.institution_customer_id,
                                member_number: c.member_number,
                                member_name: c.member_name,
                                customer_type: c.customer_type,
                                primary: c.primary,
                            })
                            .collect(),
                    }),
                    password: u.password,
                })
                .collect(),
        }
    }
}

pub async fn run(args: ImportArgs) -> Result<(), String> {
    let text = std::fs::read_to_string(&args.file).map_err(|e| format!("cannot read {}: {e}", args.file.display()))?;
    let file: ImportFile = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", args.file.display()))?;
    let mut client = super::remote::admin_client(&args.remote).await?;
    let summary = client.import(file.into_request()).await.map_err(|s| super::remote::describe(&s))?.into_inner();
    if args.json {
        let secrets: Vec<_> = summary
            .generated_secrets
            .iter()
            .map(|g| serde_json::json!({"client_id": g.client_id, "client_secret": g.client_secret}))
            .collect();
        let out = serde_json::json!({
            "institutions_created": summary.institutions_created,
            "clients_created": summary.clients_created,
            "users_created": summary.users_created,
            "unchanged": summary.unchanged,
            "generated_secrets": secrets,
            "head_seq": summary.head_seq,
        });
        println!("{out}");
    } else {
        println!(
            "imported: {} institutions, {} clients, {} users created; {} unchanged (ledger head {})",
            summary.institutions_created,
            summary.clients_created,
            summary.users_created,
            summary.unchanged,
            summary.head_seq
        );
        for g in &summary.generated_secrets {
            println!("generated secret for client {}: {} (shown once)", g.client_id, g.client_secret);
        }
    }
    Ok(())
}
