//! `haul sync SOURCE DIR`: mirror a manifest or an HTTP directory listing into DIR, fetching
//! only what is new or changed, replacing files atomically, and deleting (with `--delete`)
//! only regular files inside DIR that the source no longer has.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use haul::input::parse_input;
use haul::naming::{file_name_from_url, join_inside, sanitize_file_name};
use haul::{Checksum, Downloader, OnExists, Request};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::args::SyncArgs;
use crate::render::Display;
use crate::{EXIT_CHECKSUM, EXIT_FAILED, EXIT_INTERRUPTED, UsageError};

/// One file of the source.
struct Item {
    /// Path below DIR, `/`-separated, every segment safe.
    path: String,
    url: Url,
    mirrors: Vec<Url>,
    size: Option<u64>,
    checksum: Option<Checksum>,
}

/// What a sync will do with one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    New,
    Update,
    /// Ask the server (conditional request); unchanged unless it sends a new version.
    Check,
    Unchanged,
}

/// What the last sync learned about each file, kept in DIR.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Memory {
    version: u32,
    files: BTreeMap<String, Remembered>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Remembered {
    size: u64,
    etag: Option<String>,
    last_modified: Option<String>,
}

pub async fn sync(args: SyncArgs) -> anyhow::Result<ExitCode> {
    let shard = args.shard.as_deref().map(parse_shard).transpose()?;
    let downloader = crate::downloader_builder(&args.common)?
        .on_exists(OnExists::Overwrite)
        .remote_time(true)
        .build()
        .map_err(|e| UsageError(haul::error_chain(&e)))?;
    let source_items = read_source(&args, &downloader).await?;
    let checksums = match &args.checksums {
        Some(location) => read_checksums(location, &downloader).await?,
        None => HashMap::new(),
    };
    let filters = Filters::new(&args.include, &args.exclude);
    let in_scope = |path: &str| filters.accepts(path) && shard.is_none_or(|s| in_shard(path, s));
    let mut items: Vec<Item> = source_items
        .into_iter()
        .filter(|item| in_scope(&item.path))
        .collect();
    for item in &mut items {
        if item.checksum.is_none() {
            item.checksum = checksums.get(&item.path).cloned();
        }
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("failed to create `{}`", args.dir.display()))?;
    let memory_path = args.dir.join(memory_name(shard));
    let memory = load_memory(&memory_path);
    let mut plan = Vec::with_capacity(items.len());
    for item in items {
        let local = join_inside(&args.dir, &item.path)?;
        let action = classify(&item, &local, memory.files.get(&item.path)).await;
        plan.push((item, local, action));
    }
    let wanted: HashSet<String> = plan.iter().map(|(item, _, _)| item.path.clone()).collect();
    let doomed = if args.delete {
        if wanted.is_empty() {
            bail!(
                "the source lists no files: refusing to delete anything in `{}`",
                args.dir.display()
            );
        }
        extraneous_files(&args.dir, &wanted, &in_scope)?
    } else {
        Vec::new()
    };
    if args.dry_run {
        return dry_run(&downloader, &plan, &doomed, &memory, args.common.json).await;
    }
    run_plan(&args, &downloader, plan, doomed, memory, &memory_path).await
}

/// `K/N`: this machine's share is the paths whose hash modulo N is K (K from 0 to N-1).
fn parse_shard(text: &str) -> anyhow::Result<(u64, u64)> {
    let parsed = text
        .split_once('/')
        .and_then(|(k, n)| Some((k.trim().parse::<u64>().ok()?, n.trim().parse::<u64>().ok()?)));
    match parsed {
        Some((k, n)) if n > 0 && k < n => Ok((k, n)),
        _ => bail!(UsageError(format!(
            "--shard `{text}` must be K/N with 0 <= K < N (e.g. 0/4)"
        ))),
    }
}

/// FNV-1a (64-bit) of the path's UTF-8 bytes: stable across machines, versions and runs.
fn path_hash(path: &str) -> u64 {
    path.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn in_shard(path: &str, (k, n): (u64, u64)) -> bool {
    path_hash(path) % n == k
}

fn memory_name(shard: Option<(u64, u64)>) -> String {
    match shard {
        Some((k, n)) => format!(".haul-sync.{k}-of-{n}.json"),
        None => ".haul-sync.json".to_owned(),
    }
}

/// Files are ours to manage unless they are haul's own working files.
#[expect(
    clippy::case_sensitive_file_extension_comparisons,
    reason = "haul writes these suffixes itself, in lower case"
)]
fn is_working_file(name: &str) -> bool {
    name.starts_with(".haul-sync")
        || name.ends_with(".part")
        || name.ends_with(".part.haul")
        || name.ends_with(".part.haul.tmp")
}

async fn read_source(args: &SyncArgs, downloader: &Downloader) -> anyhow::Result<Vec<Item>> {
    let url = Url::parse(&args.source)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"));
    if args.recursive {
        let Some(url) = url else {
            bail!(UsageError(format!(
                "--recursive needs an http(s) directory URL, not `{}`",
                args.source
            )));
        };
        let listed = downloader
            .list_directory(&url, args.max_depth)
            .await
            .map_err(|e| anyhow::anyhow!("listing {url} failed: {}", haul::error_chain(&e)))?;
        return Ok(listed
            .into_iter()
            .map(|file| Item {
                path: file.path,
                url: file.url,
                mirrors: Vec::new(),
                size: file.size,
                checksum: None,
            })
            .collect());
    }
    let text = match url {
        Some(url) => {
            let (bytes, _) = downloader.fetch_small(&url).await.map_err(|e| {
                anyhow::anyhow!("fetching the manifest failed: {}", haul::error_chain(&e))
            })?;
            String::from_utf8_lossy(&bytes).into_owned()
        }
        None if args.source == "-" => std::io::read_to_string(std::io::stdin())?,
        None => std::fs::read_to_string(&args.source)
            .map_err(|e| UsageError(format!("failed to read manifest `{}`: {e}", args.source)))?,
    };
    let entries = parse_input(&text).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        UsageError(format!(
            "the manifest has {} bad line(s); nothing was done:\n  {}",
            errors.len(),
            lines.join("\n  ")
        ))
    })?;
    let mut items = Vec::new();
    for entry in entries {
        let Some(url) = entry.urls.first().cloned() else {
            continue;
        };
        let name = match &entry.out {
            Some(out) => out.clone(),
            None => file_name_from_url(&url)?,
        };
        let joined = match &entry.dir {
            Some(dir) => format!("{}/{name}", dir.trim_end_matches('/')),
            None => name,
        };
        let path = safe_relative(&joined)
            .ok_or_else(|| UsageError(format!("line {}: unsafe path `{joined}`", entry.line)))?;
        items.push(Item {
            path,
            url,
            mirrors: entry.urls[1..].to_vec(),
            size: entry.size,
            checksum: entry.checksum,
        });
    }
    Ok(items)
}

/// A relative path with every segment made safe, or `None` for `..`, absolute paths and the like.
fn safe_relative(path: &str) -> Option<String> {
    if path.starts_with('/') {
        return None;
    }
    let mut segments = Vec::new();
    for segment in path.split('/').filter(|s| !s.is_empty() && *s != ".") {
        if segment == ".." {
            return None;
        }
        segments.push(sanitize_file_name(segment)?);
    }
    (!segments.is_empty()).then(|| segments.join("/"))
}

async fn read_checksums(
    location: &str,
    downloader: &Downloader,
) -> anyhow::Result<HashMap<String, Checksum>> {
    let text = match Url::parse(location)
        .ok()
        .filter(|u| u.scheme().starts_with("http"))
    {
        Some(url) => {
            let (bytes, _) = downloader
                .fetch_small(&url)
                .await
                .map_err(|e| anyhow::anyhow!("fetching {url} failed: {}", haul::error_chain(&e)))?;
            String::from_utf8_lossy(&bytes).into_owned()
        }
        None => std::fs::read_to_string(location)
            .map_err(|e| UsageError(format!("failed to read `{location}`: {e}")))?,
    };
    let mut sums = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((digest, name)) = line.split_once(char::is_whitespace) else {
            bail!(UsageError(format!(
                "{location}: line {}: expected `DIGEST  PATH`",
                index + 1
            )));
        };
        let name = name
            .trim_start()
            .trim_start_matches('*')
            .trim_start_matches("./");
        let algorithm = match digest.len() {
            64 => "sha-256",
            128 => "sha-512",
            _ => bail!(UsageError(format!(
                "{location}: line {}: `{digest}` is neither a SHA-256 nor a SHA-512 digest",
                index + 1
            ))),
        };
        let checksum: Checksum = format!("{algorithm}={digest}")
            .parse()
            .map_err(|e: haul::Error| UsageError(format!("{location}: line {}: {e}", index + 1)))?;
        if let Some(path) = safe_relative(name) {
            sums.insert(path, checksum);
        }
    }
    Ok(sums)
}

fn load_memory(path: &Path) -> Memory {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Memory>(&bytes).ok())
        .filter(|memory| memory.version == 1)
        .unwrap_or_default()
}

fn save_memory(path: &Path, memory: &Memory) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, serde_json::to_vec_pretty(memory)?)
        .with_context(|| format!("failed to write `{}`", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("failed to write `{}`", path.display()))
}

/// Decides from what is on disk whether a file needs the network at all.
async fn classify(item: &Item, local: &Path, remembered: Option<&Remembered>) -> Action {
    let Ok(metadata) = tokio::fs::symlink_metadata(local).await else {
        return Action::New;
    };
    if !metadata.is_file() || item.size.is_some_and(|size| size != metadata.len()) {
        return Action::Update;
    }
    if let Some(expected) = &item.checksum {
        return match hash_local(local, expected).await {
            Some(actual) if &actual == expected => Action::Unchanged,
            _ => Action::Update,
        };
    }
    if remembered.is_some_and(|r| r.size != metadata.len()) {
        return Action::Update;
    }
    Action::Check
}

async fn hash_local(path: &Path, like: &Checksum) -> Option<Checksum> {
    use sha2::Digest;
    let path = path.to_path_buf();
    let algorithm = like.algorithm();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut file = std::fs::File::open(path).ok()?;
        let mut buffer = vec![0u8; 1 << 20];
        let mut sha256 = sha2::Sha256::new();
        let mut sha512 = sha2::Sha512::new();
        loop {
            let read = file.read(&mut buffer).ok()?;
            if read == 0 {
                break;
            }
            sha256.update(&buffer[..read]);
            sha512.update(&buffer[..read]);
        }
        let hex = match algorithm {
            haul::Algorithm::Sha512 => hex::encode(sha512.finalize()),
            _ => hex::encode(sha256.finalize()),
        };
        format!("{}={hex}", algorithm.name()).parse().ok()
    })
    .await
    .ok()
    .flatten()
}

/// The validators to revalidate a local file with: what the last sync remembered, or else
/// the file's modification time (haul sets it from `Last-Modified`).
fn validators_for(
    local: &Path,
    remembered: Option<&Remembered>,
) -> (Option<String>, Option<String>) {
    if let Some(r) = remembered
        && (r.etag.is_some() || r.last_modified.is_some())
    {
        return (r.etag.clone(), r.last_modified.clone());
    }
    let modified = std::fs::metadata(local)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| haul::format_http_date(d.as_secs()));
    (None, modified)
}

/// Regular files under `dir` (symlinks neither followed nor touched) that are in scope but
/// not in the source.
fn extraneous_files(
    dir: &Path,
    wanted: &HashSet<String>,
    in_scope: &dyn Fn(&str) -> bool,
) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut doomed = Vec::new();
    let mut pending = vec![(dir.to_path_buf(), String::new())];
    while let Some((folder, prefix)) = pending.pop() {
        let entries = std::fs::read_dir(&folder)
            .with_context(|| format!("failed to list `{}`", folder.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("failed to list `{}`", folder.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let relative = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            // `file_type` does not follow symlinks.
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push((entry.path(), relative));
            } else if kind.is_file()
                && !is_working_file(&name)
                && in_scope(&relative)
                && !wanted.contains(&relative)
            {
                doomed.push((relative, entry.path()));
            }
        }
    }
    doomed.sort();
    Ok(doomed)
}

async fn dry_run(
    downloader: &Downloader,
    plan: &[(Item, PathBuf, Action)],
    doomed: &[(String, PathBuf)],
    memory: &Memory,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let say = |action: &str, path: &str| {
        if json {
            println!(
                "{}",
                serde_json::json!({"v": 1, "event": "plan", "action": action, "path": path})
            );
        } else {
            println!("{action:<9} {path}");
        }
    };
    for (item, local, action) in plan {
        let shown = match action {
            Action::New => "new",
            Action::Update => "update",
            Action::Unchanged => "unchanged",
            Action::Check => {
                let (etag, modified) = validators_for(local, memory.files.get(&item.path));
                match downloader
                    .is_unchanged(&item.url, etag.as_deref(), modified.as_deref())
                    .await
                {
                    Ok(true) => "unchanged",
                    Ok(false) => "update",
                    Err(error) => {
                        eprintln!("warning: {}: {}", item.path, haul::error_chain(&error));
                        "check"
                    }
                }
            }
        };
        say(shown, &item.path);
    }
    for (path, _) in doomed {
        say("delete", path);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Default)]
struct Counts {
    new: usize,
    updated: usize,
    unchanged: usize,
    deleted: usize,
    failed: usize,
}

async fn run_plan(
    args: &SyncArgs,
    downloader: &Downloader,
    plan: Vec<(Item, PathBuf, Action)>,
    doomed: Vec<(String, PathBuf)>,
    mut memory: Memory,
    memory_path: &Path,
) -> anyhow::Result<ExitCode> {
    let mut counts = Counts::default();
    let mut requests = Vec::new();
    let mut fetched: Vec<(String, Action)> = Vec::new();
    for (item, local, action) in plan {
        if action == Action::Unchanged {
            counts.unchanged += 1;
            continue;
        }
        let mut request =
            Request::from_url(item.url.clone())?.into_dir_at(&args.dir, &item.path)?;
        if let Some(checksum) = item.checksum.clone() {
            request = request.with_checksum(checksum);
        }
        for mirror in &item.mirrors {
            request = request.with_mirror(mirror.as_str())?;
        }
        if action == Action::Check {
            let (etag, modified) = validators_for(&local, memory.files.get(&item.path));
            request = request.revalidate_with(etag, modified);
        }
        fetched.push((item.path, action));
        requests.push(request);
    }
    let (renderer, cancel, mut outcomes) = crate::start_batch(downloader, requests, &args.common)?;
    while let Some(outcome) = outcomes.next().await {
        let Some((path, action)) = fetched.get(outcome.index) else {
            continue;
        };
        match outcome.result {
            Ok(done) => {
                match (done.already_present, action) {
                    (true, _) => counts.unchanged += 1,
                    (false, Action::New) => counts.new += 1,
                    (false, _) => counts.updated += 1,
                }
                memory.files.insert(
                    path.clone(),
                    Remembered {
                        size: done.bytes,
                        etag: done.etag,
                        last_modified: done.last_modified,
                    },
                );
            }
            Err(_) => counts.failed += 1,
        }
    }
    let summary = renderer.finish();
    let interrupted = cancel.is_cancelled();
    // A failed or interrupted sync deletes nothing: what failed may still be wanted.
    if !interrupted && counts.failed == 0 {
        counts.deleted = delete_files(&doomed, &mut memory);
    } else if !doomed.is_empty() {
        eprintln!(
            "not deleting {} extraneous file(s): the sync did not complete",
            doomed.len()
        );
    }
    memory.version = 1;
    save_memory(memory_path, &memory)?;
    let code = if interrupted {
        EXIT_INTERRUPTED
    } else if summary.integrity_failures > 0 {
        EXIT_CHECKSUM
    } else if counts.failed > 0 {
        EXIT_FAILED
    } else {
        0
    };
    renderer.summarize(&summary, interrupted, code);
    report(&counts, &args.common);
    Ok(ExitCode::from(code))
}

fn delete_files(doomed: &[(String, PathBuf)], memory: &mut Memory) -> usize {
    let mut deleted = 0;
    for (relative, path) in doomed {
        match std::fs::remove_file(path) {
            Ok(()) => {
                deleted += 1;
                memory.files.remove(relative);
            }
            Err(error) => eprintln!("warning: could not delete `{}`: {error}", path.display()),
        }
    }
    deleted
}

fn report(counts: &Counts, common: &crate::args::CommonArgs) {
    if common.json {
        println!(
            "{}",
            serde_json::json!({
                "v": 1, "event": "sync_summary", "new": counts.new, "updated": counts.updated,
                "unchanged": counts.unchanged, "deleted": counts.deleted, "failed": counts.failed,
            })
        );
    }
    if !matches!(crate::display(common), Display::ErrorsOnly) {
        eprintln!(
            "sync: {} new, {} updated, {} unchanged, {} deleted, {} failed",
            counts.new, counts.updated, counts.unchanged, counts.deleted, counts.failed
        );
    }
}

/// `--include`/`--exclude` globs: `*` and `?` stay within a path segment, `**` crosses them. A
/// pattern without `/` applies to the file name, one with `/` to the whole relative path.
struct Filters {
    include: Vec<String>,
    exclude: Vec<String>,
}

impl Filters {
    fn new(include: &[String], exclude: &[String]) -> Self {
        Self {
            include: include.to_vec(),
            exclude: exclude.to_vec(),
        }
    }

    fn accepts(&self, path: &str) -> bool {
        let name = path.rsplit('/').next().unwrap_or(path);
        let matches = |pattern: &String| {
            let subject = if pattern.contains('/') { path } else { name };
            glob_match(pattern.as_bytes(), subject.as_bytes())
        };
        (self.include.is_empty() || self.include.iter().any(matches))
            && !self.exclude.iter().any(matches)
    }
}

fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) if rest.first() == Some(&b'*') => {
            let rest = rest[1..].strip_prefix(b"/").unwrap_or(&rest[1..]);
            (0..=text.len()).any(|skip| glob_match(rest, &text[skip..]))
        }
        Some((b'*', rest)) => (0..=text.len())
            .take_while(|skip| !text[..*skip].contains(&b'/'))
            .any(|skip| glob_match(rest, &text[skip..])),
        Some((b'?', rest)) => text
            .split_first()
            .is_some_and(|(c, tail)| *c != b'/' && glob_match(rest, tail)),
        Some((c, rest)) => text
            .split_first()
            .is_some_and(|(t, tail)| t == c && glob_match(rest, tail)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_names_and_paths() {
        let cases = [
            ("*.iso", "debian.iso", true),
            ("*.iso", "a/b/debian.iso", true),
            ("*.iso", "debian.iso.sig", false),
            ("pool/*.deb", "pool/a.deb", true),
            ("pool/*.deb", "pool/x/a.deb", false),
            ("pool/**/*.deb", "pool/x/y/a.deb", true),
            ("pool/**", "pool/x/y/a.deb", true),
            ("?.txt", "a.txt", true),
            ("?.txt", "ab.txt", false),
        ];
        for (pattern, path, expected) in cases {
            let filters = Filters::new(&[pattern.to_owned()], &[]);
            assert_eq!(filters.accepts(path), expected, "{pattern} ~ {path}");
        }
        let both = Filters::new(&["*.deb".into()], &["*-dbg*".into()]);
        assert!(both.accepts("a.deb"));
        assert!(!both.accepts("a-dbg.deb"));
    }

    #[test]
    fn shards_split_every_path_exactly_once() {
        let paths: Vec<String> = (0..1000)
            .map(|i| format!("dir{}/file{i}.bin", i % 7))
            .collect();
        for n in [1, 2, 3, 8] {
            let mut seen = vec![0; paths.len()];
            for k in 0..n {
                for (i, path) in paths.iter().enumerate() {
                    if in_shard(path, (k, n)) {
                        seen[i] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&count| count == 1), "n = {n}");
        }
        assert_eq!(
            path_hash("a"),
            0xaf63_dc4c_8601_ec8c,
            "FNV-1a, as documented"
        );
        assert!(parse_shard("4/4").is_err() && parse_shard("1/0").is_err());
        assert_eq!(parse_shard("2/4").unwrap(), (2, 4));
    }

    #[test]
    fn manifest_paths_stay_inside() {
        assert_eq!(safe_relative("a/b.bin").as_deref(), Some("a/b.bin"));
        assert_eq!(safe_relative("./a//b.bin").as_deref(), Some("a/b.bin"));
        for bad in ["../x", "/etc/passwd", "a/../../x", ""] {
            assert_eq!(safe_relative(bad), None, "{bad}");
        }
    }
}
