//! The payment rules, level-based: every relevant message makes the engine re-evaluate the
//! payment or order it concerns from the current view, so a duplicate, late or reordered
//! message leads to the same decisions. What was decided lives in the [`Store`] ledger, so
//! an order is released at most once and a payment cancelled at most once.

use std::sync::Arc;

use tracing::debug;

use crate::action::{Action, ActionKind, CancelReason, RuleName};
use crate::message::{Body, Message, MessageType, NotificationType, Timestamp};
use crate::model::{Money, Order, OrderState, Payment, TransactionState, TransactionType};
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

/// Message types that change nothing any rule reads (custom states, interface ids,
/// interactions, custom fields, returns).
const INERT_TYPES: &[&str] = &[
    "PaymentStatusStateTransition",
    "PaymentStatusInterfaceCodeSet",
    "PaymentInteractionAdded",
    "PaymentInterfaceIdSet",
    "PaymentTransactionInterfaceIdSet",
    "OrderPaymentStateChanged",
    "OrderShipmentStateChanged",
    "OrderStateTransition",
    "OrderCustomFieldAdded",
    "OrderCustomFieldChanged",
    "OrderCustomFieldRemoved",
    "ReturnInfoAdded",
    "ReturnInfoSet",
];

/// Whether the change a message announces can make an action due: a transaction reaching
/// Success, an order appearing or gaining a payment, a state leaving Cancelled. A message
/// that can only keep things as they are, or block (Pending, Failure, a cancelled order,
/// interactions), cannot. Unknown types, change notifications and messages without their
/// payload are assumed to enable.
///
/// Only sound for a view whose reads are current ([`CommerceView::reads_are_current`]):
/// there, the message that announces an enabling change is itself evaluated against a state
/// that already contains the change, whatever order the messages arrive in.
fn can_enable(m: &Message, rules: &Rules) -> bool {
    let enabling = |kind: TransactionType| {
        kind == TransactionType::Authorization
            || (rules.release.also_on_charge && kind == TransactionType::Charge)
    };
    match &m.body {
        Body::PaymentCreated(p) => p
            .transactions
            .iter()
            .any(|t| t.state == TransactionState::Success && enabling(t.kind)),
        Body::TransactionAdded(t) => t.state == TransactionState::Success && enabling(t.kind),
        Body::TransactionStateChanged { state, .. } => *state == TransactionState::Success,
        Body::OrderStateChanged(state) => *state != OrderState::Cancelled,
        Body::OrderSubStateChanged(_) | Body::PaymentStatusStateTransition { .. } => false,
        _ => !INERT_TYPES.contains(&m.kind.as_str()),
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

    /// Whether the message can make no action due, so handling it changes nothing: the view
    /// learns nothing from it (its reads are current) and it announces no enabling change.
    /// The worker acks such a message without asking the store whether it saw it before —
    /// most of a stream is such messages, and for them the lookup was the only work.
    pub fn is_inert(&self, m: &Message) -> bool {
        self.view.reads_are_current() && !can_enable(m, &self.rules)
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
        if self.is_inert(m) {
            return Ok(actions);
        }
        match concern(m) {
            Concern::Payment(pid) => self.payment_changed(pid, &cause, &mut actions).await?,
            Concern::Order(oid) => {
                // A settled release needs no read of the order (our own update echoes back).
                if self.rules.release.enabled
                    && !self.settled(&Action::release_key(oid)).await?
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
            actions.extend(self.evaluate_release(&order, Some(&payment), cause).await?);
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

    /// `trigger` is the payment whose change caused the check, as just read (not read again).
    async fn evaluate_release(
        &self,
        order: &Order,
        trigger: Option<&Payment>,
        cause: &Cause<'_>,
    ) -> Result<Option<Action>, EngineError> {
        let key = Action::release_key(&order.id);
        if self.settled(&key).await? {
            return Ok(None);
        }
        let mut payments = Vec::new();
        let mut cancelled = Vec::new();
        for pid in order.payment_ids() {
            let read = match trigger {
                Some(t) if t.id == pid => Some(t.clone()),
                _ => self.view.payment(pid).await?,
            };
            if let Some(p) = read {
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
            trigger.map(|t| t.id.as_str()),
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::message::decode;
    use crate::store::MemoryStore;
    use crate::view::StreamView;

    fn fixture(name: &str) -> Message {
        let path = format!(
            "{}/fixtures/messages/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        decode(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Edits a fixture's JSON before decoding it.
    fn edited(name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Message {
        let path = format!(
            "{}/fixtures/messages/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).expect("fixture is JSON");
        edit(&mut v);
        decode(&serde_json::to_vec(&v).expect("serializes")).expect("decodes")
    }

    #[test]
    fn only_changes_that_can_make_an_action_due_enable() {
        let rules = Rules::default();
        let enabling = [
            fixture("PaymentTransactionStateChanged"), // → Success
            edited("PaymentTransactionAdded", |v| {
                v["transaction"]["type"] = "Authorization".into();
                v["transaction"]["state"] = "Success".into();
            }),
            edited("PaymentCreated", |v| {
                v["payment"]["transactions"][0]["state"] = "Success".into();
            }),
            fixture("OrderCreated"),
            fixture("OrderImported"),
            fixture("OrderPaymentAdded"),
            fixture("OrderStateChanged"), // → Confirmed: may leave Cancelled
            fixture("CheckoutPaymentAuthorized"),
            fixture("CheckoutOrderCreationFailed"),
            fixture("PayloadNotIncluded-PaymentTransactionStateChanged"),
            fixture("ResourceCreated-payment"),
            fixture("ResourceUpdated-order"),
        ];
        for m in &enabling {
            assert!(can_enable(m, &rules), "{} should enable", m.kind);
        }
        let inert = [
            fixture("PaymentCreated"),          // Authorization Pending
            fixture("PaymentTransactionAdded"), // Charge Pending
            edited("PaymentTransactionStateChanged", |v| {
                v["state"] = "Failure".into()
            }),
            edited("PaymentTransactionAdded", |v| {
                v["transaction"]["state"] = "Success".into(); // a Charge, not counted
            }),
            edited("OrderStateChanged", |v| {
                v["orderState"] = "Cancelled".into()
            }),
            fixture("OrderPaymentStateChanged"),
            fixture("OrderShipmentStateChanged"),
            fixture("Other-PaymentInteractionAdded"),
            fixture("PaymentStatusStateTransition"),
        ];
        for m in &inert {
            assert!(!can_enable(m, &rules), "{} should not enable", m.kind);
        }
        // With charges counted, a successful Charge enables.
        let mut on_charge = Rules::default();
        on_charge.release.also_on_charge = true;
        assert!(can_enable(&inert[3], &on_charge));
    }

    /// A [`StreamView`] that claims to be current and counts its reads.
    struct CountingView {
        inner: StreamView,
        reads: AtomicUsize,
        current: bool,
    }

    #[async_trait::async_trait]
    impl CommerceView for CountingView {
        async fn payment(&self, id: &str) -> Result<Option<Payment>, ViewError> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.inner.payment(id).await
        }
        async fn order(&self, id: &str) -> Result<Option<Order>, ViewError> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.inner.order(id).await
        }
        async fn order_for_payment(&self, id: &str) -> Result<Option<Order>, ViewError> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.inner.order_for_payment(id).await
        }
        fn observe(&self, m: &Message) {
            self.inner.observe(m);
        }
        fn reads_are_current(&self) -> bool {
            self.current
        }
    }

    #[tokio::test]
    async fn a_current_view_is_not_read_for_messages_that_cannot_enable() {
        let inert = [
            fixture("PaymentCreated"),
            fixture("Other-PaymentInteractionAdded"),
            fixture("OrderPaymentStateChanged"),
        ];
        for current in [true, false] {
            let view = Arc::new(CountingView {
                inner: StreamView::new(),
                reads: AtomicUsize::new(0),
                current,
            });
            let engine = Engine::new(view.clone(), Arc::new(MemoryStore::new()), Rules::default());
            for m in &inert {
                let actions = engine
                    .on_message(m, chrono::Utc::now())
                    .await
                    .expect("decides");
                assert!(actions.is_empty());
            }
            let reads = view.reads.load(Ordering::Relaxed);
            if current {
                assert_eq!(reads, 0, "a current view needs no reads for inert messages");
            } else {
                assert!(
                    reads >= inert.len(),
                    "a stream view evaluates every message"
                );
            }
        }
    }
}
