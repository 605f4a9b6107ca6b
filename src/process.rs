//! One step of work: decide with the [`Engine`], claim each action's key in the ledger,
//! execute it, record the outcome. Shared by `replay` and `run`.
//!
//! Over 600 lines because a third of it is its tests (concurrent claims, slow renewals, a claim
//! lost mid-effect, the key lock), kept beside the one path they check.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};

use std::time::{Duration, Instant};

use crate::action::{Action, Reason};
use crate::effects::{Effect, EffectError, Executor};
use crate::message::{Message, Timestamp};
use crate::rules::{Engine, EngineError, release_started_key};
use crate::store::{Claim, Decided, LedgerStatus, Store, StoreError, Timer, while_renewing};
use crate::telemetry::{ActionFinished, ActionOutcome};

/// Why a message or timer could not be fully handled.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProcessError {
    /// Deciding failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The ledger could not be written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another worker holds the action's claim (or died holding it; its lease runs out
    /// soon): come back after `retry_after`. Never a reason to park the message.
    #[error("action {key} is claimed by another worker")]
    Claimed {
        /// The action's idempotency key.
        key: String,
        /// When to look again: a fraction of the lease, so a dead worker's claim is taken
        /// over within a few retries.
        retry_after: std::time::Duration,
    },
    /// An action failed and may succeed later.
    #[error("action {key}: {error}")]
    Transient {
        /// The action's idempotency key.
        key: String,
        /// What went wrong.
        error: EffectError,
    },
    /// An action failed for good; it is recorded as failed and will not run again.
    #[error("action {key} failed permanently: {error}")]
    Permanent {
        /// The action's idempotency key.
        key: String,
        /// What went wrong.
        error: EffectError,
    },
}

impl ProcessError {
    /// Whether handling the message again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProcessError::Engine(e) => e.is_retryable(),
            ProcessError::Store(_)
            | ProcessError::Transient { .. }
            | ProcessError::Claimed { .. } => true,
            ProcessError::Permanent { .. } => false,
        }
    }

    /// Whether the failure is a dependency's, not the message's: commercetools, Checkout, the
    /// webhook receiver or the store unavailable, throttling, timing out, or another worker's
    /// claim. Such a failure never parks the message — it waits, with capped backoff, until the
    /// dependency is back — so an outage does not turn a backlog into a dead-letter queue.
    pub fn is_outage(&self) -> bool {
        match self {
            ProcessError::Engine(e) => e.is_retryable(),
            ProcessError::Store(_) | ProcessError::Claimed { .. } => true,
            ProcessError::Transient { error, .. } => {
                matches!(
                    error,
                    EffectError::Transient { .. } | EffectError::Unfinished { .. }
                )
            }
            ProcessError::Permanent { .. } => false,
        }
    }

    /// Whether another worker holds the claim the message needs (an action's, or a marker's):
    /// not an outage of a dependency, so nothing stops pulling for it.
    pub fn is_claimed(&self) -> bool {
        matches!(
            self,
            ProcessError::Claimed { .. } | ProcessError::Engine(EngineError::MarkerClaimed { .. })
        )
    }

    /// A delay the failing target asked for.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            ProcessError::Transient {
                error:
                    EffectError::Transient { retry_after, .. }
                    | EffectError::Unfinished { retry_after, .. },
                ..
            } => *retry_after,
            ProcessError::Claimed { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// What became of a decoded message (see [`Processor::handle`]).
#[derive(Debug)]
pub enum Handled {
    /// It cannot make an action due: nothing decided, nothing remembered.
    Inert,
    /// Processed before (the processed-message cache): nothing done again.
    Duplicate,
    /// Decided; these actions were executed (or found done).
    Done(Vec<Action>),
}

/// What decided `action`, as the ledger keeps it beside the outcome.
fn decided(action: &Action) -> Decided<'_> {
    Decided {
        message_id: action.message_id.as_deref(),
        reason: action.reason.map(Reason::as_str),
    }
}

/// What a processor's actions came to, over its life: `payrules reconcile`'s summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Actions executed (or, with a dry-run executor, planned), by kind.
    pub executed: BTreeMap<&'static str, usize>,
    /// Actions decided again and found settled in the ledger (done or failed).
    pub already_settled: usize,
}

/// Decide, claim, execute, record.
pub struct Processor {
    /// Decides what is due.
    engine: Engine,
    /// The ledger each action is claimed and settled in.
    store: Arc<dyn Store>,
    /// Runs the effects.
    executor: Arc<dyn Executor>,
    /// Keys being executed by this process. Two messages of one order or payment often arrive
    /// together (a payment's Success and its OrderCreated) and decide the same action; the
    /// second waits here for the first instead of meeting its claim in the ledger, which
    /// would send its message back to the broker for a pointless redelivery a second later.
    running: KeyLocks,
    /// Counted per action (not per message), so a message retried after another worker's
    /// claim does not count what its first attempt executed as found done.
    tally: StdMutex<Tally>,
    /// Off once the input has ended (a file, a replay): a grace-period check waiting for money
    /// in flight is not made again, as nothing new will arrive to change its answer.
    rechecks: AtomicBool,
}

impl Processor {
    /// A processor; `store` must be the engine's store.
    pub fn new(engine: Engine, store: Arc<dyn Store>, executor: Arc<dyn Executor>) -> Self {
        Self {
            engine,
            store,
            executor,
            running: KeyLocks::default(),
            tally: StdMutex::default(),
            rechecks: AtomicBool::new(true),
        }
    }

    /// The input has ended: grace-period checks are final from now on.
    pub fn input_ended(&self) {
        self.rechecks.store(false, Ordering::Relaxed);
    }

    /// What the actions came to so far.
    pub fn tally(&self) -> Tally {
        self.lock_tally().clone()
    }

    fn lock_tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store (timers are driven from outside).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// See [`Engine::failed_captures`].
    pub fn failed_captures(&self) -> u64 {
        self.engine.failed_captures()
    }

    /// See [`Engine::failed_refunds`].
    pub fn failed_refunds(&self) -> u64 {
        self.engine.failed_refunds()
    }

    /// See [`Engine::failed_cancels`].
    pub fn failed_cancels(&self) -> u64 {
        self.engine.failed_cancels()
    }

    /// See [`Engine::stuck_in_flight`].
    pub fn stuck_in_flight(&self) -> u64 {
        self.engine.stuck_in_flight()
    }

    /// See [`Engine::is_inert`].
    pub fn is_inert(&self, m: &Message) -> bool {
        self.engine.is_inert(m)
    }

    /// The path every message takes, in `run` and `reconcile` alike: skip what cannot make
    /// an action due, skip what was processed before, decide and execute, then remember the
    /// message as processed.
    ///
    /// # Errors
    /// See [`ProcessError`]; after a retryable error the message should be tried again.
    pub async fn handle(&self, m: &Message, now: Timestamp) -> Result<Handled, ProcessError> {
        let id = m.id.as_deref().unwrap_or("-");
        if self.is_inert(m) {
            tracing::debug!(message_id = id, kind = %m.kind, "cannot make an action due");
            return Ok(Handled::Inert);
        }
        if let Some(mid) = &m.id
            && self.store.is_processed(mid).await?
        {
            tracing::debug!(message_id = id, "already processed");
            return Ok(Handled::Duplicate);
        }
        tracing::debug!(message_id = id, kind = %m.kind, "processing");
        let actions = self.message(m, now).await?;
        // Effects are recorded in the ledger; these only save work on a redelivery.
        if let Some(mid) = &m.id
            && let Err(e) = self.store.mark_processed(mid).await
        {
            tracing::warn!(message_id = id, error = %e, "could not remember the message as processed");
        }
        if let (Some(r), Some(seq)) = (&m.resource, m.sequence_number)
            && let Err(e) = self.store.record_sequence(&r.id, seq).await
        {
            tracing::warn!(error = %e, "could not record the sequence number");
        }
        Ok(Handled::Done(actions))
    }

    /// Handles one message at clock `now`; returns the actions executed.
    ///
    /// # Errors
    /// See [`ProcessError`]; after a transient error the message should be retried.
    pub async fn message(&self, m: &Message, now: Timestamp) -> Result<Vec<Action>, ProcessError> {
        let actions = self.engine.on_message(m, now).await?;
        self.execute_all(actions).await
    }

    /// Handles one due timer, stamping decisions `at`; the timer is marked done on success,
    /// scheduled again when the rules ask to check later, and given back on a retryable
    /// failure.
    ///
    /// # Errors
    /// See [`ProcessError`].
    pub async fn timer(&self, timer: &Timer, at: Timestamp) -> Result<Vec<Action>, ProcessError> {
        let (result, recheck_at) = match self.engine.on_timer(timer, at).await {
            Ok(d) => (self.execute_all(d.actions).await, d.recheck_at),
            Err(e) => (Err(e.into()), None),
        };
        match (&result, recheck_at) {
            (Err(e), _) if e.is_retryable() => {}
            (Ok(_), Some(due)) if self.rechecks.load(Ordering::Relaxed) => {
                self.store.recheck_timer(timer, due).await?;
            }
            _ => self.store.timer_done(timer).await?,
        }
        result
    }

    async fn execute_all(&self, actions: Vec<Action>) -> Result<Vec<Action>, ProcessError> {
        let mut done = Vec::with_capacity(actions.len());
        let mut permanent = None;
        for action in actions {
            match self.execute(action).await {
                Ok(Some(a)) => done.push(a),
                Ok(None) => {}
                Err(e @ ProcessError::Permanent { .. }) => permanent = Some(e),
                Err(e) => return Err(e),
            }
        }
        match permanent {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    async fn execute(&self, action: Action) -> Result<Option<Action>, ProcessError> {
        // Held until the outcome is in the ledger: a task of this process deciding the same
        // action meanwhile then finds it done (or given back) rather than claimed.
        let _running = self.running.lock(&action.key).await;
        if !self.claim(&action).await? {
            return Ok(None);
        }
        let started = Instant::now();
        let (result, held) = self.execute_holding_claim(&action).await;
        let elapsed = Some(started.elapsed());
        if !held {
            // Another worker owns the key now and decides it again (its executor re-reads
            // first); what this execution did is only reported.
            let what = match &result {
                Ok(effect) => effect.summary.clone(),
                Err(error) => error.to_string(),
            };
            finished(
                &action,
                elapsed,
                ActionOutcome::Failed,
                &format!("claim lost while executing ({what}); not recorded, will retry"),
            );
            return Err(StoreError::ClaimLost { key: action.key }.into());
        }
        self.record(action, result, elapsed).await
    }

    /// Claims the action's key: `true` when this process now runs it, `false` when the ledger
    /// has it settled already; claimed by another worker is an error to retry after a while.
    async fn claim(&self, action: &Action) -> Result<bool, ProcessError> {
        match self.store.claim(&action.key).await? {
            Claim::Exists(LedgerStatus::Claimed) => {
                // Another worker is running it (or died doing so; its lease will run out).
                let retry_after = self
                    .store
                    .lease()
                    .map_or(Duration::from_secs(1), |lease| lease / 3)
                    .max(Duration::from_millis(200));
                Err(ProcessError::Claimed {
                    key: action.key.clone(),
                    retry_after,
                })
            }
            Claim::Exists(status) => {
                self.lock_tally().already_settled += 1;
                ActionFinished {
                    action: action.action,
                    key: &action.key,
                    outcome: ActionOutcome::Skipped,
                    elapsed: None,
                    detail: &format!("already in the ledger ({status:?})"),
                }
                .emit();
                Ok(false)
            }
            Claim::Acquired => {
                self.note_plan(action).await?;
                Ok(true)
            }
        }
    }

    /// A return refund's amount is noted on its claim before it runs: the rules add up what
    /// was refunded for each returned line from these notes (no other record of a partial
    /// refund's amount exists). A claim taken over keeps the note it has (the plan, or the
    /// executor's baseline). Failing, the claim is given back and the message retried.
    async fn note_plan(&self, action: &Action) -> Result<(), ProcessError> {
        let (Some(_), Some(money)) = (&action.returned, &action.amount) else {
            return Ok(());
        };
        let noted = self.store.ledger_entry(&action.key).await;
        let written = match noted {
            Ok(Some(entry)) if entry.note.is_some() => Ok(()),
            Ok(_) => {
                let plan = crate::store::planned_note(money.cent_amount, &money.currency_code);
                self.store.note(&action.key, &plan).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            self.store.unclaim(&action.key).await?;
            return Err(e.into());
        }
        Ok(())
    }

    /// Records the execution's outcome in the ledger (done, given back for a retry, or failed
    /// for good) and reports it.
    async fn record(
        &self,
        action: Action,
        result: Result<Effect, EffectError>,
        elapsed: Option<Duration>,
    ) -> Result<Option<Action>, ProcessError> {
        match result {
            Ok(effect) if !effect.applied => {
                self.store.unclaim(&action.key).await?;
                finished(
                    &action,
                    elapsed,
                    ActionOutcome::Skipped,
                    &format!("no longer applies: {}", effect.summary),
                );
                Ok(None)
            }
            Ok(effect) => {
                *self
                    .lock_tally()
                    .executed
                    .entry(action.action.as_str())
                    .or_default() += 1;
                self.store
                    .record(&action.key, LedgerStatus::Done, decided(&action))
                    .await?;
                finished(&action, elapsed, ActionOutcome::Done, &effect.summary);
                Ok(Some(action))
            }
            Err(error @ EffectError::Unfinished { .. }) => {
                // Recorded before the claim is given back: the retry carries the action out
                // even if the rules would not decide it again (see `release_started_key`).
                if let Some(order_id) = &action.order_id {
                    self.remember_started(&release_started_key(order_id), &action)
                        .await?;
                }
                self.store.unclaim(&action.key).await?;
                finished(&action, elapsed, ActionOutcome::Failed, &format!("{error}"));
                Err(ProcessError::Transient {
                    key: action.key,
                    error,
                })
            }
            Err(error @ (EffectError::Transient { .. } | EffectError::Refused { .. })) => {
                self.store.unclaim(&action.key).await?;
                finished(
                    &action,
                    elapsed,
                    ActionOutcome::Failed,
                    &format!("{error}; will retry"),
                );
                Err(ProcessError::Transient {
                    key: action.key,
                    error,
                })
            }
            Err(error @ EffectError::Permanent { .. }) => {
                self.store
                    .record(&action.key, LedgerStatus::Failed, decided(&action))
                    .await?;
                finished(
                    &action,
                    elapsed,
                    ActionOutcome::Failed,
                    &format!("{error}; recorded as failed, not retried"),
                );
                Err(ProcessError::Permanent {
                    key: action.key,
                    error,
                })
            }
        }
    }
}

/// Reports how an action's execution ended.
fn finished(action: &Action, elapsed: Option<Duration>, outcome: ActionOutcome, detail: &str) {
    ActionFinished {
        action: action.action,
        key: &action.key,
        outcome,
        elapsed,
        detail,
    }
    .emit();
}

impl Processor {
    /// Records the marker `key` as done (already there is fine).
    async fn remember_started(&self, key: &str, action: &Action) -> Result<(), ProcessError> {
        if let Claim::Acquired = self.store.claim(key).await? {
            self.store
                .record(key, LedgerStatus::Done, decided(action))
                .await?;
        }
        Ok(())
    }

    /// Executes `action`, renewing its claim every third of the lease meanwhile, so a slow but
    /// live execution keeps it and a dead worker's claim is free within one lease. Answers the
    /// execution's result and whether the claim was still ours throughout (`false`: another
    /// worker took it over, and the outcome must not be recorded).
    async fn execute_holding_claim(
        &self,
        action: &Action,
    ) -> (Result<crate::effects::Effect, EffectError>, bool) {
        let execution = self.executor.execute(action);
        let Some(lease) = self.store.lease() else {
            return (execution.await, true);
        };
        let renew = || self.store.renew(&action.key);
        let (result, held) = while_renewing(lease, &action.key, execution, renew).await;
        if !held {
            // The executors re-read before writing, so letting the execution finish was safe;
            // the new owner finds out what it did. Its outcome is not recorded.
            tracing::error!(key = %action.key, "claim lost to another worker while executing (renewal came too late); its outcome will not be recorded");
        }
        (result, held)
    }
}

/// One async lock per key, for the keys in use only: an entry lives while someone holds or
/// waits for its lock.
#[derive(Default)]
struct KeyLocks {
    /// The locks in use; the std mutex is never held across an await.
    locks: StdMutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A key's lock, waited for or held. Dropping it unlocks and, for the last user, forgets the
/// key — also when the wait is cancelled.
struct KeyGuard<'a> {
    /// Where the entry is forgotten.
    owner: &'a KeyLocks,
    /// Which entry.
    key: String,
    /// The entry's lock (a clone counts as a user).
    lock: Arc<tokio::sync::Mutex<()>>,
    /// Holding it; `None` while waiting.
    held: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl KeyLocks {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        self.locks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for `key`'s lock.
    async fn lock(&self, key: &str) -> KeyGuard<'_> {
        let lock = self.map().entry(key.to_string()).or_default().clone();
        let mut guard = KeyGuard {
            owner: self,
            key: key.to_string(),
            lock,
            held: None,
        };
        guard.held = Some(guard.lock.clone().lock_owned().await);
        guard
    }

    /// Keys with a holder or a waiter.
    #[cfg(test)]
    fn in_use(&self) -> usize {
        self.map().len()
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.owner.map();
        drop(self.held.take());
        // Clones are made only under the map's lock: when the map's and ours are all that is
        // left, nobody waits, and nobody can start to without the map's lock.
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use async_trait::async_trait;

    use super::*;
    use crate::action::{ActionKind, RuleName};
    use crate::effects::Effect;
    use crate::rules::Rules;
    use crate::store::MemoryStore;
    use crate::view::StreamView;

    /// Takes its time and counts its calls.
    struct Slow {
        calls: AtomicUsize,
    }

    #[async_trait]
    impl Executor for Slow {
        async fn execute(&self, _action: &Action) -> Result<Effect, EffectError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(Effect::applied("slow"))
        }
    }

    #[tokio::test]
    async fn the_same_action_decided_twice_at_once_runs_once_and_neither_fails() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let executor = Arc::new(Slow {
            calls: AtomicUsize::new(0),
        });
        let engine = Engine::new(Arc::new(StreamView::new()), store.clone(), Rules::default());
        let processor = Processor::new(engine, store.clone(), executor.clone());
        let action = Action {
            action: ActionKind::ReleaseOrder,
            rule: RuleName::ReleaseForFulfillment,
            key: Action::release_key("o1"),
            payment_id: Some("p1".into()),
            order_id: Some("o1".into()),
            message_id: None,
            at: chrono::Utc::now(),
            order_number: None,
            payment_ids: vec!["p1".into()],
            amount: None,
            reason: None,
            returned: None,
        };
        // Before, the second met the first's claim and failed "claimed by another worker",
        // and its message went back to the broker.
        let (a, b) = tokio::join!(
            processor.execute_all(vec![action.clone()]),
            processor.execute_all(vec![action.clone()]),
        );
        let (a, b) = (a.expect("first"), b.expect("second"));
        assert_eq!(a.len() + b.len(), 1, "exactly one of them executed it");
        assert_eq!(executor.calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            store.ledger_status(&action.key).await.expect("reads"),
            Some(LedgerStatus::Done)
        );
        assert_eq!(processor.running.in_use(), 0);
    }

    /// The memory store with a lease, whose renewals take `renew_takes` and answer `renewed`
    /// (`false`: another worker took the claim over).
    struct Leased {
        inner: MemoryStore,
        renew_takes: Duration,
        renewed: bool,
        renewals: AtomicUsize,
    }

    #[async_trait]
    impl Store for Leased {
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
            self.inner.record(key, status, decided).await
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
            self.inner.schedule(timer).await
        }
        async fn take_due(&self, now: Timestamp, limit: usize) -> Result<Vec<Timer>, StoreError> {
            self.inner.take_due(now, limit).await
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
        async fn record_sequence(
            &self,
            resource_id: &str,
            sequence: u64,
        ) -> Result<(), StoreError> {
            self.inner.record_sequence(resource_id, sequence).await
        }
        async fn latest_sequence(&self, resource_id: &str) -> Result<Option<u64>, StoreError> {
            self.inner.latest_sequence(resource_id).await
        }
        fn lease(&self) -> Option<Duration> {
            Some(Duration::from_millis(300))
        }
        async fn renew(&self, _key: &str) -> Result<bool, StoreError> {
            self.renewals.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.renew_takes).await;
            Ok(self.renewed)
        }
    }

    /// An HTTP call as the executors make it: the answer arrives after `answer_after`, and is
    /// taken for a timeout if the call is only looked at again after its deadline (`timeout`).
    struct Answering {
        answer_after: Duration,
        timeout: Duration,
    }

    #[async_trait]
    impl Executor for Answering {
        async fn execute(&self, _action: &Action) -> Result<Effect, EffectError> {
            let deadline = tokio::time::Instant::now() + self.timeout;
            tokio::time::sleep(self.answer_after).await;
            if tokio::time::Instant::now() > deadline {
                return Err(EffectError::Transient {
                    detail: "timed out".into(),
                    retry_after: None,
                });
            }
            Ok(Effect::applied("webhook 204"))
        }
    }

    fn release_o1() -> Action {
        Action {
            action: ActionKind::ReleaseOrder,
            rule: RuleName::ReleaseForFulfillment,
            key: Action::release_key("o1"),
            payment_id: Some("p1".into()),
            order_id: Some("o1".into()),
            message_id: None,
            at: chrono::Utc::now(),
            order_number: None,
            payment_ids: vec!["p1".into()],
            amount: None,
            reason: None,
            returned: None,
        }
    }

    fn leased_processor(renew_takes: Duration, renewed: bool) -> (Processor, Arc<Leased>) {
        let store = Arc::new(Leased {
            inner: MemoryStore::new(),
            renew_takes,
            renewed,
            renewals: AtomicUsize::new(0),
        });
        let executor = Arc::new(Answering {
            answer_after: Duration::from_millis(250),
            timeout: Duration::from_secs(1),
        });
        let engine = Engine::new(Arc::new(StreamView::new()), store.clone(), Rules::default());
        (Processor::new(engine, store.clone(), executor), store)
    }

    /// A renewal stuck on a busy database (10 s) while the effect's answer arrives (250 ms):
    /// the answer is taken when it arrives and recorded. With the renewal awaited inside the
    /// select arm, the execution was not polled for 10 s and its answer read as a timeout.
    #[tokio::test(start_paused = true)]
    async fn a_slow_renewal_does_not_starve_the_effect() {
        let (processor, store) = leased_processor(Duration::from_secs(10), true);
        let action = release_o1();
        let started = tokio::time::Instant::now();
        let done = processor
            .execute_all(vec![action.clone()])
            .await
            .expect("the effect's answer, not a timeout");
        assert_eq!(done.len(), 1);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the answer waited for the renewal: {:?}",
            started.elapsed()
        );
        assert!(
            store.renewals.load(Ordering::SeqCst) >= 1,
            "a renewal was under way"
        );
        assert_eq!(
            store.ledger_status(&action.key).await.expect("reads"),
            Some(LedgerStatus::Done)
        );
    }

    /// The claim is taken over while the effect runs (the renewal finds it gone): the outcome
    /// is not recorded and the message fails with an error naming the key, to be retried.
    #[tokio::test(start_paused = true)]
    async fn a_claim_lost_mid_effect_is_an_error_naming_the_key() {
        let (processor, store) = leased_processor(Duration::from_millis(1), false);
        let action = release_o1();
        let err = processor
            .execute_all(vec![action.clone()])
            .await
            .expect_err("the claim was lost");
        assert!(
            matches!(&err, ProcessError::Store(StoreError::ClaimLost { key }) if *key == action.key),
            "{err:?}"
        );
        assert!(err.to_string().contains(&action.key), "{err}");
        assert!(err.is_retryable(), "retried, not acked: {err}");
        assert_eq!(
            store.ledger_status(&action.key).await.expect("reads"),
            Some(LedgerStatus::Claimed),
            "the outcome is not recorded over the new owner's claim"
        );
    }

    #[tokio::test]
    async fn a_key_lock_serializes_its_key_and_is_forgotten_after() {
        let locks = Arc::new(KeyLocks::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (locks, inside, most) = (locks.clone(), inside.clone(), most.clone());
            tasks.spawn(async move {
                let _g = locks.lock("release:o1").await;
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
            });
        }
        // Another key is not held up by them.
        let other = tokio::time::timeout(Duration::from_secs(1), locks.lock("release:o2")).await;
        assert!(other.is_ok(), "a different key waited");
        drop(other);
        while let Some(r) = tasks.join_next().await {
            r.expect("task");
        }
        assert_eq!(
            most.load(Ordering::SeqCst),
            1,
            "two holders of one key at once"
        );
        assert_eq!(locks.in_use(), 0, "keys must not outlive their users");

        // A wait given up (its task aborted at shutdown) leaves nothing behind either.
        let held = locks.lock("release:o3").await;
        let gave_up =
            tokio::time::timeout(Duration::from_millis(5), locks.lock("release:o3")).await;
        assert!(gave_up.is_err(), "the key was held");
        drop(held);
        assert_eq!(locks.in_use(), 0, "an abandoned wait left its key behind");
    }
}
