//! The Prometheus metrics: every name, its kind and help text live here, and only here.

use std::time::Duration;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// A metric's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets.
    Histogram,
}

/// One metric payrules exports.
#[derive(Debug, Clone, Copy)]
pub struct MetricSpec {
    /// The Prometheus name.
    pub name: &'static str,
    /// Its kind.
    pub kind: MetricKind,
    /// Its labels.
    pub labels: &'static [&'static str],
    /// What it measures (the `# HELP` line and the metrics table of `docs/operating.md`).
    pub help: &'static str,
}

/// Messages settled, by source and outcome.
pub const MESSAGES_TOTAL: &str = "payrules_messages_total";
/// Actions finished, by action and outcome.
pub const ACTIONS_TOTAL: &str = "payrules_actions_total";
/// Messages being worked on.
pub const IN_FLIGHT: &str = "payrules_in_flight";
/// Grace-period timers not yet fired.
pub const TIMERS_PENDING: &str = "payrules_timers_pending";
/// now − createdAt of each message when received.
pub const MESSAGE_AGE: &str = "payrules_message_age_seconds";
/// How long each effect took.
pub const EFFECT_DURATION: &str = "payrules_effect_duration_seconds";
/// Requests to the commercetools APIs, by method and status.
pub const CT_REQUESTS: &str = "payrules_commercetools_requests_total";
/// Always 1, labelled with the version.
pub const BUILD_INFO: &str = "payrules_build_info";
/// 1 while the source receives, 0 while it cannot reach its broker.
pub const SOURCE_CONNECTED: &str = "payrules_source_connected";
/// 1 while the state store answers, 0 while it does not.
pub const STORE_READY: &str = "payrules_store_ready";
/// 1 while commercetools accepts payrules' credentials, 0 while it refuses them.
pub const CREDENTIALS_ACCEPTED: &str = "payrules_commercetools_credentials_accepted";
/// Cancels, captures and refunds of ours that the payments report failed at the provider.
pub const FAILED_PAYMENT_OPERATIONS: &str = "payrules_failed_payment_operations_total";
/// `CheckoutOrderCreationFailed` events the named cart did not confirm, by why.
pub const ORDER_CREATION_FAILURES_UNCONFIRMED: &str =
    "payrules_order_creation_failures_unconfirmed_total";
/// 1 while pulling is paused because a dependency is down, 0 otherwise.
pub const PULLING_PAUSED: &str = "payrules_pulling_paused";
/// Messages held through a dependency's outage now.
pub const MESSAGES_HELD: &str = "payrules_messages_held";
/// Broker calls that settle or keep messages and failed, by source and operation.
pub const BROKER_OPERATION_FAILURES: &str = "payrules_broker_operation_failures_total";
/// Release webhook attempts that failed.
pub const WEBHOOK_FAILURES: &str = "payrules_webhook_failures_total";
/// Payments whose money stayed in flight past the grace check's recheck cap.
pub const MONEY_IN_FLIGHT_TOO_LONG: &str = "payrules_money_in_flight_too_long_total";
/// Payments with charged money whose orders are all cancelled, while refund_on_order_cancelled
/// is off.
pub const CHARGED_ON_CANCELLED_ORDERS: &str = "payrules_charged_on_cancelled_orders_total";
/// Returned lines whose due refund exceeds what the order's payments have left to refund.
pub const RETURNS_NOT_REFUNDABLE: &str = "payrules_returns_not_refundable_total";

/// Every metric, for the `# HELP` lines and the table of `docs/operating.md`.
pub const METRICS: &[MetricSpec] = &[
    MetricSpec {
        name: MESSAGES_TOTAL,
        kind: MetricKind::Counter,
        labels: &["source", "outcome"],
        help: "Messages settled; outcome: acked, retried, parked, duplicate, test_notification.",
    },
    MetricSpec {
        name: ACTIONS_TOTAL,
        kind: MetricKind::Counter,
        labels: &["action", "outcome"],
        help: "Actions finished; outcome: done, failed (transient or permanent), skipped (already in the ledger or no longer applies).",
    },
    MetricSpec {
        name: IN_FLIGHT,
        kind: MetricKind::Gauge,
        labels: &[],
        help: "Messages being decided and executed now.",
    },
    MetricSpec {
        name: TIMERS_PENDING,
        kind: MetricKind::Gauge,
        labels: &[],
        help: "Grace-period timers scheduled and not yet fired.",
    },
    MetricSpec {
        name: MESSAGE_AGE,
        kind: MetricKind::Histogram,
        labels: &[],
        help: "Seconds between a message's createdAt and its receipt: the lag behind commercetools.",
    },
    MetricSpec {
        name: EFFECT_DURATION,
        kind: MetricKind::Histogram,
        labels: &["effect"],
        help: "Seconds an effect (webhook, order update, cancel, capture) took, retries included.",
    },
    MetricSpec {
        name: CT_REQUESTS,
        kind: MetricKind::Counter,
        labels: &["method", "status"],
        help: "Requests to commercetools (API, auth, Checkout); status is the HTTP status or \"error\" for a transport failure.",
    },
    MetricSpec {
        name: BUILD_INFO,
        kind: MetricKind::Gauge,
        labels: &["version"],
        help: "Always 1; the label carries the running version.",
    },
    MetricSpec {
        name: SOURCE_CONNECTED,
        kind: MetricKind::Gauge,
        labels: &["source"],
        help: "1 while the source receives from its broker, 0 while it cannot.",
    },
    MetricSpec {
        name: STORE_READY,
        kind: MetricKind::Gauge,
        labels: &[],
        help: "1 while the state store is open and answering, 0 otherwise.",
    },
    MetricSpec {
        name: CREDENTIALS_ACCEPTED,
        kind: MetricKind::Gauge,
        labels: &[],
        help: "1 while commercetools accepts payrules' credentials, 0 while the token endpoint or the API refuses them (401/403): an operator must fix the secret or the scopes.",
    },
    MetricSpec {
        name: FAILED_PAYMENT_OPERATIONS,
        kind: MetricKind::Counter,
        labels: &["operation"],
        help: "Cancels, captures and refunds of ours that the payment reports failed at the provider, each payment once: cancel — the money is still reserved; capture — the order shipped and its money was not taken; refund — the customer's money was not given back. Alert on any increase.",
    },
    MetricSpec {
        name: PULLING_PAUSED,
        kind: MetricKind::Gauge,
        labels: &[],
        help: "1 while the worker takes no new message because a dependency (commercetools, Checkout, the webhook receiver, the store) is down and messages wait for it; 0 otherwise. The log says which dependency.",
    },
    MetricSpec {
        name: MESSAGES_HELD,
        kind: MetricKind::Gauge,
        labels: &[],
        help: "Messages held in place (lease extended, not nacked, never dead-lettered) until the dependency they need is back.",
    },
    MetricSpec {
        name: BROKER_OPERATION_FAILURES,
        kind: MetricKind::Counter,
        labels: &["source", "operation"],
        help: "Messages whose broker call failed, by operation: ack / delete (redelivered, then deduplicated by the ledger), nack (redelivered after its lease), park (redelivered, parked again), renew (an SQS visibility renewal: may be redelivered while worked on), return (given back at shutdown: comes back after its lease). Each failure also logs one line with the same labels.",
    },
    MetricSpec {
        name: WEBHOOK_FAILURES,
        kind: MetricKind::Counter,
        labels: &[],
        help: "Release webhook attempts that failed (transport error, redirect or non-2xx answer); the release is retried. Each also logs one WARN line `release webhook failed`.",
    },
    MetricSpec {
        name: ORDER_CREATION_FAILURES_UNCONFIRMED,
        kind: MetricKind::Counter,
        labels: &["why"],
        help: "CheckoutOrderCreationFailed events whose cart contradicts them (why: cart_ordered — an order was created from it; payment_not_in_cart; cart_missing; no_cart — the event names none): no cancel at once, the grace-period check decides. Any increase on a topic only commercetools writes to deserves a look.",
    },
    MetricSpec {
        name: CHARGED_ON_CANCELLED_ORDERS,
        kind: MetricKind::Counter,
        labels: &[],
        help: "Payments with charged money that only cancelled orders reference, each payment once, while refund_on_order_cancelled is off: payrules does not refund them (merchants may keep a fee); someone should decide.",
    },
    MetricSpec {
        name: RETURNS_NOT_REFUNDABLE,
        kind: MetricKind::Counter,
        labels: &[],
        help: "Returned lines (each line and returned quantity once) whose due refund exceeds what the order's payments still have to refund (refund_on_return): payrules refunded what it could; someone must give back the rest. Each also logs one ERROR line `returned goods not fully refundable`.",
    },
    MetricSpec {
        name: MONEY_IN_FLIGHT_TOO_LONG,
        kind: MetricKind::Counter,
        labels: &["pending"],
        help: "Payments with authorized or charged money and no order whose Charge, Refund or Authorization (`pending`: charge, refund, authorization) stayed Initial or Pending through a day of grace-period rechecks, each payment once: the check stops and payrules will not cancel or refund it. Alert on any increase.",
    },
];

/// Bucket bounds (seconds) for the message age: from sub-second delivery to a day's backlog.
const AGE_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0,
];

/// Bucket bounds (seconds) for effect durations: one HTTP call to a few retries.
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Installs the process-wide Prometheus recorder and describes every metric. Until this is
/// called, recording a metric costs next to nothing and goes nowhere (replay, tests).
///
/// # Errors
/// A recorder is already installed.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(MESSAGE_AGE.into()), AGE_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(EFFECT_DURATION.into()), DURATION_BUCKETS)?
        .install_recorder()?;
    for m in METRICS {
        match m.kind {
            MetricKind::Counter => metrics::describe_counter!(m.name, m.help),
            MetricKind::Gauge => metrics::describe_gauge!(m.name, m.help),
            MetricKind::Histogram => metrics::describe_histogram!(m.name, m.help),
        }
    }
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    metrics::gauge!(IN_FLIGHT).set(0.0);
    metrics::gauge!(TIMERS_PENDING).set(0.0);
    metrics::gauge!(STORE_READY).set(0.0);
    metrics::gauge!(CREDENTIALS_ACCEPTED).set(1.0);
    Ok(handle)
}

/// Histograms keep raw samples until upkeep folds them into buckets: run it now and then.
pub async fn upkeep(handle: PrometheusHandle, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        handle.run_upkeep();
    }
}

/// The metrics table of `docs/operating.md`, generated from [`METRICS`] (a test keeps the page
/// in step).
pub fn markdown_table() -> String {
    let mut out = String::from("| Metric | Type | Labels | Meaning |\n|---|---|---|---|\n");
    for m in METRICS {
        let kind = match m.kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            m.name,
            kind,
            if m.labels.is_empty() {
                "—".to_string()
            } else {
                m.labels
                    .iter()
                    .map(|l| format!("`{l}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            m.help
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/operating.md`'s metrics table is the one [`markdown_table`] renders
    /// (`PAYRULES_UPDATE_DOCS=1` rewrites it).
    #[test]
    fn the_operating_page_table_is_the_generated_one() {
        crate::doc_section::assert_section("docs/operating.md", "metrics-table", &markdown_table());
    }

    #[test]
    fn names_are_prometheus_names_and_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for m in METRICS {
            assert!(m.name.starts_with("payrules_"), "{}", m.name);
            assert!(
                m.name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{}",
                m.name
            );
            assert!(seen.insert(m.name), "{} twice", m.name);
        }
    }
}
