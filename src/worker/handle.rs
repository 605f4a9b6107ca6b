//! One message's way through the worker: decode, process, then ack, retry (with the message retry
//! policy) or park.

use super::RunStats;
use crate::config::WorkerSettings;
use crate::message::decode;
use crate::process::{Handled, Processor};
use crate::retry::Backoff;
use crate::source::Delivery;
use crate::telemetry::{
    BrokerOperation, BrokerOperationFailed, MessageOutcome, MessageReceived, MessageSettled,
};
use chrono::Utc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tracing::{error, info, warn};

/// The longest a failed message waits before its next try: an outage of a dependency is
/// retried at least this often, however long it lasts.
pub(super) const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

/// A failed message's retry policy: `retry_delay` doubling to [`MAX_RETRY_DELAY`], ±20 % so
/// messages that failed together do not all come back in the same instant.
pub(super) fn message_backoff(retry_delay: Duration) -> Backoff {
    Backoff::exponential(retry_delay, MAX_RETRY_DELAY).with_jitter(0.2)
}

/// Receive and timer-store failures: `retry_delay` doubling to 60 s.
pub(super) fn outage_backoff(retry_delay: Duration) -> Backoff {
    Backoff::exponential(retry_delay, Duration::from_secs(60))
}

/// How a handled delivery is to be settled.
pub(super) enum Outcome {
    /// Done (or nothing to do): delete it; how it is counted.
    Ack(MessageOutcome),
    /// Failed transiently: tried again later, or parked once it has failed too often.
    Retry {
        /// What went wrong.
        error: String,
        /// When the failure says to come back, if it does.
        retry_after: Option<Duration>,
        /// Whose failure it is: decides whether it is held, nacked, or counted toward parking.
        cause: RetryCause,
    },
    /// Poison: park it with this reason.
    Park(String),
}

/// Whose failure a retry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RetryCause {
    /// The message's own (a receiver's 4xx other than 408/429, a commercetools 400): nacked,
    /// and parked with its reason after `max_deliveries`.
    Message,
    /// A dependency is down (commercetools, Checkout, the webhook receiver, the store): the
    /// message is held in place, its lease extended, and pulling pauses until it goes through
    /// (see `hold`). Never counts toward parking.
    Outage,
    /// Another worker holds a claim the message needs: nacked to come back once that claim is
    /// recorded or its lease runs out. Never counts toward parking.
    Claimed,
}

/// Decides how `delivery` ends: decodes, deduplicates, decides and executes.
pub(super) async fn outcome_of(
    delivery: &Delivery,
    processor: &Processor,
    stats: &RunStats,
    max_bytes: usize,
) -> Outcome {
    if delivery.payload.len() > max_bytes {
        return Outcome::Park(format!(
            "message of {} bytes is over the limit of {max_bytes} (worker.max_message_bytes); not decoded",
            delivery.payload.len()
        ));
    }
    let message = match decode(&delivery.payload) {
        Ok(m) => m,
        Err(e) => return Outcome::Park(format!("undecodable message: {e}")),
    };
    let age = message
        .created_at
        .and_then(|created| (Utc::now() - created).to_std().ok());
    if let Some(age) = age {
        stats.last_age_ms.store(
            u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
    MessageReceived { age }.emit();
    if message.is_subscription_test() {
        stats.subscription_tests.fetch_add(1, Ordering::Relaxed);
        info!("subscription test notification skipped");
        return Outcome::Ack(MessageOutcome::TestNotification);
    }
    match processor.handle(&message, Utc::now()).await {
        Ok(Handled::Inert) => Outcome::Ack(MessageOutcome::Acked),
        Ok(Handled::Duplicate) => {
            stats.duplicates.fetch_add(1, Ordering::Relaxed);
            Outcome::Ack(MessageOutcome::Duplicate)
        }
        Ok(Handled::Done(actions)) => {
            stats.actions.fetch_add(actions.len(), Ordering::Relaxed);
            Outcome::Ack(MessageOutcome::Acked)
        }
        Err(e) if e.is_retryable() => Outcome::Retry {
            error: e.to_string(),
            retry_after: e.retry_after(),
            cause: if e.is_claimed() {
                RetryCause::Claimed
            } else if e.is_outage() {
                RetryCause::Outage
            } else {
                RetryCause::Message
            },
        },
        Err(e) => Outcome::Park(e.to_string()),
    }
}

/// Acks, nacks or parks (or, if settling fails, leaves the delivery to the transport's
/// redelivery).
pub(super) async fn settle(
    delivery: Delivery,
    outcome: Outcome,
    settings: &WorkerSettings,
    stats: &RunStats,
    source: &'static str,
) {
    let settled = match outcome {
        Outcome::Ack(counted) => ack(delivery, stats, source).await.then_some(counted),
        Outcome::Retry {
            error,
            retry_after,
            cause,
        } => {
            let counts = cause == RetryCause::Message;
            let retry = Retry {
                error: &error,
                retry_after,
                counts,
            };
            retry_or_park(delivery, retry, settings, stats, source).await
        }
        Outcome::Park(reason) => park(delivery, &reason, stats, source)
            .await
            .then_some(MessageOutcome::Parked),
    };
    if let Some(outcome) = settled {
        MessageSettled { source, outcome }.emit();
    }
}

/// A failed try, as the settling sees it.
pub(super) struct Retry<'a> {
    /// What went wrong.
    error: &'a str,
    /// When the failure says to come back, if it does.
    retry_after: Option<Duration>,
    /// A failure of the message's own: counts toward `max_deliveries`.
    counts: bool,
}

/// Nacks with a growing delay, or — for a failure of the message's own — parks once
/// `max_deliveries` is reached.
pub(super) async fn retry_or_park(
    delivery: Delivery,
    retry: Retry<'_>,
    settings: &WorkerSettings,
    stats: &RunStats,
    source: &'static str,
) -> Option<MessageOutcome> {
    let Retry {
        error,
        retry_after,
        counts,
    } = retry;
    let attempt = delivery.delivery_count.unwrap_or(1);
    if attempt >= settings.max_deliveries && counts {
        let reason = format!("failed {attempt} deliveries, last error: {error}");
        return park(delivery, &reason, stats, source)
            .await
            .then_some(MessageOutcome::Parked);
    }
    let delay = retry_after
        .unwrap_or_else(|| message_backoff(settings.retry_delay).delay(attempt))
        .min(MAX_RETRY_DELAY);
    warn!(error, retry_in = ?delay, "message failed; retrying");
    stats.retried.fetch_add(1, Ordering::Relaxed);
    match delivery.nack(delay).await {
        Ok(()) => Some(MessageOutcome::Retried),
        Err((err, _)) => {
            BrokerOperationFailed {
                source,
                operation: BrokerOperation::Nack,
                messages: 1,
                error: &err.to_string(),
                consequence: "nack failed; the transport will redeliver after its timeout",
            }
            .emit();
            None
        }
    }
}

/// Acks; whether the transport took it.
pub(super) async fn ack(delivery: Delivery, stats: &RunStats, source: &'static str) -> bool {
    match delivery.ack().await {
        Ok(()) => {
            stats.acked.fetch_add(1, Ordering::Relaxed);
            true
        }
        Err((e, _)) => {
            BrokerOperationFailed {
                source,
                operation: BrokerOperation::Ack,
                messages: 1,
                error: &e.to_string(),
                consequence: "ack failed; the message will be redelivered and deduplicated by the ledger",
            }
            .emit();
            false
        }
    }
}

/// Parks; whether the transport took it.
pub(super) async fn park(
    delivery: Delivery,
    reason: &str,
    stats: &RunStats,
    source: &'static str,
) -> bool {
    error!(reason, "message parked");
    stats.parked.fetch_add(1, Ordering::Relaxed);
    match delivery.park(reason).await {
        Ok(()) => true,
        Err((e, _)) => {
            BrokerOperationFailed {
                source,
                operation: BrokerOperation::Park,
                messages: 1,
                error: &e.to_string(),
                consequence: "parking failed; the message will be redelivered",
            }
            .emit();
            false
        }
    }
}
