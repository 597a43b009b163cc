//! Bringing your own `reqwest::Client`: start from `Downloader::client_builder()` (haul's TLS
//! provider installed, redirects left to haul), trust your CA, and hand it over. haul's
//! per-request rules (identity encoding, deadlines, retries, limits) still apply, and the
//! client keeps its own `User-Agent`; what lives inside a built client (connect timeout, TLS
//! settings) is yours.
//!
//! `cargo run --example own_client -- URL DIR CA.pem`
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use haul::{Downloader, Request, reqwest};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, dir, ca] = args.as_slice() else {
        eprintln!("usage: own_client URL DIR CA.pem");
        return ExitCode::from(2);
    };
    match fetch(url, dir, ca).await {
        Ok(done) => {
            println!("saved {} ({} bytes)", done.path.display(), done.bytes);
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn fetch(
    url: &str,
    dir: &str,
    ca: &str,
) -> Result<haul::Completed, Box<dyn std::error::Error>> {
    let pem = std::fs::read(ca)?;
    let client = Downloader::client_builder()
        .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&pem)?)
        .user_agent("own-client-example/1")
        .build()?;
    let downloader = Downloader::builder().client(client).build()?;
    Ok(downloader
        .download(Request::new(url)?.into_dir(dir))
        .await?)
}
