//! Gathering the facts: the engine's reads and decision for an order or payment, joined with the
//! ledger's history.

use super::Kind;
use super::history::{History, status_name};
use super::report::{
    Decision, Explanation, LedgerLine, OrderExplanation, OrderRef, OrderRulesNow, OrderSummary,
    OrderVerdict, PaymentExplanation, PaymentLine, PaymentRulesNow, PaymentVerdict, ReturnLine,
    ReturnRefund,
};
use super::text::{reason_words, untouched_words};
use crate::action::{Action, Reason, format_timestamp};
use crate::model::{Order, TransactionState, TransactionType};
use crate::rules::explain::{OrderFacts, PaymentFacts, PaymentShare};
use crate::rules::release::{NotReleased, Release};
use crate::rules::{self, Engine, EngineError};
use crate::store::LedgerStatus;
use std::fmt::Write as _;

/// Explains an order or a payment with `engine` (its view and ledger) and what `history` knows
/// about when and why.
///
/// # Errors
/// A view or store failure.
pub async fn explain(
    engine: &Engine,
    history: &History,
    kind: Kind,
    id: &str,
) -> Result<Explanation, EngineError> {
    Ok(match kind {
        Kind::Order => Explanation::Order(Box::new(explain_order(engine, history, id).await?)),
        Kind::Payment => {
            Explanation::Payment(Box::new(explain_payment(engine, history, id).await?))
        }
    })
}

pub(super) async fn explain_order(
    engine: &Engine,
    history: &History,
    id: &str,
) -> Result<OrderExplanation, EngineError> {
    let key = Action::release_key(id);
    let facts = engine.explain_order(id).await?;
    let status = match &facts {
        Some(f) => f.release_ledger,
        None => engine.ledger(&key).await?,
    };
    let mut ledger: Vec<LedgerLine> = Vec::new();
    if let Some(s) = status {
        ledger.push(history.line(key.clone(), s).await?);
    }
    let verdict = if status == Some(LedgerStatus::Done) {
        OrderVerdict::Released
    } else {
        OrderVerdict::NotReleased
    };
    let rules_now = order_rules_now(facts.as_ref());
    let returns = facts.as_ref().map(return_lines).unwrap_or_default();
    if let Some(f) = &facts {
        for (key, _, _, status) in f.returns.iter().flat_map(|l| &l.refunds) {
            ledger.push(history.line(key.clone(), *status).await?);
        }
    }
    let mut because = order_because(id, status, ledger.first(), facts.as_ref());
    let mut allocated = Vec::new();
    let mut elsewhere = Vec::new();
    let mut summary = None;
    let mut covered = 0;
    if let Some(f) = facts {
        covered = f.covered;
        let currency = f.order.gross_total().currency_code.clone();
        (allocated, elsewhere) = payment_lines(f.payments, &currency);
        summary = Some(order_summary(&f.order));
        add_payment_notes(&mut because, verdict, &f.release, &allocated, &elsewhere);
    }
    Ok(OrderExplanation {
        kind: Kind::Order,
        id: id.to_string(),
        found: summary.is_some(),
        verdict,
        because,
        source: history.source.clone(),
        order: summary,
        covered,
        allocated,
        allocated_elsewhere: elsewhere,
        rules_now,
        returns,
        ledger,
    })
}

/// The order's returned lines for the report.
fn return_lines(f: &OrderFacts) -> Vec<ReturnLine> {
    f.returns
        .iter()
        .map(|r| ReturnLine {
            line_id: r.line.line_id.clone(),
            returned_quantity: r.line.returned,
            due: r.line.due,
            refunded: r.refunded(),
            refunds: r
                .refunds
                .iter()
                .map(|(key, payment_id, amount, status)| ReturnRefund {
                    key: key.clone(),
                    payment_id: payment_id.clone(),
                    amount: *amount,
                    status: status_name(*status),
                })
                .collect(),
        })
        .collect()
}

/// refund_on_return's answer for the order now.
fn return_decision(f: &OrderFacts) -> Decision {
    if !f.refund_on_return {
        return Decision::none(if f.returns.is_empty() {
            "refund_on_return is off"
        } else {
            "refund_on_return is off: returned goods are refunded by hand"
        });
    }
    let owed: i64 = f
        .returns
        .iter()
        .map(|r| (r.line.due - r.refunded()).max(0))
        .sum();
    if f.returns.is_empty() {
        Decision::none("no returned goods")
    } else if owed == 0 {
        Decision::none("every returned line is refunded as far as it is due")
    } else {
        Decision {
            decision: "refund",
            reason: Some(Reason::Returned),
            because: format!(
                "{owed} cents are due for returned lines beyond what payrules refunded: from the order's payments, earliest created first (never more than each has to refund)"
            ),
        }
    }
}

/// What the rules decide for the order now: a release, a capture, or why not.
fn order_rules_now(facts: Option<&OrderFacts>) -> OrderRulesNow {
    let release = match facts {
        Some(f) => match &f.release {
            Ok(r) => Decision {
                decision: "release",
                reason: None,
                because: r.to_string(),
            },
            Err(why) => Decision::none(why.to_string()),
        },
        None => Decision::none("the order is not known"),
    };
    let capture = match facts.map(|f| f.capture) {
        Some(Ok(())) => Decision {
            decision: "capture",
            reason: None,
            because: "the order reached the shipment state that triggers the capture".into(),
        },
        Some(Err(why)) => Decision::none(why),
        None => Decision::none("the order is not known"),
    };
    let refund_on_return =
        facts.map_or_else(|| Decision::none("the order is not known"), return_decision);
    OrderRulesNow {
        release,
        capture,
        refund_on_return,
    }
}

/// The order's verdict in words: what the ledger says, else what the rules decide.
fn order_because(
    id: &str,
    status: Option<LedgerStatus>,
    first: Option<&LedgerLine>,
    facts: Option<&OrderFacts>,
) -> String {
    match (status, first) {
        (Some(LedgerStatus::Done), Some(line)) => {
            let mut s = "released".to_string();
            match &line.stamp {
                Some(stamp) => {
                    let _ = write!(s, " {}", stamp);
                }
                None => s.push_str(" (release:… is done in the ledger)"),
            }
            if let Some(note) = line.note {
                let _ = write!(s, "; {note}");
            }
            s
        }
        (Some(LedgerStatus::Failed), _) => {
            "not released: the release was tried and failed for good (ledger: failed; the \
             webhook or order update refused it)"
                .into()
        }
        (Some(LedgerStatus::Claimed), _) => {
            "not released yet: a worker is releasing it now (ledger: claimed)".into()
        }
        _ => match facts {
            None => format!("not released: the order {id} is not known"),
            Some(OrderFacts { release: Ok(r), .. }) => format!(
                "not released yet, but due: {r} — the next message about the order or its \
                 payments releases it"
            ),
            Some(OrderFacts {
                release: Err(why), ..
            }) => format!("not released because {why}"),
        },
    }
}

/// The payments the order references: those whose money counts toward it, and the others.
fn payment_lines(
    payments: Vec<PaymentShare>,
    currency: &str,
) -> (Vec<PaymentLine>, Vec<PaymentLine>) {
    let mut allocated = Vec::new();
    let mut elsewhere = Vec::new();
    for p in payments {
        let note = share_note(&p, currency);
        let line = PaymentLine {
            note,
            found: p.payment.is_some(),
            counts_toward: p.counts_toward,
            covered: p.covered,
            authorized: p.authorized,
            charged: p.charged,
            cancelled_by_us: p.cancelled_by_us,
            cancel: p.cancel_ledger.map(status_name),
            capturable: p.capturable,
            capture: p.capture_ledger.map(status_name),
            transactions: p.payment.map(|p| p.transactions).unwrap_or_default(),
            payment_id: p.payment_id,
        };
        if p.allocated {
            allocated.push(line);
        } else {
            elsewhere.push(line);
        }
    }
    (allocated, elsewhere)
}

/// Adds the payments behind the reason to `because`, in a few words each.
fn add_payment_notes(
    because: &mut String,
    verdict: OrderVerdict,
    release: &Result<Release, NotReleased>,
    allocated: &[PaymentLine],
    elsewhere: &[PaymentLine],
) {
    // The payments behind the reason, in a few words each.
    let notes: Vec<String> = allocated
        .iter()
        .chain(elsewhere)
        .filter_map(|p: &PaymentLine| {
            Some(format!("payment {}: {}", p.payment_id, p.note.as_ref()?))
        })
        .collect();
    match (verdict, release) {
        (OrderVerdict::Released, Err(why)) => {
            let _ = write!(because, "; the rules would not release it today: {why}");
        }
        (
            OrderVerdict::NotReleased,
            Err(NotReleased::Short { .. } | NotReleased::NothingCovered { .. }),
        ) if !notes.is_empty() => {
            let _ = write!(because, " ({})", notes.join("; "));
        }
        _ => {}
    }
}

/// Why a payment an order references covers nothing toward it, in a few words (descriptive
/// only: what counts was decided by the rules).
pub(super) fn share_note(p: &PaymentShare, currency: &str) -> Option<String> {
    let Some(payment) = &p.payment else {
        return Some("not found".into());
    };
    if !p.allocated {
        return Some(match &p.counts_toward {
            Some(h) => format!("its money counts toward order {h} (created earlier)"),
            None => "only cancelled orders reference it".into(),
        });
    }
    if p.covered > 0 {
        return None;
    }
    if p.cancelled_by_us {
        return Some(
            "payrules cancelled it: its authorization counts for nothing until the payment shows \
             that cancel"
                .into(),
        );
    }
    if payment.awaiting_money() {
        return Some("its authorization or charge is still Initial or Pending".into());
    }
    let mut others: Vec<&str> = payment
        .transactions
        .iter()
        .map(|t| t.amount.currency_code.as_str())
        .filter(|c| *c != currency)
        .collect();
    others.dedup();
    if !others.is_empty() {
        return Some(format!(
            "its money is in {}, not {currency}",
            others.join(", ")
        ));
    }
    Some("nothing authorized or charged stands".into())
}

pub(super) fn order_summary(o: &Order) -> OrderSummary {
    OrderSummary {
        order_number: o.order_number.clone(),
        order_state: o.order_state,
        shipment_state: o.shipment_state,
        created_at: o.created_at.as_ref().map(format_timestamp),
        fulfillable: o.is_fulfillable(),
        gross_total: o.gross_total().clone(),
        gross_total_from: if o.taxed_price.is_some() {
            "taxedPrice.totalGross"
        } else {
            "totalPrice"
        },
    }
}

pub(super) async fn explain_payment(
    engine: &Engine,
    history: &History,
    id: &str,
) -> Result<PaymentExplanation, EngineError> {
    let facts = engine.explain_payment(id).await?;
    let keys = [
        Action::cancel_key(id),
        Action::capture_key(id),
        Action::refund_key(id),
        rules::order_creation_failed_key(id),
        rules::cancel_failed_key(id),
        rules::refund_failed_key(id),
        rules::charged_on_cancelled_key(id),
    ];
    let statuses = payment_statuses(engine, &keys, facts.as_ref()).await?;
    let [cancel, capture, refund, ..] = statuses;
    let mut ledger: Vec<LedgerLine> = Vec::new();
    for (k, s) in keys.iter().zip(statuses) {
        if let Some(s) = s {
            ledger.push(history.line(k.clone(), s).await?);
        }
    }
    let timer = history.timer(id).await?;
    let verdict = match (refund, capture, cancel) {
        (Some(LedgerStatus::Done), _, _) => PaymentVerdict::Refunded,
        (_, Some(LedgerStatus::Done), _) => PaymentVerdict::Captured,
        (_, _, Some(LedgerStatus::Done)) => PaymentVerdict::Cancelled,
        _ => PaymentVerdict::Untouched,
    };
    let rules_now = payment_rules_now(facts.as_ref());
    let because = match verdict {
        PaymentVerdict::Refunded => refunded_because(history, &ledger, &keys[2], facts.as_ref()),
        PaymentVerdict::Captured => captured_because(history, &ledger, &keys[1]),
        PaymentVerdict::Cancelled => cancelled_because(history, &ledger, &keys[0], facts.as_ref()),
        PaymentVerdict::Untouched => {
            untouched_words(facts.as_ref(), cancel, capture, &timer, &rules_now)
        }
    };
    let mut out = PaymentExplanation {
        kind: Kind::Payment,
        id: id.to_string(),
        found: facts.is_some(),
        verdict,
        because,
        source: history.source.clone(),
        currency: None,
        authorized: 0,
        charged: 0,
        refundable: 0,
        payment_interface: None,
        transactions: Vec::new(),
        orders: Vec::new(),
        counts_toward: None,
        timer,
        ledger,
        rules_now,
    };
    if let Some(f) = facts {
        add_payment_facts(&mut out, f);
    }
    Ok(out)
}

/// Where the payment's keys stand in the ledger: cancel, capture, refund and the four markers.
async fn payment_statuses(
    engine: &Engine,
    keys: &[String; 7],
    facts: Option<&PaymentFacts>,
) -> Result<[Option<LedgerStatus>; 7], EngineError> {
    Ok(match facts {
        Some(f) => [
            f.cancel_ledger,
            f.capture_ledger,
            f.refund_ledger,
            f.order_creation_failed,
            f.cancel_failed,
            f.refund_failed,
            f.charged_on_cancelled,
        ],
        None => {
            let mut s = [None; 7];
            for (slot, key) in s.iter_mut().zip(keys) {
                *slot = engine.ledger(key).await?;
            }
            s
        }
    })
}

/// A cancel rule's answer as a decision.
fn cancel_decision(d: &Result<Reason, &'static str>) -> Decision {
    match d {
        Ok(reason) => Decision {
            decision: "cancel",
            reason: Some(*reason),
            because: reason_words(*reason).into(),
        },
        Err(why) => Decision::none(*why),
    }
}

/// A refund rule's answer as a decision, with the amount it would refund.
fn refund_decision(d: &Result<Reason, &'static str>, f: &PaymentFacts) -> Decision {
    match d {
        Ok(reason) => Decision {
            decision: "refund",
            reason: Some(*reason),
            because: format!(
                "{}: {} {} cents charged are refunded",
                reason_words(*reason),
                f.refundable,
                f.currency.as_deref().unwrap_or_default()
            ),
        },
        Err(why) => Decision::none(*why),
    }
}

/// What the rules decide for the payment now: cancels (on a message, at the grace-period
/// check) and the capture.
fn payment_rules_now(facts: Option<&PaymentFacts>) -> PaymentRulesNow {
    match facts {
        Some(f) => PaymentRulesNow {
            cancel_on_message: cancel_decision(&f.cancel_on_message),
            cancel_at_grace_check: cancel_decision(&f.cancel_at_grace_check),
            refund_on_message: refund_decision(&f.refund_on_message, f),
            refund_at_grace_check: refund_decision(&f.refund_at_grace_check, f),
            capture: match (&f.capture, &f.counts_toward) {
                (Some(Ok(amount)), Some(order)) => Decision {
                    decision: "capture",
                    reason: None,
                    because: format!(
                        "order {order} reached the shipment state that triggers the capture: \
                         {amount} {} cents are open",
                        f.currency.as_deref().unwrap_or_default()
                    ),
                },
                (Some(Err(why)), _) => Decision::none(*why),
                _ => Decision::none("no order holds the payment"),
            },
        },
        None => PaymentRulesNow {
            cancel_on_message: Decision::none("the payment is not known"),
            cancel_at_grace_check: Decision::none("the payment is not known"),
            capture: Decision::none("the payment is not known"),
            refund_on_message: Decision::none("the payment is not known"),
            refund_at_grace_check: Decision::none("the payment is not known"),
        },
    }
}

/// " at T by message M (…)": when `key` was written, as far as known.
fn written(ledger: &[LedgerLine], key: &str) -> String {
    let line = ledger.iter().find(|l| l.key == key);
    let mut s = String::new();
    if let Some(stamp) = line.and_then(|l| l.stamp.as_ref()) {
        let _ = write!(s, " {}", stamp);
    }
    s
}

/// A captured payment's verdict in words: when, how much, for which order.
fn captured_because(history: &History, ledger: &[LedgerLine], key: &str) -> String {
    let mut s = format!("captured{}", written(ledger, key));
    if let Some(a) = history.action(key) {
        if let Some(m) = &a.amount {
            let _ = write!(s, ": {} {} cents", m.cent_amount, m.currency_code);
        }
        if let Some(o) = &a.order_id {
            let _ = write!(s, " for order {o}");
        }
    }
    s
}

/// A refunded payment's verdict in words: when, how much, why, and whether the refund failed.
fn refunded_because(
    history: &History,
    ledger: &[LedgerLine],
    key: &str,
    facts: Option<&PaymentFacts>,
) -> String {
    let mut s = format!("refunded{}", written(ledger, key));
    let action = history.action(key);
    let action = action.as_ref();
    if let Some(m) = action.and_then(|a| a.amount.as_ref()) {
        let _ = write!(s, ": {} {} cents", m.cent_amount, m.currency_code);
    }
    let reason = action
        .and_then(|a| a.reason)
        .or_else(|| ledger.iter().find(|l| l.key == key).and_then(|l| l.reason));
    match reason {
        Some(reason) => {
            let _ = write!(
                s,
                ", because {} ({})",
                reason_words(reason),
                reason.as_str()
            );
        }
        None if history.replay => {}
        None => s.push_str(" (refund:… is done in the ledger; the store keeps no reason)"),
    }
    if let Some(o) = action.and_then(|a| a.order_id.as_ref()) {
        let _ = write!(s, " for order {o}");
    }
    let failed = facts.is_some_and(|f| {
        f.payment
            .transactions_in(TransactionType::Refund, TransactionState::Failure)
            .next()
            .is_some()
            && f.refundable > 0
    });
    if let Some(f) = facts.filter(|_| failed) {
        let _ = write!(
            s,
            " — but a refund failed (Refund in Failure): {} {} cents are still charged, and \
             payrules will not refund again",
            f.refundable,
            f.currency.as_deref().unwrap_or_default()
        );
    }
    s
}

/// A cancelled payment's verdict in words: when, why, and whether the cancel failed.
fn cancelled_because(
    history: &History,
    ledger: &[LedgerLine],
    key: &str,
    facts: Option<&PaymentFacts>,
) -> String {
    let mut s = format!("cancelled{}", written(ledger, key));
    let reason = history
        .action(key)
        .and_then(|a| a.reason)
        .or_else(|| ledger.iter().find(|l| l.key == key).and_then(|l| l.reason));
    match reason {
        Some(reason) => {
            let _ = write!(s, ": {} ({})", reason_words(reason), reason.as_str());
        }
        None if history.replay => {}
        None => s.push_str(" (cancel:… is done in the ledger; the store keeps no reason)"),
    }
    if let Some(f) = facts.filter(|f| f.payment.cancel_authorization_failed()) {
        let _ = write!(
            s,
            " — but the cancel failed (CancelAuthorization in Failure): the authorization \
             stands, {} {} cents",
            f.authorized,
            f.currency.as_deref().unwrap_or_default()
        );
        if let Some(o) = &f.counts_toward {
            let _ = write!(s, ", and counts toward order {o}");
            if f.counts_toward_release == Some(LedgerStatus::Done) {
                s.push_str(" (released)");
            }
        }
    }
    s
}

/// The payment's own facts: its orders, money and transactions.
fn add_payment_facts(out: &mut PaymentExplanation, f: PaymentFacts) {
    out.orders = f
        .orders
        .iter()
        .map(|o| OrderRef {
            id: o.id.clone(),
            order_number: o.order_number.clone(),
            order_state: o.order_state,
            shipment_state: o.shipment_state,
            created_at: o.created_at.as_ref().map(format_timestamp),
            holds_payment: f.counts_toward.as_deref() == Some(o.id.as_str()),
        })
        .collect();
    out.currency = f.currency;
    out.authorized = f.authorized;
    out.charged = f.charged;
    out.refundable = f.refundable;
    out.counts_toward = f.counts_toward;
    out.payment_interface = f.payment.payment_method_info.payment_interface.clone();
    out.transactions = f.payment.transactions;
}
