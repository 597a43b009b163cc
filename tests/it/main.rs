//! Integration tests: the library and the real binary against the in-process server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

/// The CLI on batches as people run them: signals, logs, per-file rates, two copies at once.
mod batches;
/// The real binary: arguments, exit codes, messages, resume after a crash or Ctrl-C.
mod cli;
/// One download controlled while it lives: pause, resume, queue positions, live limits.
mod control;
/// `haul daemon` driven by real aria2 clients (aria2p, the aria2 npm package), killed and restarted.
mod daemon;
/// The library as an embedder calls it: cancellation, its own client, error kinds, the examples.
mod embedding;
/// Hostile input: names and listings from the network never leave the directory.
mod hostile;
/// Checksums and digests: announced, given, in sums files; wrong ones never get a final name.
mod integrity;
/// Real servers started on loopback (nginx, python http.server, TLS).
mod interop;
/// The promises of single downloads and batches; errors and retries as the library reports them.
mod library;
/// Metalink documents: mirrors, sizes, hashes, piece repair, hostile documents.
mod metalink;
/// `haul sync` as a mirror job relies on it: names, conflicts, deletions, S3.
mod mirror;
/// What surprised a new user of the CLI (round 3), each fixed and run with the real binary.
mod newcomer;
/// What people and scripts see: JSON events, plain lines, bars.
mod output;
/// Where features meet: resumes, names, mirrors and descriptors in combination.
mod pipeline;
/// Power cuts simulated by crashfs: the commit path keeps nothing half-done.
mod powerloss;
/// Proxies, credentials, cookies, IPv4/IPv6, TLS options.
mod reach;
/// Retries, Retry-After, stalls, slow servers, full disks, politeness.
mod reliability;
/// Resuming within a run and across runs, and every way a server can make it unsafe.
mod resume;
/// One road to the server: deadlines, redirects, retries shared by every request path.
mod road;
/// Bulk scale: memory and time independent of the list's length, kill -9 mid-batch.
mod scale;
/// Segmented downloads and mirrors: exact bytes over several ranged connections.
mod segments;
/// The library in a long-lived service: shared limits, ids, tags, cancellers, views, side requests.
mod service;
/// The property-based fault simulation: drawn schedules, invariants checked.
mod simulation;
/// A real Slurm cluster running the repo's job-array script.
mod slurm;
/// The in-process test server, crashfs and helpers (not tests).
mod support;
/// `haul sync`: listings and manifests mirrored incrementally and safely.
mod sync;
