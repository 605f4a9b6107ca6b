//! Gathering what the store remembers: the ledger and timer history (live, from the ledger;
//! offline, recorded while replaying streams).

use super::report::{GRACE_CHECK, LedgerLine, Stamp, TimerLine};
use crate::action::{Action, Reason, format_timestamp};
use crate::message::Timestamp;
use crate::store::{Claim, Decided, LedgerStatus, MemoryStore, Store, StoreError, Timer};
use async_trait::async_trait;
use chrono::DateTime;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

#[derive(Debug, Clone)]
pub(super) struct TimerSeen {
    due: Timestamp,
    scheduled: Stamp,
    fired: Option<Stamp>,
}

/// What the replay recorded as it went.
#[derive(Debug, Default)]
pub(super) struct Log {
    /// The input being fed.
    pub(super) current: Stamp,
    /// Message id → (type, origin), first sighting.
    pub(super) messages: HashMap<String, (String, String)>,
    /// Ledger key → the input during which it was written.
    written: HashMap<String, Stamp>,
    /// Ledger key → the action planned for it.
    pub(super) actions: HashMap<String, Action>,
    /// Payment id → its grace-period timer.
    timers: HashMap<String, TimerSeen>,
}

/// Where the explanation's facts come from, and what is known beyond the ledger's statuses.
pub struct History {
    pub(super) source: String,
    pub(super) replay: bool,
    log: Mutex<Log>,
    /// Live: the store whose ledger rows and timers give the times and messages.
    store: Option<Arc<dyn Store>>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("source", &self.source)
            .field("replay", &self.replay)
            .finish_non_exhaustive()
    }
}

impl History {
    /// A live ledger: times, messages and the grace-period check come from `store` as far as
    /// it keeps them (a SQL store does; the memory store keeps statuses only).
    pub fn live(source: String, store: Arc<dyn Store>) -> Self {
        Self {
            source,
            replay: false,
            log: Mutex::new(Log::default()),
            store: Some(store),
        }
    }

    pub(super) fn replayed(source: String, log: Log) -> Self {
        Self {
            source,
            replay: true,
            log: Mutex::new(log),
            store: None,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The action planned for `key`, if the replay planned one.
    pub(super) fn action(&self, key: &str) -> Option<Action> {
        self.lock().actions.get(key).cloned()
    }

    /// When and why `key` was written, as far as known.
    fn stamp(&self, key: &str) -> Option<Stamp> {
        let log = self.lock();
        if let Some(a) = log.actions.get(key) {
            let (message_type, origin) = match &a.message_id {
                Some(id) => log
                    .messages
                    .get(id)
                    .map_or((None, None), |(t, o)| (Some(t.clone()), Some(o.clone()))),
                None => (None, Some(GRACE_CHECK.to_string())),
            };
            return Some(Stamp {
                at: Some(format_timestamp(&a.at)),
                message_id: a.message_id.clone(),
                message_type,
                origin,
            });
        }
        log.written.get(key).cloned()
    }

    /// One ledger entry.
    pub(super) async fn line(
        &self,
        key: String,
        status: LedgerStatus,
    ) -> Result<LedgerLine, StoreError> {
        if let Some(store) = &self.store {
            return live_line(store.as_ref(), key, status).await;
        }
        let stamp = self.stamp(&key);
        let note = match (self.replay, status, stamp.is_some()) {
            (true, LedgerStatus::Done, _) if !key.contains("-failed:") => {
                Some("replay: planned, nothing executed")
            }
            (false, _, false) => Some("the store keeps no time or message for its entries"),
            _ => None,
        };
        let reason = self.action(&key).and_then(|a| a.reason);
        Ok(LedgerLine {
            key,
            status: status_name(status),
            stamp,
            reason,
            note,
        })
    }

    /// The payment's grace-period timer, as far as known.
    pub(super) async fn timer(&self, payment_id: &str) -> Result<Option<TimerLine>, StoreError> {
        if let Some(store) = &self.store {
            let entry = store.timer_entry(payment_id).await?;
            return Ok(entry.map(|t| TimerLine {
                due: format_timestamp(&t.due),
                scheduled: Stamp {
                    at: t.scheduled_at.as_ref().map(format_timestamp),
                    ..Stamp::default()
                },
                fired: t.fired.then(|| Stamp {
                    at: t.fired_at.as_ref().map(format_timestamp),
                    ..Stamp::default()
                }),
            }));
        }
        let log = self.lock();
        let Some(t) = log.timers.get(payment_id) else {
            return Ok(None);
        };
        Ok(Some(TimerLine {
            due: format_timestamp(&t.due),
            scheduled: t.scheduled.clone(),
            fired: t.fired.clone(),
        }))
    }
}

/// A ledger entry as a live store remembers it: the time it was written and the message whose
/// decision it records. A cancel recorded without a message, of a payment whose grace-period
/// check fired, is that check's.
async fn live_line(
    store: &dyn Store,
    key: String,
    status: LedgerStatus,
) -> Result<LedgerLine, StoreError> {
    let Some(entry) = store.ledger_entry(&key).await? else {
        return Ok(LedgerLine {
            key,
            status: status_name(status),
            stamp: None,
            reason: None,
            note: None,
        });
    };
    let Some(at) = entry.at.as_ref().map(format_timestamp) else {
        return Ok(LedgerLine {
            key,
            status: status_name(entry.status),
            stamp: None,
            reason: None,
            note: Some("this store keeps no time or message for its entries"),
        });
    };
    let by_timer = match (key.strip_prefix("cancel:"), &entry.message_id) {
        (Some(pid), None) => store.timer_entry(pid).await?.is_some_and(|t| t.fired),
        _ => false,
    };
    Ok(LedgerLine {
        status: status_name(entry.status),
        stamp: Some(Stamp {
            at: Some(at),
            message_id: entry.message_id,
            message_type: None,
            origin: by_timer.then(|| GRACE_CHECK.to_string()),
        }),
        reason: entry.reason.as_deref().and_then(cancel_reason),
        note: None,
        key,
    })
}

/// A reason as the store wrote it: its output name, read back as the output is.
fn cancel_reason(text: &str) -> Option<Reason> {
    use serde::Deserialize;
    use serde::de::IntoDeserializer;
    let name: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
        text.into_deserializer();
    Reason::deserialize(name).ok()
}

pub(super) fn status_name(s: LedgerStatus) -> &'static str {
    match s {
        LedgerStatus::Claimed => "claimed",
        LedgerStatus::Done => "done",
        LedgerStatus::Failed => "failed",
    }
}

/// The replay's store, recording what happened when (the ledger itself is the memory store's).
pub(super) struct Recording {
    pub(super) inner: MemoryStore,
    pub(super) log: Arc<Mutex<Log>>,
}

impl Recording {
    fn lock(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Store for Recording {
    async fn ledger_status(&self, key: &str) -> Result<Option<LedgerStatus>, StoreError> {
        self.inner.ledger_status(key).await
    }
    async fn claim(&self, key: &str) -> Result<Claim, StoreError> {
        self.inner.claim(key).await
    }
    async fn record(
        &self,
        key: &str,
        status: LedgerStatus,
        decided: Decided<'_>,
    ) -> Result<(), StoreError> {
        self.inner.record(key, status, decided).await?;
        let mut log = self.lock();
        let stamp = log.current.clone();
        log.written.insert(key.to_string(), stamp);
        Ok(())
    }
    async fn unclaim(&self, key: &str) -> Result<(), StoreError> {
        self.inner.unclaim(key).await
    }
    async fn note(&self, key: &str, note: &str) -> Result<(), StoreError> {
        self.inner.note(key, note).await
    }
    async fn noted(&self, prefix: &str) -> Result<Vec<crate::store::Noted>, StoreError> {
        self.inner.noted(prefix).await
    }
    async fn schedule(&self, timer: Timer) -> Result<bool, StoreError> {
        let (payment_id, due) = (timer.payment_id.clone(), timer.due);
        let new = self.inner.schedule(timer).await?;
        if new {
            let mut log = self.lock();
            let scheduled = log.current.clone();
            log.timers.insert(
                payment_id,
                TimerSeen {
                    due,
                    scheduled,
                    fired: None,
                },
            );
        }
        Ok(new)
    }
    async fn take_due(&self, now: Timestamp, limit: usize) -> Result<Vec<Timer>, StoreError> {
        let due = self.inner.take_due(now, limit).await?;
        let mut log = self.lock();
        let origin = match &log.current.origin {
            Some(o) if now != DateTime::<chrono::Utc>::MAX_UTC => format!("before {o}"),
            _ => "at the end of the input".to_string(),
        };
        // Replay stamps a timer's decision with its due time: it fires "at" it.
        for t in &due {
            if let Some(seen) = log.timers.get_mut(&t.payment_id) {
                seen.fired = Some(Stamp {
                    at: Some(format_timestamp(&t.due)),
                    message_id: None,
                    message_type: None,
                    origin: Some(origin.clone()),
                });
            }
        }
        Ok(due)
    }
    async fn renew_timer(&self, timer: &Timer) -> Result<bool, StoreError> {
        self.inner.renew_timer(timer).await
    }
    async fn timer_done(&self, timer: &Timer) -> Result<(), StoreError> {
        self.inner.timer_done(timer).await
    }
    async fn retry_timer(&self, timer: &Timer, due: Timestamp) -> Result<(), StoreError> {
        self.inner.retry_timer(timer, due).await
    }
    async fn recheck_timer(&self, timer: &Timer, due: Timestamp) -> Result<(), StoreError> {
        self.inner.recheck_timer(timer, due).await
    }
    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        self.inner.next_due().await
    }
    async fn is_processed(&self, message_id: &str) -> Result<bool, StoreError> {
        self.inner.is_processed(message_id).await
    }
    async fn mark_processed(&self, message_id: &str) -> Result<(), StoreError> {
        self.inner.mark_processed(message_id).await
    }
    async fn timers_pending(&self) -> Result<u64, StoreError> {
        self.inner.timers_pending().await
    }
    async fn record_sequence(&self, resource_id: &str, sequence: u64) -> Result<(), StoreError> {
        self.inner.record_sequence(resource_id, sequence).await
    }
    async fn latest_sequence(&self, resource_id: &str) -> Result<Option<u64>, StoreError> {
        self.inner.latest_sequence(resource_id).await
    }
    async fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush().await
    }
    fn lease(&self) -> Option<Duration> {
        self.inner.lease()
    }
    async fn renew(&self, key: &str) -> Result<bool, StoreError> {
        self.inner.renew(key).await
    }
}

// ------------------------------------------------------------------------------------------------
// The explanation
