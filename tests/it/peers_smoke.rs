//! Smoke tests of the local test peers (tests/it/support/peers.rs): each one starts, answers one
//! trivial request, and stops when dropped. Needs `bash scripts/peers/install.sh`
//! (scripts/test.sh runs it).

use crate::support::peers;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[tokio::test]
async fn pubsub_emulator_creates_topic_subscription_and_round_trips_a_message() {
    let started = Instant::now();
    let peer = peers::pubsub_emulator().await;
    eprintln!(
        "pubsub-emulator ready in {:?} at {}",
        started.elapsed(),
        peer.endpoint
    );

    let project = "payrules-test";
    let topic = peers::unique_name("orders");
    let sub = peers::unique_name("orders-sub");
    let dlq = peers::unique_name("orders-dlq");
    let res =
        peers::create_topic_and_subscription(&peer, project, &topic, &sub, 10, Some((&dlq, 5)))
            .await;
    assert_eq!(res.topic, format!("projects/{project}/topics/{topic}"));
    assert_eq!(
        res.subscription,
        format!("projects/{project}/subscriptions/{sub}")
    );
    assert_eq!(
        res.dead_letter_topic.as_deref(),
        Some(format!("projects/{project}/topics/{dlq}").as_str())
    );

    let id = peers::pubsub_publish(
        &peer,
        &res.topic,
        b"hello world",
        &[("type", "payment.authorized")],
    )
    .await;
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.is_empty() && Instant::now() < deadline {
        got = peers::pubsub_pull(&peer, &res.subscription, 10, true).await;
    }
    assert_eq!(got.len(), 1, "pulled {got:?}");
    assert_eq!(got[0].message_id, id);
    assert_eq!(got[0].data, b"hello world");
    assert_eq!(
        got[0].attributes.get("type").map(String::as_str),
        Some("payment.authorized")
    );
    assert_eq!(
        got[0].delivery_attempt,
        Some(1),
        "a DLQ policy makes the emulator count attempts"
    );
}

#[tokio::test]
async fn shared_pubsub_emulator_is_one_instance() {
    let a = peers::shared_pubsub_emulator().await;
    let b = peers::shared_pubsub_emulator().await;
    assert!(std::ptr::eq(a, b));
    let topic = peers::unique_name("shared");
    let sub = peers::unique_name("shared-sub");
    let res =
        peers::create_topic_and_subscription(a, "payrules-test", &topic, &sub, 10, None).await;
    assert!(res.dead_letter_topic.is_none());
    // Creating the same topic again is a conflict on the same (shared) emulator.
    let resp = reqwest::Client::new()
        .put(format!("{}/v1/{}", b.endpoint, res.topic))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 409);
}

#[tokio::test]
async fn fauxqs_creates_a_queue_over_the_json_protocol() {
    let started = Instant::now();
    let peer = peers::fauxqs().await;
    eprintln!(
        "fauxqs ready in {:?} at {}",
        started.elapsed(),
        peer.endpoint
    );

    let name = peers::unique_name("orders");
    let created = peers::sqs_call(&peer, "CreateQueue", json!({ "QueueName": name }))
        .await
        .unwrap();
    let url = created["QueueUrl"].as_str().unwrap().to_string();
    assert_eq!(url, format!("{}/000000000000/{name}", peer.endpoint));

    let sent = peers::sqs_call(
        &peer,
        "SendMessage",
        json!({ "QueueUrl": url, "MessageBody": "hi" }),
    )
    .await
    .unwrap();
    assert!(sent["MessageId"].is_string(), "{sent}");
    let got = peers::sqs_call(
        &peer,
        "ReceiveMessage",
        json!({ "QueueUrl": url, "WaitTimeSeconds": 1 }),
    )
    .await
    .unwrap();
    assert_eq!(got["Messages"][0]["Body"], "hi");

    let err = peers::sqs_call(
        &peer,
        "GetQueueUrl",
        json!({ "QueueName": "payrules-no-such-queue" }),
    )
    .await
    .unwrap_err();
    assert_eq!(err.status, 400);
    assert_eq!(err.error_type, "com.amazonaws.sqs#QueueDoesNotExist");

    // The SDK path works on fauxqs too.
    let (q, dlq) =
        peers::sqs_create_queue_with_dlq(&peer, &peers::unique_name("redrive"), 5, 2).await;
    assert!(
        q.starts_with(&peer.endpoint) && dlq.ends_with("-dlq"),
        "{q} {dlq}"
    );
}

#[tokio::test]
async fn moto_creates_a_queue_with_the_sdk() {
    let started = Instant::now();
    let peer = peers::moto().await;
    eprintln!("moto ready in {:?} at {}", started.elapsed(), peer.endpoint);

    let client = peers::sqs_client(&peer).await;
    let name = peers::unique_name("orders");
    let out = client
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .unwrap();
    assert_eq!(
        out.queue_url(),
        Some(format!("{}/123456789012/{name}", peer.endpoint).as_str())
    );

    let missing = client
        .get_queue_url()
        .queue_name("payrules-no-such-queue")
        .send()
        .await
        .unwrap_err();
    assert!(missing.into_service_error().is_queue_does_not_exist());

    let (q, dlq) =
        peers::sqs_create_queue_with_dlq(&peer, &peers::unique_name("redrive"), 5, 2).await;
    let arn = peers::sqs_queue_arn(&peer, &dlq).await;
    assert!(
        arn.starts_with("arn:aws:sqs:us-east-1:123456789012:"),
        "{arn}"
    );
    assert!(q.starts_with(&peer.endpoint), "{q}");
}

#[tokio::test]
async fn commercetools_mock_issues_a_token_and_creates_a_payment() {
    let started = Instant::now();
    let peer = peers::commercetools_mock().await;
    eprintln!(
        "commercetools-mock ready in {:?} at {}",
        started.elapsed(),
        peer.endpoint
    );

    let project = peers::unique_name("proj");
    let http = reqwest::Client::new();
    let url = format!("{}/{project}/payments", peer.endpoint);
    let draft = json!({
        "key": "pay-1",
        "amountPlanned": { "currencyCode": "EUR", "centAmount": 1999 },
        "transactions": [{ "type": "Authorization", "amount": { "currencyCode": "EUR", "centAmount": 1999 },
                           "state": "Pending", "interactionId": "psp-auth-1" }]
    });

    // Authentication is enforced.
    let anon = http.post(&url).json(&draft).send().await.unwrap();
    assert_eq!(anon.status().as_u16(), 401);

    let token = peers::ctmock_token(
        &peer,
        "payrules",
        "secret",
        &format!("manage_project:{project}"),
    )
    .await;
    let resp = http
        .post(&url)
        .bearer_auth(&token)
        .json(&draft)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let payment: Value = resp.json().await.unwrap();
    assert_eq!(payment["version"], 1);
    assert_eq!(payment["amountPlanned"]["centAmount"], 1999);
    assert_eq!(payment["transactions"][0]["state"], "Pending");

    // Validated credentials: a token the mock did not issue is rejected.
    let bogus = http
        .get(&url)
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(bogus.status().as_u16(), 401);
}

#[tokio::test]
async fn dropping_a_peer_stops_it() {
    let peer = peers::fauxqs().await;
    let addr = format!("127.0.0.1:{}", peer.port);
    assert!(std::net::TcpStream::connect(&addr).is_ok());
    let pgid = peer.pid();
    drop(peer);
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "fauxqs still listening on {addr}"
    );
    // Nothing is left in the peer's process group (`kill -0 -- -PGID` fails).
    let alive = std::process::Command::new("kill")
        .args(["-0", "--", &format!("-{pgid}")])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(!alive, "processes left in group {pgid}");
}

#[tokio::test]
async fn a_peer_that_cannot_start_panics_with_a_clear_message() {
    let joined = tokio::spawn(peers::start(peers::PeerSpec {
        name: "broken",
        program: "/bin/sh".into(),
        args: vec![
            "-c".into(),
            "echo 'broken peer: cannot start' >&2; exit 3".into(),
        ],
        env: vec![],
        ready_path: "/".into(),
        ready: |s| s == 200,
    }))
    .await;
    let payload = joined
        .err()
        .expect("starting a broken peer must panic")
        .into_panic();
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    for needle in [
        "`broken`",
        "command: /bin/sh -c",
        "broken peer: cannot start",
        "exit status: 3",
        "scripts/peers/install.sh",
    ] {
        assert!(
            msg.contains(needle),
            "panic message lacks {needle:?}:\n{msg}"
        );
    }
}

#[test]
fn base64_round_trips() {
    for s in [
        "",
        "f",
        "fo",
        "foo",
        "foob",
        "fooba",
        "foobar",
        "hello world",
    ] {
        let enc = peers::base64_encode(s.as_bytes());
        assert_eq!(peers::base64_decode(&enc), s.as_bytes(), "{s} -> {enc}");
    }
    assert_eq!(peers::base64_encode(b"hello world"), "aGVsbG8gd29ybGQ=");
}

#[test]
fn unique_names_differ() {
    let a = peers::unique_name("q");
    let b = peers::unique_name("q");
    assert_ne!(a, b);
    assert!(a.starts_with("q-") && a.len() < 40, "{a}");
}
