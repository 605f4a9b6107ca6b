//! `payrules subscription create|show`, and the list of subscribed types.
//!
//! - The list ([`SUBSCRIBED_MESSAGES`], [`SUBSCRIBED_EVENTS`]) is exactly the decoded types the
//!   engine acts on, checked against the decoder's own list in `src/message/mod.rs`.
//! - `create` and `show` as processes against commercetools-mock with Messages on
//!   (`CTMOCK_MESSAGES=1`), delivering to Google's Pub/Sub emulator or fauxqs (SQS).
//! - End to end: the Subscription created by payrules carries the mock's payment and order
//!   Messages through the emulator to `payrules run`, which plans the release.
//!
//! Peers are started on first use and never skipped: a missing peer fails the test.

use crate::support::peers;

use crate::support::ctadmin;

use crate::support::ctmessages;

use crate::support::binary;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use payrules::message::{Body, MessageType, NotificationType, decode};
use payrules::rules::Engine;
use payrules::store::MemoryStore;
use payrules::subscription::{
    SQS_PRINCIPAL, SUBSCRIBED_EVENTS, SUBSCRIBED_MESSAGES, events_json, messages_json,
};
use payrules::view::StreamView;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use ctadmin::Admin;
use peers::Peer;

/// The Google Cloud project of the emulator's topics.
const GCP_PROJECT: &str = "payrules-subscription-it";

// ------------------------------------------------------------------------------------------------
// The list

/// The variant names of the `message_types!( … );` invocation in src/message/mod.rs: every type
/// the decoder knows.
fn decoded_type_names() -> Vec<String> {
    let source = include_str!("../../src/message/mod.rs");
    let start = source
        .find("\nmessage_types!(")
        .expect("the message_types!( … ) invocation in src/message/mod.rs")
        + "\nmessage_types!(".len();
    let end = start + source[start..].find(");").expect("its closing );");
    source[start..end]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn fixture(name: &str) -> Option<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/messages")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(path).ok()?;
    Some(serde_json::from_str(&text).expect("fixture JSON"))
}

/// A payload of type `name` that makes the engine act if any payload of that type can: money
/// arriving (an Authorization in Success), a state that makes actions due. `None` for change
/// notifications, which are not message types one subscribes to.
fn sample(name: &str) -> Option<Value> {
    if matches!(
        name,
        "ResourceCreated" | "ResourceUpdated" | "ResourceDeleted"
    ) {
        return None;
    }
    let mut v = if let Some(v) = fixture(name) {
        v
    } else if name.starts_with("CheckoutPayment") {
        let mut v = fixture("CheckoutPaymentAuthorized").unwrap();
        v["type"] = json!(name);
        v
    } else if name == "OrderEditApplied" {
        let mut v = fixture("OrderStateChanged").unwrap();
        v["type"] = json!(name);
        v["edit"] = json!({"typeId": "order-edit", "id": "e"});
        v["result"] = json!({
            "type": "Applied",
            "appliedAt": "2026-11-20T10:20:11.007Z",
            "excerptBeforeEdit": {"totalPrice": {"currencyCode": "EUR", "centAmount": 2000}, "version": 2},
            "excerptAfterEdit": {"totalPrice": {"currencyCode": "EUR", "centAmount": 1000}, "version": 3},
        });
        v
    } else {
        panic!(
            "no sample for the decoded type {name}: add one here, and list it in \
             payrules::subscription if the rules read it"
        )
    };
    match name {
        "PaymentCreated" => {
            for t in v["payment"]["transactions"].as_array_mut().unwrap() {
                t["type"] = json!("Authorization");
                t["state"] = json!("Success");
            }
        }
        "PaymentTransactionAdded" => {
            v["transaction"]["type"] = json!("Authorization");
            v["transaction"]["state"] = json!("Success");
        }
        "PaymentTransactionStateChanged" => v["state"] = json!("Success"),
        _ => {}
    }
    Some(v)
}

/// Every subscribed type is decoded into a body the rules use, from a message of the resource
/// (or event resource type) it is subscribed under; every type the decoder knows that the
/// engine acts on is subscribed; nothing else is.
#[test]
fn subscribed_types_are_exactly_the_decoded_types_the_rules_read() {
    let engine = Engine::new(
        Arc::new(StreamView::as_if_live()),
        Arc::new(MemoryStore::new()),
        payrules::rules::Rules::default(),
    );
    let mut subscribed: BTreeMap<String, (NotificationType, &str)> = BTreeMap::new();
    for (rt, types) in SUBSCRIBED_MESSAGES {
        for t in *types {
            assert!(
                subscribed
                    .insert(t.as_str().into(), (NotificationType::Message, rt))
                    .is_none(),
                "{t} listed twice"
            );
        }
    }
    for (rt, types) in SUBSCRIBED_EVENTS {
        for t in *types {
            assert!(
                subscribed
                    .insert(t.as_str().into(), (NotificationType::Event, rt))
                    .is_none(),
                "{t} listed twice"
            );
        }
    }

    let decoded = decoded_type_names();
    assert!(decoded.len() >= 20, "{decoded:?}");
    let mut read = BTreeSet::new();
    for name in &decoded {
        assert_eq!(
            MessageType::parse(name).as_str(),
            name,
            "{name} round-trips"
        );
        let Some(payload) = sample(name) else {
            assert!(!subscribed.contains_key(name), "change type {name} listed");
            continue;
        };
        let m = decode(payload.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("the {name} sample decodes: {e}"));
        assert_eq!(m.kind.as_str(), name);
        assert!(
            !matches!(m.kind, MessageType::Other(_)),
            "{name} is a known type"
        );
        assert_ne!(m.body, Body::None, "{name} decodes into a body");
        if !engine.is_inert(&m) {
            read.insert(name.clone());
        }
        if let Some((notification, rt)) = subscribed.get(name) {
            assert_eq!(m.notification, *notification, "{name}");
            match notification {
                NotificationType::Message => assert_eq!(
                    m.resource.as_ref().map(|r| r.type_id.as_str()),
                    Some(*rt),
                    "{name} is a message of the resource it is subscribed under"
                ),
                _ => assert_eq!(
                    payload["resourceType"].as_str(),
                    Some(*rt),
                    "{name} is an event of the resource type it is subscribed under"
                ),
            }
        }
    }
    let listed: BTreeSet<String> = subscribed.keys().cloned().collect();
    assert_eq!(
        listed, read,
        "subscribed = the decoded types the engine acts on"
    );
    let decoded: BTreeSet<String> = decoded.into_iter().collect();
    assert!(
        listed.is_subset(&decoded),
        "every subscribed type is decoded"
    );
}

// ------------------------------------------------------------------------------------------------
// Running the command

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `payrules ARGS` with exactly `env` (plus PATH).
async fn payrules(args: &[&str], env: &[(&str, String)]) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_payrules"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PAYRULES_LOG", "warn")
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("payrules finishes within 60 s")
        .expect("run payrules");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ctp_env(mock: &Peer, project: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CTP_PROJECT_KEY", project.to_string()),
        ("CTP_CLIENT_ID", "payrules-subscription-it".into()),
        ("CTP_CLIENT_SECRET", "secret".into()),
        ("CTP_AUTH_URL", mock.endpoint.clone()),
        ("CTP_API_URL", mock.endpoint.clone()),
    ]
}

// ------------------------------------------------------------------------------------------------
// Without peers

#[tokio::test]
async fn dry_run_prints_the_draft_without_any_configuration() {
    let run = payrules(
        &[
            "subscription",
            "create",
            "--destination",
            "pubsub",
            "--topic",
            "projects/shop-prod/topics/ct-payrules",
            "--dry-run",
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let draft: Value = serde_json::from_str(&run.stdout).expect("stdout is the draft JSON");
    assert_eq!(
        draft,
        json!({
            "key": "payrules",
            "destination": {"type": "GoogleCloudPubSub", "projectId": "shop-prod", "topic": "ct-payrules"},
            "messages": messages_json(),
            "events": events_json(),
            "format": {"type": "Platform"},
        })
    );
    assert!(
        run.stderr.contains("gcloud pubsub topics add-iam-policy-binding ct-payrules --project=shop-prod --member=serviceAccount:subscriptions@commercetools-platform.iam.gserviceaccount.com --role=roles/pubsub.publisher"),
        "{run:?}"
    );

    let run = payrules(
        &[
            "subscription",
            "create",
            "--destination",
            "sqs",
            "--queue-url",
            "https://sqs.eu-west-1.amazonaws.com/123456789012/ct-payrules",
            "--format",
            "cloudevents",
            "--key",
            "payrules-eu",
            "--dry-run",
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let draft: Value = serde_json::from_str(&run.stdout).expect("stdout is the draft JSON");
    assert_eq!(draft["key"], "payrules-eu");
    assert_eq!(
        draft["destination"],
        json!({"type": "SQS", "queueUrl": "https://sqs.eu-west-1.amazonaws.com/123456789012/ct-payrules", "region": "eu-west-1", "authenticationMode": "IAM"})
    );
    assert_eq!(
        draft["format"],
        json!({"type": "CloudEvents", "cloudEventsVersion": "1.0"})
    );
    assert!(
        run.stderr
            .contains("\"Resource\": \"arn:aws:sqs:eu-west-1:123456789012:ct-payrules\""),
        "{run:?}"
    );
    assert!(run.stderr.contains(SQS_PRINCIPAL), "{run:?}");
    assert!(run.stderr.contains("sqs:SendMessage"), "{run:?}");
}

#[tokio::test]
async fn errors_name_what_is_wrong() {
    let create = ["subscription", "create"];
    let cases: &[(&[&str], &str)] = &[
        (
            &["--destination", "pubsub", "--topic", "projects/p/topics/t"],
            "CTP_PROJECT_KEY",
        ),
        (
            &["--destination", "pubsub", "--topic", "ct-payrules"],
            "\"ct-payrules\" is not of the form projects/PROJECT/topics/TOPIC",
        ),
        (&["--destination", "pubsub"], "needs --topic"),
        (&["--destination", "sqs"], "needs --queue-url"),
        (
            &[
                "--destination",
                "sqs",
                "--queue-url",
                "http://127.0.0.1:4567/000000000000/q",
            ],
            "--region is needed",
        ),
        (
            &[
                "--destination",
                "pubsub",
                "--topic",
                "projects/p/topics/t",
                "--key",
                "no spaces",
            ],
            "--key \"no spaces\"",
        ),
    ];
    for (args, says) in cases {
        let all: Vec<&str> = create.iter().chain(args.iter()).copied().collect();
        let run = payrules(&all, &[]).await;
        assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
        assert!(
            run.stderr.contains(says),
            "{args:?} should say {says}: {run:?}"
        );
    }
    let run = payrules(&["subscription", "show"], &[]).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("CTP_API_URL"), "{run:?}");
}

// ------------------------------------------------------------------------------------------------
// Against the mock

/// One mock with Messages on per test binary, delivering to the shared emulator.
async fn peers_up() -> (&'static Peer, &'static Peer) {
    static MOCK: OnceCell<Peer> = OnceCell::const_new();
    let emulator = peers::shared_pubsub_emulator().await;
    let mock = MOCK
        .get_or_init(|| async {
            ctmessages::commercetools_mock_with_messages(&emulator.host_port()).await
        })
        .await;
    (emulator, mock)
}

/// A fresh topic `projects/GCP_PROJECT/topics/…` with a pull subscription on it.
async fn fresh_topic(emulator: &Peer) -> peers::PubsubResources {
    peers::create_topic_and_subscription(
        emulator,
        GCP_PROJECT,
        &peers::unique_name("ct"),
        &peers::unique_name("ct-sub"),
        10,
        None,
    )
    .await
}

/// Adds another pull subscription to `topic`; returns its full name.
async fn another_subscription(emulator: &Peer, topic: &str) -> String {
    let name = format!(
        "projects/{GCP_PROJECT}/subscriptions/{}",
        peers::unique_name("audit")
    );
    let resp = reqwest::Client::new()
        .put(format!("{}/v1/{name}", emulator.endpoint))
        .json(&json!({ "topic": topic, "ackDeadlineSeconds": 10 }))
        .send()
        .await
        .expect("PUT subscription");
    assert!(resp.status().is_success(), "{}", resp.status());
    name
}

/// Pulls (and acks) until `want` messages arrived or 20 s passed; the decoded JSON payloads.
async fn pull(emulator: &Peer, subscription: &str, want: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut all = Vec::new();
    while all.len() < want && Instant::now() < deadline {
        let got = peers::pubsub_pull(emulator, subscription, 100, true).await;
        if got.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        all.extend(
            got.into_iter()
                .map(|m| serde_json::from_slice::<Value>(&m.data).expect("JSON data")),
        );
    }
    all
}

fn pubsub_args(topic: &str) -> Vec<&str> {
    vec![
        "subscription",
        "create",
        "--destination",
        "pubsub",
        "--topic",
        topic,
    ]
}

/// `create` creates the Subscription with the draft (and commercetools' test message reaches
/// the topic); a second run changes nothing; `show` finds nothing missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_creates_the_subscription_then_changes_nothing() {
    let (emulator, mock) = peers_up().await;
    let project = peers::unique_name("sub-create");
    let res = fresh_topic(emulator).await;
    let env = ctp_env(mock, &project);

    let run = payrules(&pubsub_args(&res.topic), &env).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.starts_with("created: "), "{run:?}");
    assert!(run.stdout.contains("roles/pubsub.publisher"), "{run:?}");

    let admin = Admin::new(mock, &project).await;
    let live = admin.get("subscriptions/key=payrules").await;
    let topic_id = res.topic.rsplit('/').next().unwrap();
    assert_eq!(
        live["destination"],
        json!({"type": "GoogleCloudPubSub", "projectId": GCP_PROJECT, "topic": topic_id})
    );
    assert_eq!(live["messages"], messages_json());
    assert_eq!(live["events"], events_json());
    assert_eq!(live["format"], json!({"type": "Platform"}));
    assert_eq!(live["version"], 1);

    let test_message = pull(emulator, &res.subscription, 1).await;
    assert_eq!(test_message.len(), 1, "{test_message:?}");
    let m = decode(test_message[0].to_string().as_bytes()).unwrap();
    assert!(m.is_subscription_test(), "{m:?}");
    assert_eq!(test_message[0]["resource"]["id"], live["id"]);

    let again = payrules(&pubsub_args(&res.topic), &env).await;
    assert_eq!(again.code, Some(0), "{again:?}");
    assert!(again.stdout.starts_with("unchanged: "), "{again:?}");
    assert_eq!(
        admin.get("subscriptions/key=payrules").await["version"],
        1,
        "the second run changed nothing"
    );

    let show = payrules(&["subscription", "show"], &env).await;
    assert_eq!(show.code, Some(0), "{show:?}");
    assert!(show.stdout.contains("nothing missing"), "{show:?}");
    assert!(show.stdout.contains(&res.topic), "{show:?}");
    assert!(show.stdout.contains("status:      Healthy"), "{show:?}");
}

/// A Subscription with the key but the wrong messages (and change notifications): `show`
/// reports what is missing and exits 1; `create` updates it in place; then `show` is content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_updates_a_subscription_with_the_wrong_types_and_show_reports_them() {
    let (emulator, mock) = peers_up().await;
    let project = peers::unique_name("sub-update");
    let res = fresh_topic(emulator).await;
    let env = ctp_env(mock, &project);
    let admin = Admin::new(mock, &project).await;
    let topic_id = res.topic.rsplit('/').next().unwrap();
    let old = admin
        .post(
            "subscriptions",
            json!({
                "key": "payrules",
                "destination": {"type": "GoogleCloudPubSub", "projectId": GCP_PROJECT, "topic": topic_id},
                "messages": [{"resourceTypeId": "payment", "types": ["PaymentCreated", "PaymentInteractionAdded"]}],
                "changes": [{"resourceTypeId": "order"}],
            }),
        )
        .await;

    let show = payrules(&["subscription", "show"], &env).await;
    assert_eq!(show.code, Some(1), "{show:?}");
    for line in [
        "messages payment PaymentTransactionAdded",
        "messages order OrderCreated",
        "events checkout CheckoutPaymentAuthorized",
    ] {
        assert!(show.stdout.contains(line), "missing {line}: {show:?}");
    }
    assert!(
        !show.stdout.contains("messages payment PaymentCreated\n"),
        "{show:?}"
    );
    assert!(
        show.stdout
            .contains("messages payment PaymentInteractionAdded"),
        "{show:?}"
    );
    assert!(show.stdout.contains("changes order"), "{show:?}");

    let run = payrules(&pubsub_args(&res.topic), &env).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.starts_with("updated: "), "{run:?}");
    for what in ["  messages ", "  events ", "  changes order -> none"] {
        assert!(run.stdout.contains(what), "{what}: {run:?}");
    }
    assert!(!run.stdout.contains("  destination "), "{run:?}");

    let live = admin.get("subscriptions/key=payrules").await;
    assert_eq!(live["id"], old["id"], "updated in place");
    assert!(live["version"].as_u64() > old["version"].as_u64(), "{live}");
    assert_eq!(live["messages"], messages_json());
    assert_eq!(live["events"], events_json());
    assert_eq!(live["changes"], json!([]));

    let show = payrules(&["subscription", "show"], &env).await;
    assert_eq!(show.code, Some(0), "{show:?}");

    // Another topic: the destination changes (and commercetools re-tests it).
    let other = fresh_topic(emulator).await;
    let run = payrules(&pubsub_args(&other.topic), &env).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("  destination "), "{run:?}");
    let tested = pull(emulator, &other.subscription, 1).await;
    assert_eq!(tested.len(), 1, "the test message on the new topic");

    // A topic that does not exist: commercetools' test message fails, nothing changes.
    let run = payrules(
        &pubsub_args(&format!("projects/{GCP_PROJECT}/topics/missing-topic")),
        &env,
    )
    .await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("test message"), "{run:?}");
    assert!(run.stderr.contains("roles/pubsub.publisher"), "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_without_the_subscription_exits_1() {
    let (_, mock) = peers_up().await;
    let env = ctp_env(mock, &peers::unique_name("sub-none"));
    let show = payrules(&["subscription", "show", "--key", "nope"], &env).await;
    assert_eq!(show.code, Some(1), "{show:?}");
    assert!(
        show.stdout.contains("no Subscription with key \"nope\""),
        "{show:?}"
    );
}

/// An SQS destination (fauxqs; the mock sends unsigned): the IAM grant names the queue's ARN,
/// and the test message and the payment's Messages arrive in the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_destination_receives_the_test_message_and_payment_messages() {
    let (_, mock) = peers_up().await;
    let sqs = peers::shared_fauxqs().await;
    let name = peers::unique_name("ct");
    let queue_url = peers::sqs_create_queue(sqs, &name, &[]).await;
    let project = peers::unique_name("sub-sqs");
    let env = ctp_env(mock, &project);
    let run = payrules(
        &[
            "subscription",
            "create",
            "--destination",
            "sqs",
            "--queue-url",
            &queue_url,
            "--region",
            "us-east-1",
            "--key",
            "payrules-sqs",
        ],
        &env,
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout
            .contains(&format!("arn:aws:sqs:us-east-1:000000000000:{name}")),
        "{run:?}"
    );
    assert!(run.stdout.contains(SQS_PRINCIPAL), "{run:?}");

    let admin = Admin::new(mock, &project).await;
    let payment = admin.payment(1999, &[("Authorization", "Pending")]).await;

    let mut bodies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while bodies.len() < 2 && Instant::now() < deadline {
        let got = peers::sqs_call(
            sqs,
            "ReceiveMessage",
            json!({"QueueUrl": queue_url, "MaxNumberOfMessages": 10, "WaitTimeSeconds": 1}),
        )
        .await
        .expect("ReceiveMessage");
        for m in got["Messages"].as_array().into_iter().flatten() {
            bodies.push(
                serde_json::from_str::<Value>(m["Body"].as_str().unwrap()).expect("JSON body"),
            );
        }
    }
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    let test = decode(bodies[0].to_string().as_bytes()).unwrap();
    assert!(test.is_subscription_test(), "{bodies:?}");
    assert_eq!(
        bodies[0]["resourceUserProvidedIdentifiers"]["key"],
        "payrules-sqs"
    );
    let created = decode(bodies[1].to_string().as_bytes()).unwrap();
    assert_eq!(created.kind, MessageType::PaymentCreated);
    assert_eq!(created.payment_id(), Some(payment.as_str()));
}

/// End to end: `payrules subscription create` against the mock; a payment authorized and an
/// order for it in the mock; their Messages travel through the emulator to `payrules run`
/// (dry run, the view built from the stream alone), which plans the order's release. Another
/// subscription on the topic sees exactly the Messages commercetools would send, in order, and
/// the Messages Query API returns them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_messages_reach_payrules_run_through_the_subscription() {
    let (emulator, mock) = peers_up().await;
    let project = peers::unique_name("sub-e2e");
    let res = fresh_topic(emulator).await;
    let audit = another_subscription(emulator, &res.topic).await;
    let env = ctp_env(mock, &project);

    let run = payrules(&pubsub_args(&res.topic), &env).await;
    assert_eq!(run.code, Some(0), "{run:?}");

    let admin = Admin::new(mock, &project).await;
    let payment = admin
        .payment_json(1999, &[("Authorization", "Pending")])
        .await;
    let pid = payment["id"].as_str().unwrap().to_string();
    let order = admin.order_for(&pid, &peers::unique_name("ORD")).await;
    let oid = order["id"].as_str().unwrap().to_string();
    let authorized = admin
        .post(
            &format!("payments/{pid}"),
            json!({"version": payment["version"], "actions": [{
                "action": "changeTransactionState",
                "transactionId": payment["transactions"][0]["id"],
                "state": "Success",
            }]}),
        )
        .await;

    // What commercetools delivered, as another consumer of the topic sees it.
    let seen = pull(emulator, &audit, 4).await;
    let kinds: Vec<String> = seen
        .iter()
        .map(|v| {
            let m = decode(v.to_string().as_bytes()).unwrap_or_else(|e| panic!("{v}: {e}"));
            assert_eq!(m.project_key.as_deref(), Some(project.as_str()));
            m.kind.as_str().to_string()
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "ResourceCreated",
            "PaymentCreated",
            "OrderCreated",
            "PaymentTransactionStateChanged"
        ],
        "{seen:#?}"
    );
    let changed = &seen[3];
    assert_eq!(changed["resource"], json!({"typeId": "payment", "id": pid}));
    assert_eq!(changed["sequenceNumber"], 2);
    assert_eq!(changed["resourceVersion"], authorized["version"]);
    assert_eq!(changed["transactionId"], payment["transactions"][0]["id"]);
    assert_eq!(changed["state"], "Success");
    assert_eq!(seen[1]["sequenceNumber"], 1);
    assert_eq!(seen[1]["payment"]["id"], json!(pid));
    assert_eq!(seen[2]["order"]["id"], json!(oid));
    assert_eq!(seen[2]["sequenceNumber"], 1);

    // The Messages Query API has them too.
    let page = admin
        .get(&format!(
            "messages?where=resource(id%3D%22{pid}%22)&sort=sequenceNumber%20desc"
        ))
        .await;
    let types: Vec<&str> = page["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["PaymentTransactionStateChanged", "PaymentCreated"],
        "{page}"
    );

    // payrules run consumes the Subscription's topic and plans the release.
    let (lines, stderr, code) = run_worker(&[
        ("PAYRULES_SOURCE", "pubsub".into()),
        ("PAYRULES_DRY_RUN_SUBSCRIPTION", res.subscription.clone()),
        ("PUBSUB_EMULATOR_HOST", emulator.host_port()),
        ("PAYRULES_DRY_RUN", "true".into()),
        ("PAYRULES_STATE_URL", "memory:".into()),
        ("PAYRULES_SHUTDOWN_TIMEOUT", "5s".into()),
    ])
    .await;
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
    assert_eq!(lines.len(), 1, "one action: {lines:?}\nstderr:\n{stderr}");
    let action: Value = serde_json::from_str(&lines[0]).expect("a JSON action line");
    assert_eq!(action["action"], "release_order", "{action}");
    assert_eq!(action["order_id"], json!(oid), "{action}");
    assert_eq!(action["payment_ids"], json!([pid]), "{action}");
}

/// `payrules run` with exactly `env` (plus PATH) until it printed one action line (or 30 s),
/// then 2 s more for a duplicate, then SIGTERM; returns (stdout lines, stderr, exit code).
async fn run_worker(env: &[(&str, String)]) -> (Vec<String>, String, Option<i32>) {
    binary::run_binary(env, 1, Duration::from_secs(2)).await
}
