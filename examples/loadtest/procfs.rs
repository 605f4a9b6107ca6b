//! What the load tool and the soak read from /proc: a process's memory figures and the
//! machine's CPU. Shared by `examples/loadtest` and `tests/soak.rs` (included with `#[path]`).
#![allow(dead_code)]

use serde_json::{Value, json};

/// A kB field of /proc/PID/status (`VmRSS:`, `VmHWM:`, `RssAnon:`, `RssFile:`); `None` when
/// the process is gone or (a zombie) has no such line. `pid` may be `self`.
pub(crate) fn status_kb(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field(&status, field)
}

/// A kB field of a /proc/PID/status text already read.
pub(crate) fn status_field(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
}

/// The machine, for reports: CPU count and model.
pub(crate) fn machine() -> Value {
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
