//! The projection snapshot file in the data directory: the tables' snapshot stream
//! (`domain::tables::snapshot`) behind a header that says which ledger seq and chain hash it
//! covers and checksums the body.
//!
//! It lives in the ledger layer, not beside the tables: the domain does no I/O (its streams
//! take a `Read`/`Write`), the file is one of the data directory's durable files like the
//! ledger itself, and the header names the ledger's chain, which the tables know nothing of. A
//! Raft state machine (also over the ledger) installs and sends the same file.
//!
//! ## Format, version 3 (little-endian)
//!
//! ```text
//! file   = header body
//! header = "TLSNAPSH" version:u32 (3) header_len:u32 (= 160)
//!          ledger_seq:u64 chain_hash:[32] replay_from_seq:u64
//!          body_len:u64 body_sha256:[32]
//!          tokens:u64 families:u64 retry_entries:u64
//!          header_sha256:[32]            (SHA-256 of the 128 bytes before it)
//! body   = tables state
//! tables = the tables snapshot stream (its own format version, chunk digests and chain)
//! state  = "TLSTATE1" len:u64 bytes[len]  (len 0: a snapshot of the tables alone)
//! ```
//!
//! `state` is the rest of the projections ([`RestOfState`]: directory, sign-in records,
//! authorization codes and keys, cutoffs, and the chain head they are at), postcard-encoded
//! serde structs; the `1` of its tag is its own version. It is taken first, under the state's
//! read lock, at seq R; the tables are then written shard by shard, every shard at R or later,
//! so `replay_from_seq` is R + 1 and replaying from there applies each event's other parts
//! once and its table parts only to the shards below it.
//!
//! Version 2 has version 1's header; its body is a version-2 tables stream (entries in id
//! order, so the same tables give the same file) and no state section. Versions 1 and 2 still
//! load as tables ([`SnapshotFile::load`]), but a server does not start from them (they lack
//! the rest of the state): it replays in full.
//!
//! `ledger_seq` is the highest seq any part of the tables covers and `chain_hash` that event's
//! hash: a ledger that does not hold this seq with this hash is not the one the snapshot was
//! taken from (or is shorter than it), and the snapshot must not be used. `replay_from_seq` is
//! where the tail replay starts (the smallest seq a shard does not cover, plus nothing: each
//! event of the tail is applied only to the shards below it). The counts let `/metrics` and
//! an auditor read what the file holds without loading it.
//!
//! ## Atomicity
//!
//! The file is written as `tables.snapshot.tmp` (the header zeroed until the body is done),
//! fsynced, renamed over `tables.snapshot`, and the directory fsynced. A crash before the
//! rename leaves the previous file untouched (a stale temporary is never read and is replaced
//! by the next write); after it, the new file is whole. Loading checks the header checksum,
//! the version, the length against the header, the body checksum (as the body is read, in one
//! pass) and the body against the header, and returns either whole tables or a typed error:
//! the caller then replays the ledger in full.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ring::digest;

use crate::domain::state::RestOfState;
use crate::domain::tables::{Loaded, SnapshotError, TablesConfig, TokenTables};

/// The snapshot's name in the data directory.
pub const SNAPSHOT_FILE_NAME: &str = "tables.snapshot";
/// Where a snapshot is written before it is renamed into place.
pub const SNAPSHOT_TEMPORARY_NAME: &str = "tables.snapshot.tmp";
pub const SNAPSHOT_FILE_MAGIC: &[u8; 8] = b"TLSNAPSH";
pub const SNAPSHOT_FILE_VERSION: u32 = 3;
/// The tag of the state section (format 3 on); its last byte is the section's version.
pub const STATE_SECTION_TAG: &[u8; 8] = b"TLSTATE1";
/// Largest state section read (the directory of a very large bank is a few hundred MiB).
const STATE_SECTION_MAX: u64 = 4 << 30;
/// The oldest file version a reader takes.
pub const SNAPSHOT_FILE_OLDEST: u32 = 1;
pub const SNAPSHOT_HEADER_LEN: usize = 160;
const HEADER_DIGESTED_LEN: usize = SNAPSHOT_HEADER_LEN - 32;
/// Buffer of the file reader and writer.
const IO_BUFFER: usize = 1 << 20;

/// What a snapshot file covers (its header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// The highest ledger seq the tables cover.
    pub ledger_seq: u64,
    /// The ledger's chain hash of event `ledger_seq` (zeros for seq 0).
    pub chain_hash: [u8; 32],
    /// Replay the ledger from this seq on after loading.
    pub replay_from_seq: u64,
    pub body_len: u64,
    pub body_sha256: [u8; 32],
    pub tokens: u64,
    pub families: u64,
    pub retry_entries: u64,
}

impl SnapshotHeader {
    // The fields written add up to SNAPSHOT_HEADER_LEN (the lint wall was extended after this code was written).
    #[allow(clippy::indexing_slicing)]
    pub fn encode(&self) -> [u8; SNAPSHOT_HEADER_LEN] {
        let mut out = [0u8; SNAPSHOT_HEADER_LEN];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            out[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(SNAPSHOT_FILE_MAGIC);
        put(&SNAPSHOT_FILE_VERSION.to_le_bytes());
        put(&(SNAPSHOT_HEADER_LEN as u32).to_le_bytes());
        put(&self.ledger_seq.to_le_bytes());
        put(&self.chain_hash);
        put(&self.replay_from_seq.to_le_bytes());
        put(&self.body_len.to_le_bytes());
        put(&self.body_sha256);
        put(&self.tokens.to_le_bytes());
        put(&self.families.to_le_bytes());
        put(&self.retry_entries.to_le_bytes());
        let header_digest = digest::digest(&digest::SHA256, &out[..HEADER_DIGESTED_LEN]);
        out[HEADER_DIGESTED_LEN..].copy_from_slice(header_digest.as_ref());
        out
    }

    /// Checks and decodes a header: magic, version, length field, checksum, and that its seqs
    /// make sense together.
    pub fn decode(bytes: &[u8; SNAPSHOT_HEADER_LEN]) -> Result<Self, SnapshotFileError> {
        if &bytes[..8] != SNAPSHOT_FILE_MAGIC {
            return Err(SnapshotFileError::Magic);
        }
        let mut fields = Fields { rest: &bytes[8..] };
        let version = fields.u32();
        if !(SNAPSHOT_FILE_OLDEST..=SNAPSHOT_FILE_VERSION).contains(&version) {
            return Err(SnapshotFileError::Version(version));
        }
        let header_digest = digest::digest(&digest::SHA256, &bytes[..HEADER_DIGESTED_LEN]);
        if header_digest.as_ref() != &bytes[HEADER_DIGESTED_LEN..] {
            return Err(SnapshotFileError::HeaderChecksum);
        }
        if fields.u32() as usize != SNAPSHOT_HEADER_LEN {
            return Err(SnapshotFileError::Inconsistent("header length"));
        }
        let header = Self {
            ledger_seq: fields.u64(),
            chain_hash: fields.array(),
            replay_from_seq: fields.u64(),
            body_len: fields.u64(),
            body_sha256: fields.array(),
            tokens: fields.u64(),
            families: fields.u64(),
            retry_entries: fields.u64(),
        };
        if header.replay_from_seq == 0 || header.replay_from_seq > header.ledger_seq.saturating_add(1) {
            return Err(SnapshotFileError::Inconsistent("replay seq beyond the covered seq"));
        }
        Ok(header)
    }
}

/// Reads fixed fields from a buffer whose length the caller checked.
struct Fields<'a> {
    rest: &'a [u8],
}

impl Fields<'_> {
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some((head, tail)) = self.rest.split_at_checked(N) {
            out.copy_from_slice(head);
            self.rest = tail;
        }
        out
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }
}

/// Why a snapshot file was not written or cannot be used. Every load error means: ignore the
/// file (with a warning) and replay the ledger in full.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("there is no snapshot file")]
    Missing,
    #[error("snapshot file I/O: {0}")]
    Io(#[from] io::Error),
    #[error("not a snapshot file (wrong magic)")]
    Magic,
    #[error("snapshot file format version {0} is not supported")]
    Version(u32),
    #[error("the snapshot file's header checksum does not match")]
    HeaderChecksum,
    #[error("the snapshot file is truncated: {actual} bytes of {expected}")]
    Truncated { expected: u64, actual: u64 },
    #[error("the snapshot file has {extra} bytes after its body")]
    TrailingBytes { extra: u64 },
    #[error("the snapshot file's body checksum does not match")]
    BodyChecksum,
    #[error("the snapshot's tables stream is refused: {0}")]
    Stream(SnapshotError),
    #[error("the snapshot file is inconsistent: {0}")]
    Inconsistent(&'static str),
    #[error("the snapshot covers seq {seq}, which this ledger does not hold with the snapshot's chain hash")]
    NotThisLedger { seq: u64 },
    #[error("the snapshot holds the token tables only (format {0}), not the rest of the state")]
    NoState(u32),
    #[error("the snapshot's state section is refused: {0}")]
    State(String),
}

/// What `/metrics` shows of the projection snapshots of a running server.
#[derive(Debug, Default)]
pub struct SnapshotStatus {
    /// `ledger_seq` of the last snapshot written or started from (0: none).
    pub seq: std::sync::atomic::AtomicU64,
    /// The seq of the `ProjectionSnapshotWritten` event that recorded that snapshot (0: not
    /// recorded, or not yet).
    pub recorded_seq: std::sync::atomic::AtomicU64,
    /// When it was written (ms since the epoch; 0: none).
    pub written_at_ms: std::sync::atomic::AtomicI64,
    pub writes: std::sync::atomic::AtomicU64,
    pub failures: std::sync::atomic::AtomicU64,
    /// Milliseconds the last write took.
    pub last_write_ms: std::sync::atomic::AtomicU64,
    /// After a start from a snapshot: the events before its tail, verified in the background
    /// (`server::data_dir`): set once they all passed.
    pub prefix_verified: std::sync::atomic::AtomicBool,
    /// ... or what failed: the node then refuses writes and `serve` exits with this message.
    pub prefix_broken: std::sync::OnceLock<String>,
    pub prefix_broken_notify: tokio::sync::Notify,
}

pub fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join(SNAPSHOT_FILE_NAME)
}

/// Writes a snapshot of `tables` to `dir` atomically, shard by shard while the writer goes on
/// (each shard is copied under its own read lock; see `TokenTables::snapshot`).
/// `chain_hash_at(seq)` gives the ledger's hash of event `seq`, the highest seq the tables
/// turned out to cover; every applied event is committed, so the ledger holds it (`None`
/// refuses the write). Returns the header written.
pub fn write_snapshot(
    dir: &Path,
    tables: &TokenTables,
    chain_hash_at: impl FnOnce(u64) -> Option<[u8; 32]>,
) -> Result<SnapshotHeader, SnapshotFileError> {
    write_via(dir, tables, None, chain_hash_at, Ok)
}

/// [`write_snapshot`] with the rest of the state (`rest`, taken before the tables are written:
/// see the format above), so that a server can start from the file. The tail replay starts
/// after `rest`'s head.
pub fn write_state_snapshot(
    dir: &Path,
    rest: &RestOfState,
    tables: &TokenTables,
    chain_hash_at: impl FnOnce(u64) -> Option<[u8; 32]>,
) -> Result<SnapshotHeader, SnapshotFileError> {
    write_via(dir, tables, Some(rest), chain_hash_at, Ok)
}

/// A file the snapshot is written to (a seam for the crash tests).
trait SnapshotSink: Write + Seek {
    fn sync(&mut self) -> io::Result<()>;
}

impl SnapshotSink for File {
    fn sync(&mut self) -> io::Result<()> {
        self.sync_all()
    }
}

fn write_via<S: SnapshotSink>(
    dir: &Path,
    tables: &TokenTables,
    rest: Option<&RestOfState>,
    chain_hash_at: impl FnOnce(u64) -> Option<[u8; 32]>,
    open: impl FnOnce(File) -> io::Result<S>,
) -> Result<SnapshotHeader, SnapshotFileError> {
    let temporary = dir.join(SNAPSHOT_TEMPORARY_NAME);
    let file = OpenOptions::new().write(true).create(true).truncate(true).open(&temporary)?;
    let result = write_temporary(open(file)?, tables, rest, chain_hash_at).and_then(|header| {
        fs::rename(&temporary, snapshot_path(dir))?;
        File::open(dir)?.sync_all()?;
        Ok(header)
    });
    if result.is_err() {
        // The previous snapshot is untouched; the temporary is garbage (best effort: a crash
        // would leave it too, and the next write truncates it).
        let _ = fs::remove_file(&temporary);
    }
    result
}

fn write_temporary<S: SnapshotSink>(
    sink: S,
    tables: &TokenTables,
    rest: Option<&RestOfState>,
    chain_hash_at: impl FnOnce(u64) -> Option<[u8; 32]>,
) -> Result<SnapshotHeader, SnapshotFileError> {
    let state = match rest {
        Some(rest) => postcard::to_stdvec(rest).map_err(|e| SnapshotFileError::State(e.to_string()))?,
        None => Vec::new(),
    };
    let mut out = BufWriter::with_capacity(IO_BUFFER, sink);
    // A zero header until the body is complete: a file cut short reads as "not a snapshot".
    out.write_all(&[0u8; SNAPSHOT_HEADER_LEN])?;
    let mut writer = tables.snapshot();
    let mut body = digest::Context::new(&digest::SHA256);
    let mut body_len = 0u64;
    let mut chunk = Vec::new();
    while writer.next_chunk(&mut chunk) {
        body.update(&chunk);
        body_len += chunk.len() as u64;
        out.write_all(&chunk)?;
        chunk.clear();
    }
    let summary = writer.summary();
    let mut section = Vec::with_capacity(16);
    section.extend_from_slice(STATE_SECTION_TAG);
    section.extend_from_slice(&(state.len() as u64).to_le_bytes());
    for part in [&section, &state] {
        body.update(part);
        body_len += part.len() as u64;
        out.write_all(part)?;
    }
    let ledger_seq = summary.covered_max.max(rest.map_or(0, |r| r.head.seq));
    let chain_hash = if ledger_seq == 0 { Some([0u8; 32]) } else { chain_hash_at(ledger_seq) };
    let chain_hash = chain_hash.ok_or(SnapshotFileError::NotThisLedger { seq: ledger_seq })?;
    let mut body_sha256 = [0u8; 32];
    body_sha256.copy_from_slice(body.finish().as_ref());
    let header = SnapshotHeader {
        ledger_seq,
        chain_hash,
        replay_from_seq: rest.map_or(summary.covered_min, |r| r.head.seq.min(summary.covered_min)) + 1,
        body_len,
        body_sha256,
        tokens: summary.tokens,
        families: summary.families,
        retry_entries: summary.retry_entries,
    };
    out.seek(SeekFrom::Start(0))?;
    out.write_all(&header.encode())?;
    let mut sink = out.into_inner().map_err(|e| e.into_error())?;
    sink.sync()?;
    Ok(header)
}

/// An opened snapshot file whose header has been checked (and whose length matches it).
#[derive(Debug)]
pub struct SnapshotFile {
    file: File,
    header: SnapshotHeader,
    /// The file's format version (checked to be one this build reads).
    version: u32,
}

impl SnapshotFile {
    /// Opens `dir`'s snapshot and checks its header and length; the body is checked by
    /// [`SnapshotFile::load`].
    pub fn open(dir: &Path) -> Result<Self, SnapshotFileError> {
        let mut file = match File::open(snapshot_path(dir)) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(SnapshotFileError::Missing),
            Err(e) => return Err(e.into()),
        };
        let actual = file.metadata()?.len();
        let (header, version) = read_header(&mut file, actual)?;
        let expected = SNAPSHOT_HEADER_LEN as u64 + header.body_len;
        if actual < expected {
            return Err(SnapshotFileError::Truncated { expected, actual });
        }
        if actual > expected {
            return Err(SnapshotFileError::TrailingBytes { extra: actual - expected });
        }
        Ok(Self { file, header, version })
    }

    pub fn header(&self) -> &SnapshotHeader {
        &self.header
    }

    /// Checks that the snapshot was taken from this ledger: `chain_hash_at(seq)` is the
    /// ledger's hash of event `seq`, `None` if the ledger does not hold it.
    pub fn check_chain(&self, chain_hash_at: impl FnOnce(u64) -> Option<[u8; 32]>) -> Result<(), SnapshotFileError> {
        let seq = self.header.ledger_seq;
        let hash = if seq == 0 { Some([0u8; 32]) } else { chain_hash_at(seq) };
        if hash != Some(self.header.chain_hash) {
            return Err(SnapshotFileError::NotThisLedger { seq });
        }
        Ok(())
    }

    /// Reads the body into new tables, in one pass and a buffer at a time (token shards built
    /// on `workers` more threads; see `TokenTables::load_parallel`), checking its checksum as
    /// it goes. Any error drops what was built: tables are returned whole or not at all.
    ///
    /// The body's SHA-256 covers every byte of the stream, so the stream's own chunk digests
    /// are not computed a second time (`TokenTables::load_checked_by_caller`): one SHA-256
    /// pass over the file instead of two. A damaged body fails that checksum whatever the
    /// stream made of it, and the stream's structural checks still refuse a malformed one.
    pub fn load(self, config: TablesConfig, workers: usize) -> Result<(TokenTables, Loaded), SnapshotFileError> {
        self.load_parts(config, workers).map(|(tables, loaded, _)| (tables, loaded))
    }

    /// [`SnapshotFile::load`] and the rest of the state: what a server starts from. A file
    /// without a state section (format 1 or 2, or a snapshot of the tables alone) is refused
    /// with [`SnapshotFileError::NoState`].
    pub fn load_state(
        self,
        config: TablesConfig,
        workers: usize,
    ) -> Result<(TokenTables, Loaded, RestOfState), SnapshotFileError> {
        let version = self.version;
        let (tables, loaded, state) = self.load_parts(config, workers)?;
        match state {
            Some(rest) => Ok((tables, loaded, rest)),
            None => Err(SnapshotFileError::NoState(version)),
        }
    }

    fn load_parts(
        self,
        config: TablesConfig,
        workers: usize,
    ) -> Result<(TokenTables, Loaded, Option<RestOfState>), SnapshotFileError> {
        let header = self.header;
        let mut body = BufReader::with_capacity(IO_BUFFER, Hashing::new(self.file.take(header.body_len)));
        let (tables, loaded) = match TokenTables::load_checked_by_caller(&mut body, config, workers) {
            Ok(done) => done,
            Err(e) => return Err(body_error(e, body.into_inner(), &header)),
        };
        let stream_bytes = loaded.summary.bytes;
        let state =
            if self.version >= 3 { read_state_section(&mut body, header.body_len - stream_bytes) } else { Ok(None) };
        // Whatever of the body was not used still counts for the checksum.
        let after_stream = io::copy(&mut body, &mut io::sink())?;
        let hashing = body.into_inner();
        if hashing.read != header.body_len {
            let expected = SNAPSHOT_HEADER_LEN as u64 + header.body_len;
            return Err(SnapshotFileError::Truncated { expected, actual: SNAPSHOT_HEADER_LEN as u64 + hashing.read });
        }
        let mut file = hashing.inner.into_inner();
        if hashing.context.finish().as_ref() != header.body_sha256 {
            return Err(SnapshotFileError::BodyChecksum);
        }
        // Checked only now: a damaged body is reported as such whatever its section made of it.
        let state = state?;
        if after_stream > 0 {
            return Err(SnapshotFileError::Inconsistent("bytes after the body's last section"));
        }
        // The file may have grown since it was opened (it never should: it is renamed into
        // place whole).
        let mut probe = [0u8; 1];
        if file.read(&mut probe)? != 0 {
            return Err(SnapshotFileError::TrailingBytes { extra: 1 });
        }
        let s = loaded.summary;
        let covered_max = s.covered_max.max(state.as_ref().map_or(0, |r| r.head.seq));
        let replay_from = match &state {
            Some(rest) => rest.head.seq.min(s.covered_min) + 1,
            None => loaded.replay_from_seq,
        };
        if covered_max != header.ledger_seq || replay_from != header.replay_from_seq {
            return Err(SnapshotFileError::Inconsistent("covered seqs differ from the header's"));
        }
        if (s.tokens, s.families, s.retry_entries) != (header.tokens, header.families, header.retry_entries) {
            return Err(SnapshotFileError::Inconsistent("counts differ from the header's"));
        }
        Ok((tables, loaded, state))
    }
}

/// The state section after the tables stream (format 3): its tag, its length (at most what is
/// left of the body) and the postcard bytes of a [`RestOfState`]; `None` for length 0.
fn read_state_section(body: &mut impl Read, left: u64) -> Result<Option<RestOfState>, SnapshotFileError> {
    let mut head = [0u8; 16];
    body.read_exact(&mut head).map_err(|_| SnapshotFileError::Inconsistent("no state section after the tables"))?;
    if head.get(..8) != Some(&STATE_SECTION_TAG[..]) {
        return Err(SnapshotFileError::Inconsistent("unknown state section tag"));
    }
    let len = head.get(8..).and_then(|b| <[u8; 8]>::try_from(b).ok()).map_or(u64::MAX, u64::from_le_bytes);
    if len > left.saturating_sub(16) || len > STATE_SECTION_MAX {
        return Err(SnapshotFileError::Inconsistent("state section longer than the body"));
    }
    if len == 0 {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    body.take(len).read_to_end(&mut bytes)?;
    let rest: RestOfState = postcard::from_bytes(&bytes).map_err(|e| SnapshotFileError::State(e.to_string()))?;
    Ok(Some(rest))
}

/// The tables stream refused the body (or ended early, the file's length being checked: its
/// lengths are wrong). Finish hashing it, so that a damaged body is reported as such, whichever
/// chunk check caught it first; a body that matches its checksum is the stream's refusal.
fn body_error<R: Read>(error: SnapshotError, mut rest: Hashing<R>, header: &SnapshotHeader) -> SnapshotFileError {
    if let Err(e) = io::copy(&mut rest, &mut io::sink()) {
        return SnapshotFileError::Io(e);
    }
    if rest.read != header.body_len {
        let expected = SNAPSHOT_HEADER_LEN as u64 + header.body_len;
        return SnapshotFileError::Truncated { expected, actual: SNAPSHOT_HEADER_LEN as u64 + rest.read };
    }
    if rest.context.finish().as_ref() != header.body_sha256 {
        return SnapshotFileError::BodyChecksum;
    }
    match error {
        SnapshotError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            SnapshotFileError::Inconsistent("the tables stream runs past the body")
        }
        SnapshotError::Io(e) => SnapshotFileError::Io(e),
        other => SnapshotFileError::Stream(other),
    }
}

fn read_header(reader: &mut impl Read, available: u64) -> Result<(SnapshotHeader, u32), SnapshotFileError> {
    let mut bytes = [0u8; SNAPSHOT_HEADER_LEN];
    match reader.read_exact(&mut bytes) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            // A file too short for a header: say what it is if its first bytes tell.
            if available >= 8 && &bytes[..8] != SNAPSHOT_FILE_MAGIC {
                return Err(SnapshotFileError::Magic);
            }
            return Err(SnapshotFileError::Truncated { expected: SNAPSHOT_HEADER_LEN as u64, actual: available });
        }
        Err(e) => return Err(e.into()),
    }
    let header = SnapshotHeader::decode(&bytes)?;
    let version = bytes.get(8..12).and_then(|b| <[u8; 4]>::try_from(b).ok()).map_or(0, u32::from_le_bytes);
    Ok((header, version))
}

/// Installs a snapshot file received as a stream (a Raft snapshot sent by the leader, which
/// reads its own file from the start): the header is checked first, the body is copied to the
/// temporary file while its checksum is computed, and only a whole, matching stream that ends
/// right after the body is fsynced and renamed into place. The tables stream inside is checked
/// again when the file is loaded.
pub fn install_snapshot(dir: &Path, stream: &mut impl Read) -> Result<SnapshotHeader, SnapshotFileError> {
    let temporary = dir.join(SNAPSHOT_TEMPORARY_NAME);
    let result = install_temporary(&temporary, stream).and_then(|header| {
        fs::rename(&temporary, snapshot_path(dir))?;
        File::open(dir)?.sync_all()?;
        Ok(header)
    });
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}

// `got < SNAPSHOT_HEADER_LEN` bounds the slice (the lint wall was extended after this code was written).
#[allow(clippy::indexing_slicing)]
fn install_temporary(temporary: &Path, stream: &mut impl Read) -> Result<SnapshotHeader, SnapshotFileError> {
    let mut bytes = [0u8; SNAPSHOT_HEADER_LEN];
    let mut got = 0;
    while got < SNAPSHOT_HEADER_LEN {
        match stream.read(&mut bytes[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    if got < SNAPSHOT_HEADER_LEN {
        return Err(SnapshotFileError::Truncated { expected: SNAPSHOT_HEADER_LEN as u64, actual: got as u64 });
    }
    let header = SnapshotHeader::decode(&bytes)?;
    let file = OpenOptions::new().write(true).create(true).truncate(true).open(temporary)?;
    let mut out = BufWriter::with_capacity(IO_BUFFER, file);
    out.write_all(&bytes)?;
    let mut body = Hashing::new(stream.take(header.body_len));
    let copied = io::copy(&mut body, &mut out)?;
    if copied != header.body_len {
        let expected = SNAPSHOT_HEADER_LEN as u64 + header.body_len;
        return Err(SnapshotFileError::Truncated { expected, actual: SNAPSHOT_HEADER_LEN as u64 + copied });
    }
    if body.context.finish().as_ref() != header.body_sha256 {
        return Err(SnapshotFileError::BodyChecksum);
    }
    let extra = io::copy(&mut body.inner.into_inner(), &mut io::sink())?;
    if extra > 0 {
        return Err(SnapshotFileError::TrailingBytes { extra });
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(header)
}

/// Hashes and counts what passes through.
struct Hashing<R> {
    inner: R,
    context: digest::Context,
    read: u64,
}

impl<R> Hashing<R> {
    fn new(inner: R) -> Self {
        Self { inner, context: digest::Context::new(&digest::SHA256), read: 0 }
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(read) = buf.get(..n) {
            self.context.update(read);
        }
        self.read += n as u64;
        Ok(n)
    }
}

pub mod record;
#[cfg(test)]
mod tests;
