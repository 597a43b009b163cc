//! `haul daemon`: one long-lived downloader behind aria2's JSON-RPC, so the front-ends people
//! already run (AriaNg, webui-aria2, Motrix, aria2p, browser extensions) drive haul instead.
//! The RPC layer is thin: a download is the library's `submit`, and pause, resume, positions
//! and live limits are the library's `DownloadControl` and `Downloader` setters.

mod changes;
mod downloads;
mod entry;
mod metalink;
mod options;
mod params;
mod rpc;
mod server;
mod session;
mod status;
mod websocket;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::UsageError;
use crate::args::DaemonArgs;
use downloads::Downloads;
use session::Session;

pub(crate) async fn daemon(args: DaemonArgs) -> anyhow::Result<ExitCode> {
    let root = download_root(&args)?;
    let (renderer, interrupted) = crate::renderer(&args.common)?;
    let downloader = crate::downloader_builder(&args.common)?
        .observer(renderer)
        .build()
        .map(crate::warn_if_jobs_capped)
        .map_err(|e| UsageError(e.to_string()))?;
    crate::follow_rate_schedule(&downloader, &args.common);
    let downloads = Downloads::new(downloader, root.clone(), args.max_download_result);

    let address = SocketAddr::from((
        if args.rpc_listen_all {
            Ipv4Addr::UNSPECIFIED
        } else {
            Ipv4Addr::LOCALHOST
        },
        args.rpc_listen_port,
    ));
    let listener = tokio::net::TcpListener::bind(address).await.map_err(|e| {
        UsageError(format!(
            "cannot listen on {address}: {e} (is aria2c or another haul daemon running? choose \
             another --rpc-listen-port)"
        ))
    })?;
    let port = listener
        .local_addr()
        .map_or(args.rpc_listen_port, |a| a.port());
    let session = start_session(&args, &downloads).await?;

    let shutdown = CancellationToken::new();
    let rpc = Arc::new(rpc::Rpc::new(
        Arc::clone(&downloads),
        args.rpc_secret.as_deref(),
        session.clone(),
        shutdown.clone(),
        port,
    ));
    let stop_serving = CancellationToken::new();
    tokio::spawn(server::serve(
        listener,
        rpc,
        Arc::new(policy(&args, port)),
        stop_serving.clone(),
    ));
    let shown = if args.rpc_listen_all {
        format!("0.0.0.0:{port}")
    } else {
        format!("127.0.0.1:{port}")
    };
    eprintln!(
        "haul daemon: JSON-RPC on http://{shown}/jsonrpc and ws://{shown}/jsonrpc{}; downloads \
         beneath {}",
        if args.rpc_secret.is_some() {
            " (secret required)"
        } else {
            ""
        },
        root.display()
    );

    let by_signal = tokio::select! {
        () = interrupted.cancelled() => true,
        () = shutdown.cancelled() => false,
    };
    // Let the answer to `shutdown` go out before the listener closes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop_serving.cancel();
    if let Some(session) = &session {
        session.save(&downloads).await.with_context(|| {
            format!("cannot write the session file {}", session.path().display())
        })?;
    }
    downloads.stop_all().await;
    eprintln!("haul daemon: stopped; unfinished downloads keep their .part files");
    Ok(ExitCode::from(if by_signal {
        crate::interrupted_code()
    } else {
        0
    }))
}

/// The download root, absolute, made and writable, once the listening rules are checked.
fn download_root(args: &DaemonArgs) -> anyhow::Result<PathBuf> {
    if args.rpc_listen_all && args.rpc_secret.is_none() {
        return Err(UsageError(
            "--rpc-listen-all needs --rpc-secret: without one, anyone who can reach the port \
             could download into your disk"
                .into(),
        )
        .into());
    }
    if args.rpc_secret.as_deref() == Some("") {
        return Err(UsageError("--rpc-secret is empty".into()).into());
    }
    // Absolute, without `.` parts or a trailing slash: what `dir` and every file's path
    // start with in the answers (front-ends join and compare them).
    let root: PathBuf = std::path::absolute(&args.dir)
        .with_context(|| format!("cannot resolve {}", args.dir.display()))?
        .components()
        .collect();
    std::fs::create_dir_all(&root)
        .map_err(|e| UsageError(format!("cannot create {}: {e}", root.display())))?;
    crate::check_writable(&root)?;
    Ok(root)
}

/// Queues the downloads of `--input-file` (or of the saved session) and keeps the session
/// file written from now on.
async fn start_session(
    args: &DaemonArgs,
    downloads: &Arc<Downloads>,
) -> anyhow::Result<Option<Arc<Session>>> {
    let session = args
        .save_session
        .clone()
        .map(|path| Arc::new(Session::new(path)));
    let start_with: Option<PathBuf> = args
        .input_file
        .clone()
        .or_else(|| args.save_session.clone().filter(|path| path.exists()));
    if let Some(path) = &start_with {
        let added = session::load(downloads, path)?;
        eprintln!(
            "haul daemon: {added} download(s) queued from {}",
            path.display()
        );
    }
    if let Some(session) = &session {
        Arc::clone(session).keep_saved(Arc::clone(downloads));
        session.save(downloads).await.with_context(|| {
            format!("cannot write the session file {}", session.path().display())
        })?;
    }
    Ok(session)
}

/// Who may call from a browser, and how large a call may be.
fn policy(args: &DaemonArgs, port: u16) -> server::Policy {
    server::Policy {
        any_origin: args.rpc_allow_origin_all,
        origins: args.rpc_allow_origin.clone(),
        max_request: usize::try_from(args.rpc_max_request_size).unwrap_or(usize::MAX),
        own_origins: ["127.0.0.1", "localhost", "[::1]"]
            .iter()
            .map(|host| format!("http://{host}:{port}"))
            .collect(),
    }
}
