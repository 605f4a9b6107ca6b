//! release_for_fulfillment: an order that can still be fulfilled is released when the money of
//! the payments allocated to it covers its gross total.

use std::time::Duration;

use crate::model::{Order, ShipmentState};

/// Settings of the release rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRule {
    /// Off: orders are never released.
    pub enabled: bool,
    /// Accepted for existing configurations and ignored: money received (a Charge in Success)
    /// always counts now.
    pub also_on_charge: bool,
    /// The payments must cover the gross total; off: any covering money releases.
    pub require_full_coverage: bool,
}

impl Default for ReleaseRule {
    fn default() -> Self {
        Self {
            enabled: true,
            also_on_charge: false,
            require_full_coverage: true,
        }
    }
}

/// Settings of the orphan rule; here because the rules are configured together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelRule {
    /// Off: orphaned authorizations are never cancelled (neither after the grace period nor
    /// after Checkout's order-creation failure).
    pub enabled: bool,
    /// How long after an authorization succeeds an order may still appear.
    pub grace_period: Duration,
}

impl Default for CancelRule {
    fn default() -> Self {
        Self {
            enabled: true,
            grace_period: Duration::from_secs(600),
        }
    }
}

/// Settings of cancel_on_order_cancelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderCancelledRule {
    /// Off: an authorization held only by cancelled orders stays (until someone cancels it).
    pub enabled: bool,
}

impl Default for OrderCancelledRule {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// Settings of capture_on_shipment (opt-in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureRule {
    /// Off by default: capturing is the merchant's call.
    pub enabled: bool,
    /// The shipment state that triggers the capture: `Shipped` (also when the order is
    /// already `Delivered`) or `Delivered`.
    pub on: ShipmentState,
}

impl Default for CaptureRule {
    fn default() -> Self {
        Self {
            enabled: false,
            on: ShipmentState::Shipped,
        }
    }
}

impl CaptureRule {
    /// Whether the order's shipment state has reached the trigger.
    pub fn is_due(&self, order: &Order) -> bool {
        match (self.on, order.shipment_state) {
            (ShipmentState::Shipped, Some(ShipmentState::Shipped | ShipmentState::Delivered)) => {
                true
            }
            (on, Some(s)) => on == s,
            (_, None) => false,
        }
    }
}

/// One payment allocated to the order, with what it covers in the order's currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    /// The payment.
    pub payment_id: String,
    /// covered(P).
    pub covered: i64,
}

/// The outcome of a coverage check that releases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// The payment that completed the coverage.
    pub payment_id: String,
    /// All payments counted.
    pub payment_ids: Vec<String>,
}

/// Σ covered(P) over the allocated payments.
pub fn total_covered<'a>(allocated: impl IntoIterator<Item = &'a Counted>) -> i64 {
    allocated
        .into_iter()
        .fold(0i64, |sum, c| sum.saturating_add(c.covered.max(0)))
}

/// Decides whether `order` is released, given the payments allocated to it.
/// `trigger` is the payment whose change caused the check.
pub fn decide(
    rule: &ReleaseRule,
    order: &Order,
    allocated: &[Counted],
    trigger: Option<&str>,
) -> Option<Release> {
    if !order.is_fulfillable() {
        return None;
    }
    let counted: Vec<String> = allocated
        .iter()
        .filter(|c| c.covered > 0)
        .map(|c| c.payment_id.clone())
        .collect();
    if counted.is_empty() {
        return None;
    }
    if rule.require_full_coverage && total_covered(allocated) < order.gross_total().cent_amount {
        return None;
    }
    let payment_id = trigger
        .filter(|t| counted.iter().any(|c| c == t))
        .map(str::to_string)
        .or_else(|| counted.last().cloned())?;
    Some(Release {
        payment_id,
        payment_ids: counted,
    })
}
