//! The Pub/Sub source against Google's emulator (one per test binary; a fresh topic and
//! subscription per test, ack deadline 10 s, streams asking for the minimum lease extension,
//! 10 s).
//!
//! The emulator hides a missing ack for as long as a lease lasts, so every "nothing comes back"
//! check here runs *after* the source closed, ends the emulator's stale streams (see
//! [`peers::pubsub_end_stale_streams`]) and pulls for longer than a lease: closing nacks whatever
//! is still leased, and anything a stale stream swallowed is back once its lease runs out, so an
//! ack that did nothing shows up. A canary published last proves the pull is not being starved.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use payrules::config::PubsubSettings;
use payrules::source::pubsub::{PARK_REASON_ATTRIBUTE, SOURCE_MESSAGE_ID_ATTRIBUTE};
use payrules::source::{PubsubEndpoint, PubsubOptions, PubsubSource, Source};

use crate::support::binary::run_binary_until_lines;
use crate::support::broker::{
    Recording, action_keys, dry_run, replay_keys, run_blocked, run_recorded, scenario_copy, set,
    worker,
};
use crate::support::fixtures::scenario_lines;
use crate::support::peers::{self, Peer, PubsubResources, PulledMessage};

const PROJECT: &str = "payrules-it";
const ACK_DEADLINE_SECS: u32 = 10;
/// The streams' lease extension: a message leased by a stream that went away is back after it.
const LEASE: Duration = Duration::from_secs(10);

async fn emulator() -> &'static Peer {
    peers::shared_pubsub_emulator().await
}

/// A fresh topic and subscription; with `dead_letter_policy`, the subscription dead-letters
/// after 5 attempts (and then reports delivery attempts).
async fn fresh(peer: &Peer, dead_letter_policy: bool) -> PubsubResources {
    let topic = peers::unique_name("orders");
    let sub = peers::unique_name("orders-sub");
    let dlq = peers::unique_name("orders-dlq");
    peers::create_topic_and_subscription(
        peer,
        PROJECT,
        &topic,
        &sub,
        ACK_DEADLINE_SECS,
        dead_letter_policy.then_some((dlq.as_str(), 5)),
    )
    .await
}

fn settings(subscription: &str, streams: usize, dead_letter_topic: Option<&str>) -> PubsubSettings {
    PubsubSettings {
        subscription: subscription.to_string(),
        streams,
        max_outstanding_messages: 100,
        max_outstanding_bytes: 10 * 1024 * 1024,
        dead_letter_topic: dead_letter_topic.map(str::to_string),
    }
}

async fn connect(peer: &Peer, settings: &PubsubSettings) -> PubsubSource {
    PubsubSource::connect_with(
        settings,
        PubsubOptions {
            endpoint: PubsubEndpoint::Emulator(peer.host_port()),
            lease_extension: LEASE,
        },
    )
    .await
    .expect("connect to the emulator")
}

/// Publishes each message in order; returns the message ids.
async fn publish(peer: &Peer, topic: &str, messages: &[Vec<u8>]) -> Vec<String> {
    let mut ids = Vec::new();
    for m in messages {
        ids.push(peers::pubsub_publish(peer, topic, m, &[("source", "payrules-it")]).await);
    }
    ids
}

/// Pulls (and acks) everything the subscription hands out within `window`.
async fn pull_for(peer: &Peer, subscription: &str, window: Duration) -> Vec<PulledMessage> {
    let deadline = Instant::now() + window;
    let mut all = Vec::new();
    while Instant::now() < deadline {
        let got = peers::pubsub_pull(peer, subscription, 100, true).await;
        if got.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        all.extend(got);
    }
    all
}

/// Pulls (and acks) until `want` messages arrived or `limit` passed.
async fn pull_until(
    peer: &Peer,
    subscription: &str,
    want: usize,
    limit: Duration,
) -> Vec<PulledMessage> {
    let deadline = Instant::now() + limit;
    let mut all = Vec::new();
    while all.len() < want && Instant::now() < deadline {
        let got = peers::pubsub_pull(peer, subscription, 100, true).await;
        if got.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        all.extend(got);
    }
    all
}

/// After a source on `res.subscription` closed: ends the emulator's stale streams, then pulls
/// (and acks) until `want` messages came back or a lease and a half passed; finally checks with
/// a canary that the pull gets what is published. Returns what came back (without the canary).
async fn back_after_close(peer: &Peer, res: &PubsubResources, want: usize) -> Vec<PulledMessage> {
    peers::pubsub_end_stale_streams(peer, &res.subscription).await;
    let limit = LEASE + Duration::from_secs(5);
    let back = if want == 0 {
        pull_for(peer, &res.subscription, LEASE + Duration::from_millis(1500)).await
    } else {
        pull_until(peer, &res.subscription, want, limit).await
    };
    let canary = peers::pubsub_publish(peer, &res.topic, b"canary", &[]).await;
    let got = pull_until(peer, &res.subscription, 1, Duration::from_secs(5)).await;
    assert!(
        got.iter().any(|m| m.message_id == canary),
        "the canary reached the pull (no stale stream is taking messages): {got:?}"
    );
    back.into_iter()
        .chain(got.into_iter().filter(|m| m.message_id != canary))
        .collect()
}

fn origins(ids: &[String]) -> BTreeSet<String> {
    ids.iter().map(|id| format!("pubsub:{id}")).collect()
}

/// Scenarios 01 and 11 published through the emulator and run by the worker (dry run,
/// concurrency 1) plan exactly the actions replay plans, each once; every message is acked,
/// and nothing comes back on the subscription after the source closed. The two scenarios run
/// at once, each on its own topic and subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_worker_plans_the_replay_actions_and_acks_every_message() {
    // Scenario 11 depends on message order: one stream keeps publish order.
    futures::future::join(
        scenario_through_pubsub("01-authorized-then-order.jsonl", 2),
        scenario_through_pubsub("11-checkout-order-creation-failed.jsonl", 1),
    )
    .await;
}

async fn scenario_through_pubsub(name: &str, streams: usize) {
    let peer = emulator().await;
    let res = fresh(peer, false).await;
    let lines = scenario_lines(name);
    let ids = publish(peer, &res.topic, &lines).await;

    let source = connect(peer, &settings(&res.subscription, streams, None)).await;
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
        log.delivered.iter().all(|(_, count)| count.is_none()),
        "{name}: without a dead-letter policy Pub/Sub reports no delivery attempt: {log:?}"
    );
    assert_eq!(
        action_keys(&out),
        replay_keys(name).await,
        "{name}: the same actions as replay, each once"
    );
    let back = back_after_close(peer, &res, 0).await;
    assert!(
        back.is_empty(),
        "{name}: acked messages came back: {back:?}"
    );
}

/// A nack with a delay is redelivered after that delay (not at once, not never), with the
/// next delivery attempt; an ack then settles it for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_nack_redelivers_after_the_delay_with_the_next_attempt() {
    let peer = emulator().await;
    let res = fresh(peer, true).await;
    let id = peers::pubsub_publish(peer, &res.topic, b"{\"n\":1}", &[("kind", "test")]).await;
    let mut source = connect(peer, &settings(&res.subscription, 1, None)).await;

    let first = tokio::time::timeout(Duration::from_secs(20), source.next())
        .await
        .expect("a delivery within 20 s")
        .expect("no receive error")
        .expect("a delivery");
    assert_eq!(first.origin, format!("pubsub:{id}"));
    assert_eq!(first.delivery_count, Some(1));
    assert_eq!(
        first.attributes.get("kind").map(String::as_str),
        Some("test")
    );
    assert_eq!(&first.payload[..], b"{\"n\":1}");

    let delay = Duration::from_secs(2);
    let nacked_at = Instant::now();
    first.nack(delay).await.map_err(|(e, _)| e).expect("nack");
    let second = tokio::time::timeout(Duration::from_secs(20), source.next())
        .await
        .expect("redelivered within 20 s")
        .expect("no receive error")
        .expect("a delivery");
    let waited = nacked_at.elapsed();
    assert_eq!(second.origin, format!("pubsub:{id}"));
    assert_eq!(second.delivery_count, Some(2));
    assert!(
        waited >= delay - Duration::from_millis(100),
        "redelivered after {waited:?}, before the {delay:?} delay"
    );
    second.ack().await.map_err(|(e, _)| e).expect("ack");
    source.close().await;

    let back = back_after_close(peer, &res, 0).await;
    assert!(back.is_empty(), "the acked message came back: {back:?}");
}

/// An undecodable message is parked: published to the configured dead-letter topic with its
/// data, its attributes and the reason, then acked on the main subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_poison_is_parked_on_the_dead_letter_topic_and_not_redelivered() {
    let peer = emulator().await;
    let res = fresh(peer, false).await;
    let dlq = peers::create_topic_and_subscription(
        peer,
        PROJECT,
        &peers::unique_name("parked"),
        &peers::unique_name("parked-sub"),
        ACK_DEADLINE_SECS,
        None,
    )
    .await;
    let poison = b"{not json".to_vec();
    let id = peers::pubsub_publish(peer, &res.topic, &poison, &[("kind", "poison")]).await;

    let source = connect(peer, &settings(&res.subscription, 1, Some(&dlq.topic))).await;
    let (summary, log, _) = run_recorded(Box::new(source), |log| !log.parked.is_empty()).await;
    assert_eq!(summary.parked, 1);
    assert_eq!(log.parked.len(), 1, "{log:?}");
    assert!(log.acked.is_empty(), "{log:?}");

    let parked = pull_until(peer, &dlq.subscription, 1, Duration::from_secs(10)).await;
    assert_eq!(parked.len(), 1, "{parked:?}");
    let m = &parked[0];
    assert_eq!(m.data, poison);
    assert_eq!(m.attributes.get("kind").map(String::as_str), Some("poison"));
    let reason = m.attributes.get(PARK_REASON_ATTRIBUTE).expect("a reason");
    assert!(reason.contains("undecodable"), "{reason}");
    assert_eq!(
        m.attributes
            .get(SOURCE_MESSAGE_ID_ATTRIBUTE)
            .map(String::as_str),
        Some(id.as_str())
    );
    let back = back_after_close(peer, &res, 0).await;
    assert!(back.is_empty(), "the parked message came back: {back:?}");
}

/// Without a dead-letter topic, parking nacks: the subscription's dead-letter policy (5
/// attempts) moves the message to its dead-letter topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_poison_without_a_topic_is_left_to_the_subscription_dead_letter_policy() {
    let peer = emulator().await;
    let res = fresh(peer, true).await;
    let dlq_sub = res
        .dead_letter_subscription
        .clone()
        .expect("a DLQ subscription");
    let poison = b"\xff\xfe not utf-8".to_vec();
    peers::pubsub_publish(peer, &res.topic, &poison, &[]).await;

    let source = connect(peer, &settings(&res.subscription, 1, None)).await;
    let (source, log) = Recording::new(Box::new(source));
    let (executor, _) = dry_run();
    let dead_lettered = Arc::new(std::sync::Mutex::new(Vec::new()));
    let into = dead_lettered.clone();
    let summary = worker(executor, 1, Duration::from_secs(5))
        .run(Box::new(source), async {
            let got = pull_until(peer, &dlq_sub, 1, Duration::from_secs(30)).await;
            *into.lock().unwrap() = got;
        })
        .await;
    let got = dead_lettered.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "dead-lettered by the policy: {got:?}");
    assert_eq!(got[0].data, poison);
    assert_eq!(
        got[0]
            .attributes
            .get("CloudPubSubDeadLetterSourceDeliveryCount")
            .map(String::as_str),
        Some("5")
    );
    let log = log.lock().unwrap().clone();
    assert_eq!(
        summary.parked, 5,
        "parked (nacked) on each of the 5 attempts: {log:?}"
    );
    let counts: Vec<Option<u32>> = log.delivered.iter().map(|d| d.1).collect();
    assert_eq!(counts, (1..=5).map(Some).collect::<Vec<_>>());
}

/// Shutdown with messages in flight (their actions block): the worker stops after its
/// deadline, the source closes, and every message that was not acked — in flight, leased by
/// the library or waiting in the source — is on the subscription again (at once, or, if the
/// emulator's stale stream swallowed it, once its 10 s lease ran out), and no acked one is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_shutdown_with_messages_in_flight_loses_none() {
    let peer = emulator().await;
    let res = fresh(peer, false).await;
    let base = scenario_lines("01-authorized-then-order.jsonl");
    let messages: Vec<Vec<u8>> = (0..4).flat_map(|i| scenario_copy(&base, i)).collect();
    let ids = publish(peer, &res.topic, &messages).await;

    let source = connect(peer, &settings(&res.subscription, 1, None)).await;
    let (summary, log) = run_blocked(Box::new(source), 4).await;
    let acked = set(&log.acked);
    let expected: BTreeSet<String> = origins(&ids).difference(&acked).cloned().collect();
    assert!(
        expected.len() >= 4,
        "the four blocked messages at least are unsettled: {log:?} {summary:?}"
    );

    let back = back_after_close(peer, &res, expected.len()).await;
    let back: BTreeSet<String> = back
        .iter()
        .map(|m| format!("pubsub:{}", m.message_id))
        .collect();
    assert_eq!(
        back, expected,
        "every unacked message, and only those, comes back"
    );
}

/// `payrules run` with PAYRULES_SOURCE=pubsub and PUBSUB_EMULATOR_HOST (anonymous credentials)
/// consumes a scenario, prints replay's action, and exits 0 on SIGTERM. (Its streams use the
/// production lease of 60 s, so redelivery is checked by the tests above, not here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_payrules_run_uses_the_emulator_host_and_exits_cleanly_on_sigterm() {
    let peer = emulator().await;
    let res = fresh(peer, false).await;
    let name = "01-authorized-then-order.jsonl";
    publish(peer, &res.topic, &scenario_lines(name)).await;
    let want = replay_keys(name).await;
    let (lines, stderr, code) = run_binary_until_lines(
        &[
            ("PAYRULES_SOURCE", "pubsub".into()),
            ("PAYRULES_DRY_RUN_SUBSCRIPTION", res.subscription.clone()),
            ("PUBSUB_EMULATOR_HOST", peer.host_port()),
            ("PAYRULES_DRY_RUN", "true".into()),
            ("PAYRULES_STATE_URL", "memory:".into()),
            ("PAYRULES_SHUTDOWN_TIMEOUT", "5s".into()),
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
    assert!(stderr.contains("Pub/Sub source closed"), "{stderr}");
}
