//! The RPC endpoint on HTTP/1.1: `/jsonrpc` takes a POST (a call or a batch), aria2's GET form
//! (`?method=…&id=…&params=<base64 of the params array>`, with `jsoncallback` for JSONP), a
//! CORS preflight, and a WebSocket upgrade (calls in, answers and notifications out). Bodies
//! and messages are limited in size; headers and bodies must arrive within a bound; browsers
//! get CORS headers only for the origins the user allowed.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::params::RpcError;
use super::rpc::Rpc;
use super::websocket::{self, Incoming as WsIncoming};

/// How long a client may take to send a request's head, or its body.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Who may call from a browser, and how much a call may weigh.
pub(crate) struct Policy {
    /// `--rpc-allow-origin-all`.
    pub(crate) any_origin: bool,
    /// `--rpc-allow-origin`, exactly as browsers send `Origin` (`http://host:port`).
    pub(crate) origins: Vec<String>,
    /// `--rpc-max-request-size`.
    pub(crate) max_request: usize,
    /// The daemon's own origins (`http://127.0.0.1:PORT`, …): what non-browser WebSocket
    /// clients that send an `Origin` send.
    pub(crate) own_origins: Vec<String>,
}

impl Policy {
    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if it is allowed.
    fn cors(&self, origin: Option<&str>) -> Option<String> {
        if self.any_origin {
            return Some("*".into());
        }
        origin
            .filter(|o| self.origins.iter().any(|allowed| allowed == o))
            .map(str::to_owned)
    }

    fn websocket_allowed(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(origin) => {
                self.any_origin
                    || self.origins.iter().any(|o| o == origin)
                    || self.own_origins.iter().any(|o| o == origin)
            }
        }
    }
}

/// Accepts connections until `stop` is cancelled.
pub(crate) async fn serve(
    listener: TcpListener,
    rpc: Arc<Rpc>,
    policy: Arc<Policy>,
    stop: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of descriptors, say: wait a moment rather than spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let rpc = Arc::clone(&rpc);
        let policy = Arc::clone(&policy);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let rpc = Arc::clone(&rpc);
                let policy = Arc::clone(&policy);
                async move { Ok::<_, Infallible>(handle(request, &rpc, &policy).await) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(REQUEST_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

async fn handle(
    mut request: Request<Incoming>,
    rpc: &Arc<Rpc>,
    policy: &Policy,
) -> Response<Full<Bytes>> {
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_owned);
    let cors = policy.cors(origin.as_deref());
    let mut response = if request.uri().path() != "/jsonrpc" {
        plain(
            StatusCode::NOT_FOUND,
            "not found: the RPC endpoint is /jsonrpc\n",
        )
    } else if is_websocket(&request) {
        if policy.websocket_allowed(origin.as_deref()) {
            upgrade(&mut request, rpc, policy.max_request)
        } else {
            plain(StatusCode::FORBIDDEN, "this origin may not use the RPC\n")
        }
    } else {
        match *request.method() {
            Method::OPTIONS => preflight(cors.is_some()),
            Method::POST => post(request, rpc, policy.max_request).await,
            Method::GET => get(&request, rpc).await,
            _ => plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "use POST, GET or a WebSocket\n",
            ),
        }
    };
    if let Some(allowed) = cors.and_then(|c| HeaderValue::from_str(&c).ok()) {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

fn is_websocket(request: &Request<Incoming>) -> bool {
    request.method() == Method::GET
        && request
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn preflight(allowed: bool) -> Response<Full<Bytes>> {
    let mut response = plain(StatusCode::NO_CONTENT, "");
    if allowed {
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST, GET, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Content-Type"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("1728000"),
        );
    }
    response
}

async fn post(request: Request<Incoming>, rpc: &Rpc, limit: usize) -> Response<Full<Bytes>> {
    let too_large = || {
        let error = RpcError::new(format!("the request is larger than {limit} bytes"));
        json_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &json!({"id": null, "jsonrpc": "2.0", "error": error.to_value()}),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return too_large();
    }
    let body = Limited::new(request.into_body(), limit).collect();
    let body = match tokio::time::timeout(REQUEST_TIMEOUT, body).await {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => return too_large(),
        Ok(Err(_)) | Err(_) => {
            return plain(StatusCode::BAD_REQUEST, "the request body did not arrive\n");
        }
    };
    let answer = match std::str::from_utf8(&body) {
        Ok(text) => rpc.answer_text(text).await,
        Err(_) => {
            json!({"id": null, "jsonrpc": "2.0", "error": RpcError::parse_error().to_value()})
        }
    };
    json_response(StatusCode::OK, &answer)
}

/// aria2's GET form: `method`, `id` and `params` (base64 of the JSON params array) in the
/// query; `jsoncallback` wraps the answer for JSONP.
async fn get(request: &Request<Incoming>, rpc: &Rpc) -> Response<Full<Bytes>> {
    let query = request.uri().query().unwrap_or("");
    let mut method = None;
    let mut id = Value::Null;
    let mut params = Value::Array(Vec::new());
    let mut callback = None;
    let mut broken = false;
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "method" => method = Some(value.into_owned()),
            "id" => id = Value::String(value.into_owned()),
            "params" => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(value.as_bytes())
                    .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(value.as_bytes()))
                    .ok()
                    .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok());
                match decoded {
                    Some(value) => params = value,
                    None => broken = true,
                }
            }
            "jsoncallback" => callback = Some(value.into_owned()),
            _ => {}
        }
    }
    let answer = match (method, broken) {
        (Some(method), false) => {
            rpc.answer(json!({"jsonrpc": "2.0", "method": method, "id": id, "params": params}))
                .await
        }
        (_, true) => {
            json!({"id": id, "jsonrpc": "2.0", "error": RpcError::parse_error().to_value()})
        }
        (None, false) => {
            json!({"id": id, "jsonrpc": "2.0", "error": RpcError::invalid_request().to_value()})
        }
    };
    match callback.filter(|c| {
        c.chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "_.$".contains(ch))
    }) {
        Some(callback) => {
            let mut response = plain(StatusCode::OK, &format!("{callback}({answer})"));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript"),
            );
            response
        }
        None => json_response(StatusCode::OK, &answer),
    }
}

/// Answers the handshake and serves the connection once upgraded.
fn upgrade(request: &mut Request<Incoming>, rpc: &Arc<Rpc>, limit: usize) -> Response<Full<Bytes>> {
    let Some(key) = request
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|k| k.to_str().ok())
    else {
        return plain(
            StatusCode::BAD_REQUEST,
            "a WebSocket handshake needs Sec-WebSocket-Key\n",
        );
    };
    let accept = websocket::accept_key(key);
    let upgrading = hyper::upgrade::on(request);
    let rpc = Arc::clone(rpc);
    tokio::spawn(async move {
        if let Ok(upgraded) = upgrading.await {
            serve_websocket(TokioIo::new(upgraded), rpc, limit).await;
        }
    });
    let mut response = plain(StatusCode::SWITCHING_PROTOCOLS, "");
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// One WebSocket client: its calls are answered in order; notifications go out as they happen.
async fn serve_websocket<S>(io: S, rpc: Arc<Rpc>, limit: usize)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (read, mut write) = tokio::io::split(io);
    let (frames, mut outgoing) = mpsc::channel::<Vec<u8>>(64);
    let mut notifications = rpc.downloads.notifications.subscribe();
    let writer = tokio::spawn(async move {
        loop {
            let frame = tokio::select! {
                frame = outgoing.recv() => match frame {
                    Some(frame) => frame,
                    None => return,
                },
                note = notifications.recv() => match note {
                    Ok(text) => websocket::text_frame(&text),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            if websocket::send(&mut write, &frame).await.is_err() {
                return;
            }
        }
    });
    let mut reader = websocket::Reader::new(read, limit);
    loop {
        let frame = match reader.next().await {
            WsIncoming::Text(text) => {
                let answer = rpc.answer_text(&text).await;
                websocket::text_frame(&answer.to_string())
            }
            WsIncoming::Ping(payload) => websocket::pong_frame(&payload),
            WsIncoming::Closed(reason) => {
                let _ = frames.send(websocket::close_frame(reason)).await;
                break;
            }
        };
        if frames.send(frame).await.is_err() {
            break;
        }
    }
    drop(frames);
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
}

fn json_response(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    let mut response = plain(status, &value.to_string());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json-rpc"),
    );
    response
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text.to_owned())));
    *response.status_mut() = status;
    response
}
