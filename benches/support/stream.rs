//! A realistic, deterministic commercetools notification stream for benchmarks and the load
//! tool (shared by `benches/*.rs` and `examples/loadtest`, included with `#[path]`).
//!
//! The messages are the fixtures in `fixtures/messages/` (compact, ~0.7 KB for most, ~1.7 KB
//! for a `PaymentCreated`, ~5 KB for an `OrderCreated`) with fresh ids, versions, amounts and
//! timestamps. A stream is made of *flows*, one checkout each, interleaved in time:
//!
//! | flow | messages | outcome |
//! |---|---|---|
//! | release | PaymentCreated, Pending, interaction, Success, OrderCreated, order state changes; variants: order before authorization, two payments (gift card + card), order without payment then `OrderPaymentAdded`, a `CheckoutPaymentAuthorized` event | one release |
//! | orphan | PaymentCreated, Pending, interaction, Success, no order | one cancel after the grace period |
//! | order creation failed | PaymentCreated, Pending, Success, `CheckoutOrderCreationFailed` | one cancel |
//! | failed authorization | PaymentCreated, Pending, interaction, Failure | nothing |
//! | abandoned | PaymentCreated (and sometimes Pending) | nothing |
//! | captured without order | PaymentCreated, Success, Charge added | nothing (a charge blocks the cancel) |
//!
//! On top: about 5 % of the messages are delivered late (0.5–5 s after later ones), about 3 %
//! are delivered twice (1–60 s apart, same bytes), some order updates also arrive as
//! `ResourceUpdated` change notifications, some Pending state changes as `payloadNotIncluded`,
//! and the stream starts with the subscription test notification. With the default mix about
//! 10 % of the messages lead to a release and 2 % to a cancel.
//!
//! [`Shape::Rich`] makes the resources larger (3–5 transactions per payment, custom fields on
//! payments, transactions and orders) with the same outcomes; `cloudevents_share` wraps a share
//! of the deliveries in CloudEvents envelopes.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde_json::Value;

/// What to generate.
#[derive(Debug, Clone)]
pub(crate) struct GenConfig {
    /// Exactly this many deliveries (duplicates included).
    pub messages: usize,
    /// Same seed, same bytes.
    pub seed: u64,
    /// Deliveries per second of stream time (a busy shop: 50).
    pub density: f64,
    /// Share of deliveries wrapped in a CloudEvents envelope.
    pub cloudevents_share: f64,
    /// How large the payments and orders are.
    pub shape: Shape,
    /// Share of messages delivered a second time.
    pub duplicate_share: f64,
    /// Share of messages delivered late.
    pub late_share: f64,
    /// `createdAt` of the first flow.
    pub start: DateTime<Utc>,
}

impl Default for GenConfig {
    fn default() -> Self {
        Self {
            messages: 1_000_000,
            seed: 6,
            density: 50.0,
            cloudevents_share: 0.0,
            shape: Shape::Basic,
            duplicate_share: 0.03,
            late_share: 0.05,
            start: Utc.with_ymd_and_hms(2026, 11, 20, 8, 0, 0).unwrap(),
        }
    }
}

/// How large the payments and orders are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Shape {
    /// The fixtures as they are: one transaction per payment at creation.
    #[default]
    Basic,
    /// Larger resources: every `PaymentCreated` carries 2–4 earlier failed authorization
    /// attempts beside the live one (3–5 transactions, each with PSP custom fields) and
    /// payment-level custom fields; every `OrderCreated` carries order custom fields. The
    /// failed attempts hold no money, so the rules' outcomes are the same as for `Basic`.
    Rich,
}

/// The kind of a flow, i.e. what the rules should do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlowKind {
    /// One release.
    Release,
    /// One cancel when the grace period ends.
    Orphan,
    /// One cancel at the `CheckoutOrderCreationFailed` event.
    OrderCreationFailed,
    /// Nothing: the authorization failed.
    Failed,
    /// Nothing: the payment never got further than Pending.
    Abandoned,
    /// Nothing: authorized and charged, no order (a charge blocks the cancel).
    Captured,
}

/// Counts that the rules must reproduce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Expected {
    /// Flows of each kind.
    pub flows: usize,
    /// Releases: one per release flow.
    pub releases: usize,
    /// Cancels when a grace period ends (orphans).
    pub cancels_timer: usize,
    /// Cancels at a `CheckoutOrderCreationFailed` event.
    pub cancels_event: usize,
    /// Deliveries that repeat an earlier one.
    pub duplicates: usize,
}

/// The generated stream: every delivery's bytes, in delivery order, in one buffer.
pub(crate) struct Stream {
    buf: Vec<u8>,
    ends: Vec<usize>,
    /// What the rules must do with it.
    pub expected: Expected,
    /// Stream time covered, first to last `createdAt`, in seconds.
    pub span_secs: f64,
}

impl Stream {
    /// Number of deliveries.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none.
    pub(crate) fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The bytes of delivery `i`.
    pub(crate) fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.buf[start..self.ends[i]]
    }

    /// Every delivery, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.len()).map(move |i| self.get(i))
    }

    /// Total payload bytes.
    pub(crate) fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// Writes the stream as JSONL (one delivery per line).
    pub(crate) fn write_jsonl(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
        for m in self.iter() {
            out.write_all(m)?;
            out.write_all(b"\n")?;
        }
        out.flush()
    }
}

// ------------------------------------------------------------------------------------------------
// Templates: the fixtures with placeholders.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    MessageId,
    PaymentId,
    TxId,
    Tx2Id,
    OrderId,
    CartId,
    OrderNumber,
    PaymentKey,
    Ts,
    Version,
    Seq,
    Amount,
    Total,
    State,
    Refs,
    ExtraTxs,
}

const VARS: &[(&str, Var)] = &[
    ("M", Var::MessageId),
    ("P", Var::PaymentId),
    ("T", Var::TxId),
    ("T2", Var::Tx2Id),
    ("O", Var::OrderId),
    ("C", Var::CartId),
    ("ON", Var::OrderNumber),
    ("PK", Var::PaymentKey),
    ("TS", Var::Ts),
    ("V", Var::Version),
    ("S", Var::Seq),
    ("AMT", Var::Amount),
    ("TOTAL", Var::Total),
    ("STATE", Var::State),
    ("REFS", Var::Refs),
    ("XTX", Var::ExtraTxs),
];

enum Part {
    Lit(String),
    Var(Var),
}

struct Template(Vec<Part>);

/// Fixture values replaced wherever a string equals them.
const STRING_SUBST: &[(&str, &str)] = &[
    ("ee476c7e-2964-4b6d-96f8-2d8ee6e88d4e", "P"),
    ("9abe0c2c-f917-4d0f-9f62-c78cecef8a4c", "P"),
    ("31ea1ee1-c374-4b84-a4ad-5c967513e375", "P"),
    ("8756fff9-5c3b-4d79-9d7f-8f95c941e5b5", "T"),
    ("836dcfbb-89a0-4e43-9cac-c3fb53e447c1", "T2"),
    ("5a5709de-26e8-47c5-ab8a-4e7953b072d1", "O"),
    ("526fa361-e93f-4e8a-b690-f2bd4230c5f5", "C"),
    ("417cc363-ca92-4e6e-8e89-1d98267005bc", "C"),
    ("100052317", "ON"),
    ("pay-100052317-1", "PK"),
];

fn is_timestamp(s: &str) -> bool {
    s.len() == 24 && s.starts_with("20") && s.as_bytes()[10] == b'T' && s.ends_with('Z')
}

fn subst_strings(v: &mut Value) {
    match v {
        Value::String(s) => {
            if is_timestamp(s) {
                *s = "@@TS@@".into();
            } else if let Some((_, var)) = STRING_SUBST.iter().find(|(lit, _)| lit == s) {
                *s = format!("@@{var}@@");
            }
        }
        Value::Array(a) => a.iter_mut().for_each(subst_strings),
        Value::Object(o) => o.values_mut().for_each(subst_strings),
        _ => {}
    }
}

/// Sets `pointer` to a placeholder; `raw` placeholders lose their quotes (numbers, arrays).
fn set(v: &mut Value, pointer: &str, var: &str, raw: bool) {
    if let Some(slot) = v.pointer_mut(pointer) {
        *slot = Value::String(if raw {
            format!("@@#{var}@@")
        } else {
            format!("@@{var}@@")
        });
    }
}

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/messages")
}

fn template(name: &str, edit: impl FnOnce(&mut Value)) -> Template {
    let path = fixtures_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading fixture {}: {e}", path.display()));
    let mut v: Value = serde_json::from_str(&text).expect("fixture is JSON");
    subst_strings(&mut v);
    if v.get("notificationType").and_then(Value::as_str) != Some("ResourceUpdated")
        && v.get("id").is_some()
    {
        set(&mut v, "/id", "M", false);
    }
    set(&mut v, "/resourceVersion", "V", true);
    set(&mut v, "/sequenceNumber", "S", true);
    edit(&mut v);
    let mut s = serde_json::to_string(&v).expect("serializes");
    for (name, _) in VARS {
        s = s.replace(&format!("\"@@#{name}@@\""), &format!("@@{name}@@"));
    }
    let mut parts = Vec::new();
    for (i, piece) in s.split("@@").enumerate() {
        if i % 2 == 0 {
            if !piece.is_empty() {
                parts.push(Part::Lit(piece.to_string()));
            }
        } else {
            let var = VARS
                .iter()
                .find(|(n, _)| *n == piece)
                .unwrap_or_else(|| panic!("unknown placeholder {piece} in {name}"))
                .1;
            parts.push(Part::Var(var));
        }
    }
    Template(parts)
}

struct Templates {
    payment_created: Template,
    tx_state_changed: Template,
    tx_state_not_included: Template,
    charge_added: Template,
    interaction: Template,
    status_transition: Template,
    order_created: Template,
    order_payment_added: Template,
    order_state_changed: Template,
    order_payment_state_changed: Template,
    order_shipment_state_changed: Template,
    order_updated: Template,
    checkout_authorized: Template,
    order_creation_failed: Template,
    subscription_test: Template,
}

/// Custom fields as a PSP integration or a shop would set them (the rules never read them).
fn custom_fields(type_key: &str, n: usize) -> Value {
    let mut fields = serde_json::Map::new();
    for i in 0..n {
        let value = match i % 4 {
            0 => Value::String(format!("{type_key}-value-{i}-0123456789abcdef")),
            1 => Value::from(1_000 + i as i64),
            2 => Value::Bool(i % 3 == 0),
            _ => serde_json::json!({"en": "Standard delivery", "de": "Standardversand"}),
        };
        fields.insert(format!("{type_key}Field{i}"), value);
    }
    serde_json::json!({"type": {"typeId": "type", "key": type_key}, "fields": fields})
}

impl Templates {
    fn load(shape: Shape) -> Self {
        let rich = shape == Shape::Rich;
        Self {
            payment_created: template("PaymentCreated", |v| {
                set(v, "/payment/version", "V", true);
                set(v, "/payment/amountPlanned/centAmount", "AMT", true);
                set(v, "/payment/transactions/0/amount/centAmount", "AMT", true);
                set(v, "/payment/transactions/0/state", "STATE", false);
                if rich {
                    if let Some(t) = v
                        .pointer_mut("/payment/transactions")
                        .and_then(Value::as_array_mut)
                    {
                        t.push(Value::String("@@#XTX@@".into()));
                    }
                    if let Some(p) = v.pointer_mut("/payment").and_then(Value::as_object_mut) {
                        p.insert("custom".into(), custom_fields("checkoutPayment", 12));
                    }
                }
            }),
            tx_state_changed: template("PaymentTransactionStateChanged", |v| {
                set(v, "/state", "STATE", false);
            }),
            tx_state_not_included: template(
                "PayloadNotIncluded-PaymentTransactionStateChanged",
                |_| {},
            ),
            charge_added: template("PaymentTransactionAdded", |v| {
                set(v, "/transaction/amount/centAmount", "AMT", true);
            }),
            interaction: template("Other-PaymentInteractionAdded", |_| {}),
            status_transition: template("PaymentStatusStateTransition", |_| {}),
            order_created: template("OrderCreated", |v| {
                set(v, "/order/version", "V", true);
                set(v, "/order/totalPrice/centAmount", "TOTAL", true);
                set(v, "/order/taxedPrice/totalGross/centAmount", "TOTAL", true);
                set(v, "/order/paymentInfo/payments", "REFS", true);
                if rich && let Some(o) = v.pointer_mut("/order").and_then(Value::as_object_mut) {
                    o.insert("custom".into(), custom_fields("shopOrder", 16));
                }
            }),
            order_payment_added: template("OrderPaymentAdded", |_| {}),
            order_state_changed: template("OrderStateChanged", |_| {}),
            order_payment_state_changed: template("OrderPaymentStateChanged", |_| {}),
            order_shipment_state_changed: template("OrderShipmentStateChanged", |_| {}),
            order_updated: template("ResourceUpdated-order", |v| {
                set(v, "/version", "V", true);
            }),
            checkout_authorized: template("CheckoutPaymentAuthorized", |_| {}),
            order_creation_failed: template("CheckoutOrderCreationFailed", |v| {
                set(v, "/data/payments", "REFS", true);
            }),
            subscription_test: template("SubscriptionTestNotification", |_| {}),
        }
    }
}

/// Values for one rendering.
#[derive(Default, Clone)]
struct Vals<'a> {
    message_id: &'a str,
    payment_id: &'a str,
    tx_id: &'a str,
    tx2_id: &'a str,
    order_id: &'a str,
    cart_id: &'a str,
    order_number: &'a str,
    payment_key: &'a str,
    ts: &'a str,
    version: u64,
    seq: u64,
    amount: i64,
    total: i64,
    state: &'a str,
    refs: &'a str,
    extra_txs: &'a str,
}

fn render(t: &Template, v: &Vals<'_>, out: &mut Vec<u8>) {
    use std::io::Write;
    for part in &t.0 {
        match part {
            Part::Lit(s) => out.extend_from_slice(s.as_bytes()),
            Part::Var(var) => {
                let s: &str = match var {
                    Var::MessageId => v.message_id,
                    Var::PaymentId => v.payment_id,
                    Var::TxId => v.tx_id,
                    Var::Tx2Id => v.tx2_id,
                    Var::OrderId => v.order_id,
                    Var::CartId => v.cart_id,
                    Var::OrderNumber => v.order_number,
                    Var::PaymentKey => v.payment_key,
                    Var::Ts => v.ts,
                    Var::State => v.state,
                    Var::Refs => v.refs,
                    Var::ExtraTxs => v.extra_txs,
                    Var::Version => {
                        let _ = write!(out, "{}", v.version);
                        continue;
                    }
                    Var::Seq => {
                        let _ = write!(out, "{}", v.seq);
                        continue;
                    }
                    Var::Amount => {
                        let _ = write!(out, "{}", v.amount);
                        continue;
                    }
                    Var::Total => {
                        let _ = write!(out, "{}", v.total);
                        continue;
                    }
                };
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Flows

/// One payment of a flow.
struct Pay {
    id: String,
    tx: String,
    charge_tx: String,
    key: String,
    amount: i64,
    /// Next resourceVersion / sequenceNumber.
    version: u64,
    /// [`Shape::Rich`]: the failed attempts, a JSON fragment for the transactions array.
    extra_txs: String,
}

/// One checkout.
struct Flow {
    kind: FlowKind,
    payments: Vec<Pay>,
    order_id: String,
    cart_id: String,
    order_number: String,
    total: i64,
    order_version: u64,
}

/// What one message of a flow says.
#[derive(Debug, Clone, Copy)]
enum Step {
    PaymentCreated(usize),
    TxState(usize, &'static str),
    TxPendingNotIncluded(usize),
    Interaction(usize),
    StatusTransition(usize),
    ChargeAdded(usize),
    CheckoutAuthorized(usize),
    /// With all payments referenced, or none.
    OrderCreated {
        with_payments: bool,
    },
    OrderPaymentAdded(usize),
    OrderStateChanged,
    OrderPaymentStateChanged,
    OrderShipmentStateChanged,
    OrderUpdated,
    OrderCreationFailed,
}

/// A message to render: when it was created, when it is delivered, which flow and step.
struct Planned {
    deliver_ms: i64,
    created_ms: i64,
    flow: u32,
    step: Step,
    /// Index (in `plan`) of the message this one duplicates.
    duplicate_of: Option<u32>,
}

fn uuid(rng: &mut fastrand::Rng) -> String {
    let a = rng.u64(..);
    let b = rng.u64(..);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        (a >> 32) as u32,
        (a >> 16) as u16,
        (a & 0xfff) as u16,
        ((b >> 48) as u16 & 0x3fff) | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

fn pick_kind(rng: &mut fastrand::Rng) -> FlowKind {
    let x = rng.f64();
    if x < 0.60 {
        FlowKind::Release
    } else if x < 0.69 {
        FlowKind::Orphan
    } else if x < 0.72 {
        FlowKind::OrderCreationFailed
    } else if x < 0.82 {
        FlowKind::Failed
    } else if x < 0.96 {
        FlowKind::Abandoned
    } else {
        FlowKind::Captured
    }
}

/// The steps of a flow with their offsets from the flow start, in milliseconds.
fn steps(flow: &Flow, rng: &mut fastrand::Rng) -> Vec<(i64, Step)> {
    let mut s = Vec::new();
    let jitter = |rng: &mut fastrand::Rng, base: i64| base + rng.i64(0..=base / 2 + 1);
    for (i, _) in flow.payments.iter().enumerate() {
        let base = i as i64 * 2_000;
        s.push((base, Step::PaymentCreated(i)));
        match flow.kind {
            FlowKind::Abandoned => {
                if rng.bool() {
                    s.push((base + jitter(rng, 300), Step::TxState(i, "Pending")));
                }
                continue;
            }
            FlowKind::Captured => {
                s.push((base + jitter(rng, 2_000), Step::TxState(i, "Success")));
                s.push((base + jitter(rng, 20_000), Step::ChargeAdded(i)));
                continue;
            }
            _ => {}
        }
        if rng.f64() < 0.02 {
            s.push((base + jitter(rng, 300), Step::TxPendingNotIncluded(i)));
        } else {
            s.push((base + jitter(rng, 300), Step::TxState(i, "Pending")));
        }
        if rng.f64() < 0.2 {
            s.push((base + jitter(rng, 1_000), Step::StatusTransition(i)));
        }
        if flow.kind != FlowKind::OrderCreationFailed {
            s.push((base + jitter(rng, 30_000), Step::Interaction(i)));
        }
        let outcome = if flow.kind == FlowKind::Failed {
            "Failure"
        } else {
            "Success"
        };
        s.push((base + 40_000 + rng.i64(0..2_000), Step::TxState(i, outcome)));
        if flow.kind == FlowKind::Release && rng.f64() < 0.15 {
            s.push((base + 40_300 + rng.i64(0..500), Step::CheckoutAuthorized(i)));
        }
    }
    match flow.kind {
        FlowKind::Release => {
            let after = 45_000 + rng.i64(0..3_000);
            let (order_at, payment_added) = match rng.u32(0..100) {
                // The order first, the authorization later.
                0..30 => (1_500 + rng.i64(0..1_000), false),
                // An order without payments; the payments are added after.
                30..35 => (after, true),
                _ => (after, false),
            };
            s.push((
                order_at,
                Step::OrderCreated {
                    with_payments: !payment_added,
                },
            ));
            if payment_added {
                for i in 0..flow.payments.len() {
                    s.push((after + 500 + i as i64 * 100, Step::OrderPaymentAdded(i)));
                }
            }
            let later = after.max(order_at) + 60_000;
            s.push((later + rng.i64(0..30_000), Step::OrderPaymentStateChanged));
            if rng.f64() < 0.5 {
                s.push((later + 40_000 + rng.i64(0..60_000), Step::OrderStateChanged));
                if rng.f64() < 0.3 {
                    s.push((later + 41_000 + rng.i64(0..60_000), Step::OrderUpdated));
                }
            }
            if rng.f64() < 0.3 {
                s.push((
                    later + 200_000 + rng.i64(0..100_000),
                    Step::OrderShipmentStateChanged,
                ));
            }
        }
        FlowKind::OrderCreationFailed => {
            s.push((44_000 + rng.i64(0..2_000), Step::OrderCreationFailed));
        }
        _ => {}
    }
    s
}

/// 2–4 failed authorization attempts (with PSP custom fields), listed after the live one.
fn failed_attempts(amount: i64, rng: &mut fastrand::Rng) -> String {
    let n = rng.usize(2..=4);
    let mut out = Vec::with_capacity(n);
    for attempt in 1..=n {
        let custom = custom_fields("pspAttempt", 6);
        out.push(format!(
            r#"{{"id":"{}","timestamp":"2026-11-20T10:14:01.381Z","type":"Authorization","amount":{{"type":"centPrecision","currencyCode":"EUR","centAmount":{amount},"fractionDigits":2}},"interactionId":"PSP{:013}","state":"Failure","custom":{}}}"#,
            uuid(rng),
            rng.u64(..10_000_000_000_000),
            serde_json::json!({"type": custom["type"], "fields": {"attempt": attempt, "resultCode": "Refused", "refusalReason": "Not enough balance", "fields": custom["fields"]}}),
        ));
    }
    out.join(",")
}

fn new_flow(kind: FlowKind, seq: usize, rng: &mut fastrand::Rng, shape: Shape) -> Flow {
    let total = 1_000 + rng.i64(0..40_000);
    let split = kind == FlowKind::Release && rng.f64() < 0.1 && total > 3_000;
    let mk = |rng: &mut fastrand::Rng, amount: i64, n: usize| Pay {
        id: uuid(rng),
        tx: uuid(rng),
        charge_tx: uuid(rng),
        key: format!("pay-{}-{n}", 100_000_000 + seq),
        amount,
        version: 1,
        extra_txs: if shape == Shape::Rich {
            failed_attempts(amount, rng)
        } else {
            String::new()
        },
    };
    let payments = if split {
        let gift = 2_500;
        vec![mk(rng, gift, 1), mk(rng, total - gift, 2)]
    } else {
        vec![mk(rng, total, 1)]
    };
    Flow {
        kind,
        payments,
        order_id: uuid(rng),
        cart_id: uuid(rng),
        order_number: format!("{}", 100_000_000 + seq),
        total,
        order_version: 1,
    }
}

fn ts(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn refs(ids: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = ids
        .map(|id| format!(r#"{{"typeId":"payment","id":"{id}"}}"#))
        .collect();
    format!("[{}]", items.join(","))
}

/// Generates a stream; see the module docs.
pub(crate) fn generate(cfg: &GenConfig) -> Stream {
    let templates = Templates::load(cfg.shape);
    let mut rng = fastrand::Rng::with_seed(cfg.seed);
    let start_ms = cfg.start.timestamp_millis();

    // 1. Plan: flows and their messages until the count is reached.
    let mut flows: Vec<Flow> = Vec::new();
    let mut plan: Vec<Planned> = Vec::with_capacity(cfg.messages + 16);
    let mut expected = Expected::default();
    // The subscription test notification comes first.
    let mut count = 1usize;
    let avg_per_flow = 6.0;
    let mean_gap_ms = 1000.0 * avg_per_flow / cfg.density.max(0.001);
    let mut t = start_ms as f64;
    while count < cfg.messages {
        let remaining = cfg.messages - count;
        let mut kind = pick_kind(&mut rng);
        let flow = loop {
            let f = new_flow(kind, flows.len(), &mut rng, cfg.shape);
            let st = steps(&f, &mut rng);
            // Each message may add a duplicate: budget for the worst case near the end.
            if st.len() * 2 <= remaining || kind == FlowKind::Abandoned {
                break (f, st);
            }
            kind = FlowKind::Abandoned;
        };
        let (flow, st) = flow;
        let st: Vec<(i64, Step)> = if st.len() > remaining {
            st.into_iter().take(remaining).collect()
        } else {
            st
        };
        let fi = flows.len() as u32;
        for (off, step) in st {
            let created = t as i64 + off;
            let late = rng.f64() < cfg.late_share;
            let deliver = if late {
                created + 500 + rng.i64(0..4_500)
            } else {
                created
            };
            let idx = plan.len() as u32;
            plan.push(Planned {
                deliver_ms: deliver,
                created_ms: created,
                flow: fi,
                step,
                duplicate_of: None,
            });
            count += 1;
            if count < cfg.messages && rng.f64() < cfg.duplicate_share {
                plan.push(Planned {
                    deliver_ms: deliver + 1_000 + rng.i64(0..59_000),
                    created_ms: created,
                    flow: fi,
                    step,
                    duplicate_of: Some(idx),
                });
                count += 1;
                expected.duplicates += 1;
            }
        }
        match flow.kind {
            FlowKind::Release => expected.releases += 1,
            FlowKind::Orphan => expected.cancels_timer += 1,
            FlowKind::OrderCreationFailed => expected.cancels_event += 1,
            _ => {}
        }
        flows.push(flow);
        t += -mean_gap_ms * (1.0 - rng.f64()).ln();
    }
    expected.flows = flows.len();

    // 2. Delivery order.
    let mut order: Vec<u32> = (0..plan.len() as u32).collect();
    order.sort_by_key(|&i| (plan[i as usize].deliver_ms, i));
    let first_created = plan.iter().map(|p| p.created_ms).min().unwrap_or(start_ms);
    let last_created = plan.iter().map(|p| p.created_ms).max().unwrap_or(start_ms);

    // 3. Render, in creation order within each resource so versions count up; then deliver.
    // Versions are assigned in creation order: sort a copy by created time.
    let mut by_created: Vec<u32> = (0..plan.len() as u32)
        .filter(|&i| plan[i as usize].duplicate_of.is_none())
        .collect();
    by_created.sort_by_key(|&i| (plan[i as usize].created_ms, i));
    let mut versions: Vec<u64> = vec![0; plan.len()];
    for &i in &by_created {
        let p = &plan[i as usize];
        let f = &mut flows[p.flow as usize];
        let v = match p.step {
            Step::PaymentCreated(k)
            | Step::TxState(k, _)
            | Step::TxPendingNotIncluded(k)
            | Step::Interaction(k)
            | Step::StatusTransition(k)
            | Step::ChargeAdded(k) => {
                let pay = &mut f.payments[k];
                let v = pay.version;
                pay.version += 1;
                v
            }
            Step::OrderCreated { .. }
            | Step::OrderPaymentAdded(_)
            | Step::OrderStateChanged
            | Step::OrderPaymentStateChanged
            | Step::OrderShipmentStateChanged => {
                let v = f.order_version;
                f.order_version += 1;
                v
            }
            // A change notification carries the version of the last change.
            Step::OrderUpdated => f.order_version.saturating_sub(1).max(1),
            Step::CheckoutAuthorized(_) | Step::OrderCreationFailed => 0,
        };
        versions[i as usize] = v;
    }

    let avg_len = 1_400usize;
    let mut buf: Vec<u8> = Vec::with_capacity(cfg.messages * avg_len);
    let mut ends: Vec<usize> = Vec::with_capacity(cfg.messages);
    let mut spans: Vec<(usize, usize)> = vec![(0, 0); plan.len()];
    // The subscription test notification.
    render(
        &templates.subscription_test,
        &Vals {
            ts: &ts(start_ms - 60_000),
            ..Vals::default()
        },
        &mut buf,
    );
    ends.push(buf.len());
    let mut scratch = Vec::with_capacity(16 * 1024);
    for &i in &order {
        let p = &plan[i as usize];
        let begin = buf.len();
        if let Some(orig) = p.duplicate_of {
            let (s, e) = spans[orig as usize];
            buf.extend_from_within(s..e);
        } else {
            let f = &flows[p.flow as usize];
            let message_id = uuid(&mut rng);
            let created = ts(p.created_ms);
            let version = versions[i as usize];
            scratch.clear();
            render_step(
                &templates,
                f,
                p.step,
                &message_id,
                &created,
                version,
                &mut scratch,
            );
            if cfg.cloudevents_share > 0.0 && rng.f64() < cfg.cloudevents_share {
                wrap_cloudevent(&scratch, &message_id, &created, p.step, &mut buf);
            } else {
                buf.extend_from_slice(&scratch);
            }
        }
        spans[i as usize] = (begin, buf.len());
        ends.push(buf.len());
    }
    Stream {
        buf,
        ends,
        expected,
        span_secs: (last_created - first_created) as f64 / 1000.0,
    }
}

fn render_step(
    t: &Templates,
    f: &Flow,
    step: Step,
    message_id: &str,
    created: &str,
    version: u64,
    out: &mut Vec<u8>,
) {
    let base = Vals {
        message_id,
        ts: created,
        version,
        seq: version,
        order_id: &f.order_id,
        cart_id: &f.cart_id,
        order_number: &f.order_number,
        total: f.total,
        ..Vals::default()
    };
    let pay = |k: usize| {
        let p = &f.payments[k];
        Vals {
            payment_id: &p.id,
            tx_id: &p.tx,
            tx2_id: &p.charge_tx,
            payment_key: &p.key,
            amount: p.amount,
            extra_txs: &p.extra_txs,
            ..base.clone()
        }
    };
    match step {
        Step::PaymentCreated(k) => render(
            &t.payment_created,
            &Vals {
                state: "Initial",
                ..pay(k)
            },
            out,
        ),
        Step::TxState(k, state) => render(&t.tx_state_changed, &Vals { state, ..pay(k) }, out),
        Step::TxPendingNotIncluded(k) => render(&t.tx_state_not_included, &pay(k), out),
        Step::Interaction(k) => render(&t.interaction, &pay(k), out),
        Step::StatusTransition(k) => render(&t.status_transition, &pay(k), out),
        Step::ChargeAdded(k) => render(&t.charge_added, &pay(k), out),
        Step::CheckoutAuthorized(k) => render(&t.checkout_authorized, &pay(k), out),
        Step::OrderCreated { with_payments } => {
            let r = if with_payments {
                refs(f.payments.iter().map(|p| p.id.clone()))
            } else {
                "[]".to_string()
            };
            render(&t.order_created, &Vals { refs: &r, ..base }, out)
        }
        Step::OrderPaymentAdded(k) => render(&t.order_payment_added, &pay(k), out),
        Step::OrderStateChanged => render(&t.order_state_changed, &base, out),
        Step::OrderPaymentStateChanged => render(&t.order_payment_state_changed, &base, out),
        Step::OrderShipmentStateChanged => render(&t.order_shipment_state_changed, &base, out),
        Step::OrderUpdated => render(&t.order_updated, &base, out),
        Step::OrderCreationFailed => {
            let r = refs(f.payments.iter().map(|p| p.id.clone()));
            render(&t.order_creation_failed, &Vals { refs: &r, ..base }, out)
        }
    }
}

fn wrap_cloudevent(platform: &[u8], id: &str, created: &str, step: Step, out: &mut Vec<u8>) {
    let (resource, kind) = match step {
        Step::PaymentCreated(_) => ("payments", "message.PaymentCreated"),
        Step::TxState(..) | Step::TxPendingNotIncluded(_) => {
            ("payments", "message.PaymentTransactionStateChanged")
        }
        Step::Interaction(_) => ("payments", "message.PaymentInteractionAdded"),
        Step::StatusTransition(_) => ("payments", "message.PaymentStatusStateTransition"),
        Step::ChargeAdded(_) => ("payments", "message.PaymentTransactionAdded"),
        Step::CheckoutAuthorized(_) => ("checkout", "event.CheckoutPaymentAuthorized"),
        Step::OrderCreationFailed => ("checkout", "event.CheckoutOrderCreationFailed"),
        Step::OrderUpdated => ("orders", "change.ResourceUpdated"),
        _ => ("orders", "message.Order"),
    };
    out.extend_from_slice(
        format!(
            r#"{{"id":"{id}","source":"/acme-eu-prod/{resource}","specversion":"1.0","type":"com.commercetools.{kind}","time":"{created}","data":"#
        )
        .as_bytes(),
    );
    out.extend_from_slice(platform);
    out.push(b'}');
}

/// One fixture, compact: for the decode benchmarks.
pub(crate) fn fixture_compact(name: &str) -> Vec<u8> {
    let path = fixtures_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading fixture {}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text).expect("fixture is JSON");
    serde_json::to_vec(&v).expect("serializes")
}
