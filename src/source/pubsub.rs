//! Google Cloud Pub/Sub: streaming pull with the official `google-cloud-pubsub` client.
//!
//! # How it works
//! [`PubsubSource::connect`] builds one [`Subscriber`] and opens `streams` streaming pulls on
//! the subscription, each in its own task with the configured flow control (messages and bytes
//! leased at once, per stream). The tasks feed one small channel that [`Source::next`] reads,
//! and each task reserves room in that channel *before* it takes the next message from the
//! client library, so a worker that stops taking stops the hand-over (the library keeps at
//! most its flow-control window leased, and extends those leases on its own).
//!
//! # Settling
//! - **ack**: the handler's ack (confirmed, on a subscription with exactly-once delivery).
//! - **nack(retry_after)**: see [`PubsubAcker::nack`]: the handler is held for the delay (its
//!   lease is still extended by the library), then nacked.
//! - **park(reason)**: with a dead-letter topic configured, the original data and attributes
//!   plus `payrules_park_reason` are published there, then the message is acked. Without one,
//!   the message is nacked and the subscription's dead-letter policy moves it after its
//!   `maxDeliveryAttempts`.
//! - **dropped unsettled**: nacked after a second (or by the shutdown, on close), so Pub/Sub
//!   redelivers it promptly (or after the subscription's retry-policy backoff).
//!
//! # Closing
//! [`Source::close`] stops the streams, reads what the server already sent on them, closes
//! the gRPC streams and only then lets the library nack everything still leased (held nacks,
//! deliveries never handed out, messages read while stopping): a nack sent while a stream is
//! open is redelivered onto that stream, and would be lost with it until its ack deadline.
//!
//! # The emulator
//! The emulator (0.8.20) does not notice a StreamingPull cancelled without a half-close, which
//! is how this client ends its streams: the closed stream keeps taking messages from the
//! subscription on the emulator's side and sends them nowhere, until the subscription is
//! switched to push and back (see `tests/it/peers.rs`, `pubsub_end_stale_streams`). Production
//! Pub/Sub is not affected.
//!
//! # Endpoint and credentials
//! The official crate does not read `PUBSUB_EMULATOR_HOST`; [`PubsubEndpoint::from_env`] does:
//! when it is set, the clients talk plain HTTP/2 to `http://$PUBSUB_EMULATOR_HOST` with
//! anonymous credentials; otherwise to Google with Application Default Credentials.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use google_cloud_auth::credentials::anonymous::Builder as Anonymous;
use google_cloud_pubsub::client::{Publisher, Subscriber, SubscriptionAdmin};
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::subscriber::handler::Handler;
use google_cloud_pubsub::subscriber::{MessageStream, ShutdownBehavior};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::{AckError, Acker, Delivery, Source, SourceError};
use crate::config::PubsubSettings;
use crate::retry::Backoff;
use crate::telemetry::SourceState;

/// The attribute that carries the park reason on the dead-letter topic.
pub const PARK_REASON_ATTRIBUTE: &str = "payrules_park_reason";
/// The attribute that carries the original message id on the dead-letter topic.
pub const SOURCE_MESSAGE_ID_ATTRIBUTE: &str = "payrules_source_message_id";
/// The attribute that carries the subscription the message was parked from.
pub const SOURCE_SUBSCRIPTION_ATTRIBUTE: &str = "payrules_source_subscription";

/// Pub/Sub limits an attribute value to 1024 bytes.
const MAX_ATTRIBUTE_VALUE_BYTES: usize = 1024;
/// A lease is extended by the library for at most this long; past it the message is
/// redelivered even if it is still being worked on (the library's default).
const MAX_LEASE: Duration = Duration::from_secs(60 * 60);
/// The longest a nack is held before it is sent: well inside [`MAX_LEASE`], so a held message
/// never loses its lease. Longer delays are shortened to this (and logged).
const MAX_HELD_NACK: Duration = Duration::from_secs(50 * 60);
/// A delivery dropped unsettled is nacked after this (see `Drop for PubsubAcker`).
const DROPPED_NACK_DELAY: Duration = Duration::from_secs(1);
/// A nack shorter than this is sent at once: holding it buys nothing.
const MIN_HELD_NACK: Duration = Duration::from_millis(100);
/// Without a dead-letter topic or policy a parked message can only be nacked; this delay keeps
/// such a poison message from spinning through the worker.
const PARK_RETRY_WITHOUT_POLICY: Duration = Duration::from_secs(60);
/// Backoff between attempts to reopen a stream that failed permanently: 1 s doubling to 60 s.
const RESUBSCRIBE_BACKOFF: Backoff =
    Backoff::exponential(Duration::from_secs(1), Duration::from_secs(60));
/// Stopping a stream: it counts as drained once nothing arrived for this long.
const DRAIN_IDLE: Duration = Duration::from_millis(250);
/// Stopping a stream: reading what is on the wire takes at most this long.
const DRAIN_MAX: Duration = Duration::from_secs(2);
/// How long [`Source::close`] waits for the streams to flush acks and nacks.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the Pub/Sub clients connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PubsubEndpoint {
    /// Google Cloud, with Application Default Credentials.
    Google,
    /// An emulator at `host:port` (plain HTTP, anonymous credentials).
    Emulator(String),
}

impl PubsubEndpoint {
    /// `Emulator` when `PUBSUB_EMULATOR_HOST` is set and not empty, else `Google`.
    pub fn from_env() -> Self {
        match std::env::var("PUBSUB_EMULATOR_HOST") {
            Ok(host) if !host.trim().is_empty() => Self::Emulator(host.trim().to_string()),
            _ => Self::Google,
        }
    }

    /// The emulator's URL, if this is one.
    fn url(&self) -> Option<String> {
        match self {
            Self::Google => None,
            Self::Emulator(host) => Some(format!("http://{host}")),
        }
    }
}

/// How to reach Pub/Sub, beyond the configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubsubOptions {
    /// Where the clients connect.
    pub endpoint: PubsubEndpoint,
    /// The ack deadline the stream asks for, and by how much the library extends leases
    /// (clamped to 10 s ..= 600 s). It is also how long a message leased by a stream that went
    /// away stays invisible. The library's default, 60 s, is right for production; tests use
    /// the minimum.
    pub lease_extension: Duration,
}

impl PubsubOptions {
    /// [`PubsubEndpoint::from_env`] and [`DEFAULT_LEASE_EXTENSION`].
    pub fn from_env() -> Self {
        Self {
            endpoint: PubsubEndpoint::from_env(),
            lease_extension: DEFAULT_LEASE_EXTENSION,
        }
    }
}

/// The library's default lease extension (stream ack deadline).
pub const DEFAULT_LEASE_EXTENSION: Duration = Duration::from_secs(60);

/// A [`Source`] over a Pub/Sub subscription.
pub struct PubsubSource {
    /// Deliveries (and stream errors) from every stream task, merged. Small and bounded: the
    /// tasks reserve a slot before they take a message from the library.
    rx: mpsc::Receiver<Result<Delivery, SourceError>>,
    /// Tells the stream tasks to stop pulling and shut their streams down.
    stop: CancellationToken,
    /// The stream tasks; each ends after its stream's shutdown flushed acks and nacks.
    streams: Vec<JoinHandle<()>>,
    /// What the ackers need; shared with every delivery.
    shared: Arc<Shared>,
    /// `close` ran: later calls do nothing and `next` reports the source finished.
    closed: bool,
}

/// State shared by the source, its stream tasks and every delivery's acker.
struct Shared {
    /// `projects/P/subscriptions/S`, for the dead-letter attributes and logs.
    subscription: String,
    /// The dead-letter topic and its publisher, when configured.
    dead_letter: Option<DeadLetter>,
    /// Nacks being held for their delay (see [`PubsubAcker::nack`]) and dropped deliveries
    /// (see [`PubsubAcker`]'s `Drop`).
    held: Mutex<JoinSet<()>>,
    /// Cancelled by close: held handlers move to `returned` instead of being nacked.
    closing: CancellationToken,
    /// Handlers to be nacked by the streams' shutdown, kept alive until the gRPC streams are
    /// closed. A nack sent while a stream is still open makes the server redeliver the message
    /// onto that stream at once — where nobody reads it any more, so it would only come back
    /// after its ack deadline.
    returned: Arc<Mutex<Vec<Handler>>>,
}

/// Where parked messages are published.
struct DeadLetter {
    /// `projects/P/topics/T`, for logs.
    topic: String,
    /// The publisher for that topic.
    publisher: Publisher,
}

/// Flow control and stream options for one stream task.
#[derive(Clone)]
struct StreamOptions {
    /// See [`PubsubOptions::lease_extension`].
    lease_extension: Duration,
    /// The subscription.
    subscription: String,
    /// Messages leased at once.
    max_outstanding_messages: i64,
    /// Bytes leased at once.
    max_outstanding_bytes: i64,
}

impl PubsubSource {
    /// Connects with [`PubsubOptions::from_env`].
    ///
    /// # Errors
    /// [`SourceError::Connect`] when a client cannot be built (no Application Default
    /// Credentials, say). A subscription that does not exist shows up as receive errors, since
    /// streaming pull is opened lazily and checking would need the viewer role.
    pub async fn connect(settings: &PubsubSettings) -> Result<Self, SourceError> {
        Self::connect_with(settings, PubsubOptions::from_env()).await
    }

    /// Connects with explicit options. Must be called within a tokio runtime.
    ///
    /// # Errors
    /// See [`PubsubSource::connect`].
    pub async fn connect_with(
        settings: &PubsubSettings,
        options: PubsubOptions,
    ) -> Result<Self, SourceError> {
        let PubsubOptions {
            endpoint,
            lease_extension,
        } = options;
        let mut builder = Subscriber::builder();
        if let Some(url) = endpoint.url() {
            builder = builder
                .with_endpoint(url)
                .with_credentials(Anonymous::new().build());
        }
        let streams = settings.streams.max(1);
        if streams > 1 {
            // One HTTP/2 connection per stream keeps streams from queueing behind each other.
            builder = builder.with_grpc_subchannel_count(streams);
        }
        let subscriber = builder
            .build()
            .await
            .map_err(|e| SourceError::Connect(format!("Pub/Sub subscriber: {e}")))?;

        let dead_letter = match &settings.dead_letter_topic {
            None => None,
            Some(topic) => {
                let mut builder = Publisher::builder(topic.clone());
                if let Some(url) = endpoint.url() {
                    builder = builder
                        .with_endpoint(url)
                        .with_credentials(Anonymous::new().build());
                }
                let publisher = builder.build().await.map_err(|e| {
                    SourceError::Connect(format!("Pub/Sub publisher for {topic}: {e}"))
                })?;
                Some(DeadLetter {
                    topic: topic.clone(),
                    publisher,
                })
            }
        };

        let shared = Arc::new(Shared {
            subscription: settings.subscription.clone(),
            dead_letter,
            held: Mutex::new(JoinSet::new()),
            closing: CancellationToken::new(),
            returned: Arc::new(Mutex::new(Vec::new())),
        });
        let options = StreamOptions {
            lease_extension,
            subscription: settings.subscription.clone(),
            max_outstanding_messages: settings.max_outstanding_messages,
            max_outstanding_bytes: settings.max_outstanding_bytes,
        };
        let (tx, rx) = mpsc::channel(streams);
        let stop = CancellationToken::new();
        let streams = (0..streams)
            .map(|index| {
                tokio::spawn(run_stream(
                    index,
                    subscriber.clone(),
                    options.clone(),
                    tx.clone(),
                    stop.clone(),
                    shared.clone(),
                ))
            })
            .collect();
        info!(
            subscription = %settings.subscription,
            streams = settings.streams.max(1),
            max_outstanding_messages = settings.max_outstanding_messages,
            max_outstanding_bytes = settings.max_outstanding_bytes,
            dead_letter_topic = settings.dead_letter_topic.as_deref().unwrap_or("-"),
            emulator = matches!(endpoint, PubsubEndpoint::Emulator(_)),
            lease_extension = ?lease_extension,
            "Pub/Sub source started"
        );
        // The client library retries unavailability inside the stream; only a permanent
        // error (not found, permission denied) surfaces, and turns this to unavailable.
        SourceState {
            source: "pubsub",
            result: Ok(()),
        }
        .emit();
        Ok(Self {
            rx,
            stop,
            streams,
            shared,
            closed: false,
        })
    }
}

/// `check-config --connect`: the subscription exists and this identity can read it.
///
/// # Errors
/// The client cannot be built; the subscription cannot be read (not found, denied, down).
pub async fn check_subscription(settings: &PubsubSettings) -> Result<String, SourceError> {
    let mut builder = SubscriptionAdmin::builder();
    if let Some(url) = PubsubEndpoint::from_env().url() {
        builder = builder
            .with_endpoint(url)
            .with_credentials(Anonymous::new().build());
    }
    let admin = builder
        .build()
        .await
        .map_err(|e| SourceError::Connect(format!("Pub/Sub admin client: {e}")))?;
    let sub = admin
        .get_subscription()
        .set_subscription(settings.subscription.clone())
        .send()
        .await
        .map_err(|e| SourceError::Connect(format!("{}: {e}", settings.subscription)))?;
    Ok(format!("subscription {} on topic {}", sub.name, sub.topic))
}

#[async_trait]
impl Source for PubsubSource {
    fn name(&self) -> &'static str {
        "pubsub"
    }

    async fn next(&mut self) -> Result<Option<Delivery>, SourceError> {
        // Cancel-safe: `recv` is, and nothing after it awaits.
        match self.rx.recv().await {
            Some(item) => item.map(Some),
            // Every stream task is gone: only after close (or a panic, which is logged).
            None => Ok(None),
        }
    }

    async fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        // Nothing is nacked while the streams are open (see `Shared::returned`): held nacks
        // and deliveries never handed out are kept until the streams are closed; then each
        // stream's shutdown nacks everything it leased, and they come back at once.
        self.shared.closing.cancel();
        let held = std::mem::take(&mut *lock(&self.shared.held));
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, held.join_all()).await;
        self.stop.cancel();
        self.rx.close();
        let mut buffered = 0usize;
        while let Ok(item) = self.rx.try_recv() {
            buffered += usize::from(item.is_ok());
        }
        let streams = std::mem::take(&mut self.streams);
        let joined = tokio::time::timeout(CLOSE_TIMEOUT, futures::future::join_all(streams)).await;
        if joined.is_err() {
            warn!(timeout = ?CLOSE_TIMEOUT, "Pub/Sub streams did not shut down in time; unsettled messages come back after their ack deadline");
        }
        let returned = std::mem::take(&mut *lock(&self.shared.returned)).len();
        if let Some(dl) = &self.shared.dead_letter {
            dl.publisher.flush().await;
        }
        info!(buffered, returned, "Pub/Sub source closed");
    }
}

impl Drop for PubsubSource {
    fn drop(&mut self) {
        // Without close(): the stream tasks shut their streams down (the library nacks what
        // is leased); held handlers are released with the last reference to them.
        self.shared.closing.cancel();
        self.stop.cancel();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One streaming pull: reopened with backoff after a permanent error, shut down (acks flushed,
/// every other leased message nacked) when `stop` is cancelled.
async fn run_stream(
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
enum StreamEnd {
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
async fn drain_unread(stream: &mut MessageStream) -> Vec<Handler> {
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
fn delivery(message: Message, handler: Handler, shared: &Arc<Shared>) -> Delivery {
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

/// Settles one Pub/Sub message.
struct PubsubAcker {
    /// The library's handle on the lease; `None` once settled. Dropping it nacks.
    handler: Option<Handler>,
    /// The Pub/Sub message id, for logs and the dead-letter attributes.
    message_id: String,
    /// The original data, republished as is when parked to a dead-letter topic.
    data: Bytes,
    /// The original attributes, republished with the data.
    attributes: HashMap<String, String>,
    /// The dead-letter publisher and the held-nack registry.
    shared: Arc<Shared>,
}

fn settled(op: &'static str) -> AckError {
    AckError {
        op,
        detail: "the delivery was already settled".into(),
    }
}

/// Acks, confirmed where the subscription offers it (exactly-once delivery).
async fn ack_handler(handler: Handler) -> Result<(), AckError> {
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
fn defer_nack(shared: &Shared, handler: Handler, delay: Duration) {
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
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("abcdef", 3), "abc");
        // "é" is two bytes: cutting in its middle keeps what comes before.
        assert_eq!(truncate("aé", 2), "a");
    }

    #[test]
    fn the_emulator_endpoint_is_plain_http() {
        assert_eq!(
            PubsubEndpoint::Emulator("127.0.0.1:8085".into()).url(),
            Some("http://127.0.0.1:8085".to_string())
        );
        assert_eq!(PubsubEndpoint::Google.url(), None);
    }
}
