//! `payrules subscription`: creates and shows the commercetools Subscription that feeds the
//! worker.
//!
//! The Subscription carries exactly the Message types and Checkout Events the rules read:
//! [`SUBSCRIBED_MESSAGES`] and [`SUBSCRIBED_EVENTS`], the one list. `tests/subscription.rs`
//! proves it against the decoder and the engine: every type listed decodes into a body the
//! rules use, every type the decoder knows that the engine acts on is listed, and the list of
//! decoded types is the one in `src/message.rs`.
//!
//! `create` is idempotent: it reads the Subscription by key, creates it when absent, updates
//! what differs (`changeDestination`, `setMessages`, `setEvents`, `setChanges`) with the
//! version it read, and changes nothing when it already matches. `show` prints the live
//! Subscription and what it lacks.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::commerce::{CtpError, Retry};
use crate::config::{self, CommercetoolsSettings, Secret};
use crate::message::MessageType;

/// The Subscription key used when `--key` is not given.
pub const DEFAULT_KEY: &str = "payrules";

/// The Google service account commercetools publishes to Pub/Sub as.
pub const PUBSUB_PUBLISHER: &str = "subscriptions@commercetools-platform.iam.gserviceaccount.com";

/// The AWS principal commercetools sends to SQS as (authentication mode IAM).
pub const SQS_PRINCIPAL: &str = "arn:aws:iam::362576667341:user/subscriptions";

/// The environment variable holding the SQS access secret (authentication mode Credentials).
pub const SQS_SECRET_ENV: &str = "PAYRULES_SUBSCRIPTION_SQS_ACCESS_SECRET";

/// The Messages the rules read, by `resourceTypeId`. Payment and order messages the engine
/// treats as inert (custom workflow states, the shop's payment state, interface ids,
/// interactions) are left out: they would only cost deliveries.
pub const SUBSCRIBED_MESSAGES: &[(&str, &[MessageType])] = &[
    (
        "payment",
        &[
            MessageType::PaymentCreated,
            MessageType::PaymentTransactionAdded,
            MessageType::PaymentTransactionStateChanged,
        ],
    ),
    (
        "order",
        &[
            MessageType::OrderCreated,
            MessageType::OrderImported,
            MessageType::OrderPaymentAdded,
            MessageType::OrderStateChanged,
            MessageType::OrderShipmentStateChanged,
            MessageType::OrderEditApplied,
        ],
    ),
];

/// The Checkout Events the rules read, by `resourceTypeId`.
pub const SUBSCRIBED_EVENTS: &[(&str, &[MessageType])] = &[(
    "checkout",
    &[
        MessageType::CheckoutOrderCreationFailed,
        MessageType::CheckoutPaymentAuthorized,
        MessageType::CheckoutPaymentCharged,
        MessageType::CheckoutPaymentCancelAuthorizationFailed,
    ],
)];

/// `payrules subscription …`.
#[derive(Debug, Subcommand)]
pub enum SubscriptionCommand {
    /// Creates the Subscription, or updates the one with this key to match; changes nothing
    /// when it already matches. Prints what it did and the grant the destination needs.
    Create(CreateArgs),
    /// Prints the live Subscription and what is missing from it (exit 1 when something is
    /// missing or it does not exist).
    Show(ShowArgs),
}

/// Where commercetools delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DestinationKind {
    /// Google Cloud Pub/Sub (`--topic projects/P/topics/T`).
    Pubsub,
    /// AWS SQS (`--queue-url URL`).
    Sqs,
}

/// How commercetools authenticates to SQS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// commercetools' AWS user sends; the queue policy grants it `sqs:SendMessage`.
    Iam,
    /// An access key of yours (`--access-key`, secret in the environment).
    Credentials,
}

impl AuthMode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Iam => "IAM",
            Self::Credentials => "Credentials",
        }
    }
}

/// The delivery format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// commercetools' own format.
    Platform,
    /// CloudEvents 1.0.
    Cloudevents,
}

impl FormatArg {
    fn to_json(self) -> Value {
        match self {
            Self::Platform => json!({ "type": "Platform" }),
            Self::Cloudevents => json!({ "type": "CloudEvents", "cloudEventsVersion": "1.0" }),
        }
    }
}

/// `payrules subscription create`.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// Where commercetools delivers.
    #[arg(long, value_enum)]
    pub destination: DestinationKind,
    /// The Pub/Sub topic, `projects/P/topics/T`.
    #[arg(long)]
    pub topic: Option<String>,
    /// The SQS queue URL, `https://sqs.REGION.amazonaws.com/ACCOUNT/QUEUE` (a standard queue).
    #[arg(long)]
    pub queue_url: Option<String>,
    /// The queue's AWS region (derived from an `sqs.REGION.amazonaws.com` URL when absent).
    #[arg(long)]
    pub region: Option<String>,
    /// How commercetools authenticates to SQS.
    #[arg(long, value_enum, default_value = "iam")]
    pub authentication_mode: AuthMode,
    /// The access key id, with `--authentication-mode credentials` (the secret is read from
    /// PAYRULES_SUBSCRIPTION_SQS_ACCESS_SECRET).
    #[arg(long)]
    pub access_key: Option<String>,
    /// The delivery format.
    #[arg(long, value_enum, default_value = "platform")]
    pub format: FormatArg,
    /// The Subscription's key.
    #[arg(long, default_value = DEFAULT_KEY)]
    pub key: String,
    /// Prints the SubscriptionDraft JSON (and the grant) without calling anything.
    #[arg(long)]
    pub dry_run: bool,
    /// TOML configuration (its `[commercetools]` section); CTP_* variables override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// `payrules subscription show`.
#[derive(Debug, Clone, Args)]
pub struct ShowArgs {
    /// The Subscription's key.
    #[arg(long, default_value = DEFAULT_KEY)]
    pub key: String,
    /// TOML configuration (its `[commercetools]` section); CTP_* variables override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// A validated destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `{"type":"GoogleCloudPubSub","projectId":P,"topic":T}`.
    PubSub {
        /// The Google Cloud project.
        project_id: String,
        /// The topic id.
        topic: String,
    },
    /// `{"type":"SQS","queueUrl":…,"region":…,"authenticationMode":…}`.
    Sqs {
        /// The queue URL.
        queue_url: String,
        /// Its region.
        region: String,
        /// IAM or Credentials.
        auth: AuthMode,
        /// Credentials mode: the access key id and secret.
        credentials: Option<(String, Secret)>,
    },
}

impl Destination {
    /// Validates the destination options of `create`; the error names the option.
    ///
    /// # Errors
    /// What is wrong, naming the option.
    pub fn from_args(
        args: &CreateArgs,
        secret: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        match args.destination {
            DestinationKind::Pubsub => {
                for (set, name) in [
                    (args.queue_url.is_some(), "--queue-url"),
                    (args.region.is_some(), "--region"),
                    (args.access_key.is_some(), "--access-key"),
                    (
                        args.authentication_mode != AuthMode::Iam,
                        "--authentication-mode",
                    ),
                ] {
                    if set {
                        return Err(format!("{name} applies to --destination sqs only"));
                    }
                }
                let topic = args.topic.as_deref().ok_or(
                    "--destination pubsub needs --topic projects/PROJECT/topics/TOPIC".to_string(),
                )?;
                let (project_id, topic) = parse_topic(topic)?;
                Ok(Self::PubSub { project_id, topic })
            }
            DestinationKind::Sqs => {
                if args.topic.is_some() {
                    return Err("--topic applies to --destination pubsub only".into());
                }
                let queue_url = args.queue_url.as_deref().ok_or(
                    "--destination sqs needs --queue-url https://sqs.REGION.amazonaws.com/ACCOUNT/QUEUE"
                        .to_string(),
                )?;
                split_queue_url(queue_url)?;
                let region = match &args.region {
                    Some(r) if is_region(r) => r.clone(),
                    Some(r) => return Err(format!("--region {r:?} is not an AWS region name")),
                    None => region_from_queue_url(queue_url).ok_or_else(|| {
                        format!(
                            "--region is needed: it cannot be derived from --queue-url {queue_url:?}"
                        )
                    })?,
                };
                let credentials = match args.authentication_mode {
                    AuthMode::Iam => {
                        if args.access_key.is_some() {
                            return Err(
                                "--access-key applies to --authentication-mode credentials only"
                                    .into(),
                            );
                        }
                        None
                    }
                    AuthMode::Credentials => {
                        let key = args
                            .access_key
                            .clone()
                            .filter(|k| !k.trim().is_empty())
                            .ok_or(
                                "--authentication-mode credentials needs --access-key".to_string(),
                            )?;
                        let s = secret(SQS_SECRET_ENV).filter(|s| !s.is_empty()).ok_or_else(|| {
                            format!("--authentication-mode credentials needs the access secret in {SQS_SECRET_ENV}")
                        })?;
                        Some((key, Secret::new(s)))
                    }
                };
                Ok(Self::Sqs {
                    queue_url: queue_url.to_string(),
                    region,
                    auth: args.authentication_mode,
                    credentials,
                })
            }
        }
    }

    /// The Destination JSON; the access secret as `****` unless `with_secret`.
    pub fn to_json(&self, with_secret: bool) -> Value {
        match self {
            Self::PubSub { project_id, topic } => {
                json!({ "type": "GoogleCloudPubSub", "projectId": project_id, "topic": topic })
            }
            Self::Sqs {
                queue_url,
                region,
                auth,
                credentials,
            } => {
                let mut d = json!({
                    "type": "SQS",
                    "queueUrl": queue_url,
                    "region": region,
                    "authenticationMode": auth.as_str(),
                });
                if let Some((key, secret)) = credentials {
                    d["accessKey"] = json!(key);
                    d["accessSecret"] = json!(if with_secret { secret.expose() } else { "****" });
                }
                d
            }
        }
    }

    /// What the destination must allow before commercetools can deliver (the Subscription
    /// is only created once a test notification got through).
    pub fn grant(&self) -> String {
        match self {
            Self::PubSub { project_id, topic } => format!(
                "commercetools publishes as {PUBSUB_PUBLISHER}: grant it roles/pubsub.publisher on the topic\n  \
                 gcloud pubsub topics add-iam-policy-binding {topic} --project={project_id} \
                 --member=serviceAccount:{PUBSUB_PUBLISHER} --role=roles/pubsub.publisher"
            ),
            Self::Sqs {
                queue_url,
                region,
                auth: AuthMode::Iam,
                ..
            } => {
                let arn = sqs_queue_arn(queue_url, region)
                    .unwrap_or_else(|_| "arn:aws:sqs:REGION:ACCOUNT:QUEUE".into());
                let policy = sqs_policy(&arn);
                let pretty = serde_json::from_str::<Value>(&policy)
                    .and_then(|v| serde_json::to_string_pretty(&v))
                    .unwrap_or_else(|_| policy.clone());
                let attributes = json!({ "Policy": policy }).to_string();
                format!(
                    "commercetools sends as {SQS_PRINCIPAL}: the queue policy must allow it sqs:SendMessage on {arn}:\n\
                     {pretty}\n  aws sqs set-queue-attributes --queue-url {queue_url} --attributes '{attributes}'\n\
                     (that replaces the queue's policy: add the statement to an existing one instead)"
                )
            }
            Self::Sqs {
                queue_url,
                region,
                credentials,
                ..
            } => {
                let arn = sqs_queue_arn(queue_url, region)
                    .unwrap_or_else(|_| "arn:aws:sqs:REGION:ACCOUNT:QUEUE".into());
                let key = credentials.as_ref().map_or("", |(k, _)| k.as_str());
                format!("the IAM user of access key {key} needs sqs:SendMessage on {arn}")
            }
        }
    }

    fn describe(&self) -> String {
        describe_destination(&self.to_json(false))
    }
}

/// `projects/P/topics/T` → (P, T).
///
/// # Errors
/// What is wrong with it.
pub fn parse_topic(name: &str) -> Result<(String, String), String> {
    let parts: Vec<&str> = name.trim().split('/').collect();
    match parts.as_slice() {
        ["projects", p, "topics", t] if !p.is_empty() && !t.is_empty() => {
            Ok((p.to_string(), t.to_string()))
        }
        _ => Err(format!(
            "--topic {name:?} is not of the form projects/PROJECT/topics/TOPIC"
        )),
    }
}

/// (host, account, queue) of an SQS queue URL `http(s)://HOST/ACCOUNT/QUEUE`.
fn split_queue_url(url: &str) -> Result<(String, String, String), String> {
    let bad = || {
        format!(
            "--queue-url {url:?} is not of the form https://sqs.REGION.amazonaws.com/ACCOUNT/QUEUE"
        )
    };
    let parsed = reqwest::Url::parse(url).map_err(|_| bad())?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad());
    }
    let host = parsed.host_str().ok_or_else(bad)?.to_string();
    let segments: Vec<&str> = parsed
        .path()
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segments.as_slice() {
        [account, queue] => {
            if queue.ends_with(".fifo") {
                return Err(format!(
                    "--queue-url {url:?} is a FIFO queue; commercetools delivers to standard queues only"
                ));
            }
            Ok((host, account.to_string(), queue.to_string()))
        }
        _ => Err(bad()),
    }
}

fn is_region(r: &str) -> bool {
    !r.is_empty()
        && r.split('-').count() >= 3
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The region of `https://sqs.REGION.amazonaws.com/…` or `https://REGION.queue.amazonaws.com/…`.
pub fn region_from_queue_url(url: &str) -> Option<String> {
    let (host, _, _) = split_queue_url(url).ok()?;
    let labels: Vec<&str> = host.split('.').collect();
    let region = match labels.as_slice() {
        ["sqs", region, "amazonaws", ..] => *region,
        [region, "queue", "amazonaws", ..] => *region,
        _ => return None,
    };
    is_region(region).then(|| region.to_string())
}

/// `arn:aws:sqs:REGION:ACCOUNT:QUEUE` for a queue URL.
///
/// # Errors
/// The URL is not a queue URL.
pub fn sqs_queue_arn(queue_url: &str, region: &str) -> Result<String, String> {
    let (host, account, queue) = split_queue_url(queue_url)?;
    let partition = if host.ends_with(".amazonaws.com.cn") {
        "aws-cn"
    } else {
        "aws"
    };
    Ok(format!("arn:{partition}:sqs:{region}:{account}:{queue}"))
}

/// The queue policy that lets commercetools send to the queue (IAM mode), compact JSON.
pub fn sqs_policy(queue_arn: &str) -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "commercetools-subscriptions",
            "Effect": "Allow",
            "Principal": { "AWS": SQS_PRINCIPAL },
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
        }],
    })
    .to_string()
}

/// `MessageSubscription[]` / `EventSubscription[]` for a list.
fn subscriptions_json(list: &[(&str, &[MessageType])]) -> Value {
    Value::Array(
        list.iter()
            .map(|(rt, types)| {
                json!({
                    "resourceTypeId": rt,
                    "types": types.iter().map(MessageType::as_str).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

/// The `messages` of the Subscription.
pub fn messages_json() -> Value {
    subscriptions_json(SUBSCRIBED_MESSAGES)
}

/// The `events` of the Subscription.
pub fn events_json() -> Value {
    subscriptions_json(SUBSCRIBED_EVENTS)
}

/// What `create` wants the Subscription to be.
#[derive(Debug, Clone)]
pub struct Draft {
    /// The key.
    pub key: String,
    /// The destination.
    pub destination: Destination,
    /// The delivery format.
    pub format: FormatArg,
}

impl Draft {
    /// The SubscriptionDraft JSON; the access secret as `****` unless `with_secret`.
    pub fn to_json(&self, with_secret: bool) -> Value {
        json!({
            "key": self.key,
            "destination": self.destination.to_json(with_secret),
            "messages": messages_json(),
            "events": events_json(),
            "format": self.format.to_json(),
        })
    }
}

/// A key commercetools accepts: 2–256 characters of `A-Za-z0-9_-`.
///
/// # Errors
/// Why it is not.
pub fn check_key(key: &str) -> Result<(), String> {
    if (2..=256).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(format!(
            "--key {key:?} is not a Subscription key (2 to 256 characters of A-Z, a-z, 0-9, - and _)"
        ))
    }
}

/// `resourceTypeId` → the types of it (`None`: all types, as an absent or empty `types` means).
type Selection = BTreeMap<String, Option<BTreeSet<String>>>;

fn selection(list: Option<&Value>) -> Selection {
    let mut out: Selection = BTreeMap::new();
    for entry in list.and_then(Value::as_array).into_iter().flatten() {
        let Some(rt) = entry["resourceTypeId"].as_str() else {
            continue;
        };
        let types: Vec<String> = entry["types"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect();
        let slot = out.entry(rt.to_string()).or_insert(Some(BTreeSet::new()));
        match (slot, types.is_empty()) {
            (slot, true) => *slot = None,
            (Some(set), false) => set.extend(types),
            (None, false) => {}
        }
    }
    out
}

fn wanted(list: &[(&str, &[MessageType])]) -> Selection {
    list.iter()
        .map(|(rt, types)| {
            (
                rt.to_string(),
                Some(types.iter().map(|t| t.as_str().to_string()).collect()),
            )
        })
        .collect()
}

/// The destination as compared: an absent `authenticationMode` is `Credentials` (the API's
/// default), and the access secret only counts when the live one shows it.
fn comparable_destination(d: &Value, keep_secret: bool) -> Value {
    let mut d = d.clone();
    if let Some(o) = d.as_object_mut() {
        if o.get("type").and_then(Value::as_str) == Some("SQS")
            && !o.contains_key("authenticationMode")
        {
            o.insert("authenticationMode".into(), json!("Credentials"));
        }
        if !keep_secret {
            o.remove("accessSecret");
        }
    }
    d
}

/// The format as compared (`Platform` when absent).
fn comparable_format(f: Option<&Value>) -> Value {
    match f {
        Some(v) if v.is_object() => v.clone(),
        _ => json!({ "type": "Platform" }),
    }
}

/// One change `create` makes to an existing Subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// What differed, for the output.
    pub what: String,
    /// The update action.
    pub action: Value,
}

/// The update actions that make `live` match `draft`; empty when it already does.
///
/// # Errors
/// The format differs: commercetools has no update action for it.
pub fn plan_update(live: &Value, draft: &Draft) -> Result<Vec<Change>, String> {
    let want = draft.to_json(true);
    let (live_format, want_format) = (
        comparable_format(live.get("format")),
        comparable_format(want.get("format")),
    );
    if live_format != want_format {
        return Err(format!(
            "the Subscription {:?} delivers in the format {} and --format asks for {}; commercetools \
             has no update action for the format: delete the Subscription and run create again",
            draft.key,
            describe_format(&live_format),
            describe_format(&want_format)
        ));
    }
    let mut changes = Vec::new();
    let keep_secret = live["destination"].get("accessSecret").is_some();
    if comparable_destination(&live["destination"], keep_secret)
        != comparable_destination(&want["destination"], keep_secret)
    {
        changes.push(Change {
            what: format!(
                "destination {} -> {}",
                describe_destination(&live["destination"]),
                draft.destination.describe()
            ),
            action: json!({ "action": "changeDestination", "destination": want["destination"] }),
        });
    }
    for (field, action, list) in [
        ("messages", "setMessages", SUBSCRIBED_MESSAGES),
        ("events", "setEvents", SUBSCRIBED_EVENTS),
    ] {
        if selection(live.get(field)) != wanted(list) {
            changes.push(Change {
                what: format!(
                    "{field} {} -> {}",
                    describe_selection(&selection(live.get(field))),
                    describe_selection(&wanted(list))
                ),
                action: json!({ "action": action, field: subscriptions_json(list) }),
            });
        }
    }
    let live_changes = selection(live.get("changes"));
    if !live_changes.is_empty() {
        changes.push(Change {
            what: format!(
                "changes {} -> none",
                live_changes.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
            action: json!({ "action": "setChanges", "changes": [] }),
        });
    }
    Ok(changes)
}

/// What a live Subscription lacks compared with the list, and what it has beyond it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    /// e.g. `messages payment PaymentCreated`, `events checkout CheckoutPaymentAuthorized`.
    pub missing: Vec<String>,
    /// e.g. `messages payment PaymentInteractionAdded`, `messages customer (all types)`.
    pub extra: Vec<String>,
}

/// Compares a live Subscription with [`SUBSCRIBED_MESSAGES`] and [`SUBSCRIBED_EVENTS`].
pub fn coverage(live: &Value) -> Coverage {
    let mut c = Coverage::default();
    for (field, list) in [
        ("messages", SUBSCRIBED_MESSAGES),
        ("events", SUBSCRIBED_EVENTS),
    ] {
        let have = selection(live.get(field));
        let want = wanted(list);
        for (rt, types) in &want {
            for t in types.iter().flatten() {
                let covered = match have.get(rt) {
                    Some(None) => true,
                    Some(Some(set)) => set.contains(t),
                    None => false,
                };
                if !covered {
                    c.missing.push(format!("{field} {rt} {t}"));
                }
            }
        }
        for (rt, types) in &have {
            let ours = want.get(rt).cloned().flatten().unwrap_or_default();
            match types {
                None if ours.is_empty() => c.extra.push(format!("{field} {rt} (all types)")),
                None => c.extra.push(format!("{field} {rt} (all other types)")),
                Some(set) => {
                    for t in set.difference(&ours) {
                        c.extra.push(format!("{field} {rt} {t}"));
                    }
                }
            }
        }
    }
    for rt in selection(live.get("changes")).keys() {
        c.extra.push(format!("changes {rt}"));
    }
    c
}

fn describe_destination(d: &Value) -> String {
    let s = |k: &str| d[k].as_str().unwrap_or("?").to_string();
    match d["type"].as_str() {
        Some("GoogleCloudPubSub") => format!(
            "GoogleCloudPubSub projects/{}/topics/{}",
            s("projectId"),
            s("topic")
        ),
        Some("SQS") => format!(
            "SQS {} (region {}, authentication {})",
            s("queueUrl"),
            s("region"),
            d["authenticationMode"].as_str().unwrap_or("Credentials")
        ),
        Some(other) => other.to_string(),
        None => "(none)".into(),
    }
}

fn describe_selection(sel: &Selection) -> String {
    if sel.is_empty() {
        return "(none)".into();
    }
    sel.iter()
        .map(|(rt, types)| match types {
            None => format!("{rt}: all types"),
            Some(set) => format!(
                "{rt}: {}",
                set.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn describe_format(f: &Value) -> String {
    match (f["type"].as_str(), f["cloudEventsVersion"].as_str()) {
        (Some(t), Some(v)) => format!("{t} {v}"),
        (Some(t), None) => t.to_string(),
        _ => "Platform".into(),
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The subscribed types, one line per resource type, indented.
fn list_lines() -> String {
    let mut out = String::new();
    for (field, list) in [
        ("messages", SUBSCRIBED_MESSAGES),
        ("events", SUBSCRIBED_EVENTS),
    ] {
        for (rt, types) in list {
            let names: Vec<&str> = types.iter().map(MessageType::as_str).collect();
            let _ = writeln!(out, "  {field} {rt}: {}", names.join(", "));
        }
    }
    out
}

// ------------------------------------------------------------------------------------------------
// The commercetools calls

/// Reads the commercetools client settings: `--config FILE` and the CTP_* variables (which
/// override it). Only the `[commercetools]` section is used and checked here: the worker's
/// other options (source, rules, release targets) do not concern this command.
fn client_settings(config_file: Option<&Path>) -> Result<CommercetoolsSettings, String> {
    let file =
        config::merge_with(config_file, |k| std::env::var(k).ok()).map_err(|e| e.to_string())?;
    let c = &file.commercetools;
    let mut problems = Vec::new();
    let mut required = |value: &Option<String>, env: &str, what: &str| -> String {
        match value.as_deref().map(str::trim) {
            Some(v) if !v.is_empty() => v.trim_end_matches('/').to_string(),
            _ => {
                problems.push(format!("{env} (commercetools.{what}) is not set"));
                String::new()
            }
        }
    };
    let project_key = required(&c.project_key, "CTP_PROJECT_KEY", "project_key");
    let client_id = required(&c.client_id, "CTP_CLIENT_ID", "client_id");
    let auth_url = required(&c.auth_url, "CTP_AUTH_URL", "auth_url");
    let api_url = required(&c.api_url, "CTP_API_URL", "api_url");
    let client_secret = match &c.client_secret {
        Some(s) if !s.expose().is_empty() => s.clone(),
        _ => {
            problems.push("CTP_CLIENT_SECRET (commercetools.client_secret) is not set".into());
            Secret::default()
        }
    };
    for (url, env) in [(&auth_url, "CTP_AUTH_URL"), (&api_url, "CTP_API_URL")] {
        if !url.is_empty()
            && reqwest::Url::parse(url).map_or(true, |u| !u.scheme().starts_with("http"))
        {
            problems.push(format!("{env} {url:?} is not an http(s) URL"));
        }
    }
    let timeout = config::parse_duration(&c.timeout).unwrap_or_else(|e| {
        problems.push(format!(
            "PAYRULES_HTTP_TIMEOUT (commercetools.timeout): {e}"
        ));
        Duration::from_secs(10)
    });
    if !problems.is_empty() {
        return Err(format!(
            "the commercetools API client is not configured (set the CTP_* variables, or \
             [commercetools] in --config FILE):\n  - {}",
            problems.join("\n  - ")
        ));
    }
    Ok(CommercetoolsSettings {
        checkout_url: config::derive_checkout_url(&api_url).unwrap_or_else(|| api_url.clone()),
        project_key,
        client_id,
        client_secret,
        auth_url,
        api_url,
        scopes: c.scopes.clone(),
        timeout,
    })
}

/// A commercetools session for one command: one token, requested without a scope (the API
/// client's own scopes; it needs `manage_subscriptions:{projectKey}`, or
/// `view_subscriptions:{projectKey}` for `show`).
struct Api {
    http: reqwest::Client,
    settings: CommercetoolsSettings,
    token: Secret,
}

fn ctp_error(what: &str, retry: Retry, message: String) -> CtpError {
    CtpError {
        retry,
        status: None,
        codes: Vec::new(),
        message: format!("{what}: {message}"),
    }
}

async fn error_from(what: &str, resp: Response) -> CtpError {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    let codes: Vec<String> = body["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["code"].as_str().map(str::to_string))
        .collect();
    let detail = body["message"]
        .as_str()
        .or_else(|| body["error_description"].as_str())
        .unwrap_or_default();
    CtpError {
        retry: match status.as_u16() {
            409 => Retry::Conflict,
            500 => Retry::Verify,
            502..=504 => Retry::Backoff,
            _ => Retry::Never,
        },
        status: Some(status.as_u16()),
        codes,
        message: if detail.is_empty() {
            format!("{what} failed")
        } else {
            format!("{what} failed: {detail}")
        },
    }
}

impl Api {
    async fn connect(settings: CommercetoolsSettings) -> Result<Self, CtpError> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout.max(Duration::from_secs(10)))
            .user_agent(concat!("payrules/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ctp_error("building the HTTP client", Retry::Never, e.to_string()))?;
        let what = "requesting an access token";
        let resp = http
            .post(format!("{}/oauth/token", settings.auth_url))
            .basic_auth(&settings.client_id, Some(settings.client_secret.expose()))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .map_err(|e| ctp_error(what, Retry::Backoff, e.to_string()))?;
        if !resp.status().is_success() {
            let mut e = error_from(what, resp).await;
            e.message
                .push_str(" — check CTP_AUTH_URL, CTP_CLIENT_ID and CTP_CLIENT_SECRET");
            return Err(e);
        }
        let body: Value = resp
            .json()
            .await
            .map_err(|e| ctp_error(what, Retry::Backoff, e.to_string()))?;
        let token = body["access_token"]
            .as_str()
            .ok_or_else(|| ctp_error(what, Retry::Never, "no access_token in the answer".into()))?;
        Ok(Self {
            http,
            settings,
            token: Secret::new(token),
        })
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}/{}/{path}",
            self.settings.api_url, self.settings.project_key
        )
    }

    async fn call(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Option<Value>, CtpError> {
        let resp = request
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(|e| ctp_error(what, Retry::Backoff, e.to_string()))?;
        match resp.status() {
            s if s.is_success() => resp
                .json()
                .await
                .map(Some)
                .map_err(|e| ctp_error(what, Retry::Never, format!("unexpected answer: {e}"))),
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                let mut e = error_from(what, resp).await;
                let _ = write!(
                    e.message,
                    " — the API client needs manage_subscriptions:{} (view_subscriptions:{0} for show)",
                    self.settings.project_key
                );
                Err(e)
            }
            _ => Err(error_from(what, resp).await),
        }
    }

    async fn by_key(&self, key: &str) -> Result<Option<Value>, CtpError> {
        let url = self.url(&format!("subscriptions/key={key}"));
        self.call("reading the Subscription", self.http.get(url))
            .await
    }

    async fn create(&self, draft: &Value) -> Result<Value, CtpError> {
        let what = "creating the Subscription";
        self.call(what, self.http.post(self.url("subscriptions")).json(draft))
            .await?
            .ok_or_else(|| CtpError {
                retry: Retry::Never,
                status: Some(404),
                codes: Vec::new(),
                message: format!(
                    "{what} failed: {} answered 404 — check CTP_API_URL and CTP_PROJECT_KEY",
                    self.url("subscriptions")
                ),
            })
    }

    async fn update(&self, id: &str, version: u64, actions: &[Value]) -> Result<Value, CtpError> {
        let what = "updating the Subscription";
        let body = json!({ "version": version, "actions": actions });
        self.call(
            what,
            self.http
                .post(self.url(&format!("subscriptions/{id}")))
                .json(&body),
        )
        .await?
        .ok_or_else(|| CtpError {
            retry: Retry::Never,
            status: Some(404),
            codes: Vec::new(),
            message: format!("{what} failed: it no longer exists"),
        })
    }
}

// ------------------------------------------------------------------------------------------------
// The commands

/// Runs a `payrules subscription` command.
pub async fn cli(command: SubscriptionCommand) -> ExitCode {
    match command {
        SubscriptionCommand::Create(args) => create(&args).await,
        SubscriptionCommand::Show(args) => show(&args).await,
    }
}

async fn create(args: &CreateArgs) -> ExitCode {
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("payrules subscription create: {e}");
        ExitCode::from(2)
    };
    if let Err(e) = check_key(&args.key) {
        return fail(&e);
    }
    let destination = match Destination::from_args(args, |k| std::env::var(k).ok()) {
        Ok(d) => d,
        Err(e) => return fail(&e),
    };
    let draft = Draft {
        key: args.key.clone(),
        destination,
        format: args.format,
    };
    if args.dry_run {
        println!(
            "{}",
            serde_json::to_string_pretty(&draft.to_json(false)).unwrap_or_default()
        );
        eprintln!(
            "payrules subscription create: dry run, nothing was called. The destination needs:\n{}",
            indent(&draft.destination.grant())
        );
        return ExitCode::SUCCESS;
    }
    let settings = match client_settings(args.config.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let project = settings.project_key.clone();
    match apply(settings, &draft).await {
        Ok(outcome) => {
            println!("{outcome}");
            println!(
                "destination {}, format {}; subscribed:\n{}",
                draft.destination.describe(),
                describe_format(&draft.format.to_json()),
                list_lines().trim_end()
            );
            println!(
                "the destination needs (already in place if commercetools' test message got through):\n{}",
                indent(&draft.destination.grant())
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let hint = if e.codes.iter().any(|c| c == "InvalidInput") {
                format!(
                    "\ncommercetools delivers a test message before it accepts a destination; the destination needs:\n{}",
                    indent(&draft.destination.grant())
                )
            } else {
                String::new()
            };
            fail(&format!("project {project:?}: {e}{hint}"))
        }
    }
}

/// Creates, updates or leaves the Subscription; returns the line saying which.
async fn apply(settings: CommercetoolsSettings, draft: &Draft) -> Result<String, CtpError> {
    let project = settings.project_key.clone();
    let api = Api::connect(settings).await?;
    let key = &draft.key;
    let Some(live) = api.by_key(key).await? else {
        let created = api.create(&draft.to_json(true)).await?;
        return Ok(format!(
            "created: Subscription {key:?} in project {project:?} (id {}, version {})",
            created["id"].as_str().unwrap_or("?"),
            created["version"]
        ));
    };
    let changes = plan_update(&live, draft).map_err(|m| CtpError {
        retry: Retry::Never,
        status: None,
        codes: Vec::new(),
        message: m,
    })?;
    let id = live["id"].as_str().unwrap_or_default().to_string();
    let version = live["version"].as_u64().unwrap_or_default();
    if changes.is_empty() {
        return Ok(format!(
            "unchanged: Subscription {key:?} in project {project:?} already matches (id {id}, version {version})"
        ));
    }
    let actions: Vec<Value> = changes.iter().map(|c| c.action.clone()).collect();
    let updated = api.update(&id, version, &actions).await?;
    let mut out = format!(
        "updated: Subscription {key:?} in project {project:?} (id {id}, version {version} -> {})",
        updated["version"]
    );
    for c in &changes {
        let _ = write!(out, "\n  {}", c.what);
    }
    Ok(out)
}

async fn show(args: &ShowArgs) -> ExitCode {
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("payrules subscription show: {e}");
        ExitCode::from(2)
    };
    if let Err(e) = check_key(&args.key) {
        return fail(&e);
    }
    let settings = match client_settings(args.config.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let project = settings.project_key.clone();
    let live = match Api::connect(settings).await {
        Ok(api) => api.by_key(&args.key).await,
        Err(e) => Err(e),
    };
    let live = match live {
        Ok(Some(live)) => live,
        Ok(None) => {
            println!(
                "no Subscription with key {:?} in project {project:?}; create it with `payrules subscription create`\nit should carry:\n{}",
                args.key,
                list_lines().trim_end()
            );
            return ExitCode::FAILURE;
        }
        Err(e) => return fail(&format!("project {project:?}: {e}")),
    };
    print!("{}", render(&live, &args.key, &project));
    if coverage(&live).missing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The `show` report of a live Subscription.
pub fn render(live: &Value, key: &str, project: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Subscription {key:?} in project {project:?} (id {}, version {})",
        live["id"].as_str().unwrap_or("?"),
        live["version"]
    );
    let _ = writeln!(
        out,
        "  destination: {}",
        describe_destination(&live["destination"])
    );
    let _ = writeln!(
        out,
        "  format:      {}",
        describe_format(&comparable_format(live.get("format")))
    );
    let status = live["status"].as_str().unwrap_or("?");
    let _ = writeln!(out, "  status:      {status}");
    if status != "Healthy" {
        let _ = writeln!(
            out,
            "  warning: the status is not Healthy: commercetools is not delivering (fix the destination, then run create, which changes the destination to re-test it, or recreate it)"
        );
    }
    for field in ["messages", "events", "changes"] {
        let _ = writeln!(
            out,
            "  {field:<12} {}",
            describe_selection(&selection(live.get(field)))
        );
    }
    let c = coverage(live);
    if c.missing.is_empty() {
        let _ = writeln!(
            out,
            "nothing missing: every type the rules read is subscribed"
        );
    } else {
        let _ = writeln!(
            out,
            "missing ({}; run `payrules subscription create` to add them):",
            c.missing.len()
        );
        for m in &c.missing {
            let _ = writeln!(out, "  {m}");
        }
    }
    if !c.extra.is_empty() {
        let _ = writeln!(
            out,
            "extra (information; payrules does not read these, they only cost deliveries):"
        );
        for x in &c.extra {
            let _ = writeln!(out, "  {x}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> CreateArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            create: CreateArgs,
        }
        let argv = std::iter::once("create").chain(extra.iter().copied());
        Cli::try_parse_from(argv).unwrap().create
    }

    #[test]
    fn topics_parse_and_bad_ones_are_named() {
        assert_eq!(
            parse_topic("projects/p-1/topics/ct-notes"),
            Ok(("p-1".into(), "ct-notes".into()))
        );
        for bad in [
            "ct-notes",
            "projects/p/topics/",
            "projects/p/subscriptions/s",
            "projects/p/topics/t/x",
        ] {
            let e = parse_topic(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn queue_urls_give_region_and_arn() {
        let url = "https://sqs.eu-west-1.amazonaws.com/123456789012/ct-payrules";
        assert_eq!(region_from_queue_url(url).as_deref(), Some("eu-west-1"));
        assert_eq!(
            sqs_queue_arn(url, "eu-west-1").unwrap(),
            "arn:aws:sqs:eu-west-1:123456789012:ct-payrules"
        );
        assert_eq!(
            region_from_queue_url("https://us-east-2.queue.amazonaws.com/1/q").as_deref(),
            Some("us-east-2")
        );
        assert_eq!(
            region_from_queue_url("http://127.0.0.1:4567/000000000000/q"),
            None
        );
        assert!(split_queue_url("https://sqs.eu-west-1.amazonaws.com/1/q.fifo").is_err());
        assert!(split_queue_url("https://sqs.eu-west-1.amazonaws.com/q").is_err());
    }

    #[test]
    fn destinations_validate_their_options() {
        let d = Destination::from_args(
            &args(&["--destination", "pubsub", "--topic", "projects/p/topics/t"]),
            |_| None,
        )
        .unwrap();
        assert_eq!(
            d.to_json(false),
            json!({"type": "GoogleCloudPubSub", "projectId": "p", "topic": "t"})
        );
        let e = Destination::from_args(&args(&["--destination", "pubsub"]), |_| None).unwrap_err();
        assert!(e.contains("--topic"), "{e}");
        let e = Destination::from_args(
            &args(&[
                "--destination",
                "sqs",
                "--queue-url",
                "http://127.0.0.1:4567/000000000000/q",
            ]),
            |_| None,
        )
        .unwrap_err();
        assert!(e.contains("--region"), "{e}");
        let e = Destination::from_args(
            &args(&[
                "--destination",
                "sqs",
                "--queue-url",
                "https://sqs.eu-west-1.amazonaws.com/1/q",
                "--authentication-mode",
                "credentials",
                "--access-key",
                "AKIA",
            ]),
            |_| None,
        )
        .unwrap_err();
        assert!(e.contains(SQS_SECRET_ENV), "{e}");
        let d = Destination::from_args(
            &args(&[
                "--destination",
                "sqs",
                "--queue-url",
                "https://sqs.eu-west-1.amazonaws.com/1/q",
                "--authentication-mode",
                "credentials",
                "--access-key",
                "AKIA",
            ]),
            |_| Some("s3cr3t".into()),
        )
        .unwrap();
        assert_eq!(d.to_json(false)["accessSecret"], "****");
        assert_eq!(d.to_json(true)["accessSecret"], "s3cr3t");
        assert!(!format!("{d:?}").contains("s3cr3t"));
    }

    fn draft() -> Draft {
        Draft {
            key: "payrules".into(),
            destination: Destination::PubSub {
                project_id: "p".into(),
                topic: "t".into(),
            },
            format: FormatArg::Platform,
        }
    }

    #[test]
    fn a_matching_subscription_needs_no_update_and_covers_everything() {
        let mut live = draft().to_json(true);
        live["status"] = json!("Healthy");
        live["changes"] = json!([]);
        assert_eq!(plan_update(&live, &draft()), Ok(vec![]));
        assert_eq!(coverage(&live), Coverage::default());
        // Order of entries and types does not matter.
        live["messages"] = json!([
            {"resourceTypeId": "order", "types": ["OrderEditApplied", "OrderImported", "OrderCreated", "OrderPaymentAdded", "OrderStateChanged", "OrderShipmentStateChanged"]},
            {"resourceTypeId": "payment", "types": ["PaymentTransactionStateChanged", "PaymentTransactionAdded", "PaymentCreated"]},
        ]);
        assert_eq!(plan_update(&live, &draft()), Ok(vec![]));
    }

    #[test]
    fn differences_become_update_actions() {
        let mut live = draft().to_json(true);
        live["destination"]["topic"] = json!("old");
        live["messages"] = json!([{"resourceTypeId": "payment", "types": ["PaymentCreated"]}]);
        live["changes"] = json!([{"resourceTypeId": "order"}]);
        live.as_object_mut().unwrap().remove("events");
        let plan = plan_update(&live, &draft()).unwrap();
        let actions: Vec<&str> = plan
            .iter()
            .map(|c| c.action["action"].as_str().unwrap())
            .collect();
        assert_eq!(
            actions,
            [
                "changeDestination",
                "setMessages",
                "setEvents",
                "setChanges"
            ]
        );
        let c = coverage(&live);
        assert!(
            c.missing
                .contains(&"messages payment PaymentTransactionAdded".to_string())
        );
        assert!(
            c.missing
                .contains(&"events checkout CheckoutPaymentAuthorized".to_string())
        );
        assert_eq!(c.extra, ["changes order"]);
    }

    #[test]
    fn all_types_of_a_resource_cover_it_and_are_reported_as_extra() {
        let mut live = draft().to_json(true);
        live["messages"] = json!([{"resourceTypeId": "payment"}, {"resourceTypeId": "order", "types": []}, {"resourceTypeId": "customer"}]);
        let c = coverage(&live);
        assert!(c.missing.is_empty(), "{c:?}");
        assert_eq!(
            c.extra,
            [
                "messages customer (all types)",
                "messages order (all other types)",
                "messages payment (all other types)"
            ]
        );
        // But create narrows it to exactly the list.
        let plan = plan_update(&live, &draft()).unwrap();
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].action["action"], "setMessages");
    }

    #[test]
    fn a_different_format_is_refused_with_advice() {
        let mut live = draft().to_json(true);
        live["format"] = json!({"type": "CloudEvents", "cloudEventsVersion": "1.0"});
        let e = plan_update(&live, &draft()).unwrap_err();
        assert!(e.contains("delete the Subscription"), "{e}");
        // An absent format is Platform.
        live.as_object_mut().unwrap().remove("format");
        assert_eq!(plan_update(&live, &draft()), Ok(vec![]));
    }

    #[test]
    fn sqs_authentication_mode_defaults_to_credentials_when_absent() {
        let d = Draft {
            destination: Destination::Sqs {
                queue_url: "https://sqs.eu-west-1.amazonaws.com/1/q".into(),
                region: "eu-west-1".into(),
                auth: AuthMode::Credentials,
                credentials: Some(("AKIA".into(), Secret::new("s"))),
            },
            ..draft()
        };
        let mut live = d.to_json(true);
        live["destination"]
            .as_object_mut()
            .unwrap()
            .remove("authenticationMode");
        live["destination"]
            .as_object_mut()
            .unwrap()
            .remove("accessSecret");
        assert_eq!(plan_update(&live, &d), Ok(vec![]));
        let iam = Draft {
            destination: Destination::Sqs {
                queue_url: "https://sqs.eu-west-1.amazonaws.com/1/q".into(),
                region: "eu-west-1".into(),
                auth: AuthMode::Iam,
                credentials: None,
            },
            ..draft()
        };
        let plan = plan_update(&live, &iam).unwrap();
        assert_eq!(plan[0].action["action"], "changeDestination");
        assert!(iam.destination.grant().contains(SQS_PRINCIPAL));
        assert!(
            iam.destination
                .grant()
                .contains("arn:aws:sqs:eu-west-1:1:q")
        );
    }

    #[test]
    fn keys_are_checked() {
        assert!(check_key("payrules").is_ok());
        assert!(check_key("p").is_err());
        assert!(check_key("pay rules").is_err());
    }
}
