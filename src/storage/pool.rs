//! The recycled write buffers of one file: the writer hands each one back after writing it, so
//! a download allocates a few buffers once and its memory stays flat (no allocator churn
//! between threads, no growth with the file size).

use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Bytes, BytesMut};

/// Size of one write: large enough that a write costs little per byte (64 MiB in 16 KiB
/// chunks goes through at 1.66 GB/s in `benches/hot_path.rs`), small enough that memory stays
/// low with several connections per file (peak RSS of a default 4-connection 1 GiB download
/// went from 21 to 14 MiB when this went from 1 MiB to 256 KiB, with one malloc arena).
pub(crate) const BUFFER_BYTES: usize = 256 << 10;
/// Buffers kept for reuse per file (the writer's queue plus one per connection, roughly).
const POOLED: usize = 8;

/// Recycled write buffers of one file.
#[derive(Clone, Default)]
pub(crate) struct BufferPool {
    free: Arc<Mutex<Vec<BytesMut>>>,
}

impl BufferPool {
    /// A buffer with room for `BUFFER_BYTES` (or `hint`, when smaller: small files need little).
    pub(crate) fn take(&self, hint: u64) -> BytesMut {
        let recycled = self
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        recycled.unwrap_or_else(|| {
            let capacity = usize::try_from(hint)
                .unwrap_or(BUFFER_BYTES)
                .min(BUFFER_BYTES);
            BytesMut::with_capacity(capacity.max(1))
        })
    }

    /// Frees the pooled buffers: the body has arrived, and the download may wait a while for
    /// its final sync without holding memory the next download could use.
    pub(crate) fn clear(&self) {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Takes a written buffer back, if it is a full-size one nobody else holds.
    pub(crate) fn recycle(&self, written: Bytes) {
        if let Ok(mut buffer) = written.try_into_mut()
            && buffer.capacity() >= BUFFER_BYTES
        {
            buffer.clear();
            let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
            if free.len() < POOLED {
                free.push(buffer);
            }
        }
    }
}
