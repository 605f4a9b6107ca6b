//! Carrying out decisions: an [`Executor`] turns an [`Action`] into an effect on the world
//! (a webhook, an order update, a cancelled authorization), or only records it (dry run).

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use crate::action::Action;

pub mod live;
pub mod order_update;
pub mod payment_intents;
pub mod webhook;

pub use live::LiveExecutor;
pub use order_update::{OrderUpdate, OrderUpdater};
pub use payment_intents::PaymentIntents;
pub use webhook::Webhook;

/// Why an action did not take effect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EffectError {
    /// May work later: the message is nacked and the action decided again.
    #[error("{detail} (will retry)")]
    Transient {
        /// What happened.
        detail: String,
        /// A delay the target asked for (HTTP Retry-After).
        retry_after: Option<Duration>,
    },
    /// Part of the action took effect (a release's order update), the rest failed and may
    /// work later. The action is carried out on the retry even if the rules would no longer
    /// decide it — the order update itself may have made the order unfulfillable.
    #[error("{detail} (partly done; will retry the rest)")]
    Unfinished {
        /// What happened.
        detail: String,
        /// A delay the target asked for (HTTP Retry-After).
        retry_after: Option<Duration>,
    },
    /// The target refused this very request (a receiver's 4xx other than 401, 403, 408 and
    /// 429): not an
    /// outage, so the message counts its deliveries and is parked with this reason after
    /// `worker.max_deliveries`; retried until then (a receiver being fixed).
    #[error("{detail} (refused; will retry up to worker.max_deliveries)")]
    Refused {
        /// What happened.
        detail: String,
    },
    /// Will not work by retrying: reported, and the message parked.
    #[error("{detail}")]
    Permanent {
        /// What happened.
        detail: String,
    },
}

/// What an executed action did, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effect {
    /// A short description: `planned`, `webhook 204`, `cancel approved`, …
    pub summary: String,
    /// `false` when the executor found the action no longer applies and did nothing (e.g. a
    /// Charge appeared before the cancel): the key is not recorded as done, so the rules may
    /// decide again when things change.
    pub applied: bool,
}

impl Effect {
    /// The action took effect (or already had).
    pub fn applied(summary: impl Into<String>) -> Self {
        Self {
            summary: summary.into(),
            applied: true,
        }
    }

    /// The action no longer applies; nothing was done.
    pub fn skipped(summary: impl Into<String>) -> Self {
        Self {
            summary: summary.into(),
            applied: false,
        }
    }
}

/// Runs actions.
#[async_trait]
pub trait Executor: Send + Sync {
    /// Carries out `action`. Called at most once per idempotency key unless the previous
    /// attempt failed transiently.
    async fn execute(&self, action: &Action) -> Result<Effect, EffectError>;
}

/// Runs nothing: every action is only planned (replay).
#[derive(Debug, Default)]
pub struct PlanOnly;

#[async_trait]
impl Executor for PlanOnly {
    async fn execute(&self, _action: &Action) -> Result<Effect, EffectError> {
        Ok(Effect::applied("planned"))
    }
}

/// Writes each action as one JSON line instead of executing it (`PAYRULES_DRY_RUN=true`).
pub struct DryRun {
    out: Mutex<Box<dyn Write + Send>>,
}

impl DryRun {
    /// Writes to `out` (stdout for `run`).
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out: Mutex::new(out),
        }
    }
}

#[async_trait]
impl Executor for DryRun {
    async fn execute(&self, action: &Action) -> Result<Effect, EffectError> {
        let line = action.to_json_line();
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|e| EffectError::Transient {
                detail: format!("writing the dry-run line: {e}"),
                retry_after: None,
            })?;
        Ok(Effect::applied("dry run"))
    }
}
