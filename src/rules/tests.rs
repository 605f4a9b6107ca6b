//! The engine's unit tests.

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
