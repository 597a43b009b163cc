//! Bringing your own `reqwest::Client`: build it after `Downloader::builder()` (which installs
//! haul's TLS provider), trust your CA, and hand it over. haul's per-request rules (identity
//! encoding, User-Agent, deadlines, retries, limits) still apply; what lives inside a built
//! client (redirect policy, connect timeout, TLS settings) is yours.
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
    // First the builder: it installs the TLS provider the client below needs.
    let builder = Downloader::builder();
    let pem = std::fs::read(ca)?;
    let client = reqwest::Client::builder()
        .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&pem)?)
        .build()?;
    let downloader = builder.client(client).build()?;
    Ok(downloader
        .download(Request::new(url)?.into_dir(dir))
        .await?)
}
