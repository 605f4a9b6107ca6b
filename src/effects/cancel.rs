//! Cancelling an authorization through the Checkout Payment Intents API.
//!
//! The API documents no idempotency key, so right before the call the payment is re-read and
//! the call is skipped when a CancelAuthorization that has not failed (the cancel already
//! happened, maybe by an earlier attempt of ours) or a Charge in Pending or Success (too late
//! to cancel) is there. After a 500 the payment is re-read too: the cancel may have happened.

use serde_json::json;
use tracing::{info, warn};

use super::order_update::effect_error;
use super::{Effect, EffectError};
use crate::action::Action;
use crate::commerce::{CtpClient, Retry};

/// Cancels authorizations.
pub struct Canceller {
    /// The commercetools client (reads the payment, calls Checkout).
    client: CtpClient,
    /// `cancelPayment` or `reversePayment`.
    intent_action: String,
}

impl Canceller {
    /// A canceller using the Payment Intents action `intent_action`.
    pub fn new(client: CtpClient, intent_action: String) -> Self {
        Self {
            client,
            intent_action,
        }
    }

    /// Re-reads the payment: `Some(effect)` when no call must be made.
    async fn precheck(&self, payment_id: &str) -> Result<Option<Effect>, EffectError> {
        let payment = self
            .client
            .payment(payment_id)
            .await
            .map_err(effect_error)?
            .ok_or_else(|| EffectError::Permanent {
                detail: format!("payment {payment_id} no longer exists"),
            })?;
        if payment.has_live_cancel_authorization() {
            return Ok(Some(Effect::applied(
                "a CancelAuthorization is already there; no call made",
            )));
        }
        if payment.has_pending_or_successful_charge() {
            return Ok(Some(Effect::skipped(
                "a Charge is pending or succeeded; not cancelling",
            )));
        }
        Ok(None)
    }

    /// Cancels the authorization of `action`'s payment.
    ///
    /// # Errors
    /// Permanent when Checkout rejects the cancel or refuses the request; transient when it
    /// is unavailable.
    pub async fn cancel(&self, action: &Action) -> Result<Effect, EffectError> {
        let payment_id = action.payment_id.as_str();
        if let Some(effect) = self.precheck(payment_id).await? {
            return Ok(effect);
        }
        let intent = json!({"action": self.intent_action, "merchantReference": action.key});
        match self.client.payment_intent(payment_id, &intent).await {
            Ok(outcome) => match outcome.as_str() {
                "approved" | "received" => {
                    info!(payment_id, outcome, "authorization cancel requested");
                    Ok(Effect::applied(format!("cancel {outcome}")))
                }
                "rejected" => Err(EffectError::Permanent {
                    detail: format!(
                        "Checkout rejected the {} of payment {payment_id}",
                        self.intent_action
                    ),
                }),
                other => Err(EffectError::Permanent {
                    detail: format!(
                        "Checkout answered an unknown outcome {other:?} for payment {payment_id}"
                    ),
                }),
            },
            Err(e) if e.retry == Retry::Verify => {
                warn!(payment_id, error = %e, "cancel answered 500; re-reading the payment");
                match self.precheck(payment_id).await? {
                    Some(effect) => Ok(effect),
                    None => Err(effect_error(e)),
                }
            }
            Err(e) => Err(effect_error(e)),
        }
    }
}
