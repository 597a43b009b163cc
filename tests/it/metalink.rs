//! Metalink (issue #30): a `.meta4` gives a file's mirrors, size, hash and piece hashes; a
//! mirror that serves a corrupted piece costs only that piece, fetched again from the next
//! mirror; a dead mirror is left; a hostile document writes nothing.

use sha2::Digest as _;

use crate::support::server::{TestServer, content};
use crate::support::{haul, listing, run, stderr};

const SIZE: u64 = 2_000_000;
const PIECE: u64 = 262_144;

/// A `.meta4` as MirrorBrain writes them: mirrors with location and priority, a whole-file
/// SHA-256, and SHA-256 pieces.
fn meta4(name: &str, body: &[u8], mirrors: &[(&str, u32, &str)]) -> String {
    let mut pieces = String::new();
    for piece in body.chunks(PIECE as usize) {
        let digest = hex::encode(sha2::Sha256::digest(piece));
        pieces = format!("{pieces}      <hash>{digest}</hash>\n");
    }
    let mut urls = String::new();
    for (url, priority, location) in mirrors {
        let url = url.replace('&', "&amp;");
        urls =
            format!("{urls}    <url location=\"{location}\" priority=\"{priority}\">{url}</url>\n");
    }
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<metalink xmlns="urn:ietf:params:xml:ns:metalink">
  <generator>MirrorBrain/2.19.0</generator>
  <origin dynamic="true">http://download.example.org/{name}.meta4</origin>
  <published>2026-12-01T10:00:00Z</published>
  <file name="{name}">
    <size>{}</size>
    <hash type="md5">{}</hash>
    <hash type="sha-1">{}</hash>
    <hash type="sha-256">{}</hash>
    <pieces length="{PIECE}" type="sha-256">
{pieces}    </pieces>
{urls}  </file>
</metalink>
"#,
        body.len(),
        hex::encode(md5::Md5::digest(body)),
        hex::encode(sha1::Sha1::digest(body)),
        hex::encode(sha2::Sha256::digest(body)),
    )
}

/// Writes `document` to DIR/NAME and runs `haul get ARGS -d OUT DIR/NAME`.
async fn get_meta4(
    dir: &std::path::Path,
    name: &str,
    document: &str,
    args: &[&str],
    out: &std::path::Path,
) -> std::process::Output {
    let file = dir.join(name);
    std::fs::write(&file, document).unwrap();
    let mut command = haul();
    command.arg("get").args(args).arg("-d").arg(out).arg(&file);
    run(command).await
}

/// The ranges the server was asked for on `path`'s requests.
fn ranges_asked(server: &TestServer, name: &str) -> Vec<Option<String>> {
    server
        .log()
        .into_iter()
        .filter(|l| l.path.ends_with(name))
        .map(|l| l.range)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_piece_is_fetched_again_from_the_next_mirror_and_only_it() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let body = content("dist.iso", 1, SIZE);
    let corrupting = server.file_url(SIZE, "dist.iso", "corrupt_at=700000");
    let good = server.file_url(SIZE, "dist.iso", "");
    let document = meta4(
        "dist.iso",
        &body,
        &[
            (&corrupting, 1, "de"),
            (&good, 2, "fr"),
            ("http://127.0.0.1:1/dist.iso", 3, "us"),
        ],
    );
    let out = dir.path().join("out");
    let output = get_meta4(
        dir.path(),
        "dist.iso.meta4",
        &document,
        &["-x", "1", "--json"],
        &out,
    )
    .await;
    let said = stderr(&output);
    assert!(output.status.success(), "{said}");
    assert!(
        std::fs::read(out.join("dist.iso")).unwrap() == body,
        "exact"
    );
    assert!(
        said.contains("1 piece(s) failed their sha-256 hash"),
        "{said}"
    );
    let asked = ranges_asked(&server, "dist.iso");
    let bad_piece = 700_000 / PIECE;
    let repair = format!(
        "bytes={}-{}",
        bad_piece * PIECE,
        (bad_piece + 1) * PIECE - 1
    );
    assert_eq!(
        asked.len(),
        2,
        "the file, then the bad piece alone: {asked:?}"
    );
    assert_eq!(asked[1].as_deref(), Some(repair.as_str()), "{asked:?}");
    assert_eq!(
        server.body_bytes(),
        SIZE + PIECE,
        "only the bad piece twice"
    );
    let log = server.log();
    assert!(
        log.last()
            .is_some_and(|l| l.path.ends_with("dist.iso") && !l.path.contains("corrupt")),
        "the repair came from the next mirror"
    );
    assert_eq!(listing(&out), vec!["dist.iso"]);
    let events = crate::support::json_events(&output.stdout);
    let finished = events.iter().find(|e| e["event"] == "finished").unwrap();
    assert_eq!(finished["repaired_pieces"], 1, "{finished}");
    assert_eq!(
        finished["source"],
        good.as_str(),
        "the mirror that served the repair"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metalink_by_url_uses_its_mirrors_and_a_wrong_hash_fails_with_exit_3() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let body = content("small.bin", 1, 100_000);
    let dead = "http://127.0.0.1:1/small.bin";
    let good = server.file_url(100_000, "small.bin", "");
    server.put_tree(
        "/meta/",
        &[(
            "small.meta4",
            meta4("sub/small.bin", &body, &[(dead, 1, "us"), (&good, 2, "de")]).as_bytes(),
        )],
    );
    let mut command = haul();
    command
        .args(["get", "-d"])
        .arg(dir.path())
        .arg(server.url("/meta/small.meta4"));
    let output = run(command).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        std::fs::read(dir.path().join("sub/small.bin")).unwrap() == body,
        "below -d"
    );

    // Another version on the only mirror: the whole-file hash fails, exit 3, no final file.
    let wrong = meta4(
        "other.bin",
        &content("other.bin", 2, 5000),
        &[(&server.file_url(5000, "other.bin", ""), 1, "de")],
    );
    let file = dir.path().join("other.meta4");
    std::fs::write(&file, wrong).unwrap();
    let mut command = haul();
    command
        .args(["get", "-d"])
        .arg(dir.path())
        .arg("--metalink")
        .arg(&file);
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(!dir.path().join("other.bin").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_metalinks_get_a_clear_error_and_write_nothing() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = server.file_url(10, "x", "");
    let cases = [
        (
            "traversal",
            format!(r#"<metalink><file name="../../escape"><url>{url}</url></file></metalink>"#),
        ),
        (
            "laughs",
            r#"<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><metalink><file name="f"><url>http://h/&b;</url></file></metalink>"#.to_owned(),
        ),
        (
            "short hash",
            format!(r#"<metalink><file name="f"><hash type="sha-256">00ff</hash><url>{url}</url></file></metalink>"#),
        ),
        (
            "pieces",
            format!(r#"<metalink><file name="f"><size>1000</size><pieces length="100" type="sha-1"><hash>0123456789abcdef0123456789abcdef01234567</hash></pieces><url>{url}</url></file></metalink>"#),
        ),
    ];
    for (what, document) in cases {
        let out = dir.path().join("out");
        let output = get_meta4(dir.path(), "bad.meta4", &document, &[], &out).await;
        assert_eq!(output.status.code(), Some(2), "{what}: {}", stderr(&output));
        assert!(
            stderr(&output).contains("bad.meta4"),
            "{what}: {}",
            stderr(&output)
        );
        assert!(!out.exists(), "{what}: nothing written");
    }
    // A 1 GiB document (sparse here) is refused before it is read.
    let huge = dir.path().join("huge.meta4");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let mut command = haul();
    command
        .args(["get", "-d"])
        .arg(dir.path().join("out"))
        .arg(&huge);
    let started = std::time::Instant::now();
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("more than"), "{}", stderr(&output));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(server.requests(), 0);
}

/// RFC 6249 as mirrorbits does it: a plain GET answered with `Link: rel=duplicate` and a
/// `Digest`: the mirror serves segments of `-x 4`; a wrong digest fails with exit 3;
/// `--no-metalink-headers` leaves the mirror alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_headers_add_mirrors_and_digest_headers_are_verified() {
    let primary = TestServer::start().await;
    let mirror = TestServer::start().await;
    let size = 8 << 20;
    let link = format!(
        "<{}>; rel=duplicate; pri=1; geo=de",
        mirror.file_url(size, "big.bin", "")
    );
    let encoded = percent_encoding::utf8_percent_encode(&link, percent_encoding::NON_ALPHANUMERIC)
        .to_string();
    for (extra, expected_code, mirror_used) in
        [(vec![], 0, true), (vec!["--no-metalink-headers"], 0, false)]
    {
        let dir = tempfile::tempdir().unwrap();
        let before = mirror.requests();
        let mut command = haul();
        command
            .args(["get", "-x", "4", "--min-split-size", "1M", "-d"])
            .arg(dir.path())
            .args(&extra)
            .arg(primary.file_url(
                size,
                "big.bin",
                &format!("link={encoded}&digest=digest&rate=2097152"),
            ));
        let output = run(command).await;
        assert_eq!(
            output.status.code(),
            Some(expected_code),
            "{}",
            stderr(&output)
        );
        assert!(std::fs::read(dir.path().join("big.bin")).unwrap() == content("big.bin", 1, size));
        assert_eq!(mirror.requests() > before, mirror_used, "{extra:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut command = haul();
    command
        .args(["get", "-d"])
        .arg(dir.path())
        .arg(primary.file_url(
            5000,
            "w.bin",
            &format!("link={encoded}&digest=digest&digest_wrong=1"),
        ));
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(!dir.path().join("w.bin").exists());
}

/// A mirror that serves another file of the same size passes the length check, but its piece
/// fails the piece hash: the next pass goes on to the next mirror; a dead one is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_with_another_version_is_caught_by_the_piece_hashes() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let body = content("dist.iso", 1, SIZE);
    let document = meta4(
        "dist.iso",
        &body,
        &[
            (
                &server.file_url(SIZE, "dist.iso", "corrupt_at=1500000"),
                1,
                "de",
            ),
            (&server.file_url(SIZE, "other.iso", ""), 2, "de"),
            ("http://127.0.0.1:1/dist.iso", 3, "fr"),
            (&server.file_url(SIZE, "dist.iso", ""), 4, "fr"),
        ],
    );
    let output = get_meta4(
        dir.path(),
        "dist.meta4",
        &document,
        &["-x", "1"],
        dir.path(),
    )
    .await;
    let said = stderr(&output);
    assert!(output.status.success(), "{said}");
    assert!(
        std::fs::read(dir.path().join("dist.iso")).unwrap() == body,
        "exact"
    );
    assert!(
        server.body_bytes() <= SIZE + 2 * PIECE,
        "only the bad piece again: {} bytes",
        server.body_bytes()
    );
}

/// The same against Debian's nginx, as a distribution's mirrors would be: the `.meta4`
/// served by nginx, one mirror's copy with a flipped byte (its time kept, as rsync -a keeps
/// it), the other good: the file ends exact and the good mirror is asked for one piece.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_mirrors_repair_a_bad_piece() {
    let Some(nginx) = crate::support::nginx::Nginx::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let body = content("dist.iso", 1, SIZE);
    let www = nginx.www();
    for mirror in ["good", "bad"] {
        std::fs::create_dir_all(www.join(mirror)).unwrap();
        let mut copy = body.clone();
        if mirror == "bad" {
            copy[1_200_000] ^= 0x01;
        }
        std::fs::write(www.join(mirror).join("dist.iso"), copy).unwrap();
    }
    let touched = std::process::Command::new("touch")
        .arg("-r")
        .arg(www.join("good/dist.iso"))
        .arg(www.join("bad/dist.iso"))
        .status()
        .unwrap();
    assert!(touched.success());
    let document = meta4(
        "dist.iso",
        &body,
        &[
            (&nginx.http_url("/bad/dist.iso"), 1, "de"),
            (&nginx.http_url("/good/dist.iso"), 2, "fr"),
        ],
    );
    std::fs::write(www.join("dist.iso.meta4"), document).unwrap();
    let mut command = haul();
    command
        .args(["get", "-x", "1", "-d"])
        .arg(dir.path())
        .arg(nginx.http_url("/dist.iso.meta4"));
    let output = run(command).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        std::fs::read(dir.path().join("dist.iso")).unwrap() == body,
        "exact"
    );
    let piece = 1_200_000 / PIECE;
    let good: Vec<String> = nginx
        .access_log()
        .into_iter()
        .filter(|l| l.contains("/good/dist.iso"))
        .collect();
    assert_eq!(good.len(), 1, "{good:?}");
    assert!(
        good[0].contains(&format!(
            "bytes={}-{}",
            piece * PIECE,
            (piece + 1) * PIECE - 1
        )),
        "only the bad piece: {good:?}"
    );
}

/// A `.meta4` line in an input file stands for its files; `haul sync` takes a Metalink as its
/// source (every file in it, exact names beneath DIR).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_files_and_sync_take_metalinks() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let one = content("one.bin", 1, 3000);
    let two = content("two.bin", 1, 4000);
    let doc = |name: &str, body: &[u8], url: &str| meta4(name, body, &[(url, 1, "de")]);
    let first = doc("one.bin", &one, &server.file_url(3000, "one.bin", ""));
    let both = first.replace(
        "</metalink>",
        &doc("sub/two.bin", &two, &server.file_url(4000, "two.bin", ""))
            .split("<file")
            .nth(1)
            .map(|rest| format!("<file{rest}"))
            .unwrap(),
    );
    server.put_tree("/meta/", &[("both.meta4", both.as_bytes())]);
    let input = dir.path().join("list.txt");
    std::fs::write(
        &input,
        format!("{}\n  dir=from-list\n", server.url("/meta/both.meta4")),
    )
    .unwrap();
    let mut get = haul();
    get.args(["get", "-d"])
        .arg(dir.path())
        .arg("-i")
        .arg(&input);
    let output = run(get).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(std::fs::read(dir.path().join("from-list/one.bin")).unwrap() == one);
    assert!(std::fs::read(dir.path().join("from-list/sub/two.bin")).unwrap() == two);

    let mirror = dir.path().join("mirror");
    let mut sync = haul();
    sync.arg("sync")
        .arg(server.url("/meta/both.meta4"))
        .arg(&mirror);
    let output = run(sync).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(std::fs::read(mirror.join("one.bin")).unwrap() == one);
    assert!(std::fs::read(mirror.join("sub/two.bin")).unwrap() == two);
}

/// A piece fetched again early in a large file: the file's digest must still cover the bytes
/// after the hole (a resumed writer once hashed only up to the end of what it wrote, and the
/// whole-file hash failed although every piece was right).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_early_in_a_large_file_keeps_the_whole_file_hash_right() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let size: u64 = 24 << 20;
    let body = content("large.iso", 1, size);
    let document = meta4(
        "large.iso",
        &body,
        &[
            (
                &server.file_url(size, "large.iso", "corrupt_at=1000000"),
                1,
                "de",
            ),
            (&server.file_url(size, "large.iso", ""), 2, "fr"),
        ],
    );
    let output = get_meta4(
        dir.path(),
        "large.meta4",
        &document,
        &["-x", "1"],
        dir.path(),
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(std::fs::read(dir.path().join("large.iso")).unwrap() == body);
    assert_eq!(server.body_bytes(), size + PIECE);
}
