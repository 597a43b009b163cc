//! Where features meet (issue #27): a resume answered by a server that ignores `If-Range`, names
//! from `Content-Disposition` that equal a URL's name, mirrors after a failed first URL, running
//! out of descriptors, raw UTF-8 in a redirect, the obsolete date forms, the low-speed window,
//! answers a retry cannot change. Each test states the invariant a user relies on.

use std::path::Path;
use std::time::UNIX_EPOCH;

use crate::support::server::{TestServer, content};
use crate::support::{haul, json_events, run, stderr};

fn get(dir: &Path, extra: &[&str], urls: &[String]) -> std::process::Command {
    let mut command = haul();
    command
        .args(["get", "--json", "-d"])
        .arg(dir)
        .args(extra)
        .args(urls);
    command
}

fn mtime(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Behaviour 6: a `Last-Modified` in RFC 850 or asctime form gives the file its time, as the
/// IMF-fixdate form does (RFC 9110 §5.6.7: recipients accept all three).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_http_date_form_gives_the_file_its_time() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    for form in ["rfc850", "asctime", "imf"] {
        let name = format!("{form}.bin");
        let url = server.file_url(3000, &name, &format!("date_form={form}"));
        let output = run(get(dir.path(), &[], &[url])).await;
        assert!(output.status.success(), "{}", stderr(&output));
        assert_eq!(
            mtime(&dir.path().join(&name)),
            783_679_777,
            "{form}: 01 Nov 1994 08:49:37 GMT"
        );
    }
}

/// Behaviour 5: a redirect whose `Location` holds raw UTF-8 and a space is followed (the bytes
/// percent-encoded, as curl, wget and aria2c do), not reported as "answered HTTP 302".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_location_with_raw_utf8_is_followed() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let target = "/files/1000/caf\u{e9} menu.bin";
    let encoded: String =
        percent_encoding::utf8_percent_encode(target, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let url = server.url(&format!("/redirect?raw=1&to={encoded}"));
    let output = run(get(dir.path(), &["-o", "menu.bin"], &[url])).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        std::fs::read(dir.path().join("menu.bin")).unwrap(),
        content("caf%C3%A9%20menu.bin", 1, 1000)
    );
}
