//! payrules: payment rules for commercetools, run beside its Subscriptions.
//!
//! It consumes commercetools notifications about Payments and Orders (and Checkout events)
//! from Google Cloud Pub/Sub or AWS SQS and runs payment rules on them: *release for
//! fulfillment* (an order whose payments' money covers its gross total is handed to the
//! fulfillment team), the *cancel* rules (an authorization no order will use — none appeared
//! within a grace period, Checkout could not create it, or it was cancelled — is cancelled)
//! and, opt-in, *capture on shipment*. Messages arrive late, twice and out of order; each side
//! effect still happens once.
//!
//! # The API for your tests
//! What a team running payrules can build its own tests on, kept stable:
//! - [`replay`]: [`replay::replay_files`] and [`replay::Replay`] — feed notifications, get the
//!   actions the rules plan, exactly as `payrules replay` prints them;
//! - [`testing`]: compare those actions with an expected-actions file
//!   ([`testing::check_scenario`], [`testing::compare`], [`testing::read_actions`]);
//! - [`action::Action`] (serializes to, and deserializes from, a replay output line) and
//!   [`rules::Rules`] (the rule settings).
//!
//! Every other module is public only so that payrules' own binary, tests, benchmarks and load
//! tool can reach it; it is internal and may change in any release.
//!
//! # Where is the code?
//! `ARCHITECTURE.md` at the repository root: the flow of a notification (source → message →
//! view → rules → process → effects, the store beside), one message followed from an SQS queue
//! to its ack, the invariants, and one line per module saying its job. Each module's own doc
//! comment says more.

pub mod action;
pub mod app;
pub mod cli;
pub mod commerce;
pub mod config;
#[cfg(test)]
mod doc_section;
pub mod effects;
pub mod explain;
pub mod message;
pub mod model;
pub mod process;
pub mod reconcile;
pub mod redact;
pub mod replay;
pub mod retry;
pub mod rules;
pub mod source;
pub mod store;
pub mod subscription;
pub mod telemetry;
pub mod testing;
pub mod view;
pub mod worker;
