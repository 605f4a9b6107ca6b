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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
    MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::{AckError, Acker, Delivery, Source, SourceError};
use crate::config::SqsSettings;
use crate::retry::Backoff;
use crate::telemetry::SourceState;

/// The message attribute that carries the park reason on the dead-letter queue.
pub const PARK_REASON_ATTRIBUTE: &str = "payrules_park_reason";

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
/// Receive retries after transient trouble: 1 s doubling to 30 s.
const TRANSIENT_BACKOFF: Backoff =
    Backoff::exponential(Duration::from_secs(1), Duration::from_secs(30));
/// Receive retries after a configuration problem: 5 s doubling to 2 min.
const CONFIG_BACKOFF: Backoff =
    Backoff::exponential(Duration::from_secs(5), Duration::from_secs(120));

/// What an SQS error means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Network trouble, a timeout, throttling, a 5xx: retry soon, with backoff.
    Transient,
    /// Configuration or permissions: unknown queue, access denied, bad credentials, KMS key
    /// unusable. Retrying helps only once someone fixes it.
    Config,
    /// The receipt handle no longer names an in-flight message (its visibility ran out, or it
    /// was deleted).
    ReceiptGone,
    /// The request was refused for another reason (an invalid parameter, say).
    Rejected,
}

impl ErrorClass {
    /// Classifies an SQS error code and HTTP status.
    pub fn of(code: Option<&str>, status: Option<u16>) -> Self {
        match code {
            Some(
                "QueueDoesNotExist"
                | "AWS.SimpleQueueService.NonExistentQueue"
                | "AccessDenied"
                | "AccessDeniedException"
                | "InvalidClientTokenId"
                | "SignatureDoesNotMatch"
                | "UnrecognizedClientException"
                | "MissingAuthenticationToken"
                | "IncompleteSignature"
                | "InvalidSecurity"
                | "InvalidAddress"
                | "KmsAccessDenied"
                | "KmsDisabled"
                | "KmsNotFound"
                | "KmsInvalidState"
                | "KmsInvalidKeyUsage"
                | "KmsOptInRequired",
            ) => Self::Config,
            Some(
                "ReceiptHandleIsInvalid"
                | "MessageNotInflight"
                | "AWS.SimpleQueueService.MessageNotInflight",
            ) => Self::ReceiptGone,
            Some(
                "RequestThrottled"
                | "ThrottlingException"
                | "Throttling"
                | "OverLimit"
                | "KmsThrottled"
                | "ServiceUnavailable"
                | "InternalError"
                | "InternalFailure"
                | "RequestTimeout"
                | "RequestExpired"
                | "ExpiredToken",
            ) => Self::Transient,
            _ => match status {
                Some(s) if s == 429 || s >= 500 => Self::Transient,
                Some(_) => Self::Rejected,
                // No answer at all: the request never got through.
                None => Self::Transient,
            },
        }
    }

    /// Classifies an SDK error.
    pub fn of_sdk<E: ProvideErrorMetadata>(err: &SdkError<E>) -> Self {
        match err {
            SdkError::ConstructionFailure(_) => Self::Config,
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => Self::Transient,
            SdkError::ResponseError(_) | SdkError::ServiceError(_) => {
                Self::of(err.code(), err.raw_response().map(|r| r.status().as_u16()))
            }
            _ => Self::Transient,
        }
    }

    /// The pause before attempt `failures + 1`: short for transient trouble, long otherwise.
    fn backoff(self, failures: u32) -> Duration {
        match self {
            Self::Transient => TRANSIENT_BACKOFF,
            _ => CONFIG_BACKOFF,
        }
        .delay(failures)
    }
}

/// An SDK error as one line: the chain of causes, which is where the useful part is.
fn describe<E: std::error::Error + 'static>(err: &SdkError<E>) -> String {
    DisplayErrorContext(err).to_string()
}

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

/// One long-poll receiver.
async fn poll(
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

    fn into_delivery(self, shared: &Arc<Shared>) -> Delivery {
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

/// The messages this source holds (received, not yet settled), whose visibility the renewer
/// task keeps extending. One registry and one task per source, not a task and a timer per
/// message: most messages are settled within milliseconds, long before a first renewal.
#[derive(Default)]
struct Leases {
    /// The held messages by lease id.
    held: Mutex<LeaseMap>,
    /// Woken when a renewal call ends, for [`Heartbeat::stop`] waiting on one.
    renewed: Notify,
}

#[derive(Default)]
struct LeaseMap {
    /// The next lease id.
    next: u64,
    /// Held messages.
    leases: HashMap<u64, Lease>,
}

/// One held message.
struct Lease {
    /// What the renewal names.
    receipt_handle: String,
    /// When its visibility was last set (at receipt, then at each renewal sent).
    renewed_at: Instant,
    /// A renewal naming it is in flight.
    in_flight: bool,
}

impl Leases {
    fn lock(&self) -> MutexGuard<'_, LeaseMap> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One held message's place in [`Leases`]: renewed until stopped or dropped.
struct Heartbeat {
    /// The registry.
    shared: Arc<Shared>,
    /// Which lease.
    id: u64,
}

impl Heartbeat {
    fn start(shared: Arc<Shared>, receipt_handle: String) -> Self {
        let id = {
            let mut held = shared.leases.lock();
            held.next += 1;
            let id = held.next;
            held.leases.insert(
                id,
                Lease {
                    receipt_handle,
                    renewed_at: Instant::now(),
                    in_flight: false,
                },
            );
            id
        };
        Self { shared, id }
    }

    /// Stops renewing and waits for a renewal in flight, so that it never lands after a
    /// nack's visibility change.
    async fn stop(self) {
        let leases = &self.shared.leases;
        loop {
            let renewed = leases.renewed.notified();
            tokio::pin!(renewed);
            // Registered before the check: a call ending in between still wakes us.
            renewed.as_mut().enable();
            {
                let mut held = leases.lock();
                if !held.leases.get(&self.id).is_some_and(|l| l.in_flight) {
                    held.leases.remove(&self.id);
                    return;
                }
            }
            renewed.await;
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.shared.leases.lock().leases.remove(&self.id);
    }
}

/// Renews the visibility of every held message at about half the timeout, in
/// `ChangeMessageVisibilityBatch` calls; ends with the source and its deliveries.
async fn renew_leases(shared: std::sync::Weak<Shared>, visibility_seconds: i32) {
    let timeout = Duration::from_secs(u64::try_from(visibility_seconds).unwrap_or(30));
    let period = (timeout / 2).max(MIN_HEARTBEAT);
    // A lease is renewed at most a tick after it is due: at 5/8 of the timeout at the latest.
    let mut tick = tokio::time::interval(period / 4);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = Instant::now();
        let due: Vec<u64> = shared
            .leases
            .lock()
            .leases
            .iter()
            .filter(|(_, l)| !l.in_flight && now.duration_since(l.renewed_at) >= period)
            .map(|(id, _)| *id)
            .collect();
        futures::stream::iter(due.chunks(MAX_BATCH))
            .for_each_concurrent(MAX_RENEWALS_IN_FLIGHT, |chunk| renew_batch(&shared, chunk))
            .await;
    }
}

/// Renews the leases `ids` still held, in one call.
async fn renew_batch(shared: &Shared, ids: &[u64]) {
    let sent_at = Instant::now();
    let entries: Vec<(u64, ChangeMessageVisibilityBatchRequestEntry)> = {
        let mut held = shared.leases.lock();
        ids.iter()
            .filter_map(|id| {
                let lease = held.leases.get_mut(id)?;
                let entry = ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(id.to_string())
                    .receipt_handle(&lease.receipt_handle)
                    .visibility_timeout(shared.visibility_seconds)
                    .build()
                    .ok()?;
                lease.in_flight = true;
                Some((*id, entry))
            })
            .collect()
    };
    if entries.is_empty() {
        return;
    }
    let (ids, entries): (Vec<u64>, Vec<_>) = entries.into_iter().unzip();
    let answer = change_visibility_batch(shared, entries).await;
    // Leases that can no longer be renewed leave the registry; the rest are renewed, or due
    // again at the next tick.
    let mut gone: Vec<u64> = Vec::new();
    let mut renewed = true;
    match answer {
        Ok(out) => {
            for failed in out.failed() {
                let class = ErrorClass::of(Some(failed.code()), None);
                if class == ErrorClass::Transient && !failed.sender_fault() {
                    continue;
                }
                warn!(
                    code = failed.code(),
                    error = failed.message().unwrap_or(""),
                    "SQS visibility can no longer be renewed; the message may be redelivered while it is worked on"
                );
                gone.extend(failed.id().parse::<u64>().ok());
            }
        }
        Err(e) => match ErrorClass::of_sdk(&e) {
            ErrorClass::Transient => {
                renewed = false;
                warn!(error = %describe(&e), "SQS visibility renewal failed; retrying");
            }
            class => {
                warn!(error = %describe(&e), class = ?class, "SQS visibility can no longer be renewed; the messages may be redelivered while they are worked on");
                gone.clone_from(&ids);
            }
        },
    }
    {
        let mut held = shared.leases.lock();
        for id in &ids {
            if gone.contains(id) {
                held.leases.remove(id);
            } else if let Some(lease) = held.leases.get_mut(id) {
                lease.in_flight = false;
                if renewed {
                    lease.renewed_at = sent_at;
                }
            }
        }
    }
    shared.leases.renewed.notify_waiters();
}

/// One `ChangeMessageVisibilityBatch` call on the source's queue.
async fn change_visibility_batch(
    shared: &Shared,
    entries: Vec<ChangeMessageVisibilityBatchRequestEntry>,
) -> Result<
    aws_sdk_sqs::operation::change_message_visibility_batch::ChangeMessageVisibilityBatchOutput,
    SdkError<
        aws_sdk_sqs::operation::change_message_visibility_batch::ChangeMessageVisibilityBatchError,
    >,
> {
    shared
        .client
        .change_message_visibility_batch()
        .queue_url(&shared.queue_url)
        .set_entries(Some(entries))
        .send()
        .boxed()
        .await
}

/// Makes messages visible again at once (`ChangeMessageVisibilityBatch` to 0). Best effort:
/// what fails comes back after its visibility timeout anyway.
async fn reset_visibility(shared: &Shared, handles: Vec<String>) {
    for chunk in handles.chunks(MAX_BATCH) {
        let entries: Vec<ChangeMessageVisibilityBatchRequestEntry> = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, handle)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(handle)
                    .visibility_timeout(0)
                    .build()
                    .ok()
            })
            .collect();
        let answer = change_visibility_batch(shared, entries).await;
        match answer {
            Ok(out) if out.failed().is_empty() => {}
            Ok(out) => warn!(
                failed = out.failed().len(),
                "some SQS messages could not be made visible again; they come back after their visibility timeout"
            ),
            Err(e) => {
                warn!(error = %describe(&e), "SQS messages could not be made visible again; they come back after their visibility timeout")
            }
        }
    }
}

/// Batches acks into `DeleteMessageBatch` calls until `closing`, then flushes.
async fn run_deleter(
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
async fn gather(
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
struct DeleteEntry {
    /// The receipt handle.
    receipt_handle: String,
    /// The waiters (more than one only if the same handle was acked twice).
    waiters: Vec<oneshot::Sender<Result<(), String>>>,
    /// The outcome, once known.
    outcome: Option<Result<(), String>>,
}

/// Deletes one batch: entry ids are positions in this call (not message ids), receipt handles
/// are deduplicated, server-side failures are retried once.
async fn delete_batch(client: Client, queue_url: String, batch: Vec<DeleteRequest>) {
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
            Ok(out) => {
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
                        entries[i].outcome.get_or_insert_with(|| {
                            Err("DeleteMessageBatch did not report this entry".into())
                        });
                    }
                }
            }
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
    let mut failed = 0usize;
    for entry in entries {
        let outcome = entry
            .outcome
            .unwrap_or_else(|| Err("not deleted".to_string()));
        if let Err(detail) = &outcome {
            failed += 1;
            debug!(error = %detail, "SQS delete failed");
        }
        for waiter in entry.waiters {
            let _ = waiter.send(outcome.clone());
        }
    }
    if failed > 0 {
        warn!(
            failed,
            "SQS deletes failed; those messages will be redelivered and deduplicated by the ledger"
        );
    }
}

/// Settles one SQS message.
struct SqsAcker {
    /// Client, queue, delete task.
    shared: Arc<Shared>,
    /// The SQS message id, for logs.
    message_id: String,
    /// This receive's handle.
    receipt_handle: String,
    /// The body, resent as is when parked to a dead-letter queue.
    body: Bytes,
    /// The message attributes as received, resent with the body.
    attributes: HashMap<String, MessageAttributeValue>,
    /// Renews the visibility while the message is worked on; `None` once stopped.
    heartbeat: Option<Heartbeat>,
    /// Deleted, nacked or parked: further settling is refused.
    settled: bool,
}

fn settled(op: &'static str) -> AckError {
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

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_by_code_then_status() {
        assert_eq!(
            ErrorClass::of(Some("QueueDoesNotExist"), Some(400)),
            ErrorClass::Config
        );
        assert_eq!(
            ErrorClass::of(Some("AccessDenied"), Some(403)),
            ErrorClass::Config
        );
        assert_eq!(
            ErrorClass::of(Some("RequestThrottled"), Some(403)),
            ErrorClass::Transient
        );
        assert_eq!(
            ErrorClass::of(Some("ReceiptHandleIsInvalid"), Some(400)),
            ErrorClass::ReceiptGone
        );
        assert_eq!(
            ErrorClass::of(Some("InvalidParameterValue"), Some(400)),
            ErrorClass::Rejected
        );
        assert_eq!(ErrorClass::of(None, Some(503)), ErrorClass::Transient);
        assert_eq!(ErrorClass::of(None, Some(429)), ErrorClass::Transient);
        assert_eq!(ErrorClass::of(None, None), ErrorClass::Transient);
    }

    #[test]
    fn backoff_grows_and_is_longer_for_configuration_errors() {
        let t = ErrorClass::Transient;
        assert_eq!(t.backoff(1), Duration::from_secs(1));
        assert_eq!(t.backoff(3), Duration::from_secs(4));
        assert_eq!(t.backoff(50), Duration::from_secs(30));
        let c = ErrorClass::Config;
        assert_eq!(c.backoff(1), Duration::from_secs(5));
        assert_eq!(c.backoff(50), Duration::from_secs(120));
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("abcdef", 3), "abc");
        assert_eq!(truncate("aé", 2), "a");
    }
}
