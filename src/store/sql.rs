//! The durable [`Store`]: an embedded SQLite file (`sqlite://path`, the default) or PostgreSQL
//! (`postgres://…`, for several replicas on one subscription or queue). Migrations are embedded
//! and run at start.
//!
//! What must be durable before a message is acked — ledger claims and outcomes, scheduled
//! timers — is written at once. What only saves work — processed message ids and the latest
//! sequence numbers — is buffered and written in batches, so the store does not cost a write
//! per message. SQLite runs in WAL mode with `synchronous = NORMAL`: a commit is durable
//! against a process crash (kill -9) without an fsync; the WAL is synced at checkpoints.
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
    SqliteConnectOptions, SqliteJournalMode, SqliteLockingMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::{Claim, LedgerStatus, Store, StoreError, Timer};
use crate::message::Timestamp;

/// How long processed message ids are remembered (Pub/Sub retains messages for 7 days).
const PROCESSED_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Buffered writes are flushed at this size, or by the background flusher.
const BATCH: usize = 512;
/// Rows per multi-row INSERT when a batch is written (2 parameters each).
const ROWS_PER_STATEMENT: usize = 500;
/// Entries remembered per [`Known`] set before it is cleared.
const KNOWN_MAX: usize = 100_000;

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same statement on whichever pool is configured.
macro_rules! on_pool {
    ($pool:expr, |$p:ident| $body:expr) => {
        match $pool {
            Pool::Sqlite($p) => $body,
            Pool::Postgres($p) => $body,
        }
    };
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

/// `rows` rows of two parameters: `(?, ?), (?, ?), …` for SQLite, `($1, $2), ($3, $4), …` for
/// PostgreSQL. Numbered parameters cost SQLite a linear name lookup per bind (quadratic for a
/// long statement), anonymous ones do not.
fn pairs(rows: usize, numbered: bool) -> String {
    pairs_then(rows, numbered, "")
}

/// [`pairs`] with constant columns after the two parameters: `rest` is `, 'pending', 0`, say.
fn pairs_then(rows: usize, numbered: bool, rest: &str) -> String {
    (0..rows)
        .map(|i| {
            if numbered {
                format!("(${}, ${}{rest})", 2 * i + 1, 2 * i + 2)
            } else {
                format!("(?, ?{rest})")
            }
        })
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

/// Answers point reads, and the timer inserts, in batches. Every message that can make an
/// action due asks whether it was processed, every decision asks the ledger about keys never
/// seen before, and every authorized payment schedules its grace-period check; one statement
/// each would make them the store's busiest statements (and, on SQLite, a hand-off to the
/// connection's thread and back per statement). Questions that arrive while a statement runs
/// are answered together by the next one: `IN (…)` or a multi-row `INSERT` with a
/// power-of-two number of placeholders (padded by repeating a value), so the few statement
/// shapes stay prepared.
async fn answer_lookups(pool: Pool, display: String, mut rx: mpsc::Receiver<Lookup>) {
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
    pool: &Pool,
    timers: &[(&str, i64)],
) -> Result<HashSet<String>, sqlx::Error> {
    let slots = timers.len().next_power_of_two();
    let numbered = matches!(pool, Pool::Postgres(_));
    let rows = pairs_then(slots, numbered, ", 'pending', 0");
    // A padding row repeats the first one: it conflicts and is skipped.
    let sql = format!(
        "INSERT INTO timers (payment_id, due, state, taken_until) VALUES {rows} ON CONFLICT (payment_id) DO NOTHING RETURNING payment_id"
    );
    let padded = timers
        .iter()
        .chain(std::iter::repeat(&timers[0]))
        .take(slots);
    // Only placeholders are generated; the values are bound.
    let new: Vec<String> = on_pool!(pool, |p| {
        let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone()));
        for (pid, due) in padded.clone() {
            q = q.bind(*pid).bind(*due);
        }
        q.fetch_all(p).await
    })?;
    Ok(new.into_iter().collect())
}

/// Runs `template` (two text columns: the value asked about and an answer) with `{list}`
/// replaced by placeholders for `values` and `{now}` by one for the current time.
async fn among(
    pool: &Pool,
    template: &str,
    values: &[&str],
) -> Result<HashMap<String, String>, sqlx::Error> {
    let slots = values.len().next_power_of_two();
    let numbered = matches!(pool, Pool::Postgres(_));
    let uses_now = template.contains("{now}");
    // `{now}` comes first in the statement, so it is parameter 1.
    let first = usize::from(uses_now) + 1;
    let list = (first..first + slots)
        .map(|i| {
            if numbered {
                format!("${i}")
            } else {
                "?".to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let sql = template
        .replace("{now}", if numbered { "$1" } else { "?" })
        .replace("{list}", &list);
    let now = now_ms();
    let padded = values
        .iter()
        .chain(std::iter::repeat(&values[0]))
        .take(slots);
    // Only placeholders are generated; the values are bound.
    let rows: Vec<(String, String)> = on_pool!(pool, |p| {
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()));
        if uses_now {
            q = q.bind(now);
        }
        for v in padded.clone() {
            q = q.bind(*v);
        }
        q.fetch_all(p).await
    })?;
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
    /// Questions for the batching lookup task ([`answer_lookups`]); it ends with the store.
    lookups: mpsc::Sender<Lookup>,
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

impl SqlStore {
    /// Opens (creating if needed) the store at `url` and runs the migrations.
    ///
    /// # Errors
    /// The database cannot be opened, is not a database, is read-only, or is unreachable.
    pub async fn connect(url: &str, lease: Duration) -> Result<Self, StoreError> {
        let display = redact(url);
        let pool = if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(|e| err("invalid SQLite URL", &display, e))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                // The file belongs to one worker (replicas share PostgreSQL): an exclusive lock,
                // held by one connection for the process' life, keeps a second worker out and
                // spares every statement the file locking and the page-cache revalidation that
                // sharing needs. A second worker fails at start (after the busy timeout).
                .locking_mode(SqliteLockingMode::Exclusive)
                .busy_timeout(Duration::from_secs(5));
            let file = opts.get_filename().to_path_buf();
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await
                .map_err(|e| {
                    err(
                        "opening the SQLite state store",
                        &display,
                        open_hint(e, &file),
                    )
                })?;
            sqlx::migrate!("migrations/sqlite")
                .run(&pool)
                .await
                .map_err(|e| {
                    err(
                        "migrating the SQLite state store",
                        &display,
                        open_hint(e, &file),
                    )
                })?;
            Pool::Sqlite(pool)
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
            Pool::Postgres(pool)
        };
        let (lookups, questions) = mpsc::channel(LOOKUPS_PER_QUERY * 4);
        tokio::spawn(answer_lookups(pool.clone(), display.clone(), questions));
        let owner = format!(
            "{}-{}-{:08x}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "payrules".into()),
            std::process::id(),
            fastrand::u32(..)
        );
        let store = Self {
            pool,
            owner,
            lease,
            buffer: Arc::new(Mutex::new(Buffer::default())),
            known: Mutex::new(Known::default()),
            flushing: tokio::sync::Mutex::new(()),
            lookups,
            display,
        };
        // A write proves the store is writable now, not at the first message.
        let started = format!("{} at {}", store.owner, Utc::now().to_rfc3339());
        on_pool!(&store.pool, |p| sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('last_start', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        )
        .bind(&started)
        .execute(p)
        .await
        .map(|_| ()))
        .map_err(|e| store.fail("writing to the state store", e))?;
        store.purge_expired().await?;
        Ok(store)
    }

    fn buffer(&self) -> MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn known(&self) -> MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn ask(&self, question: Lookup) -> Result<(), StoreError> {
        self.lookups
            .send(question)
            .await
            .map_err(|_| self.lookups_gone())
    }

    fn lookups_gone(&self) -> StoreError {
        StoreError(format!("the lookup task of {} stopped", self.display))
    }

    /// Whether no one else writes this database (SQLite, locked exclusively).
    fn sole_writer(&self) -> bool {
        matches!(self.pool, Pool::Sqlite(_))
    }

    fn fail(&self, what: &str, e: sqlx::Error) -> StoreError {
        err(what, &self.display, e)
    }

    /// Removes expired processed ids.
    ///
    /// # Errors
    /// A database failure.
    pub async fn purge_expired(&self) -> Result<(), StoreError> {
        let now = now_ms();
        on_pool!(&self.pool, |p| sqlx::query(
            "DELETE FROM processed WHERE expires_at < $1"
        )
        .bind(now)
        .execute(p)
        .await
        .map(|_| ()))
        .map_err(|e| self.fail("purging processed message ids", e))
    }

    /// Writes buffered processed ids and sequence numbers in one transaction per table.
    async fn write_batch(
        &self,
        processed: Vec<String>,
        sequences: Vec<(String, u64)>,
    ) -> Result<(), StoreError> {
        let expires = now_ms() + PROCESSED_TTL.as_millis() as i64;
        macro_rules! batch {
            ($p:ident, $numbered:expr) => {
                async {
                let mut tx = $p.begin().await?;
                // Multi-row statements: one round trip per few hundred rows, not per row. The
                // keys of one batch are distinct (they come from a set and a map).
                for chunk in processed.chunks(ROWS_PER_STATEMENT) {
                    let sql = format!("INSERT INTO processed (message_id, expires_at) VALUES {} ON CONFLICT (message_id) DO NOTHING", pairs(chunk.len(), $numbered));
                    // Only placeholders are generated; the values are bound.
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
                    for id in chunk {
                        q = q.bind(id).bind(expires);
                    }
                    q.execute(&mut *tx).await?;
                }
                for chunk in sequences.chunks(ROWS_PER_STATEMENT) {
                    let sql = format!("INSERT INTO sequences (resource_id, sequence) VALUES {} ON CONFLICT (resource_id) DO UPDATE SET sequence = excluded.sequence WHERE sequences.sequence < excluded.sequence", pairs(chunk.len(), $numbered));
                    // Only placeholders are generated; the values are bound.
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
                    for (rid, seq) in chunk {
                        q = q.bind(rid).bind(*seq as i64);
                    }
                    q.execute(&mut *tx).await?;
                }
                tx.commit().await
                }
                .await
            };
        }
        let result: Result<(), sqlx::Error> = match &self.pool {
            Pool::Sqlite(p) => batch!(p, false),
            Pool::Postgres(p) => batch!(p, true),
        };
        result.map_err(|e| self.fail("writing processed message ids", e))
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
        self.write_batch(processed.clone(), sequences.clone())
            .await?;
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
}

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
        let (reply, answer) = oneshot::channel();
        self.ask(Lookup::Ledger(key.to_string(), reply)).await?;
        let status = answer.await.map_err(|_| self.lookups_gone())??;
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
        if let Some(status) = self.known().settled.get(key) {
            return Ok(Claim::Exists(*status));
        }
        let now = now_ms();
        let until = now + self.lease.as_millis() as i64;
        // One statement: insert the claim, or take over a claim whose lease has passed.
        let won: Option<String> = on_pool!(&self.pool, |p| sqlx::query_scalar(
            "INSERT INTO ledger (key, status, owner, claimed_until, updated_at) VALUES ($1, 'claimed', $2, $3, $4)
             ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, claimed_until = excluded.claimed_until, updated_at = excluded.updated_at
             WHERE ledger.status = 'claimed' AND ledger.claimed_until <= $4
             RETURNING key"
        )
        .bind(key)
        .bind(&self.owner)
        .bind(until)
        .bind(now)
        .fetch_optional(p)
        .await)
        .map_err(|e| self.fail("claiming an action", e))?;
        if won.is_some() {
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
        let s = match status {
            LedgerStatus::Claimed => "claimed",
            LedgerStatus::Done => "done",
            LedgerStatus::Failed => "failed",
        };
        let now = now_ms();
        on_pool!(&self.pool, |p| sqlx::query(
            "INSERT INTO ledger (key, status, owner, claimed_until, updated_at) VALUES ($1, $2, $3, 0, $4)
             ON CONFLICT (key) DO UPDATE SET status = excluded.status, owner = excluded.owner, claimed_until = 0, updated_at = excluded.updated_at"
        )
        .bind(key)
        .bind(s)
        .bind(&self.owner)
        .bind(now)
        .execute(p)
        .await
        .map(|_| ()))
        .map_err(|e| self.fail("recording an action's outcome", e))?;
        match status {
            LedgerStatus::Claimed if self.sole_writer() => {
                self.known().unsettled(key, Some(status))
            }
            LedgerStatus::Claimed => {}
            settled => self.known().settle(key, settled),
        }
        Ok(())
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        let result = on_pool!(&self.pool, |p| sqlx::query(
            "DELETE FROM ledger WHERE key = $1 AND status = 'claimed' AND owner = $2"
        )
        .bind(key)
        .bind(&self.owner)
        .execute(p)
        .await
        .map(|_| ()))
        .map_err(|e| self.fail("releasing a claim", e));
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
        let (reply, answer) = oneshot::channel();
        self.ask(Lookup::Schedule(
            timer.payment_id.clone(),
            ms(timer.due),
            reply,
        ))
        .await?;
        let new = answer.await.map_err(|_| self.lookups_gone())??;
        if new {
            debug!(payment_id = %timer.payment_id, "timer stored");
        }
        self.known().scheduled(&timer.payment_id);
        Ok(new)
    }

    async fn take_due(&self, now: Timestamp, limit: usize) -> Result<Vec<Timer>, StoreError> {
        let now = ms(now);
        let wall = now_ms();
        let until = wall + self.lease.as_millis() as i64;
        let limit = limit as i64;
        let rows = match &self.pool {
            Pool::Sqlite(p) => sqlx::query(
                "UPDATE timers SET state = 'taken', taken_until = $1
                 WHERE payment_id IN (SELECT payment_id FROM timers
                     WHERE (state = 'pending' AND due <= $2) OR (state = 'taken' AND taken_until <= $3 AND due <= $2)
                     ORDER BY due, payment_id LIMIT $4)
                 RETURNING payment_id, due",
            )
            .bind(until)
            .bind(now)
            .bind(wall)
            .bind(limit)
            .fetch_all(p)
            .await
            .map(|rows| rows.iter().map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1))).collect::<Vec<_>>()),
            // Two replicas never take the same timer: the rows are locked, and a locked row
            // is skipped rather than waited for.
            Pool::Postgres(p) => sqlx::query(
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
            .fetch_all(p)
            .await
            .map(|rows| rows.iter().map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1))).collect::<Vec<_>>()),
        }
        .map_err(|e| self.fail("taking due grace-period checks", e))?;
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
        on_pool!(&self.pool, |p| sqlx::query(
            "UPDATE timers SET state = 'done' WHERE payment_id = $1"
        )
        .bind(&timer.payment_id)
        .execute(p)
        .await
        .map(|_| ()))
        .map_err(|e| self.fail("completing a grace-period check", e))
    }

    async fn retry_timer(&self, timer: &Timer, due: Timestamp) -> Result<(), StoreError> {
        on_pool!(&self.pool, |p| sqlx::query(
            "UPDATE timers SET state = 'pending', due = $2, taken_until = 0 WHERE payment_id = $1"
        )
        .bind(&timer.payment_id)
        .bind(ms(due))
        .execute(p)
        .await
        .map(|_| ()))
        .map_err(|e| self.fail("rescheduling a grace-period check", e))
    }

    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        // A taken timer whose lease passed counts too: it will be taken over.
        let v: Option<i64> = on_pool!(&self.pool, |p| sqlx::query_scalar(
            "SELECT MIN(CASE WHEN state = 'pending' THEN due ELSE taken_until END) FROM timers WHERE state <> 'done'"
        )
        .fetch_one(p)
        .await)
        .map_err(|e| self.fail("reading the next grace-period check", e))?;
        Ok(v.map(from_ms))
    }

    async fn is_processed(&self, message_id: &str) -> Result<bool, StoreError> {
        if self.buffer().processed.contains(message_id) {
            return Ok(true);
        }
        let (reply, answer) = oneshot::channel();
        self.ask(Lookup::Processed(message_id.to_string(), reply))
            .await?;
        answer.await.map_err(|_| self.lookups_gone())?
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
        let buffered = self.buffer().sequences.get(resource_id).copied();
        let stored: Option<i64> = on_pool!(&self.pool, |p| sqlx::query_scalar(
            "SELECT sequence FROM sequences WHERE resource_id = $1"
        )
        .bind(resource_id)
        .fetch_optional(p)
        .await)
        .map_err(|e| self.fail("reading sequence numbers", e))?;
        Ok(buffered.max(stored.map(|s| s as u64)))
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let guard = self.flushing.lock().await;
        self.flush_locked(guard).await
    }
}
