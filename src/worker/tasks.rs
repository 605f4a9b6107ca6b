//! The worker's background tasks: the progress report and the grace-period timer loop.

use super::handle::outage_backoff;
use super::{RunStats, RunSummary};
use crate::process::Processor;
use crate::store::Store;
use crate::telemetry::{Progress, StoreState, TimersPending};
use chrono::Utc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

/// Logs a progress line every `interval`: counts, rate over the interval, lag.
pub(super) async fn report_progress(
    stats: Arc<RunStats>,
    interval: Duration,
    stop: CancellationToken,
) {
    if interval.is_zero() {
        return;
    }
    let mut last = stats.summary();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let now = stats.summary();
        let settled = |s: &RunSummary| s.acked + s.retried + s.parked;
        #[allow(clippy::cast_precision_loss)]
        let rate =
            (settled(&now) - settled(&last).min(settled(&now))) as f64 / interval.as_secs_f64();
        #[allow(clippy::cast_precision_loss)]
        let lag_seconds = stats.last_age_ms.load(Ordering::Relaxed) as f64 / 1000.0;
        Progress {
            counts: &now,
            in_flight: stats.in_flight.load(Ordering::Relaxed),
            rate_per_second: rate,
            lag_seconds,
        }
        .emit();
        last = now;
    }
}

/// Fires due grace-period checks on the real clock. Polls at least once a second, so a timer
/// scheduled by a message task is seen promptly. Exits on `stop`, or once `draining` and no
/// timer is left.
pub(super) async fn run_timers(
    processor: Arc<Processor>,
    store: Arc<dyn Store>,
    retry_delay: Duration,
    stats: Arc<RunStats>,
    stop: CancellationToken,
    draining: CancellationToken,
) {
    const POLL: Duration = Duration::from_secs(1);
    // Counting is a query of its own; the gauge needs no finer grain.
    const COUNT_EVERY: Duration = Duration::from_secs(5);
    let mut failures: u32 = 0;
    let mut last_count = std::time::Instant::now()
        .checked_sub(COUNT_EVERY)
        .unwrap_or_else(std::time::Instant::now);
    loop {
        let now = Utc::now();
        let step = async {
            let due = store.take_due(now, 64).await?;
            let fired = due.len();
            for timer in due {
                match processor.timer(&timer, now).await {
                    Ok(actions) => {
                        stats.actions.fetch_add(actions.len(), Ordering::Relaxed);
                    }
                    Err(e) if e.is_retryable() => {
                        let again = now
                            + chrono::Duration::from_std(retry_delay)
                                .unwrap_or(chrono::Duration::seconds(1));
                        warn!(timer = %timer.key(), error = %e, "grace-period check failed; retrying");
                        store.retry_timer(&timer, again).await?;
                    }
                    Err(e) => {
                        error!(timer = %timer.key(), error = %e, "grace-period check failed permanently");
                    }
                }
            }
            let next = store.next_due().await?;
            Ok::<_, crate::store::StoreError>((fired, next))
        };
        let stepped = step.await;
        match &stepped {
            Ok(_) => StoreState { result: Ok(()) }.emit(),
            Err(e) => StoreState {
                result: Err(&e.to_string()),
            }
            .emit(),
        }
        if last_count.elapsed() >= COUNT_EVERY {
            last_count = std::time::Instant::now();
            if let Ok(n) = store.timers_pending().await {
                TimersPending(n).emit();
            }
        }
        let wait = match stepped {
            Ok((fired, _)) if fired > 0 => {
                failures = 0;
                continue;
            }
            Ok((_, None)) if draining.is_cancelled() => return,
            Ok((_, next)) => {
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
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}
