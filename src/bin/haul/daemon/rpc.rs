//! aria2's JSON-RPC 2.0: the envelope (single calls and batches, `"jsonrpc": 2` accepted as a
//! number), the secret (`token:` as the first parameter of every `aria2.` call, compared in
//! constant time), `system.multicall` (one entry per call: `[result]` or `{code, message}`)
//! and the method table. Errors are aria2's: code 1 with a message for a failed call,
//! `Unauthorized` for a wrong secret, -32700/-32600 for text that is not a request.

use std::sync::Arc;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

use super::downloads::Downloads;
use super::entry::{Entry, Gid, Status, not_found};
use super::options::{self, Options};
use super::params::{
    RpcError, envelope, gid_param, gid_value, integer, keys_param, options_param, position_param,
    string_list,
};
use super::session::Session;
use super::status;

/// The methods, as `system.listMethods` lists them.
const METHODS: &[&str] = &[
    "aria2.addUri",
    "aria2.addTorrent",
    "aria2.addMetalink",
    "aria2.remove",
    "aria2.forceRemove",
    "aria2.pause",
    "aria2.pauseAll",
    "aria2.forcePause",
    "aria2.forcePauseAll",
    "aria2.unpause",
    "aria2.unpauseAll",
    "aria2.tellStatus",
    "aria2.getUris",
    "aria2.getFiles",
    "aria2.getPeers",
    "aria2.getServers",
    "aria2.tellActive",
    "aria2.tellWaiting",
    "aria2.tellStopped",
    "aria2.changePosition",
    "aria2.getOption",
    "aria2.changeOption",
    "aria2.getGlobalOption",
    "aria2.changeGlobalOption",
    "aria2.getGlobalStat",
    "aria2.purgeDownloadResult",
    "aria2.removeDownloadResult",
    "aria2.getVersion",
    "aria2.getSessionInfo",
    "aria2.shutdown",
    "aria2.forceShutdown",
    "aria2.saveSession",
    "system.multicall",
    "system.listMethods",
    "system.listNotifications",
];

const NOTIFICATIONS: &[&str] = &[
    "aria2.onDownloadStart",
    "aria2.onDownloadPause",
    "aria2.onDownloadStop",
    "aria2.onDownloadComplete",
    "aria2.onDownloadError",
    "aria2.onBtDownloadComplete",
];

/// The RPC endpoint's state.
pub(crate) struct Rpc {
    pub(crate) downloads: Arc<Downloads>,
    /// SHA-256 of the secret: compared digest to digest, so the time taken says nothing.
    secret: Option<[u8; 32]>,
    pub(crate) session: Option<Arc<Session>>,
    /// Cancelled by `shutdown`.
    pub(crate) shutdown: CancellationToken,
    session_id: String,
    port: u16,
}

impl Rpc {
    pub(crate) fn new(
        downloads: Arc<Downloads>,
        secret: Option<&str>,
        session: Option<Arc<Session>>,
        shutdown: CancellationToken,
        port: u16,
    ) -> Self {
        let session_id = hex::encode(Sha256::digest(format!(
            "{}{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        )));
        Self {
            downloads,
            secret: secret.map(|s| Sha256::digest(s.as_bytes()).into()),
            session,
            shutdown,
            session_id: session_id[..40].to_owned(),
            port,
        }
    }

    /// Answers one HTTP body or WebSocket message: a call or a batch of calls.
    pub(crate) async fn answer_text(&self, text: &str) -> Value {
        match serde_json::from_str::<Value>(text) {
            Ok(value) => self.answer(value).await,
            Err(_) => envelope(&Value::Null, Err(RpcError::parse_error())),
        }
    }

    /// Answers a parsed call or batch.
    pub(crate) async fn answer(&self, value: Value) -> Value {
        match value {
            Value::Array(calls) if !calls.is_empty() => {
                let mut answers = Vec::with_capacity(calls.len());
                for call in calls {
                    answers.push(self.answer_one(call).await);
                }
                Value::Array(answers)
            }
            call @ Value::Object(_) => self.answer_one(call).await,
            _ => envelope(&Value::Null, Err(RpcError::invalid_request())),
        }
    }

    async fn answer_one(&self, call: Value) -> Value {
        let id = call.get("id").cloned().unwrap_or(Value::Null);
        let Some(method) = call.get("method").and_then(Value::as_str) else {
            return envelope(&id, Err(RpcError::invalid_request()));
        };
        let params = match call.get("params") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(params)) => params.clone(),
            Some(_) => return envelope(&id, Err(RpcError::invalid("params must be an array"))),
        };
        let result = if method == "system.multicall" {
            self.multicall(params).await
        } else {
            self.call(method, params).await
        };
        envelope(&id, result)
    }

    /// `system.multicall`: each inner call carries its own `token:`.
    async fn multicall(&self, params: Vec<Value>) -> Result<Value, RpcError> {
        let Some(Value::Array(calls)) = params.into_iter().next() else {
            return Err(RpcError::invalid(
                "system.multicall takes an array of calls",
            ));
        };
        let mut answers = Vec::with_capacity(calls.len());
        for call in calls {
            let method = call.get("methodName").and_then(Value::as_str);
            let params = match call.get("params") {
                None => Some(Vec::new()),
                Some(Value::Array(params)) => Some(params.clone()),
                Some(_) => None,
            };
            let answer = match (method, params) {
                (Some("system.multicall"), _) => {
                    Err(RpcError::new("Recursive system.multicall forbidden."))
                }
                (Some(method), Some(params)) => self.call(method, params).await,
                _ => Err(RpcError::invalid("a call needs methodName and params")),
            };
            answers.push(match answer {
                Ok(result) => json!([result]),
                Err(error) => error.to_value(),
            });
        }
        Ok(Value::Array(answers))
    }

    async fn call(&self, method: &str, mut params: Vec<Value>) -> Result<Value, RpcError> {
        match method {
            "system.listMethods" => return Ok(json!(METHODS)),
            "system.listNotifications" => return Ok(json!(NOTIFICATIONS)),
            _ => {}
        }
        let Some(name) = method.strip_prefix("aria2.") else {
            return Err(RpcError::new(format!("No such method: {method}")));
        };
        self.authorize(&mut params)?;
        self.aria2(name, &params).await
    }

    /// Takes the `token:` parameter off; with a secret set, it must match.
    fn authorize(&self, params: &mut Vec<Value>) -> Result<(), RpcError> {
        let token = match params.first() {
            Some(Value::String(first)) if first.starts_with("token:") => {
                let token = first["token:".len()..].to_owned();
                params.remove(0);
                Some(token)
            }
            _ => None,
        };
        let Some(secret) = &self.secret else {
            return Ok(());
        };
        let given: [u8; 32] = Sha256::digest(token.unwrap_or_default().as_bytes()).into();
        let difference = given
            .iter()
            .zip(secret)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if difference == 0 {
            Ok(())
        } else {
            Err(RpcError::unauthorized())
        }
    }

    /// Adding, pausing, removing and moving downloads.
    async fn aria2(&self, name: &str, params: &[Value]) -> Result<Value, RpcError> {
        let downloads = &self.downloads;
        let gid = || gid_param(params, 0);
        let ok = || Ok(Value::String("OK".into()));
        match name {
            "addUri" => {
                let uris = string_list(params.first(), "uris")?;
                let options = options_param(params.get(1))?;
                let position = position_param(params.get(2))?;
                let gid = downloads.add(uris, options, position)?;
                Ok(Value::String(gid.to_string()))
            }
            "addMetalink" => {
                let options = options_param(params.get(1))?;
                let position = position_param(params.get(2))?;
                let gids = super::metalink::add(downloads, params.first(), &options, position)?;
                Ok(json!(
                    gids.iter().map(ToString::to_string).collect::<Vec<_>>()
                ))
            }
            "addTorrent" => Err(RpcError::new(
                "BitTorrent is not supported: haul downloads over HTTP and HTTPS",
            )),
            "remove" | "forceRemove" => downloads.remove(gid()?).map(gid_value),
            "pause" | "forcePause" => downloads.pause(gid()?).map(gid_value),
            "unpause" => downloads.unpause(gid()?).map(gid_value),
            "pauseAll" | "forcePauseAll" => {
                for gid in self.with_status(&[Status::Active, Status::Waiting]) {
                    let _ = downloads.pause(gid);
                }
                ok()
            }
            "unpauseAll" => {
                for gid in self.with_status(&[Status::Paused]) {
                    let _ = downloads.unpause(gid);
                }
                ok()
            }
            "changePosition" => {
                let position = integer(params.get(1), "pos")?;
                let how = params
                    .get(2)
                    .and_then(Value::as_str)
                    .ok_or_else(|| RpcError::invalid("how must be POS_SET, POS_CUR or POS_END"))?;
                let to = downloads.change_position(gid()?, position, how)?;
                Ok(json!(to))
            }
            "purgeDownloadResult" => {
                downloads.purge_results();
                ok()
            }
            "removeDownloadResult" => {
                downloads.remove_result(gid()?)?;
                ok()
            }
            _ => self.settings(name, params).await,
        }
    }

    /// What the daemon tells about its downloads.
    fn tell(&self, name: &str, params: &[Value]) -> Result<Value, RpcError> {
        let downloads = &self.downloads;
        let gid = || gid_param(params, 0);
        match name {
            "tellStatus" => {
                let keys = keys_param(params.get(1))?;
                self.with_entry(gid()?, |entry| status::status(entry, keys.as_deref()))
            }
            "getUris" => self.with_entry(gid()?, status::uris),
            "getFiles" => self.with_entry(gid()?, status::files),
            "getServers" => self.with_entry(gid()?, status::servers),
            "getPeers" => self.with_entry(gid()?, |_| json!([])),
            "getOption" => self.with_entry(gid()?, |entry| {
                let mut options = entry.options.clone();
                options.insert("dir".into(), entry.dir.to_string_lossy().into_owned());
                let rate = entry
                    .control
                    .as_ref()
                    .and_then(haul::DownloadControl::rate_limit);
                options.insert("max-download-limit".into(), rate.unwrap_or(0).to_string());
                options.remove("pause");
                json!(options)
            }),
            "tellActive" => {
                let keys = keys_param(params.first())?;
                let table = downloads.table();
                let mut active: Vec<_> = table
                    .entries
                    .values()
                    .filter(|e| e.status == Status::Active)
                    .collect();
                active.sort_by_key(|e| e.gid);
                Ok(Value::Array(
                    active
                        .into_iter()
                        .map(|e| status::status(e, keys.as_deref()))
                        .collect(),
                ))
            }
            "tellWaiting" | "tellStopped" => {
                let offset = integer(params.first(), "offset")?;
                let num = integer(params.get(1), "num")?;
                let keys = keys_param(params.get(2))?;
                let table = downloads.table();
                let list: Vec<Gid> = if name == "tellWaiting" {
                    table.waiting.clone()
                } else {
                    table.stopped.iter().copied().collect()
                };
                Ok(Value::Array(
                    status::window(&list, offset, num)
                        .iter()
                        .filter_map(|gid| table.entries.get(gid))
                        .map(|e| status::status(e, keys.as_deref()))
                        .collect(),
                ))
            }
            "getGlobalStat" => Ok(status::global(&downloads.table())),
            _ => Err(RpcError::new(format!("No such method: aria2.{name}"))),
        }
    }

    /// Options, the session and the daemon itself.
    async fn settings(&self, name: &str, params: &[Value]) -> Result<Value, RpcError> {
        let downloads = &self.downloads;
        let gid = || gid_param(params, 0);
        let ok = || Ok(Value::String("OK".into()));
        match name {
            "changeOption" => {
                downloads.change_option(gid()?, options_param(params.get(1))?)?;
                ok()
            }
            "getGlobalOption" => Ok(self.global_options()),
            "changeGlobalOption" => {
                self.change_global_options(options_param(params.first())?)?;
                ok()
            }
            "getVersion" => Ok(json!({
                "version": env!("CARGO_PKG_VERSION"),
                "enabledFeatures": ["HTTPS", "Message Digest", "Metalink"],
            })),
            "getSessionInfo" => Ok(json!({"sessionId": self.session_id})),
            "saveSession" => {
                let session = self
                    .session
                    .as_ref()
                    .ok_or_else(|| RpcError::new("Filename is not given."))?;
                session
                    .save(downloads)
                    .await
                    .map_err(|e| RpcError::new(format!("Failed to save the session: {e}")))?;
                ok()
            }
            "shutdown" | "forceShutdown" => {
                self.shutdown.cancel();
                ok()
            }
            _ => self.tell(name, params),
        }
    }

    fn with_status(&self, wanted: &[Status]) -> Vec<Gid> {
        let table = self.downloads.table();
        let mut gids: Vec<Gid> = table
            .entries
            .values()
            .filter(|e| wanted.contains(&e.status))
            .map(|e| e.gid)
            .collect();
        gids.sort_unstable();
        gids
    }

    fn with_entry(&self, gid: Gid, show: impl Fn(&Entry) -> Value) -> Result<Value, RpcError> {
        let table = self.downloads.table();
        let entry = table.entries.get(&gid).ok_or_else(|| not_found(gid))?;
        Ok(show(entry))
    }

    fn global_options(&self) -> Value {
        let downloader = &self.downloads.downloader;
        let mut options = self
            .downloads
            .global_options
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut put = |key: &str, value: String| {
            options.insert(key.to_owned(), value);
        };
        put("dir", self.downloads.root.to_string_lossy().into_owned());
        put("max-concurrent-downloads", downloader.jobs().to_string());
        put(
            "max-overall-download-limit",
            downloader.rate_limit().unwrap_or(0).to_string(),
        );
        put("rpc-listen-port", self.port.to_string());
        if let Some(session) = &self.session {
            put(
                "save-session",
                session.path().to_string_lossy().into_owned(),
            );
        }
        options
            .entry("max-download-limit".into())
            .or_insert_with(|| "0".into());
        json!(options)
    }

    /// The global options haul can change while it runs; any other is refused, naming it.
    fn change_global_options(&self, changes: Options) -> Result<(), RpcError> {
        let bad =
            |key: &str, value: &str| RpcError::new(format!("option {key}: bad value `{value}`"));
        // Checked all first: a refused option changes nothing.
        for (key, value) in &changes {
            match key.as_str() {
                "max-concurrent-downloads" => {
                    value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=1024).contains(n))
                        .ok_or_else(|| bad(key, value))?;
                }
                "max-overall-download-limit" | "max-download-limit" => {
                    options::rate(value).map_err(|_| bad(key, value))?;
                }
                other => {
                    return Err(RpcError::new(format!(
                        "option {other} cannot be changed in haul daemon (supported: \
                         max-concurrent-downloads, max-overall-download-limit, max-download-limit)"
                    )));
                }
            }
        }
        let downloader = &self.downloads.downloader;
        for (key, value) in changes {
            match key.as_str() {
                "max-concurrent-downloads" => {
                    downloader.set_jobs(value.parse().unwrap_or(1));
                }
                "max-overall-download-limit" => {
                    downloader.set_rate_limit(options::rate(&value).ok().flatten());
                }
                _ => {
                    self.downloads
                        .global_options
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(key, value);
                }
            }
        }
        Ok(())
    }
}
