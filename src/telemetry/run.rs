//! A `payrules run`'s counts, its periodic progress line and its last line.

use tracing::info;

/// The counts of a `payrules run` (the worker's `RunStats`, read at one moment): the exit
/// status, the progress line and the final log line are made from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSummary {
    /// Messages handled and acked.
    pub acked: usize,
    /// Messages nacked for a retry.
    pub retried: usize,
    /// Messages parked as poison.
    pub parked: usize,
    /// Subscription test notifications skipped.
    pub subscription_tests: usize,
    /// Redeliveries of messages already processed, acked without work.
    pub duplicates: usize,
    /// Actions executed (or, in a dry run, logged).
    pub actions: usize,
    /// Cancels of ours the payments reported failed (their money is still reserved).
    pub failed_cancels: u64,
    /// Captures of ours the payments reported failed (shipped, money not taken).
    pub failed_captures: u64,
    /// Refunds of ours the payments reported failed (the customer's money not given back).
    pub failed_refunds: u64,
}

/// The worker's periodic progress line (every `PAYRULES_PROGRESS_INTERVAL`).
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// The run's counts so far.
    pub counts: &'a RunSummary,
    /// Messages being processed now.
    pub in_flight: usize,
    /// Messages settled per second since the last line.
    pub rate_per_second: f64,
    /// How far behind commercetools the last message received was (now − createdAt).
    pub lag_seconds: f64,
}

impl Progress<'_> {
    /// Logs the line.
    pub fn emit(self) {
        let c = self.counts;
        info!(
            acked = c.acked,
            retried = c.retried,
            parked = c.parked,
            duplicates = c.duplicates,
            actions = c.actions,
            in_flight = self.in_flight,
            rate_per_second = (self.rate_per_second * 10.0).round() / 10.0,
            lag_seconds = self.lag_seconds,
            "progress"
        );
    }
}

/// The worker stopped: its run summary, as one structured line.
#[derive(Debug, Clone, Copy)]
pub struct WorkerStopped<'a>(pub &'a RunSummary);

impl WorkerStopped<'_> {
    /// Logs the line.
    pub fn emit(self) {
        let c = self.0;
        info!(
            acked = c.acked,
            retried = c.retried,
            parked = c.parked,
            duplicates = c.duplicates,
            subscription_tests = c.subscription_tests,
            actions = c.actions,
            failed_cancels = c.failed_cancels,
            failed_captures = c.failed_captures,
            failed_refunds = c.failed_refunds,
            "worker stopped"
        );
    }
}
