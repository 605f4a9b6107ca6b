//! Decoding what commercetools Subscriptions deliver into typed [`Message`]s.
//!
//! Every shape arrives here as raw bytes: the Platform format (`notificationType` `Message`,
//! `ResourceCreated`, `ResourceUpdated`, `ResourceDeleted`, `Event`) and the CloudEvents 1.0
//! envelope whose `data` is a Platform payload. Decoding is one typed serde pass over the
//! borrowed bytes; parts whose type depends on the message type (`state`, `data`, the embedded
//! Payment or Order) are kept as borrowed [`RawValue`](serde_json::value::RawValue)s and decoded once the type is known.
//! Unknown fields are ignored; unknown message types decode into [`MessageType::Other`].

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::model::{
    Money, Order, OrderState, Payment, Reference, ReturnInfo, ReturnShipmentState, ShipmentState,
    TaxedPrice, Transaction, TransactionState,
};

/// A point in time, always UTC.
pub type Timestamp = DateTime<Utc>;

/// Why some bytes are not a commercetools notification. Each variant names what was wrong
/// and where, so a parked message can be understood without the bytes at hand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not UTF-8 text.
    #[error("not UTF-8: invalid byte at offset {offset}")]
    NotUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// The text is not JSON.
    #[error("not JSON: {detail} (line {line}, column {column})")]
    NotJson {
        /// serde_json's description.
        detail: String,
        /// 1-based line within the payload.
        line: usize,
        /// 1-based column within the payload.
        column: usize,
    },
    /// JSON, but a field has the wrong type or the top level is not an object.
    #[error("wrong shape: {detail}")]
    WrongShape {
        /// What was expected where.
        detail: String,
    },
    /// A field the notification cannot do without is absent.
    #[error("missing field `{field}` in {context}")]
    MissingField {
        /// JSON name of the field.
        field: &'static str,
        /// Which kind of payload lacked it.
        context: String,
    },
    /// `notificationType` names no known notification.
    #[error("unknown notificationType {0:?}")]
    UnknownNotificationType(String),
    /// The `data` of a CloudEvents envelope is not a valid Platform payload.
    #[error("in CloudEvents `data`: {0}")]
    CloudEventsData(Box<DecodeError>),
}

impl DecodeError {
    fn from_json(e: serde_json::Error) -> Self {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => DecodeError::NotJson {
                detail: strip_position(&e),
                line: e.line(),
                column: e.column(),
            },
            Category::Data => DecodeError::WrongShape {
                detail: e.to_string(),
            },
        }
    }

    fn in_field(field: &'static str, e: serde_json::Error) -> Self {
        DecodeError::WrongShape {
            detail: format!("field `{field}`: {e}"),
        }
    }

    fn missing(field: &'static str, context: impl fmt::Display) -> Self {
        DecodeError::MissingField {
            field,
            context: context.to_string(),
        }
    }
}

/// serde_json appends " at line L column C"; the variant carries those separately.
fn strip_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// The delivery format the subscription was configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// commercetools' own format (the default).
    Platform,
    /// CloudEvents 1.0, structured mode; the Platform payload is in `data`.
    CloudEvents,
}

/// The Platform `notificationType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationType {
    /// A Message (PaymentTransactionAdded, OrderCreated, …).
    Message,
    /// A change subscription: the resource was created.
    ResourceCreated,
    /// A change subscription: the resource was updated.
    ResourceUpdated,
    /// A change subscription: the resource was deleted.
    ResourceDeleted,
    /// An Event (Checkout events); no projectKey, resource or sequenceNumber at top level.
    Event,
}

impl NotificationType {
    fn parse(s: &str) -> Result<Self, DecodeError> {
        Ok(match s {
            "Message" => Self::Message,
            "ResourceCreated" => Self::ResourceCreated,
            "ResourceUpdated" => Self::ResourceUpdated,
            "ResourceDeleted" => Self::ResourceDeleted,
            "Event" => Self::Event,
            other => return Err(DecodeError::UnknownNotificationType(other.to_string())),
        })
    }

    /// The commercetools spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Message => "Message",
            Self::ResourceCreated => "ResourceCreated",
            Self::ResourceUpdated => "ResourceUpdated",
            Self::ResourceDeleted => "ResourceDeleted",
            Self::Event => "Event",
        }
    }
}

macro_rules! message_types {
    ($($variant:ident),+ $(,)?) => {
        /// The message or event type. Change notifications use their notificationType here.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum MessageType {
            $(
                #[doc = concat!("`", stringify!($variant), "`")]
                $variant,
            )+
            /// Any type payrules does not model; the name is kept.
            Other(String),
        }

        impl MessageType {
            /// Maps a commercetools type name.
            pub fn parse(s: &str) -> Self {
                match s {
                    $(stringify!($variant) => Self::$variant,)+
                    other => Self::Other(other.to_string()),
                }
            }

            /// The commercetools spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => stringify!($variant),)+
                    Self::Other(s) => s,
                }
            }
        }
    };
}

message_types!(
    PaymentCreated,
    PaymentTransactionAdded,
    PaymentTransactionStateChanged,
    PaymentStatusStateTransition,
    OrderCreated,
    OrderCreatedFromRecurringOrder,
    OrderImported,
    OrderPaymentAdded,
    OrderStateChanged,
    OrderPaymentStateChanged,
    OrderShipmentStateChanged,
    CheckoutOrderCreationFailed,
    CheckoutPaymentAuthorized,
    CheckoutPaymentAuthorizationFailed,
    CheckoutPaymentAuthorizationCancelled,
    CheckoutPaymentCancelAuthorizationFailed,
    CheckoutPaymentCharged,
    CheckoutPaymentChargeFailed,
    CheckoutPaymentRefunded,
    CheckoutPaymentRefundFailed,
    OrderEditApplied,
    ReturnInfoAdded,
    ReturnInfoSet,
    OrderReturnShipmentStateChanged,
    ResourceCreated,
    ResourceUpdated,
    ResourceDeleted,
);

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One error reported by Checkout with `CheckoutOrderCreationFailed`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CheckoutError {
    /// e.g. `OutOfStock`.
    pub code: String,
    /// Human-readable text.
    #[serde(default)]
    pub message: String,
}

/// The type-specific content of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// `PaymentCreated`: the full payment.
    PaymentCreated(Box<Payment>),
    /// `PaymentTransactionAdded`: the full transaction.
    TransactionAdded(Transaction),
    /// `PaymentTransactionStateChanged`: only the id and the new state.
    TransactionStateChanged {
        /// Which transaction of the payment.
        transaction_id: String,
        /// Its new state.
        state: TransactionState,
    },
    /// `PaymentStatusStateTransition`: the custom workflow state of the payment.
    PaymentStatusStateTransition {
        /// The new State.
        state: Reference,
    },
    /// `OrderCreated`, `OrderCreatedFromRecurringOrder` or `OrderImported`: the full order.
    OrderCreated(Box<Order>),
    /// `OrderPaymentAdded`: a payment now pays for the order.
    OrderPaymentAdded(Reference),
    /// `OrderStateChanged`.
    OrderStateChanged(OrderState),
    /// `OrderPaymentStateChanged`: the new payment state's name (the rules do not read it).
    OrderSubStateChanged(String),
    /// `OrderShipmentStateChanged`: decides eligibility and capture on shipment.
    OrderShipmentStateChanged(ShipmentState),
    /// `OrderEditApplied`: the order's totals after the edit (`result.excerptAfterEdit`).
    OrderEditApplied {
        /// `totalPrice` after the edit.
        total_price: Money,
        /// `taxedPrice` after the edit, when the order is taxed.
        taxed_price: Option<TaxedPrice>,
    },
    /// `ReturnInfoAdded` (`addReturnInfo`): one more return of the order.
    ReturnInfoAdded(ReturnInfo),
    /// `ReturnInfoSet` (`setReturnInfo`): the order's returns replaced by these (none when the
    /// message has no `returnInfo`); every item has a new id.
    ReturnInfoSet(Vec<ReturnInfo>),
    /// `OrderReturnShipmentStateChanged` (`setReturnShipmentState`): one return item's goods.
    /// (`setReturnPaymentState` produces no Message.)
    ReturnShipmentStateChanged {
        /// Which return item of the order.
        return_item_id: String,
        /// Its new shipment state.
        state: ReturnShipmentState,
    },
    /// `CheckoutOrderCreationFailed`: Checkout could not create the order for these payments.
    CheckoutOrderCreationFailed {
        /// The cart Checkout tried to order.
        cart: Option<Reference>,
        /// The payments made for that cart.
        payments: Vec<Reference>,
        /// Why it failed.
        errors: Vec<CheckoutError>,
    },
    /// One of the `CheckoutPayment*` events.
    CheckoutPayment {
        /// The payment the event is about.
        payment: Reference,
        /// The transaction the event is about.
        transaction_id: Option<String>,
        /// The order, when Checkout created one.
        order: Option<Reference>,
    },
    /// The payload did not fit: only the type is known; the worker re-reads the resource.
    PayloadNotIncluded {
        /// commercetools' reason.
        reason: String,
    },
    /// Nothing payrules reads (change notifications, other types).
    None,
}

/// A decoded notification.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// How it was wrapped.
    pub format: Format,
    /// What kind of notification it is.
    pub notification: NotificationType,
    /// Message id or Event id (the CloudEvent id when wrapped); the dedupe key.
    /// Change notifications have none.
    pub id: Option<String>,
    /// Message, event or change type; for payloadNotIncluded, `payloadType`.
    pub kind: MessageType,
    /// The resource the message is about; Events carry theirs in `data`.
    pub resource: Option<Reference>,
    /// The resource version the change produced; orders changes to one field.
    pub resource_version: Option<u64>,
    /// Per-resource sequence number; breaks ties between messages of one update.
    pub sequence_number: Option<u64>,
    /// When commercetools created it (`createdAt`, or `modifiedAt` for change notifications).
    pub created_at: Option<Timestamp>,
    /// The project, when the payload names it.
    pub project_key: Option<String>,
    /// The type-specific content.
    pub body: Body,
}

impl Message {
    /// The test notification commercetools sends when a Subscription is created or its
    /// destination changed: a `ResourceCreated` for a `subscription`.
    pub fn is_subscription_test(&self) -> bool {
        self.notification == NotificationType::ResourceCreated
            && self
                .resource
                .as_ref()
                .is_some_and(|r| r.type_id == "subscription")
    }

    /// The id of the payment this message is about, if it is about one.
    pub fn payment_id(&self) -> Option<&str> {
        match &self.body {
            Body::CheckoutPayment { payment, .. } => Some(&payment.id),
            _ => self
                .resource
                .as_ref()
                .filter(|r| r.type_id == "payment")
                .map(|r| r.id.as_str()),
        }
    }

    /// The id of the order this message is about, if it is about one.
    pub fn order_id(&self) -> Option<&str> {
        self.resource
            .as_ref()
            .filter(|r| r.type_id == "order")
            .map(|r| r.id.as_str())
    }
}

mod decode;

pub use decode::decode;
