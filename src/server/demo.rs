//! `serve --demo`: seeds a demo institution, client and user into an empty ledger and prints
//! their credentials with a ready-to-paste curl command. The credentials are also written to
//! `demo.env` (mode 0600) in the data directory so the README walk-through can `source` it.

use std::fmt::Write as _;

use crate::api::admin::{self, AdminError};
use crate::api::app::App;
use crate::crypto::credential::generate_secret;
use crate::proto as api;

pub const DEMO_ENV_FILE: &str = "demo.env";
pub const DEMO_INSTITUTION: &str = "01001";
pub const DEMO_CLIENT: &str = "demo-client";
pub const DEMO_USER: &str = "demo.user";

/// Seeds the demo data when the directory is empty; returns the text to print.
pub async fn seed(app: &App) -> Result<String, AdminError> {
    let empty = {
        let state = app.state.read();
        state.institutions.is_empty() && state.clients.is_empty() && state.users.is_empty()
    };
    if !empty {
        return Ok(format!(
            "demo: the ledger already has data, nothing seeded (credentials of an earlier demo seed are in {})",
            app.config.data_dir.join(DEMO_ENV_FILE).display()
        ));
    }
    let txid = || uuid::Uuid::new_v4().to_string();
    let institution =
        api::CreateInstitutionRequest { institution_id: DEMO_INSTITUTION.into(), name: "Demo Credit Union".into() };
    admin::create_institution(app, txid(), institution).await?;
    let spec = api::ClientSpec {
        client_id: DEMO_CLIENT.into(),
        name: "Demo banking app".into(),
        institution_ids: vec![DEMO_INSTITUTION.into()],
        grant_types: vec!["client_credentials".into(), "password".into(), "refresh_token".into()],
        scopes: vec!["accounts:read".into(), "transactions:read".into(), "institution-users:read".into()],
        introspect: true,
        // The demo's banking app is a first-party app, so the code flow can be tried with it
        // (docs/authorization-code.md); a real deployment grants this only to its own apps.
        authorize_partners: true,
        ..Default::default()
    };
    let client = admin::create_client(app, txid(), spec).await?;
    let password = generate_secret();
    let user = api::CreateUserRequest {
        spec: Some(api::UserSpec {
            institution_id: DEMO_INSTITUTION.into(),
            login_id: DEMO_USER.into(),
            host_user_id: "HOST-0001".into(),
            first_name: "Dana".into(),
            last_name: "Demo".into(),
            email: "dana.demo@example.com".into(),
            ..Default::default()
        }),
        password: password.clone(),
    };
    admin::create_user(app, txid(), user).await?;
    let base = format!("http://{}", app.config.listen);
    let env = format!(
        "TL_URL={base}\nTL_INSTITUTION={DEMO_INSTITUTION}\nTL_CLIENT_ID={DEMO_CLIENT}\nTL_CLIENT_SECRET={}\nTL_USERNAME={DEMO_USER}\nTL_PASSWORD={password}\n",
        client.client_secret
    );
    let env_path = app.config.data_dir.join(DEMO_ENV_FILE);
    let _ = std::fs::remove_file(&env_path);
    let _ = crate::fsutil::write_private_file(&env_path, env.as_bytes());
    let mut text = String::new();
    let _ = writeln!(text, "demo data seeded (also in {}):", env_path.display());
    let _ = writeln!(text, "  institution  {DEMO_INSTITUTION}");
    let _ = writeln!(text, "  client       {DEMO_CLIENT}  secret {}", client.client_secret);
    let _ = writeln!(text, "  user         {DEMO_USER}  password {password}");
    let _ = writeln!(text, "try:");
    let _ = writeln!(
        text,
        "  curl -s -X POST {base}/oauth2/v1/token -u '{DEMO_CLIENT}:{}' -H \"transactionId: $(cat /proc/sys/kernel/random/uuid)\" -H 'institutionId: {DEMO_INSTITUTION}' -H 'Content-Type: application/x-www-form-urlencoded' -d 'grant_type=client_credentials'",
        client.client_secret
    );
    Ok(text)
}
