//! `tokenledger keys rotate-signing|list`: the ID-token signing keys of a running server,
//! through KeyService with the admin credential.

use super::RemoteArgs;
use super::remote::{connect, describe};
use crate::proto::key_service_client::KeyServiceClient;
use crate::proto::{ListSigningKeysRequest, RotateSigningKeyRequest, SigningKey};

#[derive(clap::Args, Debug)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum KeysCommand {
    /// Generate a new ID-token signing key and make it the one that signs; the previous key
    /// stays published until the ID tokens it signed have expired.
    RotateSigning(KeysOptions),
    /// List the signing keys the ledger knows, newest first.
    List(KeysOptions),
}

#[derive(clap::Args, Debug)]
pub struct KeysOptions {
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

fn key_json(key: &SigningKey) -> serde_json::Value {
    serde_json::json!({
        "key_id": key.key_id,
        "algorithm": key.algorithm,
        "active": key.active,
        "published": key.published,
        "activated_seq": key.activated_seq,
        "retired_at_ms": key.retired_at_ms,
        "id_tokens_valid_until_ms": key.id_tokens_valid_until_ms,
    })
}

fn key_line(key: &SigningKey) -> String {
    let state = match (key.active, key.published) {
        (true, _) => "active",
        (false, true) => "retired, published",
        (false, false) => "retired",
    };
    format!("{}  {}  {state}  activated at seq {}", key.key_id, key.algorithm, key.activated_seq)
}

pub async fn run(args: KeysArgs) -> Result<(), String> {
    let options = match &args.command {
        KeysCommand::RotateSigning(options) | KeysCommand::List(options) => options,
    };
    let (channel, auth) = connect(&options.remote).await?;
    let mut client = KeyServiceClient::with_interceptor(channel, auth);
    match &args.command {
        KeysCommand::RotateSigning(_) => {
            let rotated =
                client.rotate_signing_key(RotateSigningKeyRequest {}).await.map_err(|s| describe(&s))?.into_inner();
            let key = rotated.key.ok_or("the server returned no key")?;
            if options.json {
                println!("{}", serde_json::json!({"key": key_json(&key), "previous_key_id": rotated.previous_key_id}));
            } else {
                println!("new signing key {} (replaces {})", key.key_id, rotated.previous_key_id);
            }
        }
        KeysCommand::List(_) => {
            let listed = client.list_signing_keys(ListSigningKeysRequest {}).await.map_err(|s| describe(&s))?;
            let keys = listed.into_inner().keys;
            if options.json {
                println!("{}", serde_json::Value::Array(keys.iter().map(key_json).collect()));
            } else {
                for key in &keys {
                    println!("{}", key_line(key));
                }
            }
        }
    }
    Ok(())
}
