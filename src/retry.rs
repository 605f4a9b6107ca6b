//! The one retry policy: capped exponential backoff with optional jitter, configured per use.
//!
//! Every place that waits before trying again (the worker's message retries and receive/timer
//! failures, the commercetools client and the release webhook, the SQS pollers, the Pub/Sub
//! stream reopener, opening the state store) asks a [`Backoff`] for the pause; each keeps its
//! own numbers, built where it is used.

use std::time::Duration;

/// `base × 2^(attempt-1)`, capped at `cap`, then spread by `±jitter`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The pause before the second attempt (after the first failure).
    base: Duration,
    /// The longest pause, before jitter.
    cap: Duration,
    /// The pause is multiplied by a uniform factor in `[1 - jitter, 1 + jitter)`; 0 for none.
    jitter: f64,
    /// The most doublings counted (keeps the arithmetic finite; the cap usually bites first).
    max_doublings: u32,
}

impl Backoff {
    /// Doubling from `base` up to `cap`, no jitter.
    #[must_use]
    pub const fn exponential(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            jitter: 0.0,
            max_doublings: 16,
        }
    }

    /// Spreads each pause by `±fraction` (0.2 is ±20 %), applied after the cap, so a jittered
    /// pause may exceed the cap by up to `fraction`.
    #[must_use]
    pub const fn with_jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction;
        self
    }

    /// Counts at most `n` doublings (default 16).
    #[must_use]
    pub const fn with_max_doublings(mut self, n: u32) -> Self {
        self.max_doublings = n;
        self
    }

    /// The pause after failed attempt `attempt` (1-based; 0 counts as 1).
    #[must_use]
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(self.max_doublings);
        let capped = self
            .base
            .saturating_mul(2u32.saturating_pow(doublings))
            .min(self.cap);
        if self.jitter > 0.0 {
            capped.mul_f64(1.0 - self.jitter + fastrand::f64() * (2.0 * self.jitter))
        } else {
            capped
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn doubles_from_base_and_caps() {
        let b = Backoff::exponential(S(1), S(60));
        assert_eq!(b.delay(0), S(1));
        assert_eq!(b.delay(1), S(1));
        assert_eq!(b.delay(2), S(2));
        assert_eq!(b.delay(3), S(4));
        assert_eq!(b.delay(7), S(60));
        assert_eq!(b.delay(u32::MAX), S(60));
    }

    #[test]
    fn max_doublings_bounds_the_growth() {
        let b = Backoff::exponential(Duration::from_millis(1), S(3600)).with_max_doublings(10);
        assert_eq!(b.delay(11), Duration::from_millis(1024));
        assert_eq!(b.delay(40), Duration::from_millis(1024));
        let b = Backoff::exponential(Duration::from_millis(1), S(3600));
        assert_eq!(b.delay(40), Duration::from_millis(65_536));
    }

    #[test]
    fn a_huge_base_saturates_at_the_cap() {
        let b = Backoff::exponential(Duration::MAX, S(5));
        assert_eq!(b.delay(20), S(5));
    }

    #[test]
    fn jitter_stays_within_its_band_around_the_capped_pause() {
        let b = Backoff::exponential(Duration::from_millis(100), S(30)).with_jitter(0.5);
        for _ in 0..200 {
            let first = b.delay(1);
            assert!(first >= Duration::from_millis(50) && first < Duration::from_millis(150));
            let late = b.delay(30);
            assert!(late >= S(15) && late < S(45), "{late:?}");
        }
        let b = Backoff::exponential(S(10), S(300)).with_jitter(0.2);
        for _ in 0..200 {
            let d = b.delay(1);
            assert!(d >= S(8) && d < S(12), "{d:?}");
        }
    }
}
