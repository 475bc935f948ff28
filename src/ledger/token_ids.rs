//! Token ids that are neighbours in the index without telling their holders when they were made.
//!
//! A token id is 16 bytes: `masked_time ‖ random`, where `random` is 8 bytes from the CSPRNG and
//! `masked_time = creation_ms (u64 be) ⊕ HMAC-SHA256(ledger key, random)[..8]`. To anyone without
//! the ledger's key the id is indistinguishable from 16 random bytes. The index stores each token
//! under its unmasked form `creation_ms ‖ random`, so the tokens of one moment share B-tree pages:
//! a batch of issuances dirties a couple of index pages instead of one page per token (which is
//! what random keys in a copy-on-write B-tree cost: about 8 KiB written per token).
//!
//! The key lives in the ledger's `meta` table. That reveals nothing: the ledger records when every
//! token was issued anyway. What it protects is the token string, whose holder learns nothing
//! about issuance times or volumes from the id. Token strings stay unforgeable through their
//! 256-bit MAC (see `crypto::token`); the 64 random bits only keep ids unique within a
//! millisecond.

use ring::hmac;

use crate::domain::ids::{FamilyId, TokenId};

pub struct TokenIdScheme {
    mask: hmac::Key,
}

impl TokenIdScheme {
    pub fn new(key: &[u8]) -> Self {
        Self { mask: hmac::Key::new(hmac::HMAC_SHA256, key) }
    }

    fn mask(&self, random: &[u8]) -> [u8; 8] {
        let tag = hmac::sign(&self.mask, random);
        let mut mask = [0u8; 8];
        for (m, t) in mask.iter_mut().zip(tag.as_ref()) {
            *m = *t;
        }
        mask
    }

    /// A fresh token id made at `now_ms`, from 8 bytes of `random`.
    pub fn token_id(&self, now_ms: i64, random: [u8; 8]) -> TokenId {
        let time = (now_ms.max(0) as u64).to_be_bytes();
        let mask = self.mask(&random);
        let mut id = [0u8; 16];
        for (byte, (t, m)) in id.iter_mut().zip(time.iter().zip(mask)) {
            *byte = t ^ m;
        }
        id[8..].copy_from_slice(&random);
        TokenId(id)
    }

    /// Where `id` sits in the index: its creation time and random half in the clear. A
    /// bijection, so distinct ids never share an index position; ids not made by this scheme
    /// (older ledgers, authorization codes) get an arbitrary but fixed position.
    pub fn index_key(&self, id: &TokenId) -> [u8; 16] {
        let mask = self.mask(&id.0[8..]);
        let mut key = id.0;
        for (byte, m) in key.iter_mut().zip(mask) {
            *byte ^= m;
        }
        key
    }
}

/// A family id ordered by time (families never leave the server except in audit output, so
/// nothing needs hiding): `creation_ms (u64 be) ‖ random`.
pub fn family_id(now_ms: i64, random: [u8; 8]) -> FamilyId {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&(now_ms.max(0) as u64).to_be_bytes());
    id[8..].copy_from_slice(&random);
    FamilyId(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_hide_their_time_and_index_keys_reveal_it() {
        let scheme = TokenIdScheme::new(&[1; 32]);
        let a = scheme.token_id(1_000, [7; 8]);
        let b = scheme.token_id(1_001, [9; 8]);
        assert_ne!(&a.0[..8], &1_000u64.to_be_bytes(), "the time is masked in the id");
        assert_eq!(&scheme.index_key(&a)[..8], &1_000u64.to_be_bytes());
        assert!(scheme.index_key(&a) < scheme.index_key(&b), "index keys sort by creation time");
        let other = TokenIdScheme::new(&[2; 32]);
        assert_ne!(other.index_key(&a), scheme.index_key(&a), "the order is invisible without the key");
    }
}
