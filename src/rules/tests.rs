//! The engine's unit tests. Over 600 lines on purpose: each rule's crash and report cases need the
//! engine's private state (ledger markers, claims), so they live beside it.

use std::sync::atomic::AtomicUsize;

use super::*;
use crate::message::decode;
use crate::store::MemoryStore;
use crate::view::StreamView;

fn fixture(name: &str) -> Message {
    let path = format!(
        "{}/fixtures/messages/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    decode(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Edits a fixture's JSON before decoding it.
fn edited(name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Message {
    let path = format!(
        "{}/fixtures/messages/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).expect("fixture is JSON");
    edit(&mut v);
    decode(&serde_json::to_vec(&v).expect("serializes")).expect("decodes")
}

#[test]
fn only_changes_that_can_make_an_action_due_enable() {
    let enabling = [
        fixture("PaymentTransactionStateChanged"), // → Success
        edited("PaymentTransactionStateChanged", |v| {
            v["state"] = "Failure".into() // a CancelAuthorization failing gives money back
        }),
        edited("PaymentTransactionAdded", |v| {
            v["transaction"]["type"] = "Authorization".into();
            v["transaction"]["state"] = "Success".into();
        }),
        edited("PaymentTransactionAdded", |v| {
            v["transaction"]["state"] = "Success".into(); // a Charge: money received
        }),
        edited("PaymentTransactionAdded", |v| {
            v["transaction"]["type"] = "CancelAuthorization".into();
            v["transaction"]["state"] = "Failure".into();
        }),
        edited("PaymentCreated", |v| {
            v["payment"]["transactions"][0]["state"] = "Success".into();
        }),
        fixture("OrderCreated"),
        fixture("OrderImported"),
        fixture("OrderPaymentAdded"),
        fixture("OrderStateChanged"), // → Confirmed: may leave Cancelled
        edited("OrderStateChanged", |v| {
            v["orderState"] = "Cancelled".into() // cancels become due
        }),
        fixture("OrderShipmentStateChanged"), // eligibility, capture
        fixture("CheckoutPaymentAuthorized"),
        fixture("CheckoutOrderCreationFailed"),
        fixture("PayloadNotIncluded-PaymentTransactionStateChanged"),
        fixture("ResourceCreated-payment"),
        fixture("ResourceUpdated-order"),
    ];
    for m in &enabling {
        assert!(can_enable(m), "{} should enable", m.kind);
    }
    let inert = [
        fixture("PaymentCreated"),          // Authorization Pending
        fixture("PaymentTransactionAdded"), // Charge Pending
        edited("PaymentTransactionStateChanged", |v| {
            v["state"] = "Pending".into()
        }),
        edited("PaymentTransactionAdded", |v| {
            v["transaction"]["type"] = "CancelAuthorization".into();
            v["transaction"]["state"] = "Pending".into(); // takes money away
        }),
        fixture("OrderPaymentStateChanged"),
        fixture("Other-PaymentInteractionAdded"),
        fixture("PaymentStatusStateTransition"),
        fixture("CheckoutPaymentAuthorizationFailed"),
        fixture("CheckoutPaymentAuthorizationCancelled"),
    ];
    for m in &inert {
        assert!(!can_enable(m), "{} should not enable", m.kind);
    }
}

/// A [`StreamView`] that claims to be current and counts its reads.
struct CountingView {
    inner: StreamView,
    reads: AtomicUsize,
    current: bool,
}

#[async_trait::async_trait]
impl CommerceView for CountingView {
    async fn payment(&self, id: &str) -> Result<Option<Payment>, ViewError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.payment(id).await
    }
    async fn order(&self, id: &str) -> Result<Option<Order>, ViewError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.order(id).await
    }
    async fn orders_for_payment(&self, id: &str) -> Result<Vec<Order>, ViewError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.orders_for_payment(id).await
    }
    fn observe(&self, m: &Message) {
        self.inner.observe(m);
    }
    fn reads_are_current(&self) -> bool {
        self.current
    }
}

#[tokio::test]
async fn a_current_view_is_not_read_for_messages_that_cannot_enable() {
    let inert = [
        fixture("PaymentCreated"),
        fixture("Other-PaymentInteractionAdded"),
        fixture("OrderPaymentStateChanged"),
    ];
    for current in [true, false] {
        let view = Arc::new(CountingView {
            inner: StreamView::new(),
            reads: AtomicUsize::new(0),
            current,
        });
        let engine = Engine::new(view.clone(), Arc::new(MemoryStore::new()), Rules::default());
        for m in &inert {
            let actions = engine
                .on_message(m, chrono::Utc::now())
                .await
                .expect("decides");
            assert!(actions.is_empty());
        }
        let reads = view.reads.load(Ordering::Relaxed);
        if current {
            assert_eq!(reads, 0, "a current view needs no reads for inert messages");
        } else {
            assert!(
                reads >= inert.len(),
                "a stream view evaluates every message"
            );
        }
    }
}

/// A current view whose find-orders-by-payment query lags behind a just-created order, as
/// commercetools' may (domain §3.3).
struct LaggingView {
    inner: StreamView,
    lagging: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl CommerceView for LaggingView {
    async fn payment(&self, id: &str) -> Result<Option<Payment>, ViewError> {
        self.inner.payment(id).await
    }
    async fn order(&self, id: &str) -> Result<Option<Order>, ViewError> {
        self.inner.order(id).await
    }
    async fn orders_for_payment(&self, id: &str) -> Result<Vec<Order>, ViewError> {
        if self.lagging.load(Ordering::Relaxed) {
            return Ok(Vec::new());
        }
        self.inner.orders_for_payment(id).await
    }
    fn observe(&self, m: &Message) {
        self.inner.observe(m);
    }
    fn reads_are_current(&self) -> bool {
        true
    }
}

/// The order is created while the authorization is Pending; the Success is evaluated while
/// the query does not find the new order yet, so nothing is released then. The payment's
/// grace-period check looks at the order its money counts toward and releases it.
#[tokio::test]
async fn the_grace_check_releases_an_order_a_lagging_query_missed() {
    let view = Arc::new(LaggingView {
        inner: StreamView::new(),
        lagging: std::sync::atomic::AtomicBool::new(false),
    });
    let engine = Engine::new(view.clone(), Arc::new(MemoryStore::new()), Rules::default());
    let at = chrono::Utc::now();
    for m in [fixture("PaymentCreated"), fixture("OrderCreated")] {
        let actions = engine.on_message(&m, at).await.expect("decides");
        assert!(actions.is_empty(), "the authorization is still Pending");
    }
    view.lagging.store(true, Ordering::Relaxed);
    let success = fixture("PaymentTransactionStateChanged");
    let actions = engine.on_message(&success, at).await.expect("decides");
    assert!(
        actions.is_empty(),
        "the query missed the order: {actions:?}"
    );
    view.lagging.store(false, Ordering::Relaxed);

    let pid = success.payment_id().expect("a payment message").to_string();
    let due = at + chrono::Duration::minutes(10);
    let checked = engine
        .on_timer(
            &Timer {
                payment_id: pid.clone(),
                due,
                rechecks: 0,
            },
            due,
        )
        .await
        .expect("decides");
    let keys: Vec<&str> = checked.actions.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(
        keys,
        ["release:5a5709de-26e8-47c5-ab8a-4e7953b072d1"],
        "{checked:?}"
    );
    assert_eq!(checked.actions[0].message_id, None);
    assert_eq!(checked.recheck_at, None);
}

/// Our capture was received, then the provider refused the Charge: the order shipped and its
/// money was not taken. Reported (logged at error and counted) once per payment.
#[tokio::test]
async fn a_capture_of_ours_that_fails_at_the_provider_is_reported_once() {
    let store = Arc::new(MemoryStore::new());
    let mut rules = Rules::default();
    rules.capture.enabled = true;
    rules.capture.on = crate::model::ShipmentState::Shipped;
    let engine = Engine::new(Arc::new(StreamView::new()), store.clone(), rules);
    let at = chrono::Utc::now();
    let authorized = edited("PaymentCreated", |v| {
        v["payment"]["transactions"][0]["state"] = "Success".into();
    });
    let shipped = edited("OrderShipmentStateChanged", |v| {
        v["shipmentState"] = "Shipped".into();
    });
    let mut keys = Vec::new();
    for m in [authorized, fixture("OrderCreated"), shipped] {
        for a in engine.on_message(&m, at).await.expect("decides") {
            keys.push(a.key);
        }
    }
    let pid = "ee476c7e-2964-4b6d-96f8-2d8ee6e88d4e";
    assert!(keys.contains(&format!("capture:{pid}")), "{keys:?}");
    // The capture executed: Checkout answered `received`, the connector added a Charge.
    store
        .record(
            &format!("capture:{pid}"),
            LedgerStatus::Done,
            Decided::default(),
        )
        .await
        .unwrap();
    let pending = fixture("PaymentTransactionAdded"); // the Charge, Pending
    engine.on_message(&pending, at).await.expect("decides");
    assert_eq!(
        engine.failed_captures(),
        0,
        "still pending: nothing to report"
    );
    let refused = edited("PaymentTransactionStateChanged", |v| {
        v["transactionId"] = "836dcfbb-89a0-4e43-9cac-c3fb53e447c1".into();
        v["state"] = "Failure".into();
        v["resourceVersion"] = 6.into();
        v["sequenceNumber"] = 6.into();
    });
    // A worker stopped between claiming the report's marker and recording it: the report
    // waits for that claim (the message is retried), it is not taken as made already.
    let marker = capture_failed_key(pid);
    assert_eq!(store.claim(&marker).await.unwrap(), Claim::Acquired);
    let err = engine
        .on_message(&refused, at)
        .await
        .expect_err("the marker is claimed, not recorded");
    assert!(err.is_retryable(), "{err}");
    assert_eq!(engine.failed_captures(), 0);
    store.unclaim(&marker).await.unwrap(); // the claim taken over (its lease passed)
    engine.on_message(&refused, at).await.expect("decides");
    assert_eq!(engine.failed_captures(), 1);
    engine.on_message(&refused, at).await.expect("decides");
    assert_eq!(engine.failed_captures(), 1, "once per payment");
    assert_eq!(
        store.ledger_status(&capture_failed_key(pid)).await.unwrap(),
        Some(LedgerStatus::Done)
    );
}

/// An authorized payment, no order, and its cancel claimed by a worker that then died.
struct ClaimedCancel {
    store: Arc<MemoryStore>,
    engine: Engine,
    at: Timestamp,
    pid: String,
    key: String,
}

async fn claimed_cancel() -> ClaimedCancel {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(Arc::new(StreamView::new()), store.clone(), Rules::default());
    let at = chrono::Utc::now();
    let authorized = edited("PaymentCreated", |v| {
        v["payment"]["transactions"][0]["state"] = "Success".into();
    });
    assert!(
        engine
            .on_message(&authorized, at)
            .await
            .expect("decides")
            .is_empty()
    );
    let pid = authorized
        .payment_id()
        .expect("a payment message")
        .to_string();
    let key = Action::cancel_key(&pid);
    assert_eq!(store.claim(&key).await.unwrap(), Claim::Acquired);
    ClaimedCancel {
        store,
        engine,
        at,
        pid,
        key,
    }
}

/// A worker claimed an orphan's cancel and died before recording how it ended (kill -9
/// between the claim and Checkout). The claim alone must not read as "cancelled": the grace
/// check proposes the cancel again, and the ledger's claim decides who runs it (the dead
/// worker's is taken over once its lease passes; the executor re-reads the payment first).
/// Counting the authorization as gone left it blocked for good (seen in the crash test).
#[tokio::test]
async fn a_cancel_only_claimed_does_not_count_as_done_at_the_grace_check() {
    let ClaimedCancel {
        store,
        engine,
        at,
        pid,
        key,
    } = claimed_cancel().await;

    let due = at + chrono::Duration::minutes(10);
    let timer = Timer {
        payment_id: pid.clone(),
        due,
        rechecks: 0,
    };
    let checked = engine.on_timer(&timer, due).await.expect("decides");
    let keys: Vec<&str> = checked.actions.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(keys, [key.as_str()], "{checked:?}");
    assert_eq!(
        checked.actions[0].amount.as_ref().map(|m| m.cent_amount),
        Some(17465),
        "the whole authorization is still to cancel"
    );
    assert_eq!(checked.actions[0].reason, Some(Reason::GracePeriodExpired));

    // Once the cancel is in the ledger as done, the check has nothing left to do.
    store
        .record(&key, LedgerStatus::Done, Decided::default())
        .await
        .unwrap();
    let again = engine.on_timer(&timer, due).await.expect("decides");
    assert!(again.actions.is_empty(), "{again:?}");
}

/// The same dead worker's claim, and then an order for the payment arrives (late: the grace
/// period had run out). The cancel was decided before the order existed and is carried out
/// by the grace check that decided it (taken over from the dead worker), as it would have
/// been without the crash (scenario 09): the order is not released on money being given
/// back, and the authorization does not stay blocked by a claim nobody finishes.
#[tokio::test]
async fn a_claimed_cancel_is_carried_out_when_an_order_arrives_after_it_was_decided() {
    let ClaimedCancel {
        store,
        engine,
        at,
        pid,
        key,
    } = claimed_cancel().await;

    let late = at + chrono::Duration::minutes(20);
    let actions = engine
        .on_message(&fixture("OrderCreated"), late)
        .await
        .expect("decides");
    assert!(
        actions.is_empty(),
        "not released on an authorization being cancelled: {actions:?}"
    );
    let checked = engine
        .on_timer(
            &Timer {
                payment_id: pid.clone(),
                due: late,
                rechecks: 0,
            },
            late,
        )
        .await
        .expect("decides");
    let keys: Vec<&str> = checked.actions.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(keys, [key.as_str()], "{checked:?}");

    store
        .record(&key, LedgerStatus::Done, Decided::default())
        .await
        .unwrap();
    let after = engine
        .on_message(&fixture("OrderCreated"), late)
        .await
        .expect("decides");
    assert!(after.is_empty(), "cancelled: nothing to release: {after:?}");
}

/// The dead worker's claimed cancel, and meanwhile a Charge is under way: the cancel is not
/// carried out (the executor would not cancel then either), and the grace check looks again
/// later, so the authorization is cancelled if the Charge fails and kept if it succeeds.
#[tokio::test]
async fn a_claimed_cancel_waits_while_a_charge_is_under_way() {
    let ClaimedCancel {
        engine, at, pid, ..
    } = claimed_cancel().await;
    let charging = engine
        .on_message(&fixture("PaymentTransactionAdded"), at) // the Charge, Pending
        .await
        .expect("decides");
    assert!(charging.is_empty(), "{charging:?}");
    let due = at + chrono::Duration::minutes(10);
    let checked = engine
        .on_timer(
            &Timer {
                payment_id: pid,
                due,
                rechecks: 0,
            },
            due,
        )
        .await
        .expect("decides");
    assert!(checked.actions.is_empty(), "{checked:?}");
    assert_eq!(
        checked.recheck_at,
        Some(due + chrono::Duration::minutes(10)),
        "checked again a grace period later"
    );
}

/// Scenario 01's messages (payment authorized 17465, then its order of 17465), the order's
/// edited by `edit`.
fn scenario_01(edit: impl Fn(&mut serde_json::Value)) -> Vec<Message> {
    let path = format!(
        "{}/fixtures/scenarios/01-authorized-then-order.jsonl",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .take(3)
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).expect("JSON");
            if v["type"] == "OrderCreated" {
                edit(&mut v);
            }
            decode(&serde_json::to_vec(&v).expect("serializes")).expect("decodes")
        })
        .collect()
}

/// What the engine decides on scenario 01 with the order in `state`, after `prepare`.
async fn releases_with(state: &str, prepare: impl AsyncFnOnce(&MemoryStore, &str)) -> usize {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(Arc::new(StreamView::new()), store.clone(), Rules::default());
    let messages = scenario_01(|v| v["order"]["orderState"] = state.into());
    let oid = messages[2].order_id().expect("an order").to_string();
    prepare(&store, &oid).await;
    let mut released = 0;
    for m in &messages {
        let actions = engine
            .on_message(m, chrono::Utc::now())
            .await
            .expect("decides");
        released += actions
            .iter()
            .filter(|a| a.action == ActionKind::ReleaseOrder)
            .count();
    }
    released
}

/// A release decided and claimed, whose worker stopped after its order update made the order
/// unfulfillable (`Complete`) and before the webhook: it is carried out, so the webhook still
/// goes. The same after an order update whose webhook failed (the marker). Never for a
/// cancelled order, and an unfulfillable order no release was started for is not released.
#[tokio::test]
async fn a_release_started_is_carried_out_though_the_order_no_longer_looks_fulfillable() {
    let claim = async |store: &MemoryStore, oid: &str| {
        assert_eq!(
            store.claim(&Action::release_key(oid)).await.unwrap(),
            Claim::Acquired
        );
    };
    let started = async |store: &MemoryStore, oid: &str| {
        let key = release_started_key(oid);
        assert_eq!(store.claim(&key).await.unwrap(), Claim::Acquired);
        store
            .record(&key, LedgerStatus::Done, Decided::default())
            .await
            .unwrap();
    };
    let nothing = async |_: &MemoryStore, _: &str| {};
    assert_eq!(releases_with("Complete", claim).await, 1);
    assert_eq!(releases_with("Complete", started).await, 1);
    assert_eq!(releases_with("Cancelled", claim).await, 0);
    assert_eq!(releases_with("Cancelled", started).await, 0);
    assert_eq!(releases_with("Complete", nothing).await, 0);
    assert_eq!(releases_with("Open", nothing).await, 1);
}

/// An authorized payment with no order whose Charge stays Pending: each grace check finds the
/// money in flight and looks again a grace period later, through the store's recheck count,
/// for a day's worth of rechecks (144 at the default 10 minutes). Then the check stops, and
/// the payment is reported once (logged at error, counted, a ledger marker) instead of being
/// rechecked forever.
#[tokio::test]
async fn money_in_flight_is_rechecked_up_to_the_cap_then_reported_once() {
    let store = Arc::new(MemoryStore::new());
    let rules = Rules::default();
    let grace = chrono::Duration::from_std(rules.cancel.grace_period).expect("a duration");
    let cap = recheck_cap(rules.cancel.grace_period);
    assert_eq!(cap, 144, "a day at the default grace period of 10 minutes");
    let engine = Engine::new(Arc::new(StreamView::new()), store.clone(), rules);
    let processor =
        crate::process::Processor::new(engine, store.clone(), Arc::new(crate::effects::PlanOnly));
    let at = chrono::Utc::now();
    let authorized = edited("PaymentCreated", |v| {
        v["payment"]["transactions"][0]["state"] = "Success".into();
    });
    for m in [authorized, fixture("PaymentTransactionAdded")] {
        let actions = processor.message(&m, at).await.expect("decides");
        assert!(actions.is_empty(), "{actions:?}");
    }
    let mut now = at;
    let mut checks = Vec::new();
    // Bounded: without the cap this would loop for ever.
    while checks.len() <= cap as usize + 1 {
        now += grace;
        let due = store.take_due(now, 10).await.expect("takes");
        let Some(timer) = due.first() else { break };
        assert_eq!(due.len(), 1, "{due:?}");
        let actions = processor.timer(timer, now).await.expect("checks");
        assert!(
            actions.is_empty(),
            "money in flight: no cancel: {actions:?}"
        );
        checks.push(timer.rechecks);
    }
    assert_eq!(
        checks,
        (0..=cap).collect::<Vec<_>>(),
        "the first check and {cap} rechecks, counted by the store"
    );
    assert_eq!(store.timers_outstanding(), 0, "the timer is done");
    assert_eq!(processor.stuck_in_flight(), 1);
    assert_eq!(
        store
            .ledger_status(&money_in_flight_key("ee476c7e-2964-4b6d-96f8-2d8ee6e88d4e"))
            .await
            .expect("reads"),
        Some(LedgerStatus::Done),
        "reported once, for every replica"
    );
}

/// The cap follows the grace period: a day's worth of rechecks, at least one.
#[test]
fn the_recheck_cap_is_a_day_of_grace_periods() {
    let cap = |secs| recheck_cap(std::time::Duration::from_secs(secs));
    assert_eq!(cap(30), 2880);
    assert_eq!(cap(3600), 24);
    assert_eq!(cap(7 * 3600), 4, "rounded up: at least a day");
    assert_eq!(cap(2 * 24 * 3600), 1);
}

/// A direct sale (a Charge in Success, no Authorization) with no order, its refund claimed by
/// a worker that then died; then the order arrives late. The claimed refund's money counts for
/// nothing (no release on money on its way back), and the grace check carries the refund out.
#[tokio::test]
async fn a_claimed_refund_counts_nothing_toward_a_late_order_and_is_carried_out() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(Arc::new(StreamView::new()), store.clone(), Rules::default());
    let at = chrono::Utc::now();
    let charged = edited("PaymentCreated", |v| {
        v["payment"]["transactions"][0]["type"] = "Charge".into();
        v["payment"]["transactions"][0]["state"] = "Success".into();
    });
    let pid = charged.payment_id().expect("a payment").to_string();
    assert!(
        engine
            .on_message(&charged, at)
            .await
            .expect("decides")
            .is_empty()
    );
    let key = Action::refund_key(&pid);
    assert_eq!(store.claim(&key).await.unwrap(), Claim::Acquired);
    let late = at + chrono::Duration::minutes(20);
    let actions = engine
        .on_message(&fixture("OrderCreated"), late)
        .await
        .expect("decides");
    assert!(
        actions.is_empty(),
        "not released on money being refunded: {actions:?}"
    );
    let timer = Timer {
        payment_id: pid.clone(),
        due: late,
        rechecks: 0,
    };
    let checked = engine.on_timer(&timer, late).await.expect("decides");
    let refunds: Vec<(&str, Option<i64>)> = checked
        .actions
        .iter()
        .map(|a| (a.key.as_str(), a.amount.as_ref().map(|m| m.cent_amount)))
        .collect();
    assert_eq!(refunds, [(key.as_str(), Some(17465))], "{checked:?}");
    assert_eq!(checked.actions[0].action, ActionKind::RefundPayment);
}

/// Our refund carried out, then the payment shows it failed: logged and counted once, never
/// proposed again (`refund:{P}` runs once).
#[tokio::test]
async fn a_refund_of_ours_that_fails_is_reported_once_and_not_proposed_again() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(Arc::new(StreamView::new()), store.clone(), Rules::default());
    let at = chrono::Utc::now();
    let charged = edited("PaymentCreated", |v| {
        let txs = &mut v["payment"]["transactions"];
        txs[0]["type"] = "Charge".into();
        txs[0]["state"] = "Success".into();
        let mut refund = txs[0].clone();
        refund["id"] = "refund-1".into();
        refund["type"] = "Refund".into();
        refund["state"] = "Failure".into();
        txs.as_array_mut().expect("transactions").push(refund);
    });
    let pid = charged.payment_id().expect("a payment").to_string();
    store
        .record(
            &Action::refund_key(&pid),
            LedgerStatus::Done,
            Decided::default(),
        )
        .await
        .unwrap();
    let failed = edited("PaymentTransactionStateChanged", |v| {
        v["resource"]["id"] = pid.clone().into();
        v["transactionId"] = "refund-1".into();
        v["state"] = "Failure".into();
        v["resourceVersion"] = 6.into();
        v["sequenceNumber"] = 6.into();
    });
    for _ in 0..2 {
        let actions = engine.on_message(&charged, at).await.expect("decides");
        assert!(actions.is_empty(), "{actions:?}");
        let actions = engine.on_message(&failed, at).await.expect("decides");
        assert!(actions.is_empty(), "never refunded again: {actions:?}");
    }
    assert_eq!(engine.failed_refunds(), 1, "once per payment");
    assert_eq!(
        store.ledger_status(&refund_failed_key(&pid)).await.unwrap(),
        Some(LedgerStatus::Done)
    );
}

/// Scenario 46's stream: an order of a line of 2 for 3000 paid by a gift card (1000) and a card
/// (2000); its fifth line returns both units.
fn scenario_46() -> Vec<Message> {
    let path = format!(
        "{}/fixtures/scenarios/46-return-split-across-two-payments.jsonl",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .map(|l| decode(l.as_bytes()).expect("decodes"))
        .collect()
}

/// A worker refunded the gift card's part of a return and died holding the card's claim (its
/// plan noted): the return is decided again as the claimed part with the amount it noted, and
/// nothing new — the done part counts, no other payment is asked for it.
#[tokio::test]
async fn a_claimed_return_refund_is_carried_out_with_the_amount_it_noted() {
    let store = Arc::new(MemoryStore::new());
    let rules = Rules {
        refund_on_return: ReturnRule {
            enabled: true,
            ..ReturnRule::default()
        },
        ..Rules::default()
    };
    let engine = Engine::new(Arc::new(StreamView::new()), store.clone(), rules);
    let at = chrono::Utc::now();
    let messages = scenario_46();
    let mut planned = Vec::new();
    for m in &messages[..5] {
        planned = engine.on_message(m, at).await.expect("decides");
    }
    let parts: Vec<(String, i64)> = planned
        .iter()
        .map(|a| {
            (
                a.key.clone(),
                a.amount.as_ref().map_or(0, |m| m.cent_amount),
            )
        })
        .collect();
    assert_eq!(parts.len(), 2, "{planned:?}");
    assert_eq!((parts[0].1, parts[1].1), (1000, 2000));
    for (i, (key, amount)) in parts.iter().enumerate() {
        assert_eq!(store.claim(key).await.unwrap(), Claim::Acquired);
        store
            .note(key, &crate::store::planned_note(*amount, "EUR"))
            .await
            .unwrap();
        if i == 0 {
            store
                .record(key, LedgerStatus::Done, Decided::default())
                .await
                .unwrap();
        }
    }
    let again = engine.on_message(&messages[4], at).await.expect("decides");
    let again: Vec<(String, i64)> = again
        .iter()
        .map(|a| {
            (
                a.key.clone(),
                a.amount.as_ref().map_or(0, |m| m.cent_amount),
            )
        })
        .collect();
    assert_eq!(again, [parts[1].clone()]);
    store
        .record(&parts[1].0, LedgerStatus::Done, Decided::default())
        .await
        .unwrap();
    for m in &messages[4..] {
        let after = engine.on_message(m, at).await.expect("decides");
        assert!(after.is_empty(), "{after:?}");
    }
}

/// A return refund key whose note records no amount: the order's return refunds stop and the
/// message fails for good (parked with why), never read as "nothing refunded".
#[tokio::test]
async fn a_return_refund_without_an_amount_stops_the_orders_refunds() {
    let store = Arc::new(MemoryStore::new());
    let rules = Rules {
        refund_on_return: ReturnRule {
            enabled: true,
            ..ReturnRule::default()
        },
        ..Rules::default()
    };
    let engine = Engine::new(Arc::new(StreamView::new()), store.clone(), rules);
    let at = chrono::Utc::now();
    let messages = scenario_46();
    for m in &messages[..4] {
        engine.on_message(m, at).await.expect("decides");
    }
    let oid = messages[4].order_id().expect("an order").to_string();
    let key = format!("refund:{oid}:line:1:payment");
    assert_eq!(store.claim(&key).await.unwrap(), Claim::Acquired);
    store.note(&key, "garbled").await.unwrap();
    let err = engine
        .on_message(&messages[4], at)
        .await
        .expect_err("refuses");
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains(&key), "{err}");
}
