//! The durable [`Store`]: an embedded SQLite file (`sqlite://path`, the default) or PostgreSQL
//! (`postgres://…`, for several replicas on one subscription or queue). Migrations are embedded
//! and run at start.
//!
//! What must be durable before a message is acked — ledger claims and outcomes, scheduled
//! timers — is written at once. What only saves work — processed message ids and the latest
//! sequence numbers — is buffered and written in batches, so the store does not cost a write
//! per message. SQLite runs in WAL mode with `synchronous = NORMAL`: a commit is durable
//! against a process crash (kill -9) without an fsync; the WAL is synced at checkpoints. Its
//! statements run on the caller's thread ([`super::sqlite`]); PostgreSQL's go through sqlx.
//!
//! Claims and taken timers carry a lease: a worker that dies holding one leaves it to be taken
//! over once the lease has passed. The executors re-read commercetools before writing, so the
//! takeover finds out whether the crashed attempt already took effect.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqliteLockingMode, SqlitePoolOptions,
    SqliteSynchronous,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::sqlite::Lite;
use super::{Claim, LedgerStatus, Store, StoreError, Timer};
use crate::message::Timestamp;

/// How long processed message ids are remembered (Pub/Sub retains messages for 7 days).
const PROCESSED_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Buffered writes are flushed at this size, or by the background flusher.
const BATCH: usize = 512;
/// Rows per multi-row INSERT when a batch is written (2 parameters each).
const ROWS_PER_STATEMENT: usize = 500;
/// Entries remembered per [`Known`] set before it is cleared. The sets only spare a read of
/// what was recently written, and a story's messages arrive within minutes of each other, so
/// a few thousand recent stories are enough. At about 100 B an entry the three sets hold at
/// most ~5 MB; at 100,000 they grew the worker's RSS by 27 MB over the 1M-message soak.
const KNOWN_MAX: usize = 16_384;

/// Where the state lives.
enum Pool {
    /// The embedded file, its statements run inline.
    Sqlite(Lite),
    /// The server replicas share.
    Postgres {
        /// The connections.
        pool: PgPool,
        /// Questions for the batching lookup task ([`answer_lookups`]); it ends with the store.
        lookups: mpsc::Sender<Lookup>,
    },
}

#[derive(Default)]
struct Buffer {
    processed: HashSet<String>,
    sequences: HashMap<String, u64>,
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
    fn settle(&mut self, key: &str, status: LedgerStatus) {
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

/// `rows` rows of two parameters: `($1, $2), ($3, $4), …`.
fn pairs(rows: usize) -> String {
    pairs_then(rows, "")
}

/// [`pairs`] with constant columns after the two parameters: `rest` is `, 'pending', 0`, say.
fn pairs_then(rows: usize, rest: &str) -> String {
    (0..rows)
        .map(|i| format!("(${}, ${}{rest})", 2 * i + 1, 2 * i + 2))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Questions that share one query at most.
const LOOKUPS_PER_QUERY: usize = 64;

/// A read the lookup task answers, and where its answer goes.
enum Lookup {
    /// Is this message id processed (and not expired)?
    Processed(String, oneshot::Sender<Result<bool, StoreError>>),
    /// What does the ledger hold for this key?
    Ledger(
        String,
        oneshot::Sender<Result<Option<LedgerStatus>, StoreError>>,
    ),
    /// Store a pending timer for this payment (due, in ms) unless it ever had one; answers
    /// whether it was new. A write, answered only once it is committed.
    Schedule(String, i64, oneshot::Sender<Result<bool, StoreError>>),
}

/// Answers PostgreSQL point reads, and the timer inserts, in batches. Every message that can
/// make an action due asks whether it was processed, every decision asks the ledger about keys
/// never seen before, and every authorized payment schedules its grace-period check; one
/// round trip each would make them the store's busiest statements. Questions that arrive while
/// a statement runs are answered together by the next one: `IN (…)` or a multi-row `INSERT`
/// with a power-of-two number of placeholders (padded by repeating a value), so the few
/// statement shapes stay prepared.
async fn answer_lookups(pool: PgPool, display: String, mut rx: mpsc::Receiver<Lookup>) {
    let mut batch: Vec<Lookup> = Vec::with_capacity(LOOKUPS_PER_QUERY);
    while rx.recv_many(&mut batch, LOOKUPS_PER_QUERY).await > 0 {
        let mut ids = Vec::new();
        let mut keys = Vec::new();
        let mut timers: Vec<(&str, i64)> = Vec::new();
        for q in &batch {
            match q {
                Lookup::Processed(id, _) => ids.push(id.as_str()),
                Lookup::Ledger(key, _) => keys.push(key.as_str()),
                Lookup::Schedule(pid, due, _) => {
                    if !timers.iter().any(|(p, _)| p == pid) {
                        timers.push((pid.as_str(), *due));
                    }
                }
            }
        }
        let mut inserted = if timers.is_empty() {
            Ok(HashSet::new())
        } else {
            insert_timers(&pool, &timers)
                .await
                .map_err(|e| err("scheduling grace-period checks", &display, e))
        };
        let fail = |e: sqlx::Error| err("reading the state store", &display, e);
        let processed = if ids.is_empty() {
            Ok(HashMap::new())
        } else {
            among(
                &pool,
                "SELECT message_id, '' FROM processed WHERE expires_at >= {now} AND message_id IN ({list})",
                &ids,
            )
            .await
            .map_err(fail)
        };
        let ledger = if keys.is_empty() {
            Ok(HashMap::new())
        } else {
            among(
                &pool,
                "SELECT key, status FROM ledger WHERE key IN ({list})",
                &keys,
            )
            .await
            .map_err(fail)
        };
        for q in batch.drain(..) {
            // The asker may have gone (shutdown); nothing to do then.
            match q {
                Lookup::Processed(id, reply) => {
                    let _ = reply.send(processed.clone().map(|found| found.contains_key(&id)));
                }
                Lookup::Ledger(key, reply) => {
                    let _ = reply.send(
                        ledger
                            .clone()
                            .map(|found| found.get(&key).map(|s| status_of(s))),
                    );
                }
                // A payment asked twice in one batch is new for its first asker only.
                Lookup::Schedule(pid, _, reply) => {
                    let _ = reply.send(match &mut inserted {
                        Ok(set) => Ok(set.remove(&pid)),
                        Err(e) => Err(e.clone()),
                    });
                }
            }
        }
    }
}

/// Inserts pending timers for `timers` (distinct payment ids, due in ms) in one statement;
/// returns the payment ids that had no timer before.
async fn insert_timers(
    pool: &PgPool,
    timers: &[(&str, i64)],
) -> Result<HashSet<String>, sqlx::Error> {
    let slots = timers.len().next_power_of_two();
    let rows = pairs_then(slots, ", 'pending', 0");
    // A padding row repeats the first one: it conflicts and is skipped.
    let sql = format!(
        "INSERT INTO timers (payment_id, due, state, taken_until) VALUES {rows} ON CONFLICT (payment_id) DO NOTHING RETURNING payment_id"
    );
    let padded = timers
        .iter()
        .chain(std::iter::repeat(&timers[0]))
        .take(slots);
    // Only placeholders are generated; the values are bound.
    let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
    for (pid, due) in padded {
        q = q.bind(*pid).bind(*due);
    }
    let new: Vec<String> = q.fetch_all(pool).await?;
    Ok(new.into_iter().collect())
}

/// Runs `template` (two text columns: the value asked about and an answer) with `{list}`
/// replaced by placeholders for `values` and `{now}` by one for the current time.
async fn among(
    pool: &PgPool,
    template: &str,
    values: &[&str],
) -> Result<HashMap<String, String>, sqlx::Error> {
    let slots = values.len().next_power_of_two();
    let uses_now = template.contains("{now}");
    // `{now}` comes first in the statement, so it is parameter 1.
    let first = usize::from(uses_now) + 1;
    let list = (first..first + slots)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = template.replace("{now}", "$1").replace("{list}", &list);
    let now = now_ms();
    let padded = values
        .iter()
        .chain(std::iter::repeat(&values[0]))
        .take(slots);
    // Only placeholders are generated; the values are bound.
    let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
    if uses_now {
        q = q.bind(now);
    }
    for v in padded {
        q = q.bind(*v);
    }
    let rows: Vec<(String, String)> = q.fetch_all(pool).await?;
    Ok(rows.into_iter().collect())
}

/// The durable store.
pub struct SqlStore {
    /// The connection pool.
    pool: Pool,
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
}

fn ms(t: Timestamp) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> Timestamp {
    DateTime::from_timestamp_millis(v).unwrap_or(DateTime::UNIX_EPOCH)
}

fn now_ms() -> i64 {
    ms(Utc::now())
}

fn err(what: &str, display: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("{what} ({display}): {e}"))
}

/// Names the likely cause of SQLite's terse errors at start: "database is locked" (another
/// worker) and "disk I/O error" (with an exclusive lock, what a read-only file or directory
/// gives: the write-ahead log cannot be created).
fn open_hint(e: impl std::fmt::Display, file: &std::path::Path) -> String {
    let text = e.to_string();
    if text.contains("database is locked") {
        format!(
            "{text} (another payrules worker holds this file; a SQLite state store serves one worker, replicas need PostgreSQL)"
        )
    } else if text.contains("I/O error") && !writable(file) {
        format!("{text} (the file or its directory is readonly: the state store must be writable)")
    } else {
        text
    }
}

/// Whether the file (if it exists) can be opened for writing and a file created beside it.
fn writable(file: &std::path::Path) -> bool {
    let file_ok = !file.exists() || std::fs::OpenOptions::new().write(true).open(file).is_ok();
    let mut probe = file.as_os_str().to_owned();
    probe.push(format!("-probe-{}", std::process::id()));
    let dir_ok = std::fs::File::create(&probe).is_ok();
    let _ = std::fs::remove_file(&probe);
    file_ok && dir_ok
}

/// The URL without its password.
fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((creds, host)) => {
                let user = creds.split(':').next().unwrap_or("");
                format!("{scheme}://{user}:****@{host}")
            }
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

fn status_of(s: &str) -> LedgerStatus {
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

/// Opens the SQLite file at `url`, creating and migrating it, and hands it over to [`Lite`].
///
/// sqlx creates and migrates the file (the same migration machinery as PostgreSQL's) on a
/// connection that is closed again; the long-lived connection is opened after it.
async fn open_sqlite(url: &str, display: &str, started: &str) -> Result<Lite, StoreError> {
    let busy = Duration::from_secs(5);
    let opts = SqliteConnectOptions::from_str(url)
        .map_err(|e| err("invalid SQLite URL", display, e))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        // The file belongs to one worker (replicas share PostgreSQL): an exclusive lock, held
        // by one connection for the process' life, keeps a second worker out and spares every
        // statement the file locking and the page-cache revalidation that sharing needs. A
        // second worker fails at start (after the busy timeout).
        .locking_mode(SqliteLockingMode::Exclusive)
        .busy_timeout(busy);
    let file = opts.get_filename().to_path_buf();
    let hint = |what: &str, e: &dyn std::fmt::Display| err(what, display, open_hint(e, &file));
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(opts)
        .await
        .map_err(|e| hint("opening the SQLite state store", &e))?;
    let migrated = sqlx::migrate!("migrations/sqlite").run(&pool).await;
    // Closed before the file is reopened: the exclusive lock goes with this connection.
    pool.close().await;
    migrated.map_err(|e| hint("migrating the SQLite state store", &e))?;
    Lite::open(&file, busy, started).map_err(|e| hint("opening the SQLite state store", &e))
}

impl SqlStore {
    /// Opens (creating if needed) the store at `url` and runs the migrations.
    ///
    /// # Errors
    /// The database cannot be opened, is not a database, is read-only, or is unreachable.
    pub async fn connect(url: &str, lease: Duration) -> Result<Self, StoreError> {
        let display = redact(url);
        let owner = format!(
            "{}-{}-{:08x}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "payrules".into()),
            std::process::id(),
            fastrand::u32(..)
        );
        // Written at every start: a write proves the store is writable now, not at the first
        // message.
        let started = format!("{owner} at {}", Utc::now().to_rfc3339());
        let pool = if url.starts_with("sqlite:") {
            Pool::Sqlite(open_sqlite(url, &display, &started).await?)
        } else {
            let opts = PgConnectOptions::from_str(url)
                .map_err(|e| err("invalid PostgreSQL URL", &display, e))?;
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await
                .map_err(|e| err("connecting to the PostgreSQL state store", &display, e))?;
            sqlx::migrate!("migrations/postgres")
                .run(&pool)
                .await
                .map_err(|e| err("migrating the PostgreSQL state store", &display, e))?;
            sqlx::query(
                "INSERT INTO meta (key, value) VALUES ('last_start', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
            )
            .bind(&started)
            .execute(&pool)
            .await
            .map_err(|e| err("writing to the state store", &display, e))?;
            let (lookups, questions) = mpsc::channel(LOOKUPS_PER_QUERY * 4);
            tokio::spawn(answer_lookups(pool.clone(), display.clone(), questions));
            Pool::Postgres { pool, lookups }
        };
        let store = Self {
            pool,
            owner,
            lease,
            buffer: Arc::new(Mutex::new(Buffer::default())),
            known: Mutex::new(Known::default()),
            flushing: tokio::sync::Mutex::new(()),
            display,
        };
        store.purge_expired().await?;
        Ok(store)
    }

    fn buffer(&self) -> MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn known(&self) -> MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the PostgreSQL lookup task and waits for its answer.
    async fn ask<T>(
        &self,
        lookups: &mpsc::Sender<Lookup>,
        question: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Lookup,
    ) -> Result<T, StoreError> {
        let gone = || StoreError(format!("the lookup task of {} stopped", self.display));
        let (reply, answer) = oneshot::channel();
        lookups.send(question(reply)).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Whether no one else writes this database (SQLite, locked exclusively).
    fn sole_writer(&self) -> bool {
        matches!(self.pool, Pool::Sqlite(_))
    }

    fn fail(&self, what: &str, e: impl std::fmt::Display) -> StoreError {
        err(what, &self.display, e)
    }

    /// Removes expired processed ids.
    ///
    /// # Errors
    /// A database failure.
    pub async fn purge_expired(&self) -> Result<(), StoreError> {
        let now = now_ms();
        match &self.pool {
            Pool::Sqlite(lite) => lite.purge_expired(now).map_err(|e| self.fail(PURGE, e)),
            Pool::Postgres { pool, .. } => {
                sqlx::query("DELETE FROM processed WHERE expires_at < $1")
                    .bind(now)
                    .execute(pool)
                    .await
                    .map(|_| ())
                    .map_err(|e| self.fail(PURGE, e))
            }
        }
    }

    /// Writes buffered processed ids and sequence numbers in one transaction.
    async fn write_batch(
        &self,
        processed: &[String],
        sequences: &[(String, u64)],
    ) -> Result<(), StoreError> {
        let expires = now_ms() + PROCESSED_TTL.as_millis() as i64;
        let pool = match &self.pool {
            Pool::Sqlite(lite) => {
                return lite
                    .write_batch(processed, expires, sequences)
                    .map_err(|e| self.fail(WRITE_BATCH, e));
            }
            Pool::Postgres { pool, .. } => pool,
        };
        let result: Result<(), sqlx::Error> = async {
            let mut tx = pool.begin().await?;
            // Multi-row statements: one round trip per few hundred rows, not per row. The keys
            // of one batch are distinct (they come from a set and a map).
            for chunk in processed.chunks(ROWS_PER_STATEMENT) {
                let sql = format!(
                    "INSERT INTO processed (message_id, expires_at) VALUES {} ON CONFLICT (message_id) DO NOTHING",
                    pairs(chunk.len())
                );
                // Only placeholders are generated; the values are bound.
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
                for id in chunk {
                    q = q.bind(id).bind(expires);
                }
                q.execute(&mut *tx).await?;
            }
            for chunk in sequences.chunks(ROWS_PER_STATEMENT) {
                let sql = format!(
                    "INSERT INTO sequences (resource_id, sequence) VALUES {} ON CONFLICT (resource_id) DO UPDATE SET sequence = excluded.sequence WHERE sequences.sequence < excluded.sequence",
                    pairs(chunk.len())
                );
                // Only placeholders are generated; the values are bound.
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
                for (rid, seq) in chunk {
                    q = q.bind(rid).bind(i64::try_from(*seq).unwrap_or(i64::MAX));
                }
                q.execute(&mut *tx).await?;
            }
            tx.commit().await
        }
        .await;
        result.map_err(|e| self.fail(WRITE_BATCH, e))
    }

    async fn flush_if_full(&self) -> Result<(), StoreError> {
        let full = {
            let b = self.buffer();
            b.processed.len() + b.sequences.len() >= BATCH
        };
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
        match &self.pool {
            Pool::Sqlite(lite) => lite
                .ledger(key)
                .map(|s| s.as_deref().map(status_of))
                .map_err(|e| self.fail(READ, e)),
            Pool::Postgres { lookups, .. } => {
                self.ask(lookups, |reply| Lookup::Ledger(key.to_string(), reply))
                    .await
            }
        }
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
            Some(s @ (LedgerStatus::Done | LedgerStatus::Failed)) => self.known().settle(key, s),
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
        let now = now_ms();
        let until = now + self.lease.as_millis() as i64;
        // One statement: insert the claim, or take over a claim whose lease has passed.
        let won = match &self.pool {
            Pool::Sqlite(lite) => lite
                .claim(key, &self.owner, until, now)
                .map_err(|e| self.fail(CLAIM, e))?,
            Pool::Postgres { pool, .. } => sqlx::query_scalar::<_, String>(
                "INSERT INTO ledger (key, status, owner, claimed_until, updated_at) VALUES ($1, 'claimed', $2, $3, $4)
                 ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, claimed_until = excluded.claimed_until, updated_at = excluded.updated_at
                 WHERE ledger.status = 'claimed' AND ledger.claimed_until <= $4
                 RETURNING key",
            )
            .bind(key)
            .bind(&self.owner)
            .bind(until)
            .bind(now)
            .fetch_optional(pool)
            .await
            .map_err(|e| self.fail(CLAIM, e))?
            .is_some(),
        };
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

    async fn settle(&self, key: &str, status: LedgerStatus) -> Result<(), StoreError> {
        const SETTLE: &str = "recording an action's outcome";
        let s = status_text(status);
        let now = now_ms();
        match &self.pool {
            Pool::Sqlite(lite) => lite
                .settle(key, s, &self.owner, now)
                .map_err(|e| self.fail(SETTLE, e))?,
            Pool::Postgres { pool, .. } => sqlx::query(
                "INSERT INTO ledger (key, status, owner, claimed_until, updated_at) VALUES ($1, $2, $3, 0, $4)
                 ON CONFLICT (key) DO UPDATE SET status = excluded.status, owner = excluded.owner, claimed_until = 0, updated_at = excluded.updated_at",
            )
            .bind(key)
            .bind(s)
            .bind(&self.owner)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(|e| self.fail(SETTLE, e))?,
        }
        match status {
            LedgerStatus::Claimed if self.sole_writer() => {
                self.known().unsettled(key, Some(status))
            }
            LedgerStatus::Claimed => {}
            settled => self.known().settle(key, settled),
        }
        Ok(())
    }

    fn lease(&self) -> Option<Duration> {
        Some(self.lease)
    }

    async fn renew(&self, key: &str) -> Result<bool, StoreError> {
        const RENEW: &str = "renewing a claim";
        let until = now_ms() + self.lease.as_millis() as i64;
        match &self.pool {
            Pool::Sqlite(lite) => lite
                .renew(key, &self.owner, until)
                .map_err(|e| self.fail(RENEW, e)),
            Pool::Postgres { pool, .. } => sqlx::query(
                "UPDATE ledger SET claimed_until = $3 WHERE key = $1 AND status = 'claimed' AND owner = $2",
            )
            .bind(key)
            .bind(&self.owner)
            .bind(until)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1)
            .map_err(|e| self.fail(RENEW, e)),
        }
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        const RELEASE: &str = "releasing a claim";
        let result = match &self.pool {
            Pool::Sqlite(lite) => lite
                .release(key, &self.owner)
                .map_err(|e| self.fail(RELEASE, e)),
            Pool::Postgres { pool, .. } => sqlx::query(
                "DELETE FROM ledger WHERE key = $1 AND status = 'claimed' AND owner = $2",
            )
            .bind(key)
            .bind(&self.owner)
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(|e| self.fail(RELEASE, e)),
        };
        // Deleted only if the claim was ours: the row's fate is not known here.
        let mut known = self.known();
        known.unsettled.remove(key);
        known.writes += 1;
        result
    }

    async fn schedule(&self, timer: Timer) -> Result<bool, StoreError> {
        if self.known().scheduled.contains(&timer.payment_id) {
            return Ok(false);
        }
        let new = match &self.pool {
            Pool::Sqlite(lite) => lite
                .schedule(&timer.payment_id, ms(timer.due))
                .map_err(|e| self.fail("scheduling a grace-period check", e))?,
            Pool::Postgres { lookups, .. } => {
                self.ask(lookups, |reply| {
                    Lookup::Schedule(timer.payment_id.clone(), ms(timer.due), reply)
                })
                .await?
            }
        };
        if new {
            debug!(payment_id = %timer.payment_id, "timer stored");
        }
        self.known().scheduled(&timer.payment_id);
        Ok(new)
    }

    async fn take_due(&self, now: Timestamp, limit: usize) -> Result<Vec<Timer>, StoreError> {
        const TAKE: &str = "taking due grace-period checks";
        let now = ms(now);
        let wall = now_ms();
        let until = wall + self.lease.as_millis() as i64;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match &self.pool {
            Pool::Sqlite(lite) => lite
                .take_due(now, wall, until, limit)
                .map_err(|e| self.fail(TAKE, e))?,
            // Two replicas never take the same timer: the rows are locked, and a locked row
            // is skipped rather than waited for.
            Pool::Postgres { pool, .. } => sqlx::query(
                "UPDATE timers SET state = 'taken', taken_until = $1
                 WHERE payment_id IN (SELECT payment_id FROM timers
                     WHERE (state = 'pending' AND due <= $2) OR (state = 'taken' AND taken_until <= $3 AND due <= $2)
                     ORDER BY due, payment_id LIMIT $4 FOR UPDATE SKIP LOCKED)
                 RETURNING payment_id, due",
            )
            .bind(until)
            .bind(now)
            .bind(wall)
            .bind(limit)
            .fetch_all(pool)
            .await
            .map(|rows| {
                rows.iter()
                    .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
                    .collect::<Vec<_>>()
            })
            .map_err(|e| self.fail(TAKE, e))?,
        };
        let mut timers: Vec<Timer> = rows
            .into_iter()
            .map(|(payment_id, due)| Timer {
                payment_id,
                due: from_ms(due),
            })
            .collect();
        timers.sort_by(|a, b| (a.due, &a.payment_id).cmp(&(b.due, &b.payment_id)));
        Ok(timers)
    }

    async fn timer_done(&self, timer: &Timer) -> Result<(), StoreError> {
        const DONE: &str = "completing a grace-period check";
        match &self.pool {
            Pool::Sqlite(lite) => lite
                .timer_done(&timer.payment_id)
                .map_err(|e| self.fail(DONE, e)),
            Pool::Postgres { pool, .. } => {
                sqlx::query("UPDATE timers SET state = 'done' WHERE payment_id = $1")
                    .bind(&timer.payment_id)
                    .execute(pool)
                    .await
                    .map(|_| ())
                    .map_err(|e| self.fail(DONE, e))
            }
        }
    }

    async fn retry_timer(&self, timer: &Timer, due: Timestamp) -> Result<(), StoreError> {
        const RETRY: &str = "rescheduling a grace-period check";
        match &self.pool {
            Pool::Sqlite(lite) => lite
                .retry_timer(&timer.payment_id, ms(due))
                .map_err(|e| self.fail(RETRY, e)),
            Pool::Postgres { pool, .. } => sqlx::query(
                "UPDATE timers SET state = 'pending', due = $2, taken_until = 0 WHERE payment_id = $1",
            )
            .bind(&timer.payment_id)
            .bind(ms(due))
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(|e| self.fail(RETRY, e)),
        }
    }

    async fn timers_pending(&self) -> Result<u64, StoreError> {
        const COUNT: &str = "counting the pending grace-period checks";
        let n: i64 = match &self.pool {
            Pool::Sqlite(lite) => lite.timers_pending().map_err(|e| self.fail(COUNT, e))?,
            Pool::Postgres { pool, .. } => {
                sqlx::query_scalar("SELECT COUNT(*) FROM timers WHERE state <> 'done'")
                    .fetch_one(pool)
                    .await
                    .map_err(|e| self.fail(COUNT, e))?
            }
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        const NEXT: &str = "reading the next grace-period check";
        // A taken timer whose lease passed counts too: it will be taken over.
        let v: Option<i64> = match &self.pool {
            Pool::Sqlite(lite) => lite.next_due().map_err(|e| self.fail(NEXT, e))?,
            Pool::Postgres { pool, .. } => sqlx::query_scalar(
                "SELECT MIN(CASE WHEN state = 'pending' THEN due ELSE taken_until END) FROM timers WHERE state <> 'done'",
            )
            .fetch_one(pool)
            .await
            .map_err(|e| self.fail(NEXT, e))?,
        };
        Ok(v.map(from_ms))
    }

    async fn is_processed(&self, message_id: &str) -> Result<bool, StoreError> {
        if self.buffer().processed.contains(message_id) {
            return Ok(true);
        }
        match &self.pool {
            Pool::Sqlite(lite) => lite
                .processed(message_id, now_ms())
                .map_err(|e| self.fail(READ, e)),
            Pool::Postgres { lookups, .. } => {
                self.ask(lookups, |reply| {
                    Lookup::Processed(message_id.to_string(), reply)
                })
                .await
            }
        }
    }

    async fn mark_processed(&self, message_id: &str) -> Result<(), StoreError> {
        self.buffer().processed.insert(message_id.to_string());
        self.flush_if_full().await
    }

    async fn record_sequence(&self, resource_id: &str, sequence: u64) -> Result<(), StoreError> {
        {
            let mut b = self.buffer();
            let e = b
                .sequences
                .entry(resource_id.to_string())
                .or_insert(sequence);
            *e = (*e).max(sequence);
        }
        self.flush_if_full().await
    }

    async fn latest_sequence(&self, resource_id: &str) -> Result<Option<u64>, StoreError> {
        const SEQ: &str = "reading sequence numbers";
        let buffered = self.buffer().sequences.get(resource_id).copied();
        let stored: Option<i64> = match &self.pool {
            Pool::Sqlite(lite) => lite.sequence(resource_id).map_err(|e| self.fail(SEQ, e))?,
            Pool::Postgres { pool, .. } => {
                sqlx::query_scalar("SELECT sequence FROM sequences WHERE resource_id = $1")
                    .bind(resource_id)
                    .fetch_optional(pool)
                    .await
                    .map_err(|e| self.fail(SEQ, e))?
            }
        };
        Ok(buffered.max(stored.and_then(|s| u64::try_from(s).ok())))
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let guard = self.flushing.lock().await;
        self.flush_locked(guard).await
    }
}
