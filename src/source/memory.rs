//! An in-memory source for tests: push payloads, read back what was acked, nacked or parked.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::queue::{Queue, QueueStats};
use super::{Delivery, Source, SourceError};

/// A source fed from memory. Nacked messages come back after their delay; dropped ones after
/// the visibility timeout, as on a broker.
pub struct MemorySource {
    queue: Queue,
}

/// Feeds a [`MemorySource`] and reads its counters; cheap to clone.
#[derive(Clone)]
pub struct MemoryHandle {
    queue: Queue,
}

impl MemorySource {
    /// A source whose dropped deliveries come back after `visibility_timeout`.
    pub fn new(visibility_timeout: Duration) -> (Self, MemoryHandle) {
        let queue = Queue::new(visibility_timeout);
        (
            Self {
                queue: queue.clone(),
            },
            MemoryHandle { queue },
        )
    }
}

impl MemoryHandle {
    /// Enqueues one payload; `origin` names it in diagnostics.
    pub fn push(&self, payload: impl Into<Bytes>, origin: impl Into<String>) {
        self.queue.push(payload.into(), origin.into());
    }

    /// No more pushes: the source finishes once everything is settled.
    pub fn close(&self) {
        self.queue.close();
    }

    /// What happened so far.
    pub fn stats(&self) -> QueueStats {
        self.queue.stats()
    }
}

#[async_trait]
impl Source for MemorySource {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn next(&mut self) -> Result<Option<Delivery>, SourceError> {
        Ok(self.queue.next().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn nacked_and_dropped_deliveries_come_back_and_acked_ones_do_not() {
        let (mut source, handle) = MemorySource::new(Duration::from_secs(30));
        handle.push("a", "a");
        handle.push("b", "b");
        handle.close();

        let a = source.next().await.unwrap().unwrap();
        a.nack(Duration::from_secs(5)).await.unwrap();
        let b = source.next().await.unwrap().unwrap();
        assert_eq!(&b.payload[..], b"b");
        drop(b); // abandoned: back after the visibility timeout

        let start = tokio::time::Instant::now();
        let a = source.next().await.unwrap().unwrap();
        assert_eq!(&a.payload[..], b"a");
        assert_eq!(a.delivery_count, Some(2));
        assert!(start.elapsed() >= Duration::from_secs(5));
        a.ack().await.unwrap();

        let b = source.next().await.unwrap().unwrap();
        assert_eq!(&b.payload[..], b"b");
        assert!(start.elapsed() >= Duration::from_secs(30));
        b.park("poison").await.unwrap();

        assert!(source.next().await.unwrap().is_none());
        let stats = handle.stats();
        assert_eq!((stats.acked, stats.nacked, stats.abandoned), (1, 1, 1));
        assert_eq!(stats.parked.len(), 1);
        assert_eq!(stats.parked[0].reason, "poison");
    }
}
