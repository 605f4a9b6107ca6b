//! The explanation as data: verdicts, ledger and timer lines, decisions; what `--json` prints and
//! the text is rendered from.

use super::Kind;
use crate::action::Reason;
use crate::model::{Money, OrderState, ShipmentState, Transaction};
use serde::Serialize;

/// The origin of a decision a timer made.
pub(super) const GRACE_CHECK: &str = "grace-period check";

/// When and why something happened: a ledger entry written, a timer scheduled or fired.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stamp {
    /// The clock then (RFC 3339); for a timer's decision, its due time.
    pub at: Option<String>,
    /// The message that caused it; `None` for a timer.
    pub message_id: Option<String>,
    /// That message's type.
    pub message_type: Option<String>,
    /// Where: `file:line`, `grace-period check`, `at the end of the input`, …
    pub origin: Option<String>,
}

/// An order's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderVerdict {
    /// `release:{id}` is done.
    Released,
    /// It is not.
    NotReleased,
}

/// A payment's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentVerdict {
    /// `refund:{id}` is done: its charged money was given back.
    Refunded,
    /// `capture:{id}` is done.
    Captured,
    /// `cancel:{id}` is done (and no capture).
    Cancelled,
    /// Neither.
    Untouched,
}

/// One ledger entry.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerLine {
    /// The idempotency key or marker.
    pub key: String,
    /// `claimed`, `done` or `failed`.
    pub status: &'static str,
    /// When and why it was written, as far as known.
    #[serde(flatten)]
    pub stamp: Option<Stamp>,
    /// The action's reason (a cancel's), where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// A note on the entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
}

/// A grace-period timer.
#[derive(Debug, Clone, Serialize)]
pub struct TimerLine {
    /// When the check is due.
    pub due: String,
    /// What scheduled it.
    pub scheduled: Stamp,
    /// When it fired; `None`: still pending.
    pub fired: Option<Stamp>,
}

/// A decision of one rule now, with its reason in words.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// `release`, `cancel`, `capture`, `refund` or `none`.
    pub decision: &'static str,
    /// For a cancel or refund: the reason's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// Why, in words.
    pub because: String,
}

impl Decision {
    pub(super) fn none(because: impl Into<String>) -> Self {
        Self {
            decision: "none",
            reason: None,
            because: because.into(),
        }
    }
}

/// The order an explained order is, as read.
#[derive(Debug, Clone, Serialize)]
pub struct OrderSummary {
    /// The shop's order number.
    pub order_number: Option<String>,
    /// `orderState`.
    pub order_state: OrderState,
    /// `shipmentState`.
    pub shipment_state: Option<ShipmentState>,
    /// When commercetools created it.
    pub created_at: Option<String>,
    /// Open or Confirmed and not (partly) shipped.
    pub fulfillable: bool,
    /// What must be covered.
    pub gross_total: Money,
    /// Where that comes from: `taxedPrice.totalGross` when the order has one, else
    /// `totalPrice`.
    pub gross_total_from: &'static str,
}

/// A payment an explained order references.
#[derive(Debug, Clone, Serialize)]
pub struct PaymentLine {
    /// The payment id.
    pub payment_id: String,
    /// Whether it was found.
    pub found: bool,
    /// The order its money counts toward.
    pub counts_toward: Option<String>,
    /// covered(P) toward the explained order.
    pub covered: i64,
    /// open authorization(P) in the order's currency (our own cancel taken into account).
    pub authorized: i64,
    /// net charged(P) in the order's currency.
    pub charged: i64,
    /// payrules claimed or executed its cancel.
    pub cancelled_by_us: bool,
    /// `cancel:{payment_id}` in the ledger.
    pub cancel: Option<&'static str>,
    /// What a capture may still take.
    pub capturable: i64,
    /// `capture:{payment_id}` in the ledger.
    pub capture: Option<&'static str>,
    /// Why it covers nothing, or where its money goes, when that needs saying.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Its transactions.
    pub transactions: Vec<Transaction>,
}

/// What the rules decide for an order now.
#[derive(Debug, Clone, Serialize)]
pub struct OrderRulesNow {
    /// release_for_fulfillment.
    pub release: Decision,
    /// capture_on_shipment.
    pub capture: Decision,
    /// refund_on_return.
    pub refund_on_return: Decision,
}

/// A returned line of an explained order.
#[derive(Debug, Clone, Serialize)]
pub struct ReturnLine {
    /// The line item's (or custom line item's) id.
    pub line_id: String,
    /// returned(L): its units that reached the rule's `on`, decided items left out.
    pub returned_quantity: u64,
    /// due(L) = ⌊gross × returned ÷ quantity⌋.
    pub due: i64,
    /// What payrules refunded (or is refunding) for it, from its ledger keys' amounts.
    pub refunded: i64,
    /// Those refunds.
    pub refunds: Vec<ReturnRefund>,
}

/// One refund payrules decided for a returned line.
#[derive(Debug, Clone, Serialize)]
pub struct ReturnRefund {
    /// Its key, `refund:{order}:{line}:{returned}:{payment}`.
    pub key: String,
    /// The payment refunded.
    pub payment_id: String,
    /// The amount its claim recorded.
    pub amount: i64,
    /// `claimed`, `done` or `failed`.
    pub status: &'static str,
}

/// Why an order was (not) released.
#[derive(Debug, Clone, Serialize)]
pub struct OrderExplanation {
    /// `order`.
    pub kind: Kind,
    /// The order id.
    pub id: String,
    /// Whether the view knows the order.
    pub found: bool,
    /// `released` or `not_released`.
    pub verdict: OrderVerdict,
    /// The verdict in words.
    pub because: String,
    /// Where the facts come from.
    pub source: String,
    /// The order as read.
    pub order: Option<OrderSummary>,
    /// Σ covered(P) over the allocated payments.
    pub covered: i64,
    /// The payments whose money counts toward this order.
    pub allocated: Vec<PaymentLine>,
    /// The payments it references whose money counts toward another order (or is unknown).
    pub allocated_elsewhere: Vec<PaymentLine>,
    /// What the rules decide now.
    pub rules_now: OrderRulesNow,
    /// Its returned lines and their refunds (empty without returns).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub returns: Vec<ReturnLine>,
    /// `release:{id}` in the ledger.
    pub ledger: Vec<LedgerLine>,
}

/// An order referencing an explained payment.
#[derive(Debug, Clone, Serialize)]
pub struct OrderRef {
    /// The order id.
    pub id: String,
    /// The shop's order number.
    pub order_number: Option<String>,
    /// `orderState`.
    pub order_state: OrderState,
    /// `shipmentState`.
    pub shipment_state: Option<ShipmentState>,
    /// When commercetools created it.
    pub created_at: Option<String>,
    /// The payment's money counts toward this order.
    pub holds_payment: bool,
}

/// What the rules decide for a payment now.
#[derive(Debug, Clone, Serialize)]
pub struct PaymentRulesNow {
    /// The cancel rules on a message about the payment.
    pub cancel_on_message: Decision,
    /// The cancel rules when its grace-period check runs.
    pub cancel_at_grace_check: Decision,
    /// capture_on_shipment.
    pub capture: Decision,
    /// The refund rules on a message about the payment.
    pub refund_on_message: Decision,
    /// The refund rules when its grace-period check runs.
    pub refund_at_grace_check: Decision,
}

/// Why a payment was (not) cancelled, captured or refunded.
#[derive(Debug, Clone, Serialize)]
pub struct PaymentExplanation {
    /// `payment`.
    pub kind: Kind,
    /// The payment id.
    pub id: String,
    /// Whether the view knows the payment.
    pub found: bool,
    /// `cancelled`, `captured` or `untouched`.
    pub verdict: PaymentVerdict,
    /// The verdict in words.
    pub because: String,
    /// Where the facts come from.
    pub source: String,
    /// The currency of its money.
    pub currency: Option<String>,
    /// authorized(P), our own cancel taken into account.
    pub authorized: i64,
    /// charged(P).
    pub charged: i64,
    /// refundable(P): what a refund may still take.
    pub refundable: i64,
    /// Who handles it.
    pub payment_interface: Option<String>,
    /// Its transactions.
    pub transactions: Vec<Transaction>,
    /// Every order referencing it.
    pub orders: Vec<OrderRef>,
    /// The order its money counts toward.
    pub counts_toward: Option<String>,
    /// Its grace-period timer, as far as known (a replay records it; the live store has no
    /// read for it).
    pub timer: Option<TimerLine>,
    /// Its ledger entries: `cancel:`, `capture:`, `refund:` and the markers
    /// `order-creation-failed:`, `cancel-failed:`, `refund-failed:`, `charged-on-cancelled:`.
    pub ledger: Vec<LedgerLine>,
    /// What the rules decide now.
    pub rules_now: PaymentRulesNow,
}

/// The answer of `payrules explain`.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Explanation {
    /// For an order.
    Order(Box<OrderExplanation>),
    /// For a payment.
    Payment(Box<PaymentExplanation>),
}

impl Explanation {
    /// `released`, `not_released`, `refunded`, `cancelled`, `captured` or `untouched`.
    pub fn verdict(&self) -> &'static str {
        match self {
            Explanation::Order(o) => match o.verdict {
                OrderVerdict::Released => "released",
                OrderVerdict::NotReleased => "not_released",
            },
            Explanation::Payment(p) => match p.verdict {
                PaymentVerdict::Refunded => "refunded",
                PaymentVerdict::Captured => "captured",
                PaymentVerdict::Cancelled => "cancelled",
                PaymentVerdict::Untouched => "untouched",
            },
        }
    }

    /// The verdict in words.
    pub fn because(&self) -> &str {
        match self {
            Explanation::Order(o) => &o.because,
            Explanation::Payment(p) => &p.because,
        }
    }

    /// Whether the order or payment was found.
    pub fn found(&self) -> bool {
        match self {
            Explanation::Order(o) => o.found,
            Explanation::Payment(p) => p.found,
        }
    }

    /// One JSON object.
    pub fn to_json(&self) -> String {
        // Plain strings, numbers and enums: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The explanation in words, for a person (its `Display`, in `text.rs`).
    pub fn to_text(&self) -> String {
        self.to_string()
    }
}
