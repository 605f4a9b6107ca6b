//! A [`CommerceView`] built from the message stream itself, plus optional snapshots.
//!
//! Messages arrive late, twice and out of order, and the view must converge to the same state
//! whatever the order. Each field remembers the version that last set it, as the pair
//! (resourceVersion, sequenceNumber) — several messages can share one resourceVersion when one
//! update carried several actions, and the sequence number orders those. A change applies only
//! when it is newer than what the field has. A snapshot (a full Payment or Order, from
//! `PaymentCreated`/`OrderCreated` or a `--state` directory) counts as of its version and
//! includes everything of that version. Transactions and payment references are added by id
//! when absent, so a duplicate never adds twice.

use std::collections::HashMap as StdHashMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

/// The view's maps are keyed by commercetools ids and looked up several times per message: a
/// fast (seeded) hasher, not SipHash.
type HashMap<K, V> = StdHashMap<K, V, foldhash::fast::RandomState>;

use super::compact::{Amount, Id};
use super::{CommerceView, ViewError};
use crate::message::{Body, Message};
use crate::model::{
    Money, Order, OrderState, Payment, PaymentInfo, Reference, ShipmentState, TaxedPrice,
    Transaction, TransactionState, TransactionType,
};

/// (resourceVersion, sequenceNumber): what set a field. Snapshots use `u64::MAX` as the
/// sequence number, since they include every change of their version.
type Stamp = (u64, u64);

fn snapshot_stamp(version: u64) -> Stamp {
    (version, u64::MAX)
}

fn message_stamp(m: &Message) -> Stamp {
    (
        m.resource_version.unwrap_or(0),
        m.sequence_number.unwrap_or(0),
    )
}

/// A value together with the stamp that set it.
#[derive(Debug, Clone)]
struct Versioned<T> {
    value: T,
    stamp: Stamp,
}

impl<T> Versioned<T> {
    fn new(value: T, stamp: Stamp) -> Self {
        Self { value, stamp }
    }

    /// Sets the value if `stamp` is newer; duplicates and stale messages change nothing.
    fn offer(&mut self, value: T, stamp: Stamp) {
        if stamp > self.stamp {
            self.value = value;
            self.stamp = stamp;
        }
    }
}

/// One transaction: 48 bytes (a payment of a rich stream has five).
#[derive(Debug, Default)]
struct TxEntry {
    /// Known once a snapshot or `PaymentTransactionAdded` described the transaction; a state
    /// change can arrive before that.
    kind: Option<TransactionType>,
    /// Set with `kind`.
    amount: Option<Amount>,
    /// The state and the stamp that set it (`None`: no state seen yet).
    state: Option<TransactionState>,
    state_stamp: Stamp,
}

impl TxEntry {
    fn offer_state(&mut self, state: TransactionState, stamp: Stamp) {
        if self.state.is_none() || stamp > self.state_stamp {
            self.state = Some(state);
            self.state_stamp = stamp;
        }
    }
}

#[derive(Debug, Default)]
struct PaymentEntry {
    version: u64,
    amount_planned: Option<Versioned<Amount>>,
    /// Transactions by id, in the order first seen (commercetools' order for snapshots). A
    /// payment has a handful: a list is smaller and faster than a map.
    txs: Vec<(Id, TxEntry)>,
}

impl PaymentEntry {
    fn tx(&mut self, id: &str) -> &mut TxEntry {
        let id = Id::new(id);
        let at = match self.txs.iter().position(|(t, _)| *t == id) {
            Some(at) => at,
            None => {
                // Most lists hold one or two: grow by one, not to Vec's minimum of four.
                self.txs.reserve_exact(1);
                self.txs.push((id, TxEntry::default()));
                self.txs.len() - 1
            }
        };
        &mut self.txs[at].1
    }

    fn add_transaction(&mut self, t: &Transaction, stamp: Stamp) {
        let entry = self.tx(&t.id);
        if entry.kind.is_none() {
            entry.kind = Some(t.kind);
            entry.amount = Some(Amount::from(&t.amount));
        }
        entry.offer_state(t.state, stamp);
    }

    fn set_state(&mut self, tx_id: &str, state: TransactionState, stamp: Stamp) {
        self.tx(tx_id).offer_state(state, stamp);
    }

    fn apply_snapshot(&mut self, p: &Payment) {
        let stamp = snapshot_stamp(p.version);
        self.version = self.version.max(p.version);
        if let Some(m) = &p.amount_planned {
            match &mut self.amount_planned {
                Some(v) => v.offer(Amount::from(m), stamp),
                None => self.amount_planned = Some(Versioned::new(Amount::from(m), stamp)),
            }
        }
        for t in &p.transactions {
            self.add_transaction(t, stamp);
        }
    }

    fn to_payment(&self, id: &str) -> Payment {
        let transactions = self
            .txs
            .iter()
            .filter_map(|(tx_id, e)| {
                Some(Transaction {
                    id: tx_id.to_text(),
                    kind: e.kind?,
                    amount: e.amount.as_ref()?.to_money(),
                    state: e.state?,
                })
            })
            .collect();
        Payment {
            id: id.to_string(),
            version: self.version,
            amount_planned: self.amount_planned.as_ref().map(|v| v.value.to_money()),
            transactions,
            payment_method_info: Default::default(),
        }
    }
}

/// What the newest order snapshot says that no message updates.
#[derive(Debug)]
struct OrderBase {
    stamp: Stamp,
    order_number: Option<Box<str>>,
    created_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A payment reference of an order; `type_id` only when it is not `payment`.
#[derive(Debug)]
struct PaymentRef {
    id: Id,
    other_type: Option<Box<str>>,
}

impl PaymentRef {
    fn to_reference(&self) -> Reference {
        Reference {
            type_id: self.other_type.as_deref().unwrap_or("payment").to_string(),
            id: self.id.to_text(),
        }
    }
}

#[derive(Debug, Default)]
struct OrderEntry {
    /// The newest snapshot's number and creation time.
    base: Option<OrderBase>,
    state: Option<Versioned<OrderState>>,
    /// `None` inside: the snapshot had no shipment state.
    shipment: Option<Versioned<Option<ShipmentState>>>,
    /// The totals (`totalPrice`, `taxedPrice.totalGross`), from the snapshot or the latest
    /// `OrderEditApplied`.
    totals: Option<Versioned<(Amount, Option<Amount>)>>,
    /// Every payment reference ever seen for the order, in first-seen order.
    payments: Vec<PaymentRef>,
    version: u64,
}

impl OrderEntry {
    fn add_payment(&mut self, r: &Reference) {
        let id = Id::new(&r.id);
        if !self.payments.iter().any(|p| p.id == id) {
            self.payments.reserve_exact(1);
            self.payments.push(PaymentRef {
                id,
                other_type: (r.type_id != "payment").then(|| r.type_id.as_str().into()),
            });
        }
    }

    fn to_order(&self, id: String) -> Option<Order> {
        let base = self.base.as_ref()?;
        // A snapshot sets the state, shipment and totals along with the base.
        let totals = &self.totals.as_ref()?.value;
        Some(Order {
            id,
            version: self.version,
            order_number: base.order_number.as_deref().map(str::to_string),
            total_price: totals.0.to_money(),
            taxed_price: totals.1.as_ref().map(|g| TaxedPrice {
                total_gross: g.to_money(),
            }),
            order_state: self.state.as_ref()?.value,
            shipment_state: self.shipment.as_ref()?.value,
            created_at: base.created_at,
            payment_info: Some(PaymentInfo {
                payments: self.payments.iter().map(PaymentRef::to_reference).collect(),
            }),
        })
    }
}

#[derive(Debug, Default)]
struct State {
    payments: HashMap<Id, PaymentEntry>,
    orders: HashMap<Id, OrderEntry>,
    /// payment id → ids of the orders referencing it, sorted (as text) so the answer does
    /// not depend on arrival order.
    orders_by_payment: HashMap<Id, Vec<Id>>,
}

/// Offers a value to a field that may not be set yet.
fn offer<T>(field: &mut Option<Versioned<T>>, value: T, stamp: Stamp) {
    match field {
        Some(v) => v.offer(value, stamp),
        None => *field = Some(Versioned::new(value, stamp)),
    }
}

/// `map[key]`, inserting a default entry first if absent.
fn entry_mut<'m, V: Default>(map: &'m mut HashMap<Id, V>, key: &str) -> &'m mut V {
    map.entry(Id::new(key)).or_default()
}

fn totals_of(total: &Money, taxed: Option<&TaxedPrice>) -> (Amount, Option<Amount>) {
    (
        Amount::from(total),
        taxed.map(|t| Amount::from(&t.total_gross)),
    )
}

impl State {
    fn index(&mut self, payment_id: &str, order_id: &str) {
        let ids = entry_mut(&mut self.orders_by_payment, payment_id);
        let order_id = Id::new(order_id);
        if let Err(at) = ids.binary_search(&order_id) {
            ids.reserve_exact(1);
            ids.insert(at, order_id);
        }
    }

    fn apply_order_snapshot(&mut self, o: &Order) {
        let stamp = snapshot_stamp(o.version);
        let entry = entry_mut(&mut self.orders, &o.id);
        entry.version = entry.version.max(o.version);
        if entry.base.as_ref().is_none_or(|b| stamp > b.stamp) {
            entry.base = Some(OrderBase {
                stamp,
                order_number: o.order_number.as_deref().map(Into::into),
                created_at: o.created_at,
            });
        }
        offer(&mut entry.state, o.order_state, stamp);
        offer(&mut entry.shipment, o.shipment_state, stamp);
        if entry.totals.as_ref().is_none_or(|t| stamp > t.stamp) {
            let totals = totals_of(&o.total_price, o.taxed_price.as_ref());
            offer(&mut entry.totals, totals, stamp);
        }
        for r in o.payment_info.iter().flat_map(|i| i.payments.iter()) {
            entry.add_payment(r);
        }
        for pid in o.payment_ids() {
            self.index(pid, &o.id);
        }
    }

    /// The entry of the order `m` is about, its version raised to the message's.
    fn order_changed_by(&mut self, m: &Message, stamp: Stamp) -> Option<&mut OrderEntry> {
        let e = entry_mut(&mut self.orders, m.order_id()?);
        e.version = e.version.max(stamp.0);
        Some(e)
    }

    fn apply(&mut self, m: &Message) {
        let stamp = message_stamp(m);
        match &m.body {
            Body::PaymentCreated(p) => entry_mut(&mut self.payments, &p.id).apply_snapshot(p),
            Body::TransactionAdded(t) => {
                if let Some(pid) = m.payment_id() {
                    let e = entry_mut(&mut self.payments, pid);
                    e.version = e.version.max(stamp.0);
                    e.add_transaction(t, stamp);
                }
            }
            Body::TransactionStateChanged {
                transaction_id,
                state,
            } => {
                if let Some(pid) = m.payment_id() {
                    let e = entry_mut(&mut self.payments, pid);
                    e.version = e.version.max(stamp.0);
                    e.set_state(transaction_id, *state, stamp);
                }
            }
            Body::OrderCreated(o) => self.apply_order_snapshot(o),
            Body::OrderPaymentAdded(r) => {
                if let Some(oid) = m.order_id() {
                    let e = entry_mut(&mut self.orders, oid);
                    e.version = e.version.max(stamp.0);
                    e.add_payment(r);
                    self.index(&r.id, oid);
                }
            }
            Body::OrderStateChanged(s) => {
                if let Some(e) = self.order_changed_by(m, stamp) {
                    offer(&mut e.state, *s, stamp);
                }
            }
            Body::OrderShipmentStateChanged(s) => {
                if let Some(e) = self.order_changed_by(m, stamp) {
                    offer(&mut e.shipment, Some(*s), stamp);
                }
            }
            Body::OrderEditApplied {
                total_price,
                taxed_price,
            } => {
                if let Some(e) = self.order_changed_by(m, stamp) {
                    let totals = totals_of(total_price, taxed_price.as_ref());
                    offer(&mut e.totals, totals, stamp);
                }
            }
            _ => {}
        }
    }
}

/// The view built from messages and snapshots; see the module docs.
#[derive(Debug, Default)]
pub struct StreamView {
    state: Mutex<State>,
    /// Claims its reads are current, like the live view (see [`StreamView::as_if_live`]).
    as_if_live: bool,
}

/// A snapshot file that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("state snapshot {path}: {detail}")]
pub struct SnapshotError {
    /// The file.
    pub path: String,
    /// What was wrong.
    pub detail: String,
}

impl StreamView {
    /// An empty view.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty view that answers [`CommerceView::reads_are_current`] like the live view, so
    /// the engine skips the messages it deems inert. Fed a stream in commit order, its reads
    /// are what commercetools would answer at each message: replaying with it and with
    /// [`StreamView::new`] must plan the same actions, which proves the live path's inert
    /// filter drops nothing that matters.
    pub fn as_if_live() -> Self {
        Self {
            as_if_live: true,
            ..Self::default()
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a Payment snapshot (the commercetools representation, with its version).
    pub fn add_payment_snapshot(&self, p: &Payment) {
        entry_mut(&mut self.lock().payments, &p.id).apply_snapshot(p);
    }

    /// Adds an Order snapshot (the commercetools representation, with its version).
    pub fn add_order_snapshot(&self, o: &Order) {
        self.lock().apply_order_snapshot(o);
    }

    /// Loads `DIR/payments/*.json` and `DIR/orders/*.json`; either folder may be absent.
    ///
    /// # Errors
    /// Every file that cannot be read or decoded, all at once.
    pub fn load_snapshots(&self, dir: &Path) -> Result<usize, Vec<SnapshotError>> {
        let mut errors = Vec::new();
        let mut loaded = 0;
        if !dir.is_dir() {
            return Err(vec![SnapshotError {
                path: dir.display().to_string(),
                detail: "not a directory".into(),
            }]);
        }
        for (sub, is_payment) in [("payments", true), ("orders", false)] {
            let folder = dir.join(sub);
            let Ok(entries) = std::fs::read_dir(&folder) else {
                continue;
            };
            let mut files: Vec<_> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect();
            files.sort();
            for file in files {
                let fail = |detail: String| SnapshotError {
                    path: file.display().to_string(),
                    detail,
                };
                let bytes = match std::fs::read(&file) {
                    Ok(b) => b,
                    Err(e) => {
                        errors.push(fail(e.to_string()));
                        continue;
                    }
                };
                let result = if is_payment {
                    serde_json::from_slice::<Payment>(&bytes).map(|p| self.add_payment_snapshot(&p))
                } else {
                    serde_json::from_slice::<Order>(&bytes).map(|o| self.add_order_snapshot(&o))
                };
                match result {
                    Ok(()) => loaded += 1,
                    Err(e) => errors.push(fail(e.to_string())),
                }
            }
        }
        if errors.is_empty() {
            Ok(loaded)
        } else {
            Err(errors)
        }
    }
}

#[async_trait]
impl CommerceView for StreamView {
    async fn payment(&self, id: &str) -> Result<Option<Payment>, ViewError> {
        Ok(self
            .lock()
            .payments
            .get(&Id::new(id))
            .map(|e| e.to_payment(id)))
    }

    async fn order(&self, id: &str) -> Result<Option<Order>, ViewError> {
        Ok(self
            .lock()
            .orders
            .get(&Id::new(id))
            .and_then(|e| e.to_order(id.to_string())))
    }

    async fn orders_for_payment(&self, payment_id: &str) -> Result<Vec<Order>, ViewError> {
        let state = self.lock();
        let found = state
            .orders_by_payment
            .get(&Id::new(payment_id))
            .into_iter()
            .flatten()
            .filter_map(|oid| state.orders.get(oid)?.to_order(oid.to_text()))
            .collect();
        Ok(found)
    }

    fn observe(&self, message: &Message) {
        self.lock().apply(message);
    }

    fn reads_are_current(&self) -> bool {
        self.as_if_live
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::decode;

    fn msg(seq: u64, version: u64, body: &str) -> Message {
        let json = format!(
            r#"{{"notificationType":"Message","id":"m{seq}","resource":{{"typeId":"payment","id":"p"}},
            "resourceVersion":{version},"sequenceNumber":{seq},"createdAt":"2026-01-01T00:00:0{seq}.000Z",{body}}}"#
        );
        decode(json.as_bytes()).unwrap()
    }

    fn created() -> Message {
        msg(
            1,
            1,
            r#""type":"PaymentCreated","payment":{"id":"p","version":1,
            "amountPlanned":{"currencyCode":"EUR","centAmount":500},"transactions":[]}"#,
        )
    }

    fn added() -> Message {
        msg(
            2,
            2,
            r#""type":"PaymentTransactionAdded","transaction":{"id":"t","type":"Authorization",
            "amount":{"currencyCode":"EUR","centAmount":500},"state":"Pending"}"#,
        )
    }

    fn succeeded() -> Message {
        msg(
            3,
            3,
            r#""type":"PaymentTransactionStateChanged","transactionId":"t","state":"Success""#,
        )
    }

    async fn state_after(messages: &[&Message]) -> Payment {
        let view = StreamView::new();
        for m in messages {
            view.observe(m);
        }
        view.payment("p").await.unwrap().unwrap()
    }

    #[test]
    fn a_transaction_takes_48_bytes_and_its_id_24() {
        assert_eq!(std::mem::size_of::<TxEntry>(), 48);
        assert_eq!(std::mem::size_of::<(Id, TxEntry)>(), 72);
    }

    #[tokio::test]
    async fn every_delivery_order_converges_to_the_same_payment() {
        let (c, a, s) = (created(), added(), succeeded());
        let expected = state_after(&[&c, &a, &s]).await;
        assert!(expected.has_successful_authorization());
        for order in [
            vec![&s, &a, &c],
            vec![&a, &s, &c],
            vec![&c, &s, &a],
            vec![&s, &c, &a, &a, &s],
            vec![&c, &a, &s, &a, &c],
        ] {
            assert_eq!(state_after(&order).await, expected);
        }
    }

    #[tokio::test]
    async fn a_state_change_sharing_a_version_with_the_add_wins_by_sequence_number() {
        // One update with addTransaction + changeTransactionState: same resourceVersion.
        let add = msg(
            2,
            2,
            r#""type":"PaymentTransactionAdded","transaction":{"id":"t","type":"Authorization",
            "amount":{"currencyCode":"EUR","centAmount":500},"state":"Initial"}"#,
        );
        let change = msg(
            3,
            2,
            r#""type":"PaymentTransactionStateChanged","transactionId":"t","state":"Success""#,
        );
        assert!(
            state_after(&[&add, &change])
                .await
                .has_successful_authorization()
        );
        assert!(
            state_after(&[&change, &add])
                .await
                .has_successful_authorization()
        );
    }
}
