//! The long-running worker behind `payrules run`.
//!
//! One receive loop takes permits *before* it receives — one of `concurrency` worker slots and
//! one of a few times as many unsettled places — so a full pipeline stops pulling
//! (backpressure reaches the broker). Each delivery is handled in its own task: decode, decide
//! and execute, then ack — only once every action is done or recorded. The worker slot is
//! freed once the outcome is decided, while the ack travels. A
//! transient failure nacks with a growing delay; a message that cannot be decoded, that failed
//! permanently, or that failed `max_deliveries` times is parked with its reason. A timer task
//! fires due grace-period checks on the real clock, up to `concurrency` side by side, so one
//! payment's backing-off check never holds another's (`timers`). The shutdown signal is
//! passed in: on it the loop stops pulling and the whole shutdown — in-flight work and
//! grace-period checks, closing the source, the store's last flush — ends within
//! `shutdown_timeout` (the drain gets two thirds); whatever is still unsettled then is simply
//! not acked, so the broker redelivers it.

mod handle;
mod hold;
mod tasks;
mod timers;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::config::WorkerSettings;
use crate::process::Processor;
use crate::source::{Source, SourceError};
use crate::store::Store;
use crate::telemetry::{InFlight, WorkerStopped};
use handle::{outage_backoff, settle};
use hold::{Holding, process_holding};
use tasks::report_progress;
use timers::run_timers;

/// Messages received but not yet settled, per message worked on: a message whose outcome is
/// decided frees its worker slot while its ack, nack or park is still on its way to the
/// broker (an SQS delete waits to share a batch, then takes a round trip), up to this many.
const UNSETTLED_PER_WORKING: usize = 4;

/// Counters of a run, for the exit status and the final log line.
#[derive(Debug, Default)]
pub struct RunStats {
    /// Messages handled and acked.
    pub acked: AtomicUsize,
    /// Messages nacked for a retry.
    pub retried: AtomicUsize,
    /// Messages parked as poison.
    pub parked: AtomicUsize,
    /// Subscription test notifications skipped.
    pub subscription_tests: AtomicUsize,
    /// Redeliveries of messages already processed, acked without work.
    pub duplicates: AtomicUsize,
    /// Actions executed (or, in a dry run, logged).
    pub actions: AtomicUsize,
    /// Messages being worked on now.
    pub in_flight: AtomicUsize,
    /// The last received message's lag behind commercetools (now − createdAt), in ms.
    pub last_age_ms: AtomicU64,
}

/// A summary of [`RunStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSummary {
    /// See [`RunStats::acked`].
    pub acked: usize,
    /// See [`RunStats::retried`].
    pub retried: usize,
    /// See [`RunStats::parked`].
    pub parked: usize,
    /// See [`RunStats::subscription_tests`].
    pub subscription_tests: usize,
    /// See [`RunStats::duplicates`].
    pub duplicates: usize,
    /// See [`RunStats::actions`].
    pub actions: usize,
    /// Cancels of ours the payments reported failed (their money is still reserved).
    pub failed_cancels: u64,
    /// Captures of ours the payments reported failed (shipped, money not taken).
    pub failed_captures: u64,
}

impl RunStats {
    fn summary(&self) -> RunSummary {
        RunSummary {
            acked: self.acked.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            parked: self.parked.load(Ordering::Relaxed),
            subscription_tests: self.subscription_tests.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            actions: self.actions.load(Ordering::Relaxed),
            failed_cancels: 0,
            failed_captures: 0,
        }
    }
}

/// The worker.
pub struct Worker {
    /// Decides and executes.
    processor: Arc<Processor>,
    /// The timers live here.
    store: Arc<dyn Store>,
    /// Concurrency, retries, shutdown deadline.
    settings: WorkerSettings,
    /// Counters, shared with the tasks.
    stats: Arc<RunStats>,
}

impl Worker {
    /// A worker over a processor; `store` must be the processor's store.
    pub fn new(processor: Arc<Processor>, settings: WorkerSettings) -> Self {
        let store = processor.store().clone();
        Self {
            processor,
            store,
            settings,
            stats: Arc::new(RunStats::default()),
        }
    }

    /// Runs until `shutdown` resolves, or — for a source that finishes (files) — until the
    /// input is done, every delivery settled and no timer pending.
    pub async fn run(
        &self,
        mut source: Box<dyn Source>,
        shutdown: impl Future<Output = ()>,
    ) -> RunSummary {
        tokio::pin!(shutdown);
        let working = Arc::new(Semaphore::new(self.settings.concurrency));
        let unsettled = Arc::new(Semaphore::new(
            self.settings
                .concurrency
                .saturating_mul(UNSETTLED_PER_WORKING),
        ));
        let mut tasks = JoinSet::new();
        let holding = Arc::new(Holding::new());
        let stop_timers = CancellationToken::new();
        let draining = CancellationToken::new();
        let mut timers = tokio::spawn(run_timers(
            self.processor.clone(),
            self.store.clone(),
            self.settings.retry_delay,
            self.settings.concurrency,
            self.stats.clone(),
            stop_timers.clone(),
            draining.clone(),
        ));
        let mut receive_failures: u32 = 0;
        let mut finished = false;
        let source_name = source.name();
        let progress = tokio::spawn(report_progress(
            self.stats.clone(),
            self.settings.progress_interval,
            stop_timers.clone(),
        ));

        loop {
            // Reap finished tasks so the set does not grow without bound.
            while let Some(res) = tasks.try_join_next() {
                report_panic(res);
            }
            // Both before receiving: what is received can be worked on at once. Neither while
            // a message is held through a dependency's outage: a new one would only wait too.
            let permits = async {
                holding.unpaused().await;
                let held = unsettled.clone().acquire_owned().await?;
                let work = working.clone().acquire_owned().await?;
                Ok::<_, tokio::sync::AcquireError>((held, work))
            };
            let (held, work) = tokio::select! {
                biased;
                () = &mut shutdown => break,
                p = permits => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let next = tokio::select! {
                biased;
                () = &mut shutdown => break,
                n = source.next() => n,
            };
            match next {
                Ok(Some(delivery)) => {
                    receive_failures = 0;
                    let processor = self.processor.clone();
                    let settings = self.settings.clone();
                    let stats = self.stats.clone();
                    let holding = holding.clone();
                    // Every line logged about this message carries where it came from.
                    let span = info_span!("message", origin = %delivery.origin);
                    InFlight(stats.in_flight.fetch_add(1, Ordering::Relaxed) + 1).emit();
                    tasks.spawn(
                        async move {
                            let outcome =
                                process_holding(&delivery, &processor, &stats, &settings, &holding)
                                    .await;
                            // Settling is the broker's round trip, not work: the next message
                            // may start meanwhile.
                            drop(work);
                            InFlight(stats.in_flight.fetch_sub(1, Ordering::Relaxed) - 1).emit();
                            settle(delivery, outcome, &settings, &stats, source_name).await;
                            drop(held);
                        }
                        .instrument(span),
                    );
                }
                Ok(None) => {
                    finished = true;
                    break;
                }
                Err(e) => {
                    receive_failures = receive_failures.saturating_add(1);
                    let delay = if matches!(e, SourceError::Receive(_)) {
                        // The broker sources back off on their own and report the change of
                        // state (SourceState); backing off here too would stack delays on
                        // errors queued before the broker came back.
                        debug!(error = %e, "receive failed");
                        Duration::from_millis(100)
                    } else {
                        let delay =
                            outage_backoff(self.settings.retry_delay).delay(receive_failures);
                        warn!(error = %e, retry_in = ?delay, "receive failed");
                        delay
                    };
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }

        // Set on a shutdown signal: everything after it ends by then.
        let mut deadline: Option<tokio::time::Instant> = None;
        if finished {
            // The input is done: wait for in-flight work (a shutdown ends the holds of messages
            // waiting for a dependency), then for the pending timers.
            let drained = async {
                while let Some(res) = tasks.join_next().await {
                    report_panic(res);
                }
            };
            tokio::pin!(drained);
            // A completed `shutdown` must not be polled again.
            let mut shut_down = false;
            tokio::select! {
                () = &mut drained => {}
                () = &mut shutdown => {
                    shut_down = true;
                    holding.stop();
                    drained.await;
                }
            }
            self.processor.input_ended();
            draining.cancel();
            if !shut_down {
                tokio::select! {
                    _ = &mut timers => {}
                    () = &mut shutdown => shut_down = true,
                }
            }
            if shut_down {
                // The checks in flight get the drain's share of the shutdown budget, as
                // in-flight messages do; closing and the last flush keep the rest.
                let budget = self.settings.shutdown_timeout;
                let now = tokio::time::Instant::now();
                deadline = Some(now + budget);
                stop_timers.cancel();
                let drained = now + budget.saturating_sub(close_reserve(budget));
                end_timers(&mut timers, Some(drained)).await;
            }
        } else {
            let budget = self.settings.shutdown_timeout;
            deadline = Some(tokio::time::Instant::now() + budget);
            info!(in_flight = tasks.len(), budget = ?budget, "shutting down: no longer receiving");
            stop_timers.cancel();
            holding.stop();
            let drain = async {
                while let Some(res) = tasks.join_next().await {
                    report_panic(res);
                }
            };
            if tokio::time::timeout(budget.saturating_sub(close_reserve(budget)), drain)
                .await
                .is_err()
            {
                warn!(
                    abandoned = tasks.len(),
                    "shutdown deadline passed; unsettled messages will be redelivered"
                );
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
            }
            end_timers(&mut timers, deadline).await;
        }
        // Closing (flushing acks, giving back what was received but not handed out) and the
        // store's last flush share what is left of the budget: the whole shutdown ends within
        // `shutdown_timeout`, so an orchestrator's grace period above it never kills us mid-way.
        if tokio::time::timeout(remaining(deadline), source.close())
            .await
            .is_err()
        {
            warn!(
                "the source did not close within the shutdown budget; unsettled messages come back after their lease"
            );
        }
        match tokio::time::timeout(
            remaining(deadline).max(Duration::from_millis(500)),
            self.store.flush(),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(error = %e, "flushing the state store at exit failed; some redeliveries will be re-checked");
            }
            Err(_) => warn!(
                "the state store's last flush did not finish within the shutdown budget; some redeliveries will be re-checked"
            ),
        }
        progress.abort();
        let summary = RunSummary {
            failed_cancels: self.processor.failed_cancels(),
            failed_captures: self.processor.failed_captures(),
            ..self.stats.summary()
        };
        WorkerStopped(&summary).emit();
        summary
    }
}

/// Waits for the timer task (stopped) until `deadline`, then aborts it, which aborts the
/// checks it still runs: a dropped `JoinHandle` would leave them running past the shutdown.
async fn end_timers(
    timers: &mut tokio::task::JoinHandle<()>,
    deadline: Option<tokio::time::Instant>,
) {
    if tokio::time::timeout(remaining(deadline), &mut *timers)
        .await
        .is_err()
    {
        warn!(
            "a grace-period check was still running at the shutdown deadline; it is retried after its lease"
        );
        timers.abort();
        // An aborted task ends at its next await; its result says only that it was aborted.
        let _ = timers.await;
    }
}

fn report_panic(res: Result<(), tokio::task::JoinError>) {
    if let Err(e) = res
        && e.is_panic()
    {
        error!(error = %e, "a message task panicked; its delivery was not acked and will be redelivered");
    }
}

/// Of the shutdown budget, what is kept for closing the source (acks, returns) after the drain:
/// a third, at most 10 s.
fn close_reserve(budget: Duration) -> Duration {
    (budget / 3).min(Duration::from_secs(10))
}

/// Time left until `deadline`; unbounded (a day) without one.
fn remaining(deadline: Option<tokio::time::Instant>) -> Duration {
    deadline.map_or(Duration::from_secs(86_400), |d| {
        d.saturating_duration_since(tokio::time::Instant::now())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::handle::message_backoff;

    #[test]
    fn backoff_doubles_and_caps() {
        let base = Duration::from_secs(1);
        assert_eq!(outage_backoff(base).delay(1), Duration::from_secs(1));
        assert_eq!(outage_backoff(base).delay(3), Duration::from_secs(4));
        assert_eq!(outage_backoff(base).delay(30), Duration::from_secs(60));
    }

    #[test]
    fn message_retries_are_jittered_and_capped() {
        let base = Duration::from_secs(1);
        for _ in 0..100 {
            let d = message_backoff(base).delay(30);
            assert!(
                d >= Duration::from_secs(240) && d < Duration::from_secs(360),
                "{d:?}"
            );
        }
    }
}
