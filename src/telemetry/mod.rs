//! Telemetry: the worker's logic emits small typed events; this module turns each into its
//! log line, its metrics and the probes' state. Metric names live in [`metrics`] only.
//!
//! - [`metrics`]: the Prometheus names, the recorder, the table in `docs/operating.md`.
//! - [`status`]: liveness and readiness, read by the HTTP port.
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`logging`]: the log subscriber (`PAYRULES_LOG_FORMAT`, `PAYRULES_LOG`, `RUST_LOG`).
//! - `run`: a `payrules run`'s counts, its progress line and its last line.

use std::time::Duration;

use tracing::{error, info, warn};

use crate::action::ActionKind;
use crate::redact::mask_urls_in;

pub mod http;
pub mod logging;
pub mod metrics;
mod run;
pub mod status;

pub use run::{Progress, RunSummary, WorkerStopped};
pub use status::{Readiness, status};

use self::metrics as names;

/// How a message was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageOutcome {
    /// Done: acked.
    Acked,
    /// Nacked for a later retry.
    Retried,
    /// Parked as poison.
    Parked,
    /// A redelivery of a message already processed: acked without work.
    Duplicate,
    /// commercetools' subscription test notification: acked.
    TestNotification,
}

impl MessageOutcome {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageOutcome::Acked => "acked",
            MessageOutcome::Retried => "retried",
            MessageOutcome::Parked => "parked",
            MessageOutcome::Duplicate => "duplicate",
            MessageOutcome::TestNotification => "test_notification",
        }
    }
}

/// A message reached its end in the worker (logged where the reason is known).
#[derive(Debug, Clone, Copy)]
pub struct MessageSettled {
    /// The source's name (`pubsub`, `sqs`, `file`, …).
    pub source: &'static str,
    /// How.
    pub outcome: MessageOutcome,
}

impl MessageSettled {
    /// Counts it and marks progress.
    pub fn emit(self) {
        ::metrics::counter!(names::MESSAGES_TOTAL, "source" => self.source, "outcome" => self.outcome.as_str())
            .increment(1);
        status().progress();
    }
}

/// A message was received and decoded; `age` is now − its createdAt.
#[derive(Debug, Clone, Copy)]
pub struct MessageReceived {
    /// The lag behind commercetools, when the message says when it was created.
    pub age: Option<Duration>,
}

impl MessageReceived {
    /// Records the lag.
    pub fn emit(self) {
        if let Some(age) = self.age {
            ::metrics::histogram!(names::MESSAGE_AGE).record(age.as_secs_f64());
        }
    }
}

/// Messages being worked on changed.
#[derive(Debug, Clone, Copy)]
pub struct InFlight(pub usize);

impl InFlight {
    /// Sets the gauge and the probes' count.
    pub fn emit(self) {
        // usize → f64 is exact far beyond any concurrency setting.
        #[allow(clippy::cast_precision_loss)]
        ::metrics::gauge!(names::IN_FLIGHT).set(self.0 as f64);
        status().set_in_flight(self.0);
    }
}

/// The timers still pending in the store.
#[derive(Debug, Clone, Copy)]
pub struct TimersPending(pub u64);

impl TimersPending {
    /// Sets the gauge.
    pub fn emit(self) {
        #[allow(clippy::cast_precision_loss)]
        ::metrics::gauge!(names::TIMERS_PENDING).set(self.0 as f64);
    }
}

/// How an action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionOutcome {
    /// Executed and recorded done.
    Done,
    /// Failed, transiently (will retry) or permanently.
    Failed,
    /// Not run: already in the ledger, or it no longer applies.
    Skipped,
}

impl ActionOutcome {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionOutcome::Done => "done",
            ActionOutcome::Failed => "failed",
            ActionOutcome::Skipped => "skipped",
        }
    }
}

/// An action finished.
#[derive(Debug, Clone, Copy)]
pub struct ActionFinished<'a> {
    /// What it was.
    pub action: ActionKind,
    /// Its idempotency key.
    pub key: &'a str,
    /// How it ended.
    pub outcome: ActionOutcome,
    /// How long its effect took (`None` when it was not executed).
    pub elapsed: Option<Duration>,
    /// What the effect or the ledger said.
    pub detail: &'a str,
}

impl ActionFinished<'_> {
    /// Logs it, counts it, records the effect's duration.
    pub fn emit(self) {
        let action = self.action.as_str();
        ::metrics::counter!(names::ACTIONS_TOTAL, "action" => action, "outcome" => self.outcome.as_str())
            .increment(1);
        if let Some(elapsed) = self.elapsed {
            ::metrics::histogram!(names::EFFECT_DURATION, "effect" => action)
                .record(elapsed.as_secs_f64());
        }
        let ms = self.elapsed.map(|e| e.as_millis());
        match self.outcome {
            ActionOutcome::Done => {
                info!(key = %self.key, action, elapsed_ms = ms, effect = %self.detail, "action done");
            }
            ActionOutcome::Skipped => {
                info!(key = %self.key, action, reason = %self.detail, "action not run");
            }
            ActionOutcome::Failed => {
                warn!(key = %self.key, action, elapsed_ms = ms, error = %mask_urls_in(self.detail), "action failed");
            }
        }
    }
}

/// One HTTP request to commercetools (API, auth or Checkout).
#[derive(Debug, Clone, Copy)]
pub struct CommercetoolsRequest<'a> {
    /// `GET`, `POST`, …
    pub method: &'a str,
    /// The response status; `None` for a transport failure.
    pub status: Option<u16>,
}

impl CommercetoolsRequest<'_> {
    /// Counts it.
    pub fn emit(self) {
        let status = self
            .status
            .map_or_else(|| "error".to_string(), |s| s.to_string());
        ::metrics::counter!(names::CT_REQUESTS, "method" => self.method.to_string(), "status" => status)
            .increment(1);
    }
}

/// The source could or could not reach its broker. Logged once per change of state, not per
/// attempt.
#[derive(Debug, Clone)]
pub struct SourceState<'a> {
    /// The source's name.
    pub source: &'static str,
    /// `Ok` when receiving works; the error otherwise.
    pub result: Result<(), &'a str>,
}

impl SourceState<'_> {
    /// Updates readiness and the gauge; logs a change.
    pub fn emit(self) {
        // Shown by the unauthenticated /readyz and logged: any URL in it masked.
        let result = self.result.map_err(mask_urls_in);
        let (readiness, value) = match &result {
            Ok(()) => (Readiness::Ready, 1.0),
            Err(e) => (Readiness::Unavailable(e.clone()), 0.0),
        };
        ::metrics::gauge!(names::SOURCE_CONNECTED, "source" => self.source).set(value);
        status().progress();
        if status().set_source(readiness) {
            match result {
                Ok(()) => info!(source = self.source, "source connected"),
                Err(e) => {
                    error!(
                        source = self.source,
                        error = e,
                        "source cannot receive; retrying"
                    );
                }
            }
        }
    }
}

/// Which payment operation of ours failed at the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentOperation {
    /// A cancel (CancelAuthorization in Failure).
    Cancel,
    /// A capture (Charge in Failure after Checkout answered `received`).
    Capture,
    /// A refund (Refund in Failure after our refund was carried out).
    Refund,
}

/// A cancel or capture of ours that the payment reports failed at the provider, reported once
/// per payment: someone must act where the payment was authorized.
#[derive(Debug, Clone, Copy)]
pub struct PaymentOperationFailed<'a> {
    /// Which.
    pub operation: PaymentOperation,
    /// The payment.
    pub payment_id: &'a str,
    /// The orders referencing it.
    pub order_ids: &'a [&'a str],
    /// Still reserved (cancel) or still open, not taken (capture), in `currency` cents.
    pub amount: i64,
    /// The payment's currency.
    pub currency: &'a str,
}

impl PaymentOperationFailed<'_> {
    /// Counts it and logs it at error.
    pub fn emit(self) {
        let operation = match self.operation {
            PaymentOperation::Cancel => "cancel",
            PaymentOperation::Capture => "capture",
            PaymentOperation::Refund => "refund",
        };
        ::metrics::counter!(names::FAILED_PAYMENT_OPERATIONS, "operation" => operation)
            .increment(1);
        let (payment_id, order_ids, amount, currency) =
            (self.payment_id, self.order_ids, self.amount, self.currency);
        match self.operation {
            PaymentOperation::Cancel => error!(
                payment_id,
                ?order_ids,
                authorized = amount,
                currency,
                "our cancel of this authorization failed: the money is still reserved (an order \
                 referencing the payment is released; otherwise cancel it at the PSP)"
            ),
            PaymentOperation::Capture => error!(
                payment_id,
                ?order_ids,
                open = amount,
                currency,
                "our capture of this payment failed at the provider: the order shipped and its \
                 money was not taken (capture it at the PSP, or contact the customer)"
            ),
            PaymentOperation::Refund => error!(
                payment_id,
                ?order_ids,
                kept = amount,
                currency,
                "our refund of this payment failed at the provider: the customer's money was not \
                 given back and payrules will not try again (refund it at the PSP)"
            ),
        }
    }
}

/// Charged money on a payment that only cancelled orders reference, while
/// refund_on_order_cancelled is off: payrules keeps its hands off, and a person decides what
/// goes back. Reported once per payment.
#[derive(Debug, Clone, Copy)]
pub struct ChargedOnCancelledOrders<'a> {
    /// The payment.
    pub payment_id: &'a str,
    /// The (cancelled) orders referencing it.
    pub order_ids: &'a [&'a str],
    /// What could be refunded, in `currency` cents.
    pub charged: i64,
    /// The payment's currency.
    pub currency: &'a str,
}

impl ChargedOnCancelledOrders<'_> {
    /// Counts it and logs it at warn.
    pub fn emit(self) {
        ::metrics::counter!(names::CHARGED_ON_CANCELLED_ORDERS).increment(1);
        warn!(
            payment_id = self.payment_id,
            order_ids = ?self.order_ids,
            charged = self.charged,
            currency = self.currency,
            "charged money on a payment whose orders are all cancelled: not refunded \
             (refund_on_order_cancelled is off); refund it, or keep it on purpose"
        );
    }
}

/// refund_on_return found more due for a returned line than the order's payments have left to
/// refund: what could be refunded was, the rest needs a person. Reported once per line and
/// returned quantity.
#[derive(Debug, Clone, Copy)]
pub struct ReturnNotRefundable<'a> {
    /// The order.
    pub order_id: &'a str,
    /// The returned line.
    pub line_id: &'a str,
    /// returned(L).
    pub returned: u64,
    /// What could not be refunded, in `currency` cents.
    pub short: i64,
    /// The order's currency.
    pub currency: &'a str,
}

impl ReturnNotRefundable<'_> {
    /// Counts it and logs it at error.
    pub fn emit(self) {
        ::metrics::counter!(names::RETURNS_NOT_REFUNDABLE).increment(1);
        error!(
            order_id = self.order_id,
            line_id = self.line_id,
            returned = self.returned,
            short = self.short,
            currency = self.currency,
            "returned goods not fully refundable: the order's payments have less left to refund than is due; refund the rest by hand"
        );
    }
}

/// A grace-period check found a payment's money in flight (a Charge or Authorization still
/// Initial or Pending, no order) at every recheck for about a day, and stops looking: payrules
/// will not cancel that authorization by itself. Reported once per payment.
#[derive(Debug, Clone, Copy)]
pub struct MoneyInFlightTooLong<'a> {
    /// The payment.
    pub payment_id: &'a str,
    /// Which transaction is still Initial or Pending: `charge` or `authorization`.
    pub pending: &'static str,
    /// How long its money has been in flight, at least (rechecks × grace period).
    pub in_flight_for: Duration,
    /// How many checks found it in flight.
    pub checks: u32,
    /// Authorized money no order holds, in `currency` cents.
    pub authorized: i64,
    /// The payment's currency.
    pub currency: &'a str,
}

impl MoneyInFlightTooLong<'_> {
    /// Counts it and logs it at error, with the same label.
    pub fn emit(self) {
        ::metrics::counter!(names::MONEY_IN_FLIGHT_TOO_LONG, "pending" => self.pending)
            .increment(1);
        error!(
            payment_id = self.payment_id,
            pending = self.pending,
            in_flight_seconds = self.in_flight_for.as_secs(),
            checks = self.checks,
            authorized = self.authorized,
            currency = self.currency,
            "this payment's money has been in flight for {} hours or more with no order: its \
             grace-period check stops looking and payrules will not cancel it (settle the \
             transaction at the PSP, or cancel the authorization there)",
            self.in_flight_for.as_secs() / 3600
        );
    }
}

/// commercetools accepted payrules' credentials, or refused them (token endpoint refusing the
/// client, 401 after a refresh, 403). Logged at error once per change of state, not per request;
/// readiness names the refusal meanwhile.
#[derive(Debug, Clone)]
pub struct CredentialsState<'a> {
    /// `Ok` when a request was accepted; the refusal otherwise.
    pub result: Result<(), &'a str>,
}

impl CredentialsState<'_> {
    /// Updates readiness and the gauge; logs a change.
    pub fn emit(self) {
        let (readiness, value) = match self.result {
            Ok(()) => (Readiness::Ready, 1.0),
            Err(e) => (Readiness::Unavailable(e.to_string()), 0.0),
        };
        if status().set_commercetools(readiness) {
            ::metrics::gauge!(names::CREDENTIALS_ACCEPTED).set(value);
            match self.result {
                Ok(()) => info!("commercetools accepts the credentials again"),
                Err(e) => error!(
                    error = e,
                    "commercetools refuses payrules' credentials; every message waits (retried) until an operator fixes them"
                ),
            }
        }
    }
}

/// A `CheckoutOrderCreationFailed` event the cart it names does not confirm: the payment is
/// not cancelled at once for it; the grace-period check decides as for any payment.
#[derive(Debug, Clone, Copy)]
pub struct OrderCreationFailureUnconfirmed<'a> {
    /// The payment the event names.
    pub payment_id: &'a str,
    /// The cart the event names, if any.
    pub cart_id: Option<&'a str>,
    /// The metric label: `cart_ordered`, `payment_not_in_cart`, `cart_missing` or `no_cart`.
    pub why: &'static str,
}

impl OrderCreationFailureUnconfirmed<'_> {
    /// Counts it and logs it at warn.
    pub fn emit(self) {
        ::metrics::counter!(names::ORDER_CREATION_FAILURES_UNCONFIRMED, "why" => self.why)
            .increment(1);
        warn!(
            payment_id = self.payment_id,
            cart_id = self.cart_id,
            why = self.why,
            "CheckoutOrderCreationFailed not confirmed by its cart: no cancel at once; the grace-period check decides"
        );
    }
}

/// Pulling paused (`reason`: the dependency's error) or resumed (`None`).
#[derive(Debug, Clone, Copy)]
pub struct PullingPaused<'a> {
    /// Why it paused; `None` when it resumes.
    pub reason: Option<&'a str>,
}

impl PullingPaused<'_> {
    /// Sets the gauge; logs the change.
    pub fn emit(self) {
        ::metrics::gauge!(names::PULLING_PAUSED).set(if self.reason.is_some() { 1.0 } else { 0.0 });
        status().progress();
        match self.reason {
            Some(reason) => error!(
                error = %mask_urls_in(reason),
                "a dependency is down: no new message is taken; the messages that need it are held (not dead-lettered) until it is back"
            ),
            None => info!("dependencies answer again: taking new messages"),
        }
    }
}

/// The number of messages held through an outage changed, or a held message was tried again
/// (each try is progress for the liveness probe: the worker waits, it is not wedged).
#[derive(Debug, Clone, Copy)]
pub struct MessageHeld(pub usize);

impl MessageHeld {
    /// Sets the gauge; marks progress.
    pub fn emit(self) {
        #[allow(clippy::cast_precision_loss)]
        ::metrics::gauge!(names::MESSAGES_HELD).set(self.0 as f64);
        status().progress();
    }
}

/// What a broker call that failed was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerOperation {
    /// Acking (Pub/Sub).
    Ack,
    /// Deleting (SQS).
    Delete,
    /// Nacking, or setting the visibility for a retry.
    Nack,
    /// Parking: the dead-letter copy, or handing over to the broker's policy.
    Park,
    /// Renewing a lease (SQS visibility).
    Renew,
    /// Giving back what was received and not handed out, at shutdown.
    Return,
}

impl BrokerOperation {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            BrokerOperation::Ack => "ack",
            BrokerOperation::Delete => "delete",
            BrokerOperation::Nack => "nack",
            BrokerOperation::Park => "park",
            BrokerOperation::Renew => "renew",
            BrokerOperation::Return => "return",
        }
    }
}

/// A broker call that settles or keeps messages failed: one log line and one counter with
/// the same labels.
#[derive(Debug, Clone, Copy)]
pub struct BrokerOperationFailed<'a> {
    /// The source's name.
    pub source: &'static str,
    /// What the call was for.
    pub operation: BrokerOperation,
    /// How many messages it concerned.
    pub messages: usize,
    /// What went wrong.
    pub error: &'a str,
    /// What becomes of the messages, for the log line.
    pub consequence: &'static str,
}

impl BrokerOperationFailed<'_> {
    /// Counts it and logs it (a failed park at error: poison comes back).
    pub fn emit(self) {
        let (source, operation) = (self.source, self.operation.as_str());
        ::metrics::counter!(names::BROKER_OPERATION_FAILURES, "source" => source, "operation" => operation)
            .increment(u64::try_from(self.messages).unwrap_or(u64::MAX));
        let error = mask_urls_in(self.error);
        if self.operation == BrokerOperation::Park {
            error!(
                source,
                operation,
                messages = self.messages,
                error,
                "{}",
                self.consequence
            );
        } else {
            warn!(
                source,
                operation,
                messages = self.messages,
                error,
                "{}",
                self.consequence
            );
        }
    }
}

/// One attempt of a release webhook failed; `error` names no path or query of its URL.
#[derive(Debug, Clone, Copy)]
pub struct WebhookAttemptFailed<'a> {
    /// The release's ledger key.
    pub key: &'a str,
    /// Which attempt.
    pub attempt: u32,
    /// What went wrong.
    pub error: &'a str,
}

impl WebhookAttemptFailed<'_> {
    /// Counts it and logs it at warn.
    pub fn emit(self) {
        ::metrics::counter!(names::WEBHOOK_FAILURES).increment(1);
        warn!(
            key = self.key,
            attempt = self.attempt,
            error = self.error,
            "release webhook failed"
        );
    }
}

/// The state store answered, or failed.
#[derive(Debug, Clone)]
pub struct StoreState<'a> {
    /// `Ok` when it answers; the error otherwise.
    pub result: Result<(), &'a str>,
}

impl StoreState<'_> {
    /// Updates readiness and the gauge; logs a change.
    pub fn emit(self) {
        // Shown by the unauthenticated /readyz and logged: any URL in it masked.
        let result = self.result.map_err(mask_urls_in);
        let (readiness, value) = match &result {
            Ok(()) => (Readiness::Ready, 1.0),
            Err(e) => (Readiness::Unavailable(e.clone()), 0.0),
        };
        ::metrics::gauge!(names::STORE_READY).set(value);
        if status().set_store(readiness) {
            match result {
                Ok(()) => info!("state store ready"),
                Err(e) => error!(error = e, "state store unavailable; retrying"),
            }
        }
    }
}
