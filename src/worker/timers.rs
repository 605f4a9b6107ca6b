//! The grace-period timer loop: takes due checks from the store and runs them side by side.
//!
//! A check reads commercetools and may cancel through Checkout; either may back off for a
//! minute or more (the client honours `Retry-After` up to 60 s, over several attempts). Each
//! check therefore runs in a task of its own, at most `concurrency` at once, and the loop goes
//! on polling the store, reporting `StoreState` and the pending gauge meanwhile: one payment's
//! backoff never holds another's check. Only as many timers are taken as there are free
//! slots, so a taken timer's lease starts when its check does; the lease is renewed while the
//! check runs (a third of the lease at a time, as action claims are), so a slow check is not
//! taken over by another replica, and a dead worker's timers are free within one lease.
//!
//! Money first: two checks of one payment never run at once in this process (`in_flight`:
//! a timer whose lease lapsed and that comes back from the store while its check still runs
//! is skipped). Across replicas the store hands a taken timer out again only after its lease
//! has passed; if that happens anyway (renewals failing), the ledger's claim on the cancel's
//! idempotency key lets one execution through, and the executor re-reads the payment before
//! cancelling.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::RunStats;
use super::handle::{message_backoff, outage_backoff};
use crate::message::Timestamp;
use crate::process::Processor;
use crate::store::{Store, StoreError, Timer};
use crate::telemetry::{StoreState, TimersPending};

/// Failure counts remembered before the map is cleared. Only failing timers have an entry;
/// clearing only makes some retries come sooner than their backoff.
const FAILURES_MAX: usize = 16_384;

/// Fires due grace-period checks on the real clock, up to `concurrency` at once. Polls at
/// least once a second, so a timer scheduled by a message task is seen promptly. Exits on
/// `stop` once the checks in flight have ended (the caller bounds that wait and aborts this
/// task, which ends them), or once `draining`, no check in flight and no timer left.
pub(super) async fn run_timers(
    processor: Arc<Processor>,
    store: Arc<dyn Store>,
    retry_delay: Duration,
    concurrency: usize,
    stats: Arc<RunStats>,
    stop: CancellationToken,
    draining: CancellationToken,
) {
    const POLL: Duration = Duration::from_secs(1);
    // Counting is a query of its own; the gauge needs no finer grain.
    const COUNT_EVERY: Duration = Duration::from_secs(5);
    let mut checks = Checks {
        processor,
        store: store.clone(),
        retry_delay,
        stats,
        limit: concurrency.max(1),
        running: JoinSet::new(),
        in_flight: Arc::default(),
        failures: Arc::default(),
    };
    let mut failures: u32 = 0;
    let mut last_count = Instant::now()
        .checked_sub(COUNT_EVERY)
        .unwrap_or_else(Instant::now);
    loop {
        checks.reap();
        let stepped = checks.start_due(Utc::now()).await;
        match &stepped {
            Ok(_) => StoreState { result: Ok(()) }.emit(),
            Err(e) => StoreState {
                result: Err(&e.to_string()),
            }
            .emit(),
        }
        if last_count.elapsed() >= COUNT_EVERY {
            last_count = Instant::now();
            if let Ok(n) = store.timers_pending().await {
                TimersPending(n).emit();
            }
        }
        let wait = match stepped {
            Ok(None) if draining.is_cancelled() && checks.running.is_empty() => return,
            // Every slot busy: a finishing check wakes the loop (below).
            Ok(_) if checks.is_full() => {
                failures = 0;
                POLL
            }
            Ok(next) => {
                failures = 0;
                next.and_then(|n| (n - Utc::now()).to_std().ok())
                    .unwrap_or(POLL)
                    .min(POLL)
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let delay = outage_backoff(retry_delay).delay(failures);
                warn!(error = %e, retry_in = ?delay, "timer store unavailable");
                delay
            }
        };
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
            Some(res) = checks.running.join_next(), if !checks.running.is_empty() => {
                report_panic(res);
            }
        }
    }
    // Shutting down: nothing new is taken; the checks under way finish (or are aborted with
    // this task at the shutdown deadline; their timers come back after their lease).
    while let Some(res) = checks.running.join_next().await {
        report_panic(res);
    }
}

/// The checks under way, and what starting one needs.
struct Checks {
    processor: Arc<Processor>,
    store: Arc<dyn Store>,
    retry_delay: Duration,
    stats: Arc<RunStats>,
    /// Checks at once: the worker's `concurrency`, so the timer checks weigh on commercetools
    /// no more than the message tasks may.
    limit: usize,
    /// One task per check; dropping the set (this task aborted) aborts them.
    running: JoinSet<()>,
    /// Payments whose check runs now; an entry is removed when its task ends, however it ends.
    in_flight: Arc<Mutex<HashSet<String>>>,
    /// Consecutive failures per payment, for its backoff.
    failures: Arc<Failures>,
}

impl Checks {
    fn is_full(&self) -> bool {
        self.running.len() >= self.limit
    }

    /// Forgets finished tasks, reporting panics.
    fn reap(&mut self) {
        while let Some(res) = self.running.try_join_next() {
            report_panic(res);
        }
    }

    /// Takes as many due timers as there are free slots and starts their checks; answers when
    /// the next timer is due.
    async fn start_due(&mut self, now: Timestamp) -> Result<Option<Timestamp>, StoreError> {
        let free = self.limit.saturating_sub(self.running.len());
        if free > 0 {
            for timer in self.store.take_due(now, free).await? {
                let Some(guard) = InFlight::enter(&self.in_flight, &timer.payment_id) else {
                    // Its lease lapsed while its check still runs here: that check settles it.
                    warn!(timer = %timer.key(), "grace-period check still running; not started twice");
                    continue;
                };
                let check = Check {
                    processor: self.processor.clone(),
                    store: self.store.clone(),
                    retry_delay: self.retry_delay,
                    stats: self.stats.clone(),
                    failures: self.failures.clone(),
                };
                self.running.spawn(async move {
                    check.run(timer, now).await;
                    drop(guard);
                });
            }
        }
        self.store.next_due().await
    }
}

/// What one check needs.
struct Check {
    processor: Arc<Processor>,
    store: Arc<dyn Store>,
    retry_delay: Duration,
    stats: Arc<RunStats>,
    failures: Arc<Failures>,
}

impl Check {
    /// Runs the check of `timer` (taken at `now`) holding its lease; a retryable failure gives
    /// the timer back, due again after its own backoff.
    async fn run(self, timer: Timer, now: Timestamp) {
        let result = holding_lease(&*self.store, &timer, self.processor.timer(&timer, now)).await;
        match result {
            Ok(actions) => {
                self.failures.forget(&timer.payment_id);
                self.stats
                    .actions
                    .fetch_add(actions.len(), Ordering::Relaxed);
            }
            Err(e) if e.is_retryable() => {
                let failed = self.failures.count(&timer.payment_id);
                let delay = message_backoff(self.retry_delay)
                    .delay(failed)
                    .max(e.retry_after().unwrap_or_default());
                // From now, not from when it was taken: the check itself may have taken long.
                let again = Utc::now()
                    + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::seconds(1));
                warn!(timer = %timer.key(), error = %e, failures = failed, retry_in = ?delay, "grace-period check failed; retrying");
                if let Err(e) = self.store.retry_timer(&timer, again).await {
                    warn!(timer = %timer.key(), error = %e, "could not give the grace-period check back; it is retried after its lease");
                }
            }
            Err(e) => {
                self.failures.forget(&timer.payment_id);
                error!(timer = %timer.key(), error = %e, "grace-period check failed permanently");
            }
        }
    }
}

/// Runs `check`, renewing `timer`'s lease every third of it meanwhile. The renewals are a
/// future of their own raced against the check (as an action's claim renewals are), so a slow
/// renewal never keeps the check unpolled.
async fn holding_lease<T>(store: &dyn Store, timer: &Timer, check: impl Future<Output = T>) -> T {
    let Some(lease) = store.lease() else {
        return check.await;
    };
    tokio::pin!(check);
    let every = (lease / 3).max(Duration::from_millis(100));
    let renewing = async {
        let mut renewals = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        renewals.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            renewals.tick().await;
            match store.renew_timer(timer).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    warn!(timer = %timer.key(), error = %e, "grace-period lease renewal failed; retrying at the next tick");
                }
            }
        }
    };
    tokio::select! {
        result = &mut check => result,
        () = renewing => {
            // Settled or taken again elsewhere meanwhile. Finishing the check is safe: the
            // ledger's claim lets one cancel through, and the executor re-reads first.
            warn!(timer = %timer.key(), "grace-period check's timer no longer held while checking; finishing it");
            check.await
        }
    }
}

/// A payment's place in `in_flight`, held by its check's task and given up when the task ends
/// (also when it is aborted or panics).
struct InFlight {
    set: Arc<Mutex<HashSet<String>>>,
    payment_id: String,
}

impl InFlight {
    /// Enters `payment_id`; `None` when its check is running already.
    fn enter(set: &Arc<Mutex<HashSet<String>>>, payment_id: &str) -> Option<Self> {
        lock(set).insert(payment_id.to_string()).then(|| Self {
            set: set.clone(),
            payment_id: payment_id.to_string(),
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.set).remove(&self.payment_id);
    }
}

/// Consecutive failed checks per payment: each failing timer backs off on its own count.
/// Kept in memory: after a restart, or on another replica, a timer starts again from
/// `retry_delay`, which only costs a few early retries.
#[derive(Default)]
struct Failures(Mutex<std::collections::HashMap<String, u32>>);

impl Failures {
    /// Counts one more failure of `payment_id`'s check; answers its failures so far.
    fn count(&self, payment_id: &str) -> u32 {
        let mut map = lock(&self.0);
        if map.len() >= FAILURES_MAX && !map.contains_key(payment_id) {
            map.clear();
        }
        let n = map.entry(payment_id.to_string()).or_default();
        *n = n.saturating_add(1);
        *n
    }

    /// The check succeeded or failed for good: its count starts over.
    fn forget(&self, payment_id: &str) {
        lock(&self.0).remove(payment_id);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn report_panic(res: Result<(), tokio::task::JoinError>) {
    if let Err(e) = res
        && e.is_panic()
    {
        error!(error = %e, "a grace-period check panicked; its timer is not given back (a durable store hands it out again after its lease)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::Action;
    use crate::effects::{Effect, EffectError, Executor};
    use crate::message::Message;
    use crate::model::{Order, Payment};
    use crate::rules::{Engine, Rules};
    use crate::store::MemoryStore;
    use crate::view::{CommerceView, StreamView, ViewError};
    use async_trait::async_trait;

    /// The stream view, but reading `slow` waits for a permit of `gate` (none unless the test
    /// adds one: a read backing off for ever), and reading `down` fails as an outage would.
    struct Stalling {
        inner: StreamView,
        slow: &'static str,
        down: &'static str,
        gate: tokio::sync::Semaphore,
    }

    #[async_trait]
    impl CommerceView for Stalling {
        async fn payment(&self, id: &str) -> Result<Option<Payment>, ViewError> {
            if id == self.slow {
                let _permit = self.gate.acquire().await;
            }
            if id == self.down {
                return Err(ViewError::Unavailable("503, Retry-After: 60".into()));
            }
            self.inner.payment(id).await
        }
        async fn order(&self, id: &str) -> Result<Option<Order>, ViewError> {
            self.inner.order(id).await
        }
        async fn orders_for_payment(&self, id: &str) -> Result<Vec<Order>, ViewError> {
            self.inner.orders_for_payment(id).await
        }
        fn observe(&self, m: &Message) {
            self.inner.observe(m);
        }
    }

    /// Records the keys it executes.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    #[async_trait]
    impl Executor for Recorder {
        async fn execute(&self, action: &Action) -> Result<Effect, EffectError> {
            lock(&self.0).push(action.key.clone());
            Ok(Effect::applied("cancel approved"))
        }
    }

    impl Recorder {
        fn has(&self, key: &str) -> bool {
            lock(&self.0).iter().any(|k| k == key)
        }

        /// Waits until `key` was executed; a generous bound only says "it never happened".
        async fn executed(&self, key: &str) {
            let seen = async {
                while !self.has(key) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            tokio::time::timeout(Duration::from_secs(30), seen)
                .await
                .unwrap_or_else(|_| panic!("{key} was never executed: {:?}", lock(&self.0)));
        }
    }

    /// An authorization (Success) of payment `pid`, with no order: an orphan to cancel.
    fn authorized(pid: &str) -> Message {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/messages/PaymentCreated.json"
        );
        let bytes = std::fs::read(path).expect("fixture");
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).expect("fixture is JSON");
        v["id"] = format!("m-{pid}").into();
        v["resource"]["id"] = pid.into();
        v["payment"]["id"] = pid.into();
        v["payment"]["transactions"][0]["state"] = "Success".into();
        crate::message::decode(&serde_json::to_vec(&v).expect("serializes")).expect("decodes")
    }

    struct Setup {
        view: Arc<Stalling>,
        store: Arc<MemoryStore>,
        recorder: Arc<Recorder>,
        processor: Arc<Processor>,
    }

    /// Orphaned authorizations of `pids`, their checks due a minute ago, earliest first.
    async fn orphans(pids: &[&str], slow: &'static str, down: &'static str) -> Setup {
        let view = Arc::new(Stalling {
            inner: StreamView::new(),
            slow,
            down,
            gate: tokio::sync::Semaphore::new(0),
        });
        let store = Arc::new(MemoryStore::new());
        let recorder = Arc::new(Recorder::default());
        let engine = Engine::new(view.clone(), store.clone(), Rules::default());
        let processor = Arc::new(Processor::new(engine, store.clone(), recorder.clone()));
        let due = Utc::now() - chrono::Duration::minutes(1);
        for (i, pid) in pids.iter().enumerate() {
            view.observe(&authorized(pid));
            let timer = Timer {
                payment_id: (*pid).to_string(),
                due: due + chrono::Duration::seconds(i64::try_from(i).expect("few")),
                rechecks: 0,
            };
            assert!(store.schedule(timer).await.expect("schedules"));
        }
        Setup {
            view,
            store,
            recorder,
            processor,
        }
    }

    fn spawn_timers(
        s: &Setup,
        stop: &CancellationToken,
        draining: &CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(run_timers(
            s.processor.clone(),
            s.store.clone(),
            Duration::from_secs(1),
            4,
            Arc::new(RunStats::default()),
            stop.clone(),
            draining.clone(),
        ))
    }

    /// The first due check's reads back off and never end (commercetools answering 429 with
    /// Retry-After, attempt after attempt); the second payment's check still runs and cancels
    /// its orphan. Run one after the other, the second waited behind the first for ever.
    #[tokio::test]
    async fn a_stalled_check_does_not_hold_another_payments_check() {
        let s = orphans(&["p-slow", "p-fast"], "p-slow", "").await;
        let (stop, draining) = (CancellationToken::new(), CancellationToken::new());
        let timers = spawn_timers(&s, &stop, &draining);

        s.recorder.executed(&Action::cancel_key("p-fast")).await;
        assert!(!s.recorder.has(&Action::cancel_key("p-slow")));
        assert_eq!(
            s.store.timers_outstanding(),
            1,
            "the stalled check still holds its timer; the other is done"
        );
        // The stalled check is still running: stopping waits for it, and the worker aborts
        // the timer task at the shutdown deadline, which ends the check too.
        stop.cancel();
        timers.abort();
        assert!(timers.await.is_err_and(|e| e.is_cancelled()));
        assert!(!s.recorder.has(&Action::cancel_key("p-slow")));
    }

    /// With the input finished, the loop ends only once no timer is left *and* the checks in
    /// flight have ended: the slow check is let through after the other one is done, and its
    /// cancel is executed before the loop returns.
    #[tokio::test]
    async fn draining_waits_for_the_checks_in_flight() {
        let s = orphans(&["p-slow", "p-fast"], "p-slow", "").await;
        s.processor.input_ended();
        let (stop, draining) = (CancellationToken::new(), CancellationToken::new());
        draining.cancel();
        let timers = spawn_timers(&s, &stop, &draining);

        s.recorder.executed(&Action::cancel_key("p-fast")).await;
        s.view.gate.add_permits(1);
        tokio::time::timeout(Duration::from_secs(30), timers)
            .await
            .expect("the loop ends once the checks have")
            .expect("no panic");
        assert!(
            s.recorder.has(&Action::cancel_key("p-slow")),
            "the loop returned while a check was in flight: {:?}",
            lock(&s.recorder.0)
        );
        assert_eq!(s.store.timers_outstanding(), 0);
    }

    /// Takes `pid`'s timer (due by `now`) and runs its check once.
    async fn check_once(s: &Setup, pid: &str, failures: &Arc<Failures>) {
        let now = Utc::now() + chrono::Duration::days(1);
        let taken = s.store.take_due(now, 10).await.expect("takes");
        assert_eq!(taken.len(), 1, "{taken:?}");
        assert_eq!(taken[0].payment_id, pid);
        let check = Check {
            processor: s.processor.clone(),
            store: s.store.clone(),
            retry_delay: Duration::from_secs(60),
            stats: Arc::new(RunStats::default()),
            failures: failures.clone(),
        };
        check.run(taken.into_iter().next().expect("one"), now).await;
    }

    /// How far in the future the (only) pending timer is due, in seconds.
    async fn due_in(store: &MemoryStore) -> i64 {
        let next = store.next_due().await.expect("reads").expect("pending");
        (next - Utc::now()).num_seconds()
    }

    /// A check that keeps failing backs off on its own count of failures (60 s doubling, ±20 %),
    /// while another payment's first failure is retried after the base delay.
    #[tokio::test]
    async fn a_failing_check_backs_off_per_timer() {
        let s = orphans(&["p-down"], "", "p-down").await;
        let failures = Arc::new(Failures::default());
        let mut seen = Vec::new();
        for _ in 0..3 {
            check_once(&s, "p-down", &failures).await;
            seen.push(due_in(&s.store).await);
        }
        assert!((47..=72).contains(&seen[0]), "{seen:?}");
        assert!((95..=144).contains(&seen[1]), "{seen:?}");
        assert!((191..=288).contains(&seen[2]), "{seen:?}");

        // Another payment failing for the first time starts from the base delay.
        let other = orphans(&["p-other"], "", "p-other").await;
        check_once(&other, "p-other", &failures).await;
        assert!((47..=72).contains(&due_in(&other.store).await));
        assert!(s.recorder.0.lock().expect("lock").is_empty());
    }

    #[test]
    fn failures_count_per_payment_and_start_over() {
        let f = Failures::default();
        assert_eq!(f.count("a"), 1);
        assert_eq!(f.count("a"), 2);
        assert_eq!(f.count("b"), 1);
        f.forget("a");
        assert_eq!(f.count("a"), 1);
    }

    #[test]
    fn a_payment_is_in_flight_once_until_its_guard_drops() {
        let set = Arc::default();
        let first = InFlight::enter(&set, "p1").expect("enters");
        assert!(InFlight::enter(&set, "p1").is_none(), "never twice at once");
        assert!(InFlight::enter(&set, "p2").is_some());
        drop(first);
        assert!(InFlight::enter(&set, "p1").is_some());
    }
}
