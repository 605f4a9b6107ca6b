//! `payrules reconcile` after an outage, against commercetools-mock with its Messages API on
//! (`CTMOCK_MESSAGES=1`): the traffic of the outage is only in the Messages API (no
//! Subscription delivered it), reconcile takes exactly the actions it calls for, a second run
//! takes none, a dry run executes nothing and writes no ledger, and a window of about 2,000
//! messages is read across many pages.
//!
//! Peers are started on first use and never skipped: a missing peer fails the test.

#[path = "it/peers.rs"]
mod peers;

#[path = "it/ctadmin.rs"]
mod ctadmin;

#[path = "it/ctmessages.rs"]
mod ctmessages;

use std::collections::BTreeSet;

use serde_json::{Value, json};
use tokio::sync::OnceCell;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use ctadmin::Admin;
use peers::Peer;

static MOCK: OnceCell<Peer> = OnceCell::const_new();

/// The mock with Messages on (no Subscription is ever created: nothing is delivered).
async fn mock() -> &'static Peer {
    MOCK.get_or_init(|| ctmessages::commercetools_mock_with_messages("127.0.0.1:1"))
        .await
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn reconcile(
    mock: &Peer,
    project: &str,
    state: &std::path::Path,
    checkout: &str,
    webhook: &str,
    extra: &[&str],
) -> Run {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_payrules"))
        .args(["reconcile", "--since", "1h"])
        .args(extra)
        .env_clear()
        .env("CTP_PROJECT_KEY", project)
        .env("CTP_CLIENT_ID", "reconcile")
        .env("CTP_CLIENT_SECRET", "reconcile-secret")
        .env("CTP_AUTH_URL", &mock.endpoint)
        .env("CTP_API_URL", &mock.endpoint)
        .env("CTP_CHECKOUT_URL", checkout)
        .env(
            "PAYRULES_STATE_URL",
            format!("sqlite://{}", state.display()),
        )
        .env("PAYRULES_GRACE_PERIOD", "1s")
        .env("PAYRULES_RELEASE_WEBHOOK_URL", webhook)
        .env(
            "PAYRULES_RELEASE_WEBHOOK_SECRET",
            "whsec_cmVjb25jaWxlLXRlc3Q=",
        )
        .env("PAYRULES_LOG", "warn")
        .output()
        .expect("payrules reconcile");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn keys(stdout: &str) -> BTreeSet<String> {
    stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            v["key"].as_str().unwrap().to_string()
        })
        .collect()
}

async fn stubs() -> (MockServer, MockServer) {
    let checkout = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"outcome": "approved"})))
        .mount(&checkout)
        .await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&receiver)
        .await;
    (checkout, receiver)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_takes_what_the_outage_left_undone_once() {
    let mock = mock().await;
    let project = "payrules-reconcile";
    let admin = Admin::new(mock, project).await;
    // The outage's traffic: two paid orders, one half-paid order, one orphan authorization.
    let mut orders = Vec::new();
    for n in 0..2 {
        let p = admin.payment(3000, &[("Authorization", "Success")]).await;
        let o = admin.order_for(&p, &format!("REC-{n}")).await;
        orders.push(o["id"].as_str().unwrap().to_string());
    }
    let half = admin.payment(0, &[("Authorization", "Failure")]).await;
    admin.order_for(&half, "REC-HALF").await;
    let orphan = admin.payment(1500, &[("Authorization", "Success")]).await;
    // The grace period (1 s) of the orphan runs out.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    let (checkout, receiver) = stubs().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let hook = format!("{}/hook", receiver.uri());

    // A dry run: the actions, as JSON lines, and nothing executed or written.
    let dry = reconcile(
        mock,
        project,
        &state,
        &checkout.uri(),
        &hook,
        &["--dry-run"],
    );
    assert_eq!(dry.code, Some(0), "{}", dry.stderr);
    let mut want: BTreeSet<String> = orders.iter().map(|o| format!("release:{o}")).collect();
    want.insert(format!("cancel:{orphan}"));
    assert_eq!(keys(&dry.stdout), want, "{}", dry.stderr);
    assert!(receiver.received_requests().await.unwrap().is_empty());
    assert!(checkout.received_requests().await.unwrap().is_empty());

    let first = reconcile(mock, project, &state, &checkout.uri(), &hook, &[]);
    eprint!("{}", dry.stdout);
    eprint!("{}{}", dry.stderr, first.stderr);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    assert!(
        first
            .stderr
            .contains("actions taken: 1 cancel_payment, 2 release_order"),
        "{}",
        first.stderr
    );
    let released: BTreeSet<String> = receiver
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            v["order_id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(released, orders.iter().cloned().collect());
    assert_eq!(receiver.received_requests().await.unwrap().len(), 2);
    let cancels = checkout.received_requests().await.unwrap();
    assert_eq!(cancels.len(), 1);
    assert!(cancels[0].url.path().ends_with(&orphan));

    // Again: nothing twice.
    let second = reconcile(mock, project, &state, &checkout.uri(), &hook, &[]);
    assert_eq!(second.code, Some(0), "{}", second.stderr);
    assert!(
        second.stderr.contains("actions taken: none"),
        "{}",
        second.stderr
    );
    assert_eq!(receiver.received_requests().await.unwrap().len(), 2);
    assert_eq!(checkout.received_requests().await.unwrap().len(), 1);
    // And a dry run now finds everything done.
    let dry = reconcile(
        mock,
        project,
        &state,
        &checkout.uri(),
        &hook,
        &["--dry-run"],
    );
    assert_eq!(dry.stdout, "", "{}", dry.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_of_two_thousand_messages_is_read_page_by_page() {
    let mock = mock().await;
    let project = "payrules-reconcile-pages";
    let admin = Admin::new(mock, project).await;
    let mut orphans = BTreeSet::new();
    let mut handles = Vec::new();
    let admin = std::sync::Arc::new(admin);
    for _ in 0..4 {
        let a = admin.clone();
        handles.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..500 {
                ids.push(a.payment(100, &[("Authorization", "Success")]).await);
            }
            ids
        }));
    }
    for h in handles {
        orphans.extend(h.await.unwrap());
    }
    let total = {
        let page = admin.get("messages?limit=1&withTotal=true").await;
        page["total"].as_u64().unwrap() as usize
    };
    assert!(total >= 2_000, "{total} messages generated");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    let (checkout, receiver) = stubs().await;
    let dir = tempfile::tempdir().unwrap();
    let run = reconcile(
        mock,
        project,
        &dir.path().join("state.db"),
        &checkout.uri(),
        &format!("{}/hook", receiver.uri()),
        &["--dry-run", "--page-size", "150"],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(": {total} messages read")),
        "every message read once: {}",
        run.stderr
    );
    let want: BTreeSet<String> = orphans.iter().map(|p| format!("cancel:{p}")).collect();
    assert_eq!(keys(&run.stdout), want);
    assert_eq!(run.stdout.lines().count(), orphans.len(), "each once");
}

/// Without the Messages API (a project without messages enabled; the plain mock answers 404),
/// reconcile says so and sweeps payments with a successful transaction modified in the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_messages_api_payments_are_swept() {
    let mock = peers::shared_commercetools_mock().await;
    let project = "payrules-reconcile-sweep";
    let admin = Admin::new(mock, project).await;
    let paid = admin.payment(2000, &[("Authorization", "Success")]).await;
    let order = admin.order_for(&paid, "SWEEP-1").await;
    let order_id = order["id"].as_str().unwrap().to_string();
    let pending = admin.payment(2000, &[("Authorization", "Pending")]).await;
    admin.order_for(&pending, "SWEEP-2").await;
    let (checkout, receiver) = stubs().await;
    let dir = tempfile::tempdir().unwrap();
    let run = reconcile(
        mock,
        project,
        &dir.path().join("state.db"),
        &checkout.uri(),
        &format!("{}/hook", receiver.uri()),
        &["--dry-run"],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("(query sweep: the Messages API is not enabled): 1 payments read"),
        "{}",
        run.stderr
    );
    assert_eq!(
        keys(&run.stdout),
        BTreeSet::from([format!("release:{order_id}")])
    );
}
