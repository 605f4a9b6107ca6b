//! Integration tests against real local peers, in one test binary (compiled once): a module
//! per area, and [`support`] with what they share (the peers, fixtures, the `payrules` binary as
//! a process). Peers are started on first use and shared by the tests of this binary (each test
//! uses fresh names: queues, topics, projects, databases), never skipped: a missing peer fails
//! the test. Run with `bash scripts/test.sh --test it`, which installs them first; one area with
//! `bash scripts/test.sh --test it store::`.
//!
//! Two tests stay binaries of their own, because cargo runs test binaries one after another
//! and so each runs with nothing else in the machine: `tests/shutdown.rs` (a shutdown budget of
//! seconds, timed) and `tests/soak.rs` (50,000 messages, the worker's RSS and open files
//! bounded, logs in a fixed directory). `tests/docs.rs` (the documentation's links; std only)
//! builds in seconds and needs no peer.

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
mod refunds;
mod replay_pipeline;
mod returns;
mod run_file;
mod scenarios;
mod sqs;
mod store;
mod storms;
mod subscription;
mod webhook_receivers;
