//! The engine's side of refund_on_return: what each returned line is due (`returns`), what
//! payrules already refunded for it (the amounts its ledger keys recorded), and the refunds
//! that make up the difference, split over the order's payments.

use std::collections::BTreeMap;

use super::{
    Action, ActionKind, Allocated, Cause, Engine, EngineError, LedgerStatus, Money, Order,
    OrderState, PaymentRead, Reason, RuleName, debug, refund, returns,
};
use crate::action::ReturnedUnits;
use crate::store::{Noted, claim_note_amount};
use crate::telemetry::ReturnNotRefundable;

/// Ledger marker: a returned line's due refund (at one returned quantity) exceeded what the
/// order's payments had left to refund, and was reported (counted once).
pub(super) fn return_short_key(order_id: &str, line_id: &str, returned: u64) -> String {
    format!("return-not-refundable:{order_id}:{line_id}:{returned}")
}

/// One of this order's return refund keys, as the ledger holds it.
#[derive(Debug)]
pub(super) struct LineRefund {
    /// The line.
    pub line_id: String,
    /// The returned quantity it was decided at.
    pub returned: u64,
    /// The payment refunded.
    pub payment_id: String,
    /// The amount the claim recorded.
    pub amount: i64,
    /// Where it stands.
    pub status: LedgerStatus,
    /// The ledger key.
    pub key: String,
}

/// Reads a key `refund:{order}:{line}:{returned}:{payment}` with its note; `None` for a key
/// of another shape (or a note without an amount: never counted as nothing refunded — the
/// caller treats the line as undecidable).
fn line_refund(prefix: &str, n: &Noted) -> Option<LineRefund> {
    let rest = n.key.strip_prefix(prefix)?;
    let mut parts = rest.rsplitn(3, ':');
    let payment_id = parts.next()?;
    let returned = parts.next()?.parse().ok()?;
    let line_id = parts.next()?;
    Some(LineRefund {
        line_id: line_id.to_string(),
        returned,
        payment_id: payment_id.to_string(),
        amount: claim_note_amount(&n.note)?,
        status: n.status,
        key: n.key.clone(),
    })
}

impl Engine {
    /// The return refunds of `order` that payrules decided, by line; an error when a key under
    /// the order cannot be read back (its amount unknown: nothing more is refunded for the
    /// order until someone looks).
    pub(super) async fn line_refunds(
        &self,
        order_id: &str,
    ) -> Result<BTreeMap<String, Vec<LineRefund>>, EngineError> {
        let prefix = format!("refund:{order_id}:");
        let mut out: BTreeMap<String, Vec<LineRefund>> = BTreeMap::new();
        for n in self.store.noted(&prefix).await? {
            let Some(r) = line_refund(&prefix, &n) else {
                return Err(EngineError::UnreadableRefund { key: n.key });
            };
            out.entry(r.line_id.clone()).or_default().push(r);
        }
        Ok(out)
    }

    /// refund_on_return for `order`: a refund per (line, returned quantity, payment) for what
    /// each returned line is due beyond what payrules already refunded for it; claimed ones
    /// (a worker stopped while refunding) are carried out again with the amount they recorded.
    pub(super) async fn evaluate_returns(
        &self,
        order: &Order,
        known: Option<&PaymentRead>,
        cause: &Cause<'_>,
    ) -> Result<Vec<Action>, EngineError> {
        let rule = &self.rules.refund_on_return;
        if !rule.enabled || order.order_state == OrderState::Cancelled {
            return Ok(Vec::new());
        }
        let lines = returns::lines_due(rule, order);
        if lines.is_empty() {
            return Ok(Vec::new());
        }
        let allocated = self.allocated_payments(order, known).await?;
        let reads: Vec<&PaymentRead> = allocated.iter().filter_map(|a| a.read(known)).collect();
        if reads.iter().any(|r| refund::in_flight(&r.payment)) {
            debug!(order_id = %order.id, "return refunds wait: money is in flight");
            return Ok(Vec::new());
        }
        let decided = self.line_refunds(&order.id).await?;
        let currency = order.gross_total().currency_code.as_str();
        let mut sources = sources(&allocated, known, &decided, currency);
        let mut actions = Vec::new();
        for line in lines.iter().filter(|l| l.currency == currency) {
            let done = decided.get(&line.line_id).map_or(&[][..], Vec::as_slice);
            for r in done.iter().filter(|r| r.status == LedgerStatus::Claimed) {
                actions.push(line_action(order, cause, currency, r));
            }
            let refunded: i64 = done.iter().map(|r| r.amount).sum();
            let wanted = line.due.saturating_sub(refunded);
            if wanted <= 0 {
                continue;
            }
            // A payment already refunded at this returned quantity is not asked again: its
            // key is spent.
            let mut open: Vec<returns::Source<'_>> = Vec::new();
            for s in &sources {
                let spent = done
                    .iter()
                    .any(|r| r.returned == line.returned && r.payment_id == s.payment_id);
                if !spent {
                    open.push(s.clone());
                }
            }
            let (parts, short) = returns::split(wanted, &mut open);
            for part in &parts {
                if let Some(s) = sources.iter_mut().find(|s| s.payment_id == part.payment_id) {
                    s.refundable -= part.amount;
                }
                let r = LineRefund {
                    key: Action::line_refund_key(
                        &order.id,
                        &line.line_id,
                        line.returned,
                        &part.payment_id,
                    ),
                    line_id: line.line_id.clone(),
                    returned: line.returned,
                    payment_id: part.payment_id.clone(),
                    amount: part.amount,
                    status: LedgerStatus::Claimed,
                };
                actions.push(line_action(order, cause, currency, &r));
            }
            if short > 0 {
                self.report_return_short(order, line, short, currency, cause)
                    .await?;
            }
        }
        Ok(actions)
    }

    /// Whether payrules made a return refund of the payment read (for the order its money
    /// counts toward): a Refund failing on it may then be ours.
    pub(super) async fn returns_refunded(&self, read: &PaymentRead) -> Result<bool, EngineError> {
        if !self.rules.refund_on_return.enabled {
            return Ok(false);
        }
        let Some(order) = super::coverage::allocated(&read.orders) else {
            return Ok(false);
        };
        Ok(self
            .line_refunds(&order.id)
            .await?
            .values()
            .flatten()
            .any(|r| r.payment_id == read.payment.id && r.status == LedgerStatus::Done))
    }

    async fn report_return_short(
        &self,
        order: &Order,
        line: &returns::LineDue,
        short: i64,
        currency: &str,
        cause: &Cause<'_>,
    ) -> Result<(), EngineError> {
        let key = return_short_key(&order.id, &line.line_id, line.returned);
        if self.remember(&key, cause.message_id).await? {
            ReturnNotRefundable {
                order_id: &order.id,
                line_id: &line.line_id,
                returned: line.returned,
                short,
                currency,
            }
            .emit();
        }
        Ok(())
    }
}

/// The order's payments in the order refunds take from them: earliest created first (unknown
/// times last), ties by id; each with refundable(P) less the return refunds of ours not yet
/// visible on it. Our refunds show as Refund transactions once made, so what is taken away
/// is the larger of the two: the Refunds on the payment, or our refunds of it.
fn sources<'a>(
    allocated: &'a [Allocated],
    known: Option<&'a PaymentRead>,
    decided: &BTreeMap<String, Vec<LineRefund>>,
    currency: &str,
) -> Vec<returns::Source<'a>> {
    let mut reads: Vec<&PaymentRead> = allocated.iter().filter_map(|a| a.read(known)).collect();
    reads.sort_by(|a, b| {
        let at = |r: &PaymentRead| {
            r.payment
                .created_at
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
        };
        at(a)
            .cmp(&at(b))
            .then_with(|| a.payment.id.cmp(&b.payment.id))
    });
    reads
        .into_iter()
        .map(|r| {
            let p = &r.payment;
            let ours: i64 = decided
                .values()
                .flatten()
                .filter(|d| d.payment_id == p.id && d.status != LedgerStatus::Failed)
                .map(|d| d.amount)
                .sum();
            let visible = p.refunded(currency);
            let kept = p.refundable(currency) + visible;
            returns::Source {
                payment_id: p.id.as_str(),
                refundable: kept - visible.max(ours),
            }
        })
        .collect()
}

/// A refund for returned units of `order`'s line, as `r` says.
fn line_action(order: &Order, cause: &Cause<'_>, currency: &str, r: &LineRefund) -> Action {
    Action {
        action: ActionKind::RefundPayment,
        rule: RuleName::RefundOnReturn,
        key: r.key.clone(),
        payment_id: Some(r.payment_id.clone()),
        order_id: Some(order.id.clone()),
        message_id: cause.message_id.map(str::to_string),
        at: cause.at,
        order_number: order.order_number.clone(),
        payment_ids: Vec::new(),
        amount: Some(Money {
            currency_code: currency.to_string(),
            cent_amount: r.amount,
            fraction_digits: order.gross_total().fraction_digits,
        }),
        reason: Some(Reason::Returned),
        returned: Some(ReturnedUnits {
            line_id: r.line_id.clone(),
            returned_quantity: r.returned,
        }),
    }
}
