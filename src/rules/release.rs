//! release_for_fulfillment: an order that can still be fulfilled is released when the money of
//! the payments allocated to it covers its gross total.

use std::fmt;

use serde::Serialize;

use crate::model::{Order, OrderState, ShipmentState};

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
    /// The payment that completed the coverage; `None` for a free order without a payment.
    pub payment_id: Option<String>,
    /// All payments counted.
    pub payment_ids: Vec<String>,
    /// Σ covered(P) over the allocated payments.
    pub covered: i64,
    /// The gross total to cover.
    pub total: i64,
    /// The order's currency.
    pub currency: String,
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.covered >= self.total {
            write!(
                f,
                "covered {} ≥ {} {} cents",
                self.covered, self.total, self.currency
            )
        } else {
            write!(
                f,
                "covered {} of {} {} cents (require_full_coverage is off: any covering money releases)",
                self.covered, self.total, self.currency
            )
        }
    }
}

/// Why an order is not released (by the coverage check; the ledger is the caller's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "why", rename_all = "snake_case")]
pub enum NotReleased {
    /// release_for_fulfillment is off.
    RuleOff,
    /// The order cannot be fulfilled (state or shipment state).
    NotFulfillable {
        /// `orderState`.
        order_state: OrderState,
        /// `shipmentState`.
        shipment_state: Option<ShipmentState>,
    },
    /// No payment allocated to the order covers anything.
    NothingCovered {
        /// The gross total.
        total: i64,
        /// The order's currency.
        currency: String,
    },
    /// The allocated payments cover less than the gross total.
    Short {
        /// Σ covered(P).
        covered: i64,
        /// The gross total.
        total: i64,
        /// The order's currency.
        currency: String,
    },
}

impl fmt::Display for NotReleased {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotReleased::RuleOff => f.write_str("release_for_fulfillment is off"),
            NotReleased::NotFulfillable {
                order_state,
                shipment_state,
            } => {
                write!(f, "the order cannot be fulfilled: orderState {order_state}")?;
                match shipment_state {
                    Some(s) => write!(f, ", shipmentState {s}"),
                    None => Ok(()),
                }
            }
            NotReleased::NothingCovered { total, currency } => write!(
                f,
                "covered 0 < {total} {currency} cents: no payment allocated to it covers anything"
            ),
            NotReleased::Short {
                covered,
                total,
                currency,
            } => write!(f, "covered {covered} < {total} {currency} cents"),
        }
    }
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
    check(rule, order, allocated, trigger).ok()
}

/// [`decide`] with the reason when the order is not released: the one coverage check, for
/// the engine and for `payrules explain` alike.
///
/// # Errors
/// Why the order is not released.
pub fn check(
    rule: &ReleaseRule,
    order: &Order,
    allocated: &[Counted],
    trigger: Option<&str>,
) -> Result<Release, NotReleased> {
    if !rule.enabled {
        return Err(NotReleased::RuleOff);
    }
    if !order.is_fulfillable() {
        return Err(NotReleased::NotFulfillable {
            order_state: order.order_state,
            shipment_state: order.shipment_state,
        });
    }
    covers(rule, order, allocated, trigger)
}

/// The coverage part of [`check`] alone, whatever the order's state: for a release already
/// decided and partly carried out (its order update may have made the order look
/// unfulfillable), which still goes ahead only while the money covers the order.
///
/// # Errors
/// Why the money does not cover the order.
pub fn covers(
    rule: &ReleaseRule,
    order: &Order,
    allocated: &[Counted],
    trigger: Option<&str>,
) -> Result<Release, NotReleased> {
    if !rule.enabled {
        return Err(NotReleased::RuleOff);
    }
    let gross = order.gross_total();
    let (total, currency) = (gross.cent_amount, gross.currency_code.clone());
    // A free order (a 100 % voucher) owes nothing: covered with or without a payment, and the
    // payments it has (a zero-amount authorization, say) are named as counted.
    let free = total <= 0;
    let counted: Vec<String> = allocated
        .iter()
        .filter(|c| c.covered > 0 || free)
        .map(|c| c.payment_id.clone())
        .collect();
    if counted.is_empty() && !free {
        return Err(NotReleased::NothingCovered { total, currency });
    }
    let covered = total_covered(allocated);
    if rule.require_full_coverage && covered < total {
        return Err(NotReleased::Short {
            covered,
            total,
            currency,
        });
    }
    let payment_id = trigger
        .filter(|t| counted.iter().any(|c| c == t))
        .map(str::to_string)
        .or_else(|| counted.last().cloned());
    Ok(Release {
        payment_id,
        payment_ids: counted,
        covered,
        total,
        currency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(total: i64) -> Order {
        serde_json::from_value(serde_json::json!({
            "id": "o", "version": 1, "createdAt": "2026-01-01T00:00:00Z", "orderState": "Open",
            "totalPrice": {"currencyCode": "EUR", "centAmount": total}
        }))
        .expect("order")
    }

    fn counted(id: &str, covered: i64) -> Counted {
        Counted {
            payment_id: id.into(),
            covered,
        }
    }

    #[test]
    fn a_free_order_is_covered_with_or_without_a_payment() {
        let rule = ReleaseRule::default();
        let r = check(&rule, &order(0), &[], None).expect("released");
        assert_eq!((r.payment_id, r.payment_ids, r.covered), (None, vec![], 0));
        let r = check(&rule, &order(0), &[counted("p", 0)], Some("p")).expect("released");
        assert_eq!(r.payment_id.as_deref(), Some("p"));
        assert_eq!(r.payment_ids, vec!["p".to_string()]);
        assert_eq!(r.to_string(), "covered 0 ≥ 0 EUR cents");
    }

    #[test]
    fn an_order_that_costs_something_needs_money() {
        let rule = ReleaseRule::default();
        assert!(matches!(
            check(&rule, &order(1), &[counted("p", 0)], Some("p")),
            Err(NotReleased::NothingCovered { total: 1, .. })
        ));
        assert!(matches!(
            check(&rule, &order(100), &[counted("p", 99)], None),
            Err(NotReleased::Short { covered: 99, .. })
        ));
        let r = check(&rule, &order(100), &[counted("p", 100)], None).expect("released");
        assert_eq!(r.payment_id.as_deref(), Some("p"));
    }
}
