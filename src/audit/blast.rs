//! Blast radius: given a compromised credential (a client's secret, or one token) and a time
//! window, every token minted from it in the window and every token descended from those by
//! refresh, found through the index. Whether each is still live comes from the projections.

use std::collections::{BTreeMap, HashSet};

use super::history::{TokenFacts, find_token};
use super::query::{QueryError, first_seq_at_or_after, open_all};
use crate::domain::bulk::BlastCredential;
use crate::domain::ids::{FamilyId, TokenId};
use crate::ledger::codec::Opened;
use crate::ledger::index::IndexKind;
use crate::ledger::reader::Snapshot;
use crate::proto::ledger::event;

/// Most tokens one listing returns.
pub const BLAST_LISTED_MAX: usize = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relation {
    /// The compromised token itself.
    Credential,
    /// Minted from the credential in the window.
    Minted,
    /// Minted later from one of those, by refresh.
    Descendant,
}

impl Relation {
    pub fn name(self) -> &'static str {
        match self {
            Self::Credential => "credential",
            Self::Minted => "minted",
            Self::Descendant => "descendant",
        }
    }
}

#[derive(Debug, Default)]
pub struct Listing {
    pub tokens: Vec<(TokenFacts, Relation)>,
    /// Families whose members from this seq on descend from the credential.
    pub families: BTreeMap<FamilyId, u64>,
    pub truncated: bool,
}

impl Listing {
    fn push(&mut self, seen: &mut HashSet<TokenId>, facts: TokenFacts, relation: Relation) {
        if self.tokens.len() >= BLAST_LISTED_MAX {
            self.truncated = true;
        } else if seen.insert(facts.id) {
            self.tokens.push((facts, relation));
        }
    }

    fn taint(&mut self, family: FamilyId, from_seq: u64) {
        let seq = self.families.entry(family).or_insert(from_seq);
        *seq = (*seq).min(from_seq);
    }
}

/// Lists the blast radius of `credential` over events up to `head`; the window is inclusive.
pub fn list(
    snapshot: &Snapshot,
    credential: &BlastCredential,
    from_ms: i64,
    to_ms: i64,
    head: u64,
) -> Result<Listing, QueryError> {
    let mut listing = Listing::default();
    let mut seen = HashSet::new();
    match credential {
        BlastCredential::Client(client_id) => {
            let first = first_seq_at_or_after(snapshot, from_ms, 1, head)?;
            let last = first_seq_at_or_after(snapshot, to_ms.saturating_add(1), first, head)?.saturating_sub(1);
            pages(snapshot, IndexKind::Client, client_id.as_bytes(), first, last, &mut listing, |listing, opened| {
                let Some(event::Kind::TokensIssued(issued)) = &opened.event.kind else { return };
                if issued.client_id != *client_id {
                    return;
                }
                for facts in TokenFacts::minted(issued, opened.envelope.seq, opened.envelope.recorded_at_ms) {
                    if let Some(family) = facts.family {
                        listing.taint(family, facts.issued_seq);
                    }
                    listing.push(&mut seen, facts, Relation::Minted);
                }
            })?;
        }
        BlastCredential::Token(id) => {
            if let Some((facts, _)) = find_token(snapshot, id, head)? {
                listing.push(&mut seen, facts, Relation::Credential);
            }
            pages(snapshot, IndexKind::Token, &id.0, 1, head, &mut listing, |listing, opened| {
                let at = opened.envelope.recorded_at_ms;
                let Some(event::Kind::TokensIssued(issued)) = &opened.event.kind else { return };
                if issued.rotated_from != id.0 || !(from_ms..=to_ms).contains(&at) {
                    return;
                }
                for facts in TokenFacts::minted(issued, opened.envelope.seq, at) {
                    if let Some(family) = facts.family {
                        listing.taint(family, facts.issued_seq);
                    }
                    listing.push(&mut seen, facts, Relation::Minted);
                }
            })?;
        }
    }
    let families: Vec<(FamilyId, u64)> = listing.families.iter().map(|(f, s)| (*f, *s)).collect();
    for (family, from_seq) in families {
        pages(snapshot, IndexKind::Family, &family.0, from_seq, head, &mut listing, |listing, opened| {
            let Some(event::Kind::TokensIssued(issued)) = &opened.event.kind else { return };
            for facts in TokenFacts::minted(issued, opened.envelope.seq, opened.envelope.recorded_at_ms) {
                listing.push(&mut seen, facts, Relation::Descendant);
            }
        })?;
    }
    Ok(listing)
}

/// Visits the events of index entries (`kind`, `value`) with seq in `first..=last`, a page at
/// a time, until the listing is full.
fn pages(
    snapshot: &Snapshot,
    kind: IndexKind,
    value: &[u8],
    first: u64,
    last: u64,
    listing: &mut Listing,
    mut visit: impl FnMut(&mut Listing, &Opened),
) -> Result<(), QueryError> {
    const PAGE: usize = 1024;
    let mut from = first;
    while from <= last && !listing.truncated {
        let seqs = snapshot.index_seqs(kind, value, from..=last, PAGE)?;
        for opened in open_all(snapshot, &seqs)? {
            visit(listing, &opened);
        }
        match seqs.last() {
            Some(seq) if seqs.len() >= PAGE => from = seq + 1,
            _ => break,
        }
    }
    Ok(())
}
