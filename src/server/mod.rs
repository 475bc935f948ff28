//! Running the service: one listener for REST (HTTP/1.1) and gRPC (HTTP/2, h2c), routed by
//! `content-type: application/grpc`, with graceful shutdown.

pub(crate) mod cluster;
pub mod data_dir;
pub(crate) mod demo;
pub(crate) mod forward;
pub(crate) mod front;
pub(crate) mod limits;
pub(crate) mod listener;
pub(crate) mod signing;
pub(crate) mod snapshots;
pub mod starting;
pub(crate) mod tls;

pub use signing::SIGNING_KEYS_FILE;
pub use tls::Tls;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic_health::ServingStatus;

use crate::api::admin::grpc::AdminGrpc;
use crate::api::app::App;
use crate::api::audit::grpc::AuditGrpc;
use crate::api::cluster::grpc::ClusterGrpc;
use crate::api::keys::grpc::KeyGrpc;
use crate::api::lookup::grpc::InstitutionUserGrpc;
use crate::api::token::grpc::TokenGrpc;
use crate::audit::checkpoint::{CHECKPOINT_KEY_FILE, CheckpointKey};
use crate::proto::admin_service_server::AdminServiceServer;
use crate::proto::audit_service_server::AuditServiceServer;
use crate::proto::cluster_service_server::ClusterServiceServer;
use crate::proto::institution_user_service_server::InstitutionUserServiceServer;
use crate::proto::key_service_server::KeyServiceServer;
use crate::proto::token_service_server::TokenServiceServer;

/// Largest gRPC message we decode (tonic's default of 4 MiB is far above any real request).
pub const GRPC_MESSAGE_BYTES_MAX: usize = 256 * 1024;
/// Largest `AdminService/Import` message: bulk set-up. Only calls that carry the admin
/// credential get this far (the front door checks it before the body is read).
pub const IMPORT_MESSAGE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// The gRPC services we serve, for health status.
const SERVICE_NAMES: [&str; 6] = [
    "tokenledger.v1.TokenService",
    "tokenledger.v1.ClusterService",
    "tokenledger.v1.AdminService",
    "tokenledger.v1.InstitutionUserService",
    "tokenledger.v1.KeyService",
    "tokenledger.v1.AuditService",
];

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting, drains
/// in-flight requests (bounded by `shutdown_grace_secs`) and flushes the ledger writer.
pub async fn run(app: Arc<App>, listener: TcpListener, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
    run_with(app, listener, None, shutdown).await
}

/// [`run`], serving `/metrics` on `metrics_listener` (bound before start-up, so that it showed
/// the start's progress) instead of binding `metrics_listen` itself.
pub async fn run_with(
    app: Arc<App>,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    app.start.finish();
    let snapshots = snapshots::Snapshots::new(&app);
    snapshots.spawn()?;
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    for name in SERVICE_NAMES {
        health_reporter.set_service_status(name, ServingStatus::Serving).await;
    }
    health_reporter.set_service_status("", ServingStatus::Serving).await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(std::io::Error::other)?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(std::io::Error::other)?;
    // Live event streams end when draining starts, so they do not hold shutdown up.
    let (draining, draining_watch) = tokio::sync::watch::channel(false);
    let (checkpoint_key, _) =
        CheckpointKey::load_or_create(&app.config.data_dir.join(CHECKPOINT_KEY_FILE), app.clock.now_ms())
            .map_err(std::io::Error::other)?;
    let audit = AuditGrpc::new(app.clone(), checkpoint_key, draining_watch);
    let grpc = tonic::service::Routes::new(
        TokenServiceServer::new(TokenGrpc { app: app.clone() }).max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX),
    )
    .add_service(
        AdminServiceServer::new(AdminGrpc { app: app.clone() }).max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX),
    )
    .add_service(
        InstitutionUserServiceServer::new(InstitutionUserGrpc { app: app.clone() })
            .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX),
    )
    .add_service(KeyServiceServer::new(KeyGrpc { app: app.clone() }).max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX))
    .add_service(AuditServiceServer::new(audit).max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX))
    .add_service(
        ClusterServiceServer::new(ClusterGrpc { app: app.clone() }).max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX),
    )
    .add_service(health_service.max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX))
    .add_service(reflection_v1.max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX))
    .add_service(reflection_v1alpha.max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX))
    .prepare()
    .into_axum_router();
    // The same AdminService with the import limit; the front door routes only Import here.
    let grpc_import = tonic::service::Routes::new(
        AdminServiceServer::new(AdminGrpc { app: app.clone() }).max_decoding_message_size(IMPORT_MESSAGE_BYTES_MAX),
    )
    .prepare()
    .into_axum_router();
    let rest = crate::api::router::router(app.clone());
    let tls = match &app.config.tls {
        Some(files) => Some(Arc::new(self::tls::Tls::load(files.clone()).map_err(std::io::Error::other)?)),
        None => None,
    };
    let client_certificates_required = tls.as_ref().is_some_and(|t| t.verifies_clients());
    let metrics_server = match (&app.config.metrics_listen, metrics_listener) {
        (_, Some(bound)) => Some(serve_metrics(app.clone(), bound, draining.subscribe())?),
        (Some(address), None) => Some(serve_metrics(app.clone(), bind_metrics(address).await?, draining.subscribe())?),
        (None, None) => None,
    };
    let front = Arc::new(front::Front::new(
        app.clone(),
        front::Routers { grpc, grpc_import, rest },
        client_certificates_required,
    ));
    if let Some(node) = &app.cluster {
        node.forwarder.set(Arc::new(forward::FrontForwarder(front.clone())));
    }
    let reloader = tls.clone().map(|tls| tls.spawn_reloader(app.metrics.clone()));
    let mut shutdown = std::pin::pin!(shutdown);
    let housekeeping_app = app.clone();
    let housekeeping_health = health_reporter.clone();
    let purge = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        let mut upkeep = tokio::time::interval(Duration::from_secs(5));
        let mut readiness = tokio::time::interval(Duration::from_secs(1));
        let mut reported_failure = false;
        let mut reported_serving = true;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    housekeeping_app.ledger.request_purge();
                    housekeeping_app.rate_limits.forget_idle();
                    housekeeping_app.sign_in_failures.forget_full();
                    let counts = crate::api::dummy::DummyDigests::sample(&housekeeping_app.state.read());
                    housekeeping_app.dummy_passwords.refresh(counts).await;
                }
                _ = upkeep.tick() => housekeeping_app.metrics.upkeep(),
                // A ledger that failed (I/O error, full disk) stays failed until a restart:
                // gRPC health says so too, like /readyz. A cluster node is NOT_SERVING while it
                // knows no leader (writes would fail closed), SERVING again once one is known.
                _ = readiness.tick(), if !reported_failure => {
                    let serving = if housekeeping_app.cluster.is_some() {
                        housekeeping_app.readiness().writes
                    } else {
                        housekeeping_app.ledger.is_writable()
                    };
                    if serving != reported_serving {
                        reported_serving = serving;
                        let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
                        for name in SERVICE_NAMES.into_iter().chain([""]) {
                            housekeeping_health.set_service_status(name, status).await;
                        }
                    }
                    reported_failure = !housekeeping_app.ledger.is_writable() && housekeeping_app.cluster.is_none();
                }
            }
        }
    });
    let connections = listener::accept_until(&listener, front, tls, &mut shutdown).await;
    tracing::info!("shutting down: draining in-flight requests");
    app.draining.store(true, Ordering::Release);
    draining.send_replace(true);
    for name in SERVICE_NAMES {
        health_reporter.set_service_status(name, ServingStatus::NotServing).await;
    }
    health_reporter.set_service_status("", ServingStatus::NotServing).await;
    drop(listener);
    purge.abort();
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    if !connections.close(Duration::from_secs(app.config.shutdown_grace_secs)).await {
        tracing::warn!(grace_secs = app.config.shutdown_grace_secs, "in-flight requests did not finish in time");
    }
    if let Some(metrics_server) = metrics_server {
        let _ = tokio::time::timeout(Duration::from_secs(1), metrics_server).await;
    }
    match &app.cluster {
        // Before the writer stops (the chain hashes the header names are read from the ledger,
        // which the writer closes): no request is in flight now.
        None => {
            let _ = tokio::task::spawn_blocking(move || snapshots.finish()).await;
            app.ledger.stop().await;
        }
        // A cluster node applies what its leader sends until Raft stops (a leader too, once it
        // has handed over): the last snapshot comes after, so it covers everything applied
        // (the ledger stays open: the state machine owns it).
        Some(node) => {
            snapshots.stop_background();
            app.ledger.stop().await;
            cluster::leave(node).await;
            let _ = tokio::task::spawn_blocking(move || snapshots.finish()).await;
        }
    }
    tracing::info!("ledger closed");
    Ok(())
}

/// Binds `metrics_listen`.
pub async fn bind_metrics(address: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("metrics_listen {address}: {e}")))
}

/// Serves `GET /metrics` on `listener` (and nothing else) until draining starts. The metrics
/// then leave the API port, which answers 404 for them.
fn serve_metrics(
    app: Arc<App>,
    listener: TcpListener,
    mut draining: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let bound = listener.local_addr()?;
    let _ = app.metrics_addr.set(bound);
    tracing::info!(metrics_listen = %bound, "serving /metrics on its own listener");
    let router = crate::api::openapi::metrics_router(app);
    Ok(tokio::spawn(async move {
        let stop = async move {
            let _ = draining.wait_for(|d| *d).await;
        };
        if let Err(error) = axum::serve(listener, router).with_graceful_shutdown(stop).await {
            tracing::warn!(%error, "the metrics listener failed");
        }
    }))
}

/// Completes on SIGINT or SIGTERM. The handlers are installed when this is called (not when
/// the future is first polled), so call it before announcing that the server is up.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let terminate = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        async move {
            match (terminate, interrupt) {
                (Ok(mut terminate), Ok(mut interrupt)) => {
                    tokio::select! {
                        _ = terminate.recv() => {}
                        _ = interrupt.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
