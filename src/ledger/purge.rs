//! The token tables' purge, on a thread of its own: every 100 ms it forgets the expired tokens
//! and families of a few shards and the retry answers older than the window, holding one
//! shard's lock at a time and never the state's lock, so neither readers nor the writer wait
//! for it (docs/tables.md, "Purge"). Sign-in records and authorization codes are few and are
//! still purged by the writer (`State::purge_expired`).

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::clock::Clock;
use crate::domain::tables::{PurgeBudget, TokenTables};

/// How often a purge step runs. With the default budget (4 of 1024 token shards per step) a
/// whole cycle takes about 26 s, so nothing expired stays much longer than it did with the
/// purge every 30 s that this replaces.
pub const PURGE_EVERY: Duration = Duration::from_millis(100);

/// Starts the purge thread for `tables`; it stops by itself once the tables are dropped.
pub fn spawn(tables: &Arc<TokenTables>, clock: Arc<dyn Clock>) -> std::io::Result<()> {
    let tables: Weak<TokenTables> = Arc::downgrade(tables);
    std::thread::Builder::new().name("tables-purge".into()).spawn(move || {
        loop {
            std::thread::sleep(PURGE_EVERY);
            let Some(tables) = tables.upgrade() else { return };
            tables.purge_step(clock.now_ms(), PurgeBudget::default());
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::clock::ManualClock;
    use crate::domain::ids::TokenId;
    use crate::domain::scope::ScopeList;
    use crate::domain::tables::{Issuance, NewToken, TablesConfig};
    use crate::proto::ledger::GrantType;

    /// The thread forgets what expired, without being asked, and leaves what has not.
    #[test]
    fn the_purge_thread_forgets_expired_tokens_by_itself() {
        let tables = Arc::new(TokenTables::new(TablesConfig::small()));
        let (client, institution): (Arc<str>, Arc<str>) = ("c".into(), "01001".into());
        let scopes: ScopeList = vec![Box::from("accounts")].into();
        for (seq, expires_at_ms) in [(1, 2_000), (2, 9_000)] {
            let issuance = Issuance {
                seq,
                recorded_at_ms: 1_000,
                decided_at_ms: 1_000,
                grant_type: GrantType::ClientCredentials,
                client_id: &client,
                institution_id: &institution,
                user: None,
                family: None,
                access: Some(NewToken { id: TokenId([seq as u8; 16]), expires_at_ms, scopes: &scopes }),
                refresh: None,
                rotated_from: None,
                request: None,
            };
            tables.issue(&issuance).unwrap();
        }
        spawn(&tables, ManualClock::at(5_000)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while tables.token(&TokenId([1; 16])).is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(tables.token(&TokenId([1; 16])).is_none(), "the expired token was purged");
        assert!(tables.token(&TokenId([2; 16])).is_some(), "the live token stays");
    }
}
