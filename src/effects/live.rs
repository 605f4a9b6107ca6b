//! The live executor: releases go to the commercetools order update and/or the webhook, cancels,
//! captures and refunds to Checkout.

use async_trait::async_trait;

use super::{Effect, EffectError, Executor, OrderUpdater, PaymentIntents, Webhook};
use crate::action::{Action, ActionKind};

/// Runs actions against the real targets that are configured.
pub struct LiveExecutor {
    /// The order update on release, if configured.
    pub order_update: Option<OrderUpdater>,
    /// The webhook on release, if configured.
    pub webhook: Option<Webhook>,
    /// Cancels, captures and refunds (Checkout Payment Intents), if the commercetools client
    /// is configured.
    pub payment_intents: Option<PaymentIntents>,
}

impl LiveExecutor {
    /// The order update first: it is re-readable, so a retry after a webhook failure finds it
    /// done and only the webhook is sent again (same key). A webhook failing after the update
    /// is [`EffectError::Unfinished`]: the order we updated may no longer look fulfillable,
    /// and the webhook must still go. An update refused for good does not hold the webhook
    /// back (the money covers the order); the refusal is reported once the webhook is sent.
    async fn release(&self, action: &Action) -> Result<Effect, EffectError> {
        let mut summary = Vec::new();
        let mut refused = None;
        if let Some(u) = &self.order_update {
            match u.release(action).await {
                // No longer applies (cancelled, gone, the total changed): no webhook either.
                Ok(e) if !e.applied => return Ok(e),
                Ok(e) => summary.push(e.summary),
                Err(EffectError::Permanent { detail }) => refused = Some(detail),
                Err(e) => return Err(e),
            }
        }
        let updated = !summary.is_empty();
        if let Some(w) = &self.webhook {
            match w.deliver(action).await {
                Ok(e) => summary.push(e.summary),
                Err(EffectError::Transient {
                    detail,
                    retry_after,
                }) if updated => {
                    return Err(EffectError::Unfinished {
                        detail: format!("order updated, webhook not delivered: {detail}"),
                        retry_after,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        match refused {
            Some(detail) if self.webhook.is_some() => Err(EffectError::Permanent {
                detail: format!(
                    "webhook delivered, but the order update failed for good: {detail}"
                ),
            }),
            Some(detail) => Err(EffectError::Permanent { detail }),
            None => Ok(Effect::applied(summary.join(", "))),
        }
    }
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
                self.release(action).await
            }
            kind => {
                let Some(intents) = &self.payment_intents else {
                    return Err(EffectError::Permanent {
                        detail: format!(
                            "{} needs the commercetools client (CTP_* settings)",
                            kind.as_str()
                        ),
                    });
                };
                match kind {
                    ActionKind::CancelPayment => intents.cancel(action).await,
                    ActionKind::CapturePayment => intents.capture(action).await,
                    _ => intents.refund(action).await,
                }
            }
        }
    }
}
