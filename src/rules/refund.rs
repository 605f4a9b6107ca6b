//! The refund rules for money already taken: a payment charged with no order to pay for
//! (refund_orphaned_charge, on by default), or held only by cancelled orders
//! (refund_on_order_cancelled, opt-in).
//!
//! - refundable(P) = Σ Charge in Success − Σ Refund in Initial, Pending or Success − Σ
//!   Chargeback in Success ([`Payment::refundable`]); the refund asks for all of it.
//! - Checked against the examples: an auto-captured orphan (Authorization 5000, Charge 5000)
//!   refunds 5000; a direct sale (Charge 3000, no Authorization) refunds 3000; a partial capture
//!   (Authorization 8000, Charge 3000) refunds 3000 and leaves the 5000 still reserved to the
//!   cancel rule (which waits: Checkout cannot cancel a captured payment); a Charge of 2000 with
//!   a Chargeback of 500 refunds 1500; a Charge of 5000 with someone's Refund of 2000 pending
//!   waits until that Refund settles, then refunds 3000 (or 5000 if it failed).
//! - Nothing is refunded while money is in flight (an Authorization, Charge or Refund still
//!   Initial or Pending): what is due is not known yet, and a refund runs once per payment.

use crate::action::Reason;
use crate::model::{Order, OrderState, Payment};

/// Settings of refund_orphaned_charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundOrphanedRule {
    /// Off: charged money no order references is never refunded by payrules.
    pub enabled: bool,
}

impl Default for RefundOrphanedRule {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// Settings of refund_on_order_cancelled (opt-in).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RefundOnOrderCancelledRule {
    /// Off by default: merchants often keep a fee, or part of the money, on a cancellation.
    /// While off, charged money on cancelled orders is reported (once per payment).
    pub enabled: bool,
}

/// What the refund rules know about a payment at a check.
pub struct RefundFacts<'a> {
    /// The payment as read now.
    pub payment: &'a Payment,
    /// Every order referencing it.
    pub orders: &'a [Order],
    /// refundable(P) in the payment's currency.
    pub refundable: i64,
    /// Checkout reported that it could not create the order for this payment.
    pub order_creation_failed: bool,
    /// The payment's grace period has run out (a timer fired).
    pub grace_expired: bool,
}

/// Which refund rules are on.
#[derive(Debug, Clone, Copy)]
pub struct Enabled {
    /// refund_orphaned_charge (grace period, order-creation failure).
    pub orphan: bool,
    /// refund_on_order_cancelled.
    pub order_cancelled: bool,
}

/// The answer while refund_on_order_cancelled is off and cancelled orders hold charged money:
/// the engine reports such a payment once.
pub const ORDER_CANCELLED_OFF: &str =
    "only cancelled orders reference the payment (refund_on_order_cancelled is off)";

/// Why the payment's charged money is refunded now, or why it is left alone.
pub fn decide(enabled: Enabled, f: &RefundFacts<'_>) -> Result<Reason, &'static str> {
    if f.refundable <= 0 {
        return Err("no charged money to refund");
    }
    if f.orders
        .iter()
        .any(|o| o.order_state != OrderState::Cancelled)
    {
        return Err("an order references the payment");
    }
    if in_flight(f.payment) {
        return Err(
            "money is in flight (an Authorization, Charge or Refund is Initial or Pending)",
        );
    }
    if !f.orders.is_empty() {
        return if enabled.order_cancelled {
            Ok(Reason::OrderCancelled)
        } else {
            Err(ORDER_CANCELLED_OFF)
        };
    }
    if !enabled.orphan {
        Err("refund_orphaned_charge is off")
    } else if f.order_creation_failed {
        Ok(Reason::OrderCreationFailed)
    } else if f.grace_expired {
        Ok(Reason::GracePeriodExpired)
    } else {
        Err("no order yet, grace period running")
    }
}

/// An Authorization, Charge or Refund still Initial or Pending: the money to refund may yet
/// change without anyone acting.
pub fn in_flight(p: &Payment) -> bool {
    p.awaiting_money() || p.refund_in_flight()
}

#[cfg(test)]
mod tests {
    use super::{Enabled, RefundFacts, decide};
    use crate::action::Reason;
    use crate::model::{Money, Order, Payment, Transaction, TransactionState, TransactionType};
    use TransactionState::{Failure, Pending, Success};
    use TransactionType::{Authorization, Charge, Chargeback, Refund};

    fn payment(txs: &[(TransactionType, TransactionState, i64)]) -> Payment {
        Payment {
            id: "p".into(),
            version: 1,
            amount_planned: None,
            transactions: txs
                .iter()
                .enumerate()
                .map(|(i, &(kind, state, cents))| Transaction {
                    id: format!("t{i}"),
                    kind,
                    amount: Money {
                        currency_code: "EUR".into(),
                        cent_amount: cents,
                        fraction_digits: Some(2),
                    },
                    state,
                })
                .collect(),
            payment_method_info: Default::default(),
            created_at: None,
        }
    }

    fn cancelled_order() -> Order {
        serde_json::from_value(serde_json::json!({
            "id": "o", "version": 1, "orderState": "Cancelled",
            "totalPrice": {"currencyCode": "EUR", "centAmount": 5000}
        }))
        .expect("order")
    }

    const BOTH: Enabled = Enabled {
        orphan: true,
        order_cancelled: true,
    };

    fn at_grace_check(
        p: &Payment,
        orders: &[Order],
        enabled: Enabled,
    ) -> Result<Reason, &'static str> {
        decide(
            enabled,
            &RefundFacts {
                payment: p,
                orders,
                refundable: p.refundable("EUR"),
                order_creation_failed: false,
                grace_expired: true,
            },
        )
    }

    #[test]
    fn the_examples_of_the_module_doc() {
        let auto = payment(&[(Authorization, Success, 5000), (Charge, Success, 5000)]);
        assert_eq!(auto.refundable("EUR"), 5000);
        assert_eq!(
            at_grace_check(&auto, &[], BOTH),
            Ok(Reason::GracePeriodExpired)
        );
        let direct = payment(&[(Charge, Success, 3000)]);
        assert_eq!(direct.refundable("EUR"), 3000);
        assert_eq!(
            at_grace_check(&direct, &[], BOTH),
            Ok(Reason::GracePeriodExpired)
        );
        let partial = payment(&[(Authorization, Success, 8000), (Charge, Success, 3000)]);
        assert_eq!(partial.refundable("EUR"), 3000);
        assert_eq!(partial.open_authorization("EUR"), 5000);
        let chargeback = payment(&[(Charge, Success, 2000), (Chargeback, Success, 500)]);
        assert_eq!(chargeback.refundable("EUR"), 1500);
        let someone = payment(&[(Charge, Success, 5000), (Refund, Pending, 2000)]);
        assert!(
            at_grace_check(&someone, &[], BOTH).is_err(),
            "waits for the refund in flight"
        );
        let landed = payment(&[(Charge, Success, 5000), (Refund, Success, 2000)]);
        assert_eq!(landed.refundable("EUR"), 3000);
        let failed = payment(&[(Charge, Success, 5000), (Refund, Failure, 2000)]);
        assert_eq!(failed.refundable("EUR"), 5000);
    }

    #[test]
    fn a_live_order_or_money_in_flight_stops_the_refund() {
        let charged = payment(&[(Charge, Success, 5000)]);
        let mut open = cancelled_order();
        open.order_state = crate::model::OrderState::Open;
        assert_eq!(
            at_grace_check(&charged, &[open], BOTH),
            Err("an order references the payment")
        );
        let pending = payment(&[(Charge, Success, 5000), (Charge, Pending, 1000)]);
        assert!(at_grace_check(&pending, &[], BOTH).is_err());
        let none = payment(&[(Authorization, Success, 5000)]);
        assert_eq!(
            at_grace_check(&none, &[], BOTH),
            Err("no charged money to refund")
        );
    }

    #[test]
    fn cancelled_orders_refund_only_with_the_rule_on() {
        let charged = payment(&[(Charge, Success, 5000)]);
        let orders = [cancelled_order()];
        assert_eq!(
            at_grace_check(&charged, &orders, BOTH),
            Ok(Reason::OrderCancelled)
        );
        let off = Enabled {
            orphan: true,
            order_cancelled: false,
        };
        assert_eq!(
            at_grace_check(&charged, &orders, off),
            Err(super::ORDER_CANCELLED_OFF)
        );
        let orphan_off = Enabled {
            orphan: false,
            order_cancelled: true,
        };
        assert_eq!(
            at_grace_check(&charged, &[], orphan_off),
            Err("refund_orphaned_charge is off")
        );
    }
}
