//! cancel_orphaned_authorization: an authorization that no order claims is cancelled.

use crate::model::Payment;

/// Why a payment must be left alone, or `None` when its authorization may be cancelled.
/// Evaluated from the current state at the check.
pub fn blocker(payment: &Payment, order_exists: bool) -> Option<&'static str> {
    if !payment.has_successful_authorization() {
        Some("no successful authorization")
    } else if order_exists {
        Some("an order references the payment")
    } else if payment.has_pending_or_successful_charge() {
        Some("a charge is pending or succeeded")
    } else if payment.has_live_cancel_authorization() {
        Some("a cancel authorization is already present")
    } else {
        None
    }
}
