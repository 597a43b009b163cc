//! Coalescing network chunks into large buffers for the writer, taken from the file's pool of
//! recycled buffers (`pool.rs`).

use bytes::{Bytes, BytesMut};

use super::pool::BufferPool;
use super::writer::WriteHandle;
use crate::Error;

/// Gathers the chunks of one connection into buffers and hands them to the writer.
pub(crate) struct Coalescer {
    pending: BytesMut,
    /// File offset of the first byte in `pending`.
    start: u64,
    /// Bytes this connection still expects (sizes the first buffer of a small file).
    remaining: u64,
    pool: BufferPool,
}

impl Coalescer {
    pub(crate) fn new(start: u64, remaining: u64, pool: BufferPool) -> Self {
        Self {
            pending: BytesMut::new(),
            start,
            remaining,
            pool,
        }
    }

    /// Offset just past the bytes handed over so far, pending ones included.
    pub(crate) fn position(&self) -> u64 {
        self.start + self.pending.len() as u64
    }

    /// Adds a chunk that continues the stream, writing full buffers as they fill. Chunks are
    /// always copied: queueing the network's own chunks would pin the receive buffers they
    /// are slices of, and memory would follow the network's buffer sizes instead of ours.
    pub(crate) async fn push(
        &mut self,
        mut chunk: Bytes,
        writer: &WriteHandle,
    ) -> Result<(), Error> {
        while !chunk.is_empty() {
            if self.pending.capacity() == 0 {
                self.pending = self.pool.take(self.remaining);
            }
            let room = self.pending.capacity() - self.pending.len();
            let part = chunk.split_to(room.min(chunk.len()));
            self.pending.extend_from_slice(&part);
            if self.pending.len() >= self.pending.capacity() {
                self.flush(writer).await?;
            }
        }
        Ok(())
    }

    /// Writes what is pending.
    pub(crate) async fn flush(&mut self, writer: &WriteHandle) -> Result<(), Error> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let full = std::mem::take(&mut self.pending);
        let length = full.len() as u64;
        writer.write(self.start, full.freeze()).await?;
        self.start += length;
        self.remaining = self.remaining.saturating_sub(length);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use crate::Algorithm;
    use crate::bench_support::write_part;
    use crate::storage::pool::BUFFER_BYTES;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunks_of_any_size_land_at_their_offsets() {
        // Tiny chunks, one much larger than a buffer, one that straddles a buffer's end.
        let sizes = [
            1,
            7,
            3 * BUFFER_BYTES + 5,
            BUFFER_BYTES - 1,
            2,
            BUFFER_BYTES + 1,
            100,
        ];
        let total: usize = sizes.iter().sum();
        let body: Vec<u8> = (0..total).map(|i| (i % 253) as u8).collect();
        let mut chunks = Vec::new();
        let mut start = 0;
        for size in sizes {
            chunks.push(Bytes::copy_from_slice(&body[start..start + size]));
            start += size;
        }
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("f.bin");
        let digest = write_part(&target, total as u64, chunks, Some(Algorithm::Sha256))
            .await
            .unwrap();
        let written = std::fs::read(dir.path().join("f.bin.part")).unwrap();
        assert!(written == body, "the .part holds the stream, byte for byte");
        let mut hasher = crate::integrity::Hasher::new(Algorithm::Sha256);
        hasher.update(&body);
        assert_eq!(digest, Some(hasher.finish()));
    }
}
