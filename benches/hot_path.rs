//! The hot path, piece by piece: decode of each common shape, applying a message to the
//! stream view, rule evaluation, decode + rules over a realistic mix, the whole replay step,
//! and ledger writes on the embedded (SQLite) store.
//!
//! `cargo bench --bench hot_path` (add `-- decode` etc. to filter). Under `cargo test` each
//! benchmark runs once, as a smoke test.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use payrules::message::{Message, decode};
use payrules::replay::Replay;
use payrules::rules::{Engine, Rules};
use payrules::store::{MemoryStore, SqlStore, Store};
use payrules::view::{CommerceView, StreamView};

#[path = "support/stream.rs"]
mod stream;

/// Messages in the mixed-stream benchmarks (small enough to run once under `cargo test`).
const MIX: usize = 20_000;

fn mix() -> stream::Stream {
    stream::generate(&stream::GenConfig {
        messages: MIX,
        ..stream::GenConfig::default()
    })
}

fn decoded(s: &stream::Stream) -> Vec<(Message, DateTime<Utc>)> {
    let mut clock = DateTime::UNIX_EPOCH;
    s.iter()
        .filter_map(|b| decode(b).ok())
        .filter(|m| !m.is_subscription_test())
        .map(|m| {
            if let Some(t) = m.created_at {
                clock = clock.max(t);
            }
            (m, clock)
        })
        .collect()
}

fn decode_shapes(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for name in [
        "PaymentCreated",
        "PaymentTransactionStateChanged",
        "CloudEvents-PaymentTransactionAdded",
        "OrderCreated",
        "CheckoutOrderCreationFailed",
    ] {
        let bytes = stream::fixture_compact(name);
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(format!("{name} ({} B)", bytes.len()), |b| {
            b.iter(|| decode(std::hint::black_box(&bytes)).unwrap())
        });
    }
    let s = mix();
    g.throughput(Throughput::Elements(s.len() as u64));
    g.bench_function(format!("mix of {MIX}"), |b| {
        b.iter(|| {
            for m in s.iter() {
                let _ = std::hint::black_box(decode(m));
            }
        })
    });
    g.finish();
}

fn view_apply(c: &mut Criterion) {
    let s = mix();
    let msgs = decoded(&s);
    let mut g = c.benchmark_group("view");
    g.throughput(Throughput::Elements(msgs.len() as u64));
    g.sample_size(20);
    g.bench_function(format!("observe mix of {MIX}"), |b| {
        b.iter_batched(
            StreamView::new,
            |view| {
                for (m, _) in &msgs {
                    view.observe(m);
                }
                view
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn engine(view: Arc<StreamView>) -> Engine {
    Engine::new(view, Arc::new(MemoryStore::new()), Rules::default())
}

fn rules(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let s = mix();
    let msgs = decoded(&s);
    let mut g = c.benchmark_group("rules");
    g.sample_size(20);
    g.throughput(Throughput::Elements(msgs.len() as u64));
    // Observe + evaluate (the engine shows each message to the view first).
    g.bench_function(format!("on_message mix of {MIX}"), |b| {
        b.iter_batched(
            || engine(Arc::new(StreamView::new())),
            |e| {
                rt.block_on(async {
                    for (m, now) in &msgs {
                        std::hint::black_box(e.on_message(m, *now).await.unwrap());
                    }
                });
                e
            },
            BatchSize::LargeInput,
        )
    });
    g.throughput(Throughput::Elements(s.len() as u64));
    // What the 5 µs budget is about: bytes in, decisions out.
    g.bench_function(format!("decode+on_message mix of {MIX}"), |b| {
        b.iter_batched(
            || engine(Arc::new(StreamView::new())),
            |e| {
                rt.block_on(async {
                    let mut clock = DateTime::UNIX_EPOCH;
                    for bytes in s.iter() {
                        let m = decode(bytes).unwrap();
                        if let Some(t) = m.created_at {
                            clock = clock.max(t);
                        }
                        std::hint::black_box(e.on_message(&m, clock).await.unwrap());
                    }
                });
                e
            },
            BatchSize::LargeInput,
        )
    });
    // The whole replay step: decode, timers, decide, claim, plan.
    g.bench_function(format!("replay mix of {MIX}"), |b| {
        b.iter_batched(
            || Replay::new(Rules::default()),
            |mut r| {
                rt.block_on(async {
                    for bytes in s.iter() {
                        std::hint::black_box(r.feed("bench", bytes).await);
                    }
                    std::hint::black_box(r.finish().await);
                });
                r
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn ledger(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store = Arc::new(
        rt.block_on(SqlStore::connect(&url, Duration::from_secs(120)))
            .unwrap(),
    );
    let mut g = c.benchmark_group("sqlite");
    let mut n: u64 = 0;
    // One action's ledger writes: claim, then record.
    g.throughput(Throughput::Elements(1));
    g.bench_function("claim+record one key", |b| {
        b.to_async(&rt).iter(|| {
            n += 1;
            let key = format!("release:bench-{n}");
            let store = store.clone();
            async move {
                store.claim(&key).await.unwrap();
                store
                    .record(
                        &key,
                        payrules::store::LedgerStatus::Done,
                        payrules::store::Decided::default(),
                    )
                    .await
                    .unwrap();
            }
        })
    });
    g.bench_function("ledger_status (hit)", |b| {
        b.to_async(&rt).iter(|| {
            let store = store.clone();
            async move { store.ledger_status("release:bench-1").await.unwrap() }
        })
    });
    // The batched writes: 512 processed message ids in one transaction.
    g.throughput(Throughput::Elements(512));
    let mut m: u64 = 0;
    g.bench_function("mark_processed x512 + flush", |b| {
        b.to_async(&rt).iter(|| {
            let store = store.clone();
            let base = m;
            m += 512;
            async move {
                for i in 0..512 {
                    store
                        .mark_processed(&format!("msg-{}", base + i))
                        .await
                        .unwrap();
                }
                store.flush().await.unwrap();
            }
        })
    });
    g.finish();
}

criterion_group!(benches, decode_shapes, view_apply, rules, ledger);
criterion_main!(benches);
