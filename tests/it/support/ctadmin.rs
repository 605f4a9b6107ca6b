//! Direct calls to commercetools-mock, to set up the payments, carts and orders a test needs.

use std::time::Duration;

use chrono::Utc;
use payrules::action::{Action, ActionKind, Reason, RuleName};
use payrules::config::{CommercetoolsSettings, Secret};
use serde_json::{Value, json};

use super::peers;

/// The cancel action the orphan rule plans for `payment_id` (grace period expired).
pub(crate) fn cancel(payment_id: &str) -> Action {
    Action {
        action: ActionKind::CancelPayment,
        rule: RuleName::CancelOrphanedAuthorization,
        key: format!("cancel:{payment_id}"),
        payment_id: Some(payment_id.into()),
        order_id: None,
        message_id: None,
        at: Utc::now(),
        order_number: None,
        payment_ids: Vec::new(),
        amount: None,
        reason: Some(Reason::GracePeriodExpired),
        returned: None,
    }
}

/// payrules' client settings for `project` on the mock (the mock accepts any client), with
/// Checkout at `checkout`.
pub(crate) fn client_settings(
    mock: &peers::Peer,
    project: &str,
    checkout: &str,
) -> CommercetoolsSettings {
    CommercetoolsSettings {
        project_key: project.into(),
        client_id: "payrules-test-client".into(),
        client_secret: Secret::new("payrules-test-secret"),
        auth_url: mock.endpoint.clone(),
        api_url: mock.endpoint.clone(),
        scopes: Some(format!("manage_project:{project}")),
        checkout_url: checkout.trim_end_matches('/').to_string(),
        timeout: Duration::from_secs(2),
    }
}

/// A project in the mock, with an admin token.
pub(crate) struct Admin {
    http: reqwest::Client,
    /// `{endpoint}/{projectKey}`.
    pub base: String,
    /// The admin's bearer token.
    pub token: String,
}

impl Admin {
    /// An admin of `project` on `mock`.
    pub(crate) async fn new(mock: &peers::Peer, project: &str) -> Self {
        let token = peers::ctmock_token(
            mock,
            "admin",
            "admin-secret",
            &format!("manage_project:{project}"),
        )
        .await;
        Self {
            http: reqwest::Client::new(),
            base: format!("{}/{project}", mock.endpoint),
            token,
        }
    }

    /// POSTs `body` to `path`, asserting success.
    pub(crate) async fn post(&self, path: &str, body: Value) -> Value {
        let resp = self
            .http
            .post(format!("{}/{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let v: Value = resp.json().await.unwrap();
        assert!(status.is_success(), "POST {path}: {status} {v}");
        v
    }

    /// DELETEs `path` (with its `?version=`), asserting success.
    pub(crate) async fn delete(&self, path: &str) -> Value {
        let resp = self
            .http
            .delete(format!("{}/{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let v: Value = resp.json().await.unwrap();
        assert!(status.is_success(), "DELETE {path}: {status} {v}");
        v
    }

    /// GETs `path`.
    pub(crate) async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}/{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// A payment of `cents` EUR with one transaction per (type, state); the whole payment.
    pub(crate) async fn payment_json(&self, cents: i64, txs: &[(&str, &str)]) -> Value {
        let transactions: Vec<Value> = txs
            .iter()
            .map(|(t, s)| json!({"type": t, "state": s, "amount": {"currencyCode": "EUR", "centAmount": cents}}))
            .collect();
        self.post(
            "payments",
            json!({"amountPlanned": {"currencyCode": "EUR", "centAmount": cents}, "transactions": transactions}),
        )
        .await
    }

    /// Like [`Admin::payment_json`], returning the id.
    pub(crate) async fn payment(&self, cents: i64, txs: &[(&str, &str)]) -> String {
        let p = self.payment_json(cents, txs).await;
        p["id"].as_str().unwrap().to_string()
    }

    /// An order referencing the payment, from a cart whose one custom line item costs the
    /// payment's `amountPlanned` (an empty cart would make a free order, released unpaid).
    pub(crate) async fn order_for(&self, payment_id: &str, number: &str) -> Value {
        let payment = self.get(&format!("payments/{payment_id}")).await;
        let planned = &payment["amountPlanned"];
        let cart = self
            .post("carts", json!({"currency": "EUR", "country": "DE"}))
            .await;
        let cart_id = cart["id"].as_str().unwrap();
        let cart = self
            .post(
                &format!("carts/{cart_id}"),
                json!({"version": cart["version"], "actions": [
                    {"action": "addCustomLineItem", "name": {"en": "goods"}, "slug": "goods",
                     "quantity": 1, "money": {"currencyCode": "EUR", "centAmount": planned["centAmount"]}},
                    {"action": "addPayment", "payment": {"typeId": "payment", "id": payment_id}}]}),
            )
            .await;
        self.post(
            "orders",
            json!({"cart": {"typeId": "cart", "id": cart_id}, "version": cart["version"], "orderNumber": number}),
        )
        .await
    }
}
