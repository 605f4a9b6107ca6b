//! The visibility renewer: the lease registry, per-message heartbeats and the one task that extends
//! (or, on close, resets) visibility in batches.

use super::errors::{ErrorClass, describe};
use super::{MAX_BATCH, MAX_RENEWALS_IN_FLIGHT, MIN_HEARTBEAT, Shared};
use crate::telemetry::{BrokerOperation, BrokerOperationFailed};
use aws_sdk_sqs::error::SdkError;
use aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry;
use futures::{FutureExt, StreamExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The messages this source holds (received, not yet settled), whose visibility the renewer
/// task keeps extending. One registry and one task per source, not a task and a timer per
/// message: most messages are settled within milliseconds, long before a first renewal.
#[derive(Default)]
pub(super) struct Leases {
    /// The held messages by lease id.
    held: Mutex<LeaseMap>,
    /// Woken when a renewal call ends, for [`Heartbeat::stop`] waiting on one.
    renewed: Notify,
}

#[derive(Default)]
pub(super) struct LeaseMap {
    /// The next lease id.
    next: u64,
    /// Held messages.
    leases: HashMap<u64, Lease>,
}

/// One held message.
pub(super) struct Lease {
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
pub(super) struct Heartbeat {
    /// The registry.
    shared: Arc<Shared>,
    /// Which lease.
    id: u64,
}

impl Heartbeat {
    pub(super) fn start(shared: Arc<Shared>, receipt_handle: String) -> Self {
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
    pub(super) async fn stop(self) {
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
pub(super) async fn renew_leases(shared: std::sync::Weak<Shared>, visibility_seconds: i32) {
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
pub(super) async fn renew_batch(shared: &Shared, ids: &[u64]) {
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
                let error = format!("{}: {}", failed.code(), failed.message().unwrap_or(""));
                renew_failed(1, &error, NO_LONGER_RENEWED);
                gone.extend(failed.id().parse::<u64>().ok());
            }
        }
        Err(e) => match ErrorClass::of_sdk(&e) {
            ErrorClass::Transient => {
                renewed = false;
                renew_failed(
                    ids.len(),
                    &describe(&e),
                    "SQS visibility renewal failed; retrying",
                );
            }
            class => {
                let error = format!("{} ({class:?})", describe(&e));
                renew_failed(ids.len(), &error, NO_LONGER_RENEWED);
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
pub(super) async fn change_visibility_batch(
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
pub(super) async fn reset_visibility(shared: &Shared, handles: Vec<String>) {
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
            Ok(out) => {
                let error = out
                    .failed()
                    .first()
                    .map(|f| format!("{}: {}", f.code(), f.message().unwrap_or("")))
                    .unwrap_or_default();
                returned_failed(out.failed().len(), &error);
            }
            Err(e) => returned_failed(chunk.len(), &describe(&e)),
        }
    }
}

const NO_LONGER_RENEWED: &str = "SQS visibility can no longer be renewed; the messages may be redelivered while they are worked on";

fn renew_failed(messages: usize, error: &str, consequence: &'static str) {
    BrokerOperationFailed {
        source: "sqs",
        operation: BrokerOperation::Renew,
        messages,
        error,
        consequence,
    }
    .emit();
}

fn returned_failed(messages: usize, error: &str) {
    BrokerOperationFailed {
        source: "sqs",
        operation: BrokerOperation::Return,
        messages,
        error,
        consequence: "SQS messages could not be made visible again; they come back after their visibility timeout",
    }
    .emit();
}
