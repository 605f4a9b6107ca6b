//! The commercetools order update on release.
//!
//! The version is always read fresh. Before writing, the order is checked: a cancelled order is
//! not released, and an order that already carries the target value is not written again —
//! which also makes a retry after a 500 or a crash safe. A 409 ConcurrentModification re-reads,
//! re-decides and retries, a bounded number of times.

use serde_json::{Value, json};
use tokio::sync::OnceCell;
use tracing::info;

use super::{Effect, EffectError};
use crate::action::Action;
use crate::commerce::{CtpClient, CtpError, Retry};

/// How the order is updated on release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderUpdate {
    /// `transitionState` to the State with this key.
    TransitionState {
        /// The State's key.
        state_key: String,
    },
    /// `changeOrderState`.
    ChangeOrderState {
        /// e.g. `Confirmed`.
        order_state: String,
    },
    /// `changeShipmentState`.
    ChangeShipmentState {
        /// e.g. `Ready`.
        shipment_state: String,
    },
    /// `setCustomField`.
    SetCustomField {
        /// The field name.
        name: String,
        /// The value.
        value: serde_json::Value,
    },
}

/// Applies the configured update to released orders.
pub struct OrderUpdater {
    /// The commercetools client.
    client: CtpClient,
    /// What to change.
    update: OrderUpdate,
    /// `transitionState`: the State's id, resolved from its key once.
    state_id: OnceCell<String>,
    /// Conflicts tolerated per execution before giving up for now.
    max_attempts: u32,
}

/// Maps a client failure onto the executor's retry classes.
pub(crate) fn effect_error(e: CtpError) -> EffectError {
    if e.is_retryable() {
        EffectError::Transient {
            retry_after: e.retry_after(),
            detail: e.to_string(),
        }
    } else {
        EffectError::Permanent {
            detail: e.to_string(),
        }
    }
}

/// Whether the order's gross total differs from the one the release was decided on (the
/// action's `amount`), in words. The same reading of the total as the rules'
/// ([`crate::model::Order::gross_total`]).
fn total_changed(action: &Action, order: &Value) -> Option<String> {
    let decided = action.amount.as_ref()?;
    let now = serde_json::from_value::<crate::model::Order>(order.clone()).ok()?;
    let now = now.gross_total();
    (now.currency_code != decided.currency_code || now.cent_amount != decided.cent_amount).then(
        || {
            format!(
                "the order's gross total is {} {}, the release was decided on {} {}",
                now.cent_amount, now.currency_code, decided.cent_amount, decided.currency_code
            )
        },
    )
}

impl OrderUpdater {
    /// An updater for `update`.
    pub fn new(client: CtpClient, update: OrderUpdate) -> Self {
        Self {
            client,
            update,
            state_id: OnceCell::new(),
            max_attempts: 5,
        }
    }

    async fn state_id(&self, key: &str) -> Result<&str, EffectError> {
        self.state_id
            .get_or_try_init(|| async {
                match self.client.state_id(key).await {
                    Ok(Some(id)) => Ok(id),
                    Ok(None) => Err(EffectError::Permanent {
                        detail: format!("no State with key {key:?} exists (release.state_key)"),
                    }),
                    Err(e) => Err(effect_error(e)),
                }
            })
            .await
            .map(String::as_str)
    }

    /// The update action, and whether `order` already has its effect.
    async fn plan(&self, order: &Value) -> Result<(Value, bool), EffectError> {
        Ok(match &self.update {
            OrderUpdate::TransitionState { state_key } => {
                let id = self.state_id(state_key).await?;
                let done = order.pointer("/state/id").and_then(Value::as_str) == Some(id);
                (
                    json!({"action": "transitionState", "state": {"typeId": "state", "id": id}}),
                    done,
                )
            }
            OrderUpdate::ChangeOrderState { order_state } => (
                json!({"action": "changeOrderState", "orderState": order_state}),
                order.get("orderState").and_then(Value::as_str) == Some(order_state),
            ),
            OrderUpdate::ChangeShipmentState { shipment_state } => (
                json!({"action": "changeShipmentState", "shipmentState": shipment_state}),
                order.get("shipmentState").and_then(Value::as_str) == Some(shipment_state),
            ),
            OrderUpdate::SetCustomField { name, value } => (
                json!({"action": "setCustomField", "name": name, "value": value}),
                order.pointer(&format!("/custom/fields/{name}")) == Some(value),
            ),
        })
    }

    /// Applies the update to the order of `action`.
    ///
    /// # Errors
    /// Permanent when commercetools refuses the update; transient when it is unavailable or
    /// keeps conflicting. An order that is gone or cancelled is not released (skipped: no
    /// webhook either).
    pub async fn release(&self, action: &Action) -> Result<Effect, EffectError> {
        let Some(order_id) = action.order_id.as_deref() else {
            return Err(EffectError::Permanent {
                detail: "a release without an order id".into(),
            });
        };
        for attempt in 1..=self.max_attempts {
            let order = match self
                .client
                .order_json(order_id)
                .await
                .map_err(effect_error)?
            {
                Some(o) => o,
                None => {
                    return Ok(Effect::skipped(format!(
                        "order {order_id} no longer exists: not released"
                    )));
                }
            };
            if order.get("orderState").and_then(Value::as_str) == Some("Cancelled") {
                return Ok(Effect::skipped(format!(
                    "order {order_id} was cancelled before its release: not released"
                )));
            }
            let (update, done) = self.plan(&order).await?;
            if done {
                return Ok(Effect::applied("order already updated"));
            }
            if let Some(changed) = total_changed(action, &order) {
                // Decided on another total (an edit came in between, or while re-reading
                // after a 409): not released now; the edit's message decides again.
                return Ok(Effect::skipped(changed));
            }
            let version = order.get("version").and_then(Value::as_u64).unwrap_or(0);
            match self.client.update_order(order_id, version, &[update]).await {
                Ok(_) => return Ok(Effect::applied("order updated")),
                Err(e) if matches!(e.retry, Retry::Conflict | Retry::Verify) => {
                    // Someone else changed the order, or the write may have happened: re-read.
                    info!(order_id, attempt, error = %e, "order update: re-reading");
                }
                Err(e) => return Err(effect_error(e)),
            }
        }
        Err(EffectError::Transient {
            detail: format!(
                "order {order_id} kept changing: {} update attempts conflicted",
                self.max_attempts
            ),
            retry_after: None,
        })
    }
}
