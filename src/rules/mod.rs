//! The payment rules, level-based: every relevant message makes the engine re-evaluate the
//! payment or order it concerns from the current view, so a duplicate, late or reordered
//! message leads to the same decisions. What was decided lives in the [`Store`] ledger, so
//! an order is released at most once and a payment cancelled at most once.

use std::sync::Arc;

use tracing::debug;

use crate::action::{Action, ActionKind, CancelReason, RuleName};
use crate::message::{Body, Message, MessageType, NotificationType, Timestamp};
use crate::model::{Money, Order, Payment, TransactionState, TransactionType};
use crate::store::{LedgerStatus, Store, StoreError, Timer};
use crate::view::{CommerceView, ViewError};

pub mod cancel;
pub mod release;

pub use release::{CancelRule, ReleaseRule};

/// Both built-in rules' settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// release_for_fulfillment.
    pub release: ReleaseRule,
    /// cancel_orphaned_authorization.
    pub cancel: CancelRule,
}

/// A failure while deciding; the message is retried when it is retryable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// Reading payments or orders failed.
    #[error(transparent)]
    View(#[from] ViewError),
    /// The ledger or timers could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EngineError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            EngineError::View(e) => e.is_retryable(),
            EngineError::Store(_) => true,
        }
    }
}

/// What a message asks the engine to look at.
enum Concern<'a> {
    Payment(&'a str),
    Order(&'a str),
    OrderCreationFailed(Vec<&'a str>),
    Nothing,
}

fn concern(m: &Message) -> Concern<'_> {
    if m.is_subscription_test() || m.notification == NotificationType::ResourceDeleted {
        return Concern::Nothing;
    }
    match (&m.kind, &m.body) {
        (_, Body::CheckoutOrderCreationFailed { payments, .. }) => {
            Concern::OrderCreationFailed(payments.iter().map(|r| r.id.as_str()).collect())
        }
        (MessageType::CheckoutPaymentAuthorized, Body::CheckoutPayment { payment, .. }) => {
            Concern::Payment(&payment.id)
        }
        _ if m.notification == NotificationType::Event => Concern::Nothing,
        _ => match (m.payment_id(), m.order_id()) {
            (Some(p), _) => Concern::Payment(p),
            (_, Some(o)) => Concern::Order(o),
            _ => Concern::Nothing,
        },
    }
}

/// The decision context: who caused it and the clock.
struct Cause<'a> {
    message_id: Option<&'a str>,
    at: Timestamp,
}

/// Decides actions from messages and timers.
pub struct Engine {
    /// Where current state is read.
    view: Arc<dyn CommerceView>,
    /// The ledger (what was decided) and the timers.
    store: Arc<dyn Store>,
    /// Rule settings.
    rules: Rules,
}

impl Engine {
    /// An engine over a view and a store.
    pub fn new(view: Arc<dyn CommerceView>, store: Arc<dyn Store>, rules: Rules) -> Self {
        Self { view, store, rules }
    }

    /// The rule settings.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Shows the message to the view, then re-evaluates what it concerns at clock `now`.
    ///
    /// # Errors
    /// A view or store failure; nothing was decided for this message then.
    pub async fn on_message(
        &self,
        m: &Message,
        now: Timestamp,
    ) -> Result<Vec<Action>, EngineError> {
        self.view.observe(m);
        let cause = Cause {
            message_id: m.id.as_deref(),
            at: now,
        };
        let mut actions = Vec::new();
        match concern(m) {
            Concern::Payment(pid) => self.payment_changed(pid, &cause, &mut actions).await?,
            Concern::Order(oid) => {
                if self.rules.release.enabled
                    && let Some(order) = self.view.order(oid).await?
                {
                    actions.extend(self.evaluate_release(&order, None, &cause).await?);
                }
            }
            Concern::OrderCreationFailed(payments) => {
                if self.rules.cancel.enabled {
                    for pid in payments {
                        actions.extend(
                            self.evaluate_cancel(pid, CancelReason::OrderCreationFailed, &cause)
                                .await?,
                        );
                    }
                }
            }
            Concern::Nothing => {}
        }
        Ok(actions)
    }

    /// Runs a grace-period check, stamped `at`.
    ///
    /// # Errors
    /// A view or store failure; the timer should be retried.
    pub async fn on_timer(&self, timer: &Timer, at: Timestamp) -> Result<Vec<Action>, EngineError> {
        if !self.rules.cancel.enabled {
            return Ok(Vec::new());
        }
        let cause = Cause {
            message_id: None,
            at,
        };
        Ok(self
            .evaluate_cancel(&timer.payment_id, CancelReason::GracePeriodExpired, &cause)
            .await?
            .into_iter()
            .collect())
    }

    async fn payment_changed(
        &self,
        pid: &str,
        cause: &Cause<'_>,
        actions: &mut Vec<Action>,
    ) -> Result<(), EngineError> {
        let Some(payment) = self.view.payment(pid).await? else {
            return Ok(());
        };
        if self.rules.cancel.enabled && payment.has_successful_authorization() {
            let grace = chrono::Duration::from_std(self.rules.cancel.grace_period)
                .unwrap_or(chrono::Duration::MAX);
            let due = cause.at.checked_add_signed(grace).unwrap_or(cause.at);
            let timer = Timer {
                payment_id: pid.to_string(),
                due,
            };
            if self.store.schedule(timer).await? {
                debug!(payment_id = pid, due = %due, "grace period check scheduled");
            }
        }
        if self.rules.release.enabled
            && self.rules.release.is_authorized(&payment)
            && let Some(order) = self.view.order_for_payment(pid).await?
        {
            actions.extend(self.evaluate_release(&order, Some(pid), cause).await?);
        }
        Ok(())
    }

    /// Done or failed for good. A claim is not settled: its holder may have died, so the
    /// action is decided again and the claim resolves who runs it.
    async fn settled(&self, key: &str) -> Result<bool, StoreError> {
        Ok(matches!(
            self.store.ledger_status(key).await?,
            Some(LedgerStatus::Done | LedgerStatus::Failed)
        ))
    }

    async fn cancelled_by_us(&self, payment_id: &str) -> Result<bool, StoreError> {
        Ok(matches!(
            self.store
                .ledger_status(&Action::cancel_key(payment_id))
                .await?,
            Some(LedgerStatus::Claimed | LedgerStatus::Done)
        ))
    }

    async fn evaluate_release(
        &self,
        order: &Order,
        trigger: Option<&str>,
        cause: &Cause<'_>,
    ) -> Result<Option<Action>, EngineError> {
        let key = Action::release_key(&order.id);
        if self.settled(&key).await? {
            return Ok(None);
        }
        let mut payments = Vec::new();
        let mut cancelled = Vec::new();
        for pid in order.payment_ids() {
            if let Some(p) = self.view.payment(pid).await? {
                if self.cancelled_by_us(pid).await? {
                    cancelled.push(pid.to_string());
                }
                payments.push(p);
            }
        }
        let decision = release::decide(
            &self.rules.release,
            order,
            &payments,
            |id| cancelled.iter().any(|c| c == id),
            trigger,
        );
        Ok(decision.map(|r| Action {
            action: ActionKind::ReleaseOrder,
            rule: RuleName::ReleaseForFulfillment,
            key,
            payment_id: r.payment_id,
            order_id: Some(order.id.clone()),
            message_id: cause.message_id.map(str::to_string),
            at: cause.at,
            order_number: order.order_number.clone(),
            payment_ids: r.payment_ids,
            amount: Some(order.total_price.clone()),
            reason: None,
        }))
    }

    async fn evaluate_cancel(
        &self,
        pid: &str,
        reason: CancelReason,
        cause: &Cause<'_>,
    ) -> Result<Option<Action>, EngineError> {
        let key = Action::cancel_key(pid);
        if self.settled(&key).await? {
            return Ok(None);
        }
        let Some(payment) = self.view.payment(pid).await? else {
            debug!(payment_id = pid, "cancel check: payment unknown");
            return Ok(None);
        };
        let order_exists = self.view.order_for_payment(pid).await?.is_some();
        if let Some(why) = cancel::blocker(&payment, order_exists) {
            debug!(payment_id = pid, why, "cancel check: nothing to do");
            return Ok(None);
        }
        Ok(Some(Action {
            action: ActionKind::CancelPayment,
            rule: RuleName::CancelOrphanedAuthorization,
            key,
            payment_id: pid.to_string(),
            order_id: None,
            message_id: cause.message_id.map(str::to_string),
            at: cause.at,
            order_number: None,
            payment_ids: Vec::new(),
            amount: authorized_money(&payment),
            reason: Some(reason),
        }))
    }
}

/// The successful authorization total, in the first authorization's currency.
fn authorized_money(p: &Payment) -> Option<Money> {
    let first = p
        .transactions_in(TransactionType::Authorization, TransactionState::Success)
        .next()?;
    let currency = first.amount.currency_code.clone();
    Some(Money {
        cent_amount: p.successful_amount(TransactionType::Authorization, &currency),
        fraction_digits: first.amount.fraction_digits,
        currency_code: currency,
    })
}
