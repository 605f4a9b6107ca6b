//! AWS SQS: long-poll receivers, batched deletes, visibility heartbeats.
//!
//! # How it works
//! [`SqsSource::connect`] builds an `aws-sdk-sqs` client from the standard AWS configuration
//! chain (`AWS_REGION`, `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_SQS`, credentials from the
//! environment, profile, web identity or instance role) and checks the queue once. Then
//! `pollers` tasks long-poll `ReceiveMessage` (20 s wait, up to 10 messages, the configured
//! visibility timeout, `ApproximateReceiveCount`, every message attribute). Each poller first
//! reserves room for a whole batch in a bounded channel, so when the worker stops taking
//! deliveries the channel fills and the pollers stop receiving: nothing is pulled that cannot be
//! worked on soon.
//!
//! # Visibility
//! Every received message is held in a registry whose one renewer task extends its visibility
//! (`ChangeMessageVisibilityBatch`) at about half the timeout, from receipt until it is settled
//! or its delivery is dropped. A dropped delivery
//! stops renewing, so the message comes back once its timeout runs out — what a crash looks
//! like. On [`Source::close`], messages received but never handed out are made visible again at
//! once.
//!
//! # Settling
//! - **ack**: `DeleteMessageBatch`, batched by a delete task (≤ 10 per call, entry ids per
//!   call, receipt handles deduplicated); entries that failed on the server's side are retried
//!   once, the rest are reported to the caller and logged.
//! - **nack(retry_after)**: `ChangeMessageVisibility(retry_after)` (at most 12 hours).
//! - **park(reason)**: with `dead_letter_queue_url`, `SendMessage` there (same body, the message
//!   attributes plus `payrules_park_reason`), then delete. Without it, the message is made
//!   visible again after a short delay so its receive count grows until the queue's redrive
//!   policy moves it to the queue's dead-letter queue.
//!
//! Errors are classified ([`ErrorClass`]): throttling, 5xx and network trouble are retried with
//! a short backoff; configuration problems (unknown queue, access denied, bad credentials) with
//! a long one, logged as errors; at start they fail [`SqsSource::connect`].
//!
//! # Files
//! This file builds the source from its settings and is the [`Source`] glue; `receive` (pollers,
//! backpressure), `renew` (the visibility renewer), `settle` (delete, change-visibility,
//! dead-letter; read it beside Pub/Sub's `settle`) and `errors` (classification) do the work.

mod errors;
mod receive;
mod renew;
mod settle;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName};
use bytes::Bytes;
use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{Delivery, Source, SourceError};
pub use errors::ErrorClass;
use errors::describe;
use receive::poll;
use renew::{Heartbeat, Leases, renew_leases, reset_visibility};
use settle::run_deleter;

/// The message attribute that carries the park reason on the dead-letter queue.
pub const PARK_REASON_ATTRIBUTE: &str = "payrules_park_reason";

/// The SQS source, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsSettings {
    /// The queue URL.
    pub queue_url: String,
    /// Concurrent long-poll receivers (≥ 1).
    pub pollers: usize,
    /// Visibility timeout given to received messages and renewed while they are worked on.
    pub visibility_timeout: Duration,
    /// Where poison messages go, if configured.
    pub dead_letter_queue_url: Option<String>,
}

/// SQS batch limit (ReceiveMessage, DeleteMessageBatch, ChangeMessageVisibilityBatch).
const MAX_BATCH: usize = 10;
/// The longest long poll SQS allows.
const WAIT_TIME_SECONDS: i32 = 20;
/// The longest visibility timeout SQS allows (12 hours).
const MAX_VISIBILITY_SECONDS: u64 = 43_200;
/// SQS allows 10 message attributes per message; one is the park reason.
const MAX_MESSAGE_ATTRIBUTES: usize = 10;
/// A park reason longer than this is cut (it is diagnostics, not data).
const MAX_REASON_BYTES: usize = 1024;
/// Delete calls in flight at once; more acks wait and go out in fuller batches.
const MAX_DELETES_IN_FLIGHT: usize = 4;
/// Renewal calls in flight at once.
const MAX_RENEWALS_IN_FLIGHT: usize = 4;
/// How long an ack waits for others to share its `DeleteMessageBatch` call. Messages are
/// acked one by one as they finish; without the wait most calls would carry one or two
/// entries, and each call costs the broker (and the SDK: signing, a request) as much as a
/// full one. A few milliseconds later deletion changes nothing but the bill.
const DELETE_LINGER: Duration = Duration::from_millis(10);
/// Pause before the one retry of a whole delete call that failed transiently.
const DELETE_RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Parking without a dead-letter queue, on a queue with a redrive policy: visible again after
/// this, so the next receive counts towards `maxReceiveCount`.
const PARK_DELAY_WITH_REDRIVE: Duration = Duration::from_secs(1);
/// Parking without a dead-letter queue or a (known) redrive policy: the message can only come
/// back; this keeps a poison message from spinning.
const PARK_DELAY_WITHOUT_REDRIVE: Duration = Duration::from_secs(60);
/// On close, after making messages visible again, how long to wait for a long poll still in
/// flight to take them back (it answers at once when there is something to take).
const CLOSE_ROUND: Duration = Duration::from_secs(2);
/// How long close waits for pollers and the delete task.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);
/// The shortest heartbeat period.
const MIN_HEARTBEAT: Duration = Duration::from_millis(500);

/// A [`Source`] over an SQS queue.
pub struct SqsSource {
    /// Received messages (or receive errors) from the pollers. Bounded at a batch per poller
    /// plus one, and pollers reserve a whole batch before receiving: a full channel stops them.
    rx: mpsc::Receiver<Result<Received, SourceError>>,
    /// Tells the pollers to start no new receive.
    stop: CancellationToken,
    /// Tells the pollers to abandon a receive in flight (close, once nothing of ours could be
    /// handed to it).
    abandon: CancellationToken,
    /// The poller tasks, joined on close.
    pollers: Vec<JoinHandle<()>>,
    /// The delete task, flushed on close.
    deleter: Option<JoinHandle<()>>,
    /// Tells the delete task to flush what is queued and end.
    closing: CancellationToken,
    /// What ackers, pollers and heartbeats need.
    shared: Arc<Shared>,
    /// `close` ran: later calls do nothing.
    closed: bool,
}

/// State shared by the source, its tasks and every acker.
struct Shared {
    /// The SQS client (cheap to clone; clones share connections).
    client: Client,
    /// The queue.
    queue_url: String,
    /// Given to received messages and renewed by the heartbeats, in seconds (1..=43200).
    visibility_seconds: i32,
    /// Where parked messages are sent, if configured.
    dead_letter_queue_url: Option<String>,
    /// How long a parked message stays invisible when there is no dead-letter queue URL:
    /// short if the queue has a redrive policy, long otherwise.
    park_delay: Duration,
    /// Acks for the delete task.
    deletes: mpsc::UnboundedSender<DeleteRequest>,
    /// The messages held, renewed by [`renew_leases`].
    leases: Leases,
}

/// A message received and not yet handed out.
struct Received {
    /// The SQS message id (stable across receives).
    message_id: String,
    /// This receive's handle: what delete and visibility changes name.
    receipt_handle: String,
    /// The body.
    body: Bytes,
    /// `ApproximateReceiveCount`.
    delivery_count: Option<u32>,
    /// String and Number message attributes, for the delivery.
    attributes: BTreeMap<String, String>,
    /// The message attributes as received, resent with the body when parked.
    raw_attributes: HashMap<String, MessageAttributeValue>,
    /// Renews the visibility from receipt on.
    heartbeat: Heartbeat,
}

/// One ack for the delete task.
struct DeleteRequest {
    /// The receipt handle to delete.
    receipt_handle: String,
    /// Where the outcome goes: `Err` carries SQS's code and message.
    done: oneshot::Sender<Result<(), String>>,
}

impl SqsSource {
    /// Connects with the standard AWS configuration chain.
    ///
    /// # Errors
    /// [`SourceError::Connect`] when SQS says the queue or the dead-letter queue does not
    /// exist or the credentials are refused. Network trouble at start is only logged: the
    /// pollers retry with backoff.
    pub async fn connect(settings: &SqsSettings) -> Result<Self, SourceError> {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await;
        Self::with_client(Client::new(&config), settings).await
    }

    /// Uses `client` (tests, or a custom configuration). Must be called within a tokio runtime.
    ///
    /// # Errors
    /// See [`SqsSource::connect`].
    pub async fn with_client(client: Client, settings: &SqsSettings) -> Result<Self, SourceError> {
        let queue_url = settings.queue_url.clone();
        let redrive = queue_redrive_policy(&client, &queue_url).await?;
        if let Some(dlq) = &settings.dead_letter_queue_url {
            check_queue(&client, dlq).await?;
        }
        let park_delay = match (&settings.dead_letter_queue_url, redrive) {
            (Some(_), _) => PARK_DELAY_WITH_REDRIVE,
            (None, Some(true)) => PARK_DELAY_WITH_REDRIVE,
            (None, Some(false)) => {
                error!(queue = %queue_url, "the queue has no redrive policy and no dead-letter queue URL is configured: poison messages will keep coming back; set sqs.dead_letter_queue_url or a RedrivePolicy");
                PARK_DELAY_WITHOUT_REDRIVE
            }
            (None, None) => PARK_DELAY_WITHOUT_REDRIVE,
        };
        let visibility_seconds = i32::try_from(
            settings
                .visibility_timeout
                .as_secs()
                .clamp(1, MAX_VISIBILITY_SECONDS),
        )
        .unwrap_or(30);
        let (delete_tx, delete_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            client: client.clone(),
            queue_url: queue_url.clone(),
            visibility_seconds,
            dead_letter_queue_url: settings.dead_letter_queue_url.clone(),
            park_delay,
            deletes: delete_tx,
            leases: Leases::default(),
        });
        tokio::spawn(renew_leases(Arc::downgrade(&shared), visibility_seconds));
        let closing = CancellationToken::new();
        let deleter = tokio::spawn(run_deleter(
            client,
            queue_url.clone(),
            delete_rx,
            closing.clone(),
        ));
        let pollers = settings.pollers.max(1);
        // A batch per poller plus one: a poller can receive its next batch while the previous
        // one is still being taken, but no further.
        let (tx, rx) = mpsc::channel(MAX_BATCH * (pollers + 1));
        let stop = CancellationToken::new();
        let abandon = CancellationToken::new();
        let pollers = (0..pollers)
            .map(|index| {
                tokio::spawn(poll(
                    index,
                    shared.clone(),
                    tx.clone(),
                    stop.clone(),
                    abandon.clone(),
                ))
            })
            .collect();
        info!(
            queue = %queue_url,
            pollers = settings.pollers.max(1),
            visibility_timeout_secs = visibility_seconds,
            dead_letter_queue = settings.dead_letter_queue_url.as_deref().unwrap_or("-"),
            redrive_policy = ?redrive,
            "SQS source started"
        );
        Ok(Self {
            rx,
            stop,
            abandon,
            pollers,
            deleter: Some(deleter),
            closing,
            shared,
            closed: false,
        })
    }
}

/// Whether the queue has a redrive policy (`None`: could not tell). Fails when the queue does
/// not exist or the credentials are refused.
async fn queue_redrive_policy(
    client: &Client,
    queue_url: &str,
) -> Result<Option<bool>, SourceError> {
    let answer = client
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .boxed()
        .await;
    match answer {
        Ok(out) => {
            Ok(Some(out.attributes().is_some_and(|a| {
                a.contains_key(&QueueAttributeName::RedrivePolicy)
            })))
        }
        Err(e) => startup_error(queue_url, &e).map(|()| None),
    }
}

/// `check-config --connect`: the queue (and the dead-letter queue) exist and can be read.
///
/// # Errors
/// What the broker said, for the queue it said it about.
pub async fn check_queues(settings: &SqsSettings) -> Result<String, SourceError> {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let client = Client::new(&config);
    let mut checked = vec![settings.queue_url.as_str()];
    checked.extend(settings.dead_letter_queue_url.as_deref());
    for url in &checked {
        client
            .get_queue_attributes()
            .queue_url(*url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| SourceError::Connect(format!("SQS queue {url}: {}", describe(&e))))?;
    }
    Ok(format!("queues readable: {}", checked.join(", ")))
}

/// Fails when the queue does not exist or the credentials are refused.
async fn check_queue(client: &Client, queue_url: &str) -> Result<(), SourceError> {
    let answer = client
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .boxed()
        .await;
    match answer {
        Ok(_) => Ok(()),
        Err(e) => startup_error(queue_url, &e),
    }
}

/// A start-up check failed: fatal when it says the configuration is wrong, else logged.
fn startup_error<E>(queue_url: &str, e: &SdkError<E>) -> Result<(), SourceError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let class = ErrorClass::of_sdk(e);
    let code = e.code().unwrap_or("");
    // Access denied to GetQueueAttributes alone is no reason not to start: receiving may be
    // allowed.
    let fatal = class == ErrorClass::Config && !code.starts_with("AccessDenied");
    if fatal {
        Err(SourceError::Connect(format!(
            "SQS queue {queue_url}: {}",
            describe(e)
        )))
    } else {
        warn!(queue = %queue_url, error = %describe(e), class = ?class, "cannot check the SQS queue; starting anyway");
        Ok(())
    }
}

#[async_trait]
impl Source for SqsSource {
    fn name(&self) -> &'static str {
        "sqs"
    }

    async fn next(&mut self) -> Result<Option<Delivery>, SourceError> {
        // Cancel-safe: `recv` is, and nothing after it awaits.
        match self.rx.recv().await {
            Some(Ok(received)) => Ok(Some(received.into_delivery(&self.shared))),
            Some(Err(e)) => Err(e),
            None => Ok(None),
        }
    }

    async fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let returned = self.return_buffer().await;
        // Flush pending deletes.
        self.closing.cancel();
        if let Some(deleter) = self.deleter.take()
            && tokio::time::timeout(CLOSE_TIMEOUT, deleter).await.is_err()
        {
            warn!("SQS deletes were not flushed in time; those messages will be redelivered");
        }
        info!(returned, "SQS source closed");
    }
}

impl SqsSource {
    /// Stops the pollers and makes every message received but never handed out visible again;
    /// returns how many were.
    ///
    /// A long poll still waiting when it is abandoned stays registered at SQS until its wait
    /// ends, and would take a message made visible meanwhile — for nobody, so it would come back
    /// only after its visibility timeout. So the pollers are not abandoned while we hold
    /// messages: those are made visible first, an in-flight poll then takes them back at once
    /// and ends (no new receive starts), and this repeats until no poll is in flight. Only polls
    /// waiting on an empty queue, when we hold nothing, are abandoned.
    async fn return_buffer(&mut self) -> usize {
        self.stop.cancel();
        let mut pollers = std::mem::take(&mut self.pollers);
        let deadline = tokio::time::Instant::now() + CLOSE_TIMEOUT;
        let mut held: Vec<Received> = Vec::new();
        let mut returned = std::collections::HashSet::new();
        loop {
            // Finished first, then drained: a finished poller's messages are already queued.
            pollers.retain(|p| !p.is_finished());
            while let Ok(item) = self.rx.try_recv() {
                held.extend(item.ok());
            }
            if pollers.is_empty() || tokio::time::Instant::now() > deadline {
                break;
            }
            if held.is_empty() {
                self.abandon.cancel();
                let _ = tokio::time::timeout(
                    CLOSE_TIMEOUT,
                    futures::future::join_all(pollers.drain(..)),
                )
                .await;
                continue;
            }
            let mut handles = Vec::with_capacity(held.len());
            for received in held.drain(..) {
                received.heartbeat.stop().await;
                returned.insert(received.message_id);
                handles.push(received.receipt_handle);
            }
            reset_visibility(&self.shared, handles).await;
            if let Ok(Some(Ok(received))) = tokio::time::timeout(CLOSE_ROUND, self.rx.recv()).await
            {
                held.push(received);
            }
        }
        self.abandon.cancel();
        self.rx.close();
        while let Ok(item) = self.rx.try_recv() {
            held.extend(item.ok());
        }
        let mut handles = Vec::with_capacity(held.len());
        for received in held {
            received.heartbeat.stop().await;
            returned.insert(received.message_id);
            handles.push(received.receipt_handle);
        }
        reset_visibility(&self.shared, handles).await;
        if !pollers.is_empty() {
            warn!("SQS pollers did not stop in time");
        }
        returned.len()
    }
}

impl Drop for SqsSource {
    fn drop(&mut self) {
        self.stop.cancel();
        self.abandon.cancel();
        self.closing.cancel();
    }
}
