//! The [`CommerceView`] over the live commercetools API.

use async_trait::async_trait;

use super::{CtpClient, CtpError};
use crate::model::{Order, Payment};
use crate::view::{CartRead, CommerceView, ViewError};

/// Reads current payments and orders from commercetools.
#[derive(Debug, Clone)]
pub struct LiveView {
    /// The shared client.
    client: CtpClient,
}

impl LiveView {
    /// A view over `client`.
    pub fn new(client: CtpClient) -> Self {
        Self { client }
    }
}

fn view_error(e: CtpError) -> ViewError {
    if e.is_retryable() {
        ViewError::Unavailable(e.to_string())
    } else {
        ViewError::Refused(e.to_string())
    }
}

#[async_trait]
impl CommerceView for LiveView {
    async fn payment(&self, id: &str) -> Result<Option<Payment>, ViewError> {
        self.client.payment(id).await.map_err(view_error)
    }

    async fn order(&self, id: &str) -> Result<Option<Order>, ViewError> {
        self.client.order(id).await.map_err(view_error)
    }

    async fn cart(&self, id: &str) -> Result<CartRead, ViewError> {
        Ok(match self.client.cart(id).await.map_err(view_error)? {
            Some(cart) => CartRead::Found(cart),
            None => CartRead::Missing,
        })
    }

    fn reads_are_current(&self) -> bool {
        true
    }

    async fn orders_for_payment(&self, payment_id: &str) -> Result<Vec<Order>, ViewError> {
        self.client
            .orders_for_payment(payment_id)
            .await
            .map_err(view_error)
    }
}
