//! The release webhook against the receiver recipes in `examples/receivers/` (`receiver.py`,
//! `receiver.cjs`), which verify with the published `standardwebhooks` packages (PyPI and npm,
//! installed into `.peers/` by `scripts/peers/install.sh`): a `whsec_` secret, rotation (two
//! secrets, the receiver knows only the second), a wrong secret (rejected: a transient error),
//! and the delivered payloads against `fixtures/schema/release-webhook.schema.json` (Python
//! `jsonschema`, draft 2020-12).
//!
//! A receiver that cannot be started fails the test (never a skip), naming the install script.

use crate::support::peers;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use chrono::Utc;
use payrules::action::{Action, ActionKind, RuleName};
use payrules::config::Secret;
use payrules::effects::{EffectError, Webhook};
use payrules::model::Money;
use serde_json::{Value, json};

/// Two unrelated 32-byte keys in the `whsec_` format.
const SECRET_A: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SECRET_B: &str = "whsec_Ue+a6NJhoMLDFqwynp/pvYs7TZNgWlGXetM/3B5r8w4=";

#[derive(Clone, Copy, Debug)]
enum Lang {
    Python,
    Node,
}

/// A value of `.peers/env` (a process env variable of the same name wins), as
/// tests/it/support/peers.rs reads them. Panics with the install hint when it is missing.
fn installed(key: &str) -> PathBuf {
    static ENV: OnceLock<HashMap<String, String>> = OnceLock::new();
    let file = peers::repo_root().join(".peers/env");
    let from_file = ENV.get_or_init(|| {
        std::fs::read_to_string(&file)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect()
    });
    let value = std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| from_file.get(key).cloned())
        .unwrap_or_else(|| {
            panic!(
                "{key} is neither in the environment nor in {}: run `bash scripts/peers/install.sh`",
                file.display()
            )
        });
    let path = PathBuf::from(&value);
    assert!(
        path.exists(),
        "{key}={value} does not exist: run `bash scripts/peers/install.sh`"
    );
    path
}

/// A running receiver recipe and the file it appends verified deliveries to.
struct Receiver {
    peer: peers::Peer,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Receiver {
    async fn start(lang: Lang, secret: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("releases.jsonl");
        let recipes = peers::repo_root().join("examples/receivers");
        let mut env = vec![("WEBHOOK_SECRET".to_string(), secret.to_string())];
        let (name, program, script) = match lang {
            Lang::Python => (
                "python-receiver",
                installed("PAYRULES_PEER_PYTHON"),
                recipes.join("receiver.py"),
            ),
            Lang::Node => {
                let modules = installed("PAYRULES_PEER_NODE_DIR").join("node_modules");
                env.push(("NODE_PATH".into(), modules.display().to_string()));
                (
                    "node-receiver",
                    installed("PAYRULES_PEER_NODE"),
                    recipes.join("receiver.cjs"),
                )
            }
        };
        let peer = peers::start(peers::PeerSpec {
            name,
            program,
            args: vec![
                script.display().to_string(),
                "{port}".into(),
                out.display().to_string(),
            ],
            env,
            ready_path: "/health".into(),
            ready: |s| s == 200,
        })
        .await;
        Self {
            peer,
            out,
            _dir: dir,
        }
    }

    fn webhook(&self, secrets: &[&str]) -> Webhook {
        Webhook::new(
            format!("{}/hooks/release", self.peer.endpoint),
            secrets.iter().map(|s| Secret::new(*s)).collect(),
            Duration::from_secs(10),
        )
        .unwrap()
        .with_retry(2, Duration::from_millis(10))
    }

    /// The verified deliveries: `{"id": webhook-id, "event": payload}`.
    fn recorded(&self) -> Vec<Value> {
        match std::fs::read_to_string(&self.out) {
            Ok(text) => text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("{}: {e}", self.out.display()),
        }
    }
}

/// A release with every field set.
fn full_release(order_id: &str) -> Action {
    Action {
        action: ActionKind::ReleaseOrder,
        rule: RuleName::ReleaseForFulfillment,
        key: Action::release_key(order_id),
        payment_id: Some("pay-2".into()),
        order_id: Some(order_id.into()),
        message_id: Some(format!("msg-{order_id}")),
        at: Utc::now(),
        order_number: Some("100060042".into()),
        payment_ids: vec!["pay-1".into(), "pay-2".into()],
        amount: Some(Money {
            currency_code: "EUR".into(),
            cent_amount: 17465,
            fraction_digits: Some(2),
        }),
        reason: None,
        returned: None,
    }
}

/// A release decided by a timer, of an order without a number, in yen without fractionDigits
/// in the source (non-ASCII in the body too: the signature covers the UTF-8 bytes).
fn sparse_release(order_id: &str) -> Action {
    Action {
        message_id: None,
        order_number: None,
        payment_ids: vec!["pay-ü".into()],
        amount: Some(Money {
            currency_code: "JPY".into(),
            cent_amount: 5000,
            fraction_digits: None,
        }),
        ..full_release(order_id)
    }
}

fn order_id(prefix: &str) -> String {
    peers::unique_name(prefix)
}

/// Delivers with a `whsec_` secret the receiver knows, then with one it does not.
async fn verifies_and_rejects(lang: Lang) {
    let receiver = Receiver::start(lang, SECRET_A).await;
    let (a, b) = (order_id("full"), order_id("sparse"));
    let webhook = receiver.webhook(&[SECRET_A]);
    for action in [full_release(&a), sparse_release(&b)] {
        let effect = webhook.deliver(&action).await.unwrap();
        assert_eq!(effect.summary, "webhook 204", "{lang:?}");
    }
    // The same key again (a redelivery): 2xx, recorded once (the recipe dedupes on webhook-id).
    webhook.deliver(&full_release(&a)).await.unwrap();

    let got = receiver.recorded();
    let ids: Vec<&str> = got.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [format!("release:{a}"), format!("release:{b}")],
        "{lang:?}"
    );
    for (record, order) in got.iter().zip([&a, &b]) {
        assert_eq!(record["event"]["order_id"], order.as_str());
        assert_eq!(record["event"]["key"], record["id"]);
        assert_eq!(record["event"]["type"], "order.released");
        assert_eq!(record["event"]["schema_version"], 1);
    }
    assert_eq!(
        got[0]["event"]["amount"],
        json!({"centAmount": 17465, "currencyCode": "EUR", "fractionDigits": 2})
    );
    assert_eq!(got[1]["event"]["amount"]["fractionDigits"], 0);
    assert_eq!(got[1]["event"]["payment_ids"], json!(["pay-ü"]));

    // Signed with a secret the receiver does not know: 400 on every attempt, nothing recorded.
    // The recipes answer 400: the release itself is refused (retried up to max_deliveries,
    // then parked with this answer), never recorded done.
    let wrong = receiver.webhook(&[SECRET_B]);
    match wrong.deliver(&full_release(&order_id("wrong"))).await {
        Err(EffectError::Refused { detail }) => {
            assert!(detail.contains("HTTP 400"), "{lang:?}: {detail}")
        }
        other => panic!("{lang:?}: expected a refused delivery, got {other:?}"),
    }
    assert_eq!(receiver.recorded().len(), 2, "{lang:?}");
}

/// Rotation: payrules signs with the old and the new secret; the receiver already has the new.
async fn accepts_rotation(lang: Lang) {
    let receiver = Receiver::start(lang, SECRET_B).await;
    let order = order_id("rotated");
    let webhook = receiver.webhook(&[SECRET_A, SECRET_B]);
    let effect = webhook.deliver(&full_release(&order)).await.unwrap();
    assert_eq!(effect.summary, "webhook 204", "{lang:?}");
    let got = receiver.recorded();
    assert_eq!(got.len(), 1, "{lang:?}");
    assert_eq!(got[0]["id"], format!("release:{order}"));
    assert_eq!(got[0]["event"]["order_id"], order.as_str());
}

#[tokio::test]
async fn python_receiver_verifies_with_standardwebhooks_and_rejects_a_wrong_secret() {
    verifies_and_rejects(Lang::Python).await;
}

#[tokio::test]
async fn node_receiver_verifies_with_standardwebhooks_and_rejects_a_wrong_secret() {
    verifies_and_rejects(Lang::Node).await;
}

#[tokio::test]
async fn python_receiver_accepts_a_delivery_during_secret_rotation() {
    accepts_rotation(Lang::Python).await;
}

#[tokio::test]
async fn node_receiver_accepts_a_delivery_during_secret_rotation() {
    accepts_rotation(Lang::Node).await;
}

/// Validates each of `cases` (`{"payload", "valid"}`) against the schema with Python's
/// `jsonschema` (Draft 2020-12, formats checked) and returns the cases whose outcome differs.
const VALIDATE: &str = r#"
import json, sys
from jsonschema import Draft202012Validator
schema = json.load(open(sys.argv[1]))
Draft202012Validator.check_schema(schema)
validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
wrong = []
for i, case in enumerate(json.load(open(sys.argv[2]))):
    errors = [e.message for e in validator.iter_errors(case["payload"])]
    if (not errors) != case["valid"]:
        wrong.append({"case": i, "valid": case["valid"], "errors": errors})
print(json.dumps(wrong))
"#;

fn schema_path() -> PathBuf {
    peers::repo_root().join("fixtures/schema/release-webhook.schema.json")
}

fn validate(cases: &[(Value, bool)], dir: &Path) -> Vec<Value> {
    let file = dir.join("cases.json");
    let cases: Vec<Value> = cases
        .iter()
        .map(|(payload, valid)| json!({"payload": payload, "valid": valid}))
        .collect();
    std::fs::write(&file, serde_json::to_vec(&cases).unwrap()).unwrap();
    let python = installed("PAYRULES_PEER_PYTHON");
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg(VALIDATE)
        .arg(schema_path())
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    assert!(
        out.status.success(),
        "jsonschema validation did not run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn delivered_payloads_match_the_json_schema() {
    let receiver = Receiver::start(Lang::Python, SECRET_A).await;
    let webhook = receiver.webhook(&[SECRET_A]);
    let no_amount = Action {
        amount: None,
        ..sparse_release(&order_id("no-amount"))
    };
    for action in [
        full_release(&order_id("full")),
        sparse_release(&order_id("sparse")),
        no_amount,
    ] {
        webhook.deliver(&action).await.unwrap();
    }
    let payloads: Vec<Value> = receiver
        .recorded()
        .into_iter()
        .map(|r| r["event"].clone())
        .collect();
    assert_eq!(payloads.len(), 3);

    // The schema names exactly the fields payrules sends, all required.
    let schema: Value = serde_json::from_slice(&std::fs::read(schema_path()).unwrap()).unwrap();
    let sent: BTreeSet<&String> = payloads[0].as_object().unwrap().keys().collect();
    let described: BTreeSet<&String> = schema["properties"].as_object().unwrap().keys().collect();
    let required: BTreeSet<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(sent, described);
    assert_eq!(
        required,
        described
            .iter()
            .map(|s| s.as_str())
            .collect::<BTreeSet<_>>()
    );

    // Every delivered payload is valid; broken variants of one are not (the check is real).
    let broken = |f: &dyn Fn(&mut Value)| {
        let mut p = payloads[0].clone();
        f(&mut p);
        (p, false)
    };
    let mut cases: Vec<(Value, bool)> = payloads.iter().map(|p| (p.clone(), true)).collect();
    cases.extend([
        broken(&|p| p["schema_version"] = json!(2)),
        broken(&|p| {
            p["amount"]
                .as_object_mut()
                .unwrap()
                .remove("fractionDigits");
        }),
        broken(&|p| p["amount"]["centAmount"] = json!("17465")),
        broken(&|p| p["released_at"] = json!("yesterday")),
        broken(&|p| p["key"] = json!("cancel:x")),
        broken(&|p| {
            p.as_object_mut().unwrap().remove("order_id");
        }),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let wrong = validate(&cases, dir.path());
    assert!(wrong.is_empty(), "unexpected outcomes: {wrong:#?}");
}

/// `docs/webhook.md`'s advice for a secret without `whsec_` (its raw UTF-8 bytes are the key): the
/// libraries verify it when given the bytes (`Webhook(secret.encode())`,
/// `new Webhook(secret, { format: "raw" })`), and not when given the string.
#[test]
fn a_secret_without_the_prefix_verifies_when_the_libraries_get_its_bytes() {
    use payrules::effects::webhook::{SigningKey, signature_header};
    let secret = "legacy-shared-secret";
    let key = SigningKey::from_secret(&Secret::new(secret)).unwrap();
    let (id, timestamp) = ("release:raw-1", Utc::now().timestamp());
    let body = r#"{"type":"order.released","order_id":"raw-1"}"#;
    let headers = json!({
        "webhook-id": id,
        "webhook-timestamp": timestamp.to_string(),
        "webhook-signature": signature_header(&[key], id, timestamp, body.as_bytes()),
    })
    .to_string();
    let python = r#"
import json, sys
from standardwebhooks import Webhook
secret, body, headers = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
print(Webhook(secret.encode()).verify(body, headers)["order_id"])
try:
    Webhook(secret).verify(body, headers)
    print("string verified")
except Exception:
    print("string rejected")
"#;
    let node = r#"
const { Webhook } = require("standardwebhooks");
const [secret, body, headers] = [process.argv[1], process.argv[2], JSON.parse(process.argv[3])];
console.log(new Webhook(secret, { format: "raw" }).verify(body, headers).order_id);
try {
  new Webhook(secret).verify(body, headers);
  console.log("string verified");
} catch {
  console.log("string rejected");
}
"#;
    let modules = installed("PAYRULES_PEER_NODE_DIR").join("node_modules");
    let runs = [
        std::process::Command::new(installed("PAYRULES_PEER_PYTHON"))
            .args(["-c", python, secret, body, &headers])
            .output(),
        std::process::Command::new(installed("PAYRULES_PEER_NODE"))
            .env("NODE_PATH", &modules)
            .args(["-e", node, secret, body, &headers])
            .output(),
    ];
    for (lang, out) in ["python", "node"].into_iter().zip(runs) {
        let out = out.unwrap_or_else(|e| panic!("{lang}: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{lang}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout.trim(), "raw-1\nstring rejected", "{lang}");
    }
}

/// `docs/webhook.md`'s excerpts of the two recipes are the recipes' own lines (comments and
/// `...` aside), so the page cannot drift from the code the tests above run.
#[test]
fn the_webhook_page_excerpts_stand_in_the_recipes() {
    let page = std::fs::read_to_string(peers::repo_root().join("docs/webhook.md")).unwrap();
    let block = |fence: &str| -> Vec<String> {
        let start = page
            .find(&format!("```{fence}\nfrom standardwebhooks"))
            .or_else(|| page.find(&format!("```{fence}\nconst {{ Webhook }}")))
            .unwrap_or_else(|| panic!("docs/webhook.md has no {fence} excerpt of a receiver"));
        let body = &page[start + fence.len() + 4..];
        let end = body.find("```").expect("closed fence");
        body[..end]
            .lines()
            .map(|l| {
                let code = match fence {
                    "python" => l.split("  #").next().unwrap_or(l),
                    _ => l.split(" //").next().unwrap_or(l),
                };
                code.trim().to_string()
            })
            .filter(|l| !l.is_empty() && l != "...")
            .collect()
    };
    for (fence, recipe) in [("python", "receiver.py"), ("js", "receiver.cjs")] {
        let path = peers::repo_root().join("examples/receivers").join(recipe);
        let code = std::fs::read_to_string(&path).unwrap();
        let lines = block(fence);
        assert!(lines.len() >= 3, "{fence}: {lines:?}");
        for line in lines {
            assert!(
                code.lines().any(|l| l.trim().starts_with(&line)),
                "docs/webhook.md's {fence} excerpt line `{line}` is not in {}",
                path.display()
            );
        }
    }
}
