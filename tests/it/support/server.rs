//! An in-process HTTP/1.1 test server (hyper on 127.0.0.1:0) that serves deterministic bodies
//! of any size with real `Range`/`If-Range`/`206`/`416`/`ETag`/`Last-Modified` behaviour, and
//! named faults chosen per request by query parameters:
//!
//! | query | effect |
//! | --- | --- |
//! | `drop_after=N` | abort the connection after N body bytes of the response |
//! | `stall_after=N` | send N body bytes, then nothing until the client gives up |
//! | `fault_times=K` | only the path's first K requests get the drop/stall/status fault |
//! | `status=CODE` | answer CODE with an empty body (`retry_after=S` adds Retry-After) |
//! | `no_ranges=1` | ignore `Range` and always send 200 |
//! | `wrong_range=1` | answer a range request with a Content-Range one byte off |
//! | `validators=none\|weak\|lm` | no validators, only a weak ETag, only Last-Modified |
//! | `chunked=1` | no Content-Length |
//! | `rate=BPS` | throttle the body to BPS bytes per second |
//! | `slow_from=N` | throttle only answers that start at byte N or later |
//! | `delay_ms=N` | wait before answering (keeps the request in flight) |
//! | `trickle_after=N` | send N body bytes, then one byte every `trickle_ms` (default 2000) |
//! | `endless=1` | a chunked body that never ends |
//! | `digest=repr\|content\|digest\|amz\|goog` | announce the file's digest in that header |
//! | `digest_alg=sha-512` | with SHA-512 (default SHA-256; `goog` is always MD5) |
//! | `digest_wrong=1\|partial` | announce a wrong digest (on every answer, or on 206 only) |
//! | `ranged_status=CODE` | answer every request carrying `Range` with CODE (plain GETs work) |
//! | `date_form=rfc850\|asctime` | send `Last-Modified` in an obsolete date form |
//! | `ignore_if_range=1` | serve a range even when `If-Range` does not match (as many CDNs do) |
//! | `version_per_hit=1` | every request of the path gets a new version (its hit number) |
//! | `corrupt_at=N` | byte N of the file is sent wrong (when the answer carries it) |
//! | `link=VALUE` | send `Link: VALUE` (percent-decoded), as mirrorbits does |
//!
//! | `gzip=1` | claim `Content-Encoding: gzip` (the body is not really compressed) |
//! | `disposition=VALUE` | send `Content-Disposition: VALUE` (percent-decoded) |
//!
//! Other routes: `/redirect?to=URL` (302 to the percent-decoded URL; with `raw=1` its bytes
//! go out unencoded), `/chain/N` (302 to
//! `/chain/N-1`, and `/chain/0` serves a 10-byte file), `/loop` (302 to itself).
//!
//! URLs look like `/files/SIZE/NAME?faults`. A path's content "version" can be changed with
//! `set_version`, which changes its bytes, ETag and Last-Modified, like a file replaced on a
//! real server. The server counts requests, body bytes and the peak number of requests in flight.

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::Frame;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// Period of the content pattern: a prime, so misplaced bytes never line up by accident.
const PERIOD: usize = 65_521;
const CHUNK: usize = 64 * 1024;

/// What one request looked like, for assertions.
#[derive(Debug, Clone)]
pub struct Logged {
    pub path: String,
    /// Requests in flight when this one arrived (itself included).
    pub in_flight: usize,
    pub authorization: Option<String>,
    pub cookie: Option<String>,
    pub range: Option<String>,
    pub if_range: Option<String>,
    pub accept_encoding: Option<String>,
    pub user_agent: Option<String>,
    pub status: u16,
    /// The client's address (a proxy's, when one was used).
    pub peer: Option<std::net::SocketAddr>,
    /// When the answer's head was ready.
    pub at: std::time::Instant,
}

/// A tree added by `put_tree`: its root and its files (relative path, bytes).
type Tree = (String, Vec<(String, Vec<u8>)>);

#[derive(Default)]
pub struct Counters {
    requests: AtomicUsize,
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
    body_bytes: AtomicU64,
    hits: Mutex<HashMap<String, usize>>,
    versions: Mutex<HashMap<String, u32>>,
    hidden: Mutex<std::collections::HashSet<String>>,
    log: Mutex<Vec<Logged>>,
    /// Trees added by `put_tree`.
    trees: Mutex<Vec<Tree>>,
    /// What panicked in a handler: the test fails when the server is dropped, instead of the
    /// client quietly retrying a reset connection.
    handler_panics: Mutex<Vec<String>>,
}

pub struct TestServer {
    pub addr: std::net::SocketAddr,
    counters: Arc<Counters>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let panics = std::mem::take(&mut *self.counters.handler_panics.lock().unwrap());
        assert!(
            panics.is_empty() || std::thread::panicking(),
            "a handler of the test server panicked: {}",
            panics.join("; ")
        );
    }
}

/// A server that accepts connections and never answers (nor closes them): what a hung origin,
/// or a firewall that drops packets after the handshake, looks like to a client.
pub struct SilentServer {
    pub addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl SilentServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
        Self {
            addr,
            accepted,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A server that answers every request with the same raw bytes and closes the connection:
/// for answers no HTTP library would send (two `Content-Length` values, broken framing).
pub struct RawServer {
    pub addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl RawServer {
    pub async fn start(answer: &'static [u8]) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buffer = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let _ = stream.write_all(answer).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self {
            addr,
            accepted,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let counters = Arc::new(Counters::default());
        let (shutdown, mut stop) = oneshot::channel();
        let shared = Arc::clone(&counters);
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = &mut stop => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                };
                let counters = Arc::clone(&shared);
                let peer = stream.peer_addr().ok();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let counters = Arc::clone(&counters);
                        async move {
                            let answered = std::panic::AssertUnwindSafe(handle(
                                Arc::clone(&counters),
                                request,
                                peer,
                            ))
                            .catch_unwind()
                            .await;
                            Ok::<_, Infallible>(answered.unwrap_or_else(|panic| {
                                let said = panic
                                    .downcast_ref::<String>()
                                    .cloned()
                                    .or_else(|| {
                                        panic.downcast_ref::<&str>().map(|s| (*s).to_owned())
                                    })
                                    .unwrap_or_else(|| "a panic".to_owned());
                                counters.handler_panics.lock().unwrap().push(said);
                                empty(StatusCode::INTERNAL_SERVER_ERROR)
                            }))
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            counters,
            shutdown: Some(shutdown),
        }
    }

    /// `http://127.0.0.1:PORT/files/SIZE/NAME` plus `query` (without `?`) when not empty.
    pub fn file_url(&self, size: u64, name: &str, query: &str) -> String {
        let mut url = format!("http://{}/files/{size}/{name}", self.addr);
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        url
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn requests(&self) -> usize {
        self.counters.requests.load(Ordering::SeqCst)
    }

    /// Requests being answered right now.
    pub fn in_flight(&self) -> usize {
        self.counters.in_flight.load(Ordering::SeqCst)
    }

    pub fn peak_in_flight(&self) -> usize {
        self.counters.peak_in_flight.load(Ordering::SeqCst)
    }

    /// Body bytes the server has sent (or tried to send) in all responses.
    pub fn body_bytes(&self) -> u64 {
        self.counters.body_bytes.load(Ordering::SeqCst)
    }

    pub fn log(&self) -> Vec<Logged> {
        self.counters.log.lock().unwrap().clone()
    }

    /// Removes `path` (e.g. `/tree/b.txt`) from the server and its listings.
    pub fn hide(&self, path: &str) {
        self.counters.hidden.lock().unwrap().insert(path.to_owned());
    }

    /// Serves `files` (relative path, bytes) below `root` (e.g. `/names/`), with nginx-style
    /// listings of every directory (names percent-encoded in the links).
    pub fn put_tree(&self, root: &str, files: &[(&str, &[u8])]) {
        let files = files
            .iter()
            .map(|(path, bytes)| ((*path).to_owned(), bytes.to_vec()))
            .collect();
        self.counters
            .trees
            .lock()
            .unwrap()
            .push((root.to_owned(), files));
    }

    /// Replaces the file at `path` (e.g. `/files/100/a.bin`) with version `version`.
    pub fn set_version(&self, path: &str, version: u32) {
        self.counters
            .versions
            .lock()
            .unwrap()
            .insert(path.to_owned(), version);
    }
}

/// The bytes of `name` at `version`, `size` long: what a correct download must produce.
pub fn content(name: &str, version: u32, size: u64) -> Vec<u8> {
    let pattern = pattern(name, version);
    (0..size as usize).map(|i| pattern[i % PERIOD]).collect()
}

fn pattern(name: &str, version: u32) -> Vec<u8> {
    let mut seed: u64 = 0xcbf2_9ce4_8422_2325 ^ u64::from(version).wrapping_mul(0x9e37_79b9);
    for byte in name.bytes() {
        seed = (seed ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
    }
    (0..PERIOD)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

struct InFlight(Arc<Counters>);

impl InFlight {
    fn enter(counters: &Arc<Counters>) -> Self {
        let now = counters.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        counters.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(Arc::clone(counters))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn query_map(query: Option<&str>) -> HashMap<String, String> {
    query
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::new())
            .map_err(|n| match n {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
}

async fn handle(
    counters: Arc<Counters>,
    request: Request<hyper::body::Incoming>,
    peer: Option<std::net::SocketAddr>,
) -> Response<Body> {
    counters.requests.fetch_add(1, Ordering::SeqCst);
    let guard = InFlight::enter(&counters);
    let in_flight = counters.in_flight.load(Ordering::SeqCst);
    let path = request.uri().path().to_owned();
    let query = query_map(request.uri().query());
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let range = header("range");
    let if_range = header("if-range");
    let hit = {
        let mut hits = counters.hits.lock().unwrap();
        let count = hits.entry(path.clone()).or_default();
        *count += 1;
        *count
    };
    let faulty = query
        .get("fault_times")
        .and_then(|v| v.parse::<usize>().ok())
        .is_none_or(|times| hit <= times);
    let number = |key: &str| query.get(key).and_then(|v| v.parse::<u64>().ok());
    if let Some(delay) = number("delay_ms") {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }

    let conditional = (header("if-none-match"), header("if-modified-since"));
    let cookie = header("cookie");
    let response = match login_flow(&path, &query, cookie.as_deref()) {
        Some(response) => response,
        None => respond(
            &counters,
            &path,
            &query,
            faulty,
            (range.as_deref(), if_range.as_deref()),
            (conditional.0.as_deref(), conditional.1.as_deref()),
            guard,
        ),
    };
    counters.log.lock().unwrap().push(Logged {
        path,
        in_flight,
        authorization: header("authorization"),
        cookie: header("cookie"),
        range,
        if_range,
        accept_encoding: header("accept-encoding"),
        user_agent: header("user-agent"),
        status: response.status().as_u16(),
        peer,
        at: std::time::Instant::now(),
    });
    response
}

#[allow(clippy::too_many_lines)]
fn respond(
    counters: &Arc<Counters>,
    path: &str,
    query: &HashMap<String, String>,
    faulty: bool,
    (range, if_range): (Option<&str>, Option<&str>),
    (if_none_match, if_modified_since): (Option<&str>, Option<&str>),
    guard: InFlight,
) -> Response<Body> {
    let number = |key: &str| query.get(key).and_then(|v| v.parse::<u64>().ok());
    if let (Some(code), Some(_)) = (number("ranged_status"), range) {
        return empty(StatusCode::from_u16(code as u16).unwrap());
    }
    if let (Some(code), true) = (number("status"), faulty) {
        let mut response = empty(StatusCode::from_u16(code as u16).unwrap());
        if let Some(seconds) = number("retry_after") {
            response
                .headers_mut()
                .insert("retry-after", seconds.to_string().parse().unwrap());
        }
        return response;
    }
    if let Some(response) = redirect(path, query) {
        return response;
    }
    if counters.hidden.lock().unwrap().contains(path) {
        return empty(StatusCode::NOT_FOUND);
    }
    if path == "/tree-broken/" {
        return empty(StatusCode::INTERNAL_SERVER_ERROR);
    }
    if let Some(listing) = tree_listing(counters, path) {
        return listing;
    }
    if let Some(answer) = put_tree_answer(counters, path) {
        return answer;
    }
    let (size, name) = if let Some(file) = path.strip_prefix("/tree/") {
        match TREE.iter().find(|(p, _)| *p == file) {
            Some((p, size)) => (*size, *p),
            None => return empty(StatusCode::NOT_FOUND),
        }
    } else {
        let mut parts = path.trim_start_matches('/').split('/');
        let (Some("files"), Some(size), Some(name), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return empty(StatusCode::NOT_FOUND);
        };
        let Ok(size) = size.parse::<u64>() else {
            return empty(StatusCode::NOT_FOUND);
        };
        (size, name)
    };
    let version = if query.contains_key("version_per_hit") {
        // Another version for every request: a server whose content changes all the time.
        u32::try_from(*counters.hits.lock().unwrap().get(path).unwrap_or(&1)).unwrap()
    } else {
        counters
            .versions
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(1)
    };
    let etag = format!("\"{name}-v{version}-{size}\"");
    let day = version.min(9);
    let last_modified = match query.get("date_form").map(String::as_str) {
        // The two obsolete forms RFC 9110 §5.6.7 still makes recipients accept.
        Some("rfc850") => format!("Sunday, 0{day}-Nov-94 08:49:37 GMT"),
        Some("asctime") => format!("Sun Nov  {day} 08:49:37 1994"),
        _ => format!("Sun, 0{day} Nov 1994 08:49:37 GMT"),
    };
    let validators = query.get("validators").map(String::as_str);
    let (sent_etag, sent_lm) = match validators {
        Some("none") => (None, None),
        Some("weak") => (Some(format!("W/{etag}")), None),
        Some("lm") => (None, Some(last_modified.clone())),
        _ => (Some(etag.clone()), Some(last_modified.clone())),
    };
    // RFC 9110 §13.1.1-3: a conditional GET of an unchanged file gets 304 and no body.
    let unchanged = match (if_none_match, if_modified_since) {
        (Some(tags), _) => tags.split(',').any(|tag| {
            Some(tag.trim().trim_start_matches("W/"))
                == sent_etag.as_deref().map(|t| t.trim_start_matches("W/"))
        }),
        (None, Some(since)) => sent_lm.as_deref() == Some(since),
        (None, None) => false,
    };
    if unchanged {
        let mut response = empty(StatusCode::NOT_MODIFIED);
        if let Some(tag) = &sent_etag {
            response.headers_mut().insert("etag", tag.parse().unwrap());
        }
        if let Some(lm) = &sent_lm {
            response
                .headers_mut()
                .insert("last-modified", lm.parse().unwrap());
        }
        return response;
    }
    // RFC 9110 §13.1.5: a range applies only when If-Range matches strongly.
    let range_applies = match if_range {
        // Many CDNs and object-store gateways ignore `If-Range`.
        _ if query.contains_key("ignore_if_range") => true,
        None => true,
        Some(value) if value.starts_with("W/") => false,
        Some(value) if value.starts_with('"') => sent_etag.as_deref() == Some(value),
        Some(value) => sent_lm.as_deref() == Some(value),
    };
    let wanted = range
        .filter(|_| range_applies && !query.contains_key("no_ranges"))
        .and_then(|r| parse_range(r, size));
    let (status, start, end) = match wanted {
        Some(Ok((start, end))) => (StatusCode::PARTIAL_CONTENT, start, end),
        Some(Err(())) => {
            let mut response = empty(StatusCode::RANGE_NOT_SATISFIABLE);
            response
                .headers_mut()
                .insert("content-range", format!("bytes */{size}").parse().unwrap());
            return response;
        }
        None => (StatusCode::OK, 0, size),
    };
    let mut builder = Response::builder()
        .status(status)
        .header("accept-ranges", "bytes");
    if let Some(tag) = &sent_etag {
        builder = builder.header("etag", tag);
    }
    if let Some(lm) = &sent_lm {
        builder = builder.header("last-modified", lm);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        let shown_start = if query.contains_key("wrong_range") {
            start + 1
        } else {
            start
        };
        builder = builder.header(
            "content-range",
            format!("bytes {shown_start}-{}/{size}", end - 1),
        );
    }
    if query.contains_key("gzip") {
        builder = builder.header("content-encoding", "gzip");
    }
    if let Some(kind) = query.get("digest") {
        let wrong = match query.get("digest_wrong").map(String::as_str) {
            Some("partial") => status == StatusCode::PARTIAL_CONTENT,
            Some(_) => true,
            None => false,
        };
        let sha512 = query.get("digest_alg").map(String::as_str) == Some("sha-512");
        let (name, value) = announced_digest(kind, &content(name, version, size), sha512, wrong);
        builder = builder.header(name, value);
    }
    if let Some(value) = query.get("link") {
        let decoded = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
        builder = builder.header("link", decoded.as_ref());
    }
    if let Some(value) = query.get("disposition") {
        let decoded = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
        builder = builder.header("content-disposition", decoded.as_ref());
    }
    let endless = query.contains_key("endless");
    if !query.contains_key("chunked") && !endless {
        builder = builder.header("content-length", (end - start).to_string());
    }
    let end = if endless { u64::MAX } else { end };
    let fault = |key: &str| number(key).filter(|_| faulty);
    let body = body_stream(
        Arc::clone(counters),
        Bytes::from(cyclic(name, version)),
        start,
        end,
        fault("drop_after"),
        fault("stall_after"),
        fault("trickle_after").map(|after| (after, number("trickle_ms").unwrap_or(2000))),
        number("rate").filter(|_| number("slow_from").is_none_or(|from| start >= from)),
        fault("corrupt_at"),
        guard,
    );
    builder.body(body).unwrap()
}

/// The virtual tree served under `/tree/`: path and size. A file's bytes are
/// `content(path, version, size)`.
pub const TREE: &[(&str, u64)] = &[
    ("a.bin", 1000),
    ("b.txt", 2000),
    ("sub/c.bin", 3000),
    ("sub/deeper/d.bin", 4000),
    ("sub/deeper/e.iso", 5000),
    ("big/large.bin", 4 << 20),
];

/// An nginx-style autoindex page for a directory of the tree, with hostile links mixed in.
fn tree_listing(counters: &Counters, path: &str) -> Option<Response<Body>> {
    let directory = path.strip_prefix("/tree/")?;
    if !(directory.is_empty() || directory.ends_with('/')) {
        return None;
    }
    let hidden = counters.hidden.lock().unwrap().clone();
    let mut children = std::collections::BTreeSet::new();
    for (file, _) in TREE {
        if hidden.contains(&format!("/tree/{file}")) {
            continue;
        }
        if let Some(rest) = file.strip_prefix(directory) {
            match rest.split_once('/') {
                Some((sub, _)) => children.insert(format!("{sub}/")),
                None => children.insert(rest.to_owned()),
            };
        }
    }
    if children.is_empty() && !directory.is_empty() {
        return Some(empty(StatusCode::NOT_FOUND));
    }
    let mut html = format!(
        "<html><head><title>Index of {path}</title></head><body><h1>Index of {path}</h1><hr><pre>\n\
         <a href=\"../\">../</a>\n<a href=\"?C=N;O=D\">Name</a>\n\
         <a href=\"http://other.invalid/tree/x.bin\">elsewhere</a>\n\
         <a href=\"/files/10/outside.bin\">outside</a>\n<a href=\"../../../etc/passwd\">up</a>\n"
    );
    for child in children {
        let _ = writeln!(
            html,
            "<a href=\"{child}\">{child}</a>   22-Nov-2026 00:00   -"
        );
    }
    html.push_str("</pre><hr></body></html>\n");
    let mut response = Response::new(
        Full::new(Bytes::from(html))
            .map_err(|n| match n {})
            .boxed_unsync(),
    );
    response
        .headers_mut()
        .insert("content-type", "text/html".parse().unwrap());
    Some(response)
}

/// The header announcing `body`'s digest in the form `kind` names, wrong on purpose when
/// `wrong`.
fn announced_digest(kind: &str, body: &[u8], sha512: bool, wrong: bool) -> (&'static str, String) {
    use sha2::Digest as _;
    let sha512 = sha512 && !matches!(kind, "amz" | "goog");
    let mut digest = match (kind, sha512) {
        ("goog", _) => md5::Md5::digest(body).to_vec(),
        (_, true) => sha2::Sha512::digest(body).to_vec(),
        (_, false) => sha2::Sha256::digest(body).to_vec(),
    };
    if wrong {
        digest[0] ^= 0xff;
    }
    let encoded = base64(&digest);
    let algorithm = if sha512 { "sha-512" } else { "sha-256" };
    match kind {
        "repr" => ("repr-digest", format!("{algorithm}=:{encoded}:")),
        "content" => ("content-digest", format!("{algorithm}=:{encoded}:")),
        "digest" => ("digest", format!("{}={encoded}", algorithm.to_uppercase())),
        "amz" => ("x-amz-checksum-sha256", encoded),
        _ => ("x-goog-hash", format!("crc32c=AAAAAA==, md5={encoded}")),
    }
}

fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A login flow: `/login?to=PATH` answers 302 to PATH and sets the cookie `session=ok`;
/// `/members/NAME` serves a 1000-byte file only to a request carrying that cookie (403
/// otherwise).
fn login_flow(
    path: &str,
    query: &HashMap<String, String>,
    cookie: Option<&str>,
) -> Option<Response<Body>> {
    if path == "/login" {
        let to = percent_encoding::percent_decode_str(query.get("to")?)
            .decode_utf8_lossy()
            .into_owned();
        let mut response = empty(StatusCode::FOUND);
        response.headers_mut().insert("location", to.parse().ok()?);
        response.headers_mut().insert(
            "set-cookie",
            "session=ok; Path=/; HttpOnly".parse().unwrap(),
        );
        return Some(response);
    }
    let name = path.strip_prefix("/members/")?;
    let signed_in = cookie.is_some_and(|c| c.split(';').any(|kv| kv.trim() == "session=ok"));
    if !signed_in {
        return Some(empty(StatusCode::FORBIDDEN));
    }
    let body = content(name, 1, 1000);
    Some(Response::new(
        Full::new(Bytes::from(body))
            .map_err(|n| match n {})
            .boxed_unsync(),
    ))
}

/// A file or a listing of a tree added with `put_tree`.
fn put_tree_answer(counters: &Counters, path: &str) -> Option<Response<Body>> {
    let decoded = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .ok()?
        .into_owned();
    let trees = counters.trees.lock().unwrap();
    let (root, files) = trees
        .iter()
        .find(|(root, _)| decoded.starts_with(root.as_str()))?;
    let below = &decoded[root.len()..];
    let full = |bytes: Bytes, content_type: &str| {
        let mut response = Response::new(Full::new(bytes).map_err(|n| match n {}).boxed_unsync());
        response
            .headers_mut()
            .insert("content-type", content_type.parse().unwrap());
        response
    };
    if below.is_empty() || below.ends_with('/') {
        let mut children = std::collections::BTreeSet::new();
        for (file, _) in files {
            if let Some(rest) = file.strip_prefix(below) {
                match rest.split_once('/') {
                    Some((sub, _)) => children.insert(format!("{sub}/")),
                    None => children.insert(rest.to_owned()),
                };
            }
        }
        if children.is_empty() {
            return Some(empty(StatusCode::NOT_FOUND));
        }
        let mut html = String::from("<html><body><pre><a href=\"../\">../</a>\n");
        for child in children {
            let href: String = child
                .split('/')
                .map(|s| {
                    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
                        .to_string()
                })
                .collect::<Vec<_>>()
                .join("/");
            let _ = writeln!(html, "<a href=\"{href}\">{child}</a>");
        }
        html.push_str("</pre></body></html>\n");
        return Some(full(Bytes::from(html), "text/html"));
    }
    let (_, bytes) = files.iter().find(|(file, _)| file == below)?;
    counters
        .body_bytes
        .fetch_add(bytes.len() as u64, Ordering::SeqCst);
    let mut response = full(Bytes::from(bytes.clone()), "application/octet-stream");
    response.headers_mut().insert(
        "last-modified",
        "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
    );
    Some(response)
}

fn redirect(path: &str, query: &HashMap<String, String>) -> Option<Response<Body>> {
    let location = if path == "/redirect" {
        percent_encoding::percent_decode_str(query.get("to")?)
            .decode_utf8_lossy()
            .into_owned()
    } else if path == "/loop" {
        "/loop".to_owned()
    } else if let Some(n) = path.strip_prefix("/chain/") {
        match n.parse::<u32>().ok()? {
            0 => "/files/10/chained".to_owned(),
            n => format!("/chain/{}", n - 1),
        }
    } else {
        return None;
    };
    let mut response = empty(StatusCode::FOUND);
    // `raw=1`: the decoded target's bytes as they are (raw UTF-8, spaces), as some servers send.
    let value = if query.contains_key("raw") {
        hyper::header::HeaderValue::from_bytes(location.as_bytes()).ok()?
    } else {
        location.parse().ok()?
    };
    response.headers_mut().insert("location", value);
    Some(response)
}

/// The pattern repeated to cover PERIOD + CHUNK bytes, so any chunk is one zero-copy slice.
fn cyclic(name: &str, version: u32) -> Vec<u8> {
    let pattern = pattern(name, version);
    let mut out = Vec::with_capacity(PERIOD + CHUNK);
    while out.len() < PERIOD + CHUNK {
        let take = (PERIOD + CHUNK - out.len()).min(PERIOD);
        out.extend_from_slice(&pattern[..take]);
    }
    out
}

fn parse_range(value: &str, size: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = value.strip_prefix("bytes=")?;
    let (first, last) = spec.split_once('-')?;
    if first.is_empty() {
        let suffix: u64 = last.parse().ok()?;
        return Some(Ok((size.saturating_sub(suffix), size)));
    }
    let start: u64 = first.parse().ok()?;
    if start >= size {
        return Some(Err(()));
    }
    let end = if last.is_empty() {
        size
    } else {
        (last.parse::<u64>().ok()? + 1).min(size)
    };
    Some(Ok((start, end)))
}

#[allow(clippy::too_many_arguments)]
fn body_stream(
    counters: Arc<Counters>,
    cyclic: Bytes,
    start: u64,
    end: u64,
    drop_after: Option<u64>,
    stall_after: Option<u64>,
    trickle: Option<(u64, u64)>,
    rate: Option<u64>,
    corrupt_at: Option<u64>,
    guard: InFlight,
) -> Body {
    let began = Instant::now();
    let state = (start, 0u64, guard);
    let stream = futures_util::stream::unfold(state, move |(position, sent, guard)| {
        let counters = Arc::clone(&counters);
        let cyclic = cyclic.clone();
        async move {
            if position >= end {
                return None;
            }
            if drop_after.is_some_and(|limit| sent >= limit) {
                // Let hyper flush what was sent, so the client receives exactly `limit` bytes.
                tokio::time::sleep(Duration::from_millis(30)).await;
                let error =
                    std::io::Error::new(std::io::ErrorKind::ConnectionReset, "injected drop");
                return Some((Err(error), (end, sent, guard)));
            }
            if stall_after.is_some_and(|limit| sent >= limit) {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            let mut length = (end - position).min(CHUNK as u64);
            if let Some((after, every_ms)) = trickle {
                if sent >= after {
                    tokio::time::sleep(Duration::from_millis(every_ms)).await;
                    length = 1;
                } else {
                    length = length.min(after - sent);
                }
            }
            for limit in [drop_after, stall_after].into_iter().flatten() {
                if sent < limit {
                    length = length.min(limit - sent);
                }
            }
            if let Some(rate) = rate {
                // Small paced chunks: a closed connection is noticed within ~10 ms.
                length = length.min((rate / 100).max(1));
                let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(began.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
            let offset = (position % PERIOD as u64) as usize;
            let mut chunk = cyclic.slice(offset..offset + length as usize);
            if let Some(bad) = corrupt_at.filter(|at| (position..position + length).contains(at)) {
                let mut wrong = chunk.to_vec();
                wrong[(bad - position) as usize] ^= 0xff;
                chunk = Bytes::from(wrong);
            }
            counters.body_bytes.fetch_add(length, Ordering::SeqCst);
            Some((
                Ok(Frame::data(chunk)),
                (position + length, sent + length, guard),
            ))
        }
    });
    StreamBody::new(stream.boxed()).boxed_unsync()
}
