//! Cancelling, capturing and refunding through the Checkout Payment Intents API.
//!
//! The API documents no idempotency key, so right before each call the payment is re-read and
//! the call is skipped when the amounts say it already happened (maybe by an earlier attempt of
//! ours): for a cancel, no authorized money is left (a CancelAuthorization takes it), or a
//! Charge in Initial, Pending or Success is there (too late to cancel); for a capture, such
//! Charges already take the authorization; for a refund, Refunds in Initial, Pending or Success
//! already take the charged money (never more than refundable(P) is asked for). After a 500
//! the payment is re-read too: the call may have happened.

use serde_json::{Value, json};
use tracing::{info, warn};

use super::order_update::effect_error;
use super::{Effect, EffectError};
use crate::action::Action;
use crate::commerce::{CtpClient, Retry};
use crate::model::Payment;

/// Cancels authorizations, captures and refunds payments.
pub struct PaymentIntents {
    /// The commercetools client (reads the payment, calls Checkout).
    client: CtpClient,
    /// `cancelPayment` or `reversePayment`.
    intent_action: String,
    /// The `paymentInterface`s whose payments Checkout manages; `None`: any.
    interfaces: Option<Vec<String>>,
}

/// A Payment Intents action that takes an amount of money: a capture (from the open
/// authorization) or a refund (from the charged money). Both are checked the same way: right
/// before the call, never more than is `available`; after a 500, made only if what is `taken`
/// grew by the amount asked for (what it was before the call is not ours).
struct Taking {
    /// `capture` or `refund`, for logs and errors.
    what: &'static str,
    /// The Payment Intents action.
    intent: &'static str,
    /// What may still be taken: open authorization (capture), refundable(P) (refund).
    available: fn(&Payment, &str) -> i64,
    /// What is taken or being taken: Charges (capture), Refunds (refund) in Initial, Pending
    /// or Success.
    taken: fn(&Payment, &str) -> i64,
    /// The effect when nothing is available but something is taken: the call happened.
    already: &'static str,
    /// The effect when nothing is available and nothing taken.
    nothing: &'static str,
}

const CAPTURE: Taking = Taking {
    what: "capture",
    intent: "capturePayment",
    available: |p, c| p.authorized(c).saturating_sub(p.captured(c)),
    taken: Payment::captured,
    already: "Charges already take the authorization; no call made",
    nothing: "no authorized money to capture",
};

const REFUND: Taking = Taking {
    what: "refund",
    intent: "refundPayment",
    available: Payment::refundable,
    taken: Payment::refunded,
    already: "Refunds already take the charged money; no call made",
    nothing: "no charged money to refund",
};

/// A capture or refund to make, as the pre-check read the payment.
struct TakePlan {
    /// What to take: at most what is available.
    amount: i64,
    /// What was taken before the call: after a 500 only what is taken beyond it is ours.
    taken_before: i64,
}

/// What a pre-check found.
enum Check {
    /// Make the call.
    Call,
    /// No call: the effect is already there, or no longer applies.
    Settled(Effect),
}

impl PaymentIntents {
    /// Payment Intents calls using the action `intent_action` for cancels.
    pub fn new(client: CtpClient, intent_action: String) -> Self {
        Self {
            client,
            intent_action,
            interfaces: None,
        }
    }

    /// Only payments with one of these `paymentInterface`s are sent to Checkout; any other is
    /// reported, not sent (`None`: any payment).
    #[must_use]
    pub fn with_interfaces(mut self, interfaces: Option<Vec<String>>) -> Self {
        self.interfaces = interfaces;
        self
    }

    /// Refuses a payment Checkout does not manage: a human must act where it was authorized.
    fn managed_by_checkout(&self, payment: &Payment, what: &str) -> Result<(), EffectError> {
        let Some(allowed) = &self.interfaces else {
            return Ok(());
        };
        let interface = payment.payment_method_info.payment_interface.as_deref();
        if interface.is_some_and(|i| allowed.iter().any(|a| a == i)) {
            return Ok(());
        }
        Err(EffectError::Permanent {
            detail: format!(
                "payment {} is not a Checkout payment (paymentInterface {}, not one of {}): its {what} was not sent to Checkout; {what} it with the provider that authorized it",
                payment.id,
                interface.map_or_else(|| "unset".to_string(), |i| format!("{i:?}")),
                allowed.join(", ")
            ),
        })
    }

    async fn read(&self, payment_id: &str) -> Result<Payment, EffectError> {
        self.client
            .payment(payment_id)
            .await
            .map_err(effect_error)?
            .ok_or_else(|| EffectError::Permanent {
                detail: format!("payment {payment_id} no longer exists"),
            })
    }

    /// Re-reads the payment: whether the cancel call must still be made.
    async fn cancel_check(&self, payment_id: &str) -> Result<Check, EffectError> {
        let payment = self.read(payment_id).await?;
        self.managed_by_checkout(&payment, "cancel")?;
        if payment.has_live_charge() {
            return Ok(Check::Settled(Effect::skipped(
                "a Charge is under way or succeeded; not cancelling",
            )));
        }
        let authorized = payment.currency().map_or(0, |c| payment.authorized(c));
        if authorized <= 0 {
            return Ok(Check::Settled(if payment.has_live_cancel_authorization() {
                Effect::applied(
                    "a CancelAuthorization already takes the authorization; no call made",
                )
            } else {
                Effect::skipped("no authorized money to cancel")
            }));
        }
        Ok(Check::Call)
    }

    /// Re-reads the payment: how much to take and what is taken already, or the effect when
    /// nothing may be taken (no call).
    async fn take_check(
        &self,
        t: &Taking,
        payment_id: &str,
        currency: &str,
        wanted: i64,
    ) -> Result<Result<TakePlan, Effect>, EffectError> {
        let payment = self.read(payment_id).await?;
        self.managed_by_checkout(&payment, t.what)?;
        let available = (t.available)(&payment, currency);
        let taken = (t.taken)(&payment, currency);
        if available <= 0 {
            return Ok(Err(if taken > 0 {
                Effect::applied(t.already)
            } else {
                Effect::skipped(t.nothing)
            }));
        }
        Ok(Ok(TakePlan {
            amount: available.min(wanted),
            taken_before: taken,
        }))
    }

    /// Sends one Payment Intents action and maps its outcome; after a 500, `recheck` decides
    /// whether the action happened.
    async fn call<F, Fut>(
        &self,
        what: &str,
        payment_id: &str,
        intent: &Value,
        recheck: F,
    ) -> Result<Effect, EffectError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Effect>, EffectError>>,
    {
        match self.client.payment_intent(payment_id, intent).await {
            Ok(outcome) => match outcome.as_deref() {
                Some(outcome @ ("approved" | "received")) => {
                    info!(payment_id, outcome, "{what} requested");
                    Ok(Effect::applied(format!("{what} {outcome}")))
                }
                // The API reference's own example answers `{}`: Checkout took the request and
                // processes it asynchronously, which is what `received` means.
                None => {
                    let shown = match recheck().await {
                        Ok(Some(_)) => "already visible on the payment",
                        Ok(None) => "not yet visible on the payment",
                        Err(_) => "the payment could not be re-read",
                    };
                    info!(
                        payment_id,
                        confirmation = shown,
                        "{what} requested; Checkout answered without an outcome, taken as received"
                    );
                    Ok(Effect::applied(format!(
                        "{what} received (empty answer; {shown})"
                    )))
                }
                Some("rejected") => Err(EffectError::Permanent {
                    detail: format!("Checkout rejected the {what} of payment {payment_id}"),
                }),
                // An outcome this version does not know: whether it happened is read off the
                // payment; if it does not show, try again later (the pre-check keeps it once).
                Some(other) => {
                    warn!(
                        payment_id,
                        outcome = other,
                        "{what}: unknown outcome; re-reading the payment"
                    );
                    match recheck().await? {
                        Some(effect) => Ok(effect),
                        None => Err(EffectError::Transient {
                            detail: format!(
                                "Checkout answered an unknown outcome {other:?} to the {what} of payment {payment_id} and the payment does not show it yet"
                            ),
                            retry_after: None,
                        }),
                    }
                }
            },
            Err(e) if e.retry == Retry::Verify => {
                warn!(payment_id, error = %e, "{what}: answer unknown (500 or timed out after sending); re-reading the payment");
                match recheck().await? {
                    Some(effect) => Ok(effect),
                    // Not visible yet: the retry re-reads again before any call, after a
                    // pause that gives Checkout time to show what it did.
                    None => Err(EffectError::Transient {
                        detail: e.to_string(),
                        retry_after: Some(UNKNOWN_ANSWER_PAUSE),
                    }),
                }
            }
            Err(e) => Err(effect_error(e)),
        }
    }

    /// Cancels the authorization of `action`'s payment.
    ///
    /// # Errors
    /// Permanent when Checkout rejects the cancel or refuses the request; transient when it
    /// is unavailable.
    pub async fn cancel(&self, action: &Action) -> Result<Effect, EffectError> {
        let payment_id = payment_of(action)?;
        if let Check::Settled(effect) = self.cancel_check(payment_id).await? {
            return Ok(effect);
        }
        let intent = json!({"action": self.intent_action, "merchantReference": action.key});
        self.call("cancel", payment_id, &intent, || async {
            Ok(match self.cancel_check(payment_id).await? {
                Check::Settled(effect) => Some(effect),
                Check::Call => None,
            })
        })
        .await
    }

    /// Captures `action.amount` (at most what is still capturable) of `action`'s payment.
    ///
    /// # Errors
    /// As for [`PaymentIntents::cancel`]; a capture without an amount is refused.
    pub async fn capture(&self, action: &Action) -> Result<Effect, EffectError> {
        self.take(&CAPTURE, action).await
    }

    /// Refunds `action.amount` (at most what is still refundable) of `action`'s payment.
    ///
    /// # Errors
    /// As for [`PaymentIntents::cancel`]; a refund without an amount is refused.
    pub async fn refund(&self, action: &Action) -> Result<Effect, EffectError> {
        self.take(&REFUND, action).await
    }

    /// Takes `action.amount` (at most what is available) of `action`'s payment: a capture or
    /// a refund.
    async fn take(&self, t: &Taking, action: &Action) -> Result<Effect, EffectError> {
        let payment_id = payment_of(action)?;
        let Some(money) = &action.amount else {
            return Err(EffectError::Permanent {
                detail: format!("{} of payment {payment_id} without an amount", t.what),
            });
        };
        let currency = money.currency_code.as_str();
        let TakePlan {
            amount,
            taken_before,
        } = match self
            .take_check(t, payment_id, currency, money.cent_amount)
            .await?
        {
            Ok(plan) => plan,
            Err(effect) => return Ok(effect),
        };
        let intent = json!({
            "action": t.intent,
            "amount": {"centAmount": amount, "currencyCode": currency},
            "merchantReference": action.key,
        });
        self.call(t.what, payment_id, &intent, || async {
            // After a 500: made if what is taken grew by what we asked for on top of what it
            // was before the call (an earlier partial capture or someone's refund is not ours).
            let payment = self.read(payment_id).await?;
            Ok(
                ((t.taken)(&payment, currency) >= taken_before.saturating_add(amount))
                    .then(|| Effect::applied(format!("the {} happened despite the 500", t.what))),
            )
        })
        .await
    }
}

/// How long to wait, after a call whose answer is unknown did not show on the payment, before
/// re-reading and deciding again.
const UNKNOWN_ANSWER_PAUSE: std::time::Duration = std::time::Duration::from_secs(10);

/// The payment a cancel or capture is for; an action without one is refused (never decided by
/// the rules: only a free order's release has no payment).
fn payment_of(action: &Action) -> Result<&str, EffectError> {
    action
        .payment_id
        .as_deref()
        .ok_or_else(|| EffectError::Permanent {
            detail: format!(
                "{} without a payment ({})",
                action.action.as_str(),
                action.key
            ),
        })
}
