//! `tokenledger serve`.

use std::path::PathBuf;

use crate::config::{Config, LogFormat, Settings};
use crate::ledger::progress::StartProgress;
use crate::server::{self, data_dir};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub settings: Settings,
    /// TOML config file (flags and TOKENLEDGER_* variables override it)
    #[arg(long, env = "TOKENLEDGER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Seed a demo institution, client and user into an empty ledger and print credentials
    #[arg(long)]
    pub demo: bool,
}

pub fn init_logging(config: &Config) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    // openraft logs every vote and heartbeat decision at INFO: quiet unless asked for by name.
    let directives = if config.log_level.contains("openraft") {
        config.log_level.clone()
    } else {
        format!("{},openraft=warn", config.log_level)
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = match config.log_format {
        LogFormat::Json => {
            // One JSON object per line; the fields of the enclosing spans (the request span's
            // `transactionId`) are top-level members of every line, next to the event's own.
            let mut layer = json_subscriber::JsonLayer::stderr();
            layer
                .with_timer("timestamp", tracing_subscriber::fmt::time::SystemTime)
                .with_level("level")
                .with_target("target")
                .with_flattened_event()
                .with_top_level_flattened_span_list();
            tracing_subscriber::registry().with(filter).with(layer).try_init().map_err(|e| e.to_string())
        }
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init()
            .map_err(|e| e.to_string()),
    };
}

pub async fn run(args: ServeArgs) -> Result<(), String> {
    let file = match &args.config {
        Some(path) => Settings::from_file(path).map_err(|e| e.to_string())?,
        None => Settings::default(),
    };
    let config = Config::resolve(args.settings.over(file)).map_err(|e| e.to_string())?;
    init_logging(&config);
    if args.demo && config.cluster.is_some() {
        return Err("--demo seeds a single node; a cluster is set up with `tokenledger cluster init` and the \
                    admin commands (docs/cluster.md)"
            .to_owned());
    }
    // Refuse bad TLS files before anything starts (the server loads them again to serve).
    if let Some(files) = &config.tls {
        server::tls::Tls::load(files.clone()).map_err(|e| format!("TLS: {e}"))?;
    }
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let metrics_listener = match &config.metrics_listen {
        Some(address) => Some(server::bind_metrics(address).await.map_err(|e| e.to_string())?),
        None => None,
    };
    // While the ledger opens, health, readiness and the replay's progress are answered
    // (`server::starting`); the API port only when it speaks plain HTTP.
    let progress = std::sync::Arc::new(StartProgress::default());
    let open = tokio::task::spawn_blocking({
        let (config, progress) = (config.clone(), progress.clone());
        move || data_dir::open_with_progress(&config, crate::clock::system(), progress)
    });
    let listeners = server::starting::StartListeners {
        api: config.tls.is_none().then_some(&listener),
        metrics: metrics_listener.as_ref(),
    };
    let opened = server::starting::serve_while(listeners, progress, open)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    for path in &opened.created {
        tracing::info!(path = %path.display(), "created");
    }
    tracing::info!(
        events = opened.report.events,
        head_seq = opened.report.head.seq,
        replay_ms = opened.report.elapsed_ms as u64,
        data_dir = %config.data_dir.display(),
        "ledger replayed"
    );
    if args.demo {
        let text = server::demo::seed(&opened.app).await.map_err(|e| format!("demo seeding failed: {e}"))?;
        println!("{text}");
    }
    // Install the signal handlers before announcing readiness.
    let signal = server::shutdown_signal();
    // A start from a snapshot verifies the rest of the chain in the background: a broken
    // chain stops the server as it would have refused to start.
    let snapshots = opened.app.snapshots.clone();
    let broken = async move {
        loop {
            let notified = snapshots.prefix_broken_notify.notified();
            if snapshots.prefix_broken.get().is_some() {
                return;
            }
            notified.await;
        }
    };
    let shutdown = async move {
        tokio::select! {
            _ = signal => {}
            _ = broken => {}
        }
    };
    let local = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(listen = %local, tls = config.tls.is_some(), "serving REST and gRPC");
    server::run_with(opened.app.clone(), listener, metrics_listener, shutdown).await.map_err(|e| e.to_string())?;
    if let Some(message) = opened.app.snapshots.prefix_broken.get() {
        return Err(message.clone());
    }
    drop(opened);
    Ok(())
}
