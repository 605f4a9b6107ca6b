//! `payrules reconcile` after an outage, against commercetools-mock with its Messages API on
//! (`CTMOCK_MESSAGES=1`): the traffic of the outage is only in the Messages API (no
//! Subscription delivered it), reconcile takes exactly the actions it calls for, a second run
//! takes none, a dry run executes nothing and writes no ledger, and a window of about 2,000
//! messages is read across many pages. Run while the worker runs (`payrules run` on the same
//! messages, two reconciles beside it, one PostgreSQL store), every release and every cancel
//! still happens exactly once and every process exits 0
//! (`reconcile_while_the_worker_runs_executes_nothing_twice`).
//!
//! Peers are started on first use and never skipped: a missing peer fails the test.

use crate::support::peers;

use crate::support::ctadmin;

use crate::support::ctmessages;

use crate::support::pg;

use crate::support::binary;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use payrules::effects::webhook::KEY_HEADER;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
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

/// The environment `payrules reconcile` (and `run`) get: commercetools is the mock, Checkout and
/// the release webhook are the stubs, the state store is `state_url`.
fn env(
    mock: &Peer,
    project: &str,
    state_url: &str,
    checkout: &str,
    webhook: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("CTP_PROJECT_KEY", project.into()),
        ("CTP_CLIENT_ID", "reconcile".into()),
        ("CTP_CLIENT_SECRET", "reconcile-secret".into()),
        ("CTP_AUTH_URL", mock.endpoint.clone()),
        ("CTP_API_URL", mock.endpoint.clone()),
        ("CTP_CHECKOUT_URL", checkout.into()),
        ("PAYRULES_STATE_URL", state_url.into()),
        ("PAYRULES_GRACE_PERIOD", "1s".into()),
        ("PAYRULES_ALLOW_SHORT_GRACE_PERIOD", "true".into()),
        ("PAYRULES_RELEASE_WEBHOOK_URL", webhook.into()),
        (
            "PAYRULES_RELEASE_WEBHOOK_SECRET",
            "whsec_cmVjb25jaWxlLXRlc3Q=".into(),
        ),
        ("PAYRULES_LOG", "warn".into()),
    ]
}

fn reconcile(
    mock: &Peer,
    project: &str,
    state: &std::path::Path,
    checkout: &str,
    webhook: &str,
    extra: &[&str],
) -> Run {
    let mut args = vec!["reconcile", "--since", "1h"];
    args.extend(extra);
    payrules(mock, project, state, checkout, webhook, &args)
}

/// `payrules ARGS` in `env`'s environment.
fn payrules(
    mock: &Peer,
    project: &str,
    state: &std::path::Path,
    checkout: &str,
    webhook: &str,
    args: &[&str],
) -> Run {
    payrules_with(mock, project, state, (checkout, webhook), args, &[])
}

/// [`payrules`] with `more` added to the environment.
fn payrules_with(
    mock: &Peer,
    project: &str,
    state: &std::path::Path,
    (checkout, webhook): (&str, &str),
    args: &[&str],
    more: &[(&str, &str)],
) -> Run {
    let state_url = format!("sqlite://{}", state.display());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_payrules"))
        .args(args)
        .env_clear()
        .envs(env(mock, project, &state_url, checkout, webhook))
        .envs(more.iter().copied())
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
    let half = admin.payment(3000, &[("Authorization", "Failure")]).await;
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
    // `dry_run = true` in the configuration, without `--dry-run`: a dry run too — the same
    // lines, nothing executed, nothing written to the ledger (the real run below still takes
    // every action).
    let configured = payrules_with(
        mock,
        project,
        &state,
        (&checkout.uri(), &hook),
        &["reconcile", "--since", "1h"],
        &[("PAYRULES_DRY_RUN", "true")],
    );
    assert_eq!(configured.code, Some(0), "{}", configured.stderr);
    assert_eq!(keys(&configured.stdout), want, "{}", configured.stderr);
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
    let released = released_orders(&receiver).await;
    assert_eq!(released.len(), 2, "{released:?}");
    assert_eq!(
        released.into_iter().collect::<BTreeSet<_>>(),
        orders.iter().cloned().collect()
    );
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

    // `payrules explain`, live, reads from the ledger when and on which message each action ran,
    // and when the orphan's grace-period check fired.
    let explain = |args: &[&str]| {
        let run = payrules(mock, project, &state, &checkout.uri(), &hook, args);
        assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
        run.stdout
    };
    let why: Value = serde_json::from_str(&explain(&["explain", "order", &orders[0], "--json"]))
        .expect("one JSON object");
    assert_eq!(why["verdict"], "released", "{why:#}");
    let entry = &why["ledger"][0];
    assert_eq!(entry["key"], format!("release:{}", orders[0]), "{why:#}");
    assert!(
        entry["at"].as_str().is_some_and(|t| t.starts_with("20")),
        "{why:#}"
    );
    assert!(entry["message_id"].as_str().is_some(), "{why:#}");
    let text = explain(&["explain", "order", &orders[0]]);
    eprintln!("{text}");
    assert!(text.contains("released at 20"), "{text}");
    assert!(text.contains(" by message "), "{text}");

    let why: Value = serde_json::from_str(&explain(&["explain", "payment", &orphan, "--json"]))
        .expect("one JSON object");
    assert_eq!(why["verdict"], "cancelled", "{why:#}");
    let timer = &why["timer"];
    assert!(timer["due"].as_str().is_some(), "{why:#}");
    assert!(timer["scheduled"]["at"].as_str().is_some(), "{why:#}");
    assert!(timer["fired"]["at"].as_str().is_some(), "{why:#}");
    let cancel = &why["ledger"][0];
    assert_eq!(cancel["key"], format!("cancel:{orphan}"), "{why:#}");
    assert_eq!(cancel["status"], "done", "{why:#}");
    assert!(cancel["at"].as_str().is_some(), "{why:#}");
    assert_eq!(cancel["origin"], "grace-period check", "{why:#}");
    assert_eq!(cancel["reason"], "grace_period_expired", "{why:#}");
    let text = explain(&["explain", "payment", &orphan]);
    eprintln!("{text}");
    assert!(text.contains("by its grace-period check"), "{text}");
    assert!(text.contains("(grace_period_expired)"), "{text}");
    assert!(text.contains("fired at 20"), "{text}");
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

/// The webhook receiver's order ids, in arrival order.
async fn released_orders(receiver: &MockServer) -> Vec<String> {
    receiver
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            v["order_id"].as_str().unwrap().to_string()
        })
        .collect()
}

/// A payment of `cents` authorized and an order for it; the order's id.
async fn paid_order(admin: &Admin, cents: i64, number: &str) -> String {
    let payment = admin.payment(cents, &[("Authorization", "Success")]).await;
    admin.order_for(&payment, number).await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Issue 16's outage, end to end. `payrules subscription create` makes the mock deliver to the
/// Pub/Sub emulator and `payrules run` (live executors, a SQLite ledger) releases a paid order.
/// Then the Subscription is deleted; while it is gone a second order is paid and an orphan
/// authorization runs out of its grace period. The Subscription is recreated and a third order
/// is paid and released. After the worker stopped, `reconcile` takes exactly the release and
/// the cancel the dropped Messages called for, and a second run takes none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_after_a_subscription_outage_takes_what_was_dropped() {
    static DELIVERING: OnceCell<Peer> = OnceCell::const_new();
    let emulator = peers::shared_pubsub_emulator().await;
    let mock = DELIVERING
        .get_or_init(|| async {
            ctmessages::commercetools_mock_with_messages(&emulator.host_port()).await
        })
        .await;
    let project = peers::unique_name("outage");
    let admin = Admin::new(mock, &project).await;
    let res = peers::create_topic_and_subscription(
        emulator,
        "payrules-reconcile-it",
        &peers::unique_name("ct"),
        &peers::unique_name("ct-sub"),
        10,
        None,
    )
    .await;
    let (checkout, receiver) = stubs().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let hook = format!("{}/hook", receiver.uri());
    let create = || {
        let created = payrules(
            mock,
            &project,
            &state,
            &checkout.uri(),
            &hook,
            &[
                "subscription",
                "create",
                "--destination",
                "pubsub",
                "--topic",
                &res.topic,
            ],
        );
        assert_eq!(
            created.code,
            Some(0),
            "{}{}",
            created.stdout,
            created.stderr
        );
    };
    create();

    let mut worker_env = env(
        mock,
        &project,
        &format!("sqlite://{}", state.display()),
        &checkout.uri(),
        &hook,
    );
    worker_env.extend([
        ("PAYRULES_SOURCE", "pubsub".to_string()),
        ("PAYRULES_PUBSUB_SUBSCRIPTION", res.subscription.clone()),
        ("PUBSUB_EMULATOR_HOST", emulator.host_port()),
        ("PAYRULES_SHUTDOWN_TIMEOUT", "5s".to_string()),
        ("PAYRULES_LOG", "info".to_string()),
    ]);
    let worker_log = dir.path().join("worker.log");
    let mut worker = tokio::process::Command::new(env!("CARGO_BIN_EXE_payrules"))
        .arg("run")
        .env_clear()
        .envs(worker_env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&worker_log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("start payrules run");
    let log = || std::fs::read_to_string(&worker_log).unwrap_or_default();
    let wait_for_releases = |n: usize| {
        let receiver = &receiver;
        let log = &log;
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let got = released_orders(receiver).await;
                if got.len() >= n {
                    return got;
                }
                assert!(
                    Instant::now() < deadline,
                    "{n} releases expected within 60 s, got {got:?}; worker log:\n{}",
                    log()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };

    // Before the outage: delivered and released by the worker.
    let before = paid_order(&admin, 3000, "OUT-BEFORE").await;
    assert_eq!(wait_for_releases(1).await, std::slice::from_ref(&before));

    // The outage: the Subscription is gone, commercetools delivers nothing.
    let sub = admin.get("subscriptions/key=payrules").await;
    admin
        .delete(&format!(
            "subscriptions/{}?version={}",
            sub["id"].as_str().unwrap(),
            sub["version"]
        ))
        .await;
    let dropped = paid_order(&admin, 4000, "OUT-DROPPED").await;
    let orphan = admin.payment(1500, &[("Authorization", "Success")]).await;

    // Recreated: what happens from now on is delivered again.
    create();
    let after = paid_order(&admin, 5000, "OUT-AFTER").await;
    assert_eq!(wait_for_releases(2).await, [before.clone(), after.clone()]);
    // The orphan's grace period (1 s) has run out; the worker never heard of it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(checkout.received_requests().await.unwrap().is_empty());
    binary::sigterm(worker.id().expect("the worker's pid"));
    let status = tokio::time::timeout(Duration::from_secs(30), worker.wait())
        .await
        .expect("the worker stops within 30 s")
        .unwrap();
    assert!(status.success(), "{status}; worker log:\n{}", log());

    let first = reconcile(mock, &project, &state, &checkout.uri(), &hook, &[]);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    assert!(
        first
            .stderr
            .contains("actions taken: 1 cancel_payment, 1 release_order"),
        "{}",
        first.stderr
    );
    let released = released_orders(&receiver).await;
    assert_eq!(
        released,
        [before, after, dropped],
        "each order released once"
    );
    let cancels = checkout.received_requests().await.unwrap();
    assert_eq!(cancels.len(), 1);
    assert!(
        cancels[0].url.path().ends_with(&orphan),
        "{}",
        cancels[0].url
    );

    let second = reconcile(mock, &project, &state, &checkout.uri(), &hook, &[]);
    assert_eq!(second.code, Some(0), "{}", second.stderr);
    assert!(
        second.stderr.contains("actions taken: none"),
        "{}",
        second.stderr
    );
    assert_eq!(released_orders(&receiver).await.len(), 3);
    assert_eq!(checkout.received_requests().await.unwrap().len(), 1);
}

const CONCURRENT_RELEASES: usize = 24;
const CONCURRENT_ORPHANS: usize = 8;

/// Counts each value once per occurrence.
fn tally(items: impl IntoIterator<Item = String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for item in items {
        *counts.entry(item).or_default() += 1;
    }
    counts
}

/// The keys of the `event` events in `log` (JSON logs, fields flattened): "action done" once
/// per executed action, "action not run" per action decided again and found in the ledger.
fn logged_keys(log: &str, event: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == event)
        .map(|v| v["key"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// (actions taken, already done) from a summary line: "…, actions taken: 1 cancel_payment,
/// 2 release_order, 3 already done, 0 failed" (or "actions taken: none, …").
fn summary_counts(line: &str) -> (usize, usize) {
    let counts = line
        .split_once("actions taken: ")
        .and_then(|(_, rest)| rest.split_once(" already done"))
        .unwrap_or_else(|| panic!("not a summary line: {line}"))
        .0;
    let mut items: Vec<&str> = counts.split(", ").collect();
    let already = items
        .pop()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    let taken = items
        .iter()
        .filter(|i| **i != "none")
        .map(|i| {
            i.split_once(' ')
                .and_then(|(n, _)| n.parse::<usize>().ok())
                .unwrap_or_else(|| panic!("{line}"))
        })
        .sum();
    (taken, already)
}

/// `payrules reconcile --since 1h` as a process of its own, started now; its output when it
/// exits (at most a minute).
async fn reconcile_process(env: Vec<(&'static str, String)>) -> Run {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_payrules"))
        .args(["reconcile", "--since", "1h"])
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start payrules reconcile");
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("payrules reconcile did not finish within 60 s")
        .expect("payrules reconcile");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Issue 16's "a run concurrent with a worker": `payrules run` (the file source, on stdin) and
/// two `payrules reconcile --since 1h` share one PostgreSQL store and work on the same window at
/// the same time — the worker is fed the Messages API's messages newest first while the
/// reconciles read them oldest first, so they meet in the middle. Every release (webhook and
/// order update) and every cancel happens exactly once in total, the ledger holds each key done
/// once, and all three processes exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_while_the_worker_runs_executes_nothing_twice() {
    let started = Instant::now();
    let mock = mock().await;
    let project = "payrules-reconcile-concurrent";
    let admin = Admin::new(mock, project).await;
    // The window: paid orders to release, one half-paid order, orphan authorizations to cancel.
    let mut orders: BTreeMap<String, u64> = BTreeMap::new();
    for n in 0..CONCURRENT_RELEASES {
        let p = admin.payment(3000, &[("Authorization", "Success")]).await;
        let o = admin.order_for(&p, &format!("CON-{n}")).await;
        orders.insert(
            o["id"].as_str().unwrap().to_string(),
            o["version"].as_u64().unwrap(),
        );
    }
    let half = admin.payment(3000, &[("Authorization", "Failure")]).await;
    admin.order_for(&half, "CON-HALF").await;
    let mut orphans = BTreeSet::new();
    for _ in 0..CONCURRENT_ORPHANS {
        orphans.insert(admin.payment(1500, &[("Authorization", "Success")]).await);
    }
    // The orphans' grace period (1 s) runs out.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The worker's input: the messages the Messages API holds, as a Subscription delivers them.
    let page = admin
        .get("messages?limit=500&sort=createdAt%20asc&sort=id%20asc")
        .await;
    let messages = page["results"].as_array().expect("a page of messages");
    assert!(
        messages.len() >= CONCURRENT_RELEASES * 2 + CONCURRENT_ORPHANS && messages.len() < 500,
        "{} messages",
        messages.len()
    );
    let lines: Vec<String> = messages
        .iter()
        .map(|m| {
            let mut n = m.clone();
            n["notificationType"] = json!("Message");
            n["projectKey"] = json!(project);
            n.to_string()
        })
        .collect();

    let (checkout, receiver) = stubs().await;
    let state_url = pg::fresh_pg("payrules_reconcile").await;
    let mut env = env(
        mock,
        project,
        &state_url,
        &checkout.uri(),
        &format!("{}/hook", receiver.uri()),
    );
    env.retain(|(k, _)| *k != "PAYRULES_LOG");
    env.extend([
        ("PAYRULES_LOG", "info".to_string()),
        ("PAYRULES_LOG_FORMAT", "json".to_string()),
        (
            "PAYRULES_RELEASE_ORDER_UPDATE",
            "changeOrderState".to_string(),
        ),
        ("PAYRULES_RELEASE_ORDER_STATE", "Confirmed".to_string()),
    ]);

    // The worker: the file source on stdin, so it runs until the test closes its input.
    let dir = tempfile::tempdir().unwrap();
    let worker_log = dir.path().join("worker.log");
    let mut worker = tokio::process::Command::new(env!("CARGO_BIN_EXE_payrules"))
        .arg("run")
        .env_clear()
        .envs(env.iter().cloned())
        .envs([("PAYRULES_SOURCE", "file"), ("PAYRULES_FILE_PATH", "-")])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&worker_log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("start payrules run");
    let read_log = || std::fs::read_to_string(&worker_log).unwrap_or_default();
    let ready = Instant::now();
    while !read_log().contains("payrules worker starting") {
        assert!(
            ready.elapsed() < Duration::from_secs(30),
            "the worker did not start within 30 s:\n{}",
            read_log()
        );
        assert!(
            worker.try_wait().unwrap().is_none(),
            "the worker exited at start:\n{}",
            read_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Newest first into the worker, a line every 20 ms; the stdin stays open afterwards.
    let mut stdin = worker.stdin.take().unwrap();
    let feeder = tokio::spawn(async move {
        for line in lines.iter().rev() {
            stdin.write_all(line.as_bytes()).await.unwrap();
            stdin.write_all(b"\n").await.unwrap();
            stdin.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stdin
    });
    let window = Instant::now();
    let first = tokio::spawn(reconcile_process(env.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = tokio::spawn(reconcile_process(env.clone()));
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    eprintln!(
        "reconciles done {:?} after the worker's first line",
        window.elapsed()
    );
    let stdin = feeder.await.unwrap();

    // Every effect at least once (the worker may still be at it), then the worker's input ends.
    let releases: BTreeSet<String> = orders.keys().map(|o| format!("release:{o}")).collect();
    let all_seen = Instant::now();
    loop {
        let hooks = receiver.received_requests().await.unwrap().len();
        let cancels = checkout.received_requests().await.unwrap().len();
        if hooks >= releases.len() && cancels >= orphans.len() {
            break;
        }
        assert!(
            all_seen.elapsed() < Duration::from_secs(30),
            "after 30 s: {hooks} webhooks for {} releases, {cancels} cancels for {} orphans\nworker:\n{}",
            releases.len(),
            orphans.len(),
            read_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(30), worker.wait())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the worker did not exit within 30 s of its input's end:\n{}",
                read_log()
            )
        })
        .unwrap();
    let worker_log = read_log();
    assert!(status.success(), "the worker: {status}\n{worker_log}");

    // Each release webhook once, under its key; each order updated once.
    let hooks = tally(receiver.received_requests().await.unwrap().iter().map(|r| {
        r.headers
            .get(KEY_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("(no key)")
            .to_string()
    }));
    let once = |keys: &BTreeSet<String>| -> BTreeMap<String, usize> {
        keys.iter().map(|k| (k.clone(), 1)).collect()
    };
    assert_eq!(hooks, once(&releases), "release webhooks per key");
    for (id, version) in &orders {
        let o = admin.get(&format!("orders/{id}")).await;
        assert_eq!(o["orderState"], "Confirmed", "order {id} released");
        assert_eq!(
            o["version"].as_u64(),
            Some(version + 1),
            "order {id} updated exactly once"
        );
    }
    // Each orphan cancelled once at Checkout.
    let cancels = tally(
        checkout
            .received_requests()
            .await
            .unwrap()
            .iter()
            .map(|r| r.url.path().rsplit('/').next().unwrap_or("").to_string()),
    );
    assert_eq!(cancels, once(&orphans), "Checkout cancels per payment");
    let cancel_keys: BTreeSet<String> = orphans.iter().map(|p| format!("cancel:{p}")).collect();

    // The ledger: each key done, once (the key is its primary key), and no other action.
    let db = sqlx::PgPool::connect(&state_url).await.unwrap();
    let ledger: Vec<(String, String)> = sqlx::query_as(
        "SELECT key, status FROM ledger WHERE key LIKE 'release:%' OR key LIKE 'cancel:%' ORDER BY key",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    db.close().await;
    let mut want_ledger: Vec<(String, String)> = releases
        .iter()
        .chain(&cancel_keys)
        .map(|k| (k.clone(), "done".to_string()))
        .collect();
    want_ledger.sort();
    assert_eq!(ledger, want_ledger, "the ledger");

    // By the processes' own account: each action executed once, by one of the three.
    let by_worker = logged_keys(&worker_log, "action done");
    let by_first = logged_keys(&first.stderr, "action done");
    let by_second = logged_keys(&second.stderr, "action done");
    let executed = tally(by_worker.iter().chain(&by_first).chain(&by_second).cloned());
    let all: BTreeSet<String> = releases.union(&cancel_keys).cloned().collect();
    assert_eq!(
        executed,
        once(&all),
        "\"action done\" per key, all processes"
    );
    // How often one process decided an action another had taken (found done in the ledger).
    let again = [&worker_log, &first.stderr, &second.stderr]
        .map(|log| logged_keys(log, "action not run").len());
    eprintln!(
        "{} releases and {} cancels, each once: executed by the worker {}, the first reconcile {}, the second {}; decided again and found done: {again:?}; {:?} in all",
        releases.len(),
        cancel_keys.len(),
        by_worker.len(),
        by_first.len(),
        by_second.len(),
        started.elapsed()
    );
    for run in [&first, &second] {
        if let Some(summary) = run
            .stderr
            .lines()
            .find(|l| l.starts_with("payrules reconcile:"))
        {
            eprintln!("{summary}");
        }
    }
    // Each reconcile's summary agrees with its own log: actions taken = its "action done"
    // lines, already done = its "action not run" lines for keys found in the ledger.
    for (name, run, done) in [
        ("first", &first, &by_first),
        ("second", &second, &by_second),
    ] {
        let line = run
            .stderr
            .lines()
            .find(|l| l.starts_with("payrules reconcile:"))
            .unwrap_or_else(|| panic!("the {name} reconcile printed no summary:\n{}", run.stderr));
        let (taken, already) = summary_counts(line);
        let found_done = run
            .stderr
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| {
                v["message"] == "action not run"
                    && v["reason"]
                        .as_str()
                        .is_some_and(|r| r.starts_with("already in the ledger"))
            })
            .count();
        assert_eq!(
            (taken, already),
            (done.len(), found_done),
            "the {name} reconcile's summary against its log: {line}"
        );
    }
    // Last, so that a failure here has shown the counts above to be right.
    for (name, run) in [("first", &first), ("second", &second)] {
        assert_eq!(
            run.code,
            Some(0),
            "the {name} reconcile:\n{}\nworker:\n{worker_log}",
            run.stderr,
        );
    }
}
