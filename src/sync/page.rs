//! What one page of a listing (an HTML index or a bucket listing) says.

use url::Url;

/// A file on a listing page: its exact relative path (or the raw path, when it cannot be
/// represented), its URL, its size when the page says.
pub(crate) type Found = (Result<String, String>, Url, Option<u64>);

/// What one listing page says.
pub(crate) struct Page {
    /// Files: exact relative path (or why it cannot be represented), URL, size.
    pub(crate) files: Vec<Found>,
    /// Subdirectories (or further pages) to read.
    pub(crate) more: Vec<Url>,
    /// Entry names and kinds, to recognise a page that repeats an ancestor.
    pub(crate) fingerprint: u64,
}
