//! Event queries over a read snapshot: filters answered from the index (one range scan of the
//! most selective filter, point lookups for the others), time ranges by binary search over
//! the dense, time-ordered seqs. Nothing here scans the whole log unless asked for every
//! event.

use prost::Message as _;

use crate::domain::ids::{FamilyId, TokenId};
use crate::domain::state::cutoff::CutoffScope;
use crate::domain::state::user_key;
use crate::ledger::codec::{self, ChainError, Opened};
use crate::ledger::index::{IndexKind, cutoff_value, kind_is_indexed, kind_number};
use crate::ledger::reader::{ReadError, Snapshot};
use crate::proto::ledger::Envelope;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A stored event failed its own check (it was changed after start-up).
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// A committed event is not in the file any more (it was deleted after start-up).
    #[error("event {0} is missing from the ledger: it was dropped")]
    Missing(u64),
}

/// Which events to deliver; every given filter must match.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    pub token: Option<TokenId>,
    pub family: Option<FamilyId>,
    pub client: Option<String>,
    /// (institution id, login id).
    pub user: Option<(String, String)>,
    pub institution: Option<String>,
    /// Event kind numbers; any of them.
    pub kinds: Vec<u8>,
}

/// Events read for delivery, and where the next page starts.
pub struct Page {
    pub events: Vec<Opened>,
    pub next_seq: u64,
    /// Why the page stops early: the event at `next_seq` cannot be trusted. The events
    /// before it are good and are delivered first.
    pub problem: Option<QueryError>,
}

impl EventFilter {
    /// The index terms, most selective first.
    fn terms(&self) -> Vec<(IndexKind, Vec<u8>)> {
        let mut terms = Vec::new();
        if let Some(token) = &self.token {
            terms.push((IndexKind::Token, token.0.to_vec()));
        }
        if let Some(family) = &self.family {
            terms.push((IndexKind::Family, family.0.to_vec()));
        }
        if let Some((institution, login)) = &self.user {
            terms.push((IndexKind::User, user_key(institution, login).into_bytes()));
        }
        if let Some(client) = &self.client {
            terms.push((IndexKind::Client, client.as_bytes().to_vec()));
        }
        if let Some(institution) = &self.institution {
            terms.push((IndexKind::Institution, institution.as_bytes().to_vec()));
        }
        terms
    }

    /// Reads the matching events with seq in `from..=to`, examining at most `max` candidates,
    /// so a page costs a bounded amount of work even when few candidates match.
    pub fn read_page(&self, snapshot: &Snapshot, from: u64, to: u64, max: usize) -> Result<Page, QueryError> {
        if from > to {
            return Ok(Page { events: Vec::new(), next_seq: from, problem: None });
        }
        let max = max.max(1);
        let terms = self.terms();
        let (candidates, next_seq) = if let Some(((kind, value), others)) = terms.split_first() {
            let seqs = snapshot.index_seqs(*kind, value, from..=to, max)?;
            let next_seq = next_after(&seqs, max, to);
            let mut matching = Vec::with_capacity(seqs.len());
            for seq in seqs {
                if matches_all(snapshot, others, seq)? {
                    matching.push(seq);
                }
            }
            (matching, next_seq)
        } else if !self.kinds.is_empty() {
            // The union of several kinds' entries, up to the point every kind was read to.
            let mut seqs = Vec::new();
            let mut bound = to;
            let (indexed, unindexed): (Vec<u8>, Vec<u8>) = self.kinds.iter().partition(|k| kind_is_indexed(**k));
            for kind in &indexed {
                let found = snapshot.index_seqs(IndexKind::EventKind, &[*kind], from..=to, max)?;
                if found.len() >= max {
                    bound = bound.min(found.last().copied().unwrap_or(to));
                }
                seqs.extend(found);
            }
            if !unindexed.is_empty() {
                // Kinds without index entries (TokensIssued, most events): read the events.
                let (found, stopped_at) = snapshot.kind_scan(&unindexed, from..=to, max)?;
                if let Some(last) = stopped_at {
                    bound = bound.min(last);
                }
                seqs.extend(found);
            }
            seqs.retain(|s| *s <= bound);
            seqs.sort_unstable();
            seqs.dedup();
            (seqs, bound + 1)
        } else {
            // Every seq up to the committed head exists: a hole means a dropped event.
            let rows = snapshot.envelopes(from..=to, max)?;
            let complete = rows.len() >= max;
            let mut events = Vec::with_capacity(rows.len());
            for (expected, (seq, bytes)) in (from..).zip(rows) {
                if seq != expected {
                    return Ok(stopped(events, expected, QueryError::Missing(expected)));
                }
                match codec::open(seq, &bytes) {
                    Ok(opened) => events.push(opened),
                    Err(error) => return Ok(stopped(events, seq, error.into())),
                }
            }
            let next_seq = from + events.len() as u64;
            if !complete && next_seq <= to {
                return Ok(stopped(events, next_seq, QueryError::Missing(next_seq)));
            }
            return Ok(Page { events, next_seq, problem: None });
        };
        let mut events = Vec::with_capacity(candidates.len());
        for seq in candidates {
            let Some(bytes) = snapshot.envelope(seq)? else {
                return Ok(stopped(events, seq, QueryError::Missing(seq)));
            };
            let opened = match codec::open(seq, &bytes) {
                Ok(opened) => opened,
                Err(error) => return Ok(stopped(events, seq, error.into())),
            };
            if self.kinds.is_empty() || self.kinds.contains(&kind_number(&opened.event)) {
                events.push(opened);
            }
        }
        Ok(Page { events, next_seq, problem: None })
    }
}

fn stopped(events: Vec<Opened>, at: u64, problem: QueryError) -> Page {
    Page { events, next_seq: at, problem: Some(problem) }
}

fn matches_all(snapshot: &Snapshot, terms: &[(IndexKind, Vec<u8>)], seq: u64) -> Result<bool, ReadError> {
    for (kind, value) in terms {
        if !snapshot.index_contains(*kind, value, seq)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Where to continue after reading `seqs` (at most `max`) from a range ending at `to`.
fn next_after(seqs: &[u64], max: usize, to: u64) -> u64 {
    match seqs.last() {
        Some(last) if seqs.len() >= max => last + 1,
        _ => to + 1,
    }
}

/// The commit time of event `seq`, without checking it (for searches).
fn recorded_at(snapshot: &Snapshot, seq: u64) -> Result<Option<i64>, ReadError> {
    Ok(snapshot.envelope(seq)?.and_then(|bytes| Envelope::decode(bytes.as_slice()).ok()).map(|e| e.recorded_at_ms))
}

/// The first seq in `from..=to` recorded at or after `at_ms`, or `to + 1`. Seqs are dense and
/// their times never decrease, so this is a binary search of O(log n) reads.
pub fn first_seq_at_or_after(snapshot: &Snapshot, at_ms: i64, from: u64, to: u64) -> Result<u64, ReadError> {
    let (mut low, mut high) = (from, to.saturating_add(1));
    while low < high {
        let middle = low + (high - low) / 2;
        match recorded_at(snapshot, middle)? {
            Some(at) if at >= at_ms => high = middle,
            _ => low = middle + 1,
        }
    }
    Ok(low)
}

/// Reads and checks the events `seqs` (sorted), which the index says exist.
pub fn open_all(snapshot: &Snapshot, seqs: &[u64]) -> Result<Vec<Opened>, QueryError> {
    let mut events = Vec::with_capacity(seqs.len());
    for seq in seqs {
        let bytes = snapshot.envelope(*seq)?.ok_or(QueryError::Missing(*seq))?;
        events.push(codec::open(*seq, &bytes)?);
    }
    Ok(events)
}

/// An index entry a caller of the writer can ask about: which event recorded its command.
pub enum Entry {
    Token(TokenId),
    Client(String),
    Cutoff(CutoffScope),
}

/// The seq of the newest event with index entry `entry`, if it was recorded under
/// `transaction_id` (it is, unless a caller reused its transaction id); else 0.
pub fn recorded_seq(snapshot: &Snapshot, entry: &Entry, transaction_id: &str) -> Result<u64, QueryError> {
    let (kind, value) = match entry {
        Entry::Token(id) => (IndexKind::Token, id.0.to_vec()),
        Entry::Client(id) => (IndexKind::Client, id.as_bytes().to_vec()),
        Entry::Cutoff(scope) => (IndexKind::Cutoff, cutoff_value(scope)),
    };
    let Some(seq) = snapshot.index_last(kind, &value, u64::MAX)? else { return Ok(0) };
    let opened = open_all(snapshot, &[seq])?;
    Ok(opened.first().filter(|e| e.envelope.transaction_id == transaction_id).map_or(0, |e| e.envelope.seq))
}
