//! What the rules read: the current state of payments and orders.
//!
//! Rules never trust a single message: a `PaymentTransactionStateChanged` carries only a
//! transaction id and a state, and "no order exists" is a query. So every decision re-reads
//! through a [`CommerceView`]. The live implementation asks commercetools; the
//! [`StreamView`] builds the state from the messages themselves (plus optional snapshots),
//! for replay and for tests.

use async_trait::async_trait;

use crate::message::Message;
use crate::model::{Cart, Order, Payment};

mod compact;
pub mod stream;

pub use stream::StreamView;

/// A failed read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    /// Worth retrying later: the API was unreachable, slow or overloaded.
    #[error("commercetools temporarily unavailable: {0}")]
    Unavailable(String),
    /// Retrying the same request will not help (bad credentials, missing scope, bad request).
    #[error("commercetools refused the read: {0}")]
    Refused(String),
}

impl ViewError {
    /// Whether the read may succeed if retried.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ViewError::Unavailable(_))
    }
}

/// What a view can tell of a cart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CartRead {
    /// The view does not read carts (one built from the stream): the caller trusts the
    /// messages it was given.
    NotRead,
    /// The cart as it is now.
    Found(Cart),
    /// No cart with that id exists.
    Missing,
}

/// Reads of current state.
#[async_trait]
pub trait CommerceView: Send + Sync {
    /// The payment with this id, if it exists.
    async fn payment(&self, id: &str) -> Result<Option<Payment>, ViewError>;

    /// The order with this id, if it exists.
    async fn order(&self, id: &str) -> Result<Option<Order>, ViewError>;

    /// Every order whose `paymentInfo` references the payment, in any state, as the query
    /// `paymentInfo(payments(id=:pid))` finds them (any order; the rules allocate).
    async fn orders_for_payment(&self, payment_id: &str) -> Result<Vec<Order>, ViewError>;

    /// The cart with this id. A view built from the stream knows no carts and answers
    /// [`CartRead::NotRead`].
    async fn cart(&self, _id: &str) -> Result<CartRead, ViewError> {
        Ok(CartRead::NotRead)
    }

    /// Sees every decoded message before the rules run. A view built from the stream learns
    /// from it; a live view has nothing to learn and ignores it.
    fn observe(&self, _message: &Message) {}

    /// Whether every read returns the current state (the live API), so a message that only
    /// keeps or blocks an action needs no re-evaluation. A view built from the stream is not:
    /// a late message can complete what an earlier one announced, so it evaluates on every
    /// message.
    fn reads_are_current(&self) -> bool {
        false
    }
}
