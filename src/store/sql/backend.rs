//! The seam between the shared store logic ([`super::SqlStore`]) and the two databases: one
//! method per operation, dispatched to SQLite ([`Lite`], synchronous on the caller's thread)
//! or PostgreSQL ([`Pg`], through sqlx). What differs between them (placeholders, locking,
//! `SKIP LOCKED`, batching of point reads, migrations) stays behind it.

use std::fmt;

use super::postgres::Pg;
use super::sqlite::Lite;
use super::{LedgerRow, TimerRow, status_of};
use crate::store::{Decided, LedgerStatus, StoreError};

/// Where the state lives.
pub(super) enum Backend {
    /// The embedded file, its statements run inline.
    Sqlite(Lite),
    /// The server replicas share.
    Postgres(Pg),
}

/// Why an operation failed: a database error, which the store names with what it was doing,
/// or a store error already named (PostgreSQL's batched lookups).
pub(super) enum Failure {
    Sqlite(rusqlite::Error),
    Postgres(sqlx::Error),
    Named(StoreError),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e)
    }
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        Self::Postgres(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Self::Named(e)
    }
}

impl Failure {
    /// The store error: a database error named `what` at `display`; a named one as it is.
    pub(super) fn named(self, what: &str, display: &str) -> StoreError {
        match self {
            Self::Sqlite(e) => super::err(what, display, e),
            Self::Postgres(e) => super::err(what, display, e),
            Self::Named(e) => e,
        }
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(e) => write!(f, "{e:?}"),
            Self::Postgres(e) => write!(f, "{e:?}"),
            Self::Named(e) => write!(f, "{e:?}"),
        }
    }
}

type Result<T> = std::result::Result<T, Failure>;

impl Backend {
    /// Whether no one else writes this database (SQLite, locked exclusively).
    pub(super) fn sole_writer(&self) -> bool {
        matches!(self, Self::Sqlite(_))
    }

    /// Inserts a claim on `key` lasting `lease` ms, or takes over one whose lease has passed;
    /// whether it won. Leases are measured with one clock: SQLite's is this process' (`now`, ms;
    /// the file is its alone), PostgreSQL's the server's, whatever the replicas' clocks say.
    pub(super) async fn claim(&self, key: &str, owner: &str, lease: i64, now: i64) -> Result<bool> {
        Ok(match self {
            Self::Sqlite(l) => l.claim(key, owner, now.saturating_add(lease), now)?,
            Self::Postgres(p) => p.claim(key, owner, lease).await?,
        })
    }

    /// Records `status` (its text) for `key`, with what decided it (`decided`), if `key` is
    /// `owner`'s claim or not in the ledger; whether it was recorded.
    pub(super) async fn record(
        &self,
        key: &str,
        status: &str,
        owner: &str,
        now: i64,
        decided: Decided<'_>,
    ) -> Result<bool> {
        match self {
            Self::Sqlite(l) => l
                .record(key, status, owner, now, decided)
                .map_err(Into::into),
            Self::Postgres(p) => p
                .record(key, status, owner, now, decided)
                .await
                .map_err(Into::into),
        }
    }

    /// Extends `owner`'s claim on `key` by `lease` ms from now (`now` on SQLite, the server's
    /// clock on PostgreSQL, as in [`Self::claim`]); whether it was still `owner`'s.
    pub(super) async fn renew(&self, key: &str, owner: &str, lease: i64, now: i64) -> Result<bool> {
        Ok(match self {
            Self::Sqlite(l) => l.renew(key, owner, now.saturating_add(lease))?,
            Self::Postgres(p) => p.renew(key, owner, lease).await?,
        })
    }

    /// Writes `note` on `owner`'s claim of `key` if its lease has not passed (`now` on SQLite,
    /// the server's clock on PostgreSQL, as in [`Self::claim`]); whether it was written.
    pub(super) async fn note(&self, key: &str, owner: &str, note: &str, now: i64) -> Result<bool> {
        Ok(match self {
            Self::Sqlite(l) => l.note(key, owner, note, now)?,
            Self::Postgres(p) => p.note(key, owner, note).await?,
        })
    }

    /// Gives back `owner`'s claim on `key`, if it is one: deleted, or, when it carries a note,
    /// kept with its lease released (taken over by the next claim at once).
    pub(super) async fn unclaim(&self, key: &str, owner: &str) -> Result<()> {
        match self {
            Self::Sqlite(l) => l.unclaim(key, owner).map_err(Into::into),
            Self::Postgres(p) => p.unclaim(key, owner).await.map_err(Into::into),
        }
    }

    /// What the ledger holds for `key`.
    pub(super) async fn ledger(&self, key: &str) -> Result<Option<LedgerStatus>> {
        Ok(match self {
            Self::Sqlite(l) => l.ledger(key)?.as_deref().map(status_of),
            Self::Postgres(p) => p.ledger(key).await?,
        })
    }

    /// The ledger row for `key`.
    pub(super) async fn ledger_entry(&self, key: &str) -> Result<Option<LedgerRow>> {
        Ok(match self {
            Self::Sqlite(l) => l.ledger_entry(key)?,
            Self::Postgres(p) => p.ledger_entry(key).await?,
        })
    }

    /// The keys in `[from, to)` that carry a note: key, status text, note.
    pub(super) async fn noted(
        &self,
        from: &str,
        to: &str,
    ) -> Result<Vec<(String, String, String)>> {
        Ok(match self {
            Self::Sqlite(l) => l.noted(from, to)?,
            Self::Postgres(p) => p.noted(from, to).await?,
        })
    }

    /// The grace-period timer row of `payment_id`.
    pub(super) async fn timer_entry(&self, payment_id: &str) -> Result<Option<TimerRow>> {
        Ok(match self {
            Self::Sqlite(l) => l.timer_entry(payment_id)?,
            Self::Postgres(p) => p.timer_entry(payment_id).await?,
        })
    }

    /// Whether `message_id` is recorded as processed and not expired at `now`.
    pub(super) async fn processed(&self, message_id: &str, now: i64) -> Result<bool> {
        Ok(match self {
            Self::Sqlite(l) => l.processed(message_id, now)?,
            Self::Postgres(p) => p.processed(message_id).await?,
        })
    }

    /// Stores a pending timer unless the payment ever had one; whether it was new.
    pub(super) async fn schedule(&self, payment_id: &str, due: i64) -> Result<bool> {
        Ok(match self {
            Self::Sqlite(l) => l.schedule(payment_id, due)?,
            Self::Postgres(p) => p.schedule(payment_id, due).await?,
        })
    }

    /// Takes up to `limit` timers due at `now` (pending, or taken with a lease passed), leased
    /// for `lease` ms: (payment id, due, rechecks) rows. The leases are measured as in [`Self::claim`]:
    /// with `wall` on SQLite, with the server's clock on PostgreSQL.
    pub(super) async fn take_due(
        &self,
        now: i64,
        wall: i64,
        lease: i64,
        limit: i64,
    ) -> Result<Vec<(String, i64, i64)>> {
        Ok(match self {
            Self::Sqlite(l) => l.take_due(now, wall, wall.saturating_add(lease), limit)?,
            Self::Postgres(p) => p.take_due(now, lease, limit).await?,
        })
    }

    /// Extends a taken timer's lease by `lease` ms from now (measured as in [`Self::claim`]),
    /// if it is still taken at `due`; whether it was.
    pub(super) async fn renew_timer(
        &self,
        payment_id: &str,
        due: i64,
        lease: i64,
        now: i64,
    ) -> Result<bool> {
        Ok(match self {
            Self::Sqlite(l) => l.renew_timer(payment_id, due, now.saturating_add(lease))?,
            Self::Postgres(p) => p.renew_timer(payment_id, due, lease).await?,
        })
    }

    /// Marks a taken timer as handled at `now`.
    pub(super) async fn timer_done(&self, payment_id: &str, now: i64) -> Result<()> {
        match self {
            Self::Sqlite(l) => l.timer_done(payment_id, now).map_err(Into::into),
            Self::Postgres(p) => p.timer_done(payment_id, now).await.map_err(Into::into),
        }
    }

    /// Gives a taken timer back, pending again at `due`.
    pub(super) async fn retry_timer(&self, payment_id: &str, due: i64) -> Result<()> {
        match self {
            Self::Sqlite(l) => l.retry_timer(payment_id, due).map_err(Into::into),
            Self::Postgres(p) => p.retry_timer(payment_id, due).await.map_err(Into::into),
        }
    }

    /// Gives a taken timer back, pending again at `due`, with one recheck more counted.
    pub(super) async fn recheck_timer(&self, payment_id: &str, due: i64) -> Result<()> {
        match self {
            Self::Sqlite(l) => l.recheck_timer(payment_id, due).map_err(Into::into),
            Self::Postgres(p) => p.recheck_timer(payment_id, due).await.map_err(Into::into),
        }
    }

    /// Timers not yet done.
    pub(super) async fn timers_pending(&self) -> Result<i64> {
        Ok(match self {
            Self::Sqlite(l) => l.timers_pending()?,
            Self::Postgres(p) => p.timers_pending().await?,
        })
    }

    /// The earliest time a timer is (or will be) due.
    pub(super) async fn next_due(&self) -> Result<Option<i64>> {
        Ok(match self {
            Self::Sqlite(l) => l.next_due()?,
            Self::Postgres(p) => p.next_due().await?,
        })
    }

    /// Writes processed ids (expiring at `expires`) and sequence numbers in one transaction.
    pub(super) async fn write_batch(
        &self,
        processed: &[String],
        expires: i64,
        sequences: &[(String, u64)],
    ) -> Result<()> {
        match self {
            Self::Sqlite(l) => l
                .write_batch(processed, expires, sequences)
                .map_err(Into::into),
            Self::Postgres(p) => p
                .write_batch(processed, expires, sequences)
                .await
                .map_err(Into::into),
        }
    }

    /// The stored sequence number of `resource_id`.
    pub(super) async fn sequence(&self, resource_id: &str) -> Result<Option<i64>> {
        Ok(match self {
            Self::Sqlite(l) => l.sequence(resource_id)?,
            Self::Postgres(p) => p.sequence(resource_id).await?,
        })
    }

    /// Deletes processed ids that expired before `now`.
    pub(super) async fn purge_expired(&self, now: i64) -> Result<()> {
        match self {
            Self::Sqlite(l) => l.purge_expired(now).map_err(Into::into),
            Self::Postgres(p) => p.purge_expired(now).await.map_err(Into::into),
        }
    }
}
