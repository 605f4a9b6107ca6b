//! What the probes answer: is the worker's loop making progress (liveness), are the store and
//! the source usable (readiness). Fed by the telemetry events, read by the HTTP port.
//!
//! Process-wide like the metrics recorder and the log subscriber: every part of the worker
//! reports into it without a handle threaded through each constructor.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

/// The worker is wedged when messages are in flight and none has settled for this long. Every
/// effect gives up well before it (HTTP timeouts and bounded retries), so only a stuck task,
/// lock or connection pool reaches it.
pub const STALL_AFTER: Duration = Duration::from_secs(120);

/// One component's readiness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "detail")]
pub enum Readiness {
    /// Not started yet (the store is being opened, the source is connecting).
    Starting,
    /// Usable.
    Ready,
    /// Failing; the last error.
    Unavailable(String),
}

/// The probes' state.
#[derive(Debug)]
pub struct Status {
    /// When the process started; the origin of the millisecond stamps.
    started: Instant,
    /// Milliseconds after `started` of the last progress (a message settled, a receive
    /// returned, the loop went idle).
    last_progress_ms: AtomicU64,
    /// Messages being worked on.
    in_flight: AtomicUsize,
    /// The state store.
    store: Mutex<Readiness>,
    /// The source (and its broker).
    source: Mutex<Readiness>,
    /// Whether commercetools accepts payrules' credentials: unavailable while the token
    /// endpoint refuses the client or the API answers 401/403 (a secret rotated, a scope
    /// removed); ready until the first refusal and again after the next accepted request.
    commercetools: Mutex<Readiness>,
}

static STATUS: LazyLock<Status> = LazyLock::new(|| Status {
    started: Instant::now(),
    last_progress_ms: AtomicU64::new(0),
    in_flight: AtomicUsize::new(0),
    store: Mutex::new(Readiness::Starting),
    source: Mutex::new(Readiness::Starting),
    commercetools: Mutex::new(Readiness::Ready),
});

/// The process's status.
pub fn status() -> &'static Status {
    &STATUS
}

/// The `/healthz` answer.
#[derive(Debug, Clone, Serialize)]
pub struct Liveness {
    /// `ok` or `wedged`.
    pub status: &'static str,
    /// Messages being worked on.
    pub in_flight: usize,
    /// Seconds since the last progress.
    pub since_progress_secs: u64,
}

/// The `/readyz` answer.
#[derive(Debug, Clone, Serialize)]
pub struct ReadyReport {
    /// Both components ready.
    pub ready: bool,
    /// The state store.
    pub store: Readiness,
    /// The source.
    pub source: Readiness,
    /// commercetools' answer to payrules' credentials.
    pub commercetools: Readiness,
}

impl Status {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Something moved: a message settled, a receive returned.
    pub fn progress(&self) {
        self.last_progress_ms
            .store(self.now_ms(), Ordering::Relaxed);
    }

    /// Sets the messages in flight.
    pub fn set_in_flight(&self, n: usize) {
        self.in_flight.store(n, Ordering::Relaxed);
    }

    /// Messages in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Sets the store's readiness; whether it changed state (ready, unavailable, …).
    pub fn set_store(&self, r: Readiness) -> bool {
        replace(&self.store, r)
    }

    /// Sets the source's readiness; whether it changed state.
    pub fn set_source(&self, r: Readiness) -> bool {
        replace(&self.source, r)
    }

    /// Sets whether commercetools accepts the credentials; whether it changed state.
    pub fn set_commercetools(&self, r: Readiness) -> bool {
        replace(&self.commercetools, r)
    }

    /// Whether commercetools accepts the credentials.
    pub fn commercetools(&self) -> Readiness {
        self.commercetools
            .lock()
            .map_or(Readiness::Starting, |s| s.clone())
    }

    /// The source's readiness.
    pub fn source(&self) -> Readiness {
        self.source
            .lock()
            .map_or(Readiness::Starting, |s| s.clone())
    }

    /// The store's readiness.
    pub fn store(&self) -> Readiness {
        self.store.lock().map_or(Readiness::Starting, |s| s.clone())
    }

    /// Liveness: wedged when work is in flight and nothing progressed for `stall_after`.
    pub fn liveness(&self, stall_after: Duration) -> Liveness {
        let since = Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.last_progress_ms.load(Ordering::Relaxed)),
        );
        let in_flight = self.in_flight();
        Liveness {
            status: if in_flight > 0 && since > stall_after {
                "wedged"
            } else {
                "ok"
            },
            in_flight,
            since_progress_secs: since.as_secs(),
        }
    }

    /// Readiness of the store and the source.
    pub fn readiness(&self) -> ReadyReport {
        let store = self.store();
        let source = self.source();
        let commercetools = self.commercetools();
        ReadyReport {
            ready: store == Readiness::Ready
                && source == Readiness::Ready
                && commercetools == Readiness::Ready,
            store,
            source,
            commercetools,
        }
    }
}

/// Stores `r`; whether the state (not only its detail) changed.
fn replace(slot: &Mutex<Readiness>, r: Readiness) -> bool {
    let Ok(mut s) = slot.lock() else {
        return false;
    };
    let changed = std::mem::discriminant(&*s) != std::mem::discriminant(&r);
    *s = r;
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> Status {
        Status {
            started: Instant::now(),
            last_progress_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            store: Mutex::new(Readiness::Starting),
            source: Mutex::new(Readiness::Starting),
            commercetools: Mutex::new(Readiness::Ready),
        }
    }

    #[test]
    fn idle_is_alive_busy_without_progress_is_wedged() {
        let s = fresh();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(s.liveness(Duration::from_millis(10)).status, "ok");
        s.set_in_flight(3);
        let l = s.liveness(Duration::from_millis(10));
        assert_eq!(l.status, "wedged");
        assert_eq!(l.in_flight, 3);
        s.progress();
        assert_eq!(s.liveness(Duration::from_millis(10)).status, "ok");
    }

    #[test]
    fn ready_only_when_store_and_source_are() {
        let s = fresh();
        assert!(!s.readiness().ready);
        s.set_store(Readiness::Ready);
        assert!(!s.readiness().ready);
        s.set_source(Readiness::Ready);
        assert!(s.readiness().ready);
        s.set_source(Readiness::Unavailable("receive failed".into()));
        let r = s.readiness();
        assert!(!r.ready);
        assert_eq!(
            serde_json::to_value(&r).unwrap()["source"],
            serde_json::json!({"state": "unavailable", "detail": "receive failed"})
        );
        s.set_source(Readiness::Ready);
        assert!(s.set_commercetools(Readiness::Unavailable("HTTP 401".into())));
        assert!(!s.set_commercetools(Readiness::Unavailable("HTTP 403".into())));
        let r = s.readiness();
        assert!(!r.ready, "refused credentials are not ready");
        assert_eq!(
            serde_json::to_value(&r).unwrap()["commercetools"],
            serde_json::json!({"state": "unavailable", "detail": "HTTP 403"})
        );
        assert!(s.set_commercetools(Readiness::Ready));
        assert!(s.readiness().ready);
    }
}
