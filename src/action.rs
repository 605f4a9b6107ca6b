//! Decisions: what a rule wants done, with a deterministic idempotency key.

use chrono::SecondsFormat;
use serde::{Deserialize, Serialize, Serializer};

use crate::message::Timestamp;
use crate::model::Money;

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Release the order to the fulfillment team.
    ReleaseOrder,
    /// Cancel the payment's authorization.
    CancelPayment,
    /// Capture the payment's open authorization (`amount`).
    CapturePayment,
    /// Refund charged money of the payment (`amount`) through Checkout's `refundPayment`.
    RefundPayment,
}

impl ActionKind {
    /// The output and metric name.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::ReleaseOrder => "release_order",
            ActionKind::CancelPayment => "cancel_payment",
            ActionKind::CapturePayment => "capture_payment",
            ActionKind::RefundPayment => "refund_payment",
        }
    }
}

/// Which rule decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleName {
    /// Authorized payments cover the order.
    ReleaseForFulfillment,
    /// An authorization without an order.
    CancelOrphanedAuthorization,
    /// An authorization held only by cancelled orders.
    CancelOnOrderCancelled,
    /// The order shipped: its open authorizations are captured.
    CaptureOnShipment,
    /// Charged money without an order is refunded.
    RefundOrphanedCharge,
    /// Charged money held only by cancelled orders is refunded (opt-in).
    RefundOnOrderCancelled,
    /// Money for returned lines is refunded (opt-in).
    RefundOnReturn,
}

impl RuleName {
    /// The configuration and output name.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleName::ReleaseForFulfillment => "release_for_fulfillment",
            RuleName::CancelOrphanedAuthorization => "cancel_orphaned_authorization",
            RuleName::CancelOnOrderCancelled => "cancel_on_order_cancelled",
            RuleName::CaptureOnShipment => "capture_on_shipment",
            RuleName::RefundOrphanedCharge => "refund_orphaned_charge",
            RuleName::RefundOnOrderCancelled => "refund_on_order_cancelled",
            RuleName::RefundOnReturn => "refund_on_return",
        }
    }
}

/// Why a cancel or refund was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// No order referenced the payment when its grace period ran out.
    GracePeriodExpired,
    /// Checkout reported that it could not create the order.
    OrderCreationFailed,
    /// Every order referencing the payment is cancelled.
    OrderCancelled,
    /// Goods of the order came back (refund_on_return).
    Returned,
}

impl Reason {
    /// The output name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::GracePeriodExpired => "grace_period_expired",
            Reason::OrderCreationFailed => "order_creation_failed",
            Reason::OrderCancelled => "order_cancelled",
            Reason::Returned => "returned",
        }
    }

    /// The rule that cancels an authorization for this reason.
    pub fn cancel_rule(self) -> RuleName {
        match self {
            Reason::OrderCancelled => RuleName::CancelOnOrderCancelled,
            _ => RuleName::CancelOrphanedAuthorization,
        }
    }

    /// The rule that refunds charged money for this reason.
    pub fn refund_rule(self) -> RuleName {
        match self {
            Reason::OrderCancelled => RuleName::RefundOnOrderCancelled,
            Reason::Returned => RuleName::RefundOnReturn,
            _ => RuleName::RefundOrphanedCharge,
        }
    }
}

/// One decision. Serialized, it is the replay output line: `action`, `rule`, `key`,
/// `payment_id`, `order_id`, `message_id`, `at` come first and always; details follow. A line
/// deserializes back (see [`crate::testing`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// What to do.
    pub action: ActionKind,
    /// The rule that decided it.
    pub rule: RuleName,
    /// The idempotency key: `release:{order_id}`, `cancel:{payment_id}`,
    /// `capture:{payment_id}` or `refund:{payment_id}`. An action with a key runs at most
    /// once, ever.
    pub key: String,
    /// For a cancel, capture or refund, the payment; for a release, the payment that completed the
    /// coverage (`None`, serialized `null`, for a free order released without a payment).
    pub payment_id: Option<String>,
    /// The order released or captured for, or the cancelled order a cancel or refund is for;
    /// `None` for an orphan's cancel or refund (no order exists, which is the point).
    pub order_id: Option<String>,
    /// The message that caused the decision; `None` when a timer did.
    pub message_id: Option<String>,
    /// The clock when decided (a timer's due time for timer decisions).
    #[serde(serialize_with = "rfc3339_millis")]
    pub at: Timestamp,
    /// The order number, for the fulfillment team.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_number: Option<String>,
    /// For a release: every payment counted toward the order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub payment_ids: Vec<String>,
    /// Release: the order's gross total; cancel: the authorized amount; capture: the amount
    /// to capture; refund: the amount to refund.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<Money>,
    /// For a cancel or refund: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// For a refund of returned goods: the line and how many of its units are refunded in all
    /// (`line_id`, `returned_quantity` in the output line).
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub returned: Option<ReturnedUnits>,
}

/// The returned line a refund is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReturnedUnits {
    /// The line item's (or custom line item's) id.
    pub line_id: String,
    /// returned(L): the line's units refunded once this refund is made.
    pub returned_quantity: u64,
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

    /// The idempotency key of a payment's capture.
    pub fn capture_key(payment_id: &str) -> String {
        format!("capture:{payment_id}")
    }

    /// The idempotency key of a payment's refund (orphaned charge, cancelled order): a payment
    /// is refunded this way at most once.
    pub fn refund_key(payment_id: &str) -> String {
        format!("refund:{payment_id}")
    }

    /// The prefix of every return refund key of an order's line.
    pub fn line_refund_prefix(order_id: &str, line_id: &str) -> String {
        format!("refund:{order_id}:{line_id}:")
    }

    /// The idempotency key of the refund from `payment_id` for a line's units returned up to
    /// `returned`: one per (line, level, payment), so the same units are refunded once.
    pub fn line_refund_key(
        order_id: &str,
        line_id: &str,
        returned: u64,
        payment_id: &str,
    ) -> String {
        format!("refund:{order_id}:{line_id}:{returned}:{payment_id}")
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
