//! The broker part: backlog drain by a bare consumer and by `payrules run`, publish-to-effect
//! latency, and the worker's RSS, on the Pub/Sub emulator or on fauxqs (SQS).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use payrules::message::{Body, decode};
use serde_json::{Value, json};

use crate::peers::{self, Peer};
use crate::stream;
use crate::stub::{self, Stub};
use crate::worker::{self, Worker};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Pubsub,
    Sqs,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Pubsub => "pubsub",
            Kind::Sqs => "sqs",
        }
    }
}

/// Where messages go and where they are read from.
enum Broker {
    Pubsub {
        peer: Peer,
        http: reqwest::Client,
    },
    Sqs {
        peer: Peer,
        client: aws_sdk_sqs::Client,
    },
}

const PROJECT: &str = "loadtest";

impl Broker {
    async fn start(kind: Kind) -> Self {
        match kind {
            Kind::Pubsub => Broker::Pubsub {
                peer: peers::pubsub_emulator().await,
                http: reqwest::Client::new(),
            },
            Kind::Sqs => {
                let peer = peers::fauxqs().await;
                let conf = aws_sdk_sqs::Config::builder()
                    .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
                    .region(aws_sdk_sqs::config::Region::new("us-east-1"))
                    .endpoint_url(peer.endpoint())
                    .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                        "test", "test", None, None, "loadtest",
                    ))
                    .build();
                Broker::Sqs {
                    client: aws_sdk_sqs::Client::from_conf(conf),
                    peer,
                }
            }
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Broker::Pubsub { .. } => Kind::Pubsub,
            Broker::Sqs { .. } => Kind::Sqs,
        }
    }

    fn peer(&self) -> &Peer {
        match self {
            Broker::Pubsub { peer, .. } | Broker::Sqs { peer, .. } => peer,
        }
    }

    /// Creates a topic (Pub/Sub) with one subscription per reader, or one queue per reader
    /// (SQS); returns the readers' names (subscription paths or queue URLs).
    async fn create(&self, base: &str, readers: &[&str]) -> Vec<String> {
        match self {
            Broker::Pubsub { peer, http } => {
                let ep = peer.endpoint();
                let topic = format!("projects/{PROJECT}/topics/{base}");
                let r = http.put(format!("{ep}/v1/{topic}")).send().await.unwrap();
                assert!(r.status().is_success(), "create topic: {}", r.status());
                let mut out = Vec::new();
                for reader in readers {
                    let sub = format!("projects/{PROJECT}/subscriptions/{base}-{reader}");
                    let r = http
                        .put(format!("{ep}/v1/{sub}"))
                        .json(&json!({"topic": topic, "ackDeadlineSeconds": 60}))
                        .send()
                        .await
                        .unwrap();
                    assert!(
                        r.status().is_success(),
                        "create subscription: {}",
                        r.status()
                    );
                    out.push(sub);
                }
                out
            }
            Broker::Sqs { client, .. } => {
                let mut out = Vec::new();
                for reader in readers {
                    let url = client
                        .create_queue()
                        .queue_name(format!("{base}-{reader}"))
                        .attributes(
                            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
                            "60",
                        )
                        .send()
                        .await
                        .expect("CreateQueue")
                        .queue_url()
                        .expect("QueueUrl")
                        .to_string();
                    out.push(url);
                }
                out
            }
        }
    }

    /// Publishes a batch: to the topic (Pub/Sub; every subscription gets it) or to every queue.
    async fn publish(&self, base: &str, readers: &[String], batch: &[&[u8]]) {
        match self {
            Broker::Pubsub { peer, http } => {
                let messages: Vec<Value> =
                    batch.iter().map(|m| json!({"data": base64(m)})).collect();
                let r = http
                    .post(format!(
                        "{}/v1/projects/{PROJECT}/topics/{base}:publish",
                        peer.endpoint()
                    ))
                    .json(&json!({"messages": messages}))
                    .send()
                    .await
                    .expect("publish");
                assert!(r.status().is_success(), "publish: {}", r.status());
            }
            Broker::Sqs { client, .. } => {
                for url in readers {
                    for chunk in batch.chunks(10) {
                        let mut req = client.send_message_batch().queue_url(url);
                        for (i, m) in chunk.iter().enumerate() {
                            req = req.entries(
                                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                                    .id(i.to_string())
                                    .message_body(String::from_utf8_lossy(m))
                                    .build()
                                    .unwrap(),
                            );
                        }
                        let out = req.send().await.expect("SendMessageBatch");
                        assert!(out.failed().is_empty(), "SendMessageBatch failed entries");
                    }
                }
            }
        }
    }

    /// The worker's environment for reading `reader`.
    fn worker_env(&self, reader: &str, args: &crate::Args) -> Vec<(String, String)> {
        match self {
            Broker::Pubsub { peer, .. } => vec![
                ("PAYRULES_SOURCE".into(), "pubsub".into()),
                ("PAYRULES_PUBSUB_SUBSCRIPTION".into(), reader.into()),
                ("PUBSUB_EMULATOR_HOST".into(), peer.host_port()),
            ],
            Broker::Sqs { peer, .. } => vec![
                ("PAYRULES_SOURCE".into(), "sqs".into()),
                ("PAYRULES_SQS_QUEUE_URL".into(), reader.into()),
                ("PAYRULES_SQS_POLLERS".into(), args.sqs_pollers.to_string()),
                ("AWS_ENDPOINT_URL".into(), peer.endpoint()),
                ("AWS_REGION".into(), "us-east-1".into()),
                ("AWS_ACCESS_KEY_ID".into(), "test".into()),
                ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
            ],
        }
    }

    /// Pulls and acks `n` messages from `reader`, doing nothing else. Returns the seconds from
    /// the first message received to the last one acked.
    async fn bare_drain(&self, reader: &str, n: usize, args: &crate::Args) -> f64 {
        match self {
            Broker::Pubsub { peer, .. } => bare_pubsub(peer, reader, n).await,
            Broker::Sqs { client, .. } => bare_sqs(client, reader, n, args.sqs_pollers).await,
        }
    }

    /// Messages still in the queue (visible + in flight); Pub/Sub has no such count.
    async fn queue_depth(&self, reader: &str) -> Option<u64> {
        match self {
            Broker::Pubsub { .. } => None,
            Broker::Sqs { client, .. } => {
                use aws_sdk_sqs::types::QueueAttributeName as A;
                let out = client
                    .get_queue_attributes()
                    .queue_url(reader)
                    .attribute_names(A::ApproximateNumberOfMessages)
                    .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
                    .send()
                    .await
                    .ok()?;
                let attrs = out.attributes()?;
                let get = |a: A| {
                    attrs
                        .get(&a)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                Some(
                    get(A::ApproximateNumberOfMessages)
                        + get(A::ApproximateNumberOfMessagesNotVisible),
                )
            }
        }
    }
}

async fn bare_pubsub(peer: &Peer, subscription: &str, n: usize) -> f64 {
    use google_cloud_auth::credentials::anonymous::Builder as Anonymous;
    use google_cloud_pubsub::client::Subscriber;
    let subscriber = Subscriber::builder()
        .with_endpoint(peer.endpoint())
        .with_credentials(Anonymous::new().build())
        .build()
        .await
        .expect("Pub/Sub subscriber");
    // The worker's defaults: one stream, 1000 messages / 100 MB outstanding.
    let mut stream = subscriber
        .subscribe(subscription.to_string())
        .set_max_outstanding_messages(1000)
        .set_max_outstanding_bytes(104_857_600)
        .build();
    let token = stream.shutdown_token();
    let mut first = None;
    let mut got = 0usize;
    while got < n {
        match tokio::time::timeout(Duration::from_secs(60), stream.next()).await {
            Ok(Some(Ok((_m, handler)))) => {
                first.get_or_insert_with(Instant::now);
                handler.ack();
                got += 1;
            }
            Ok(Some(Err(e))) => panic!("bare Pub/Sub consumer: {e}"),
            Ok(None) | Err(_) => panic!("bare Pub/Sub consumer: stream ended after {got} of {n}"),
        }
    }
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    drop(stream);
    let _ = tokio::time::timeout(Duration::from_secs(30), token.shutdown()).await;
    secs
}

async fn bare_sqs(client: &aws_sdk_sqs::Client, url: &str, n: usize, pollers: usize) -> f64 {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let got = Arc::new(AtomicUsize::new(0));
    let first: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..pollers.max(1) {
        let (client, url, got, first) =
            (client.clone(), url.to_string(), got.clone(), first.clone());
        tasks.spawn(async move {
            while got.load(Ordering::SeqCst) < n {
                let out = client
                    .receive_message()
                    .queue_url(&url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(1)
                    .visibility_timeout(60)
                    .send()
                    .await
                    .expect("ReceiveMessage");
                let msgs = out.messages();
                if msgs.is_empty() {
                    continue;
                }
                first.lock().unwrap().get_or_insert_with(Instant::now);
                let mut del = client.delete_message_batch().queue_url(&url);
                for (i, m) in msgs.iter().enumerate() {
                    del = del.entries(
                        aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(m.receipt_handle().unwrap_or_default())
                            .build()
                            .unwrap(),
                    );
                }
                del.send().await.expect("DeleteMessageBatch");
                got.fetch_add(msgs.len(), Ordering::SeqCst);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let started = first.lock().unwrap().expect("received something");
    started.elapsed().as_secs_f64()
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(v >> 18) as usize & 63] as char);
        out.push(T[(v >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            T[(v >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            T[v as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

fn stub_env(
    stub: &Stub,
    state_dir: &std::path::Path,
    name: &str,
    grace: &str,
    args: &crate::Args,
) -> Vec<(String, String)> {
    let url = stub.url();
    vec![
        ("NO_COLOR".into(), "1".into()),
        ("PAYRULES_LOG".into(), args.worker_log.clone()),
        (
            "PAYRULES_STATE_URL".into(),
            match args.worker_state.as_str() {
                "memory" => "memory:".to_string(),
                _ => format!(
                    "sqlite://{}",
                    state_dir.join(format!("{name}.db")).display()
                ),
            },
        ),
        ("PAYRULES_GRACE_PERIOD".into(), grace.into()),
        // A load test compresses the grace period.
        ("PAYRULES_ALLOW_SHORT_GRACE_PERIOD".into(), "true".into()),
        (
            "PAYRULES_CONCURRENCY".into(),
            args.worker_concurrency.to_string(),
        ),
        (
            "PAYRULES_RELEASE_WEBHOOK_URL".into(),
            format!("{url}/webhook"),
        ),
        (
            "PAYRULES_RELEASE_WEBHOOK_SECRET".into(),
            "loadtest-secret".into(),
        ),
        ("CTP_PROJECT_KEY".into(), stub::PROJECT.into()),
        ("CTP_CLIENT_ID".into(), "loadtest".into()),
        ("CTP_CLIENT_SECRET".into(), "loadtest-secret".into()),
        ("CTP_AUTH_URL".into(), url.clone()),
        ("CTP_API_URL".into(), url.clone()),
        ("CTP_CHECKOUT_URL".into(), format!("{url}/checkout")),
        (
            "CTP_SCOPES".into(),
            format!(
                "view_payments:{p} view_orders:{p} manage_checkout_payment_intents:{p}",
                p = stub::PROJECT
            ),
        ),
    ]
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    Some(sorted[i.min(sorted.len() - 1)])
}

/// The median of sorted values: with an even count, the mean of the two middle ones (the
/// nearest-rank [`percentile`] would report the upper one, flattering an even number of
/// rounds).
fn median(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// Waits until the stub has been quiet for `quiet` after at least one request and at least
/// `effects` effects arrived (or `timeout` passed).
async fn wait_quiet(stub: &Stub, effects: usize, quiet: Duration, timeout: Duration) -> bool {
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if started.elapsed() > timeout {
            return false;
        }
        let Some(last) = stub.last_request() else {
            continue;
        };
        if last.elapsed() >= quiet && stub.effects().len() >= effects {
            return true;
        }
    }
}

/// One round of the drain: a fresh pair of queues (or subscriptions) gets the backlog; the
/// bare consumer drains one, then a fresh `payrules run` (its own state file) the other.
#[allow(clippy::too_many_arguments)]
async fn drain_round(
    broker: &Broker,
    stub: &Stub,
    backlog: &stream::Stream,
    round: usize,
    run_id: &str,
    state_dir: &tempfile::TempDir,
    logs: &std::path::Path,
    args: &crate::Args,
) -> Value {
    let name = broker.kind().name();
    let base = format!("{run_id}-backlog{round}");
    let readers = broker.create(&base, &["bare", "worker"]).await;
    let t = Instant::now();
    let all: Vec<&[u8]> = backlog.iter().collect();
    let batch = match broker.kind() {
        Kind::Pubsub => 500,
        Kind::Sqs => 100,
    };
    // A few publishers at once.
    let chunks: Vec<&[&[u8]]> = all.chunks(batch).collect();
    for group in chunks.chunks(8) {
        futures::future::join_all(group.iter().map(|c| broker.publish(&base, &readers, c))).await;
    }
    let publish_secs = t.elapsed().as_secs_f64();
    let n = backlog.len();
    eprintln!(
        "{name} round {round}: published {n} messages{} in {publish_secs:.1} s",
        if broker.kind() == Kind::Sqs {
            " to each of 2 queues"
        } else {
            ""
        }
    );

    let broker_pid = broker.peer().pid().to_string();
    let broker_cpu = || crate::proc_cpu_secs(&broker_pid).unwrap_or(0.0);
    let b0 = broker_cpu();
    let h0 = crate::cpu_secs();
    let bare_secs = broker.bare_drain(&readers[0], n, args).await;
    let bare_broker_cpu = broker_cpu() - b0;
    let bare_harness_cpu = crate::cpu_secs() - h0;
    let bare_rate = n as f64 / bare_secs;
    eprintln!(
        "{name} round {round}: bare consumer: {bare_rate:.0} msg/s ({bare_secs:.2} s; broker used {:.0} % of a core)",
        100.0 * bare_broker_cpu / bare_secs
    );

    stub.reset();
    let db = format!("drain{round}");
    let mut env = stub_env(stub, state_dir.path(), &db, "1h", args);
    env.extend(broker.worker_env(&readers[1], args));
    let w = Worker::start(
        &args.worker_bin,
        &env,
        logs.join(format!("worker-{name}-drain{round}.log")),
    );
    // Effects expected while draining: releases and the Checkout-failure cancels (the grace
    // period is 1 h here, so orphan cancels stay pending).
    let want = backlog.expected.releases + backlog.expected.cancels_event;
    let cpu0 = w.cpu_secs();
    let b0 = broker_cpu();
    let finished = wait_quiet(stub, want, Duration::from_secs(2), Duration::from_secs(900)).await;
    let worker_cpu = w.cpu_secs() - cpu0;
    let worker_broker_cpu = broker_cpu() - b0;
    // The stub, mostly; includes the 2 s of quiet that ends the wait.
    let worker_harness_cpu = crate::cpu_secs() - h0;
    let window = stub.request_window();
    let depth = broker.queue_depth(&readers[1]).await;
    let requests = stub.requests.load(std::sync::atomic::Ordering::Relaxed);
    let effects = stub.effects();
    let (peak_mb, log) = w.stop().await;
    let acked = worker::acked_from_log(&log);
    let retried = worker::summary_count(&log, "retried");
    let (worker_secs, worker_rate) = match window {
        Some((a, b)) => {
            let s = (b - a).as_secs_f64();
            (s, n as f64 / s)
        }
        None => (0.0, 0.0),
    };
    let releases = effects
        .iter()
        .filter(|e| e.key.starts_with("release:"))
        .count();
    let cancels = effects
        .iter()
        .filter(|e| e.key.starts_with("cancel:"))
        .count();
    let ratio = if bare_rate > 0.0 {
        worker_rate / bare_rate
    } else {
        0.0
    };
    eprintln!(
        "{name} round {round}: payrules run: {worker_rate:.0} msg/s ({worker_secs:.2} s, ratio {ratio:.3}), acked {acked:?}, retried {retried:?}, {releases} releases, {cancels} cancels, {requests} stub requests, peak RSS {peak_mb:.1} MB{}",
        if finished { "" } else { " — DID NOT FINISH" }
    );
    json!({
        "round": round,
        "published_secs": publish_secs,
        "bare_secs": bare_secs,
        "bare_msgs_per_sec": bare_rate,
        "worker_secs": worker_secs,
        "worker_msgs_per_sec": worker_rate,
        "ratio": ratio,
        "worker_acked": acked,
        "worker_retried": retried,
        "broker_cpu_secs_bare": bare_broker_cpu,
        "broker_cpu_secs_worker": worker_broker_cpu,
        "harness_cpu_secs_bare": bare_harness_cpu,
        "harness_cpu_secs_worker": worker_harness_cpu,
        "worker_cpu_secs": worker_cpu,
        "worker_cpu_share_of_one_core": if worker_secs > 0.0 { worker_cpu / worker_secs } else { 0.0 },
        "worker_cpu_us_per_msg": 1e6 * worker_cpu / n.max(1) as f64,
        "worker_peak_rss_mb": peak_mb,
        "queue_depth_after": depth,
        "stub_requests": requests,
        "releases": releases,
        "expected_releases": backlog.expected.releases,
        "cancels": cancels,
        "expected_cancels": backlog.expected.cancels_event,
        "finished": finished,
        "warnings": worker::problems(&log),
    })
}

pub(crate) async fn run(kind: Kind, args: &crate::Args) -> Value {
    let name = kind.name();
    eprintln!("== {name}: starting the broker");
    let broker = Broker::start(kind).await;
    let stub = Stub::start().await;
    let state_dir = tempfile::tempdir().expect("temp dir");
    let run_id = format!("lt{}", std::process::id());
    let logs = std::path::PathBuf::from("target/loadtest");

    // ---- Backlog: the same messages for the bare consumer and the worker, in rounds that
    // alternate the two (a drain takes seconds; this VM's pace wanders over that much).
    let backlog = stream::generate(&stream::GenConfig {
        messages: args.broker_messages,
        seed: args.seed + 1,
        ..stream::GenConfig::default()
    });
    for m in backlog.iter() {
        if let Ok(msg) = decode(m) {
            stub.observe(&msg);
        }
    }
    let mut rounds = Vec::new();
    let mut peak_mb: f64 = 0.0;
    for round in 1..=args.drain_rounds.max(1) {
        let r = drain_round(
            &broker, &stub, &backlog, round, &run_id, &state_dir, &logs, args,
        )
        .await;
        peak_mb = peak_mb.max(
            r.get("worker_peak_rss_mb")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
        );
        rounds.push(r);
    }
    let median_of = |key: &str| {
        let mut v: Vec<f64> = rounds
            .iter()
            .filter_map(|r| r.get(key).and_then(Value::as_f64))
            .collect();
        v.sort_by(f64::total_cmp);
        median(&v)
    };
    let all_finished = rounds
        .iter()
        .all(|r| r.get("finished").and_then(Value::as_bool) == Some(true));
    let drain = json!({
        "messages": backlog.len(),
        "rounds": rounds.len(),
        "bare_msgs_per_sec": median_of("bare_msgs_per_sec"),
        "worker_msgs_per_sec": median_of("worker_msgs_per_sec"),
        "ratio": median_of("ratio"),
        "ratio_is": "the median of the rounds' worker/bare ratios",
        "worker_cpu_share_of_one_core": median_of("worker_cpu_share_of_one_core"),
        "worker_cpu_us_per_msg": median_of("worker_cpu_us_per_msg"),
        "finished": all_finished,
        "per_round": rounds,
    });

    // ---- Latency and idle RSS: a fresh worker on an empty subscription/queue.
    let lat = stream::generate(&stream::GenConfig {
        messages: args.latency_messages,
        seed: args.seed + 2,
        ..stream::GenConfig::default()
    });
    let base = format!("{run_id}-latency");
    let readers = broker.create(&base, &["worker"]).await;
    stub.reset();
    let mut env = stub_env(
        &stub,
        state_dir.path(),
        "latency",
        &args.latency_grace,
        args,
    );
    env.extend(broker.worker_env(&readers[0], args));
    let mut w = Worker::start(
        &args.worker_bin,
        &env,
        logs.join(format!("worker-{name}-latency.log")),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_cpu0 = w.cpu_secs();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_cpu_share = (w.cpu_secs() - idle_cpu0) / 3.0;
    assert!(
        w.exited().is_none(),
        "the worker exited; see {}",
        w.log.display()
    );
    let (idle_rss, idle_hwm) = w.rss_mb();
    let (idle_anon, idle_file) = worker::rss_split_mb(w.pid());
    eprintln!(
        "{name}: idle worker RSS {idle_rss:.1} MB ({idle_anon:.1} MB anonymous, {idle_file:.1} MB file-backed; peak so far {idle_hwm:.1} MB)"
    );

    let grace = payrules::config::parse_duration(&args.latency_grace).expect("--latency-grace");
    let mut published: HashMap<String, Instant> = HashMap::new();
    let mut failed_order: HashMap<String, Instant> = HashMap::new();
    let mut authorized: HashMap<String, Instant> = HashMap::new();
    let interval = Duration::from_secs_f64(1.0 / args.latency_rate.max(1.0));
    let t0 = Instant::now();
    let cpu0 = w.cpu_secs();
    for (i, m) in lat.iter().enumerate() {
        let due = t0 + interval * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        let decoded = decode(m).ok();
        if let Some(msg) = &decoded {
            stub.observe(msg);
        }
        let now = Instant::now();
        if let Some(msg) = &decoded {
            if let Some(id) = &msg.id {
                published.entry(id.clone()).or_insert(now);
            }
            match &msg.body {
                Body::CheckoutOrderCreationFailed { payments, .. } => {
                    for p in payments {
                        failed_order.entry(p.id.clone()).or_insert(now);
                    }
                }
                Body::TransactionStateChanged { state, .. }
                    if *state == payrules::model::TransactionState::Success =>
                {
                    if let Some(pid) = msg.payment_id() {
                        authorized.entry(pid.to_string()).or_insert(now);
                    }
                }
                _ => {}
            }
        }
        broker.publish(&base, &readers, &[m]).await;
    }
    let publish_secs = t0.elapsed().as_secs_f64();
    let want = lat.expected.releases + lat.expected.cancels_event + lat.expected.cancels_timer;
    let finished = wait_quiet(
        &stub,
        want,
        grace + Duration::from_secs(3),
        Duration::from_secs(300),
    )
    .await;
    let lat_cpu = w.cpu_secs() - cpu0;
    let effects = stub.effects();
    let (lat_peak, log) = w.stop().await;
    let mut release_ms = Vec::new();
    let mut cancel_event_ms = Vec::new();
    let mut cancel_timer_late_ms = Vec::new();
    for e in &effects {
        if e.key.starts_with("release:") {
            if let Some(t) = e.message_id.as_ref().and_then(|id| published.get(id)) {
                release_ms.push((e.at - *t).as_secs_f64() * 1e3);
            }
        } else if let Some(pid) = &e.payment_id {
            if let Some(t) = failed_order.get(pid) {
                cancel_event_ms.push(e.at.saturating_duration_since(*t).as_secs_f64() * 1e3);
            } else if let Some(t) = authorized.get(pid) {
                let due = *t + grace;
                cancel_timer_late_ms.push(e.at.saturating_duration_since(due).as_secs_f64() * 1e3);
            }
        }
    }
    let mut all: Vec<f64> = release_ms.iter().chain(&cancel_event_ms).copied().collect();
    for v in [
        &mut release_ms,
        &mut cancel_event_ms,
        &mut cancel_timer_late_ms,
        &mut all,
    ] {
        v.sort_by(f64::total_cmp);
    }
    let releases = effects
        .iter()
        .filter(|e| e.key.starts_with("release:"))
        .count();
    let cancels = effects.len() - releases;
    eprintln!(
        "{name}: latency: publish-to-effect p50 {:?} ms, p99 {:?} ms over {} effects; {releases} releases, {cancels} cancels; peak RSS {lat_peak:.1} MB",
        percentile(&all, 50.0).map(|v| v.round()),
        percentile(&all, 99.0).map(|v| v.round()),
        all.len()
    );
    let latency = json!({
        "messages": lat.len(),
        "publish_rate": lat.len() as f64 / publish_secs,
        "grace_period": args.latency_grace,
        "samples": all.len(),
        "p50_ms": percentile(&all, 50.0),
        "p99_ms": percentile(&all, 99.0),
        "max_ms": all.last(),
        "release_p50_ms": percentile(&release_ms, 50.0),
        "release_p99_ms": percentile(&release_ms, 99.0),
        "cancel_on_failed_order_p50_ms": percentile(&cancel_event_ms, 50.0),
        "cancel_on_failed_order_p99_ms": percentile(&cancel_event_ms, 99.0),
        "orphan_cancel_after_due_p50_ms": percentile(&cancel_timer_late_ms, 50.0),
        "orphan_cancel_after_due_p99_ms": percentile(&cancel_timer_late_ms, 99.0),
        "releases": releases,
        "expected_releases": lat.expected.releases,
        "cancels": cancels,
        "expected_cancels": lat.expected.cancels_event + lat.expected.cancels_timer,
        "worker_cpu_secs": lat_cpu,
        "worker_acked": worker::acked_from_log(&log),
        "finished": finished,
        "warnings": worker::problems(&log),
    });
    json!({
        "drain": drain,
        "latency": latency,
        "rss_mb": {
            "idle": idle_rss,
            "idle_peak": idle_hwm,
            "idle_anon": idle_anon,
            "idle_cpu_share_of_one_core": idle_cpu_share,
            "idle_file_backed": idle_file,
            "peak_under_load": peak_mb,
            "peak_latency_phase": lat_peak,
        },
    })
}
