//! capture_on_shipment (opt-in): an order that reached the configured shipment state has the
//! open authorization of its payments captured.

use crate::model::{Order, ShipmentState};

/// Settings of capture_on_shipment (opt-in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureRule {
    /// Off by default: capturing is the merchant's call.
    pub enabled: bool,
    /// The shipment state that triggers the capture: `Shipped` (also when the order is
    /// already `Delivered`) or `Delivered`.
    pub on: ShipmentState,
}

impl Default for CaptureRule {
    fn default() -> Self {
        Self {
            enabled: false,
            on: ShipmentState::Shipped,
        }
    }
}

impl CaptureRule {
    /// Whether the order's shipment state has reached the trigger.
    pub fn is_due(&self, order: &Order) -> bool {
        match (self.on, order.shipment_state) {
            (ShipmentState::Shipped, Some(ShipmentState::Shipped | ShipmentState::Delivered)) => {
                true
            }
            (on, Some(s)) => on == s,
            (_, None) => false,
        }
    }
}
