//! The payment rules, level-based: every relevant message makes the engine re-evaluate the
//! payment or order it concerns from the current view, so a duplicate, late or reordered
//! message leads to the same decisions. What was decided lives in the [`Store`] ledger, so
//! an order is released at most once and a payment cancelled (or captured) at most once.
//!
//! The engine gathers the facts (payments, every order referencing them, the ledger); the
//! decisions themselves are pure functions: [`coverage`] (which order a payment's money
//! counts toward, and how much), [`release::decide`], [`cancel::decide`]. [`explain`] reads
//! the same facts through the same functions and returns them with the decision, in words.
//!
//! Over 600 lines on purpose: the engine's one `impl`, whose reads, ledger markers and
//! once-only reports share its private state; the evaluations themselves are in `evaluate.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::{debug, warn};

use crate::action::{Action, ActionKind, Reason, RuleName};
use crate::message::{Body, Message, MessageType, NotificationType, Timestamp};
use crate::model::{Money, Order, OrderState, Payment, TransactionState, TransactionType};
use crate::store::{Claim, Decided, LedgerStatus, Store, StoreError, Timer};
use crate::telemetry::{
    ChargedOnCancelledOrders, MoneyInFlightTooLong, OrderCreationFailureUnconfirmed,
    PaymentOperation, PaymentOperationFailed,
};
use crate::view::{CartRead, CommerceView, ViewError};

pub mod cancel;
mod capture;
mod concerns;
pub mod coverage;
mod evaluate;
mod evaluate_returns;
pub mod explain;
pub mod refund;
pub mod release;
pub mod returns;

pub use cancel::{CancelRule, OrderCancelledRule};
pub use capture::CaptureRule;
pub use refund::{RefundOnOrderCancelledRule, RefundOrphanedRule};
pub use release::ReleaseRule;
pub use returns::{ReturnOn, ReturnRule};

use concerns::{Concern, can_enable, concern, reports_failure};
use evaluate::{authorized_for_cancel, refundable};

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
    /// refund_orphaned_charge.
    pub refund_orphaned: RefundOrphanedRule,
    /// refund_on_order_cancelled.
    pub refund_on_order_cancelled: RefundOnOrderCancelledRule,
    /// refund_on_return.
    pub refund_on_return: ReturnRule,
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

    fn refunds(&self) -> refund::Enabled {
        refund::Enabled {
            orphan: self.refund_orphaned.enabled,
            order_cancelled: self.refund_on_order_cancelled.enabled,
        }
    }

    fn any_refund(&self) -> bool {
        self.refund_orphaned.enabled || self.refund_on_order_cancelled.enabled
    }

    /// A rule acts on a payment's grace-period check: an orphan's cancel or refund.
    fn any_grace_check(&self) -> bool {
        self.any_cancel() || self.any_refund()
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
    /// A marker is claimed but not recorded: another task is recording it now, or a worker
    /// stopped between the two (its claim is taken over once the lease passes).
    #[error("ledger marker {key} is claimed but not recorded yet")]
    MarkerClaimed {
        /// The marker's ledger key.
        key: String,
    },
    /// A return refund's ledger entry does not say how much it refunded: what the order's
    /// lines are still due cannot be known, so nothing more is refunded for it.
    #[error(
        "ledger entry {key} does not record the amount it refunded: the order's return refunds stop until someone looks"
    )]
    UnreadableRefund {
        /// The ledger key.
        key: String,
    },
}

impl EngineError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            EngineError::View(e) => e.is_retryable(),
            EngineError::Store(_) | EngineError::MarkerClaimed { .. } => true,
            EngineError::UnreadableRefund { .. } => false,
        }
    }
}

/// The decision context: who caused it and the clock.
struct Cause<'a> {
    message_id: Option<&'a str>,
    at: Timestamp,
    /// The message may report a failed cancel, capture or refund.
    reports_failure: bool,
}

/// A payment with every order referencing it, as read for one decision.
struct PaymentRead {
    payment: Payment,
    orders: Vec<Order>,
    /// Where the payment's cancel stands in the ledger (read once per decision).
    cancel: Option<LedgerStatus>,
    /// Where the payment's refund (`refund:{payment_id}`) stands; read only for a payment with
    /// a Charge in Success (none other has money to refund or to count as refunded).
    refund: Option<LedgerStatus>,
}

impl PaymentRead {
    /// This worker claimed or executed the payment's cancel.
    fn cancelled_by_us(&self) -> bool {
        matches!(
            self.cancel,
            Some(LedgerStatus::Claimed | LedgerStatus::Done)
        )
    }

    /// This worker's cancel of the payment is done.
    fn cancel_done(&self) -> bool {
        self.cancel == Some(LedgerStatus::Done)
    }

    /// The cancel is done or failed for good.
    fn cancel_settled(&self) -> bool {
        matches!(self.cancel, Some(LedgerStatus::Done | LedgerStatus::Failed))
    }

    /// What this worker gives back of the payment, as coverage counts it.
    fn ours(&self) -> coverage::Ours {
        coverage::Ours {
            cancelled: self.cancelled_by_us(),
            refunded: matches!(
                self.refund,
                Some(LedgerStatus::Claimed | LedgerStatus::Done)
            ),
        }
    }

    /// The refund is done or failed for good.
    fn refund_settled(&self) -> bool {
        matches!(self.refund, Some(LedgerStatus::Done | LedgerStatus::Failed))
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

/// Ledger marker: a release's first effect (the order update) took place and its webhook did
/// not go yet. The release is carried out on a retry even though the order we updated may no
/// longer look fulfillable.
pub fn release_started_key(order_id: &str) -> String {
    format!("release-started:{order_id}")
}

/// Ledger marker: the grace check stopped rechecking a payment whose money stayed in flight, and
/// reported it (counted once).
pub fn money_in_flight_key(payment_id: &str) -> String {
    format!("money-in-flight:{payment_id}")
}

/// How long a grace check keeps looking at money in flight before it reports the payment and
/// stops. A Charge or Authorization normally leaves Initial/Pending within minutes (the PSP's
/// notification); a day rides out a slow PSP, a delayed notification or an outage of ours
/// without a false report, and still leaves days before a card authorization expires (about 7)
/// for someone to act on the report. Past it, rechecking every grace period only costs reads.
pub const IN_FLIGHT_REPORT_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// How many times a grace check is made again for money in flight: a day's worth at one check
/// per grace period (144 at the default 10 minutes), at least one.
pub fn recheck_cap(grace: std::time::Duration) -> u32 {
    let grace = grace.as_secs().max(1);
    u32::try_from(IN_FLIGHT_REPORT_AFTER.as_secs().div_ceil(grace))
        .unwrap_or(u32::MAX)
        .max(1)
}

/// Ledger marker: a cancel of ours was reported failed (counted once).
pub fn cancel_failed_key(payment_id: &str) -> String {
    format!("cancel-failed:{payment_id}")
}

/// The ledger marker of a refund of ours that the payment reports failed.
pub fn refund_failed_key(payment_id: &str) -> String {
    format!("refund-failed:{payment_id}")
}

/// Ledger marker: charged money on a payment held only by cancelled orders was reported while
/// refund_on_order_cancelled is off (counted once).
pub fn charged_on_cancelled_key(payment_id: &str) -> String {
    format!("charged-on-cancelled:{payment_id}")
}

/// The ledger marker of a capture of ours that the payment reports failed.
pub fn capture_failed_key(payment_id: &str) -> String {
    format!("capture-failed:{payment_id}")
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
    /// Captures of ours that the payment reports failed (each payment once): shipped goods
    /// whose money was not taken.
    failed_captures: AtomicU64,
    /// Payments whose grace check stopped rechecking money in flight (each payment once).
    stuck_in_flight: AtomicU64,
    /// Refunds of ours that the payment reports failed (each payment once): money we meant
    /// to give back that the customer did not get.
    failed_refunds: AtomicU64,
}

impl Engine {
    /// An engine over a view and a store.
    pub fn new(view: Arc<dyn CommerceView>, store: Arc<dyn Store>, rules: Rules) -> Self {
        Self {
            view,
            store,
            rules,
            failed_cancels: AtomicU64::new(0),
            failed_captures: AtomicU64::new(0),
            stuck_in_flight: AtomicU64::new(0),
            failed_refunds: AtomicU64::new(0),
        }
    }

    /// Refunds of ours reported failed since start.
    pub fn failed_refunds(&self) -> u64 {
        self.failed_refunds.load(Ordering::Relaxed)
    }

    /// Captures of ours reported failed since start.
    pub fn failed_captures(&self) -> u64 {
        self.failed_captures.load(Ordering::Relaxed)
    }

    /// Payments reported since start for money in flight past [`IN_FLIGHT_REPORT_AFTER`].
    pub fn stuck_in_flight(&self) -> u64 {
        self.stuck_in_flight.load(Ordering::Relaxed)
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
            reports_failure: reports_failure(m),
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
            Concern::OrderCreationFailed { cart, payments } => {
                for pid in payments {
                    let acts = self.rules.cancel.enabled || self.rules.refund_orphaned.enabled;
                    if acts && self.cart_confirms_failure(cart, pid).await? {
                        self.remember(&order_creation_failed_key(pid), cause.message_id)
                            .await?;
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
    pub async fn on_timer(
        &self,
        timer: &Timer,
        at: Timestamp,
    ) -> Result<TimerDecision, EngineError> {
        let mut decision = TimerDecision::default();
        if !self.rules.any_grace_check() {
            return Ok(decision);
        }
        let cause = Cause {
            message_id: None,
            at,
            reports_failure: false,
        };
        if let Some(read) = self.read_payment(&timer.payment_id, None).await? {
            decision
                .actions
                .extend(self.evaluate_cancel(&read, &cause, true).await?);
            decision
                .actions
                .extend(self.evaluate_refund(&read, &cause, true).await?);
            // The order a payment's money counts toward is looked at again too: the query
            // that finds it is eventually consistent, so a Success evaluated right after the
            // order was created may not have seen it (domain §3.3).
            if self.rules.release.enabled
                && let Some(order) = coverage::allocated(&read.orders)
            {
                decision
                    .actions
                    .extend(self.evaluate_release(order, Some(&read), &cause).await?);
            }
            let orphan_rules = self.rules.cancel.enabled || self.rules.refund_orphaned.enabled;
            if decision.actions.is_empty() && orphan_rules && money_in_flight(&read) {
                decision.recheck_at = self.recheck_in_flight(&read, timer, at).await?;
            }
        }
        Ok(decision)
    }

    /// A Charge or Authorization still Initial or Pending, no order: the check is made again a
    /// grace period later, so an authorization whose capture failed meanwhile does not stay
    /// blocked (the check runs once per payment otherwise) — up to [`recheck_cap`] times. Then
    /// it stops and reports the payment (once, through a ledger marker): its money has been in
    /// flight for about [`IN_FLIGHT_REPORT_AFTER`], and payrules will not cancel it by itself.
    async fn recheck_in_flight(
        &self,
        read: &PaymentRead,
        timer: &Timer,
        at: Timestamp,
    ) -> Result<Option<Timestamp>, EngineError> {
        let grace = self.rules.cancel.grace_period;
        if timer.rechecks < recheck_cap(grace) {
            let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
            return Ok(at.checked_add_signed(grace));
        }
        let p = &read.payment;
        if self.remember(&money_in_flight_key(&p.id), None).await? {
            self.stuck_in_flight.fetch_add(1, Ordering::Relaxed);
            let currency = p.currency().unwrap_or_default();
            MoneyInFlightTooLong {
                payment_id: &p.id,
                pending: pending_kind(p),
                // Each check ran at least a grace period after the one before, and the first
                // found the money in flight already: a lower bound.
                in_flight_for: grace.saturating_mul(timer.rechecks),
                checks: timer.rechecks.saturating_add(1),
                authorized: authorized_for_cancel(read),
                currency,
            }
            .emit();
        }
        Ok(None)
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
        let refund = if payment.has_successful_charge() {
            self.store.ledger_status(&Action::refund_key(pid)).await?
        } else {
            None
        };
        Ok(Some(PaymentRead {
            payment,
            orders,
            cancel,
            refund,
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
        if read.cancelled_by_us() && cause.reports_failure {
            self.report_failed_cancel(&read, cause.message_id).await?;
        }
        if self.rules.capture.enabled && cause.reports_failure {
            self.report_failed_capture(&read, cause.message_id).await?;
        }
        if cause.reports_failure && (read.refund_settled() || self.returns_refunded(&read).await?) {
            self.report_failed_refund(&read, cause.message_id).await?;
        }
        self.schedule_grace_check(&read, cause).await?;
        if self.rules.any_cancel() {
            actions.extend(self.evaluate_cancel(&read, cause, false).await?);
        }
        actions.extend(self.evaluate_refund(&read, cause, false).await?);
        // The payment's money counts toward one order only: nothing else can change.
        if let Some(order) = coverage::allocated(&read.orders) {
            if self.rules.release.enabled {
                actions.extend(self.evaluate_release(order, Some(&read), cause).await?);
            }
            if self.rules.capture.enabled {
                actions.extend(self.evaluate_capture(order, Some(&read), cause).await?);
            }
            actions.extend(self.evaluate_returns(order, Some(&read), cause).await?);
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
        if self.rules.release.enabled {
            actions.extend(self.evaluate_release(&order, None, cause).await?);
        }
        if order.order_state == OrderState::Cancelled {
            self.order_cancelled(&order, cause, actions).await?;
        }
        if self.rules.capture.enabled {
            actions.extend(self.evaluate_capture(&order, None, cause).await?);
        }
        actions.extend(self.evaluate_returns(&order, None, cause).await?);
        Ok(())
    }

    /// The payments of a cancelled order: an authorization to cancel, charged money to refund
    /// (or, with refund_on_order_cancelled off, to report).
    async fn order_cancelled(
        &self,
        order: &Order,
        cause: &Cause<'_>,
        actions: &mut Vec<Action>,
    ) -> Result<(), EngineError> {
        for pid in unique(order.payment_ids()) {
            let cancel = self.store.ledger_status(&Action::cancel_key(pid)).await?;
            let cancel_settled = matches!(cancel, Some(LedgerStatus::Done | LedgerStatus::Failed));
            let cancel_open = self.rules.cancel_on_order_cancelled.enabled && !cancel_settled;
            // A payment whose authorization we cancelled holds no charged money (a cancel is
            // never made while a Charge is live): not read again for a refund.
            let refund_open = cancel != Some(LedgerStatus::Done)
                && !self.settled(&Action::refund_key(pid)).await?;
            if !cancel_open && !refund_open {
                continue;
            }
            if let Some(read) = self.read_payment(pid, Some(order)).await? {
                if cancel_open {
                    actions.extend(self.evaluate_cancel(&read, cause, false).await?);
                }
                actions.extend(self.evaluate_refund(&read, cause, false).await?);
            }
        }
        Ok(())
    }

    /// A payment with money reserved (for the cancel rule) or charged (for the refund rule)
    /// gets its grace-period check (once, ever).
    async fn schedule_grace_check(
        &self,
        read: &PaymentRead,
        cause: &Cause<'_>,
    ) -> Result<(), EngineError> {
        let reserved = self.rules.cancel.enabled && authorized_for_cancel(read) > 0;
        let charged = self.rules.refund_orphaned.enabled && refundable(read) > 0;
        if !reserved && !charged {
            return Ok(());
        }
        let grace = chrono::Duration::from_std(self.rules.cancel.grace_period)
            .unwrap_or(chrono::Duration::MAX);
        let due = cause.at.checked_add_signed(grace).unwrap_or(cause.at);
        let timer = Timer {
            payment_id: read.payment.id.clone(),
            due,
            rechecks: 0,
        };
        if self.store.schedule(timer).await? {
            debug!(payment_id = %read.payment.id, due = %due, "grace period check scheduled");
        }
        Ok(())
    }

    /// Records a marker in the ledger; says whether it is new. A marker claimed but not
    /// recorded is not "already there": its report would be lost if a worker stopped (or a
    /// store write failed) between claim and record, so the message is tried again until the
    /// claim is recorded or taken over.
    /// Whether the cart a `CheckoutOrderCreationFailed` names confirms it for the payment: the
    /// cart exists, lists the payment and was not ordered. Anyone able to publish to the topic
    /// could otherwise have an authorization cancelled at once; the cart, read by id, is
    /// strongly consistent where the orders query may not yet show a just-created order. A
    /// view that reads no carts (replay) trusts the stream it was given. Unconfirmed, nothing
    /// is cancelled for this reason: the grace-period check decides as for any payment.
    async fn cart_confirms_failure(
        &self,
        cart_id: Option<&str>,
        payment_id: &str,
    ) -> Result<bool, EngineError> {
        let why = match cart_id {
            None if self.view.reads_are_current() => Some("no_cart"),
            None => None,
            Some(id) => match self.view.cart(id).await? {
                CartRead::NotRead => None,
                CartRead::Missing => Some("cart_missing"),
                CartRead::Found(cart) if cart.is_ordered() => Some("cart_ordered"),
                CartRead::Found(cart) if !cart.lists_payment(payment_id) => {
                    Some("payment_not_in_cart")
                }
                CartRead::Found(_) => None,
            },
        };
        if let Some(why) = why {
            OrderCreationFailureUnconfirmed {
                payment_id,
                cart_id,
                why,
            }
            .emit();
        }
        Ok(why.is_none())
    }

    async fn remember(&self, key: &str, message_id: Option<&str>) -> Result<bool, EngineError> {
        match self.store.claim(key).await? {
            Claim::Acquired => {
                self.store
                    .record(
                        key,
                        LedgerStatus::Done,
                        Decided {
                            message_id,
                            reason: None,
                        },
                    )
                    .await?;
                Ok(true)
            }
            Claim::Exists(LedgerStatus::Claimed) => Err(EngineError::MarkerClaimed {
                key: key.to_string(),
            }),
            Claim::Exists(_) => Ok(false),
        }
    }

    async fn report_failed_cancel(
        &self,
        read: &PaymentRead,
        message_id: Option<&str>,
    ) -> Result<(), EngineError> {
        let p = &read.payment;
        if !p.cancel_authorization_failed() {
            return Ok(());
        }
        let currency = p.currency().unwrap_or_default();
        let failed = PaymentOperationFailed {
            operation: PaymentOperation::Cancel,
            payment_id: &p.id,
            order_ids: &order_ids(read),
            amount: p.authorized(currency),
            currency,
        };
        self.report_once(
            &cancel_failed_key(&p.id),
            message_id,
            failed,
            &self.failed_cancels,
        )
        .await
    }

    /// Logs and counts `failed` the first time its marker `key` is recorded.
    async fn report_once(
        &self,
        key: &str,
        message_id: Option<&str>,
        failed: PaymentOperationFailed<'_>,
        counter: &AtomicU64,
    ) -> Result<(), EngineError> {
        if self.remember(key, message_id).await? {
            counter.fetch_add(1, Ordering::Relaxed);
            failed.emit();
        }
        Ok(())
    }

    /// A Charge failed after we captured (Checkout answered `received`, the provider then
    /// refused), and authorized money is still open: the order shipped and its money was not
    /// taken. Nothing captures it again by itself (`capture:{P}` runs once), so it is logged
    /// at error and counted, once per payment.
    async fn report_failed_capture(
        &self,
        read: &PaymentRead,
        message_id: Option<&str>,
    ) -> Result<(), EngineError> {
        let p = &read.payment;
        let charge_failed = p
            .transactions_in(TransactionType::Charge, TransactionState::Failure)
            .next()
            .is_some();
        let currency = p.currency().unwrap_or_default();
        let open = coverage::capturable(p, currency, read.cancelled_by_us());
        if !charge_failed || open <= 0 || !self.settled(&Action::capture_key(&p.id)).await? {
            return Ok(());
        }
        let failed = PaymentOperationFailed {
            operation: PaymentOperation::Capture,
            payment_id: &p.id,
            order_ids: &order_ids(read),
            amount: open,
            currency,
        };
        self.report_once(
            &capture_failed_key(&p.id),
            message_id,
            failed,
            &self.failed_captures,
        )
        .await
    }

    /// A Refund failed after our refund was carried out: money we meant to give back was not.
    /// Nothing refunds it again by itself (`refund:{P}` runs once), so it is logged at error
    /// and counted, once per payment.
    async fn report_failed_refund(
        &self,
        read: &PaymentRead,
        message_id: Option<&str>,
    ) -> Result<(), EngineError> {
        let p = &read.payment;
        let refund_failed = p
            .transactions_in(TransactionType::Refund, TransactionState::Failure)
            .next()
            .is_some();
        let currency = p.currency().unwrap_or_default();
        let kept = p.refundable(currency);
        if !refund_failed || kept <= 0 {
            return Ok(());
        }
        let failed = PaymentOperationFailed {
            operation: PaymentOperation::Refund,
            payment_id: &p.id,
            order_ids: &order_ids(read),
            amount: kept,
            currency,
        };
        self.report_once(
            &refund_failed_key(&p.id),
            message_id,
            failed,
            &self.failed_refunds,
        )
        .await
    }

    /// Charged money held only by cancelled orders while refund_on_order_cancelled is off:
    /// logged at warn and counted, once per payment, so that someone decides what goes back.
    async fn report_charged_on_cancelled(
        &self,
        read: &PaymentRead,
        refundable: i64,
        message_id: Option<&str>,
    ) -> Result<(), EngineError> {
        let p = &read.payment;
        if self
            .remember(&charged_on_cancelled_key(&p.id), message_id)
            .await?
        {
            ChargedOnCancelledOrders {
                payment_id: &p.id,
                order_ids: &order_ids(read),
                charged: refundable,
                currency: p.currency().unwrap_or_default(),
            }
            .emit();
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
}

/// The ids of the orders referencing the payment read.
fn order_ids(read: &PaymentRead) -> Vec<&str> {
    read.orders.iter().map(|o| o.id.as_str()).collect()
}

/// What a grace-period check decided.
#[derive(Debug, Default)]
pub struct TimerDecision {
    /// The actions due now.
    pub actions: Vec<Action>,
    /// Check again then: money is still in flight on an authorized payment no order holds.
    pub recheck_at: Option<Timestamp>,
}

/// Authorized or charged money that no live order holds, while an Authorization, Charge or
/// Refund is still Initial or Pending: whether it must be cancelled or refunded is not known
/// yet.
fn money_in_flight(read: &PaymentRead) -> bool {
    (evaluate::authorized_for_cancel(read) > 0 || refundable(read) > 0)
        && refund::in_flight(&read.payment)
        && read
            .orders
            .iter()
            .all(|o| o.order_state == OrderState::Cancelled)
}

/// Which transaction keeps the money in flight, as the metric label: `charge` when a Charge is
/// still Initial or Pending (the money may be taken yet), else `refund` when a Refund is, else
/// `authorization`.
fn pending_kind(p: &Payment) -> &'static str {
    let in_flight = |kind| {
        p.transactions.iter().any(|t| {
            t.kind == kind
                && matches!(
                    t.state,
                    TransactionState::Initial | TransactionState::Pending
                )
        })
    };
    if in_flight(TransactionType::Charge) {
        "charge"
    } else if in_flight(TransactionType::Refund) {
        "refund"
    } else {
        "authorization"
    }
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
mod tests;
