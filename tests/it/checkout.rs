//! Checkout's edges: an empty `{}` answer (the API reference's own example), an outcome this
//! version does not know, a payment Checkout does not manage, ids that need escaping in URLs,
//! a connector that cannot be reached (`ConnectorFailed` under 400), a capture answered 500 on a
//! payment with an earlier partial capture, and Charges a connector added in Initial. commercetools is commercetools-mock; Checkout, which has no local peer, is a stub.
//!
//! Peers are started on first use and never skipped: a missing peer fails the test.

use crate::support::peers;

use crate::support::ctadmin;

use std::time::Duration;

use payrules::commerce::CtpClient;
use payrules::effects::{EffectError, PaymentIntents};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use ctadmin::{Admin, cancel};
use payrules::action::{Action, ActionKind, RuleName};
use payrules::model::Money;

const PROJECT: &str = "payrules-checkout-edges";

fn canceller(mock: &peers::Peer, checkout: &str) -> PaymentIntents {
    let client = CtpClient::with_retry(
        ctadmin::client_settings(mock, PROJECT, checkout),
        3,
        Duration::from_millis(20),
    )
    .unwrap();
    PaymentIntents::new(client, "cancelPayment".into())
}

fn intent_path(payment_id: &str) -> String {
    format!("/{PROJECT}/payment-intents/{payment_id}")
}

#[tokio::test]
async fn an_empty_answer_is_received_never_an_unknown_outcome() {
    let mock = peers::shared_commercetools_mock().await;
    let admin = Admin::new(mock, PROJECT).await;
    let stub = MockServer::start().await;
    let pid = admin.payment(900, &[("Authorization", "Success")]).await;
    Mock::given(method("POST"))
        .and(path(intent_path(&pid)))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .expect(1)
        .mount(&stub)
        .await;
    let effect = canceller(mock, &stub.uri())
        .cancel(&cancel(&pid))
        .await
        .unwrap();
    assert!(effect.applied, "{effect:?}");
    assert!(
        effect.summary.starts_with("cancel received (empty answer;"),
        "{}",
        effect.summary
    );
}

/// The error of the cancel of a fresh authorized payment that Checkout answers with `answer`
/// (called once).
async fn cancel_error_when_checkout_answers(answer: ResponseTemplate) -> EffectError {
    let mock = peers::shared_commercetools_mock().await;
    let admin = Admin::new(mock, PROJECT).await;
    let stub = MockServer::start().await;
    let pid = admin.payment(900, &[("Authorization", "Success")]).await;
    Mock::given(method("POST"))
        .and(path(intent_path(&pid)))
        .respond_with(answer)
        .expect(1)
        .mount(&stub)
        .await;
    canceller(mock, &stub.uri())
        .cancel(&cancel(&pid))
        .await
        .unwrap_err()
}

#[tokio::test]
async fn an_unknown_outcome_is_checked_on_the_payment_and_retried_not_failed() {
    let err = cancel_error_when_checkout_answers(
        ResponseTemplate::new(200).set_body_json(json!({"outcome": "deferred"})),
    )
    .await;
    // The payment shows no cancel: retried later, not recorded as failed for good.
    assert!(
        matches!(&err, EffectError::Transient { detail, .. } if detail.contains("\"deferred\"")),
        "{err}"
    );
}

#[tokio::test]
async fn a_payment_checkout_does_not_manage_is_never_sent_to_checkout() {
    let mock = peers::shared_commercetools_mock().await;
    let admin = Admin::new(mock, PROJECT).await;
    let stub = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"outcome": "approved"})))
        .mount(&stub)
        .await;
    let draft = |interface: &str| {
        json!({
            "amountPlanned": {"currencyCode": "EUR", "centAmount": 900},
            "paymentMethodInfo": {"paymentInterface": interface, "method": "card"},
            "transactions": [{"type": "Authorization", "state": "Success",
                              "amount": {"currencyCode": "EUR", "centAmount": 900}}]
        })
    };
    let foreign = admin.post("payments", draft("stripe-legacy")).await;
    let foreign = foreign["id"].as_str().unwrap().to_string();
    let ours = admin.post("payments", draft("checkout")).await;
    let ours = ours["id"].as_str().unwrap().to_string();
    let only_checkout = canceller(mock, &stub.uri()).with_interfaces(Some(vec!["checkout".into()]));

    let err = only_checkout.cancel(&cancel(&foreign)).await.unwrap_err();
    let EffectError::Permanent { detail } = &err else {
        panic!("reported for a human, not retried: {err}");
    };
    assert!(
        detail.contains("not a Checkout payment") && detail.contains("\"stripe-legacy\""),
        "{detail}"
    );
    assert!(
        stub.received_requests().await.unwrap().is_empty(),
        "nothing was sent to Checkout"
    );

    let done = only_checkout.cancel(&cancel(&ours)).await.unwrap();
    assert_eq!(done.summary, "cancel approved");
    // The default (any interface) sends both.
    let any = canceller(mock, &stub.uri());
    assert!(any.cancel(&cancel(&foreign)).await.unwrap().applied);
}

#[tokio::test]
async fn ids_are_percent_encoded_in_every_url() {
    let stub = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"access_token": "t", "expires_in": 3600, "scope": "manage_project:x"}),
        ))
        .mount(&stub)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(404).set_body_json(
            json!({"statusCode": 404, "message": "not found", "errors": [{"code": "ResourceNotFound"}]}),
        ))
        .mount(&stub)
        .await;
    let mut settings = payrules::config::CommercetoolsSettings {
        project_key: "shop".into(),
        client_id: "id".into(),
        client_secret: payrules::config::Secret::new("s"),
        auth_url: stub.uri(),
        api_url: stub.uri(),
        scopes: None,
        checkout_url: stub.uri(),
        timeout: Duration::from_secs(2),
    };
    settings.scopes = Some("manage_project:shop".into());
    let client = CtpClient::with_retry(settings, 1, Duration::from_millis(1)).unwrap();
    let hostile = "a/b?c#d%e\"f'g h";
    assert!(client.payment(hostile).await.unwrap().is_none());
    assert!(client.order(hostile).await.unwrap().is_none());
    let paths: Vec<String> = stub
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "GET")
        .map(|r| r.url.path().to_string())
        .collect();
    let escaped = "a%2Fb%3Fc%23d%25e%22f%27g%20h";
    assert_eq!(
        paths,
        vec![
            format!("/shop/payments/{escaped}"),
            format!("/shop/orders/{escaped}")
        ]
    );
    // Nothing leaked into a query string or fragment.
    assert!(
        stub.received_requests()
            .await
            .unwrap()
            .iter()
            .all(|r| r.url.query().is_none() && r.url.fragment().is_none()),
        "ids stayed in their path segment"
    );
}

/// The capture capture_on_shipment plans for `payment_id`: `cents` EUR.
fn capture(payment_id: &str, cents: i64) -> Action {
    Action {
        action: ActionKind::CapturePayment,
        rule: RuleName::CaptureOnShipment,
        key: format!("capture:{payment_id}"),
        amount: Some(Money {
            currency_code: "EUR".into(),
            cent_amount: cents,
            fraction_digits: Some(2),
        }),
        reason: None,
        ..cancel(payment_id)
    }
}

/// A payment of `authorized` EUR cents authorized, with `charges` (cents, state) beside it.
async fn payment_with_charges(admin: &Admin, authorized: i64, charges: &[(i64, &str)]) -> String {
    let mut transactions = vec![json!({"type": "Authorization", "state": "Success",
        "amount": {"currencyCode": "EUR", "centAmount": authorized}})];
    transactions.extend(charges.iter().map(|(cents, state)| {
        json!({"type": "Charge", "state": state,
               "amount": {"currencyCode": "EUR", "centAmount": cents}})
    }));
    let p = admin
        .post(
            "payments",
            json!({"amountPlanned": {"currencyCode": "EUR", "centAmount": authorized},
                   "transactions": transactions}),
        )
        .await;
    p["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_connector_that_cannot_be_reached_is_retried_not_failed_for_good() {
    let err = cancel_error_when_checkout_answers(ResponseTemplate::new(400).set_body_json(json!({
        "statusCode": 400,
        "message": "The connector could not be reached.",
        "errors": [{"code": "ConnectorFailed", "message": "The connector could not be reached."}]
    })))
    .await;
    // Recorded as failed, the authorization would stay blocked for good.
    assert!(
        matches!(&err, EffectError::Transient { detail, .. } if detail.contains("could not be reached")),
        "{err}"
    );
}

#[tokio::test]
async fn a_capture_answered_500_counts_only_charges_beyond_the_earlier_ones() {
    let mock = peers::shared_commercetools_mock().await;
    let admin = Admin::new(mock, PROJECT).await;
    let stub = MockServer::start().await;
    // 100.00 authorized, 60.00 captured before: 40.00 is still open.
    let pid = payment_with_charges(&admin, 10000, &[(6000, "Success")]).await;
    Mock::given(method("POST"))
        .and(path(intent_path(&pid)))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({
            "statusCode": 500, "message": "General", "errors": [{"code": "General"}]
        })))
        .expect(1)
        .mount(&stub)
        .await;
    let err = canceller(mock, &stub.uri())
        .capture(&capture(&pid, 10000))
        .await
        .unwrap_err();
    // The payment shows no new Charge: the 40.00 is not captured, so it is tried again (the
    // earlier 60.00 must not pass for this capture).
    assert!(matches!(err, EffectError::Transient { .. }), "{err}");
    let body: serde_json::Value =
        serde_json::from_slice(&stub.received_requests().await.unwrap()[0].body).unwrap();
    assert_eq!(
        body["actions"][0]["amount"],
        json!({"centAmount": 4000, "currencyCode": "EUR"}),
        "only what is still open"
    );
}

#[tokio::test]
async fn a_charge_a_connector_added_in_initial_blocks_a_cancel_and_a_second_capture() {
    let mock = peers::shared_commercetools_mock().await;
    let admin = Admin::new(mock, PROJECT).await;
    let stub = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"outcome": "approved"})))
        .mount(&stub)
        .await;
    // The connector added its Charge (Initial) and is calling the provider.
    let pid = payment_with_charges(&admin, 5000, &[(5000, "Initial")]).await;
    let checkout = canceller(mock, &stub.uri());
    let cancelled = checkout.cancel(&cancel(&pid)).await.unwrap();
    assert!(!cancelled.applied, "{cancelled:?}");
    assert!(
        cancelled.summary.contains("Charge is under way"),
        "{cancelled:?}"
    );
    let captured = checkout.capture(&capture(&pid, 5000)).await.unwrap();
    assert!(captured.applied, "{captured:?}");
    assert!(captured.summary.contains("no call made"), "{captured:?}");
    assert!(
        stub.received_requests().await.unwrap().is_empty(),
        "nothing was sent to Checkout"
    );
}
