//! The shutdown budget: SIGTERM while an effect is still running ends the process within
//! `PAYRULES_SHUTDOWN_TIMEOUT`, and nothing is lost — the unfinished message stays on the queue
//! and the next run delivers the release.
//!
//! Peers are started on first use and never skipped: a missing peer fails the test.
//!
//! A binary of its own, not a module of `tests/it`: cargo runs test binaries one after another,
//! so the shutdown budget is measured while no other test loads the machine's two cores.

// The `it` binary's helpers, of which this test uses a few.
#[allow(dead_code)]
#[path = "it/support/peers.rs"]
mod peers;

#[allow(dead_code)]
#[path = "it/support/ctadmin.rs"]
mod ctadmin;

const PROJECT: &str = "payrules-shutdown";

use std::process::Stdio;
use std::time::{Duration, Instant};

use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

fn worker(queue: &str, endpoint: &str, webhook: &str, mock: &peers::Peer) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_payrules"))
        .arg("run")
        .env_clear()
        .env("PAYRULES_SOURCE", "sqs")
        .env("PAYRULES_SQS_QUEUE_URL", queue)
        .env("PAYRULES_SQS_VISIBILITY_TIMEOUT", "5s")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("PAYRULES_STATE_URL", "memory:")
        // The rules read the live API: a restarted worker sees what the first one saw.
        .env("CTP_PROJECT_KEY", PROJECT)
        .env("CTP_CLIENT_ID", "payrules-shutdown")
        .env("CTP_CLIENT_SECRET", "shutdown-secret")
        .env("CTP_AUTH_URL", &mock.endpoint)
        .env("CTP_API_URL", &mock.endpoint)
        .env("CTP_CHECKOUT_URL", "http://127.0.0.1:9")
        .env("PAYRULES_CANCEL_ENABLED", "false")
        .env("PAYRULES_REFUND_ORPHANED_ENABLED", "false")
        .env("PAYRULES_CANCEL_ON_ORDER_CANCELLED", "false")
        .env("PAYRULES_RELEASE_WEBHOOK_URL", webhook)
        .env(
            "PAYRULES_RELEASE_WEBHOOK_SECRET",
            "whsec_c2h1dGRvd24tdGVzdA==",
        )
        .env("PAYRULES_HTTP_TIMEOUT", "60s")
        .env("PAYRULES_SHUTDOWN_TIMEOUT", "6s")
        .env("PAYRULES_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn payrules run")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_effect_ends_within_the_budget_and_loses_nothing() {
    let fauxqs = peers::shared_fauxqs().await;
    let queue = peers::sqs_create_queue(fauxqs, &peers::unique_name("shutdown"), &[]).await;
    let mock = peers::shared_commercetools_mock().await;
    let admin = ctadmin::Admin::new(mock, PROJECT).await;
    let payment = admin.payment(2500, &[("Authorization", "Success")]).await;
    let order = admin.order_for(&payment, "SHUTDOWN-1").await;
    let order_id = order["id"].as_str().unwrap();
    let now = chrono::Utc::now().to_rfc3339();
    let created = serde_json::json!({
        "notificationType": "Message", "projectKey": PROJECT, "id": format!("m-{order_id}"),
        "version": 1, "sequenceNumber": 1, "resource": {"typeId": "order", "id": order_id},
        "resourceVersion": 1, "type": "OrderCreated", "order": order,
        "createdAt": now, "lastModifiedAt": now,
    });
    peers::sqs_client(fauxqs)
        .await
        .send_message()
        .queue_url(&queue)
        .message_body(created.to_string())
        .send()
        .await
        .expect("SendMessage");

    // A receiver that takes a minute: the release is still running when SIGTERM comes.
    let slow = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204).set_delay(Duration::from_secs(60)))
        .mount(&slow)
        .await;
    let mut child = worker(
        &queue,
        &fauxqs.endpoint,
        &format!("{}/hook", slow.uri()),
        mock,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while slow
        .received_requests()
        .await
        .unwrap_or_default()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the release never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let signalled = Instant::now();
    let pid = child.id().expect("pid").to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("payrules exits after SIGTERM")
        .expect("wait");
    let took = signalled.elapsed();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = e.read_to_string(&mut stderr).await;
    }
    assert!(
        took <= Duration::from_millis(6_800),
        "shutdown took {took:?}, over the 6 s budget\n{stderr}"
    );
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(stderr.contains("shutdown deadline passed"), "{stderr}");
    // The message whose release did not finish was not acked.
    assert!(
        peers::sqs_queue_depth(fauxqs, &queue).await >= 1,
        "{stderr}"
    );

    // A receiver that answers: the next run delivers the release and empties the queue.
    let fast = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&fast)
        .await;
    let mut child = worker(
        &queue,
        &fauxqs.endpoint,
        &format!("{}/hook", fast.uri()),
        mock,
    );
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let delivered = fast.received_requests().await.unwrap_or_default().len();
        if delivered >= 1 && peers::sqs_queue_depth(fauxqs, &queue).await == 0 {
            assert_eq!(delivered, 1, "one release");
            break;
        }
        assert!(Instant::now() < deadline, "the release was lost");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = child.start_kill();
}
