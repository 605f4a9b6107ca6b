//! Holding messages through a dependency's outage.
//!
//! A message that fails because commercetools, Checkout, the webhook receiver or the store is
//! down has done nothing wrong: nacking it would count a delivery at the broker each time, and
//! the broker's dead-letter policy (Pub/Sub's max delivery attempts, SQS's `maxReceiveCount`)
//! would dead-letter a whole backlog after a few minutes of outage, without a reason. So the
//! message stays in its task: the source keeps its lease (Pub/Sub's lease management, SQS's
//! visibility renewer), it is tried again with capped backoff, and pulling pauses while any
//! message is held, so no new message is taken only to wait as well. The first held message
//! that goes through wakes the others, and pulling resumes once none is held. A shutdown ends
//! every hold: the message is then nacked, to be redelivered (one broker delivery per
//! shutdown, not one per retry).

use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::RunStats;
use super::handle::{Outcome, RetryCause, outage_backoff, outcome_of};
use crate::config::WorkerSettings;
use crate::process::Processor;
use crate::source::Delivery;
use crate::telemetry::{MessageHeld, PullingPaused};

/// The longest a held message waits between tries: a dependency that is back is noticed
/// within it (and the liveness probe, which wants progress every 120 s, sees each try).
const MAX_HOLD_DELAY: Duration = Duration::from_secs(60);

/// The worker's held messages: shared by the receive loop (which waits while any is held) and
/// the message tasks (which hold).
#[derive(Debug)]
pub(super) struct Holding {
    /// How many messages are held now; the receive loop waits for 0.
    held: watch::Sender<usize>,
    /// Woken when a held message went through: the others try again at once.
    recovered: Notify,
    /// Cancelled on shutdown: every hold ends and its message is nacked.
    stop: CancellationToken,
}

impl Holding {
    pub(super) fn new() -> Self {
        Self {
            held: watch::Sender::new(0),
            recovered: Notify::new(),
            stop: CancellationToken::new(),
        }
    }

    /// Ends every hold (shutdown): held messages are settled as retries at once.
    pub(super) fn stop(&self) {
        self.stop.cancel();
    }

    /// Resolves once no message is held (at once if none is).
    pub(super) async fn unpaused(&self) {
        let mut rx = self.held.subscribe();
        // The sender lives as long as `self`: the wait cannot fail while we are borrowed.
        let _ = rx.wait_for(|held| *held == 0).await;
    }

    fn hold(&self, error: &str) -> Held<'_> {
        let mut first = false;
        self.held.send_modify(|held| {
            first = *held == 0;
            *held += 1;
        });
        if first {
            PullingPaused {
                reason: Some(error),
            }
            .emit();
        }
        MessageHeld(*self.held.borrow()).emit();
        Held { holding: self }
    }
}

/// One message's place among the held; leaving it may resume pulling.
struct Held<'a> {
    holding: &'a Holding,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut last = false;
        self.holding.held.send_modify(|held| {
            *held = held.saturating_sub(1);
            last = *held == 0;
        });
        MessageHeld(*self.holding.held.borrow()).emit();
        if last {
            PullingPaused { reason: None }.emit();
        }
    }
}

/// [`outcome_of`], holding the message through a dependency's outage: tried again with backoff
/// (`retry_delay` doubling to [`MAX_HOLD_DELAY`], or what the dependency asked for) until it
/// goes through, fails for a reason of its own, or the worker shuts down.
pub(super) async fn process_holding(
    delivery: &Delivery,
    processor: &Processor,
    stats: &RunStats,
    settings: &WorkerSettings,
    holding: &Holding,
) -> Outcome {
    let mut outcome = outcome_of(delivery, processor, stats, settings.max_message_bytes).await;
    let mut held: Option<Held<'_>> = None;
    let mut failures: u32 = 0;
    while let Outcome::Retry {
        cause: RetryCause::Outage,
        error,
        retry_after,
    } = &outcome
    {
        if holding.stop.is_cancelled() {
            break;
        }
        failures = failures.saturating_add(1);
        let delay = retry_after
            .unwrap_or_else(|| outage_backoff(settings.retry_delay).delay(failures))
            .min(MAX_HOLD_DELAY);
        if held.is_none() {
            warn!(error, retry_in = ?delay, "a dependency is unavailable: message held (not nacked) and retried; pulling paused");
            held = Some(holding.hold(error));
        } else {
            debug!(error, retry_in = ?delay, attempt = failures, "message still held");
            MessageHeld(*holding.held.borrow()).emit();
        }
        let recovered = holding.recovered.notified();
        tokio::select! {
            () = holding.stop.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
            () = recovered => {}
        }
        outcome = outcome_of(delivery, processor, stats, settings.max_message_bytes).await;
    }
    let still_down = matches!(
        outcome,
        Outcome::Retry {
            cause: RetryCause::Outage,
            ..
        }
    );
    if held.is_some() && !still_down {
        holding.recovered.notify_waiters();
    }
    outcome
}
