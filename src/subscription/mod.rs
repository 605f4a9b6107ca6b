//! `payrules subscription`: creates and shows the commercetools Subscription that feeds the
//! worker.
//!
//! The Subscription carries exactly the Message types and Checkout Events the rules read:
//! [`SUBSCRIBED_MESSAGES`] and [`SUBSCRIBED_EVENTS`], the one list. `tests/it/subscription.rs`
//! proves it against the decoder and the engine: every type listed decodes into a body the
//! rules use, every type the decoder knows that the engine acts on is listed, and the list of
//! decoded types is the one in `src/message/mod.rs`.
//!
//! `create` is idempotent: it reads the Subscription by key, creates it when absent, updates
//! what differs (`changeDestination`, `setMessages`, `setEvents`, `setChanges`) with the
//! version it read, and changes nothing when it already matches. `show` prints the live
//! Subscription and what it lacks.

pub(crate) mod api;
pub(crate) mod destination;
pub(crate) mod plan;

pub use destination::{
    AuthMode, Destination, Draft, FormatArg, parse_topic, region_from_queue_url, sqs_policy,
    sqs_queue_arn,
};
pub use plan::{Change, Coverage, coverage, plan_update, render};

use serde_json::{Value, json};

use crate::message::MessageType;

/// The Subscription key used when `--key` is not given.
pub const DEFAULT_KEY: &str = "payrules";

/// The Google service account commercetools publishes to Pub/Sub as.
pub const PUBSUB_PUBLISHER: &str = "subscriptions@commercetools-platform.iam.gserviceaccount.com";

/// The AWS principal commercetools sends to SQS as (authentication mode IAM).
pub const SQS_PRINCIPAL: &str = "arn:aws:iam::362576667341:user/subscriptions";

/// The environment variable holding the SQS access secret (authentication mode Credentials).
pub const SQS_SECRET_ENV: &str = "PAYRULES_SUBSCRIPTION_SQS_ACCESS_SECRET";

/// The Messages the rules read, by `resourceTypeId`. Payment and order messages the engine
/// treats as inert (custom workflow states, the shop's payment state, interface ids,
/// interactions) are left out: they would only cost deliveries.
pub const SUBSCRIBED_MESSAGES: &[(&str, &[MessageType])] = &[
    (
        "payment",
        &[
            MessageType::PaymentCreated,
            MessageType::PaymentTransactionAdded,
            MessageType::PaymentTransactionStateChanged,
        ],
    ),
    (
        "order",
        &[
            MessageType::OrderCreated,
            MessageType::OrderCreatedFromRecurringOrder,
            MessageType::OrderImported,
            MessageType::OrderPaymentAdded,
            MessageType::OrderStateChanged,
            MessageType::OrderShipmentStateChanged,
            MessageType::OrderEditApplied,
            // refund_on_return reads the returns.
            MessageType::ReturnInfoAdded,
            MessageType::ReturnInfoSet,
            MessageType::OrderReturnShipmentStateChanged,
        ],
    ),
];

/// The Checkout Events the rules read, by `resourceTypeId`.
pub const SUBSCRIBED_EVENTS: &[(&str, &[MessageType])] = &[(
    "checkout",
    &[
        MessageType::CheckoutOrderCreationFailed,
        MessageType::CheckoutPaymentAuthorized,
        MessageType::CheckoutPaymentCharged,
        MessageType::CheckoutPaymentCancelAuthorizationFailed,
    ],
)];

/// `MessageSubscription[]` / `EventSubscription[]` for a list.
fn subscriptions_json(list: &[(&str, &[MessageType])]) -> Value {
    Value::Array(
        list.iter()
            .map(|(rt, types)| {
                json!({
                    "resourceTypeId": rt,
                    "types": types.iter().map(MessageType::as_str).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

/// The `messages` of the Subscription.
pub fn messages_json() -> Value {
    subscriptions_json(SUBSCRIBED_MESSAGES)
}

/// The `events` of the Subscription.
pub fn events_json() -> Value {
    subscriptions_json(SUBSCRIBED_EVENTS)
}

/// A key commercetools accepts: 2–256 characters of `A-Za-z0-9_-`.
///
/// # Errors
/// Why it is not.
pub fn check_key(key: &str) -> Result<(), String> {
    if (2..=256).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(format!(
            "--key {key:?} is not a Subscription key (2 to 256 characters of A-Z, a-z, 0-9, - and _)"
        ))
    }
}

#[cfg(test)]
mod tests;
