//! The soak: does `payrules run` stay bounded over a long run?
//!
//! It generates `messages` deliveries of the load tool's stream into a `.jsonl` file, shows all
//! of them to the loopback stub (so commercetools reads answer with each resource's final
//! state), and runs `payrules run` as a child on that file — the file source, the SQLite state
//! store in a temp dir (what production uses), live executors against the stub (releases reach
//! its webhook, cancels its Checkout) and a short grace period so the orphans' timers are
//! scheduled, fire and are done in SQLite throughout the run instead of piling up for the end.
//!
//! While it runs, the child's VmRSS, VmHWM, RssAnon and open file descriptors are sampled
//! (every `sample_every`) together with the `acked` count of its JSON progress lines. The
//! figures: the sample at which `acked` first reaches 10 % of the messages (the warm
//! reference), the last sample before the process exits (the end), the highest RSS and fd count
//! over the last 10 % of the messages, the peak (VmHWM), the duration and the rate. The soak
//! fails when the end or the final-10 % maximum exceeds the warm RSS by more than
//! `rss_bound_mb`, when open file descriptors grew, or when the run did not do exactly what the
//! generator planned: exit status 0, every message acked, nothing parked, every planned release
//! and cancel received by the stub exactly once.
//!
//! File descriptors are counted in two parts. Everything but sockets (the input, the SQLite
//! file and its WAL, the log, eventfds, pipes) may grow by at most `fd_bound` from the warm
//! sample to the highest count over the last 10 %. Sockets are the worker's HTTP connections to
//! the stub, pooled by its two clients (commercetools + Checkout, and the webhook): the pool
//! grows to the most requests ever in flight at once — about one per message task and client,
//! plus one per grace-period check running beside them (up to `concurrency` of those, on the
//! commercetools + Checkout client) — and keeps them, so it creeps up by a few over a run as
//! rarer bursts occur; that is bounded by the concurrency, not by traffic. They may never
//! exceed `socket_cap` (default 3 × concurrency + 32: the pools also open a connection when a
//! request starts while another is still being handed back, so the peak runs a few past the
//! in-flight count; it is reached in the first seconds and then stays flat). A leak of one
//! socket per 10,000 requests would pass it within the 1M soak (about a million stub requests).
//!
//! Shared by `examples/loadtest` (`--soak`, driven by `scripts/soak.sh`) and `tests/soak.rs`
//! (included with `#[path]`; it needs `crate::stream`, `crate::stub` and `crate::procfs` beside it).

use std::collections::HashSet;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::stream;
use crate::stub::{self, Stub};

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Deliveries in the file (duplicates included).
    pub messages: usize,
    /// Generator seed.
    pub seed: u64,
    /// The `payrules` binary.
    pub worker_bin: PathBuf,
    /// `PAYRULES_CONCURRENCY`.
    pub concurrency: usize,
    /// `PAYRULES_GRACE_PERIOD`.
    pub grace: String,
    /// `PAYRULES_LOG` (the format is always JSON: the progress lines are parsed).
    pub log_level: String,
    /// Where the worker's stderr goes.
    pub log: PathBuf,
    /// Largest allowed RSS growth from the warm sample, in MB.
    pub rss_bound_mb: f64,
    /// Largest allowed growth of open file descriptors other than sockets from the warm sample.
    pub fd_bound: i64,
    /// Sampling period; also the worker's `PAYRULES_PROGRESS_INTERVAL`, so each sample knows
    /// `acked` to within one period.
    pub sample_every: Duration,
    /// The run is killed (and fails) after this long.
    pub timeout: Duration,
    /// Progress on stderr while running.
    pub verbose: bool,
}

impl Config {
    /// Most sockets allowed open at any sample: 3 × concurrency + 32 (message tasks on two
    /// clients, grace-period checks on one, and connections opened while others were being
    /// handed back to their pool).
    pub(crate) fn socket_cap(&self) -> u64 {
        3 * self.concurrency as u64 + 32
    }

    /// The defaults for `messages` deliveries through `worker_bin`.
    pub(crate) fn new(messages: usize, worker_bin: PathBuf, log: PathBuf) -> Self {
        Self {
            messages,
            seed: 6,
            worker_bin,
            concurrency: 32,
            grace: "1s".into(),
            log_level: "info".into(),
            log,
            rss_bound_mb: 10.0,
            fd_bound: 5,
            sample_every: Duration::from_millis(250),
            // A debug build does a few hundred messages a second; a release build thousands.
            timeout: Duration::from_secs(600 + messages as u64 / 50),
            verbose: false,
        }
    }
}

/// One sample of the child.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sample {
    /// Since the child was started.
    pub secs: f64,
    /// The latest progress line's `acked`.
    pub acked: u64,
    /// VmRSS, kB.
    pub rss_kb: u64,
    /// VmHWM (the peak RSS so far, kept by the kernel), kB.
    pub hwm_kb: u64,
    /// RssAnon (heap, stacks), kB.
    pub anon_kb: u64,
    /// Entries of /proc/PID/fd.
    pub fds: u64,
    /// Those of them that are sockets.
    pub sockets: u64,
}

impl Sample {
    fn to_json(self) -> Value {
        json!({
            "secs": round1(self.secs),
            "acked": self.acked,
            "rss_mb": mb(self.rss_kb),
            "anon_mb": mb(self.anon_kb),
            "fds": self.fds,
            "sockets": self.sockets,
        })
    }
}

/// The outcome; `failures` empty means the soak passed.
#[derive(Debug, Clone, Default)]
pub(crate) struct Report {
    pub messages: usize,
    pub expected: stream::Expected,
    pub generate_secs: f64,
    pub file_bytes: u64,
    /// Every sample, in order.
    pub samples: Vec<Sample>,
    /// The first sample with `acked` ≥ 10 % of the messages.
    pub warm: Option<Sample>,
    /// The last sample before the child exited.
    pub end: Option<Sample>,
    /// Highest VmRSS over the samples with `acked` ≥ 90 % of the messages (through the exit), kB.
    pub final_max_rss_kb: u64,
    /// Highest fd count over the same samples.
    pub final_max_fds: u64,
    /// Highest count of fds other than sockets over the same samples.
    pub final_max_other_fds: u64,
    /// VmHWM at the last sample: the process's peak RSS.
    pub peak_rss_kb: u64,
    /// Highest fd count sampled.
    pub peak_fds: u64,
    /// Highest socket count sampled.
    pub peak_sockets: u64,
    /// Start to exit of the child.
    pub duration_secs: f64,
    /// Start to the first progress line that counted every message acked.
    pub processed_secs: Option<f64>,
    pub exit_code: Option<i32>,
    /// The `worker stopped` line's counts.
    pub summary: Value,
    pub releases: usize,
    pub cancels: usize,
    /// Effects whose key the stub received more than once.
    pub repeated_effects: usize,
    pub stub_requests: u64,
    pub failures: Vec<String>,
}

fn mb(kb: u64) -> f64 {
    (kb as f64 / 1024.0 * 10.0).round() / 10.0
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

impl Report {
    /// Whether every check held.
    pub(crate) fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// RSS at the end minus RSS at the warm sample, MB.
    pub(crate) fn rss_growth_mb(&self) -> Option<f64> {
        Some((self.end?.rss_kb as f64 - self.warm?.rss_kb as f64) / 1024.0)
    }

    /// Highest RSS over the last 10 % minus RSS at the warm sample, MB.
    pub(crate) fn final_max_growth_mb(&self) -> Option<f64> {
        Some((self.final_max_rss_kb as f64 - self.warm?.rss_kb as f64) / 1024.0)
    }

    /// fds at the end minus fds at the warm sample.
    pub(crate) fn fd_growth(&self) -> Option<i64> {
        Some(self.end?.fds as i64 - self.warm?.fds as i64)
    }

    /// The highest count of fds other than sockets over the last 10 % minus the warm count.
    pub(crate) fn other_fd_growth(&self) -> Option<i64> {
        let w = self.warm?;
        Some(self.final_max_other_fds as i64 - (w.fds - w.sockets) as i64)
    }

    /// Messages per second, start to exit.
    pub(crate) fn rate(&self) -> f64 {
        if self.duration_secs > 0.0 {
            self.messages as f64 / self.duration_secs
        } else {
            0.0
        }
    }

    /// The sample nearest each tenth of the messages (for the timeline).
    pub(crate) fn deciles(&self) -> Vec<Sample> {
        let n = self.messages as u64;
        let mut out = Vec::new();
        for d in 1..=10u64 {
            if let Some(s) = self.samples.iter().find(|s| s.acked * 10 >= n * d)
                && out.last().is_none_or(|l: &Sample| l.acked != s.acked)
            {
                out.push(*s);
            }
        }
        out
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({
            "messages": self.messages,
            "file_bytes": self.file_bytes,
            "generate_secs": round1(self.generate_secs),
            "expected": {
                "releases": self.expected.releases,
                "cancels_after_grace": self.expected.cancels_timer,
                "cancels_order_creation_failed": self.expected.cancels_event,
                "duplicates": self.expected.duplicates,
            },
            "warm": self.warm.map(Sample::to_json),
            "end": self.end.map(Sample::to_json),
            "rss_growth_mb": self.rss_growth_mb().map(round1),
            "final_10pct_max_rss_mb": mb(self.final_max_rss_kb),
            "final_10pct_max_growth_mb": self.final_max_growth_mb().map(round1),
            "final_10pct_max_fds": self.final_max_fds,
            "fd_growth": self.fd_growth(),
            "final_10pct_max_other_fds": self.final_max_other_fds,
            "other_fd_growth": self.other_fd_growth(),
            "peak_sockets": self.peak_sockets,
            "peak_rss_mb": mb(self.peak_rss_kb),
            "peak_fds": self.peak_fds,
            "duration_secs": round1(self.duration_secs),
            "processed_secs": self.processed_secs.map(round1),
            "msgs_per_sec": self.rate().round(),
            "exit_code": self.exit_code,
            "summary": self.summary,
            "releases": self.releases,
            "cancels": self.cancels,
            "repeated_effects": self.repeated_effects,
            "stub_requests": self.stub_requests,
            "timeline": self.deciles().into_iter().map(Sample::to_json).collect::<Vec<_>>(),
            "samples": self.samples.len(),
            "passed": self.passed(),
            "failures": self.failures,
        })
    }

    /// The figures, for people.
    pub(crate) fn print(&self) {
        let f = |s: Option<Sample>| {
            s.map_or("-".to_string(), |s| {
                format!(
                    "RSS {:.1} MB (anon {:.1}), {} fds ({} sockets), at {} acked, {:.0} s",
                    mb(s.rss_kb),
                    mb(s.anon_kb),
                    s.fds,
                    s.sockets,
                    s.acked,
                    s.secs
                )
            })
        };
        println!();
        println!(
            "soak: {} messages through `payrules run` (file source, SQLite, loopback stub)",
            self.messages
        );
        println!("  at 10 %          {}", f(self.warm));
        println!("  end              {}", f(self.end));
        println!(
            "  RSS growth       {} MB at the end, {} MB at the highest of the last 10 % ({:.1} MB)",
            self.rss_growth_mb()
                .map_or("-".into(), |g| format!("{g:+.1}")),
            self.final_max_growth_mb()
                .map_or("-".into(), |g| format!("{g:+.1}")),
            mb(self.final_max_rss_kb),
        );
        println!(
            "  peak             RSS {:.1} MB (VmHWM), {} fds, {} sockets",
            mb(self.peak_rss_kb),
            self.peak_fds,
            self.peak_sockets
        );
        println!(
            "  fd growth        {} at the end (highest over the last 10 %: {}); other than sockets {} at the highest of the last 10 %",
            self.fd_growth().map_or("-".into(), |g| format!("{g:+}")),
            self.final_max_fds,
            self.other_fd_growth()
                .map_or("-".into(), |g| format!("{g:+}")),
        );
        println!(
            "  duration         {:.1} s start to exit ({:.0} msg/s); all acked after {}",
            self.duration_secs,
            self.rate(),
            self.processed_secs
                .map_or("-".into(), |s| format!("{s:.1} s"))
        );
        println!(
            "  effects          {} releases (planned {}), {} cancels (planned {} + {}), {} repeated; {} stub requests",
            self.releases,
            self.expected.releases,
            self.cancels,
            self.expected.cancels_timer,
            self.expected.cancels_event,
            self.repeated_effects,
            self.stub_requests
        );
        println!("  worker summary   {}", self.summary);
        println!("  timeline (acked: RSS MB / fds / sockets)");
        for s in self.deciles() {
            println!(
                "    {:>9}: {:6.1} / {:<3} / {:<3} ({:.0} s)",
                s.acked,
                mb(s.rss_kb),
                s.fds,
                s.sockets,
                s.secs
            );
        }
        if self.passed() {
            println!("  PASSED");
        } else {
            for f in &self.failures {
                println!("  FAILED: {f}");
            }
        }
        println!();
    }
}

/// The soak from the command line: runs with progress on stderr, prints the figures, writes
/// the JSON report to `report_path`; the exit status (0: passed).
pub(crate) async fn cli(cfg: &Config, report_path: &std::path::Path) -> i32 {
    let cfg = Config {
        verbose: true,
        ..cfg.clone()
    };
    let r = run(&cfg).await;
    r.print();
    let mut v = r.to_json();
    v["command"] = json!(std::env::args().collect::<Vec<_>>().join(" "));
    v["machine"] = crate::procfs::machine();
    v["worker_bin"] = json!(cfg.worker_bin.display().to_string());
    v["grace_period"] = json!(cfg.grace);
    v["concurrency"] = json!(cfg.concurrency);
    if let Some(dir) = report_path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(
        report_path,
        serde_json::to_string_pretty(&v).expect("report serializes"),
    )
    .expect("writing the soak report");
    eprintln!(
        "report: {}; worker log: {}",
        report_path.display(),
        cfg.log.display()
    );
    i32::from(!r.passed())
}

/// (VmRSS, VmHWM, RssAnon) of a live process, kB; `None` once it has exited.
fn proc_mem_kb(pid: u32) -> Option<(u64, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name| crate::procfs::status_field(&status, name);
    // A zombie has no Vm* lines.
    Some((
        field("VmRSS:")?,
        field("VmHWM:")?,
        field("RssAnon:").unwrap_or(0),
    ))
}

/// (open fds, of which sockets).
fn proc_fds(pid: u32) -> Option<(u64, u64)> {
    let dir = format!("/proc/{pid}/fd");
    let (mut all, mut sockets) = (0, 0);
    for e in std::fs::read_dir(&dir).ok()?.flatten() {
        all += 1;
        if std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:")) {
            sockets += 1;
        }
    }
    Some((all, sockets))
}

/// Follows the worker's JSON log: the latest `acked` of a progress line, and the summary.
struct LogTail {
    file: std::fs::File,
    partial: Vec<u8>,
    acked: u64,
    summary: Option<Value>,
    /// Lines at WARN or ERROR (the first few).
    problems: Vec<String>,
}

impl LogTail {
    fn new(path: &std::path::Path) -> Self {
        Self {
            file: std::fs::File::open(path).expect("opening the worker log"),
            partial: Vec::new(),
            acked: 0,
            summary: None,
            problems: Vec::new(),
        }
    }

    fn poll(&mut self) {
        let mut buf = Vec::new();
        let _ = self.file.read_to_end(&mut buf);
        if buf.is_empty() {
            return;
        }
        self.partial.extend_from_slice(&buf);
        let Some(last_nl) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        let rest = self.partial.split_off(last_nl + 1);
        let lines = std::mem::replace(&mut self.partial, rest);
        for line in lines.split(|&b| b == b'\n') {
            self.line(line);
        }
    }

    fn line(&mut self, line: &[u8]) {
        if line.is_empty() {
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(line) else {
            return;
        };
        match v.get("message").and_then(Value::as_str) {
            Some("progress") => {
                if let Some(a) = v.get("acked").and_then(Value::as_u64) {
                    self.acked = self.acked.max(a);
                }
            }
            Some("worker stopped") => {
                if let Some(a) = v.get("acked").and_then(Value::as_u64) {
                    self.acked = self.acked.max(a);
                }
                self.summary = Some(v);
            }
            _ => {
                let level = v.get("level").and_then(Value::as_str).unwrap_or("");
                if (level == "WARN" || level == "ERROR") && self.problems.len() < 5 {
                    self.problems
                        .push(String::from_utf8_lossy(line).chars().take(400).collect());
                }
            }
        }
    }
}

/// Runs the soak; see the module docs.
pub(crate) async fn run(cfg: &Config) -> Report {
    let mut report = Report {
        messages: cfg.messages,
        ..Report::default()
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("soak.jsonl");

    // The stream: into the file and into the stub; only the plan is kept.
    let started = Instant::now();
    let stub = Stub::start().await;
    {
        let s = stream::generate(&stream::GenConfig {
            messages: cfg.messages,
            seed: cfg.seed,
            ..stream::GenConfig::default()
        });
        s.write_jsonl(&input).expect("writing the stream");
        for m in s.iter() {
            if let Ok(msg) = payrules::message::decode(m) {
                stub.observe(&msg);
            }
        }
        report.expected = s.expected.clone();
        report.file_bytes = std::fs::metadata(&input).map(|m| m.len()).unwrap_or(0);
    }
    report.generate_secs = started.elapsed().as_secs_f64();
    if cfg.verbose {
        eprintln!(
            "soak: generated {} messages ({:.0} MB) and taught the stub in {:.1} s",
            cfg.messages,
            report.file_bytes as f64 / 1e6,
            report.generate_secs
        );
    }

    // The worker.
    if let Some(parent) = cfg.log.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let log = std::fs::File::create(&cfg.log).expect("creating the worker log");
    let url = stub.url();
    let env: Vec<(&str, String)> = vec![
        ("NO_COLOR", "1".into()),
        ("PAYRULES_SOURCE", "file".into()),
        ("PAYRULES_FILE_PATH", input.display().to_string()),
        (
            "PAYRULES_STATE_URL",
            format!("sqlite://{}", dir.path().join("soak.db").display()),
        ),
        ("PAYRULES_GRACE_PERIOD", cfg.grace.clone()),
        // A soak compresses the grace period.
        ("PAYRULES_ALLOW_SHORT_GRACE_PERIOD", "true".into()),
        ("PAYRULES_CONCURRENCY", cfg.concurrency.to_string()),
        ("PAYRULES_LOG", cfg.log_level.clone()),
        ("PAYRULES_LOG_FORMAT", "json".into()),
        (
            "PAYRULES_PROGRESS_INTERVAL",
            format!("{}ms", cfg.sample_every.as_millis().max(1)),
        ),
        ("PAYRULES_RELEASE_WEBHOOK_URL", format!("{url}/webhook")),
        ("PAYRULES_RELEASE_WEBHOOK_SECRET", "soak-secret".into()),
        ("CTP_PROJECT_KEY", stub::PROJECT.into()),
        ("CTP_CLIENT_ID", "soak".into()),
        ("CTP_CLIENT_SECRET", "soak-secret".into()),
        ("CTP_AUTH_URL", url.clone()),
        ("CTP_API_URL", url.clone()),
        ("CTP_CHECKOUT_URL", format!("{url}/checkout")),
        (
            "CTP_SCOPES",
            format!(
                "view_payments:{p} view_orders:{p} manage_checkout_payment_intents:{p}",
                p = stub::PROJECT
            ),
        ),
    ];
    let mut cmd = Command::new(&cfg.worker_bin);
    // Nothing from the caller's environment (no proxy, no PAYRULES_*) decides the run.
    cmd.arg("run")
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let t0 = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {} run: {e}", cfg.worker_bin.display()));
    let pid = child.id();
    let mut tail = LogTail::new(&cfg.log);
    let n = cfg.messages as u64;
    let mut next_note = n / 10;
    let status = loop {
        // Sample first, then reap: the last sample is the last one before the exit.
        tail.poll();
        if let (Some((rss, hwm, anon)), Some((fds, sockets))) = (proc_mem_kb(pid), proc_fds(pid)) {
            let s = Sample {
                secs: t0.elapsed().as_secs_f64(),
                acked: tail.acked,
                rss_kb: rss,
                hwm_kb: hwm,
                anon_kb: anon,
                fds,
                sockets,
            };
            if report.processed_secs.is_none() && s.acked >= n {
                report.processed_secs = Some(s.secs);
            }
            if cfg.verbose && s.acked >= next_note && next_note > 0 {
                eprintln!(
                    "soak: {:>9} acked  RSS {:6.1} MB  anon {:6.1} MB  {} fds ({} sockets)  {:.0} s",
                    s.acked,
                    mb(s.rss_kb),
                    mb(s.anon_kb),
                    s.fds,
                    s.sockets,
                    s.secs
                );
                while next_note <= s.acked {
                    next_note += n / 10;
                }
            }
            report.samples.push(s);
        }
        if let Some(status) = child.try_wait().expect("waiting for the worker") {
            break Some(status);
        }
        if t0.elapsed() > cfg.timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(cfg.sample_every).await;
    };
    report.duration_secs = t0.elapsed().as_secs_f64();
    tail.poll();
    report.exit_code = status.and_then(|s| s.code());
    report.summary = tail.summary.clone().map_or(Value::Null, |mut v| {
        if let Some(o) = v.as_object_mut() {
            for k in [
                "timestamp",
                "level",
                "target",
                "message",
                "threadId",
                "threadName",
            ] {
                o.remove(k);
            }
        }
        v
    });

    // The figures.
    report.warm = report.samples.iter().find(|s| s.acked * 10 >= n).copied();
    report.end = report.samples.last().copied();
    for s in report.samples.iter().filter(|s| s.acked * 10 >= n * 9) {
        report.final_max_rss_kb = report.final_max_rss_kb.max(s.rss_kb);
        report.final_max_fds = report.final_max_fds.max(s.fds);
        report.final_max_other_fds = report.final_max_other_fds.max(s.fds - s.sockets);
    }
    report.peak_rss_kb = report.samples.iter().map(|s| s.hwm_kb).max().unwrap_or(0);
    report.peak_fds = report.samples.iter().map(|s| s.fds).max().unwrap_or(0);
    report.peak_sockets = report.samples.iter().map(|s| s.sockets).max().unwrap_or(0);

    // What the stub received.
    let effects = stub.effects();
    let mut seen = HashSet::new();
    for e in &effects {
        if e.key.starts_with("release:") {
            report.releases += 1;
        } else if e.key.starts_with("cancel:") {
            report.cancels += 1;
        }
        if !seen.insert(e.key.clone()) {
            report.repeated_effects += 1;
        }
    }
    report.stub_requests = stub.requests.load(std::sync::atomic::Ordering::Relaxed);

    // The checks.
    let mut failures = Vec::new();
    let fail = &mut failures;
    match status {
        None => fail.push(format!(
            "did not finish within {:?}; killed (log: {})",
            cfg.timeout,
            cfg.log.display()
        )),
        Some(s) if !s.success() => fail.push(format!(
            "exit status {s} (log: {}); {:?}",
            cfg.log.display(),
            tail.problems
        )),
        Some(_) => {}
    }
    let count = |k: &str| report.summary.get(k).and_then(Value::as_u64);
    if count("acked") != Some(n) {
        fail.push(format!("acked {:?} of {n}", count("acked")));
    }
    if count("parked").unwrap_or(0) > 0 {
        fail.push(format!("{:?} messages parked", count("parked")));
    }
    let e = &report.expected;
    if report.releases != e.releases {
        fail.push(format!(
            "{} releases received, {} planned",
            report.releases, e.releases
        ));
    }
    if report.cancels != e.cancels_timer + e.cancels_event {
        fail.push(format!(
            "{} cancels received, {} planned",
            report.cancels,
            e.cancels_timer + e.cancels_event
        ));
    }
    if report.repeated_effects > 0 {
        fail.push(format!(
            "{} effects received more than once",
            report.repeated_effects
        ));
    }
    match (report.warm, report.end) {
        (Some(_), Some(_)) => {
            let growth = report.rss_growth_mb().unwrap_or(0.0);
            if growth > cfg.rss_bound_mb {
                fail.push(format!(
                    "RSS grew {growth:.1} MB from 10 % to the end (bound {} MB)",
                    cfg.rss_bound_mb
                ));
            }
            let final_growth = report.final_max_growth_mb().unwrap_or(0.0);
            if final_growth > cfg.rss_bound_mb {
                fail.push(format!(
                    "RSS over the last 10 % reached {final_growth:.1} MB above the 10 % sample (bound {} MB)",
                    cfg.rss_bound_mb
                ));
            }
            let fds = report.other_fd_growth().unwrap_or(0);
            if fds > cfg.fd_bound {
                fail.push(format!(
                    "open file descriptors other than sockets grew by {fds} from 10 % to the highest of the last 10 % (bound {})",
                    cfg.fd_bound
                ));
            }
            if report.peak_sockets > cfg.socket_cap() {
                fail.push(format!(
                    "{} sockets open at once (cap {}: 3 × concurrency + 32)",
                    report.peak_sockets,
                    cfg.socket_cap()
                ));
            }
        }
        _ => fail.push("no sample at 10 % of the messages or at the end".into()),
    }
    report.failures = failures;
    report
}
