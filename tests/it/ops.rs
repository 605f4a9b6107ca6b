//! Running payrules as operators do: the HTTP port (`/metrics`, `/healthz`, `/readyz`),
//! `payrules health`, and JSON logs — against `payrules run` as a process, with fauxqs (SQS)
//! and PostgreSQL reached through TCP relays this test opens late, so the worker first meets a
//! store and a broker that are not there.
//!
//! Peers are started on first use and never skipped: a missing peer fails the test.

use crate::support::peers;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::AsyncReadExt;

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";

async fn fresh_database() -> String {
    // Unique across runs too: a process id comes back in a later run, and a database of an
    // earlier run is not always dropped.
    let name = peers::unique_name("payrules_ops").replace('-', "_");
    let admin = sqlx::PgPool::connect(PG_ADMIN)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {PG_ADMIN}: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .expect("create database");
    name
}

/// GET `url`: status and body; `None` when nothing answers.
async fn get(url: &str) -> Option<(u16, String)> {
    let resp = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.unwrap_or_default()))
}

/// Polls until `check` accepts `/readyz`'s answer; the last answer either way.
async fn readyz_until(base: &str, check: impl Fn(u16, &Value) -> bool) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = (0, Value::Null);
    while Instant::now() < deadline {
        if let Some((status, body)) = get(&format!("{base}/readyz")).await {
            let json: Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("/readyz body is not JSON ({e}): {body}"));
            if check(status, &json) {
                return (status, json);
            }
            last = (status, json);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("/readyz never reached the expected state; last: {last:?}");
}

/// Checks Prometheus text format line by line; returns every sample `name{labels}` → value.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap_or("");
            assert!(
                kind == "HELP" || kind == "TYPE",
                "unknown comment line: {line}"
            );
            let name = parts.next().unwrap_or("");
            assert!(name.starts_with("payrules_"), "foreign metric: {line}");
            if kind == "TYPE" {
                let t = parts.next().unwrap_or("");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                    "bad TYPE: {line}"
                );
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("sample without a value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value is not a number: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unclosed labels: {line}");
        }
        samples.insert(series.to_string(), value);
    }
    samples
}

fn sample(samples: &BTreeMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| {
            series.split('{').next() == Some(name)
                && labels
                    .iter()
                    .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| *v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_port_reports_readiness_metrics_and_lag_and_logs_are_json() {
    let fauxqs = peers::shared_fauxqs().await;
    let queue = peers::sqs_create_queue(fauxqs, &peers::unique_name("ops"), &[]).await;
    let (sqs_port, http_port) = (peers::free_port(), peers::free_port());
    let base = format!("http://127.0.0.1:{http_port}");

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_payrules"))
        .arg("run")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PAYRULES_SOURCE", "sqs")
        // A dry run reads a queue of its own, never the real workers' (which it must not
        // even touch); fauxqs names queues by its own address; the requests go through the
        // relay.
        .env(
            "PAYRULES_SQS_QUEUE_URL",
            format!("{queue}-of-the-real-workers"),
        )
        .env("PAYRULES_DRY_RUN_QUEUE_URL", &queue)
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{sqs_port}"))
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        // A dry run never opens the configured store (a scratch ledger instead).
        .env(
            "PAYRULES_STATE_URL",
            "postgres://postgres@127.0.0.1:1/never-opened",
        )
        .env("PAYRULES_HTTP_ADDR", format!("127.0.0.1:{http_port}"))
        .env("PAYRULES_DRY_RUN", "true")
        .env("PAYRULES_PROGRESS_INTERVAL", "1s")
        .env("PAYRULES_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn payrules run");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_task = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s).await;
        s
    });
    let err_task = tokio::spawn(async move {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s).await;
        s
    });

    // The broker is not reachable: not ready, the source named; alive all the same. The
    // dry run's scratch store is ready at once.
    let (status, body) = readyz_until(&base, |_, b| {
        b["source"]["state"] == "unavailable" && b["ready"] == false
    })
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["store"]["state"], "ready", "{body}");
    let (code, live) = get(&format!("{base}/healthz")).await.expect("/healthz");
    assert_eq!(code, 200, "{live}");
    let health = std::process::Command::new(env!("CARGO_BIN_EXE_payrules"))
        .args(["health", &format!("{base}/healthz")])
        .output()
        .expect("payrules health");
    assert!(health.status.success(), "{health:?}");

    assert!(
        body["source"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("ReceiveMessage")),
        "{body}"
    );

    // The broker comes up: ready.
    let sqs = peers::relay(sqs_port, format!("127.0.0.1:{}", fauxqs.port)).await;
    let (status, body) = readyz_until(&base, |s, _| s == 200).await;
    assert_eq!(body["ready"], true, "{body}");
    assert_eq!(status, 200);

    let (_, before) = get(&format!("{base}/metrics")).await.expect("/metrics");
    let before = parse_prometheus(&before);
    assert_eq!(
        sample(
            &before,
            "payrules_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert_eq!(sample(&before, "payrules_messages_total", &[]), 0.0);

    // Traffic: a payment authorized, then its order — one release.
    let client = peers::sqs_client(fauxqs).await;
    let scenario = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/scenarios/01-authorized-then-order.jsonl");
    let lines: Vec<String> = std::fs::read_to_string(&scenario)
        .expect("scenario 01")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    for line in &lines {
        client
            .send_message()
            .queue_url(&queue)
            .message_body(line)
            .send()
            .await
            .expect("SendMessage");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let after = loop {
        let (_, text) = get(&format!("{base}/metrics")).await.expect("/metrics");
        let samples = parse_prometheus(&text);
        let settled = sample(&samples, "payrules_messages_total", &[("source", "sqs")]);
        if settled >= lines.len() as f64
            && sample(&samples, "payrules_actions_total", &[("outcome", "done")]) >= 1.0
        {
            break samples;
        }
        assert!(Instant::now() < deadline, "metrics did not move:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        sample(
            &after,
            "payrules_actions_total",
            &[("action", "release_order"), ("outcome", "done")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            "payrules_messages_total",
            &[("source", "sqs"), ("outcome", "acked")]
        ),
        lines.len() as f64
    );
    // The lag: every message's createdAt is in the past, so each was observed.
    assert_eq!(
        sample(&after, "payrules_message_age_seconds_count", &[]),
        lines.len() as f64
    );
    assert!(sample(&after, "payrules_message_age_seconds_sum", &[]) > 0.0);
    assert!(
        sample(
            &after,
            "payrules_effect_duration_seconds_count",
            &[("effect", "release_order")]
        ) >= 1.0
    );
    assert_eq!(sample(&after, "payrules_in_flight", &[]), 0.0);
    assert_eq!(sample(&after, "payrules_store_ready", &[]), 1.0);
    assert_eq!(
        sample(&after, "payrules_source_connected", &[("source", "sqs")]),
        1.0
    );
    // Let one progress line pass.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let pid = child.id().expect("pid");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill -TERM");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("payrules stops after SIGTERM")
        .expect("wait");
    sqs.abort();
    let out = out_task.await.expect("stdout task");
    let err = err_task.await.expect("stderr task");
    assert!(status.success(), "exit {status:?}");
    assert_eq!(out.lines().count(), 1, "one planned release: {out}");

    // Logs: JSON on every line, no colours, the message's origin on lines about it, progress
    // and the summary as structured lines.
    assert!(!err.contains(&0x1b), "ANSI escape in piped logs");
    let err = String::from_utf8(err).expect("UTF-8 logs");
    let mut messages = Vec::new();
    for line in err.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        messages.push(v);
    }
    let find = |msg: &str| -> Vec<&Value> {
        messages
            .iter()
            .filter(|v| v["fields"]["message"] == msg || v["message"] == msg)
            .collect()
    };
    let done = find("action done");
    assert_eq!(done.len(), 1, "{err}");
    assert!(
        done[0]["span"]["origin"]
            .as_str()
            .is_some_and(|o| !o.is_empty()),
        "no origin on {}",
        done[0]
    );
    assert_eq!(done[0]["action"], "release_order");
    assert!(!find("progress").is_empty(), "no progress line: {err}");
    let stopped = find("worker stopped");
    assert_eq!(stopped.len(), 1, "{err}");
    assert_eq!(stopped[0]["acked"], lines.len() as u64, "{}", stopped[0]);
    assert_eq!(stopped[0]["actions"], 1, "{}", stopped[0]);
    assert_eq!(find("source connected").len(), 1, "{err}");
}

/// A worker whose state store is down does not lease messages it cannot process: the source
/// is not even connected until the store is open, and `/readyz` says what it waits for.
#[tokio::test]
async fn the_store_is_opened_before_the_source_connects() {
    let fauxqs = peers::shared_fauxqs().await;
    let queue = peers::sqs_create_queue(fauxqs, &peers::unique_name("ops-order"), &[]).await;
    let database = fresh_database().await;
    let (sqs_port, pg_port, http_port) =
        (peers::free_port(), peers::free_port(), peers::free_port());
    let base = format!("http://127.0.0.1:{http_port}");
    let _child = tokio::process::Command::new(env!("CARGO_BIN_EXE_payrules"))
        .arg("run")
        .env_clear()
        .env("PAYRULES_SOURCE", "sqs")
        .env("PAYRULES_SQS_QUEUE_URL", &queue)
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{sqs_port}"))
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env(
            "PAYRULES_STATE_URL",
            format!("postgres://postgres@127.0.0.1:{pg_port}/{database}"),
        )
        .env("PAYRULES_HTTP_ADDR", format!("127.0.0.1:{http_port}"))
        // A real worker (no message is sent, so nothing is ever called).
        .env("CTP_PROJECT_KEY", "p")
        .env("CTP_CLIENT_ID", "id")
        .env("CTP_CLIENT_SECRET", "secret")
        .env("CTP_AUTH_URL", "http://127.0.0.1:1")
        .env("CTP_API_URL", "http://127.0.0.1:1")
        .env("CTP_CHECKOUT_URL", "http://127.0.0.1:1")
        .env("PAYRULES_RELEASE_WEBHOOK_URL", "http://127.0.0.1:1/release")
        .env("PAYRULES_RELEASE_WEBHOOK_SECRET", "whsec_aHVudGVyMg==")
        .env("PAYRULES_CANCEL_ENABLED", "false")
        .env("PAYRULES_REFUND_ORPHANED_ENABLED", "false")
        .env("PAYRULES_CANCEL_ON_ORDER_CANCELLED", "false")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn payrules run");
    // The store cannot be reached: readiness names it, and the source waits to be connected.
    let (status, body) = readyz_until(&base, |_, b| b["store"]["state"] == "unavailable").await;
    assert_eq!(status, 503, "{body}");
    for _ in 0..10 {
        let (_, body) = readyz_until(&base, |_, _| true).await;
        assert_eq!(
            body["source"]["state"], "starting",
            "the source must not connect before the store is open: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The store comes up: only now does the source try its broker (still unreachable).
    let pg = peers::relay(pg_port, "127.0.0.1:5432".into()).await;
    let (status, body) = readyz_until(&base, |_, b| {
        b["store"]["state"] == "ready" && b["source"]["state"] == "unavailable"
    })
    .await;
    assert_eq!(status, 503, "{body}");
    let sqs = peers::relay(sqs_port, format!("127.0.0.1:{}", fauxqs.port)).await;
    let (status, body) = readyz_until(&base, |s, _| s == 200).await;
    assert_eq!(body["ready"], true, "{body}");
    assert_eq!(status, 200);
    pg.abort();
    sqs.abort();
}

#[tokio::test]
async fn health_fails_when_nothing_answers() {
    let port = peers::free_port();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_payrules"))
        .args(["health", &format!("http://127.0.0.1:{port}/healthz")])
        .output()
        .expect("payrules health");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("payrules health") && err.contains(&port.to_string()),
        "{err}"
    );
}

/// Every configuration `run` rejects, `check-config` and `reconcile` reject too, naming the
/// same place, and none prints a password or secret.
#[test]
fn check_config_rejects_what_run_rejects() {
    let base: &[(&str, &str)] = &[
        ("PAYRULES_FILE_PATH", "-"),
        ("PAYRULES_STATE_URL", "memory:"),
    ];
    let ctp: &[(&str, &str)] = &[
        ("CTP_PROJECT_KEY", "shop"),
        ("CTP_CLIENT_ID", "id"),
        ("CTP_CLIENT_SECRET", "ctp-hunter2"),
        (
            "CTP_AUTH_URL",
            "https://auth.europe-west1.gcp.commercetools.com",
        ),
        (
            "CTP_API_URL",
            "https://api.europe-west1.gcp.commercetools.com",
        ),
    ];
    let hook: &[(&str, &str)] = &[
        (
            "PAYRULES_RELEASE_WEBHOOK_URL",
            "https://fulfil.example.com/h",
        ),
        ("PAYRULES_RELEASE_WEBHOOK_SECRET", "whsec_aHVudGVyMg=="),
    ];
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "cancels without the commercetools client",
            [base, hook].concat(),
            "PAYRULES_CANCEL_ENABLED",
        ),
        (
            "releases with nowhere to go",
            [base, ctp].concat(),
            "PAYRULES_RELEASE_ENABLED",
        ),
        (
            "an http webhook to another host",
            [
                base,
                ctp,
                &[
                    (
                        "PAYRULES_RELEASE_WEBHOOK_URL",
                        "http://fulfil.example.com/h",
                    ),
                    ("PAYRULES_RELEASE_WEBHOOK_SECRET", "plain-hunter2"),
                ],
            ]
            .concat(),
            "PAYRULES_RELEASE_WEBHOOK_URL",
        ),
        (
            "a whsec_ secret that is not base64",
            [
                base,
                ctp,
                &[
                    (
                        "PAYRULES_RELEASE_WEBHOOK_URL",
                        "https://fulfil.example.com/h",
                    ),
                    ("PAYRULES_RELEASE_WEBHOOK_SECRET", "whsec_hunter2!!"),
                ],
            ]
            .concat(),
            "PAYRULES_RELEASE_WEBHOOK_SECRET",
        ),
        (
            "a secret set twice",
            [base, ctp, hook, &[("CTP_CLIENT_SECRET_FILE", "/dev/null")]].concat(),
            "CTP_CLIENT_SECRET_FILE",
        ),
        (
            "a bad HTTP address",
            [base, ctp, hook, &[("PAYRULES_HTTP_ADDR", "everywhere")]].concat(),
            "PAYRULES_HTTP_ADDR",
        ),
        (
            "a state URL that is not one",
            [
                &[("PAYRULES_FILE_PATH", "-")][..],
                ctp,
                hook,
                &[("PAYRULES_STATE_URL", "mysql://root:hunter2@db/x")],
            ]
            .concat(),
            "PAYRULES_STATE_URL",
        ),
        (
            "a broker worker without the commercetools client",
            [
                hook,
                &[
                    ("PAYRULES_SOURCE", "sqs"),
                    (
                        "PAYRULES_SQS_QUEUE_URL",
                        "https://sqs.eu-west-1.amazonaws.com/1/q",
                    ),
                    ("PAYRULES_CANCEL_ENABLED", "false"),
                    ("PAYRULES_REFUND_ORPHANED_ENABLED", "false"),
                    ("PAYRULES_CANCEL_ON_ORDER_CANCELLED", "false"),
                ],
            ]
            .concat(),
            "source (PAYRULES_SOURCE)",
        ),
        (
            "a claim lease under 3 s",
            [
                &[("PAYRULES_FILE_PATH", "-")][..],
                ctp,
                hook,
                &[
                    (
                        "PAYRULES_STATE_URL",
                        "postgres://payrules:hunter2@db/x?password=hunter2",
                    ),
                    ("PAYRULES_CLAIM_LEASE", "300ms"),
                ],
            ]
            .concat(),
            "PAYRULES_CLAIM_LEASE",
        ),
        (
            "a grace period under 30 s with the cancel rule on",
            [base, ctp, hook, &[("PAYRULES_GRACE_PERIOD", "2s")]].concat(),
            "PAYRULES_GRACE_PERIOD",
        ),
        (
            "the short-grace escape does not cover the claim lease",
            [
                base,
                ctp,
                hook,
                &[
                    ("PAYRULES_GRACE_PERIOD", "2s"),
                    ("PAYRULES_ALLOW_SHORT_GRACE_PERIOD", "true"),
                    ("PAYRULES_CLAIM_LEASE", "2s"),
                ],
            ]
            .concat(),
            "PAYRULES_CLAIM_LEASE",
        ),
        (
            "an http:// commercetools API to another host",
            [
                base,
                hook,
                &[
                    ("CTP_PROJECT_KEY", "shop"),
                    ("CTP_CLIENT_ID", "id"),
                    ("CTP_CLIENT_SECRET", "ctp-hunter2"),
                    ("CTP_AUTH_URL", "https://auth.example.com"),
                    ("CTP_API_URL", "http://api.example.com"),
                    ("CTP_CHECKOUT_URL", "https://checkout.example.com"),
                ],
            ]
            .concat(),
            "CTP_API_URL",
        ),
        (
            "an http:// auth host that is not loopback",
            [
                base,
                hook,
                &[
                    ("CTP_PROJECT_KEY", "shop"),
                    ("CTP_CLIENT_ID", "id"),
                    ("CTP_CLIENT_SECRET", "ctp-hunter2"),
                    ("CTP_AUTH_URL", "http://10.0.0.8:8080"),
                    ("CTP_API_URL", "https://api.example.com"),
                    ("CTP_CHECKOUT_URL", "https://checkout.example.com"),
                ],
            ]
            .concat(),
            "CTP_AUTH_URL",
        ),
        (
            "an http:// Checkout host that is not loopback",
            [
                base,
                hook,
                &[
                    ("CTP_PROJECT_KEY", "shop"),
                    ("CTP_CLIENT_ID", "id"),
                    ("CTP_CLIENT_SECRET", "ctp-hunter2"),
                    ("CTP_AUTH_URL", "https://auth.example.com"),
                    ("CTP_API_URL", "https://api.example.com"),
                    ("CTP_CHECKOUT_URL", "http://checkout.example.com"),
                ],
            ]
            .concat(),
            "CTP_CHECKOUT_URL",
        ),
        (
            "Checkout outside its regions",
            [
                base,
                hook,
                &[
                    ("CTP_PROJECT_KEY", "shop"),
                    ("CTP_CLIENT_ID", "id"),
                    ("CTP_CLIENT_SECRET", "ctp-hunter2"),
                    ("CTP_AUTH_URL", "https://auth.example.com"),
                    ("CTP_API_URL", "https://api.example.com"),
                ],
            ]
            .concat(),
            "CTP_CHECKOUT_URL",
        ),
    ];
    let bin = env!("CARGO_BIN_EXE_payrules");
    for (name, env, place) in &cases {
        for command in [
            &["run"][..],
            &["check-config"],
            &["reconcile", "--since", "1h"],
        ] {
            let out = std::process::Command::new(bin)
                .args(command)
                .env_clear()
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .output()
                .expect("payrules");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let command = command.join(" ");
            assert_eq!(out.status.code(), Some(2), "{command} with {name}: {text}");
            assert!(
                text.contains(place),
                "{command} with {name} names {place}: {text}"
            );
            assert!(
                !text.contains("hunter2") && !text.contains("aHVudGVyMg"),
                "{command} with {name} printed a secret: {text}"
            );
        }
    }
    // And a configuration both accept: check-config says so and shows where values came from.
    let good = std::process::Command::new(bin)
        .arg("check-config")
        .env_clear()
        .envs([base, ctp, hook].concat())
        .output()
        .expect("payrules");
    let text = String::from_utf8_lossy(&good.stdout);
    assert!(good.status.success(), "{text}");
    assert!(
        text.contains("commercetools.client_secret = \"****\"  # env CTP_CLIENT_SECRET"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}

/// `check-config --connect` tries the store, the queue, a token with its scopes and the
/// Checkout host; each failure is named and turns the exit status to 1. The auth server is a
/// stub: commercetools-mock answers every token request with the scope `todo`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_connect_tries_each_dependency() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let fauxqs = peers::shared_fauxqs().await;
    let queue = peers::sqs_create_queue(fauxqs, &peers::unique_name("connect"), &[]).await;
    let database = fresh_database().await;
    let auth = |scope: &'static str| async move {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/oauth/token"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "access_token": "t0ken", "token_type": "Bearer", "expires_in": 172800, "scope": scope
            })))
            .expect(1)
            .mount(&server)
            .await;
        server
    };
    let run_with = |queue: String, auth: String, extra: &[(&str, &str)]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_payrules"))
            .args(["check-config", "--connect"])
            .env_clear()
            .envs(extra.iter().copied())
            .env("PAYRULES_SOURCE", "sqs")
            // A dry run reads a queue of its own: that is the one tried.
            .env(
                "PAYRULES_SQS_QUEUE_URL",
                format!("{queue}-of-the-real-workers"),
            )
            .env("PAYRULES_DRY_RUN_QUEUE_URL", queue)
            .env("AWS_ENDPOINT_URL", &fauxqs.endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env(
                "PAYRULES_STATE_URL",
                format!("postgres://postgres@127.0.0.1:5432/{database}"),
            )
            .env("PAYRULES_DRY_RUN", "true")
            .env("CTP_PROJECT_KEY", "connect-shop")
            .env("CTP_CLIENT_ID", "payrules")
            .env("CTP_CLIENT_SECRET", "connect-secret")
            .env("CTP_AUTH_URL", &auth)
            .env("CTP_API_URL", &auth)
            .env("CTP_CHECKOUT_URL", &auth)
            .output()
            .expect("payrules check-config --connect");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let run = |queue: String, auth: String| run_with(queue, auth, &[]);
    let good = auth("manage_project:connect-shop").await;
    let (code, err) = run(queue.clone(), good.uri());
    assert_eq!(code, Some(0), "{err}");
    for what in [
        "state store: ok",
        "source: ok",
        "commercetools token: ok",
        "Checkout host: ok",
    ] {
        assert!(err.contains(what), "{what}: {err}");
    }
    assert!(
        !err.contains("connect-secret") && !err.contains("t0ken"),
        "{err}"
    );

    // Too few scopes for the enabled cancel rules, and a queue that does not exist.
    let narrow = auth("view_payments:connect-shop manage_orders:connect-shop").await;
    let (code, err) = run(format!("{queue}-missing"), narrow.uri());
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("source: FAILED"), "{err}");
    assert!(
        err.contains("commercetools token: FAILED: the token lacks scopes the enabled rules need: manage_checkout_payment_intents:connect-shop (granted"),
        "{err}"
    );
    assert!(err.contains("state store: ok"), "{err}");

    // A release by transitionState looks the State up: view_states is needed too.
    let no_states = auth("manage_payments:connect-shop manage_orders:connect-shop manage_checkout_payment_intents:connect-shop").await;
    let transition = [
        ("PAYRULES_RELEASE_ORDER_UPDATE", "transitionState"),
        ("PAYRULES_RELEASE_STATE_KEY", "released"),
    ];
    let (code, err) = run_with(queue.clone(), no_states.uri(), &transition);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(
            "the token lacks scopes the enabled rules need: view_states:connect-shop (granted"
        ),
        "{err}"
    );
}

/// A database password in the state URL (as user info and as `?password=`) and a webhook URL
/// whose path and query are its credential (Slack style) are never shown by `check-config`:
/// the password is masked, the webhook shows only its scheme, host and port.
#[test]
fn check_config_never_prints_a_url_secret() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_payrules"))
        .arg("check-config")
        .env_clear()
        .env("PAYRULES_FILE_PATH", "-")
        .env(
            "PAYRULES_STATE_URL",
            "postgres://payrules:hunter2@db:5432/payrules?sslmode=require&password=hunter2",
        )
        .env(
            "PAYRULES_RELEASE_WEBHOOK_URL",
            "https://hooks.example.com/services/T000/B000/XXXXSECRET?token=abc",
        )
        .env("PAYRULES_RELEASE_WEBHOOK_SECRET", "whsec_aHVudGVyMg==")
        .env("PAYRULES_CANCEL_ENABLED", "false")
        .env("PAYRULES_REFUND_ORPHANED_ENABLED", "false")
        .env("PAYRULES_CANCEL_ON_ORDER_CANCELLED", "false")
        .stdin(Stdio::null())
        .output()
        .expect("payrules check-config");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    for secret in ["hunter2", "aHVudGVyMg", "T000", "XXXXSECRET", "token=abc"] {
        assert!(
            !text.contains(secret),
            "check-config printed {secret}: {text}"
        );
    }
    assert!(
        text.contains(
            "state.url = \"postgres://payrules:****@db:5432/payrules?sslmode=require&password=****\"  # env PAYRULES_STATE_URL"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "release.webhook_url = \"https://hooks.example.com/****\"  # env PAYRULES_RELEASE_WEBHOOK_URL"
        ),
        "{text}"
    );
}

/// A worker whose PostgreSQL cannot be reached reports the store unavailable on the
/// unauthenticated `/readyz` and in its ERROR log, naming the store without its password
/// (given both as user info and as `?password=`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_and_logs_never_show_the_state_url_password() {
    let (pg_port, http_port, hook_port) =
        (peers::free_port(), peers::free_port(), peers::free_port());
    let base = format!("http://127.0.0.1:{http_port}");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_payrules"))
        .arg("run")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PAYRULES_FILE_PATH", "-")
        .env(
            "PAYRULES_STATE_URL",
            format!("postgres://payrules:hunter2@127.0.0.1:{pg_port}/payrules?password=hunter2"),
        )
        .env(
            "PAYRULES_RELEASE_WEBHOOK_URL",
            format!("http://127.0.0.1:{hook_port}/services/T000/B000/XXXXSECRET?token=abc"),
        )
        .env("PAYRULES_RELEASE_WEBHOOK_SECRET", "whsec_aHVudGVyMg==")
        .env("PAYRULES_CANCEL_ENABLED", "false")
        .env("PAYRULES_REFUND_ORPHANED_ENABLED", "false")
        .env("PAYRULES_CANCEL_ON_ORDER_CANCELLED", "false")
        .env("PAYRULES_HTTP_ADDR", format!("127.0.0.1:{http_port}"))
        .env("PAYRULES_LOG_FORMAT", "json")
        .env("RUST_LOG", "debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn payrules run");
    let mut stderr = child.stderr.take().expect("stderr");
    let err_task = tokio::spawn(async move {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s).await;
        s
    });
    let (status, body) = readyz_until(&base, |_, b| b["store"]["state"] == "unavailable").await;
    assert_eq!(status, 503, "{body}");
    let detail = body["store"]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&format!(
            "postgres://payrules:****@127.0.0.1:{pg_port}/payrules?password=****"
        )),
        "{body}"
    );
    let (_, raw) = get(&format!("{base}/readyz")).await.expect("/readyz");
    assert!(
        !raw.contains("hunter2"),
        "/readyz shows the password: {raw}"
    );

    let pid = child.id().expect("pid");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill -TERM");
    assert!(killed.success());
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("payrules stops after SIGTERM");
    let err = String::from_utf8(err_task.await.expect("stderr task")).expect("UTF-8 logs");
    assert!(
        err.contains("state store unavailable"),
        "no store error logged: {err}"
    );
    for secret in ["hunter2", "aHVudGVyMg", "T000", "XXXXSECRET", "token=abc"] {
        assert!(!err.contains(secret), "the log shows {secret}: {err}");
    }
}
