//! Wiring: builds the view, store, executors and processor a configuration asks for.

use std::io::Write;
use std::sync::Arc;

use tracing::warn;

use crate::commerce::{CtpClient, LiveView};
use crate::config::Settings;
use crate::effects::{Canceller, DryRun, Executor, LiveExecutor, OrderUpdater, Webhook};
use crate::process::Processor;
use crate::rules::Engine;
use crate::store::MemoryStore;
use crate::view::{CommerceView, StreamView};

/// Builds the processor for `settings`. With the commercetools client configured the rules read
/// the live API; without it they read a view built from the stream itself. A dry run writes
/// each action as a JSON line to `dry_run_out` instead of executing it.
///
/// # Errors
/// A configuration that cannot run: nothing to execute releases or cancels with.
pub fn build_processor(
    settings: &Settings,
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
            .map(|w| Webhook::new(w.url.clone(), w.secret.clone(), timeout))
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
        if settings.rules.cancel.enabled && cancel.is_none() {
            return Err("cancels need the commercetools client: set the CTP_* variables, disable the rule, or set PAYRULES_DRY_RUN=true".into());
        }
        Arc::new(LiveExecutor {
            order_update,
            webhook,
            cancel,
        })
    };
    if settings.state_url != "memory:" {
        warn!(state_url = %settings.state_url, "the durable state store is not built yet: the ledger and timers are kept in memory");
    }
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(view, store.clone(), settings.rules.clone());
    Ok(Arc::new(Processor::new(engine, store, executor)))
}
