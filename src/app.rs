//! Wiring: builds the view, store, executors and processor a configuration asks for.

use std::io::Write;
use std::sync::Arc;

use std::future::Future;
use std::time::Duration;

use tracing::{info, warn};

use crate::commerce::{CtpClient, LiveView};
use crate::config::Settings;
use crate::effects::{Canceller, DryRun, Executor, LiveExecutor, OrderUpdater, Webhook};
use crate::process::Processor;
use crate::rules::Engine;
use crate::store::{MemoryStore, SqlStore, Store, StoreError};
use crate::view::{CommerceView, StreamView};

/// Builds the processor for `settings`. With the commercetools client configured the rules read
/// the live API; without it they read a view built from the stream itself. A dry run writes
/// each action as a JSON line to `dry_run_out` instead of executing it.
///
/// # Errors
/// A configuration that cannot run: nothing to execute releases or cancels with.
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
        let cancel = client
            .as_ref()
            .map(|c| Canceller::new(c.clone(), settings.payment_intent_action.clone()));
        if settings.rules.release.enabled && webhook.is_none() && order_update.is_none() {
            return Err("releases have nowhere to go: set PAYRULES_RELEASE_WEBHOOK_URL and/or release.order_update, disable the rule, or set PAYRULES_DRY_RUN=true".into());
        }
        let r = &settings.rules;
        if (r.cancel.enabled || r.cancel_on_order_cancelled.enabled || r.capture.enabled)
            && cancel.is_none()
        {
            return Err("cancels and captures need the commercetools client: set the CTP_* variables, disable the rules (rules.cancel_orphaned_authorization, rules.cancel_on_order_cancelled, rules.capture_on_shipment), or set PAYRULES_DRY_RUN=true".into());
        }
        Arc::new(LiveExecutor {
            order_update,
            webhook,
            cancel,
        })
    };
    let engine = Engine::new(view, store.clone(), settings.rules.clone());
    Ok(Arc::new(Processor::new(engine, store, executor)))
}

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
                info!("state store ready");
                return Ok(store);
            }
            Err(e) => {
                let delay = Duration::from_secs(1u64 << attempt.min(5));
                warn!(error = %e, retry_in = ?delay, "cannot open the state store; retrying");
                tokio::select! {
                    () = &mut shutdown => return Err(e),
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}
