//! One step of work: decide with the [`Engine`], claim each action's key in the ledger,
//! execute it, record the outcome. Shared by `replay` and `run`.

use std::sync::Arc;

use tracing::{info, warn};

use crate::action::Action;
use crate::effects::{EffectError, Executor};
use crate::message::{Message, Timestamp};
use crate::rules::{Engine, EngineError};
use crate::store::{Claim, LedgerStatus, Store, StoreError, Timer};

/// Why a message or timer could not be fully handled.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProcessError {
    /// Deciding failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The ledger could not be written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An action failed and may succeed later.
    #[error("action {key}: {error}")]
    Transient {
        /// The action's idempotency key.
        key: String,
        /// What went wrong.
        error: EffectError,
    },
    /// An action failed for good; it is recorded as failed and will not run again.
    #[error("action {key} failed permanently: {error}")]
    Permanent {
        /// The action's idempotency key.
        key: String,
        /// What went wrong.
        error: EffectError,
    },
}

impl ProcessError {
    /// Whether handling the message again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProcessError::Engine(e) => e.is_retryable(),
            ProcessError::Store(_) | ProcessError::Transient { .. } => true,
            ProcessError::Permanent { .. } => false,
        }
    }

    /// A delay the failing target asked for.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            ProcessError::Transient {
                error: EffectError::Transient { retry_after, .. },
                ..
            } => *retry_after,
            _ => None,
        }
    }
}

/// Decide, claim, execute, record.
pub struct Processor {
    engine: Engine,
    store: Arc<dyn Store>,
    executor: Arc<dyn Executor>,
}

impl Processor {
    /// A processor; `store` must be the engine's store.
    pub fn new(engine: Engine, store: Arc<dyn Store>, executor: Arc<dyn Executor>) -> Self {
        Self {
            engine,
            store,
            executor,
        }
    }

    /// The store (timers are driven from outside).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// See [`Engine::is_inert`].
    pub fn is_inert(&self, m: &Message) -> bool {
        self.engine.is_inert(m)
    }

    /// Handles one message at clock `now`; returns the actions executed.
    ///
    /// # Errors
    /// See [`ProcessError`]; after a transient error the message should be retried.
    pub async fn message(&self, m: &Message, now: Timestamp) -> Result<Vec<Action>, ProcessError> {
        let actions = self.engine.on_message(m, now).await?;
        self.execute_all(actions).await
    }

    /// Handles one due timer, stamping decisions `at`; the timer is marked done on success and
    /// given back on a retryable failure.
    ///
    /// # Errors
    /// See [`ProcessError`].
    pub async fn timer(&self, timer: &Timer, at: Timestamp) -> Result<Vec<Action>, ProcessError> {
        let result = match self.engine.on_timer(timer, at).await {
            Ok(actions) => self.execute_all(actions).await,
            Err(e) => Err(e.into()),
        };
        match &result {
            Err(e) if e.is_retryable() => {}
            _ => self.store.timer_done(timer).await?,
        }
        result
    }

    async fn execute_all(&self, actions: Vec<Action>) -> Result<Vec<Action>, ProcessError> {
        let mut done = Vec::with_capacity(actions.len());
        let mut permanent = None;
        for action in actions {
            match self.execute(action).await {
                Ok(Some(a)) => done.push(a),
                Ok(None) => {}
                Err(e @ ProcessError::Permanent { .. }) => permanent = Some(e),
                Err(e) => return Err(e),
            }
        }
        match permanent {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    async fn execute(&self, action: Action) -> Result<Option<Action>, ProcessError> {
        match self.store.claim(&action.key).await? {
            Claim::Exists(LedgerStatus::Claimed) => {
                // Another worker is running it (or died doing so; its lease will run out).
                return Err(ProcessError::Transient {
                    key: action.key,
                    error: EffectError::Transient {
                        detail: "claimed by another worker".into(),
                        retry_after: None,
                    },
                });
            }
            Claim::Exists(status) => {
                info!(key = %action.key, ?status, "action already in the ledger; not run again");
                return Ok(None);
            }
            Claim::Acquired => {}
        }
        match self.executor.execute(&action).await {
            Ok(effect) if !effect.applied => {
                self.store.release(&action.key).await?;
                info!(key = %action.key, effect = %effect.summary, "action no longer applies; nothing done");
                Ok(None)
            }
            Ok(effect) => {
                self.store.settle(&action.key, LedgerStatus::Done).await?;
                info!(key = %action.key, effect = %effect.summary, "action done");
                Ok(Some(action))
            }
            Err(error @ EffectError::Transient { .. }) => {
                self.store.release(&action.key).await?;
                warn!(key = %action.key, %error, "action failed; will retry");
                Err(ProcessError::Transient {
                    key: action.key,
                    error,
                })
            }
            Err(error @ EffectError::Permanent { .. }) => {
                self.store.settle(&action.key, LedgerStatus::Failed).await?;
                Err(ProcessError::Permanent {
                    key: action.key,
                    error,
                })
            }
        }
    }
}
