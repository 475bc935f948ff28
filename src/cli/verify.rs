//! `tokenledger verify --data-dir DIR`: checks every event and link of a stopped ledger's hash
//! chain and replays it, without starting a server.

use std::path::PathBuf;

use crate::clock::{Clock as _, SystemClock};
use crate::domain::ids::hex;
use crate::ledger::{self, ReplayError};
use crate::server::data_dir;

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// Data directory of the stopped server
    #[arg(long, env = "TOKENLEDGER_DATA_DIR", default_value = "./tokenledger-data")]
    pub data_dir: PathBuf,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
    /// Also load the projection snapshot, replay the events after it, and check that the
    /// state equals the full replay's (fails when there is no usable snapshot); says which
    /// ledger event recorded the file, if any
    #[arg(long)]
    pub compare_snapshot: bool,
}

pub fn run(args: VerifyArgs) -> Result<(), String> {
    let path = args.data_dir.join(data_dir::LEDGER_FILE);
    if !path.exists() {
        return Err(format!("no ledger at {}", path.display()));
    }
    let _lock = data_dir::lock(&args.data_dir).map_err(|e| format!("{e}; stop the server before verifying offline"))?;
    let ledger = ledger::open_read_only(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let (mut state, report) = ledger
        .replay(|tick| {
            if tick.worth_logging() {
                eprintln!("verified {} of {} events", tick.events, tick.last_seq);
            }
        })
        .map_err(|e| match &e {
            ReplayError::Chain(chain) => {
                format!("ledger verification FAILED at event {}: {e}", crate::audit::chain::first_bad_seq(chain))
            }
            ReplayError::Store(_) | ReplayError::Read(_) | ReplayError::Reader => {
                format!("ledger verification FAILED: {e}")
            }
        })?;
    let now_ms = SystemClock.now_ms();
    let compared = if args.compare_snapshot {
        let (mut from_snapshot, started, tail) = ledger
            .replay_from_snapshot(&args.data_dir)
            .map_err(|e| format!("no usable projection snapshot to compare: {e}"))?;
        // Both purged at one time (what expired changes neither the active count below nor a
        // verdict); no copy of the full replay's tables.
        state.purge_all_expired(now_ms);
        from_snapshot.purge_all_expired(now_ms);
        if from_snapshot != state {
            return Err(format!(
                "the projection snapshot (seq {}) plus its tail of {} events differs from the full replay",
                started.header.ledger_seq, tail.events
            ));
        }
        Some((started, tail.events))
    } else {
        None
    };
    let mut active = 0usize;
    state.for_each_token(|_, t| active += usize::from(state.is_active(t, now_ms)));
    if args.json {
        let out = serde_json::json!({
            "ok": true,
            "events": report.events,
            "head_seq": report.head.seq,
            "head_hash": hex(&report.head.hash),
            "institutions": state.institutions.len(),
            "clients": state.clients.len(),
            "users": state.users.len(),
            "active_tokens": active,
            "elapsed_ms": report.elapsed_ms,
            "snapshot": compared.as_ref().map(|(started, tail)| serde_json::json!({
                "seq": started.header.ledger_seq,
                "replay_from_seq": started.header.replay_from_seq,
                "tail_events": tail,
                "equals_full_replay": true,
                "body_sha256": hex(&started.header.body_sha256),
                "recorded": started.recorded_at_seq.is_some(),
                "recorded_seq": started.recorded_at_seq,
            })),
        });
        println!("{out}");
    } else {
        println!(
            "ledger OK: {} events, head seq {} hash {}; {} institutions, {} clients, {} users, {} active tokens ({} ms)",
            report.events,
            report.head.seq,
            hex(&report.head.hash),
            state.institutions.len(),
            state.clients.len(),
            state.users.len(),
            active,
            report.elapsed_ms
        );
        if let Some((started, tail)) = &compared {
            println!(
                "projection snapshot OK: seq {} plus its tail of {} events equals the full replay",
                started.header.ledger_seq, tail
            );
            match started.recorded_at_seq {
                Some(seq) => println!(
                    "projection snapshot recorded: event {seq} records this file (covered seq, chain hash and body SHA-256 {} match)",
                    hex(&started.header.body_sha256)
                ),
                None => println!(
                    "projection snapshot NOT recorded: no event of this ledger records this file (body SHA-256 {})",
                    hex(&started.header.body_sha256)
                ),
            }
        }
    }
    Ok(())
}
