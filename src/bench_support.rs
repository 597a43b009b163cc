//! Entry points into the engine's internals for `benches/hot_path.rs`, so the micro-benchmarks
//! measure the code a download runs rather than a copy of it. Not a stable API: hidden from the
//! documentation and free to change with the internals it reaches.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;

use crate::storage::PartPaths;
use crate::storage::buffers::Coalescer;
use crate::storage::place::Place;
use crate::storage::state::{ResumeState, Validators};
use crate::storage::writer::{CloseMode, PartWriter};
use crate::{Algorithm, Checksum, Error};

/// Streams `chunks` (a body of `total` bytes, as the network hands it over) into the `.part`
/// file beside `final_path` through the download's own path: the coalescer, the bounded queue,
/// the writer thread (positional writes, writeback, checkpoints every second, hashing with
/// `algorithm`), and the final sync. Returns the digest; leaves the `.part` and its state file
/// for the caller to remove.
pub async fn write_part(
    final_path: &Path,
    total: u64,
    chunks: impl IntoIterator<Item = Bytes>,
    algorithm: Option<Algorithm>,
) -> Result<Option<Checksum>, Error> {
    let validators = Validators {
        total_bytes: Some(total),
        ..Validators::default()
    };
    let state = ResumeState::new(String::new(), validators, None);
    let writer = PartWriter::spawn(
        PartPaths::beside(&Place::user_path(final_path)?),
        state,
        true,
        algorithm,
        Duration::from_secs(1),
        crate::storage::durability::Syncer::default(),
    );
    let handle = writer.handle();
    let mut coalescer = Coalescer::new(0, total, handle.pool());
    for chunk in chunks {
        coalescer.push(chunk, &handle).await?;
    }
    coalescer.flush(&handle).await?;
    drop(handle);
    Ok(writer.close(CloseMode::Complete).await?.digest)
}
