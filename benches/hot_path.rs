//! Micro-benchmarks of the hot path, with divan:
//! - `write_part`: a 64 MiB body in 16 KiB chunks (what hyper hands over on loopback) streamed
//!   into a `.part` file through the download's own coalescer, queue and writer thread, without
//!   and with SHA-256 (the final sync included: that is what a download pays);
//! - `scheduler`: the cost per request of a batch, with the network taken out (every file is
//!   already present, so each request goes through the scheduler, the per-host accounting and
//!   the existing-file policy, and nothing else), and with tiny files from an in-process server;
//! - `parse_input`: an aria2-style input file of 100,000 lines.
//!
//! A counting allocator is installed: every row also shows the benchmark thread's allocations
//! (count and bytes) per iteration, and the scheduler benchmarks print the allocations per
//! request on every thread, so a change's effect on them is measured, not guessed.
//!
//! Run: `cargo bench --bench hot_path` (files go to `HAUL_BENCH_DIR`, default `.`, i.e. the
//! real disk; `/dev/shm` takes the disk out). `cargo test --all-targets` runs each benchmark
//! once, as a check that it still works.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../tests/it/support/server.rs"]
mod server;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::LazyLock;

use bytes::Bytes;
use divan::counter::{BytesCount, ItemsCount};
use divan::{Bencher, black_box};
use haul::{Algorithm, Downloader, OnExists, Request};

/// Counts every allocation: divan prints the benchmark thread's allocations and bytes per
/// iteration beside the times, and `ALLOCATED` counts those of every thread (a download's work
/// runs on the runtime's workers), for the per-request figures the scheduler benchmarks print.
#[global_allocator]
static ALLOCATIONS: CountingAllocator = CountingAllocator(divan::AllocProfiler::system());

static ALLOCATED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

struct CountingAllocator(divan::AllocProfiler);

// SAFETY: every call is passed unchanged to divan's profiler (itself a wrapper of the system
// allocator); the only addition is a relaxed counter.
#[allow(unsafe_code)]
unsafe impl std::alloc::GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCATED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc`, passed on.
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: the caller's contract for `dealloc`, passed on.
        unsafe { self.0.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCATED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc_zeroed`, passed on.
        unsafe { self.0.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the caller's contract for `realloc`, passed on.
        unsafe { self.0.realloc(ptr, layout, size) }
    }
}

/// Runs `batch` once and prints the allocations (reallocations included) it made per request,
/// on every thread.
fn print_allocations_per_request(what: &str, requests: usize, batch: impl FnOnce()) {
    let before = ALLOCATED.load(std::sync::atomic::Ordering::Relaxed);
    batch();
    let made = ALLOCATED.load(std::sync::atomic::Ordering::Relaxed) - before;
    eprintln!(
        "{what}: {:.0} allocations per request, all threads ({made} for {requests})",
        made as f64 / requests as f64
    );
}

fn main() {
    divan::main();
}

/// One runtime for every benchmark, shaped like the CLI's on this 2-core machine.
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
});

fn bench_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(std::env::var("HAUL_BENCH_DIR").unwrap_or_else(|_| ".".into())).unwrap()
}

const BODY_BYTES: usize = 64 << 20;
const CHUNK_BYTES: usize = 16 << 10;

fn write_body(bencher: Bencher, algorithm: Option<Algorithm>) {
    let body = Bytes::from(
        (0..BODY_BYTES)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    // Slices share the one allocation, as hyper's chunks share its read buffer.
    let chunks: Vec<Bytes> = (0..BODY_BYTES)
        .step_by(CHUNK_BYTES)
        .map(|start| body.slice(start..start + CHUNK_BYTES))
        .collect();
    let dir = bench_dir();
    let target: PathBuf = dir.path().join("body.bin");
    bencher
        .counter(BytesCount::new(BODY_BYTES))
        .with_inputs(|| chunks.clone())
        .bench_local_values(|chunks| {
            let digest = RUNTIME
                .block_on(haul::bench_support::write_part(
                    &target,
                    BODY_BYTES as u64,
                    chunks,
                    algorithm,
                ))
                .unwrap();
            assert_eq!(digest.is_some(), algorithm.is_some());
            std::fs::remove_file(dir.path().join("body.bin.part")).unwrap();
            std::fs::remove_file(dir.path().join("body.bin.part.haul")).unwrap();
        });
}

/// 64 MiB in 16 KiB chunks through coalescer, queue and writer thread to a `.part` file.
#[divan::bench(sample_count = 10, sample_size = 1)]
fn write_part(bencher: Bencher) {
    write_body(bencher, None);
}

/// The same, hashing SHA-256 on the writer thread as it writes.
#[divan::bench(sample_count = 10, sample_size = 1)]
fn write_part_sha256(bencher: Bencher) {
    write_body(bencher, Some(Algorithm::Sha256));
}

mod scheduler {
    use super::{
        Bencher, Downloader, ItemsCount, OnExists, RUNTIME, Request, bench_dir,
        print_allocations_per_request, server,
    };

    /// A batch of requests whose files are all present: the scheduler's own cost per request
    /// (admission under the global and per-host limits, a task, the outcome), no network.
    #[divan::bench(args = [100, 1000], sample_count = 20)]
    fn already_present(bencher: Bencher, files: usize) {
        let dir = bench_dir();
        let requests: Vec<Request> = (0..files)
            .map(|i| {
                let name = format!("f{i}.bin");
                std::fs::write(dir.path().join(&name), b"x").unwrap();
                // Port 9 (discard): nothing may be contacted, and nothing is.
                Request::new(&format!("http://127.0.0.1:9/{name}"))
                    .unwrap()
                    .into_dir(dir.path())
            })
            .collect();
        let downloader = Downloader::builder()
            .on_exists(OnExists::Skip)
            .build()
            .unwrap();
        print_allocations_per_request("already present", files, || {
            RUNTIME
                .block_on(downloader.batch(requests.clone()).run())
                .unwrap();
        });
        bencher
            .counter(ItemsCount::new(files))
            .with_inputs(|| requests.clone())
            .bench_local_values(|requests| {
                let outcomes = RUNTIME.block_on(downloader.batch(requests).run()).unwrap();
                assert!(outcomes.iter().all(Result::is_ok));
            });
    }

    /// 200 files of 1 KiB from the in-process server, 16 at a time: a whole small transfer
    /// per request (HTTP on a kept-alive connection, write, sync, rename).
    #[divan::bench(sample_count = 10, sample_size = 1)]
    fn small_downloads(bencher: Bencher) {
        const FILES: usize = 200;
        let server = RUNTIME.block_on(server::TestServer::start());
        let dir = bench_dir();
        let requests: Vec<Request> = (0..FILES)
            .map(|i| {
                Request::new(&server.file_url(1024, &format!("s{i}.bin"), ""))
                    .unwrap()
                    .into_dir(dir.path())
            })
            .collect();
        let downloader = Downloader::builder()
            .jobs(16)
            .on_exists(OnExists::Overwrite)
            .build()
            .unwrap();
        print_allocations_per_request("small downloads", FILES, || {
            RUNTIME
                .block_on(downloader.batch(requests.clone()).run())
                .unwrap();
        });
        bencher
            .counter(ItemsCount::new(FILES))
            .with_inputs(|| requests.clone())
            .bench_local_values(|requests| {
                let outcomes = RUNTIME.block_on(downloader.batch(requests).run()).unwrap();
                assert!(outcomes.iter().all(Result::is_ok));
            });
    }
}

/// An input file of 100,000 lines: 50,000 URLs (every other one with a mirror), each followed
/// by one option line (`out=`, `checksum=`, `dir=` or `header=`, in turn).
#[divan::bench(sample_count = 20)]
fn parse_input(bencher: Bencher) {
    let mut text = String::new();
    for i in 0..50_000 {
        write!(
            text,
            "https://mirror-a.example.org/pool/main/p{i}/pkg_{i}.deb"
        )
        .unwrap();
        if i % 2 == 0 {
            write!(text, "\thttps://mirror-b.example.net/pool/p{i}/pkg_{i}.deb").unwrap();
        }
        text.push('\n');
        match i % 4 {
            0 => writeln!(text, "  out=renamed-{i}.deb").unwrap(),
            1 => writeln!(text, "  checksum=sha-256={}", "ab".repeat(32)).unwrap(),
            2 => writeln!(text, "  dir=sub{}", i % 100).unwrap(),
            _ => text.push_str("  header=Authorization: Bearer token\n"),
        }
    }
    assert_eq!(text.lines().count(), 100_000);
    bencher.counter(ItemsCount::new(100_000usize)).bench(|| {
        let entries = haul::input::parse_input(black_box(&text)).unwrap();
        assert_eq!(entries.len(), 50_000);
    });
}
