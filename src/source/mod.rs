//! Where notifications come from: one [`Source`] trait, several transports.
//!
//! A source yields [`Delivery`]s. A delivery owns its acknowledgement: [`Delivery::ack`] says
//! "done, never again", [`Delivery::nack`] asks for redelivery after a delay, and
//! [`Delivery::park`] takes a poison message out of circulation with its reason. A delivery
//! dropped without any of them is **not** acknowledged: the transport redelivers it (after the
//! visibility timeout or lease), which is what a crash mid-message must look like.
//!
//! The shape fits the brokers: Pub/Sub streaming pull (ack ids, lease extension by the client
//! library) and SQS (batch receive, receipt handles, visibility timeout). Those transports
//! receive in batches internally and hand out one delivery at a time.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub mod file;
pub mod memory;
pub mod pubsub;
mod queue;
pub mod sqs;

pub use file::{FileInput, FileSource, InputLine, InputReader, LineRef};
pub use memory::{MemoryHandle, MemorySource};
pub use pubsub::{PubsubEndpoint, PubsubOptions, PubsubSource};
pub use sqs::SqsSource;

/// A failure to receive from a transport.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Reading an input file failed.
    #[error("reading {path}: {source}")]
    Io {
        /// The file (or `-` for stdin).
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The broker could not be reached or refused the receive; retried with backoff.
    #[error("receive failed: {0}")]
    Receive(String),
    /// A broker source cannot start: its client cannot be built (no credentials) or the
    /// broker says the subscription or queue does not exist. Not retried: fix the configuration.
    #[error("cannot connect: {0}")]
    Connect(String),
}

/// A failure to settle (ack, nack, park) a delivery.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{op} failed: {detail}")]
pub struct AckError {
    /// Which settlement failed: `ack`, `nack`, `park` or `extend`.
    pub op: &'static str,
    /// What the transport said.
    pub detail: String,
}

/// The transport side of one delivery: how to settle it.
#[async_trait]
pub trait Acker: Send + Sync {
    /// Done: the transport must not deliver it again.
    async fn ack(&mut self) -> Result<(), AckError>;
    /// Not done: deliver it again after `retry_after`.
    async fn nack(&mut self, retry_after: Duration) -> Result<(), AckError>;
    /// Poison: take it out of circulation (dead-letter queue or topic, or the transport's own
    /// redrive policy), keeping `reason` where the transport can.
    async fn park(&mut self, reason: &str) -> Result<(), AckError>;
    /// Still working: keep it leased for `by` more. Transports whose client library extends
    /// leases on its own do nothing.
    async fn extend(&mut self, _by: Duration) -> Result<(), AckError> {
        Ok(())
    }
}

/// One notification as the transport handed it over, with its acknowledgement.
pub struct Delivery {
    /// The notification bytes, exactly as delivered.
    pub payload: Bytes,
    /// Transport attributes (Pub/Sub attributes, SQS message attributes); never relied on
    /// for decoding, since commercetools does not document them.
    pub attributes: BTreeMap<String, String>,
    /// How many times the transport has delivered this message, this time included, where
    /// the transport counts (SQS ApproximateReceiveCount, Pub/Sub with a dead-letter policy).
    pub delivery_count: Option<u32>,
    /// Where it came from, for diagnostics: `file.jsonl:12`, an SQS message id, …
    pub origin: String,
    /// Settles the delivery; consumed by the settling methods.
    acker: Box<dyn Acker>,
}

impl fmt::Debug for Delivery {
    // The payload is customer data: keep it out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("origin", &self.origin)
            .field("bytes", &self.payload.len())
            .field("delivery_count", &self.delivery_count)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// Builds a delivery; used by [`Source`] implementations.
    pub fn new(
        payload: Bytes,
        origin: String,
        delivery_count: Option<u32>,
        attributes: BTreeMap<String, String>,
        acker: Box<dyn Acker>,
    ) -> Self {
        Self {
            payload,
            attributes,
            delivery_count,
            origin,
            acker,
        }
    }

    /// Acknowledges: the message is done. On failure the delivery is handed back.
    pub async fn ack(mut self) -> Result<(), (AckError, Self)> {
        match self.acker.ack().await {
            Ok(()) => Ok(()),
            Err(e) => Err((e, self)),
        }
    }

    /// Asks for redelivery after `retry_after`. On failure the delivery is handed back.
    pub async fn nack(mut self, retry_after: Duration) -> Result<(), (AckError, Self)> {
        match self.acker.nack(retry_after).await {
            Ok(()) => Ok(()),
            Err(e) => Err((e, self)),
        }
    }

    /// Parks a poison message with its reason. On failure the delivery is handed back.
    pub async fn park(mut self, reason: &str) -> Result<(), (AckError, Self)> {
        match self.acker.park(reason).await {
            Ok(()) => Ok(()),
            Err(e) => Err((e, self)),
        }
    }

    /// Extends the lease while work is still running.
    pub async fn extend(&mut self, by: Duration) -> Result<(), AckError> {
        self.acker.extend(by).await
    }
}

/// A stream of deliveries.
#[async_trait]
pub trait Source: Send {
    /// A short name for metrics and logs: `pubsub`, `sqs`, `file`, …
    fn name(&self) -> &'static str {
        "custom"
    }

    /// The next delivery. `Ok(None)` means the source is finished for good (a file source
    /// after its input and every redelivery); broker sources never finish on their own.
    async fn next(&mut self) -> Result<Option<Delivery>, SourceError>;

    /// Stops receiving and gives back what was received but never handed out (nack, or
    /// visibility reset), flushing pending acks. Called once, after in-flight work is done or
    /// the shutdown deadline passed.
    async fn close(&mut self) {}
}

/// For broker attributes with a size limit (park reasons): the longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
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
mod truncate_tests {
    use super::truncate;

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("abcdef", 3), "abc");
        // "é" is two bytes: cutting in its middle keeps what comes before.
        assert_eq!(truncate("aé", 2), "a");
    }
}
