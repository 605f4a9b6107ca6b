//! The rules' decision for one order or one payment, with the facts behind it, for
//! `payrules explain`.
//!
//! Nothing here decides by itself: the facts are gathered by the engine's own reads (the
//! payments an order references and the order each one's money counts toward, every order
//! referencing a payment, the ledger), and the answers come from the functions the engine
//! decides with — [`release::check`], [`cancel::decide`] (through the engine's cancel check),
//! [`coverage`]. Nothing is written: no timer is scheduled, no marker remembered.

use crate::action::{Action, Reason};
use crate::model::{Order, Payment};
use crate::store::LedgerStatus;

use super::release::{NotReleased, Release};
use super::{
    Engine, EngineError, authorized_for_cancel, cancel_failed_key, charged_on_cancelled_key,
    coverage, order_creation_failed_key, refund_failed_key, refundable, release,
};

/// An order as the release rule sees it now.
#[derive(Debug, Clone)]
pub struct OrderFacts {
    /// The order as read.
    pub order: Order,
    /// Every payment the order references, once each, in order.
    pub payments: Vec<PaymentShare>,
    /// Σ covered(P) over the payments allocated to the order, in its currency.
    pub covered: i64,
    /// The coverage check: released now, or why not. The ledger decides whether it runs
    /// again ([`OrderFacts::release_ledger`]).
    pub release: Result<Release, NotReleased>,
    /// Where `release:{order_id}` stands in the ledger.
    pub release_ledger: Option<LedgerStatus>,
    /// Whether capture_on_shipment applies to the order now, or why not.
    pub capture: Result<(), &'static str>,
    /// Its returned lines: what each is due and what payrules refunded for it.
    pub returns: Vec<ReturnFacts>,
    /// Whether refund_on_return is on.
    pub refund_on_return: bool,
}

/// A returned line of an order, as refund_on_return sees it.
#[derive(Debug, Clone)]
pub struct ReturnFacts {
    /// The line's due refund now ([`super::returns::lines_due`]).
    pub line: super::returns::LineDue,
    /// The refunds payrules decided for the line: (key, payment, amount, status).
    pub refunds: Vec<(String, String, i64, LedgerStatus)>,
}

impl ReturnFacts {
    /// What payrules refunded (or is refunding) for the line.
    pub fn refunded(&self) -> i64 {
        self.refunds.iter().map(|r| r.2).sum()
    }
}

/// One payment an order references, as the release rule counts it.
#[derive(Debug, Clone)]
pub struct PaymentShare {
    /// The payment id.
    pub payment_id: String,
    /// The payment as read; `None` when it was not found.
    pub payment: Option<Payment>,
    /// The order its money counts toward (the earliest-created one not cancelled).
    pub counts_toward: Option<String>,
    /// Its money counts toward this order.
    pub allocated: bool,
    /// covered(P) toward this order (0 when the money counts elsewhere).
    pub covered: i64,
    /// open authorization(P) in the order's currency (our own cancel taken into account, less
    /// what is captured or being captured).
    pub authorized: i64,
    /// net charged(P) in the order's currency.
    pub charged: i64,
    /// This worker claimed or executed the payment's cancel.
    pub cancelled_by_us: bool,
    /// Where `cancel:{payment_id}` stands in the ledger.
    pub cancel_ledger: Option<LedgerStatus>,
    /// What a capture may still take, in the order's currency.
    pub capturable: i64,
    /// Where `capture:{payment_id}` stands in the ledger.
    pub capture_ledger: Option<LedgerStatus>,
}

/// A payment as the cancel and capture rules see it now.
#[derive(Debug, Clone)]
pub struct PaymentFacts {
    /// The payment as read.
    pub payment: Payment,
    /// The currency of its money.
    pub currency: Option<String>,
    /// authorized(P) in its currency, our own cancel taken into account.
    pub authorized: i64,
    /// charged(P) in its currency.
    pub charged: i64,
    /// refundable(P) in its currency: charged money a refund may still take.
    pub refundable: i64,
    /// Every order referencing it.
    pub orders: Vec<Order>,
    /// The order its money counts toward.
    pub counts_toward: Option<String>,
    /// Where `release:{order}` stands for the order it counts toward.
    pub counts_toward_release: Option<LedgerStatus>,
    /// Where `cancel:{payment_id}` stands.
    pub cancel_ledger: Option<LedgerStatus>,
    /// Where `capture:{payment_id}` stands.
    pub capture_ledger: Option<LedgerStatus>,
    /// Where `refund:{payment_id}` stands.
    pub refund_ledger: Option<LedgerStatus>,
    /// The marker `refund-failed:{payment_id}` (our refund was reported failed).
    pub refund_failed: Option<LedgerStatus>,
    /// The marker `charged-on-cancelled:{payment_id}` (charged money on cancelled orders was
    /// reported while refund_on_order_cancelled is off).
    pub charged_on_cancelled: Option<LedgerStatus>,
    /// The marker `order-creation-failed:{payment_id}` (Checkout could not create the order).
    pub order_creation_failed: Option<LedgerStatus>,
    /// The marker `cancel-failed:{payment_id}` (our cancel was reported failed).
    pub cancel_failed: Option<LedgerStatus>,
    /// The cancel rules' answer on a message about the payment now.
    pub cancel_on_message: Result<Reason, &'static str>,
    /// Their answer when its grace-period check runs.
    pub cancel_at_grace_check: Result<Reason, &'static str>,
    /// The refund rules' answer on a message about the payment now.
    pub refund_on_message: Result<Reason, &'static str>,
    /// Their answer when its grace-period check runs.
    pub refund_at_grace_check: Result<Reason, &'static str>,
    /// capture_on_shipment toward the order it counts toward: the amount a capture would take
    /// now, or why none; `None` when no order holds the payment.
    pub capture: Option<Result<i64, &'static str>>,
}

impl Engine {
    /// Where `key` stands in the ledger. Read-only.
    ///
    /// # Errors
    /// A store failure.
    pub async fn ledger(&self, key: &str) -> Result<Option<LedgerStatus>, EngineError> {
        Ok(self.store.ledger_status(key).await?)
    }

    /// The order `id` as the rules see it now, with the release decision; `None` when the view
    /// does not know it. Read-only.
    ///
    /// # Errors
    /// A view or store failure.
    pub async fn explain_order(&self, id: &str) -> Result<Option<OrderFacts>, EngineError> {
        let Some(order) = self.view.order(id).await? else {
            return Ok(None);
        };
        let currency = order.gross_total().currency_code.clone();
        let mut payments = Vec::new();
        let mut counted = Vec::new();
        for share in self.shares(&order, None).await? {
            let read = share.read.as_ref();
            let cancelled_by_us = read.is_some_and(super::PaymentRead::cancelled_by_us);
            let amount = |f: fn(&Payment, &str, bool) -> i64| {
                read.map_or(0, |r| f(&r.payment, &currency, cancelled_by_us))
            };
            payments.push(PaymentShare {
                payment_id: share.payment_id.clone(),
                payment: read.map(|r| r.payment.clone()),
                counts_toward: share.holder.as_ref().map(|(h, _)| h.clone()),
                allocated: share.counted.is_some(),
                covered: share.counted.as_ref().map_or(0, |c| c.covered),
                authorized: amount(coverage::open_authorization),
                charged: read.map_or(0, |r| r.payment.charged(&currency)),
                cancelled_by_us,
                cancel_ledger: read.and_then(|r| r.cancel),
                capturable: amount(coverage::capturable),
                capture_ledger: self
                    .store
                    .ledger_status(&Action::capture_key(&share.payment_id))
                    .await?,
            });
            counted.extend(share.counted);
        }
        let release = release::check(&self.rules.release, &order, &counted, None);
        let returns = self.return_facts(&order).await?;
        Ok(Some(OrderFacts {
            returns,
            refund_on_return: self.rules.refund_on_return.enabled,
            covered: release::total_covered(&counted),
            release,
            release_ledger: self
                .store
                .ledger_status(&Action::release_key(&order.id))
                .await?,
            capture: self.capture_due(&order),
            payments,
            order,
        }))
    }

    /// The order's returned lines with what payrules refunded for each (read only: no marker
    /// is written, unlike the rule's own evaluation). Lines refunded earlier that are no longer
    /// returned are listed too.
    async fn return_facts(&self, order: &Order) -> Result<Vec<ReturnFacts>, EngineError> {
        let lines = super::returns::lines_due(&self.rules.refund_on_return, order);
        if lines.is_empty() && order.return_info.is_empty() {
            return Ok(Vec::new());
        }
        let mut decided = self.line_refunds(&order.id).await?;
        let mut out = Vec::new();
        for line in lines {
            let refunds = decided.remove(&line.line_id).unwrap_or_default();
            out.push(ReturnFacts {
                refunds: refunds
                    .into_iter()
                    .map(|r| (r.key, r.payment_id, r.amount, r.status))
                    .collect(),
                line,
            });
        }
        for (line_id, refunds) in decided {
            out.push(ReturnFacts {
                line: super::returns::LineDue {
                    line_id,
                    returned: 0,
                    due: 0,
                    currency: order.gross_total().currency_code.clone(),
                },
                refunds: refunds
                    .into_iter()
                    .map(|r| (r.key, r.payment_id, r.amount, r.status))
                    .collect(),
            });
        }
        Ok(out)
    }

    /// The payment `id` as the rules see it now, with the cancel and capture decisions;
    /// `None` when the view does not know it. Read-only.
    ///
    /// # Errors
    /// A view or store failure.
    pub async fn explain_payment(&self, id: &str) -> Result<Option<PaymentFacts>, EngineError> {
        let Some(read) = self.read_payment(id, None).await? else {
            return Ok(None);
        };
        let authorized = authorized_for_cancel(&read);
        let order_creation_failed = self
            .order_creation_failed(&read, self.rules.cancel.enabled, authorized)
            .await?;
        let cancel = |grace_expired| {
            self.cancel_check(&read, authorized, order_creation_failed, grace_expired)
        };
        let (cancel_on_message, cancel_at_grace_check) = (cancel(false), cancel(true));
        let refundable = refundable(&read);
        let refund_ocf = self
            .order_creation_failed(&read, self.rules.refund_orphaned.enabled, refundable)
            .await?;
        let refund = |grace_expired| {
            if read.refund_settled() {
                return Err("payrules' refund of it is settled (refund:… in the ledger)");
            }
            self.refund_check(&read, refundable, refund_ocf, grace_expired)
        };
        let (refund_on_message, refund_at_grace_check) = (refund(false), refund(true));
        let holder = coverage::allocated(&read.orders);
        let capture = holder.map(|order| {
            self.capture_due(order).and_then(|()| {
                let currency = order.gross_total().currency_code.as_str();
                match coverage::capturable(&read.payment, currency, read.cancelled_by_us()) {
                    amount if amount > 0 => Ok(amount),
                    _ => Err("no open authorization is left to capture"),
                }
            })
        });
        let counts_toward_release = match holder {
            Some(o) => {
                self.store
                    .ledger_status(&Action::release_key(&o.id))
                    .await?
            }
            None => None,
        };
        let currency = read.payment.currency().map(str::to_string);
        Ok(Some(PaymentFacts {
            charged: currency.as_deref().map_or(0, |c| read.payment.charged(c)),
            currency,
            authorized,
            counts_toward: holder.map(|o| o.id.clone()),
            counts_toward_release,
            cancel_ledger: read.cancel,
            capture_ledger: self.store.ledger_status(&Action::capture_key(id)).await?,
            order_creation_failed: self
                .store
                .ledger_status(&order_creation_failed_key(id))
                .await?,
            cancel_failed: self.store.ledger_status(&cancel_failed_key(id)).await?,
            refund_ledger: self.store.ledger_status(&Action::refund_key(id)).await?,
            refund_failed: self.store.ledger_status(&refund_failed_key(id)).await?,
            charged_on_cancelled: self
                .store
                .ledger_status(&charged_on_cancelled_key(id))
                .await?,
            refundable,
            cancel_on_message,
            cancel_at_grace_check,
            refund_on_message,
            refund_at_grace_check,
            capture,
            orders: read.orders,
            payment: read.payment,
        }))
    }
}
