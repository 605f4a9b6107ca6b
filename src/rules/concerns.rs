//! What a message is about: which payment or order the engine re-evaluates, and whether the
//! message can make an action due at all.

use super::{Body, Message, MessageType, NotificationType, TransactionState, TransactionType};

/// What a message asks the engine to look at.
pub(super) enum Concern<'a> {
    Payment(&'a str),
    Order(&'a str),
    OrderCreationFailed {
        /// The cart Checkout says it could not order, when the event names it.
        cart: Option<&'a str>,
        payments: Vec<&'a str>,
    },
    Nothing,
}

pub(super) fn concern(m: &Message) -> Concern<'_> {
    if m.is_subscription_test() || m.notification == NotificationType::ResourceDeleted {
        return Concern::Nothing;
    }
    match (&m.kind, &m.body) {
        (_, Body::CheckoutOrderCreationFailed { cart, payments, .. }) => {
            Concern::OrderCreationFailed {
                cart: cart.as_ref().map(|r| r.id.as_str()),
                payments: payments.iter().map(|r| r.id.as_str()).collect(),
            }
        }
        (
            MessageType::CheckoutPaymentAuthorized
            | MessageType::CheckoutPaymentCharged
            | MessageType::CheckoutPaymentCancelAuthorizationFailed,
            Body::CheckoutPayment { payment, .. },
        ) => Concern::Payment(&payment.id),
        _ if m.notification == NotificationType::Event => Concern::Nothing,
        _ => match (m.payment_id(), m.order_id()) {
            (Some(p), _) => Concern::Payment(p),
            (_, Some(o)) => Concern::Order(o),
            _ => Concern::Nothing,
        },
    }
}

/// Message types that change nothing any rule reads (custom states, interface ids,
/// interactions, custom fields, the payment state the shop keeps). Return messages are not
/// among them: refund_on_return reads returns.
const INERT_TYPES: &[&str] = &[
    "PaymentStatusStateTransition",
    "PaymentStatusInterfaceCodeSet",
    "PaymentInteractionAdded",
    "PaymentInterfaceIdSet",
    "PaymentTransactionInterfaceIdSet",
    "OrderPaymentStateChanged",
    "OrderStateTransition",
    "OrderCustomFieldAdded",
    "OrderCustomFieldChanged",
    "OrderCustomFieldRemoved",
    "CheckoutPaymentAuthorizationFailed",
    "CheckoutPaymentAuthorizationCancelled",
    "CheckoutPaymentChargeFailed",
    "CheckoutPaymentRefunded",
    "CheckoutPaymentRefundFailed",
];

/// Whether the change a message announces can make an action due: money appearing
/// (an Authorization or Charge reaching Success), money coming back (a CancelAuthorization,
/// Refund or Chargeback failing — a transaction state change to Success or Failure, whose
/// type the message does not carry), an order appearing, gaining a payment, changing state
/// (Cancelled makes cancels due, anything else may make it eligible), shipping or being
/// edited. A message that can only keep things as they are or take money away (Initial,
/// Pending, a Charge failing, interactions) cannot. Unknown types, change notifications and
/// messages without their payload are assumed to enable.
///
/// Only sound for a view whose reads are current ([`CommerceView::reads_are_current`]):
/// there, the message that announces an enabling change is itself evaluated against a state
/// that already contains the change, whatever order the messages arrive in.
pub(super) fn can_enable(m: &Message) -> bool {
    use TransactionState::{Failure, Success};
    use TransactionType::{Authorization, CancelAuthorization, Charge, Refund};
    let adds_money = |kind: TransactionType, state: TransactionState| {
        matches!(
            (kind, state),
            (Authorization | Charge, Success) | (CancelAuthorization | Refund, Failure)
        )
    };
    match &m.body {
        Body::PaymentCreated(p) => p.transactions.iter().any(|t| adds_money(t.kind, t.state)),
        Body::TransactionAdded(t) => adds_money(t.kind, t.state),
        Body::TransactionStateChanged { state, .. } => matches!(state, Success | Failure),
        Body::OrderSubStateChanged(_) | Body::PaymentStatusStateTransition { .. } => false,
        _ => !INERT_TYPES.contains(&m.kind.as_str()),
    }
}

/// Whether the message may report that a cancel, capture or refund failed (then one of ours
/// is checked).
pub(super) fn reports_failure(m: &Message) -> bool {
    match &m.body {
        Body::TransactionStateChanged { state, .. } => *state == TransactionState::Failure,
        Body::TransactionAdded(t) => t.state == TransactionState::Failure,
        _ => m.kind == MessageType::CheckoutPaymentCancelAuthorizationFailed,
    }
}
