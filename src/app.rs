//! Wiring: builds the source, view, store, executors and processor a configuration asks for.

use std::io::Write;
use std::sync::Arc;

use std::future::Future;
use std::time::Duration;

use tracing::debug;

use crate::commerce::{CtpClient, LiveView};
use crate::config::{OrderUpdate, Settings, SourceSettings};
use crate::effects::{DryRun, Executor, LiveExecutor, OrderUpdater, PaymentIntents, Webhook};
use crate::process::Processor;
use crate::redact::{UrlKind, http_error_text, mask_url};
use crate::retry::Backoff;
use crate::rules::Engine;
use crate::source::{FileInput, FileSource, PubsubSource, Source, SqsSource};
use crate::store::{MemoryStore, SqlStore, Store, StoreError};
use crate::telemetry::{SourceState, StoreState};
use crate::view::{CommerceView, StreamView};

/// Opens the source the configuration names: the input files, or the connection to the
/// Pub/Sub subscription or SQS queue.
///
/// # Errors
/// The input cannot be read, or the broker cannot be reached.
pub async fn open_source(source: &SourceSettings) -> Result<Box<dyn Source>, String> {
    Ok(match source {
        SourceSettings::File { path } => {
            let inputs =
                FileInput::resolve(std::slice::from_ref(path)).map_err(|e| e.to_string())?;
            SourceState {
                source: "file",
                result: Ok(()),
            }
            .emit();
            Box::new(FileSource::new(inputs, Duration::from_secs(30)))
        }
        SourceSettings::Pubsub(pubsub) => Box::new(
            PubsubSource::connect(pubsub)
                .await
                .map_err(|e| format!("Pub/Sub source: {e}"))?,
        ),
        SourceSettings::Sqs(sqs) => Box::new(
            SqsSource::connect(sqs)
                .await
                .map_err(|e| format!("SQS source: {e}"))?,
        ),
    })
}

/// Builds the processor for `settings`. With the commercetools client configured the rules read
/// the live API; without it they read a view built from the stream itself. A dry run writes
/// each action as a JSON line to `dry_run_out` instead of executing it.
///
/// # Errors
/// An HTTP client cannot be built, or a webhook secret is unusable.
pub fn build_processor(
    settings: &Settings,
    store: Arc<dyn Store>,
    dry_run_out: Box<dyn Write + Send>,
) -> Result<Arc<Processor>, String> {
    let client = settings
        .commercetools
        .clone()
        .map(CtpClient::new)
        .transpose()
        .map_err(|e| e.to_string())?;
    let view: Arc<dyn CommerceView> = match &client {
        Some(c) => Arc::new(LiveView::new(c.clone())),
        None => Arc::new(StreamView::new()),
    };
    let executor: Arc<dyn Executor> = if settings.dry_run {
        Arc::new(DryRun::new(dry_run_out))
    } else {
        let timeout = settings
            .commercetools
            .as_ref()
            .map_or(std::time::Duration::from_secs(10), |c| c.timeout);
        let webhook = settings
            .webhook
            .as_ref()
            .map(|w| Webhook::new(w.url.clone(), w.secrets.clone(), timeout))
            .transpose()
            .map_err(|e| e.to_string())?;
        let order_update = match (&settings.order_update, &client) {
            (Some(u), Some(c)) => Some(OrderUpdater::new(c.clone(), u.clone())),
            _ => None,
        };
        // The store the processor claims in: a capture or refund notes its baseline on its own
        // claim before calling Checkout (no idempotency key there), so a takeover after a
        // crash, or the retry after a 500, does not take part of a payment's money twice.
        let cancel = client.as_ref().map(|c| {
            PaymentIntents::new(c.clone(), settings.payment_intent_action.clone())
                .with_interfaces(settings.checkout_interfaces.clone())
                .with_store(store.clone())
        });
        // Validation (config::load) made sure every enabled rule has an executor.
        Arc::new(LiveExecutor {
            order_update,
            webhook,
            payment_intents: cancel,
        })
    };
    let engine = Engine::new(view, store.clone(), settings.rules.clone());
    Ok(Arc::new(Processor::new(engine, store, executor)))
}

/// Retries of opening the state store: 2 s doubling to 32 s.
const STORE_OPEN_BACKOFF: Backoff =
    Backoff::exponential(Duration::from_secs(2), Duration::from_secs(32));

/// Opens the state store at `url` (`memory:`, `sqlite://…`, `postgres://…`), retrying with
/// backoff while it is unavailable (PostgreSQL down, a locked or unreadable file) until
/// `shutdown` resolves. Each failure is logged with what is wrong.
///
/// # Errors
/// Shutdown came before the store could be opened; the last error.
pub async fn open_store(
    url: &str,
    claim_lease: Duration,
    shutdown: impl Future<Output = ()>,
) -> Result<Arc<dyn Store>, StoreError> {
    if url == "memory:" {
        StoreState { result: Ok(()) }.emit();
        return Ok(Arc::new(MemoryStore::new()));
    }
    tokio::pin!(shutdown);
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        match SqlStore::connect(url, claim_lease).await {
            Ok(store) => {
                let store = Arc::new(store);
                store.spawn_flusher(Duration::from_millis(200));
                StoreState { result: Ok(()) }.emit();
                return Ok(store);
            }
            Err(e) => {
                let delay = STORE_OPEN_BACKOFF.delay(attempt);
                StoreState {
                    result: Err(&e.to_string()),
                }
                .emit();
                debug!(error = %e, retry_in = ?delay, "cannot open the state store; retrying");
                tokio::select! {
                    () = &mut shutdown => return Err(e),
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// The scopes the enabled rules need, for `project`.
pub fn needed_scopes(settings: &Settings, project: &str) -> Vec<String> {
    let mut needed = vec![
        format!("view_payments:{project}"),
        format!("view_orders:{project}"),
    ];
    if settings.order_update.is_some() {
        needed.push(format!("manage_orders:{project}"));
    }
    if matches!(
        settings.order_update,
        Some(OrderUpdate::TransitionState { .. })
    ) {
        // The State is looked up by key before the first transition.
        needed.push(format!("view_states:{project}"));
    }
    let r = &settings.rules;
    if r.cancel.enabled
        || r.cancel_on_order_cancelled.enabled
        || r.capture.enabled
        || r.refund_orphaned.enabled
        || r.refund_on_order_cancelled.enabled
        || r.refund_on_return.enabled
    {
        needed.push(format!("manage_checkout_payment_intents:{project}"));
    }
    needed
}

/// Whether `granted` covers `needed`: the scope itself, its `manage_` form for a `view_`, or
/// the whole project.
pub fn scope_covered(needed: &str, granted: &[String]) -> bool {
    let Some((permission, project)) = needed.split_once(':') else {
        return granted.iter().any(|g| g == needed);
    };
    let mut accepted = vec![
        needed.to_string(),
        format!("manage_project:{project}"),
        format!("manage_projects:{project}"),
    ];
    if let Some(what) = permission.strip_prefix("view_") {
        accepted.push(format!("manage_{what}:{project}"));
    }
    granted.iter().any(|g| accepted.contains(g))
}

/// `payrules check-config --connect`: tries what `run` will use, each with a short timeout.
/// Each check is named with `Ok(detail)` or `Err(what went wrong)`.
pub async fn check_connections(settings: &Settings) -> Vec<(&'static str, Result<String, String>)> {
    const LIMIT: Duration = Duration::from_secs(15);
    async fn timed<F: Future<Output = Result<String, String>>>(f: F) -> Result<String, String> {
        tokio::time::timeout(LIMIT, f)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {LIMIT:?}")))
    }
    let mut out = Vec::new();
    let store = timed(async {
        if settings.state_url == "memory:" {
            return Ok("in memory".to_string());
        }
        SqlStore::connect(&settings.state_url, settings.claim_lease)
            .await
            .map(|_| "opened and migrated".to_string())
            .map_err(|e| e.to_string())
    })
    .await;
    out.push(("state store", store));
    let source = timed(async {
        match &settings.source {
            SourceSettings::File { path } => {
                crate::source::FileInput::resolve(std::slice::from_ref(path))
                    .map(|i| format!("{} input(s)", i.len()))
                    .map_err(|e| e.to_string())
            }
            SourceSettings::Pubsub(p) => crate::source::pubsub::check_subscription(p)
                .await
                .map_err(|e| e.to_string()),
            SourceSettings::Sqs(q) => crate::source::sqs::check_queues(q)
                .await
                .map_err(|e| e.to_string()),
        }
    })
    .await;
    out.push(("source", source));
    if let Some(ct) = &settings.commercetools {
        let token = timed(async {
            let client = CtpClient::new(ct.clone()).map_err(|e| e.to_string())?;
            let granted = client.granted_scopes().await.map_err(|e| e.to_string())?;
            let missing: Vec<String> = needed_scopes(settings, &ct.project_key)
                .into_iter()
                .filter(|n| !scope_covered(n, &granted))
                .collect();
            if missing.is_empty() {
                Ok(format!("token granted: {}", granted.join(" ")))
            } else {
                Err(format!(
                    "the token lacks scopes the enabled rules need: {} (granted: {})",
                    missing.join(" "),
                    granted.join(" ")
                ))
            }
        })
        .await;
        out.push(("commercetools token", token));
        let checkout = timed(async {
            let http = reqwest::Client::builder()
                .timeout(LIMIT)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| e.to_string())?;
            // Any HTTP answer proves the host resolves and speaks HTTP; the call is
            // unauthenticated on purpose.
            let shown = mask_url(&ct.checkout_url, UrlKind::Plain);
            http.get(&ct.checkout_url)
                .send()
                .await
                .map(|r| format!("{shown} answered {}", r.status()))
                .map_err(|e| format!("{shown}: {}", http_error_text(&e, UrlKind::Plain)))
        })
        .await;
        out.push(("Checkout host", checkout));
    }
    out
}
