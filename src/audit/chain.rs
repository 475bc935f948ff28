//! Hash-chain verification for audit: the online `VerifyLedger`, the offline and online
//! checkpoint checks. The same walker checks stored rows (a redb snapshot) and envelopes
//! received over the network, so an auditor's CLI recomputes every hash itself.

use crate::domain::state::ChainHead;
use crate::ledger::codec::{self, ChainError};
use crate::ledger::reader::{ReadError, Snapshot};

/// Checks envelopes one by one, in order, from seq 1.
#[derive(Debug, Default)]
pub struct ChainWalker {
    /// The last envelope that passed.
    pub head: ChainHead,
}

impl ChainWalker {
    /// Checks the envelope stored under `key`: it decodes, is stored under its own seq, comes
    /// right after the previous one, links to its hash, and matches its own hash.
    pub fn push(&mut self, key: u64, bytes: &[u8]) -> Result<(), ChainError> {
        let opened = codec::open(key, bytes)?;
        let seq = opened.envelope.seq;
        let expected = self.head.seq + 1;
        if seq != expected {
            return Err(ChainError::Gap { seq, expected });
        }
        if opened.prev_hash != self.head.hash {
            return Err(ChainError::BrokenLink { seq });
        }
        self.head = ChainHead { seq, hash: opened.hash, recorded_at_ms: opened.envelope.recorded_at_ms };
        Ok(())
    }

    /// Takes an event whose envelope was withheld (it carries a credential digest): checks
    /// that it comes right after the previous one and links to its hash, and adopts the hash
    /// it claims, which the next envelope's `prev_hash` then confirms. Its content is not
    /// checked.
    pub fn push_withheld(
        &mut self,
        seq: u64,
        prev_hash: &[u8],
        hash: &[u8],
        recorded_at_ms: i64,
    ) -> Result<(), ChainError> {
        let expected = self.head.seq + 1;
        if seq != expected {
            return Err(ChainError::Gap { seq, expected });
        }
        let hash: [u8; 32] =
            hash.try_into().map_err(|_| ChainError::Undecodable { seq, reason: "hash is not 32 bytes".into() })?;
        if prev_hash != self.head.hash {
            return Err(ChainError::BrokenLink { seq });
        }
        self.head = ChainHead { seq, hash, recorded_at_ms };
        Ok(())
    }
}

/// The first event that cannot be trusted. For a dropped event that is the missing seq (the
/// error names the event found in its place).
pub fn first_bad_seq(error: &ChainError) -> u64 {
    match error {
        ChainError::Gap { expected, .. } => *expected,
        other => other.seq(),
    }
}

/// A claim to check while walking: "event `seq` has chain hash `hash`".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    pub seq: u64,
    pub hash: [u8; 32],
}

#[derive(Debug, Default)]
pub struct ChainReport {
    pub events_checked: u64,
    /// The last good event.
    pub head: ChainHead,
    pub problem: Option<ChainError>,
    /// Whether the claim held: `None` when there was none.
    pub claim_holds: Option<bool>,
}

impl ChainReport {
    pub fn ok(&self) -> bool {
        self.problem.is_none() && self.claim_holds != Some(false)
    }
}

/// Walks the stored chain from seq 1, up to `up_to` (inclusive) when given, stopping at the
/// first problem.
pub fn verify(snapshot: &Snapshot, up_to: Option<u64>, claim: Option<Claim>) -> Result<ChainReport, ReadError> {
    verify_unless(snapshot, up_to, claim, || false).map(|walk| walk.unwrap_or_default())
}

/// How often (in events) [`verify_unless`] asks whether to stop.
const STOP_CHECK_EVERY: u64 = 1 << 14;

/// [`verify`], asking `stop` every few thousand events; `None` when it said to stop before the
/// walk ended (nothing is known then: neither verified nor broken).
pub fn verify_unless(
    snapshot: &Snapshot,
    up_to: Option<u64>,
    claim: Option<Claim>,
    stop: impl Fn() -> bool,
) -> Result<Option<ChainReport>, ReadError> {
    let mut walker = ChainWalker::default();
    let mut report = ChainReport::default();
    let mut stopped = false;
    let scanned = snapshot.scan(0, |key, bytes| {
        if up_to.is_some_and(|last| key > last) {
            return false;
        }
        if key.saturating_sub(1).is_multiple_of(STOP_CHECK_EVERY) && stop() {
            stopped = true;
            return false;
        }
        match walker.push(key, bytes) {
            Ok(()) => {
                report.events_checked += 1;
                if let Some(claim) = claim.filter(|c| c.seq == walker.head.seq) {
                    report.claim_holds = Some(claim.hash == walker.head.hash);
                }
                true
            }
            Err(error) => {
                report.problem = Some(error);
                false
            }
        }
    });
    match scanned {
        Ok(()) => {}
        // A chunk that does not parse is a problem of the chain at the first event it loses.
        Err(ReadError::Damaged(error)) if report.problem.is_none() => report.problem = Some(error),
        Err(ReadError::Damaged(_)) => {}
        Err(other) => return Err(other),
    }
    if stopped {
        return Ok(None);
    }
    report.head = walker.head;
    if claim.is_some() && report.claim_holds.is_none() {
        // The chain ended (or broke) before the claimed event.
        report.claim_holds = Some(false);
    }
    Ok(Some(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The background verification after a start from a snapshot stops when the server does
    /// (`server::data_dir::verify_prefix`): a walk told to stop reports nothing, neither a
    /// verified nor a broken chain.
    #[test]
    fn a_walk_told_to_stop_reports_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, _) = crate::ledger::open(&dir.path().join("ledger.redb"), 1_000, |_| {}).unwrap();
        let snapshot = store.reader().snapshot().unwrap();
        assert!(verify_unless(&snapshot, None, None, || true).unwrap().is_none());
        let report = verify_unless(&snapshot, None, None, || false).unwrap().unwrap();
        assert!(report.ok());
        assert_eq!(report.events_checked, 1);
        assert_eq!(verify(&snapshot, None, None).unwrap().events_checked, 1);
    }
}
