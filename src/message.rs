//! Decoding what commercetools Subscriptions deliver into typed [`Message`]s.
//!
//! Every shape arrives here as raw bytes: the Platform format (`notificationType` `Message`,
//! `ResourceCreated`, `ResourceUpdated`, `ResourceDeleted`, `Event`) and the CloudEvents 1.0
//! envelope whose `data` is a Platform payload. Decoding is one typed serde pass over the
//! borrowed bytes; parts whose type depends on the message type (`state`, `data`, the embedded
//! Payment or Order) are kept as borrowed [`RawValue`]s and decoded once the type is known.
//! Unknown fields are ignored; unknown message types decode into [`MessageType::Other`].

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::model::{
    Money, Order, OrderState, Payment, Reference, ShipmentState, TaxedPrice, Transaction,
    TransactionState,
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
    /// `OrderCreated` or `OrderImported`: the full order.
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

/// Declares the struct of every top-level field payrules reads, of all shapes at once, with
/// the embedded Payment and Order either kept raw or decoded in the same pass.
macro_rules! raw_fields {
    ($(#[$meta:meta])* $name:ident, $(#[$embedded:meta])* $payment:ty, $order:ty) => {
        $(#[$meta])*
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct $name<'a> {
            #[serde(borrow)]
            notification_type: Option<Cow<'a, str>>,
            #[serde(borrow)]
            id: Option<Cow<'a, str>>,
            #[serde(rename = "type", borrow)]
            kind: Option<Cow<'a, str>>,
            project_key: Option<String>,
            resource: Option<Reference>,
            resource_version: Option<u64>,
            sequence_number: Option<u64>,
            #[serde(borrow)]
            created_at: Option<Cow<'a, str>>,
            #[serde(borrow)]
            modified_at: Option<Cow<'a, str>>,
            #[serde(borrow)]
            payload_not_included: Option<RawNotIncluded<'a>>,
            // Message-specific fields, decoded once the type is known.
            $(#[$embedded])*
            payment: Option<$payment>,
            #[serde(borrow)]
            transaction: Option<&'a RawValue>,
            transaction_id: Option<String>,
            #[serde(borrow)]
            state: Option<&'a RawValue>,
            $(#[$embedded])*
            order: Option<$order>,
            payment_ref: Option<Reference>,
            order_state: Option<OrderState>,
            payment_state: Option<String>,
            shipment_state: Option<String>,
            #[serde(borrow)]
            result: Option<&'a RawValue>,
            // Events and CloudEvents.
            #[serde(borrow)]
            data: Option<&'a RawValue>,
            #[serde(borrow)]
            specversion: Option<Cow<'a, str>>,
        }
    };
}

raw_fields!(
    /// Every top-level field payrules reads, of all shapes at once: one pass, borrowed. The
    /// embedded Payment and Order stay raw until the type says what they are.
    Raw,
    #[serde(borrow)]
    &'a RawValue,
    &'a RawValue
);

raw_fields!(
    /// [`Raw`] with the embedded Payment and Order decoded in the same pass: the fast path for
    /// well-formed input (a `PaymentCreated` or `OrderCreated` is read once, not twice).
    RawTyped,
    Box<Payment>,
    Box<Order>
);

/// The embedded payloads [`RawTyped`] already decoded.
#[derive(Default)]
struct Embedded {
    payment: Option<Box<Payment>>,
    order: Option<Box<Order>>,
}

impl<'a> RawTyped<'a> {
    fn split(self) -> (Raw<'a>, Embedded) {
        let embedded = Embedded {
            payment: self.payment,
            order: self.order,
        };
        let raw = Raw {
            notification_type: self.notification_type,
            id: self.id,
            kind: self.kind,
            project_key: self.project_key,
            resource: self.resource,
            resource_version: self.resource_version,
            sequence_number: self.sequence_number,
            created_at: self.created_at,
            modified_at: self.modified_at,
            payload_not_included: self.payload_not_included,
            payment: None,
            transaction: self.transaction,
            transaction_id: self.transaction_id,
            state: self.state,
            order: None,
            payment_ref: self.payment_ref,
            order_state: self.order_state,
            payment_state: self.payment_state,
            shipment_state: self.shipment_state,
            result: self.result,
            data: self.data,
            specversion: self.specversion,
        };
        (raw, embedded)
    }
}

/// Reads the top level. Input [`RawTyped`] accepts, [`Raw`] accepts too, with the same values,
/// so the fast path changes nothing; anything else (a malformed or unexpected `payment` or
/// `order`, bad JSON) is read again the exact way, so errors are exactly what they were.
fn parse_top(text: &str) -> Result<(Raw<'_>, Embedded), serde_json::Error> {
    #[cfg(test)]
    let fast = !tests::EXACT_ONLY.with(std::cell::Cell::get);
    #[cfg(not(test))]
    let fast = true;
    if fast && let Ok(typed) = serde_json::from_str::<RawTyped<'_>>(text) {
        return Ok(typed.split());
    }
    serde_json::from_str::<Raw<'_>>(text).map(|raw| (raw, Embedded::default()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNotIncluded<'a> {
    #[serde(default, borrow)]
    reason: Option<Cow<'a, str>>,
    #[serde(borrow)]
    payload_type: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawOrderFailed {
    cart: Option<Reference>,
    #[serde(default)]
    payments: Vec<Reference>,
    #[serde(default)]
    errors: Vec<CheckoutError>,
}

/// `OrderEditApplied.result` (an `OrderEditApplied` result): only the excerpt after the edit.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEditResult {
    excerpt_after_edit: Option<RawExcerpt>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawExcerpt {
    total_price: Money,
    taxed_price: Option<TaxedPrice>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPaymentEvent {
    payment: Option<Reference>,
    transaction_id: Option<String>,
    order: Option<Reference>,
}

/// Decodes one notification from the bytes a transport delivered.
///
/// # Errors
/// A [`DecodeError`] saying what is wrong; never panics, whatever the bytes.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let text = std::str::from_utf8(bytes).map_err(|e| DecodeError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    match text.trim_start().as_bytes().first() {
        Some(b'{') => {}
        Some(b'[') => {
            return Err(DecodeError::WrongShape {
                detail: "the top level is an array; a notification is a JSON object".into(),
            });
        }
        _ => {
            // Not an object: let serde_json say whether it is JSON at all.
            if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
                return Err(DecodeError::from_json(e));
            }
            return Err(DecodeError::WrongShape {
                detail: "the top level is not a JSON object".into(),
            });
        }
    }
    let (raw, embedded) = parse_top(text).map_err(DecodeError::from_json)?;
    if raw.specversion.is_some() {
        return decode_cloud_event(raw);
    }
    from_platform(raw, embedded, Format::Platform)
}

fn decode_cloud_event(envelope: Raw<'_>) -> Result<Message, DecodeError> {
    let data = envelope
        .data
        .ok_or_else(|| DecodeError::missing("data", "CloudEvents envelope"))?;
    let (inner, embedded) = parse_top(data.get())
        .map_err(|e| DecodeError::CloudEventsData(Box::new(DecodeError::from_json(e))))?;
    let mut message = from_platform(inner, embedded, Format::CloudEvents)
        .map_err(|e| DecodeError::CloudEventsData(Box::new(e)))?;
    // The CloudEvent id is the delivery's identity (it equals the Message id).
    if let Some(id) = envelope.id {
        message.id = Some(id.into_owned());
    }
    Ok(message)
}

fn from_platform(raw: Raw<'_>, embedded: Embedded, format: Format) -> Result<Message, DecodeError> {
    let notification = match raw.notification_type.as_deref() {
        Some(s) => NotificationType::parse(s)?,
        None => return Err(DecodeError::missing("notificationType", "payload")),
    };
    match notification {
        NotificationType::Message => message(raw, embedded, format),
        NotificationType::Event => event(raw, format),
        change => change_notification(raw, format, change),
    }
}

fn timestamp(
    field: &'static str,
    value: Option<Cow<'_, str>>,
) -> Result<Option<Timestamp>, DecodeError> {
    value
        .map(|s| {
            DateTime::parse_from_rfc3339(&s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| DecodeError::WrongShape {
                    detail: format!("field `{field}`: {s:?} is not an RFC 3339 timestamp ({e})"),
                })
        })
        .transpose()
}

fn field<T: DeserializeOwned>(
    name: &'static str,
    value: Option<&RawValue>,
    kind: &MessageType,
) -> Result<T, DecodeError> {
    let value = value.ok_or_else(|| DecodeError::missing(name, format!("{kind} message")))?;
    serde_json::from_str(value.get()).map_err(|e| DecodeError::in_field(name, e))
}

fn message(raw: Raw<'_>, embedded: Embedded, format: Format) -> Result<Message, DecodeError> {
    let id = raw
        .id
        .ok_or_else(|| DecodeError::missing("id", "Message payload"))?
        .into_owned();
    let resource = raw
        .resource
        .ok_or_else(|| DecodeError::missing("resource", "Message payload"))?;
    let created_at = timestamp("createdAt", raw.created_at)?;

    let (kind, body) = if let Some(pni) = raw.payload_not_included {
        let name = pni
            .payload_type
            .or(raw.kind)
            .ok_or_else(|| DecodeError::missing("payloadType", "payloadNotIncluded"))?;
        let reason = pni.reason.map(Cow::into_owned).unwrap_or_default();
        (
            MessageType::parse(&name),
            Body::PayloadNotIncluded { reason },
        )
    } else {
        let name = raw
            .kind
            .ok_or_else(|| DecodeError::missing("type", "Message payload"))?;
        let kind = MessageType::parse(&name);
        let body = match &kind {
            MessageType::PaymentCreated => Body::PaymentCreated(match embedded.payment {
                Some(p) => p,
                None => Box::new(field("payment", raw.payment, &kind)?),
            }),
            MessageType::PaymentTransactionAdded => {
                Body::TransactionAdded(field("transaction", raw.transaction, &kind)?)
            }
            MessageType::PaymentTransactionStateChanged => Body::TransactionStateChanged {
                transaction_id: raw
                    .transaction_id
                    .ok_or_else(|| DecodeError::missing("transactionId", &kind))?,
                state: field("state", raw.state, &kind)?,
            },
            MessageType::PaymentStatusStateTransition => Body::PaymentStatusStateTransition {
                state: field("state", raw.state, &kind)?,
            },
            MessageType::OrderCreated | MessageType::OrderImported => {
                Body::OrderCreated(match embedded.order {
                    Some(o) => o,
                    None => Box::new(field("order", raw.order, &kind)?),
                })
            }
            MessageType::OrderPaymentAdded => Body::OrderPaymentAdded(
                raw.payment_ref
                    .ok_or_else(|| DecodeError::missing("paymentRef", &kind))?,
            ),
            MessageType::OrderStateChanged => Body::OrderStateChanged(
                raw.order_state
                    .ok_or_else(|| DecodeError::missing("orderState", &kind))?,
            ),
            MessageType::OrderPaymentStateChanged => Body::OrderSubStateChanged(
                raw.payment_state
                    .ok_or_else(|| DecodeError::missing("paymentState", &kind))?,
            ),
            MessageType::OrderShipmentStateChanged => {
                Body::OrderShipmentStateChanged(ShipmentState::parse(
                    &raw.shipment_state
                        .ok_or_else(|| DecodeError::missing("shipmentState", &kind))?,
                ))
            }
            MessageType::OrderEditApplied => {
                let result: RawEditResult = field("result", raw.result, &kind)?;
                let after = result
                    .excerpt_after_edit
                    .ok_or_else(|| DecodeError::missing("result.excerptAfterEdit", &kind))?;
                Body::OrderEditApplied {
                    total_price: after.total_price,
                    taxed_price: after.taxed_price,
                }
            }
            _ => Body::None,
        };
        (kind, body)
    };

    Ok(Message {
        format,
        notification: NotificationType::Message,
        id: Some(id),
        kind,
        resource: Some(resource),
        resource_version: raw.resource_version,
        sequence_number: raw.sequence_number,
        created_at,
        project_key: raw.project_key,
        body,
    })
}

fn event(raw: Raw<'_>, format: Format) -> Result<Message, DecodeError> {
    let id = raw
        .id
        .ok_or_else(|| DecodeError::missing("id", "Event payload"))?
        .into_owned();
    let name = raw
        .kind
        .ok_or_else(|| DecodeError::missing("type", "Event payload"))?;
    let kind = MessageType::parse(&name);
    let created_at = timestamp("createdAt", raw.created_at)?;
    let data = raw.data;
    let body = match &kind {
        MessageType::CheckoutOrderCreationFailed => {
            let d: RawOrderFailed = field("data", data, &kind)?;
            Body::CheckoutOrderCreationFailed {
                cart: d.cart,
                payments: d.payments,
                errors: d.errors,
            }
        }
        MessageType::CheckoutPaymentAuthorized
        | MessageType::CheckoutPaymentAuthorizationFailed
        | MessageType::CheckoutPaymentAuthorizationCancelled
        | MessageType::CheckoutPaymentCancelAuthorizationFailed
        | MessageType::CheckoutPaymentCharged
        | MessageType::CheckoutPaymentChargeFailed
        | MessageType::CheckoutPaymentRefunded
        | MessageType::CheckoutPaymentRefundFailed => {
            let d: RawPaymentEvent = field("data", data, &kind)?;
            Body::CheckoutPayment {
                payment: d
                    .payment
                    .ok_or_else(|| DecodeError::missing("data.payment", &kind))?,
                transaction_id: d.transaction_id,
                order: d.order,
            }
        }
        _ => Body::None,
    };
    let project_key = data.and_then(|d| {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct ProjectOnly {
            project_key: Option<String>,
        }
        serde_json::from_str::<ProjectOnly>(d.get())
            .ok()
            .and_then(|p| p.project_key)
    });
    Ok(Message {
        format,
        notification: NotificationType::Event,
        id: Some(id),
        kind,
        resource: None,
        resource_version: None,
        sequence_number: None,
        created_at,
        project_key,
        body,
    })
}

fn change_notification(
    raw: Raw<'_>,
    format: Format,
    notification: NotificationType,
) -> Result<Message, DecodeError> {
    let resource = raw.resource.ok_or_else(|| {
        DecodeError::missing("resource", format!("{} payload", notification.as_str()))
    })?;
    let created_at = timestamp("modifiedAt", raw.modified_at)?;
    Ok(Message {
        format,
        notification,
        id: None,
        kind: MessageType::parse(notification.as_str()),
        resource: Some(resource),
        resource_version: None,
        sequence_number: None,
        created_at,
        project_key: raw.project_key,
        body: Body::None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// Turns the single-pass fast path of [`parse_top`] off.
        pub(super) static EXACT_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    fn decode_exact(bytes: &[u8]) -> Result<Message, DecodeError> {
        EXACT_ONLY.with(|c| c.set(true));
        let r = decode(bytes);
        EXACT_ONLY.with(|c| c.set(false));
        r
    }

    #[test]
    fn every_well_formed_fixture_takes_the_single_pass() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/messages");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                let text = std::fs::read_to_string(&path).unwrap();
                let typed = serde_json::from_str::<RawTyped<'_>>(&text);
                assert!(typed.is_ok(), "{}: {:?}", path.display(), typed.err());
            }
        }
    }

    #[test]
    fn the_fast_path_decodes_exactly_like_the_two_pass_path() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for dir in ["messages", "messages/bad"] {
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                if path.is_file() {
                    inputs.push(std::fs::read(path).unwrap());
                }
            }
        }
        for entry in std::fs::read_dir(root.join("scenarios")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "jsonl") {
                let text = std::fs::read_to_string(path).unwrap();
                inputs.extend(text.lines().map(|l| l.as_bytes().to_vec()));
            }
        }
        // Payloads that do not fit the typed fields: the fast path must fall back.
        inputs.extend([
            br#"{"notificationType":"Message","id":"m","resource":{"typeId":"payment","id":"p"},"type":"PaymentCreated","payment":{"version":1}}"#.to_vec(),
            br#"{"notificationType":"Message","id":"m","resource":{"typeId":"payment","id":"p"},"type":"PaymentCreated","payment":"p"}"#.to_vec(),
            br#"{"notificationType":"Message","id":"m","resource":{"typeId":"order","id":"o"},"type":"OrderStateChanged","orderState":"Confirmed","order":{"weird":true},"payment":[1]}"#.to_vec(),
            br#"{"notificationType":"Message","id":"m","resource":{"typeId":"order","id":"o"},"type":"OrderCreated","order":{"id":"o","version":1}}"#.to_vec(),
            br#"{"notificationType":"Message","id":"m","resource":{"typeId":"payment","id":"p"},"type":"PaymentCreated","payment":null}"#.to_vec(),
            br#"{"notificationType":"Message","id":"m","resource":{"typeId":"payment","id":"p"},"type":"PaymentCreated","payment":{"id":"p","version":1},"payment":{"id":"p","version":2}}"#.to_vec(),
            br#"{"id":"c","specversion":"1.0","data":{"notificationType":"Message","id":"m","resource":{"typeId":"payment","id":"p"},"type":"PaymentCreated","payment":{"id":"p"}}}"#.to_vec(),
        ]);
        assert!(inputs.len() > 100, "{} inputs", inputs.len());
        for bytes in &inputs {
            assert_eq!(
                decode(bytes),
                decode_exact(bytes),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn not_utf8_names_the_offset() {
        assert_eq!(
            decode(b"{\"a\":\xff}"),
            Err(DecodeError::NotUtf8 { offset: 5 })
        );
    }

    #[test]
    fn not_json_names_line_and_column() {
        let err = decode(b"{\n  nope").unwrap_err();
        assert!(
            matches!(err, DecodeError::NotJson { line: 2, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn wrong_shape_names_the_field() {
        let err =
            decode(br#"{"notificationType":"Message","id":"m","resource":"payment/1","type":"X"}"#)
                .unwrap_err();
        assert!(matches!(err, DecodeError::WrongShape { .. }), "{err:?}");
        let err = decode(b"[1,2]").unwrap_err();
        assert!(err.to_string().contains("array"), "{err}");
        let err = decode(b"42").unwrap_err();
        assert!(err.to_string().contains("not a JSON object"), "{err}");
    }

    #[test]
    fn missing_transaction_is_reported_with_the_type() {
        let err = decode(
            br#"{"notificationType":"Message","id":"m","resource":{"typeId":"payment","id":"p"},"type":"PaymentTransactionAdded"}"#,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "missing field `transaction` in PaymentTransactionAdded message"
        );
    }

    #[test]
    fn payload_not_included_takes_the_type_from_payload_type() {
        let m = decode(
            br#"{"notificationType":"Message","id":"m","resource":{"typeId":"payment","id":"p"},
                "resourceVersion":4,"sequenceNumber":3,"createdAt":"2026-01-01T00:00:00.000Z",
                "payloadNotIncluded":{"reason":"Payload too large.","payloadType":"PaymentTransactionStateChanged"}}"#,
        )
        .unwrap();
        assert_eq!(m.kind, MessageType::PaymentTransactionStateChanged);
        assert!(matches!(m.body, Body::PayloadNotIncluded { .. }));
        assert_eq!(m.payment_id(), Some("p"));
    }

    #[test]
    fn subscription_test_notification_is_recognised() {
        let m = decode(
            br#"{"notificationType":"ResourceCreated","projectKey":"p","resource":{"typeId":"subscription","id":"s"},"version":1,"modifiedAt":"2025-04-01T16:07:22.335Z"}"#,
        )
        .unwrap();
        assert!(m.is_subscription_test());
    }

    #[test]
    fn unknown_types_keep_id_type_and_resource() {
        let m = decode(
            br#"{"notificationType":"Message","id":"m1","resource":{"typeId":"payment","id":"p"},"type":"PaymentInteractionAdded","interaction":{}}"#,
        )
        .unwrap();
        assert_eq!(m.kind, MessageType::Other("PaymentInteractionAdded".into()));
        assert_eq!(m.id.as_deref(), Some("m1"));
        assert_eq!(m.payment_id(), Some("p"));
    }

    #[test]
    fn escaped_strings_decode() {
        let m = decode(
            br#"{"notificationType":"Message","id":"m\u0031","resource":{"typeId":"order","id":"o"},"type":"Order\u0053tateChanged","orderState":"Confirmed"}"#,
        )
        .unwrap();
        assert_eq!(m.id.as_deref(), Some("m1"));
        assert_eq!(m.body, Body::OrderStateChanged(OrderState::Confirmed));
    }
}
