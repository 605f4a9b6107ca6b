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
//! - **nack(retry_after)**: see `PubsubAcker::nack` in `settle`: the handler is held for the delay (its
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
//! switched to push and back (see `tests/it/support/peers.rs`, `pubsub_end_stale_streams`).
//! Production Pub/Sub is not affected.
//!
//! # Endpoint and credentials
//! The official crate does not read `PUBSUB_EMULATOR_HOST`; [`PubsubEndpoint::from_env`] does:
//! when it is set, the clients talk plain HTTP/2 to `http://$PUBSUB_EMULATOR_HOST` with
//! anonymous credentials; otherwise to Google with Application Default Credentials.
//!
//! # Files
//! This file holds the endpoint, the options, building the source and the [`Source`] glue;
//! `receive` runs the streaming pulls, `settle` the ackers (read it beside SQS's `settle`).

mod receive;
mod settle;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use google_cloud_auth::credentials::anonymous::Builder as Anonymous;
use google_cloud_pubsub::client::{Publisher, Subscriber, SubscriptionAdmin};
use google_cloud_pubsub::subscriber::handler::Handler;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Delivery, Source, SourceError};
use crate::retry::Backoff;
use crate::telemetry::SourceState;
use receive::run_stream;

/// The attribute that carries the park reason on the dead-letter topic.
pub const PARK_REASON_ATTRIBUTE: &str = "payrules_park_reason";

/// The Pub/Sub source, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubsubSettings {
    /// `projects/P/subscriptions/S`.
    pub subscription: String,
    /// Streaming pulls open at once (≥ 1).
    pub streams: usize,
    /// Flow control: messages leased at once, per stream.
    pub max_outstanding_messages: i64,
    /// Flow control: bytes leased at once, per stream.
    pub max_outstanding_bytes: i64,
    /// `projects/P/topics/T` for poison messages, if configured.
    pub dead_letter_topic: Option<String>,
}
/// The attribute that carries the original message id on the dead-letter topic.
pub const SOURCE_MESSAGE_ID_ATTRIBUTE: &str = "payrules_source_message_id";
/// The attribute that carries the subscription the message was parked from.
pub const SOURCE_SUBSCRIPTION_ATTRIBUTE: &str = "payrules_source_subscription";

/// Pub/Sub limits an attribute value to 1024 bytes.
const MAX_ATTRIBUTE_VALUE_BYTES: usize = 1024;
/// A lease is extended by the library for at most this long; past it the message is
/// redelivered even if it is still being worked on. Seven days (the library's default is an
/// hour, the longest a subscription retains a message is seven days): a message held through a
/// dependency's outage (see `worker::hold`) keeps its lease however long the outage lasts, so
/// the outage never counts delivery attempts toward the dead-letter policy.
const MAX_LEASE: Duration = Duration::from_secs(7 * 24 * 60 * 60);
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
/// Backoff between attempts to reopen a stream that failed permanently: 1 s doubling to 30 s.
/// A subscription that was briefly misconfigured (a permission taken away and given back) is
/// read again within 30 s of the fix; a reopen every 30 s costs the API nothing.
const RESUBSCRIBE_BACKOFF: Backoff =
    Backoff::exponential(Duration::from_secs(1), Duration::from_secs(30));
/// A stream that stayed open this long before it failed was healthy: the backoff starts over,
/// as after a message (a quiet subscription receives none).
const STREAM_HEALTHY_AFTER: Duration = Duration::from_secs(30);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_emulator_endpoint_is_plain_http() {
        assert_eq!(
            PubsubEndpoint::Emulator("127.0.0.1:8085".into()).url(),
            Some("http://127.0.0.1:8085".to_string())
        );
        assert_eq!(PubsubEndpoint::Google.url(), None);
    }
}
