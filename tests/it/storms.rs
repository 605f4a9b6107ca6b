//! Fault storms, with `payrules run` as a process against fauxqs (SQS) and commercetools-mock:
//!
//! - commercetools answers 503, or 429 with and without `Retry-After`, for a while, then
//!   recovers: requests stay paced (no tight loop), messages are retried, never parked, and
//!   every release happens once after recovery;
//! - the webhook receiver refuses connections, then answers 500, then recovers: the message
//!   is not acked before the release is delivered, and it is delivered once;
//! - the broker goes away mid-run and comes back on the same address: the source logs the
//!   change of state once each way (not per attempt) and resumes.
//!
//! The storms last tens of seconds rather than minutes: retry delays are capped (5 minutes for
//! messages, seconds for reads), so a longer storm only repeats the same paced pattern.
//! Peers are started on first use and never skipped: a missing peer fails the test.

use crate::support::peers;

use crate::support::ctadmin;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use ctadmin::Admin;

/// How commercetools misbehaves during a storm.
#[derive(Clone, Copy, Debug)]
enum Storm {
    Unavailable,
    Throttled,
    ThrottledRetryAfter,
}

/// A proxy in front of commercetools-mock: during the storm every request gets the storm's
/// answer; after, requests are forwarded. Counts requests per second of the storm.
struct Proxy {
    storming: Arc<AtomicBool>,
    storm_requests: Arc<Mutex<BTreeMap<u64, usize>>>,
    started: Instant,
    url: String,
}

async fn proxy(target: String, storm: Storm) -> Proxy {
    let storming = Arc::new(AtomicBool::new(true));
    let storm_requests = Arc::new(Mutex::new(BTreeMap::new()));
    let started = Instant::now();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let http = reqwest::Client::new();
    let (s, counts) = (storming.clone(), storm_requests.clone());
    let handler = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let (s, counts, http, target) = (s.clone(), counts.clone(), http.clone(), target.clone());
        async move {
            if s.load(Ordering::SeqCst) {
                *counts
                    .lock()
                    .unwrap()
                    .entry(started.elapsed().as_secs())
                    .or_default() += 1;
                return match storm {
                    Storm::Unavailable => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        axum::Json(json!({"statusCode": 503, "message": "Service Unavailable"})),
                    )
                        .into_response(),
                    Storm::Throttled => (
                        StatusCode::TOO_MANY_REQUESTS,
                        axum::Json(json!({"statusCode": 429, "message": "Too Many Requests"})),
                    )
                        .into_response(),
                    Storm::ThrottledRetryAfter => (
                        StatusCode::TOO_MANY_REQUESTS,
                        [("retry-after", "3")],
                        axum::Json(json!({"statusCode": 429, "message": "Too Many Requests"})),
                    )
                        .into_response(),
                };
            }
            let mut req = http.request(
                reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap(),
                format!(
                    "{target}{}",
                    uri.path_and_query().map_or("/", |p| p.as_str())
                ),
            );
            for (k, v) in &headers {
                if k != "host" && k != "content-length" {
                    req = req.header(k.as_str(), v.as_bytes());
                }
            }
            match req.body(body.to_vec()).send().await {
                Ok(resp) => {
                    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
                    let ct = resp
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("application/json")
                        .to_string();
                    let bytes = resp.bytes().await.unwrap_or_default();
                    (status, [("content-type", ct)], bytes.to_vec()).into_response()
                }
                Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
            }
        }
    };
    let app = axum::Router::new().fallback(handler);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Proxy {
        storming,
        storm_requests,
        started,
        url,
    }
}

/// A payment authorized and an order covering it, in the mock; the OrderCreated message.
async fn paid_order(admin: &Admin, project: &str, number: &str) -> (String, String) {
    let payment = admin.payment(4200, &[("Authorization", "Success")]).await;
    let order = admin.order_for(&payment, number).await;
    let order_id = order["id"].as_str().unwrap().to_string();
    let now = chrono::Utc::now().to_rfc3339();
    let message = json!({
        "notificationType": "Message", "projectKey": project, "id": format!("m-{order_id}"),
        "version": 1, "sequenceNumber": 1, "resource": {"typeId": "order", "id": order_id},
        "resourceVersion": 1, "type": "OrderCreated", "order": order,
        "createdAt": now, "lastModifiedAt": now,
    });
    (order_id, message.to_string())
}

async fn send(fauxqs: &peers::Peer, queue: &str, body: &str) {
    peers::sqs_client(fauxqs)
        .await
        .send_message()
        .queue_url(queue)
        .message_body(body)
        .send()
        .await
        .expect("SendMessage");
}

struct Worker {
    child: tokio::process::Child,
    stderr: JoinHandle<String>,
}

fn start_worker(env: &[(&str, String)]) -> Worker {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_payrules"));
    cmd.arg("run")
        .env_clear()
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("PAYRULES_SOURCE", "sqs")
        .env("PAYRULES_SQS_VISIBILITY_TIMEOUT", "5s")
        .env("PAYRULES_STATE_URL", "memory:")
        .env("PAYRULES_CANCEL_ENABLED", "false")
        .env("PAYRULES_REFUND_ORPHANED_ENABLED", "false")
        .env("PAYRULES_CANCEL_ON_ORDER_CANCELLED", "false")
        .env("PAYRULES_RELEASE_WEBHOOK_SECRET", "whsec_c3Rvcm1zLXRlc3Q=")
        .env("PAYRULES_RETRY_DELAY", "1s")
        .env("PAYRULES_MAX_DELIVERIES", "3")
        .env("PAYRULES_HTTP_TIMEOUT", "2s")
        .env("PAYRULES_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn payrules run");
    let mut err = child.stderr.take().unwrap();
    let stderr = tokio::spawn(async move {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s).await;
        s
    });
    Worker { child, stderr }
}

impl Worker {
    async fn stop(mut self) -> String {
        let pid = self.child.id().unwrap().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let _ = tokio::time::timeout(Duration::from_secs(40), self.child.wait()).await;
        let _ = self.child.start_kill();
        self.stderr.await.unwrap_or_default()
    }
}

fn lines_with<'a>(log: &'a str, message: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|l| {
            serde_json::from_str::<Value>(l)
                .map(|v| v["message"] == message || v["fields"]["message"] == message)
                .unwrap_or(false)
        })
        .collect()
}

async fn commercetools_storm(storm: Storm) {
    const ORDERS: usize = 3;
    const STORM: Duration = Duration::from_secs(20);
    let project = format!("payrules-storm-{}", format!("{storm:?}").to_lowercase());
    let fauxqs = peers::shared_fauxqs().await;
    let mock = peers::shared_commercetools_mock().await;
    let admin = Admin::new(mock, &project).await;
    let queue = peers::sqs_create_queue(fauxqs, &peers::unique_name("storm"), &[]).await;
    let proxy = proxy(mock.endpoint.clone(), storm).await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&receiver)
        .await;
    let worker = start_worker(&[
        ("PAYRULES_SQS_QUEUE_URL", queue.clone()),
        ("AWS_ENDPOINT_URL", fauxqs.endpoint.clone()),
        ("CTP_PROJECT_KEY", project.clone()),
        ("CTP_CLIENT_ID", "storm".into()),
        ("CTP_CLIENT_SECRET", "storm-secret".into()),
        ("CTP_AUTH_URL", proxy.url.clone()),
        ("CTP_API_URL", proxy.url.clone()),
        ("CTP_CHECKOUT_URL", "http://127.0.0.1:9".into()),
        (
            "PAYRULES_RELEASE_WEBHOOK_URL",
            format!("{}/hook", receiver.uri()),
        ),
    ]);
    let mut orders = Vec::new();
    for i in 0..ORDERS {
        let (order, message) = paid_order(&admin, &project, &format!("STORM-{storm:?}-{i}")).await;
        send(fauxqs, &queue, &message).await;
        orders.push(order);
    }
    tokio::time::sleep(STORM.saturating_sub(proxy.started.elapsed())).await;
    assert!(
        receiver.received_requests().await.unwrap().is_empty(),
        "nothing released while commercetools was down"
    );
    proxy.storming.store(false, Ordering::SeqCst);
    let recovered = Instant::now();
    let deadline = recovered + Duration::from_secs(60);
    loop {
        let delivered = receiver.received_requests().await.unwrap().len();
        if delivered >= ORDERS && peers::sqs_queue_depth(fauxqs, &queue).await == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{storm:?}: {delivered} of {ORDERS} releases 60 s after recovery"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let log = worker.stop().await;
    let keys: Vec<String> = receiver
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| {
            r.headers
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let mut unique = keys.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ORDERS, "{keys:?}");
    assert_eq!(keys.len(), ORDERS, "each release delivered once: {keys:?}");
    assert!(
        lines_with(&log, "message parked").is_empty(),
        "{storm:?}: a message was parked during an outage\n{log}"
    );
    // Paced, never a tight loop: per second of the storm, a handful of requests per message.
    let per_second = proxy.storm_requests.lock().unwrap().clone();
    let total: usize = per_second.values().sum();
    let busiest = per_second.values().copied().max().unwrap_or(0);
    assert!(total > 0, "the storm was met");
    assert!(
        busiest <= 12 * ORDERS,
        "{storm:?}: {busiest} requests in one second ({per_second:?})"
    );
    assert!(
        total <= 60 * ORDERS,
        "{storm:?}: {total} requests during a {STORM:?} storm ({per_second:?})"
    );
    eprintln!(
        "{storm:?}: {total} requests during the storm, busiest second {busiest}, recovered in {:?}",
        recovered.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commercetools_503_storm_is_ridden_out() {
    commercetools_storm(Storm::Unavailable).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commercetools_429_storm_is_ridden_out() {
    commercetools_storm(Storm::Throttled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commercetools_429_with_retry_after_storm_is_ridden_out() {
    commercetools_storm(Storm::ThrottledRetryAfter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_receiver_down_then_500s_delivers_once_after_recovery() {
    let project = "payrules-storm-webhook";
    let fauxqs = peers::shared_fauxqs().await;
    let mock = peers::shared_commercetools_mock().await;
    let admin = Admin::new(mock, project).await;
    let queue = peers::sqs_create_queue(fauxqs, &peers::unique_name("hookdown"), &[]).await;
    // Connection refused: nothing listens on the receiver's port yet.
    let port = peers::free_port();
    let worker = start_worker(&[
        ("PAYRULES_SQS_QUEUE_URL", queue.clone()),
        ("AWS_ENDPOINT_URL", fauxqs.endpoint.clone()),
        ("CTP_PROJECT_KEY", project.into()),
        ("CTP_CLIENT_ID", "storm".into()),
        ("CTP_CLIENT_SECRET", "storm-secret".into()),
        ("CTP_AUTH_URL", mock.endpoint.clone()),
        ("CTP_API_URL", mock.endpoint.clone()),
        ("CTP_CHECKOUT_URL", "http://127.0.0.1:9".into()),
        (
            "PAYRULES_RELEASE_WEBHOOK_URL",
            format!("http://127.0.0.1:{port}/hook"),
        ),
    ]);
    let (_, message) = paid_order(&admin, project, "HOOKDOWN-1").await;
    send(fauxqs, &queue, &message).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(
        peers::sqs_queue_depth(fauxqs, &queue).await,
        1,
        "not acked while the receiver is down"
    );

    // The receiver comes up answering 500, then recovers.
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let receiver = MockServer::builder().listener(listener).start().await;
    let failing = Arc::new(AtomicUsize::new(0));
    let f = failing.clone();
    Mock::given(method("POST"))
        .respond_with(move |_: &wiremock::Request| {
            f.fetch_add(1, Ordering::SeqCst);
            ResponseTemplate::new(500)
        })
        .up_to_n_times(1_000)
        .with_priority(1)
        .named("500s")
        .mount(&receiver)
        .await;
    // The next attempt comes after the jittered backoff the refused connections built up
    // (and later on a loaded machine): wait for it rather than a fixed time.
    let deadline = Instant::now() + Duration::from_secs(60);
    while failing.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the 500s were met within 60 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        peers::sqs_queue_depth(fauxqs, &queue).await,
        1,
        "not acked while the receiver answers 500"
    );
    receiver.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&receiver)
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(receiver.received_requests().await.unwrap().len() == 1
        && peers::sqs_queue_depth(fauxqs, &queue).await == 0)
    {
        assert!(Instant::now() < deadline, "the release never got through");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let log = worker.stop().await;
    assert_eq!(receiver.received_requests().await.unwrap().len(), 1);
    assert!(lines_with(&log, "message parked").is_empty(), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_going_away_is_logged_once_each_way_and_the_worker_resumes() {
    let fauxqs = peers::shared_fauxqs().await;
    let queue = peers::sqs_create_queue(fauxqs, &peers::unique_name("away"), &[]).await;
    let port = peers::free_port();
    let target = format!("127.0.0.1:{}", fauxqs.port);
    let up = peers::relay(port, target.clone()).await;
    let worker = start_worker(&[
        ("PAYRULES_DRY_RUN_QUEUE_URL", queue.clone()),
        ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}")),
        ("PAYRULES_DRY_RUN", "true".into()),
        (
            "PAYRULES_RELEASE_WEBHOOK_URL",
            "https://unused.example/h".into(),
        ),
    ]);
    let lines: Vec<String> = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/scenarios/01-authorized-then-order.jsonl"),
    )
    .unwrap()
    .lines()
    .map(str::to_string)
    .collect();
    send(fauxqs, &queue, &lines[0]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    up.abort();
    // Gone for a while: many receive attempts fail.
    tokio::time::sleep(Duration::from_secs(15)).await;
    for l in &lines[1..] {
        send(fauxqs, &queue, l).await;
    }
    let _back = peers::relay(port, target).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while peers::sqs_queue_depth(fauxqs, &queue).await != 0 {
        assert!(Instant::now() < deadline, "the worker did not resume");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let log = worker.stop().await;
    let down = lines_with(&log, "source cannot receive; retrying");
    let connected = lines_with(&log, "source connected");
    assert_eq!(down.len(), 1, "one line when it went away\n{log}");
    assert_eq!(
        connected.len(),
        2,
        "one at start, one when it came back\n{log}"
    );
    let noisy = log
        .lines()
        .filter(|l| l.contains("SQS receive failed") && !l.contains("\"DEBUG\""))
        .count();
    assert_eq!(noisy, 0, "per-attempt failures stay at debug\n{log}");
}

/// The Pub/Sub emulator goes away behind a relay and comes back on the same address: the
/// stream is reopened (by the client library, or by the source after a permanent error) and
/// what was published meanwhile is processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_going_away_and_back_resumes() {
    let emulator = peers::shared_pubsub_emulator().await;
    let topic = peers::unique_name("away-topic");
    let sub = peers::unique_name("away-sub");
    let res =
        peers::create_topic_and_subscription(emulator, "payrules-test", &topic, &sub, 10, None)
            .await;
    let port = peers::free_port();
    let http = peers::free_port();
    let target = format!("127.0.0.1:{}", emulator.port);
    let up = peers::relay(port, target.clone()).await;
    let worker = start_worker(&[
        ("PAYRULES_SOURCE", "pubsub".into()),
        ("PAYRULES_DRY_RUN_SUBSCRIPTION", res.subscription.clone()),
        ("PUBSUB_EMULATOR_HOST", format!("127.0.0.1:{port}")),
        ("PAYRULES_DRY_RUN", "true".into()),
        ("PAYRULES_HTTP_ADDR", format!("127.0.0.1:{http}")),
        (
            "PAYRULES_RELEASE_WEBHOOK_URL",
            "https://unused.example/h".into(),
        ),
    ]);
    let lines: Vec<String> = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/scenarios/01-authorized-then-order.jsonl"),
    )
    .unwrap()
    .lines()
    .map(str::to_string)
    .collect();
    peers::pubsub_publish(emulator, &res.topic, lines[0].as_bytes(), &[]).await;
    let acked = || async {
        let text = reqwest::get(format!("http://127.0.0.1:{http}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        Some(
            text.lines()
                .filter(|l| {
                    l.starts_with("payrules_messages_total{") && l.contains("outcome=\"acked\"")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>(),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked().await.unwrap_or(0.0) < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the first message was not processed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    up.abort();
    tokio::time::sleep(Duration::from_secs(10)).await;
    for l in &lines[1..] {
        peers::pubsub_publish(emulator, &res.topic, l.as_bytes(), &[]).await;
    }
    let _back = peers::relay(port, target).await;
    // The emulator (not production Pub/Sub) keeps the cut stream alive on its side and lets
    // it swallow messages (see tests/it/crash.rs): end it, as the crash tests do.
    peers::pubsub_end_stale_streams(emulator, &res.subscription).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let all = lines.len() as f64;
    while acked().await.unwrap_or(0.0) < all {
        if Instant::now() > deadline {
            let log = worker.stop().await;
            panic!("the worker did not resume after the emulator came back\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let log = worker.stop().await;
    assert!(lines_with(&log, "message parked").is_empty(), "{log}");
}
