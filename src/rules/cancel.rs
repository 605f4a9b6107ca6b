//! The cancel rules: an authorization no order will use is cancelled — after the grace period
//! (no order appeared), at once when Checkout could not create the order, or when every order
//! referencing the payment is cancelled.

use std::time::Duration;

use crate::action::Reason;
use crate::model::{Order, OrderState, Payment};

/// Settings of cancel_orphaned_authorization.
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

/// What the cancel rules know about a payment at a check.
pub struct CancelFacts<'a> {
    /// The payment as read now.
    pub payment: &'a Payment,
    /// Every order referencing it.
    pub orders: &'a [Order],
    /// authorized(P), with our own earlier cancel taken into account.
    pub authorized: i64,
    /// Checkout reported that it could not create the order for this payment.
    pub order_creation_failed: bool,
    /// The payment's grace period has run out (a timer fired).
    pub grace_expired: bool,
}

/// Which cancel rules are on.
#[derive(Debug, Clone, Copy)]
pub struct Enabled {
    /// cancel_orphaned_authorization (grace period, order-creation failure).
    pub orphan: bool,
    /// cancel_on_order_cancelled.
    pub order_cancelled: bool,
}

/// Why the payment's authorization is cancelled now, or why it is left alone.
pub fn decide(enabled: Enabled, f: &CancelFacts<'_>) -> Result<Reason, &'static str> {
    if f.authorized <= 0 {
        // Also a zero-amount authorization (card verification): nothing is reserved.
        return Err("no authorized money");
    }
    if f.payment.has_live_charge() {
        return Err("a charge is under way or succeeded");
    }
    if f.orders
        .iter()
        .any(|o| o.order_state != OrderState::Cancelled)
    {
        return Err("an order references the payment");
    }
    if !f.orders.is_empty() {
        return if enabled.order_cancelled {
            Ok(Reason::OrderCancelled)
        } else {
            Err("only cancelled orders reference the payment (cancel_on_order_cancelled is off)")
        };
    }
    if !enabled.orphan {
        Err("cancel_orphaned_authorization is off")
    } else if f.order_creation_failed {
        Ok(Reason::OrderCreationFailed)
    } else if f.grace_expired {
        Ok(Reason::GracePeriodExpired)
    } else {
        Err("no order yet, grace period running")
    }
}
