//! Receiving: the long-poll pollers (a whole batch of room reserved before each receive, so a full
//! channel is the backpressure) and received messages turned into deliveries.

use super::errors::{ErrorClass, describe};
use super::renew::Heartbeat;
use super::settle::SqsAcker;
use super::{MAX_BATCH, Received, Shared, WAIT_TIME_SECONDS};
use crate::source::{Delivery, SourceError};
use crate::telemetry::SourceState;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use bytes::Bytes;
use futures::FutureExt;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// One long-poll receiver.
pub(super) async fn poll(
    index: usize,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Result<Received, SourceError>>,
    stop: CancellationToken,
    abandon: CancellationToken,
) {
    let mut failures: u32 = 0;
    loop {
        // Room for a whole batch first: a full pipeline stops receiving here.
        let mut permits = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            p = tx.reserve_many(MAX_BATCH) => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let receive = shared
            .client
            .receive_message()
            .queue_url(&shared.queue_url)
            .max_number_of_messages(MAX_BATCH as i32)
            .wait_time_seconds(WAIT_TIME_SECONDS)
            .visibility_timeout(shared.visibility_seconds)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_attribute_names("All")
            .send()
            .boxed();
        // Not raced against `stop`: what a receive in flight brings is handed to close, which
        // makes it visible again (see `SqsSource::return_buffer`).
        let answer = tokio::select! {
            biased;
            a = receive => a,
            () = abandon.cancelled() => return,
        };
        match answer {
            Ok(out) => {
                failures = 0;
                SourceState {
                    source: "sqs",
                    result: Ok(()),
                }
                .emit();
                let messages = out.messages.unwrap_or_default();
                debug!(poller = index, received = messages.len(), "SQS receive");
                for (message, permit) in messages.into_iter().zip(&mut permits) {
                    if let Some(received) = Received::new(message, &shared) {
                        permit.send(Ok(received));
                    }
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let class = ErrorClass::of_sdk(&e);
                let delay = class.backoff(failures);
                let detail = format!("ReceiveMessage on {}: {}", shared.queue_url, describe(&e));
                // Logged once per change of state by the event; each attempt only at debug.
                debug!(poller = index, error = %detail, class = ?class, retry_in = ?delay, "SQS receive failed");
                SourceState {
                    source: "sqs",
                    result: Err(&detail),
                }
                .emit();
                if let Some(permit) = permits.next() {
                    permit.send(Err(SourceError::Receive(detail)));
                }
                drop(permits);
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

impl Received {
    /// `None` (logged) for a message without a receipt handle: it cannot be settled.
    fn new(message: aws_sdk_sqs::types::Message, shared: &Arc<Shared>) -> Option<Self> {
        let message_id = message.message_id.unwrap_or_default();
        let Some(receipt_handle) = message.receipt_handle else {
            warn!(message_id = %message_id, "SQS message without a receipt handle skipped");
            return None;
        };
        let delivery_count = message
            .attributes
            .as_ref()
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .and_then(|n| n.parse::<u32>().ok());
        let raw_attributes = message.message_attributes.unwrap_or_default();
        let attributes = raw_attributes
            .iter()
            .filter_map(|(k, v)| v.string_value().map(|s| (k.clone(), s.to_string())))
            .collect();
        let heartbeat = Heartbeat::start(shared.clone(), receipt_handle.clone());
        Some(Self {
            message_id,
            receipt_handle,
            body: Bytes::from(message.body.unwrap_or_default()),
            delivery_count,
            attributes,
            raw_attributes,
            heartbeat,
        })
    }

    pub(super) fn into_delivery(self, shared: &Arc<Shared>) -> Delivery {
        let origin = format!("sqs:{}", self.message_id);
        let acker = SqsAcker {
            shared: shared.clone(),
            message_id: self.message_id,
            receipt_handle: self.receipt_handle,
            body: self.body.clone(),
            attributes: self.raw_attributes,
            heartbeat: Some(self.heartbeat),
            settled: false,
        };
        Delivery::new(
            self.body,
            origin,
            self.delivery_count,
            self.attributes,
            Box::new(acker),
        )
    }
}
