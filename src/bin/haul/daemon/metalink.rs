//! `aria2.addMetalink`: a Metalink document (base64, as aria2 takes it) becomes one download
//! per file, each with its mirrors, size, hash and piece hashes, beneath the download root.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::Value;

use super::downloads::Downloads;
use super::entry::Gid;
use super::options::{self, Options};
use super::params::RpcError;

/// Adds the document's files at `position` (the end by default); their GIDs in order.
pub(crate) fn add(
    downloads: &Arc<Downloads>,
    document: Option<&Value>,
    options: &Options,
    position: Option<usize>,
) -> Result<Vec<Gid>, RpcError> {
    let Some(Value::String(encoded)) = document else {
        return Err(RpcError::invalid(
            "the Metalink document must be a base64 string",
        ));
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| RpcError::new("the Metalink document is not valid base64"))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| RpcError::new("the Metalink document is not UTF-8 text"))?;
    let metalink = haul::metalink::parse(&text).map_err(|e| RpcError::new(e.to_string()))?;
    let relative = match options.get("dir") {
        Some(dir) => options::beneath(&downloads.root, dir)?,
        None => String::new(),
    };
    let dir = downloads.root.join(&relative);
    // Every file is checked before any is added: a bad one adds nothing.
    let mut prepared = Vec::with_capacity(metalink.files.len());
    for file in &metalink.files {
        let mut below = file.clone();
        if !relative.is_empty() {
            below.name = format!("{relative}/{}", file.name);
        }
        // Placed beneath the root: no symlink below it is followed.
        let request = below
            .request(&downloads.root, &[])
            .map_err(|e| RpcError::new(e.to_string()))?;
        let request = options::apply(request, options)?;
        let uris: Vec<String> = file
            .ordered_sources(&[])
            .iter()
            .map(ToString::to_string)
            .collect();
        prepared.push((request, uris));
    }
    let mut gids = Vec::with_capacity(prepared.len());
    for (index, (request, uris)) in prepared.into_iter().enumerate() {
        let at = position.map(|p| p + index);
        gids.push(downloads.insert(request, dir.clone(), uris, options.clone(), at)?);
    }
    Ok(gids)
}
