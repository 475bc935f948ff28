//! TLS on the shared port with real TLS clients: REST (reqwest + rustls), gRPC (tonic + rustls),
//! client certificates for the admin services, and certificate reload without restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use tokenledger::proto::admin_service_client::AdminServiceClient;
use tokenledger::proto::token_service_client::TokenServiceClient;
use tokenledger::proto::{self as api};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::harness::*;

/// A certificate authority for one test.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, in PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for localhost and 127.0.0.1.
    pub fn server(&self, common_name: &str) -> Leaf {
        let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.leaf(params)
    }

    /// A client certificate (for mTLS).
    pub fn client(&self, common_name: &str) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.leaf(params)
    }

    fn leaf(&self, params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }
}

/// Writes the server's files into `dir`; returns (cert, key, client CA) paths.
fn write_files(dir: &Path, server: &Leaf, client_ca: Option<&Ca>) -> (PathBuf, PathBuf, Option<PathBuf>) {
    let cert = dir.join("server.pem");
    let key = dir.join("server.key");
    std::fs::write(&cert, &server.cert_pem).unwrap();
    std::fs::write(&key, &server.key_pem).unwrap();
    let ca = client_ca.map(|ca| {
        let path = dir.join("client-ca.pem");
        std::fs::write(&path, ca.pem()).unwrap();
        path
    });
    (cert, key, ca)
}

/// A seeded server with TLS (and client verification when `client_ca` is given).
async fn tls_server(ca: &Ca, client_ca: Option<&Ca>) -> (TestServer, Fixture, tempfile::TempDir) {
    let files = tempfile::tempdir().unwrap();
    let (cert, key, client_ca) = write_files(files.path(), &ca.server("tokenledger"), client_ca);
    // The fixture is created over plain gRPC before TLS is switched on.
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let plain = TestServer::start_in(dir.clone(), |_| {}).await;
    let fixture = plain.seed().await;
    drop(plain.stop().await);
    let server = TestServer::start_in(dir, move |s| {
        s.tls_cert_file = Some(cert);
        s.tls_key_file = Some(key);
        s.tls_client_ca_file = client_ca;
    })
    .await;
    (server, fixture, files)
}

fn https(server: &TestServer, path: &str) -> String {
    format!("https://localhost:{}{path}", server.addr.port())
}

fn rest_client(ca: &Ca) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .resolve("localhost", std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .build()
        .unwrap()
}

async fn grpc_channel(
    server: &TestServer,
    ca: &Ca,
    identity: Option<&Leaf>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.pem())).domain_name("localhost");
    if let Some(leaf) = identity {
        tls = tls.identity(Identity::from_pem(&leaf.cert_pem, &leaf.key_pem));
    }
    Channel::from_shared(format!("https://127.0.0.1:{}", server.addr.port())).unwrap().tls_config(tls)?.connect().await
}

fn admin_request<T>(server: &TestServer, message: T) -> tonic::Request<T> {
    server.admin(message)
}

#[tokio::test]
async fn rest_is_served_over_tls_and_plain_http_is_refused() {
    let ca = Ca::new("test CA");
    let (server, f, _files) = tls_server(&ca, None).await;
    let http = rest_client(&ca);
    let health = http.get(https(&server, "/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let token = http
        .post(https(&server, "/oauth2/v1/token"))
        .basic_auth(&f.service.id, Some(&f.service.secret))
        .header("transactionId", txid())
        .header("institutionId", INSTITUTION)
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 200);
    let body: serde_json::Value = token.json().await.unwrap();
    assert!(body["access_token"].as_str().is_some_and(|t| t.starts_with("tla_")), "{body}");
    // Cleartext HTTP on the TLS port gets no HTTP answer.
    let plain = reqwest::Client::new().get(format!("http://127.0.0.1:{}/healthz", server.addr.port())).send().await;
    assert!(plain.is_err(), "plain HTTP must not be served on a TLS port: {plain:?}");
    // A client that does not trust the CA refuses the server.
    let untrusting = reqwest::Client::builder().use_rustls_tls().build().unwrap();
    assert!(untrusting.get(https(&server, "/healthz")).send().await.is_err());
}

#[tokio::test]
async fn grpc_is_served_over_tls_with_alpn_h2() {
    let ca = Ca::new("test CA");
    let (server, f, _files) = tls_server(&ca, None).await;
    let channel = grpc_channel(&server, &ca, None).await.unwrap();
    let mut request =
        tonic::Request::new(api::CreateTokenRequest { grant_type: "client_credentials".into(), ..Default::default() });
    let metadata = request.metadata_mut();
    metadata
        .insert("authorization", tokenledger::wire::encode_basic(&f.service.id, &f.service.secret).parse().unwrap());
    metadata.insert("transactionid", txid().parse().unwrap());
    metadata.insert("institutionid", INSTITUTION.parse().unwrap());
    let reply = TokenServiceClient::new(channel.clone()).create_token(request).await.unwrap().into_inner();
    assert!(reply.access_token.starts_with("tla_"));
    // Without a client CA configured, the admin credential alone is enough.
    let listed = AdminServiceClient::new(channel)
        .list_institutions(admin_request(&server, api::ListInstitutionsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.institutions.len(), 2);
}

#[tokio::test]
async fn admin_services_require_a_verified_client_certificate_when_a_client_ca_is_set() {
    let ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let (server, f, _files) = tls_server(&ca, Some(&client_ca)).await;

    // No client certificate: TokenService works, AdminService and KeyService are refused even
    // with the admin credential.
    let anonymous = grpc_channel(&server, &ca, None).await.unwrap();
    let mut request = tonic::Request::new(api::IntrospectTokenRequest { token: "tla_x".into() });
    request
        .metadata_mut()
        .insert("authorization", tokenledger::wire::encode_basic(&f.service.id, &f.service.secret).parse().unwrap());
    request.metadata_mut().insert("transactionid", txid().parse().unwrap());
    let answer = TokenServiceClient::new(anonymous.clone()).introspect_token(request).await.unwrap().into_inner();
    assert!(!answer.active);
    let refused = AdminServiceClient::new(anonymous.clone())
        .list_institutions(admin_request(&server, api::ListInstitutionsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("client certificate"), "{refused:?}");
    let refused = tokenledger::proto::key_service_client::KeyServiceClient::new(anonymous)
        .list_signing_keys(admin_request(&server, api::ListSigningKeysRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    // REST needs no client certificate.
    let health = rest_client(&ca).get(https(&server, "/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    // A certificate from the client CA: admin calls work (the admin credential is still needed).
    let operator = client_ca.client("operator");
    let trusted = grpc_channel(&server, &ca, Some(&operator)).await.unwrap();
    let listed = AdminServiceClient::new(trusted.clone())
        .list_institutions(admin_request(&server, api::ListInstitutionsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.institutions.len(), 2);
    let no_credential = AdminServiceClient::new(trusted)
        .list_institutions(tonic::Request::new(api::ListInstitutionsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(no_credential.code(), tonic::Code::Unauthenticated);

    // A certificate from another CA fails the handshake.
    let stranger = Ca::new("other CA").client("stranger");
    let result = match grpc_channel(&server, &ca, Some(&stranger)).await {
        Err(error) => Err(error.to_string()),
        Ok(channel) => AdminServiceClient::new(channel)
            .list_institutions(admin_request(&server, api::ListInstitutionsRequest::default()))
            .await
            .map_err(|s| s.to_string()),
    };
    assert!(result.is_err(), "a certificate of an unknown CA must not be accepted");
}

/// The certificate the server presents to a new connection.
async fn served_certificate(server: &TestServer, ca: &Ca) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject as _;
    roots.add(rustls_pki_types::CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn a_changed_certificate_is_served_without_a_restart() {
    let ca = Ca::new("test CA");
    let files = tempfile::tempdir().unwrap();
    let (cert, key, _) = write_files(files.path(), &ca.server("first"), None);
    let (cert_path, key_path) = (cert.clone(), key.clone());
    let server = TestServer::start_with(move |s| {
        s.tls_cert_file = Some(cert_path);
        s.tls_key_file = Some(key_path);
        s.tls_reload_interval_secs = Some(1);
    })
    .await;
    let first = served_certificate(&server, &ca).await;
    // An open connection survives the reload.
    let http = rest_client(&ca);
    assert_eq!(http.get(https(&server, "/healthz")).send().await.unwrap().status(), 200);

    // A broken file is refused and the old certificate stays.
    std::fs::write(&key, "not a key").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(served_certificate(&server, &ca).await, first);

    let second = ca.server("second");
    std::fs::write(&cert, &second.cert_pem).unwrap();
    std::fs::write(&key, &second.key_pem).unwrap();
    let mut served = first.clone();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        served = served_certificate(&server, &ca).await;
        if served != first {
            break;
        }
    }
    assert_ne!(served, first, "the new certificate was not picked up");
    assert_eq!(http.get(https(&server, "/healthz")).send().await.unwrap().status(), 200);
    let metrics = http.get(https(&server, "/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("tokenledger_tls_reloads_total{result=\"ok\"}"), "{metrics}");
    assert!(metrics.contains("tokenledger_tls_reloads_total{result=\"failed\"}"), "{metrics}");
}

#[test]
fn tls_settings_are_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path());
    settings.tls_cert_file = Some(dir.path().join("cert.pem"));
    assert!(tokenledger::config::Config::resolve(settings.clone()).is_err(), "a certificate needs its key");
    settings.tls_cert_file = None;
    settings.tls_client_ca_file = Some(dir.path().join("ca.pem"));
    assert!(tokenledger::config::Config::resolve(settings).is_err(), "client verification needs TLS");
    // Missing or malformed files are named in the error.
    let files = tokenledger::config::TlsFiles {
        cert: dir.path().join("missing.pem"),
        key: dir.path().join("missing.key"),
        client_ca: None,
        reload_interval: None,
    };
    let error = tokenledger::server::Tls::load(files).err().unwrap();
    assert!(error.contains("missing.pem"), "{error}");
}

#[tokio::test]
async fn the_cli_reaches_an_mtls_server_with_its_client_certificate() {
    let ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let (server, _f, files) = tls_server(&ca, Some(&client_ca)).await;
    let operator = client_ca.client("operator");
    let (ca_path, cert_path, key_path) =
        (files.path().join("ca.pem"), files.path().join("operator.pem"), files.path().join("operator.key"));
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(&cert_path, &operator.cert_pem).unwrap();
    std::fs::write(&key_path, &operator.key_pem).unwrap();
    let url = format!("https://localhost:{}", server.addr.port());
    let data = server.data_dir();
    let run = move |with_certificate: bool| {
        let mut command = std::process::Command::new(crate::binary::BIN);
        command.args(["institution", "list", "--json", "--server", &url]).arg("--data-dir").arg(&data);
        command.arg("--server-ca-file").arg(&ca_path);
        if with_certificate {
            command.arg("--client-cert-file").arg(&cert_path).arg("--client-key-file").arg(&key_path);
        }
        command.output().unwrap()
    };
    let (with, without) = tokio::task::spawn_blocking(move || (run(true), run(false))).await.unwrap();
    assert!(with.status.success(), "{}", String::from_utf8_lossy(&with.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&with.stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
    assert!(!without.status.success());
    let message = String::from_utf8_lossy(&without.stderr);
    assert!(message.contains("client certificate"), "{message}");
}
