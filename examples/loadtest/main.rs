//! The end-to-end load tool (issue #6). Run by hand, never in CI:
//!
//! ```sh
//! cargo build --release --bin payrules --example loadtest
//! target/release/examples/loadtest                      # everything, report in target/loadtest/
//! target/release/examples/loadtest --brokers none       # replay only
//! ```
//!
//! In one run it
//! 1. generates a realistic stream (`--messages`, default 1,000,000; see `benches/support/stream.rs`);
//! 2. replays it in process through [`payrules::replay::Replay`], with the in-memory store (what
//!    `payrules replay` uses) and with the embedded SQLite store, and checks the actions
//!    against what the generator planned;
//! 3. for each broker (the Pub/Sub emulator and fauxqs, both from `.peers/`): publishes a backlog
//!    (`--broker-messages`, default 20,000) twice, drains one copy with a bare consumer (pull +
//!    ack only, the same client crate) and the other with `payrules run` (live executors against
//!    a loopback stub of commercetools, Checkout and the webhook receiver), in
//!    `--drain-rounds` rounds (default 3), and reports both rates and their ratio (the rounds'
//!    medians, and each round) and the worker's peak RSS;
//! 4. starts a second worker on an empty subscription/queue, samples its idle RSS, then
//!    publishes `--latency-messages` at `--latency-rate` and reports publish-to-effect latency
//!    (the stub timestamps each release and cancel it receives);
//! 5. writes a JSON report (`--report`) and prints a table.
//!
//! `--soak` runs only the soak instead (`scripts/soak.sh`; see `soak.rs`): `--messages` through
//! `payrules run` on a file source against the stub, RSS and fds sampled; the exit status says
//! whether they stayed bounded.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};

#[path = "../../benches/support/stream.rs"]
mod stream;

mod brokers;
mod peers;
mod soak;
mod stub;
mod worker;

#[derive(Parser, Debug, Clone)]
#[command(about = "payrules load tool: replay throughput, broker drain rates, latency, RSS")]
pub struct Args {
    /// Messages in the replayed stream.
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 6)]
    pub seed: u64,
    /// Share of deliveries wrapped in CloudEvents.
    #[arg(long, default_value_t = 0.0)]
    pub cloudevents_share: f64,
    /// Also replay through the embedded SQLite store (slower).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub sqlite_replay: bool,
    /// Messages replayed through SQLite (the first ones of the stream; it is ~100x slower).
    #[arg(long, default_value_t = 100_000)]
    pub sqlite_messages: usize,
    /// Brokers to run: `pubsub,sqs`, `pubsub`, `sqs` or `none`.
    #[arg(long, default_value = "pubsub,sqs")]
    pub brokers: String,
    /// Backlog size per broker.
    #[arg(long, default_value_t = 20_000)]
    pub broker_messages: usize,
    /// Drain rounds per broker, each a fresh backlog drained by the bare consumer and then
    /// by a fresh worker; the reported rates and ratio are the rounds' medians.
    #[arg(long, default_value_t = 3)]
    pub drain_rounds: usize,
    /// Messages published (paced) for the latency measurement, per broker.
    #[arg(long, default_value_t = 3_000)]
    pub latency_messages: usize,
    /// Publish rate of the latency phase, messages per second.
    #[arg(long, default_value_t = 300.0)]
    pub latency_rate: f64,
    /// Grace period of the latency phase's worker (orphan cancels fire after it).
    #[arg(long, default_value = "5s")]
    pub latency_grace: String,
    /// SQS: concurrent pollers, for both the bare consumer and the worker.
    #[arg(long, default_value_t = 4)]
    pub sqs_pollers: usize,
    /// The workers' state store: `sqlite` (a file in a temp dir, the default deployment) or
    /// `memory`.
    #[arg(long, default_value = "sqlite")]
    pub worker_state: String,
    /// `PAYRULES_CONCURRENCY` of the workers (messages in flight); the default is payrules' own.
    #[arg(long, default_value_t = 32)]
    pub worker_concurrency: usize,
    /// `PAYRULES_LOG` of the workers.
    #[arg(long, default_value = "info")]
    pub worker_log: String,
    /// The `payrules` binary to run.
    #[arg(long, default_value = "target/release/payrules")]
    pub worker_bin: PathBuf,
    /// Also write the generated stream as JSONL here (for `payrules replay FILE`).
    #[arg(long)]
    pub jsonl: Option<PathBuf>,
    /// Where the JSON report goes.
    #[arg(long, default_value = "target/loadtest/report.json")]
    pub report: PathBuf,
    /// Run the soak instead (see `soak.rs`); its report goes to target/loadtest/soak.json.
    #[arg(long)]
    pub soak: bool,
    /// The soak worker's grace period: short, so the orphans' timers fire during the run.
    #[arg(long, default_value = "1s")]
    pub soak_grace: String,
}

fn main() {
    let args = Args::parse();
    // The peers' logs go there too, before the report is written.
    std::fs::create_dir_all("target/loadtest").expect("creating target/loadtest");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if args.soak {
        let mut cfg = soak::Config::new(
            args.messages,
            args.worker_bin.clone(),
            "target/loadtest/worker-soak.log".into(),
        );
        (cfg.seed, cfg.concurrency) = (args.seed, args.worker_concurrency);
        (cfg.grace, cfg.log_level) = (args.soak_grace.clone(), args.worker_log.clone());
        std::process::exit(rt.block_on(soak::cli(&cfg, "target/loadtest/soak.json".as_ref())));
    }
    let mut report = json!({
        "tool": "examples/loadtest",
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "machine": machine(),
        "args": {
            "messages": args.messages,
            "seed": args.seed,
            "broker_messages": args.broker_messages,
            "drain_rounds": args.drain_rounds,
            "latency_messages": args.latency_messages,
            "latency_rate": args.latency_rate,
            "sqs_pollers": args.sqs_pollers,
            "worker_state": args.worker_state,
            "worker_concurrency": args.worker_concurrency,
        },
    });

    // 1. Generate.
    let started = Instant::now();
    let s = stream::generate(&stream::GenConfig {
        messages: args.messages,
        seed: args.seed,
        cloudevents_share: args.cloudevents_share,
        ..stream::GenConfig::default()
    });
    let gen_secs = started.elapsed().as_secs_f64();
    let e = &s.expected;
    eprintln!(
        "generated {} messages ({:.0} MB, {:.1} h of stream time) in {gen_secs:.1} s: {} flows, {} releases ({:.1} %), {} + {} cancels ({:.1} %), {} duplicates",
        s.len(),
        s.bytes() as f64 / 1e6,
        s.span_secs / 3600.0,
        e.flows,
        e.releases,
        100.0 * e.releases as f64 / s.len() as f64,
        e.cancels_timer,
        e.cancels_event,
        100.0 * (e.cancels_timer + e.cancels_event) as f64 / s.len() as f64,
        e.duplicates,
    );
    report["stream"] = json!({
        "messages": s.len(),
        "bytes": s.bytes(),
        "stream_hours": s.span_secs / 3600.0,
        "flows": e.flows,
        "releases": e.releases,
        "cancels_after_grace": e.cancels_timer,
        "cancels_order_creation_failed": e.cancels_event,
        "duplicates": e.duplicates,
        "generate_secs": gen_secs,
    });
    if let Some(path) = &args.jsonl {
        s.write_jsonl(path).expect("writing the JSONL stream");
        eprintln!("wrote {}", path.display());
    }

    // 2. Replay.
    report["decode_rules"] = rt.block_on(decode_rules(&s));
    report["replay_memory"] = rt.block_on(replay_memory(&s));
    if args.sqlite_replay {
        let n = args.sqlite_messages.min(s.len());
        report["replay_sqlite"] = rt.block_on(replay_sqlite(&s, n));
    }
    drop(s);

    // 3 + 4. Brokers.
    let wanted: Vec<&str> = args
        .brokers
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty() && *b != "none")
        .collect();
    for broker in wanted {
        let kind = match broker {
            "pubsub" => brokers::Kind::Pubsub,
            "sqs" => brokers::Kind::Sqs,
            other => panic!("unknown broker {other:?} (pubsub, sqs, none)"),
        };
        let r = rt.block_on(brokers::run(kind, &args));
        report[broker] = r;
    }

    report["targets"] = targets(&report);
    if let Some(dir) = args.report.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(
        &args.report,
        serde_json::to_string_pretty(&report).expect("report serializes"),
    )
    .expect("writing the report");
    print_table(&report);
    eprintln!("report: {}", args.report.display());
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
    })
}

/// Decode + rules only (no ledger claims, no timers): bytes in, decisions out.
async fn decode_rules(s: &stream::Stream) -> Value {
    use std::sync::Arc;
    let view = Arc::new(payrules::view::StreamView::new());
    let store = Arc::new(payrules::store::MemoryStore::new());
    let engine = payrules::rules::Engine::new(view, store, payrules::rules::Rules::default());
    let mut clock = chrono::DateTime::UNIX_EPOCH;
    let mut decisions = 0usize;
    let started = Instant::now();
    for bytes in s.iter() {
        let Ok(m) = payrules::message::decode(bytes) else {
            continue;
        };
        if let Some(t) = m.created_at {
            clock = clock.max(t);
        }
        decisions += engine.on_message(&m, clock).await.map_or(0, |a| a.len());
    }
    let secs = started.elapsed().as_secs_f64();
    let us = 1e6 * secs / s.len() as f64;
    eprintln!(
        "decode + rules: {} messages in {secs:.2} s = {us:.2} µs/msg ({decisions} decisions)",
        s.len()
    );
    json!({"messages": s.len(), "secs": secs, "us_per_msg": us, "decisions": decisions})
}

/// Replays the whole stream with the in-memory store; checks the actions.
async fn replay_memory(s: &stream::Stream) -> Value {
    let mut replay = payrules::replay::Replay::new(payrules::rules::Rules::default());
    replay_with(&mut replay, s, s.len(), "memory").await
}

/// Replays the first `n` messages with the SQLite store in a temp directory.
async fn replay_sqlite(s: &stream::Stream, n: usize) -> Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("replay.db").display());
    let store = payrules::store::SqlStore::connect(&url, Duration::from_secs(120))
        .await
        .expect("opening SQLite");
    let store = std::sync::Arc::new(store);
    store.spawn_flusher(Duration::from_millis(200));
    let mut replay =
        payrules::replay::Replay::with_store(payrules::rules::Rules::default(), store.clone());
    let r = replay_with(&mut replay, s, n, "sqlite").await;
    drop(replay);
    r
}

async fn replay_with(
    replay: &mut payrules::replay::Replay,
    s: &stream::Stream,
    n: usize,
    label: &str,
) -> Value {
    let cpu0 = cpu_secs();
    let started = Instant::now();
    let mut releases = 0usize;
    let mut cancels = 0usize;
    let mut count = |actions: Vec<payrules::action::Action>| {
        for a in actions {
            match a.action {
                payrules::action::ActionKind::ReleaseOrder => releases += 1,
                payrules::action::ActionKind::CancelPayment => cancels += 1,
                payrules::action::ActionKind::CapturePayment => {}
            }
        }
    };
    for i in 0..n {
        count(replay.feed("loadtest", s.get(i)).await);
    }
    count(replay.finish().await);
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    let summary = replay.summary();
    let rate = n as f64 / secs;
    let e = &s.expected;
    let complete = n == s.len();
    let ok = !complete
        || (releases == e.releases
            && cancels == e.cancels_timer + e.cancels_event
            && summary.skipped.is_empty());
    eprintln!(
        "replay ({label} store): {n} messages in {secs:.2} s = {rate:.0} msg/s ({:.2} µs/msg, {:.0} % of one core); {releases} releases, {cancels} cancels, {} skipped{}",
        1e6 * secs / n as f64,
        100.0 * cpu / secs,
        summary.skipped.len(),
        if ok {
            ""
        } else {
            " — MISMATCH with the generator's plan"
        }
    );
    json!({
        "store": label,
        "messages": n,
        "secs": secs,
        "msgs_per_sec": rate,
        "us_per_msg": 1e6 * secs / n as f64,
        "cpu_secs": cpu,
        "releases": releases,
        "cancels": cancels,
        "skipped": summary.skipped.len(),
        "matches_plan": if complete { json!(ok) } else { Value::Null },
    })
}

/// CPU time of this process (user + system), from /proc/self/stat.
pub fn cpu_secs() -> f64 {
    proc_cpu_secs("self").unwrap_or(0.0)
}

/// CPU time of a process (user + system), from /proc/PID/stat.
pub fn proc_cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn num(v: &Value, path: &str) -> Option<f64> {
    v.pointer(path).and_then(Value::as_f64)
}

fn targets(r: &Value) -> Value {
    let mut t = serde_json::Map::new();
    let mut add = |name: &str, value: Option<f64>, target: &str, ok: Option<bool>| {
        t.insert(
            name.to_string(),
            json!({"value": value, "target": target, "met": ok}),
        );
    };
    let mem = num(r, "/replay_memory/msgs_per_sec");
    add(
        "replay_msgs_per_sec",
        mem,
        ">= 150000",
        mem.map(|v| v >= 150_000.0),
    );
    let dr = num(r, "/decode_rules/us_per_msg");
    add("decode_rules_us_per_msg", dr, "<= 5", dr.map(|v| v <= 5.0));
    for b in ["pubsub", "sqs"] {
        let ratio = num(r, &format!("/{b}/drain/ratio"));
        add(
            &format!("{b}_worker_over_bare"),
            ratio,
            ">= 0.9",
            ratio.map(|v| v >= 0.9),
        );
        let idle = num(r, &format!("/{b}/rss_mb/idle"));
        add(
            &format!("{b}_idle_rss_mb"),
            idle,
            "<= 20",
            idle.map(|v| v <= 20.0),
        );
        let peak = num(r, &format!("/{b}/rss_mb/peak_under_load"));
        add(
            &format!("{b}_peak_rss_mb"),
            peak,
            "<= 80",
            peak.map(|v| v <= 80.0),
        );
    }
    Value::Object(t)
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

fn print_table(r: &Value) {
    println!();
    println!("{:<44} {:>14}  target", "measurement", "value");
    println!("{}", "-".repeat(74));
    let row = |name: &str, v: String, target: &str| println!("{name:<44} {v:>14}  {target}");
    row("stream messages", fmt(num(r, "/stream/messages"), 0), "");
    row(
        "decode + rules (µs/msg)",
        fmt(num(r, "/decode_rules/us_per_msg"), 2),
        "<= 5",
    );
    row(
        "replay, in-memory store (msg/s)",
        fmt(num(r, "/replay_memory/msgs_per_sec"), 0),
        ">= 150000",
    );
    row(
        "replay, in-memory store (µs/msg)",
        fmt(num(r, "/replay_memory/us_per_msg"), 2),
        "",
    );
    row(
        "replay, SQLite store (msg/s)",
        fmt(num(r, "/replay_sqlite/msgs_per_sec"), 0),
        "(informative)",
    );
    for b in ["pubsub", "sqs"] {
        if r.get(b).is_none() {
            continue;
        }
        let p = |k: &str| num(r, &format!("/{b}/{k}"));
        row(
            &format!("{b}: backlog (messages)"),
            fmt(p("drain/messages"), 0),
            "",
        );
        row(
            &format!("{b}: bare consumer (msg/s)"),
            fmt(p("drain/bare_msgs_per_sec"), 0),
            "",
        );
        row(
            &format!("{b}: payrules run (msg/s)"),
            fmt(p("drain/worker_msgs_per_sec"), 0),
            "",
        );
        row(
            &format!("{b}: worker / bare (median)"),
            fmt(p("drain/ratio"), 3),
            ">= 0.9",
        );
        let rounds: Vec<String> = r
            .pointer(&format!("/{b}/drain/per_round"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|x| fmt(x.get("ratio").and_then(Value::as_f64), 2))
                    .collect()
            })
            .unwrap_or_default();
        row(
            &format!("{b}: worker / bare, each round"),
            rounds.join(" "),
            "",
        );
        row(
            &format!("{b}: publish-to-effect p50 (ms)"),
            fmt(p("latency/p50_ms"), 1),
            "",
        );
        row(
            &format!("{b}: publish-to-effect p99 (ms)"),
            fmt(p("latency/p99_ms"), 1),
            "",
        );
        row(
            &format!("{b}: worker RSS idle (MB)"),
            fmt(p("rss_mb/idle"), 1),
            "<= 20",
        );
        row(
            &format!("{b}: worker RSS peak under load (MB)"),
            fmt(p("rss_mb/peak_under_load"), 1),
            "<= 80",
        );
    }
    println!();
}
