//! Returns on the data path, against commercetools-mock: an order's lines and return items,
//! written with the order update actions (`addReturnInfo`, `setReturnShipmentState`,
//! `setReturnPaymentState`, `setReturnInfo`), read back through the live view; and the Messages
//! those actions produce, folded into the stream view, give the same lines and return items.

use std::sync::Arc;
use std::time::Duration;

use payrules::commerce::{CtpClient, LiveView};
use payrules::message::decode;
use payrules::model::{Order, ReturnedLine};
use payrules::view::{CommerceView, StreamView};
use serde_json::{Value, json};

use crate::support::ctadmin::{self, Admin};
use crate::support::{ctmessages, peers};

/// The live view of `project` on `mock`.
fn live_view(mock: &peers::Peer, project: &str) -> LiveView {
    let settings = ctadmin::client_settings(mock, project, "http://127.0.0.1:9");
    LiveView::new(CtpClient::with_retry(settings, 3, Duration::from_millis(20)).expect("client"))
}

/// Applies update actions to the order at its current version.
async fn update(admin: &Admin, order_id: &str, actions: Value) -> Value {
    let path = format!("orders/{order_id}");
    let current = admin.get(&path).await;
    admin
        .post(
            &path,
            json!({"version": current["version"], "actions": actions}),
        )
        .await
}

/// An imported order with one line item (2 × 24.95 EUR, 19 % included: gross 49.90) and one
/// custom line item (10.00 EUR, untaxed); its id, line item id and custom line item id.
async fn order_with_lines(admin: &Admin) -> (String, String, String) {
    let sku = peers::unique_name("sku");
    let product_type = admin
        .post(
            "product-types",
            json!({"name": "goods", "description": "goods"}),
        )
        .await;
    admin
        .post(
            "products",
            json!({"productType": {"typeId": "product-type", "id": product_type["id"]},
                   "name": {"en": "Trail Runner"}, "slug": {"en": sku},
                   "masterVariant": {"sku": sku}}),
        )
        .await;
    let order = admin
        .post(
            "orders/import",
            json!({"orderNumber": peers::unique_name("RET"),
                   "totalPrice": {"currencyCode": "EUR", "centAmount": 5990},
                   "lineItems": [{"name": {"en": "Trail Runner"}, "variant": {"sku": sku},
                       "price": {"value": {"currencyCode": "EUR", "centAmount": 2495}},
                       "quantity": 2,
                       "taxRate": {"name": "19%", "amount": 0.19, "includedInPrice": true,
                                   "country": "DE"}}],
                   "customLineItems": [{"name": {"en": "Gift wrap"}, "slug": "gift-wrap",
                       "quantity": 1, "money": {"currencyCode": "EUR", "centAmount": 1000}}]}),
        )
        .await;
    let id = |v: &Value| v["id"].as_str().expect("id").to_string();
    (
        id(&order),
        id(&order["lineItems"][0]),
        id(&order["customLineItems"][0]),
    )
}

/// `addReturnInfo`: the line item's two pairs, one received (`Returned`) and one announced
/// (`Advised`) with the custom line, as two returns.
async fn add_returns(admin: &Admin, order_id: &str, line: &str, custom: &str) {
    update(
        admin,
        order_id,
        json!([{"action": "addReturnInfo", "returnTrackingId": "RT-1",
                "items": [{"quantity": 1, "lineItemId": line, "shipmentState": "Returned"}]}]),
    )
    .await;
    update(
        admin,
        order_id,
        json!([{"action": "addReturnInfo",
                "items": [{"quantity": 1, "customLineItemId": custom,
                           "shipmentState": "Advised"}]}]),
    )
    .await;
}

/// (id, quantity, line, shipment state, payment state) of every return item, in order.
fn items(o: &Order) -> Vec<(String, u64, ReturnedLine, String, String)> {
    o.return_items()
        .map(|i| {
            (
                i.id.clone(),
                i.quantity,
                i.line.clone(),
                i.shipment_state.to_string(),
                i.payment_state.to_string(),
            )
        })
        .collect()
}

fn states(o: &Order) -> Vec<(String, String)> {
    items(o).into_iter().map(|(_, _, _, s, p)| (s, p)).collect()
}

#[tokio::test]
async fn returns_written_with_the_update_actions_read_back_through_the_live_view() {
    let mock = peers::shared_commercetools_mock().await;
    let project = peers::unique_name("payrules-returns");
    let admin = Admin::new(mock, &project).await;
    let view = live_view(mock, &project);
    let (order_id, line, custom) = order_with_lines(&admin).await;

    let read = || async { view.order(&order_id).await.expect("read").expect("order") };
    let o = read().await;
    let [l] = o.line_items.as_slice() else {
        panic!("{:?}", o.line_items)
    };
    assert_eq!((l.id.as_str(), l.quantity), (line.as_str(), 2));
    assert_eq!(l.gross().cent_amount, 4990, "taxedPrice.totalGross");
    let [c] = o.custom_line_items.as_slice() else {
        panic!("{:?}", o.custom_line_items)
    };
    assert_eq!(
        (c.id.as_str(), c.gross().cent_amount),
        (custom.as_str(), 1000)
    );
    assert!(o.return_info.is_empty());

    add_returns(&admin, &order_id, &line, &custom).await;
    let o = read().await;
    assert_eq!(o.return_info.len(), 2);
    let added = items(&o);
    assert_eq!(
        added
            .iter()
            .map(|(_, q, l, s, p)| (*q, l.clone(), s.as_str(), p.as_str()))
            .collect::<Vec<_>>(),
        [
            (
                1,
                ReturnedLine::LineItem(line.clone()),
                "Returned",
                "Initial"
            ),
            (
                1,
                ReturnedLine::CustomLineItem(custom.clone()),
                "Advised",
                "NonRefundable"
            ),
        ]
    );
    let returned_gross = o
        .returned_line(&o.return_info[0].items[0].line)
        .map(|l| l.gross().cent_amount);
    assert_eq!(returned_gross, Some(4990));

    let first = &added[0].0;
    update(
        &admin,
        &order_id,
        json!([{"action": "setReturnShipmentState", "returnItemId": first,
                "shipmentState": "BackInStock"},
               {"action": "setReturnPaymentState", "returnItemId": first,
                "paymentState": "Refunded"}]),
    )
    .await;
    let o = read().await;
    assert_eq!(
        states(&o),
        [
            ("BackInStock".to_string(), "Refunded".to_string()),
            ("Advised".to_string(), "NonRefundable".to_string())
        ]
    );

    update(
        &admin,
        &order_id,
        json!([{"action": "setReturnInfo", "items": [
            {"items": [{"quantity": 2, "lineItemId": line, "shipmentState": "Returned"}]}]}]),
    )
    .await;
    let o = read().await;
    let set = items(&o);
    assert_eq!(set.len(), 1);
    assert_eq!(
        (set[0].1, &set[0].2, set[0].3.as_str(), set[0].4.as_str()),
        (2, &ReturnedLine::LineItem(line), "Returned", "Initial")
    );
    assert!(
        added.iter().all(|a| a.0 != set[0].0),
        "setReturnInfo gives every item a new id"
    );
}

/// The order's Messages from the mock's Messages Query API, as Subscription payloads.
async fn messages_of(admin: &Admin, project: &str, order_id: &str) -> Vec<Value> {
    let page = admin
        .get(&format!(
            "messages?where=resource(id%3D%22{order_id}%22)&sort=sequenceNumber+asc&limit=500"
        ))
        .await;
    page["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|m| {
            let mut m = m.clone();
            m["notificationType"] = json!("Message");
            m["projectKey"] = json!(project);
            m
        })
        .collect()
}

/// The order as a stream view builds it from `messages`, in this order.
async fn folded(messages: &[&Value], order_id: &str) -> Order {
    let view = StreamView::new();
    for m in messages {
        let bytes = serde_json::to_vec(m).expect("json");
        view.observe(&decode(&bytes).unwrap_or_else(|e| panic!("{e}: {m}")));
    }
    view.order(order_id).await.expect("read").expect("order")
}

#[tokio::test]
async fn the_return_messages_fold_into_the_stream_view_as_the_live_view_reads_the_order() {
    // Messages on; nothing is subscribed, so nothing is delivered.
    let mock = ctmessages::commercetools_mock_with_messages("127.0.0.1:9").await;
    let project = peers::unique_name("payrules-returns-msgs");
    let admin = Admin::new(&mock, &project).await;
    let view = Arc::new(live_view(&mock, &project));
    let (order_id, line, custom) = order_with_lines(&admin).await;
    add_returns(&admin, &order_id, &line, &custom).await;
    let first = view
        .order(&order_id)
        .await
        .expect("read")
        .expect("order")
        .return_info[0]
        .items[0]
        .id
        .clone();
    update(
        &admin,
        &order_id,
        json!([{"action": "setReturnShipmentState", "returnItemId": first,
                "shipmentState": "Unusable"}]),
    )
    .await;

    let check = |stage: &'static str| {
        let (admin, project, order_id, view) = (&admin, &project, &order_id, view.clone());
        async move {
            let live = view.order(order_id).await.expect("read").expect("order");
            let messages = messages_of(admin, project, order_id).await;
            let inorder: Vec<&Value> = messages.iter().collect();
            // Reversed, every message twice: the view's stamps order them.
            let shuffled: Vec<&Value> = messages.iter().rev().chain(messages.iter()).collect();
            for stream in [inorder, shuffled] {
                let o = folded(&stream, order_id).await;
                assert_eq!(o.line_items, live.line_items, "{stage}");
                assert_eq!(o.custom_line_items, live.custom_line_items, "{stage}");
                assert_eq!(o.return_info, live.return_info, "{stage}");
                assert_eq!(o.version, live.version, "{stage}");
            }
            messages
        }
    };
    let messages = check("added, shipment changed").await;
    let types: Vec<&str> = messages.iter().filter_map(|m| m["type"].as_str()).collect();
    assert_eq!(
        types,
        [
            "OrderImported",
            "ReturnInfoAdded",
            "ReturnInfoAdded",
            "OrderReturnShipmentStateChanged"
        ]
    );

    update(
        &admin,
        &order_id,
        json!([{"action": "setReturnInfo", "items": [
            {"items": [{"quantity": 2, "lineItemId": line, "shipmentState": "Returned"}]},
            {"items": [{"quantity": 1, "customLineItemId": custom, "shipmentState": "Advised"}]}]}]),
    )
    .await;
    check("set").await;

    // `setReturnPaymentState` produces no Message: the stream view cannot see it.
    let o = view.order(&order_id).await.expect("read").expect("order");
    let item = o.return_info[0].items[0].id.clone();
    update(
        &admin,
        &order_id,
        json!([{"action": "setReturnPaymentState", "returnItemId": item,
                "paymentState": "Refunded"}]),
    )
    .await;
    let live = view.order(&order_id).await.expect("read").expect("order");
    let messages = messages_of(&admin, &project, &order_id).await;
    let streamed = folded(&messages.iter().collect::<Vec<_>>(), &order_id).await;
    assert_eq!(
        messages.last().and_then(|m| m["type"].as_str()),
        Some("ReturnInfoSet")
    );
    assert_eq!(states(&live)[0].1, "Refunded");
    assert_eq!(states(&streamed)[0].1, "Initial");
}

/// A charged Checkout payment of `cents` EUR; its id.
async fn charged_payment(admin: &Admin, cents: i64) -> String {
    let p = admin
        .post(
            "payments",
            json!({"amountPlanned": {"currencyCode": "EUR", "centAmount": cents},
                   "paymentMethodInfo": {"paymentInterface": "checkout-adyen"},
                   "transactions": [
                       {"type": "Authorization", "state": "Success",
                        "amount": {"currencyCode": "EUR", "centAmount": cents}},
                       {"type": "Charge", "state": "Success",
                        "amount": {"currencyCode": "EUR", "centAmount": cents}}]}),
        )
        .await;
    p["id"].as_str().expect("id").to_string()
}

/// The order's newest Message, decoded as a Subscription would deliver it.
async fn newest_message(
    admin: &Admin,
    project: &str,
    order_id: &str,
) -> payrules::message::Message {
    let messages = messages_of(admin, project, order_id).await;
    let m = messages.last().expect("a message");
    decode(&serde_json::to_vec(m).expect("json")).unwrap_or_else(|e| panic!("{e}: {m}"))
}

/// (payment, amount, line, returned quantity) of each return refund planned (the order's
/// release aside).
fn refunds(actions: &[payrules::action::Action]) -> Vec<(String, i64, String, u64)> {
    use payrules::action::ActionKind;
    actions
        .iter()
        .filter(|a| a.action != ActionKind::ReleaseOrder)
        .map(|a| {
            let units = a.returned.as_ref().expect("a return refund names its line");
            assert_eq!(a.reason, Some(payrules::action::Reason::Returned));
            (
                a.payment_id.clone().expect("payment"),
                a.amount.as_ref().map_or(0, |m| m.cent_amount),
                units.line_id.clone(),
                units.returned_quantity,
            )
        })
        .collect()
}

#[tokio::test]
async fn the_live_path_refunds_returned_lines_as_the_scenarios_do() {
    use payrules::effects::PlanOnly;
    use payrules::process::Processor;
    use payrules::rules::{Engine, ReturnRule, Rules};
    use payrules::store::{MemoryStore, Store};

    let mock = ctmessages::commercetools_mock_with_messages("127.0.0.1:9").await;
    let project = peers::unique_name("payrules-return-refunds");
    let admin = Admin::new(&mock, &project).await;
    let (order_id, line, custom) = order_with_lines(&admin).await;
    // A gift card created first takes the first 2000 of any refund; the card the rest.
    let gift = charged_payment(&admin, 2000).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let card = charged_payment(&admin, 3990).await;
    for p in [&gift, &card] {
        update(
            &admin,
            &order_id,
            json!([{"action": "addPayment", "payment": {"typeId": "payment", "id": p}}]),
        )
        .await;
    }
    let rules = Rules {
        refund_on_return: ReturnRule {
            enabled: true,
            ..ReturnRule::default()
        },
        ..Rules::default()
    };
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let engine = Engine::new(Arc::new(live_view(&mock, &project)), store.clone(), rules);
    let process = Processor::new(engine, store.clone(), Arc::new(PlanOnly));
    let now = chrono::Utc::now();

    // One of the line item's two units (gross 4990) comes back: ⌊4990 × 1 / 2⌋ = 2495, split
    // 2000 from the gift card, 495 from the card. The custom line is only announced.
    add_returns(&admin, &order_id, &line, &custom).await;
    let m = newest_message(&admin, &project, &order_id).await;
    let planned = process.message(&m, now).await.expect("decides");
    assert_eq!(
        refunds(&planned),
        [
            (gift.clone(), 2000, line.clone(), 1),
            (card.clone(), 495, line.clone(), 1)
        ]
    );
    for a in planned.iter().filter(|a| a.returned.is_some()) {
        let note = store
            .ledger_entry(&a.key)
            .await
            .expect("read")
            .expect("entry")
            .note;
        let amount = a.amount.as_ref().map_or(0, |m| m.cent_amount);
        assert_eq!(
            note,
            Some(format!("amount={amount} currency=EUR")),
            "{}",
            a.key
        );
    }
    // The same message again, and the return info rewritten with new ids for the same units:
    // nothing more is due.
    assert!(process.message(&m, now).await.expect("decides").is_empty());
    update(
        &admin,
        &order_id,
        json!([{"action": "setReturnInfo", "items": [
            {"items": [{"quantity": 1, "lineItemId": line, "shipmentState": "Returned"}]},
            {"items": [{"quantity": 1, "customLineItemId": custom, "shipmentState": "Advised"}]}]}]),
    )
    .await;
    let m = newest_message(&admin, &project, &order_id).await;
    assert!(
        process.message(&m, now).await.expect("decides").is_empty(),
        "setReturnInfo refunds nothing twice"
    );
    // The announced custom line (1000) arrives. commercetools moves an item's shipment state
    // only from Returned on (the mock holds to it), so an announced item is received by
    // rewriting the return info: the line item's unit again (nothing more due for it) and the
    // custom line now Returned. The gift card has nothing left (our 2000 of it counts until its
    // Refund shows), so the card gives it.
    update(
        &admin,
        &order_id,
        json!([{"action": "setReturnInfo", "items": [
            {"items": [{"quantity": 1, "lineItemId": line, "shipmentState": "Returned"}]},
            {"items": [{"quantity": 1, "customLineItemId": custom, "shipmentState": "Returned"}]}]}]),
    )
    .await;
    let m = newest_message(&admin, &project, &order_id).await;
    let planned = process.message(&m, now).await.expect("decides");
    assert_eq!(refunds(&planned), [(card.clone(), 1000, custom.clone(), 1)]);
}
