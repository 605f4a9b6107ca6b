//! The in-memory [`Store`]: replay, tests, and `run` without a durable store.

use std::collections::BTreeSet;

/// Keyed by ids and looked up per message: a fast (seeded) hasher, not SipHash.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::{Claim, Decided, LedgerEntry, LedgerStatus, Noted, Store, StoreError, Timer};
use crate::message::Timestamp;

/// A note on a ledger key ([`Store::note`]).
#[derive(Debug)]
struct Note {
    /// What the attempt wrote.
    text: Box<str>,
    /// The claim was given back ([`Store::unclaim`]) with this note on it: the key stays
    /// claimed, the next claim takes it over at once, and no note is written until then.
    released: bool,
}

#[derive(Debug, Default)]
struct Inner {
    /// `Box<str>` keys (not `String`): a replay holds one or two per payment story.
    ledger: HashMap<Box<str>, LedgerStatus>,
    /// Notes of the keys that have one, apart from `ledger`: only captures and refunds with
    /// a store write them (never in a replay), so the ledger's entries stay as small as they
    /// were.
    notes: HashMap<Box<str>, Note>,
    /// Payments that ever had a timer: "first seen authorized" happens once.
    scheduled: HashSet<Box<str>>,
    /// Pending timers ordered by (due, payment id): deterministic firing order.
    pending: BTreeSet<(Timestamp, String)>,
    /// Taken but not yet done.
    taken: HashSet<String>,
    /// Recheck counts of the payments rechecked at least once (see [`Timer::rechecks`]).
    rechecks: HashMap<Box<str>, u32>,
    processed: HashSet<String>,
    sequences: HashMap<String, u64>,
}

/// A [`Store`] in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Timers pending or taken.
    pub fn timers_outstanding(&self) -> usize {
        let g = self.lock();
        g.pending.len() + g.taken.len()
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn ledger_status(&self, key: &str) -> Result<Option<LedgerStatus>, StoreError> {
        Ok(self.lock().ledger.get(key).copied())
    }

    async fn claim(&self, key: &str) -> Result<Claim, StoreError> {
        let mut g = self.lock();
        if let Some(status) = g.ledger.get(key).copied() {
            // A claim given back with its note is taken over at once, the note kept.
            if status == LedgerStatus::Claimed
                && let Some(note) = g.notes.get_mut(key)
                && note.released
            {
                note.released = false;
                return Ok(Claim::Acquired);
            }
            return Ok(Claim::Exists(status));
        }
        g.ledger.insert(key.into(), LedgerStatus::Claimed);
        Ok(Claim::Acquired)
    }

    async fn record(
        &self,
        key: &str,
        status: LedgerStatus,
        _decided: Decided<'_>,
    ) -> Result<(), StoreError> {
        self.lock().ledger.insert(key.into(), status);
        Ok(())
    }

    async fn unclaim(&self, key: &str) -> Result<(), StoreError> {
        let mut g = self.lock();
        if g.ledger.get(key) == Some(&LedgerStatus::Claimed) {
            match g.notes.get_mut(key) {
                // Kept, with its note, for the next attempt to read (see `Store::unclaim`).
                Some(note) => note.released = true,
                None => {
                    g.ledger.remove(key);
                }
            }
        }
        Ok(())
    }

    async fn note(&self, key: &str, note: &str) -> Result<(), StoreError> {
        let mut g = self.lock();
        // One process, one owner: a live claim is a claimed key not given back.
        let released = g.notes.get(key).is_some_and(|n| n.released);
        if g.ledger.get(key) != Some(&LedgerStatus::Claimed) || released {
            return Err(StoreError::ClaimLost {
                key: key.to_string(),
            });
        }
        g.notes.insert(
            key.into(),
            Note {
                text: note.into(),
                released: false,
            },
        );
        Ok(())
    }

    async fn noted(&self, prefix: &str) -> Result<Vec<Noted>, StoreError> {
        let g = self.lock();
        let mut out: Vec<Noted> = g
            .notes
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .filter_map(|(k, n)| {
                Some(Noted {
                    key: k.to_string(),
                    status: *g.ledger.get(k)?,
                    note: n.text.to_string(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn ledger_entry(&self, key: &str) -> Result<Option<LedgerEntry>, StoreError> {
        let g = self.lock();
        Ok(g.ledger.get(key).map(|status| LedgerEntry {
            status: *status,
            at: None,
            message_id: None,
            reason: None,
            note: g.notes.get(key).map(|n| n.text.to_string()),
        }))
    }

    async fn schedule(&self, timer: Timer) -> Result<bool, StoreError> {
        let mut g = self.lock();
        if g.scheduled.contains(timer.payment_id.as_str()) {
            return Ok(false);
        }
        g.scheduled.insert(timer.payment_id.as_str().into());
        g.pending.insert((timer.due, timer.payment_id));
        Ok(true)
    }

    async fn take_due(&self, now: Timestamp, limit: usize) -> Result<Vec<Timer>, StoreError> {
        let mut g = self.lock();
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(first) = g.pending.first() else {
                break;
            };
            if first.0 > now {
                break;
            }
            if let Some((due, payment_id)) = g.pending.pop_first() {
                g.taken.insert(payment_id.clone());
                let rechecks = g.rechecks.get(payment_id.as_str()).copied().unwrap_or(0);
                out.push(Timer {
                    payment_id,
                    due,
                    rechecks,
                });
            }
        }
        Ok(out)
    }

    async fn timer_done(&self, timer: &Timer) -> Result<(), StoreError> {
        self.lock().taken.remove(&timer.payment_id);
        Ok(())
    }

    async fn retry_timer(&self, timer: &Timer, due: Timestamp) -> Result<(), StoreError> {
        let mut g = self.lock();
        g.taken.remove(&timer.payment_id);
        g.pending.insert((due, timer.payment_id.clone()));
        Ok(())
    }

    async fn recheck_timer(&self, timer: &Timer, due: Timestamp) -> Result<(), StoreError> {
        let mut g = self.lock();
        let count = g
            .rechecks
            .entry(timer.payment_id.as_str().into())
            .or_insert(0);
        *count = count.saturating_add(1);
        g.taken.remove(&timer.payment_id);
        g.pending.insert((due, timer.payment_id.clone()));
        Ok(())
    }

    async fn timers_pending(&self) -> Result<u64, StoreError> {
        Ok(self.timers_outstanding() as u64)
    }

    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        Ok(self.lock().pending.first().map(|(due, _)| *due))
    }

    async fn is_processed(&self, message_id: &str) -> Result<bool, StoreError> {
        Ok(self.lock().processed.contains(message_id))
    }

    async fn mark_processed(&self, message_id: &str) -> Result<(), StoreError> {
        self.lock().processed.insert(message_id.to_string());
        Ok(())
    }

    async fn record_sequence(&self, resource_id: &str, sequence: u64) -> Result<(), StoreError> {
        let mut g = self.lock();
        let e = g
            .sequences
            .entry(resource_id.to_string())
            .or_insert(sequence);
        *e = (*e).max(sequence);
        Ok(())
    }

    async fn latest_sequence(&self, resource_id: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.lock().sequences.get(resource_id).copied())
    }
}
