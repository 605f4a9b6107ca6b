//! The embedded SQLite file, its statements run on the calling thread.
//!
//! A read here takes a few microseconds; a commit (WAL, `synchronous = FULL`) is a write to the
//! log and its fsync, about 0.2 ms on the test machine's disk. Handing each statement to a
//! connection thread and back, as an async driver does, cost several times a read in wake-ups
//! and context switches, so the connection sits behind a mutex and every call runs to
//! completion without yielding. The file is this process' alone (an exclusive lock), so one
//! connection is all there is.

use std::path::Path;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqliteLockingMode, SqlitePoolOptions,
    SqliteSynchronous,
};

use super::{LedgerRow, TimerRow, err};
use crate::store::Decided;
use crate::store::StoreError;

/// Result of the statements here; [`super::sql`] names what failed.
pub(super) type Result<T> = rusqlite::Result<T>;

/// Opens the SQLite file at `url`, creating and migrating it, and hands it over to [`Lite`].
///
/// sqlx creates and migrates the file (the same migration machinery as PostgreSQL's) on a
/// connection that is closed again; the long-lived connection is opened after it.
pub(super) async fn open_sqlite(
    url: &str,
    display: &str,
    started: &str,
) -> std::result::Result<Lite, StoreError> {
    let busy = Duration::from_secs(5);
    let opts = SqliteConnectOptions::from_str(url)
        .map_err(|e| err("invalid SQLite URL", display, e))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: the WAL is synced at every commit, so what was acked after its commit (a
        // claim, an outcome, a timer) survives a power loss or a kernel crash, not only a
        // process crash as with NORMAL, which synced at checkpoints only. Measured cost (the
        // ignored test `sqlite_write_cost`, release build, ext4 on a virtual disk): claim +
        // settle of one key 64 µs with NORMAL, 430-560 µs with FULL; schedule + take + done of
        // one timer 330 µs -> 830 µs. Reads and the batched processed ids cost the same.
        .synchronous(SqliteSynchronous::Full)
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
    // A rollback to an older payrules opens a file a newer one migrated: migrations only add.
    let migrated = sqlx::migrate!("migrations/sqlite")
        .set_ignore_missing(true)
        .run(&pool)
        .await;
    // Closed before the file is reopened: the exclusive lock goes with this connection.
    pool.close().await;
    migrated.map_err(|e| hint("migrating the SQLite state store", &e))?;
    Lite::open(&file, busy, started).map_err(|e| hint("opening the SQLite state store", &e))
}

/// Names the likely cause of SQLite's terse errors at start: "database is locked" (another
/// worker) and "disk I/O error" (with an exclusive lock, what a read-only file or directory
/// gives: the write-ahead log cannot be created).
fn open_hint(e: impl std::fmt::Display, file: &Path) -> String {
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
fn writable(file: &Path) -> bool {
    let file_ok = !file.exists() || std::fs::OpenOptions::new().write(true).open(file).is_ok();
    let mut probe = file.as_os_str().to_owned();
    probe.push(format!("-probe-{}", std::process::id()));
    let dir_ok = std::fs::File::create(&probe).is_ok();
    let _ = std::fs::remove_file(&probe);
    file_ok && dir_ok
}

/// Timers not yet done: a count of the partial index `timers_open` (migration 0003), which
/// holds only timers not yet done, so it costs what is pending, not every timer ever written.
/// The `state <> 'done'` is the index's own condition, spelled out so SQLite may use it.
const TIMERS_PENDING: &str = "SELECT COUNT(*) FROM timers WHERE state <> 'done'";

/// The earliest pending due time and the earliest lease end of a taken timer: two seeks in
/// `timers_open` (state, due, taken_until), whatever the number of timers done.
const NEXT_DUE: &str = "SELECT MIN(at) FROM (
     SELECT MIN(due) AS at FROM timers WHERE state <> 'done' AND state = 'pending'
     UNION ALL
     SELECT MIN(taken_until) AS at FROM timers WHERE state <> 'done' AND state = 'taken')";

/// Takes the due timers (see [`Lite::take_due`]), found in `timers_open` too.
const TAKE_DUE: &str = "UPDATE timers SET state = 'taken', taken_until = ?1
     WHERE payment_id IN (SELECT payment_id FROM timers
         WHERE state <> 'done' AND ((state = 'pending' AND due <= ?2) OR (state = 'taken' AND taken_until <= ?3 AND due <= ?2))
         ORDER BY due, payment_id LIMIT ?4)
     RETURNING payment_id, due, rechecks";

/// One connection to the state file.
pub(super) struct Lite {
    /// Held only for the length of one call: nothing awaits while holding it.
    conn: Mutex<Connection>,
}

impl Lite {
    /// Opens the (already migrated) file, takes its exclusive lock and records this start in
    /// `meta`, which proves the file is writable now rather than at the first message.
    pub(super) fn open(file: &Path, busy: Duration, started: &str) -> Result<Self> {
        let conn = Connection::open_with_flags(
            file,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(busy)?;
        // The lock is taken by the first write below and held until the connection closes.
        // Both answer with the mode now in force, a row `pragma_update` would refuse.
        let _: String =
            conn.pragma_update_and_check(None, "locking_mode", "EXCLUSIVE", |r| r.get(0))?;
        let _: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        // Per connection, so set again here (see `open_sqlite` for why FULL).
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('last_start', ?1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [started],
        )?;
        // Enough for every statement shape here, so none is ever prepared twice.
        conn.set_prepared_statement_cache_capacity(32);
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Inserts a claim on `key`, or takes over one whose lease has passed; whether it won.
    pub(super) fn claim(&self, key: &str, owner: &str, until: i64, now: i64) -> Result<bool> {
        self.conn()
            .prepare_cached(
                "INSERT INTO ledger (key, status, owner, claimed_until, updated_at) VALUES (?1, 'claimed', ?2, ?3, ?4)
                 ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, claimed_until = excluded.claimed_until, updated_at = excluded.updated_at
                 WHERE ledger.status = 'claimed' AND ledger.claimed_until <= ?4",
            )?
            .execute(params![key, owner, until, now])
            .map(|changed| changed == 1)
    }

    /// Records `status` for `key`, with what decided it (`decided`), if the key is `owner`'s
    /// claim (or not in the ledger at all); whether it was recorded.
    pub(super) fn record(
        &self,
        key: &str,
        status: &str,
        owner: &str,
        now: i64,
        decided: Decided<'_>,
    ) -> Result<bool> {
        self.conn()
            .prepare_cached(
                "INSERT INTO ledger (key, status, owner, claimed_until, updated_at, message_id, reason) VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6)
                 ON CONFLICT (key) DO UPDATE SET status = excluded.status, owner = excluded.owner, claimed_until = 0, updated_at = excluded.updated_at, message_id = excluded.message_id, reason = excluded.reason
                 WHERE ledger.status = 'claimed' AND ledger.owner = excluded.owner",
            )?
            .execute(params![
                key,
                status,
                owner,
                now,
                decided.message_id,
                decided.reason
            ])
            .map(|changed| changed == 1)
    }

    /// Extends `owner`'s claim on `key` to `until`; whether it was still `owner`'s.
    pub(super) fn renew(&self, key: &str, owner: &str, until: i64) -> Result<bool> {
        self.conn()
            .prepare_cached(
                "UPDATE ledger SET claimed_until = ?3 WHERE key = ?1 AND status = 'claimed' AND owner = ?2",
            )?
            .execute(params![key, owner, until])
            .map(|changed| changed == 1)
    }

    /// Writes `note` on `owner`'s claim of `key` if its lease runs past `now`; whether it was.
    pub(super) fn note(&self, key: &str, owner: &str, note: &str, now: i64) -> Result<bool> {
        self.conn()
            .prepare_cached(
                "UPDATE ledger SET note = ?3 WHERE key = ?1 AND status = 'claimed' AND owner = ?2 AND claimed_until > ?4",
            )?
            .execute(params![key, owner, note, now])
            .map(|changed| changed == 1)
    }

    /// Gives back `owner`'s claim on `key`, if it is one: deletes it, or, when it carries a
    /// note, releases its lease (`claimed_until = 0`: the next claim takes it over) and keeps
    /// the note. The common case (no note) is the one statement it always was.
    pub(super) fn unclaim(&self, key: &str, owner: &str) -> Result<()> {
        let conn = self.conn();
        let deleted = conn
            .prepare_cached(
                "DELETE FROM ledger WHERE key = ?1 AND status = 'claimed' AND owner = ?2 AND note IS NULL",
            )?
            .execute(params![key, owner])?;
        if deleted == 0 {
            conn.prepare_cached(
                "UPDATE ledger SET claimed_until = 0 WHERE key = ?1 AND status = 'claimed' AND owner = ?2 AND note IS NOT NULL",
            )?
            .execute(params![key, owner])?;
        }
        Ok(())
    }

    /// The ledger's status text for `key`.
    pub(super) fn ledger(&self, key: &str) -> Result<Option<String>> {
        self.conn()
            .prepare_cached("SELECT status FROM ledger WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()
    }

    /// The ledger row for `key`.
    pub(super) fn ledger_entry(&self, key: &str) -> Result<Option<LedgerRow>> {
        self.conn()
            .prepare_cached(
                "SELECT status, updated_at, message_id, reason, note FROM ledger WHERE key = ?1",
            )?
            .query_row([key], |r| {
                Ok(LedgerRow {
                    status: r.get(0)?,
                    at: r.get(1)?,
                    message_id: r.get(2)?,
                    reason: r.get(3)?,
                    note: r.get(4)?,
                })
            })
            .optional()
    }

    /// The keys in `[from, to)` that carry a note, with status and note, in key order.
    pub(super) fn noted(&self, from: &str, to: &str) -> Result<Vec<(String, String, String)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT key, status, note FROM ledger WHERE key >= ?1 AND key < ?2 AND note IS NOT NULL ORDER BY key",
        )?;
        let rows = stmt.query_map([from, to], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect()
    }

    /// The timer row for `payment_id`: due, state, scheduled at, fired at (ms).
    pub(super) fn timer_entry(&self, payment_id: &str) -> Result<Option<TimerRow>> {
        self.conn()
            .prepare_cached(
                "SELECT due, state, scheduled_at, fired_at FROM timers WHERE payment_id = ?1",
            )?
            .query_row([payment_id], |r| {
                Ok(TimerRow {
                    due: r.get(0)?,
                    state: r.get(1)?,
                    scheduled_at: r.get(2)?,
                    fired_at: r.get(3)?,
                })
            })
            .optional()
    }

    /// Whether `message_id` is recorded as processed and not expired at `now`.
    pub(super) fn processed(&self, message_id: &str, now: i64) -> Result<bool> {
        self.conn()
            .prepare_cached("SELECT 1 FROM processed WHERE message_id = ?1 AND expires_at >= ?2")?
            .exists(params![message_id, now])
    }

    /// Stores a pending timer unless the payment ever had one; whether it was new.
    pub(super) fn schedule(&self, payment_id: &str, due: i64) -> Result<bool> {
        self.conn()
            .prepare_cached(
                "INSERT INTO timers (payment_id, due, state, taken_until, scheduled_at) VALUES (?1, ?2, 'pending', 0, CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)) ON CONFLICT (payment_id) DO NOTHING",
            )?
            .execute(params![payment_id, due])
            .map(|changed| changed == 1)
    }

    /// Takes up to `limit` timers due at `now` (pending, or taken with a lease passed at
    /// `wall`), leased until `until`.
    pub(super) fn take_due(
        &self,
        now: i64,
        wall: i64,
        until: i64,
        limit: i64,
    ) -> Result<Vec<(String, i64, i64)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(TAKE_DUE)?;
        let rows = stmt.query_map(params![until, now, wall, limit], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        rows.collect()
    }

    /// Extends a taken timer's lease to `until` (ms), if it is still taken at `due` (the due
    /// time it was taken at: a timer given back and taken again is another taking).
    pub(super) fn renew_timer(&self, payment_id: &str, due: i64, until: i64) -> Result<bool> {
        self.conn()
            .prepare_cached(
                "UPDATE timers SET taken_until = ?3 WHERE payment_id = ?1 AND state = 'taken' AND due = ?2",
            )?
            .execute(params![payment_id, due, until])
            .map(|changed| changed == 1)
    }

    /// Marks a taken timer as handled at `now`.
    pub(super) fn timer_done(&self, payment_id: &str, now: i64) -> Result<()> {
        self.conn()
            .prepare_cached(
                "UPDATE timers SET state = 'done', fired_at = ?2 WHERE payment_id = ?1",
            )?
            .execute(params![payment_id, now])
            .map(|_| ())
    }

    /// Gives a taken timer back, pending again at `due`.
    pub(super) fn retry_timer(&self, payment_id: &str, due: i64) -> Result<()> {
        self.conn()
            .prepare_cached(
                "UPDATE timers SET state = 'pending', due = ?2, taken_until = 0 WHERE payment_id = ?1",
            )?
            .execute(params![payment_id, due])
            .map(|_| ())
    }

    /// Gives a taken timer back, pending again at `due`, with one recheck more counted.
    pub(super) fn recheck_timer(&self, payment_id: &str, due: i64) -> Result<()> {
        self.conn()
            .prepare_cached(
                "UPDATE timers SET state = 'pending', due = ?2, taken_until = 0, rechecks = rechecks + 1 WHERE payment_id = ?1",
            )?
            .execute(params![payment_id, due])
            .map(|_| ())
    }

    /// Timers not yet done.
    pub(super) fn timers_pending(&self) -> Result<i64> {
        self.conn()
            .prepare_cached(TIMERS_PENDING)?
            .query_row([], |r| r.get(0))
    }

    /// The earliest time a timer is (or will be) due; a taken one counts when its lease passes.
    pub(super) fn next_due(&self) -> Result<Option<i64>> {
        self.conn()
            .prepare_cached(NEXT_DUE)?
            .query_row([], |r| r.get(0))
    }

    /// Writes processed ids (expiring at `expires`) and sequence numbers in one transaction.
    pub(super) fn write_batch(
        &self,
        processed: &[String],
        expires: i64,
        sequences: &[(String, u64)],
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut ids = tx.prepare_cached(
                "INSERT INTO processed (message_id, expires_at) VALUES (?1, ?2) ON CONFLICT (message_id) DO NOTHING",
            )?;
            for id in processed {
                ids.execute(params![id, expires])?;
            }
            let mut seqs = tx.prepare_cached(
                "INSERT INTO sequences (resource_id, sequence) VALUES (?1, ?2) ON CONFLICT (resource_id) DO UPDATE SET sequence = excluded.sequence WHERE sequences.sequence < excluded.sequence",
            )?;
            for (rid, seq) in sequences {
                // Sequence numbers are far below i64::MAX; saturate rather than wrap.
                seqs.execute(params![rid, i64::try_from(*seq).unwrap_or(i64::MAX)])?;
            }
        }
        tx.commit()
    }

    /// The stored sequence number of `resource_id`.
    pub(super) fn sequence(&self, resource_id: &str) -> Result<Option<i64>> {
        self.conn()
            .prepare_cached("SELECT sequence FROM sequences WHERE resource_id = ?1")?
            .query_row([resource_id], |r| r.get(0))
            .optional()
    }

    /// Deletes processed ids that expired before `now`.
    pub(super) fn purge_expired(&self, now: i64) -> Result<()> {
        self.conn()
            .prepare_cached("DELETE FROM processed WHERE expires_at < ?1")?
            .execute([now])
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every commit is synced (`synchronous = FULL`, 2): a message acked after its commit
    /// keeps that commit through a power loss. NORMAL (1) synced at checkpoints only.
    #[tokio::test]
    async fn every_commit_is_synced() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("state.db").display());
        let lite = open_sqlite(&url, "test", "test").await.expect("opens");
        let level: i64 = lite
            .conn()
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .expect("reads");
        assert_eq!(level, 2, "synchronous = FULL");
    }

    /// The timer loop's queries (about once a second) never scan the timers table: they seek,
    /// or scan the index of open timers only, whose size is what is pending, not every timer
    /// ever written. Before migration 0003 (`state <> 'done'` on the whole table) both
    /// `next_due` and `timers_pending` read every row: 90 ms at 1M timers.
    #[tokio::test]
    async fn the_timer_queries_use_the_index_of_open_timers() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("state.db").display());
        let lite = open_sqlite(&url, "test", "test").await.expect("opens");
        let conn = lite.conn();
        for sql in [TIMERS_PENDING, NEXT_DUE, TAKE_DUE] {
            let mut stmt = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .expect("explains");
            let zeros = vec![0_i64; stmt.parameter_count()];
            let plan: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(zeros), |r| r.get(3))
                .expect("plan")
                .collect::<Result<_>>()
                .expect("plan rows");
            assert!(plan.iter().any(|p| p.contains("timers")), "{sql}: {plan:?}");
            for read in &plan {
                assert!(
                    !read.starts_with("SCAN timers") || read.contains("INDEX timers_open"),
                    "{sql}: reads the whole table: {plan:?}"
                );
            }
        }
    }
}
