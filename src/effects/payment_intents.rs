//! Cancelling, capturing and refunding through the Checkout Payment Intents API.
//!
//! The API documents no idempotency key (`merchantReference` is carried for reconciliation
//! only, not documented to dedupe anything), so right before each call the payment is re-read and
//! the call is skipped when the amounts say it already happened (maybe by an earlier attempt of
//! ours): for a cancel, no authorized money is left (a CancelAuthorization takes it), or a
//! Charge in Initial, Pending or Success is there (too late to cancel); for a capture, such
//! Charges already take the authorization; for a refund, Refunds in Initial, Pending or Success
//! already take the charged money (never more than refundable(P) is asked for). After a 500
//! the payment is re-read too: the call may have happened.
//!
//! That is enough for a capture or refund of *all* the money, but not for part of it: after
//! an earlier attempt's call, money is still available, and a pre-check reading the payment
//! afresh cannot tell the earlier call's Refund from one made before it. So, with a store
//! ([`PaymentIntents::with_store`]), a capture or refund writes a note on its claim before the
//! call — what the payment showed taken then, and the amount asked for — and every later
//! attempt under the same key (a takeover after a crash, the retry after a 500) measures
//! against that durable baseline instead of a new one.

use serde_json::{Value, json};
use tracing::{info, warn};

use std::sync::Arc;

use super::order_update::effect_error;
use super::{Effect, EffectError};
use crate::action::Action;
use crate::commerce::{CtpClient, Retry};
use crate::model::Payment;
use crate::store::Store;

/// Cancels authorizations, captures and refunds payments.
pub struct PaymentIntents {
    /// The commercetools client (reads the payment, calls Checkout).
    client: CtpClient,
    /// `cancelPayment` or `reversePayment`.
    intent_action: String,
    /// The `paymentInterface`s whose payments Checkout manages; `None`: any.
    interfaces: Option<Vec<String>>,
    /// The ledger the process claims the actions in, where a capture or refund notes its
    /// baseline before its call ([`TakeNote`]): the API has no idempotency key, so only this
    /// durable note lets a later attempt tell a partial capture or refund made from one not
    /// made. `None` (tests, tools): no note, the pre-check alone decides.
    store: Option<Arc<dyn Store>>,
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

/// What a capture or refund writes on its claim before the call, and a later attempt under
/// the same key reads: it measures whether the call happened against this baseline, never
/// against a new one (which would count the earlier attempt's Refund as someone else's and
/// ask again). Stored as text: `taken_before=N amount=M currency=EUR`. A note without
/// `taken_before` is the plan the process wrote when it claimed the action (a return refund's
/// amount, which the rules add up per line — [`crate::store::planned_note`]): no call was made
/// under it yet, and the call asks for that amount.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TakeNote {
    /// What the payment showed taken (Charges for a capture, Refunds for a refund) before the
    /// call; `None` for a plan (no call made yet).
    taken_before: Option<i64>,
    /// What the call asked for.
    amount: i64,
    /// The currency of both amounts.
    currency: String,
}

impl TakeNote {
    /// The note as stored.
    fn text(&self) -> String {
        match self.taken_before {
            Some(before) => format!(
                "taken_before={before} amount={} currency={}",
                self.amount, self.currency
            ),
            None => crate::store::planned_note(self.amount, &self.currency),
        }
    }

    /// The note of an attempt that reached its call (not a plan).
    fn called(&self) -> Option<(i64, i64)> {
        self.taken_before.map(|before| (before, self.amount))
    }

    /// Reads a stored note; `None` for anything but the three fields (`taken_before` may be
    /// missing: a plan), each once, with a non-negative baseline, a positive amount and a
    /// currency code of capital letters.
    fn parse(text: &str) -> Option<Self> {
        let (mut taken_before, mut amount, mut currency) = (None, None, None);
        for field in text.split_whitespace() {
            let (name, value) = field.split_once('=')?;
            let slot = match name {
                "taken_before" => &mut taken_before,
                "amount" => &mut amount,
                "currency" => &mut currency,
                _ => return None,
            };
            if slot.replace(value).is_some() {
                return None;
            }
        }
        let taken_before: Option<i64> = match taken_before {
            Some(v) => Some(v.parse().ok()?),
            None => None,
        };
        let amount: i64 = amount?.parse().ok()?;
        let currency = currency?;
        let currency_ok =
            (1..=8).contains(&currency.len()) && currency.bytes().all(|b| b.is_ascii_uppercase());
        let before_ok = taken_before.is_none_or(|b| b >= 0);
        (before_ok && amount > 0 && currency_ok).then(|| Self {
            taken_before,
            amount,
            currency: currency.to_string(),
        })
    }
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
            store: None,
        }
    }

    /// Captures and refunds note their baseline on their claim in `store` before calling, and
    /// read an earlier attempt's note first (see [`TakeNote`]). `store` must be the one the
    /// actions are claimed in: only the claim's owner may write the note.
    #[must_use]
    pub fn with_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
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
    /// nothing may be taken (no call). With an `earlier` attempt's note its amount and
    /// baseline stand instead of `wanted` and what is taken now: taken beyond the baseline by
    /// the amount, the call was made (no second one); otherwise it is made with that amount.
    async fn take_check(
        &self,
        t: &Taking,
        payment_id: &str,
        currency: &str,
        wanted: i64,
        earlier: Option<&TakeNote>,
    ) -> Result<Result<TakePlan, Effect>, EffectError> {
        let payment = self.read(payment_id).await?;
        self.managed_by_checkout(&payment, t.what)?;
        let available = (t.available)(&payment, currency);
        let taken = (t.taken)(&payment, currency);
        let called = earlier.and_then(TakeNote::called);
        if let Some((before, amount)) = called
            && taken >= before.saturating_add(amount)
        {
            return Ok(Err(Effect::applied(format!(
                "the {} of {amount} {currency} was made by an earlier attempt ({taken} taken now, {before} before it); no call made",
                t.what
            ))));
        }
        if available <= 0 {
            return Ok(Err(if taken > 0 {
                Effect::applied(t.already)
            } else {
                Effect::skipped(t.nothing)
            }));
        }
        let wanted = earlier.map_or(wanted, |n| n.amount);
        let taken_before = called.map_or(taken, |(before, _)| before);
        Ok(Ok(TakePlan {
            amount: available.min(wanted),
            taken_before,
        }))
    }

    /// The note an earlier attempt wrote on `action`'s claim, if any (none without a store).
    /// A note that does not read as one, or is for another currency, is an earlier attempt
    /// that may have called with who knows what: refused for good, never called again.
    async fn earlier_note(
        &self,
        t: &Taking,
        action: &Action,
        currency: &str,
    ) -> Result<Option<TakeNote>, EffectError> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let entry = store
            .ledger_entry(&action.key)
            .await
            .map_err(|e| EffectError::Transient {
                detail: format!(
                    "reading the note on {} before the {}; no call made: {e}",
                    action.key, t.what
                ),
                retry_after: None,
            })?;
        let Some(text) = entry.and_then(|e| e.note) else {
            return Ok(None);
        };
        match TakeNote::parse(&text) {
            Some(note) if note.currency == currency => Ok(Some(note)),
            _ => Err(EffectError::Permanent {
                detail: format!(
                    "the claim on {} carries a note an earlier attempt wrote before its {} call that this version cannot use ({text:?}): that call may have been made, so none is made again; check the payment by hand",
                    action.key, t.what
                ),
            }),
        }
    }

    /// Writes `note` on `action`'s claim before the call (nothing without a store). Failing,
    /// no call is made: an attempt after it would have no baseline to go by.
    async fn write_note(
        &self,
        t: &Taking,
        action: &Action,
        note: &TakeNote,
    ) -> Result<(), EffectError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        store
            .note(&action.key, &note.text())
            .await
            .map_err(|e| EffectError::Transient {
                detail: format!(
                    "writing the note on {} before the {}; no call made: {e}",
                    action.key, t.what
                ),
                retry_after: None,
            })
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
    /// a refund. With a store, an earlier attempt's note decides first; without one, the
    /// note is written before the call (see [`TakeNote`]).
    async fn take(&self, t: &Taking, action: &Action) -> Result<Effect, EffectError> {
        let payment_id = payment_of(action)?;
        let Some(money) = &action.amount else {
            return Err(EffectError::Permanent {
                detail: format!("{} of payment {payment_id} without an amount", t.what),
            });
        };
        let currency = money.currency_code.as_str();
        let earlier = self.earlier_note(t, action, currency).await?;
        let TakePlan {
            amount,
            taken_before,
        } = match self
            .take_check(t, payment_id, currency, money.cent_amount, earlier.as_ref())
            .await?
        {
            Ok(plan) => plan,
            Err(effect) => return Ok(effect),
        };
        if earlier.as_ref().and_then(TakeNote::called).is_none() {
            let note = TakeNote {
                taken_before: Some(taken_before),
                amount,
                currency: currency.to_string(),
            };
            self.write_note(t, action, &note).await?;
        }
        let intent = json!({
            "action": t.intent,
            "amount": {"centAmount": amount, "currencyCode": currency},
            "merchantReference": action.key,
        });
        self.call(t.what, payment_id, &intent, || async {
            // After a 500: made if what is taken grew by what we asked for on top of what it
            // was before the call (an earlier partial capture or someone's refund is not ours).
            // The baseline is the note's when an earlier attempt wrote one.
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

#[cfg(test)]
mod tests {
    use super::TakeNote;

    #[test]
    fn a_note_reads_back_as_written() {
        let note = TakeNote {
            taken_before: Some(0),
            amount: 333,
            currency: "EUR".into(),
        };
        assert_eq!(note.text(), "taken_before=0 amount=333 currency=EUR");
        assert_eq!(TakeNote::parse(&note.text()), Some(note));
        assert!(TakeNote::parse("currency=EUR  amount=5 taken_before=12").is_some());
        let plan = TakeNote::parse(&crate::store::planned_note(333, "EUR")).expect("a plan");
        assert_eq!((plan.taken_before, plan.amount), (None, 333));
        assert_eq!(plan.called(), None);
    }

    /// Anything but the three fields, each once and in range, is not a note this version can
    /// go by: the executor then refuses for good rather than call again.
    #[test]
    fn anything_else_is_not_a_note() {
        for text in [
            "",
            "garbage",
            "taken_before=0 amount=333",
            "amount=333",
            "taken_before=0 amount=333 currency=EUR currency=EUR",
            "taken_before=0 amount=333 currency=EUR extra=1",
            "taken_before=-1 amount=333 currency=EUR",
            "taken_before=0 amount=0 currency=EUR",
            "taken_before=0 amount=3.5 currency=EUR",
            "taken_before=0 amount=99999999999999999999 currency=EUR",
            "taken_before=0 amount=333 currency=eur",
            "taken_before=0 amount=333 currency=",
            "taken_before=0 amount=333 currency=EUR=1",
        ] {
            assert_eq!(TakeNote::parse(text), None, "{text:?}");
        }
    }
}
