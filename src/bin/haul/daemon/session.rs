//! The session file (`--save-session`): every unfinished download in aria2's input-file
//! format, with its `gid=` and `pause=true`, so a restarted daemon (or `haul get -i`, or aria2)
//! picks the queue up again. Written whole to a temporary file, synced, and renamed over the
//! old one, on every change and at shutdown: a crash at any moment leaves the old session or
//! the new one, never half of one.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use haul::input::{InputEntry, parse_input_lenient};

use super::downloads::Downloads;
use super::entry::Gid;
use super::options::Options;

pub(crate) struct Session {
    path: PathBuf,
    /// One write at a time, each of the state at its start.
    writing: tokio::sync::Mutex<()>,
}

impl Session {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            writing: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the unfinished downloads now.
    pub(crate) async fn save(&self, downloads: &Downloads) -> std::io::Result<()> {
        let _one_at_a_time = self.writing.lock().await;
        let text = render(downloads);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&path, text.as_bytes()))
            .await
            .map_err(std::io::Error::other)?
    }

    /// Saves after every change, until the process ends (a burst of changes is one write).
    pub(crate) fn keep_saved(self: Arc<Self>, downloads: Arc<Downloads>) {
        tokio::spawn(async move {
            loop {
                downloads.changed.notified().await;
                if let Err(error) = self.save(&downloads).await {
                    eprintln!(
                        "warning: cannot write the session file {}: {error}",
                        self.path.display()
                    );
                }
            }
        });
    }
}

fn render(downloads: &Downloads) -> String {
    let mut text = String::from("# haul daemon session: the unfinished downloads\n");
    for (gid, request, paused) in downloads.unfinished() {
        text.push_str(&haul::input::entry_lines(&request));
        text.push_str("  gid=");
        text.push_str(&gid.to_string());
        text.push('\n');
        if paused {
            text.push_str("  pause=true\n");
        }
    }
    text
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    {
        // Only its owner reads it: entries may carry credentials.
        let mut file = std::fs::File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, path)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Adds the downloads of an input or session file; a line that cannot be added is reported
/// and skipped. The count added.
pub(crate) fn load(downloads: &Arc<Downloads>, path: &Path) -> anyhow::Result<usize> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let parsed = parse_input_lenient(&text).map_err(|errors| {
        anyhow::anyhow!(
            "{}: {}",
            path.display(),
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    for warning in &parsed.warnings {
        eprintln!("warning: {}: {warning} (ignored)", path.display());
    }
    let mut added = 0;
    for entry in parsed.entries {
        let line = entry.line;
        let uris = entry.urls.iter().map(ToString::to_string).collect();
        match downloads.add(uris, options_of(&entry), None) {
            Ok(_) => added += 1,
            Err(error) => eprintln!(
                "warning: {}: line {line}: {} (skipped)",
                path.display(),
                error.message
            ),
        }
    }
    Ok(added)
}

/// An input-file entry as the aria2 options `addUri` takes.
fn options_of(entry: &InputEntry) -> Options {
    let mut options = Options::new();
    let mut put = |key: &str, value: String| {
        options.insert(key.to_owned(), value);
    };
    if let Some(dir) = &entry.dir {
        put("dir", dir.clone());
    }
    if let Some(out) = &entry.out {
        put("out", out.clone());
    }
    if let Some(checksum) = &entry.checksum {
        put("checksum", checksum.to_string());
    }
    if !entry.headers.is_empty() {
        let lines: Vec<String> = entry
            .headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}"))
            .collect();
        put("header", lines.join("\n"));
    }
    if let Some(user) = &entry.user {
        put("http-user", user.clone());
    }
    if let Some(password) = &entry.password {
        put("http-passwd", password.clone());
    }
    if let Some(rate) = entry.rate_limit {
        put("max-download-limit", rate.to_string());
    }
    if let Some(connections) = entry.connections {
        put("split", connections.to_string());
    }
    if let Some(gid) = &entry.gid
        && Gid::parse(gid).is_ok()
    {
        put("gid", gid.clone());
    }
    if entry.paused {
        put("pause", "true".into());
    }
    options
}
