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

use super::compact::{Amount, Id, PackedOrder};
use super::{CommerceView, ViewError};
use crate::message::{Body, Message};
use crate::model::{
    Money, Order, OrderState, Payment, PaymentInfo, Reference, ReturnInfo, ReturnItem,
    ReturnPaymentState, ReturnShipmentState, ReturnedLine, ShipmentState, TaxedPrice, Transaction,
    TransactionState, TransactionType,
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
    /// The payment's `createdAt`, from the first snapshot that carries it (it never changes).
    created_at: Option<chrono::DateTime<chrono::Utc>>,
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
        self.created_at = self.created_at.or(p.created_at);
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
            created_at: self.created_at,
        }
    }
}

/// What the newest order snapshot says that no message updates.
#[derive(Debug)]
struct OrderBase {
    stamp: Stamp,
    created_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The order number, the line items and the custom line items, in one allocation (no
    /// message changes them; an Order Edit's `OrderEditApplied` carries only the totals).
    fixed: PackedOrder,
}

/// The line a return item returns: which list, and the line's id there.
#[derive(Debug)]
struct ReturnedLineEntry {
    custom: bool,
    id: Option<Id>,
}

impl ReturnedLineEntry {
    fn new(line: &ReturnedLine) -> Self {
        match line {
            ReturnedLine::LineItem(id) => Self {
                custom: false,
                id: Some(Id::new(id)),
            },
            ReturnedLine::CustomLineItem(id) => Self {
                custom: true,
                id: Some(Id::new(id)),
            },
            ReturnedLine::Unknown => Self {
                custom: false,
                id: None,
            },
        }
    }

    fn to_line(&self) -> ReturnedLine {
        match (&self.id, self.custom) {
            (Some(id), false) => ReturnedLine::LineItem(id.to_text()),
            (Some(id), true) => ReturnedLine::CustomLineItem(id.to_text()),
            (None, _) => ReturnedLine::Unknown,
        }
    }
}

/// What the message that created a return item says of it, and where it stands in that
/// message's `returnInfo` (so items list in commercetools' order, whatever the arrival order).
#[derive(Debug)]
struct ReturnItemBase {
    /// The stamp of the message (or snapshot) that listed the item last.
    created: Stamp,
    /// (index of its `ReturnInfo` in that message, index in its `items`).
    position: (u32, u32),
    quantity: u64,
    line: ReturnedLineEntry,
}

/// One return item: its base once a message listing it arrived (a state change can come
/// first), and its states with the stamps that set them.
#[derive(Debug)]
struct ReturnEntry {
    id: Id,
    base: Option<ReturnItemBase>,
    shipment: Option<Versioned<ReturnShipmentState>>,
    payment: Option<Versioned<ReturnPaymentState>>,
}

impl ReturnEntry {
    /// The newest stamp anything of the entry was set with.
    fn newest(&self) -> Stamp {
        let states = [
            self.shipment.as_ref().map(|v| v.stamp),
            self.payment.as_ref().map(|v| v.stamp),
        ];
        states
            .into_iter()
            .flatten()
            .chain(self.base.as_ref().map(|b| b.created))
            .max()
            .unwrap_or_default()
    }

    fn to_item(&self) -> Option<ReturnItem> {
        let base = self.base.as_ref()?;
        Some(ReturnItem {
            id: self.id.to_text(),
            quantity: base.quantity,
            line: base.line.to_line(),
            shipment_state: self.shipment.as_ref()?.value,
            payment_state: self.payment.as_ref()?.value,
        })
    }
}

/// An order's return items, kept apart from the order (in [`State::returns`]) so orders
/// without returns cost nothing. `ReturnInfoAdded` adds items; `ReturnInfoSet` (and a
/// snapshot) replaces them all: an item counts only if the message that listed it is not older
/// than the newest replacement. Items are kept by id, so a duplicate adds nothing, and a state
/// change applies when it is newer than the state the item has (an entry waits for the item
/// when the change comes first).
#[derive(Debug, Default)]
struct Returns {
    /// The stamp of the newest `ReturnInfoSet`.
    set_at: Stamp,
    items: Vec<ReturnEntry>,
}

impl Returns {
    /// The stamp of the newest replacement of the items: the newest `ReturnInfoSet`, or the
    /// newest snapshot (`snapshot_at`).
    fn replaced_at(&self, snapshot_at: Stamp) -> Stamp {
        self.set_at.max(snapshot_at)
    }

    /// The `returnInfo` of the snapshot at `stamp`, the newest being at `snapshot_at`.
    fn apply_snapshot(&mut self, infos: &[ReturnInfo], stamp: Stamp, snapshot_at: Stamp) {
        let replaced_at = self.replaced_at(snapshot_at);
        self.forget_before(replaced_at);
        if stamp >= replaced_at {
            self.list(infos, stamp);
        }
    }

    /// `ReturnInfoAdded`: one more return, unless a newer replacement removed it.
    fn add(&mut self, info: &ReturnInfo, stamp: Stamp, snapshot_at: Stamp) {
        if stamp >= self.replaced_at(snapshot_at) {
            self.list(std::slice::from_ref(info), stamp);
        }
    }

    /// `ReturnInfoSet`: every return replaced, unless a newer replacement came first.
    fn set(&mut self, infos: &[ReturnInfo], stamp: Stamp, snapshot_at: Stamp) {
        self.set_at = self.set_at.max(stamp);
        self.apply_snapshot(infos, stamp, snapshot_at);
    }

    /// `OrderReturnShipmentStateChanged`: one item's shipment state. Older than the newest
    /// replacement, it is about an item that replacement removed (or listed, with a state at
    /// least as new).
    fn set_shipment(
        &mut self,
        item_id: &str,
        state: ReturnShipmentState,
        stamp: Stamp,
        snapshot_at: Stamp,
    ) {
        if stamp >= self.replaced_at(snapshot_at) {
            offer(&mut self.entry(item_id).shipment, state, stamp);
        }
    }

    fn entry(&mut self, id: &str) -> &mut ReturnEntry {
        let id = Id::new(id);
        let at = match self.items.iter().position(|e| e.id == id) {
            Some(at) => at,
            None => {
                self.items.push(ReturnEntry {
                    id,
                    base: None,
                    shipment: None,
                    payment: None,
                });
                self.items.len() - 1
            }
        };
        &mut self.items[at]
    }

    /// Drops what a replacement at `replaced_at` removed: entries nothing newer than it has
    /// touched (items it did not list, state changes of those). An item listed before it
    /// and changed after it is one the replacement lists again (a snapshot keeps the ids):
    /// kept, so the newer state survives the replacement.
    fn forget_before(&mut self, replaced_at: Stamp) {
        self.items.retain(|e| e.newest() >= replaced_at);
    }

    /// Lists the items of `infos` as of `stamp` (a message's or a snapshot's).
    fn list(&mut self, infos: &[ReturnInfo], stamp: Stamp) {
        for (i, info) in infos.iter().enumerate() {
            for (j, item) in info.items.iter().enumerate() {
                let e = self.entry(&item.id);
                if e.base.as_ref().is_none_or(|b| stamp > b.created) {
                    e.base = Some(ReturnItemBase {
                        created: stamp,
                        position: (
                            u32::try_from(i).unwrap_or(u32::MAX),
                            u32::try_from(j).unwrap_or(u32::MAX),
                        ),
                        quantity: item.quantity,
                        line: ReturnedLineEntry::new(&item.line),
                    });
                }
                offer(&mut e.shipment, item.shipment_state, stamp);
                offer(&mut e.payment, item.payment_state, stamp);
            }
        }
    }

    /// The `returnInfo` as of now, given the newest replacement `replaced_at`: the items
    /// grouped by the message that listed them, in commercetools' order.
    fn to_return_info(&self, replaced_at: Stamp) -> Vec<ReturnInfo> {
        let mut live: Vec<(&ReturnItemBase, ReturnItem)> = self
            .items
            .iter()
            .filter_map(|e| Some((e.base.as_ref()?, e.to_item()?)))
            .filter(|(b, _)| b.created >= replaced_at)
            .collect();
        live.sort_by_key(|(b, _)| (b.created, b.position));
        let mut infos: Vec<ReturnInfo> = Vec::new();
        let mut group = None;
        for (b, item) in live {
            let key = (b.created, b.position.0);
            match infos.last_mut() {
                Some(info) if group == Some(key) => info.items.push(item),
                _ => infos.push(ReturnInfo { items: vec![item] }),
            }
            group = Some(key);
        }
        infos
    }
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

    /// The stamp of the newest snapshot ((0, 0) before the first).
    fn snapshot_at(&self) -> Stamp {
        self.base.as_ref().map(|b| b.stamp).unwrap_or_default()
    }

    /// The order, with its `returns` (kept in [`State::returns`]).
    fn to_order(&self, id: String, returns: Option<&Returns>) -> Option<Order> {
        let base = self.base.as_ref()?;
        // A snapshot sets the state, shipment and totals along with the base.
        let totals = &self.totals.as_ref()?.value;
        let total_price = totals.0.to_money();
        let (line_items, custom_line_items) = base.fixed.lines(&total_price);
        Some(Order {
            id,
            version: self.version,
            order_number: base.fixed.order_number().map(str::to_string),
            taxed_price: totals.1.as_ref().map(|g| TaxedPrice {
                total_gross: g.to_money(),
            }),
            total_price,
            order_state: self.state.as_ref()?.value,
            shipment_state: self.shipment.as_ref()?.value,
            created_at: base.created_at,
            payment_info: Some(PaymentInfo {
                payments: self.payments.iter().map(PaymentRef::to_reference).collect(),
            }),
            line_items,
            custom_line_items,
            return_info: returns
                .map(|r| r.to_return_info(r.replaced_at(self.snapshot_at())))
                .unwrap_or_default(),
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
    /// order id → its return items, for the orders that have (had) returns.
    returns: HashMap<Id, Returns>,
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
                created_at: o.created_at,
                fixed: PackedOrder::new(
                    o.order_number.as_deref(),
                    &o.line_items,
                    &o.custom_line_items,
                    &o.total_price,
                ),
            });
        }
        let snapshot_at = entry.snapshot_at();
        let oid = Id::new(&o.id);
        match self.returns.get_mut(&oid) {
            Some(r) => r.apply_snapshot(&o.return_info, stamp, snapshot_at),
            None if !o.return_info.is_empty() => self
                .returns
                .entry(oid)
                .or_default()
                .apply_snapshot(&o.return_info, stamp, snapshot_at),
            None => {}
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

    /// The return items of the order `m` is about, with the stamp of its newest snapshot; the
    /// order's version raised to the message's.
    fn returns_changed_by(&mut self, m: &Message, stamp: Stamp) -> Option<(&mut Returns, Stamp)> {
        let snapshot_at = self.order_changed_by(m, stamp)?.snapshot_at();
        let returns = entry_mut(&mut self.returns, m.order_id()?);
        Some((returns, snapshot_at))
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
            Body::ReturnInfoAdded(info) => {
                if let Some((r, snapshot_at)) = self.returns_changed_by(m, stamp) {
                    r.add(info, stamp, snapshot_at);
                }
            }
            Body::ReturnInfoSet(infos) => {
                if let Some((r, snapshot_at)) = self.returns_changed_by(m, stamp) {
                    r.set(infos, stamp, snapshot_at);
                }
            }
            Body::ReturnShipmentStateChanged {
                return_item_id,
                state,
            } => {
                if let Some((r, snapshot_at)) = self.returns_changed_by(m, stamp) {
                    r.set_shipment(return_item_id, *state, stamp, snapshot_at);
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
        let state = self.lock();
        let oid = Id::new(id);
        Ok(state
            .orders
            .get(&oid)
            .and_then(|e| e.to_order(id.to_string(), state.returns.get(&oid))))
    }

    async fn orders_for_payment(&self, payment_id: &str) -> Result<Vec<Order>, ViewError> {
        let state = self.lock();
        let found = state
            .orders_by_payment
            .get(&Id::new(payment_id))
            .into_iter()
            .flatten()
            .filter_map(|oid| {
                state
                    .orders
                    .get(oid)?
                    .to_order(oid.to_text(), state.returns.get(oid))
            })
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

    fn order_msg(seq: u64, version: u64, body: &str) -> Message {
        let json = format!(
            r#"{{"notificationType":"Message","id":"om{seq}","resource":{{"typeId":"order","id":"o"}},
            "resourceVersion":{version},"sequenceNumber":{seq},"createdAt":"2026-01-01T00:00:0{seq}.000Z",{body}}}"#
        );
        decode(json.as_bytes()).unwrap()
    }

    fn eur(cents: i64) -> String {
        format!(
            r#"{{"type":"centPrecision","currencyCode":"EUR","centAmount":{cents},"fractionDigits":2}}"#
        )
    }

    fn order_created() -> Message {
        order_msg(
            1,
            1,
            &format!(
                r#""type":"OrderCreated","order":{{"id":"o","version":1,"orderState":"Open",
                "totalPrice":{t},"taxedPrice":{{"totalNet":{n},"totalGross":{t}}},
                "lineItems":[{{"id":"3a6a164f-56f2-4df8-b025-aafecb0f8251","quantity":2,
                  "totalPrice":{a},"taxedPrice":{{"totalNet":{an},"totalGross":{a}}}}}],
                "customLineItems":[{{"id":"shipping-fee","quantity":1,"totalPrice":{c}}}]}}"#,
                t = eur(5990),
                n = eur(5034),
                a = eur(4990),
                an = eur(4193),
                c = eur(1000)
            ),
        )
    }

    fn item(id: &str, line: &str, quantity: u64, shipment: &str, payment: &str) -> String {
        let (kind, field) = if line.starts_with("shipping") {
            ("CustomLineItemReturnItem", "customLineItemId")
        } else {
            ("LineItemReturnItem", "lineItemId")
        };
        format!(
            r#"{{"type":"{kind}","id":"{id}","quantity":{quantity},"{field}":"{line}",
            "shipmentState":"{shipment}","paymentState":"{payment}"}}"#
        )
    }

    const LINE: &str = "3a6a164f-56f2-4df8-b025-aafecb0f8251";

    /// `ReturnInfoAdded` at version 2: one pair of shoes back, refundable.
    fn return_added() -> Message {
        let i = item("r1", LINE, 1, "Returned", "Initial");
        order_msg(
            2,
            2,
            &format!(r#""type":"ReturnInfoAdded","returnInfo":{{"items":[{i}]}}"#),
        )
    }

    /// `ReturnInfoAdded` at version 3: the custom line, only advised.
    fn second_return_added() -> Message {
        let i = item("r2", "shipping-fee", 1, "Advised", "NonRefundable");
        order_msg(
            3,
            3,
            &format!(r#""type":"ReturnInfoAdded","returnInfo":{{"items":[{i}]}}"#),
        )
    }

    /// `OrderReturnShipmentStateChanged` at version 4: r1 is back in stock.
    fn r1_back_in_stock() -> Message {
        order_msg(
            4,
            4,
            r#""type":"OrderReturnShipmentStateChanged","returnItemId":"r1","returnShipmentState":"BackInStock""#,
        )
    }

    /// `ReturnInfoSet` at version 5: both returns replaced by one, with new ids.
    fn returns_set() -> Message {
        let a = item("n1", LINE, 2, "Returned", "Initial");
        let b = item("n2", "shipping-fee", 1, "Returned", "Initial");
        order_msg(
            5,
            5,
            &format!(r#""type":"ReturnInfoSet","returnInfo":[{{"items":[{a},{b}]}}]"#),
        )
    }

    /// `OrderReturnShipmentStateChanged` at version 6: n2 unusable.
    fn n2_unusable() -> Message {
        order_msg(
            6,
            6,
            r#""type":"OrderReturnShipmentStateChanged","returnItemId":"n2","returnShipmentState":"Unusable""#,
        )
    }

    async fn order_after(messages: &[&Message]) -> Order {
        let view = StreamView::new();
        for m in messages {
            view.observe(m);
        }
        view.order("o").await.unwrap().unwrap()
    }

    /// (item id, quantity, line, shipment, payment) of every return item, in order.
    fn items_of(o: &Order) -> Vec<(String, u64, ReturnedLine, &'static str, &'static str)> {
        o.return_items()
            .map(|i| {
                (
                    i.id.clone(),
                    i.quantity,
                    i.line.clone(),
                    i.shipment_state.as_str(),
                    i.payment_state.as_str(),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn an_order_keeps_its_lines() {
        let o = order_after(&[&order_created()]).await;
        let created = match order_created().body {
            Body::OrderCreated(o) => o,
            other => panic!("{other:?}"),
        };
        assert_eq!(o.line_items, created.line_items);
        assert_eq!(o.custom_line_items, created.custom_line_items);
        assert_eq!(o.line_items[0].gross().cent_amount, 4990);
        assert_eq!(o.line_items[0].quantity, 2);
        assert_eq!(o.custom_line_items[0].gross().cent_amount, 1000);
        assert!(o.return_info.is_empty());
    }

    #[tokio::test]
    async fn return_info_added_appends_and_states_change_by_item() {
        let o = order_after(&[&order_created(), &return_added()]).await;
        assert_eq!(
            items_of(&o),
            [(
                "r1".into(),
                1,
                ReturnedLine::LineItem(LINE.into()),
                "Returned",
                "Initial"
            )]
        );
        assert_eq!(o.version, 2);
        let o = order_after(&[
            &order_created(),
            &return_added(),
            &second_return_added(),
            &r1_back_in_stock(),
        ])
        .await;
        assert_eq!(o.return_info.len(), 2, "one ReturnInfo per addReturnInfo");
        assert_eq!(
            items_of(&o),
            [
                (
                    "r1".into(),
                    1,
                    ReturnedLine::LineItem(LINE.into()),
                    "BackInStock",
                    "Initial"
                ),
                (
                    "r2".into(),
                    1,
                    ReturnedLine::CustomLineItem("shipping-fee".into()),
                    "Advised",
                    "NonRefundable"
                ),
            ]
        );
        let line = o.returned_line(&o.return_info[0].items[0].line);
        assert_eq!(line.map(|l| l.gross().cent_amount), Some(4990));
    }

    #[tokio::test]
    async fn return_info_set_replaces_every_item() {
        let o = order_after(&[
            &order_created(),
            &return_added(),
            &second_return_added(),
            &r1_back_in_stock(),
            &returns_set(),
            &n2_unusable(),
        ])
        .await;
        assert_eq!(o.return_info.len(), 1);
        assert_eq!(
            items_of(&o),
            [
                (
                    "n1".into(),
                    2,
                    ReturnedLine::LineItem(LINE.into()),
                    "Returned",
                    "Initial"
                ),
                (
                    "n2".into(),
                    1,
                    ReturnedLine::CustomLineItem("shipping-fee".into()),
                    "Unusable",
                    "Initial"
                ),
            ]
        );
        // A set without returnInfo removes them all.
        let cleared = order_msg(7, 7, r#""type":"ReturnInfoSet""#);
        let o = order_after(&[&order_created(), &returns_set(), &cleared]).await;
        assert!(o.return_info.is_empty());
    }

    #[tokio::test]
    async fn return_messages_converge_whatever_the_order_and_duplicates() {
        let (c, a1, a2, s1, set, s2) = (
            order_created(),
            return_added(),
            second_return_added(),
            r1_back_in_stock(),
            returns_set(),
            n2_unusable(),
        );
        let before_set = order_after(&[&c, &a1, &a2, &s1]).await;
        for order in [
            vec![&s1, &a1, &c, &a2],
            vec![&a2, &s1, &a1, &c, &a1, &s1],
            vec![&c, &a1, &a1, &a2, &s1, &s1, &a2],
        ] {
            assert_eq!(order_after(&order).await, before_set, "{order:?}");
        }
        let after_set = order_after(&[&c, &a1, &a2, &s1, &set, &s2]).await;
        for order in [
            vec![&s2, &set, &s1, &a2, &a1, &c],
            vec![&set, &c, &a1, &s2, &a2, &s1],
            vec![&a1, &s1, &s2, &c, &set, &a2, &set, &a1, &s2],
            vec![&c, &a1, &a2, &set, &s1, &s2, &s1, &a1],
        ] {
            assert_eq!(order_after(&order).await, after_set, "{order:?}");
        }
    }

    #[tokio::test]
    async fn a_snapshot_with_returns_keeps_newer_changes() {
        // A `--state` snapshot at version 3 lists both returns; r1 changes at version 4.
        let snapshot: Order = serde_json::from_value(serde_json::json!({
            "id": "o", "version": 3, "orderState": "Open",
            "totalPrice": {"currencyCode": "EUR", "centAmount": 5990},
            "lineItems": [{"id": LINE, "quantity": 2,
                "totalPrice": {"currencyCode": "EUR", "centAmount": 4990}}],
            "returnInfo": [
                {"items": [{"type": "LineItemReturnItem", "id": "r1", "quantity": 1,
                    "lineItemId": LINE, "shipmentState": "Returned", "paymentState": "Refunded"}]},
                {"items": [{"type": "LineItemReturnItem", "id": "r3", "quantity": 1,
                    "lineItemId": LINE, "shipmentState": "Advised",
                    "paymentState": "NonRefundable"}]}]
        }))
        .unwrap();
        for late_change_first in [false, true] {
            let view = StreamView::new();
            if late_change_first {
                view.observe(&r1_back_in_stock());
                view.observe(&return_added());
            }
            view.add_order_snapshot(&snapshot);
            view.observe(&return_added());
            view.observe(&r1_back_in_stock());
            let o = view.order("o").await.unwrap().unwrap();
            assert_eq!(
                items_of(&o),
                [
                    (
                        "r1".into(),
                        1,
                        ReturnedLine::LineItem(LINE.into()),
                        "BackInStock",
                        "Refunded"
                    ),
                    (
                        "r3".into(),
                        1,
                        ReturnedLine::LineItem(LINE.into()),
                        "Advised",
                        "NonRefundable"
                    ),
                ],
                "late change first: {late_change_first}"
            );
        }
    }

    #[test]
    fn an_order_takes_192_bytes_its_lines_apart() {
        // What the returns data path added is in the packed base (order number and lines, one
        // allocation) and in `State::returns`, for orders with returns only.
        assert_eq!(std::mem::size_of::<OrderEntry>(), 192);
    }

    #[test]
    fn an_order_without_returns_holds_no_return_state() {
        let view = StreamView::new();
        view.observe(&order_created());
        let state = view.lock();
        assert!(state.orders.contains_key(&Id::new("o")));
        assert!(state.returns.is_empty());
    }
}
