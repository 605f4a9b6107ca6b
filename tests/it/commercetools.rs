//! The live commercetools side against a real API implementation (@labdigital/commercetools-mock
//! as a local server), the Checkout API and faults through an HTTP stub (wiremock), and the
//! fulfillment webhook through a receiver that verifies signatures and counts deliveries.

use crate::support::peers;

use crate::support::ctadmin;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use payrules::action::{Action, ActionKind, RuleName};
use payrules::commerce::{CtpClient, Retry};
use payrules::config::{CommercetoolsSettings, OrderUpdate, Secret};
use payrules::effects::webhook::{
    ID_HEADER, KEY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, WEBHOOK_SIGNATURE_HEADER,
    WEBHOOK_TIMESTAMP_HEADER, verify, verify_standard,
};
use payrules::effects::{EffectError, OrderUpdater, PaymentIntents, Webhook};
use payrules::model::Money;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use ctadmin::{Admin, cancel};

const PROJECT: &str = "payrules-test";

fn settings(mock: &peers::Peer, checkout: &str) -> CommercetoolsSettings {
    ctadmin::client_settings(mock, PROJECT, checkout)
}

/// Settings pointing every host at one HTTP stub.
fn stub_settings(stub: &MockServer, secret: &str) -> CommercetoolsSettings {
    CommercetoolsSettings {
        project_key: PROJECT.into(),
        client_id: "id".into(),
        client_secret: Secret::new(secret),
        auth_url: stub.uri(),
        api_url: stub.uri(),
        scopes: None,
        checkout_url: stub.uri(),
        timeout: Duration::from_secs(2),
    }
}

fn client(mock: &peers::Peer, checkout: &str) -> CtpClient {
    CtpClient::with_retry(settings(mock, checkout), 3, Duration::from_millis(20)).unwrap()
}

fn release(order: &Value, payment_id: &str) -> Action {
    Action {
        action: ActionKind::ReleaseOrder,
        rule: RuleName::ReleaseForFulfillment,
        key: format!("release:{}", order["id"].as_str().unwrap()),
        payment_id: Some(payment_id.into()),
        order_id: order["id"].as_str().map(str::to_string),
        message_id: Some("m-1".into()),
        at: Utc::now(),
        order_number: order["orderNumber"].as_str().map(str::to_string),
        payment_ids: vec![payment_id.into()],
        amount: None,
        reason: None,
        returned: None,
    }
}

#[tokio::test]
async fn lookups_find_payments_and_the_order_that_references_a_payment() {
    let mock = peers::shared_commercetools_mock().await;
    let admin = Admin::new(mock, PROJECT).await;
    let paid = admin.payment(1999, &[("Authorization", "Success")]).await;
    let orphan = admin.payment(500, &[("Authorization", "Success")]).await;
    let order = admin.order_for(&paid, "ORD-LOOKUP").await;
    let c = client(mock, "http://127.0.0.1:9");

    let p = c.payment(&paid).await.unwrap().expect("payment exists");
    assert!(p.has_successful_authorization());
    assert_eq!(p.transactions[0].amount.cent_amount, 1999);
    assert!(
        c.payment("00000000-0000-0000-0000-000000000000")
            .await
            .unwrap()
            .is_none()
    );

    let found = c.orders_for_payment(&paid).await.unwrap();
    assert_eq!(found.len(), 1, "one order references the payment");
    assert_eq!(found[0].id, order["id"].as_str().unwrap());
    assert_eq!(found[0].order_number.as_deref(), Some("ORD-LOOKUP"));
    assert!(
        found[0].created_at.is_some(),
        "createdAt is read for allocation"
    );
    assert!(c.orders_for_payment(&orphan).await.unwrap().is_empty());
    // An id with predicate syntax in it is a value, not a predicate.
    assert!(
        c.orders_for_payment("x\") or id is defined or (\"")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn every_order_update_variant_is_applied_once() {
    let mock = peers::shared_commercetools_mock().await;
    let admin = Admin::new(mock, PROJECT).await;
    let c = client(mock, "http://127.0.0.1:9");
    let state_key = peers::unique_name("released");
    admin
        .post(
            "states",
            json!({"key": state_key, "type": "OrderState", "initial": true}),
        )
        .await;
    let variants = vec![
        (
            OrderUpdate::ChangeOrderState {
                order_state: "Confirmed".into(),
            },
            "/orderState",
            json!("Confirmed"),
        ),
        (
            OrderUpdate::ChangeShipmentState {
                shipment_state: "Ready".into(),
            },
            "/shipmentState",
            json!("Ready"),
        ),
        (
            OrderUpdate::TransitionState {
                state_key: state_key.clone(),
            },
            "/state/typeId",
            json!("state"),
        ),
    ];
    for (update, pointer, want) in variants {
        let pid = admin.payment(1000, &[("Authorization", "Success")]).await;
        let order = admin.order_for(&pid, &peers::unique_name("ORD")).await;
        let oid = order["id"].as_str().unwrap();
        let updater = OrderUpdater::new(c.clone(), update.clone());
        let effect = updater.release(&release(&order, &pid)).await.unwrap();
        assert_eq!(effect.summary, "order updated", "{update:?}");
        let after = admin.get(&format!("orders/{oid}")).await;
        assert_eq!(after.pointer(pointer), Some(&want), "{update:?}: {after}");
        let version = after["version"].as_u64().unwrap();
        // A second execution (a redelivery, a crash recovery) sees it done and writes nothing.
        let again = updater.release(&release(&order, &pid)).await.unwrap();
        assert_eq!(again.summary, "order already updated", "{update:?}");
        assert_eq!(
            admin.get(&format!("orders/{oid}")).await["version"]
                .as_u64()
                .unwrap(),
            version
        );
    }
}

#[tokio::test]
async fn a_missing_state_key_is_a_permanent_failure_and_a_cancelled_order_is_not_released() {
    let mock = peers::shared_commercetools_mock().await;
    let admin = Admin::new(mock, PROJECT).await;
    let c = client(mock, "http://127.0.0.1:9");
    let pid = admin.payment(1000, &[("Authorization", "Success")]).await;
    let order = admin.order_for(&pid, &peers::unique_name("ORD")).await;
    let updater = OrderUpdater::new(
        c.clone(),
        OrderUpdate::TransitionState {
            state_key: "no-such-state".into(),
        },
    );
    let err = updater.release(&release(&order, &pid)).await.unwrap_err();
    assert!(
        matches!(&err, EffectError::Permanent { detail } if detail.contains("no-such-state")),
        "{err}"
    );

    let oid = order["id"].as_str().unwrap();
    admin
        .post(&format!("orders/{oid}"), json!({"version": order["version"], "actions": [{"action": "changeOrderState", "orderState": "Cancelled"}]}))
        .await;
    let updater = OrderUpdater::new(
        c,
        OrderUpdate::ChangeShipmentState {
            shipment_state: "Ready".into(),
        },
    );
    // A cancelled order is not released (no webhook either): nothing of it ships.
    let effect = updater.release(&release(&order, &pid)).await.unwrap();
    assert!(
        !effect.applied && effect.summary.contains("cancelled"),
        "{effect:?}"
    );
}

#[tokio::test]
async fn concurrent_releases_conflict_reread_and_write_exactly_once() {
    let mock = peers::shared_commercetools_mock().await;
    let admin = Admin::new(mock, PROJECT).await;
    let c = client(mock, "http://127.0.0.1:9");
    let pid = admin.payment(1000, &[("Authorization", "Success")]).await;
    let order = admin.order_for(&pid, &peers::unique_name("ORD")).await;
    let oid = order["id"].as_str().unwrap().to_string();

    // A stale version is classified as a conflict.
    admin
        .post(&format!("orders/{oid}"), json!({"version": order["version"], "actions": [{"action": "changePaymentState", "paymentState": "Paid"}]}))
        .await;
    let stale = c
        .update_order(
            &oid,
            order["version"].as_u64().unwrap(),
            &[json!({"action": "changeOrderState", "orderState": "Confirmed"})],
        )
        .await
        .unwrap_err();
    assert_eq!(stale.retry, Retry::Conflict, "{stale}");
    assert_eq!(stale.status, Some(409));
    assert!(stale.codes.contains(&"ConcurrentModification".to_string()));

    let before = admin.get(&format!("orders/{oid}")).await["version"]
        .as_u64()
        .unwrap();
    let updater = Arc::new(OrderUpdater::new(
        c,
        OrderUpdate::ChangeOrderState {
            order_state: "Confirmed".into(),
        },
    ));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let u = updater.clone();
        let a = release(&order, &pid);
        tasks.push(tokio::spawn(async move { u.release(&a).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let after = admin.get(&format!("orders/{oid}")).await;
    assert_eq!(after["orderState"], "Confirmed");
    // The mock answers a stale no-op update with 200 instead of 409, so the interleaving of
    // conflicts is proven against a stub below; here: one write, whatever the races.
    assert_eq!(after["version"].as_u64().unwrap(), before + 1);
}

#[tokio::test]
async fn a_409_rereads_redecides_and_retries_with_the_fresh_version() {
    let stub = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": "t", "expires_in": 3600})),
        )
        .mount(&stub)
        .await;
    let order = |version: u64, state: &str| json!({"id": "o1", "version": version, "orderState": state, "totalPrice": {"currencyCode": "EUR", "centAmount": 100}});
    let conflict = json!({"statusCode": 409, "message": "Object o1 has a different version than expected. Expected: 1 - Actual: 2.", "errors": [{"code": "ConcurrentModification", "currentVersion": 2}]});
    // Read v1, write conflicts; read v2 (still Open), write succeeds.
    Mock::given(method("GET"))
        .and(path(format!("/{PROJECT}/orders/o1")))
        .respond_with(ResponseTemplate::new(200).set_body_json(order(1, "Open")))
        .up_to_n_times(1)
        .mount(&stub)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/{PROJECT}/orders/o1")))
        .respond_with(ResponseTemplate::new(200).set_body_json(order(2, "Open")))
        .mount(&stub)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/{PROJECT}/orders/o1")))
        .respond_with(ResponseTemplate::new(409).set_body_json(conflict))
        .up_to_n_times(1)
        .mount(&stub)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/{PROJECT}/orders/o1")))
        .respond_with(ResponseTemplate::new(200).set_body_json(order(3, "Confirmed")))
        .mount(&stub)
        .await;
    let s = stub_settings(&stub, "s");
    let updater = OrderUpdater::new(
        CtpClient::new(s).unwrap(),
        OrderUpdate::ChangeOrderState {
            order_state: "Confirmed".into(),
        },
    );
    let effect = updater
        .release(&release(&json!({"id": "o1", "orderNumber": "1"}), "p1"))
        .await
        .unwrap();
    assert_eq!(effect.summary, "order updated");
    let writes: Vec<u64> = stub
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| {
            r.method == wiremock::http::Method::POST && r.url.path().ends_with("/orders/o1")
        })
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).unwrap()["version"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(writes, vec![1, 2], "the retry carries the re-read version");
}

async fn checkout_stub() -> MockServer {
    MockServer::start().await
}

fn intent_path(payment_id: &str) -> String {
    format!("/{PROJECT}/payment-intents/{payment_id}")
}

#[tokio::test]
async fn cancel_retries_503_then_succeeds_with_the_cancel_action() {
    let mock = peers::shared_commercetools_mock().await;
    let admin = Admin::new(mock, PROJECT).await;
    let stub = checkout_stub().await;
    let pid = admin.payment(700, &[("Authorization", "Success")]).await;
    Mock::given(method("POST"))
        .and(path(intent_path(&pid)))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .expect(1)
        .mount(&stub)
        .await;
    Mock::given(method("POST"))
        .and(path(intent_path(&pid)))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"outcome": "approved"})))
        .expect(1)
        .mount(&stub)
        .await;
    let canceller = PaymentIntents::new(client(mock, &stub.uri()), "cancelPayment".into());
    let first = canceller.cancel(&cancel(&pid)).await.unwrap_err();
    assert!(matches!(first, EffectError::Transient { .. }), "{first}");
    let second = canceller.cancel(&cancel(&pid)).await.unwrap();
    assert_eq!(second.summary, "cancel approved");
    let requests = stub.received_requests().await.unwrap();
    let body: Value = serde_json::from_slice(&requests[1].body).unwrap();
    assert_eq!(
        body,
        json!({"actions": [{"action": "cancelPayment", "merchantReference": format!("cancel:{pid}")}]})
    );
    assert!(requests[1].headers.get("authorization").is_some());
}

#[tokio::test]
async fn cancel_after_a_500_rereads_the_payment_and_does_not_call_twice() {
    let mock = peers::shared_commercetools_mock().await;
    let admin = Admin::new(mock, PROJECT).await;
    let stub = checkout_stub().await;
    let pid = admin.payment(700, &[("Authorization", "Success")]).await;
    // The cancel "happened" although Checkout answered 500: the CancelAuthorization appears.
    let payment = admin.get(&format!("payments/{pid}")).await;
    let admin = Arc::new(admin);
    let hook_admin = admin.clone();
    let pid2 = pid.clone();
    let responder = move |_: &Request| {
        let a = hook_admin.clone();
        let p = pid2.clone();
        let v = payment["version"].clone();
        // Add the CancelAuthorization from a separate thread (the responder is sync).
        std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async move {
                a.post(&format!("payments/{p}"), json!({"version": v, "actions": [{"action": "addTransaction", "transaction": {"type": "CancelAuthorization", "state": "Pending", "amount": {"currencyCode": "EUR", "centAmount": 700}}}]})).await;
            });
        })
        .join()
        .unwrap();
        ResponseTemplate::new(500).set_body_json(
            json!({"statusCode": 500, "message": "General", "errors": [{"code": "General"}]}),
        )
    };
    Mock::given(method("POST"))
        .and(path(intent_path(&pid)))
        .respond_with(responder)
        .expect(1)
        .mount(&stub)
        .await;
    let canceller = PaymentIntents::new(client(mock, &stub.uri()), "cancelPayment".into());
    let effect = canceller.cancel(&cancel(&pid)).await.unwrap();
    assert!(
        effect.applied && effect.summary.contains("already"),
        "{effect:?}"
    );
    // A redelivery finds it too, and makes no call.
    let again = canceller.cancel(&cancel(&pid)).await.unwrap();
    assert!(again.summary.contains("no call made"));
}

#[tokio::test]
async fn cancel_honours_429_retry_after_and_times_out_slow_responses() {
    let mock = peers::shared_commercetools_mock().await;
    let admin = Admin::new(mock, PROJECT).await;
    let stub = checkout_stub().await;
    let limited = admin.payment(700, &[("Authorization", "Success")]).await;
    let slow = admin.payment(700, &[("Authorization", "Success")]).await;
    Mock::given(method("POST"))
        .and(path(intent_path(&limited)))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "7"))
        .mount(&stub)
        .await;
    Mock::given(method("POST"))
        .and(path(intent_path(&slow)))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"outcome": "approved"}))
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&stub)
        .await;
    let canceller = PaymentIntents::new(client(mock, &stub.uri()), "cancelPayment".into());
    match canceller.cancel(&cancel(&limited)).await {
        Err(EffectError::Transient { retry_after, .. }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(7)))
        }
        other => panic!("{other:?}"),
    }
    match canceller.cancel(&cancel(&slow)).await {
        // Sent, answer unknown: re-read like a 500; not visible yet, so it pauses before the
        // retry re-reads again.
        Err(EffectError::Transient {
            detail,
            retry_after,
        }) => {
            assert!(detail.contains("timed out"), "{detail}");
            assert_eq!(retry_after, Some(Duration::from_secs(10)), "{detail}");
        }
        other => panic!("{other:?}"),
    }
}

/// A cancel whose answer timed out after it was sent, and which did take effect: the re-read
/// finds the CancelAuthorization and records it done; Checkout is called once.
#[tokio::test]
async fn a_cancel_that_timed_out_after_sending_is_re_read_not_retried_blind() {
    let mock = peers::shared_commercetools_mock().await;
    let admin = Admin::new(mock, PROJECT).await;
    let stub = checkout_stub().await;
    let pid = admin.payment(700, &[("Authorization", "Success")]).await;
    Mock::given(method("POST"))
        .and(path(intent_path(&pid)))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"outcome": "approved"}))
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&stub)
        .await;
    let canceller = PaymentIntents::new(client(mock, &stub.uri()), "cancelPayment".into());
    let took_effect = async {
        // While payrules waits for the answer, the connector cancels.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let p = admin.get(&format!("payments/{pid}")).await;
        admin
            .post(
                &format!("payments/{pid}"),
                json!({"version": p["version"], "actions": [{"action": "addTransaction", "transaction": {
                    "type": "CancelAuthorization", "state": "Success",
                    "amount": {"currencyCode": "EUR", "centAmount": 700}}}]}),
            )
            .await;
    };
    let action = cancel(&pid);
    let (result, ()) = tokio::join!(canceller.cancel(&action), took_effect);
    let effect = result.expect("the re-read shows the cancel");
    assert!(effect.applied, "{effect:?}");
    let calls = stub.received_requests().await.unwrap_or_default();
    assert_eq!(calls.len(), 1, "called once: {calls:?}");
}

#[tokio::test]
async fn a_rejected_cancel_is_final_and_an_existing_cancel_or_charge_makes_no_call() {
    let mock = peers::shared_commercetools_mock().await;
    let admin = Admin::new(mock, PROJECT).await;
    let stub = checkout_stub().await;
    let rejected = admin.payment(700, &[("Authorization", "Success")]).await;
    let already = admin
        .payment(
            700,
            &[
                ("Authorization", "Success"),
                ("CancelAuthorization", "Pending"),
            ],
        )
        .await;
    let failed_cancel = admin
        .payment(
            700,
            &[
                ("Authorization", "Success"),
                ("CancelAuthorization", "Failure"),
            ],
        )
        .await;
    let charged = admin
        .payment(700, &[("Authorization", "Success"), ("Charge", "Pending")])
        .await;
    Mock::given(method("POST"))
        .and(path(intent_path(&rejected)))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"outcome": "rejected"})))
        .expect(1)
        .mount(&stub)
        .await;
    Mock::given(method("POST"))
        .and(path(intent_path(&failed_cancel)))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"outcome": "received"})))
        .expect(1)
        .mount(&stub)
        .await;
    for quiet in [&already, &charged] {
        Mock::given(method("POST"))
            .and(path(intent_path(quiet)))
            .respond_with(ResponseTemplate::new(200))
            .expect(0)
            .mount(&stub)
            .await;
    }
    let canceller = PaymentIntents::new(client(mock, &stub.uri()), "cancelPayment".into());
    let err = canceller.cancel(&cancel(&rejected)).await.unwrap_err();
    assert!(
        matches!(&err, EffectError::Permanent { detail } if detail.contains("rejected")),
        "{err}"
    );
    assert!(canceller.cancel(&cancel(&already)).await.unwrap().applied);
    let charged_effect = canceller.cancel(&cancel(&charged)).await.unwrap();
    assert!(
        !charged_effect.applied,
        "a charge means the key is not recorded as cancelled"
    );
    assert_eq!(
        canceller
            .cancel(&cancel(&failed_cancel))
            .await
            .unwrap()
            .summary,
        "cancel received"
    );
    stub.verify().await;
}

/// A webhook receiver that verifies both signatures (Standard Webhooks and the deprecated
/// legacy one; the receiver recipes in tests/it/webhook_receivers.rs verify with the libraries) and
/// counts deliveries per key.
struct Receiver {
    secret: Secret,
    deliveries: Arc<Mutex<Vec<(String, Value)>>>,
    bad_signatures: Arc<AtomicUsize>,
    fail_first: Arc<AtomicUsize>,
}

impl Respond for Receiver {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let header = |n: &str| {
            req.headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let ts: i64 = header(TIMESTAMP_HEADER).parse().unwrap_or(0);
        let standard_ts: i64 = header(WEBHOOK_TIMESTAMP_HEADER).parse().unwrap_or(0);
        if !verify(&self.secret, ts, &req.body, &header(SIGNATURE_HEADER))
            || !verify_standard(
                &self.secret,
                &header(ID_HEADER),
                standard_ts,
                &req.body,
                &header(WEBHOOK_SIGNATURE_HEADER),
            )
            || header(ID_HEADER) != header(KEY_HEADER)
            || (Utc::now().timestamp() - standard_ts).abs() > 300
        {
            self.bad_signatures.fetch_add(1, Ordering::SeqCst);
            return ResponseTemplate::new(401);
        }
        if self.fail_first.load(Ordering::SeqCst) > 0 {
            self.fail_first.fetch_sub(1, Ordering::SeqCst);
            return ResponseTemplate::new(502);
        }
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        self.deliveries
            .lock()
            .unwrap()
            .push((header(KEY_HEADER), body));
        ResponseTemplate::new(204)
    }
}

#[tokio::test]
async fn the_webhook_is_signed_retried_on_non_2xx_and_carries_the_release_event() {
    let server = MockServer::start().await;
    let secret = Secret::new("whsec_cmVjZWl2ZXItdGVzdC1rZXktMzItYnl0ZXMtbG9uZyE=");
    let deliveries = Arc::new(Mutex::new(Vec::new()));
    let bad = Arc::new(AtomicUsize::new(0));
    Mock::given(method("POST"))
        .and(path("/hooks/release"))
        .respond_with(Receiver {
            secret: secret.clone(),
            deliveries: deliveries.clone(),
            bad_signatures: bad.clone(),
            fail_first: Arc::new(AtomicUsize::new(2)),
        })
        .mount(&server)
        .await;
    let webhook = Webhook::new(
        format!("{}/hooks/release", server.uri()),
        vec![secret],
        Duration::from_secs(2),
    )
    .unwrap()
    .with_retry(3, Duration::from_millis(10));
    let order = json!({"id": "order-1", "orderNumber": "100042"});
    let effect = webhook.deliver(&release(&order, "pay-1")).await.unwrap();
    assert_eq!(effect.summary, "webhook 204");
    assert_eq!(bad.load(Ordering::SeqCst), 0);
    let got = deliveries.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    let (key, body) = &got[0];
    assert_eq!(key, "release:order-1");
    assert_eq!(body["type"], "order.released");
    assert_eq!(body["schema_version"], 1);
    assert_eq!(body["order_id"], "order-1");
    assert_eq!(body["order_number"], "100042");
    assert_eq!(body["payment_ids"], json!(["pay-1"]));
    assert_eq!(body["key"], "release:order-1");
    assert_eq!(body["message_id"], "m-1");
    assert!(body["released_at"].as_str().unwrap().ends_with('Z'));

    // A receiver with another secret rejects every attempt: transient, never "done".
    let wrong = Webhook::new(
        format!("{}/hooks/release", server.uri()),
        vec![Secret::new("whsec_d3Jvbmc=")],
        Duration::from_secs(2),
    )
    .unwrap()
    .with_retry(2, Duration::from_millis(10));
    assert!(matches!(
        wrong.deliver(&release(&order, "pay-1")).await,
        Err(EffectError::Transient { .. })
    ));
    assert_eq!(bad.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn bad_credentials_are_a_clear_retried_error_without_the_secret() {
    let stub = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"statusCode": 401, "message": "Please provide valid client credentials", "errors": [{"code": "invalid_client"}]})))
        .mount(&stub)
        .await;
    let s = stub_settings(&stub, "super-secret-value");
    let c = CtpClient::with_retry(s.clone(), 3, Duration::from_millis(10)).unwrap();
    let err = c.payment("p").await.unwrap_err();
    // A refused client is an outage an operator fixes (a rotated secret): retried, never
    // recorded as failed for good.
    assert_eq!(err.retry, Retry::Configuration);
    assert!(err.is_retryable());
    let text = format!("{err} {err:?} {c:?} {s:?}");
    assert!(
        text.contains("invalid_client") && text.contains("CTP_CLIENT_SECRET"),
        "{text}"
    );
    assert!(!text.contains("super-secret-value"), "{text}");
}

#[tokio::test]
async fn a_401_refreshes_the_token_once_and_one_refresh_serves_many_callers() {
    let stub = MockServer::start().await;
    let token_calls = Arc::new(AtomicUsize::new(0));
    let calls = token_calls.clone();
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(move |_: &Request| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": format!("tok-{n}"), "token_type": "Bearer", "expires_in": 172800}))
                .set_delay(Duration::from_millis(50))
        })
        .mount(&stub)
        .await;
    // The first token is rejected once; the refreshed one works.
    Mock::given(method("GET"))
        .and(path(format!("/{PROJECT}/payments/p1")))
        .and(wiremock::matchers::header("authorization", "Bearer tok-0"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"statusCode": 401, "errors": [{"code": "invalid_token"}]})),
        )
        .mount(&stub)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/{PROJECT}/payments/p1")))
        .and(wiremock::matchers::header("authorization", "Bearer tok-1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": "p1", "version": 1, "transactions": []})),
        )
        .mount(&stub)
        .await;
    let s = stub_settings(&stub, "s");
    let c = CtpClient::with_retry(s, 3, Duration::from_millis(10)).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move { c.payment("p1").await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().unwrap().id, "p1");
    }
    assert_eq!(
        token_calls.load(Ordering::SeqCst),
        2,
        "one initial token and one refresh for ten callers"
    );
}

fn message(
    id: &str,
    resource: (&str, &str),
    version: u64,
    kind: &str,
    field: &str,
    body: &Value,
) -> String {
    json!({
        "notificationType": "Message",
        "projectKey": PROJECT,
        "id": id,
        "version": 1,
        "sequenceNumber": version,
        "resource": {"typeId": resource.0, "id": resource.1},
        "resourceVersion": version,
        "type": kind,
        field: body,
        "createdAt": Utc::now().to_rfc3339(),
        "lastModifiedAt": Utc::now().to_rfc3339(),
    })
    .to_string()
}

#[tokio::test]
async fn run_over_a_file_with_live_targets_releases_and_cancels_exactly_once() {
    let mock = peers::shared_commercetools_mock().await;
    let admin = Admin::new(mock, PROJECT).await;
    let checkout = MockServer::start().await;
    let receiver = MockServer::start().await;
    let secret = Secret::new("whsec_ZTJlLXdlYmhvb2stc2lnbmluZy1rZXk=");
    let deliveries = Arc::new(Mutex::new(Vec::new()));
    let bad = Arc::new(AtomicUsize::new(0));
    Mock::given(method("POST"))
        .and(path("/release"))
        .respond_with(Receiver {
            secret: secret.clone(),
            deliveries: deliveries.clone(),
            bad_signatures: bad.clone(),
            fail_first: Arc::new(AtomicUsize::new(1)),
        })
        .mount(&receiver)
        .await;

    let paid = admin.payment(2500, &[("Authorization", "Success")]).await;
    let order = admin.order_for(&paid, &peers::unique_name("ORD")).await;
    let oid = order["id"].as_str().unwrap().to_string();
    let orphan = admin.payment(900, &[("Authorization", "Success")]).await;
    Mock::given(method("POST"))
        .and(path(intent_path(&orphan)))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"outcome": "approved"})))
        .expect(1)
        .mount(&checkout)
        .await;
    Mock::given(method("POST"))
        .and(path(intent_path(&paid)))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"outcome": "approved"})))
        .expect(0)
        .mount(&checkout)
        .await;

    let paid_json = admin.get(&format!("payments/{paid}")).await;
    let orphan_json = admin.get(&format!("payments/{orphan}")).await;
    let lines = [
        message(
            "m-1",
            ("payment", &paid),
            1,
            "PaymentCreated",
            "payment",
            &paid_json,
        ),
        message("m-2", ("order", &oid), 1, "OrderCreated", "order", &order),
        message(
            "m-3",
            ("payment", &orphan),
            1,
            "PaymentCreated",
            "payment",
            &orphan_json,
        ),
    ];
    // Every message twice: duplicates must not duplicate effects.
    let mut stream = lines.join("\n");
    stream.push('\n');
    stream.push_str(&lines.join("\n"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stream.jsonl");
    std::fs::write(&file, stream).unwrap();

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_payrules"))
        .arg("run")
        .env_clear()
        .env("PAYRULES_SOURCE", "file")
        .env("PAYRULES_FILE_PATH", &file)
        .env("PAYRULES_STATE_URL", "memory:")
        .env("PAYRULES_GRACE_PERIOD", "1s")
        .env("PAYRULES_ALLOW_SHORT_GRACE_PERIOD", "true")
        .env("PAYRULES_RETRY_DELAY", "100ms")
        .env("CTP_PROJECT_KEY", PROJECT)
        .env("CTP_CLIENT_ID", "payrules-e2e")
        .env("CTP_CLIENT_SECRET", "e2e-client-secret")
        .env("CTP_AUTH_URL", &mock.endpoint)
        .env("CTP_API_URL", &mock.endpoint)
        .env("CTP_SCOPES", format!("manage_project:{PROJECT}"))
        .env("CTP_CHECKOUT_URL", checkout.uri())
        .env(
            "PAYRULES_RELEASE_WEBHOOK_URL",
            format!("{}/release", receiver.uri()),
        )
        .env("PAYRULES_RELEASE_WEBHOOK_SECRET", secret.expose())
        .env("PAYRULES_RELEASE_ORDER_UPDATE", "changeOrderState")
        .env("PAYRULES_RELEASE_ORDER_STATE", "Confirmed")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("e2e-client-secret") && !stderr.contains(secret.expose()),
        "secrets leaked:\n{stderr}"
    );

    let got = deliveries.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "one release delivered: {got:?}\n{stderr}");
    assert_eq!(got[0].0, format!("release:{oid}"));
    assert_eq!(bad.load(Ordering::SeqCst), 0);
    let after = admin.get(&format!("orders/{oid}")).await;
    assert_eq!(after["orderState"], "Confirmed", "{after}\n{stderr}");
    assert_eq!(
        after["version"].as_u64(),
        order["version"].as_u64().map(|v| v + 1),
        "one order update"
    );
    checkout.verify().await;
}

/// The release was decided on one gross total and the order now has another (an edit came in
/// between): the order is not updated, the effect says so, and nothing is sent.
#[tokio::test]
async fn an_order_whose_total_changed_since_the_decision_is_not_updated() {
    let mock = peers::shared_commercetools_mock().await;
    let admin = Admin::new(mock, PROJECT).await;
    let c = client(mock, "http://127.0.0.1:9");
    let pid = admin.payment(1000, &[("Authorization", "Success")]).await;
    let order = admin.order_for(&pid, &peers::unique_name("ORD")).await;
    let total = order["totalPrice"].clone();
    let updater = OrderUpdater::new(
        c,
        OrderUpdate::ChangeOrderState {
            order_state: "Confirmed".into(),
        },
    );
    let mut stale = release(&order, &pid);
    stale.amount = Some(Money {
        currency_code: "EUR".into(),
        cent_amount: total["centAmount"].as_i64().unwrap() + 5000,
        fraction_digits: Some(2),
    });
    let effect = updater.release(&stale).await.unwrap();
    assert!(!effect.applied, "{effect:?}");
    assert!(effect.summary.contains("gross total"), "{effect:?}");
    let oid = order["id"].as_str().unwrap();
    let now = admin.get(&format!("orders/{oid}")).await;
    assert_eq!(now["version"], order["version"], "not updated");

    let mut current = stale.clone();
    current.amount = Some(Money {
        currency_code: total["currencyCode"].as_str().unwrap().into(),
        cent_amount: total["centAmount"].as_i64().unwrap(),
        fraction_digits: Some(2),
    });
    assert!(updater.release(&current).await.unwrap().applied);
    let now = admin.get(&format!("orders/{oid}")).await;
    assert_eq!(now["orderState"], "Confirmed");
}

/// A stub whose token endpoint grants `expires_in`.
async fn token_stub(expires_in: Value) -> MockServer {
    let stub = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"access_token": "tok", "token_type": "Bearer", "expires_in": expires_in}),
        ))
        .mount(&stub)
        .await;
    stub
}

/// Mounts `GET /{PROJECT}/{rest}` answering `response`.
async fn answer_get(stub: &MockServer, rest: &str, response: ResponseTemplate) {
    Mock::given(method("GET"))
        .and(path(format!("/{PROJECT}/{rest}")))
        .respond_with(response)
        .mount(stub)
        .await;
}

fn stub_client(stub: &MockServer, attempts: u32) -> CtpClient {
    CtpClient::with_retry(stub_settings(stub, "s"), attempts, Duration::from_millis(5)).unwrap()
}

#[tokio::test]
async fn a_redirect_is_never_followed_with_the_token_or_a_write() {
    let elsewhere = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": "p", "version": 1, "transactions": []})),
        )
        .mount(&elsewhere)
        .await;
    let stub = token_stub(json!(172_800)).await;
    let to = format!("{}/stolen?token=x", elsewhere.uri());
    for status in [302, 307, 308] {
        answer_get(
            &stub,
            "payments/p",
            ResponseTemplate::new(status).insert_header("Location", to.as_str()),
        )
        .await;
        let err = stub_client(&stub, 1).payment("p").await.unwrap_err();
        assert_eq!(err.retry, Retry::Configuration, "HTTP {status}: {err}");
        assert!(
            err.to_string().contains("redirected to host 127.0.0.1"),
            "{err}"
        );
        assert!(!err.to_string().contains("token=x"), "{err}");
        stub.reset().await;
        Mock::given(method("POST"))
            .and(path("/oauth/token"))
            .respond_with(ResponseTemplate::new(200).set_body_json(
                json!({"access_token": "tok", "token_type": "Bearer", "expires_in": 172_800}),
            ))
            .mount(&stub)
            .await;
    }
    let followed = elsewhere.received_requests().await.unwrap_or_default();
    assert!(followed.is_empty(), "a redirect was followed: {followed:?}");
}

#[tokio::test]
async fn a_404_on_the_orders_query_is_an_error_not_no_orders() {
    let stub = token_stub(json!(172_800)).await;
    answer_get(&stub, "orders", ResponseTemplate::new(404)).await;
    let err = stub_client(&stub, 1)
        .orders_for_payment("p")
        .await
        .expect_err("a 404 must not read as 'no orders' (it would cancel an orphan)");
    assert!(err.is_configuration() && err.is_retryable(), "{err}");
    assert!(err.to_string().contains("CTP_PROJECT_KEY"), "{err}");
    // A successful empty answer is "no orders"; a missing resource is still None.
    stub.reset().await;
    let stub2 = token_stub(json!(172_800)).await;
    answer_get(
        &stub2,
        "orders",
        ResponseTemplate::new(200).set_body_json(json!({"results": []})),
    )
    .await;
    answer_get(&stub2, "payments/gone", ResponseTemplate::new(404)).await;
    let c = stub_client(&stub2, 1);
    assert!(c.orders_for_payment("p").await.unwrap().is_empty());
    assert!(c.payment("gone").await.unwrap().is_none());
}

#[tokio::test]
async fn a_403_or_401_after_refresh_is_a_configuration_outage_not_a_permanent_failure() {
    let stub = token_stub(json!(172_800)).await;
    answer_get(
        &stub,
        "payments/p",
        ResponseTemplate::new(403)
            .set_body_json(json!({"statusCode": 403, "errors": [{"code": "insufficient_scope"}]})),
    )
    .await;
    answer_get(&stub, "payments/q", ResponseTemplate::new(401)).await;
    let c = stub_client(&stub, 1);
    for id in ["p", "q"] {
        let err = c.payment(id).await.unwrap_err();
        assert_eq!(err.retry, Retry::Configuration, "{id}: {err}");
        assert!(err.is_retryable(), "{err}");
    }
}

#[tokio::test]
async fn a_success_body_that_does_not_decode_is_retried_and_a_huge_one_refused() {
    let stub = token_stub(json!(172_800)).await;
    answer_get(
        &stub,
        "payments/html",
        ResponseTemplate::new(200).set_body_string("<html>maintenance</html>"),
    )
    .await;
    let huge = vec![b' '; payrules::commerce::BODY_LIMIT + 1];
    answer_get(
        &stub,
        "payments/huge",
        ResponseTemplate::new(200).set_body_bytes(huge),
    )
    .await;
    let c = stub_client(&stub, 3);
    let err = c.payment("html").await.unwrap_err();
    assert_eq!(err.retry, Retry::Backoff, "{err}");
    let reads = |rest: &'static str| {
        let stub = &stub;
        async move {
            stub.received_requests()
                .await
                .unwrap_or_default()
                .iter()
                .filter(|r| r.url.path().ends_with(rest))
                .count()
        }
    };
    assert_eq!(reads("payments/html").await, 3, "retried, not permanent");
    let err = c.payment("huge").await.unwrap_err();
    assert!(err.to_string().contains("over the limit"), "{err}");
}

#[tokio::test]
async fn retry_after_is_capped_and_an_absurd_token_lifetime_does_not_panic() {
    // u64::MAX seconds: `Instant::now() + lifetime` used to panic.
    let stub = token_stub(json!(u64::MAX)).await;
    answer_get(
        &stub,
        "payments/slow",
        ResponseTemplate::new(429).insert_header("Retry-After", "86400"),
    )
    .await;
    answer_get(
        &stub,
        "payments/p",
        ResponseTemplate::new(200)
            .set_body_json(json!({"id": "p", "version": 1, "transactions": []})),
    )
    .await;
    let c = stub_client(&stub, 1);
    assert_eq!(c.payment("p").await.unwrap().unwrap().id, "p");
    let err = c.payment("slow").await.unwrap_err();
    assert_eq!(err.retry_after(), Some(payrules::commerce::MAX_RETRY_AFTER));
    assert_eq!(payrules::commerce::MAX_RETRY_AFTER, Duration::from_secs(60));
}

/// A release with both effects: the order update moves the order out of the fulfillable
/// states (`Complete`), then the webhook fails. The retry still delivers the webhook — once —
/// although the order no longer looks fulfillable; the order is updated once.
#[tokio::test]
async fn a_release_whose_webhook_failed_after_the_order_update_still_delivers_it_once() {
    use payrules::effects::LiveExecutor;
    use payrules::process::Processor;
    use payrules::rules::{Engine, Rules};
    use payrules::store::{LedgerStatus, MemoryStore, Store};

    let mock = peers::shared_commercetools_mock().await;
    let admin = Admin::new(mock, PROJECT).await;
    let pid = admin.payment(4000, &[("Authorization", "Success")]).await;
    let order = admin.order_for(&pid, &peers::unique_name("ORD")).await;
    let oid = order["id"].as_str().unwrap().to_string();

    let server = MockServer::start().await;
    let secret = Secret::new("whsec_cmVjZWl2ZXItdGVzdC1rZXktMzItYnl0ZXMtbG9uZyE=");
    let deliveries = Arc::new(Mutex::new(Vec::new()));
    Mock::given(method("POST"))
        .respond_with(Receiver {
            secret: secret.clone(),
            deliveries: deliveries.clone(),
            bad_signatures: Arc::new(AtomicUsize::new(0)),
            fail_first: Arc::new(AtomicUsize::new(1)),
        })
        .mount(&server)
        .await;
    let c = client(mock, "http://127.0.0.1:9");
    let webhook = Webhook::new(server.uri(), vec![secret], Duration::from_secs(2))
        .unwrap()
        .with_retry(1, Duration::from_millis(1));
    let executor = LiveExecutor {
        order_update: Some(OrderUpdater::new(
            c.clone(),
            OrderUpdate::ChangeOrderState {
                order_state: "Complete".into(),
            },
        )),
        webhook: Some(webhook),
        payment_intents: None,
    };
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let engine = Engine::new(
        Arc::new(payrules::commerce::LiveView::new(c)),
        store.clone(),
        Rules::default(),
    );
    let processor = Processor::new(engine, store.clone(), Arc::new(executor));
    let created = payrules::message::decode(
        &serde_json::to_vec(&json!({
            "notificationType": "Message", "id": "m-created", "version": 1, "sequenceNumber": 1,
            "resource": {"typeId": "order", "id": oid}, "resourceVersion": 1,
            "type": "OrderCreated", "order": order,
            "createdAt": "2026-11-20T10:00:00.000Z", "lastModifiedAt": "2026-11-20T10:00:00.000Z"
        }))
        .unwrap(),
    )
    .unwrap();

    let first = processor.message(&created, Utc::now()).await;
    assert!(first.is_err(), "the webhook failed: {first:?}");
    let now = admin.get(&format!("orders/{oid}")).await;
    assert_eq!(
        now["orderState"], "Complete",
        "the order update went through"
    );
    assert!(deliveries.lock().unwrap().is_empty());

    let retried = processor
        .message(&created, Utc::now())
        .await
        .expect("retried");
    assert_eq!(retried.len(), 1, "the release is carried out: {retried:?}");
    assert_eq!(deliveries.lock().unwrap().len(), 1, "delivered once");
    let key = Action::release_key(&oid);
    assert_eq!(
        store.ledger_status(&key).await.unwrap(),
        Some(LedgerStatus::Done)
    );
    let again = processor
        .message(&created, Utc::now())
        .await
        .expect("again");
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(deliveries.lock().unwrap().len(), 1, "never twice");
    let version_after = admin.get(&format!("orders/{oid}")).await["version"].clone();
    assert_eq!(version_after, now["version"], "the order was updated once");
}

/// How the credentials fail while the grace-period check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// The secret was rotated: the API rejects the token and the token endpoint the client
    /// (401 invalid_client).
    TokenEndpoint,
    /// A scope was removed: the API answers 403 insufficient_scope.
    Forbidden,
}

/// commercetools (token endpoint, API) and Checkout in one stub, for one orphaned payment
/// whose credentials work for its message, fail from the message's orders query on (the grace
/// check then meets `refusal`), and work again once `fixed`. Counts the refused calls and the
/// cancels sent.
struct Credentials {
    refusal: Refusal,
    payment: Value,
    /// The message's orders query was answered: the credentials fail from then on.
    broken: Arc<std::sync::atomic::AtomicBool>,
    /// The operator fixed them: the token endpoint grants `tok-new`.
    fixed: Arc<std::sync::atomic::AtomicBool>,
    refused: Arc<AtomicUsize>,
    cancels: Arc<AtomicUsize>,
}

impl Respond for Credentials {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let (broken, fixed) = (
            self.broken.load(Ordering::SeqCst),
            self.fixed.load(Ordering::SeqCst),
        );
        let failing = broken && !fixed;
        let refuse = |status: u16, code: &str| {
            self.refused.fetch_add(1, Ordering::SeqCst);
            ResponseTemplate::new(status)
                .set_body_json(json!({"statusCode": status, "errors": [{"code": code}]}))
        };
        let path = req.url.path();
        if path == "/oauth/token" {
            if failing && self.refusal == Refusal::TokenEndpoint {
                return refuse(401, "invalid_client");
            }
            let token = if fixed { "tok-new" } else { "tok-old" };
            return ResponseTemplate::new(200).set_body_json(json!({"access_token": token, "token_type": "Bearer", "expires_in": 172_800, "scope": format!("manage_project:{PROJECT}")}));
        }
        let bearer = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let rotated_away = (failing && self.refusal == Refusal::TokenEndpoint)
            || (fixed && bearer != "Bearer tok-new" && self.refusal == Refusal::TokenEndpoint);
        if rotated_away {
            return refuse(401, "invalid_token");
        }
        if failing {
            return refuse(403, "insufficient_scope");
        }
        let pid = self.payment["id"].as_str().unwrap_or_default();
        if path == format!("/{PROJECT}/payments/{pid}") {
            return ResponseTemplate::new(200).set_body_json(&self.payment);
        }
        if path == format!("/{PROJECT}/orders") {
            self.broken.store(true, Ordering::SeqCst);
            return ResponseTemplate::new(200).set_body_json(json!({"results": []}));
        }
        if path == intent_path(pid) && req.method == wiremock::http::Method::POST {
            self.cancels.fetch_add(1, Ordering::SeqCst);
            return ResponseTemplate::new(200).set_body_json(json!({"outcome": "approved"}));
        }
        ResponseTemplate::new(404)
    }
}

/// An expired or rotated credential (the token endpoint refusing the client, or the API
/// answering 403) while a payment's grace-period check runs: the check is not marked done. Its
/// timer stays pending and is retried (the run, which ends once no timer is left, goes on), and
/// once the credentials work again the orphan's cancel is sent exactly once.
#[tokio::test]
async fn a_grace_check_refused_for_credentials_is_retried_and_cancels_once_fixed() {
    let mock = peers::shared_commercetools_mock().await;
    let admin = Admin::new(mock, PROJECT).await;
    for refusal in [Refusal::TokenEndpoint, Refusal::Forbidden] {
        let payment = admin
            .payment_json(900, &[("Authorization", "Success")])
            .await;
        let pid = payment["id"].as_str().unwrap().to_string();
        let stub = MockServer::start().await;
        let fixed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let refused = Arc::new(AtomicUsize::new(0));
        let cancels = Arc::new(AtomicUsize::new(0));
        Mock::given(wiremock::matchers::any())
            .respond_with(Credentials {
                refusal,
                payment: payment.clone(),
                broken: Arc::default(),
                fixed: fixed.clone(),
                refused: refused.clone(),
                cancels: cancels.clone(),
            })
            .mount(&stub)
            .await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("stream.jsonl");
        let line = message(
            "m-1",
            ("payment", &pid),
            1,
            "PaymentCreated",
            "payment",
            &payment,
        );
        std::fs::write(&file, format!("{line}\n")).unwrap();

        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_payrules"))
            .arg("run")
            .env_clear()
            .env("PAYRULES_SOURCE", "file")
            .env("PAYRULES_FILE_PATH", &file)
            .env("PAYRULES_STATE_URL", "memory:")
            .env("PAYRULES_GRACE_PERIOD", "1s")
            .env("PAYRULES_ALLOW_SHORT_GRACE_PERIOD", "true")
            .env("PAYRULES_RETRY_DELAY", "100ms")
            .env("PAYRULES_RELEASE_ENABLED", "false")
            .env("CTP_PROJECT_KEY", PROJECT)
            .env("CTP_CLIENT_ID", "payrules-e2e")
            .env("CTP_CLIENT_SECRET", "e2e-client-secret")
            .env("CTP_AUTH_URL", stub.uri())
            .env("CTP_API_URL", stub.uri())
            .env("CTP_CHECKOUT_URL", stub.uri())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let reader = {
            use tokio::io::AsyncReadExt;
            let mut stderr = child.stderr.take().unwrap();
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = [0_u8; 4096];
                while let Ok(n) = stderr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    log.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            })
        };
        let failed_checks = || {
            log.lock()
                .unwrap()
                .matches("grace-period check failed; retrying")
                .count()
        };
        // The grace check fails on the refusal, twice at least; the run must not end meanwhile
        // (it ends once no timer is left: a check marked done would end it).
        for _ in 0..600 {
            if failed_checks() >= 2 {
                break;
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "{refusal:?}: the run ended while the credentials were refused: the grace check was given up\n{}",
                log.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(failed_checks() >= 2, "{refusal:?}: {}", log.lock().unwrap());
        assert!(
            refused.load(Ordering::SeqCst) >= 2,
            "{refusal:?}: refused calls"
        );
        assert_eq!(cancels.load(Ordering::SeqCst), 0, "{refusal:?}");
        fixed.store(true, Ordering::SeqCst);
        let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
            .await
            .expect("the run ends once the check has cancelled")
            .unwrap();
        reader.await.unwrap();
        let stderr = log.lock().unwrap().clone();
        assert!(status.success(), "{refusal:?}: {stderr}");
        assert_eq!(
            cancels.load(Ordering::SeqCst),
            1,
            "{refusal:?}: the cancel is sent exactly once\n{stderr}"
        );
        assert!(!stderr.contains("e2e-client-secret"), "{stderr}");
    }
}
