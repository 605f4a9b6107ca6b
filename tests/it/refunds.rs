//! The refund rules on the live path (issue 25): the engine over the live view, against
//! commercetools-mock holding the payments and orders, decides the refunds scenarios 40–44
//! describe; the Payment Intents executor sends `refundPayment` to a Checkout stub (Checkout has
//! no local peer) with the amount the payment, re-read right before the call, still allows —
//! and after a 500 counts only Refunds beyond those before the call. A partial refund notes its
//! baseline on its claim in PostgreSQL before the call, so neither a takeover after a crash nor
//! the retry after a 500 refunds it twice.

use crate::support::ctadmin;
use crate::support::peers;
use crate::support::pg;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use payrules::action::{Action, ActionKind, Reason, RuleName};
use payrules::commerce::CtpClient;
use payrules::effects::{EffectError, PaymentIntents};
use payrules::message::decode;
use payrules::model::Money;
use payrules::rules::{Engine, RefundOnOrderCancelledRule, Rules};
use payrules::store::{Claim, LedgerStatus, SqlStore, Store, Timer};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::live_money::{setup_with, update};
use ctadmin::Admin;

const PROJECT: &str = "payrules-refunds";

/// A payment with these (type, state, cents) EUR transactions, Checkout's own; its id.
async fn payment(admin: &Admin, txs: &[(&str, &str, i64)]) -> String {
    let transactions: Vec<Value> = txs
        .iter()
        .map(|(t, s, c)| json!({"type": t, "state": s, "amount": {"currencyCode": "EUR", "centAmount": c}}))
        .collect();
    let p = admin
        .post(
            "payments",
            json!({"amountPlanned": {"currencyCode": "EUR", "centAmount": 5000},
                   "paymentMethodInfo": {"paymentInterface": "checkout-adyen"},
                   "transactions": transactions}),
        )
        .await;
    p["id"].as_str().expect("id").to_string()
}

/// An imported order of `cents` EUR in `state`, referencing the payment.
async fn order(admin: &Admin, cents: i64, state: &str, payment_id: &str) -> String {
    let o = admin
        .post(
            "orders/import",
            json!({"orderNumber": format!("R-{}", Utc::now().timestamp_nanos_opt().unwrap_or_default()),
                   "totalPrice": {"currencyCode": "EUR", "centAmount": cents}, "orderState": state}),
        )
        .await;
    let id = o["id"].as_str().expect("id").to_string();
    update(
        admin,
        &format!("orders/{id}"),
        json!([{"action": "addPayment", "payment": {"typeId": "payment", "id": payment_id}}]),
    )
    .await;
    id
}

/// The payment's grace-period check, due now.
async fn grace_check(engine: &Engine, payment_id: &str) -> Vec<Action> {
    let timer = Timer {
        payment_id: payment_id.to_string(),
        due: Utc::now(),
        rechecks: 0,
    };
    engine
        .on_timer(&timer, Utc::now())
        .await
        .expect("decides")
        .actions
}

fn order_cancelled_message(order_id: &str) -> payrules::message::Message {
    let m = json!({
        "notificationType": "Message", "id": format!("msg-{order_id}"), "version": 1,
        "sequenceNumber": 9, "resource": {"typeId": "order", "id": order_id},
        "resourceVersion": 9, "type": "OrderStateChanged", "orderState": "Cancelled",
        "oldOrderState": "Open",
        "createdAt": "2026-11-20T10:00:00.000Z", "lastModifiedAt": "2026-11-20T10:00:00.000Z"
    });
    decode(&serde_json::to_vec(&m).expect("json")).expect("decodes")
}

fn cents(a: &Action) -> Option<i64> {
    a.amount.as_ref().map(|m| m.cent_amount)
}

#[tokio::test]
async fn orphaned_charges_are_refunded_at_the_grace_check_for_what_is_refundable() {
    let (admin, engine) = setup_with(Rules::default()).await;
    // Auto-captured, no order: the refund takes it all, and no cancel is proposed.
    let auto = payment(
        &admin,
        &[
            ("Authorization", "Success", 5000),
            ("Charge", "Success", 5000),
        ],
    )
    .await;
    let actions = grace_check(&engine, &auto).await;
    assert_eq!(actions.len(), 1, "{actions:?}");
    let refund = &actions[0];
    assert_eq!(
        (refund.action, refund.rule, refund.key.as_str()),
        (
            ActionKind::RefundPayment,
            RuleName::RefundOrphanedCharge,
            Action::refund_key(&auto).as_str()
        )
    );
    assert_eq!(
        (cents(refund), refund.reason, refund.order_id.as_deref()),
        (Some(5000), Some(Reason::GracePeriodExpired), None)
    );
    // A direct sale charged back in part: 2000 − 500.
    let kept = payment(
        &admin,
        &[("Charge", "Success", 2000), ("Chargeback", "Success", 500)],
    )
    .await;
    let actions = grace_check(&engine, &kept).await;
    assert_eq!(actions.iter().map(cents).collect::<Vec<_>>(), [Some(1500)]);
    // Someone's refund still Pending: wait (nothing decided now).
    let waiting = payment(
        &admin,
        &[("Charge", "Success", 5000), ("Refund", "Pending", 2000)],
    )
    .await;
    assert!(grace_check(&engine, &waiting).await.is_empty());
    // A direct sale with its order: released, never refunded.
    let sold = payment(&admin, &[("Charge", "Success", 3000)]).await;
    let o = order(&admin, 3000, "Open", &sold).await;
    let actions = grace_check(&engine, &sold).await;
    assert_eq!(
        actions.iter().map(|a| a.key.clone()).collect::<Vec<_>>(),
        [Action::release_key(&o)],
        "the grace check looks at the order again; no refund"
    );
}

#[tokio::test]
async fn a_cancelled_orders_charge_is_refunded_only_with_the_rule_on() {
    let on = Rules {
        refund_on_order_cancelled: RefundOnOrderCancelledRule { enabled: true },
        ..Rules::default()
    };
    for (rules, want) in [(Rules::default(), None), (on, Some(4000))] {
        let (admin, engine) = setup_with(rules).await;
        let p = payment(&admin, &[("Charge", "Success", 4000)]).await;
        let o = order(&admin, 4000, "Cancelled", &p).await;
        let actions = engine
            .on_message(&order_cancelled_message(&o), Utc::now())
            .await
            .expect("decides");
        match want {
            None => assert!(actions.is_empty(), "off by default: {actions:?}"),
            Some(amount) => {
                assert_eq!(actions.len(), 1, "{actions:?}");
                let a = &actions[0];
                assert_eq!(a.rule, RuleName::RefundOnOrderCancelled);
                assert_eq!(a.reason, Some(Reason::OrderCancelled));
                assert_eq!(a.order_id.as_deref(), Some(o.as_str()));
                assert_eq!(cents(a), Some(amount));
            }
        }
    }
}

fn intents(mock: &peers::Peer, checkout: &str) -> PaymentIntents {
    let settings = ctadmin::client_settings(mock, PROJECT, checkout);
    let client = CtpClient::with_retry(settings, 3, Duration::from_millis(20)).expect("client");
    PaymentIntents::new(client, "cancelPayment".into())
        .with_interfaces(Some(vec!["checkout-adyen".into()]))
}

fn refund(payment_id: &str, cents: i64) -> Action {
    Action {
        action: ActionKind::RefundPayment,
        rule: RuleName::RefundOrphanedCharge,
        key: Action::refund_key(payment_id),
        amount: Some(Money {
            currency_code: "EUR".into(),
            cent_amount: cents,
            fraction_digits: Some(2),
        }),
        ..ctadmin::cancel(payment_id)
    }
}

#[tokio::test]
async fn a_refund_asks_only_for_what_is_refundable_and_is_not_counted_made_after_a_500() {
    let mock = peers::shared_commercetools_mock().await;
    let admin = Admin::new(mock, PROJECT).await;
    let stub = MockServer::start().await;
    // 50.00 charged, 20.00 of it being refunded by someone else: 30.00 may still be refunded.
    let pid = payment(
        &admin,
        &[("Charge", "Success", 5000), ("Refund", "Pending", 2000)],
    )
    .await;
    Mock::given(method("POST"))
        .and(path(format!("/{PROJECT}/payment-intents/{pid}")))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({
            "statusCode": 500, "message": "General", "errors": [{"code": "General"}]
        })))
        .expect(1)
        .mount(&stub)
        .await;
    let checkout = intents(mock, &stub.uri());
    let err = checkout.refund(&refund(&pid, 5000)).await.unwrap_err();
    // The payment shows no Refund beyond the earlier 20.00: ours is not made, try again.
    assert!(matches!(err, EffectError::Transient { .. }), "{err}");
    let requests = stub.received_requests().await.expect("recorded");
    let body: Value = serde_json::from_slice(&requests[0].body).expect("JSON body");
    assert_eq!(
        body["actions"][0],
        json!({"action": "refundPayment",
               "amount": {"centAmount": 3000, "currencyCode": "EUR"},
               "merchantReference": Action::refund_key(&pid)}),
        "only what is refundable, under our key"
    );
    // The connector's Refund shows up meanwhile: the retry's pre-check makes no second call.
    update(
        &admin,
        &format!("payments/{pid}"),
        json!([{"action": "addTransaction", "transaction": {"type": "Refund", "state": "Pending",
                 "amount": {"currencyCode": "EUR", "centAmount": 3000}}}]),
    )
    .await;
    let effect = checkout.refund(&refund(&pid, 5000)).await.expect("settled");
    assert!(
        effect.applied && effect.summary.contains("no call made"),
        "{effect:?}"
    );
}

#[tokio::test]
async fn a_refund_of_a_payment_checkout_does_not_manage_is_never_sent() {
    let mock = peers::shared_commercetools_mock().await;
    let admin = Admin::new(mock, PROJECT).await;
    let stub = MockServer::start().await;
    let p = admin
        .post(
            "payments",
            json!({"amountPlanned": {"currencyCode": "EUR", "centAmount": 900},
                   "paymentMethodInfo": {"paymentInterface": "stripe-direct"},
                   "transactions": [{"type": "Charge", "state": "Success",
                                     "amount": {"currencyCode": "EUR", "centAmount": 900}}]}),
        )
        .await;
    let pid = p["id"].as_str().expect("id");
    let err = intents(mock, &stub.uri())
        .refund(&refund(pid, 900))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EffectError::Permanent { detail } if detail.contains("not a Checkout payment")),
        "{err}"
    );
    assert!(stub.received_requests().await.expect("recorded").is_empty());
}

/// What a first attempt writes before refunding 3.33 of a payment showing no Refund yet.
const NOTE_333: &str = "taken_before=0 amount=333 currency=EUR";

/// The refund key's note, as the ledger holds it.
async fn note_of(store: &dyn Store, key: &str) -> Option<String> {
    store
        .ledger_entry(key)
        .await
        .expect("reads")
        .and_then(|e| e.note)
}

/// A worker that claimed the refund `key`, noted [`NOTE_333`], did `before_dying` and was
/// killed before it recorded anything; then the survivor's takeover once the lease passed.
/// The survivor.
async fn taken_over_from_a_dead_worker(
    url: &str,
    key: &str,
    before_dying: impl std::future::Future<Output = ()>,
) -> Arc<dyn Store> {
    let lease = Duration::from_millis(300);
    let dead = SqlStore::connect(url, lease).await.expect("store");
    assert_eq!(dead.claim(key).await.expect("claims"), Claim::Acquired);
    dead.note(key, NOTE_333).await.expect("notes");
    before_dying.await;
    drop(dead); // kill -9: the claim is left to run out
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    let survivor = SqlStore::connect(url, Duration::from_secs(60))
        .await
        .expect("store");
    assert_eq!(
        survivor.claim(key).await.expect("claims"),
        Claim::Acquired,
        "the dead worker's claim is taken over"
    );
    Arc::new(survivor)
}

/// The connector's Refund of 3.33 on the payment: Checkout made the refund.
async fn refund_shows(admin: &Admin, pid: &str) {
    update(
        admin,
        &format!("payments/{pid}"),
        json!([{"action": "addTransaction", "transaction": {"type": "Refund", "state": "Pending",
                 "amount": {"currencyCode": "EUR", "centAmount": 333}}}]),
    )
    .await;
}

/// The stub's `refundPayment` amounts, in order.
async fn refunded_amounts(stub: &MockServer) -> Vec<Value> {
    let requests = stub.received_requests().await.expect("recorded");
    requests
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).expect("JSON body");
            body["actions"][0]["amount"]["centAmount"].clone()
        })
        .collect()
}

/// 10.00 charged, 3.33 to refund (a returned line). The dead worker's call went through: its
/// Refund shows on the payment. 6.67 is still refundable, so a pre-check reading the payment
/// afresh would refund again; the note says the call was made, and none is.
#[tokio::test]
async fn a_partial_refund_a_dead_worker_made_is_not_made_again() {
    let mock = peers::shared_commercetools_mock().await;
    let admin = Admin::new(mock, PROJECT).await;
    let stub = MockServer::start().await;
    let pid = payment(&admin, &[("Charge", "Success", 1000)]).await;
    let key = Action::refund_key(&pid);
    let url = pg::fresh_pg("payrules_notes").await;
    // Its call reached Checkout, whose Refund the connector adds to the payment.
    let survivor = taken_over_from_a_dead_worker(&url, &key, refund_shows(&admin, &pid)).await;
    let effect = intents(mock, &stub.uri())
        .with_store(survivor.clone())
        .refund(&refund(&pid, 333))
        .await
        .expect("settled");
    assert!(
        effect.applied && effect.summary.contains("earlier attempt"),
        "{effect:?}"
    );
    assert!(
        refunded_amounts(&stub).await.is_empty(),
        "no second refund of the 3.33"
    );
    assert_eq!(
        note_of(survivor.as_ref(), &key).await.as_deref(),
        Some(NOTE_333)
    );
}

/// The dead worker noted its refund but died before (or while) calling, and no Refund shows:
/// the survivor refunds the noted 3.33 once, measured against the dead worker's baseline.
#[tokio::test]
async fn a_partial_refund_a_dead_worker_only_noted_is_made_once() {
    let mock = peers::shared_commercetools_mock().await;
    let admin = Admin::new(mock, PROJECT).await;
    let stub = MockServer::start().await;
    let pid = payment(&admin, &[("Charge", "Success", 1000)]).await;
    let key = Action::refund_key(&pid);
    Mock::given(method("POST"))
        .and(path(format!("/{PROJECT}/payment-intents/{pid}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"outcome": "approved"})))
        .expect(1)
        .mount(&stub)
        .await;
    let url = pg::fresh_pg("payrules_notes").await;
    let survivor = taken_over_from_a_dead_worker(&url, &key, async {}).await;
    let effect = intents(mock, &stub.uri())
        .with_store(survivor.clone())
        .refund(&refund(&pid, 333))
        .await
        .expect("refunds");
    assert!(effect.applied, "{effect:?}");
    assert_eq!(
        refunded_amounts(&stub).await,
        [json!(333)],
        "exactly one call"
    );
    assert_eq!(
        note_of(survivor.as_ref(), &key).await.as_deref(),
        Some(NOTE_333)
    );
}

/// Answers `approved`, having read the key's note from PostgreSQL the moment the call arrived
/// (on a thread and runtime of its own: a responder is synchronous).
struct NoteAtCall {
    /// The ledger's database.
    url: String,
    /// The refund's key.
    key: String,
    /// The note each call found.
    seen: Arc<Mutex<Vec<Option<String>>>>,
}

impl wiremock::Respond for NoteAtCall {
    fn respond(&self, _request: &wiremock::Request) -> ResponseTemplate {
        let (url, key) = (self.url.clone(), self.key.clone());
        let note = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let db = sqlx::PgPool::connect(&url).await.expect("connects");
                let note: Option<Option<String>> =
                    sqlx::query_scalar("SELECT note FROM ledger WHERE key = $1")
                        .bind(&key)
                        .fetch_optional(&db)
                        .await
                        .expect("reads");
                db.close().await;
                note.flatten()
            })
        })
        .join()
        .expect("reader");
        self.seen.lock().expect("lock").push(note);
        ResponseTemplate::new(200).set_body_json(json!({"outcome": "approved"}))
    }
}

/// No earlier attempt: the refund notes its baseline on its claim, durably, before it calls
/// (the stub reads it from PostgreSQL as the call arrives), and calls once. Without a claim to
/// write the note on, it does not call at all.
#[tokio::test]
async fn a_partial_refund_notes_its_baseline_before_it_calls() {
    let mock = peers::shared_commercetools_mock().await;
    let admin = Admin::new(mock, PROJECT).await;
    let stub = MockServer::start().await;
    let pid = payment(&admin, &[("Charge", "Success", 1000)]).await;
    let key = Action::refund_key(&pid);
    let url = pg::fresh_pg("payrules_notes").await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    Mock::given(method("POST"))
        .and(path(format!("/{PROJECT}/payment-intents/{pid}")))
        .respond_with(NoteAtCall {
            url: url.clone(),
            key: key.clone(),
            seen: seen.clone(),
        })
        .expect(1)
        .mount(&stub)
        .await;
    let store: Arc<dyn Store> = Arc::new(
        SqlStore::connect(&url, Duration::from_secs(60))
            .await
            .expect("store"),
    );
    let checkout = intents(mock, &stub.uri()).with_store(store.clone());

    let unclaimed = checkout.refund(&refund(&pid, 333)).await.unwrap_err();
    assert!(
        matches!(&unclaimed, EffectError::Transient { detail, .. } if detail.contains("note") && detail.contains(&key)),
        "{unclaimed}"
    );
    assert!(
        refunded_amounts(&stub).await.is_empty(),
        "no note written, no call"
    );

    assert_eq!(store.claim(&key).await.expect("claims"), Claim::Acquired);
    let effect = checkout.refund(&refund(&pid, 333)).await.expect("refunds");
    assert!(effect.applied, "{effect:?}");
    assert_eq!(
        seen.lock().expect("lock").as_slice(),
        [Some(NOTE_333.to_string())],
        "the note was in the database when the call arrived"
    );
    assert_eq!(
        refunded_amounts(&stub).await,
        [json!(333)],
        "exactly one call"
    );
    assert_eq!(
        note_of(store.as_ref(), &key).await.as_deref(),
        Some(NOTE_333)
    );
}

/// A 500 after sending, and the Refund not visible yet: transient, and the process gives the
/// key back. The noted key stays, claimable at once; by the retry the Refund shows (6.67 still
/// refundable): the retry measures against the first attempt's baseline and makes no second
/// call. A new baseline would have refunded again.
#[tokio::test]
async fn a_partial_refund_after_a_500_is_not_made_twice_by_the_retry() {
    let mock = peers::shared_commercetools_mock().await;
    let admin = Admin::new(mock, PROJECT).await;
    let stub = MockServer::start().await;
    let pid = payment(&admin, &[("Charge", "Success", 1000)]).await;
    let key = Action::refund_key(&pid);
    Mock::given(method("POST"))
        .and(path(format!("/{PROJECT}/payment-intents/{pid}")))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({
            "statusCode": 500, "message": "General", "errors": [{"code": "General"}]
        })))
        .expect(1)
        .mount(&stub)
        .await;
    let url = pg::fresh_pg("payrules_notes").await;
    let store: Arc<dyn Store> = Arc::new(
        SqlStore::connect(&url, Duration::from_secs(60))
            .await
            .expect("store"),
    );
    let checkout = intents(mock, &stub.uri()).with_store(store.clone());
    assert_eq!(store.claim(&key).await.expect("claims"), Claim::Acquired);
    let err = checkout.refund(&refund(&pid, 333)).await.unwrap_err();
    assert!(matches!(err, EffectError::Transient { .. }), "{err}");
    // What process.rs does with a transient error: the key is given back.
    store.unclaim(&key).await.expect("unclaims");
    assert_eq!(
        store.ledger_status(&key).await.expect("reads"),
        Some(LedgerStatus::Claimed),
        "kept, with its note"
    );
    assert_eq!(
        note_of(store.as_ref(), &key).await.as_deref(),
        Some(NOTE_333)
    );

    // Checkout did refund; the connector's Refund shows up before the retry.
    refund_shows(&admin, &pid).await;
    assert_eq!(
        store.claim(&key).await.expect("claims"),
        Claim::Acquired,
        "the retry claims it at once"
    );
    let effect = checkout.refund(&refund(&pid, 333)).await.expect("settled");
    assert!(
        effect.applied && effect.summary.contains("earlier attempt"),
        "{effect:?}"
    );
    assert_eq!(
        refunded_amounts(&stub).await,
        [json!(333)],
        "the 500's call only"
    );
}

/// A note this version cannot read: an earlier attempt may have called with anything, so the
/// refund is refused for good (naming the key), never sent again.
#[tokio::test]
async fn a_note_that_does_not_read_is_never_a_second_call() {
    let mock = peers::shared_commercetools_mock().await;
    let admin = Admin::new(mock, PROJECT).await;
    let stub = MockServer::start().await;
    let pid = payment(&admin, &[("Charge", "Success", 1000)]).await;
    let key = Action::refund_key(&pid);
    let url = pg::fresh_pg("payrules_notes").await;
    let store: Arc<dyn Store> = Arc::new(
        SqlStore::connect(&url, Duration::from_secs(60))
            .await
            .expect("store"),
    );
    assert_eq!(store.claim(&key).await.expect("claims"), Claim::Acquired);
    store
        .note(&key, "taken_before=zero amount=333")
        .await
        .expect("notes");
    let err = intents(mock, &stub.uri())
        .with_store(store)
        .refund(&refund(&pid, 333))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EffectError::Permanent { detail } if detail.contains(&key)),
        "{err}"
    );
    assert!(refunded_amounts(&stub).await.is_empty());
}
