//! The commercetools resources the rules read: Payments, their Transactions, Orders.
//!
//! These are the commercetools representations (camelCase JSON), reduced to the fields a
//! payment rule needs. Unknown fields are ignored, so a full Payment or Order from the API,
//! from a `PaymentCreated`/`OrderCreated` message or from a `--state` snapshot all decode.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A reference to another resource, e.g. `{"typeId":"payment","id":"…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reference {
    /// The resource type: `payment`, `order`, `cart`, `subscription`, …
    pub type_id: String,
    /// The resource id.
    pub id: String,
}

/// An amount of money in cents; `fractionDigits` is kept so that amounts can be echoed back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Money {
    /// ISO 4217 currency code; amounts in different currencies never add up.
    pub currency_code: String,
    /// Amount in the smallest unit of the currency.
    pub cent_amount: i64,
    /// Decimal places of the currency, when the payload carries them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction_digits: Option<u32>,
}

/// Declares an enum of commercetools names that decodes leniently: surrounding whitespace is
/// ignored (a connector has been seen writing `"Failure "`) and an unknown name becomes
/// `Unknown` instead of failing the whole message.
macro_rules! lenient_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $(
                #[doc = concat!("`", stringify!($variant), "`")]
                $variant,
            )+
            /// A value this version of payrules does not know.
            Unknown,
        }

        impl $name {
            /// The commercetools spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => stringify!($variant),)+
                    Self::Unknown => "Unknown",
                }
            }

            /// Parses a commercetools name, trimming whitespace; unknown names give `Unknown`.
            pub fn parse(s: &str) -> Self {
                match s.trim() {
                    $(stringify!($variant) => Self::$variant,)+
                    _ => Self::Unknown,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = Cow::<'de, str>::deserialize(d)?;
                Ok(Self::parse(&s))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

lenient_enum!(
    /// The kind of a payment transaction.
    TransactionType {
        Authorization,
        CancelAuthorization,
        Charge,
        Refund,
        Chargeback,
    }
);

lenient_enum!(
    /// Where a transaction stands at the payment service provider.
    TransactionState {
        Initial,
        Pending,
        Success,
        Failure,
    }
);

lenient_enum!(
    /// Where the order's goods stand; decides whether it can still be fulfilled and when a
    /// capture is due.
    ShipmentState {
        Shipped,
        Delivered,
        Ready,
        Pending,
        Delayed,
        Partial,
        Backorder,
        Canceled,
    }
);

lenient_enum!(
    /// The order's own lifecycle state.
    OrderState {
        Open,
        Confirmed,
        Complete,
        Cancelled,
    }
);

lenient_enum!(
    /// Where the goods of a return item stand (`ReturnShipmentState`): `Advised` (announced,
    /// not refundable yet), `Returned` (received, refundable), then `BackInStock` or `Unusable`.
    ReturnShipmentState {
        Advised,
        Returned,
        BackInStock,
        Unusable,
    }
);

lenient_enum!(
    /// Whether the money of a return item was given back (`ReturnPaymentState`):
    /// `NonRefundable` (goods only advised), `Initial` (refundable, not refunded yet),
    /// `Refunded` or `NotRefunded`.
    ReturnPaymentState {
        NonRefundable,
        Initial,
        Refunded,
        NotRefunded,
    }
);

/// One transaction of a Payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transaction {
    /// Unique within the payment; `PaymentTransactionStateChanged` refers to it.
    pub id: String,
    /// Authorization, Charge, CancelAuthorization, …
    #[serde(rename = "type")]
    pub kind: TransactionType,
    /// The amount this transaction is about.
    pub amount: Money,
    /// Current state at the PSP.
    pub state: TransactionState,
}

/// A Payment, as far as the rules are concerned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    /// The payment id.
    pub id: String,
    /// Resource version: snapshots and messages are ordered by it.
    pub version: u64,
    /// What the shop asked to be paid; used when a cancel needs an amount to report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_planned: Option<Money>,
    /// All transactions, in the order commercetools lists them.
    #[serde(default)]
    pub transactions: Vec<Transaction>,
    /// Who handles the payment: only Checkout's own payments may be cancelled or captured
    /// through Checkout.
    #[serde(default, skip_serializing_if = "PaymentMethodInfo::is_empty")]
    pub payment_method_info: PaymentMethodInfo,
    /// When commercetools created it: an order's refunds for returned goods come from its
    /// earliest-created payments first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The `paymentMethodInfo` of a Payment, as far as payrules reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentMethodInfo {
    /// The payment service provider or connector handling the payment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_interface: Option<String>,
}

impl PaymentMethodInfo {
    fn is_empty(&self) -> bool {
        self.payment_interface.is_none()
    }
}

/// The `paymentInfo` of an Order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentInfo {
    /// The payments the order is paid with.
    #[serde(default)]
    pub payments: Vec<Reference>,
}

/// A Cart, reduced to what confirms (or contradicts) Checkout's report that it could not
/// create an order from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cart {
    /// The cart id.
    pub id: String,
    /// `Active`, `Merged`, `Ordered` or `Frozen`; `Ordered` once an order was created from it.
    pub cart_state: String,
    /// The payments added to the cart.
    #[serde(default)]
    pub payment_info: Option<PaymentInfo>,
}

impl Cart {
    /// Whether an order was created from the cart.
    pub fn is_ordered(&self) -> bool {
        self.cart_state == "Ordered"
    }

    /// Whether the cart lists the payment.
    pub fn lists_payment(&self, payment_id: &str) -> bool {
        self.payment_info
            .iter()
            .flat_map(|i| &i.payments)
            .any(|r| r.id == payment_id)
    }
}

/// An Order, as far as the rules are concerned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    /// The order id.
    pub id: String,
    /// Resource version: snapshots and messages are ordered by it.
    pub version: u64,
    /// The shop's order number, passed on to the fulfillment team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_number: Option<String>,
    /// What the payments must cover before the order is released.
    pub total_price: Money,
    /// The taxed total; its `totalGross` is what the customer pays when prices are net.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taxed_price: Option<TaxedPrice>,
    /// Open, Confirmed, Complete or Cancelled; a cancelled order is never released.
    #[serde(default = "default_order_state")]
    pub order_state: OrderState,
    /// Absent until shipping starts; decides eligibility and capture on shipment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipment_state: Option<ShipmentState>,
    /// When commercetools created it: a payment referenced by several orders counts toward
    /// the earliest one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The payments that pay for this order.
    #[serde(default)]
    pub payment_info: Option<PaymentInfo>,
    /// The order's `lineItems`.
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub line_items: Vec<Line>,
    /// The order's `customLineItems`.
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub custom_line_items: Vec<Line>,
    /// The order's `returnInfo`: one entry per `addReturnInfo`, or what `setReturnInfo` set.
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub return_info: Vec<ReturnInfo>,
}

/// An absent or `null` list as an empty one.
fn null_as_empty<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// A line of an order: a `LineItem` or a `CustomLineItem`. One type for both: payrules reads
/// the same fields of each (`id`, `quantity`, `totalPrice`, `taxedPrice.totalGross`), and
/// which list a line is in says which kind it is (a [`ReturnedLine`] names the list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Line {
    /// Unique among the order's lines of its kind; return items refer to it.
    pub id: String,
    /// How many of the product (or custom line) the order has.
    #[serde(default = "one")]
    pub quantity: u64,
    /// The line's total after discounts (`quantity` × the discounted price); net or gross as
    /// the tax rate's `includedInPrice` says.
    pub total_price: Money,
    /// The line's taxed total (a `TaxedItemPrice`), once a tax rate is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taxed_price: Option<TaxedPrice>,
}

fn one() -> u64 {
    1
}

impl Line {
    /// What the customer pays for the line, after discounts: `taxedPrice.totalGross` when
    /// present, else `totalPrice` (net when the prices are net), like [`Order::gross_total`].
    pub fn gross(&self) -> &Money {
        self.taxed_price
            .as_ref()
            .map_or(&self.total_price, |t| &t.total_gross)
    }
}

/// One `ReturnInfo` of an order: the items of one return.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReturnInfo {
    /// The returned items.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub items: Vec<ReturnItem>,
}

/// The line a return item returns, by the item's `type`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReturnedLine {
    /// A `LineItemReturnItem`: its `lineItemId`.
    LineItem(String),
    /// A `CustomLineItemReturnItem`: its `customLineItemId`.
    CustomLineItem(String),
    /// Another `type`, or one without the id its type calls for.
    Unknown,
}

/// One item of a return (`LineItemReturnItem` or `CustomLineItemReturnItem`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ReturnItemJson", into = "ReturnItemJson")]
pub struct ReturnItem {
    /// Unique among the order's return items; the state change messages refer to it.
    /// `setReturnInfo` gives every item a new one.
    pub id: String,
    /// How many of the line are returned.
    pub quantity: u64,
    /// Which line.
    pub line: ReturnedLine,
    /// Where the goods stand.
    pub shipment_state: ReturnShipmentState,
    /// Whether the money was given back.
    pub payment_state: ReturnPaymentState,
}

/// A return item as commercetools writes it: the line's id in the field its `type` names.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReturnItemJson {
    id: String,
    quantity: u64,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    line_item_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    custom_line_item_id: Option<String>,
    shipment_state: ReturnShipmentState,
    payment_state: ReturnPaymentState,
}

const LINE_ITEM_RETURN_ITEM: &str = "LineItemReturnItem";
const CUSTOM_LINE_ITEM_RETURN_ITEM: &str = "CustomLineItemReturnItem";

impl From<ReturnItemJson> for ReturnItem {
    fn from(j: ReturnItemJson) -> Self {
        let line = match (j.kind.trim(), j.line_item_id, j.custom_line_item_id) {
            (LINE_ITEM_RETURN_ITEM, Some(id), _) => ReturnedLine::LineItem(id),
            (CUSTOM_LINE_ITEM_RETURN_ITEM, _, Some(id)) => ReturnedLine::CustomLineItem(id),
            _ => ReturnedLine::Unknown,
        };
        Self {
            id: j.id,
            quantity: j.quantity,
            line,
            shipment_state: j.shipment_state,
            payment_state: j.payment_state,
        }
    }
}

impl From<ReturnItem> for ReturnItemJson {
    fn from(r: ReturnItem) -> Self {
        let (kind, line_item_id, custom_line_item_id) = match r.line {
            ReturnedLine::LineItem(id) => (LINE_ITEM_RETURN_ITEM, Some(id), None),
            ReturnedLine::CustomLineItem(id) => (CUSTOM_LINE_ITEM_RETURN_ITEM, None, Some(id)),
            ReturnedLine::Unknown => ("Unknown", None, None),
        };
        Self {
            id: r.id,
            quantity: r.quantity,
            kind: kind.to_string(),
            line_item_id,
            custom_line_item_id,
            shipment_state: r.shipment_state,
            payment_state: r.payment_state,
        }
    }
}

/// The `taxedPrice` of an Order, reduced to the total the customer pays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaxedPrice {
    /// Net plus taxes.
    pub total_gross: Money,
}

fn default_order_state() -> OrderState {
    OrderState::Open
}

impl Order {
    /// Every return item of the order, over all its `returnInfo`s, in order.
    pub fn return_items(&self) -> impl Iterator<Item = &ReturnItem> {
        self.return_info.iter().flat_map(|r| r.items.iter())
    }

    /// The line a return item returns, if the order has it.
    pub fn returned_line(&self, line: &ReturnedLine) -> Option<&Line> {
        let (lines, id) = match line {
            ReturnedLine::LineItem(id) => (&self.line_items, id),
            ReturnedLine::CustomLineItem(id) => (&self.custom_line_items, id),
            ReturnedLine::Unknown => return None,
        };
        lines.iter().find(|l| &l.id == id)
    }

    /// Ids of the payments referenced by `paymentInfo`, in order.
    pub fn payment_ids(&self) -> impl Iterator<Item = &str> {
        self.payment_info
            .iter()
            .flat_map(|info| info.payments.iter())
            .map(|r| r.id.as_str())
    }

    /// What the customer pays: `taxedPrice.totalGross` when present, else `totalPrice` (which
    /// is net when the prices are net).
    pub fn gross_total(&self) -> &Money {
        self.taxed_price
            .as_ref()
            .map_or(&self.total_price, |t| &t.total_gross)
    }

    /// Whether the order can still be handed to fulfillment: Open or Confirmed, and not yet
    /// (partly) shipped or cancelled for shipping.
    pub fn is_fulfillable(&self) -> bool {
        matches!(self.order_state, OrderState::Open | OrderState::Confirmed)
            && matches!(
                self.shipment_state,
                None | Some(
                    ShipmentState::Pending
                        | ShipmentState::Ready
                        | ShipmentState::Backorder
                        | ShipmentState::Delayed
                )
            )
    }

    /// The sort key of allocation: earliest created first, ties (and unknown times, last) by id.
    pub fn allocation_key(&self) -> (chrono::DateTime<chrono::Utc>, &str) {
        (
            self.created_at
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC),
            self.id.as_str(),
        )
    }
}

impl Payment {
    /// Transactions of one type in one state.
    pub fn transactions_in(
        &self,
        kind: TransactionType,
        state: TransactionState,
    ) -> impl Iterator<Item = &Transaction> {
        self.transactions
            .iter()
            .filter(move |t| t.kind == kind && t.state == state)
    }

    /// An Authorization in Success.
    pub fn has_successful_authorization(&self) -> bool {
        self.transactions_in(TransactionType::Authorization, TransactionState::Success)
            .next()
            .is_some()
    }

    /// A CancelAuthorization that has not failed: the authorization is (being) cancelled.
    pub fn has_live_cancel_authorization(&self) -> bool {
        self.transactions.iter().any(|t| {
            t.kind == TransactionType::CancelAuthorization && t.state != TransactionState::Failure
        })
    }

    /// A Charge in Initial, Pending or Success: the money is (being) captured, too late to
    /// cancel. Initial counts: a connector adds the Charge in Initial before it calls the
    /// provider (domain §5.1), so the capture is under way.
    pub fn has_live_charge(&self) -> bool {
        self.transactions.iter().any(|t| {
            t.kind == TransactionType::Charge
                && matches!(
                    t.state,
                    TransactionState::Initial
                        | TransactionState::Pending
                        | TransactionState::Success
                )
        })
    }

    /// Sum of the transactions of one type in `currency` whose state is one of `states`.
    pub fn amount_in(
        &self,
        kind: TransactionType,
        states: &[TransactionState],
        currency: &str,
    ) -> i64 {
        self.transactions
            .iter()
            .filter(|t| {
                t.kind == kind && states.contains(&t.state) && t.amount.currency_code == currency
            })
            .fold(0i64, |sum, t| sum.saturating_add(t.amount.cent_amount))
    }

    /// authorized(P) = Σ Authorization in Success − Σ CancelAuthorization in Initial, Pending
    /// or Success: the money still reserved (may be negative on odd data).
    pub fn authorized(&self, currency: &str) -> i64 {
        use TransactionState::{Initial, Pending, Success};
        self.amount_in(TransactionType::Authorization, &[Success], currency)
            .saturating_sub(self.amount_in(
                TransactionType::CancelAuthorization,
                &[Initial, Pending, Success],
                currency,
            ))
    }

    /// net charged(P) = Σ Charge in Success − Σ Refund and Chargeback in Success: the money
    /// received and kept (negative on odd data).
    pub fn charged(&self, currency: &str) -> i64 {
        use TransactionState::Success;
        self.amount_in(TransactionType::Charge, &[Success], currency)
            .saturating_sub(self.amount_in(TransactionType::Refund, &[Success], currency))
            .saturating_sub(self.amount_in(TransactionType::Chargeback, &[Success], currency))
    }

    /// refundable(P) = Σ Charge in Success − Σ Refund in Initial, Pending or Success − Σ
    /// Chargeback in Success: what a refund may still take. A refund under way counts as made
    /// (it must not be asked for twice); a failed one gives its money back to refund.
    pub fn refundable(&self, currency: &str) -> i64 {
        use TransactionState::{Initial, Pending, Success};
        self.amount_in(TransactionType::Charge, &[Success], currency)
            .saturating_sub(self.amount_in(
                TransactionType::Refund,
                &[Initial, Pending, Success],
                currency,
            ))
            .saturating_sub(self.amount_in(TransactionType::Chargeback, &[Success], currency))
    }

    /// Refunds in Initial, Pending or Success: what is refunded or being refunded.
    pub fn refunded(&self, currency: &str) -> i64 {
        use TransactionState::{Initial, Pending, Success};
        self.amount_in(
            TransactionType::Refund,
            &[Initial, Pending, Success],
            currency,
        )
    }

    /// A Refund still Initial or Pending: money is on its way back.
    pub fn refund_in_flight(&self) -> bool {
        self.transactions.iter().any(|t| {
            t.kind == TransactionType::Refund
                && matches!(
                    t.state,
                    TransactionState::Initial | TransactionState::Pending
                )
        })
    }

    /// Whether the payment carries any Refund (in any state).
    pub fn has_refund(&self) -> bool {
        self.transactions
            .iter()
            .any(|t| t.kind == TransactionType::Refund)
    }

    /// Whether the payment carries a Charge in Success: only then can it hold money to refund.
    pub fn has_successful_charge(&self) -> bool {
        self.transactions_in(TransactionType::Charge, TransactionState::Success)
            .next()
            .is_some()
    }

    /// Charges in Initial, Pending or Success: what is captured or being captured (refunds do
    /// not make an authorization capturable again; a connector adds its Charge in Initial
    /// before calling the provider).
    pub fn captured(&self, currency: &str) -> i64 {
        use TransactionState::{Initial, Pending, Success};
        self.amount_in(
            TransactionType::Charge,
            &[Initial, Pending, Success],
            currency,
        )
    }

    /// open authorization(P) = max(0, authorized(P) − Σ Charge in Initial, Pending or
    /// Success): what is reserved and not yet taken by a capture. A capture consumes its
    /// authorization, and a refund does not give it back.
    pub fn open_authorization(&self, currency: &str) -> i64 {
        self.authorized(currency)
            .saturating_sub(self.captured(currency))
            .max(0)
    }

    /// covered(P) = open authorization(P) + max(0, net charged(P)): money reserved and money
    /// received and kept, each counted once (see `rules::coverage`).
    pub fn covered(&self, currency: &str) -> i64 {
        self.open_authorization(currency)
            .saturating_add(self.charged(currency).max(0))
    }

    /// The currency the payment's money is in: its first successful Authorization's, else
    /// its first Charge's, else `amountPlanned`'s.
    pub fn currency(&self) -> Option<&str> {
        self.transactions
            .iter()
            .find(|t| {
                t.kind == TransactionType::Authorization && t.state == TransactionState::Success
            })
            .or_else(|| {
                self.transactions
                    .iter()
                    .find(|t| t.kind == TransactionType::Charge)
            })
            .map(|t| t.amount.currency_code.as_str())
            .or_else(|| {
                self.amount_planned
                    .as_ref()
                    .map(|m| m.currency_code.as_str())
            })
    }

    /// An Authorization or Charge is still Initial or Pending: the payment's money may yet
    /// change without anyone acting.
    pub fn awaiting_money(&self) -> bool {
        self.transactions.iter().any(|t| {
            matches!(
                t.kind,
                TransactionType::Authorization | TransactionType::Charge
            ) && matches!(
                t.state,
                TransactionState::Initial | TransactionState::Pending
            )
        })
    }

    /// A CancelAuthorization exists and every one of them failed: a cancel was tried and the
    /// authorization still stands.
    pub fn cancel_authorization_failed(&self) -> bool {
        let mut cancels = self
            .transactions
            .iter()
            .filter(|t| t.kind == TransactionType::CancelAuthorization)
            .peekable();
        cancels.peek().is_some() && cancels.all(|t| t.state == TransactionState::Failure)
    }

    /// Whether the payment carries any CancelAuthorization.
    pub fn has_cancel_authorization(&self) -> bool {
        self.transactions
            .iter()
            .any(|t| t.kind == TransactionType::CancelAuthorization)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_enums_trim_and_tolerate_unknown_values() {
        let s: TransactionState = serde_json::from_str("\"Failure \"").unwrap();
        assert_eq!(s, TransactionState::Failure);
        let t: TransactionType = serde_json::from_str("\"Payout\"").unwrap();
        assert_eq!(t, TransactionType::Unknown);
        assert_eq!(
            serde_json::to_string(&TransactionType::Charge).unwrap(),
            "\"Charge\""
        );
    }

    #[test]
    fn order_decodes_without_payment_info() {
        let o: Order = serde_json::from_str(
            r#"{"id":"o1","version":3,"totalPrice":{"currencyCode":"EUR","centAmount":100},"extra":1}"#,
        )
        .unwrap();
        assert_eq!(o.order_state, OrderState::Open);
        assert_eq!(o.payment_ids().count(), 0);
        assert!(o.line_items.is_empty() && o.custom_line_items.is_empty());
        assert!(o.return_info.is_empty());
    }

    fn money(cents: i64) -> serde_json::Value {
        serde_json::json!({"type": "centPrecision", "currencyCode": "EUR", "centAmount": cents,
            "fractionDigits": 2})
    }

    #[test]
    fn a_lines_gross_is_its_taxed_gross_else_its_total_price() {
        let taxed: Line = serde_json::from_value(serde_json::json!({
            "id": "l1", "quantity": 2, "totalPrice": money(1000),
            "taxedPrice": {"totalNet": money(1000), "totalGross": money(1190)}
        }))
        .unwrap();
        assert_eq!((taxed.quantity, taxed.gross().cent_amount), (2, 1190));
        let untaxed: Line =
            serde_json::from_value(serde_json::json!({"id": "l2", "totalPrice": money(500)}))
                .unwrap();
        assert_eq!((untaxed.quantity, untaxed.gross().cent_amount), (1, 500));
        assert_eq!(untaxed.gross().currency_code, "EUR");
    }

    #[test]
    fn return_items_name_their_line_by_type() {
        let o: Order = serde_json::from_value(serde_json::json!({
            "id": "o", "version": 9, "totalPrice": money(1500),
            "lineItems": [{"id": "li", "quantity": 3, "totalPrice": money(1000)}],
            "customLineItems": [{"id": "cli", "quantity": 1, "totalPrice": money(500),
                "taxedPrice": {"totalNet": money(420), "totalGross": money(500)}}],
            "returnInfo": [{"returnTrackingId": "t", "items": [
                {"type": "LineItemReturnItem", "id": "r1", "quantity": 2, "lineItemId": "li",
                 "shipmentState": "Returned", "paymentState": "Initial",
                 "createdAt": "2026-01-01T00:00:00Z", "lastModifiedAt": "2026-01-01T00:00:00Z"},
                {"type": "CustomLineItemReturnItem", "id": "r2", "quantity": 1,
                 "customLineItemId": "cli", "shipmentState": "Advised",
                 "paymentState": "NonRefundable"}]},
                {"items": [{"type": "GiftReturnItem", "id": "r3", "quantity": 1,
                 "shipmentState": "Lost", "paymentState": "Refunded"}]}]
        }))
        .unwrap();
        let items: Vec<_> = o.return_items().collect();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].line, ReturnedLine::LineItem("li".into()));
        assert_eq!(items[0].quantity, 2);
        assert_eq!(items[0].shipment_state, ReturnShipmentState::Returned);
        assert_eq!(items[0].payment_state, ReturnPaymentState::Initial);
        assert_eq!(items[1].line, ReturnedLine::CustomLineItem("cli".into()));
        assert_eq!(items[1].payment_state, ReturnPaymentState::NonRefundable);
        assert_eq!(items[2].line, ReturnedLine::Unknown);
        assert_eq!(items[2].shipment_state, ReturnShipmentState::Unknown);
        let gross = |i: usize| {
            o.returned_line(&items[i].line)
                .map(|l| l.gross().cent_amount)
        };
        assert_eq!(
            (gross(0), gross(1), gross(2)),
            (Some(1000), Some(500), None)
        );
        // And back: the commercetools shape, which decodes to the same order.
        let again: Order = serde_json::from_value(serde_json::to_value(&o).unwrap()).unwrap();
        assert_eq!(again, o);
    }

    #[test]
    fn null_lists_decode_as_empty() {
        let o: Order = serde_json::from_value(serde_json::json!({
            "id": "o", "version": 1, "totalPrice": money(0),
            "lineItems": null, "customLineItems": null, "returnInfo": null
        }))
        .unwrap();
        assert!(o.line_items.is_empty() && o.return_info.is_empty());
    }

    #[test]
    fn the_order_fixture_has_its_lines() {
        let text = include_str!("../fixtures/messages/OrderCreated.json");
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        let o: Order = serde_json::from_value(v["order"].clone()).unwrap();
        let lines: Vec<_> = o
            .line_items
            .iter()
            .map(|l| (l.quantity, l.gross().cent_amount))
            .collect();
        assert_eq!(lines, [(1, 12990), (2, 3980)]);
        assert!(o.custom_line_items.is_empty() && o.return_info.is_empty());
    }
}
