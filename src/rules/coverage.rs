//! Money first: which order a payment's money counts toward, and how much it counts.
//!
//! - A payment's money counts toward **one** order: the earliest-created order referencing it
//!   that is not Cancelled (ties by id). A cancelled order holds no payment.
//! - The amounts, in the order's currency (see [`Payment`]):
//!   - authorized(P) = Σ Authorization in Success − Σ CancelAuthorization in Initial, Pending or
//!     Success, except that an authorization this worker cancelled counts for nothing until
//!     the payment shows that cancel failed;
//!   - open authorization(P) = max(0, authorized(P) − Σ Charge in Initial, Pending or Success):
//!     a capture consumes its authorization (a refund does not give it back);
//!   - net charged(P) = Σ Charge in Success − Σ Refund and Chargeback in Success, except that
//!     a payment this worker decided to refund (`refund:{payment_id}` claimed or done) counts
//!     nothing charged until a Refund shows up on it — money on its way back covers nothing;
//!   - covered(P) = open authorization(P) + max(0, net charged(P)).
//! - Checked against the examples: Authorization 4000 → Charge 4000 → Refund 4000 covers 0
//!   (0 + 0); a fully captured authorization of 8000 covers 8000 (0 + 8000); two
//!   authorizations of 5000 cover 10000 (10000 + 0); Authorization 8000 with a Charge of 3000
//!   covers 8000 (5000 + 3000); a Charge of 2000 with a Chargeback of 500 covers 1500.

use crate::model::{Order, OrderState, Payment};

/// The order the payment's money counts toward, among the orders referencing it.
pub fn allocated<'a>(orders: impl IntoIterator<Item = &'a Order>) -> Option<&'a Order> {
    orders
        .into_iter()
        .filter(|o| o.order_state != OrderState::Cancelled)
        .min_by(|a, b| a.allocation_key().cmp(&b.allocation_key()))
}

/// authorized(P), with our own cancel taken into account: once this worker cancelled the
/// payment, its authorization counts for nothing until a CancelAuthorization shows up —
/// then the amounts say what stands (a failed cancel leaves the authorization counting).
pub fn effective_authorized(p: &Payment, currency: &str, cancelled_by_us: bool) -> i64 {
    if cancelled_by_us && !p.has_cancel_authorization() {
        0
    } else {
        p.authorized(currency)
    }
}

/// open authorization(P): the authorization (our own cancel taken into account) less what is
/// captured or being captured, never below 0.
pub fn open_authorization(p: &Payment, currency: &str, cancelled_by_us: bool) -> i64 {
    effective_authorized(p, currency, cancelled_by_us)
        .saturating_sub(p.captured(currency))
        .max(0)
}

/// What this worker decided to give back of a payment: it claimed or executed its cancel, its
/// refund.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ours {
    /// `cancel:{payment_id}` is claimed or done.
    pub cancelled: bool,
    /// `refund:{payment_id}` is claimed or done.
    pub refunded: bool,
}

impl Ours {
    /// Nothing given back.
    pub const NONE: Ours = Ours {
        cancelled: false,
        refunded: false,
    };
    /// Our cancel claimed or done, nothing refunded.
    pub const CANCELLED: Ours = Ours {
        cancelled: true,
        refunded: false,
    };
}

/// net charged(P), with our own refund taken into account: once this worker decided to refund
/// the payment, its charged money counts for nothing until a Refund shows up — then the amounts
/// say what stands (a failed refund leaves the money counting).
pub fn effective_charged(p: &Payment, currency: &str, refunded_by_us: bool) -> i64 {
    if refunded_by_us && !p.has_refund() {
        0
    } else {
        p.charged(currency)
    }
}

/// covered(P) toward an order in `currency`: open authorization + max(0, net charged), each
/// with what we give back taken into account.
pub fn covered(p: &Payment, currency: &str, ours: Ours) -> i64 {
    open_authorization(p, currency, ours.cancelled)
        .saturating_add(effective_charged(p, currency, ours.refunded).max(0))
}

/// What a capture may still take: the open authorization.
pub fn capturable(p: &Payment, currency: &str, cancelled_by_us: bool) -> i64 {
    open_authorization(p, currency, cancelled_by_us)
}

/// `orders` with `order` in it as given: a just-created order may not be found by the query
/// yet (it is eventually consistent), and the caller's copy is the newest.
pub fn with_order(mut orders: Vec<Order>, order: &Order) -> Vec<Order> {
    match orders.iter_mut().find(|o| o.id == order.id) {
        Some(o) => *o = order.clone(),
        None => orders.push(order.clone()),
    }
    orders
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Money, Transaction, TransactionState, TransactionType};

    fn tx(kind: TransactionType, state: TransactionState, cents: i64) -> Transaction {
        Transaction {
            id: format!("{kind}-{state}-{cents}"),
            kind,
            amount: Money {
                currency_code: "EUR".into(),
                cent_amount: cents,
                fraction_digits: Some(2),
            },
            state,
        }
    }

    fn payment(txs: Vec<Transaction>) -> Payment {
        Payment {
            id: "p".into(),
            version: 1,
            amount_planned: None,
            transactions: txs,
            payment_method_info: Default::default(),
            created_at: None,
        }
    }

    fn order(id: &str, created: &str, state: OrderState) -> Order {
        serde_json::from_value(serde_json::json!({
            "id": id, "version": 1, "createdAt": created, "orderState": state.as_str(),
            "totalPrice": {"currencyCode": "EUR", "centAmount": 100}
        }))
        .expect("order")
    }

    use TransactionState::{Failure, Initial, Pending, Success};
    use TransactionType::{Authorization, CancelAuthorization, Charge, Chargeback, Refund};

    #[test]
    fn amounts_not_flags() {
        // Re-authorization: cancelled, then authorized again.
        let p = payment(vec![
            tx(Authorization, Success, 5000),
            tx(CancelAuthorization, Success, 5000),
            tx(Authorization, Success, 5000),
        ]);
        assert_eq!(covered(&p, "EUR", Ours::NONE), 5000);
        // Two authorizations add up.
        let p = payment(vec![
            tx(Authorization, Success, 5000),
            tx(Authorization, Success, 5000),
        ]);
        assert_eq!(covered(&p, "EUR", Ours::NONE), 10000);
        // A capture of the authorization is the same money.
        let p = payment(vec![
            tx(Authorization, Success, 8000),
            tx(Charge, Success, 8000),
        ]);
        assert_eq!(covered(&p, "EUR", Ours::NONE), 8000);
        // A charge fully refunded counts for nothing.
        let p = payment(vec![tx(Charge, Success, 2000), tx(Refund, Success, 2000)]);
        assert_eq!(covered(&p, "EUR", Ours::NONE), 0);
        let p = payment(vec![
            tx(Charge, Success, 2000),
            tx(Chargeback, Success, 500),
        ]);
        assert_eq!(covered(&p, "EUR", Ours::NONE), 1500);
        // A cancel in flight (Initial/Pending) already takes the money away; a failed one not.
        for (state, want) in [(Initial, 0), (Pending, 0), (Success, 0), (Failure, 5000)] {
            let p = payment(vec![
                tx(Authorization, Success, 5000),
                tx(CancelAuthorization, state, 5000),
            ]);
            assert_eq!(covered(&p, "EUR", Ours::NONE), want, "{state}");
        }
        // Other currencies do not count.
        assert_eq!(covered(&p, "USD", Ours::NONE), 0);
    }

    #[test]
    fn a_capture_consumes_its_authorization() {
        // Captured, then refunded (or charged back): nothing covers the order any more.
        for back in [Refund, Chargeback] {
            let p = payment(vec![
                tx(Authorization, Success, 4000),
                tx(Charge, Success, 4000),
                tx(back, Success, 4000),
            ]);
            assert_eq!(covered(&p, "EUR", Ours::NONE), 0, "{back}");
        }
        // A partial capture: the rest of the authorization plus what was received.
        let p = payment(vec![
            tx(Authorization, Success, 8000),
            tx(Charge, Success, 3000),
        ]);
        assert_eq!(covered(&p, "EUR", Ours::NONE), 8000);
        // … and the captured part refunded: only the open rest counts.
        let p = payment(vec![
            tx(Authorization, Success, 10000),
            tx(Charge, Success, 4000),
            tx(Refund, Success, 4000),
        ]);
        assert_eq!(covered(&p, "EUR", Ours::NONE), 6000);
        // A capture under way takes the authorization; its money counts once it has landed.
        let p = payment(vec![
            tx(Authorization, Success, 5000),
            tx(Charge, Pending, 5000),
        ]);
        assert_eq!(covered(&p, "EUR", Ours::NONE), 0);
        // A failed capture gives the authorization back.
        let p = payment(vec![
            tx(Authorization, Success, 5000),
            tx(Charge, Failure, 5000),
        ]);
        assert_eq!(covered(&p, "EUR", Ours::NONE), 5000);
        // The model's own reading agrees.
        assert_eq!(p.covered("EUR"), 5000);
    }

    #[test]
    fn our_own_cancel_counts_until_it_shows_failed() {
        let p = payment(vec![tx(Authorization, Success, 5000)]);
        assert_eq!(
            covered(&p, "EUR", Ours::CANCELLED),
            0,
            "cancel requested, not yet visible"
        );
        let p = payment(vec![
            tx(Authorization, Success, 5000),
            tx(CancelAuthorization, Failure, 5000),
        ]);
        assert_eq!(
            covered(&p, "EUR", Ours::CANCELLED),
            5000,
            "the cancel failed"
        );
        let p = payment(vec![
            tx(Authorization, Success, 5000),
            tx(Charge, Success, 5000),
        ]);
        assert_eq!(
            covered(&p, "EUR", Ours::CANCELLED),
            5000,
            "money received counts"
        );
    }

    #[test]
    fn our_own_refund_takes_the_charged_money_until_a_refund_shows() {
        let ours = Ours {
            cancelled: false,
            refunded: true,
        };
        let p = payment(vec![tx(Charge, Success, 5000)]);
        assert_eq!(
            covered(&p, "EUR", ours),
            0,
            "refund decided, not yet visible"
        );
        assert_eq!(covered(&p, "EUR", Ours::NONE), 5000, "a direct sale covers");
        let p = payment(vec![tx(Charge, Success, 5000), tx(Refund, Failure, 5000)]);
        assert_eq!(
            covered(&p, "EUR", ours),
            5000,
            "the refund failed: the money stayed"
        );
        let p = payment(vec![tx(Charge, Success, 5000), tx(Refund, Success, 2000)]);
        assert_eq!(covered(&p, "EUR", ours), 3000, "a partial refund landed");
        // refundable counts a refund under way as made, net charged only a landed one.
        let p = payment(vec![tx(Charge, Success, 5000), tx(Refund, Pending, 2000)]);
        assert_eq!((p.charged("EUR"), p.refundable("EUR")), (5000, 3000));
        let p = payment(vec![
            tx(Charge, Success, 5000),
            tx(Refund, Failure, 2000),
            tx(Chargeback, Success, 1000),
        ]);
        assert_eq!(p.refundable("EUR"), 4000);
    }

    #[test]
    fn capturable_is_the_uncaptured_authorization() {
        let p = payment(vec![
            tx(Authorization, Success, 10000),
            tx(Charge, Success, 4000),
            tx(Refund, Success, 4000),
        ]);
        assert_eq!(capturable(&p, "EUR", false), 6000);
        let p = payment(vec![
            tx(Authorization, Success, 10000),
            tx(Charge, Pending, 10000),
        ]);
        assert_eq!(capturable(&p, "EUR", false), 0);
    }

    #[test]
    fn the_earliest_order_not_cancelled_holds_the_payment() {
        let a = order("a", "2026-01-01T00:00:02Z", OrderState::Open);
        let b = order("b", "2026-01-01T00:00:01Z", OrderState::Cancelled);
        let c = order("c", "2026-01-01T00:00:03Z", OrderState::Open);
        let c2 = order("c2", "2026-01-01T00:00:02Z", OrderState::Open);
        let orders = [c.clone(), b.clone(), a.clone(), c2.clone()];
        assert_eq!(allocated(&orders).map(|o| o.id.as_str()), Some("a"));
        assert_eq!(allocated([&b]).map(|o| o.id.as_str()), None);
    }
}
