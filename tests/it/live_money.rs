//! The money rules on the live path: the engine over the live view, against commercetools-mock
//! holding the real payments and orders, reaches the decisions the scenarios (22-35) describe.
//! Each test sets the state up in the mock, then hands the engine the message that announces
//! the last change — as the worker would receive it.

use crate::support::peers;

use crate::support::ctadmin;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use payrules::action::{Action, ActionKind, Reason, RuleName};
use payrules::commerce::{CtpClient, LiveView};
use payrules::message::decode;
use payrules::model::ShipmentState;
use payrules::rules::{Engine, Rules};
use payrules::store::MemoryStore;
use serde_json::{Value, json};

use ctadmin::Admin;

const PROJECT: &str = "payrules-money";

async fn setup() -> (Admin, Engine) {
    setup_with(Rules::default()).await
}

/// commercetools-mock with a fresh project client, and an engine over its live view.
pub(crate) async fn setup_with(rules: Rules) -> (Admin, Engine) {
    let mock = peers::shared_commercetools_mock().await;
    let admin = Admin::new(mock, PROJECT).await;
    let settings = ctadmin::client_settings(mock, PROJECT, "http://127.0.0.1:9");
    let client = CtpClient::with_retry(settings, 3, Duration::from_millis(20)).expect("client");
    let engine = Engine::new(
        Arc::new(LiveView::new(client)),
        Arc::new(MemoryStore::new()),
        rules,
    );
    (admin, engine)
}

/// A payment with these (type, state, cents) transactions; its id and transaction ids.
async fn payment(admin: &Admin, txs: &[(&str, &str, i64)]) -> (String, Vec<String>) {
    let transactions: Vec<Value> = txs
        .iter()
        .map(|(t, s, c)| json!({"type": t, "state": s, "amount": {"currencyCode": "EUR", "centAmount": c}}))
        .collect();
    let p = admin
        .post(
            "payments",
            json!({"amountPlanned": {"currencyCode": "EUR", "centAmount": 5000}, "transactions": transactions}),
        )
        .await;
    let ids = p["transactions"]
        .as_array()
        .expect("transactions")
        .iter()
        .map(|t| t["id"].as_str().expect("id").to_string())
        .collect();
    (p["id"].as_str().expect("id").to_string(), ids)
}

/// Applies update actions to a resource (`payments/ID` or `orders/ID`) at its current version.
pub(crate) async fn update(admin: &Admin, path: &str, actions: Value) -> Value {
    let current = admin.get(path).await;
    admin
        .post(
            path,
            json!({"version": current["version"], "actions": actions}),
        )
        .await
}

/// An imported order of `cents` EUR in `state`, referencing the payments.
async fn order(admin: &Admin, cents: i64, state: &str, payments: &[&str]) -> String {
    let o = admin
        .post(
            "orders/import",
            json!({"orderNumber": format!("M-{}", Utc::now().timestamp_nanos_opt().unwrap_or_default()),
                   "totalPrice": {"currencyCode": "EUR", "centAmount": cents}, "orderState": state}),
        )
        .await;
    let id = o["id"].as_str().expect("id").to_string();
    for p in payments {
        update(
            admin,
            &format!("orders/{id}"),
            json!([{"action": "addPayment", "payment": {"typeId": "payment", "id": p}}]),
        )
        .await;
    }
    // createdAt has millisecond resolution: keep orders apart.
    tokio::time::sleep(Duration::from_millis(5)).await;
    id
}

fn message(kind: &str, type_id: &str, id: &str, fields: Value) -> payrules::message::Message {
    let mut m = json!({
        "notificationType": "Message", "id": uuid_like(), "version": 1, "sequenceNumber": 9,
        "resource": {"typeId": type_id, "id": id}, "resourceVersion": 9, "type": kind,
        "createdAt": "2026-11-20T10:00:00.000Z", "lastModifiedAt": "2026-11-20T10:00:00.000Z"
    });
    if let (Some(m), Some(f)) = (m.as_object_mut(), fields.as_object()) {
        m.extend(f.clone());
    }
    decode(&serde_json::to_vec(&m).expect("json")).expect("decodes")
}

/// Hands the engine the message announcing a change already made in the mock.
async fn announce(
    engine: &Engine,
    kind: &str,
    type_id: &str,
    id: &str,
    fields: Value,
) -> Vec<Action> {
    let m = message(kind, type_id, id, fields);
    engine.on_message(&m, Utc::now()).await.expect("decides")
}

fn uuid_like() -> String {
    format!(
        "msg-{}",
        Utc::now().timestamp_nanos_opt().unwrap_or_default()
    )
}

async fn order_message(admin: &Admin, engine: &Engine, oid: &str) -> Vec<Action> {
    let o = admin.get(&format!("orders/{oid}")).await;
    let m = message("OrderCreated", "order", oid, json!({"order": o}));
    engine.on_message(&m, Utc::now()).await.expect("decides")
}

fn keys(actions: &[Action]) -> Vec<String> {
    actions.iter().map(|a| a.key.clone()).collect()
}

#[tokio::test]
async fn only_orders_that_can_be_fulfilled_are_released() {
    let (admin, engine) = setup().await;
    let (p1, _) = payment(&admin, &[("Authorization", "Success", 5000)]).await;
    let done = order(&admin, 5000, "Complete", &[&p1]).await;
    assert!(order_message(&admin, &engine, &done).await.is_empty());

    let (p2, _) = payment(&admin, &[("Authorization", "Success", 5000)]).await;
    let shipped = order(&admin, 5000, "Open", &[&p2]).await;
    update(
        &admin,
        &format!("orders/{shipped}"),
        json!([{"action": "changeShipmentState", "shipmentState": "Shipped"}]),
    )
    .await;
    assert!(order_message(&admin, &engine, &shipped).await.is_empty());

    let (p3, _) = payment(&admin, &[("Authorization", "Success", 5000)]).await;
    let ok = order(&admin, 5000, "Confirmed", &[&p3]).await;
    let actions = order_message(&admin, &engine, &ok).await;
    assert_eq!(keys(&actions), [Action::release_key(&ok)]);
}

#[tokio::test]
async fn one_authorization_counts_toward_the_earliest_open_order_only() {
    let (admin, engine) = setup().await;
    let (p, _) = payment(&admin, &[("Authorization", "Success", 5000)]).await;
    let first = order(&admin, 5000, "Open", &[&p]).await;
    let second = order(&admin, 5000, "Open", &[&p]).await;
    assert!(order_message(&admin, &engine, &second).await.is_empty());
    let actions = order_message(&admin, &engine, &first).await;
    assert_eq!(keys(&actions), [Action::release_key(&first)]);
}

#[tokio::test]
async fn a_cancelled_order_holds_no_payment_and_its_replacement_is_released() {
    let (admin, engine) = setup().await;
    let (p, tx) = payment(&admin, &[("Authorization", "Pending", 5000)]).await;
    let _a = order(&admin, 5000, "Cancelled", &[&p]).await;
    let b = order(&admin, 5000, "Open", &[&p]).await;
    update(
        &admin,
        &format!("payments/{p}"),
        json!([{"action": "changeTransactionState", "transactionId": tx[0], "state": "Success"}]),
    )
    .await;
    let actions = announce(
        &engine,
        "PaymentTransactionStateChanged",
        "payment",
        &p,
        json!({"transactionId": tx[0], "state": "Success"}),
    )
    .await;
    assert_eq!(
        keys(&actions),
        [Action::release_key(&b)],
        "no cancel: B holds P"
    );
}

#[tokio::test]
async fn amounts_decide_re_authorization_charges_and_refunds() {
    let (admin, engine) = setup().await;
    let (p, _) = payment(
        &admin,
        &[
            ("Authorization", "Success", 5000),
            ("CancelAuthorization", "Success", 5000),
            ("Authorization", "Success", 5000),
        ],
    )
    .await;
    let o = order(&admin, 5000, "Open", &[&p]).await;
    assert_eq!(
        keys(&order_message(&admin, &engine, &o).await),
        [Action::release_key(&o)]
    );

    let (gift, _) = payment(&admin, &[("Charge", "Success", 2000)]).await;
    let (card, _) = payment(&admin, &[("Authorization", "Success", 8000)]).await;
    let o = order(&admin, 10000, "Open", &[&gift, &card]).await;
    assert_eq!(
        keys(&order_message(&admin, &engine, &o).await),
        [Action::release_key(&o)]
    );

    let (refunded, _) = payment(
        &admin,
        &[("Charge", "Success", 3000), ("Refund", "Success", 3000)],
    )
    .await;
    let o = order(&admin, 3000, "Open", &[&refunded]).await;
    assert!(order_message(&admin, &engine, &o).await.is_empty());
}

#[tokio::test]
async fn a_cancel_authorization_failing_is_not_inert_and_releases() {
    let (admin, engine) = setup().await;
    let (p, tx) = payment(
        &admin,
        &[
            ("Authorization", "Success", 5000),
            ("CancelAuthorization", "Pending", 5000),
        ],
    )
    .await;
    let o = order(&admin, 5000, "Open", &[&p]).await;
    assert!(order_message(&admin, &engine, &o).await.is_empty());
    update(
        &admin,
        &format!("payments/{p}"),
        json!([{"action": "changeTransactionState", "transactionId": tx[1], "state": "Failure"}]),
    )
    .await;
    let m = message(
        "PaymentTransactionStateChanged",
        "payment",
        &p,
        json!({"transactionId": tx[1], "state": "Failure"}),
    );
    assert!(!engine.is_inert(&m));
    let actions = engine.on_message(&m, Utc::now()).await.expect("decides");
    assert_eq!(keys(&actions), [Action::release_key(&o)]);
}

#[tokio::test]
async fn an_order_cancelled_cancels_its_authorization_unless_another_order_holds_it() {
    let (admin, engine) = setup().await;
    let (p, _) = payment(&admin, &[("Authorization", "Success", 5000)]).await;
    let o = order(&admin, 5000, "Open", &[&p]).await;
    update(
        &admin,
        &format!("orders/{o}"),
        json!([{"action": "changeOrderState", "orderState": "Cancelled"}]),
    )
    .await;
    let actions = announce(
        &engine,
        "OrderStateChanged",
        "order",
        &o,
        json!({"orderState": "Cancelled"}),
    )
    .await;
    assert_eq!(keys(&actions), [Action::cancel_key(&p)]);
    assert_eq!(actions[0].rule, RuleName::CancelOnOrderCancelled);
    assert_eq!(actions[0].reason, Some(Reason::OrderCancelled));
    assert_eq!(actions[0].order_id.as_deref(), Some(o.as_str()));

    let (q, _) = payment(&admin, &[("Authorization", "Success", 5000)]).await;
    let cancelled = order(&admin, 5000, "Open", &[&q]).await;
    let _other = order(&admin, 5000, "Open", &[&q]).await;
    update(
        &admin,
        &format!("orders/{cancelled}"),
        json!([{"action": "changeOrderState", "orderState": "Cancelled"}]),
    )
    .await;
    let actions = announce(
        &engine,
        "OrderStateChanged",
        "order",
        &cancelled,
        json!({"orderState": "Cancelled"}),
    )
    .await;
    assert!(
        actions
            .iter()
            .all(|a| a.action != ActionKind::CancelPayment),
        "another open order holds the payment: {actions:?}"
    );
}

#[tokio::test]
async fn a_shipped_order_captures_the_open_authorization() {
    let mut rules = Rules::default();
    rules.capture.enabled = true;
    rules.capture.on = ShipmentState::Shipped;
    let (admin, engine) = setup_with(rules).await;
    let (gift, _) = payment(&admin, &[("Charge", "Success", 2000)]).await;
    let (card, _) = payment(&admin, &[("Authorization", "Success", 8000)]).await;
    let o = order(&admin, 10000, "Open", &[&gift, &card]).await;
    update(
        &admin,
        &format!("orders/{o}"),
        json!([{"action": "changeShipmentState", "shipmentState": "Shipped"}]),
    )
    .await;
    let actions = announce(
        &engine,
        "OrderShipmentStateChanged",
        "order",
        &o,
        json!({"shipmentState": "Shipped"}),
    )
    .await;
    assert_eq!(keys(&actions), [Action::capture_key(&card)]);
    assert_eq!(actions[0].action, ActionKind::CapturePayment);
    assert_eq!(
        actions[0].amount.as_ref().map(|m| m.cent_amount),
        Some(8000)
    );
}

/// A cart of the mock listing the payments; its id.
async fn cart_with(admin: &Admin, payments: &[&str]) -> String {
    let cart = admin
        .post("carts", json!({"currency": "EUR", "country": "DE"}))
        .await;
    let id = cart["id"].as_str().expect("id").to_string();
    let actions: Vec<Value> = payments
        .iter()
        .map(|p| json!({"action": "addPayment", "payment": {"typeId": "payment", "id": p}}))
        .collect();
    if !actions.is_empty() {
        update(admin, &format!("carts/{id}"), json!(actions)).await;
    }
    id
}

/// Checkout's event that it could not create the order from `cart` for `payment`.
async fn order_creation_failed(engine: &Engine, cart: &str, payment: &str) -> Vec<Action> {
    let event = json!({
        "notificationType": "Event", "id": uuid_like(), "resourceType": "checkout",
        "type": "CheckoutOrderCreationFailed", "createdAt": "2026-11-20T10:47:12.905Z",
        "data": {"projectKey": PROJECT, "cart": {"typeId": "cart", "id": cart},
                 "payments": [{"typeId": "payment", "id": payment}],
                 "errors": [{"code": "OutOfStock", "message": "out of stock"}]}
    });
    let m = decode(&serde_json::to_vec(&event).expect("json")).expect("decodes");
    engine.on_message(&m, Utc::now()).await.expect("decides")
}

/// Trust (issue 23, case 11): anyone able to publish to the topic could send
/// `CheckoutOrderCreationFailed`; it cancels at once only when the cart it names — read by id,
/// strongly consistent — lists the payment and was not ordered. Otherwise nothing is cancelled
/// for it and the grace-period check decides, as for any payment.
#[tokio::test]
async fn an_order_creation_failure_cancels_at_once_only_when_its_cart_confirms_it() {
    let (admin, engine) = setup().await;
    let authorized = [("Authorization", "Success", 5000)];

    let (p, _) = payment(&admin, &authorized).await;
    let cart = cart_with(&admin, &[&p]).await;
    let actions = order_creation_failed(&engine, &cart, &p).await;
    assert_eq!(keys(&actions), [Action::cancel_key(&p)]);
    assert_eq!(actions[0].reason, Some(Reason::OrderCreationFailed));

    // A cart that does not list the payment, and a cart that does not exist.
    let (q, _) = payment(&admin, &authorized).await;
    let other = cart_with(&admin, &[]).await;
    assert!(order_creation_failed(&engine, &other, &q).await.is_empty());
    let missing = "3ded0e30-0000-4000-8000-000000000000";
    assert!(order_creation_failed(&engine, missing, &q).await.is_empty());

    // A cart an order was created from, the order not (yet) found by the orders query — here
    // because the payment was taken off the order, as a just-created order the eventually
    // consistent query does not show yet would be.
    let (r, _) = payment(&admin, &authorized).await;
    let ordered = cart_with(&admin, &[&r]).await;
    let cart = admin.get(&format!("carts/{ordered}")).await;
    let order = admin
        .post(
            "orders",
            json!({"cart": {"typeId": "cart", "id": ordered}, "version": cart["version"]}),
        )
        .await;
    let oid = order["id"].as_str().expect("order id");
    update(
        &admin,
        &format!("orders/{oid}"),
        json!([{"action": "removePayment", "payment": {"typeId": "payment", "id": r}}]),
    )
    .await;
    assert_eq!(
        admin.get(&format!("carts/{ordered}")).await["cartState"],
        "Ordered",
        "the mock marks the cart ordered"
    );
    assert!(
        order_creation_failed(&engine, &ordered, &r)
            .await
            .is_empty()
    );

    // Auto-captured (Authorization and Charge in Success): nothing to cancel, the charged
    // money is refunded at once — and only when the cart confirms the failure too.
    let captured = [
        ("Authorization", "Success", 5000),
        ("Charge", "Success", 5000),
    ];
    let (s, _) = payment(&admin, &captured).await;
    let cart = cart_with(&admin, &[&s]).await;
    let actions = order_creation_failed(&engine, &cart, &s).await;
    assert_eq!(keys(&actions), [Action::refund_key(&s)]);
    assert_eq!(actions[0].reason, Some(Reason::OrderCreationFailed));
    assert_eq!(actions[0].rule, RuleName::RefundOrphanedCharge);
    assert_eq!(
        actions[0].amount.as_ref().map(|m| m.cent_amount),
        Some(5000)
    );
    let (t, _) = payment(&admin, &captured).await;
    let other = cart_with(&admin, &[]).await;
    assert!(order_creation_failed(&engine, &other, &t).await.is_empty());
}
