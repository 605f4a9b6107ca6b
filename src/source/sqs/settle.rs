//! Settlement: ack = batched DeleteMessageBatch, nack = ChangeMessageVisibility, park = dead-letter
//! SendMessage then delete (or a delayed return for the queue's redrive policy).

use super::errors::{ErrorClass, describe};
use super::renew::Heartbeat;
use super::{
    DELETE_LINGER, DELETE_RETRY_PAUSE, DeleteRequest, MAX_BATCH, MAX_DELETES_IN_FLIGHT,
    MAX_MESSAGE_ATTRIBUTES, MAX_REASON_BYTES, MAX_VISIBILITY_SECONDS, PARK_REASON_ATTRIBUTE,
    Shared,
};
use crate::source::{AckError, Acker, truncate};
use crate::telemetry::{BrokerOperation, BrokerOperationFailed};
use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::operation::delete_message_batch::DeleteMessageBatchOutput;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageAttributeValue};
use bytes::Bytes;
use futures::FutureExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Batches acks into `DeleteMessageBatch` calls until `closing`, then flushes.
pub(super) async fn run_deleter(
    client: Client,
    queue_url: String,
    mut rx: mpsc::UnboundedReceiver<DeleteRequest>,
    closing: CancellationToken,
) {
    let mut in_flight = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            request = rx.recv(), if in_flight.len() < MAX_DELETES_IN_FLIGHT => match request {
                Some(first) => {
                    let batch = gather(first, &mut rx, DELETE_LINGER).await;
                    in_flight.spawn(delete_batch(client.clone(), queue_url.clone(), batch));
                }
                None => break,
            },
            () = closing.cancelled() => break,
        }
    }
    rx.close();
    while let Ok(first) = rx.try_recv() {
        let batch = gather(first, &mut rx, Duration::ZERO).await;
        in_flight.spawn(delete_batch(client.clone(), queue_url.clone(), batch));
    }
    while in_flight.join_next().await.is_some() {}
}

/// `first` and whatever else arrives within `linger`, up to a batch.
pub(super) async fn gather(
    first: DeleteRequest,
    rx: &mut mpsc::UnboundedReceiver<DeleteRequest>,
    linger: Duration,
) -> Vec<DeleteRequest> {
    let deadline = tokio::time::Instant::now() + linger;
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(r) => batch.push(r),
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(r)) => batch.push(r),
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
    batch
}

/// One receipt handle of a delete batch and everyone waiting for it.
pub(super) struct DeleteEntry {
    /// The receipt handle.
    receipt_handle: String,
    /// The waiters (more than one only if the same handle was acked twice).
    waiters: Vec<oneshot::Sender<Result<(), String>>>,
    /// The outcome, once known.
    outcome: Option<Result<(), String>>,
}

/// Deletes one batch: entry ids are positions in this call (not message ids), receipt handles
/// are deduplicated, server-side failures are retried once.
pub(super) async fn delete_batch(client: Client, queue_url: String, batch: Vec<DeleteRequest>) {
    let mut entries = deduplicated(batch);
    for attempt in 0..2 {
        let pending: Vec<usize> = (0..entries.len())
            .filter(|&i| entries[i].outcome.is_none())
            .collect();
        if pending.is_empty() {
            break;
        }
        let last = attempt == 1;
        let request: Vec<DeleteMessageBatchRequestEntry> = pending
            .iter()
            .filter_map(|&i| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(&entries[i].receipt_handle)
                    .build()
                    .ok()
            })
            .collect();
        let answer = client
            .delete_message_batch()
            .queue_url(&queue_url)
            .set_entries(Some(request))
            .send()
            .boxed()
            .await;
        match answer {
            Ok(out) => record_answer(&mut entries, pending, &out, last),
            Err(e) => {
                let class = ErrorClass::of_sdk(&e);
                if last || class != ErrorClass::Transient {
                    let detail = describe(&e);
                    for i in pending {
                        entries[i].outcome = Some(Err(detail.clone()));
                    }
                } else {
                    tokio::time::sleep(DELETE_RETRY_PAUSE).await;
                }
            }
        }
    }
    report_outcomes(entries);
}

/// One entry per receipt handle, with every request's waiter.
fn deduplicated(batch: Vec<DeleteRequest>) -> Vec<DeleteEntry> {
    let mut entries: Vec<DeleteEntry> = Vec::with_capacity(batch.len());
    for request in batch {
        match entries
            .iter_mut()
            .find(|e| e.receipt_handle == request.receipt_handle)
        {
            Some(entry) => entry.waiters.push(request.done),
            None => entries.push(DeleteEntry {
                receipt_handle: request.receipt_handle,
                waiters: vec![request.done],
                outcome: None,
            }),
        }
    }
    entries
}

/// Records what `DeleteMessageBatch` answered for the `pending` entries: the successes; the
/// failures that would fail again (sender faults), or on the `last` attempt every failure and
/// every entry it did not report.
fn record_answer(
    entries: &mut [DeleteEntry],
    pending: Vec<usize>,
    out: &DeleteMessageBatchOutput,
    last: bool,
) {
    for ok in out.successful() {
        if let Some(entry) = ok
            .id()
            .parse::<usize>()
            .ok()
            .and_then(|i| entries.get_mut(i))
        {
            entry.outcome = Some(Ok(()));
        }
    }
    for failed in out.failed() {
        let Some(entry) = failed
            .id()
            .parse::<usize>()
            .ok()
            .and_then(|i| entries.get_mut(i))
        else {
            continue;
        };
        // A sender fault (an expired receipt handle, say) fails again: report it.
        if last || failed.sender_fault() {
            entry.outcome = Some(Err(format!(
                "{}: {}",
                failed.code(),
                failed.message().unwrap_or("")
            )));
        }
    }
    if last {
        for i in pending {
            entries[i]
                .outcome
                .get_or_insert_with(|| Err("DeleteMessageBatch did not report this entry".into()));
        }
    }
}

/// Tells each waiter its entry's outcome, and reports the failures once for the batch.
fn report_outcomes(entries: Vec<DeleteEntry>) {
    let mut failed = 0usize;
    let mut first_error: Option<String> = None;
    for entry in entries {
        let outcome = entry
            .outcome
            .unwrap_or_else(|| Err("not deleted".to_string()));
        if let Err(detail) = &outcome {
            failed += 1;
            debug!(error = %detail, "SQS delete failed");
            first_error.get_or_insert_with(|| detail.clone());
        }
        for waiter in entry.waiters {
            let _ = waiter.send(outcome.clone());
        }
    }
    if let Some(error) = first_error {
        BrokerOperationFailed {
            source: "sqs",
            operation: BrokerOperation::Delete,
            messages: failed,
            error: &error,
            consequence: "SQS deletes failed; those messages will be redelivered and deduplicated by the ledger",
        }
        .emit();
    }
}

/// Settles one SQS message.
pub(super) struct SqsAcker {
    /// Client, queue, delete task.
    pub(super) shared: Arc<Shared>,
    /// The SQS message id, for logs.
    pub(super) message_id: String,
    /// This receive's handle.
    pub(super) receipt_handle: String,
    /// The body, resent as is when parked to a dead-letter queue.
    pub(super) body: Bytes,
    /// The message attributes as received, resent with the body.
    pub(super) attributes: HashMap<String, MessageAttributeValue>,
    /// Renews the visibility while the message is worked on; `None` once stopped.
    pub(super) heartbeat: Option<Heartbeat>,
    /// Deleted, nacked or parked: further settling is refused.
    pub(super) settled: bool,
}

pub(super) fn settled(op: &'static str) -> AckError {
    AckError {
        op,
        detail: "the delivery was already settled".into(),
    }
}

impl SqsAcker {
    /// Deletes through the delete task and waits for the outcome.
    async fn delete(&mut self, op: &'static str) -> Result<(), AckError> {
        let (done, outcome) = oneshot::channel();
        let closed = || AckError {
            op,
            detail: "the SQS source is closed".into(),
        };
        self.shared
            .deletes
            .send(DeleteRequest {
                receipt_handle: self.receipt_handle.clone(),
                done,
            })
            .map_err(|_| closed())?;
        match outcome.await {
            Ok(Ok(())) => {
                self.settled = true;
                // A renewal of a deleted message only fails; no need to wait for it.
                drop(self.heartbeat.take());
                Ok(())
            }
            Ok(Err(detail)) => Err(AckError { op, detail }),
            Err(_) => Err(closed()),
        }
    }

    /// Stops the heartbeat and sets the visibility to `delay`; on failure the heartbeat is
    /// restarted (the delivery is handed back still leased).
    async fn set_visibility(&mut self, op: &'static str, delay: Duration) -> Result<(), AckError> {
        if let Some(heartbeat) = self.heartbeat.take() {
            heartbeat.stop().await;
        }
        let seconds = delay
            .as_secs()
            .saturating_add(u64::from(delay.subsec_nanos() > 0))
            .min(MAX_VISIBILITY_SECONDS);
        let answer = self
            .shared
            .client
            .change_message_visibility()
            .queue_url(&self.shared.queue_url)
            .receipt_handle(&self.receipt_handle)
            .visibility_timeout(i32::try_from(seconds).unwrap_or(i32::MAX))
            .send()
            .boxed()
            .await;
        match answer {
            Ok(_) => {
                self.settled = true;
                Ok(())
            }
            Err(e) => {
                if ErrorClass::of_sdk(&e) != ErrorClass::ReceiptGone {
                    self.heartbeat = Some(Heartbeat::start(
                        self.shared.clone(),
                        self.receipt_handle.clone(),
                    ));
                }
                Err(AckError {
                    op,
                    detail: describe(&e),
                })
            }
        }
    }

    /// The message attributes for the dead-letter copy: the original ones (at most 9, by
    /// name) plus the reason.
    fn park_attributes(&self, reason: &str) -> HashMap<String, MessageAttributeValue> {
        let mut names: Vec<&String> = self
            .attributes
            .keys()
            .filter(|k| k.as_str() != PARK_REASON_ATTRIBUTE)
            .collect();
        names.sort();
        if names.len() > MAX_MESSAGE_ATTRIBUTES - 1 {
            warn!(message_id = %self.message_id, dropped = names.len() - (MAX_MESSAGE_ATTRIBUTES - 1), "the dead-letter copy keeps only 9 of the message attributes");
            names.truncate(MAX_MESSAGE_ATTRIBUTES - 1);
        }
        let mut out: HashMap<String, MessageAttributeValue> = names
            .into_iter()
            .filter_map(|k| self.attributes.get(k).map(|v| (k.clone(), v.clone())))
            .collect();
        if let Ok(value) = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(truncate(reason, MAX_REASON_BYTES))
            .build()
        {
            out.insert(PARK_REASON_ATTRIBUTE.to_string(), value);
        }
        out
    }
}

#[async_trait]
impl Acker for SqsAcker {
    async fn ack(&mut self) -> Result<(), AckError> {
        if self.settled {
            return Err(settled("ack"));
        }
        self.delete("ack").await
    }

    async fn nack(&mut self, retry_after: Duration) -> Result<(), AckError> {
        if self.settled {
            return Err(settled("nack"));
        }
        self.set_visibility("nack", retry_after).await
    }

    async fn park(&mut self, reason: &str) -> Result<(), AckError> {
        if self.settled {
            return Err(settled("park"));
        }
        let Some(dlq) = self.shared.dead_letter_queue_url.clone() else {
            let delay = self.shared.park_delay;
            warn!(message_id = %self.message_id, visible_in = ?delay, "no dead-letter queue URL configured: left to the queue's redrive policy");
            return self.set_visibility("park", delay).await;
        };
        let sent = self
            .shared
            .client
            .send_message()
            .queue_url(&dlq)
            .message_body(String::from_utf8_lossy(&self.body))
            .set_message_attributes(Some(self.park_attributes(reason)))
            .send()
            .boxed()
            .await
            .map_err(|e| AckError {
                op: "park",
                detail: format!("SendMessage to {dlq}: {}", describe(&e)),
            })?;
        info!(message_id = %self.message_id, dead_letter_queue = %dlq, dead_letter_message_id = sent.message_id().unwrap_or("-"), "parked on the dead-letter queue");
        self.delete("park").await.map_err(|e| AckError {
            op: "park",
            detail: format!(
                "sent to {dlq} but the delete failed (a second copy may follow): {}",
                e.detail
            ),
        })
    }

    /// Renewed by the heartbeat already; an explicit extension sets the visibility to `by`
    /// from now (the heartbeat keeps renewing afterwards).
    async fn extend(&mut self, by: Duration) -> Result<(), AckError> {
        if self.settled {
            return Err(settled("extend"));
        }
        let seconds = by.as_secs().clamp(1, MAX_VISIBILITY_SECONDS);
        self.shared
            .client
            .change_message_visibility()
            .queue_url(&self.shared.queue_url)
            .receipt_handle(&self.receipt_handle)
            .visibility_timeout(i32::try_from(seconds).unwrap_or(i32::MAX))
            .send()
            .boxed()
            .await
            .map(|_| ())
            .map_err(|e| AckError {
                op: "extend",
                detail: describe(&e),
            })
    }
}
