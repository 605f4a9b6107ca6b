//! Decisions: what a rule wants done, with a deterministic idempotency key.

use chrono::SecondsFormat;
use serde::{Serialize, Serializer};

use crate::message::Timestamp;
use crate::model::Money;

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Release the order to the fulfillment team.
    ReleaseOrder,
    /// Cancel the payment's authorization.
    CancelPayment,
}

/// Which rule decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleName {
    /// Authorized payments cover the order.
    ReleaseForFulfillment,
    /// An authorization without an order.
    CancelOrphanedAuthorization,
}

impl RuleName {
    /// The configuration and output name.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleName::ReleaseForFulfillment => "release_for_fulfillment",
            RuleName::CancelOrphanedAuthorization => "cancel_orphaned_authorization",
        }
    }
}

/// Why a cancel was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    /// No order referenced the payment when its grace period ran out.
    GracePeriodExpired,
    /// Checkout reported that it could not create the order.
    OrderCreationFailed,
}

/// One decision. Serialized, it is the replay output line: `action`, `rule`, `key`,
/// `payment_id`, `order_id`, `message_id`, `at` come first and always; details follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Action {
    /// What to do.
    pub action: ActionKind,
    /// The rule that decided it.
    pub rule: RuleName,
    /// The idempotency key: `release:{order_id}` or `cancel:{payment_id}`. An action with a
    /// key runs at most once, ever.
    pub key: String,
    /// For a cancel, the payment; for a release, the authorized payment that completed the
    /// coverage.
    pub payment_id: String,
    /// The order; `None` for a cancel (no order exists, which is the point).
    pub order_id: Option<String>,
    /// The message that caused the decision; `None` when a timer did.
    pub message_id: Option<String>,
    /// The clock when decided (a timer's due time for timer decisions).
    #[serde(serialize_with = "rfc3339_millis")]
    pub at: Timestamp,
    /// The order number, for the fulfillment team.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_number: Option<String>,
    /// For a release: every authorized payment counted toward the order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub payment_ids: Vec<String>,
    /// Release: the order total; cancel: the authorized amount.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<Money>,
    /// For a cancel: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<CancelReason>,
}

impl Action {
    /// The idempotency key of an order's release.
    pub fn release_key(order_id: &str) -> String {
        format!("release:{order_id}")
    }

    /// The idempotency key of a payment's cancel.
    pub fn cancel_key(payment_id: &str) -> String {
        format!("cancel:{payment_id}")
    }

    /// The replay output line (compact JSON, no newline).
    pub fn to_json_line(&self) -> String {
        // Serializing plain strings, numbers and enums cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-20T10:15:00.000Z`.
pub fn format_timestamp(t: &Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn rfc3339_millis<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_timestamp(t))
}
