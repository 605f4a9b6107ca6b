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
    }
}
