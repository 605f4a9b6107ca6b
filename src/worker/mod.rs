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
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::process::Processor;
use crate::source::{Delivery, Source, SourceError};
use crate::store::Store;
use crate::telemetry::{InFlight, WorkerStopped};

// The run's counts are telemetry's type (its progress and final lines are made from them);
// re-exported where a caller of `Worker::run` looks for them.
pub use crate::telemetry::RunSummary;

use handle::{outage_backoff, settle};
use hold::{Holding, process_holding};
use tasks::report_progress;
use timers::run_timers;

/// Messages received but not yet settled, per message worked on: a message whose outcome is
/// decided frees its worker slot while its ack, nack or park is still on its way to the
/// broker (an SQS delete waits to share a batch, then takes a round trip), up to this many.
const UNSETTLED_PER_WORKING: usize = 4;

/// Worker tuning, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSettings {
    /// Messages processed at once.
    pub concurrency: usize,
    /// Deliveries after which a failing message is parked.
    pub max_deliveries: u32,
    /// How long to finish in-flight work on shutdown.
    pub shutdown_timeout: Duration,
    /// First retry delay.
    pub retry_delay: Duration,
    /// How often the progress line is logged (zero: never).
    pub progress_interval: Duration,
    /// Messages larger than this are parked without being decoded.
    pub max_message_bytes: usize,
}

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
            failed_refunds: 0,
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
        let mut run = self.start();
        // Set on a shutdown signal: everything after it ends by then.
        let deadline = if self.receive(&mut run, source.as_mut(), &mut shutdown).await {
            self.finish_input(&mut run, &mut shutdown).await
        } else {
            Some(self.drain(&mut run).await)
        };
        self.close(source.as_mut(), deadline).await;
        run.progress.abort();
        let summary = RunSummary {
            failed_cancels: self.processor.failed_cancels(),
            failed_captures: self.processor.failed_captures(),
            failed_refunds: self.processor.failed_refunds(),
            ..self.stats.summary()
        };
        WorkerStopped(&summary).emit();
        summary
    }

    /// The permits, the hold, and the two background tasks: the timer loop and the progress
    /// line.
    fn start(&self) -> Run {
        let stop_timers = CancellationToken::new();
        let draining = CancellationToken::new();
        let timers = tokio::spawn(run_timers(
            self.processor.clone(),
            self.store.clone(),
            self.settings.retry_delay,
            self.settings.concurrency,
            self.stats.clone(),
            stop_timers.clone(),
            draining.clone(),
        ));
        let progress = tokio::spawn(report_progress(
            self.stats.clone(),
            self.settings.progress_interval,
            stop_timers.clone(),
        ));
        Run {
            working: Arc::new(Semaphore::new(self.settings.concurrency)),
            unsettled: Arc::new(Semaphore::new(
                self.settings
                    .concurrency
                    .saturating_mul(UNSETTLED_PER_WORKING),
            )),
            tasks: JoinSet::new(),
            holding: Arc::new(Holding::new()),
            stop_timers,
            draining,
            timers,
            progress,
        }
    }

    /// Receives and hands each delivery to a task of its own, until the shutdown signal
    /// (`false`) or the end of the input (`true`).
    async fn receive<F: Future<Output = ()>>(
        &self,
        run: &mut Run,
        source: &mut dyn Source,
        shutdown: &mut Pin<&mut F>,
    ) -> bool {
        let source_name = source.name();
        let mut receive_failures: u32 = 0;
        loop {
            // Reap finished tasks so the set does not grow without bound.
            while let Some(res) = run.tasks.try_join_next() {
                report_panic(res);
            }
            // Both before receiving: what is received can be worked on at once. Neither while
            // a message is held through a dependency's outage: a new one would only wait too.
            let permits = async {
                run.holding.unpaused().await;
                let held = run.unsettled.clone().acquire_owned().await?;
                let work = run.working.clone().acquire_owned().await?;
                Ok::<_, tokio::sync::AcquireError>((held, work))
            };
            let permits = tokio::select! {
                biased;
                () = shutdown.as_mut() => return false,
                p = permits => match p {
                    Ok(p) => p,
                    Err(_) => return false,
                },
            };
            let next = tokio::select! {
                biased;
                () = shutdown.as_mut() => return false,
                n = source.next() => n,
            };
            match next {
                Ok(Some(delivery)) => {
                    receive_failures = 0;
                    self.spawn_message(run, delivery, permits, source_name);
                }
                Ok(None) => return true,
                Err(e) => {
                    receive_failures = receive_failures.saturating_add(1);
                    let delay = self.receive_retry_delay(&e, receive_failures);
                    tokio::select! {
                        () = shutdown.as_mut() => return false,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// One delivery's task: processed (held through an outage), its worker slot freed, then
    /// settled and its unsettled place freed.
    fn spawn_message(
        &self,
        run: &mut Run,
        delivery: Delivery,
        (held, work): (OwnedSemaphorePermit, OwnedSemaphorePermit),
        source_name: &'static str,
    ) {
        let processor = self.processor.clone();
        let settings = self.settings.clone();
        let stats = self.stats.clone();
        let holding = run.holding.clone();
        // Every line logged about this message carries where it came from.
        let span = info_span!("message", origin = %delivery.origin);
        InFlight(stats.in_flight.fetch_add(1, Ordering::Relaxed) + 1).emit();
        run.tasks.spawn(
            async move {
                let outcome =
                    process_holding(&delivery, &processor, &stats, &settings, &holding).await;
                // Settling is the broker's round trip, not work: the next message may start
                // meanwhile.
                drop(work);
                InFlight(stats.in_flight.fetch_sub(1, Ordering::Relaxed) - 1).emit();
                settle(delivery, outcome, &settings, &stats, source_name).await;
                drop(held);
            }
            .instrument(span),
        );
    }

    /// How long to wait after the `failures`-th receive failure in a row.
    fn receive_retry_delay(&self, e: &SourceError, failures: u32) -> Duration {
        if matches!(e, SourceError::Receive(_)) {
            // The broker sources back off on their own and report the change of state
            // (SourceState); backing off here too would stack delays on errors queued before
            // the broker came back.
            debug!(error = %e, "receive failed");
            Duration::from_millis(100)
        } else {
            let delay = outage_backoff(self.settings.retry_delay).delay(failures);
            warn!(error = %e, retry_in = ?delay, "receive failed");
            delay
        }
    }

    /// The input is done: waits for in-flight work (a shutdown ends the holds of messages
    /// waiting for a dependency), then for the pending timers. A shutdown signal meanwhile
    /// sets the deadline, which it returns.
    async fn finish_input<F: Future<Output = ()>>(
        &self,
        run: &mut Run,
        shutdown: &mut Pin<&mut F>,
    ) -> Option<Instant> {
        let tasks = &mut run.tasks;
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
            () = shutdown.as_mut() => {
                shut_down = true;
                run.holding.stop();
                drained.await;
            }
        }
        self.processor.input_ended();
        run.draining.cancel();
        if !shut_down {
            tokio::select! {
                _ = &mut run.timers => {}
                () = shutdown.as_mut() => shut_down = true,
            }
        }
        if !shut_down {
            return None;
        }
        // The checks in flight get the drain's share of the shutdown budget, as in-flight
        // messages do; closing and the last flush keep the rest.
        let budget = self.settings.shutdown_timeout;
        let now = Instant::now();
        run.stop_timers.cancel();
        let drained = now + budget.saturating_sub(close_reserve(budget));
        end_timers(&mut run.timers, Some(drained)).await;
        Some(now + budget)
    }

    /// On the shutdown signal: no more work is taken; in-flight messages get the drain's share
    /// of the budget, the timer checks what is left of it. Returns the deadline.
    async fn drain(&self, run: &mut Run) -> Instant {
        let budget = self.settings.shutdown_timeout;
        let deadline = Instant::now() + budget;
        info!(in_flight = run.tasks.len(), budget = ?budget, "shutting down: no longer receiving");
        run.stop_timers.cancel();
        run.holding.stop();
        let tasks = &mut run.tasks;
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
                abandoned = run.tasks.len(),
                "shutdown deadline passed; unsettled messages will be redelivered"
            );
            run.tasks.abort_all();
            while run.tasks.join_next().await.is_some() {}
        }
        end_timers(&mut run.timers, Some(deadline)).await;
        deadline
    }

    /// Closes the source (flushing acks, giving back what was received but not handed out),
    /// then the store's last flush: they share what is left of the budget, so the whole
    /// shutdown ends within `shutdown_timeout` and an orchestrator's grace period above it
    /// never kills us mid-way.
    async fn close(&self, source: &mut dyn Source, deadline: Option<Instant>) {
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
    }
}

/// What the phases of one run share.
struct Run {
    /// Worker slots: messages being worked on.
    working: Arc<Semaphore>,
    /// Places for messages received and not yet settled.
    unsettled: Arc<Semaphore>,
    /// One task per message.
    tasks: JoinSet<()>,
    /// Messages held through a dependency's outage; while one is, pulling pauses.
    holding: Arc<Holding>,
    /// Stops the timer loop and the progress line.
    stop_timers: CancellationToken,
    /// Tells the timer loop the input is done.
    draining: CancellationToken,
    /// The timer loop.
    timers: JoinHandle<()>,
    /// The progress line.
    progress: JoinHandle<()>,
}

/// Waits for the timer task (stopped) until `deadline`, then aborts it, which aborts the
/// checks it still runs: a dropped `JoinHandle` would leave them running past the shutdown.
async fn end_timers(timers: &mut JoinHandle<()>, deadline: Option<Instant>) {
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
fn remaining(deadline: Option<Instant>) -> Duration {
    deadline.map_or(Duration::from_secs(86_400), |d| {
        d.saturating_duration_since(Instant::now())
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
