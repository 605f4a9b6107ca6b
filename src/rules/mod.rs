//! The payment rules, level-based: every relevant message makes the engine re-evaluate the
//! payment or order it concerns from the current view, so a duplicate, late or reordered
//! message leads to the same decisions. What was decided lives in the [`Store`] ledger, so
//! an order is released at most once and a payment cancelled (or captured) at most once.
//!
//! The engine gathers the facts (payments, every order referencing them, the ledger); the
//! decisions themselves are pure functions: [`coverage`] (which order a payment's money
//! counts toward, and how much), [`release::decide`], [`cancel::decide`]. [`explain`] reads
//! the same facts through the same functions and returns them with the decision, in words.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::{debug, error, warn};

use crate::action::{Action, ActionKind, CancelReason, RuleName};
use crate::message::{Body, Message, MessageType, NotificationType, Timestamp};
use crate::model::{Money, Order, OrderState, Payment, TransactionState, TransactionType};
use crate::store::{Claim, LedgerStatus, Store, StoreError, Timer};
use crate::view::{CommerceView, ViewError};

pub mod cancel;
pub mod coverage;
pub mod explain;
pub mod release;

pub use release::{CancelRule, CaptureRule, OrderCancelledRule, ReleaseRule};

/// Every rule's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// release_for_fulfillment.
    pub release: ReleaseRule,
    /// cancel_orphaned_authorization.
    pub cancel: CancelRule,
    /// cancel_on_order_cancelled.
    pub cancel_on_order_cancelled: OrderCancelledRule,
    /// capture_on_shipment.
    pub capture: CaptureRule,
}

impl Rules {
    fn cancels(&self) -> cancel::Enabled {
        cancel::Enabled {
            orphan: self.cancel.enabled,
            order_cancelled: self.cancel_on_order_cancelled.enabled,
        }
    }

    fn any_cancel(&self) -> bool {
        self.cancel.enabled || self.cancel_on_order_cancelled.enabled
    }
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
        (
            MessageType::CheckoutPaymentAuthorized
            | MessageType::CheckoutPaymentCharged
            | MessageType::CheckoutPaymentCancelAuthorizationFailed,
            Body::CheckoutPayment { payment, .. },
        ) => Concern::Payment(&payment.id),
        _ if m.notification == NotificationType::Event => Concern::Nothing,
        _ => match (m.payment_id(), m.order_id()) {
            (Some(p), _) => Concern::Payment(p),
            (_, Some(o)) => Concern::Order(o),
            _ => Concern::Nothing,
        },
    }
}

/// Message types that change nothing any rule reads (custom states, interface ids,
/// interactions, custom fields, returns, the payment state the shop keeps).
const INERT_TYPES: &[&str] = &[
    "PaymentStatusStateTransition",
    "PaymentStatusInterfaceCodeSet",
    "PaymentInteractionAdded",
    "PaymentInterfaceIdSet",
    "PaymentTransactionInterfaceIdSet",
    "OrderPaymentStateChanged",
    "OrderStateTransition",
    "OrderCustomFieldAdded",
    "OrderCustomFieldChanged",
    "OrderCustomFieldRemoved",
    "ReturnInfoAdded",
    "ReturnInfoSet",
    "CheckoutPaymentAuthorizationFailed",
    "CheckoutPaymentAuthorizationCancelled",
    "CheckoutPaymentChargeFailed",
    "CheckoutPaymentRefunded",
    "CheckoutPaymentRefundFailed",
];

/// Whether the change a message announces can make an action due: money appearing
/// (an Authorization or Charge reaching Success), money coming back (a CancelAuthorization,
/// Refund or Chargeback failing — a transaction state change to Success or Failure, whose
/// type the message does not carry), an order appearing, gaining a payment, changing state
/// (Cancelled makes cancels due, anything else may make it eligible), shipping or being
/// edited. A message that can only keep things as they are or take money away (Initial,
/// Pending, a Charge failing, interactions) cannot. Unknown types, change notifications and
/// messages without their payload are assumed to enable.
///
/// Only sound for a view whose reads are current ([`CommerceView::reads_are_current`]):
/// there, the message that announces an enabling change is itself evaluated against a state
/// that already contains the change, whatever order the messages arrive in.
fn can_enable(m: &Message) -> bool {
    use TransactionState::{Failure, Success};
    use TransactionType::{Authorization, CancelAuthorization, Charge};
    let adds_money = |kind: TransactionType, state: TransactionState| {
        matches!(
            (kind, state),
            (Authorization | Charge, Success) | (CancelAuthorization, Failure)
        )
    };
    match &m.body {
        Body::PaymentCreated(p) => p.transactions.iter().any(|t| adds_money(t.kind, t.state)),
        Body::TransactionAdded(t) => adds_money(t.kind, t.state),
        Body::TransactionStateChanged { state, .. } => matches!(state, Success | Failure),
        Body::OrderSubStateChanged(_) | Body::PaymentStatusStateTransition { .. } => false,
        _ => !INERT_TYPES.contains(&m.kind.as_str()),
    }
}

/// Whether the message may report that a cancel failed (then a cancel of ours is checked).
fn reports_failed_cancel(m: &Message) -> bool {
    match &m.body {
        Body::TransactionStateChanged { state, .. } => *state == TransactionState::Failure,
        Body::TransactionAdded(t) => {
            t.kind == TransactionType::CancelAuthorization && t.state == TransactionState::Failure
        }
        _ => m.kind == MessageType::CheckoutPaymentCancelAuthorizationFailed,
    }
}

/// The decision context: who caused it and the clock.
struct Cause<'a> {
    message_id: Option<&'a str>,
    at: Timestamp,
    /// The message may report a failed cancel.
    reports_failed_cancel: bool,
}

/// A payment with every order referencing it, as read for one decision.
struct PaymentRead {
    payment: Payment,
    orders: Vec<Order>,
    /// Where the payment's cancel stands in the ledger (read once per decision).
    cancel: Option<LedgerStatus>,
}

impl PaymentRead {
    /// This worker claimed or executed the payment's cancel.
    fn cancelled_by_us(&self) -> bool {
        matches!(
            self.cancel,
            Some(LedgerStatus::Claimed | LedgerStatus::Done)
        )
    }

    /// The cancel is done or failed for good.
    fn cancel_settled(&self) -> bool {
        matches!(self.cancel, Some(LedgerStatus::Done | LedgerStatus::Failed))
    }
}

/// A payment an order references: the order its money counts toward (with
/// whether that order can be fulfilled) and, when that is the order being evaluated, what it
/// covers. `read` is `None` for a payment not found or the one the caller already read.
struct Share {
    payment_id: String,
    holder: Option<(String, bool)>,
    counted: Option<release::Counted>,
    read: Option<PaymentRead>,
}

/// A payment allocated to the order being evaluated, with what it covers; `read` is `None`
/// for the payment the caller already read (see [`Allocated::read`]).
struct Allocated {
    counted: release::Counted,
    read: Option<PaymentRead>,
}

impl Allocated {
    /// The payment as read, here or by the caller.
    fn read<'a>(&'a self, known: Option<&'a PaymentRead>) -> Option<&'a PaymentRead> {
        self.read
            .as_ref()
            .or(known.filter(|k| k.payment.id == self.counted.payment_id))
    }
}

/// Ledger marker: Checkout reported it could not create the order for this payment. Kept in
/// the ledger (durable, shared by replicas, never forgotten) so that a failure reported while
/// the authorization is still Pending cancels it once it succeeds.
pub fn order_creation_failed_key(payment_id: &str) -> String {
    format!("order-creation-failed:{payment_id}")
}

/// Ledger marker: a cancel of ours was reported failed (counted once).
pub fn cancel_failed_key(payment_id: &str) -> String {
    format!("cancel-failed:{payment_id}")
}

/// Decides actions from messages and timers.
pub struct Engine {
    /// Where current state is read.
    view: Arc<dyn CommerceView>,
    /// The ledger (what was decided) and the timers.
    store: Arc<dyn Store>,
    /// Rule settings.
    rules: Rules,
    /// Cancels of ours that the payment reports failed (each payment once).
    failed_cancels: AtomicU64,
}

impl Engine {
    /// An engine over a view and a store.
    pub fn new(view: Arc<dyn CommerceView>, store: Arc<dyn Store>, rules: Rules) -> Self {
        Self {
            view,
            store,
            rules,
            failed_cancels: AtomicU64::new(0),
        }
    }

    /// The rule settings.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Cancels of ours reported failed since start.
    pub fn failed_cancels(&self) -> u64 {
        self.failed_cancels.load(Ordering::Relaxed)
    }

    /// Whether the message can make no action due, so handling it changes nothing: the view
    /// learns nothing from it (its reads are current) and it announces no enabling change.
    /// The worker acks such a message without asking the store whether it saw it before —
    /// most of a stream is such messages, and for them the lookup was the only work.
    pub fn is_inert(&self, m: &Message) -> bool {
        self.view.reads_are_current() && !can_enable(m)
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
            reports_failed_cancel: reports_failed_cancel(m),
        };
        let mut actions = Vec::new();
        if self.is_inert(m) {
            return Ok(actions);
        }
        match concern(m) {
            Concern::Payment(pid) => {
                self.payment_changed(pid, &cause, &mut actions).await?;
            }
            Concern::Order(oid) => self.order_changed(oid, &cause, &mut actions).await?,
            Concern::OrderCreationFailed(payments) => {
                for pid in payments {
                    if self.rules.cancel.enabled {
                        self.remember(&order_creation_failed_key(pid)).await?;
                    }
                    self.payment_changed(pid, &cause, &mut actions).await?;
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
        let mut actions = Vec::new();
        if !self.rules.any_cancel() {
            return Ok(actions);
        }
        let cause = Cause {
            message_id: None,
            at,
            reports_failed_cancel: false,
        };
        if let Some(read) = self.read_payment(&timer.payment_id, None).await? {
            actions.extend(self.evaluate_cancel(&read, &cause, true).await?);
        }
        Ok(actions)
    }

    /// Reads a payment, every order referencing it (with `order`, the caller's newest copy,
    /// among them) and whether we cancelled it.
    async fn read_payment(
        &self,
        pid: &str,
        order: Option<&Order>,
    ) -> Result<Option<PaymentRead>, EngineError> {
        let Some(payment) = self.view.payment(pid).await? else {
            return Ok(None);
        };
        let mut orders = self.view.orders_for_payment(pid).await?;
        if let Some(o) = order {
            orders = coverage::with_order(orders, o);
        }
        let cancel = self.store.ledger_status(&Action::cancel_key(pid)).await?;
        Ok(Some(PaymentRead {
            payment,
            orders,
            cancel,
        }))
    }

    async fn payment_changed(
        &self,
        pid: &str,
        cause: &Cause<'_>,
        actions: &mut Vec<Action>,
    ) -> Result<(), EngineError> {
        let Some(read) = self.read_payment(pid, None).await? else {
            debug!(payment_id = pid, "payment unknown");
            return Ok(());
        };
        if read.cancelled_by_us() && cause.reports_failed_cancel {
            self.report_failed_cancel(&read).await?;
        }
        if self.rules.any_cancel() {
            self.schedule_grace_check(&read, cause).await?;
            actions.extend(self.evaluate_cancel(&read, cause, false).await?);
        }
        // The payment's money counts toward one order only: nothing else can change.
        if let Some(order) = coverage::allocated(&read.orders) {
            if self.rules.release.enabled {
                actions.extend(self.evaluate_release(order, Some(&read), cause).await?);
            }
            if self.rules.capture.enabled {
                actions.extend(self.evaluate_capture(order, Some(&read), cause).await?);
            }
        }
        Ok(())
    }

    async fn order_changed(
        &self,
        oid: &str,
        cause: &Cause<'_>,
        actions: &mut Vec<Action>,
    ) -> Result<(), EngineError> {
        let Some(order) = self.view.order(oid).await? else {
            return Ok(());
        };
        if self.rules.release.enabled && order.is_fulfillable() {
            actions.extend(self.evaluate_release(&order, None, cause).await?);
        }
        if order.order_state == OrderState::Cancelled
            && self.rules.cancel_on_order_cancelled.enabled
        {
            for pid in unique(order.payment_ids()) {
                if self.settled(&Action::cancel_key(pid)).await? {
                    continue;
                }
                if let Some(read) = self.read_payment(pid, Some(&order)).await? {
                    actions.extend(self.evaluate_cancel(&read, cause, false).await?);
                }
            }
        }
        if self.rules.capture.enabled {
            actions.extend(self.evaluate_capture(&order, None, cause).await?);
        }
        Ok(())
    }

    /// A payment with money reserved gets its grace-period check (once, ever).
    async fn schedule_grace_check(
        &self,
        read: &PaymentRead,
        cause: &Cause<'_>,
    ) -> Result<(), EngineError> {
        if !self.rules.cancel.enabled || authorized_now(read) <= 0 {
            return Ok(());
        }
        let grace = chrono::Duration::from_std(self.rules.cancel.grace_period)
            .unwrap_or(chrono::Duration::MAX);
        let due = cause.at.checked_add_signed(grace).unwrap_or(cause.at);
        let timer = Timer {
            payment_id: read.payment.id.clone(),
            due,
        };
        if self.store.schedule(timer).await? {
            debug!(payment_id = %read.payment.id, due = %due, "grace period check scheduled");
        }
        Ok(())
    }

    /// Records a marker in the ledger; says whether it is new.
    async fn remember(&self, key: &str) -> Result<bool, StoreError> {
        match self.store.claim(key).await? {
            Claim::Acquired => {
                self.store.settle(key, LedgerStatus::Done).await?;
                Ok(true)
            }
            Claim::Exists(_) => Ok(false),
        }
    }

    async fn report_failed_cancel(&self, read: &PaymentRead) -> Result<(), EngineError> {
        let p = &read.payment;
        if !p.cancel_authorization_failed() {
            return Ok(());
        }
        if self.remember(&cancel_failed_key(&p.id)).await? {
            self.failed_cancels.fetch_add(1, Ordering::Relaxed);
            let currency = p.currency().unwrap_or_default();
            error!(
                payment_id = %p.id,
                authorized = p.authorized(currency),
                currency,
                "our cancel of this authorization failed: the money is still reserved (an order \
                 referencing the payment is released; otherwise cancel it at the PSP)"
            );
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

    /// Every payment `order` references (once each, in order), with the order its money counts
    /// toward and, when that is `order`, what it covers. `known` is a payment just read (not
    /// read again).
    async fn shares(
        &self,
        order: &Order,
        known: Option<&PaymentRead>,
    ) -> Result<Vec<Share>, EngineError> {
        let currency = order.gross_total().currency_code.as_str();
        let mut out = Vec::new();
        for pid in unique(order.payment_ids()) {
            let read = match known {
                Some(k) if k.payment.id == pid => None,
                _ => match self.read_payment(pid, Some(order)).await? {
                    Some(r) => Some(r),
                    None => {
                        out.push(Share {
                            payment_id: pid.to_string(),
                            holder: None,
                            counted: None,
                            read: None,
                        });
                        continue;
                    }
                },
            };
            let Some(r) = read.as_ref().or(known) else {
                continue;
            };
            let holder = coverage::allocated(&r.orders);
            let counted = holder
                .filter(|h| h.id == order.id)
                .map(|_| release::Counted {
                    payment_id: pid.to_string(),
                    covered: coverage::covered(&r.payment, currency, r.cancelled_by_us()),
                });
            out.push(Share {
                payment_id: pid.to_string(),
                holder: holder.map(|h| (h.id.clone(), h.is_fulfillable())),
                counted,
                read,
            });
        }
        Ok(out)
    }

    /// The payments allocated to `order`, with what each covers. `known` is a payment just
    /// read (not read again).
    async fn allocated_payments(
        &self,
        order: &Order,
        known: Option<&PaymentRead>,
    ) -> Result<Vec<Allocated>, EngineError> {
        let mut out = Vec::new();
        for share in self.shares(order, known).await? {
            match share.counted {
                Some(counted) => out.push(Allocated {
                    counted,
                    read: share.read,
                }),
                None => {
                    if let Some((holder, true)) = &share.holder {
                        warn!(
                            payment_id = %share.payment_id,
                            order_id = %order.id,
                            counts_toward = %holder,
                            "payment referenced by two open orders: its money counts toward the earlier one only"
                        );
                    }
                }
            }
        }
        Ok(out)
    }

    async fn evaluate_release(
        &self,
        order: &Order,
        known: Option<&PaymentRead>,
        cause: &Cause<'_>,
    ) -> Result<Option<Action>, EngineError> {
        let key = Action::release_key(&order.id);
        if !order.is_fulfillable() || self.settled(&key).await? {
            return Ok(None);
        }
        let allocated = self.allocated_payments(order, known).await?;
        let counted: Vec<release::Counted> = allocated.iter().map(|a| a.counted.clone()).collect();
        let trigger = known.map(|k| k.payment.id.as_str());
        let Ok(r) = release::check(&self.rules.release, order, &counted, trigger) else {
            self.warn_if_settled_short(order, &allocated, known);
            return Ok(None);
        };
        Ok(Some(Action {
            action: ActionKind::ReleaseOrder,
            rule: RuleName::ReleaseForFulfillment,
            key,
            payment_id: r.payment_id,
            order_id: Some(order.id.clone()),
            message_id: cause.message_id.map(str::to_string),
            at: cause.at,
            order_number: order.order_number.clone(),
            payment_ids: r.payment_ids,
            amount: Some(order.gross_total().clone()),
            reason: None,
        }))
    }

    /// An order whose allocated payments have all settled (nothing Initial or Pending) and
    /// still do not cover it will not be released by itself: the merchant should hear of it.
    fn warn_if_settled_short(
        &self,
        order: &Order,
        allocated: &[Allocated],
        known: Option<&PaymentRead>,
    ) {
        if allocated.is_empty() {
            return;
        }
        let payments = allocated.iter().filter_map(|a| a.read(known));
        let unsettled = payments.clone().any(|r| {
            r.payment.transactions.iter().any(|t| {
                matches!(
                    t.state,
                    TransactionState::Initial | TransactionState::Pending
                ) && matches!(
                    t.kind,
                    TransactionType::Authorization | TransactionType::Charge
                )
            })
        });
        if unsettled {
            return;
        }
        let covered = release::total_covered(allocated.iter().map(|a| &a.counted));
        let total = order.gross_total();
        if covered < total.cent_amount {
            let ids: Vec<&str> = payments.map(|r| r.payment.id.as_str()).collect();
            warn!(
                order_id = %order.id,
                payment_ids = ?ids,
                covered,
                total = total.cent_amount,
                currency = %total.currency_code,
                "order not covered after its payments settled: not released"
            );
        }
    }

    async fn evaluate_cancel(
        &self,
        read: &PaymentRead,
        cause: &Cause<'_>,
        grace_expired: bool,
    ) -> Result<Option<Action>, EngineError> {
        let pid = read.payment.id.as_str();
        if read.cancel_settled() {
            return Ok(None);
        }
        let authorized = authorized_now(read);
        let order_creation_failed = self.order_creation_failed(read, authorized).await?;
        let reason = match self.cancel_check(read, authorized, order_creation_failed, grace_expired)
        {
            Ok(reason) => reason,
            Err(why) => {
                debug!(payment_id = pid, why, "cancel check: nothing to do");
                return Ok(None);
            }
        };
        let order_id = (reason == CancelReason::OrderCancelled)
            .then(|| read.orders.iter().min_by_key(|o| o.allocation_key()))
            .flatten()
            .map(|o| o.id.clone());
        Ok(Some(Action {
            action: ActionKind::CancelPayment,
            rule: reason.rule(),
            key: Action::cancel_key(pid),
            payment_id: pid.to_string(),
            order_id,
            message_id: cause.message_id.map(str::to_string),
            at: cause.at,
            order_number: None,
            payment_ids: Vec::new(),
            amount: authorized_money(&read.payment, authorized),
            reason: Some(reason),
        }))
    }

    /// Whether Checkout's order-creation failure counts for the payment. The marker is read
    /// only when it can matter: money reserved and no order at all.
    async fn order_creation_failed(
        &self,
        read: &PaymentRead,
        authorized: i64,
    ) -> Result<bool, EngineError> {
        Ok(self.rules.cancel.enabled
            && authorized > 0
            && read.orders.is_empty()
            && self
                .settled(&order_creation_failed_key(&read.payment.id))
                .await?)
    }

    /// The cancel rules' answer for a payment as read: why it is cancelled, or why not.
    fn cancel_check(
        &self,
        read: &PaymentRead,
        authorized: i64,
        order_creation_failed: bool,
        grace_expired: bool,
    ) -> Result<CancelReason, &'static str> {
        let facts = cancel::CancelFacts {
            payment: &read.payment,
            orders: &read.orders,
            authorized,
            order_creation_failed,
            grace_expired,
        };
        cancel::decide(self.rules.cancels(), &facts)
    }

    /// Whether capture_on_shipment applies to the order now, or why not.
    fn capture_due(&self, order: &Order) -> Result<(), &'static str> {
        if !self.rules.capture.enabled {
            Err("capture_on_shipment is off")
        } else if order.order_state == OrderState::Cancelled {
            Err("the order is cancelled")
        } else if !self.rules.capture.is_due(order) {
            Err("the order has not reached the shipment state that triggers the capture")
        } else {
            Ok(())
        }
    }

    async fn evaluate_capture(
        &self,
        order: &Order,
        known: Option<&PaymentRead>,
        cause: &Cause<'_>,
    ) -> Result<Vec<Action>, EngineError> {
        if self.capture_due(order).is_err() {
            return Ok(Vec::new());
        }
        let currency = order.gross_total().currency_code.as_str();
        let mut actions = Vec::new();
        for allocated in self.allocated_payments(order, known).await? {
            let counted = &allocated.counted;
            let key = Action::capture_key(&counted.payment_id);
            let Some(r) = allocated.read(known) else {
                continue;
            };
            let amount = coverage::capturable(&r.payment, currency, r.cancelled_by_us());
            if amount <= 0 || self.settled(&key).await? {
                continue;
            }
            actions.push(Action {
                action: ActionKind::CapturePayment,
                rule: RuleName::CaptureOnShipment,
                key,
                payment_id: counted.payment_id.clone(),
                order_id: Some(order.id.clone()),
                message_id: cause.message_id.map(str::to_string),
                at: cause.at,
                order_number: order.order_number.clone(),
                payment_ids: Vec::new(),
                amount: Some(Money {
                    currency_code: currency.to_string(),
                    cent_amount: amount,
                    fraction_digits: order.gross_total().fraction_digits,
                }),
                reason: None,
            });
        }
        Ok(actions)
    }
}

/// authorized(P) in the payment's own currency, with our own cancel taken into account.
fn authorized_now(read: &PaymentRead) -> i64 {
    read.payment.currency().map_or(0, |c| {
        coverage::effective_authorized(&read.payment, c, read.cancelled_by_us())
    })
}

/// The authorized amount as money, in the payment's currency.
fn authorized_money(p: &Payment, authorized: i64) -> Option<Money> {
    let currency = p.currency()?;
    let digits = p
        .transactions
        .iter()
        .find(|t| t.kind == TransactionType::Authorization && t.amount.currency_code == currency)
        .and_then(|t| t.amount.fraction_digits);
    Some(Money {
        currency_code: currency.to_string(),
        cent_amount: authorized,
        fraction_digits: digits,
    })
}

/// Ids without repeats, in first-seen order (an order may list a payment twice).
fn unique<'a>(ids: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for id in ids {
        if !out.contains(&id) {
            out.push(id);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

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
        let enabling = [
            fixture("PaymentTransactionStateChanged"), // → Success
            edited("PaymentTransactionStateChanged", |v| {
                v["state"] = "Failure".into() // a CancelAuthorization failing gives money back
            }),
            edited("PaymentTransactionAdded", |v| {
                v["transaction"]["type"] = "Authorization".into();
                v["transaction"]["state"] = "Success".into();
            }),
            edited("PaymentTransactionAdded", |v| {
                v["transaction"]["state"] = "Success".into(); // a Charge: money received
            }),
            edited("PaymentTransactionAdded", |v| {
                v["transaction"]["type"] = "CancelAuthorization".into();
                v["transaction"]["state"] = "Failure".into();
            }),
            edited("PaymentCreated", |v| {
                v["payment"]["transactions"][0]["state"] = "Success".into();
            }),
            fixture("OrderCreated"),
            fixture("OrderImported"),
            fixture("OrderPaymentAdded"),
            fixture("OrderStateChanged"), // → Confirmed: may leave Cancelled
            edited("OrderStateChanged", |v| {
                v["orderState"] = "Cancelled".into() // cancels become due
            }),
            fixture("OrderShipmentStateChanged"), // eligibility, capture
            fixture("CheckoutPaymentAuthorized"),
            fixture("CheckoutOrderCreationFailed"),
            fixture("PayloadNotIncluded-PaymentTransactionStateChanged"),
            fixture("ResourceCreated-payment"),
            fixture("ResourceUpdated-order"),
        ];
        for m in &enabling {
            assert!(can_enable(m), "{} should enable", m.kind);
        }
        let inert = [
            fixture("PaymentCreated"),          // Authorization Pending
            fixture("PaymentTransactionAdded"), // Charge Pending
            edited("PaymentTransactionStateChanged", |v| {
                v["state"] = "Pending".into()
            }),
            edited("PaymentTransactionAdded", |v| {
                v["transaction"]["type"] = "CancelAuthorization".into();
                v["transaction"]["state"] = "Pending".into(); // takes money away
            }),
            fixture("OrderPaymentStateChanged"),
            fixture("Other-PaymentInteractionAdded"),
            fixture("PaymentStatusStateTransition"),
            fixture("CheckoutPaymentAuthorizationFailed"),
            fixture("CheckoutPaymentAuthorizationCancelled"),
        ];
        for m in &inert {
            assert!(!can_enable(m), "{} should not enable", m.kind);
        }
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
        async fn orders_for_payment(&self, id: &str) -> Result<Vec<Order>, ViewError> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.inner.orders_for_payment(id).await
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
