//! release_for_fulfillment: an order whose authorized payments cover its total is released.

use std::time::Duration;

use crate::model::{Order, OrderState, Payment, TransactionType};

/// Settings of the release rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRule {
    /// Off: orders are never released.
    pub enabled: bool,
    /// A successful Charge counts as authorized too (auto-capture PSPs).
    pub also_on_charge: bool,
    /// The authorized payments must cover the order total; off: the first authorized
    /// payment releases.
    pub require_full_coverage: bool,
}

impl Default for ReleaseRule {
    fn default() -> Self {
        Self {
            enabled: true,
            also_on_charge: false,
            require_full_coverage: true,
        }
    }
}

/// Settings of the orphan rule; here because both rules are configured together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelRule {
    /// Off: authorizations are never cancelled.
    pub enabled: bool,
    /// How long after an authorization succeeds an order may still appear.
    pub grace_period: Duration,
}

impl Default for CancelRule {
    fn default() -> Self {
        Self {
            enabled: true,
            grace_period: Duration::from_secs(600),
        }
    }
}

impl ReleaseRule {
    /// Whether the payment is authorized in the rule's sense (before exclusions).
    pub fn is_authorized(&self, p: &Payment) -> bool {
        p.has_successful_authorization()
            || (self.also_on_charge
                && p.transactions_in(
                    TransactionType::Charge,
                    crate::model::TransactionState::Success,
                )
                .next()
                .is_some())
    }

    /// What the payment contributes toward an order in `currency`: its successful
    /// Authorization amounts, or with `also_on_charge` the larger of those and its successful
    /// Charges (a captured authorization must not count twice).
    pub fn authorized_amount(&self, p: &Payment, currency: &str) -> i64 {
        let authorized = p.successful_amount(TransactionType::Authorization, currency);
        if self.also_on_charge {
            authorized.max(p.successful_amount(TransactionType::Charge, currency))
        } else {
            authorized
        }
    }
}

/// The outcome of a coverage check that releases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// The payment that completed the coverage.
    pub payment_id: String,
    /// All payments counted.
    pub payment_ids: Vec<String>,
}

/// Decides whether `order` is released, given its payments (those that exist) and which of
/// them this worker cancelled. `trigger` is the payment whose change caused the check.
pub fn decide(
    rule: &ReleaseRule,
    order: &Order,
    payments: &[Payment],
    cancelled_by_us: impl Fn(&str) -> bool,
    trigger: Option<&str>,
) -> Option<Release> {
    if order.order_state == OrderState::Cancelled {
        return None;
    }
    let currency = order.total_price.currency_code.as_str();
    let mut counted = Vec::new();
    let mut covered: i64 = 0;
    for id in order.payment_ids() {
        let Some(p) = payments.iter().find(|p| p.id == id) else {
            continue;
        };
        if !rule.is_authorized(p) || p.has_live_cancel_authorization() || cancelled_by_us(id) {
            continue;
        }
        let amount = rule.authorized_amount(p, currency);
        if amount <= 0 || counted.iter().any(|c| c == id) {
            continue;
        }
        counted.push(id.to_string());
        covered = covered.saturating_add(amount);
    }
    if counted.is_empty() {
        return None;
    }
    if rule.require_full_coverage && covered < order.total_price.cent_amount {
        return None;
    }
    let payment_id = trigger
        .filter(|t| counted.iter().any(|c| c == t))
        .map(str::to_string)
        .or_else(|| counted.last().cloned())?;
    Some(Release {
        payment_id,
        payment_ids: counted,
    })
}
