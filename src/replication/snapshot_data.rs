//! The bytes of a Raft snapshot as openraft moves them: read in chunks on the sender, written
//! chunk by chunk on the receiver, then handed to the state machine's install. A node's real
//! snapshots ([`super::state_machine`]) are files in its data directory, so a snapshot of a
//! ledger of any size is never held in memory; the in-memory form serves snapshots that are a
//! few bytes (a builder's answer, whose bytes openraft never reads, and the test state
//! machines).

use std::io::{Cursor, SeekFrom};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

/// A Raft snapshot's bytes: in a file, or in memory.
#[derive(Debug)]
pub enum SnapshotData {
    Memory(Cursor<Vec<u8>>),
    File(tokio::fs::File),
}

impl SnapshotData {
    pub fn memory(bytes: Vec<u8>) -> Self {
        Self::Memory(Cursor::new(bytes))
    }

    /// The bytes as a blocking reader from their start (for the state machine, which installs
    /// on a blocking thread): whatever was written is flushed first.
    pub async fn into_reader(self) -> std::io::Result<Box<dyn std::io::Read + Send>> {
        use std::io::Seek as _;
        use tokio::io::AsyncWriteExt as _;
        match self {
            Self::Memory(cursor) => Ok(Box::new(Cursor::new(cursor.into_inner()))),
            Self::File(mut file) => {
                file.flush().await?;
                let mut file = file.into_std().await;
                file.seek(SeekFrom::Start(0))?;
                Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, file)))
            }
        }
    }
}

impl AsyncRead for SnapshotData {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Memory(cursor) => Pin::new(cursor).poll_read(cx, buf),
            Self::File(file) => Pin::new(file).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for SnapshotData {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Memory(cursor) => Pin::new(cursor).poll_write(cx, buf),
            Self::File(file) => Pin::new(file).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Memory(cursor) => Pin::new(cursor).poll_flush(cx),
            Self::File(file) => Pin::new(file).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Memory(cursor) => Pin::new(cursor).poll_shutdown(cx),
            Self::File(file) => Pin::new(file).poll_shutdown(cx),
        }
    }
}

impl AsyncSeek for SnapshotData {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> std::io::Result<()> {
        match self.get_mut() {
            Self::Memory(cursor) => Pin::new(cursor).start_seek(position),
            Self::File(file) => Pin::new(file).start_seek(position),
        }
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<u64>> {
        match self.get_mut() {
            Self::Memory(cursor) => Pin::new(cursor).poll_complete(cx),
            Self::File(file) => Pin::new(file).poll_complete(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;
    use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn a_file_written_in_chunks_at_offsets_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot");
        let mut options = tokio::fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(true);
        let mut data = SnapshotData::File(options.open(&path).await.unwrap());
        // As openraft's receiver does: each chunk at its offset.
        data.seek(SeekFrom::Start(0)).await.unwrap();
        data.write_all(b"first ").await.unwrap();
        data.seek(SeekFrom::Start(6)).await.unwrap();
        data.write_all(b"second").await.unwrap();
        let mut read = String::new();
        data.into_reader().await.unwrap().read_to_string(&mut read).unwrap();
        assert_eq!(read, "first second");

        let mut memory = SnapshotData::memory(b"abc".to_vec());
        let mut out = Vec::new();
        memory.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"abc");
    }
}
