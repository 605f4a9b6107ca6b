//! The configuration reference: what each option defaults to and means, and the Markdown table
//! of every option that `docs/configuration.md` shows ([`options_markdown_table`]; a test holds the
//! page equal to it, as the metrics table is held to [`crate::telemetry::metrics`]).
//!
//! An option itself (TOML place, variable, kind, secrecy) is defined once, in [`OPTIONS`]; this
//! adds only the words a reader needs, keyed by the option's environment variable. A test
//! checks that every option has exactly one entry here, and that every default written as a
//! single value is the value an empty configuration gets.

use super::OPTIONS;

/// What the reference says about one option.
#[derive(Debug, Clone, Copy)]
pub struct OptionDoc {
    /// The option's environment variable: its key in [`OPTIONS`].
    pub env: &'static str,
    /// The default as shown (Markdown): one value such as `` `10m` ``, `—` for none, or words.
    pub default: &'static str,
    /// What the option does (Markdown, one table cell).
    pub meaning: &'static str,
}

const fn doc(env: &'static str, default: &'static str, meaning: &'static str) -> OptionDoc {
    OptionDoc {
        env,
        default,
        meaning,
    }
}

/// Every option's default and meaning, in [`OPTIONS`] order.
pub const OPTION_DOCS: &[OptionDoc] = &[
    doc("PAYRULES_SOURCE", "`file`", "`file`, `pubsub` or `sqs`"),
    doc(
        "PAYRULES_DRY_RUN",
        "`false`",
        "decide and log, execute nothing, on a scratch ledger",
    ),
    doc(
        "PAYRULES_FILE_PATH",
        "—",
        "`.json`, `.jsonl`, directory or `-`",
    ),
    doc(
        "PAYRULES_PUBSUB_SUBSCRIPTION",
        "—",
        "`projects/P/subscriptions/S`",
    ),
    doc(
        "PAYRULES_DRY_RUN_SUBSCRIPTION",
        "—",
        "the dry run's own subscription (required for a dry run from Pub/Sub)",
    ),
    doc(
        "PAYRULES_PUBSUB_STREAMS",
        "`1`",
        "streaming pulls open at once",
    ),
    doc(
        "PAYRULES_PUBSUB_MAX_OUTSTANDING_MESSAGES",
        "`1000`",
        "flow control per stream",
    ),
    doc(
        "PAYRULES_PUBSUB_MAX_OUTSTANDING_BYTES",
        "`104857600`",
        "flow control per stream",
    ),
    doc(
        "PAYRULES_PUBSUB_DEAD_LETTER_TOPIC",
        "—",
        "where poison messages are published",
    ),
    doc("PAYRULES_SQS_QUEUE_URL", "—", "the queue"),
    doc(
        "PAYRULES_DRY_RUN_QUEUE_URL",
        "—",
        "the dry run's own queue (required for a dry run from SQS)",
    ),
    doc(
        "PAYRULES_SQS_POLLERS",
        "`4`",
        "concurrent long-poll receivers",
    ),
    doc(
        "PAYRULES_SQS_VISIBILITY_TIMEOUT",
        "`60s`",
        "extended while a message is worked on",
    ),
    doc(
        "PAYRULES_SQS_DEAD_LETTER_QUEUE_URL",
        "—",
        "where poison messages are sent",
    ),
    doc(
        "PAYRULES_STATE_URL",
        "`sqlite://payrules.db`",
        "state store: `sqlite://PATH`, `postgres://…`, or `memory:` (nothing survives a restart); also `_FILE`; masked when shown",
    ),
    doc(
        "PAYRULES_CLAIM_LEASE",
        "`15s`",
        "how long a claim or a taken timer lasts unless renewed; the executing worker renews it every third of this, so a dead worker's claim is taken over within one lease; at least `3s`",
    ),
    doc(
        "PAYRULES_RELEASE_ENABLED",
        "`true`",
        "the `release_for_fulfillment` rule",
    ),
    doc(
        "PAYRULES_RELEASE_ALSO_ON_CHARGE",
        "`false`",
        "accepted for existing configs; ignored (charges always count)",
    ),
    doc(
        "PAYRULES_RELEASE_REQUIRE_FULL_COVERAGE",
        "`true`",
        "`false`: release as soon as any allocated payment covers something",
    ),
    doc(
        "PAYRULES_CANCEL_ENABLED",
        "`true`",
        "the `cancel_orphaned_authorization` rule (grace period, failed order creation)",
    ),
    doc(
        "PAYRULES_GRACE_PERIOD",
        "`10m`",
        "e.g. `10m`, `1h 30m`; at least `30s` with the rule on (`replay` takes any)",
    ),
    doc(
        "PAYRULES_ALLOW_SHORT_GRACE_PERIOD",
        "`false`",
        "tests only: accept a grace period under `30s`",
    ),
    doc(
        "PAYRULES_CANCEL_ON_ORDER_CANCELLED",
        "`true`",
        "cancel an authorization held only by cancelled orders",
    ),
    doc(
        "PAYRULES_CAPTURE_ENABLED",
        "`false`",
        "capture open authorizations when the order ships",
    ),
    doc("PAYRULES_CAPTURE_ON", "`Shipped`", "or `Delivered`"),
    doc(
        "PAYRULES_REFUND_ORPHANED_ENABLED",
        "`true`",
        "refund charged money no order references (grace period, failed order creation)",
    ),
    doc(
        "PAYRULES_REFUND_ON_ORDER_CANCELLED",
        "`false`",
        "refund charged money held only by cancelled orders",
    ),
    doc(
        "PAYRULES_REFUND_ON_RETURN",
        "`false`",
        "refund returned lines (per line, rounding down)",
    ),
    doc(
        "PAYRULES_REFUND_ON_RETURN_ON",
        "`Returned`",
        "or `BackInStock`: the return shipment state that makes goods refundable",
    ),
    doc(
        "PAYRULES_REFUND_ON_RETURN_SKIP_PAYMENT_STATES",
        "`[\"Refunded\", \"NotRefunded\"]`",
        "return items in these payment states are left out (a TOML list, or names separated by commas)",
    ),
    doc(
        "PAYRULES_RELEASE_WEBHOOK_URL",
        "—",
        "the fulfillment team's webhook",
    ),
    doc(
        "PAYRULES_RELEASE_WEBHOOK_SECRET",
        "—",
        "signing secret: `whsec_<base64>` (Standard Webhooks) or any string; several, whitespace-separated, to rotate (secret; also `_FILE`)",
    ),
    doc(
        "PAYRULES_RELEASE_ALLOW_INSECURE_WEBHOOK",
        "`false`",
        "allow an `http://` webhook URL to a host that is not loopback",
    ),
    doc(
        "PAYRULES_RELEASE_ORDER_UPDATE",
        "—",
        "`transitionState`, `changeOrderState`, `changeShipmentState`, `setCustomField`",
    ),
    doc("PAYRULES_RELEASE_STATE_KEY", "—", "for `transitionState`"),
    doc(
        "PAYRULES_RELEASE_ORDER_STATE",
        "—",
        "for `changeOrderState`",
    ),
    doc(
        "PAYRULES_RELEASE_SHIPMENT_STATE",
        "—",
        "for `changeShipmentState`",
    ),
    doc(
        "PAYRULES_RELEASE_CUSTOM_FIELD_NAME",
        "—",
        "for `setCustomField`",
    ),
    doc(
        "PAYRULES_RELEASE_CUSTOM_FIELD_VALUE",
        "—",
        "JSON value (plain text is a string)",
    ),
    doc(
        "PAYRULES_CANCEL_PAYMENT_INTENT_ACTION",
        "`cancelPayment`",
        "or `reversePayment`",
    ),
    doc("CTP_PROJECT_KEY", "—", "the commercetools project"),
    doc("CTP_CLIENT_ID", "—", "the API client"),
    doc("CTP_CLIENT_SECRET", "—", "(secret; also `_FILE`)"),
    doc(
        "CTP_AUTH_URL",
        "—",
        "e.g. `https://auth.europe-west1.gcp.commercetools.com`; `http://` only to loopback",
    ),
    doc(
        "CTP_API_URL",
        "—",
        "e.g. `https://api.europe-west1.gcp.commercetools.com`; `http://` only to loopback",
    ),
    doc("CTP_SCOPES", "—", "space-separated"),
    doc(
        "CTP_CHECKOUT_URL",
        "derived from `api_url` in Checkout's regions",
        "`api.REGION…` → `checkout.REGION…`; required elsewhere; `http://` only to loopback",
    ),
    doc("PAYRULES_HTTP_TIMEOUT", "`10s`", "per request"),
    doc(
        "PAYRULES_CONCURRENCY",
        "`32`",
        "messages processed at once (up to 4 × as many decided ones may still be waiting for their ack to reach the broker)",
    ),
    doc(
        "PAYRULES_MAX_DELIVERIES",
        "`5`",
        "a message failing for a reason of its own is parked after this many deliveries; a dependency's failure (unavailable, 429, 5xx, timeouts, another worker's claim) never parks",
    ),
    doc(
        "PAYRULES_SHUTDOWN_TIMEOUT",
        "`30s`",
        "the whole shutdown budget on SIGTERM: drain, source close, last flush",
    ),
    doc(
        "PAYRULES_RETRY_DELAY",
        "`1s`",
        "first retry delay; doubles per delivery",
    ),
    doc(
        "PAYRULES_PROGRESS_INTERVAL",
        "`60s`",
        "a progress log line this often (`0s`: never)",
    ),
    doc(
        "PAYRULES_HTTP_ADDR",
        "off (the image: `0.0.0.0:9464`)",
        "`IP:PORT` for `/metrics`, `/healthz`, `/readyz`",
    ),
    doc(
        "PAYRULES_CANCEL_PAYMENT_INTERFACES",
        "any",
        "the `paymentInterface`s Checkout manages; other payments are never sent to Checkout",
    ),
    doc(
        "PAYRULES_MAX_MESSAGE_BYTES",
        "`1048576`",
        "larger messages are parked unread",
    ),
];

/// The reference entry of the option whose environment variable is `env`.
pub fn option_doc(env: &str) -> Option<&'static OptionDoc> {
    OPTION_DOCS.iter().find(|d| d.env == env)
}

/// The options table of `docs/configuration.md`, one row per option in [`OPTIONS`] order.
/// An option without a reference entry shows `?` (and fails the test that checks entries).
pub fn options_markdown_table() -> String {
    let mut out = String::from("| TOML | environment | default | meaning |\n|---|---|---|---|\n");
    for o in OPTIONS {
        let (default, meaning) = option_doc(o.env).map_or(("?", "?"), |d| (d.default, d.meaning));
        out.push_str(&format!(
            "| `{}` | `{}` | {default} | {meaning} |\n",
            o.dotted(),
            o.env
        ));
    }
    out
}
