//! The worker's progress report (the grace-period timer loop is in [`super::timers`]).

use super::{RunStats, RunSummary};
use crate::telemetry::Progress;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

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
