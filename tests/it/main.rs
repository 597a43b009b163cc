//! Integration tests: the library and the real binary against the in-process server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod batches;
mod cli;
mod embedding;
mod hostile;
mod integrity;
mod interop;
mod library;
mod mirror;
mod output;
mod pipeline;
mod powerloss;
mod reach;
mod reliability;
mod resume;
mod road;
mod scale;
mod segments;
mod service;
mod simulation;
mod slurm;
mod support;
mod sync;
