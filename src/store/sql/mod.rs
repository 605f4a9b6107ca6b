//! The durable [`Store`]: an embedded SQLite file (`sqlite://path`, the default) or PostgreSQL
//! (`postgres://…`, for several replicas on one subscription or queue). Migrations are embedded
//! and run at start.
//!
//! What must be durable before a message is acked — ledger claims and outcomes, scheduled
//! timers — is written at once. What only saves work — processed message ids and the latest
//! sequence numbers — is buffered and written in batches, so the store does not cost a write
//! per message. The buffer is bounded ([`BUFFER_MAX`]): while its writes fail or hang, a full
//! buffer makes the messages that add to it wait, so the worker stops taking new ones, instead
//! of growing. SQLite runs in WAL mode with `synchronous = FULL`: every commit is synced, so
//! it survives a power loss as well as a process crash (kill -9), at an fsync per durable
//! write (about 0.2 ms). Its statements run on the caller's thread ([`sqlite`]); PostgreSQL's
//! go through sqlx.
//!
//! Claims and taken timers carry a lease: a worker that dies holding one leaves it to be taken
//! over once the lease has passed. The executors re-read commercetools before writing, so the
//! takeover finds out whether the crashed attempt already took effect.
//!
//! Over 600 lines on purpose: the logic both databases share (buffering, caches, leases,
//! what is written at once) lives here once, so neither backend carries its own copy.

mod backend;
mod postgres;
mod sqlite;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tracing::{debug, warn};

use super::{
    Claim, Decided, LedgerEntry, LedgerStatus, Noted, Store, StoreError, Timer, TimerEntry,
};
use crate::message::Timestamp;
use backend::{Backend, Failure};
use postgres::Pg;

/// How long processed message ids are remembered (Pub/Sub retains messages for 7 days).
const PROCESSED_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Buffered writes are flushed at this size, or by the background flusher.
const BATCH: usize = 512;
/// Entries the buffer holds at most (about 100 B each: ~200 KB). Past [`BATCH`] every adder
/// tries a flush; when the writes keep failing, or hang on a locked table, the buffer fills to
/// this and then each message that adds to it waits for room (see [`SqlStore::add_buffered`]):
/// the worker's concurrency fills with waiting messages and it takes no new ones, until the
/// store takes the writes again. Four batches leave room for the messages in flight while one
/// batch is being written.
pub const BUFFER_MAX: usize = 4 * BATCH;
/// How long a message waiting for room sleeps between its flush attempts, at most.
const ROOM_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Entries remembered per [`Known`] set before it is cleared. The sets only spare a read of
/// what was recently written, and a story's messages arrive within minutes of each other, so
/// a few thousand recent stories are enough. At about 100 B an entry the three sets hold at
/// most ~5 MB; at 100,000 they grew the worker's RSS by 27 MB over the 1M-message soak.
const KNOWN_MAX: usize = 16_384;

/// Writes that only save work, waiting for the next batch. Losing them is safe: a processed id
/// spares a redelivery its decision (redecided, the ledger finds every action done or claimed,
/// so nothing runs twice), and sequence numbers are diagnostics. No ack depends on them: a
/// message is acked once its ledger writes, made at once, are in.
#[derive(Default)]
struct Buffer {
    processed: HashSet<String>,
    sequences: HashMap<String, u64>,
}

/// One write for the buffer.
#[derive(Clone, Copy)]
enum Buffered<'a> {
    Processed(&'a str),
    Sequence(&'a str, u64),
}

impl Buffer {
    fn len(&self) -> usize {
        self.processed.len() + self.sequences.len()
    }

    /// Adds `entry` unless that would grow a full buffer; whether it was added. An entry
    /// already there (an id seen twice, a resource's newer sequence number) never grows it.
    fn add(&mut self, entry: Buffered<'_>) -> bool {
        let known = match entry {
            Buffered::Processed(id) => self.processed.contains(id),
            Buffered::Sequence(rid, _) => self.sequences.contains_key(rid),
        };
        if !known && self.len() >= BUFFER_MAX {
            return false;
        }
        match entry {
            Buffered::Processed(id) => {
                self.processed.insert(id.to_string());
            }
            Buffered::Sequence(rid, sequence) => {
                let e = self.sequences.entry(rid.to_string()).or_insert(sequence);
                *e = (*e).max(sequence);
            }
        }
        true
    }
}

/// Facts that never change once they are in the database, remembered so that they are not read
/// again on every message: keys settled for good (`done`, `failed` rows are never updated or
/// deleted) and payments that have had a timer (timer rows are never deleted). Every replica
/// may keep its own copy. Bounded: a full set is cleared, which only costs a read.
///
/// With SQLite the file is this process' alone (an exclusive lock), so what the ledger holds
/// for a key can also be remembered while it is absent or claimed (`unsettled`): nobody else
/// can change it. Every write here updates it; a release, whose effect depends on the row's
/// owner, forgets the key instead.
#[derive(Default)]
struct Known {
    settled: HashMap<String, LedgerStatus>,
    scheduled: HashSet<String>,
    unsettled: HashMap<String, Option<LedgerStatus>>,
    /// Counts ledger writes: a read that overlapped one does not remember what it saw.
    writes: u64,
}

impl Known {
    fn record(&mut self, key: &str, status: LedgerStatus) {
        if matches!(status, LedgerStatus::Done | LedgerStatus::Failed) {
            self.unsettled.remove(key);
            if self.settled.len() >= KNOWN_MAX {
                self.settled.clear();
            }
            self.settled.insert(key.to_string(), status);
        }
    }

    /// Only for a sole writer (see [`Known`]).
    fn unsettled(&mut self, key: &str, status: Option<LedgerStatus>) {
        if self.unsettled.len() >= KNOWN_MAX {
            self.unsettled.clear();
        }
        self.unsettled.insert(key.to_string(), status);
    }

    fn scheduled(&mut self, payment_id: &str) {
        if self.scheduled.len() >= KNOWN_MAX {
            self.scheduled.clear();
        }
        self.scheduled.insert(payment_id.to_string());
    }
}

/// The durable store.
pub struct SqlStore {
    /// The database: SQLite or PostgreSQL.
    backend: Backend,
    /// Identifies this worker's claims, so a crash's leftovers can be told from live ones.
    owner: String,
    /// How long a claim or a taken timer stays ours before another worker may take it over.
    lease: Duration,
    /// Writes that may be batched.
    buffer: Arc<Mutex<Buffer>>,
    /// Settled keys and scheduled payments already seen.
    known: Mutex<Known>,
    /// One flush at a time: a full buffer seen by many finishing messages at once must cost one
    /// write, not one each (they would all write the same rows).
    flushing: tokio::sync::Mutex<()>,
    /// Where the store lives, for messages (never the password).
    display: String,
    /// How far this worker's clock is off (ms); 0 but in tests ([`SqlStore::with_clock_skew`]).
    clock_skew_ms: i64,
}

/// A ledger row, as `payrules explain` reads it.
pub(super) struct LedgerRow {
    /// The status text.
    pub(super) status: String,
    /// Last written (ms since epoch).
    pub(super) at: i64,
    /// The deciding message; `None` for a grace-period check's, or rows older than the column.
    pub(super) message_id: Option<String>,
    /// The action's reason, where it has one.
    pub(super) reason: Option<String>,
    /// What an attempt wrote on its claim ([`Store::note`]); `None` when nothing was, or for
    /// rows older than the column.
    pub(super) note: Option<String>,
}

/// A grace-period timer's row, as `payrules explain` reads it.
pub(super) struct TimerRow {
    /// Due (ms since epoch).
    pub(super) due: i64,
    /// `pending`, `taken` or `done`.
    pub(super) state: String,
    /// When it was stored; `None` for rows older than the column.
    pub(super) scheduled_at: Option<i64>,
    /// When it was done; `None` before, or for rows older than the column.
    pub(super) fired_at: Option<i64>,
}

fn ms(t: Timestamp) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> Timestamp {
    DateTime::from_timestamp_millis(v).unwrap_or(DateTime::UNIX_EPOCH)
}

pub(super) fn now_ms() -> i64 {
    ms(Utc::now())
}

pub(super) fn err(what: &str, display: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(format!("{what} ({display}): {e}"))
}

/// The first string after every string starting with `prefix` (its last character counted one
/// up), so `key >= prefix AND key < end` is a range scan of the primary key; `None` for an
/// empty prefix or one ending in the last character there is.
fn prefix_end(prefix: &str) -> Option<String> {
    let last = prefix.chars().last()?;
    let next = char::from_u32(u32::from(last) + 1)?;
    let mut end = prefix[..prefix.len() - last.len_utf8()].to_string();
    end.push(next);
    Some(end)
}

pub(super) fn status_of(s: &str) -> LedgerStatus {
    match s {
        "done" => LedgerStatus::Done,
        "failed" => LedgerStatus::Failed,
        _ => LedgerStatus::Claimed,
    }
}

fn status_text(status: LedgerStatus) -> &'static str {
    match status {
        LedgerStatus::Claimed => "claimed",
        LedgerStatus::Done => "done",
        LedgerStatus::Failed => "failed",
    }
}

impl SqlStore {
    /// Opens (creating if needed) the store at `url` and runs the migrations.
    ///
    /// # Errors
    /// The database cannot be opened, is not a database, is read-only, or is unreachable.
    pub async fn connect(url: &str, lease: Duration) -> Result<Self, StoreError> {
        let display = crate::redact::mask_url(url, crate::redact::UrlKind::Plain);
        let owner = format!(
            "{}-{}-{:08x}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "payrules".into()),
            std::process::id(),
            fastrand::u32(..)
        );
        // Written at every start: a write proves the store is writable now, not at the first
        // message.
        let started = format!("{owner} at {}", Utc::now().to_rfc3339());
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite(sqlite::open_sqlite(url, &display, &started).await?)
        } else {
            Backend::Postgres(Pg::open(url, &display, &started).await?)
        };
        let store = Self {
            backend,
            owner,
            lease,
            buffer: Arc::new(Mutex::new(Buffer::default())),
            known: Mutex::new(Known::default()),
            flushing: tokio::sync::Mutex::new(()),
            display,
            clock_skew_ms: 0,
        };
        store.purge_expired().await?;
        Ok(store)
    }

    /// This worker's wall clock (ms): the time it writes beside its rows, and what SQLite's
    /// leases are measured with. PostgreSQL's leases use the server's clock instead.
    fn now_ms(&self) -> i64 {
        now_ms().saturating_add(self.clock_skew_ms)
    }

    /// The claim lease, in ms.
    fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX)
    }

    /// For tests: this worker's clock runs `skew` ahead (behind, if negative) of the real one,
    /// as a replica's clock may. Only what this worker's clock measures moves: the times it
    /// writes, and its SQLite leases; PostgreSQL's leases are the server's.
    #[doc(hidden)]
    #[must_use]
    pub fn with_clock_skew(mut self, skew: chrono::Duration) -> Self {
        self.clock_skew_ms = skew.num_milliseconds();
        self
    }

    fn buffer(&self) -> MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn known(&self) -> MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether no one else writes this database (SQLite, locked exclusively).
    fn sole_writer(&self) -> bool {
        self.backend.sole_writer()
    }

    /// The store error for a failed operation, named `what`.
    fn fail<'a>(&'a self, what: &'a str) -> impl FnOnce(Failure) -> StoreError + 'a {
        move |f| f.named(what, &self.display)
    }

    /// Removes expired processed ids.
    ///
    /// # Errors
    /// A database failure.
    pub async fn purge_expired(&self) -> Result<(), StoreError> {
        self.backend
            .purge_expired(now_ms())
            .await
            .map_err(self.fail(PURGE))
    }

    /// Writes buffered processed ids and sequence numbers in one transaction.
    async fn write_batch(
        &self,
        processed: &[String],
        sequences: &[(String, u64)],
    ) -> Result<(), StoreError> {
        let expires = now_ms() + PROCESSED_TTL.as_millis() as i64;
        self.backend
            .write_batch(processed, expires, sequences)
            .await
            .map_err(self.fail(WRITE_BATCH))
    }

    /// Entries buffered now (for tests: the bound holds while writes fail).
    #[doc(hidden)]
    pub fn buffered(&self) -> usize {
        self.buffer().len()
    }

    /// Adds `entry` to the buffer, waiting while it is full: the caller writes the buffer out
    /// itself (or waits for the flush in flight), and while that fails it retries with backoff.
    /// Waiting, not dropping or growing: a message whose entry waits is not acked yet, so a
    /// store that takes no writes holds the worker back rather than its memory growing.
    async fn add_buffered(&self, entry: Buffered<'_>) -> Result<(), StoreError> {
        let mut failures: u32 = 0;
        while !self.buffer().add(entry) {
            let guard = self.flushing.lock().await;
            if self.buffer().len() < BUFFER_MAX {
                continue; // the flush in flight made room
            }
            if let Err(e) = self.flush_locked(guard).await {
                failures = failures.saturating_add(1);
                if failures == 1 {
                    warn!(error = %e, capacity = BUFFER_MAX, "the state store's write buffer is full and cannot be written; messages wait for it");
                }
                let delay = Duration::from_millis(50)
                    .saturating_mul(2_u32.saturating_pow(failures.min(10)))
                    .min(ROOM_BACKOFF_MAX);
                tokio::time::sleep(delay).await;
            }
        }
        // The entry is buffered: a failed write now leaves it for the next flush (the
        // background flusher reports the failure), so it is not the caller's error.
        if let Err(e) = self.flush_if_full().await {
            debug!(error = %e, "writing the state store buffer failed; it is kept for the next flush");
        }
        Ok(())
    }

    async fn flush_if_full(&self) -> Result<(), StoreError> {
        let full = self.buffer().len() >= BATCH;
        if !full {
            return Ok(());
        }
        // A flush in flight takes these entries, or the next one will.
        match self.flushing.try_lock() {
            Ok(guard) => self.flush_locked(guard).await,
            Err(_) => Ok(()),
        }
    }

    /// Writes what is buffered; the caller holds the flush lock.
    async fn flush_locked(
        &self,
        _guard: tokio::sync::MutexGuard<'_, ()>,
    ) -> Result<(), StoreError> {
        let (processed, sequences) = {
            let b = self.buffer();
            (
                b.processed.iter().cloned().collect::<Vec<_>>(),
                b.sequences
                    .iter()
                    .map(|(k, v)| (k.clone(), *v))
                    .collect::<Vec<_>>(),
            )
        };
        if processed.is_empty() && sequences.is_empty() {
            return Ok(());
        }
        self.write_batch(&processed, &sequences).await?;
        // Only what was written leaves the buffer; newer entries stay.
        let mut b = self.buffer();
        for id in &processed {
            b.processed.remove(id);
        }
        for (rid, seq) in &sequences {
            if b.sequences.get(rid) == Some(seq) {
                b.sequences.remove(rid);
            }
        }
        Ok(())
    }

    /// Starts a background task that flushes the buffer every `every` (and purges expired ids
    /// now and then). It stops when the store is dropped.
    pub fn spawn_flusher(self: &Arc<Self>, every: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks: u64 = 0;
            loop {
                tokio::time::sleep(every).await;
                let Some(store) = weak.upgrade() else { return };
                if let Err(e) = store.flush().await {
                    warn!(error = %e, "flushing the state store buffer failed; will retry");
                }
                ticks += 1;
                if ticks.is_multiple_of(3000)
                    && let Err(e) = store.purge_expired().await
                {
                    warn!(error = %e, "purging expired message ids failed");
                }
            }
        });
    }

    /// What the ledger holds for `key`, from the database.
    async fn read_ledger(&self, key: &str) -> Result<Option<LedgerStatus>, StoreError> {
        self.backend.ledger(key).await.map_err(self.fail(READ))
    }
}

const PURGE: &str = "purging processed message ids";
const WRITE_BATCH: &str = "writing processed message ids";
const READ: &str = "reading the state store";

#[async_trait]
impl Store for SqlStore {
    async fn ledger_status(&self, key: &str) -> Result<Option<LedgerStatus>, StoreError> {
        let writes = {
            let known = self.known();
            if let Some(status) = known.settled.get(key) {
                return Ok(Some(*status));
            }
            if let Some(status) = known.unsettled.get(key) {
                return Ok(*status);
            }
            known.writes
        };
        let status = self.read_ledger(key).await?;
        match status {
            Some(s @ (LedgerStatus::Done | LedgerStatus::Failed)) => self.known().record(key, s),
            unsettled if self.sole_writer() => {
                let mut known = self.known();
                if known.writes == writes {
                    known.unsettled(key, unsettled);
                }
            }
            _ => {}
        }
        Ok(status)
    }

    async fn claim(&self, key: &str) -> Result<Claim, StoreError> {
        const CLAIM: &str = "claiming an action";
        if let Some(status) = self.known().settled.get(key) {
            return Ok(Claim::Exists(*status));
        }
        // One statement: insert the claim, or take over a claim whose lease has passed.
        let won = self
            .backend
            .claim(key, &self.owner, self.lease_ms(), self.now_ms())
            .await
            .map_err(self.fail(CLAIM))?;
        if won {
            let mut known = self.known();
            known.writes += 1;
            if self.sole_writer() {
                known.unsettled(key, Some(LedgerStatus::Claimed));
            }
            return Ok(Claim::Acquired);
        }
        // Someone holds it: what we remembered may predate that.
        self.known().unsettled.remove(key);
        match self.ledger_status(key).await? {
            Some(status) => Ok(Claim::Exists(status)),
            // Deleted in between (a release): try once more later.
            None => Ok(Claim::Exists(LedgerStatus::Claimed)),
        }
    }

    async fn record(
        &self,
        key: &str,
        status: LedgerStatus,
        decided: Decided<'_>,
    ) -> Result<(), StoreError> {
        const SETTLE: &str = "recording an action's outcome";
        let s = status_text(status);
        let recorded = self
            .backend
            .record(key, s, &self.owner, self.now_ms(), decided)
            .await
            .map_err(self.fail(SETTLE))?;
        if !recorded {
            // Another worker took the claim over (our lease ran out) or settled it: its
            // outcome stands, and what we remembered of the key may not.
            self.known().unsettled.remove(key);
            return Err(StoreError::ClaimLost {
                key: key.to_string(),
            });
        }
        match status {
            LedgerStatus::Claimed if self.sole_writer() => {
                self.known().unsettled(key, Some(status))
            }
            LedgerStatus::Claimed => {}
            settled => self.known().record(key, settled),
        }
        Ok(())
    }

    async fn ledger_entry(&self, key: &str) -> Result<Option<LedgerEntry>, StoreError> {
        let row = self
            .backend
            .ledger_entry(key)
            .await
            .map_err(self.fail(READ))?;
        Ok(row.map(|r| LedgerEntry {
            status: status_of(&r.status),
            at: Some(from_ms(r.at)),
            message_id: r.message_id,
            reason: r.reason,
            note: r.note,
        }))
    }

    async fn noted(&self, prefix: &str) -> Result<Vec<Noted>, StoreError> {
        let Some(to) = prefix_end(prefix) else {
            return Err(StoreError::Failed(format!(
                "cannot look up ledger keys under {prefix:?}"
            )));
        };
        let rows = self
            .backend
            .noted(prefix, &to)
            .await
            .map_err(self.fail("reading the notes of an order's return refunds"))?;
        Ok(rows
            .into_iter()
            .map(|(key, status, note)| Noted {
                key,
                status: status_of(&status),
                note,
            })
            .collect())
    }

    async fn timer_entry(&self, payment_id: &str) -> Result<Option<TimerEntry>, StoreError> {
        let row = self
            .backend
            .timer_entry(payment_id)
            .await
            .map_err(self.fail(READ))?;
        Ok(row.map(|t| TimerEntry {
            due: from_ms(t.due),
            scheduled_at: t.scheduled_at.map(from_ms),
            fired_at: t.fired_at.map(from_ms),
            fired: t.state == "done",
        }))
    }

    fn lease(&self) -> Option<Duration> {
        Some(self.lease)
    }

    async fn renew(&self, key: &str) -> Result<bool, StoreError> {
        const RENEW: &str = "renewing a claim";
        self.backend
            .renew(key, &self.owner, self.lease_ms(), self.now_ms())
            .await
            .map_err(self.fail(RENEW))
    }

    async fn unclaim(&self, key: &str) -> Result<(), StoreError> {
        const RELEASE: &str = "releasing a claim";
        let result = self
            .backend
            .unclaim(key, &self.owner)
            .await
            .map_err(self.fail(RELEASE));
        // Deleted only if the claim was ours and had no note; kept, still `claimed`, if it had
        // one: the row's fate is not known here, so it is read again (a noted key given back
        // must read as claimed, not absent: the rules count its money as given back).
        let mut known = self.known();
        known.unsettled.remove(key);
        known.writes += 1;
        result
    }

    async fn note(&self, key: &str, note: &str) -> Result<(), StoreError> {
        const NOTE: &str = "writing a note on a claim";
        let written = self
            .backend
            .note(key, &self.owner, note, self.now_ms())
            .await
            .map_err(self.fail(NOTE))?;
        // The status is unchanged, so what `known` remembers still holds.
        if written {
            Ok(())
        } else {
            Err(StoreError::ClaimLost {
                key: key.to_string(),
            })
        }
    }

    async fn schedule(&self, timer: Timer) -> Result<bool, StoreError> {
        if self.known().scheduled.contains(&timer.payment_id) {
            return Ok(false);
        }
        let new = self
            .backend
            .schedule(&timer.payment_id, ms(timer.due))
            .await
            .map_err(self.fail("scheduling a grace-period check"))?;
        if new {
            debug!(payment_id = %timer.payment_id, "timer stored");
        }
        self.known().scheduled(&timer.payment_id);
        Ok(new)
    }

    async fn take_due(&self, now: Timestamp, limit: usize) -> Result<Vec<Timer>, StoreError> {
        const TAKE: &str = "taking due grace-period checks";
        let now = ms(now);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // With PostgreSQL two replicas never take the same timer (`FOR UPDATE SKIP LOCKED`).
        let rows = self
            .backend
            .take_due(now, self.now_ms(), self.lease_ms(), limit)
            .await
            .map_err(self.fail(TAKE))?;
        let mut timers: Vec<Timer> = rows
            .into_iter()
            .map(|(payment_id, due, rechecks)| Timer {
                payment_id,
                due: from_ms(due),
                rechecks: u32::try_from(rechecks).unwrap_or(u32::MAX),
            })
            .collect();
        timers.sort_by(|a, b| (a.due, &a.payment_id).cmp(&(b.due, &b.payment_id)));
        Ok(timers)
    }

    async fn renew_timer(&self, timer: &Timer) -> Result<bool, StoreError> {
        const RENEW: &str = "renewing a grace-period check's lease";
        self.backend
            .renew_timer(
                &timer.payment_id,
                ms(timer.due),
                self.lease_ms(),
                self.now_ms(),
            )
            .await
            .map_err(self.fail(RENEW))
    }

    async fn timer_done(&self, timer: &Timer) -> Result<(), StoreError> {
        const DONE: &str = "completing a grace-period check";
        self.backend
            .timer_done(&timer.payment_id, now_ms())
            .await
            .map_err(self.fail(DONE))
    }

    async fn retry_timer(&self, timer: &Timer, due: Timestamp) -> Result<(), StoreError> {
        const RETRY: &str = "rescheduling a grace-period check";
        self.backend
            .retry_timer(&timer.payment_id, ms(due))
            .await
            .map_err(self.fail(RETRY))
    }

    async fn recheck_timer(&self, timer: &Timer, due: Timestamp) -> Result<(), StoreError> {
        const RECHECK: &str = "rescheduling a grace-period check for money in flight";
        self.backend
            .recheck_timer(&timer.payment_id, ms(due))
            .await
            .map_err(self.fail(RECHECK))
    }

    async fn timers_pending(&self) -> Result<u64, StoreError> {
        const COUNT: &str = "counting the pending grace-period checks";
        let n = self
            .backend
            .timers_pending()
            .await
            .map_err(self.fail(COUNT))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        const NEXT: &str = "reading the next grace-period check";
        // A taken timer whose lease passed counts too: it will be taken over.
        let v = self.backend.next_due().await.map_err(self.fail(NEXT))?;
        Ok(v.map(from_ms))
    }

    async fn is_processed(&self, message_id: &str) -> Result<bool, StoreError> {
        if self.buffer().processed.contains(message_id) {
            return Ok(true);
        }
        self.backend
            .processed(message_id, now_ms())
            .await
            .map_err(self.fail(READ))
    }

    async fn mark_processed(&self, message_id: &str) -> Result<(), StoreError> {
        self.add_buffered(Buffered::Processed(message_id)).await
    }

    async fn record_sequence(&self, resource_id: &str, sequence: u64) -> Result<(), StoreError> {
        self.add_buffered(Buffered::Sequence(resource_id, sequence))
            .await
    }

    async fn latest_sequence(&self, resource_id: &str) -> Result<Option<u64>, StoreError> {
        const SEQ: &str = "reading sequence numbers";
        let buffered = self.buffer().sequences.get(resource_id).copied();
        let stored = self
            .backend
            .sequence(resource_id)
            .await
            .map_err(self.fail(SEQ))?;
        Ok(buffered.max(stored.and_then(|s| u64::try_from(s).ok())))
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let guard = self.flushing.lock().await;
        self.flush_locked(guard).await
    }
}
