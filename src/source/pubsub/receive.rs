//! Receiving: one streaming pull per stream task (reopened with backoff after a permanent error,
//! drained on stop) and received messages turned into deliveries.

use super::settle::PubsubAcker;
use super::{
    CLOSE_TIMEOUT, DRAIN_IDLE, DRAIN_MAX, MAX_LEASE, RESUBSCRIBE_BACKOFF, STREAM_HEALTHY_AFTER,
    Shared, StreamOptions,
};
use crate::source::{Delivery, SourceError};
use crate::telemetry::SourceState;
use google_cloud_pubsub::client::Subscriber;
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::subscriber::handler::Handler;
use google_cloud_pubsub::subscriber::{MessageStream, ShutdownBehavior};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// One streaming pull: reopened with backoff after a permanent error, shut down (acks flushed,
/// every other leased message nacked) when `stop` is cancelled.
pub(super) async fn run_stream(
    index: usize,
    subscriber: Subscriber,
    options: StreamOptions,
    tx: mpsc::Sender<Result<Delivery, SourceError>>,
    stop: CancellationToken,
    shared: Arc<Shared>,
) {
    let mut failures: u32 = 0;
    loop {
        let mut stream = subscriber
            .subscribe(options.subscription.clone())
            .set_max_outstanding_messages(options.max_outstanding_messages)
            .set_max_outstanding_bytes(options.max_outstanding_bytes)
            .set_max_lease(MAX_LEASE)
            .set_max_lease_extension(options.lease_extension)
            // On shutdown: flush acks, nack everything else still leased so it is redelivered
            // at once instead of after the ack deadline. Shutdown only happens in close(),
            // after the worker settled or abandoned its deliveries.
            .set_shutdown_behavior(ShutdownBehavior::NackImmediately)
            .build();
        let opened = Instant::now();
        let token = stream.shutdown_token();
        let ended = loop {
            // Room first, then the message: a message is only taken from the library's pool
            // (where its lease is managed) when the worker can take it.
            let permit = tokio::select! {
                biased;
                () = stop.cancelled() => break StreamEnd::Stopped,
                p = tx.reserve() => match p {
                    Ok(p) => p,
                    Err(_) => break StreamEnd::Stopped,
                },
            };
            let next = tokio::select! {
                biased;
                () = stop.cancelled() => break StreamEnd::Stopped,
                n = stream.next() => n,
            };
            match next {
                Some(Ok((message, handler))) => {
                    if failures > 0 {
                        SourceState {
                            source: "pubsub",
                            result: Ok(()),
                        }
                        .emit();
                    }
                    failures = 0;
                    permit.send(Ok(delivery(message, handler, &shared)));
                }
                Some(Err(e)) => {
                    // Transient errors are retried inside the library (with backoff); this one
                    // is permanent (not found, permission denied, …) and closed the stream.
                    let detail = format!("streaming pull on {}: {e}", options.subscription);
                    SourceState {
                        source: "pubsub",
                        result: Err(&detail),
                    }
                    .emit();
                    permit.send(Err(SourceError::Receive(detail)));
                    break StreamEnd::Failed;
                }
                // The stream ended without an error (it was shut down): reopen it.
                None => break StreamEnd::Failed,
            }
        };
        if ended == StreamEnd::Stopped {
            let unread = drain_unread(&mut stream).await;
            // Close the gRPC stream *before* the library nacks what it leased: a message nacked
            // while the stream is open is redelivered onto it at once, and lost with it until
            // its ack deadline passes.
            drop(stream);
            drop(unread);
            tokio::time::timeout(CLOSE_TIMEOUT, token.shutdown())
                .await
                .unwrap_or_else(|_| warn!(stream = index, "Pub/Sub stream shutdown timed out"));
            debug!(stream = index, "Pub/Sub stream stopped");
            return;
        }
        drop(stream);
        tokio::time::timeout(CLOSE_TIMEOUT, token.shutdown())
            .await
            .unwrap_or_else(|_| warn!(stream = index, "Pub/Sub stream shutdown timed out"));
        if opened.elapsed() >= STREAM_HEALTHY_AFTER {
            failures = 0;
        }
        failures = failures.saturating_add(1);
        let delay = RESUBSCRIBE_BACKOFF.delay(failures);
        warn!(stream = index, subscription = %options.subscription, retry_in = ?delay, "Pub/Sub stream closed; reopening");
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Why a stream's receive loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StreamEnd {
    /// `stop` was cancelled (close): shut down for good.
    Stopped,
    /// The stream failed permanently or ended on its own: reopen it after a backoff.
    Failed,
}

/// Reads what the server already sent on a stopping stream, until it is quiet for
/// [`DRAIN_IDLE`] (at most [`DRAIN_MAX`]). The library only reads the gRPC stream when asked
/// for a message, so without this, messages on the wire (a nack's immediate redelivery, say)
/// would be dropped with the stream and only come back after their ack deadline. The handlers
/// are returned, not dropped: dropping one nacks it, which would redeliver it onto this stream.
pub(super) async fn drain_unread(stream: &mut MessageStream) -> Vec<Handler> {
    let mut unread = Vec::new();
    let started = tokio::time::Instant::now();
    while started.elapsed() < DRAIN_MAX {
        match tokio::time::timeout(DRAIN_IDLE, stream.next()).await {
            Ok(Some(Ok((_, handler)))) => unread.push(handler),
            _ => break,
        }
    }
    if !unread.is_empty() {
        debug!(
            unread = unread.len(),
            "Pub/Sub messages read while stopping; nacked"
        );
    }
    unread
}

/// Turns a received message into a delivery. The data is moved, not copied; the attributes are
/// kept twice (the delivery's and the acker's, for a dead-letter publish).
pub(super) fn delivery(message: Message, handler: Handler, shared: &Arc<Shared>) -> Delivery {
    let delivery_count = handler
        .delivery_attempt()
        .and_then(|n| u32::try_from(n).ok());
    let attributes: BTreeMap<String, String> = message
        .attributes
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let origin = format!("pubsub:{}", message.message_id);
    let acker = PubsubAcker {
        handler: Some(handler),
        message_id: message.message_id,
        data: message.data.clone(),
        attributes: message.attributes,
        shared: shared.clone(),
    };
    Delivery::new(
        message.data,
        origin,
        delivery_count,
        attributes,
        Box::new(acker),
    )
}
