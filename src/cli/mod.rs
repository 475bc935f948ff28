//! The command line: `serve`, and commands that talk to a running server with the admin
//! credential (`import`, ...), plus the offline `verify`.

pub(crate) mod audit;
pub(crate) mod cluster;
pub(crate) mod directory;
pub(crate) mod import;
pub(crate) mod keys;
pub(crate) mod remote;
pub(crate) mod revoke;
pub(crate) mod serve;
pub(crate) mod verify;

pub use import::ImportFile;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "tokenledger", version, about = "OAuth 2.0 token service with a hash-chained event ledger")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start-up, so the size of its largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server (REST and gRPC on one port).
    Serve(serve::ServeArgs),
    /// Idempotent bulk setup from a JSON file (all or nothing).
    Import(import::ImportArgs),
    /// Offline check of a stopped ledger: hash chain and full replay.
    Verify(verify::VerifyArgs),
    /// Institutions: create, list, show.
    Institution(directory::InstitutionArgs),
    /// Clients: create, list, show, rotate-secret, disable, enable.
    Client(directory::ClientArgs),
    /// Users: create, list, show, set-password, lock, unlock, disable, enable, update.
    User(directory::UserArgs),
    /// ID-token signing keys of a running server: rotate-signing, list.
    Keys(keys::KeysArgs),
    /// Audit and incident response: events, token history, status at a time, verification,
    /// signed checkpoints, blast radius.
    Audit(audit::AuditArgs),
    /// Bulk revocation: every token of a client, user, institution or family, or one token.
    Revoke(revoke::RevokeArgs),
    /// Cluster mode: init, status, add-learner, promote, remove, transfer-leader.
    Cluster(cluster::ClusterArgs),
}

/// How client commands reach the server and find the admin credential.
#[derive(clap::Args, Debug, Clone)]
pub struct RemoteArgs {
    /// Server address
    #[arg(long, global = true, env = "TOKENLEDGER_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Data directory holding admin.token
    #[arg(long, global = true, env = "TOKENLEDGER_DATA_DIR", default_value = "./tokenledger-data")]
    pub data_dir: PathBuf,
    /// Admin credential file (default: <data-dir>/admin.token)
    #[arg(long, global = true, env = "TOKENLEDGER_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// CA certificate (PEM) that signed the server's certificate; needed for an https:// --server
    #[arg(long, global = true, env = "TOKENLEDGER_SERVER_CA_FILE")]
    pub server_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) to present, for servers that verify client certificates
    #[arg(long, global = true, env = "TOKENLEDGER_CLIENT_CERT_FILE", requires = "client_key_file")]
    pub client_cert_file: Option<PathBuf>,
    /// Private key (PEM) of --client-cert-file
    #[arg(long, global = true, env = "TOKENLEDGER_CLIENT_KEY_FILE", requires = "client_cert_file")]
    pub client_key_file: Option<PathBuf>,
}

/// Runs the parsed command; `Err` is printed as one line and exits non-zero.
pub async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Import(args) => import::run(args).await,
        Command::Verify(args) => verify::run(args),
        Command::Institution(args) => directory::run_institution(args).await,
        Command::Client(args) => directory::run_client(args).await,
        Command::User(args) => directory::run_user(args).await,
        Command::Keys(args) => keys::run(args).await,
        Command::Audit(args) => audit::run(args).await,
        Command::Revoke(args) => revoke::run(args).await,
        Command::Cluster(args) => cluster::run(args).await,
    }
}
