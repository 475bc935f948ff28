//! Secondary index keys, written in the same transaction as the events they point to, so
//! audit queries by token, family, client, user, institution or kind never scan the log.
//!
//! Entry layout (index version 3 and 4): `kind (1 byte) ‖ len (1 byte) ‖ value (len bytes) ‖ n (1
//! byte) ‖ seq (n bytes, big endian, no leading zero bytes; n = 1 for seq 0)`; all entries of one
//! value are contiguous and ordered by seq (a longer seq is a larger one). Version 2 stored the
//! seq in 8 bytes. `TokensIssued` has no event-kind entry (see [`kind_is_indexed`]).
//!
//! Version 4 stores **lists** (table `index_lists`): the entries of one value that one append
//! writes (a committed batch; an index rebuild, a window of events) are one row, keyed by the
//! entry of the first seq, its value the later seqs as varint deltas ([`pack`]). A batch of 64
//! issuances of one client writes one client row and one institution row instead of 64 each.
//! The lists of one value never overlap: a later append only holds later seqs.

use super::token_ids::TokenIdScheme;
use crate::domain::ids::{FamilyId, TokenId};
use crate::domain::state::cutoff::CutoffScope;
use crate::domain::state::{State, user_key};
use crate::proto::ledger::{self, Event, blast_radius_revoked, event};

/// Bumped whenever `keys_for` or the index layout changes; a ledger with another version is
/// re-indexed on open.
pub const INDEX_VERSION: u32 = 4;

/// The most seqs one list row holds (a longer run of one value starts another row).
pub const LIST_MAX: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum IndexKind {
    Token = 1,
    Family = 2,
    Client = 3,
    User = 4,
    Institution = 5,
    EventKind = 6,
    /// Bulk revocations (cutoffs), by scope: see [`cutoff_value`]. Added with events 40-41;
    /// no earlier event has such keys, so the index version did not change.
    Cutoff = 7,
}

/// The value of a [`IndexKind::Cutoff`] entry: a scope tag (`c` client, `u` user, `i`
/// institution, `f` family) and the scope's id (for users, `institution:login`).
pub fn cutoff_value(scope: &CutoffScope) -> Vec<u8> {
    let (tag, id): (u8, &[u8]) = match scope {
        CutoffScope::Client(id) => (b'c', id.as_bytes()),
        CutoffScope::Institution(id) => (b'i', id.as_bytes()),
        CutoffScope::User { institution_id, login_id } => {
            let mut value = vec![b'u'];
            value.extend_from_slice(user_key(institution_id, login_id).as_bytes());
            return value;
        }
        CutoffScope::Family(id) => (b'f', &id.0),
    };
    let mut value = Vec::with_capacity(1 + id.len());
    value.push(tag);
    value.extend_from_slice(id);
    value
}

/// The index value of a token id: its position by creation time (see `token_ids`). Queries by
/// token use this with [`prefix`].
pub fn token_value(token_ids: &TokenIdScheme, id: &TokenId) -> [u8; 16] {
    token_ids.index_key(id)
}

/// The prefix shared by every index entry of (`kind`, `value`).
pub fn prefix(kind: IndexKind, value: &[u8]) -> Vec<u8> {
    let len = value.len().min(255);
    let mut key = Vec::with_capacity(2 + len + 8);
    key.push(kind as u8);
    key.push(len as u8);
    key.extend(value.iter().take(len));
    key
}

pub fn entry(kind: IndexKind, value: &[u8], seq: u64) -> Vec<u8> {
    let mut key = prefix(kind, value);
    push_seq(&mut key, seq);
    key
}

/// The entry of `seq` under a [`prefix`] already made.
pub fn entry_of(prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 9);
    key.extend_from_slice(prefix);
    push_seq(&mut key, seq);
    key
}

/// Appends `n ‖ seq` (the seq's big-endian bytes without leading zero bytes, at least one):
/// byte order of the encodings is the order of the seqs.
fn push_seq(key: &mut Vec<u8>, seq: u64) {
    let bytes = seq.to_be_bytes();
    let skip = (seq.leading_zeros() / 8).min(7) as usize;
    key.push((8 - skip) as u8);
    key.extend(bytes.iter().skip(skip));
}

/// The seq at the end of an index entry.
pub fn seq_of(key: &[u8]) -> Option<u64> {
    let len = usize::from(*key.get(1)?);
    let n = usize::from(*key.get(2 + len)?);
    let bytes = key.get(3 + len..)?;
    if bytes.len() != n || !(1..=8).contains(&n) {
        return None;
    }
    Some(bytes.iter().fold(0u64, |seq, byte| (seq << 8) | u64::from(*byte)))
}

/// The prefix (kind, value) and the seq of an entry.
pub fn split_entry(key: &[u8]) -> Option<(&[u8], u64)> {
    let len = usize::from(*key.get(1)?);
    Some((key.get(..2 + len)?, seq_of(key)?))
}

/// The list rows of `entries` (each [`entry`]-encoded, any order): one `(key, value)` per value
/// and run of at most [`LIST_MAX`] seqs, the key the entry of the run's first seq, the value the
/// later seqs as varint deltas. Entries that do not parse are dropped (the writer never makes
/// them).
pub fn lists<'a>(entries: impl IntoIterator<Item = &'a [u8]>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut by_value: std::collections::BTreeMap<&[u8], Vec<u64>> = Default::default();
    for key in entries {
        if let Some((prefix, seq)) = split_entry(key) {
            by_value.entry(prefix).or_default().push(seq);
        }
    }
    let mut rows = Vec::with_capacity(by_value.len());
    for (prefix, mut seqs) in by_value {
        seqs.sort_unstable();
        seqs.dedup();
        for run in seqs.chunks(LIST_MAX) {
            let Some(first) = run.first() else { continue };
            let mut key = prefix.to_vec();
            push_seq(&mut key, *first);
            rows.push((key, pack(run)));
        }
    }
    rows
}

/// The seqs after the first of an increasing run, as varint deltas.
pub fn pack(seqs: &[u64]) -> Vec<u8> {
    let mut out = Vec::new();
    for (earlier, later) in seqs.iter().zip(seqs.iter().skip(1)) {
        prost::encoding::encode_varint(later.saturating_sub(*earlier), &mut out);
    }
    out
}

/// The seqs of a list row: `first` (from its key) and the deltas of its value; `None` when the
/// value does not parse.
pub fn unpack(first: u64, mut deltas: &[u8]) -> Option<Vec<u64>> {
    let mut seqs = vec![first];
    let mut seq = first;
    while !deltas.is_empty() {
        let delta = prost::encoding::decode_varint(&mut deltas).ok()?;
        seq = seq.checked_add(delta)?;
        seqs.push(seq);
    }
    Some(seqs)
}

/// Whether events of kind number `kind` have an [`IndexKind::EventKind`] entry. `TokensIssued`
/// (10), most of any ledger, has none since index version 3: a query for it reads the events
/// themselves, nearly all of which match (audit `read_page`).
pub fn kind_is_indexed(kind: u8) -> bool {
    kind != 10
}

/// The number of an event's kind (its field number in `Event.kind`).
pub fn kind_number(event: &Event) -> u8 {
    match &event.kind {
        None => 0,
        Some(event::Kind::LedgerCreated(_)) => 1,
        Some(event::Kind::InstitutionCreated(_)) => 2,
        Some(event::Kind::ClientCreated(_)) => 3,
        Some(event::Kind::UserCreated(_)) => 4,
        Some(event::Kind::ClientSecretRotated(_)) => 5,
        Some(event::Kind::ClientDisabled(_)) => 6,
        Some(event::Kind::ClientEnabled(_)) => 7,
        Some(event::Kind::ClientAuthorizePartnersSet(_)) => 8,
        Some(event::Kind::UserPasswordSet(_)) => 20,
        Some(event::Kind::UserLocked(_)) => 21,
        Some(event::Kind::UserUnlocked(_)) => 22,
        Some(event::Kind::UserDisabled(_)) => 23,
        Some(event::Kind::UserEnabled(_)) => 24,
        Some(event::Kind::UserUpdated(_)) => 25,
        Some(event::Kind::SignInFailed(_)) => 26,
        Some(event::Kind::SignInLockedOut(_)) => 27,
        Some(event::Kind::TokensIssued(_)) => 10,
        Some(event::Kind::TokenRevoked(_)) => 11,
        Some(event::Kind::FamilyRevoked(_)) => 12,
        Some(event::Kind::AuthorizationCodeIssued(_)) => 30,
        Some(event::Kind::AuthorizationCodeReplayed(_)) => 31,
        Some(event::Kind::AuthorizationCodeBurned(_)) => 32,
        Some(event::Kind::SigningKeyActivated(_)) => 33,
        Some(event::Kind::BulkRevoked(_)) => 40,
        Some(event::Kind::BlastRadiusRevoked(_)) => 41,
        Some(event::Kind::ProjectionSnapshotWritten(_)) => 50,
    }
}

/// Whether [`keys_for`] may read `state` for `event` (a revocation finds the client of the token
/// it names there): such an event's entries depend on the events before it. Every kind not named
/// here as reading nothing counts as reading, so a new kind is safe until it is listed.
pub fn keys_read_state(event: &Event) -> bool {
    !matches!(
        &event.kind,
        None | Some(
            event::Kind::LedgerCreated(_)
                | event::Kind::InstitutionCreated(_)
                | event::Kind::ClientCreated(_)
                | event::Kind::UserCreated(_)
                | event::Kind::ClientDisabled(_)
                | event::Kind::ClientSecretRotated(_)
                | event::Kind::ClientEnabled(_)
                | event::Kind::ClientAuthorizePartnersSet(_)
                | event::Kind::UserDisabled(_)
                | event::Kind::UserPasswordSet(_)
                | event::Kind::UserLocked(_)
                | event::Kind::UserUnlocked(_)
                | event::Kind::UserEnabled(_)
                | event::Kind::UserUpdated(_)
                | event::Kind::SignInFailed(_)
                | event::Kind::SignInLockedOut(_)
                | event::Kind::TokensIssued(_)
                | event::Kind::AuthorizationCodeIssued(_)
                | event::Kind::SigningKeyActivated(_)
                | event::Kind::ProjectionSnapshotWritten(_)
        )
    )
}

/// Index entries of `event` at `seq`. `state` (before the event) supplies what the event only
/// refers to, such as the client of a revoked token (the kinds of [`keys_read_state`]: an arm that
/// reads `state` belongs there).
pub fn keys_for(state: &State, token_ids: &TokenIdScheme, event: &Event, seq: u64) -> Vec<Vec<u8>> {
    let kind = kind_number(event);
    let mut keys = Vec::with_capacity(8);
    if kind_is_indexed(kind) {
        keys.push(entry(IndexKind::EventKind, &[kind], seq));
    }
    let mut add = |kind: IndexKind, value: &[u8]| match (kind, TokenId::from_slice(value)) {
        // Tokens are indexed by creation time (see `token_ids`), so new ones are neighbours.
        (IndexKind::Token, Some(id)) => keys.push(entry(kind, &token_ids.index_key(&id), seq)),
        _ if !value.is_empty() => keys.push(entry(kind, value, seq)),
        _ => {}
    };
    match &event.kind {
        None | Some(event::Kind::LedgerCreated(_)) => {}
        Some(event::Kind::InstitutionCreated(i)) => add(IndexKind::Institution, i.institution_id.as_bytes()),
        Some(event::Kind::ClientCreated(c)) => {
            add(IndexKind::Client, c.client_id.as_bytes());
            for institution in &c.institution_ids {
                add(IndexKind::Institution, institution.as_bytes());
            }
        }
        Some(event::Kind::UserCreated(u)) => {
            add(IndexKind::User, user_key(&u.institution_id, &u.login_id).as_bytes());
            add(IndexKind::Institution, u.institution_id.as_bytes());
        }
        Some(event::Kind::ClientDisabled(ledger::ClientDisabled { client_id })) => {
            // Disabling is a cutoff on the client (see domain/directory/apply.rs), found like bulk ones.
            add(IndexKind::Cutoff, &cutoff_value(&CutoffScope::Client(client_id.clone())));
            add(IndexKind::Client, client_id.as_bytes())
        }
        Some(event::Kind::ClientSecretRotated(ledger::ClientSecretRotated { client_id, .. }))
        | Some(event::Kind::ClientEnabled(ledger::ClientEnabled { client_id }))
        | Some(event::Kind::ClientAuthorizePartnersSet(ledger::ClientAuthorizePartnersSet { client_id, .. })) => {
            add(IndexKind::Client, client_id.as_bytes())
        }
        Some(event::Kind::UserDisabled(ledger::UserDisabled { institution_id, login_id })) => {
            let scope = CutoffScope::User { institution_id: institution_id.clone(), login_id: login_id.clone() };
            add(IndexKind::Cutoff, &cutoff_value(&scope));
            add(IndexKind::User, user_key(institution_id, login_id).as_bytes());
            add(IndexKind::Institution, institution_id.as_bytes());
        }
        Some(event::Kind::UserPasswordSet(ledger::UserPasswordSet { institution_id, login_id, .. }))
        | Some(event::Kind::UserLocked(ledger::UserLocked { institution_id, login_id }))
        | Some(event::Kind::UserUnlocked(ledger::UserUnlocked { institution_id, login_id }))
        | Some(event::Kind::UserEnabled(ledger::UserEnabled { institution_id, login_id }))
        | Some(event::Kind::UserUpdated(ledger::UserUpdated { institution_id, login_id, .. }))
        | Some(event::Kind::SignInFailed(ledger::SignInFailed { institution_id, login_id, .. }))
        | Some(event::Kind::SignInLockedOut(ledger::SignInLockedOut { institution_id, login_id, .. })) => {
            // Sign-ins of unknown login ids carry no login id: they index by institution only.
            if !login_id.is_empty() {
                add(IndexKind::User, user_key(institution_id, login_id).as_bytes());
            }
            add(IndexKind::Institution, institution_id.as_bytes());
        }
        Some(event::Kind::TokensIssued(t)) => {
            for token in [&t.access, &t.refresh].into_iter().flatten() {
                add(IndexKind::Token, &token.token_id);
            }
            add(IndexKind::Token, &t.rotated_from);
            add(IndexKind::Token, &t.authorization_code_id);
            add(IndexKind::Family, &t.family_id);
            add(IndexKind::Client, t.client_id.as_bytes());
            add(IndexKind::Institution, t.institution_id.as_bytes());
            if !t.login_id.is_empty() {
                add(IndexKind::User, user_key(&t.institution_id, &t.login_id).as_bytes());
            }
        }
        Some(event::Kind::TokenRevoked(r)) => {
            add(IndexKind::Token, &r.token_id);
            if let Some(token) = TokenId::from_slice(&r.token_id).and_then(|id| state.token(&id)) {
                add_grant(&mut add, &token.grant);
            }
        }
        Some(event::Kind::FamilyRevoked(r)) => {
            add(IndexKind::Family, &r.family_id);
            add(IndexKind::Token, &r.trigger_token_id);
            let family = FamilyId::from_slice(&r.family_id).and_then(|id| state.family(&id));
            let grant = family.and_then(|f| f.live_refresh.or_else(|| TokenId::from_slice(&r.trigger_token_id)));
            if let Some(token) = grant.and_then(|id| state.token(&id)) {
                add_grant(&mut add, &token.grant);
            }
            // A code replay's family may hold no refresh token: its code names the parties.
            add_code(&mut add, state, &r.trigger_token_id);
        }
        Some(event::Kind::AuthorizationCodeIssued(c)) => {
            add(IndexKind::Token, &c.code_id);
            add(IndexKind::Client, c.client_id.as_bytes());
            add(IndexKind::Client, c.authorized_by_client_id.as_bytes());
            add(IndexKind::Token, &c.authorized_by_token_id);
            add(IndexKind::Institution, c.institution_id.as_bytes());
            add(IndexKind::User, user_key(&c.institution_id, &c.login_id).as_bytes());
        }
        Some(event::Kind::AuthorizationCodeReplayed(r)) => {
            add(IndexKind::Token, &r.code_id);
            add(IndexKind::Family, &r.family_id);
            add_code(&mut add, state, &r.code_id);
        }
        Some(event::Kind::AuthorizationCodeBurned(b)) => {
            add(IndexKind::Token, &b.code_id);
            add_code(&mut add, state, &b.code_id);
        }
        // Found by their event-kind entries alone (`snapshot::record::find`).
        Some(event::Kind::SigningKeyActivated(_)) | Some(event::Kind::ProjectionSnapshotWritten(_)) => {}
        Some(event::Kind::BulkRevoked(b)) => {
            if let Some(scope) = crate::domain::bulk::scope_of(b) {
                add(IndexKind::Cutoff, &cutoff_value(&scope));
                match &scope {
                    CutoffScope::Client(id) => add(IndexKind::Client, id.as_bytes()),
                    CutoffScope::Institution(id) => add(IndexKind::Institution, id.as_bytes()),
                    CutoffScope::User { institution_id, login_id } => {
                        add(IndexKind::User, user_key(institution_id, login_id).as_bytes());
                        add(IndexKind::Institution, institution_id.as_bytes());
                    }
                    CutoffScope::Family(id) => {
                        add(IndexKind::Family, &id.0);
                        let family = state.family(id);
                        let token = family.as_ref().and_then(|f| f.live_refresh).and_then(|t| state.token(&t));
                        if let Some(token) = token {
                            add_grant(&mut add, &token.grant);
                        } else if let Some(family) = family {
                            add(IndexKind::Client, family.client_id.as_bytes());
                        }
                    }
                }
            }
        }
        Some(event::Kind::BlastRadiusRevoked(b)) => {
            match &b.credential {
                Some(blast_radius_revoked::Credential::ClientId(id)) => add(IndexKind::Client, id.as_bytes()),
                Some(blast_radius_revoked::Credential::TokenId(id)) => add(IndexKind::Token, id),
                None => {}
            }
            for id in &b.token_ids {
                add(IndexKind::Token, id);
                if let Some(token) = TokenId::from_slice(id).and_then(|id| state.token(&id)) {
                    if let Some(family) = token.grant.family {
                        add(IndexKind::Family, &family.0);
                    }
                    add_grant(&mut add, &token.grant);
                }
            }
        }
    }
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The client, institution and user of the code `code_id`, from the state before the event.
fn add_code(add: &mut impl FnMut(IndexKind, &[u8]), state: &State, code_id: &[u8]) {
    if let Some(code) = TokenId::from_slice(code_id).and_then(|id| state.authorization.codes.get(&id)) {
        add(IndexKind::Client, code.client_id.as_bytes());
        add(IndexKind::Institution, code.institution_id.as_bytes());
        add(IndexKind::User, user_key(&code.institution_id, &code.login_id).as_bytes());
    }
}

fn add_grant(add: &mut impl FnMut(IndexKind, &[u8]), grant: &crate::domain::tables::GrantView<'_>) {
    add(IndexKind::Client, grant.client_id.as_bytes());
    add(IndexKind::Institution, grant.institution_id.as_bytes());
    if let Some(user) = grant.user {
        add(IndexKind::User, user_key(&user.institution_id, &user.login_id).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_order_by_seq_and_give_their_seq_back() {
        let seqs = [0, 1, 255, 256, 65_535, 65_536, 1 << 24, (1 << 32) + 7, u64::MAX - 1, u64::MAX];
        let keys: Vec<Vec<u8>> = seqs.iter().map(|seq| entry(IndexKind::Client, b"scale-cc", *seq)).collect();
        assert!(keys.windows(2).all(|pair| pair[0] < pair[1]), "byte order is seq order");
        for (key, seq) in keys.iter().zip(seqs) {
            assert_eq!(seq_of(key), Some(seq));
            assert!(key.starts_with(&prefix(IndexKind::Client, b"scale-cc")));
        }
        assert_eq!(entry(IndexKind::Client, b"c", 1_000_000).len(), 2 + 1 + 1 + 3, "a seq below 2^24 takes 4 bytes");
        // Another value never falls between the bounds of one value's range.
        let other = entry(IndexKind::Client, b"scale-cc2", 5);
        assert!(!(keys[0] <= other && other <= keys[keys.len() - 1]));
        assert_eq!(seq_of(&[3, 1, b'c']), None);
        assert_eq!(seq_of(&[3, 1, b'c', 2, 1]), None, "a truncated seq");
    }

    #[test]
    fn lists_group_a_values_entries_and_unpack_to_them() {
        let client = |seq| entry(IndexKind::Client, b"svc", seq);
        let institution = |seq| entry(IndexKind::Institution, b"01001", seq);
        let mut keys = vec![client(7), institution(7), client(9), institution(9), client(300), client(8)];
        keys.extend((1_000..1_000 + LIST_MAX as u64 + 1).map(institution));
        let rows = lists(keys.iter().map(Vec::as_slice));
        let read: Vec<(Vec<u8>, Vec<u64>)> = rows
            .iter()
            .map(|(key, value)| {
                let (prefix, first) = split_entry(key).unwrap();
                (prefix.to_vec(), unpack(first, value).unwrap())
            })
            .collect();
        let mut long: Vec<u64> = vec![7, 9];
        long.extend(1_000..1_000 + LIST_MAX as u64 - 2);
        assert_eq!(read.len(), 3);
        assert_eq!(read[0], (prefix(IndexKind::Client, b"svc"), vec![7, 8, 9, 300]));
        assert_eq!(read[1], (prefix(IndexKind::Institution, b"01001"), long), "a run holds at most LIST_MAX");
        assert_eq!(read[2].1, vec![1_000 + LIST_MAX as u64 - 2, 1_000 + LIST_MAX as u64 - 1, 1_000 + LIST_MAX as u64]);
        assert_eq!(rows[0].0, client(7), "a row's key is its first entry");
        assert_eq!(unpack(5, &[0x80]), None, "a truncated delta");
    }
}
