//! Real local peers for integration tests: Google's Pub/Sub emulator, moto server and fauxqs (SQS),
//! and @labdigital/commercetools-mock (commercetools HTTP API).
//!
//! # Install
//! `bash scripts/peers/install.sh` (also run by `scripts/test.sh`) installs everything into
//! `<repo>/.peers/` and writes `<repo>/.peers/env`: `KEY=VALUE` lines with absolute paths.
//! This module finds the repo with `env!("CARGO_MANIFEST_DIR")` and reads that file; a variable of
//! the same name in the process environment overrides a line of the file. Keys:
//!
//! | key | what |
//! |---|---|
//! | `PAYRULES_PEER_PUBSUB_EMULATOR` | the `cloud-pubsub-emulator` launcher (Debian google-cloud-cli-pubsub-emulator; execs java) |
//! | `PAYRULES_PEER_PUBSUB_LOGGING` | java.util.logging properties (WARNING) so the emulator does not log every request |
//! | `PAYRULES_PEER_MOTO` | `.peers/venv/bin/moto_server` |
//! | `PAYRULES_PEER_NODE`, `PAYRULES_PEER_NODE_DIR` | node binary; `.peers/node` (has `node_modules/`) |
//! | `PAYRULES_PEER_FAUXQS_SCRIPT`, `PAYRULES_PEER_CTMOCK_SCRIPT` | `scripts/peers/{fauxqs,ctmock}-server.mjs` |
//!
//! `PAYRULES_PEER_START_TIMEOUT_SECS` (process env only, default 30) bounds the wait for readiness.
//!
//! # Lifecycle
//! Every peer listens on 127.0.0.1 on a free port picked at start ([`Peer::endpoint`] is
//! `http://127.0.0.1:PORT`). It runs under a small `sh` watchdog (its own process group) whose
//! stdin is a pipe only this test process holds: when the [`Peer`] is dropped, or when the test
//! process exits or dies in any way (even SIGKILL), the pipe closes and the watchdog SIGKILLs the
//! peer, reaps it and exits. Statics are never dropped, so the `shared_*()` peers are also stopped
//! synchronously by an `atexit` hook when the test binary exits normally; on an abnormal exit the
//! watchdog still kills them (its `sh` is then reaped by init).
//!
//! Do not use these peers from a test with a paused tokio clock (`start_paused`): probe and
//! request timeouts would fire at once.
//!
//! If a peer cannot be started this panics (never skips) with the peer's name, command, the tail of
//! its log (stdout + stderr go to an unnamed temp file) and the hint to run the install script.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::OnceCell;

const INSTALL_HINT: &str =
    "run `bash scripts/peers/install.sh` (or `bash scripts/test.sh`) to install the test peers";

/// The watchdog. `$0` = label, `$@` = the peer command; stdin = the pipe from the test process.
/// The peer runs in the background (without that pipe); a subshell blocks reading the pipe and
/// SIGKILLs the peer on EOF (Drop or death of the test process). When the peer is gone, anything
/// else left in the process group gets SIGTERM (the shell itself ignores it), and the shell exits
/// with the peer's status, so an early exit of the peer is visible to `try_wait`.
const WATCHDOG: &str = r#"
exec 3<&0 </dev/null
"$@" 3<&- &
peer=$!
( while read -r _ <&3; do :; done; kill -KILL "$peer" 2>/dev/null ) &
exec 3<&-
wait "$peer"
rc=$?
trap '' TERM
kill -TERM 0 2>/dev/null
wait
exit "$rc"
"#;

/// A running peer process. Killed (with everything it started) on drop.
pub(crate) struct Peer {
    /// "pubsub-emulator", "moto", "fauxqs" or "commercetools-mock".
    pub name: &'static str,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub port: u16,
    child: Mutex<Child>,
    stdin: Mutex<Option<ChildStdin>>,
    pid: u32,
    log: File,
}

impl Peer {
    /// `127.0.0.1:PORT` (the form of `PUBSUB_EMULATOR_HOST`).
    pub(crate) fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// PID of the watchdog shell (= the process group id of the peer).
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// The last `lines` lines of the peer's stdout + stderr.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }
}

impl Peer {
    /// Stops the peer and reaps its watchdog (idempotent). Called by Drop and, for the shared
    /// peers, by an atexit hook.
    pub(crate) fn shutdown(&self) {
        // Closing our end of the pipe makes the watchdog kill and reap the peer, then exit.
        drop(lock(&self.stdin).take());
        let mut child = lock(&self.child);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => break,
            }
        }
        kill_group(self.pid);
        let _ = child.wait();
    }

    fn try_wait(&self) -> Option<std::process::ExitStatus> {
        lock(&self.child).try_wait().ok().flatten()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn log_tail(log: &File, lines: usize) -> String {
    // Read with pread: the peer shares this file description, so seeking would move its offset.
    let len = log.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(64 * 1024);
    let mut buf = vec![0u8; (len - start) as usize];
    let n = log.read_at(&mut buf, start).unwrap_or(0);
    buf.truncate(n);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    let tail = &all[all.len().saturating_sub(lines)..];
    if tail.is_empty() {
        "(log is empty)".to_string()
    } else {
        tail.join("\n")
    }
}

// ------------------------------------------------------------------------------------------------
// Locating the installed peers

fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn env_file() -> PathBuf {
    repo_dir().join(".peers").join("env")
}

fn installed_env() -> &'static HashMap<String, String> {
    static ENV: OnceLock<HashMap<String, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut map = HashMap::new();
        if let Ok(text) = std::fs::read_to_string(env_file()) {
            for line in text.lines() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                if let Some((k, v)) = line.split_once('=') {
                    map.insert(k.trim().to_string(), v.trim().to_string());
                }
            }
        }
        map
    })
}

/// Path of an installed peer component: process env first, then `.peers/env`. Panics (naming the
/// peer and the install script) when it is not configured or does not exist.
fn peer_path(peer: &str, key: &str) -> PathBuf {
    let value = std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| installed_env().get(key).cloned());
    let Some(value) = value else {
        panic!(
            "test peer `{peer}` is not installed: {key} is neither in the environment nor in {} \
             (missing or incomplete); {INSTALL_HINT}",
            env_file().display()
        );
    };
    let path = PathBuf::from(&value);
    if !path.exists() {
        panic!(
            "test peer `{peer}`: {key}={value} (from {}) does not exist; {INSTALL_HINT}",
            env_file().display()
        );
    }
    path
}

fn start_timeout() -> Duration {
    let secs = std::env::var("PAYRULES_PEER_START_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            // A fresh loopback connection per request: a pooled one that the peer closed while
            // idle fails the next request now and then ("connection closed before message
            // completed"), seen with the Pub/Sub emulator under parallel tests.
            .pool_max_idle_per_host(0)
            .build()
            .expect("build reqwest client")
    })
}

// ------------------------------------------------------------------------------------------------
// Starting peers

/// How to start and probe one peer. Public so tests can start a variant (extra env, other args).
pub(crate) struct PeerSpec {
    pub name: &'static str,
    pub program: PathBuf,
    /// Arguments; every `{port}` is replaced by the chosen port.
    pub args: Vec<String>,
    /// Environment additions; `{port}` in values is replaced too.
    pub env: Vec<(String, String)>,
    /// Path polled with GET until `ready` accepts the status code.
    pub ready_path: String,
    pub ready: fn(u16) -> bool,
}

/// Starts `spec` on a free loopback port and waits until it answers. Retries on a new port (up to
/// 3 tries) when the process exits early because the port was taken; panics otherwise.
pub(crate) async fn start(spec: PeerSpec) -> Peer {
    let mut last_failure = String::new();
    for _attempt in 0..3 {
        match try_start(&spec).await {
            Ok(peer) => return peer,
            Err(StartError::PortTaken(msg)) => last_failure = msg,
            Err(StartError::Fatal(msg)) => panic!("{msg}"),
        }
    }
    panic!("{last_failure}")
}

enum StartError {
    PortTaken(String),
    Fatal(String),
}

async fn try_start(spec: &PeerSpec) -> Result<Peer, StartError> {
    let port = free_port();
    let subst = |s: &str| s.replace("{port}", &port.to_string());
    let args: Vec<String> = spec.args.iter().map(|a| subst(a)).collect();
    let command = std::iter::once(spec.program.display().to_string())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    let fatal = |what: String, log: Option<&File>| {
        let tail = log.map(|l| log_tail(l, 40)).unwrap_or_default();
        format!(
            "test peer `{}` could not be started: {what}\n  command: {command}\n  log tail:\n{}\n  => {INSTALL_HINT}",
            spec.name,
            indent(&tail)
        )
    };

    let log = tempfile::tempfile().map_err(|e| {
        StartError::Fatal(fatal(format!("cannot create a temp log file: {e}"), None))
    })?;
    let out = log
        .try_clone()
        .map_err(|e| StartError::Fatal(fatal(format!("dup log file: {e}"), None)))?;
    let err = log
        .try_clone()
        .map_err(|e| StartError::Fatal(fatal(format!("dup log file: {e}"), None)))?;

    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(WATCHDOG)
        .arg(format!("payrules-peer-{}", spec.name))
        .arg(&spec.program)
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .process_group(0);
    for (k, v) in &spec.env {
        cmd.env(k, subst(v));
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| StartError::Fatal(fatal(format!("cannot spawn /bin/sh: {e}"), Some(&log))))?;
    let stdin = Mutex::new(child.stdin.take());
    let pid = child.id();
    let peer = Peer {
        name: spec.name,
        endpoint: format!("http://127.0.0.1:{port}"),
        port,
        child: Mutex::new(child),
        stdin,
        pid,
        log,
    };

    let url = format!("{}{}", peer.endpoint, spec.ready_path);
    let timeout = start_timeout();
    let started = Instant::now();
    loop {
        let probe = http()
            .get(&url)
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        let last = match probe {
            Ok(resp) if (spec.ready)(resp.status().as_u16()) => return Ok(peer),
            Ok(resp) => format!("HTTP {}", resp.status()),
            Err(e) => error_chain(&e),
        };
        if let Some(status) = peer.try_wait() {
            let tail = peer.log_tail(40);
            let msg = fatal(
                format!("it exited ({status}) before answering GET {url} (last probe: {last})"),
                Some(&peer.log),
            );
            let port_taken = [
                "Address already in use",
                "EADDRINUSE",
                "BindException",
                "address already in use",
            ]
            .iter()
            .any(|s| tail.contains(s));
            return Err(if port_taken {
                StartError::PortTaken(msg)
            } else {
                StartError::Fatal(msg)
            });
        }
        if started.elapsed() > timeout {
            let msg = fatal(
                format!(
                    "no successful GET {url} within {timeout:?} (last probe: {last}); process still running"
                ),
                Some(&peer.log),
            );
            drop(peer);
            return Err(StartError::Fatal(msg));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Google Cloud Pub/Sub emulator (REST and gRPC on one port). ~1–2 s to start, ~200 MB RSS:
/// prefer [`shared_pubsub_emulator`] and fresh topic/subscription names per test.
pub(crate) async fn pubsub_emulator() -> Peer {
    let launcher = peer_path("pubsub-emulator", "PAYRULES_PEER_PUBSUB_EMULATOR");
    let logging = peer_path("pubsub-emulator", "PAYRULES_PEER_PUBSUB_LOGGING");
    start(PeerSpec {
        name: "pubsub-emulator",
        program: launcher,
        args: vec!["--host=127.0.0.1".into(), "--port={port}".into()],
        env: vec![
            (
                "JAVA_OPTS".into(),
                format!(
                    "-Xmx256m -Djava.util.logging.config.file={}",
                    logging.display()
                ),
            ),
            ("CLOUD_PUBSUB_EMULATOR_OPTS".into(), String::new()),
        ],
        ready_path: "/".into(),
        ready: |s| s == 200,
    })
    .await
}

/// moto server (all AWS services on one port; requests must be SigV4-signed, e.g. by aws-sdk-sqs).
/// `POST /moto-api/reset` wipes its state. Keep queues shallow: moto is O(queue depth).
pub(crate) async fn moto() -> Peer {
    let moto = peer_path("moto", "PAYRULES_PEER_MOTO");
    start(PeerSpec {
        name: "moto",
        program: moto,
        args: vec![
            "-H".into(),
            "127.0.0.1".into(),
            "-p".into(),
            "{port}".into(),
        ],
        env: vec![],
        ready_path: "/moto-api/".into(),
        ready: |s| s == 200,
    })
    .await
}

/// fauxqs (fast SQS; JSON protocol only, no signing needed). Queue URLs are
/// `http://127.0.0.1:PORT/000000000000/NAME`; always reuse the URL CreateQueue returned.
pub(crate) async fn fauxqs() -> Peer {
    let node = peer_path("fauxqs", "PAYRULES_PEER_NODE");
    let node_dir = peer_path("fauxqs", "PAYRULES_PEER_NODE_DIR");
    let script = peer_path("fauxqs", "PAYRULES_PEER_FAUXQS_SCRIPT");
    start(PeerSpec {
        name: "fauxqs",
        program: node,
        args: vec![script.display().to_string(), "{port}".into()],
        env: vec![(
            "PAYRULES_PEER_NODE_DIR".into(),
            node_dir.display().to_string(),
        )],
        ready_path: "/health".into(),
        ready: |s| s == 200,
    })
    .await
}

/// @labdigital/commercetools-mock with OAuth on (`enableAuthentication` + `validateCredentials`):
/// get a token with [`ctmock_token`]. Any project key exists implicitly. The API and the auth
/// server share the endpoint.
pub(crate) async fn commercetools_mock() -> Peer {
    let node = peer_path("commercetools-mock", "PAYRULES_PEER_NODE");
    let node_dir = peer_path("commercetools-mock", "PAYRULES_PEER_NODE_DIR");
    let script = peer_path("commercetools-mock", "PAYRULES_PEER_CTMOCK_SCRIPT");
    start(PeerSpec {
        name: "commercetools-mock",
        program: node,
        args: vec![script.display().to_string(), "{port}".into()],
        env: vec![(
            "PAYRULES_PEER_NODE_DIR".into(),
            node_dir.display().to_string(),
        )],
        // With authentication on, a project GET without a token answers 401: that is "up".
        ready_path: "/payrules-ready-probe".into(),
        ready: |s| s == 200 || s == 401,
    })
    .await
}

static SHARED_PUBSUB_EMULATOR: OnceCell<Peer> = OnceCell::const_new();
static SHARED_MOTO: OnceCell<Peer> = OnceCell::const_new();
static SHARED_FAUXQS: OnceCell<Peer> = OnceCell::const_new();
static SHARED_COMMERCETOOLS_MOCK: OnceCell<Peer> = OnceCell::const_new();

async fn shared<F, Fut>(cell: &'static OnceCell<Peer>, start: F) -> &'static Peer
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Peer>,
{
    let peer = cell.get_or_init(start).await;
    register_exit_hook();
    peer
}

/// Statics are never dropped: stop the shared peers when the test binary exits normally, so they
/// are gone (and reaped) before cargo runs the next binary. On abnormal exit the watchdog does it.
fn register_exit_hook() {
    static ONCE: Once = Once::new();
    unsafe extern "C" {
        fn atexit(callback: extern "C" fn()) -> std::os::raw::c_int;
    }
    extern "C" fn stop_shared_peers() {
        for cell in [
            &SHARED_PUBSUB_EMULATOR,
            &SHARED_MOTO,
            &SHARED_FAUXQS,
            &SHARED_COMMERCETOOLS_MOCK,
        ] {
            if let Some(peer) = cell.get() {
                peer.shutdown();
            }
        }
    }
    // SAFETY: atexit is the C library's; the callback is a plain extern "C" fn that does not
    // unwind (shutdown neither panics nor touches thread-locals).
    ONCE.call_once(|| unsafe {
        atexit(stop_shared_peers);
    });
}

/// One Pub/Sub emulator per test binary (started on first use, stopped when the binary exits).
pub(crate) async fn shared_pubsub_emulator() -> &'static Peer {
    shared(&SHARED_PUBSUB_EMULATOR, pubsub_emulator).await
}

/// One moto server per test binary. Tests share its state: use unique names.
pub(crate) async fn shared_moto() -> &'static Peer {
    shared(&SHARED_MOTO, moto).await
}

/// One fauxqs per test binary. Tests share its state: use unique names.
pub(crate) async fn shared_fauxqs() -> &'static Peer {
    shared(&SHARED_FAUXQS, fauxqs).await
}

/// One commercetools-mock per test binary. Tests share its state: use unique project keys.
pub(crate) async fn shared_commercetools_mock() -> &'static Peer {
    shared(&SHARED_COMMERCETOOLS_MOCK, commercetools_mock).await
}

// ------------------------------------------------------------------------------------------------
// Fresh names

/// `PREFIX-<pid>-<n>-<random hex>`: unique across tests, binaries and runs. Valid as a Pub/Sub
/// topic/subscription id (if PREFIX starts with a letter), an SQS queue name (if PREFIX is
/// `[A-Za-z0-9_-]`, keep it under ~50 chars) and a commercetools project key / resource key.
pub(crate) fn unique_name(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(n);
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!(
        "{prefix}-{}-{n}-{:06x}",
        std::process::id(),
        h.finish() & 0xff_ffff
    )
}

// ------------------------------------------------------------------------------------------------
// Pub/Sub emulator (REST)

/// Full resource names created by [`create_topic_and_subscription`].
#[derive(Debug, Clone)]
pub(crate) struct PubsubResources {
    /// `projects/P/topics/T`
    pub topic: String,
    /// `projects/P/subscriptions/S`
    pub subscription: String,
    /// `projects/P/topics/DLQ` when a dead-letter policy was requested.
    pub dead_letter_topic: Option<String>,
    /// `projects/P/subscriptions/DLQ-sub`: created on the dead-letter topic so that dead-lettered
    /// messages are kept and can be pulled.
    pub dead_letter_subscription: Option<String>,
}

async fn pubsub_put(peer: &Peer, path: &str, body: Value, allow_conflict: bool) -> Value {
    let url = format!("{}/v1/{path}", peer.endpoint);
    // The emulator needs Content-Type: application/json (else 404); .json() sets it.
    let resp = http()
        .put(&url)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if status.is_success() || (allow_conflict && status.as_u16() == 409) {
        serde_json::from_str(&text).unwrap_or(Value::Null)
    } else {
        panic!("PUT {url} {body} -> {status}: {text}")
    }
}

/// Creates topic `topic` and subscription `sub` on it in `project` (ids, not full names), with
/// `ackDeadlineSeconds`. With `dead_letter = Some((dlq_topic, max_delivery_attempts))` (5..=100)
/// it also creates the dead-letter topic (if missing) plus a subscription `<dlq_topic>-sub` on it,
/// and sets the subscription's deadLetterPolicy. Do not combine with message ordering on the
/// emulator (it breaks after dead-lettering; see shared/research/peers.md). Panics on errors.
pub(crate) async fn create_topic_and_subscription(
    peer: &Peer,
    project: &str,
    topic: &str,
    sub: &str,
    ack_deadline_secs: u32,
    dead_letter: Option<(&str, u32)>,
) -> PubsubResources {
    let topic_name = format!("projects/{project}/topics/{topic}");
    let sub_name = format!("projects/{project}/subscriptions/{sub}");
    pubsub_put(peer, &topic_name, json!({}), false).await;
    let mut body = json!({ "topic": topic_name, "ackDeadlineSeconds": ack_deadline_secs });
    let (mut dlq_topic_name, mut dlq_sub_name) = (None, None);
    if let Some((dlq_topic, max_attempts)) = dead_letter {
        let dt = format!("projects/{project}/topics/{dlq_topic}");
        let ds = format!("projects/{project}/subscriptions/{dlq_topic}-sub");
        pubsub_put(peer, &dt, json!({}), true).await;
        pubsub_put(
            peer,
            &ds,
            json!({ "topic": dt, "ackDeadlineSeconds": 10 }),
            true,
        )
        .await;
        body["deadLetterPolicy"] =
            json!({ "deadLetterTopic": dt, "maxDeliveryAttempts": max_attempts });
        dlq_topic_name = Some(dt);
        dlq_sub_name = Some(ds);
    }
    pubsub_put(peer, &sub_name, body, false).await;
    PubsubResources {
        topic: topic_name,
        subscription: sub_name,
        dead_letter_topic: dlq_topic_name,
        dead_letter_subscription: dlq_sub_name,
    }
}

/// Publishes one message to `projects/P/topics/T` (full name) over REST; returns its messageId.
pub(crate) async fn pubsub_publish(
    peer: &Peer,
    topic: &str,
    data: &[u8],
    attributes: &[(&str, &str)],
) -> String {
    let url = format!("{}/v1/{topic}:publish", peer.endpoint);
    let attrs: serde_json::Map<String, Value> = attributes
        .iter()
        .map(|(k, v)| (k.to_string(), Value::from(*v)))
        .collect();
    let body = json!({ "messages": [{ "data": base64_encode(data), "attributes": attrs }] });
    let resp = http()
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "POST {url} -> {status}: {v}");
    v["messageIds"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no messageId in {v}"))
        .to_string()
}

/// A message pulled over REST.
#[derive(Debug, Clone)]
pub(crate) struct PulledMessage {
    pub ack_id: String,
    pub message_id: String,
    pub data: Vec<u8>,
    pub attributes: HashMap<String, String>,
    pub delivery_attempt: Option<u64>,
}

/// Pulls up to `max` messages from `projects/P/subscriptions/S` (full name) without waiting
/// (`returnImmediately`), and acks them when `ack` is true.
pub(crate) async fn pubsub_pull(
    peer: &Peer,
    subscription: &str,
    max: u32,
    ack: bool,
) -> Vec<PulledMessage> {
    let url = format!("{}/v1/{subscription}:pull", peer.endpoint);
    let resp = http()
        .post(&url)
        .json(&json!({ "maxMessages": max, "returnImmediately": true }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "POST {url} -> {status}: {v}");
    let msgs: Vec<PulledMessage> = v["receivedMessages"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|m| PulledMessage {
            ack_id: m["ackId"].as_str().unwrap_or_default().to_string(),
            message_id: m["message"]["messageId"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            data: base64_decode(m["message"]["data"].as_str().unwrap_or_default()),
            attributes: m["message"]["attributes"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            delivery_attempt: m["deliveryAttempt"].as_u64(),
        })
        .collect();
    if ack && !msgs.is_empty() {
        let url = format!("{}/v1/{subscription}:acknowledge", peer.endpoint);
        let ids: Vec<&str> = msgs.iter().map(|m| m.ack_id.as_str()).collect();
        let resp = http()
            .post(&url)
            .json(&json!({ "ackIds": ids }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        assert!(
            resp.status().is_success(),
            "POST {url} -> {}",
            resp.status()
        );
    }
    msgs
}

/// Ends stale streaming pulls on a subscription (`projects/P/subscriptions/S`).
///
/// The emulator (0.8.20) does not notice when a client cancels a StreamingPull without first
/// half-closing it — which is how the official Rust client ends its streams (RST_STREAM, then
/// GOAWAY): the stream's server-side pusher keeps taking whatever becomes available on the
/// subscription, for ever, and sends it nowhere; those messages only come back after the
/// stream's ack deadline, and are then taken again. The pusher ends when it sees that the
/// subscription has become a push subscription, so this switches it to push (to an unreachable
/// endpoint) for a moment, and back to pull. Call it after a streaming consumer closed and
/// before reading the subscription with another consumer.
pub(crate) async fn pubsub_end_stale_streams(peer: &Peer, subscription: &str) {
    let url = format!("{}/v1/{subscription}:modifyPushConfig", peer.endpoint);
    for config in [
        json!({ "pushConfig": { "pushEndpoint": "http://127.0.0.1:9/payrules-unreachable" } }),
        json!({ "pushConfig": {} }),
    ] {
        let resp = http()
            .post(&url)
            .json(&config)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        let status = resp.status();
        assert!(
            status.is_success(),
            "POST {url} {config} -> {status}: {}",
            resp.text().await.unwrap_or_default()
        );
        // The pushers poll every 50 ms.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (what Pub/Sub REST uses for `data`).
pub(crate) fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard or URL-safe base64, padded or not; panics on other characters.
pub(crate) fn base64_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
    {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => panic!("invalid base64 character {:?} in {text:?}", c as char),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

// ------------------------------------------------------------------------------------------------
// SQS

/// An SQS JSON-protocol error answer.
#[derive(Debug, Clone)]
pub(crate) struct SqsCallError {
    pub status: u16,
    /// e.g. `com.amazonaws.sqs#QueueDoesNotExist`
    pub error_type: String,
    /// The whole answer; only read through `Debug`, in the message of a test that fails on it.
    #[allow(dead_code)]
    pub body: Value,
}

/// One unsigned SQS JSON-protocol call (`X-Amz-Target: AmazonSQS.<action>`). Works on fauxqs;
/// NOT on moto (moto routes unsigned requests to S3) — use [`sqs_client`] there.
pub(crate) async fn sqs_call(
    peer: &Peer,
    action: &str,
    body: Value,
) -> Result<Value, SqsCallError> {
    let url = format!("{}/", peer.endpoint);
    let resp = http()
        .post(&url)
        .header("Content-Type", "application/x-amz-json-1.0")
        .header("X-Amz-Target", format!("AmazonSQS.{action}"))
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("SQS {action} on {} ({url}): {e}", peer.name));
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if (200..300).contains(&status) {
        Ok(v)
    } else {
        Err(SqsCallError {
            status,
            error_type: v["__type"].as_str().unwrap_or_default().to_string(),
            body: v,
        })
    }
}

/// aws-sdk-sqs client for a moto or fauxqs peer: region us-east-1, static credentials test/test.
pub(crate) async fn sqs_client(peer: &Peer) -> aws_sdk_sqs::Client {
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&peer.endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test", "test", None, None, "static",
        ))
        .load()
        .await;
    aws_sdk_sqs::Client::new(&conf)
}

/// Creates queue `name` with `attributes` (e.g. `("VisibilityTimeout", "5")`) on moto or fauxqs
/// (through aws-sdk-sqs, so it works on both) and returns its QueueUrl.
pub(crate) async fn sqs_create_queue(
    peer: &Peer,
    name: &str,
    attributes: &[(&str, &str)],
) -> String {
    let client = sqs_client(peer).await;
    let mut req = client.create_queue().queue_name(name);
    for (k, v) in attributes {
        req = req.attributes(aws_sdk_sqs::types::QueueAttributeName::from(*k), *v);
    }
    let out = req.send().await.unwrap_or_else(|e| {
        panic!(
            "CreateQueue {name} on {}: {:?}",
            peer.name,
            e.into_service_error()
        )
    });
    out.queue_url()
        .unwrap_or_else(|| panic!("CreateQueue {name}: no QueueUrl"))
        .to_string()
}

/// The QueueArn of a queue (moto: account 123456789012, fauxqs: 000000000000).
pub(crate) async fn sqs_queue_arn(peer: &Peer, queue_url: &str) -> String {
    use aws_sdk_sqs::types::QueueAttributeName;
    let out = sqs_client(peer)
        .await
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "GetQueueAttributes {queue_url}: {:?}",
                e.into_service_error()
            )
        });
    out.attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .unwrap_or_else(|| panic!("no QueueArn for {queue_url}"))
        .clone()
}

/// Creates `<name>-dlq` and `name` with a RedrivePolicy to it after `max_receive_count` receives
/// and the given visibility timeout; returns `(queue_url, dlq_url)`. Works on moto and fauxqs.
pub(crate) async fn sqs_create_queue_with_dlq(
    peer: &Peer,
    name: &str,
    visibility_timeout_secs: u32,
    max_receive_count: u32,
) -> (String, String) {
    let dlq_url = sqs_create_queue(peer, &format!("{name}-dlq"), &[]).await;
    let dlq_arn = sqs_queue_arn(peer, &dlq_url).await;
    let redrive =
        json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count.to_string() })
            .to_string();
    let vt = visibility_timeout_secs.to_string();
    let url = sqs_create_queue(
        peer,
        name,
        &[("VisibilityTimeout", &vt), ("RedrivePolicy", &redrive)],
    )
    .await;
    (url, dlq_url)
}

// ------------------------------------------------------------------------------------------------
// commercetools mock

/// A client-credentials access token from the mock's auth server (`POST /oauth/token`, HTTP Basic;
/// the mock reads `scope` from the query string, e.g. `manage_project:my-project`).
pub(crate) async fn ctmock_token(
    peer: &Peer,
    client_id: &str,
    secret: &str,
    scope: &str,
) -> String {
    let url = format!("{}/oauth/token", peer.endpoint);
    let resp = http()
        .post(&url)
        .basic_auth(client_id, Some(secret))
        .query(&[("grant_type", "client_credentials"), ("scope", scope)])
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "POST {url} -> {status}: {v}");
    v["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access_token in {v}"))
        .to_string()
}

/// Path helper for tests that need it: the repo root (CARGO_MANIFEST_DIR).
pub(crate) fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// ------------------------------------------------------------------------------------------------
// Network faults

/// A loopback port nothing listens on (yet): a peer that is not there, refusing connections.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local addr")
        .port()
}

/// Relays every connection to `127.0.0.1:listen` on to `target` (`host:port`) until the
/// returned task is aborted; then the relayed connections are dropped too. A peer reached
/// through it can appear late, or go away and come back on the same address.
pub(crate) async fn relay(listen: u16, target: String) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", listen))
        .await
        .unwrap_or_else(|e| panic!("relay cannot bind {listen}: {e}"));
    tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            conns.spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

/// Messages on an SQS queue, visible or in flight.
pub(crate) async fn sqs_queue_depth(peer: &Peer, queue_url: &str) -> usize {
    let attrs = sqs_count_attributes(peer, queue_url).await;
    attrs
        .attributes()
        .map(|a| a.values().filter_map(|v| v.parse::<usize>().ok()).sum())
        .unwrap_or(0)
}

/// (visible, in flight) as the queue counts them; panics when the queue leaves one out.
pub(crate) async fn sqs_queue_counts(peer: &Peer, queue_url: &str) -> (u64, u64) {
    use aws_sdk_sqs::types::QueueAttributeName;
    let out = sqs_count_attributes(peer, queue_url).await;
    let get = |name: QueueAttributeName| -> u64 {
        out.attributes()
            .and_then(|a| a.get(&name))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name:?} in {out:?}"))
    };
    (
        get(QueueAttributeName::ApproximateNumberOfMessages),
        get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    )
}

/// GetQueueAttributes for the two message counts (visible, not visible).
async fn sqs_count_attributes(
    peer: &Peer,
    queue_url: &str,
) -> aws_sdk_sqs::operation::get_queue_attributes::GetQueueAttributesOutput {
    use aws_sdk_sqs::types::QueueAttributeName;
    sqs_client(peer)
        .await
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GetQueueAttributes: {:?}", e.into_service_error()))
}
