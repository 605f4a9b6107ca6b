//! `payrules explain`: for every scenario in fixtures/scenarios, every order and payment the
//! stream mentions is explained after the replay, and the explanation's verdict is what the
//! replay decided — an order is `released` iff replay planned `release:{order}`; a payment
//! `captured` iff `capture:{P}`, else `cancelled` iff `cancel:{P}`, else `untouched`. The
//! explanation also never says an action is due that the replay did not take (the rules, re-read
//! at the end, agree with what they did). A few go through the binary (`--input`, `--json`),
//! and one live, against commercetools-mock.

use crate::support::peers;

use crate::support::ctadmin;

use crate::support::fixtures;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use payrules::action::Action;
use payrules::commerce::{CtpClient, LiveView};
use payrules::explain::{self, Explanation, History, Kind, Offline};
use payrules::replay::replay_files;
use payrules::rules::{Engine, Rules};
use payrules::store::{MemoryStore, Store};
use serde_json::{Value, json};

use fixtures::{config_for, rules_for, scenarios};

/// Every `{"typeId": "order"|"payment", "id": …}` reference and every embedded order or payment
/// (`"order": {"id": …}`, `"payment": {"id": …}`) in a stream.
fn ids(stream: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    fn walk(v: &Value, orders: &mut BTreeSet<String>, payments: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                if let (Some(t), Some(id)) = (
                    m.get("typeId").and_then(Value::as_str),
                    m.get("id").and_then(Value::as_str),
                ) {
                    match t {
                        "order" => {
                            orders.insert(id.to_string());
                        }
                        "payment" => {
                            payments.insert(id.to_string());
                        }
                        _ => {}
                    }
                }
                for (k, inner) in m {
                    if let Some(id) = inner.get("id").and_then(Value::as_str) {
                        match k.as_str() {
                            "order" => {
                                orders.insert(id.to_string());
                            }
                            "payment" => {
                                payments.insert(id.to_string());
                            }
                            _ => {}
                        }
                    }
                    walk(inner, orders, payments);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, orders, payments)),
            _ => {}
        }
    }
    let (mut orders, mut payments) = (BTreeSet::new(), BTreeSet::new());
    let text = std::fs::read_to_string(stream).expect("stream");
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).expect("scenario lines are JSON");
        walk(&v, &mut orders, &mut payments);
    }
    (orders, payments)
}

/// What the replay decided for an order or a payment, as a verdict.
fn decided(actions: &[Action], kind: Kind, id: &str) -> &'static str {
    let planned = |key: String| actions.iter().any(|a| a.key == key);
    match kind {
        Kind::Order if planned(Action::release_key(id)) => "released",
        Kind::Order => "not_released",
        Kind::Payment if planned(Action::refund_key(id)) => "refunded",
        Kind::Payment if planned(Action::capture_key(id)) => "captured",
        Kind::Payment if planned(Action::cancel_key(id)) => "cancelled",
        Kind::Payment => "untouched",
    }
}

/// An action the rules, re-read at the end, call due but the replay did not take.
fn due_but_not_taken(why: &Explanation) -> Option<String> {
    let v: Value = serde_json::from_str(&why.to_json()).expect("JSON");
    let now = &v["rules_now"];
    let due = |field: &str, decision: &str| now[field]["decision"] == decision;
    let ledger = |prefix: &str| {
        v["ledger"].as_array().is_some_and(|l| {
            l.iter()
                .any(|e| e["key"].as_str().is_some_and(|k| k.starts_with(prefix)))
        })
    };
    let surprising = match why {
        Explanation::Order(_) => due("release", "release") && !ledger("release:"),
        Explanation::Payment(_) => {
            (due("cancel_on_message", "cancel") && !ledger("cancel:"))
                || (due("capture", "capture") && !ledger("capture:"))
                || (due("refund_on_message", "refund") && !ledger("refund:"))
        }
    };
    surprising.then(|| format!("{} {}: {}", v["kind"], v["id"], v["rules_now"]))
}

#[tokio::test]
async fn every_scenario_explains_what_replay_decided() {
    let mut failures = Vec::new();
    let mut explained = 0;
    for stream in scenarios() {
        let rules = rules_for(&stream);
        let offline = Offline::replay(&[&stream], rules.clone(), None)
            .await
            .expect("replays");
        // The view is the one `payrules replay` builds: the same actions.
        let replayed = replay_files(&[&stream], rules, None)
            .await
            .expect("replays");
        assert_eq!(
            offline.actions(),
            replayed.actions.as_slice(),
            "{}",
            stream.display()
        );
        let (orders, payments) = ids(&stream);
        let targets = orders
            .iter()
            .map(|o| (Kind::Order, o))
            .chain(payments.iter().map(|p| (Kind::Payment, p)));
        for (kind, id) in targets {
            let why = offline.explain(kind, id).await.expect("explains");
            explained += 1;
            let want = decided(offline.actions(), kind, id);
            if why.verdict() != want {
                failures.push(format!(
                    "{} {kind:?} {id}: explained {} ({}), replay decided {want}",
                    stream.display(),
                    why.verdict(),
                    why.because()
                ));
            }
            if let Some(s) = due_but_not_taken(&why) {
                failures.push(format!("{}: due but not taken: {s}", stream.display()));
            }
            let text = why.to_text();
            let shout = why.verdict().replace('_', " ").to_uppercase();
            assert!(text.contains(&shout), "{}: {text}", stream.display());
            assert!(text.contains(why.because()), "{text}");
        }
    }
    assert!(explained >= 70, "only {explained} explained");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn an_unknown_id_is_not_found_and_untouched() {
    let stream = scenarios().remove(0);
    let offline = Offline::replay(&[&stream], Rules::default(), None)
        .await
        .expect("replays");
    let why = offline
        .explain(Kind::Order, "no-such-order")
        .await
        .expect("explains");
    assert!(!why.found());
    assert_eq!(why.verdict(), "not_released");
    let why = offline
        .explain(Kind::Payment, "no-such-payment")
        .await
        .expect("explains");
    assert!(!why.found());
    assert_eq!(why.verdict(), "untouched");
}

fn scenario(prefix: &str) -> PathBuf {
    scenarios()
        .into_iter()
        .find(|s| {
            s.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .unwrap_or_else(|| panic!("scenario {prefix}"))
}

fn explain_bin(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_payrules"))
        .arg("explain")
        .args(args)
        .env_remove("CTP_PROJECT_KEY")
        .output()
        .expect("runs payrules");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_binary_explains_with_input_and_json() {
    // 16: released by two payments; 22: one order short (10000 < 11900); 07: an orphan
    // cancelled by its timer; 35 (+ toml): a capture on shipment; 30: our cancel failed.
    for prefix in ["07-", "16-", "22-", "30-", "35-"] {
        let stream = scenario(prefix);
        let rules = rules_for(&stream);
        let actions = replay_files(&[&stream], rules, None)
            .await
            .expect("replays")
            .actions;
        let (orders, payments) = ids(&stream);
        let config = config_for(&stream);
        let targets = orders
            .iter()
            .map(|o| (Kind::Order, "order", o))
            .chain(payments.iter().map(|p| (Kind::Payment, "payment", p)));
        for (kind, word, id) in targets {
            let input = stream.to_string_lossy();
            let mut args = vec![word, id.as_str(), "--input", &input, "--json"];
            let config = config.as_ref().map(|c| c.to_string_lossy().into_owned());
            if let Some(c) = &config {
                args.extend(["--config", c.as_str()]);
            }
            let (code, stdout, stderr) = explain_bin(&args);
            assert_eq!(code, 0, "{args:?}: {stderr}");
            let v: Value =
                serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
            assert_eq!(v["kind"], word);
            assert_eq!(v["id"], id.as_str());
            assert_eq!(
                v["verdict"],
                decided(&actions, kind, id),
                "{args:?}: {stdout}"
            );
            // Words, too.
            let args: Vec<&str> = args.into_iter().filter(|a| *a != "--json").collect();
            let (code, text, stderr) = explain_bin(&args);
            assert_eq!(code, 0, "{stderr}");
            assert!(text.starts_with(&format!("{word} {id}")), "{text}");
        }
    }
}

#[test]
fn the_binary_says_covered_less_than_the_total() {
    let stream = scenario("22-");
    let input = stream.to_string_lossy();
    let (code, text, stderr) = explain_bin(&[
        "order",
        "08320b7d-e41b-52e3-8589-e8da937d5db8",
        "--input",
        &input,
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(text.contains("NOT RELEASED"), "{text}");
    assert!(
        text.contains("not released because covered 10000 < 11900 EUR cents"),
        "{text}"
    );
    // Unknown ids exit 1; nothing to read at all is a usage error.
    let (code, _, _) = explain_bin(&["payment", "nope", "--input", &input]);
    assert_eq!(code, 1);
    let (code, _, stderr) = explain_bin(&["order", "x"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--input"), "{stderr}");
}

const PROJECT: &str = "payrules-explain";

/// A live order, partly covered: one authorization of 6000 for a total of 10000.
async fn partly_covered_order(admin: &ctadmin::Admin) -> (String, String) {
    let p = admin
        .post(
            "payments",
            json!({"amountPlanned": {"currencyCode": "EUR", "centAmount": 6000},
                   "transactions": [{"type": "Authorization", "state": "Success",
                                     "amount": {"currencyCode": "EUR", "centAmount": 6000}}]}),
        )
        .await;
    let pid = p["id"].as_str().expect("id").to_string();
    let o = admin
        .post(
            "orders/import",
            json!({"orderNumber": peers::unique_name("EX"),
                   "totalPrice": {"currencyCode": "EUR", "centAmount": 10000}, "orderState": "Open"}),
        )
        .await;
    let oid = o["id"].as_str().expect("id").to_string();
    admin
        .post(
            &format!("orders/{oid}"),
            json!({"version": o["version"],
                   "actions": [{"action": "addPayment", "payment": {"typeId": "payment", "id": pid}}]}),
        )
        .await;
    (oid, pid)
}

#[tokio::test]
async fn live_a_partly_covered_order_is_not_released_and_says_why() {
    let mock = peers::shared_commercetools_mock().await;
    let admin = ctadmin::Admin::new(mock, PROJECT).await;
    let (oid, pid) = partly_covered_order(&admin).await;

    // The library, over the live view.
    let settings = ctadmin::client_settings(mock, PROJECT, "http://127.0.0.1:9");
    let client = CtpClient::with_retry(settings, 3, Duration::from_millis(20)).expect("client");
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let engine = Engine::new(
        Arc::new(LiveView::new(client)),
        store.clone(),
        Rules::default(),
    );
    let history = History::live("commercetools-mock".into(), store);
    let why = explain::explain(&engine, &history, Kind::Order, &oid)
        .await
        .expect("explains");
    assert!(why.found());
    assert_eq!(why.verdict(), "not_released");
    assert_eq!(
        why.because(),
        "not released because covered 6000 < 10000 EUR cents"
    );
    let why = explain::explain(&engine, &history, Kind::Payment, &pid)
        .await
        .expect("explains");
    assert_eq!(why.verdict(), "untouched");
    assert!(why.because().contains(&oid), "{}", why.because());

    // The binary, with the CTP_* variables and no ledger.
    let out = Command::new(env!("CARGO_BIN_EXE_payrules"))
        .args(["explain", "order", &oid, "--state-url", "memory:"])
        .env("CTP_PROJECT_KEY", PROJECT)
        .env("CTP_CLIENT_ID", "payrules-test-client")
        .env("CTP_CLIENT_SECRET", "payrules-test-secret")
        .env("CTP_AUTH_URL", &mock.endpoint)
        .env("CTP_API_URL", &mock.endpoint)
        .env("CTP_SCOPES", format!("manage_project:{PROJECT}"))
        .output()
        .expect("runs payrules");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("NOT RELEASED"), "{text}");
    assert!(text.contains("covered 6000 < 10000"), "{text}");
    assert!(text.contains(&pid), "{text}");
}

#[tokio::test]
async fn an_order_with_returns_explains_each_lines_due_and_refunds() {
    // 46: both units of a line of 2 for 3000 returned, refunded 1000 from the gift card and
    // 2000 from the card; the rewritten return info makes nothing more due.
    let stream = scenario("46-");
    let config = config_for(&stream).expect("46 has a config");
    let (orders, _) = ids(&stream);
    let order = orders.iter().next().expect("an order");
    let input = stream.to_string_lossy();
    let config = config.to_string_lossy();
    let args = [
        "order",
        order.as_str(),
        "--input",
        &input,
        "--config",
        &config,
    ];
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let (code, stdout, stderr) = explain_bin(&json_args);
    assert_eq!(code, 0, "{stderr}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let returns = v["returns"].as_array().expect("returns");
    assert_eq!(returns.len(), 1, "{stdout}");
    let line = &returns[0];
    assert_eq!(
        (&line["returned_quantity"], &line["due"], &line["refunded"]),
        (&json!(2), &json!(3000), &json!(3000)),
        "{stdout}"
    );
    let amounts: Vec<i64> = line["refunds"]
        .as_array()
        .expect("refunds")
        .iter()
        .filter_map(|r| r["amount"].as_i64())
        .collect();
    let mut amounts = amounts;
    amounts.sort_unstable();
    assert_eq!(amounts, [1000, 2000], "{stdout}");
    assert_eq!(
        v["rules_now"]["refund_on_return"]["decision"], "none",
        "{stdout}"
    );
    let (code, text, stderr) = explain_bin(&args);
    assert_eq!(code, 0, "{stderr}");
    assert!(text.contains("returns:"), "{text}");
    assert!(
        text.contains("2 returned, due 3000, refunded by payrules 3000"),
        "{text}"
    );
}
