//! The in-process queue behind the file and memory sources: redelivery after a nack or a
//! dropped delivery, parking, and "finished" once nothing is left or outstanding.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{AckError, Acker, Delivery};

/// A message held by the queue.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub payload: Bytes,
    pub origin: String,
    /// Deliveries so far.
    pub attempts: u32,
}

/// A parked message and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parked {
    /// Where it came from.
    pub origin: String,
    /// Why it was parked.
    pub reason: String,
}

/// Counters a test or the `run` summary can read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Deliveries acknowledged.
    pub acked: usize,
    /// Deliveries nacked (each comes back later).
    pub nacked: usize,
    /// Deliveries dropped without settlement (each comes back after the visibility timeout).
    pub abandoned: usize,
    /// Messages parked, with their reasons.
    pub parked: Vec<Parked>,
    /// Deliveries handed out but not yet settled.
    pub outstanding: usize,
    /// Messages waiting to be delivered (including delayed redeliveries).
    pub waiting: usize,
}

struct Inner {
    ready: VecDeque<Item>,
    delayed: BinaryHeap<Reverse<(Instant, u64)>>,
    delayed_items: BTreeMap<u64, Item>,
    seq: u64,
    closed: bool,
    stats: QueueStats,
}

struct Shared {
    inner: Mutex<Inner>,
    notify: Notify,
    /// How long a dropped (unsettled) delivery stays invisible before it comes back.
    visibility_timeout: Duration,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means another thread panicked mid-update; the counters are
        // still usable, and a queue that refuses to work after that would lose messages.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Settles one outstanding delivery by putting its item back, due in `by`. One lock for
    /// both: between a separate "no longer outstanding" and "waiting again", a finished-check
    /// would see nothing left and end the input with the message lost.
    fn redeliver(&self, item: Item, by: Duration, count: impl FnOnce(&mut QueueStats)) {
        let mut g = self.lock();
        g.stats.outstanding -= 1;
        count(&mut g.stats);
        g.seq += 1;
        let seq = g.seq;
        g.delayed.push(Reverse((Instant::now() + by, seq)));
        g.delayed_items.insert(seq, item);
        drop(g);
        self.notify.notify_one();
    }
}

/// The queue; cheap to clone.
#[derive(Clone)]
pub(crate) struct Queue {
    shared: Arc<Shared>,
}

impl Queue {
    pub(super) fn new(visibility_timeout: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner {
                    ready: VecDeque::new(),
                    delayed: BinaryHeap::new(),
                    delayed_items: BTreeMap::new(),
                    seq: 0,
                    closed: false,
                    stats: QueueStats::default(),
                }),
                notify: Notify::new(),
                visibility_timeout,
            }),
        }
    }

    pub(super) fn push(&self, payload: Bytes, origin: String) {
        self.shared.lock().ready.push_back(Item {
            payload,
            origin,
            attempts: 0,
        });
        self.shared.notify.notify_one();
    }

    /// No more new messages will be pushed; the queue finishes once drained and settled.
    pub(super) fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.notify.notify_one();
    }

    pub(super) fn stats(&self) -> QueueStats {
        let g = self.shared.lock();
        let mut s = g.stats.clone();
        s.waiting = g.ready.len() + g.delayed_items.len();
        s
    }

    /// Hands out `item` as a delivery now (used for a freshly read input line).
    pub(super) fn deliver(&self, mut item: Item) -> Delivery {
        self.shared.lock().stats.outstanding += 1;
        item.attempts += 1;
        let acker = QueueAcker {
            shared: self.shared.clone(),
            item: Some(item.clone()),
        };
        Delivery::new(
            item.payload,
            item.origin,
            Some(item.attempts),
            BTreeMap::new(),
            Box::new(acker),
        )
    }

    /// A message that is ready now, if any (redeliveries whose delay has passed included).
    pub(super) fn try_next(&self) -> Option<Delivery> {
        let item = {
            let mut g = self.shared.lock();
            promote_due(&mut g);
            g.ready.pop_front()
        }?;
        Some(self.deliver(item))
    }

    /// Waits for the next delivery; `None` once closed, drained and nothing outstanding.
    pub(super) async fn next(&self) -> Option<Delivery> {
        loop {
            let next_due = {
                let mut g = self.shared.lock();
                promote_due(&mut g);
                if let Some(item) = g.ready.pop_front() {
                    drop(g);
                    return Some(self.deliver(item));
                }
                if g.closed && g.delayed_items.is_empty() && g.stats.outstanding == 0 {
                    return None;
                }
                g.delayed.peek().map(|Reverse((due, _))| *due)
            };
            match next_due {
                Some(due) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(due) => {}
                        _ = self.shared.notify.notified() => {}
                    }
                }
                None => self.shared.notify.notified().await,
            }
        }
    }
}

fn promote_due(g: &mut Inner) {
    let now = Instant::now();
    while let Some(Reverse((due, seq))) = g.delayed.peek().copied() {
        if due > now {
            break;
        }
        g.delayed.pop();
        if let Some(item) = g.delayed_items.remove(&seq) {
            g.ready.push_back(item);
        }
    }
}

struct QueueAcker {
    shared: Arc<Shared>,
    /// `Some` until settled; a drop while `Some` means "abandoned".
    item: Option<Item>,
}

impl QueueAcker {
    fn settle(&mut self, op: &'static str) -> Result<Item, AckError> {
        let item = self.item.take().ok_or(AckError {
            op,
            detail: "delivery already settled".into(),
        })?;
        let mut g = self.shared.lock();
        g.stats.outstanding -= 1;
        drop(g);
        self.shared.notify.notify_one();
        Ok(item)
    }
}

#[async_trait]
impl Acker for QueueAcker {
    async fn ack(&mut self) -> Result<(), AckError> {
        self.settle("ack")?;
        self.shared.lock().stats.acked += 1;
        Ok(())
    }

    async fn nack(&mut self, retry_after: Duration) -> Result<(), AckError> {
        let item = self.item.take().ok_or(AckError {
            op: "nack",
            detail: "delivery already settled".into(),
        })?;
        self.shared
            .redeliver(item, retry_after, |stats| stats.nacked += 1);
        Ok(())
    }

    async fn park(&mut self, reason: &str) -> Result<(), AckError> {
        let item = self.settle("park")?;
        self.shared.lock().stats.parked.push(Parked {
            origin: item.origin,
            reason: reason.to_string(),
        });
        Ok(())
    }
}

impl Drop for QueueAcker {
    fn drop(&mut self) {
        if let Some(item) = self.item.take() {
            let timeout = self.shared.visibility_timeout;
            self.shared
                .redeliver(item, timeout, |stats| stats.abandoned += 1);
        }
    }
}
