//! The replay measurements: decode + rules alone, the one-thread replay in this process (the
//! reference: its actions are what `payrules replay` must print), the `payrules replay` binary
//! on the stream written to a file (two threads: reader/decoder and rules), and the SQLite
//! store. Allocations and held bytes come from the counting allocator (`alloc.rs`).

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{alloc, cpu_secs, stream};

/// Decode + rules only (no ledger claims, no timers): bytes in, decisions out.
pub(crate) async fn decode_rules(s: &stream::Stream) -> Value {
    let view = Arc::new(payrules::view::StreamView::new());
    let store = Arc::new(payrules::store::MemoryStore::new());
    let engine = payrules::rules::Engine::new(view, store, payrules::rules::Rules::default());
    let mut clock = chrono::DateTime::UNIX_EPOCH;
    let mut decisions = 0usize;
    let allocs0 = alloc::allocations();
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
    let allocs = (alloc::allocations() - allocs0) as f64 / s.len() as f64;
    let us = 1e6 * secs / s.len() as f64;
    eprintln!(
        "decode + rules: {} messages in {secs:.2} s = {us:.2} µs/msg, {allocs:.1} allocations/msg ({decisions} decisions)",
        s.len()
    );
    json!({"messages": s.len(), "secs": secs, "us_per_msg": us, "allocs_per_msg": allocs, "decisions": decisions})
}

/// Replays the whole stream on one thread with the in-memory store, checks the actions
/// against the generator's plan; the report and the planned actions' JSON lines.
pub(crate) async fn replay_memory(s: &stream::Stream) -> (Value, Vec<String>) {
    let live0 = alloc::live_bytes();
    let mut replay = payrules::replay::Replay::new(payrules::rules::Rules::default());
    let mut lines = Vec::new();
    let mut r = replay_with(&mut replay, s, s.len(), "memory", Some(&mut lines)).await;
    // What the replay holds at the end (view, ledger, processed ids), without the output.
    let held = alloc::live_bytes()
        - live0
        - lines.iter().map(|l| l.capacity() as i64).sum::<i64>()
        - (lines.capacity() * std::mem::size_of::<String>()) as i64;
    let flows = s.expected.flows.max(1);
    r["held_bytes"] = json!(held);
    r["held_bytes_per_story"] = json!(held as f64 / flows as f64);
    eprintln!(
        "replay (memory store) holds {:.1} MB at the end: {:.0} B per payment story ({flows} stories)",
        held as f64 / 1e6,
        held as f64 / flows as f64
    );
    drop(replay);
    (r, lines)
}

/// Replays the first `n` messages with the SQLite store in a temp directory.
pub(crate) async fn replay_sqlite(s: &stream::Stream, n: usize) -> Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("replay.db").display());
    let store = payrules::store::SqlStore::connect(&url, Duration::from_secs(120))
        .await
        .expect("opening SQLite");
    let store = Arc::new(store);
    store.spawn_flusher(Duration::from_millis(200));
    let mut replay =
        payrules::replay::Replay::with_store(payrules::rules::Rules::default(), store.clone());
    let r = replay_with(&mut replay, s, n, "sqlite", None).await;
    drop(replay);
    r
}

async fn replay_with(
    replay: &mut payrules::replay::Replay,
    s: &stream::Stream,
    n: usize,
    label: &str,
    mut keep: Option<&mut Vec<String>>,
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
                payrules::action::ActionKind::CapturePayment
                | payrules::action::ActionKind::RefundPayment => {}
            }
            if let Some(k) = keep.as_mut() {
                k.push(a.to_json_line());
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
        "replay ({label} store, one thread): {n} messages in {secs:.2} s = {rate:.0} msg/s ({:.2} µs/msg, {:.0} % of one core); {releases} releases, {cancels} cancels, {} skipped{}",
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

/// `payrules replay FILE` on the stream written to `target/loadtest/stream-LABEL.jsonl`: wall
/// time from start to exit, CPU, peak RSS, and whether stdout is exactly `expected` (the
/// one-thread replay's lines).
pub(crate) fn replay_binary(
    s: &stream::Stream,
    expected: &[String],
    bin: &Path,
    label: &str,
) -> Value {
    let path = Path::new("target/loadtest").join(format!("stream-{label}.jsonl"));
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    s.write_jsonl(&path).expect("writing the stream file");
    // Warm the page cache, as a second run would find it.
    let _ = std::fs::read(&path);
    let started = Instant::now();
    let mut child = Command::new(bin)
        .arg("replay")
        .arg(&path)
        .env_remove("PAYRULES_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {} replay: {e}", bin.display()));
    let pid = child.id().to_string();
    // VmHWM only grows: the last sample before the exit is the peak (within 20 ms).
    let peak_kb = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // The child's CPU seconds (f64 bits), read while it still exists.
    let cpu_bits = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let (peak_kb, cpu_bits) = (peak_kb.clone(), cpu_bits.clone());
        let pid = pid.clone();
        std::thread::spawn(move || {
            while let Some(kb) = crate::procfs::status_kb(&pid, "VmHWM:") {
                peak_kb.fetch_max(kb, std::sync::atomic::Ordering::Relaxed);
                if let Some(c) = crate::proc_cpu_secs(&pid) {
                    cpu_bits.store(c.to_bits(), std::sync::atomic::Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let mut out = std::io::BufReader::with_capacity(1 << 20, child.stdout.take().expect("piped"));
    let (mut same, mut count, mut line) = (true, 0usize, String::new());
    loop {
        line.clear();
        match out.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if expected.get(count).map(String::as_str) != Some(line.trim_end()) {
                    same = false;
                }
                count += 1;
            }
        }
    }
    let status = child.wait().expect("waiting for payrules replay");
    let secs = started.elapsed().as_secs_f64();
    let _ = sampler.join();
    same &= count == expected.len();
    let rate = s.len() as f64 / secs;
    let peak_mb = peak_kb.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0;
    let cpu = f64::from_bits(cpu_bits.load(std::sync::atomic::Ordering::Relaxed));
    eprintln!(
        "payrules replay {} ({label}): {} messages in {secs:.2} s = {rate:.0} msg/s, at least {:.1} s CPU, peak RSS {peak_mb:.0} MB; {count} actions, {}",
        path.display(),
        s.len(),
        cpu,
        if same && status.success() {
            "identical to the one-thread replay"
        } else {
            "DIFFERENT from the one-thread replay"
        }
    );
    json!({
        "file": path.display().to_string(),
        "messages": s.len(),
        "secs": secs,
        "msgs_per_sec": rate,
        "peak_rss_mb": peak_mb,
        "cpu_secs_at_least": cpu,
        "actions": count,
        "identical_to_one_thread": same && status.success(),
    })
}
