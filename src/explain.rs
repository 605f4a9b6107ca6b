//! `payrules explain order ID | payment ID`: the decision as the rules see it now, in words.
//!
//! The order or payment is read live from commercetools (the `CTP_*` variables) or, with
//! `--input`, from the view that replaying those streams builds — exactly as `payrules replay`
//! builds it — with the store's ledger and timers. The facts and the decision come from the
//! engine ([`Engine::explain_order`], [`Engine::explain_payment`]: the rules' own reads and
//! decision functions); this module only adds what the ledger remembers about when and why
//! (for a replay: the planned actions, the messages and the timers) and puts it into words or
//! one JSON object.
//!
//! The verdict is the ledger's: an order is `released` when `release:{id}` is done; a payment
//! `captured` when `capture:{id}` is done, else `cancelled` when `cancel:{id}` is done, else
//! `untouched`. The words say why, and what the rules decide now.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use payrules::explain::{Kind, Offline};
//! use payrules::rules::Rules;
//!
//! let offline = Offline::replay(&["fixtures/scenarios/16-partial-coverage-two-payments.jsonl"], Rules::default(), None).await?;
//! let why = offline.explain(Kind::Order, "…").await?;
//! println!("{}: {}", why.verdict(), why.because());
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::DateTime;
use clap::{Args, ValueEnum};
use serde::Serialize;
use tracing::instrument::WithSubscriber;

use crate::action::{Action, CancelReason, format_timestamp};
use crate::commerce::{CtpClient, LiveView};
use crate::config::{self, CommercetoolsSettings, FileConfig, Secret};
use crate::message::{Timestamp, decode};
use crate::model::{Money, Order, OrderState, ShipmentState, Transaction};
use crate::replay::{Replay, ReplayError, ReplaySummary};
use crate::rules::explain::{OrderFacts, PaymentFacts, PaymentShare};
use crate::rules::release::NotReleased;
use crate::rules::{self, Engine, EngineError, Rules};
use crate::source::{FileInput, InputReader};
use crate::store::{Claim, LedgerStatus, MemoryStore, SqlStore, Store, StoreError, Timer};
use crate::view::StreamView;

// ------------------------------------------------------------------------------------------------
// The command line

/// What to explain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An order: released or not, and why.
    Order,
    /// A payment: cancelled, captured or untouched, and why.
    Payment,
}

/// `payrules explain …`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// `order` or `payment`.
    #[arg(value_enum)]
    pub kind: Kind,
    /// The order or payment id.
    pub id: String,
    /// Print one JSON object instead of words.
    #[arg(long)]
    pub json: bool,
    /// Explain from the view replaying these streams builds (.json, .jsonl, directories, -),
    /// exactly as `payrules replay` would, instead of live commercetools. Repeatable.
    #[arg(long = "input", value_name = "STREAM")]
    pub inputs: Vec<PathBuf>,
    /// TOML configuration: the rules; live, also `[commercetools]` and `[state]` (the CTP_*
    /// and PAYRULES_* variables override it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// With --input: snapshots, DIR/payments/*.json and DIR/orders/*.json (as replay --state).
    #[arg(long, value_name = "DIR", requires = "inputs")]
    pub state: Option<PathBuf>,
    /// Live: the state store whose ledger is read (default: `state.url`, PAYRULES_STATE_URL);
    /// `memory:` explains without a ledger.
    #[arg(long, value_name = "URL", conflicts_with = "inputs")]
    pub state_url: Option<String>,
}

/// Runs `payrules explain`: exit status 0 when the order or payment was found, 1 when it was
/// not, 2 on a usage, configuration or read error.
pub async fn cli(args: ExplainArgs) -> ExitCode {
    match run(&args).await {
        Ok(why) => {
            if args.json {
                println!("{}", why.to_json());
            } else {
                print!("{}", why.to_text());
            }
            if why.found() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("payrules explain: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: &ExplainArgs) -> Result<Explanation, String> {
    let file = config::merge_with(args.config.as_deref(), |k| std::env::var(k).ok())
        .map_err(|e| e.to_string())?;
    let rules = file.rules().map_err(|e| e.to_string())?;
    if !args.inputs.is_empty() {
        // The replay's own log lines (one per planned action) would bury the answer.
        let offline = Offline::replay(&args.inputs, rules, args.state.as_deref())
            .with_subscriber(tracing::subscriber::NoSubscriber::default())
            .await
            .map_err(|e| e.to_string())?;
        for s in &offline.summary().skipped {
            eprintln!("{}: skipped: {}", s.origin, s.error);
        }
        return offline
            .explain(args.kind, &args.id)
            .await
            .map_err(|e| e.to_string());
    }
    let settings = client_settings(&file)?;
    let url = args.state_url.clone().unwrap_or(file.state.url.clone());
    let lease = config::parse_duration(&file.state.claim_lease).unwrap_or(Duration::from_secs(15));
    let store = open_ledger(&url, lease).await?;
    let client = CtpClient::new(settings.clone()).map_err(|e| e.to_string())?;
    let engine = Engine::new(Arc::new(LiveView::new(client)), store, rules);
    let history = History::live(format!(
        "commercetools project {}, ledger {}",
        settings.project_key,
        config::mask_url_password(&url)
    ));
    explain(&engine, &history, args.kind, &args.id)
        .await
        .map_err(|e| e.to_string())
}

/// The commercetools client from `[commercetools]` and the CTP_* variables; only that section is
/// checked (the worker's source and release targets do not concern this command).
fn client_settings(file: &FileConfig) -> Result<CommercetoolsSettings, String> {
    let c = &file.commercetools;
    let mut missing = Vec::new();
    let mut required = |v: &Option<String>, env: &'static str| {
        let v = v.as_deref().map(str::trim).unwrap_or_default();
        if v.is_empty() {
            missing.push(env);
        }
        v.trim_end_matches('/').to_string()
    };
    let project_key = required(&c.project_key, "CTP_PROJECT_KEY");
    let client_id = required(&c.client_id, "CTP_CLIENT_ID");
    let auth_url = required(&c.auth_url, "CTP_AUTH_URL");
    let api_url = required(&c.api_url, "CTP_API_URL");
    let client_secret = c.client_secret.clone().unwrap_or_default();
    if client_secret.expose().is_empty() {
        missing.push("CTP_CLIENT_SECRET");
    }
    if missing.len() == 5 {
        return Err(
            "nothing to read: give --input STREAM… (explain from a replay), or set the \
                    CTP_* variables (or [commercetools] in --config FILE) to read commercetools"
                .into(),
        );
    }
    if !missing.is_empty() {
        return Err(format!(
            "the commercetools API client is not configured: {} not set",
            missing.join(", ")
        ));
    }
    Ok(CommercetoolsSettings {
        checkout_url: c
            .checkout_url
            .clone()
            .or_else(|| config::derive_checkout_url(&api_url))
            .unwrap_or_else(|| api_url.clone()),
        timeout: config::parse_duration(&c.timeout).unwrap_or(Duration::from_secs(10)),
        scopes: c.scopes.clone().filter(|s| !s.trim().is_empty()),
        project_key,
        client_id,
        client_secret: Secret::new(client_secret.expose()),
        auth_url,
        api_url,
    })
}

/// The live ledger. A SQLite file that does not exist is not created: nothing was ever
/// recorded there.
async fn open_ledger(url: &str, lease: Duration) -> Result<Arc<dyn Store>, String> {
    if url == "memory:" {
        return Ok(Arc::new(MemoryStore::new()));
    }
    if url.starts_with("sqlite:") {
        let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url)
            .map_err(|e| format!("state store {url:?}: {e}"))?;
        let file = opts.get_filename();
        if !file.exists() {
            return Err(format!(
                "no state store at {} (state.url {url:?}): set --state-url or PAYRULES_STATE_URL \
                 to the worker's, or --state-url memory: to explain without a ledger",
                file.display()
            ));
        }
    }
    let store = SqlStore::connect(url, lease)
        .await
        .map_err(|e| format!("{e} (a worker holding the SQLite file locks it)"))?;
    Ok(Arc::new(store))
}

// ------------------------------------------------------------------------------------------------
// What the ledger remembers about when and why

/// The origin of a decision a timer made.
const GRACE_CHECK: &str = "grace-period check";

/// When and why something happened: a ledger entry written, a timer scheduled or fired.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stamp {
    /// The clock then (RFC 3339); for a timer's decision, its due time.
    pub at: Option<String>,
    /// The message that caused it; `None` for a timer.
    pub message_id: Option<String>,
    /// That message's type.
    pub message_type: Option<String>,
    /// Where: `file:line`, `grace-period check`, `at the end of the input`, …
    pub origin: Option<String>,
}

impl Stamp {
    /// "at T by message M (Type, file:line)".
    fn words(&self) -> String {
        let mut s = String::new();
        if let Some(at) = &self.at {
            let _ = write!(s, "at {at} ");
        }
        match (&self.message_id, &self.message_type, &self.origin) {
            (Some(id), t, o) => {
                let _ = write!(s, "by message {id}");
                let detail: Vec<&str> = [t, o].into_iter().flatten().map(String::as_str).collect();
                if !detail.is_empty() {
                    let _ = write!(s, " ({})", detail.join(", "));
                }
            }
            (None, _, Some(o)) if o == GRACE_CHECK => {
                let _ = write!(s, "by its {o}");
            }
            (None, _, Some(o)) => {
                let _ = write!(s, "({o})");
            }
            (None, _, None) => {}
        }
        s.trim_end().to_string()
    }
}

#[derive(Debug, Clone)]
struct TimerSeen {
    due: Timestamp,
    scheduled: Stamp,
    fired: Option<Stamp>,
}

/// What the replay recorded as it went.
#[derive(Debug, Default)]
struct Log {
    /// The input being fed.
    current: Stamp,
    /// Message id → (type, origin), first sighting.
    messages: HashMap<String, (String, String)>,
    /// Ledger key → the input during which it was written.
    written: HashMap<String, Stamp>,
    /// Ledger key → the action planned for it.
    actions: HashMap<String, Action>,
    /// Payment id → its grace-period timer.
    timers: HashMap<String, TimerSeen>,
}

/// Where the explanation's facts come from, and what is known beyond the ledger's statuses.
#[derive(Debug)]
pub struct History {
    source: String,
    replay: bool,
    log: Mutex<Log>,
}

impl History {
    /// A live ledger: statuses only (the store keeps no time, message or timer read).
    pub fn live(source: String) -> Self {
        Self {
            source,
            replay: false,
            log: Mutex::new(Log::default()),
        }
    }

    fn replayed(source: String, log: Log) -> Self {
        Self {
            source,
            replay: true,
            log: Mutex::new(log),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The action planned for `key`, if the replay planned one.
    fn action(&self, key: &str) -> Option<Action> {
        self.lock().actions.get(key).cloned()
    }

    /// When and why `key` was written, as far as known.
    fn stamp(&self, key: &str) -> Option<Stamp> {
        let log = self.lock();
        if let Some(a) = log.actions.get(key) {
            let (message_type, origin) = match &a.message_id {
                Some(id) => log
                    .messages
                    .get(id)
                    .map_or((None, None), |(t, o)| (Some(t.clone()), Some(o.clone()))),
                None => (None, Some(GRACE_CHECK.to_string())),
            };
            return Some(Stamp {
                at: Some(format_timestamp(&a.at)),
                message_id: a.message_id.clone(),
                message_type,
                origin,
            });
        }
        log.written.get(key).cloned()
    }

    /// One ledger entry.
    fn line(&self, key: String, status: LedgerStatus) -> LedgerLine {
        let stamp = self.stamp(&key);
        let note = match (self.replay, status, stamp.is_some()) {
            (true, LedgerStatus::Done, _) if !key.contains("-failed:") => {
                Some("replay: planned, nothing executed")
            }
            (false, _, false) => Some("the store keeps no time or message for its entries"),
            _ => None,
        };
        LedgerLine {
            key,
            status: status_name(status),
            stamp,
            note,
        }
    }

    /// The payment's grace-period timer, as far as known.
    fn timer(&self, payment_id: &str) -> Option<TimerLine> {
        let log = self.lock();
        let t = log.timers.get(payment_id)?;
        Some(TimerLine {
            due: format_timestamp(&t.due),
            scheduled: t.scheduled.clone(),
            fired: t.fired.clone(),
        })
    }
}

fn status_name(s: LedgerStatus) -> &'static str {
    match s {
        LedgerStatus::Claimed => "claimed",
        LedgerStatus::Done => "done",
        LedgerStatus::Failed => "failed",
    }
}

/// The replay's store, recording what happened when (the ledger itself is the memory store's).
struct Recording {
    inner: MemoryStore,
    log: Arc<Mutex<Log>>,
}

impl Recording {
    fn lock(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Store for Recording {
    async fn ledger_status(&self, key: &str) -> Result<Option<LedgerStatus>, StoreError> {
        self.inner.ledger_status(key).await
    }
    async fn claim(&self, key: &str) -> Result<Claim, StoreError> {
        self.inner.claim(key).await
    }
    async fn settle(&self, key: &str, status: LedgerStatus) -> Result<(), StoreError> {
        self.inner.settle(key, status).await?;
        let mut log = self.lock();
        let stamp = log.current.clone();
        log.written.insert(key.to_string(), stamp);
        Ok(())
    }
    async fn release(&self, key: &str) -> Result<(), StoreError> {
        self.inner.release(key).await
    }
    async fn schedule(&self, timer: Timer) -> Result<bool, StoreError> {
        let (payment_id, due) = (timer.payment_id.clone(), timer.due);
        let new = self.inner.schedule(timer).await?;
        if new {
            let mut log = self.lock();
            let scheduled = log.current.clone();
            log.timers.insert(
                payment_id,
                TimerSeen {
                    due,
                    scheduled,
                    fired: None,
                },
            );
        }
        Ok(new)
    }
    async fn take_due(&self, now: Timestamp, limit: usize) -> Result<Vec<Timer>, StoreError> {
        let due = self.inner.take_due(now, limit).await?;
        let mut log = self.lock();
        let origin = match &log.current.origin {
            Some(o) if now != DateTime::<chrono::Utc>::MAX_UTC => format!("before {o}"),
            _ => "at the end of the input".to_string(),
        };
        // Replay stamps a timer's decision with its due time: it fires "at" it.
        for t in &due {
            if let Some(seen) = log.timers.get_mut(&t.payment_id) {
                seen.fired = Some(Stamp {
                    at: Some(format_timestamp(&t.due)),
                    message_id: None,
                    message_type: None,
                    origin: Some(origin.clone()),
                });
            }
        }
        Ok(due)
    }
    async fn timer_done(&self, timer: &Timer) -> Result<(), StoreError> {
        self.inner.timer_done(timer).await
    }
    async fn retry_timer(&self, timer: &Timer, due: Timestamp) -> Result<(), StoreError> {
        self.inner.retry_timer(timer, due).await
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
    async fn record_sequence(&self, resource_id: &str, sequence: u64) -> Result<(), StoreError> {
        self.inner.record_sequence(resource_id, sequence).await
    }
    async fn latest_sequence(&self, resource_id: &str) -> Result<Option<u64>, StoreError> {
        self.inner.latest_sequence(resource_id).await
    }
    async fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush().await
    }
    fn lease(&self) -> Option<Duration> {
        self.inner.lease()
    }
    async fn renew(&self, key: &str) -> Result<bool, StoreError> {
        self.inner.renew(key).await
    }
}

// ------------------------------------------------------------------------------------------------
// Offline: explain from a replay

/// A finished replay whose view and ledger can be explained: the library form of
/// `payrules explain --input`.
pub struct Offline {
    engine: Engine,
    history: History,
    actions: Vec<Action>,
    summary: ReplaySummary,
}

impl Offline {
    /// Replays `inputs` (with `state` snapshots) exactly as `payrules replay` does, to the end
    /// of the input (every timer fired).
    ///
    /// # Errors
    /// An input or snapshot that cannot be read at all (undecodable lines are only skipped).
    pub async fn replay<P: AsRef<Path>>(
        inputs: &[P],
        rules: Rules,
        state: Option<&Path>,
    ) -> Result<Self, ReplayError> {
        let view = Arc::new(StreamView::new());
        let log = Arc::new(Mutex::new(Log::default()));
        let store: Arc<dyn Store> = Arc::new(Recording {
            inner: MemoryStore::new(),
            log: log.clone(),
        });
        let lock = || log.lock().unwrap_or_else(|p| p.into_inner());
        let record = |actions: &[Action]| {
            let mut log = lock();
            for a in actions {
                log.actions.insert(a.key.clone(), a.clone());
            }
        };
        let mut replay = Replay::with_view(rules.clone(), store.clone(), view.clone());
        if let Some(dir) = state {
            replay.load_state(dir).map_err(ReplayError::State)?;
        }
        let mut actions = Vec::new();
        let mut clock: Option<Timestamp> = None;
        for line in InputReader::new(FileInput::resolve(inputs)?) {
            let line = line?;
            let origin = line.origin();
            {
                let mut log = lock();
                log.current = Stamp {
                    origin: Some(origin.clone()),
                    ..Stamp::default()
                };
                if let Ok(m) = decode(&line.bytes) {
                    if let Some(t) = m.created_at {
                        clock = Some(clock.map_or(t, |c| c.max(t)));
                    }
                    log.current.at = clock.as_ref().map(format_timestamp);
                    log.current.message_type = Some(m.kind.to_string());
                    if let Some(id) = m.id {
                        log.messages
                            .entry(id.clone())
                            .or_insert((m.kind.to_string(), origin.clone()));
                        log.current.message_id = Some(id);
                    }
                }
            }
            let planned = replay.feed(&origin, &line.bytes).await;
            record(&planned);
            actions.extend(planned);
        }
        lock().current = Stamp {
            origin: Some("at the end of the input".into()),
            ..Stamp::default()
        };
        let planned = replay.finish().await;
        record(&planned);
        actions.extend(planned);
        let summary = replay.summary().clone();
        let names: Vec<String> = inputs
            .iter()
            .map(|p| p.as_ref().display().to_string())
            .collect();
        let log = std::mem::take(&mut *lock());
        Ok(Self {
            engine: Engine::new(view, store, rules),
            history: History::replayed(format!("replay of {}", names.join(" ")), log),
            actions,
            summary,
        })
    }

    /// Every action the replay planned, in order (what `payrules replay` prints).
    pub fn actions(&self) -> &[Action] {
        &self.actions
    }

    /// The replay's counters and skipped inputs.
    pub fn summary(&self) -> &ReplaySummary {
        &self.summary
    }

    /// Explains an order or a payment as the rules see it at the end of the replay.
    ///
    /// # Errors
    /// A view or store failure.
    pub async fn explain(&self, kind: Kind, id: &str) -> Result<Explanation, EngineError> {
        explain(&self.engine, &self.history, kind, id).await
    }
}

// ------------------------------------------------------------------------------------------------
// The explanation

/// An order's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderVerdict {
    /// `release:{id}` is done.
    Released,
    /// It is not.
    NotReleased,
}

/// A payment's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentVerdict {
    /// `capture:{id}` is done.
    Captured,
    /// `cancel:{id}` is done (and no capture).
    Cancelled,
    /// Neither.
    Untouched,
}

/// One ledger entry.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerLine {
    /// The idempotency key or marker.
    pub key: String,
    /// `claimed`, `done` or `failed`.
    pub status: &'static str,
    /// When and why it was written, as far as known.
    #[serde(flatten)]
    pub stamp: Option<Stamp>,
    /// A note on the entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
}

/// A grace-period timer.
#[derive(Debug, Clone, Serialize)]
pub struct TimerLine {
    /// When the check is due.
    pub due: String,
    /// What scheduled it.
    pub scheduled: Stamp,
    /// When it fired; `None`: still pending.
    pub fired: Option<Stamp>,
}

/// A decision of one rule now, with its reason in words.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// `release`, `cancel`, `capture` or `none`.
    pub decision: &'static str,
    /// For a cancel: the reason's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<CancelReason>,
    /// Why, in words.
    pub because: String,
}

impl Decision {
    fn none(because: impl Into<String>) -> Self {
        Self {
            decision: "none",
            reason: None,
            because: because.into(),
        }
    }
}

/// The order an explained order is, as read.
#[derive(Debug, Clone, Serialize)]
pub struct OrderSummary {
    /// The shop's order number.
    pub order_number: Option<String>,
    /// `orderState`.
    pub order_state: OrderState,
    /// `shipmentState`.
    pub shipment_state: Option<ShipmentState>,
    /// When commercetools created it.
    pub created_at: Option<String>,
    /// Open or Confirmed and not (partly) shipped.
    pub fulfillable: bool,
    /// What must be covered.
    pub gross_total: Money,
    /// Where that comes from: `taxedPrice.totalGross` when the order has one, else
    /// `totalPrice`.
    pub gross_total_from: &'static str,
}

/// A payment an explained order references.
#[derive(Debug, Clone, Serialize)]
pub struct PaymentLine {
    /// The payment id.
    pub payment_id: String,
    /// Whether it was found.
    pub found: bool,
    /// The order its money counts toward.
    pub counts_toward: Option<String>,
    /// covered(P) toward the explained order.
    pub covered: i64,
    /// authorized(P) in the order's currency (our own cancel taken into account).
    pub authorized: i64,
    /// charged(P) in the order's currency.
    pub charged: i64,
    /// payrules claimed or executed its cancel.
    pub cancelled_by_us: bool,
    /// `cancel:{payment_id}` in the ledger.
    pub cancel: Option<&'static str>,
    /// What a capture may still take.
    pub capturable: i64,
    /// `capture:{payment_id}` in the ledger.
    pub capture: Option<&'static str>,
    /// Why it covers nothing, or where its money goes, when that needs saying.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Its transactions.
    pub transactions: Vec<Transaction>,
}

/// What the rules decide for an order now.
#[derive(Debug, Clone, Serialize)]
pub struct OrderRulesNow {
    /// release_for_fulfillment.
    pub release: Decision,
    /// capture_on_shipment.
    pub capture: Decision,
}

/// Why an order was (not) released.
#[derive(Debug, Clone, Serialize)]
pub struct OrderExplanation {
    /// `order`.
    pub kind: Kind,
    /// The order id.
    pub id: String,
    /// Whether the view knows the order.
    pub found: bool,
    /// `released` or `not_released`.
    pub verdict: OrderVerdict,
    /// The verdict in words.
    pub because: String,
    /// Where the facts come from.
    pub source: String,
    /// The order as read.
    pub order: Option<OrderSummary>,
    /// Σ covered(P) over the allocated payments.
    pub covered: i64,
    /// The payments whose money counts toward this order.
    pub allocated: Vec<PaymentLine>,
    /// The payments it references whose money counts toward another order (or is unknown).
    pub allocated_elsewhere: Vec<PaymentLine>,
    /// What the rules decide now.
    pub rules_now: OrderRulesNow,
    /// `release:{id}` in the ledger.
    pub ledger: Vec<LedgerLine>,
}

/// An order referencing an explained payment.
#[derive(Debug, Clone, Serialize)]
pub struct OrderRef {
    /// The order id.
    pub id: String,
    /// The shop's order number.
    pub order_number: Option<String>,
    /// `orderState`.
    pub order_state: OrderState,
    /// `shipmentState`.
    pub shipment_state: Option<ShipmentState>,
    /// When commercetools created it.
    pub created_at: Option<String>,
    /// The payment's money counts toward this order.
    pub holds_payment: bool,
}

/// What the rules decide for a payment now.
#[derive(Debug, Clone, Serialize)]
pub struct PaymentRulesNow {
    /// The cancel rules on a message about the payment.
    pub cancel_on_message: Decision,
    /// The cancel rules when its grace-period check runs.
    pub cancel_at_grace_check: Decision,
    /// capture_on_shipment.
    pub capture: Decision,
}

/// Why a payment was (not) cancelled or captured.
#[derive(Debug, Clone, Serialize)]
pub struct PaymentExplanation {
    /// `payment`.
    pub kind: Kind,
    /// The payment id.
    pub id: String,
    /// Whether the view knows the payment.
    pub found: bool,
    /// `cancelled`, `captured` or `untouched`.
    pub verdict: PaymentVerdict,
    /// The verdict in words.
    pub because: String,
    /// Where the facts come from.
    pub source: String,
    /// The currency of its money.
    pub currency: Option<String>,
    /// authorized(P), our own cancel taken into account.
    pub authorized: i64,
    /// charged(P).
    pub charged: i64,
    /// Who handles it.
    pub payment_interface: Option<String>,
    /// Its transactions.
    pub transactions: Vec<Transaction>,
    /// Every order referencing it.
    pub orders: Vec<OrderRef>,
    /// The order its money counts toward.
    pub counts_toward: Option<String>,
    /// Its grace-period timer, as far as known (a replay records it; the live store has no
    /// read for it).
    pub timer: Option<TimerLine>,
    /// Its ledger entries: `cancel:`, `capture:`, `order-creation-failed:`, `cancel-failed:`.
    pub ledger: Vec<LedgerLine>,
    /// What the rules decide now.
    pub rules_now: PaymentRulesNow,
}

/// The answer of `payrules explain`.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Explanation {
    /// For an order.
    Order(Box<OrderExplanation>),
    /// For a payment.
    Payment(Box<PaymentExplanation>),
}

impl Explanation {
    /// `released`, `not_released`, `cancelled`, `captured` or `untouched`.
    pub fn verdict(&self) -> &'static str {
        match self {
            Explanation::Order(o) => match o.verdict {
                OrderVerdict::Released => "released",
                OrderVerdict::NotReleased => "not_released",
            },
            Explanation::Payment(p) => match p.verdict {
                PaymentVerdict::Captured => "captured",
                PaymentVerdict::Cancelled => "cancelled",
                PaymentVerdict::Untouched => "untouched",
            },
        }
    }

    /// The verdict in words.
    pub fn because(&self) -> &str {
        match self {
            Explanation::Order(o) => &o.because,
            Explanation::Payment(p) => &p.because,
        }
    }

    /// Whether the order or payment was found.
    pub fn found(&self) -> bool {
        match self {
            Explanation::Order(o) => o.found,
            Explanation::Payment(p) => p.found,
        }
    }

    /// One JSON object.
    pub fn to_json(&self) -> String {
        // Plain strings, numbers and enums: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The explanation in words, for a person.
    pub fn to_text(&self) -> String {
        match self {
            Explanation::Order(o) => order_text(o),
            Explanation::Payment(p) => payment_text(p),
        }
    }
}

/// Explains an order or a payment with `engine` (its view and ledger) and what `history` knows
/// about when and why.
///
/// # Errors
/// A view or store failure.
pub async fn explain(
    engine: &Engine,
    history: &History,
    kind: Kind,
    id: &str,
) -> Result<Explanation, EngineError> {
    Ok(match kind {
        Kind::Order => Explanation::Order(Box::new(explain_order(engine, history, id).await?)),
        Kind::Payment => {
            Explanation::Payment(Box::new(explain_payment(engine, history, id).await?))
        }
    })
}

async fn explain_order(
    engine: &Engine,
    history: &History,
    id: &str,
) -> Result<OrderExplanation, EngineError> {
    let key = Action::release_key(id);
    let facts = engine.explain_order(id).await?;
    let status = match &facts {
        Some(f) => f.release_ledger,
        None => engine.ledger(&key).await?,
    };
    let ledger: Vec<LedgerLine> = status
        .map(|s| history.line(key.clone(), s))
        .into_iter()
        .collect();
    let verdict = if status == Some(LedgerStatus::Done) {
        OrderVerdict::Released
    } else {
        OrderVerdict::NotReleased
    };
    let release = match &facts {
        Some(f) => match &f.release {
            Ok(r) => Decision {
                decision: "release",
                reason: None,
                because: r.to_string(),
            },
            Err(why) => Decision::none(why.to_string()),
        },
        None => Decision::none("the order is not known"),
    };
    let capture = match facts.as_ref().map(|f| f.capture) {
        Some(Ok(())) => Decision {
            decision: "capture",
            reason: None,
            because: "the order reached the shipment state that triggers the capture".into(),
        },
        Some(Err(why)) => Decision::none(why),
        None => Decision::none("the order is not known"),
    };
    let because = match (status, ledger.first()) {
        (Some(LedgerStatus::Done), Some(line)) => {
            let mut s = "released".to_string();
            match &line.stamp {
                Some(stamp) => {
                    let _ = write!(s, " {}", stamp.words());
                }
                None => s.push_str(" (release:… is done in the ledger)"),
            }
            if let Some(note) = line.note {
                let _ = write!(s, "; {note}");
            }
            s
        }
        (Some(LedgerStatus::Failed), _) => {
            "not released: the release was tried and failed for good (ledger: failed; the \
             webhook or order update refused it)"
                .into()
        }
        (Some(LedgerStatus::Claimed), _) => {
            "not released yet: a worker is releasing it now (ledger: claimed)".into()
        }
        _ => match &facts {
            None => format!("not released: the order {id} is not known"),
            Some(OrderFacts { release: Ok(r), .. }) => format!(
                "not released yet, but due: {r} — the next message about the order or its \
                 payments releases it"
            ),
            Some(OrderFacts {
                release: Err(why), ..
            }) => format!("not released because {why}"),
        },
    };
    let mut allocated = Vec::new();
    let mut elsewhere = Vec::new();
    let mut summary = None;
    let mut covered = 0;
    let mut because = because;
    if let Some(f) = facts {
        covered = f.covered;
        let currency = f.order.gross_total().currency_code.clone();
        for p in f.payments {
            let note = share_note(&p, &currency);
            let line = PaymentLine {
                note,
                found: p.payment.is_some(),
                counts_toward: p.counts_toward,
                covered: p.covered,
                authorized: p.authorized,
                charged: p.charged,
                cancelled_by_us: p.cancelled_by_us,
                cancel: p.cancel_ledger.map(status_name),
                capturable: p.capturable,
                capture: p.capture_ledger.map(status_name),
                transactions: p.payment.map(|p| p.transactions).unwrap_or_default(),
                payment_id: p.payment_id,
            };
            if p.allocated {
                allocated.push(line);
            } else {
                elsewhere.push(line);
            }
        }
        summary = Some(order_summary(&f.order));
        // The payments behind the reason, in a few words each.
        let notes: Vec<String> = allocated
            .iter()
            .chain(&elsewhere)
            .filter_map(|p: &PaymentLine| {
                Some(format!("payment {}: {}", p.payment_id, p.note.as_ref()?))
            })
            .collect();
        match (&verdict, &f.release) {
            (OrderVerdict::Released, Err(why)) => {
                let _ = write!(because, "; the rules would not release it today: {why}");
            }
            (
                OrderVerdict::NotReleased,
                Err(NotReleased::Short { .. } | NotReleased::NothingCovered { .. }),
            ) if !notes.is_empty() => {
                let _ = write!(because, " ({})", notes.join("; "));
            }
            _ => {}
        }
    }
    Ok(OrderExplanation {
        kind: Kind::Order,
        id: id.to_string(),
        found: summary.is_some(),
        verdict,
        because,
        source: history.source.clone(),
        order: summary,
        covered,
        allocated,
        allocated_elsewhere: elsewhere,
        rules_now: OrderRulesNow { release, capture },
        ledger,
    })
}

/// Why a payment an order references covers nothing toward it, in a few words (descriptive
/// only: what counts was decided by the rules).
fn share_note(p: &PaymentShare, currency: &str) -> Option<String> {
    use crate::model::{TransactionState, TransactionType};
    let Some(payment) = &p.payment else {
        return Some("not found".into());
    };
    if !p.allocated {
        return Some(match &p.counts_toward {
            Some(h) => format!("its money counts toward order {h} (created earlier)"),
            None => "only cancelled orders reference it".into(),
        });
    }
    if p.covered > 0 {
        return None;
    }
    if p.cancelled_by_us {
        return Some(
            "payrules cancelled it: its authorization counts for nothing until the payment shows \
             that cancel"
                .into(),
        );
    }
    let waiting = payment.transactions.iter().any(|t| {
        matches!(
            t.kind,
            TransactionType::Authorization | TransactionType::Charge
        ) && matches!(
            t.state,
            TransactionState::Initial | TransactionState::Pending
        )
    });
    if waiting {
        return Some("its authorization or charge is still Initial or Pending".into());
    }
    let mut others: Vec<&str> = payment
        .transactions
        .iter()
        .map(|t| t.amount.currency_code.as_str())
        .filter(|c| *c != currency)
        .collect();
    others.dedup();
    if !others.is_empty() {
        return Some(format!(
            "its money is in {}, not {currency}",
            others.join(", ")
        ));
    }
    Some("nothing authorized or charged stands".into())
}

fn order_summary(o: &Order) -> OrderSummary {
    OrderSummary {
        order_number: o.order_number.clone(),
        order_state: o.order_state,
        shipment_state: o.shipment_state,
        created_at: o.created_at.as_ref().map(format_timestamp),
        fulfillable: o.is_fulfillable(),
        gross_total: o.gross_total().clone(),
        gross_total_from: if o.taxed_price.is_some() {
            "taxedPrice.totalGross"
        } else {
            "totalPrice"
        },
    }
}

async fn explain_payment(
    engine: &Engine,
    history: &History,
    id: &str,
) -> Result<PaymentExplanation, EngineError> {
    let facts = engine.explain_payment(id).await?;
    let keys = [
        Action::cancel_key(id),
        Action::capture_key(id),
        rules::order_creation_failed_key(id),
        rules::cancel_failed_key(id),
    ];
    let statuses = match &facts {
        Some(f) => [
            f.cancel_ledger,
            f.capture_ledger,
            f.order_creation_failed,
            f.cancel_failed,
        ],
        None => {
            let mut s = [None; 4];
            for (slot, key) in s.iter_mut().zip(&keys) {
                *slot = engine.ledger(key).await?;
            }
            s
        }
    };
    let [cancel, capture, _, _] = statuses;
    let ledger: Vec<LedgerLine> = keys
        .iter()
        .zip(statuses)
        .filter_map(|(k, s)| s.map(|s| history.line(k.clone(), s)))
        .collect();
    let timer = history.timer(id);
    let verdict = match (capture, cancel) {
        (Some(LedgerStatus::Done), _) => PaymentVerdict::Captured,
        (_, Some(LedgerStatus::Done)) => PaymentVerdict::Cancelled,
        _ => PaymentVerdict::Untouched,
    };
    let decision = |d: &Result<CancelReason, &'static str>| match d {
        Ok(reason) => Decision {
            decision: "cancel",
            reason: Some(*reason),
            because: cancel_words(*reason).into(),
        },
        Err(why) => Decision::none(*why),
    };
    let rules_now = match &facts {
        Some(f) => PaymentRulesNow {
            cancel_on_message: decision(&f.cancel_on_message),
            cancel_at_grace_check: decision(&f.cancel_at_grace_check),
            capture: match (&f.capture, &f.counts_toward) {
                (Some(Ok(amount)), Some(order)) => Decision {
                    decision: "capture",
                    reason: None,
                    because: format!(
                        "order {order} reached the shipment state that triggers the capture: \
                         {amount} {} cents are open",
                        f.currency.as_deref().unwrap_or_default()
                    ),
                },
                (Some(Err(why)), _) => Decision::none(*why),
                _ => Decision::none("no order holds the payment"),
            },
        },
        None => PaymentRulesNow {
            cancel_on_message: Decision::none("the payment is not known"),
            cancel_at_grace_check: Decision::none("the payment is not known"),
            capture: Decision::none("the payment is not known"),
        },
    };
    let done = |key: &str| {
        let line = ledger.iter().find(|l| l.key == key);
        let mut s = String::new();
        if let Some(stamp) = line.and_then(|l| l.stamp.as_ref()) {
            let _ = write!(s, " {}", stamp.words());
        }
        s
    };
    let because = match verdict {
        PaymentVerdict::Captured => {
            let mut s = format!("captured{}", done(&keys[1]));
            if let Some(a) = history.action(&keys[1]) {
                if let Some(m) = &a.amount {
                    let _ = write!(s, ": {} {} cents", m.cent_amount, m.currency_code);
                }
                if let Some(o) = &a.order_id {
                    let _ = write!(s, " for order {o}");
                }
            }
            s
        }
        PaymentVerdict::Cancelled => {
            let mut s = format!("cancelled{}", done(&keys[0]));
            match history.action(&keys[0]).and_then(|a| a.reason) {
                Some(reason) => {
                    let _ = write!(s, ": {} ({})", cancel_words(reason), reason.as_str());
                }
                None if history.replay => {}
                None => s.push_str(" (cancel:… is done in the ledger; the store keeps no reason)"),
            }
            if let Some(f) = facts
                .as_ref()
                .filter(|f| f.payment.cancel_authorization_failed())
            {
                let _ = write!(
                    s,
                    " — but the cancel failed (CancelAuthorization in Failure): the authorization \
                     stands, {} {} cents",
                    f.authorized,
                    f.currency.as_deref().unwrap_or_default()
                );
                if let Some(o) = &f.counts_toward {
                    let _ = write!(s, ", and counts toward order {o}");
                    if f.counts_toward_release == Some(LedgerStatus::Done) {
                        s.push_str(" (released)");
                    }
                }
            }
            s
        }
        PaymentVerdict::Untouched => {
            untouched_words(facts.as_ref(), cancel, capture, &timer, &rules_now)
        }
    };
    let mut out = PaymentExplanation {
        kind: Kind::Payment,
        id: id.to_string(),
        found: facts.is_some(),
        verdict,
        because,
        source: history.source.clone(),
        currency: None,
        authorized: 0,
        charged: 0,
        payment_interface: None,
        transactions: Vec::new(),
        orders: Vec::new(),
        counts_toward: None,
        timer,
        ledger,
        rules_now,
    };
    if let Some(f) = facts {
        out.orders = f
            .orders
            .iter()
            .map(|o| OrderRef {
                id: o.id.clone(),
                order_number: o.order_number.clone(),
                order_state: o.order_state,
                shipment_state: o.shipment_state,
                created_at: o.created_at.as_ref().map(format_timestamp),
                holds_payment: f.counts_toward.as_deref() == Some(o.id.as_str()),
            })
            .collect();
        out.currency = f.currency;
        out.authorized = f.authorized;
        out.charged = f.charged;
        out.counts_toward = f.counts_toward;
        out.payment_interface = f.payment.payment_method_info.payment_interface.clone();
        out.transactions = f.payment.transactions;
    }
    Ok(out)
}

fn cancel_words(reason: CancelReason) -> &'static str {
    match reason {
        CancelReason::GracePeriodExpired => "no order referenced it when its grace period ran out",
        CancelReason::OrderCreationFailed => "Checkout could not create the order for it",
        CancelReason::OrderCancelled => "every order referencing it is cancelled",
    }
}

fn untouched_words(
    facts: Option<&PaymentFacts>,
    cancel: Option<LedgerStatus>,
    capture: Option<LedgerStatus>,
    timer: &Option<TimerLine>,
    now: &PaymentRulesNow,
) -> String {
    let Some(f) = facts else {
        return "untouched: the payment is not known".into();
    };
    let mut parts = Vec::new();
    match cancel {
        Some(LedgerStatus::Failed) => {
            parts.push("its cancel was tried and failed for good (ledger: failed)".to_string());
        }
        Some(LedgerStatus::Claimed) => {
            parts.push("a worker is cancelling it now (ledger: claimed)".to_string());
        }
        _ => match &f.cancel_on_message {
            Ok(_) => parts.push(format!(
                "not cancelled yet, but due: {} — the next message about it cancels it",
                now.cancel_on_message.because
            )),
            Err(why) => {
                let mut s = format!("not cancelled: {why}");
                if let Some(o) = &f.counts_toward {
                    let _ = write!(s, " (its money counts toward order {o}");
                    if f.counts_toward_release == Some(LedgerStatus::Done) {
                        s.push_str(", released");
                    }
                    s.push(')');
                }
                if f.cancel_at_grace_check.is_ok() {
                    match timer {
                        Some(TimerLine {
                            due, fired: None, ..
                        }) => {
                            let _ = write!(
                                s,
                                "; its grace-period check at {due} cancels it unless an order appears first"
                            );
                        }
                        Some(_) => {}
                        None => s.push_str(
                            "; its grace-period check cancels it when it comes due unless an order \
                             appears first",
                        ),
                    }
                }
                parts.push(s);
            }
        },
    }
    match capture {
        Some(LedgerStatus::Failed) => {
            parts.push("its capture was tried and failed for good (ledger: failed)".into());
        }
        Some(LedgerStatus::Claimed) => {
            parts.push("a worker is capturing it now (ledger: claimed)".into());
        }
        _ => {
            if let Some(Ok(amount)) = f.capture {
                parts.push(format!(
                    "not captured yet, but due: {amount} {} cents are open",
                    f.currency.as_deref().unwrap_or_default()
                ));
            }
        }
    }
    format!("untouched: {}", parts.join("; "))
}

// ------------------------------------------------------------------------------------------------
// Words

/// `174.65 EUR`.
fn money(cents: i64, currency: &str, digits: Option<u32>) -> String {
    let digits = digits.unwrap_or(2);
    if digits == 0 {
        return format!("{cents} {currency}");
    }
    let scale = 10i64.saturating_pow(digits);
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    let scale = scale.unsigned_abs();
    format!(
        "{sign}{}.{:0width$} {currency}",
        abs / scale,
        abs % scale,
        width = digits as usize
    )
}

/// "release (covered …)", "no cancel (an order references the payment)".
fn decision_words(verb: &str, d: &Decision) -> String {
    if d.decision == "none" {
        format!("no {verb} ({})", d.because)
    } else {
        format!("{verb} ({})", d.because)
    }
}

fn transaction_lines(out: &mut String, indent: &str, txs: &[Transaction]) {
    if txs.is_empty() {
        let _ = writeln!(out, "{indent}no transactions");
    }
    for t in txs {
        let _ = writeln!(
            out,
            "{indent}{:<20} {:<8} {:>14}   {}",
            t.kind.as_str(),
            t.state.as_str(),
            money(
                t.amount.cent_amount,
                &t.amount.currency_code,
                t.amount.fraction_digits
            ),
            t.id
        );
    }
}

fn ledger_lines(out: &mut String, ledger: &[LedgerLine]) {
    if ledger.is_empty() {
        let _ = writeln!(out, "  ledger:       nothing recorded");
    }
    for (i, l) in ledger.iter().enumerate() {
        let label = if i == 0 { "  ledger:" } else { "" };
        let _ = write!(out, "{label:<16}{} {}", l.key, l.status);
        if let Some(stamp) = &l.stamp {
            let _ = write!(out, " {}", stamp.words());
        }
        if let Some(note) = l.note {
            let _ = write!(out, " ({note})");
        }
        out.push('\n');
    }
}

fn order_text(o: &OrderExplanation) -> String {
    let mut out = String::new();
    let verdict = match o.verdict {
        OrderVerdict::Released => "RELEASED",
        OrderVerdict::NotReleased => "NOT RELEASED",
    };
    let number = o
        .order
        .as_ref()
        .and_then(|s| s.order_number.as_deref())
        .map(|n| format!(" (number {n})"))
        .unwrap_or_default();
    let _ = writeln!(out, "order {}{number}: {verdict}", o.id);
    let _ = writeln!(out, "  {}", o.because);
    let _ = writeln!(out, "  from the {}", o.source);
    out.push('\n');
    if let Some(s) = &o.order {
        let shipment = s.shipment_state.map_or("none".into(), |x| x.to_string());
        let _ = writeln!(
            out,
            "  eligibility:  {} (orderState {}, shipmentState {shipment})",
            if s.fulfillable {
                "can be fulfilled"
            } else {
                "cannot be fulfilled"
            },
            s.order_state
        );
        let g = &s.gross_total;
        let _ = writeln!(
            out,
            "  gross total:  {} ({} cents, {})",
            money(g.cent_amount, &g.currency_code, g.fraction_digits),
            g.cent_amount,
            s.gross_total_from
        );
        let currency = g.currency_code.as_str();
        if o.allocated.is_empty() {
            let _ = writeln!(out, "  allocated:    no payment's money counts toward it");
        }
        for (i, p) in o.allocated.iter().enumerate() {
            let label = if i == 0 { "  allocated:" } else { "" };
            let _ = write!(
                out,
                "{label:<16}payment {}: covered {} (authorized {}, charged {} {currency} cents)",
                p.payment_id, p.covered, p.authorized, p.charged
            );
            if let Some(note) = &p.note {
                let _ = write!(out, ": {note}");
            }
            out.push('\n');
            transaction_lines(&mut out, "                  ", &p.transactions);
        }
        for (i, p) in o.allocated_elsewhere.iter().enumerate() {
            let label = if i == 0 { "  elsewhere:" } else { "" };
            let whereto = p.note.as_deref().unwrap_or_default();
            let _ = writeln!(out, "{label:<16}payment {}: {whereto}", p.payment_id);
        }
        let _ = writeln!(
            out,
            "  covered:      {} of {} {currency} cents",
            o.covered, g.cent_amount
        );
    }
    let _ = writeln!(
        out,
        "  rules now:    {}",
        decision_words("release", &o.rules_now.release)
    );
    if o.rules_now.capture.decision != "none"
        || o.rules_now.capture.because != "capture_on_shipment is off"
    {
        let _ = writeln!(
            out,
            "                {}",
            decision_words("capture", &o.rules_now.capture)
        );
    }
    ledger_lines(&mut out, &o.ledger);
    out
}

fn payment_text(p: &PaymentExplanation) -> String {
    let mut out = String::new();
    let verdict = match p.verdict {
        PaymentVerdict::Captured => "CAPTURED",
        PaymentVerdict::Cancelled => "CANCELLED",
        PaymentVerdict::Untouched => "UNTOUCHED",
    };
    let _ = writeln!(out, "payment {}: {verdict}", p.id);
    let _ = writeln!(out, "  {}", p.because);
    let _ = writeln!(out, "  from the {}", p.source);
    out.push('\n');
    if p.found {
        let currency = p.currency.as_deref().unwrap_or("?");
        let _ = write!(
            out,
            "  money:        authorized {}, charged {} {currency} cents",
            p.authorized, p.charged
        );
        if let Some(i) = &p.payment_interface {
            let _ = write!(out, " (payment interface {i})");
        }
        let ours = p
            .ledger
            .iter()
            .any(|l| l.key.starts_with("cancel:") && l.status != "failed");
        let visible = p
            .transactions
            .iter()
            .any(|t| t.kind == crate::model::TransactionType::CancelAuthorization);
        if ours && !visible {
            out.push_str(
                "\n                payrules' cancel is not on the payment yet: its authorization \
                 counts for nothing",
            );
        }
        out.push('\n');
        let _ = writeln!(out, "  transactions:");
        transaction_lines(&mut out, "                ", &p.transactions);
        if p.orders.is_empty() {
            let _ = writeln!(out, "  orders:       none reference it");
        }
        for (i, o) in p.orders.iter().enumerate() {
            let label = if i == 0 { "  orders:" } else { "" };
            let _ = write!(out, "{label:<16}order {}", o.id);
            if let Some(n) = &o.order_number {
                let _ = write!(out, " (number {n})");
            }
            let _ = write!(out, ", {}", o.order_state);
            if let Some(s) = o.shipment_state {
                let _ = write!(out, ", shipment {s}");
            }
            if let Some(c) = &o.created_at {
                let _ = write!(out, ", created {c}");
            }
            if o.holds_payment {
                out.push_str(": its money counts toward this order");
            }
            out.push('\n');
        }
    }
    match &p.timer {
        Some(t) => {
            let _ = write!(out, "  grace check:  due at {}", t.due);
            let scheduled = t.scheduled.words();
            if !scheduled.is_empty() {
                let _ = write!(out, ", scheduled {scheduled}");
            }
            match &t.fired {
                Some(f) => {
                    let _ = write!(out, "; fired {}", f.words());
                }
                None => out.push_str("; not fired yet"),
            }
            out.push('\n');
        }
        None if p.source.starts_with("replay") => {
            let _ = writeln!(
                out,
                "  grace check:  none (never seen with authorized money)"
            );
        }
        None => {
            let _ = writeln!(out, "  grace check:  not readable from the store");
        }
    }
    ledger_lines(&mut out, &p.ledger);
    let r = &p.rules_now;
    let _ = writeln!(
        out,
        "  rules now:    on a message: {}",
        decision_words("cancel", &r.cancel_on_message)
    );
    let _ = writeln!(
        out,
        "                at its grace check: {}",
        decision_words("cancel", &r.cancel_at_grace_check)
    );
    let _ = writeln!(
        out,
        "                {}",
        decision_words("capture", &r.capture)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_in_words() {
        assert_eq!(money(17465, "EUR", Some(2)), "174.65 EUR");
        assert_eq!(money(5, "EUR", None), "0.05 EUR");
        assert_eq!(money(-120, "EUR", Some(2)), "-1.20 EUR");
        assert_eq!(money(500, "JPY", Some(0)), "500 JPY");
    }
}
