//! The engine's evaluations: gathering what an order's payments cover and deciding releases,
//! cancels and captures from it (the decisions themselves are in `release`, `cancel` and
//! `coverage`).

use super::{
    Action, ActionKind, Allocated, Cause, Engine, EngineError, LedgerStatus, Money, Order,
    OrderState, Payment, PaymentRead, Reason, RuleName, Share, TransactionType, cancel, coverage,
    debug, order_creation_failed_key, refund, release, release_started_key, unique, warn,
};

impl Engine {
    /// Every payment `order` references (once each, in order), with the order its money counts
    /// toward and, when that is `order`, what it covers. `known` is a payment just read (not
    /// read again).
    pub(super) async fn shares(
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
                    covered: coverage::covered(&r.payment, currency, r.ours()),
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
    pub(super) async fn allocated_payments(
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

    pub(super) async fn evaluate_release(
        &self,
        order: &Order,
        known: Option<&PaymentRead>,
        cause: &Cause<'_>,
    ) -> Result<Option<Action>, EngineError> {
        let key = Action::release_key(&order.id);
        let carry_out = if order.is_fulfillable() {
            if self.settled(&key).await? {
                return Ok(None);
            }
            false
        } else if self.release_started(order).await? {
            true
        } else {
            return Ok(None);
        };
        let allocated = self.allocated_payments(order, known).await?;
        let counted: Vec<release::Counted> = allocated.iter().map(|a| a.counted.clone()).collect();
        let trigger = known.map(|k| k.payment.id.as_str());
        let checked = if carry_out {
            release::covers(&self.rules.release, order, &counted, trigger)
        } else {
            release::check(&self.rules.release, order, &counted, trigger)
        };
        let Ok(r) = checked else {
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
            returned: None,
        }))
    }

    /// Whether the release of an order that no longer looks fulfillable was decided and is
    /// still to be finished: claimed but not recorded (its worker stopped between the order
    /// update and the webhook), or its order update done and its webhook not yet delivered
    /// (`release_started_key`). Never for a cancelled order: nothing of it is shipped.
    async fn release_started(&self, order: &Order) -> Result<bool, EngineError> {
        if order.order_state == OrderState::Cancelled {
            return Ok(false);
        }
        Ok(
            match self
                .store
                .ledger_status(&Action::release_key(&order.id))
                .await?
            {
                Some(LedgerStatus::Claimed) => true,
                Some(_) => false,
                None => self.settled(&release_started_key(&order.id)).await?,
            },
        )
    }

    /// An order whose allocated payments have all settled (nothing Initial or Pending) and
    /// still do not cover it will not be released by itself: the merchant should hear of it.
    pub(super) fn warn_if_settled_short(
        &self,
        order: &Order,
        allocated: &[Allocated],
        known: Option<&PaymentRead>,
    ) {
        if allocated.is_empty() {
            return;
        }
        let payments = allocated.iter().filter_map(|a| a.read(known));
        if payments.clone().any(|r| r.payment.awaiting_money()) {
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

    pub(super) async fn evaluate_cancel(
        &self,
        read: &PaymentRead,
        cause: &Cause<'_>,
        grace_expired: bool,
    ) -> Result<Option<Action>, EngineError> {
        let pid = read.payment.id.as_str();
        if read.cancel_settled() {
            return Ok(None);
        }
        let authorized = authorized_for_cancel(read);
        let order_creation_failed = self
            .order_creation_failed(read, self.rules.cancel.enabled, authorized)
            .await?;
        let reason = match self.cancel_check(read, authorized, order_creation_failed, grace_expired)
        {
            Ok(reason) => reason,
            // A cancel claimed but not recorded was decided: it is carried out even if an
            // order has appeared since, as it would have been had its worker not stopped
            // (scenario 09). Left alone, the claim would keep the authorization out of every
            // coverage and uncancelled: money blocked for good. The executor re-reads the
            // payment, so a cancel already given back is not made twice. Not while a Charge
            // is under way: the executor would not cancel then anyway, and the grace check
            // must find nothing decided so that it looks again once the Charge has landed.
            Err(_)
                if read.cancel == Some(LedgerStatus::Claimed)
                    && !read.payment.has_live_charge() =>
            {
                self.claimed_reason(read).await?
            }
            Err(why) => {
                debug!(payment_id = pid, why, "cancel check: nothing to do");
                return Ok(None);
            }
        };
        Ok(Some(payment_action(
            ActionKind::CancelPayment,
            reason,
            read,
            cause,
            authorized_money(&read.payment, authorized),
        )))
    }

    /// Why a cancel or refund claimed earlier was decided, as far as what is read now tells:
    /// every order cancelled, Checkout's order-creation failure, or else the grace period (the
    /// reason itself is recorded only when the action is).
    async fn claimed_reason(&self, read: &PaymentRead) -> Result<Reason, EngineError> {
        Ok(
            if !read.orders.is_empty()
                && read
                    .orders
                    .iter()
                    .all(|o| o.order_state == OrderState::Cancelled)
            {
                Reason::OrderCancelled
            } else if self
                .settled(&order_creation_failed_key(&read.payment.id))
                .await?
            {
                Reason::OrderCreationFailed
            } else {
                Reason::GracePeriodExpired
            },
        )
    }

    /// Whether Checkout's order-creation failure counts for the payment, for a rule (on or
    /// off) weighing `money` of it (authorized for the cancel, refundable for the refund). The
    /// marker is read only when it can matter: the rule on, money there and no order at all.
    pub(super) async fn order_creation_failed(
        &self,
        read: &PaymentRead,
        rule_on: bool,
        money: i64,
    ) -> Result<bool, EngineError> {
        Ok(rule_on
            && money > 0
            && read.orders.is_empty()
            && self
                .settled(&order_creation_failed_key(&read.payment.id))
                .await?)
    }

    /// The cancel rules' answer for a payment as read: why it is cancelled, or why not.
    pub(super) fn cancel_check(
        &self,
        read: &PaymentRead,
        authorized: i64,
        order_creation_failed: bool,
        grace_expired: bool,
    ) -> Result<Reason, &'static str> {
        let facts = cancel::CancelFacts {
            payment: &read.payment,
            orders: &read.orders,
            authorized,
            order_creation_failed,
            grace_expired,
        };
        cancel::decide(self.rules.cancels(), &facts)
    }

    /// Whether the payment's charged money is refunded now (by refund_orphaned_charge or
    /// refund_on_order_cancelled). While refund_on_order_cancelled is off, charged money held
    /// only by cancelled orders is reported once instead.
    pub(super) async fn evaluate_refund(
        &self,
        read: &PaymentRead,
        cause: &Cause<'_>,
        grace_expired: bool,
    ) -> Result<Option<Action>, EngineError> {
        if read.refund_settled() {
            return Ok(None);
        }
        let p = &read.payment;
        let amount = refundable(read);
        let order_creation_failed = self
            .order_creation_failed(read, self.rules.refund_orphaned.enabled, amount)
            .await?;
        let reason = match self.refund_check(read, amount, order_creation_failed, grace_expired) {
            Ok(reason) => reason,
            // A refund claimed but not recorded was decided: it is carried out even if an order
            // has appeared since, as a claimed cancel is (coverage counts its money as gone
            // meanwhile, so no order is released on it; left alone, the money would stay kept
            // and count for nothing). The executor re-reads the payment first, so a refund
            // already under way is not asked for twice. Not while money is in flight.
            Err(_)
                if read.refund == Some(LedgerStatus::Claimed)
                    && amount > 0
                    && !refund::in_flight(p) =>
            {
                self.claimed_reason(read).await?
            }
            Err(refund::ORDER_CANCELLED_OFF) => {
                self.report_charged_on_cancelled(read, amount, cause.message_id)
                    .await?;
                return Ok(None);
            }
            Err(why) => {
                debug!(payment_id = %p.id, why, "refund check: nothing to do");
                return Ok(None);
            }
        };
        Ok(Some(payment_action(
            ActionKind::RefundPayment,
            reason,
            read,
            cause,
            money_of(p, TransactionType::Charge, amount),
        )))
    }

    /// The refund rules' answer for a payment as read: why it is refunded, or why not.
    pub(super) fn refund_check(
        &self,
        read: &PaymentRead,
        refundable: i64,
        order_creation_failed: bool,
        grace_expired: bool,
    ) -> Result<Reason, &'static str> {
        let facts = refund::RefundFacts {
            payment: &read.payment,
            orders: &read.orders,
            refundable,
            order_creation_failed,
            grace_expired,
        };
        refund::decide(self.rules.refunds(), &facts)
    }

    /// Whether capture_on_shipment applies to the order now, or why not.
    pub(super) fn capture_due(&self, order: &Order) -> Result<(), &'static str> {
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

    pub(super) async fn evaluate_capture(
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
                payment_id: Some(counted.payment_id.clone()),
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
                returned: None,
            });
        }
        Ok(actions)
    }
}

/// authorized(P) in the payment's own currency, as the cancel rules weigh it: a cancel of ours
/// done takes it away, one only claimed does not. A claim is a cancel running — or one whose
/// worker died before recording how it ended; counting that as done left the authorization
/// blocked for good. The cancel is proposed again and the ledger's claim decides who runs it
/// (a dead worker's claim is taken over once its lease passes, and the executor re-reads the
/// payment before calling Checkout). Coverage, by contrast, counts a claimed cancel as gone,
/// so no order is released on money being given back.
pub(super) fn authorized_for_cancel(read: &PaymentRead) -> i64 {
    read.payment.currency().map_or(0, |c| {
        coverage::effective_authorized(&read.payment, c, read.cancel_done())
    })
}

/// A cancel or refund of the payment read, for `reason`: its rule and key follow from the kind,
/// and for a cancelled order the (earliest) one is named.
fn payment_action(
    kind: ActionKind,
    reason: Reason,
    read: &PaymentRead,
    cause: &Cause<'_>,
    amount: Option<Money>,
) -> Action {
    let pid = read.payment.id.as_str();
    let (rule, key) = if kind == ActionKind::RefundPayment {
        (reason.refund_rule(), Action::refund_key(pid))
    } else {
        (reason.cancel_rule(), Action::cancel_key(pid))
    };
    let order_id = (reason == Reason::OrderCancelled)
        .then(|| read.orders.iter().min_by_key(|o| o.allocation_key()))
        .flatten()
        .map(|o| o.id.clone());
    Action {
        action: kind,
        rule,
        key,
        payment_id: Some(pid.to_string()),
        order_id,
        message_id: cause.message_id.map(str::to_string),
        at: cause.at,
        order_number: None,
        payment_ids: Vec::new(),
        amount,
        reason: Some(reason),
        returned: None,
    }
}

/// refundable(P) in the payment's own currency.
pub(super) fn refundable(read: &PaymentRead) -> i64 {
    read.payment
        .currency()
        .map_or(0, |c| read.payment.refundable(c))
}

/// The authorized amount as money, in the payment's currency.
pub(super) fn authorized_money(p: &Payment, authorized: i64) -> Option<Money> {
    money_of(p, TransactionType::Authorization, authorized)
}

/// `cents` as money in the payment's currency, with the fraction digits of its first
/// transaction of `kind` in that currency.
fn money_of(p: &Payment, kind: TransactionType, cents: i64) -> Option<Money> {
    let currency = p.currency()?;
    let digits = p
        .transactions
        .iter()
        .find(|t| t.kind == kind && t.amount.currency_code == currency)
        .and_then(|t| t.amount.fraction_digits);
    Some(Money {
        currency_code: currency.to_string(),
        cent_amount: cents,
        fraction_digits: digits,
    })
}
