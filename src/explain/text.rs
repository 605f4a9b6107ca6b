//! Rendering an explanation as text: verdicts, amounts, transactions and the ledger, in words.

use super::report::{
    Decision, Explanation, GRACE_CHECK, LedgerLine, OrderExplanation, OrderVerdict,
    PaymentExplanation, PaymentRulesNow, PaymentVerdict, Stamp, TimerLine,
};
use crate::action::Reason;
use crate::model::Transaction;
use crate::rules::explain::PaymentFacts;
use crate::store::LedgerStatus;
use std::fmt::{self, Write as _};

pub(super) fn reason_words(reason: Reason) -> &'static str {
    match reason {
        Reason::GracePeriodExpired => "no order referenced it when its grace period ran out",
        Reason::OrderCreationFailed => "Checkout could not create the order for it",
        Reason::OrderCancelled => "every order referencing it is cancelled",
        Reason::Returned => "goods of its order were returned",
    }
}

pub(super) fn untouched_words(
    facts: Option<&PaymentFacts>,
    cancel: Option<LedgerStatus>,
    capture: Option<LedgerStatus>,
    timer: &Option<TimerLine>,
    now: &PaymentRulesNow,
) -> String {
    let Some(f) = facts else {
        return "untouched: the payment is not known".into();
    };
    let mut parts = Vec::new();
    match cancel {
        Some(LedgerStatus::Failed) => {
            parts.push("its cancel was tried and failed for good (ledger: failed)".to_string());
        }
        Some(LedgerStatus::Claimed) => {
            parts.push("a worker is cancelling it now (ledger: claimed)".to_string());
        }
        _ => match &f.cancel_on_message {
            Ok(_) => parts.push(format!(
                "not cancelled yet, but due: {} — the next message about it cancels it",
                now.cancel_on_message.because
            )),
            Err(why) => {
                let mut s = format!("not cancelled: {why}");
                if let Some(o) = &f.counts_toward {
                    let _ = write!(s, " (its money counts toward order {o}");
                    if f.counts_toward_release == Some(LedgerStatus::Done) {
                        s.push_str(", released");
                    }
                    s.push(')');
                }
                if f.cancel_at_grace_check.is_ok() {
                    match timer {
                        Some(TimerLine {
                            due, fired: None, ..
                        }) => {
                            let _ = write!(
                                s,
                                "; its grace-period check at {due} cancels it unless an order appears first"
                            );
                        }
                        Some(_) => {}
                        None => s.push_str(
                            "; its grace-period check cancels it when it comes due unless an order \
                             appears first",
                        ),
                    }
                }
                parts.push(s);
            }
        },
    }
    match capture {
        Some(LedgerStatus::Failed) => {
            parts.push("its capture was tried and failed for good (ledger: failed)".into());
        }
        Some(LedgerStatus::Claimed) => {
            parts.push("a worker is capturing it now (ledger: claimed)".into());
        }
        _ => {
            if let Some(Ok(amount)) = f.capture {
                parts.push(format!(
                    "not captured yet, but due: {amount} {} cents are open",
                    f.currency.as_deref().unwrap_or_default()
                ));
            }
        }
    }
    if f.refundable > 0 {
        match &f.refund_on_message {
            Ok(_) => parts.push(format!(
                "not refunded yet, but due: {}",
                now.refund_on_message.because
            )),
            Err(why) => parts.push(format!(
                "not refunded: {why} ({} {} cents charged)",
                f.refundable,
                f.currency.as_deref().unwrap_or_default()
            )),
        }
    }
    format!("untouched: {}", parts.join("; "))
}

// ------------------------------------------------------------------------------------------------
// Words

/// `174.65 EUR`.
pub(super) fn money(cents: i64, currency: &str, digits: Option<u32>) -> String {
    let digits = digits.unwrap_or(2);
    if digits == 0 {
        return format!("{cents} {currency}");
    }
    let scale = 10i64.saturating_pow(digits);
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    let scale = scale.unsigned_abs();
    format!(
        "{sign}{}.{:0width$} {currency}",
        abs / scale,
        abs % scale,
        width = digits as usize
    )
}

/// "release (covered …)", "no cancel (an order references the payment)".
pub(super) fn decision_words(verb: &str, d: &Decision) -> String {
    if d.decision == "none" {
        format!("no {verb} ({})", d.because)
    } else {
        format!("{verb} ({})", d.because)
    }
}

pub(super) fn transaction_lines(out: &mut String, indent: &str, txs: &[Transaction]) {
    if txs.is_empty() {
        let _ = writeln!(out, "{indent}no transactions");
    }
    for t in txs {
        let _ = writeln!(
            out,
            "{indent}{:<20} {:<8} {:>14}   {}",
            t.kind.as_str(),
            t.state.as_str(),
            money(
                t.amount.cent_amount,
                &t.amount.currency_code,
                t.amount.fraction_digits
            ),
            t.id
        );
    }
}

pub(super) fn ledger_lines(out: &mut String, ledger: &[LedgerLine]) {
    if ledger.is_empty() {
        let _ = writeln!(out, "  ledger:       nothing recorded");
    }
    for (i, l) in ledger.iter().enumerate() {
        let label = if i == 0 { "  ledger:" } else { "" };
        let _ = write!(out, "{label:<16}{} {}", l.key, l.status);
        if let Some(stamp) = &l.stamp {
            let _ = write!(out, " {}", stamp);
        }
        if let Some(note) = l.note {
            let _ = write!(out, " ({note})");
        }
        out.push('\n');
    }
}

/// "at T by message M (Type, file:line)".
impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        if let Some(at) = &self.at {
            let _ = write!(s, "at {at} ");
        }
        match (&self.message_id, &self.message_type, &self.origin) {
            (Some(id), t, o) => {
                let _ = write!(s, "by message {id}");
                let detail: Vec<&str> = [t, o].into_iter().flatten().map(String::as_str).collect();
                if !detail.is_empty() {
                    let _ = write!(s, " ({})", detail.join(", "));
                }
            }
            (None, _, Some(o)) if o == GRACE_CHECK => {
                let _ = write!(s, "by its {o}");
            }
            (None, _, Some(o)) => {
                let _ = write!(s, "({o})");
            }
            (None, _, None) => {}
        }
        f.write_str(s.trim_end())
    }
}

/// The explanation in words, for a person.
impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Explanation::Order(o) => f.write_str(&order_text(o)),
            Explanation::Payment(p) => f.write_str(&payment_text(p)),
        }
    }
}

fn order_text(o: &OrderExplanation) -> String {
    let mut out = String::new();
    let verdict = match o.verdict {
        OrderVerdict::Released => "RELEASED",
        OrderVerdict::NotReleased => "NOT RELEASED",
    };
    let number = o
        .order
        .as_ref()
        .and_then(|s| s.order_number.as_deref())
        .map(|n| format!(" (number {n})"))
        .unwrap_or_default();
    let _ = writeln!(out, "order {}{number}: {verdict}", o.id);
    let _ = writeln!(out, "  {}", o.because);
    let _ = writeln!(out, "  from the {}", o.source);
    out.push('\n');
    if let Some(s) = &o.order {
        let shipment = s.shipment_state.map_or("none".into(), |x| x.to_string());
        let _ = writeln!(
            out,
            "  eligibility:  {} (orderState {}, shipmentState {shipment})",
            if s.fulfillable {
                "can be fulfilled"
            } else {
                "cannot be fulfilled"
            },
            s.order_state
        );
        let g = &s.gross_total;
        let _ = writeln!(
            out,
            "  gross total:  {} ({} cents, {})",
            money(g.cent_amount, &g.currency_code, g.fraction_digits),
            g.cent_amount,
            s.gross_total_from
        );
        let currency = g.currency_code.as_str();
        if o.allocated.is_empty() {
            let _ = writeln!(out, "  allocated:    no payment's money counts toward it");
        }
        for (i, p) in o.allocated.iter().enumerate() {
            let label = if i == 0 { "  allocated:" } else { "" };
            let _ = write!(
                out,
                "{label:<16}payment {}: covered {} (open authorization {}, net charged {} {currency} cents)",
                p.payment_id, p.covered, p.authorized, p.charged
            );
            if let Some(note) = &p.note {
                let _ = write!(out, ": {note}");
            }
            out.push('\n');
            transaction_lines(&mut out, "                  ", &p.transactions);
        }
        for (i, p) in o.allocated_elsewhere.iter().enumerate() {
            let label = if i == 0 { "  elsewhere:" } else { "" };
            let whereto = p.note.as_deref().unwrap_or_default();
            let _ = writeln!(out, "{label:<16}payment {}: {whereto}", p.payment_id);
        }
        let _ = writeln!(
            out,
            "  covered:      {} of {} {currency} cents",
            o.covered, g.cent_amount
        );
    }
    let _ = writeln!(
        out,
        "  rules now:    {}",
        decision_words("release", &o.rules_now.release)
    );
    if o.rules_now.capture.decision != "none"
        || o.rules_now.capture.because != "capture_on_shipment is off"
    {
        let _ = writeln!(
            out,
            "                {}",
            decision_words("capture", &o.rules_now.capture)
        );
    }
    if !o.returns.is_empty() {
        let _ = writeln!(
            out,
            "                {}",
            decision_words("refund_on_return", &o.rules_now.refund_on_return)
        );
    }
    return_lines(&mut out, o);
    ledger_lines(&mut out, &o.ledger);
    out
}

/// "returns: line L: 2 returned, due 666, refunded by payrules 333 (…)".
fn return_lines(out: &mut String, o: &OrderExplanation) {
    for (i, r) in o.returns.iter().enumerate() {
        let label = if i == 0 { "  returns:" } else { "" };
        let _ = write!(
            out,
            "{label:<16}line {}: {} returned, due {}, refunded by payrules {}",
            r.line_id, r.returned_quantity, r.due, r.refunded
        );
        let parts: Vec<String> = r
            .refunds
            .iter()
            .map(|x| format!("{} from payment {} ({})", x.amount, x.payment_id, x.status))
            .collect();
        if !parts.is_empty() {
            let _ = write!(out, ": {}", parts.join(", "));
        }
        out.push('\n');
    }
}

fn payment_text(p: &PaymentExplanation) -> String {
    let mut out = String::new();
    let verdict = match p.verdict {
        PaymentVerdict::Refunded => "REFUNDED",
        PaymentVerdict::Captured => "CAPTURED",
        PaymentVerdict::Cancelled => "CANCELLED",
        PaymentVerdict::Untouched => "UNTOUCHED",
    };
    let _ = writeln!(out, "payment {}: {verdict}", p.id);
    let _ = writeln!(out, "  {}", p.because);
    let _ = writeln!(out, "  from the {}", p.source);
    out.push('\n');
    if p.found {
        payment_money(&mut out, p);
        let _ = writeln!(out, "  transactions:");
        transaction_lines(&mut out, "                ", &p.transactions);
        payment_orders(&mut out, p);
    }
    grace_check_line(&mut out, p);
    ledger_lines(&mut out, &p.ledger);
    payment_rules_lines(&mut out, &p.rules_now);
    out
}

/// "money: authorized …, charged …", and whether payrules' cancel shows on the payment yet.
fn payment_money(out: &mut String, p: &PaymentExplanation) {
    let currency = p.currency.as_deref().unwrap_or("?");
    let _ = write!(
        out,
        "  money:        authorized {}, charged {}, refundable {} {currency} cents",
        p.authorized, p.charged, p.refundable
    );
    if let Some(i) = &p.payment_interface {
        let _ = write!(out, " (payment interface {i})");
    }
    let ours = p
        .ledger
        .iter()
        .any(|l| l.key.starts_with("cancel:") && l.status != "failed");
    let visible = p
        .transactions
        .iter()
        .any(|t| t.kind == crate::model::TransactionType::CancelAuthorization);
    if ours && !visible {
        out.push_str(
            "\n                payrules' cancel is not on the payment yet: its authorization \
             counts for nothing",
        );
    }
    out.push('\n');
}

/// The orders referencing the payment, one line each.
fn payment_orders(out: &mut String, p: &PaymentExplanation) {
    if p.orders.is_empty() {
        let _ = writeln!(out, "  orders:       none reference it");
    }
    for (i, o) in p.orders.iter().enumerate() {
        let label = if i == 0 { "  orders:" } else { "" };
        let _ = write!(out, "{label:<16}order {}", o.id);
        if let Some(n) = &o.order_number {
            let _ = write!(out, " (number {n})");
        }
        let _ = write!(out, ", {}", o.order_state);
        if let Some(s) = o.shipment_state {
            let _ = write!(out, ", shipment {s}");
        }
        if let Some(c) = &o.created_at {
            let _ = write!(out, ", created {c}");
        }
        if o.holds_payment {
            out.push_str(": its money counts toward this order");
        }
        out.push('\n');
    }
}

/// The payment's grace-period check: when due, scheduled and fired.
fn grace_check_line(out: &mut String, p: &PaymentExplanation) {
    match &p.timer {
        Some(t) => {
            let _ = write!(out, "  grace check:  due at {}", t.due);
            let scheduled = t.scheduled.to_string();
            if !scheduled.is_empty() {
                let _ = write!(out, ", scheduled {scheduled}");
            }
            match &t.fired {
                Some(f) => {
                    let _ = write!(out, "; fired {}", f);
                }
                None => out.push_str("; not fired yet"),
            }
            out.push('\n');
        }
        None if p.source.starts_with("replay") => {
            let _ = writeln!(
                out,
                "  grace check:  none (never seen with authorized money)"
            );
        }
        None => {
            let _ = writeln!(out, "  grace check:  not readable from the store");
        }
    }
}

/// What the rules decide for the payment now.
fn payment_rules_lines(out: &mut String, r: &PaymentRulesNow) {
    let _ = writeln!(
        out,
        "  rules now:    on a message: {}",
        decision_words("cancel", &r.cancel_on_message)
    );
    let _ = writeln!(
        out,
        "                at its grace check: {}",
        decision_words("cancel", &r.cancel_at_grace_check)
    );
    let _ = writeln!(
        out,
        "                {}",
        decision_words("capture", &r.capture)
    );
    let _ = writeln!(
        out,
        "                on a message: {}",
        decision_words("refund", &r.refund_on_message)
    );
    let _ = writeln!(
        out,
        "                at its grace check: {}",
        decision_words("refund", &r.refund_at_grace_check)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_in_words() {
        assert_eq!(money(17465, "EUR", Some(2)), "174.65 EUR");
        assert_eq!(money(5, "EUR", None), "0.05 EUR");
        assert_eq!(money(-120, "EUR", Some(2)), "-1.20 EUR");
        assert_eq!(money(500, "JPY", Some(0)), "500 JPY");
    }
}
