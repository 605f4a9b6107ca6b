//! PostgreSQL, through sqlx: the statements, one method per operation (the shape of
//! [`super::sqlite::Lite`]), and the task that batches point reads and timer inserts.
//!
//! Replicas share the database, so the statements carry what sharing needs: claims taken over
//! only once their lease passed, due timers taken `FOR UPDATE SKIP LOCKED`.
//!
//! Over 600 lines on purpose: one method per store operation, kept side by side with
//! `sqlite.rs`'s so the two backends read alike (the last 40 lines are its tests).

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tokio::sync::{mpsc, oneshot};

use super::{LedgerRow, TimerRow, err, now_ms, status_of};
use crate::store::{Decided, LedgerStatus, StoreError};

/// Names the likely cause of a TLS failure at connect, which rustls reports tersely
/// ("invalid peer certificate: UnknownIssuer").
fn tls_hint(e: &sqlx::Error) -> String {
    let text = e.to_string();
    if text.contains("invalid peer certificate") {
        format!(
            "{text} (the server's certificate is not signed by a CA in sslrootcert, or, with sslmode=verify-full, is not for this host)"
        )
    } else {
        text
    }
}

/// The server's clock, in ms since the epoch: what claim and timer leases are measured with, so
/// that replicas whose clocks disagree still agree on when a lease has passed.
/// `clock_timestamp()`, not `now()`: the time of the statement, not of its transaction's start.
/// A macro so the statements stay `&'static str` (built by `concat!`, never at run time).
macro_rules! db_now_ms {
    () => {
        "(extract(epoch from clock_timestamp()) * 1000)::bigint"
    };
}

/// Timers not yet done: an index-only count of `timers_open` (migration 0003), which holds the
/// open timers only, so it costs what is pending, not every timer ever written.
pub(super) const TIMERS_PENDING: &str = "SELECT COUNT(*) FROM timers WHERE state <> 'done'";

/// The earliest pending due time and the earliest lease end of a taken timer: two index seeks
/// in `timers_open` (state, due, taken_until), whatever the number of timers done. The
/// `state <> 'done'` is the partial index's condition, spelled out for the planner.
pub(super) const NEXT_DUE: &str = "SELECT MIN(at) FROM (
     SELECT MIN(due) AS at FROM timers WHERE state <> 'done' AND state = 'pending'
     UNION ALL
     SELECT MIN(taken_until) AS at FROM timers WHERE state <> 'done' AND state = 'taken') AS open";

/// Rows per multi-row INSERT when a batch is written (2 parameters each).
const ROWS_PER_STATEMENT: usize = 500;

/// The server replicas share.
pub(super) struct Pg {
    /// The connections.
    pool: PgPool,
    /// Questions for the batching lookup task ([`answer_lookups`]); it ends with the store.
    lookups: mpsc::Sender<Lookup>,
    /// Where the store lives, for messages (never the password).
    display: String,
}

impl Pg {
    /// Connects, runs the migrations, records this start in `meta` and starts the lookup task.
    pub(super) async fn open(url: &str, display: &str, started: &str) -> Result<Self, StoreError> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| err("invalid PostgreSQL URL", display, e))?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await
            .map_err(|e| {
                err(
                    "connecting to the PostgreSQL state store",
                    display,
                    tls_hint(&e),
                )
            })?;
        // Replicas share the database: during a rolling upgrade an older replica restarts
        // against a schema a newer one migrated. Migrations only add, so it may go on.
        sqlx::migrate!("migrations/postgres")
            .set_ignore_missing(true)
            .run(&pool)
            .await
            .map_err(|e| err("migrating the PostgreSQL state store", display, e))?;
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('last_start', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        )
        .bind(started)
        .execute(&pool)
        .await
        .map_err(|e| err("writing to the state store", display, e))?;
        let (lookups, questions) = mpsc::channel(LOOKUPS_PER_QUERY * 4);
        tokio::spawn(answer_lookups(pool.clone(), display.to_string(), questions));
        Ok(Self {
            pool,
            lookups,
            display: display.to_string(),
        })
    }

    /// Asks the lookup task and waits for its answer.
    async fn ask<T>(
        &self,
        question: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Lookup,
    ) -> Result<T, StoreError> {
        let gone = || StoreError::Failed(format!("the lookup task of {} stopped", self.display));
        let (reply, answer) = oneshot::channel();
        self.lookups
            .send(question(reply))
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Inserts a claim on `key` lasting `lease` ms, or takes over one whose lease has passed;
    /// whether it won. Both measured with the server's clock (`db_now_ms!`).
    pub(super) async fn claim(
        &self,
        key: &str,
        owner: &str,
        lease: i64,
    ) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar::<_, String>(concat!("INSERT INTO ledger (key, status, owner, claimed_until, updated_at) VALUES ($1, 'claimed', $2, ", db_now_ms!(), " + $3, ", db_now_ms!(), ")
                 ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, claimed_until = excluded.claimed_until, updated_at = excluded.updated_at
                 WHERE ledger.status = 'claimed' AND ledger.claimed_until <= excluded.updated_at
                 RETURNING key"))
        .bind(key)
        .bind(owner)
        .bind(lease)
        .fetch_optional(&self.pool)
        .await
        .map(|won| won.is_some())
    }

    /// Records `status` for `key`, with what decided it (`decided`), if `key` is `owner`'s
    /// claim (or not in the ledger); whether it was recorded.
    pub(super) async fn record(
        &self,
        key: &str,
        status: &str,
        owner: &str,
        now: i64,
        decided: Decided<'_>,
    ) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar::<_, String>(
            "INSERT INTO ledger (key, status, owner, claimed_until, updated_at, message_id, reason) VALUES ($1, $2, $3, 0, $4, $5, $6)
                 ON CONFLICT (key) DO UPDATE SET status = excluded.status, owner = excluded.owner, claimed_until = 0, updated_at = excluded.updated_at, message_id = excluded.message_id, reason = excluded.reason
                 WHERE ledger.status = 'claimed' AND ledger.owner = excluded.owner
                 RETURNING key",
        )
        .bind(key)
        .bind(status)
        .bind(owner)
        .bind(now)
        .bind(decided.message_id)
        .bind(decided.reason)
        .fetch_optional(&self.pool)
        .await
        .map(|recorded| recorded.is_some())
    }

    /// Extends `owner`'s claim on `key` by `lease` ms from the server's now; whether it was
    /// still `owner`'s.
    pub(super) async fn renew(
        &self,
        key: &str,
        owner: &str,
        lease: i64,
    ) -> Result<bool, sqlx::Error> {
        sqlx::query(concat!(
            "UPDATE ledger SET claimed_until = ",
            db_now_ms!(),
            " + $3 WHERE key = $1 AND status = 'claimed' AND owner = $2"
        ))
        .bind(key)
        .bind(owner)
        .bind(lease)
        .execute(&self.pool)
        .await
        .map(|r| r.rows_affected() == 1)
    }

    /// Writes `note` on `owner`'s claim of `key` if its lease has not passed by the server's
    /// clock; whether it was written.
    pub(super) async fn note(
        &self,
        key: &str,
        owner: &str,
        note: &str,
    ) -> Result<bool, sqlx::Error> {
        sqlx::query(concat!(
            "UPDATE ledger SET note = $3 WHERE key = $1 AND status = 'claimed' AND owner = $2 AND claimed_until > ",
            db_now_ms!()
        ))
        .bind(key)
        .bind(owner)
        .bind(note)
        .execute(&self.pool)
        .await
        .map(|r| r.rows_affected() == 1)
    }

    /// Gives back `owner`'s claim on `key`, if it is one, in one statement: deleted, or, when
    /// it carries a note, kept with its lease released (`claimed_until = 0`: the next claim
    /// takes it over) and its note. The two parts match disjoint rows (`note IS NULL` or not).
    pub(super) async fn unclaim(&self, key: &str, owner: &str) -> Result<(), sqlx::Error> {
        sqlx::query(
            "WITH released AS (
                 UPDATE ledger SET claimed_until = 0
                 WHERE key = $1 AND status = 'claimed' AND owner = $2 AND note IS NOT NULL
                 RETURNING key)
             DELETE FROM ledger WHERE key = $1 AND status = 'claimed' AND owner = $2 AND note IS NULL",
        )
        .bind(key)
        .bind(owner)
        .execute(&self.pool)
        .await
        .map(|_| ())
    }

    /// What the ledger holds for `key` (batched with other askers).
    pub(super) async fn ledger(&self, key: &str) -> Result<Option<LedgerStatus>, StoreError> {
        self.ask(|reply| Lookup::Ledger(key.to_string(), reply))
            .await
    }

    /// The ledger row for `key` (not batched: explain's, and a capture's or refund's note).
    pub(super) async fn ledger_entry(&self, key: &str) -> Result<Option<LedgerRow>, sqlx::Error> {
        type Row = (String, i64, Option<String>, Option<String>, Option<String>);
        let row: Option<Row> = sqlx::query_as(
            "SELECT status, updated_at, message_id, reason, note FROM ledger WHERE key = $1",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(status, at, message_id, reason, note)| LedgerRow {
            status,
            at,
            message_id,
            reason,
            note,
        }))
    }

    /// The keys in `[from, to)` that carry a note, with status and note, in key order.
    pub(super) async fn noted(
        &self,
        from: &str,
        to: &str,
    ) -> Result<Vec<(String, String, String)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT key, status, note FROM ledger WHERE note IS NOT NULL AND (key COLLATE \"C\") >= $1 AND (key COLLATE \"C\") < $2 ORDER BY (key COLLATE \"C\")",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await
    }

    /// The timer row for `payment_id`: due, state, scheduled at, fired at (ms).
    pub(super) async fn timer_entry(
        &self,
        payment_id: &str,
    ) -> Result<Option<TimerRow>, sqlx::Error> {
        let row: Option<(i64, String, Option<i64>, Option<i64>)> = sqlx::query_as(
            "SELECT due, state, scheduled_at, fired_at FROM timers WHERE payment_id = $1",
        )
        .bind(payment_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(due, state, scheduled_at, fired_at)| TimerRow {
            due,
            state,
            scheduled_at,
            fired_at,
        }))
    }

    /// Whether `message_id` is recorded as processed and not expired (batched).
    pub(super) async fn processed(&self, message_id: &str) -> Result<bool, StoreError> {
        self.ask(|reply| Lookup::Processed(message_id.to_string(), reply))
            .await
    }

    /// Stores a pending timer unless the payment ever had one; whether it was new (batched).
    pub(super) async fn schedule(&self, payment_id: &str, due: i64) -> Result<bool, StoreError> {
        self.ask(|reply| Lookup::Schedule(payment_id.to_string(), due, reply))
            .await
    }

    /// Takes up to `limit` timers due at `now` (pending, or taken with a lease passed), leased
    /// for `lease` ms; the leases measured with the server's clock.
    pub(super) async fn take_due(
        &self,
        now: i64,
        lease: i64,
        limit: i64,
    ) -> Result<Vec<(String, i64, i64)>, sqlx::Error> {
        // Two replicas never take the same timer: the rows are locked, and a locked row
        // is skipped rather than waited for. `state <> 'done'` lets the planner use the
        // partial index of open timers (`timers_open`).
        sqlx::query(concat!("UPDATE timers SET state = 'taken', taken_until = ", db_now_ms!(), " + $1
                 WHERE payment_id IN (SELECT payment_id FROM timers
                     WHERE state <> 'done' AND ((state = 'pending' AND due <= $2) OR (state = 'taken' AND taken_until <= ", db_now_ms!(), " AND due <= $2))
                     ORDER BY due, payment_id LIMIT $3 FOR UPDATE SKIP LOCKED)
                 RETURNING payment_id, due, rechecks"))
        .bind(lease)
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    (
                        r.get::<String, _>(0),
                        r.get::<i64, _>(1),
                        i64::from(r.get::<i32, _>(2)),
                    )
                })
                .collect::<Vec<_>>()
        })
    }

    /// Extends a taken timer's lease by `lease` ms from the server's now, if it is still taken
    /// at `due` (the due time it was taken at: a timer given back and taken again is another
    /// taking).
    pub(super) async fn renew_timer(
        &self,
        payment_id: &str,
        due: i64,
        lease: i64,
    ) -> Result<bool, sqlx::Error> {
        sqlx::query(concat!(
            "UPDATE timers SET taken_until = ",
            db_now_ms!(),
            " + $3 WHERE payment_id = $1 AND state = 'taken' AND due = $2"
        ))
        .bind(payment_id)
        .bind(due)
        .bind(lease)
        .execute(&self.pool)
        .await
        .map(|r| r.rows_affected() == 1)
    }

    /// Marks a taken timer as handled at `now`.
    pub(super) async fn timer_done(&self, payment_id: &str, now: i64) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE timers SET state = 'done', fired_at = $2 WHERE payment_id = $1")
            .bind(payment_id)
            .bind(now)
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// Gives a taken timer back, pending again at `due`.
    pub(super) async fn retry_timer(&self, payment_id: &str, due: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE timers SET state = 'pending', due = $2, taken_until = 0 WHERE payment_id = $1",
        )
        .bind(payment_id)
        .bind(due)
        .execute(&self.pool)
        .await
        .map(|_| ())
    }

    /// Gives a taken timer back, pending again at `due`, with one recheck more counted.
    pub(super) async fn recheck_timer(
        &self,
        payment_id: &str,
        due: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE timers SET state = 'pending', due = $2, taken_until = 0, rechecks = rechecks + 1 WHERE payment_id = $1",
        )
        .bind(payment_id)
        .bind(due)
        .execute(&self.pool)
        .await
        .map(|_| ())
    }

    /// Timers not yet done.
    pub(super) async fn timers_pending(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(TIMERS_PENDING)
            .fetch_one(&self.pool)
            .await
    }

    /// The earliest time a timer is (or will be) due; a taken one counts when its lease passes.
    pub(super) async fn next_due(&self) -> Result<Option<i64>, sqlx::Error> {
        sqlx::query_scalar(NEXT_DUE).fetch_one(&self.pool).await
    }

    /// Writes processed ids (expiring at `expires`) and sequence numbers in one transaction.
    pub(super) async fn write_batch(
        &self,
        processed: &[String],
        expires: i64,
        sequences: &[(String, u64)],
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
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

    /// The stored sequence number of `resource_id`.
    pub(super) async fn sequence(&self, resource_id: &str) -> Result<Option<i64>, sqlx::Error> {
        sqlx::query_scalar("SELECT sequence FROM sequences WHERE resource_id = $1")
            .bind(resource_id)
            .fetch_optional(&self.pool)
            .await
    }

    /// Deletes processed ids that expired before `now`.
    pub(super) async fn purge_expired(&self, now: i64) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM processed WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await
            .map(|_| ())
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
    let rows = pairs_then(
        slots,
        ", 'pending', 0, (extract(epoch from clock_timestamp()) * 1000)::bigint",
    );
    // A padding row repeats the first one: it conflicts and is skipped.
    let sql = format!(
        "INSERT INTO timers (payment_id, due, state, taken_until, scheduled_at) VALUES {rows} ON CONFLICT (payment_id) DO NOTHING RETURNING payment_id"
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

#[cfg(test)]
mod tests {
    use sqlx::{Connection, Executor};

    use super::*;

    /// A database of its own on the server these machines run (127.0.0.1:5432, trust auth;
    /// see tests/it/support/pg.rs): fails, never skips, when it is not there.
    async fn fresh_pg() -> String {
        let admin = "postgres://postgres@127.0.0.1:5432/test";
        let name = format!("payrules_unit_{:016x}", fastrand::u64(..));
        let mut conn = sqlx::PgConnection::connect(admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL must run at {admin} for this test: {e}"));
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("creates a database");
        format!("postgres://postgres@127.0.0.1:5432/{name}")
    }

    /// `next_due` and `timers_pending` (about once a second) read the partial index of open
    /// timers, never the table: with sequential scans priced out, the planner still has no
    /// other way to answer them than `timers_open`. Before migration 0003 they read every
    /// timer ever written (75 ms at 1M timers).
    #[tokio::test]
    async fn the_timer_queries_use_the_index_of_open_timers() {
        let url = fresh_pg().await;
        let pg = Pg::open(&url, "test", "test").await.expect("opens");
        let mut conn = pg.pool.acquire().await.expect("a connection");
        conn.execute("SET enable_seqscan = off").await.expect("set");
        for sql in [TIMERS_PENDING, NEXT_DUE] {
            let plan: Vec<String> =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")))
                    .fetch_all(&mut *conn)
                    .await
                    .expect("explains");
            let plan = plan.join("\n");
            assert!(plan.contains("timers_open"), "{sql}:\n{plan}");
            assert!(!plan.contains("Seq Scan"), "{sql}:\n{plan}");
        }
    }
}
