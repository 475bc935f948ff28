//! Conflict keys: the entities a command reads and writes, hashed, so that the writer can put
//! independent commands in one batch.

use std::hash::{BuildHasher, Hash};

use super::ids::{FamilyId, TokenId};

/// The entities a command reads and writes. Two commands conflict when one writes what the
/// other reads or writes; the writer then defers the later one to the next batch, so every
/// command in a batch can be decided against the same committed state.
#[derive(Debug, Default)]
pub struct ConflictKeys {
    pub reads: Vec<u64>,
    pub writes: Vec<u64>,
    /// The command must be alone in its batch (bulk revocations: they change what every
    /// other command would decide, whatever entities it names).
    pub exclusive: bool,
    /// Hashes entities to keys (see [`ConflictSeed`]).
    seed: ConflictSeed,
}

/// The seed of the conflict-key hash. Callers choose entity names (client ids, login ids,
/// transaction ids), so with a fixed seed they could craft names whose keys collide and make
/// unrelated commands wait for each other; the writer draws a random seed when it starts. Keys
/// only need to be equal within one process. The default (0) is for tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConflictSeed(pub u64);

/// Kinds of entity a conflict key can name.
#[derive(Hash)]
pub enum Entity<'a> {
    Institution(&'a str),
    Client(&'a str),
    User(&'a str, &'a str),
    InstitutionUserId(&'a str, &'a str),
    Family(&'a FamilyId),
    Token(&'a TokenId),
    AuthorizationCode(&'a TokenId),
    /// Which key signs ID tokens.
    SigningKeys,
    Request(&'a str, &'a str),
    HostUserId(&'a str, &'a str),
    /// The keyed digest of a login id the institution does not know.
    UnknownLogin(&'a str, &'a [u8; 32]),
}

impl Entity<'_> {
    pub fn key(&self, seed: ConflictSeed) -> u64 {
        foldhash::fast::FixedState::with_seed(seed.0).hash_one(self)
    }
}

impl ConflictKeys {
    pub fn new(seed: ConflictSeed) -> Self {
        Self { seed, ..Self::default() }
    }

    pub fn read(&mut self, entity: Entity<'_>) {
        self.reads.push(entity.key(self.seed));
    }

    pub fn write(&mut self, entity: Entity<'_>) {
        self.writes.push(entity.key(self.seed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Security review finding 13: the conflict-key hash is seeded by the caller (the writer
    /// draws a random seed at start), so which names collide differs from process to process.
    #[test]
    fn conflict_keys_depend_on_the_seed() {
        let entity = || Entity::Request("client", "3f2b8c1e-9d4a-4b7e-8f00-123456789abc");
        assert_eq!(entity().key(ConflictSeed(7)), entity().key(ConflictSeed(7)));
        let distinct: std::collections::HashSet<u64> = (0..64).map(|s| entity().key(ConflictSeed(s))).collect();
        assert_eq!(distinct.len(), 64, "every seed hashes the same entity differently");
        let mut keys = ConflictKeys::new(ConflictSeed(7));
        keys.read(entity());
        assert_eq!(keys.reads, [entity().key(ConflictSeed(7))]);
    }
}
