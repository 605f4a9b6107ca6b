//! What the worker must remember: the action ledger (each idempotency key runs once, ever)
//! and the grace-period timers.
//!
//! The [`Store`] trait is the boundary; [`MemoryStore`] keeps it in memory for replay and
//! tests. A durable store survives restarts and is shared by replicas.

use async_trait::async_trait;

use crate::message::Timestamp;

pub mod memory;
pub mod sql;

pub use memory::MemoryStore;
pub use sql::SqlStore;

/// A scheduled re-check of one payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer {
    /// The payment to re-check.
    pub payment_id: String,
    /// When the check is due.
    pub due: Timestamp,
    /// How many times an earlier check of this payment found its money in flight and asked to
    /// look again ([`Store::recheck_timer`]); 0 for the first check. Stored with the timer, so
    /// the cap on rechecks holds across restarts and replicas.
    pub rechecks: u32,
}

impl Timer {
    /// The timer's identity: one per payment, ever.
    pub fn key(&self) -> String {
        format!("check:{}", self.payment_id)
    }
}

/// Where an idempotency key stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerStatus {
    /// Someone is executing it (or crashed doing so).
    Claimed,
    /// Executed.
    Done,
    /// Failed for good; reported, not retried.
    Failed,
}

/// The answer to a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The caller owns the key now and must record its outcome (or unclaim it).
    Acquired,
    /// The key was already in the ledger.
    Exists(LedgerStatus),
}

/// What decided a ledger entry, written with its outcome so `payrules explain` can say why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Decided<'a> {
    /// The message whose decision it records; `None` for a grace-period check's.
    pub message_id: Option<&'a str>,
    /// The action's reason (a cancel's `grace_period_expired`, …), where it has one.
    pub reason: Option<&'a str>,
}

/// What the store remembers of one ledger entry, for `payrules explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// Where the key stands.
    pub status: LedgerStatus,
    /// When it was last written (wall clock); `None` where the store keeps no time.
    pub at: Option<Timestamp>,
    /// The message whose decision it records; `None` for a grace-period check's decision, or
    /// where the store does not know (memory, or an entry older than this column).
    pub message_id: Option<String>,
    /// The action's reason, where it has one and the store knows it.
    pub reason: Option<String>,
    /// What an attempt wrote on its claim before acting ([`Store::note`]): a capture's or
    /// refund's baseline, so that a later attempt (a takeover after a crash, the retry after a
    /// 500) can tell whether the call was made. `None` when nothing was written, or where the
    /// store keeps no notes.
    pub note: Option<String>,
}

/// What the store remembers of one payment's grace-period check, for `payrules explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerEntry {
    /// When the check is (or was) due.
    pub due: Timestamp,
    /// When it was scheduled (wall clock), where known.
    pub scheduled_at: Option<Timestamp>,
    /// When it ran (wall clock); `None` while pending, or where not known.
    pub fired_at: Option<Timestamp>,
    /// Whether it ran.
    pub fired: bool,
}

/// A ledger entry that carries a note (see [`Store::noted`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Noted {
    /// The key.
    pub key: String,
    /// Where it stands.
    pub status: LedgerStatus,
    /// The note its claim carries.
    pub note: String,
}

/// The note the process writes on a claim it plans to take `amount` with (a return refund):
/// the rules add these up per line; the executor asks for that amount and, before its call,
/// replaces the note with its baseline.
pub fn planned_note(amount: i64, currency: &str) -> String {
    format!("amount={amount} currency={currency}")
}

/// The amount a claim's note records (`amount=N`, among other `name=value` words).
pub fn claim_note_amount(note: &str) -> Option<i64> {
    note.split_whitespace()
        .find_map(|w| w.strip_prefix("amount="))
        .and_then(|v| v.parse().ok())
}

/// A store failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database failed, could not be reached, or answered what it should not.
    #[error("state store: {0}")]
    Failed(String),
    /// This worker's claim on `key` ran out and another worker took it over (or it was
    /// settled meanwhile): the outcome was not recorded. Retry the message: the new owner's
    /// executor re-reads before writing, and the ledger then says what happened.
    #[error(
        "state store: the claim on {key} is no longer this worker's (its lease ran out and another worker took it over); its outcome was not recorded"
    )]
    ClaimLost {
        /// The action's idempotency key.
        key: String,
    },
}

/// The ledger and the timers.
#[async_trait]
pub trait Store: Send + Sync {
    /// Where `key` stands, if it was ever claimed.
    async fn ledger_status(&self, key: &str) -> Result<Option<LedgerStatus>, StoreError>;

    /// Claims `key` for execution unless it already is in the ledger. A claim whose lease has
    /// passed (its holder died) is taken over and answers [`Claim::Acquired`]; a live claim of
    /// another worker answers `Exists(Claimed)`.
    async fn claim(&self, key: &str) -> Result<Claim, StoreError>;

    /// Records how a claimed key ended, and what decided it, so `payrules explain` can say so.
    /// Only the claim's owner records it: a key whose claim another worker took over (or that
    /// is settled already) answers [`StoreError::ClaimLost`] and is left as it is.
    async fn record(
        &self,
        key: &str,
        status: LedgerStatus,
        decided: Decided<'_>,
    ) -> Result<(), StoreError>;

    /// Gives a claimed key back (the action failed transiently and will be decided again).
    /// A key without a note is forgotten. A key with a note ([`Store::note`]) is kept, note and
    /// all, with its lease released: the next claim takes it over at once, and the note tells
    /// that attempt what an earlier one may have done. Until then it reads as claimed.
    async fn unclaim(&self, key: &str) -> Result<(), StoreError>;

    /// Writes `note` onto this worker's live claim of `key`, replacing any note there: what
    /// the attempt is about to do, durable before it does it. Only the claim's owner writes
    /// it, and only while its lease runs; otherwise (no claim, another worker's, settled, given
    /// back, or the lease passed) [`StoreError::ClaimLost`] and nothing is written. The note
    /// survives a takeover of the claim, [`Store::unclaim`] and [`Store::record`], and is read
    /// back with [`Store::ledger_entry`].
    async fn note(&self, key: &str, note: &str) -> Result<(), StoreError>;

    /// Schedules `timer` unless a timer for that payment was ever scheduled; says whether it
    /// was new.
    async fn schedule(&self, timer: Timer) -> Result<bool, StoreError>;

    /// Takes the timers due at or before `now`, earliest first (ties by payment id), at most
    /// `limit`. Taken timers are not handed out again unless given back with
    /// [`Store::retry_timer`].
    async fn take_due(&self, now: Timestamp, limit: usize) -> Result<Vec<Timer>, StoreError>;

    /// Extends this worker's hold on a taken timer by a lease while its check runs, so a slow
    /// check (commercetools backing off) is not taken over meanwhile; `false` when the timer is
    /// no longer taken as it was (done, or given back and taken again). Timers carry no owner:
    /// a takeover after a lapse is shared, and the ledger's claims decide who acts. A store
    /// without leases (memory) answers `true`.
    async fn renew_timer(&self, _timer: &Timer) -> Result<bool, StoreError> {
        Ok(true)
    }

    /// Marks a taken timer as handled.
    async fn timer_done(&self, timer: &Timer) -> Result<(), StoreError>;

    /// Gives a taken timer back, due again at `due`: its check failed and is tried again, with
    /// the same recheck count.
    async fn retry_timer(&self, timer: &Timer, due: Timestamp) -> Result<(), StoreError>;

    /// Gives a taken timer back, due again at `due`, with one recheck more counted: its check
    /// ran and asked to look again later (money still in flight).
    async fn recheck_timer(&self, timer: &Timer, due: Timestamp) -> Result<(), StoreError>;

    /// The earliest pending timer, if any.
    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError>;

    /// Whether the message was already processed (dedupe of redeliveries).
    async fn is_processed(&self, message_id: &str) -> Result<bool, StoreError>;

    /// Remembers a processed message id (may be buffered: losing it only costs a re-run).
    async fn mark_processed(&self, message_id: &str) -> Result<(), StoreError>;

    /// Timers not yet done (pending or taken), for the `payrules_timers_pending` gauge.
    async fn timers_pending(&self) -> Result<u64, StoreError>;

    /// Records the sequenceNumber seen for a resource (kept as the maximum; diagnostics).
    async fn record_sequence(&self, resource_id: &str, sequence: u64) -> Result<(), StoreError>;

    /// The latest sequenceNumber seen for a resource.
    async fn latest_sequence(&self, resource_id: &str) -> Result<Option<u64>, StoreError>;

    /// The ledger entry for `key` with its time, message and note, as far as this store keeps
    /// them (by default only the status).
    async fn ledger_entry(&self, key: &str) -> Result<Option<LedgerEntry>, StoreError> {
        Ok(self.ledger_status(key).await?.map(|status| LedgerEntry {
            status,
            at: None,
            message_id: None,
            reason: None,
            note: None,
        }))
    }

    /// The payment's grace-period check, where this store can tell (by default it cannot).
    async fn timer_entry(&self, _payment_id: &str) -> Result<Option<TimerEntry>, StoreError> {
        Ok(None)
    }

    /// Writes anything buffered.
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// How long a claim lasts unless renewed; `None` for a store whose claims cannot be taken
    /// over (one process: memory).
    fn lease(&self) -> Option<std::time::Duration> {
        None
    }

    /// Extends this worker's claim on `key` by a lease, while its action executes; `false` when
    /// the claim is no longer ours (it ran out and another worker took it over).
    async fn renew(&self, _key: &str) -> Result<bool, StoreError> {
        Ok(true)
    }

    /// Every ledger entry whose key starts with `prefix` and that carries a note, in key order
    /// (an order's return refunds and the amounts they took). A store that keeps no notes
    /// fails: a rule reading it would otherwise take "no entry" for "nothing refunded".
    async fn noted(&self, prefix: &str) -> Result<Vec<Noted>, StoreError> {
        Err(StoreError::Failed(format!(
            "this state store keeps no notes (asked for {prefix}…)"
        )))
    }
}

/// Runs `work` while renewing a lease every third of `lease` with `renew`, and answers the
/// work's result and whether the lease stayed held throughout. The renewals are a future of
/// their own raced against the work: while a renewal waits for the database, the work is still
/// polled, so an answer that arrived is taken at once (awaited inside a select arm, a slow
/// renewal once kept an effect unpolled until its own timeout). `renew` answering `false` (the
/// lease is no longer ours) ends the renewals and the work is finished all the same; a failed
/// renewal is logged (naming `what`) and tried again at the next tick.
pub async fn while_renewing<T, F>(
    lease: std::time::Duration,
    what: &str,
    work: impl std::future::Future<Output = T>,
    mut renew: impl FnMut() -> F,
) -> (T, bool)
where
    F: std::future::Future<Output = Result<bool, StoreError>>,
{
    tokio::pin!(work);
    let every = (lease / 3).max(std::time::Duration::from_millis(100));
    let renewing = async {
        let mut renewals = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        renewals.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            renewals.tick().await;
            match renew().await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(lease = what, error = %e, "lease renewal failed; retrying at the next tick");
                }
            }
        }
    };
    tokio::select! {
        result = &mut work => (result, true),
        () = renewing => (work.await, false),
    }
}
