//! Settlement: ack through the handler, nack = held then nacked (Pub/Sub has no per-message delay),
//! park = publish to the dead-letter topic then ack (or a nack for the subscription's dead-letter
//! policy).

use super::{
    DROPPED_NACK_DELAY, MAX_ATTRIBUTE_VALUE_BYTES, MAX_HELD_NACK, MIN_HELD_NACK,
    PARK_REASON_ATTRIBUTE, PARK_RETRY_WITHOUT_POLICY, SOURCE_MESSAGE_ID_ATTRIBUTE,
    SOURCE_SUBSCRIPTION_ATTRIBUTE, Shared, lock,
};
use crate::source::truncate;
use crate::source::{AckError, Acker};
use async_trait::async_trait;
use bytes::Bytes;
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::subscriber::handler::Handler;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, info, warn};

/// Settles one Pub/Sub message.
pub(super) struct PubsubAcker {
    /// The library's handle on the lease; `None` once settled. Dropping it nacks.
    pub(super) handler: Option<Handler>,
    /// The Pub/Sub message id, for logs and the dead-letter attributes.
    pub(super) message_id: String,
    /// The original data, republished as is when parked to a dead-letter topic.
    pub(super) data: Bytes,
    /// The original attributes, republished with the data.
    pub(super) attributes: HashMap<String, String>,
    /// The dead-letter publisher and the held-nack registry.
    pub(super) shared: Arc<Shared>,
}

pub(super) fn settled(op: &'static str) -> AckError {
    AckError {
        op,
        detail: "the delivery was already settled".into(),
    }
}

/// Acks, confirmed where the subscription offers it (exactly-once delivery).
pub(super) async fn ack_handler(handler: Handler) -> Result<(), AckError> {
    match handler {
        Handler::ExactlyOnce(h) => h.confirmed_ack().await.map_err(|e| AckError {
            op: "ack",
            detail: e.to_string(),
        }),
        other => {
            other.ack();
            Ok(())
        }
    }
}

impl PubsubAcker {
    /// Nacks `handler` after `delay` (see [`defer_nack`]).
    fn nack_after(&self, handler: Handler, delay: Duration) {
        let delay = if delay > MAX_HELD_NACK {
            warn!(message_id = %self.message_id, requested = ?delay, held = ?MAX_HELD_NACK, "nack delay shortened to stay within the lease");
            MAX_HELD_NACK
        } else {
            delay
        };
        defer_nack(&self.shared, handler, delay);
    }
}

/// Nacks `handler` after `delay`, holding it meanwhile (the library keeps extending its
/// lease). Once the source is closing, the handler goes to `returned` instead: the streams'
/// shutdown nacks it after the gRPC streams are closed.
pub(super) fn defer_nack(shared: &Shared, handler: Handler, delay: Duration) {
    if shared.closing.is_cancelled() {
        lock(&shared.returned).push(handler);
        return;
    }
    if delay < MIN_HELD_NACK || tokio::runtime::Handle::try_current().is_err() {
        handler.nack();
        return;
    }
    let closing = shared.closing.clone();
    let returned = shared.returned.clone();
    let mut held = lock(&shared.held);
    // Reap finished holds so the set does not grow with the run.
    while held.try_join_next().is_some() {}
    held.spawn(async move {
        tokio::select! {
            () = closing.cancelled() => lock(&returned).push(handler),
            () = tokio::time::sleep(delay) => handler.nack(),
        }
    });
}

impl Drop for PubsubAcker {
    /// A delivery dropped unsettled (a cancelled or panicked task, a shutdown deadline) is
    /// not acked. The library would nack its handler at once; instead it is nacked after
    /// [`DROPPED_NACK_DELAY`] (no hot loop after a panic), or by the shutdown once the source
    /// closes, so it comes back promptly either way.
    fn drop(&mut self) {
        if let Some(handler) = self.handler.take() {
            defer_nack(&self.shared, handler, DROPPED_NACK_DELAY);
        }
    }
}

#[async_trait]
impl Acker for PubsubAcker {
    async fn ack(&mut self) -> Result<(), AckError> {
        let handler = self.handler.take().ok_or_else(|| settled("ack"))?;
        ack_handler(handler).await
    }

    /// Pub/Sub's nack means "redeliver now" (or after the subscription's retry-policy
    /// backoff, which applies to every nack alike). To honour `retry_after` per message, the
    /// handler is **held** for the delay in a small task, and nacked when it ends; meanwhile
    /// the library keeps extending the lease, so the message is neither redelivered early nor
    /// lost. Costs: a held message counts against the stream's flow control
    /// (`max_outstanding_messages`), and delays are capped at 50 minutes (inside the 60-minute
    /// maximum lease). On close, held nacks are sent by the shutdown, after the streams are
    /// closed (see the module docs). Modifying the ack deadline to the
    /// delay instead is not possible with this client (the ack id is private and the lease
    /// loop would extend it again), and a subscription retry policy cannot vary per message;
    /// configure one anyway as a floor for redeliveries after crashes.
    async fn nack(&mut self, retry_after: Duration) -> Result<(), AckError> {
        let handler = self.handler.take().ok_or_else(|| settled("nack"))?;
        self.nack_after(handler, retry_after);
        Ok(())
    }

    async fn park(&mut self, reason: &str) -> Result<(), AckError> {
        if self.handler.is_none() {
            return Err(settled("park"));
        }
        match &self.shared.dead_letter {
            Some(dl) => {
                let mut attributes = self.attributes.clone();
                attributes.insert(
                    PARK_REASON_ATTRIBUTE.to_string(),
                    truncate(reason, MAX_ATTRIBUTE_VALUE_BYTES).to_string(),
                );
                attributes.insert(
                    SOURCE_MESSAGE_ID_ATTRIBUTE.to_string(),
                    self.message_id.clone(),
                );
                attributes.insert(
                    SOURCE_SUBSCRIPTION_ATTRIBUTE.to_string(),
                    truncate(&self.shared.subscription, MAX_ATTRIBUTE_VALUE_BYTES).to_string(),
                );
                let message = Message::new()
                    .set_data(self.data.clone())
                    .set_attributes(attributes);
                let published = dl.publisher.publish(message).await.map_err(|e| AckError {
                    op: "park",
                    detail: format!("publishing to {}: {e}", dl.topic),
                })?;
                info!(message_id = %self.message_id, dead_letter_topic = %dl.topic, dead_letter_message_id = %published, "parked on the dead-letter topic");
                let handler = self.handler.take().ok_or_else(|| settled("park"))?;
                ack_handler(handler).await.map_err(|e| AckError {
                    op: "park",
                    detail: format!(
                        "published to {} but the ack failed (a second copy may follow): {}",
                        dl.topic, e.detail
                    ),
                })
            }
            None => {
                let handler = self.handler.take().ok_or_else(|| settled("park"))?;
                if handler.delivery_attempt().is_some() {
                    // A delivery attempt is only reported with a dead-letter policy: Pub/Sub
                    // moves the message to its dead-letter topic after maxDeliveryAttempts.
                    warn!(message_id = %self.message_id, attempt = ?handler.delivery_attempt(), "no dead-letter topic configured: nacked for the subscription's dead-letter policy");
                    defer_nack(&self.shared, handler, Duration::ZERO);
                } else {
                    error!(message_id = %self.message_id, retry_in = ?PARK_RETRY_WITHOUT_POLICY, "no dead-letter topic configured and the subscription has no dead-letter policy: this poison message will keep coming back; set pubsub.dead_letter_topic or a dead-letter policy");
                    self.nack_after(handler, PARK_RETRY_WITHOUT_POLICY);
                }
                Ok(())
            }
        }
    }
}
