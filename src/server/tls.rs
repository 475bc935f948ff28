//! TLS on the shared port (rustls with the ring provider): REST and gRPC alike, ALPN `h2` and
//! `http/1.1`. With `tls_client_ca_file`, clients may present a certificate, which is verified
//! against that CA at the handshake (optional at this point, so REST and TokenService callers
//! need none); the admin-credential gRPC services then require a verified one (see
//! [`is_admin_service`]). The files are reloaded on SIGHUP and when their
//! modification time changes, without dropping open connections; a reload that fails keeps
//! the previous configuration.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use rustls::RootCertStore;
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;
use crate::metrics::Metrics;

/// gRPC services that take the admin credential; with a client CA configured they also need a
/// verified client certificate. Matched as path prefixes, so services added later under these
/// names are covered too.
pub const ADMIN_SERVICES: [&str; 4] = [
    "/tokenledger.v1.AdminService/",
    "/tokenledger.v1.AuditService/",
    "/tokenledger.v1.KeyService/",
    "/tokenledger.v1.ClusterService/",
];

/// True when a request to `path` needs a verified client certificate (given a client CA).
pub fn is_admin_service(path: &str) -> bool {
    ADMIN_SERVICES.iter().any(|prefix| path.starts_with(prefix))
}

/// The live TLS configuration of a listener.
pub struct Tls {
    files: TlsFiles,
    /// Read once per handshake; replaced whole on reload.
    current: RwLock<Arc<ServerConfig>>,
    /// Modification times of the files behind `current`.
    stamps: Mutex<Vec<Option<SystemTime>>>,
}

impl Tls {
    /// Loads the files; an error names the file and what is wrong with it.
    pub fn load(files: TlsFiles) -> Result<Tls, String> {
        let config = server_config(&files)?;
        let stamps = stamps(&files);
        Ok(Tls { files, current: RwLock::new(Arc::new(config)), stamps: Mutex::new(stamps) })
    }

    /// An acceptor with the current configuration.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().clone())
    }

    /// Whether admin and audit services require a client certificate.
    pub fn verifies_clients(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Loads the files again; on failure the current configuration stays.
    pub fn reload(&self) -> Result<(), String> {
        let stamps = stamps(&self.files);
        let config = server_config(&self.files)?;
        *self.current.write() = Arc::new(config);
        *self.stamps.lock() = stamps;
        Ok(())
    }

    /// Reloads when a file's modification time changed since the last load.
    fn reload_if_changed(&self) -> Option<Result<(), String>> {
        if *self.stamps.lock() == stamps(&self.files) {
            return None;
        }
        Some(self.reload())
    }

    /// Reloads on SIGHUP and, when configured, when the files change. Ends with the task.
    pub fn spawn_reloader(self: Arc<Self>, metrics: Arc<Metrics>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut hangup = hangup_signal();
            let interval = self.files.reload_interval.unwrap_or(Duration::from_secs(3600));
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                let outcome = tokio::select! {
                    _ = tick.tick(), if self.files.reload_interval.is_some() => self.reload_if_changed(),
                    Some(()) = next_hangup(&mut hangup) => Some(self.reload()),
                    else => break,
                };
                match outcome {
                    None => {}
                    Some(Ok(())) => {
                        metrics.tls_reload(true);
                        tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                    }
                    Some(Err(error)) => {
                        metrics.tls_reload(false);
                        tracing::error!(%error, "TLS reload failed; keeping the previous certificate");
                    }
                }
            }
        })
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

fn hangup_signal() -> Hangup {
    #[cfg(unix)]
    {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The next SIGHUP; pending forever where there is none.
async fn next_hangup(hangup: &mut Hangup) -> Option<()> {
    #[cfg(unix)]
    if let Some(signal) = hangup {
        return signal.recv().await;
    }
    let _ = hangup;
    std::future::pending().await
}

fn stamps(files: &TlsFiles) -> Vec<Option<SystemTime>> {
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    [Some(&files.cert), Some(&files.key), files.client_ca.as_ref()]
        .into_iter()
        .flatten()
        .map(|path| modified(path))
        .collect()
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bad = |e: rustls_pki_types::pem::Error| format!("{}: {e}", path.display());
    let certs = CertificateDer::pem_file_iter(path).map_err(bad)?.collect::<Result<Vec<_>, _>>().map_err(bad)?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate found", path.display()));
    }
    Ok(certs)
}

/// The rustls configuration for `files`: TLS 1.2 and 1.3 with the ring provider, ALPN h2 then
/// http/1.1, and optional client authentication against the client CA.
fn server_config(files: &TlsFiles) -> Result<ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| format!("{}: {e}", files.key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(path)? {
                roots.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("{} and {}: {e}", files.cert.display(), files.key.display()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
