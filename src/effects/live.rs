//! The live executor: releases go to the commercetools order update and/or the webhook, cancels
//! and captures to Checkout.

use async_trait::async_trait;

use super::{Canceller, Effect, EffectError, Executor, OrderUpdater, Webhook};
use crate::action::{Action, ActionKind};

/// Runs actions against the real targets that are configured.
pub struct LiveExecutor {
    /// The order update on release, if configured.
    pub order_update: Option<OrderUpdater>,
    /// The webhook on release, if configured.
    pub webhook: Option<Webhook>,
    /// Cancels and captures (Checkout Payment Intents), if the commercetools client is
    /// configured.
    pub cancel: Option<Canceller>,
}

#[async_trait]
impl Executor for LiveExecutor {
    async fn execute(&self, action: &Action) -> Result<Effect, EffectError> {
        match action.action {
            ActionKind::ReleaseOrder => {
                if self.order_update.is_none() && self.webhook.is_none() {
                    return Err(EffectError::Permanent {
                        detail: "no release target is configured (release.webhook_url or release.order_update)".into(),
                    });
                }
                // The order update first: it is re-readable, so a retry after a webhook
                // failure finds it done and only the webhook is sent again (same key).
                let mut summary = Vec::new();
                if let Some(u) = &self.order_update {
                    let e = u.release(action).await?;
                    if !e.applied {
                        // No longer applies: no webhook either; decided again later.
                        return Ok(e);
                    }
                    summary.push(e.summary);
                }
                if let Some(w) = &self.webhook {
                    let e = w.deliver(action).await?;
                    summary.push(e.summary);
                }
                Ok(Effect::applied(summary.join(", ")))
            }
            ActionKind::CancelPayment => match &self.cancel {
                Some(c) => c.cancel(action).await,
                None => Err(EffectError::Permanent {
                    detail: "cancelling needs the commercetools client (CTP_* settings)".into(),
                }),
            },
            ActionKind::CapturePayment => match &self.cancel {
                Some(c) => c.capture(action).await,
                None => Err(EffectError::Permanent {
                    detail: "capturing needs the commercetools client (CTP_* settings)".into(),
                }),
            },
        }
    }
}
