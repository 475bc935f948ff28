//! Starts the real server in-process on port 0 in a temp dir, and talks to it with real HTTP
//! (reqwest) and gRPC (tonic) clients.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tempfile::TempDir;
use tokenledger::App;
use tokenledger::clock::{Clock, ManualClock, SystemClock};
use tokenledger::config::{Config, Settings};
use tokenledger::crypto::ServerKeys;
use tokenledger::crypto::SigningKeys;
use tokenledger::crypto::sha256;
use tokenledger::ledger::LedgerHandle;
use tokenledger::proto::admin_service_client::AdminServiceClient;
use tokenledger::proto::token_service_client::TokenServiceClient;
use tokenledger::proto::{self as api};
use tokenledger::server::{self, data_dir};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub const INSTITUTION: &str = "01001";
pub const OTHER_INSTITUTION: &str = "02002";

pub struct TestServer {
    /// Overrides the admin credential file (servers built around a custom `App`).
    admin_token: Option<String>,
    pub addr: SocketAddr,
    pub app: Arc<App>,
    pub dir: Arc<TempDir>,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Settings every test server uses; `tweak` can change them.
pub fn test_settings(dir: &Path) -> Settings {
    Settings {
        data_dir: Some(dir.to_path_buf()),
        listen: Some("127.0.0.1:0".into()),
        // Real PBKDF2, at a cost that keeps the suite fast (allowed explicitly: a server
        // refuses fewer than 100000 iterations otherwise).
        password_pbkdf2_iterations: Some(1000),
        insecure_low_pbkdf2_iterations: Some(true),
        shutdown_grace_secs: Some(5),
        ..Settings::default()
    }
}

impl TestServer {
    pub async fn start() -> Self {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        Self::start_in(dir, |_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Settings)) -> Self {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        Self::start_in(dir, tweak).await
    }

    pub async fn start_in(dir: Arc<TempDir>, tweak: impl FnOnce(&mut Settings)) -> Self {
        Self::start_in_on(dir, tokenledger::clock::system(), tweak).await
    }

    /// A server whose every reading of the time comes from `clock` (the writer's batches and
    /// every handler), so a test can step time instead of sleeping.
    pub async fn start_on_clock(clock: Arc<ManualClock>, tweak: impl FnOnce(&mut Settings)) -> Self {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        Self::start_in_on(dir, clock, tweak).await
    }

    /// A server whose issuer is the URL it is reached at, as standard clients require (OIDC
    /// discovery compares the two, and ID tokens carry it as `iss`).
    pub async fn start_with_own_issuer() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let issuer = format!("http://{}", listener.local_addr().expect("addr"));
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        Self::start_on(listener, dir, tokenledger::clock::system(), |s| s.issuer = Some(issuer)).await
    }

    pub async fn start_in_on(dir: Arc<TempDir>, clock: Arc<dyn Clock>, tweak: impl FnOnce(&mut Settings)) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::start_on(listener, dir, clock, tweak).await
    }

    async fn start_on(
        listener: tokio::net::TcpListener,
        dir: Arc<TempDir>,
        clock: Arc<dyn Clock>,
        tweak: impl FnOnce(&mut Settings),
    ) -> Self {
        let mut settings = test_settings(dir.path());
        tweak(&mut settings);
        let config = Config::resolve(settings).expect("config");
        let opened = tokio::task::spawn_blocking(move || data_dir::open_with_clock(&config, clock))
            .await
            .expect("join")
            .expect("open data dir");
        let app = opened.app.clone();
        Self::serve_on(listener, app, dir, opened).await
    }

    /// A server whose ledger lives on `backend` (a storage backend the test controls), with
    /// the rest of its files in `dir`.
    pub async fn start_on_backend(backend: impl redb::StorageBackend, dir: Arc<TempDir>) -> Self {
        let config = Config::resolve(test_settings(dir.path())).expect("config");
        let db = redb::Database::builder().create_with_backend(backend).expect("database on the backend");
        let (store, state, _) = tokenledger::ledger::open_database(db, wall_ms(), |_| {}).expect("open the ledger");
        let state = Arc::new(parking_lot::RwLock::new(state));
        let handle = LedgerHandle::spawn(store, state.clone(), config.writer.clone()).expect("writer");
        let admin = "tladm_backend-test".to_owned();
        let (signing, _, _) =
            SigningKeys::load_or_create(&dir.path().join("signing-keys.json"), wall_ms()).expect("signing keys");
        let keys = ServerKeys::from_secret(1, &[9; 32]);
        let app = Arc::new(App::new(config, keys, signing, state, handle, sha256(admin.as_bytes())));
        Self::serve(app, dir, ()).await.with_admin_token(admin)
    }

    /// Serves `app`; `keep` (the data-dir lock, for example) lives as long as the server.
    async fn serve<K: Send + 'static>(app: Arc<App>, dir: Arc<TempDir>, keep: K) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::serve_on(listener, app, dir, keep).await
    }

    async fn serve_on<K: Send + 'static>(
        listener: tokio::net::TcpListener,
        app: Arc<App>,
        dir: Arc<TempDir>,
        keep: K,
    ) -> Self {
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let served = app.clone();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            server::run(served, listener, shutdown).await.expect("server run");
            drop(keep);
        });
        let http = reqwest::Client::builder().build().expect("http client");
        Self { admin_token: None, addr, app, dir, http, stop: Some(stop), task: Some(task) }
    }

    pub fn with_admin_token(mut self, token: String) -> Self {
        self.admin_token = Some(token);
        self
    }

    /// Stops the server gracefully and waits until the data dir is released.
    pub async fn stop(mut self) -> Arc<TempDir> {
        self.shutdown().await;
        self.dir.clone()
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
    }

    /// The strongest check we have: stops the server, replays its ledger from the file into a
    /// fresh state and asserts that it equals the live projections (both purged at the same
    /// time). Returns the replayed state for further checks.
    pub async fn assert_replay_equals_live(self) -> tokenledger::domain::State {
        let app = self.app.clone();
        let clock = self.app.clock.clone();
        let dir = self.stop().await;
        // Taken after the stop: the projection snapshot written at shutdown appends its record.
        let mut live = app.state.read().clone();
        drop(app);
        let path = dir.path().join(data_dir::LEDGER_FILE);
        let now = clock.now_ms();
        let (_, mut replayed, report) = tokenledger::ledger::open(&path, now, |_| {}).expect("replay the ledger");
        assert_eq!(report.head, live.head, "the replay ends at the live head");
        live.purge_all_expired(now);
        replayed.purge_all_expired(now);
        assert_eq!(replayed.cutoffs, live.cutoffs, "replayed cutoffs differ");
        assert!(replayed.authorization == live.authorization, "replayed codes or signing keys differ");
        assert!(replayed == live, "replayed state differs from the live projections");
        replayed
    }

    /// Stops the server and starts a new one on the same data directory and clock.
    pub async fn restart(self) -> Self {
        let clock = self.app.clock.clone();
        let dir = self.stop().await;
        Self::start_in_on(dir, clock, |_| {}).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub fn admin_token(&self) -> String {
        if let Some(token) = &self.admin_token {
            return token.clone();
        }
        data_dir::read_admin_token(&self.dir.path().join(data_dir::ADMIN_TOKEN_FILE)).expect("admin token")
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url("")).expect("uri").connect().await.expect("grpc connect")
    }

    pub async fn token_client(&self) -> TokenServiceClient<Channel> {
        TokenServiceClient::new(self.channel().await)
    }

    pub async fn admin_client(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel().await)
    }

    /// An admin request carrying the admin credential.
    pub fn admin<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {}", self.admin_token()).parse().expect("metadata"));
        request
    }

    /// Creates an institution, returning nothing (panics on failure).
    pub async fn institution(&self, id: &str) {
        let request = api::CreateInstitutionRequest { institution_id: id.into(), name: format!("Institution {id}") };
        self.admin_client().await.create_institution(self.admin(request)).await.expect("create institution");
    }

    /// Creates a client with a generated secret.
    pub async fn client(&self, spec: api::ClientSpec) -> ClientCreds {
        let response = self
            .admin_client()
            .await
            .create_client(self.admin(api::CreateClientRequest { spec: Some(spec) }))
            .await
            .expect("create client");
        let response = response.into_inner();
        let id = response.client.and_then(|c| c.spec).map(|s| s.client_id).expect("client id");
        ClientCreds { id, secret: response.client_secret }
    }

    pub async fn user(&self, institution: &str, login: &str, password: &str, user_type: &str) -> api::User {
        let spec = api::UserSpec {
            institution_id: institution.into(),
            login_id: login.into(),
            host_user_id: format!("HOST-{login}"),
            user_type: user_type.into(),
            first_name: "Test".into(),
            last_name: "User".into(),
            ..Default::default()
        };
        let request = api::CreateUserRequest { spec: Some(spec), password: password.into() };
        self.admin_client().await.create_user(self.admin(request)).await.expect("create user").into_inner()
    }

    /// The standard fixture: institutions 01001 and 02002, a service client (client
    /// credentials, introspection), an app client (password + refresh), and user alice.
    pub async fn seeded() -> (Self, Fixture) {
        let server = Self::start().await;
        let fixture = server.seed().await;
        (server, fixture)
    }

    pub async fn seed(&self) -> Fixture {
        self.institution(INSTITUTION).await;
        self.institution(OTHER_INSTITUTION).await;
        let service = self
            .client(api::ClientSpec {
                client_id: "svc".into(),
                name: "Service".into(),
                institution_ids: vec![INSTITUTION.into()],
                grant_types: vec!["client_credentials".into()],
                scopes: vec!["accounts:read".into(), "transactions:read".into()],
                introspect: true,
                ..Default::default()
            })
            .await;
        let app = self
            .client(api::ClientSpec {
                client_id: "app".into(),
                name: "Mobile app".into(),
                institution_ids: vec![INSTITUTION.into()],
                grant_types: vec!["password".into(), "refresh_token".into()],
                scopes: vec!["accounts:read".into(), "transactions:read".into(), "profile".into()],
                introspect: true,
                ..Default::default()
            })
            .await;
        let other = self
            .client(api::ClientSpec {
                client_id: "other".into(),
                name: "Other institution".into(),
                institution_ids: vec![OTHER_INSTITUTION.into()],
                grant_types: vec!["client_credentials".into(), "password".into()],
                scopes: vec!["accounts:read".into()],
                introspect: true,
                ..Default::default()
            })
            .await;
        self.user(INSTITUTION, "alice", "correct horse battery", "RETAIL").await;
        Fixture { service, app, other }
    }

    /// POST a form to `path` with optional Basic credentials and the given headers.
    pub async fn post_form(
        &self,
        path: &str,
        creds: Option<&ClientCreds>,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        self.send_form(reqwest::Method::POST, path, creds, headers, body).await
    }

    /// Sends a form with `method` to `path` with optional Basic credentials and the headers.
    pub async fn send_form(
        &self,
        method: reqwest::Method,
        path: &str,
        creds: Option<&ClientCreds>,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let mut request = self
            .http
            .request(method, self.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_owned());
        if let Some(creds) = creds {
            request = request.header("authorization", tokenledger::wire::encode_basic(&creds.id, &creds.secret));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Reply::from(request.send().await.expect("http request")).await
    }

    /// A token request with a fresh transactionId and institution 01001.
    pub async fn token(&self, creds: &ClientCreds, body: &str) -> Reply {
        self.token_at(creds, INSTITUTION, body).await
    }

    pub async fn token_at(&self, creds: &ClientCreds, institution: &str, body: &str) -> Reply {
        let txid = txid();
        self.post_form(
            "/oauth2/v1/token",
            Some(creds),
            &[("transactionId", &txid), ("institutionId", institution)],
            body,
        )
        .await
    }

    /// Spawns `workers` tasks that each issue `each` client_credentials tokens to `creds` (at
    /// institution 01001) one after another, asserting success; each task returns its tokens.
    pub fn spawn_issuers(&self, creds: &ClientCreds, workers: usize, each: usize) -> Vec<JoinHandle<Vec<String>>> {
        (0..workers)
            .map(|_| {
                let (http, url, creds) = (self.http.clone(), self.url("/oauth2/v1/token"), creds.clone());
                tokio::spawn(async move {
                    let mut tokens = Vec::with_capacity(each);
                    for _ in 0..each {
                        let reply = http
                            .post(&url)
                            .basic_auth(&creds.id, Some(&creds.secret))
                            .header("transactionId", txid())
                            .header("institutionId", INSTITUTION)
                            .header("content-type", "application/x-www-form-urlencoded")
                            .body("grant_type=client_credentials")
                            .send()
                            .await
                            .expect("token request");
                        assert_eq!(reply.status(), 200);
                        let body: serde_json::Value = reply.json().await.expect("token body");
                        tokens.push(body["access_token"].as_str().expect("access_token").to_owned());
                    }
                    tokens
                })
            })
            .collect()
    }

    pub async fn introspect(&self, creds: &ClientCreds, token: &str) -> serde_json::Value {
        let reply = self
            .post_form("/oauth2/v1/introspect", Some(creds), &[("transactionId", &txid())], &format!("token={token}"))
            .await;
        assert_eq!(reply.status, 200, "introspection failed: {}", reply.text);
        reply.json()
    }

    pub async fn is_active(&self, introspector: &ClientCreds, token: &str) -> bool {
        self.introspect(introspector, token).await["active"] == true
    }

    /// Revokes with `DELETE`, as Candescent documents it (204).
    pub async fn revoke(&self, creds: &ClientCreds, token: &str) -> Reply {
        self.revoke_with(reqwest::Method::DELETE, creds, token).await
    }

    /// Revokes with `method` (`POST` is RFC 7009's, answered 200).
    pub async fn revoke_with(&self, method: reqwest::Method, creds: &ClientCreds, token: &str) -> Reply {
        let body = format!("token={token}");
        self.send_form(method, "/oauth2/v1/revoke", Some(creds), &[("transactionId", &txid())], &body).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[derive(Clone, Debug)]
pub struct ClientCreds {
    pub id: String,
    pub secret: String,
}

pub struct Fixture {
    /// client_credentials + introspect, institution 01001.
    pub service: ClientCreds,
    /// password + refresh_token + introspect, institution 01001.
    pub app: ClientCreds,
    /// client_credentials + password + introspect, institution 02002.
    pub other: ClientCreds,
}

pub const ALICE_LOGIN: &str = "username=alice&password=correct+horse+battery";

/// The system clock's reading, for tests of servers on the system clock.
pub fn wall_ms() -> i64 {
    SystemClock.now_ms()
}

pub fn txid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A finished HTTP exchange.
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Reply {
    pub async fn from(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        Self { status, headers, text }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a CMN error with its status and JSON body.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "expected {status} {code}, got: {}", self.text);
        let body = self.json();
        assert_eq!(body["code"], code, "body: {}", self.text);
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "body: {}", self.text);
        assert!(body["error"].as_str().is_some(), "RFC 6749 error field missing: {}", self.text);
    }

    pub fn access_token(&self) -> String {
        assert_eq!(self.status, 200, "token request failed: {}", self.text);
        self.json()["access_token"].as_str().expect("access_token").to_owned()
    }
}

/// A small, seeded, reproducible generator (splitmix64), so a failing run replays from its seed.
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
