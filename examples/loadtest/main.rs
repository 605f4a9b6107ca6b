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
use std::time::Instant;

use clap::Parser;
use serde_json::{Value, json};

#[path = "../../benches/support/stream.rs"]
mod stream;

#[path = "../../benches/support/alloc.rs"]
mod alloc;

/// Counts allocations and live bytes (`replay.rs` reports them); a few ns per allocation.
#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

mod brokers;
mod peers;
mod procfs;
mod replay;
mod soak;
mod stub;
mod worker;

/// The load tool's command line.
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
    /// Messages of the second stream (`Shape::Rich`: 3–5 transactions per payment, custom
    /// fields, half of the deliveries in CloudEvents); 0 skips it.
    #[arg(long, default_value_t = 300_000)]
    pub rich_messages: usize,
    /// Also time `payrules replay FILE` (the binary, on the stream written to a file) and
    /// compare its output with the one-thread replay's.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub binary_replay: bool,
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
        "machine": procfs::machine(),
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
    report["decode_rules"] = rt.block_on(replay::decode_rules(&s));
    let (memory, lines) = rt.block_on(replay::replay_memory(&s));
    report["replay_memory"] = memory;
    if args.binary_replay {
        report["replay_binary"] = replay::replay_binary(&s, &lines, &args.worker_bin, "basic");
    }
    if args.sqlite_replay {
        let n = args.sqlite_messages.min(s.len());
        report["replay_sqlite"] = rt.block_on(replay::replay_sqlite(&s, n));
    }
    drop((s, lines));
    if args.rich_messages > 0 {
        let rich = stream::generate(&stream::GenConfig {
            messages: args.rich_messages,
            seed: args.seed,
            cloudevents_share: 0.5,
            shape: stream::Shape::Rich,
            ..stream::GenConfig::default()
        });
        eprintln!(
            "generated the rich stream: {} messages, {:.0} MB ({:.0} B/message), half in CloudEvents",
            rich.len(),
            rich.bytes() as f64 / 1e6,
            rich.bytes() as f64 / rich.len() as f64
        );
        let mut r = json!({"messages": rich.len(), "bytes": rich.bytes()});
        r["decode_rules"] = rt.block_on(replay::decode_rules(&rich));
        let (memory, lines) = rt.block_on(replay::replay_memory(&rich));
        r["replay_memory"] = memory;
        if args.binary_replay {
            r["replay_binary"] = replay::replay_binary(&rich, &lines, &args.worker_bin, "rich");
        }
        report["rich"] = r;
    }

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
    for (label, prefix) in [("", ""), ("rich_", "/rich")] {
        let bin = num(r, &format!("{prefix}/replay_binary/msgs_per_sec"));
        add(
            &format!("{label}replay_binary_msgs_per_sec"),
            bin,
            ">= 400000",
            bin.map(|v| v >= 400_000.0),
        );
        let dr = num(r, &format!("{prefix}/decode_rules/us_per_msg"));
        add(
            &format!("{label}decode_rules_us_per_msg"),
            dr,
            "<= 3",
            dr.map(|v| v <= 3.0),
        );
        let held = num(r, &format!("{prefix}/replay_memory/held_bytes_per_story"));
        add(
            &format!("{label}replay_bytes_per_story"),
            held,
            "<= 1024",
            held.map(|v| v <= 1024.0),
        );
    }
    for b in ["pubsub", "sqs"] {
        let ratio = num(r, &format!("/{b}/drain/ratio"));
        add(
            &format!("{b}_worker_over_bare"),
            ratio,
            ">= 0.95",
            ratio.map(|v| v >= 0.95),
        );
        if b == "sqs" {
            let cpu = num(r, "/sqs/drain/worker_cpu_us_per_msg");
            add(
                "sqs_worker_cpu_us_per_msg",
                cpu,
                "<= 60",
                cpu.map(|v| v <= 60.0),
            );
        }
        let idle = num(r, &format!("/{b}/rss_mb/idle"));
        add(
            &format!("{b}_idle_rss_mb"),
            idle,
            "<= 15",
            idle.map(|v| v <= 15.0),
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
    for (label, prefix) in [("", ""), ("rich: ", "/rich")] {
        if !prefix.is_empty() && r.get("rich").is_none() {
            continue;
        }
        let p = |k: &str| num(r, &format!("{prefix}/{k}"));
        row(
            &format!("{label}decode + rules (µs/msg)"),
            fmt(p("decode_rules/us_per_msg"), 2),
            "<= 3",
        );
        row(
            &format!("{label}decode + rules (allocations/msg)"),
            fmt(p("decode_rules/allocs_per_msg"), 1),
            "",
        );
        row(
            &format!("{label}replay, one thread (msg/s)"),
            fmt(p("replay_memory/msgs_per_sec"), 0),
            "",
        );
        row(
            &format!("{label}payrules replay FILE (msg/s)"),
            fmt(p("replay_binary/msgs_per_sec"), 0),
            ">= 400000",
        );
        row(
            &format!("{label}payrules replay = one thread"),
            r.pointer(&format!("{prefix}/replay_binary/identical_to_one_thread"))
                .map_or("-".into(), |v| v.to_string()),
            "true",
        );
        row(
            &format!("{label}payrules replay peak RSS (MB)"),
            fmt(p("replay_binary/peak_rss_mb"), 0),
            "",
        );
        row(
            &format!("{label}replay memory held (B/story)"),
            fmt(p("replay_memory/held_bytes_per_story"), 0),
            "<= 1024",
        );
    }
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
            ">= 0.95",
        );
        row(
            &format!("{b}: worker CPU per message (µs, median)"),
            fmt(p("drain/worker_cpu_us_per_msg"), 0),
            if b == "sqs" { "<= 60" } else { "" },
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
            "<= 15",
        );
        row(
            &format!("{b}: worker RSS peak under load (MB)"),
            fmt(p("rss_mb/peak_under_load"), 1),
            "<= 80",
        );
    }
    println!();
}
