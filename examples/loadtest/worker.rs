//! `payrules run` as a child process: environment, RSS sampling, graceful stop, and the
//! summary it logs when it stops.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub(crate) struct Worker {
    child: Child,
    pub log: std::path::PathBuf,
    /// Highest VmRSS sampled, in kB.
    peak_sampled_kb: Arc<AtomicU64>,
    sampler: tokio::task::JoinHandle<()>,
}

/// RSS figures of a process, in kB: (VmRSS, VmHWM).
pub(crate) fn rss_kb(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name| crate::procfs::status_field(&status, name);
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// (RssAnon, RssFile) of a process, in MB: heap and stacks vs. mapped binary and libraries.
pub(crate) fn rss_split_mb(pid: u32) -> (f64, f64) {
    let mb = |name| crate::procfs::status_kb(&pid.to_string(), name).unwrap_or(0) as f64 / 1024.0;
    (mb("RssAnon:"), mb("RssFile:"))
}

impl Worker {
    /// Starts `bin run` with `env` (on top of a clean set of payrules variables).
    pub(crate) fn start(bin: &Path, env: &[(String, String)], log: std::path::PathBuf) -> Self {
        let file = std::fs::File::create(&log).expect("worker log");
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        // Nothing from the caller's environment decides the configuration.
        for (k, _) in std::env::vars() {
            if k.starts_with("PAYRULES_")
                || k.starts_with("CTP_")
                || k.starts_with("AWS_")
                || k == "PUBSUB_EMULATOR_HOST"
            {
                cmd.env_remove(&k);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "starting {} run: {e} (build it with `cargo build --release`)",
                bin.display()
            )
        });
        let pid = child.id();
        let peak = Arc::new(AtomicU64::new(0));
        let p = peak.clone();
        let sampler = tokio::spawn(async move {
            loop {
                match rss_kb(pid) {
                    Some((rss, _)) => {
                        p.fetch_max(rss, Ordering::Relaxed);
                    }
                    None => return,
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Self {
            child,
            log,
            peak_sampled_kb: peak,
            sampler,
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// (VmRSS, VmHWM) now, in MB.
    pub(crate) fn rss_mb(&self) -> (f64, f64) {
        let (rss, hwm) = rss_kb(self.pid()).unwrap_or((0, 0));
        (rss as f64 / 1024.0, hwm as f64 / 1024.0)
    }

    /// Whether it exited (and how).
    pub(crate) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// CPU seconds used so far.
    pub(crate) fn cpu_secs(&self) -> f64 {
        crate::proc_cpu_secs(&self.pid().to_string()).unwrap_or(0.0)
    }

    /// SIGTERM, then waits (SIGKILL after 60 s). Returns the peak RSS (VmHWM read right before
    /// the stop, in MB) and the log text.
    pub(crate) async fn stop(mut self) -> (f64, String) {
        let (_, hwm) = self.rss_mb();
        let sampled = self.peak_sampled_kb.load(Ordering::Relaxed) as f64 / 1024.0;
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if self.child.try_wait().ok().flatten().is_some() {
                break;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.sampler.abort();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        (hwm.max(sampled), log)
    }
}

/// The `acked: N` of the worker's final summary line.
pub(crate) fn acked_from_log(log: &str) -> Option<u64> {
    summary_count(log, "acked")
}

/// A count from the worker's final summary line (`acked`, `retried`, `parked`, …): a JSON
/// line (the log format when stderr is not a terminal) or a text one (`acked=…`).
pub(crate) fn summary_count(log: &str, field: &str) -> Option<u64> {
    let line = log.lines().rev().find(|l| l.contains("worker stopped"))?;
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
        return v.get(field).and_then(serde_json::Value::as_u64);
    }
    let label = format!("{field}=");
    let at = line.find(&label)? + label.len();
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Lines at WARN or ERROR in the log (a few, for the report).
pub(crate) fn problems(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| {
            l.contains(" WARN ")
                || l.contains(" ERROR ")
                || l.contains(r#""level":"WARN""#)
                || l.contains(r#""level":"ERROR""#)
        })
        .take(5)
        .map(|l| l.chars().take(300).collect())
        .collect()
}
