//! The harness the broker tests (`pubsub`, `sqs`) share: scenario copies, the replay
//! baseline, a worker with a dry-run executor, and a [`Recording`] source wrapper that notes
//! how each delivery was settled.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use payrules::action::Action;
use payrules::config::WorkerSettings;
use payrules::effects::{DryRun, Effect, EffectError, Executor};
use payrules::process::Processor;
use payrules::rules::Engine;
use payrules::source::{AckError, Acker, Delivery, Source, SourceError};
use payrules::store::MemoryStore;
use payrules::view::StreamView;
use payrules::worker::{RunSummary, Worker};

use super::fixtures::{default_rules, scenario};

/// `lines` with every UUID changed in its last four digits to `copy`: an independent copy of
/// a scenario (other payments, orders and message ids), consistent within itself.
pub(crate) fn scenario_copy(lines: &[Vec<u8>], copy: u16) -> Vec<Vec<u8>> {
    fn is_uuid(b: &[u8]) -> bool {
        b.len() == 36
            && b.iter().enumerate().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => *c == b'-',
                _ => c.is_ascii_hexdigit(),
            })
    }
    let suffix = format!("{copy:04x}");
    lines
        .iter()
        .map(|line| {
            let mut out = line.clone();
            let mut i = 0;
            while i + 36 <= out.len() {
                if is_uuid(&out[i..i + 36]) {
                    out[i + 32..i + 36].copy_from_slice(suffix.as_bytes());
                    i += 36;
                } else {
                    i += 1;
                }
            }
            out
        })
        .collect()
}

/// The action keys `payrules replay` plans for a scenario, sorted.
pub(crate) async fn replay_keys(name: &str) -> Vec<String> {
    let out = payrules::replay::replay_files(&[scenario(name)], default_rules(), None)
        .await
        .expect("replay");
    let mut keys: Vec<String> = out.actions.into_iter().map(|a| a.key).collect();
    keys.sort();
    keys
}

/// The `key` of every JSON line of a dry run, sorted.
pub(crate) fn action_keys(dry_run_output: &[u8]) -> Vec<String> {
    let mut keys: Vec<String> = String::from_utf8_lossy(dry_run_output)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
            v["key"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    keys.sort();
    keys
}

/// A `Write` into shared memory, for the dry-run executor.
#[derive(Clone, Default)]
pub(crate) struct SharedBuf(
    /// The bytes written so far; shared by the executor's writer and the test.
    pub Arc<Mutex<Vec<u8>>>,
);

impl SharedBuf {
    /// What was written so far.
    pub(crate) fn contents(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A dry-run executor writing into a fresh buffer.
pub(crate) fn dry_run() -> (Arc<dyn Executor>, SharedBuf) {
    let buf = SharedBuf::default();
    (Arc::new(DryRun::new(Box::new(buf.clone()))), buf)
}

/// An executor whose every call blocks forever: messages that lead to an action stay in flight.
#[derive(Default)]
pub(crate) struct Blocking {
    /// Calls entered so far.
    pub calls: AtomicUsize,
}

#[async_trait]
impl Executor for Blocking {
    async fn execute(&self, _action: &Action) -> Result<Effect, EffectError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<()>().await;
        unreachable!("pending never resolves")
    }
}

/// An executor that fails as an outage would (transiently) until it is told the dependency is
/// back, then acts as [`dry_run`]'s does; it counts both kinds of calls.
pub(crate) struct Outage {
    /// Calls answered while down.
    pub failed: AtomicUsize,
    /// Calls answered after.
    pub done: AtomicUsize,
    /// Whether the dependency is back.
    pub back: std::sync::atomic::AtomicBool,
    inner: Arc<dyn Executor>,
}

impl Outage {
    /// Down until [`Outage::back`] is set; `inner` acts after.
    pub(crate) fn new(inner: Arc<dyn Executor>) -> Self {
        Self {
            failed: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            back: std::sync::atomic::AtomicBool::new(false),
            inner,
        }
    }
}

#[async_trait]
impl Executor for Outage {
    async fn execute(&self, action: &Action) -> Result<Effect, EffectError> {
        if !self.back.load(Ordering::SeqCst) {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(EffectError::Transient {
                detail: "the receiver is down (test outage)".into(),
                retry_after: None,
            });
        }
        self.done.fetch_add(1, Ordering::SeqCst);
        self.inner.execute(action).await
    }
}

/// A worker over the stream view and a memory store, with the default rules.
pub(crate) fn worker(
    executor: Arc<dyn Executor>,
    concurrency: usize,
    shutdown_timeout: Duration,
) -> Worker {
    worker_retrying(
        executor,
        concurrency,
        shutdown_timeout,
        Duration::from_millis(500),
    )
}

/// [`worker`] with this first retry delay.
pub(crate) fn worker_retrying(
    executor: Arc<dyn Executor>,
    concurrency: usize,
    shutdown_timeout: Duration,
    retry_delay: Duration,
) -> Worker {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(Arc::new(StreamView::new()), store.clone(), default_rules());
    let processor = Arc::new(Processor::new(engine, store, executor));
    Worker::new(
        processor,
        WorkerSettings {
            concurrency,
            max_deliveries: 5,
            shutdown_timeout,
            retry_delay,
            progress_interval: Duration::ZERO,
            max_message_bytes: 1024 * 1024,
        },
    )
}

/// Waits until `done()` or `limit`; returns whether `done()` held.
pub(crate) async fn until(mut done: impl FnMut() -> bool, limit: Duration) -> bool {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// A shutdown signal for [`Worker::run`]: resolves once `done()` holds, or after `limit`.
pub(crate) async fn shutdown_when(done: impl FnMut() -> bool, limit: Duration) {
    until(done, limit).await;
}

/// Runs `source`, wrapped in a [`Recording`], through a dry-run [`worker`] (concurrency 1,
/// shutdown timeout 5 s) until `done` holds for its settlements, or 30 s; returns the run's
/// summary, the settlements and the dry run's output.
pub(crate) async fn run_recorded(
    source: Box<dyn Source>,
    done: impl Fn(&Settlements) -> bool,
) -> (RunSummary, Settlements, Vec<u8>) {
    let (source, log) = Recording::new(source);
    let (executor, out) = dry_run();
    let watch = log.clone();
    let summary = worker(executor, 1, Duration::from_secs(5))
        .run(
            Box::new(source),
            shutdown_when(
                move || done(&watch.lock().unwrap()),
                Duration::from_secs(30),
            ),
        )
        .await;
    let log = log.lock().unwrap().clone();
    (summary, log, out.contents())
}

/// Runs `source`, wrapped in a [`Recording`], through a [`worker`] (concurrency 8, shutdown
/// timeout 300 ms) whose every action blocks, and shuts it down once `blocked` actions are
/// stuck (or after 30 s); returns the run's summary and the settlements.
pub(crate) async fn run_blocked(
    source: Box<dyn Source>,
    blocked: usize,
) -> (RunSummary, Settlements) {
    let (source, log) = Recording::new(source);
    let blocking = Arc::new(Blocking::default());
    let calls = blocking.clone();
    let summary = worker(blocking, 8, Duration::from_millis(300))
        .run(
            Box::new(source),
            shutdown_when(
                move || calls.calls.load(Ordering::SeqCst) >= blocked,
                Duration::from_secs(30),
            ),
        )
        .await;
    let log = log.lock().unwrap().clone();
    (summary, log)
}

/// How the deliveries of a [`Recording`] source were settled, by origin.
#[derive(Debug, Clone, Default)]
pub(crate) struct Settlements {
    /// Every delivery handed out: origin and delivery count.
    pub delivered: Vec<(String, Option<u32>)>,
    /// Acked.
    pub acked: Vec<String>,
    /// Nacked.
    pub nacked: Vec<String>,
    /// Parked, with the reason.
    pub parked: Vec<(String, String)>,
}

/// Wraps a source and records every settlement (only successful ones).
pub(crate) struct Recording {
    /// The source under test.
    inner: Box<dyn Source>,
    /// Where settlements are noted; the test holds another handle on it.
    log: Arc<Mutex<Settlements>>,
}

impl Recording {
    /// Wraps `inner`; read the log through the returned handle.
    pub(crate) fn new(inner: Box<dyn Source>) -> (Self, Arc<Mutex<Settlements>>) {
        let log = Arc::new(Mutex::new(Settlements::default()));
        (
            Self {
                inner,
                log: log.clone(),
            },
            log,
        )
    }
}

#[async_trait]
impl Source for Recording {
    async fn next(&mut self) -> Result<Option<Delivery>, SourceError> {
        let Some(d) = self.inner.next().await? else {
            return Ok(None);
        };
        let origin = d.origin.clone();
        self.log
            .lock()
            .unwrap()
            .delivered
            .push((origin.clone(), d.delivery_count));
        Ok(Some(Delivery::new(
            d.payload.clone(),
            origin.clone(),
            d.delivery_count,
            d.attributes.clone(),
            Box::new(RecordingAcker {
                inner: Some(d),
                origin,
                log: self.log.clone(),
            }),
        )))
    }

    async fn close(&mut self) {
        self.inner.close().await;
    }
}

/// Settles the wrapped delivery and notes it when that succeeded.
struct RecordingAcker {
    /// The source's own delivery; `None` once settled (a failed settlement puts it back).
    inner: Option<Delivery>,
    /// Its origin, for the log.
    origin: String,
    /// Shared with [`Recording`].
    log: Arc<Mutex<Settlements>>,
}

impl RecordingAcker {
    fn take(&mut self, op: &'static str) -> Result<Delivery, AckError> {
        self.inner.take().ok_or(AckError {
            op,
            detail: "settled twice".into(),
        })
    }
}

#[async_trait]
impl Acker for RecordingAcker {
    async fn ack(&mut self) -> Result<(), AckError> {
        match self.take("ack")?.ack().await {
            Ok(()) => {
                self.log.lock().unwrap().acked.push(self.origin.clone());
                Ok(())
            }
            Err((e, d)) => {
                self.inner = Some(d);
                Err(e)
            }
        }
    }

    async fn nack(&mut self, retry_after: Duration) -> Result<(), AckError> {
        match self.take("nack")?.nack(retry_after).await {
            Ok(()) => {
                self.log.lock().unwrap().nacked.push(self.origin.clone());
                Ok(())
            }
            Err((e, d)) => {
                self.inner = Some(d);
                Err(e)
            }
        }
    }

    async fn park(&mut self, reason: &str) -> Result<(), AckError> {
        match self.take("park")?.park(reason).await {
            Ok(()) => {
                self.log
                    .lock()
                    .unwrap()
                    .parked
                    .push((self.origin.clone(), reason.to_string()));
                Ok(())
            }
            Err((e, d)) => {
                self.inner = Some(d);
                Err(e)
            }
        }
    }
}

/// The set of the strings.
pub(crate) fn set<'a>(items: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
    items.into_iter().cloned().collect()
}
