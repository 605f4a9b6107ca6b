//! The SQS source against moto (AWS-faithful errors, redrive) and fauxqs (fast), one of each
//! per test binary, a fresh queue per test.
//!
//! "Deleted" is checked with the queue's own counters (`ApproximateNumberOfMessages` and
//! `…NotVisible` both 0), so a delete that did nothing fails at once instead of after a
//! visibility timeout.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{Message, MessageAttributeValue, MessageSystemAttributeName};
use payrules::config::SqsSettings;
use payrules::source::sqs::PARK_REASON_ATTRIBUTE;
use payrules::source::{Source, SourceError, SqsSource};

use crate::support::binary::run_binary_until_lines;
use crate::support::broker::{
    self, Recording, action_keys, dry_run, replay_keys, run_blocked, run_recorded, scenario_copy,
    set, worker,
};
use crate::support::fixtures::scenario_lines;
use crate::support::peers::{self, Peer};

fn settings(
    queue_url: &str,
    pollers: usize,
    visibility_secs: u64,
    dlq: Option<&str>,
) -> SqsSettings {
    SqsSettings {
        queue_url: queue_url.to_string(),
        pollers,
        visibility_timeout: Duration::from_secs(visibility_secs),
        dead_letter_queue_url: dlq.map(str::to_string),
    }
}

async fn connect(peer: &Peer, settings: &SqsSettings) -> SqsSource {
    SqsSource::with_client(peers::sqs_client(peer).await, settings)
        .await
        .expect("connect")
}

/// Sends each body in order (with a `source` string attribute); returns the message ids.
async fn send(peer: &Peer, queue_url: &str, bodies: &[Vec<u8>]) -> Vec<String> {
    let client = peers::sqs_client(peer).await;
    let mut ids = Vec::new();
    for body in bodies {
        let out = client
            .send_message()
            .queue_url(queue_url)
            .message_body(String::from_utf8(body.clone()).expect("UTF-8 body"))
            .message_attributes(
                "source",
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("payrules-it")
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("SendMessage: {:?}", e.into_service_error()));
        ids.push(out.message_id().expect("a message id").to_string());
    }
    ids
}

/// Receives (and deletes) with a fresh client until `want` messages arrived or `limit` passed.
async fn receive_until(peer: &Peer, queue_url: &str, want: usize, limit: Duration) -> Vec<Message> {
    let client = peers::sqs_client(peer).await;
    let deadline = Instant::now() + limit;
    let mut all: Vec<Message> = Vec::new();
    while all.len() < want && Instant::now() < deadline {
        let out = client
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .unwrap_or_else(|e| panic!("ReceiveMessage: {:?}", e.into_service_error()));
        for m in out.messages() {
            client
                .delete_message()
                .queue_url(queue_url)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .send()
                .await
                .unwrap_or_else(|e| panic!("DeleteMessage: {:?}", e.into_service_error()));
        }
        all.extend(out.messages().iter().cloned());
    }
    all
}

/// Receives without deleting for `window`: what a competing consumer would get.
async fn peek_for(peer: &Peer, queue_url: &str, window: Duration) -> Vec<Message> {
    let client = peers::sqs_client(peer).await;
    let deadline = Instant::now() + window;
    let mut all = Vec::new();
    while Instant::now() < deadline {
        let wait = (deadline - Instant::now()).as_secs().clamp(1, 20) as i32;
        let out = client
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(wait)
            .visibility_timeout(1)
            .send()
            .await
            .unwrap_or_else(|e| panic!("ReceiveMessage: {:?}", e.into_service_error()));
        all.extend(out.messages().iter().cloned());
    }
    all
}

fn origins(ids: &[String]) -> BTreeSet<String> {
    ids.iter().map(|id| format!("sqs:{id}")).collect()
}

/// Scenarios 01 and 11 sent through fauxqs and run by the worker (dry run, concurrency 1)
/// plan exactly the actions replay plans, each once; every message is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_worker_plans_the_replay_actions_and_deletes_every_message() {
    let peer = peers::shared_fauxqs().await;
    // Scenario 11 depends on message order: one poller keeps send order.
    for (name, pollers) in [
        ("01-authorized-then-order.jsonl", 2),
        ("11-checkout-order-creation-failed.jsonl", 1),
    ] {
        let url = peers::sqs_create_queue(peer, &peers::unique_name("orders"), &[]).await;
        let lines = scenario_lines(name);
        let ids = send(peer, &url, &lines).await;

        let source = connect(peer, &settings(&url, pollers, 30, None)).await;
        let n = lines.len();
        let (summary, log, out) = run_recorded(Box::new(source), |log| log.acked.len() >= n).await;

        assert_eq!(
            set(&log.acked),
            origins(&ids),
            "{name}: every message acked"
        );
        assert_eq!(log.acked.len(), n, "{name}: each once: {log:?}");
        assert_eq!(summary.acked, n, "{name}");
        assert!(
            log.delivered.iter().all(|(_, c)| *c == Some(1)),
            "{name}: ApproximateReceiveCount is the delivery count: {log:?}"
        );
        assert_eq!(
            action_keys(&out),
            replay_keys(name).await,
            "{name}: the same actions as replay, each once"
        );
        assert_eq!(
            peers::sqs_queue_counts(peer, &url).await,
            (0, 0),
            "{name}: every message deleted"
        );
    }
}

/// A nack sets the visibility to its delay: the message comes back after it (long before the
/// 30 s visibility timeout) with ApproximateReceiveCount 2; the ack then deletes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_nack_redelivers_after_the_delay_with_the_receive_count() {
    let peer = peers::shared_moto().await;
    let url = peers::sqs_create_queue(
        peer,
        &peers::unique_name("nack"),
        &[("VisibilityTimeout", "30")],
    )
    .await;
    let ids = send(peer, &url, &[b"{\"n\":1}".to_vec()]).await;
    let mut source = connect(peer, &settings(&url, 1, 30, None)).await;

    let first = tokio::time::timeout(Duration::from_secs(10), source.next())
        .await
        .expect("a delivery within 10 s")
        .expect("no receive error")
        .expect("a delivery");
    assert_eq!(first.origin, format!("sqs:{}", ids[0]));
    assert_eq!(first.delivery_count, Some(1));
    assert_eq!(
        first.attributes.get("source").map(String::as_str),
        Some("payrules-it")
    );
    assert_eq!(&first.payload[..], b"{\"n\":1}");

    let delay = Duration::from_secs(2);
    let nacked_at = Instant::now();
    first.nack(delay).await.map_err(|(e, _)| e).expect("nack");
    let second = tokio::time::timeout(Duration::from_secs(15), source.next())
        .await
        .expect("redelivered within 15 s, not after the 30 s visibility timeout")
        .expect("no receive error")
        .expect("a delivery");
    let waited = nacked_at.elapsed();
    assert_eq!(second.origin, first_origin(&ids));
    assert_eq!(second.delivery_count, Some(2));
    assert!(
        waited >= delay - Duration::from_millis(200),
        "redelivered after {waited:?}, before the {delay:?} delay"
    );
    second.ack().await.map_err(|(e, _)| e).expect("ack");
    assert_eq!(peers::sqs_queue_counts(peer, &url).await, (0, 0), "deleted");
    source.close().await;
}

fn first_origin(ids: &[String]) -> String {
    format!("sqs:{}", ids[0])
}

/// An undecodable message is parked: sent to the configured dead-letter queue with its body,
/// its attributes and the reason, then deleted from the main queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_poison_is_sent_to_the_dead_letter_queue_and_deleted() {
    let peer = peers::shared_moto().await;
    let url = peers::sqs_create_queue(peer, &peers::unique_name("poison"), &[]).await;
    let dlq = peers::sqs_create_queue(peer, &peers::unique_name("parked"), &[]).await;
    let poison = b"{not json".to_vec();
    let ids = send(peer, &url, std::slice::from_ref(&poison)).await;

    let source = connect(peer, &settings(&url, 1, 30, Some(&dlq))).await;
    let (summary, log, _) = run_recorded(Box::new(source), |log| !log.parked.is_empty()).await;
    assert_eq!(summary.parked, 1);
    assert_eq!(
        log.parked,
        vec![(first_origin(&ids), log.parked[0].1.clone())]
    );
    assert_eq!(
        peers::sqs_queue_counts(peer, &url).await,
        (0, 0),
        "deleted from the main queue"
    );

    let parked = receive_until(peer, &dlq, 1, Duration::from_secs(5)).await;
    assert_eq!(parked.len(), 1, "{parked:?}");
    let m = &parked[0];
    assert_eq!(m.body(), Some("{not json"));
    let attrs = m.message_attributes().expect("attributes");
    assert_eq!(
        attrs.get("source").and_then(|v| v.string_value()),
        Some("payrules-it")
    );
    let reason = attrs
        .get(PARK_REASON_ATTRIBUTE)
        .and_then(|v| v.string_value())
        .expect("a reason");
    assert!(reason.contains("undecodable"), "{reason}");
}

/// Without a dead-letter queue URL, parking makes the message visible again soon, so its
/// receive count grows until the queue's redrive policy (maxReceiveCount 2) moves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_poison_without_a_queue_url_goes_through_the_redrive_policy() {
    let peer = peers::shared_moto().await;
    let (url, dlq) =
        peers::sqs_create_queue_with_dlq(peer, &peers::unique_name("redrive"), 30, 2).await;
    let ids = send(peer, &url, &[b"[1,2,3]".to_vec()]).await;

    let source = connect(peer, &settings(&url, 1, 30, None)).await;
    let (source, log) = Recording::new(Box::new(source));
    let (executor, _) = dry_run();
    let moved = Arc::new(std::sync::Mutex::new(Vec::new()));
    let into = moved.clone();
    let summary = worker(executor, 1, Duration::from_secs(5))
        .run(Box::new(source), async {
            *into.lock().unwrap() = receive_until(peer, &dlq, 1, Duration::from_secs(20)).await;
        })
        .await;
    let moved = moved.lock().unwrap().clone();
    assert_eq!(moved.len(), 1, "redriven to the queue's DLQ: {moved:?}");
    assert_eq!(moved[0].message_id(), Some(ids[0].as_str()));
    assert_eq!(moved[0].body(), Some("[1,2,3]"));
    let log = log.lock().unwrap().clone();
    assert_eq!(
        summary.parked, 2,
        "parked on each of the 2 receives: {log:?}"
    );
    let seen: Vec<Option<u32>> = log.delivered.iter().map(|d| d.1).collect();
    assert_eq!(seen, vec![Some(1), Some(2)]);
}

/// Trust (issue 23, case 6): a dependency's outage never dead-letters. The queue redrives after
/// 2 receives; the receiver is down for longer than many retries and several visibility
/// timeouts. Each message that needs it is held (its visibility renewed, never nacked), pulling
/// pauses meanwhile (no more messages taken than the worker can work on at once), and once the
/// receiver is back every action is taken once: nothing reached the dead-letter queue, and every
/// message was received exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_an_outage_holds_messages_and_never_dead_letters_them() {
    use std::sync::atomic::Ordering;
    let peer = peers::shared_moto().await;
    let (url, dlq) =
        peers::sqs_create_queue_with_dlq(peer, &peers::unique_name("outage"), 2, 2).await;
    let lines: Vec<Vec<u8>> = (0..20u16)
        .flat_map(|copy| scenario_copy(&scenario_lines("01-authorized-then-order.jsonl"), copy))
        .collect();
    let ids = send(peer, &url, &lines).await;

    let source = connect(peer, &settings(&url, 1, 2, Some(&dlq))).await;
    let (source, log) = Recording::new(Box::new(source));
    let (inner, out) = dry_run();
    let outage = Arc::new(broker::Outage::new(inner));
    let concurrency = 16;
    let w = broker::worker_retrying(
        outage.clone(),
        concurrency,
        Duration::from_secs(5),
        Duration::from_millis(50),
    );
    let (watch, during) = (log.clone(), Arc::new(std::sync::Mutex::new(0usize)));
    let (seen, n) = (during.clone(), lines.len());
    let dependency = outage.clone();
    let summary = w
        .run(Box::new(source), async move {
            // Down for 6 s: over a hundred retries at 50 ms doubling to 60 s would have been
            // nacks; three visibility timeouts of 2 s.
            tokio::time::sleep(Duration::from_secs(6)).await;
            *seen.lock().unwrap() = watch.lock().unwrap().delivered.len();
            dependency.back.store(true, Ordering::SeqCst);
            broker::until(
                || watch.lock().unwrap().acked.len() >= n,
                Duration::from_secs(60),
            )
            .await;
        })
        .await;
    let log = log.lock().unwrap().clone();
    assert!(
        outage.failed.load(Ordering::SeqCst) >= 2,
        "the outage was met: {log:?}"
    );
    // Each copy of the scenario is 3 messages that need nothing, then the order that needs the
    // receiver. The first order is held at the 4th message; the receive loop may have taken
    // more before that first failure paused it. Without the pause the free slots would have
    // gone on until every one of them held an order: 4 messages per slot, 64.
    assert!(
        *during.lock().unwrap() < 4 * concurrency,
        "pulling paused while messages were held: {} delivered of {n}",
        during.lock().unwrap()
    );
    assert_eq!(
        set(&log.acked),
        origins(&ids),
        "every message acked: {log:?}"
    );
    assert!(log.nacked.is_empty() && log.parked.is_empty(), "{log:?}");
    assert!(
        log.delivered.iter().all(|(_, count)| *count == Some(1)),
        "every message received once: {log:?}"
    );
    assert_eq!((summary.retried, summary.parked), (0, 0));
    assert!(
        receive_until(peer, &dlq, 1, Duration::from_secs(2))
            .await
            .is_empty(),
        "nothing dead-lettered"
    );
    assert_eq!(
        action_keys(&out.contents()).len(),
        20,
        "one release per order, once"
    );
}

/// Shutdown with messages in flight (their actions block): the worker stops after its
/// deadline, the source closes, and every message that was not deleted — abandoned in flight,
/// or received and never handed out — comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_shutdown_with_messages_in_flight_loses_none() {
    let peer = peers::shared_fauxqs().await;
    let url = peers::sqs_create_queue(peer, &peers::unique_name("inflight"), &[]).await;
    let base = scenario_lines("01-authorized-then-order.jsonl");
    let messages: Vec<Vec<u8>> = (0..4).flat_map(|i| scenario_copy(&base, i)).collect();
    let ids = send(peer, &url, &messages).await;

    let visibility = 3;
    let source = connect(peer, &settings(&url, 2, visibility, None)).await;
    let (summary, log) = run_blocked(Box::new(source), 4).await;
    let acked = set(&log.acked);
    let expected: BTreeSet<String> = origins(&ids).difference(&acked).cloned().collect();
    assert!(
        expected.len() >= 4,
        "the four blocked messages at least are unsettled: {log:?} {summary:?}"
    );

    // Abandoned deliveries come back once their (no longer renewed) visibility runs out.
    let back = receive_until(
        peer,
        &url,
        expected.len(),
        Duration::from_secs(visibility + 8),
    )
    .await;
    let back: BTreeSet<String> = back
        .iter()
        .map(|m| format!("sqs:{}", m.message_id().unwrap_or_default()))
        .collect();
    assert_eq!(
        back, expected,
        "every undeleted message, and only those, comes back"
    );
}

/// A delivery being worked on stays invisible past its visibility timeout (the heartbeat
/// renews it); once dropped unsettled, it comes back after the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_visibility_is_renewed_while_held_and_lapses_when_dropped() {
    let peer = peers::shared_fauxqs().await;
    let url = peers::sqs_create_queue(peer, &peers::unique_name("heartbeat"), &[]).await;
    let ids = send(peer, &url, &[b"{}".to_vec()]).await;
    let mut source = connect(peer, &settings(&url, 1, 2, None)).await;
    let held = tokio::time::timeout(Duration::from_secs(10), source.next())
        .await
        .expect("a delivery")
        .expect("no receive error")
        .expect("a delivery");
    assert_eq!(held.origin, first_origin(&ids));

    let stolen = peek_for(peer, &url, Duration::from_secs(5)).await;
    assert!(
        stolen.is_empty(),
        "visible while held (2 s timeout, held 5 s): {stolen:?}"
    );

    drop(held);
    let dropped_at = Instant::now();
    // The pollers are still receiving: the source itself gets it again once the visibility
    // timeout (no longer renewed) runs out.
    let again = tokio::time::timeout(Duration::from_secs(8), source.next())
        .await
        .expect("back within 8 s")
        .expect("no receive error")
        .expect("a delivery");
    assert_eq!(again.origin, first_origin(&ids));
    assert_eq!(again.delivery_count, Some(2));
    assert!(
        dropped_at.elapsed() <= Duration::from_secs(5),
        "{:?}",
        dropped_at.elapsed()
    );
    again.ack().await.map_err(|(e, _)| e).expect("ack");
    source.close().await;
}

/// With nobody taking deliveries, the pollers stop once the source's buffer is full (two
/// batches for one poller) instead of draining the queue; close makes the buffered messages
/// visible again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_a_full_pipeline_stops_receiving_and_close_returns_the_buffer() {
    let peer = peers::shared_fauxqs().await;
    let url = peers::sqs_create_queue(peer, &peers::unique_name("backpressure"), &[]).await;
    let bodies: Vec<Vec<u8>> = (0..45)
        .map(|i| format!("{{\"n\":{i}}}").into_bytes())
        .collect();
    send(peer, &url, &bodies).await;

    let mut source = connect(peer, &settings(&url, 1, 60, None)).await;
    // Let the poller fill its buffer.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (visible, in_flight) = peers::sqs_queue_counts(peer, &url).await;
    assert!(
        in_flight > 0 && in_flight <= 20,
        "buffered at most two batches: {in_flight}"
    );
    assert_eq!(visible + in_flight, 45);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        peers::sqs_queue_counts(peer, &url).await,
        (visible, in_flight),
        "no further receives"
    );

    // Taking one delivery frees room, yet the poller waits for a whole batch of room.
    let one = source.next().await.expect("no error").expect("a delivery");
    one.ack().await.map_err(|(e, _)| e).expect("ack");
    source.close().await;
    assert_eq!(
        peers::sqs_queue_counts(peer, &url).await,
        (44, 0),
        "the buffer is visible again, the ack deleted"
    );
}

/// A queue URL that does not exist fails at connect, not in an endless receive loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_connect_fails_for_a_queue_that_does_not_exist() {
    let peer = peers::shared_moto().await;
    let url = format!(
        "{}/123456789012/{}",
        peer.endpoint,
        peers::unique_name("missing")
    );
    let err = SqsSource::with_client(peers::sqs_client(peer).await, &settings(&url, 1, 30, None))
        .await
        .err()
        .expect("an error");
    assert!(matches!(err, SourceError::Connect(_)), "{err}");
    assert!(
        err.to_string().contains("does not exist") || err.to_string().contains("NonExistentQueue"),
        "{err}"
    );
}

/// `payrules run` with PAYRULES_SOURCE=sqs and the standard AWS variables (AWS_ENDPOINT_URL,
/// AWS_REGION, static credentials) consumes a scenario, prints replay's action, exits 0 on
/// SIGTERM and leaves no message invisible behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_payrules_run_uses_the_aws_environment_and_exits_cleanly_on_sigterm() {
    let peer = peers::shared_fauxqs().await;
    let url = peers::sqs_create_queue(peer, &peers::unique_name("binary"), &[]).await;
    let name = "01-authorized-then-order.jsonl";
    send(peer, &url, &scenario_lines(name)).await;
    let want = replay_keys(name).await;
    let (lines, stderr, code) = run_binary_until_lines(
        &[
            ("PAYRULES_SOURCE", "sqs".into()),
            ("PAYRULES_DRY_RUN_QUEUE_URL", url.clone()),
            ("AWS_ENDPOINT_URL", peer.endpoint.clone()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("PAYRULES_DRY_RUN", "true".into()),
            ("PAYRULES_STATE_URL", "memory:".into()),
            ("PAYRULES_SHUTDOWN_TIMEOUT", "5s".into()),
            // In order: no claim race between the scenario's messages, so no nack whose delay
            // could run out while the source closes.
            ("PAYRULES_CONCURRENCY", "1".into()),
        ],
        want.len(),
    )
    .await;
    assert_eq!(code, Some(0), "exit status; stderr:\n{stderr}");
    assert_eq!(
        action_keys(lines.join("\n").as_bytes()),
        want,
        "stderr:\n{stderr}"
    );
    // SIGTERM came as soon as the action was printed: later messages may still have been
    // buffered. Nothing may stay invisible: close made the buffer visible again.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = peers::sqs_queue_counts(peer, &url).await;
    while last.1 > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = peers::sqs_queue_counts(peer, &url).await;
    }
    assert_eq!(
        last.1, 0,
        "messages left in flight after exit; stderr:\n{stderr}"
    );
}
