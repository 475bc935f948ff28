//! Crash safety of the real binary: drive mixed issue / sign-in / refresh / revoke / admin load,
//! SIGKILL the server at a seeded random instant, restart it, and check that every acknowledged
//! operation survived, that unacknowledged ones are all-or-nothing, and that no token seen
//! revoked is ever active again. Seed and rounds: TOKENLEDGER_CRASH_SEED, TOKENLEDGER_CRASH_ROUNDS.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokenledger::proto::{self as api, admin_service_client::AdminServiceClient};

use crate::binary::{Running, serve};
use crate::harness::{Rng, txid};

const INSTITUTION: &str = "04004";
const PASSWORD: &str = "crash test password";

/// What the clients were told, and what they cannot know.
#[derive(Default)]
struct Model {
    /// Acknowledged and not ended by any acknowledged operation: must be active.
    live: HashSet<String>,
    /// Acknowledged as ended, or observed inactive after a crash: must never be active again.
    dead: HashSet<String>,
    /// Touched by an operation whose answer was lost: either outcome is allowed, until observed.
    uncertain: HashSet<String>,
    /// Families available for refresh or revocation: family → (current refresh token, members).
    families: HashMap<u64, (String, Vec<String>)>,
    /// Tokens issued to the app client (sign-ins and refreshes); the rest belong to the service.
    app_tokens: HashSet<String>,
    /// Institutions whose creation was acknowledged.
    institutions: Vec<String>,
    next_family: u64,
    acknowledged: u64,
}

struct Env {
    http: reqwest::Client,
    url: String,
    service: (String, String),
    app: (String, String),
}

impl Env {
    async fn post(
        &self,
        path: &str,
        creds: &(String, String),
        institution: bool,
        form: &[(&str, &str)],
    ) -> Result<(u16, serde_json::Value), ()> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.url))
            .basic_auth(&creds.0, Some(&creds.1))
            .header("transactionId", txid())
            .form(form)
            .timeout(Duration::from_secs(5));
        if institution {
            request = request.header("institutionId", INSTITUTION);
        }
        let response = request.send().await.map_err(|_| ())?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|_| ())?;
        Ok((status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)))
    }

    async fn active(&self, token: &str) -> bool {
        let (status, body) =
            self.post("/oauth2/v1/introspect", &self.service, false, &[("token", token)]).await.expect("introspection");
        assert_eq!(status, 200);
        body["active"] == true
    }
}

async fn worker(env: Arc<Env>, model: Arc<Mutex<Model>>, mut rng: Rng, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match rng.below(10) {
            0..=2 => {
                match env.post("/oauth2/v1/token", &env.service, true, &[("grant_type", "client_credentials")]).await {
                    Ok((200, body)) => {
                        let mut m = model.lock().unwrap();
                        m.live.insert(body["access_token"].as_str().unwrap().to_owned());
                        m.acknowledged += 1;
                    }
                    Ok((status, body)) => panic!("issuance failed: {status} {body}"),
                    Err(()) => {} // Lost: nobody ever saw the token, so it constrains nothing.
                }
            }
            3..=4 => {
                let form = [("grant_type", "password"), ("username", "carol"), ("password", PASSWORD)];
                if let Ok((200, body)) = env.post("/oauth2/v1/token", &env.app, true, &form).await {
                    let access = body["access_token"].as_str().unwrap().to_owned();
                    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
                    let mut m = model.lock().unwrap();
                    m.live.insert(access.clone());
                    m.live.insert(refresh.clone());
                    m.app_tokens.insert(access.clone());
                    m.app_tokens.insert(refresh.clone());
                    let id = m.next_family;
                    m.next_family += 1;
                    m.families.insert(id, (refresh, vec![access]));
                    m.acknowledged += 1;
                }
            }
            5..=6 => {
                // Take a family out of the pool while its refresh is in flight, so no two
                // workers ever present the same refresh token (that would be reuse).
                let picked = {
                    let mut m = model.lock().unwrap();
                    let keys: Vec<u64> = m.families.keys().copied().collect();
                    if keys.is_empty() {
                        None
                    } else {
                        let key = keys[rng.below(keys.len() as u64) as usize];
                        m.families.remove(&key).map(|f| (key, f))
                    }
                };
                let Some((key, (refresh, mut members))) = picked else { continue };
                let form = [("grant_type", "refresh_token"), ("refresh_token", refresh.as_str())];
                let answer = env.post("/oauth2/v1/token", &env.app, false, &form).await;
                let mut m = model.lock().unwrap();
                match answer {
                    Ok((200, body)) => {
                        let access = body["access_token"].as_str().unwrap().to_owned();
                        let next = body["refresh_token"].as_str().unwrap().to_owned();
                        m.live.remove(&refresh);
                        m.dead.insert(refresh.clone());
                        m.live.insert(access.clone());
                        m.live.insert(next.clone());
                        m.app_tokens.insert(access.clone());
                        m.app_tokens.insert(next.clone());
                        members.push(refresh);
                        members.push(access);
                        m.families.insert(key, (next, members));
                        m.acknowledged += 1;
                    }
                    Ok((status, body)) => panic!("refresh failed: {status} {body}"),
                    Err(()) => {
                        // The rotation may or may not have happened: retire the family.
                        m.live.remove(&refresh);
                        m.uncertain.insert(refresh);
                    }
                }
            }
            7 => {
                let victim = {
                    let m = model.lock().unwrap();
                    let access: Vec<&String> = m.live.iter().filter(|t| t.starts_with("tla_")).collect();
                    (!access.is_empty()).then(|| access[rng.below(access.len() as u64) as usize].clone())
                };
                let Some(victim) = victim else { continue };
                let owned_by_app = model.lock().unwrap().app_tokens.contains(&victim);
                let creds = if owned_by_app { &env.app } else { &env.service };
                let answer = env.post("/oauth2/v1/revoke", creds, false, &[("token", &victim)]).await;
                let mut m = model.lock().unwrap();
                if m.live.remove(&victim) {
                    match answer {
                        Ok((200, _)) => {
                            m.dead.insert(victim);
                            m.acknowledged += 1;
                        }
                        _ => {
                            m.uncertain.insert(victim);
                        }
                    }
                }
            }
            8 => {
                let picked = {
                    let mut m = model.lock().unwrap();
                    let keys: Vec<u64> = m.families.keys().copied().collect();
                    (!keys.is_empty())
                        .then(|| keys[rng.below(keys.len() as u64) as usize])
                        .and_then(|k| m.families.remove(&k))
                };
                let Some((refresh, members)) = picked else { continue };
                let answer = env.post("/oauth2/v1/revoke", &env.app, false, &[("token", &refresh)]).await;
                let mut m = model.lock().unwrap();
                let acked = matches!(answer, Ok((200, _)));
                for token in members.into_iter().chain([refresh]) {
                    if m.live.remove(&token) {
                        if acked {
                            m.dead.insert(token);
                        } else {
                            m.uncertain.insert(token);
                        }
                    }
                }
                if acked {
                    m.acknowledged += 1;
                }
            }
            _ => {
                let id = format!("{}", 5_000_000 + rng.below(4_000_000_000));
                let admin = env.admin().await;
                let Some(mut admin) = admin else { continue };
                let request = env
                    .admin_request(api::CreateInstitutionRequest { institution_id: id.clone(), name: "crash".into() });
                if admin.create_institution(request).await.is_ok() {
                    let mut m = model.lock().unwrap();
                    m.institutions.push(id);
                    m.acknowledged += 1;
                }
            }
        }
    }
}

impl Env {
    async fn admin(&self) -> Option<AdminServiceClient<tonic::transport::Channel>> {
        let channel = tonic::transport::Channel::from_shared(self.url.clone())
            .ok()?
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .ok()?;
        Some(AdminServiceClient::new(channel))
    }

    fn admin_request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {}", ADMIN.lock().unwrap().clone()).parse().unwrap());
        request
    }
}

static ADMIN: Mutex<String> = Mutex::new(String::new());

async fn setup(running: &Running, dir: &std::path::Path) -> Env {
    *ADMIN.lock().unwrap() = std::fs::read_to_string(dir.join("admin.token")).unwrap().trim().to_owned();
    let env = Env {
        http: reqwest::Client::new(),
        url: running.url.clone(),
        service: Default::default(),
        app: Default::default(),
    };
    let mut admin = env.admin().await.unwrap();
    admin
        .create_institution(env.admin_request(api::CreateInstitutionRequest {
            institution_id: INSTITUTION.into(),
            name: "Crash CU".into(),
        }))
        .await
        .unwrap();
    let client = |id: &str, grants: &[&str]| api::ClientSpec {
        client_id: id.into(),
        institution_ids: vec![INSTITUTION.into()],
        grant_types: grants.iter().map(|g| g.to_string()).collect(),
        scopes: vec!["accounts:read".into()],
        introspect: true,
        ..Default::default()
    };
    let service = admin
        .create_client(
            env.admin_request(api::CreateClientRequest { spec: Some(client("svc", &["client_credentials"])) }),
        )
        .await
        .unwrap()
        .into_inner();
    let app = admin
        .create_client(
            env.admin_request(api::CreateClientRequest { spec: Some(client("app", &["password", "refresh_token"])) }),
        )
        .await
        .unwrap()
        .into_inner();
    let user = api::UserSpec { institution_id: INSTITUTION.into(), login_id: "carol".into(), ..Default::default() };
    admin
        .create_user(env.admin_request(api::CreateUserRequest { spec: Some(user), password: PASSWORD.into() }))
        .await
        .unwrap();
    Env { service: ("svc".into(), service.client_secret), app: ("app".into(), app.client_secret), ..env }
}

fn kill(running: &mut Running) {
    running.child.kill().unwrap();
    running.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_instants_loses_nothing_acknowledged() {
    let seed: u64 = std::env::var("TOKENLEDGER_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x7e57_c0de);
    let rounds: u64 = std::env::var("TOKENLEDGER_CRASH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    eprintln!("crash harness: seed {seed}, {rounds} rounds (TOKENLEDGER_CRASH_SEED / TOKENLEDGER_CRASH_ROUNDS)");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut running = serve(dir.path(), &[]);
    let mut env = Arc::new(setup(&running, dir.path()).await);
    let model = Arc::new(Mutex::new(Model::default()));
    let mut checks = 0u64;
    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> =
            (0..8).map(|_| tokio::spawn(worker(env.clone(), model.clone(), Rng(rng.next()), stop.clone()))).collect();
        tokio::time::sleep(Duration::from_millis(100 + rng.below(500))).await;
        kill(&mut running);
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.await.unwrap_or_else(|e| panic!("seed {seed} round {round}: worker failed: {e}"));
        }
        running = serve(dir.path(), &[]);
        env = Arc::new(Env {
            http: reqwest::Client::new(),
            url: running.url.clone(),
            service: env.service.clone(),
            app: env.app.clone(),
        });
        let (live, dead, uncertain, institutions) = {
            let m = model.lock().unwrap();
            (m.live.clone(), m.dead.clone(), m.uncertain.clone(), m.institutions.clone())
        };
        for token in &live {
            assert!(
                env.active(token).await,
                "seed {seed} round {round}: an acknowledged token is not active after restart"
            );
            checks += 1;
        }
        for token in &dead {
            assert!(!env.active(token).await, "seed {seed} round {round}: an ended token is active again");
            checks += 1;
        }
        for token in uncertain {
            // All or nothing: whatever we see now must hold from now on.
            model.lock().unwrap().uncertain.remove(&token);
            let active = env.active(&token).await;
            let mut m = model.lock().unwrap();
            if active {
                m.live.insert(token);
            } else {
                m.dead.insert(token);
            }
            checks += 1;
        }
        let mut admin = env.admin().await.unwrap();
        for id in institutions {
            let request = env.admin_request(api::CreateInstitutionRequest { institution_id: id, name: "crash".into() });
            let status = admin.create_institution(request).await.unwrap_err();
            assert_eq!(
                status.code(),
                tonic::Code::AlreadyExists,
                "seed {seed} round {round}: an acknowledged institution was lost"
            );
            checks += 1;
        }
    }
    let acknowledged = model.lock().unwrap().acknowledged;
    eprintln!("crash harness: {rounds} kills, {acknowledged} acknowledged operations, {checks} checks, 0 losses");
    assert!(acknowledged > rounds * 10, "the load was too light to mean anything: {acknowledged}");
    kill(&mut running);
}
