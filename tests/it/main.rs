//! Integration tests against real local peers, in one test binary (compiled once): a module
//! per area, and [`support`] with what they share (the peers, fixtures, the `payrules` binary as
//! a process). Peers are started on first use and shared by the tests of this binary (each test
//! uses fresh names: queues, topics, projects, databases), never skipped: a missing peer fails
//! the test. Run with `bash scripts/test.sh --test it`, which installs them first; one area with
//! `bash scripts/test.sh --test it store::`.
//!
//! Tests that need a process of their own stay separate binaries: `tests/shutdown.rs` (the
//! shutdown budget, timed on an otherwise idle process) and `tests/soak.rs` (reads its own
//! process's memory).

mod support;

mod checkout;
mod commercetools;
mod crash;
mod decoding;
mod explain;
mod live_money;
mod ops;
mod peers_smoke;
mod pubsub;
mod reconcile;
mod replay_pipeline;
mod run_file;
mod scenarios;
mod sqs;
mod store;
mod storms;
mod subscription;
mod webhook_receivers;
