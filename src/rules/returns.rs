//! refund_on_return (opt-in): money for returned goods goes back, computed **per line** (line
//! item or custom line item), so the same units are never refunded twice whatever ids their
//! return items carry (`setReturnInfo` gives every item a new one).
//!
//! - returned(L) = Σ quantity of the line's return items that reached `on` (for `Returned`:
//!   `Returned`, `BackInStock` or `Unusable`; for `BackInStock`: `BackInStock`), leaving out
//!   items whose `paymentState` is in `skip_payment_states`; at most the line's quantity.
//! - due(L) = ⌊gross(L) × returned(L) ÷ quantity(L)⌋, gross(L) the line's total after
//!   discounts. Checked against the examples: a line of 3 for 1000 refunds 333 for one unit,
//!   666 for two and exactly 1000 for all three; a line of 2 for 1999 refunds 999, then 1999.
//!   Shipping is not refunded.
//! - What payrules already refunded for the line is the sum of the amounts its ledger keys
//!   recorded; when due(L) exceeds it, the difference is refunded from the order's payments,
//!   earliest-created first (ties by id), split when one does not suffice and never more than
//!   a payment's refundable(P); what cannot be refunded is reported.

use crate::model::{Order, ReturnPaymentState, ReturnShipmentState, ReturnedLine};

/// Which return shipment state makes goods refundable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReturnOn {
    /// Received back (`Returned`, or already moved on to `BackInStock` or `Unusable`).
    #[default]
    Returned,
    /// Put back in stock: only `BackInStock`.
    BackInStock,
}

impl ReturnOn {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ReturnOn::Returned => "Returned",
            ReturnOn::BackInStock => "BackInStock",
        }
    }

    /// Whether an item in `state` has reached this point. Only a returned item can move on to
    /// `BackInStock` or `Unusable`, so for `Returned` those count too.
    pub fn reached(self, state: ReturnShipmentState) -> bool {
        match self {
            ReturnOn::Returned => matches!(
                state,
                ReturnShipmentState::Returned
                    | ReturnShipmentState::BackInStock
                    | ReturnShipmentState::Unusable
            ),
            ReturnOn::BackInStock => state == ReturnShipmentState::BackInStock,
        }
    }
}

/// Settings of refund_on_return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnRule {
    /// Off by default: many merchants decide a return's refund by hand (or in their PSP).
    pub enabled: bool,
    /// The return shipment state that makes goods refundable.
    pub on: ReturnOn,
    /// Items in these payment states are left out: someone refunded them, or decided not to.
    /// `NonRefundable` is not in the default: commercetools gives it to every item announced
    /// as `Advised`, so it alone says nothing of a decision.
    pub skip_payment_states: Vec<ReturnPaymentState>,
}

impl Default for ReturnRule {
    fn default() -> Self {
        Self {
            enabled: false,
            on: ReturnOn::Returned,
            skip_payment_states: vec![
                ReturnPaymentState::Refunded,
                ReturnPaymentState::NotRefunded,
            ],
        }
    }
}

/// What is due for one returned line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineDue {
    /// The line's id (a line item's or a custom line item's).
    pub line_id: String,
    /// returned(L): units that reached `on`, at most the line's quantity.
    pub returned: u64,
    /// due(L) in the line's currency.
    pub due: i64,
    /// The line's currency.
    pub currency: String,
}

/// ⌊gross × returned ÷ quantity⌋, computed without overflow; 0 for a line without quantity.
pub fn due(gross: i64, returned: u64, quantity: u64) -> i64 {
    if quantity == 0 {
        return 0;
    }
    let returned = returned.min(quantity);
    let d = i128::from(gross) * i128::from(returned) / i128::from(quantity);
    i64::try_from(d).unwrap_or(if d < 0 { i64::MIN } else { i64::MAX })
}

/// Every line of `order` with returned units, in the order's line order (line items, then
/// custom line items), with what is due for it. Items naming a line the order does not have
/// are left out (nothing to price them by).
pub fn lines_due(rule: &ReturnRule, order: &Order) -> Vec<LineDue> {
    let lines = order
        .line_items
        .iter()
        .map(|l| (ReturnedLine::LineItem(l.id.clone()), l))
        .chain(
            order
                .custom_line_items
                .iter()
                .map(|l| (ReturnedLine::CustomLineItem(l.id.clone()), l)),
        );
    let mut out = Vec::new();
    for (which, line) in lines {
        let returned: u64 = order
            .return_items()
            .filter(|i| i.line == which)
            .filter(|i| rule.on.reached(i.shipment_state))
            .filter(|i| !rule.skip_payment_states.contains(&i.payment_state))
            .fold(0u64, |n, i| n.saturating_add(i.quantity));
        if returned == 0 {
            continue;
        }
        let returned = returned.min(line.quantity);
        let gross = line.gross();
        out.push(LineDue {
            line_id: line.id.clone(),
            returned,
            due: due(gross.cent_amount, returned, line.quantity),
            currency: gross.currency_code.clone(),
        });
    }
    out
}

/// A payment the order's refunds may come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source<'a> {
    /// The payment.
    pub payment_id: &'a str,
    /// refundable(P) now, less what this plan already takes of it.
    pub refundable: i64,
}

/// One refund of a plan: `amount` from `payment_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The payment refunded.
    pub payment_id: String,
    /// How much.
    pub amount: i64,
}

/// Takes `wanted` from `sources` in their order (the caller sorts them earliest-created
/// first), never more than a source's refundable amount, and lowers what each has left.
/// Returns the parts and what could not be taken.
pub fn split(wanted: i64, sources: &mut [Source<'_>]) -> (Vec<Part>, i64) {
    let mut left = wanted.max(0);
    let mut parts = Vec::new();
    for s in sources.iter_mut() {
        if left == 0 {
            break;
        }
        let take = s.refundable.min(left);
        if take <= 0 {
            continue;
        }
        s.refundable -= take;
        left -= take;
        parts.push(Part {
            payment_id: s.payment_id.to_string(),
            amount: take,
        });
    }
    (parts, left)
}

#[cfg(test)]
mod tests {
    use super::{ReturnOn, ReturnRule, Source, due, lines_due, split};
    use crate::model::{Order, ReturnPaymentState, ReturnShipmentState};

    #[test]
    fn due_rounds_down_and_a_full_return_is_the_line_total() {
        assert_eq!(due(1000, 1, 3), 333);
        assert_eq!(due(1000, 2, 3), 666);
        assert_eq!(due(1000, 3, 3), 1000);
        assert_eq!(due(1999, 1, 2), 999);
        assert_eq!(due(1999, 2, 2), 1999);
        assert_eq!(due(1000, 5, 3), 1000, "never more than the line");
        assert_eq!(due(1000, 1, 0), 0);
        assert_eq!(due(i64::MAX, 2, 3), i64::MAX / 3 * 2);
    }

    fn order(items: serde_json::Value) -> Order {
        serde_json::from_value(serde_json::json!({
            "id": "o", "version": 3, "orderState": "Complete",
            "totalPrice": {"currencyCode": "EUR", "centAmount": 1500},
            "lineItems": [
                {"id": "l1", "quantity": 3, "totalPrice": {"currencyCode": "EUR", "centAmount": 1000}},
                {"id": "l2", "quantity": 1, "totalPrice": {"currencyCode": "EUR", "centAmount": 400},
                 "taxedPrice": {"totalGross": {"currencyCode": "EUR", "centAmount": 500}}}
            ],
            "returnInfo": [{"items": items}]
        }))
        .expect("order")
    }

    fn item(line: &str, qty: u64, shipment: &str, payment: &str) -> serde_json::Value {
        serde_json::json!({"id": format!("ri-{line}-{shipment}"), "quantity": qty,
            "type": "LineItemReturnItem", "lineItemId": line,
            "shipmentState": shipment, "paymentState": payment})
    }

    #[test]
    fn returned_counts_what_reached_on_and_leaves_out_decided_items() {
        let o = order(serde_json::json!([
            item("l1", 1, "Returned", "Initial"),
            item("l1", 1, "Advised", "NonRefundable"),
            item("l2", 1, "BackInStock", "Initial"),
        ]));
        let rule = ReturnRule::default();
        let due = lines_due(&rule, &o);
        assert_eq!(due.len(), 2);
        assert_eq!(
            (due[0].line_id.as_str(), due[0].returned, due[0].due),
            ("l1", 1, 333)
        );
        assert_eq!(
            (due[1].line_id.as_str(), due[1].returned, due[1].due),
            ("l2", 1, 500)
        );
        let stock = ReturnRule {
            on: ReturnOn::BackInStock,
            ..ReturnRule::default()
        };
        let due = lines_due(&stock, &o);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].line_id, "l2");
        let refunded = order(serde_json::json!([item("l1", 2, "Returned", "Refunded")]));
        assert!(lines_due(&rule, &refunded).is_empty());
        let advised_non_refundable = order(serde_json::json!([item(
            "l1",
            2,
            "Returned",
            "NonRefundable"
        )]));
        assert_eq!(lines_due(&rule, &advised_non_refundable)[0].due, 666);
        let strict = ReturnRule {
            skip_payment_states: vec![ReturnPaymentState::NonRefundable],
            ..ReturnRule::default()
        };
        assert!(lines_due(&strict, &advised_non_refundable).is_empty());
        assert!(ReturnOn::Returned.reached(ReturnShipmentState::Unusable));
    }

    #[test]
    fn split_takes_in_order_and_reports_the_shortfall() {
        let mut s = [
            Source {
                payment_id: "a",
                refundable: 300,
            },
            Source {
                payment_id: "b",
                refundable: 500,
            },
        ];
        let (parts, short) = split(600, &mut s);
        assert_eq!(parts.len(), 2);
        assert_eq!((parts[0].payment_id.as_str(), parts[0].amount), ("a", 300));
        assert_eq!((parts[1].payment_id.as_str(), parts[1].amount), ("b", 300));
        assert_eq!(short, 0);
        let (parts, short) = split(400, &mut s);
        assert_eq!(parts.len(), 1);
        assert_eq!((parts[0].payment_id.as_str(), parts[0].amount), ("b", 200));
        assert_eq!(short, 200);
    }
}
