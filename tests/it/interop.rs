//! A standard client from another ecosystem against the real server: panva's openid-client
//! (on oauth4webapi), driven through node by `tests/interop/openid-client/run.mjs`, unmodified
//! but for a fetch hook adding `transactionId` and `institutionId`. It covers OIDC discovery
//! with the library's default, client credentials, password (generic grant), refresh with
//! rotation, introspection, revocation of an access and of a refresh token, and the code flow
//! with PKCE and ID-token validation against the JWKS.
//!
//! Needs node and `npm ci` in that directory (`.ci/run` does both). Without them the test says
//! so and passes, unless `TOKENLEDGER_INTEROP_REQUIRED=1` (set by `.ci/run`), when it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::authcode::*;
use crate::harness::*;

/// Longest the node run may take (it usually takes about a second).
const NODE_RUN_TIMEOUT: Duration = Duration::from_secs(120);

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/openid-client")
}

/// Why the client cannot run here, if it cannot.
fn missing_prerequisite(dir: &Path) -> Option<String> {
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => return Some(format!("`node --version` failed: {}", String::from_utf8_lossy(&out.stderr))),
        Err(e) => return Some(format!("node is not installed ({e})")),
    }
    if !dir.join("node_modules/openid-client/package.json").is_file() {
        return Some(format!("openid-client is not installed: run `npm ci` in {}", dir.display()));
    }
    None
}

/// Runs `node run.mjs` with `env`, killing it after [`NODE_RUN_TIMEOUT`]; stdout and stderr.
fn run_node(dir: &Path, env: Vec<(&'static str, String)>) -> (bool, String, String) {
    let mut child = Command::new("node")
        .arg("run.mjs")
        .current_dir(dir)
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            let out = child.wait_with_output().expect("node output");
            let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
            return (status.success(), text(out.stdout), text(out.stderr));
        }
        if started.elapsed() > NODE_RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the openid-client run took longer than {NODE_RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn openid_client_works_unmodified_through_every_flow() {
    let dir = interop_dir();
    if let Some(reason) = missing_prerequisite(&dir) {
        assert!(
            std::env::var("TOKENLEDGER_INTEROP_REQUIRED").as_deref() != Ok("1"),
            "TOKENLEDGER_INTEROP_REQUIRED=1 but the openid-client interop test cannot run: {reason}"
        );
        // Written to stderr directly: libtest captures eprintln! of passing tests.
        let line = format!("SKIPPED interop::openid_client_works_unmodified_through_every_flow: {reason}\n");
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        return;
    }
    let flow = flow_on(TestServer::start_with_own_issuer().await).await;
    let issuer = flow.server.app.config.issuer.clone();
    assert_eq!(issuer, flow.server.url(""), "the issuer is the URL the client uses");
    let env = vec![
        ("TL_ISSUER", issuer.clone()),
        ("TL_INSTITUTION", INSTITUTION.to_owned()),
        ("TL_SERVICE_ID", flow.f.service.id.clone()),
        ("TL_SERVICE_SECRET", flow.f.service.secret.clone()),
        ("TL_APP_ID", flow.f.app.id.clone()),
        ("TL_APP_SECRET", flow.f.app.secret.clone()),
        ("TL_PARTNER_ID", flow.partner.id.clone()),
        ("TL_PARTNER_SECRET", flow.partner.secret.clone()),
        ("TL_USERNAME", "alice".to_owned()),
        ("TL_PASSWORD", "correct horse battery".to_owned()),
        ("TL_CODE_USERNAME", CAROL.to_owned()),
        ("TL_CODE_INSTITUTION_USER_ID", CAROL_ID.to_owned()),
    ];
    let started = Instant::now();
    let (success, stdout, stderr) = tokio::task::spawn_blocking(move || run_node(&dir, env)).await.expect("join");
    eprintln!("openid-client run took {:?}", started.elapsed());
    let report: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("no JSON report from node; stdout: {stdout}\nstderr: {stderr}"));
    assert!(success && report["ok"] == true, "openid-client failed: {report:#}\nstderr: {stderr}");

    let steps: Vec<&str> = report["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(
        steps,
        [
            "discovery",
            "client_credentials",
            "password",
            "introspection",
            "refresh_rotation",
            "revoke_access_token",
            "revoke_refresh_token",
            "authorization_code_pkce",
            "client_authentication_failure",
        ]
    );
    let step = |name: &str| report["steps"].as_array().unwrap().iter().find(|s| s["step"] == name).unwrap().clone();
    assert_eq!(step("discovery")["issuer"], issuer.as_str());
    let code = step("authorization_code_pkce");
    assert_eq!(code["sub"], CAROL_ID);
    assert_eq!(code["jwks_fetched"], true);
    assert_eq!(step("introspection")["username"], "alice");
    // The library went where the standard says, and nowhere else.
    let requests: Vec<&str> = report["requests"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    assert!(requests.iter().all(|r| !r.contains("oauth-authorization-server")), "{requests:?}");
    for expected in [
        "GET /.well-known/openid-configuration",
        "POST /oauth2/v1/token",
        "POST /oauth2/v1/introspect",
        "POST /oauth2/v1/revoke",
        "GET /.well-known/jwks.json",
        "POST /v1/auth-code",
    ] {
        assert!(requests.contains(&expected), "{expected} never requested: {requests:?}");
    }
    // What the library saw is what the ledger holds.
    flow.server.assert_replay_equals_live().await;
}

/// What docs/operations.md warns about: redirect URIs are compared exactly, and URL parsers
/// (such as the WHATWG `URL` openid-client builds `redirect_uri` from) add a `/` to a bare
/// origin, so a partner registered without a path cannot redeem through such a client.
#[tokio::test]
async fn a_bare_origin_redirect_uri_does_not_match_the_slash_url_parsers_add() {
    let flow = flow().await;
    let bare = flow
        .server
        .client(tokenledger::proto::ClientSpec {
            client_id: "bare".into(),
            institution_ids: vec![INSTITUTION.into()],
            grant_types: vec!["authorization_code".into()],
            scopes: vec!["accounts:read".into()],
            redirect_uri: "https://bare.example".into(),
            ..Default::default()
        })
        .await;
    let form = Form::code().set("client_id", "bare");
    let code = flow.code(&form).await;
    let body = format!("{}&redirect_uri=https%3A%2F%2Fbare.example%2F", redeem_body(&code, Some(VERIFIER)));
    flow.redeem_as(&bare, &body).await.assert_error(401, "CMN_90018");
    let code = flow.code(&form).await;
    let body = format!("{}&redirect_uri=https%3A%2F%2Fbare.example", redeem_body(&code, Some(VERIFIER)));
    assert_eq!(flow.redeem_as(&bare, &body).await.status, 200);
}
