//! A scripted server for the fault simulation: every file has a list of versions, and every
//! request of a file takes the next fault of its script (and a plain answer once the script is
//! used up). It remembers every version it served, so a test can say what a correct final file
//! may be: byte for byte one of them.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::Frame;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::server::content;

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// What one request of a file meets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// A correct answer.
    None,
    /// The connection breaks after this many body bytes.
    DropAfter(u64),
    /// The file is replaced before this answer: new bytes, new `ETag` and `Last-Modified`,
    /// same length.
    NewVersion,
    /// The file is replaced and the server keeps its validators, but the length changes (the
    /// length is then all that can tell).
    NewLengthSameValidators,
    /// `Range` is ignored: a `200` with the whole file.
    IgnoreRange,
    /// `If-Range` is ignored: the range is served whatever version the client has.
    IgnoreIfRange,
    /// This status, empty body.
    Status(u16),
    /// A `206` whose `Content-Range` starts one byte off.
    WrongRange,
    /// The headers, then nothing for this long.
    Stall(u64),
}

#[derive(Debug, Clone)]
struct Version {
    size: u64,
    seed: u32,
    etag: String,
    last_modified: String,
}

#[derive(Debug, Default)]
struct File {
    versions: Vec<Version>,
    script: VecDeque<Fault>,
    /// Versions whose bytes were sent (in part or whole).
    served: Vec<usize>,
    disposition: Option<String>,
}

/// The bytes of every version made so far, made once (by name, seed and size).
type Bodies = Arc<Mutex<HashMap<(String, u32, u64), Bytes>>>;

fn body_of(bodies: &Bodies, name: &str, seed: u32, size: u64) -> Bytes {
    bodies
        .lock()
        .unwrap()
        .entry((name.to_owned(), seed, size))
        .or_insert_with(|| Bytes::from(content(name, seed, size)))
        .clone()
}

/// The scripted server.
pub struct SimServer {
    pub addr: std::net::SocketAddr,
    files: Arc<Mutex<HashMap<String, File>>>,
    bodies: Bodies,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SimServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let files: Arc<Mutex<HashMap<String, File>>> = Arc::default();
        let bodies: Bodies = Arc::default();
        let shared = Arc::clone(&files);
        let shared_bodies = Arc::clone(&bodies);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let files = Arc::clone(&shared);
                let bodies = Arc::clone(&shared_bodies);
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let files = Arc::clone(&files);
                        let bodies = Arc::clone(&bodies);
                        async move { Ok::<_, Infallible>(answer(&files, &bodies, &request)) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            files,
            bodies,
            task,
        }
    }

    /// Serves `name` (at `/NAME`), `size` bytes long, with this script of faults; `seed` makes
    /// its bytes (and a mirror serving the same file uses the same seed).
    pub fn put(&self, name: &str, size: u64, seed: u32, script: Vec<Fault>) {
        let version = Version {
            size,
            seed,
            etag: format!("\"{name}-{seed}\""),
            last_modified: last_modified(seed),
        };
        self.files.lock().unwrap().insert(
            name.to_owned(),
            File {
                versions: vec![version],
                script: script.into(),
                served: Vec::new(),
                disposition: None,
            },
        );
    }

    /// Answers `name` with `Content-Disposition: attachment; filename="DISPOSITION"`.
    pub fn name_it(&self, name: &str, disposition: &str) {
        if let Some(file) = self.files.lock().unwrap().get_mut(name) {
            file.disposition = Some(disposition.to_owned());
        }
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.addr)
    }

    /// The bytes of every version of `name` this server sent.
    pub fn served(&self, name: &str) -> Vec<Vec<u8>> {
        let files = self.files.lock().unwrap();
        let Some(file) = files.get(name) else {
            return Vec::new();
        };
        let mut indexes = file.served.clone();
        indexes.sort_unstable();
        indexes.dedup();
        indexes
            .into_iter()
            .map(|i| {
                let v = &file.versions[i];
                body_of(&self.bodies, name, v.seed, v.size).to_vec()
            })
            .collect()
    }
}

/// A `Last-Modified` of its own for every seed below 2,419,200 (28 days of seconds): two
/// versions never share one by chance.
fn last_modified(seed: u32) -> String {
    let second = seed % 86_400;
    format!(
        "Sun, {:02} Nov 1994 {:02}:{:02}:{:02} GMT",
        1 + (seed / 86_400) % 28,
        second / 3600,
        second % 3600 / 60,
        second % 60
    )
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

#[allow(clippy::too_many_lines)]
fn answer(
    files: &Mutex<HashMap<String, File>>,
    bodies: &Bodies,
    request: &Request<hyper::body::Incoming>,
) -> Response<Body> {
    let name = request.uri().path().trim_start_matches('/').to_owned();
    let header = |key: &str| {
        request
            .headers()
            .get(key)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (range, if_range) = (header("range"), header("if-range"));
    let (fault, version, index, disposition) = {
        let mut files = files.lock().unwrap();
        let Some(file) = files.get_mut(&name) else {
            return empty(StatusCode::NOT_FOUND);
        };
        let fault = file.script.pop_front().unwrap_or(Fault::None);
        let last = file.versions.last().cloned().expect("a version");
        match fault {
            Fault::NewVersion => {
                // Seeds stay small (and so their `Last-Modified` unique).
                let seed = last.seed + 1_000 * u32::try_from(file.versions.len()).unwrap();
                file.versions.push(Version {
                    size: last.size,
                    seed,
                    etag: format!("\"{name}-{seed}\""),
                    last_modified: last_modified(seed),
                });
            }
            Fault::NewLengthSameValidators => {
                let seed = last.seed + 1_000 * u32::try_from(file.versions.len()).unwrap() + 500;
                file.versions.push(Version {
                    size: last.size + 1 + u64::from(seed % 1000),
                    seed,
                    ..last
                });
            }
            _ => {}
        }
        let index = file.versions.len() - 1;
        (
            fault,
            file.versions[index].clone(),
            index,
            file.disposition.clone(),
        )
    };
    if let Fault::Status(code) = fault {
        return empty(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    }
    let range_applies = match (&fault, &if_range) {
        (Fault::IgnoreRange, _) => false,
        (Fault::IgnoreIfRange, _) | (_, None) => true,
        (_, Some(value)) if value.starts_with('"') => *value == version.etag,
        (_, Some(value)) => *value == version.last_modified,
    };
    let wanted = range
        .filter(|_| range_applies)
        .and_then(|r| parse_range(&r, version.size));
    let (status, start, end) = match wanted {
        Some(Some((start, end))) => (StatusCode::PARTIAL_CONTENT, start, end),
        Some(None) => {
            let mut response = empty(StatusCode::RANGE_NOT_SATISFIABLE);
            response.headers_mut().insert(
                "content-range",
                format!("bytes */{}", version.size).parse().unwrap(),
            );
            return response;
        }
        None => (StatusCode::OK, 0, version.size),
    };
    if end > start {
        let mut files = files.lock().unwrap();
        if let Some(file) = files.get_mut(&name) {
            file.served.push(index);
        }
    }
    let mut builder = Response::builder()
        .status(status)
        .header("accept-ranges", "bytes")
        .header("etag", &version.etag)
        .header("last-modified", &version.last_modified)
        .header("content-length", (end - start).to_string());
    if status == StatusCode::PARTIAL_CONTENT {
        let shown = if fault == Fault::WrongRange {
            start + 1
        } else {
            start
        };
        builder = builder.header(
            "content-range",
            format!("bytes {shown}-{}/{}", end - 1, version.size),
        );
    }
    if let Some(disposition) = disposition {
        builder = builder.header(
            "content-disposition",
            format!("attachment; filename=\"{disposition}\""),
        );
    }
    let bytes = body_of(bodies, &name, version.seed, version.size);
    let body = bytes.slice(start as usize..end as usize);
    let (drop_after, stall) = match fault {
        Fault::DropAfter(n) => (Some(n), None),
        Fault::Stall(ms) => (None, Some(ms)),
        _ => (None, None),
    };
    builder.body(stream(&body, drop_after, stall)).unwrap()
}

/// The body in 16 KiB chunks; broken after `drop_after` bytes, or silent for `stall` ms first.
fn stream(body: &Bytes, drop_after: Option<u64>, stall: Option<u64>) -> Body {
    const CHUNK: usize = 16 * 1024;
    let cut = drop_after.map_or(body.len(), |n| (n as usize).min(body.len()));
    let broken = drop_after.is_some_and(|n| (n as usize) < body.len());
    let mut chunks: Vec<Result<Frame<Bytes>, std::io::Error>> = (0..cut)
        .step_by(CHUNK)
        .map(|at| Ok(Frame::data(body.slice(at..(at + CHUNK).min(cut)))))
        .collect();
    if broken {
        chunks.push(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "scripted drop",
        )));
    }
    let delay = stall.map(Duration::from_millis);
    let stream = futures_util::stream::iter(chunks).then(move |chunk| async move {
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        chunk
    });
    StreamBody::new(stream.boxed()).boxed_unsync()
}

/// `bytes=A-B` / `bytes=A-`: `Some(None)` when unsatisfiable.
#[allow(clippy::option_option)]
fn parse_range(value: &str, size: u64) -> Option<Option<(u64, u64)>> {
    let spec = value.strip_prefix("bytes=")?;
    let (first, last) = spec.split_once('-')?;
    let start: u64 = first.parse().ok()?;
    if start >= size {
        return Some(None);
    }
    let end = if last.is_empty() {
        size
    } else {
        (last.parse::<u64>().ok()? + 1).min(size)
    };
    Some(Some((start, end)))
}
