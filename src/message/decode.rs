//! The decoder: one borrowed serde pass over the top level of every shape at once, then the
//! type-specific parts.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::{
    Body, CheckoutError, DecodeError, Format, Message, MessageType, Money, NotificationType,
    OrderState, Timestamp,
};
use crate::model::{
    Order, Payment, Reference, ReturnInfo, ReturnShipmentState, ShipmentState, TaxedPrice,
};

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
            #[serde(borrow)]
            return_info: Option<&'a RawValue>,
            return_item_id: Option<String>,
            #[serde(borrow)]
            return_shipment_state: Option<Cow<'a, str>>,
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
            return_info: self.return_info,
            return_item_id: self.return_item_id,
            return_shipment_state: self.return_shipment_state,
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
            MessageType::OrderCreated
            | MessageType::OrderCreatedFromRecurringOrder
            | MessageType::OrderImported => Body::OrderCreated(match embedded.order {
                Some(o) => o,
                None => Box::new(field("order", raw.order, &kind)?),
            }),
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
            MessageType::OrderEditApplied => edit_applied_body(&kind, raw.result)?,
            MessageType::ReturnInfoAdded
            | MessageType::ReturnInfoSet
            | MessageType::OrderReturnShipmentStateChanged => return_body(
                &kind,
                raw.return_info,
                raw.return_item_id,
                raw.return_shipment_state.as_deref(),
            )?,
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

/// The body of `OrderEditApplied`: the totals of `result.excerptAfterEdit`.
fn edit_applied_body(kind: &MessageType, result: Option<&RawValue>) -> Result<Body, DecodeError> {
    let result: RawEditResult = field("result", result, kind)?;
    let after = result
        .excerpt_after_edit
        .ok_or_else(|| DecodeError::missing("result.excerptAfterEdit", kind))?;
    Ok(Body::OrderEditApplied {
        total_price: after.total_price,
        taxed_price: after.taxed_price,
    })
}

/// The body of the return messages: `ReturnInfoAdded`, `ReturnInfoSet` (its `returnInfo` may be
/// absent or `null`: no returns) and `OrderReturnShipmentStateChanged`.
fn return_body(
    kind: &MessageType,
    return_info: Option<&RawValue>,
    return_item_id: Option<String>,
    return_shipment_state: Option<&str>,
) -> Result<Body, DecodeError> {
    Ok(match kind {
        MessageType::ReturnInfoAdded => {
            Body::ReturnInfoAdded(field("returnInfo", return_info, kind)?)
        }
        MessageType::ReturnInfoSet => Body::ReturnInfoSet(match return_info {
            Some(v) => serde_json::from_str::<Option<Vec<ReturnInfo>>>(v.get())
                .map_err(|e| DecodeError::in_field("returnInfo", e))?
                .unwrap_or_default(),
            None => Vec::new(),
        }),
        _ => Body::ReturnShipmentStateChanged {
            return_item_id: return_item_id
                .ok_or_else(|| DecodeError::missing("returnItemId", kind))?,
            state: ReturnShipmentState::parse(
                return_shipment_state
                    .ok_or_else(|| DecodeError::missing("returnShipmentState", kind))?,
            ),
        },
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
#[path = "tests.rs"]
mod tests;
